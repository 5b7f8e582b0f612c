"""The acoustic model, the bundle that carries it with everything inference needs, and the
recognizer built from a bundle."""

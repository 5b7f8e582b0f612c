"""Output units of the model: the character vocabulary and the normalisation of text into it."""

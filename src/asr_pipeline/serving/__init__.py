"""The recognizer as an MLflow model: the pyfunc that serves it and the model registry.

This is glue: it imports MLflow (the core packages never do)."""

"""Features -> trained acoustic model, its history, curves, and a registered MLflow model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Removes the features nobody asks for any more from the feature store (not in the default run)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

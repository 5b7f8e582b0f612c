"""Manifest -> cached feature tensors, their index and the training split's normalisation stats."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

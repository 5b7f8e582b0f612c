"""Audio files or LibriSpeech ids + a registered model -> transcripts (JSON)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

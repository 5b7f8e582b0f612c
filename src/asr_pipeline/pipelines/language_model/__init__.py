"""Training transcripts (+ common English words) -> the word n-gram LM of the beam search."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

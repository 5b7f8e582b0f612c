"""LibriSpeech folder -> validated manifest, data-quality report and speaker-disjoint splits."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Model + test split -> transcripts, WER/CER reports, plots, and champion promotion."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

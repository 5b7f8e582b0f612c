"""asr-pipeline: LibriSpeech to a trained, tracked, registered and served speech recognizer."""

__version__ = "0.1.0"

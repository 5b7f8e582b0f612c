"""Speech corpora on disk: the LibriSpeech layout, downloading and mirroring subsets, and
batching utterances by length."""

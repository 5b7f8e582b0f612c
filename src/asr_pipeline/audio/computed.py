"""Features computed when asked (``features.storage: on_the_fly``) instead of read from the store.

On GPUs ESPnet and SpeechBrain compute features and speed perturbation in the data loader's
workers instead of storing a copy of every utterance at every speed: no extraction pass, no disk
for the copies. :class:`ComputedFeatures` is a mapping like the feature store, so the training
Dataset and its DataLoader workers read either without knowing which. Its extractor is built in
the process that first asks (each DataLoader worker builds its own).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import pandas as pd
import torch

from asr_pipeline.audio.extraction import compute_features
from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor

STORAGE_KINDS = ("cached", "on_the_fly")


def expected_frames(num_samples: int, sample_rate: int, config: FeatureConfig, speed: float) -> int:
    """Frames of the features of ``num_samples`` at ``sample_rate`` played ``speed`` times faster
    (the centred STFT's ``samples // hop + 1`` after resampling and speed perturbation), without
    decoding the audio: what the bucketing needs before any feature exists."""
    samples = math.ceil(num_samples * config.sample_rate / sample_rate)
    return config.num_frames(math.ceil(samples / speed))


class ComputedFeatures(Mapping[str, torch.Tensor]):
    """``features[key]``: the float16 features of the key's audio file at its speed, computed now.

    ``index`` has ``feature_key``, ``path`` and ``speed`` columns (the feature index).
    """

    def __init__(self, index: pd.DataFrame, config: FeatureConfig) -> None:
        self.sources = {
            key: (path, float(speed))
            for key, path, speed in index[["feature_key", "path", "speed"]].itertuples(
                index=False, name=None
            )
        }
        self.config = config
        self._extractor: FeatureExtractor | None = None

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.sources:
            raise KeyError(f"no audio for features {key!r}")
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.config)
        path, speed = self.sources[key]
        return compute_features(path, self._extractor, speed)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_extractor": None}  # a worker builds its own


def computed_on_the_fly(storage: str) -> bool:
    """Whether ``features.storage`` says training computes the features itself; checked."""
    if storage not in STORAGE_KINDS:
        raise ValueError(f"features.storage must be one of {STORAGE_KINDS}, got {storage!r}")
    return storage == "on_the_fly"


def feature_source(
    index: pd.DataFrame, store: Mapping[str, torch.Tensor], config: FeatureConfig, storage: str
) -> Mapping[str, torch.Tensor]:
    """Where training reads the features of ``index``: the store (``cached``), or the audio."""
    return ComputedFeatures(index, config) if computed_on_the_fly(storage) else store

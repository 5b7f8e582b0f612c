"""Acoustic features: one module used by feature extraction, training, evaluation and serving.

Keeping the transform and its normalisation statistics together is what guarantees that a served
model sees exactly the features it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torchaudio.transforms as T

from asr_pipeline.common.settings import check_settings

# Bump when the computation changes in a way the parameters do not capture: it invalidates caches.
FEATURE_CODE_VERSION = 1
_LOG_FLOOR = 1e-6


# Keys of the ``features`` parameters that the feature_engineering pipeline reads beside the
# transform's own settings: FeatureConfig.from_params accepts them and ignores them.
PIPELINE_SETTINGS = frozenset(
    {"normalisation", "speed_perturbation", "workers", "shard_mb", "storage"}
)


@dataclass(frozen=True)
class FeatureConfig:
    """The transform's settings: ``features`` in ``conf/base/parameters_feature_engineering.yml``.

    No defaults: that YAML is their one source (a bundle stores every field).
    """

    kind: str
    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    n_mfcc: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FeatureConfig:
        """The ``features`` parameters' transform settings.

        A key that is neither one of them nor one the pipeline reads (:data:`PIPELINE_SETTINGS`)
        is refused, so that a misspelt setting fails the run instead of being ignored.
        """
        names = {f.name for f in fields(cls)}
        check_settings("features", params, known=names | PIPELINE_SETTINGS, required=names)
        config = cls(**{k: v for k, v in params.items() if k in names})
        if config.kind not in {"mfcc", "log_mel"}:
            raise ValueError(f"features.kind must be 'mfcc' or 'log_mel', not {config.kind!r}")
        return config

    @property
    def n_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def num_frames(self, num_samples: int) -> int:
        """Frames of a signal of ``num_samples`` at the model's rate (centred STFT)."""
        return num_samples // self.hop_length + 1

    def fingerprint(self) -> str:
        """A short hash of everything that changes the features."""
        payload = json.dumps({**asdict(self), "code": FEATURE_CODE_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


class FeatureExtractor(torch.nn.Module):
    """Signal ``(samples,)`` -> features ``(n_features, frames)`` (log-mel or MFCC)."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        mel_kwargs = {
            "n_fft": config.n_fft,
            "win_length": config.win_length,
            "hop_length": config.hop_length,
            "n_mels": config.n_mels,
        }
        if config.kind == "mfcc":
            self.transform = T.MFCC(
                sample_rate=config.sample_rate,
                n_mfcc=config.n_mfcc,
                log_mels=True,
                melkwargs=mel_kwargs,
            )
        else:
            self.transform = T.MelSpectrogram(sample_rate=config.sample_rate, **mel_kwargs)

    @torch.inference_mode()
    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        features = self.transform(signal)
        if self.config.kind == "log_mel":
            features = torch.log(features + _LOG_FLOOR)
        return features


def remove_utterance_mean(features: torch.Tensor) -> torch.Tensor:
    """``(n_features, frames)`` features minus their own mean per coefficient."""
    return features - features.mean(dim=-1, keepdim=True)


@dataclass
class NormalisationStats:
    """Global per-coefficient mean and standard deviation, computed on the training split only.

    With ``utterance_mean`` each utterance first loses its own mean per coefficient (cepstral
    mean normalisation): the speaker's and the channel's average spectrum, which a model trained
    on few speakers would otherwise learn to rely on.
    """

    mean: list[float]
    std: list[float]
    frames: int
    utterance_mean: bool = False

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise ``(n_features, frames)`` features."""
        if self.utterance_mean:
            features = remove_utterance_mean(features)
        mean = torch.tensor(self.mean, dtype=features.dtype).unsqueeze(-1)
        std = torch.tensor(self.std, dtype=features.dtype).unsqueeze(-1)
        return (features - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunningStats:
    """Accumulates per-coefficient sums in float64 so that hours of audio fit in constant memory."""

    def __init__(self, n_features: int) -> None:
        self.total = torch.zeros(n_features, dtype=torch.float64)
        self.total_sq = torch.zeros(n_features, dtype=torch.float64)
        self.frames = 0

    def update(self, features: torch.Tensor) -> None:
        values = features.to(torch.float64)
        self.total += values.sum(dim=1)
        self.total_sq += (values**2).sum(dim=1)
        self.frames += values.shape[1]

    def add_sums(
        self, sums: np.ndarray, squares: np.ndarray, frames: np.ndarray, centred: bool
    ) -> None:
        """Add utterances given by their per-coefficient sums and sums of squares ``(n,
        n_features)`` and frames ``(n,)`` (what the feature store keeps); ``centred``: as if each
        utterance had lost its own mean first (its sum becomes 0, its squares lose sum^2/frames)."""
        if centred:
            squares = squares - sums**2 / frames[:, None]
            sums = np.zeros_like(sums)
        self.total += torch.from_numpy(sums.sum(axis=0))
        self.total_sq += torch.from_numpy(squares.sum(axis=0))
        self.frames += int(frames.sum())

    def result(self, utterance_mean: bool = False) -> NormalisationStats:
        """The statistics; ``utterance_mean`` when the updates were centred per utterance."""
        if self.frames == 0:
            raise ValueError("no training frames to compute normalisation statistics from")
        mean = self.total / self.frames
        var = (self.total_sq / self.frames - mean**2).clamp_min(1e-8)
        return NormalisationStats(mean.tolist(), var.sqrt().tolist(), self.frames, utterance_mean)

"""Decoding audio into the model's input signal: mono float32 at one sample rate.

``soundfile`` (libsndfile) decodes FLAC, WAV, OGG and MP3 without FFmpeg; torchaudio resamples.
Every failure is an ``AudioError`` that names the file, so that callers can report it and go on.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, truncated, empty, or too long."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the samples."""

    sample_rate: int
    channels: int
    num_samples: int
    format: str

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


def read_info(path: str | Path) -> AudioInfo:
    """Header of an audio file (fast: no samples decoded)."""
    try:
        info = sf.info(str(path))
    except Exception as error:  # libsndfile raises several types for broken files
        raise AudioError(f"{path}: unreadable audio ({error})") from error
    return AudioInfo(info.samplerate, info.channels, info.frames, info.format)


def _decode(source: str | Path | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    try:
        samples, sample_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioError(f"{name}: cannot decode audio ({error})") from error
    if samples.size == 0:
        raise AudioError(f"{name}: the audio is empty")
    return samples, sample_rate


MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 192000


def to_model_signal(samples: np.ndarray, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Downmix ``(frames, channels)`` samples to mono and resample to ``target_rate``."""
    # An odd rate (say 44101 Hz) would make the resampling kernel gigabytes large: refuse it.
    reduced = sample_rate // math.gcd(sample_rate, target_rate)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE or reduced > 1000:
        raise AudioError(f"unsupported sample rate {sample_rate} Hz")
    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32)))
    if sample_rate != target_rate:
        mono = AF.resample(mono, sample_rate, target_rate)
    return mono


def load_audio(
    path: str | Path, target_rate: int, max_seconds: float | None = None
) -> torch.Tensor:
    """Mono float32 signal of a file at ``target_rate``."""
    if max_seconds is not None:
        info = read_info(path)
        if info.duration_s > max_seconds:
            raise AudioError(
                f"{path}: {info.duration_s:.0f} s is longer than the {max_seconds:.0f} s limit"
            )
    samples, sample_rate = _decode(str(path), str(path))
    return to_model_signal(samples, sample_rate, target_rate)


def load_audio_bytes(
    data: bytes, target_rate: int, name: str = "<bytes>", max_seconds: float | None = None
) -> torch.Tensor:
    """Like :func:`load_audio` for an encoded file held in memory (e.g. an HTTP request)."""
    if not data:
        raise AudioError(f"{name}: the audio is empty")
    if max_seconds is not None:
        try:
            info = sf.info(io.BytesIO(data))
        except Exception as error:
            raise AudioError(f"{name}: not a readable audio file ({error})") from error
        if info.duration > max_seconds:
            raise AudioError(
                f"{name}: {info.duration:.0f} s is longer than the {max_seconds:.0f} s limit"
            )
    samples, sample_rate = _decode(io.BytesIO(data), name)
    return to_model_signal(samples, sample_rate, target_rate)

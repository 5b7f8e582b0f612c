"""The model's features computed with NumPy, from matrices taken from torchaudio at export time.

The exported model's input is normalised log-mel (or MFCC) features. Computing them here, rather
than exporting them as an ONNX graph or calling torchaudio, keeps the runner free of torch: a
server needs ``onnxruntime`` and ``numpy`` only. The STFT window, the mel filter bank and the DCT
are torchaudio's own arrays, saved beside the model (``features.npz``), so no filter design is
reimplemented; what is left is a centred, reflect-padded power STFT, a log, and the same float16
round trip and normalisation as :meth:`asr_pipeline.model.recognizer.Recognizer.features`
(``tests/test_export.py`` compares the two on real audio).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LOG_FLOOR = 1e-6  # torchaudio's MFCC log offset and asr_pipeline.audio.features._LOG_FLOOR


@dataclass(frozen=True)
class SpectralFeatures:
    """Signal ``(samples,)`` float32 at ``sample_rate`` -> normalised ``(n_features, frames)``."""

    n_fft: int
    hop_length: int
    window: np.ndarray  # (n_fft,): the analysis window, zero-padded to n_fft as torch.stft does
    mel_filters: np.ndarray  # (n_fft // 2 + 1, n_mels)
    dct: np.ndarray | None  # (n_mels, n_mfcc) for MFCC, None for log-mel
    mean: np.ndarray  # (n_features,)
    std: np.ndarray  # (n_features,)
    utterance_mean: bool

    @classmethod
    def load(cls, matrices: Path, config: dict[str, Any]) -> SpectralFeatures:
        """From ``features.npz`` and the exported ``config.json``."""
        with np.load(matrices) as arrays:
            dct = arrays["dct"] if "dct" in arrays.files else None
            window, mel_filters = arrays["window"], arrays["mel_filters"]
        stats = config["normalisation"]
        return cls(
            n_fft=config["feature_config"]["n_fft"],
            hop_length=config["feature_config"]["hop_length"],
            window=window.astype(np.float32),
            mel_filters=mel_filters.astype(np.float32),
            dct=None if dct is None else dct.astype(np.float32),
            mean=np.asarray(stats["mean"], dtype=np.float32),
            std=np.asarray(stats["std"], dtype=np.float32),
            utterance_mean=bool(stats.get("utterance_mean", False)),
        )

    def power_spectrogram(self, signal: np.ndarray) -> np.ndarray:
        """``(frames, n_fft // 2 + 1)`` power of the centred STFT (reflect padding)."""
        signal = np.asarray(signal, dtype=np.float32)
        if len(signal) <= self.n_fft // 2:  # too short for the padding, as the Recognizer pads
            signal = np.pad(signal, (0, self.n_fft - len(signal)))
        half = self.n_fft // 2
        padded = np.pad(signal, (half, half), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop_length]
        spectrum = np.fft.rfft(frames * self.window, axis=-1)
        return (spectrum.real**2 + spectrum.imag**2).astype(np.float32)

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        features = np.log(self.power_spectrogram(signal) @ self.mel_filters + LOG_FLOOR)
        if self.dct is not None:
            features = features @ self.dct
        # the float16 round trip of the features the model was trained on (stored as float16)
        features = features.T.astype(np.float16).astype(np.float32)
        if self.utterance_mean:
            features = features - features.mean(axis=1, keepdims=True)
        return (features - self.mean[:, None]) / self.std[:, None]

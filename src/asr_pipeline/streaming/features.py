"""Features of a signal that arrives in chunks: the recognizer's features, frame by frame.

The offline recognizer (``Recognizer.features``) computes a centred STFT of the whole signal
(reflect-padded by ``n_fft // 2`` at both ends), rounds the features through float16 (they were
stored so for training) and normalises them with the bundle's statistics. Here:

- **STFT across chunks**: the bundle's own transform is run with its centring turned off on a
  buffer that keeps the samples the next frame still needs (its overlap with the last one). The
  start is reflect-padded once ``n_fft // 2 + 1`` samples have come, the end when the stream
  ends, exactly as the centred STFT pads, so a stream gives the offline frames (same count,
  same values to float rounding) whatever the chunk sizes.
- **Global statistics** (``features.normalisation: global``): applied per frame, exactly.
- **Per-utterance mean** (``utterance_mean``): the offline mean is over the whole utterance,
  which a stream does not have yet. It is estimated causally: the first ``warmup_frames`` frames
  are held back until they have all come and share their own mean; every later frame gets the
  mean of all frames up to and including itself (a cumulative mean, in float64). The warm-up
  costs latency once, at the start of a stream, and avoids normalising the first frames by
  the mean of a few frames of silence; the cumulative mean converges to the utterance's, so a
  long stream's features approach the offline ones (the streaming recognizer's test bounds the
  effect on the text). A stream's whole history is one "utterance": a speaker's and channel's
  average spectrum do not change at a pause.

Everything is per frame, so the output does not depend on how the audio was cut into chunks.
"""

from __future__ import annotations

import copy

import torch
import torchaudio.transforms as T

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, NormalisationStats


def uncentred_extractor(config: FeatureConfig) -> FeatureExtractor:
    """The bundle's feature transform with the STFT's centring (padding) turned off.

    It is the same object the recognizer builds (window, mel filters, log), only told not to pad:
    the padding is done here, across chunks. Built by switching ``center`` off on torchaudio's
    ``Spectrogram`` inside it rather than by building another transform whose settings could drift
    from ``FeatureExtractor``'s.
    """
    extractor = copy.deepcopy(FeatureExtractor(config))
    spectrograms = [m for m in extractor.modules() if isinstance(m, T.Spectrogram)]
    if len(spectrograms) != 1:
        raise RuntimeError(
            "the feature transform no longer holds exactly one torchaudio Spectrogram"
        )
    spectrograms[0].center = False
    return extractor


class StreamingFeatures:
    """Samples (float, at the model's rate) in, normalised ``(n_features, frames)`` out."""

    def __init__(
        self, config: FeatureConfig, stats: NormalisationStats, warmup_frames: int
    ) -> None:
        self.config = config
        self.stats = stats
        self.extractor = uncentred_extractor(config)
        self.pad = config.n_fft // 2
        self.warmup_frames = max(1, warmup_frames)
        self._buffer = torch.zeros(0)  # samples (after the start's padding, once started)
        self._tail = torch.zeros(0)  # the last pad + 1 samples, for the end's reflection
        self._started = False
        self._finished = False
        self.samples = 0
        self._mean = torch.tensor(stats.mean).unsqueeze(-1)
        self._std = torch.tensor(stats.std).unsqueeze(-1)
        self._sum = torch.zeros(config.n_features, 1, dtype=torch.float64)
        self._count = 0
        self._held = torch.zeros(config.n_features, 0)  # warm-up frames not normalised yet

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        """Normalised features of the frames ``samples`` completes (often none or a few)."""
        if self._finished:
            raise RuntimeError("the stream has ended")
        samples = samples.float().reshape(-1)
        self.samples += len(samples)
        self._tail = torch.cat([self._tail, samples])[-(self.pad + 1) :]
        self._buffer = torch.cat([self._buffer, samples])
        if not self._started and len(self._buffer) > self.pad:
            self._start()
        return self._normalise(self._frames())

    def finish(self) -> torch.Tensor:
        """The last frames: the end is reflect-padded as the centred STFT pads it."""
        if self._finished:
            raise RuntimeError("the stream has ended")
        self._finished = True
        if not self._started:
            if len(self._buffer) <= self.pad:  # as Recognizer.features: zeros up to n_fft
                self._buffer = torch.nn.functional.pad(
                    self._buffer, (0, self.config.n_fft - len(self._buffer))
                )
                self._tail = self._buffer[-(self.pad + 1) :]
            self._start()
        self._buffer = torch.cat([self._buffer, self._tail[:-1].flip(0)[: self.pad]])
        return self._normalise(self._frames(), final=True)

    def _start(self) -> None:
        start = self._buffer[1 : self.pad + 1].flip(0)
        self._buffer = torch.cat([start, self._buffer])
        self._started = True

    def _frames(self) -> torch.Tensor:
        """Raw (float16-rounded) features of the whole frames in the buffer; the rest stays."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        if not self._started or len(self._buffer) < n_fft:
            return torch.zeros(self.config.n_features, 0)
        n = (len(self._buffer) - n_fft) // hop + 1
        features = self.extractor(self._buffer[: (n - 1) * hop + n_fft])
        self._buffer = self._buffer[n * hop :]
        # float16 round trip: the features the model was trained on were stored as float16
        return features.to(torch.float16).float()

    def _normalise(self, features: torch.Tensor, final: bool = False) -> torch.Tensor:
        if self.stats.utterance_mean:
            features = self._remove_running_mean(features, final)
        return (features - self._mean) / self._std

    def _remove_running_mean(self, features: torch.Tensor, final: bool) -> torch.Tensor:
        if self._count < self.warmup_frames:  # still warming up: hold the frames back
            self._held = torch.cat([self._held, features], dim=-1)
            if self._held.shape[-1] < self.warmup_frames and not final:
                return features[:, :0]
            warm = self._held[:, : self.warmup_frames]
            features = self._held[:, self.warmup_frames :]
            self._held = self._held[:, :0]
            self._sum += warm.double().sum(dim=-1, keepdim=True)
            self._count = warm.shape[-1]
            warm = warm - (self._sum / self._count).float()
        else:
            warm = features[:, :0]
        if features.shape[-1]:
            sums = self._sum + features.double().cumsum(dim=-1)
            counts = self._count + torch.arange(1, features.shape[-1] + 1, dtype=torch.float64)
            self._sum = sums[:, -1:].clone()
            self._count += features.shape[-1]
            features = features - (sums / counts).float()
        return torch.cat([warm, features], dim=-1)

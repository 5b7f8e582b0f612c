"""Resampling audio that arrives in chunks, exactly as resampling it whole would.

torchaudio's ``resample`` (what offline loading uses) is a strided convolution: each block of
``new / g`` output samples is computed from the ``orig / g`` input samples of its block and
``width`` samples either side (``g`` the rates' gcd). It has no streaming form, so the stream is
resampled in windows aligned on input blocks, each with a margin of whole blocks on both sides,
keeping only the outputs that the margins fully cover; the samples before the stream are zeros,
as resampling pads them. The output lags the input by the margin (about 1 ms at usual rates).
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF

from asr_pipeline.audio.loading import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio's defaults, which load_audio uses


def check_rate(sample_rate: object, target_rate: int) -> int:
    """``sample_rate`` if this project resamples from it (the limits of ``to_model_signal``:
    an odd rate would make the kernel huge), else a ValueError that says why."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise ValueError(f"sample_rate must be an integer number of Hz, not {sample_rate!r}")
    reduced = sample_rate // math.gcd(sample_rate, target_rate)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE or reduced > 1000:
        raise ValueError(
            f"unsupported sample rate {sample_rate} Hz (use {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} "
            f"Hz, e.g. {target_rate}, 44100 or 48000)"
        )
    return sample_rate


class StreamResampler:
    """Chunks at ``orig_rate`` in, the same signal at ``new_rate`` out (in chunks)."""

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        g = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // g, new_rate // g
        self.rates = (orig_rate, new_rate)
        width = math.ceil(_LOWPASS_WIDTH * self.orig / (min(self.orig, self.new) * _ROLLOFF))
        self.margin_blocks = math.ceil(width / self.orig) + 1
        margin = self.margin_blocks * self.orig
        self._buffer = torch.zeros(margin)  # the left margin: zeros before the stream
        self._received = 0
        self._emitted = 0

    def _resample(self, window: torch.Tensor) -> torch.Tensor:
        return AF.resample(
            window, *self.rates, lowpass_filter_width=_LOWPASS_WIDTH, rolloff=_ROLLOFF
        )

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        self._received += len(samples)
        self._buffer = torch.cat([self._buffer, samples.float()])
        margin = self.margin_blocks * self.orig
        blocks = (len(self._buffer) - 2 * margin) // self.orig
        if blocks <= 0:
            return torch.zeros(0)
        out = self._resample(self._buffer[: 2 * margin + blocks * self.orig])
        first = self.margin_blocks * self.new
        self._buffer = self._buffer[blocks * self.orig :]
        self._emitted += blocks * self.new
        return out[first : first + blocks * self.new]

    def finish(self) -> torch.Tensor:
        """The rest: as many samples in all as resampling the whole stream gives."""
        total = math.ceil(self.new * self._received / self.orig)
        out = self._resample(self._buffer)[self.margin_blocks * self.new :]
        return out[: max(0, total - self._emitted)]

"""SpecAugment: masks over frequency bands and time spans of one utterance's features.

The masks are drawn like torchaudio's ``FrequencyMasking`` / ``TimeMasking`` (a width uniform
in ``[0, max)``, a start uniform where it fits) but from a generator the caller passes:
torchaudio draws from torch's global random state, which a DataLoader worker cannot share with
the training process, so the masks would depend on which worker built a batch. Drawn here from
a generator seeded per utterance and epoch, they do not, and a slice assignment per mask costs
far less than the batched masks (``benchmarks/loader.py``).
"""

from __future__ import annotations

import torch


class SpecAugment:
    """Frequency and time masking (Park et al. 2019) of ``(n_features, frames)`` features.

    No time mask is wider than ``max_time_ratio`` of its utterance: many masks then regularise
    long utterances without wiping out short ones (the adaptive policy of Park et al. 2020).
    """

    def __init__(
        self,
        freq_mask: int,
        time_mask: int,
        n_freq_masks: int,
        n_time_masks: int,
        max_time_ratio: float = 1.0,
    ) -> None:
        if not 0.0 < max_time_ratio <= 1.0:
            raise ValueError(f"max_time_ratio must be in (0, 1], got {max_time_ratio}")
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.n_freq_masks = n_freq_masks
        self.n_time_masks = n_time_masks
        self.max_time_ratio = max_time_ratio

    def __call__(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A masked copy of ``features (n_features, frames)``; masks write zeros."""
        masked = features.clone()
        n_features, frames = features.shape
        max_time = min(self.time_mask, int(frames * self.max_time_ratio))
        draws = torch.rand(2 * (self.n_freq_masks + self.n_time_masks), generator=generator)
        draws = draws.tolist()
        for i in range(self.n_freq_masks):
            width = int(draws[2 * i] * self.freq_mask)
            start = int(draws[2 * i + 1] * (n_features - width))
            masked[start : start + width] = 0.0
        for i in range(self.n_freq_masks, self.n_freq_masks + self.n_time_masks):
            width = int(draws[2 * i] * max_time)
            start = int(draws[2 * i + 1] * (frames - width))
            masked[:, start : start + width] = 0.0
        return masked

"""SpecAugment: masks over frequency bands and time spans of the training features."""

from __future__ import annotations

import torch
import torchaudio.transforms as T


class SpecAugment(torch.nn.Module):
    """Frequency and time masking (Park et al. 2019), each utterance masked independently.

    Time masks are drawn inside each utterance's own frames, never on padding, and no mask is
    wider than ``max_time_ratio`` of its utterance: many masks then regularise long utterances
    without wiping out short ones (the adaptive policy of Park et al. 2020).
    """

    def __init__(
        self,
        freq_mask: int,
        time_mask: int,
        n_freq_masks: int,
        n_time_masks: int,
        max_time_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < max_time_ratio <= 1.0:
            raise ValueError(f"max_time_ratio must be in (0, 1], got {max_time_ratio}")
        self.freq_masks = torch.nn.ModuleList(
            [T.FrequencyMasking(freq_mask, iid_masks=True) for _ in range(n_freq_masks)]
        )
        self.time_mask = time_mask
        self.n_time_masks = n_time_masks
        self.max_time_ratio = max_time_ratio

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Masked copy of ``features (B, F, T)``; ``lengths`` are the real frames of each row."""
        x = features.unsqueeze(1)  # (B, 1, F, T): iid_masks wants a channel axis
        for mask in self.freq_masks:
            x = mask(x)
        x = x.squeeze(1)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[-1])
        # torchaudio's time masks see the padded length; these are drawn like theirs (width
        # uniform in [0, max), start uniform where it fits) but per row, within its own frames
        max_width = torch.clamp(
            (lengths * self.max_time_ratio).floor(), max=self.time_mask
        ).unsqueeze(1)
        frames = torch.arange(x.shape[-1])
        masked = torch.zeros(x.shape[0], x.shape[-1], dtype=torch.bool)
        for _ in range(self.n_time_masks):
            width = (torch.rand(x.shape[0], 1) * max_width).long()
            start = (torch.rand(x.shape[0], 1) * (lengths.unsqueeze(1) - width)).long()
            masked |= (frames >= start) & (frames < start + width)
        return x.masked_fill(masked.unsqueeze(1), 0.0)

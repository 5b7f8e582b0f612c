"""Batches of utterances for CTC training: bucketed by length, normalised, augmented, padded.

Sorting by length and cutting batches by total frames keeps padding small (the fraction is
reported), and a fixed budget of audio per batch keeps memory flat whatever the lengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torchaudio.transforms as T

from asr_pipeline.features import NormalisationStats
from asr_pipeline.text import encode


@dataclass
class Batch:
    """Padded features ``(B, F, T)``, their lengths, concatenated targets and their lengths."""

    features: torch.Tensor
    feature_lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]
    utterance_ids: list[str]

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.feature_lengths.sum().item() / self.features[:, 0].numel()


def bucket_batches(
    num_frames: Sequence[int], max_batch_frames: int, seed: int, shuffle: bool = True
) -> list[list[int]]:
    """Indices in batches of similar length, each under ``max_batch_frames`` padded frames.

    With ``shuffle`` the lengths are jittered before sorting and the batch order is random, both
    drawn from ``seed`` alone, so an epoch's batches can be rebuilt exactly after a restart.
    """
    rng = np.random.default_rng(seed)
    lengths = np.asarray(num_frames, dtype=np.float64)
    jitter = rng.uniform(0.9, 1.1, size=len(lengths)) if shuffle else np.ones(len(lengths))
    order = np.argsort(lengths * jitter, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order.tolist():
        length = int(lengths[index])
        if current and max(longest, length) * (len(current) + 1) > max_batch_frames:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


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


class BatchLoader:
    """Turns batches of index rows into :class:`Batch` tensors, reading features lazily."""

    def __init__(
        self,
        index: pd.DataFrame,
        features: Mapping[str, torch.Tensor],
        stats: NormalisationStats,
        augment: SpecAugment | None = None,
    ) -> None:
        self.index = index.reset_index(drop=True)
        self.features = features
        self.stats = stats
        self.augment = augment

    def load(self, rows: Sequence[int]) -> Batch:
        items = self.index.iloc[list(rows)]
        tensors = [self.stats.apply(self.features[key].float()) for key in items.feature_key]
        lengths = torch.tensor([t.shape[1] for t in tensors])
        padded = torch.zeros(len(tensors), tensors[0].shape[0], int(lengths.max()))
        for i, tensor in enumerate(tensors):
            padded[i, :, : tensor.shape[1]] = tensor
        if self.augment is not None:
            # masks write zeros and time masks stay inside each utterance: padding stays zero
            padded = self.augment(padded, lengths)
        encoded = [torch.tensor(encode(text)) for text in items.text]
        return Batch(
            features=padded,
            feature_lengths=lengths,
            targets=torch.cat(encoded),
            target_lengths=torch.tensor([len(e) for e in encoded]),
            texts=list(items.text),
            utterance_ids=list(items.utterance_id),
        )

    def iterate(self, batches: Sequence[Sequence[int]]) -> Iterator[Batch]:
        for rows in batches:
            yield self.load(rows)

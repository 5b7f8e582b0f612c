"""Tensors of a batch: features read lazily, normalised, augmented, padded; targets encoded in the
model's units (characters unless told otherwise).

Which utterances go together is decided elsewhere (:mod:`asr_pipeline.corpus.buckets`, as a batch
sampler in :mod:`asr_pipeline.trainer.loader`); this module gives the torch Dataset of utterances,
the ``collate`` that pads them into the :class:`Batch` the model trains on, and the CTC loss of a
batch, the same for training and validation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from asr_pipeline.audio.features import NormalisationStats
from asr_pipeline.trainer.augment import SpecAugment
from asr_pipeline.units.base import Units
from asr_pipeline.units.characters import CharacterUnits

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """Padded features ``(B, F, T)``, their lengths, concatenated targets and their lengths."""

    features: torch.Tensor
    feature_lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    texts: list[str]
    utterance_ids: list[str]

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (the DataLoader calls it with ``pin_memory=True``), so
        that copies to a GPU can overlap computation (``non_blocking``)."""
        return dataclasses.replace(
            self,
            features=self.features.pin_memory(),
            feature_lengths=self.feature_lengths.pin_memory(),
            targets=self.targets.pin_memory(),
            target_lengths=self.target_lengths.pin_memory(),
        )

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.feature_lengths.sum().item() / self.features[:, 0].numel()


class Utterance(NamedTuple):
    """One utterance ready to batch: normalised (and augmented) features, encoded targets."""

    features: torch.Tensor  # (F, T) float32
    targets: torch.Tensor  # (L,) long
    text: str
    utterance_id: str


class UtteranceDataset(Dataset[Utterance]):
    """The rows of a feature index as :class:`Utterance` items (a map-style torch Dataset).

    Features are read lazily from ``features`` (a feature store mapping), so a DataLoader worker
    reads, normalises and augments its own utterances. Augmentation draws from a generator
    seeded by ``(seed, epoch, row)``: an utterance gets the same masks in an epoch whichever
    worker loads it and whatever it is batched with, so 0, 1 or 8 workers train the same
    model, and a resumed run sees the masks the interrupted one would have.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        features: Mapping[str, torch.Tensor],
        stats: NormalisationStats,
        augment: SpecAugment | None = None,
        units: Units | None = None,
        seed: int = 0,
    ) -> None:
        self.index = index.reset_index(drop=True)
        self.features = features
        self.stats = stats
        self.augment = augment
        self.units = units or CharacterUnits()
        self.seed = seed
        self.epoch = 0
        self._keys = self.index.feature_key.tolist()
        self._texts = self.index.text.tolist()
        self._ids = self.index.utterance_id.tolist()

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of ``epoch`` (call before building the epoch's DataLoader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row: int) -> Utterance:
        features = self.stats.apply(self.features[self._keys[row]].float())
        if self.augment is not None:
            generator = torch.Generator().manual_seed(augment_seed(self.seed, self.epoch, row))
            features = self.augment(features, generator)
        text = self._texts[row]
        targets = torch.tensor(self.units.encode(text), dtype=torch.long)
        return Utterance(features, targets, text, self._ids[row])


def augment_seed(seed: int, epoch: int, row: int) -> int:
    """The seed of one utterance's augmentation in one epoch (well mixed, the same everywhere)."""
    return int(np.random.SeedSequence([seed, epoch, row]).generate_state(1)[0])


def collate(utterances: Sequence[Utterance]) -> Batch:
    """Pad utterances into one :class:`Batch` (the DataLoader's ``collate_fn``)."""
    lengths = torch.tensor([u.features.shape[1] for u in utterances])
    padded = torch.zeros(len(utterances), utterances[0].features.shape[0], int(lengths.max()))
    for i, utterance in enumerate(utterances):
        padded[i, :, : utterance.features.shape[1]] = utterance.features
    return Batch(
        features=padded,
        feature_lengths=lengths,
        targets=torch.cat([u.targets for u in utterances]),
        target_lengths=torch.tensor([len(u.targets) for u in utterances]),
        texts=[u.text for u in utterances],
        utterance_ids=[u.utterance_id for u in utterances],
    )


class BatchLoader(UtteranceDataset):
    """An :class:`UtteranceDataset` that also builds one batch at a time in this process, for
    tests, notebooks and benchmarks; the trainer iterates a DataLoader
    (:func:`asr_pipeline.trainer.loader.batch_loader`)."""

    def load(self, rows: Sequence[int]) -> Batch:
        return collate([self[int(row)] for row in rows])

    def iterate(self, batches: Sequence[Sequence[int]]) -> Iterator[Batch]:
        for rows in batches:
            yield self.load(rows)


def encodable_rows(index: pd.DataFrame, units: Units) -> tuple[pd.DataFrame, int]:
    """The rows whose transcripts ``units`` can encode, and how many utterances are left out (a
    phone model cannot train on a word without a pronunciation; the units' report counts them)."""
    verdicts = {text: units.can_encode(text) for text in index.text.unique()}
    usable = index.text.map(verdicts).astype(bool)
    excluded = int(index[~usable].utterance_id.nunique())
    if excluded:
        logger.warning(
            "Leaving out %d utterances whose transcripts the %s units cannot encode",
            excluded,
            units.kind,
        )
    return index[usable], excluded


def forward_precision(device: torch.device, precision: str) -> torch.autocast:
    """The context of the forward pass: bfloat16 autocast with ``precision: bf16``, else none
    (``batch_loss`` takes the CTC loss in fp32 either way)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def batch_loss(
    model: torch.nn.Module, batch: Batch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CTC loss (mean over the batch), log-probabilities (fp32) and output lengths of ``batch``.

    ``zero_infinity``: an utterance too short for its transcript after subsampling contributes
    nothing instead of an infinite loss.
    """
    features = batch.features.to(device, non_blocking=True)
    log_probs, out_lengths = model(features, batch.feature_lengths.to(device, non_blocking=True))
    log_probs = log_probs.float()  # under bf16 autocast: the loss needs fp32's range and precision
    loss = F.ctc_loss(
        log_probs.transpose(0, 1),
        batch.targets.to(device, non_blocking=True),
        out_lengths,
        batch.target_lengths.to(device, non_blocking=True),
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )
    return loss, log_probs, out_lengths

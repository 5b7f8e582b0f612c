"""Tensors of a batch: features read lazily, normalised, padded, augmented; targets encoded in the
model's units (characters unless told otherwise).

Which utterances go together is decided elsewhere (:mod:`asr_pipeline.corpus.buckets`); this
module turns a list of index rows into the :class:`Batch` the model trains on, and gives the CTC
loss of a batch, the same for training and validation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

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

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.feature_lengths.sum().item() / self.features[:, 0].numel()


class BatchLoader:
    """Turns batches of index rows into :class:`Batch` tensors, reading features lazily."""

    def __init__(
        self,
        index: pd.DataFrame,
        features: Mapping[str, torch.Tensor],
        stats: NormalisationStats,
        augment: SpecAugment | None = None,
        units: Units | None = None,
    ) -> None:
        self.index = index.reset_index(drop=True)
        self.features = features
        self.stats = stats
        self.augment = augment
        self.units = units or CharacterUnits()

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
        encoded = [torch.tensor(self.units.encode(text), dtype=torch.long) for text in items.text]
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


def batch_loss(
    model: torch.nn.Module, batch: Batch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CTC loss (mean over the batch), log-probabilities and output lengths of ``batch``.

    ``zero_infinity``: an utterance too short for its transcript after subsampling contributes
    nothing instead of an infinite loss.
    """
    log_probs, out_lengths = model(batch.features.to(device), batch.feature_lengths.to(device))
    loss = F.ctc_loss(
        log_probs.transpose(0, 1),
        batch.targets.to(device),
        out_lengths,
        batch.target_lengths.to(device),
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )
    return loss, log_probs, out_lengths

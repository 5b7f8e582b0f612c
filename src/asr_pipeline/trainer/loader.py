"""A ``torch.utils.data.DataLoader`` over planned batches: worker processes prepare the next
batches (read, normalise, augment, pad) while the model trains on this one.

The batches themselves are planned up front (:mod:`asr_pipeline.trainer.epoch_plan`: buckets of
similar lengths under a frame budget, reproducible from the seed); :class:`PlannedBatchSampler`
hands them to the DataLoader as its batch sampler, each rank taking its share of every global
batch under ``torchrun``. Workers fork from the training process, so the feature store and the
index are not copied until written to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from asr_pipeline.common.settings import dataclass_from_params
from asr_pipeline.trainer.batching import Batch, UtteranceDataset, collate
from asr_pipeline.trainer.ranks import Ranks


@dataclass(frozen=True)
class LoaderSettings:
    """``training.loader`` in ``parameters_training.yml``: DataLoader worker processes (0: batches
    are built in the training process between steps) and batches each worker keeps ready."""

    workers: int
    prefetch_batches: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LoaderSettings:
        settings = dataclass_from_params(cls, "training.loader", params)
        if settings.workers < 0 or settings.prefetch_batches < 1:
            raise ValueError(
                f"training.loader needs workers >= 0 and prefetch_batches >= 1, got {params}"
            )
        return settings


class PlannedBatchSampler(Sampler[list[int]]):
    """Yields the planned batches in order: this rank's share of each (all of it alone).

    ``share=False`` yields every batch whole on every rank (validation, which every rank runs).
    """

    def __init__(
        self, batches: Sequence[Sequence[int]], ranks: Ranks | None = None, share: bool = True
    ) -> None:
        self.batches = batches
        self.ranks = ranks if share else None

    def __iter__(self) -> Iterator[list[int]]:
        for rows in self.batches:
            yield self.ranks.share(rows) if self.ranks is not None else list(rows)

    def __len__(self) -> int:
        return len(self.batches)


def batch_loader(
    dataset: UtteranceDataset,
    batches: Sequence[Sequence[int]],
    settings: LoaderSettings,
    ranks: Ranks | None = None,
    share: bool = True,
) -> DataLoader[Batch]:
    """A DataLoader that yields :class:`Batch` es of ``batches`` (rows of ``dataset``).

    Pinned memory on CUDA, so that ``Tensor.to(device, non_blocking=True)`` overlaps the copy
    with the step before.
    """
    device = ranks.device if ranks is not None else torch.device("cpu")
    workers = settings.workers
    return DataLoader(
        dataset,
        batch_sampler=PlannedBatchSampler(batches, ranks, share),
        collate_fn=collate,
        num_workers=workers,
        prefetch_factor=settings.prefetch_batches if workers else None,
        pin_memory=device.type == "cuda",
        # the workers' base seed comes from here, not from torch's global generator: a run resumed
        # inside an epoch must draw the dropout masks the uninterrupted one did
        generator=torch.Generator(),
    )

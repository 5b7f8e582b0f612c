"""One epoch of the training loop seen from outside it: the DataLoader of the epoch's batches on
a progress bar, and the loss, audio and padding it went through (for the epoch's record)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from asr_pipeline.common.progress import progress_bar
from asr_pipeline.trainer.batching import Batch
from asr_pipeline.trainer.checkpoint import RunState
from asr_pipeline.trainer.loader import batch_loader

if TYPE_CHECKING:
    from asr_pipeline.trainer.loop import Trainer


class EpochMeter:
    """One epoch's batches (this rank's shares, from a DataLoader) on a progress bar (rank 0's),
    and the loss, audio and padding seen."""

    def __init__(self, trainer: Trainer, epoch: int) -> None:
        trainer.train_data.set_epoch(epoch)
        batches = trainer.epoch_batches[epoch]
        self.progress = progress_bar(
            batch_loader(trainer.train_data, batches, trainer.loader_settings, trainer.ranks),
            total=len(batches),
            desc=f"epoch {epoch + 1}/{trainer.config.epochs}",
            unit="batch",
            disable=not trainer.ranks.is_main,
            leave=False,
        )
        self.log_every = trainer.config.log_every_steps
        self.world_size = trainer.ranks.world_size
        self.frames_per_second = trainer.frames_per_second
        self.losses: list[float] = []
        self.audio_seconds = 0.0  # of the global batches (every rank's share)
        self.real_frames = self.padded_frames = 0  # of this rank's shares
        self.start = time.perf_counter()

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.progress)

    def add(self, loss: float, batch: Batch) -> None:
        """Count a step: its global loss and this rank's batch."""
        self.losses.append(loss)
        self.real_frames += int(batch.feature_lengths.sum())
        self.padded_frames += batch.features.shape[0] * batch.features.shape[2]
        self.audio_seconds += (
            self.world_size * float(batch.feature_lengths.sum()) / self.frames_per_second
        )
        if (len(self.losses) - 1) % self.log_every == 0:
            pace = self.audio_seconds / max(time.perf_counter() - self.start, 1e-9)
            self.progress.set_postfix(
                loss=f"{np.mean(self.losses[-20:]):.3f}",
                audio_s_per_s=f"{pace:.0f}",
                refresh=False,  # the bar's own pace (rare in log files)
            )

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")

    def close(self, state: RunState) -> None:
        """Close the bar and add the epoch's audio and frames to the run's."""
        self.progress.close()
        state.audio_seen += self.audio_seconds
        state.real_frames += self.real_frames
        state.padded_frames += self.padded_frames

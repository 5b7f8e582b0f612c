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

    def __init__(self, trainer: Trainer, epoch: int, state: RunState) -> None:
        """The epoch's batches from ``state.steps_in_epoch`` on (a run resumed inside it), its
        figures so far from ``state.epoch_progress``."""
        trainer.train_data.set_epoch(epoch)
        batches = trainer.epoch_batches[epoch]
        done = state.steps_in_epoch
        self.progress = progress_bar(
            batch_loader(
                trainer.train_data, batches[done:], trainer.loader_settings, trainer.ranks
            ),
            total=len(batches),
            initial=done,
            desc=f"epoch {epoch + 1}/{trainer.config.epochs}",
            unit="batch",
            disable=not trainer.ranks.is_main,
            leave=False,
        )
        self.log_every = trainer.config.log_every_steps
        self.world_size = trainer.ranks.world_size
        self.frames_per_second = trainer.frames_per_second
        progress = state.epoch_progress
        self.losses: list[float] = list(progress.get("losses", []))
        self.audio_seconds = progress.get("audio_seconds", 0.0)  # of the global batches
        self.real_frames = progress.get("real_frames", 0)  # of this rank's shares
        self.padded_frames = progress.get("padded_frames", 0)
        self.seconds_before = progress.get("seconds", 0.0)  # before a resumption
        self.cpu_seconds_before = progress.get("cpu_seconds", 0.0)
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    @property
    def seconds(self) -> float:
        """Wall seconds of the epoch so far, across a resumption."""
        return self.seconds_before + time.perf_counter() - self.start

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_seconds_before + time.process_time() - self.cpu_start

    def snapshot(self, state: RunState) -> None:
        """Write the epoch's figures so far into ``state`` (a checkpoint inside the epoch)."""
        state.epoch_progress = {
            "losses": list(self.losses),
            "audio_seconds": self.audio_seconds,
            "real_frames": self.real_frames,
            "padded_frames": self.padded_frames,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }

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
            pace = self.audio_seconds / max(self.seconds, 1e-9)
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
        state.steps_in_epoch, state.epoch_progress = 0, {}
        state.audio_seen += self.audio_seconds
        state.real_frames += self.real_frames
        state.padded_frames += self.padded_frames

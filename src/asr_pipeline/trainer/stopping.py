"""When a run stops: after its last epoch, when validation stops improving, or at its time budget.

The budget counts the whole run's training (validation and checkpoints included), across
resumptions: a run stopped by its budget can go on with a larger one, and the learning rate
anneals by it (:func:`asr_pipeline.trainer.schedule.next_position`).
"""

from __future__ import annotations

import enum
import time

from asr_pipeline.trainer.ranks import Ranks


class StopReason(enum.Enum):
    """Why a run stopped; only a run stopped by its time budget can go on."""

    ALL_EPOCHS = "all epochs done"
    NO_GAIN = "no validation gain"
    TIME_BUDGET = "time budget used up"
    BUDGET_USED_BEFORE = "time budget used up by earlier calls"

    @property
    def resumable(self) -> bool:
        """Whether a later call (with a larger budget) goes on from the checkpoint."""
        return self in {StopReason.TIME_BUDGET, StopReason.BUDGET_USED_BEFORE}


def stop_after_epoch(
    out_of_time: bool, epochs_without_gain: int, patience: int
) -> StopReason | None:
    """Why the run stops after this epoch (the budget first), or None to go on."""
    if out_of_time:
        return StopReason.TIME_BUDGET
    if epochs_without_gain >= patience:
        return StopReason.NO_GAIN
    return None


class RunClock:
    """Seconds the run has trained, across resumptions, against its time budget (if any).

    Every rank takes the slowest clock and agrees on running out of time, so they all step with
    the same learning rate and stop at the same step.
    """

    def __init__(self, ranks: Ranks, max_minutes: float | None, seconds_before: float) -> None:
        self.ranks = ranks
        self.budget_seconds = max_minutes * 60 if max_minutes else None
        self.seconds_before = seconds_before  # what the run trained before this call
        self.start = time.perf_counter()
        budget_left = self.budget_seconds - seconds_before if self.budget_seconds else 1e18
        self.deadline = self.start + budget_left

    def elapsed(self) -> float:
        """Seconds the run has trained so far (the slowest rank's)."""
        return self.ranks.max(self.seconds_before + time.perf_counter() - self.start)

    def budget_used(self) -> float | None:
        """The share of the time budget used (over 1 past it), or None without a budget."""
        return self.elapsed() / self.budget_seconds if self.budget_seconds else None

    def out_of_time(self) -> bool:
        """Whether the deadline has passed (on any rank)."""
        return self.ranks.any(time.perf_counter() > self.deadline)

    def no_time_for(self, epoch_seconds: float) -> bool:
        """Whether another epoch as long as ``epoch_seconds`` would overrun the deadline."""
        return self.ranks.any(time.perf_counter() + epoch_seconds > self.deadline)

"""Checkpoints inside an epoch: every few minutes, and at once when the job is told to stop.

Clusters and spot instances stop a job with SIGTERM and kill it a little later. While training,
:class:`StopSignal` turns SIGTERM into a flag that the loop reads after each step: every rank then
agrees to stop, the checkpoint is written with the position inside the epoch, and
:class:`Preempted` ends the run. Running it again resumes from that step, with the weights,
optimiser, weight average, random state and batches the uninterrupted run would have had.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType


class Preempted(RuntimeError):
    """The run was stopped by SIGTERM after writing its checkpoint; run it again to go on."""


class StopSignal:
    """SIGTERM, while the ``with`` block runs, sets :attr:`requested` instead of killing.

    Outside the main thread (where Python cannot handle signals) it never fires.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class CheckpointTimer:
    """Whether ``every_minutes`` have passed since the last checkpoint (never without a period)."""

    def __init__(self, every_minutes: float | None) -> None:
        self.period = every_minutes * 60 if every_minutes else None
        self.last = time.perf_counter()

    def due(self) -> bool:
        return self.period is not None and time.perf_counter() - self.last >= self.period

    def reset(self) -> None:
        self.last = time.perf_counter()

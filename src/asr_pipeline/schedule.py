"""The one-cycle learning-rate policy over a run's progress: by steps, or by a time budget.

A run with a time budget (``training.max_minutes``) cannot know in advance how many steps fit, so
a step-based one-cycle schedule either anneals long before the deadline (epochs planned too few)
or is cut off while the learning rate is still high (too many). Here the schedule follows the
*progress* of the run: the larger of the fraction of steps done and the fraction of the time
budget used, so a budgeted run anneals by its deadline however many epochs fit, and a run
without a budget follows torch's ``OneCycleLR`` (cosine warm-up and cosine annealing).
"""

from __future__ import annotations

import math


def run_progress(
    step: int, total_steps: int, elapsed_seconds: float = 0.0, budget_seconds: float | None = None
) -> float:
    """How far a run is, in ``[0, 1]``: steps done, or budget used when that is further."""
    progress = step / max(total_steps, 1)
    if budget_seconds:
        progress = max(progress, elapsed_seconds / budget_seconds)
    return min(max(progress, 0.0), 1.0)


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


def one_cycle_factor(
    progress: float,
    pct_start: float,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """Learning rate over its maximum at ``progress``, with torch ``OneCycleLR``'s defaults.

    From ``1 / div_factor`` up to 1 over the first ``pct_start`` of the run, then down to
    ``1 / (div_factor * final_div_factor)`` at its end, both along a half cosine.
    """
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
    initial, final = 1 / div_factor, 1 / (div_factor * final_div_factor)
    if progress < pct_start:
        return _cosine(initial, 1.0, progress / pct_start)
    return _cosine(1.0, final, min((progress - pct_start) / (1 - pct_start), 1.0))

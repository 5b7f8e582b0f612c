"""The one-cycle learning rate (Smith 2018) as a pure function of the position in the cycle.

The rate warms up from ``max_lr / 25`` to ``max_lr`` over the first ``pct_start`` of the steps,
then anneals to ``max_lr / 25 / 1e4``, both halves on a cosine; AdamW's beta1 moves the other
way, from 0.95 down to 0.85 at the peak and back. These are the numbers of
``torch.optim.lr_scheduler.OneCycleLR`` with its defaults, computed by the same float arithmetic,
so a rate is the same whoever asks for it: the run, a resumed run, or a test against torch.

A position rather than a scheduler object makes the time budget plain: a budgeted run cannot
know how many steps will fit, so its position is the further of the steps done and the share of
the budget used (:func:`next_position`), and it anneals by the deadline however many epochs fit.
The position is all a checkpoint has to carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DIV_FACTOR = 25.0  # max_lr / the starting rate
FINAL_DIV_FACTOR = 1e4  # the starting rate / the final rate
BASE_MOMENTUM = 0.85  # beta1 at the peak rate
MAX_MOMENTUM = 0.95  # beta1 at both ends


@dataclass(frozen=True)
class Rates:
    """What the optimiser steps with at one position of the cycle."""

    learning_rate: float
    beta1: float


def _cosine(start: float, end: float, pct: float) -> float:
    """From ``start`` (``pct`` 0) to ``end`` (``pct`` 1) on half a cosine."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


@dataclass(frozen=True)
class OneCycle:
    """A one-cycle schedule of ``total_steps``, peaking at ``max_lr`` after ``pct_start``."""

    max_lr: float
    total_steps: int
    pct_start: float

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"a cycle needs at least one step, got {self.total_steps}")
        if not 0.0 <= self.pct_start <= 1.0:
            raise ValueError(f"pct_start must lie in [0, 1], got {self.pct_start}")

    def __call__(self, position: int) -> Rates:
        """The rates for the step after ``position`` steps of the cycle (0: the first step)."""
        initial_lr = self.max_lr / DIV_FACTOR
        min_lr = initial_lr / FINAL_DIV_FACTOR
        warmup_end = float(self.pct_start * self.total_steps) - 1
        if position <= warmup_end:
            start, end = 0.0, warmup_end
            lr, momentum = (initial_lr, self.max_lr), (MAX_MOMENTUM, BASE_MOMENTUM)
        else:
            start, end = warmup_end, self.total_steps - 1
            lr, momentum = (self.max_lr, min_lr), (BASE_MOMENTUM, MAX_MOMENTUM)
        # torch divides by zero here (a warm-up ending on step 0, or a single-step cycle): such a
        # phase is over as soon as it starts
        pct = (position - start) / (end - start) if end != start else 1.0
        return Rates(_cosine(*lr, pct), _cosine(*momentum, pct))


def budget_position(steps_done: int, total_steps: int, budget_used: float) -> int:
    """Where a one-cycle schedule of ``total_steps`` stands before its next step.

    The steps done, or the share of the time budget used when that is further; never past the
    last step, so a run over its budget stays at the annealed end of the cycle.
    """
    by_budget = int(budget_used * total_steps) - 1
    return min(max(steps_done, by_budget), total_steps - 1)


def next_position(position: int, total_steps: int, budget_used: float | None) -> int:
    """The position after one more step; ``budget_used``: share of the time budget, if any."""
    if budget_used is not None:
        position = budget_position(position, total_steps, budget_used)
    return position + 1


def set_rates(optimizer: torch.optim.Optimizer, rates: Rates) -> None:
    """Give every parameter group of an Adam-like optimiser these rates."""
    for group in optimizer.param_groups:
        group["lr"] = rates.learning_rate
        group["betas"] = (rates.beta1, *group["betas"][1:])

"""The one-cycle learning rate as a function of its position: torch's OneCycleLR, exactly."""

from __future__ import annotations

import pytest
import torch

from asr_pipeline.trainer.schedule import (
    OneCycle,
    Rates,
    budget_position,
    next_position,
    set_rates,
)


def _torch_scheduler(
    max_lr: float, total_steps: int, pct_start: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """OneCycleLR as the trainer used it: AdamW, defaults but for these three."""
    optimizer = torch.optim.AdamW(
        [torch.nn.Parameter(torch.zeros(1))], lr=max_lr, betas=(0.9, 0.98)
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, pct_start=pct_start, total_steps=total_steps
    )
    return optimizer, scheduler


def _rates(optimizer: torch.optim.Optimizer) -> tuple[float, float, float]:
    group = optimizer.param_groups[0]
    return group["lr"], *group["betas"]


@pytest.mark.parametrize(
    ("max_lr", "total_steps", "pct_start"),
    [(2e-3, 1000, 0.15), (2e-3, 7, 0.15), (1e-2, 240, 0.1), (3e-4, 1, 0.15), (0.0, 12, 0.3)],
)
def test_every_step_equals_torch_one_cycle(
    max_lr: float, total_steps: int, pct_start: float
) -> None:
    reference, scheduler = _torch_scheduler(max_lr, total_steps, pct_start)
    schedule = OneCycle(max_lr, total_steps, pct_start)
    ours = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr, betas=(0.9, 0.98))
    for position in range(total_steps + 1):  # torch allows one step past the end
        if position:
            reference.step()
            scheduler.step()
        set_rates(ours, schedule(position))
        assert _rates(ours) == _rates(reference), position  # exactly, beta2 untouched


def test_the_cycle_warms_up_peaks_and_anneals() -> None:
    schedule = OneCycle(2e-3, 100, 0.15)
    assert schedule(0) == Rates(pytest.approx(2e-3 / 25), 0.95)
    assert schedule(14) == Rates(pytest.approx(2e-3), pytest.approx(0.85))
    assert schedule(99) == Rates(pytest.approx(2e-3 / 25 / 1e4), pytest.approx(0.95))


def test_a_time_budget_moves_the_position_as_the_scheduler_did() -> None:
    # what the trainer did with torch's scheduler: overwrite last_epoch, then step
    total_steps = 50
    reference, scheduler = _torch_scheduler(2e-3, total_steps, 0.15)
    schedule = OneCycle(2e-3, total_steps, 0.15)
    ours = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-3, betas=(0.9, 0.98))
    position, jumps = 0, 0
    for step in range(80):
        # the steps ahead of the budget at first, then the budget ahead, then past it
        budget_used = step / 80 if step < 30 else (step - 20) / 25
        reference.step()
        scheduler.last_epoch = budget_position(scheduler.last_epoch, total_steps, budget_used)
        scheduler.step()
        jumps += next_position(position, total_steps, budget_used) > position + 1
        position = next_position(position, total_steps, budget_used)
        set_rates(ours, schedule(position))
        assert position == scheduler.last_epoch <= total_steps, step
        assert _rates(ours) == _rates(reference), step
    assert jumps and position == total_steps  # the budget moved it ahead, to the end


def test_budget_position_is_the_further_of_steps_and_budget() -> None:
    assert budget_position(10, 100, budget_used=0.0) == 10  # no time used: steps alone
    assert budget_position(10, 100, budget_used=0.5) == 49  # the next step is the 50th
    assert budget_position(80, 100, budget_used=0.5) == 80  # steps are further
    assert budget_position(10, 100, budget_used=3.0) == 99  # over budget: the annealed end
    assert budget_position(100, 100, budget_used=1.0) == 99
    assert next_position(10, 100, None) == 11  # without a budget: one step at a time
    assert next_position(10, 100, 0.5) == 50


def test_a_warmup_of_one_step_starts_at_the_peak() -> None:
    # torch divides by zero when the warm-up ends on the first step (pct_start * steps == 1)
    with pytest.raises(ZeroDivisionError):
        _torch_scheduler(1e-3, 10, 0.1)
    schedule = OneCycle(1e-3, 10, 0.1)
    assert schedule(0) == Rates(1e-3, 0.85)
    assert schedule(1).learning_rate < 1e-3


@pytest.mark.parametrize(("total_steps", "pct_start"), [(0, 0.15), (10, 1.5), (10, -0.1)])
def test_an_impossible_cycle_is_refused(total_steps: int, pct_start: float) -> None:
    with pytest.raises(ValueError):
        OneCycle(1e-3, total_steps, pct_start)

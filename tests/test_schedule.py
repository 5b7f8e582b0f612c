"""The one-cycle learning-rate policy, by steps or by a time budget."""

from __future__ import annotations

import pytest
import torch

from asr_pipeline.schedule import one_cycle_factor, run_progress


def test_by_steps_it_follows_torch_one_cycle_lr() -> None:
    max_lr, steps = 2e-3, 2000
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, pct_start=0.15, total_steps=steps
    )
    for step in range(steps):
        expected = reference.get_last_lr()[0]
        # torch ends the warm-up one step early (its phases end at step n - 1)
        assert max_lr * one_cycle_factor(step / steps, 0.15) == pytest.approx(
            expected, abs=0.01 * max_lr
        )
        optimizer.step()
        reference.step()


def test_the_cycle_goes_up_then_down_to_its_floor() -> None:
    factors = [one_cycle_factor(p / 100, 0.2) for p in range(101)]
    peak = factors.index(max(factors))
    assert peak == 20 and factors[peak] == pytest.approx(1.0)
    assert factors[0] == pytest.approx(1 / 25)
    assert factors[-1] == pytest.approx(1 / 25e4)
    assert all(a < b for a, b in zip(factors[:peak], factors[1 : peak + 1], strict=True))
    assert all(a > b for a, b in zip(factors[peak:-1], factors[peak + 1 :], strict=True))
    assert one_cycle_factor(1.5, 0.2) == pytest.approx(1 / 25e4)  # past the end: stays annealed


def test_progress_is_the_further_of_steps_and_budget() -> None:
    assert run_progress(10, 100) == pytest.approx(0.1)
    assert run_progress(10, 100, elapsed_seconds=1e6) == pytest.approx(0.1)  # no budget
    assert run_progress(10, 100, elapsed_seconds=30, budget_seconds=60) == pytest.approx(0.5)
    assert run_progress(80, 100, elapsed_seconds=30, budget_seconds=60) == pytest.approx(0.8)
    assert run_progress(10, 100, elapsed_seconds=90, budget_seconds=60) == 1.0
    assert run_progress(0, 0) == 0.0


@pytest.mark.parametrize("pct_start", [0.0, 1.0, -0.1])
def test_warm_up_fraction_out_of_range_is_refused(pct_start: float) -> None:
    with pytest.raises(ValueError, match="pct_start"):
        one_cycle_factor(0.5, pct_start)

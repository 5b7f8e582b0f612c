"""The exponential moving average of the weights: its update rule, and the trainer keeping it."""

from __future__ import annotations

import pytest
import torch

from asr_pipeline.trainer.ema import ema_update, exponential_moving_average


def test_update_ramps_up_to_the_decay() -> None:
    update = ema_update(0.9)
    average, value = [torch.zeros(3)], [torch.ones(3)]
    update(average, value, torch.tensor(1))  # ramp: (1 + 1) / (10 + 1) < 0.9
    torch.testing.assert_close(average[0], torch.full((3,), 1 - 2 / 11))
    average = [torch.zeros(3)]
    update(average, value, torch.tensor(1000))  # past the ramp: the decay itself
    torch.testing.assert_close(average[0], torch.full((3,), 0.1))


def test_integer_buffers_follow_the_model() -> None:
    counter = [torch.tensor(3)]
    ema_update(0.99)(counter, [torch.tensor(17)], torch.tensor(5))
    assert counter[0].item() == 17 and counter[0].dtype == torch.int64


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_decay_outside_zero_one_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        ema_update(decay)


def test_averaged_model_tracks_weights_and_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    averaged = exponential_moving_average(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    averaged.update_parameters(model)  # the first update copies
    model.train()
    model(torch.randn(8, 4) * 3 + 2)  # moves the running statistics
    with torch.no_grad():
        model[0].weight.add_(1.0)
    averaged.update_parameters(model)  # n = 1: weight 1 - min(0.5, 2 / 11)
    weight = 1 - 2 / 11
    now = model.state_dict()
    for name in ("0.weight", "1.running_mean", "1.running_var"):
        expected = start[name] + weight * (now[name] - start[name])
        torch.testing.assert_close(averaged.module.state_dict()[name], expected, msg=name)
    assert averaged.module.state_dict()["1.num_batches_tracked"].item() == 1

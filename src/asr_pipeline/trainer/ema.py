"""An exponential moving average (EMA) of the weights, kept beside the trained model.

On a couple of hours of audio the model over-fits long before a CPU budget ends, and the weights
of single steps are noisy; their running average generalises better to unseen speakers, for one
extra copy of the weights and no extra forward passes. The average is what gets validated, kept
as the best model and registered; the trained weights go on training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.optim.swa_utils import AveragedModel

WARMUP_UPDATES = 10

# (averaged tensors, current tensors, updates so far): torch.optim.swa_utils' multi_avg_fn
Tensors = Sequence[torch.Tensor]
MultiAverageFunction = Callable[[Tensors, Tensors, torch.Tensor], None]


def ema_update(decay: float) -> MultiAverageFunction:
    """The update of an EMA whose decay ramps up as ``(1 + n) / (10 + n)`` to ``decay``.

    The ramp (TensorFlow's ``num_updates`` rule) keeps the early average from dragging the
    random initial weights along: it averages over roughly the last tenth of the updates so far,
    until that is longer than ``decay``'s own horizon of ``1 / (1 - decay)`` updates.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"the EMA decay must lie between 0 and 1 (exclusive), got {decay}")

    @torch.no_grad()
    def update(averaged: Tensors, current: Tensors, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (WARMUP_UPDATES + n))
        for average, value in zip(averaged, current, strict=True):
            if average.is_floating_point():
                average.lerp_(value, weight)
            else:  # counters such as batch norm's num_batches_tracked follow the model
                average.copy_(value)

    return update


def exponential_moving_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A copy of ``model`` that ``update_parameters(model)`` moves towards it after each step.

    Batch-norm running statistics are averaged too (``use_buffers``), so the averaged model is
    ready for evaluation without a pass to recompute them.
    """
    return AveragedModel(model, multi_avg_fn=ema_update(decay), use_buffers=True)

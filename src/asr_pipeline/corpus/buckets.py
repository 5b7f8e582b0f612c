"""Utterances in batches of similar length, each under a budget of padded frames.

Sorting by length and cutting batches by total frames keeps padding small, and a fixed budget of
audio per batch keeps memory flat whatever the lengths. Training, validation, beam tuning and
evaluation all batch this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucket_batches(
    num_frames: Sequence[int], max_batch_frames: int, seed: int, shuffle: bool = True
) -> list[list[int]]:
    """Indices in batches of similar length, each under ``max_batch_frames`` padded frames.

    With ``shuffle`` the lengths are jittered before sorting and the batch order is random, both
    drawn from ``seed`` alone, so an epoch's batches can be rebuilt exactly after a restart.
    """
    rng = np.random.default_rng(seed)
    lengths = np.asarray(num_frames, dtype=np.float64)
    jitter = rng.uniform(0.9, 1.1, size=len(lengths)) if shuffle else np.ones(len(lengths))
    order = np.argsort(lengths * jitter, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order.tolist():
        length = int(lengths[index])
        if current and max(longest, length) * (len(current) + 1) > max_batch_frames:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches

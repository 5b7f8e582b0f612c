"""Which rows each epoch trains on, in which batches: the whole run planned up front from the seed.

Planning every epoch before the first step gives the one-cycle schedule its length (the sum of
all batches) and lets a resumed run rebuild exactly the batches the interrupted one had.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from asr_pipeline.corpus.buckets import bucket_batches

# An epoch's global batches, each a list of rows of the training index.
Batches = list[list[int]]


def split_index(index: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training rows (every speed) and the validation rows (original speed only)."""
    if "speed" not in index:
        index = index.assign(speed=1.0)
    train = index[index.split == "train"].reset_index(drop=True)
    validation = index[(index.split == "validation") & (index.speed == 1.0)]
    if train.empty:
        raise ValueError("the feature index has no training utterances")
    return train, validation.reset_index(drop=True)


def epoch_rows(train: pd.DataFrame, epoch: int, seed: int, sortagrad: bool) -> np.ndarray:
    """Training rows of one epoch: one speed of each utterance, drawn afresh every epoch.

    Speed-perturbed copies are alternatives, not extra data: an epoch costs the same with or
    without them. The SortaGrad epoch keeps the original speed.
    """
    if (train.speed == 1.0).all() or (sortagrad and epoch == 0):
        return np.flatnonzero(train.speed.to_numpy() == 1.0)
    draw = np.random.default_rng([seed, epoch]).random(len(train))
    chosen = train.assign(draw=draw).sort_values("draw").drop_duplicates("utterance_id")
    return np.sort(chosen.index.to_numpy())


def epoch_batches(
    train: pd.DataFrame, epoch: int, max_batch_frames: int, seed: int, sortagrad: bool
) -> Batches:
    """Global batches of one epoch, each under ``max_batch_frames`` padded frames.

    With SortaGrad (DeepSpeech 2) the first epoch goes from short to long utterances, which
    gets CTC off its all-blank plateau sooner; later epochs are shuffled.
    """
    rows = epoch_rows(train, epoch, seed, sortagrad)
    first_sorted = sortagrad and epoch == 0
    batches = bucket_batches(
        train.num_frames.to_numpy()[rows].tolist(),
        max_batch_frames,
        seed=seed * 1000 + epoch,
        shuffle=not first_sorted,
    )
    return [[int(rows[i]) for i in batch] for batch in batches]


def plan_epochs(
    train: pd.DataFrame, epochs: int, max_batch_frames: int, seed: int, sortagrad: bool
) -> list[Batches]:
    """The batches of every epoch of the run."""
    return [epoch_batches(train, e, max_batch_frames, seed, sortagrad) for e in range(epochs)]

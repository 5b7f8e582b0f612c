"""The state of a run, saved after every epoch and inside epochs
(:mod:`asr_pipeline.trainer.preemption`), so that an interrupted run goes on where it stopped.

A checkpoint is taken up only by a run with the same recipe, model and data (the fingerprint)
that has not finished; anything else starts afresh, so a stale file can never leak into a run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel

from asr_pipeline.common.atomic import atomic_torch_save
from asr_pipeline.model.factory import AnyModelConfig
from asr_pipeline.trainer.config import TrainingConfig
from asr_pipeline.units.base import Units

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
# Raised when what a checkpoint holds changes. 2: the position in the learning-rate cycle
# replaces the state of torch's OneCycleLR scheduler (format 1, which had no "format" key).
# 3: checkpoints inside an epoch (the steps done and the epoch's figures so far), CUDA RNG.
CHECKPOINT_FORMAT = 3


@dataclass
class RunState:
    """Progress of a run: what a checkpoint restores besides weights, optimiser and RNG."""

    epoch: int = -1  # the last finished epoch (0-based)
    cycle_position: int = 0  # of the learning rate (see asr_pipeline.trainer.schedule)
    history: list[dict[str, float]] = field(default_factory=list)
    # the best validation error of the selection metric: CER, or PER for a phone model (the name
    # stays: checkpoints of running jobs hold it)
    best_cer: float = float("nan")
    best_epoch: int = 0  # 1-based; 0: none yet
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain: int = 0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    audio_seen: float = 0.0
    real_frames: int = 0
    padded_frames: int = 0
    # inside the epoch after ``epoch`` (a checkpoint taken mid-epoch): the steps done, and the
    # epoch's loss, audio, frames and seconds so far (asr_pipeline.trainer.epoch_meter)
    steps_in_epoch: int = 0
    epoch_progress: dict[str, Any] = field(default_factory=dict)

    @property
    def padding_fraction(self) -> float:
        """The share of padding in the batches trained on so far."""
        return 1 - self.real_frames / max(self.padded_frames, 1)

    def add_epoch(
        self,
        epoch: int,
        record: dict[str, float],
        evaluated: torch.nn.Module,
        metric: str = "val_cer",
    ) -> None:
        """Append an epoch's record; keep ``evaluated``'s weights if its validation error
        (``metric``) is the best so far (or if there is no validation split: then the last
        weights are kept)."""
        self.history.append(record)
        self.epoch = epoch
        cer = record[metric]
        if np.isnan(cer) or self.best_epoch == 0 or cer < self.best_cer:
            self.best_cer, self.best_epoch, self.epochs_without_gain = cer, epoch + 1, 0
            self.best_state = copy.deepcopy(evaluated.state_dict())
        else:
            self.epochs_without_gain += 1


def run_fingerprint(
    model_config: AnyModelConfig,
    config: TrainingConfig,
    index: pd.DataFrame,
    units: Units | None = None,
) -> str:
    """A hash of what a resumed run must share with the interrupted one.

    Units other than the characters add their digest (the same number of phones or subwords
    is not the same targets); the characters add nothing, so that checkpoints written before
    units were a choice still resume.
    """
    values = {
        "model": model_config.to_dict(),
        "training": config.fingerprint(),
        "data": sorted(index.feature_key.tolist()),
    }
    if units is not None and units.kind != "characters":
        values["units"] = units.digest()
    payload = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint file of one run (``fingerprint``); only the main rank writes it."""

    path: Path
    fingerprint: str
    writes: bool = True  # False on every rank but rank 0
    resume: bool = True  # False: never restore, always start afresh

    def save(
        self,
        state: RunState,
        complete: bool,
        model: torch.nn.Module,
        averaged: AveragedModel | None,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Everything needed to go on after an interruption, written atomically."""
        if not self.writes:
            return
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "complete": complete,
            "model": model.state_dict(),
            "averaged": averaged.state_dict() if averaged is not None else None,
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **asdict(state),
        }
        atomic_torch_save(checkpoint, self.path)

    def restore(
        self,
        model: torch.nn.Module,
        averaged: AveragedModel | None,
        optimizer: torch.optim.Optimizer,
    ) -> RunState | None:
        """Load an unfinished run of this fingerprint into the arguments; None if there is none."""
        if not (self.resume and self.path.exists()):
            return None
        checkpoint = torch.load(self.path, weights_only=True, map_location="cpu")
        refusal = self._refusal(checkpoint)
        if refusal:
            logger.info("Checkpoint %s %s: starting afresh", self.path, refusal)
            return None
        model.load_state_dict(checkpoint["model"])
        if averaged is not None:
            averaged.load_state_dict(checkpoint["averaged"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if checkpoint["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        logger.info(
            "Resuming from %s after epoch %d and %d steps of the next",
            self.path,
            checkpoint["epoch"] + 1,
            checkpoint["steps_in_epoch"],
        )
        return RunState(**{f.name: checkpoint[f.name] for f in fields(RunState)})

    def _refusal(self, checkpoint: dict) -> str | None:
        """Why ``checkpoint`` cannot be resumed, or None when it can."""
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            found = checkpoint.get("format", 1)
            return f"is of format {found}, not {CHECKPOINT_FORMAT} (written by other code)"
        if checkpoint.get("fingerprint") != self.fingerprint:
            return "is from other settings or data"
        if checkpoint.get("complete"):
            return "is of a finished run"
        return None

"""The CTC training loop: AdamW, one-cycle LR, SpecAugment, weight EMA, checkpoints, early stopping.

It runs alone or under ``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on GPU): every rank
takes its share of each global batch, and only rank 0 writes checkpoints and reports.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from asr_pipeline.audio.features import NormalisationStats
from asr_pipeline.common.atomic import atomic_torch_save
from asr_pipeline.common.progress import progress_bar
from asr_pipeline.corpus.buckets import bucket_batches
from asr_pipeline.decoding.ctc import greedy_decode
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.model.acoustic import AcousticModel, ModelConfig, count_parameters
from asr_pipeline.trainer.augment import SpecAugment
from asr_pipeline.trainer.batching import Batch, BatchLoader
from asr_pipeline.trainer.ema import exponential_moving_average

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


@dataclass(frozen=True)
class TrainingConfig:
    """The recipe in ``parameters_training.yml`` (model sizes are in :class:`ModelConfig`)."""

    epochs: int = 12
    max_minutes: float | None = None
    batch_seconds: float = 60.0
    learning_rate: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    pct_start: float = 0.15
    grad_clip: float = 5.0
    ema_decay: float | None = None
    early_stopping_patience: int = 6
    sortagrad: bool = True
    spec_augment: Mapping[str, float] = field(default_factory=dict)
    seed: int = 7
    threads: int | None = None
    device: str = "auto"
    checkpoint_dir: str = "data/06_models/checkpoints"
    resume: bool = True
    log_every_steps: int = 10

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainingConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in params.items() if k in names}
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        return cls(**values)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        values = asdict(self)
        for volatile in (
            "max_minutes",
            "threads",
            "device",
            "resume",
            "log_every_steps",
            "checkpoint_dir",
            "early_stopping_patience",
        ):
            values.pop(volatile)
        return values


@dataclass
class TrainingResult:
    """The best model (by validation CER) and the per-epoch history."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    best_validation_cer: float
    parameters: int
    padding_fraction: float
    train_seconds: float
    train_cpu_seconds: float
    audio_seconds_seen: float


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class _RunState:
    """Progress of a run: what a checkpoint restores besides weights, optimiser and RNG."""

    epoch: int = -1  # the last finished epoch (0-based)
    history: list[dict[str, float]] = field(default_factory=list)
    best_cer: float = float("nan")
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain: int = 0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    audio_seen: float = 0.0
    real_frames: int = 0
    padded_frames: int = 0


def _init_distributed(device: torch.device) -> _Distributed:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size())


def select_device(name: str) -> torch.device:
    """``auto``: this process's GPU (``LOCAL_RANK`` under torchrun) when there is one, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def budget_position(steps_done: int, total_steps: int, budget_used: float) -> int:
    """Where a one-cycle schedule of ``total_steps`` stands before its next step.

    The steps done, or the share of the time budget used when that is further; never past the
    last step, so a run over its budget stays at the annealed end of the cycle.
    """
    by_budget = int(budget_used * total_steps) - 1
    return min(max(steps_done, by_budget), total_steps - 1)


def _run_fingerprint(model_config: ModelConfig, config: TrainingConfig, index: pd.DataFrame) -> str:
    payload = json.dumps(
        {
            "model": model_config.to_dict(),
            "training": config.fingerprint(),
            "data": sorted(index.feature_key.tolist()),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


class Trainer:
    """Trains an :class:`AcousticModel` on a feature index; see :func:`train_acoustic_model`."""

    def __init__(
        self,
        model_config: ModelConfig,
        config: TrainingConfig,
        index: pd.DataFrame,
        features: Mapping[str, torch.Tensor],
        stats: NormalisationStats,
        frames_per_second: float,
    ) -> None:
        self.config = config
        self.model_config = model_config
        self.device = select_device(config.device)
        self.dist = _init_distributed(self.device)
        if config.threads:  # else torch's default: all cores, or OMP_NUM_THREADS
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)

        if "speed" not in index:
            index = index.assign(speed=1.0)
        self.train_index = index[index.split == "train"].reset_index(drop=True)
        self.validation_index = index[
            (index.split == "validation") & (index.speed == 1.0)
        ].reset_index(drop=True)
        if self.train_index.empty:
            raise ValueError("the feature index has no training utterances")
        augment = SpecAugment(**config.spec_augment) if config.spec_augment else None
        self.train_loader = BatchLoader(self.train_index, features, stats, augment)
        self.validation_loader = BatchLoader(self.validation_index, features, stats)
        self.max_batch_frames = int(config.batch_seconds * frames_per_second)
        self.frames_per_second = frames_per_second

        self.model = AcousticModel(model_config).to(self.device)
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        # The EMA of the weights (when set) is what is validated, kept and registered.
        self.averaged = (
            exponential_moving_average(self.model, config.ema_decay) if config.ema_decay else None
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.learning_rate,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.epoch_batches = [self._batches(epoch) for epoch in range(config.epochs)]
        self.total_steps = max(1, sum(len(b) for b in self.epoch_batches))
        self.budget_seconds = config.max_minutes * 60 if config.max_minutes else None
        self._clock_start: float | None = None  # set by fit(): when the run's clock resumed
        self._seconds_before = 0.0  # training seconds of the run before that (a resumed run)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.learning_rate,
            pct_start=config.pct_start,
            total_steps=self.total_steps,
        )
        self.checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME
        self.fingerprint = _run_fingerprint(model_config, config, index)

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """The model that is validated and kept: the weights' EMA, or the trained weights."""
        return self.averaged.module if self.averaged is not None else self.model

    def _step_scheduler(self) -> None:
        """Advance the one cycle by a step, or to the share of the time budget used if further.

        A budgeted run cannot know how many steps fit, so its cycle follows whichever ends first,
        the epochs or the budget: it anneals by the deadline however many epochs fit.
        """
        if self.budget_seconds:
            self.scheduler.last_epoch = budget_position(
                self.scheduler.last_epoch, self.total_steps, self._elapsed() / self.budget_seconds
            )
        self.scheduler.step()

    def _elapsed(self) -> float:
        """Seconds the run has trained (validation included), across resumptions.

        Under DDP the ranks take the slowest clock, so they all step with the same learning rate.
        """
        elapsed = self._seconds_before
        if self._clock_start is not None:
            elapsed += time.perf_counter() - self._clock_start
        if self.dist.world_size > 1:
            value = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            elapsed = value.item()
        return elapsed

    def _epoch_rows(self, epoch: int) -> np.ndarray:
        """Training rows of one epoch: one speed of each utterance, drawn afresh every epoch.

        Speed-perturbed copies are alternatives, not extra data: an epoch costs the same with or
        without them. The SortaGrad epoch keeps the original speed.
        """
        index = self.train_index
        if (index.speed == 1.0).all() or (self.config.sortagrad and epoch == 0):
            return np.flatnonzero(index.speed.to_numpy() == 1.0)
        draw = np.random.default_rng([self.config.seed, epoch]).random(len(index))
        chosen = index.assign(draw=draw).sort_values("draw").drop_duplicates("utterance_id")
        return np.sort(chosen.index.to_numpy())

    def _batches(self, epoch: int) -> list[list[int]]:
        """Global batches of one epoch, rebuilt identically from the seed (after a restart too).

        With SortaGrad (DeepSpeech 2) the first epoch goes from short to long utterances, which
        gets CTC off its all-blank plateau sooner; later epochs are shuffled.
        """
        rows = self._epoch_rows(epoch)
        batches = bucket_batches(
            self.train_index.num_frames.to_numpy()[rows].tolist(),
            self.max_batch_frames,
            seed=self.config.seed * 1000 + epoch,
            shuffle=not (self.config.sortagrad and epoch == 0),
        )
        return [[int(rows[i]) for i in batch] for batch in batches]

    def _rows_of_rank(self, rows: list[int]) -> list[int]:
        """This process's share of a global batch (every rank gets at least one utterance)."""
        world, rank = self.dist.world_size, self.dist.rank
        if len(rows) < world:
            return [rows[rank % len(rows)]]
        return rows[rank::world]

    def _mean_over_ranks(self, loss: torch.Tensor) -> float:
        """The global batch's loss (each rank computed it on its share)."""
        value = loss.detach().clone()
        if self.dist.world_size > 1:
            dist.all_reduce(value)  # gloo has no AVG
            value /= self.dist.world_size
        return value.item()

    def _all_agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any: ranks must stop at the same step."""
        if self.dist.world_size == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _no_time_for(self, epoch_seconds: float, deadline: float) -> bool:
        """Whether another epoch as long as the last one would overrun the deadline (any rank)."""
        return self._all_agree(time.perf_counter() + epoch_seconds > deadline)

    # -- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, state: _RunState, complete: bool) -> None:
        """Everything needed to go on after an interruption, written atomically by rank 0."""
        if not self.dist.is_main:
            return
        checkpoint = {
            "fingerprint": self.fingerprint,
            "complete": complete,
            "model": self.model.state_dict(),
            "averaged": self.averaged.state_dict() if self.averaged is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **asdict(state),
        }
        atomic_torch_save(checkpoint, self.checkpoint_path)

    def _restore(self) -> _RunState | None:
        """The state of an unfinished run with the same settings and data, if there is one."""
        if not (self.config.resume and self.checkpoint_path.exists()):
            return None
        checkpoint = torch.load(self.checkpoint_path, weights_only=True, map_location="cpu")
        if checkpoint.get("fingerprint") != self.fingerprint:
            logger.info(
                "Checkpoint %s is from other settings or data: starting afresh",
                self.checkpoint_path,
            )
            return None
        if checkpoint.get("complete"):
            logger.info("Checkpoint %s is of a finished run: starting afresh", self.checkpoint_path)
            return None
        self.model.load_state_dict(checkpoint["model"])
        if self.averaged is not None:
            self.averaged.load_state_dict(checkpoint["averaged"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        logger.info(
            "Resuming from %s after epoch %d", self.checkpoint_path, checkpoint["epoch"] + 1
        )
        return _RunState(**{f.name: checkpoint[f.name] for f in fields(_RunState)})

    # -- steps -------------------------------------------------------------------------------
    def _loss(
        self, batch: Batch, model: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CTC loss (mean over the batch), log-probabilities and output lengths of a batch."""
        model = model or self.ddp_model
        features = batch.features.to(self.device)
        log_probs, out_lengths = model(features, batch.feature_lengths.to(self.device))
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            batch.targets.to(self.device),
            out_lengths,
            batch.target_lengths.to(self.device),
            blank=0,
            reduction="mean",
            zero_infinity=True,
        )
        return loss, log_probs, out_lengths

    @torch.inference_mode()
    def validate(self, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Validation loss and greedy-decoding CER/WER (NaN without a validation split).

        ``model``: the trained weights or their average (default: :attr:`evaluated_model`).
        """
        if self.validation_index.empty:
            return {"val_loss": float("nan"), "val_cer": float("nan"), "val_wer": float("nan")}
        model = self.evaluated_model if model is None else model
        model.eval()
        if self.dist.world_size > 1:
            # batch-norm statistics drift apart between ranks: all validate rank 0's model
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        batches = bucket_batches(
            self.validation_index.num_frames.tolist(),
            self.max_batch_frames * 2,
            seed=0,
            shuffle=False,
        )
        references, hypotheses, losses, weights = [], [], [], []
        for batch in self.validation_loader.iterate(batches):
            loss, log_probs, out_lengths = self._loss(batch, model)
            losses.append(loss.item())
            weights.append(len(batch.texts))
            references += batch.texts
            hypotheses += greedy_decode(log_probs.cpu(), out_lengths.cpu())
        rates = error_rates(references, hypotheses)
        return {
            "val_loss": float(np.average(losses, weights=weights)),
            "val_cer": rates.cer,
            "val_wer": rates.wer,
        }

    def fit(self) -> TrainingResult:
        """Train epoch by epoch until the last epoch, early stopping or the time budget."""
        config = self.config
        originals = self.train_index[self.train_index.speed == 1.0]
        speeds = sorted(self.train_index.speed.unique())
        logger.info(
            "Training %s parameters on %d utterances (%.2f h, speeds %s), %d validation; "
            "%d epochs, ~%d steps",
            f"{count_parameters(self.model):,}",
            len(originals),
            originals.duration_s.sum() / 3600,
            "/".join(f"{speed:g}" for speed in speeds),
            len(self.validation_index),
            config.epochs,
            len(self.epoch_batches[0]) if self.epoch_batches else 0,
        )
        state = self._restore() or _RunState()
        # The budget counts the whole run's training (validation included), resumptions too: the
        # learning rate anneals by it. A run stopped by its budget goes on with a larger one.
        self._seconds_before, self._clock_start = state.train_seconds, time.perf_counter()
        deadline = self._clock_start + (
            self.budget_seconds - state.train_seconds if self.budget_seconds else 1e18
        )
        stop_reason, first_epoch = "all epochs done", state.epoch + 1
        if state.history and self._no_time_for(state.history[-1]["epoch_seconds"], deadline):
            stop_reason = f"time budget of {config.max_minutes} min, used up before this call"
            first_epoch = config.epochs  # nothing to train; a larger budget goes on
        for epoch in range(first_epoch, config.epochs):
            epoch_start, cpu_start = time.perf_counter(), time.process_time()
            train_loss, epoch_audio, interrupted = self._train_epoch(epoch, state, deadline)
            epoch_seconds = time.perf_counter() - epoch_start
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **self.validate(),
                **self._validate_trained_weights(),
                "learning_rate": self.scheduler.get_last_lr()[0],
                "audio_seconds_per_second": epoch_audio / epoch_seconds,
                "epoch_seconds": epoch_seconds,
                "padding_fraction": 1 - state.real_frames / max(state.padded_frames, 1),
            }
            state.train_seconds = self._elapsed()  # wall time of the run, checkpoints included
            state.cpu_seconds += time.process_time() - cpu_start
            state.audio_seen += epoch_audio
            self._record_epoch(epoch, record, state)
            out_of_time = interrupted or self._no_time_for(epoch_seconds, deadline)
            no_gain = state.epochs_without_gain >= config.early_stopping_patience
            if out_of_time:
                stop_reason = f"time budget of {config.max_minutes} min"
            elif no_gain:
                stop_reason = f"no validation gain for {state.epochs_without_gain} epochs"
            # a run stopped by its time budget stays resumable; the others are finished
            finished = epoch + 1 == config.epochs or (no_gain and not out_of_time)
            self._save_checkpoint(state, complete=finished)
            if stop_reason != "all epochs done":
                break
        logger.info(
            "Training stopped: %s; best epoch %d (val CER %.1f%%)",
            stop_reason,
            state.best_epoch,
            100 * state.best_cer,
        )
        return TrainingResult(
            state_dict=state.best_state
            if state.best_state is not None
            else self.evaluated_model.state_dict(),
            history=state.history,
            best_epoch=state.best_epoch,
            best_validation_cer=state.best_cer,
            parameters=count_parameters(self.model),
            padding_fraction=1 - state.real_frames / max(state.padded_frames, 1),
            train_seconds=state.train_seconds,
            train_cpu_seconds=state.cpu_seconds,
            audio_seconds_seen=state.audio_seen,
        )

    def _validate_trained_weights(self) -> dict[str, float]:
        """With an EMA: the trained weights' own validation figures (``*_raw``), for comparison."""
        if self.averaged is None:
            return {}
        return {f"{name}_raw": value for name, value in self.validate(self.model).items()}

    def _train_epoch(
        self, epoch: int, state: _RunState, deadline: float
    ) -> tuple[float, float, bool]:
        """One pass over the epoch's batches: (mean loss, audio-seconds seen, out of time?)."""
        config = self.config
        self.model.train()
        losses, audio, start = [], 0.0, time.perf_counter()
        progress = progress_bar(
            self.epoch_batches[epoch],
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not self.dist.is_main,
            leave=False,
        )
        out_of_time = False
        for step, rows in enumerate(progress):
            batch = self.train_loader.load(self._rows_of_rank(rows))
            loss, _, _ = self._loss(batch)
            if self._all_agree(not torch.isfinite(loss).item()):
                logger.warning("Skipping a batch with a non-finite loss (epoch %d)", epoch + 1)
                continue  # clipping cannot save NaN gradients: they would poison every weight
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.model)
            self._step_scheduler()
            losses.append(self._mean_over_ranks(loss))
            state.real_frames += int(batch.feature_lengths.sum())
            state.padded_frames += batch.features.shape[0] * batch.features.shape[2]
            audio += (
                self.dist.world_size * float(batch.feature_lengths.sum()) / self.frames_per_second
            )
            if step % config.log_every_steps == 0:
                progress.set_postfix(
                    loss=f"{np.mean(losses[-20:]):.3f}",
                    audio_s_per_s=f"{audio / max(time.perf_counter() - start, 1e-9):.0f}",
                    refresh=False,  # the bar's own pace (rare in log files)
                )
            if self._all_agree(time.perf_counter() > deadline):
                out_of_time = True
                break
        progress.close()
        return float(np.mean(losses)) if losses else float("nan"), audio, out_of_time

    def _record_epoch(self, epoch: int, record: dict[str, float], state: _RunState) -> None:
        """Append to the history, log, and keep the best model (the last one without validation)."""
        state.history.append(record)
        state.epoch = epoch
        logger.info(
            "Epoch %d/%d: train loss %.3f, val loss %.3f, val CER %.1f%%, WER %.1f%% (%.0f s)",
            epoch + 1,
            self.config.epochs,
            record["train_loss"],
            record["val_loss"],
            100 * record["val_cer"],
            100 * record["val_wer"],
            record["epoch_seconds"],
        )
        cer = record["val_cer"]
        if np.isnan(cer) or state.best_epoch == 0 or cer < state.best_cer:
            state.best_cer, state.best_epoch, state.epochs_without_gain = cer, epoch + 1, 0
            state.best_state = copy.deepcopy(self.evaluated_model.state_dict())
        else:
            state.epochs_without_gain += 1

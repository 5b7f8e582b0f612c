"""The CTC training loop: AdamW on a one-cycle learning rate, a weight EMA, checkpoints.

It runs alone or under ``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on GPU): every rank
takes its share of each global batch, and only rank 0 writes checkpoints and reports. The parts
live in modules of their own (config, schedule, epoch_plan, ranks, checkpoint, validation,
stopping) so that :meth:`Trainer.fit` reads as the loop it is.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from asr_pipeline.audio.features import NormalisationStats
from asr_pipeline.common.memory import configure_memory
from asr_pipeline.model.acoustic import count_parameters
from asr_pipeline.model.factory import AnyModelConfig, build_acoustic_model
from asr_pipeline.trainer.augment import SpecAugment
from asr_pipeline.trainer.batching import (
    UtteranceDataset,
    batch_loss,
    encodable_rows,
    forward_precision,
)
from asr_pipeline.trainer.checkpoint import CHECKPOINT_NAME, Checkpoint, RunState, run_fingerprint
from asr_pipeline.trainer.config import TrainingConfig
from asr_pipeline.trainer.ema import exponential_moving_average
from asr_pipeline.trainer.epoch_meter import EpochMeter
from asr_pipeline.trainer.epoch_plan import Batches, plan_epochs, split_index
from asr_pipeline.trainer.loader import LoaderSettings
from asr_pipeline.trainer.preemption import CheckpointTimer, Preempted, StopSignal
from asr_pipeline.trainer.ranks import Ranks, select_device
from asr_pipeline.trainer.schedule import OneCycle, next_position, set_rates
from asr_pipeline.trainer.stopping import RunClock, StopReason, stop_after_epoch
from asr_pipeline.trainer.validation import Validator, describe_rates, selection_metric
from asr_pipeline.units.base import Units
from asr_pipeline.units.characters import CharacterUnits

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """The best model (by the validation error ``validation_metric``) and the per-epoch history."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    # the best epoch's ``validation_metric``: val_cer, or val_per for a phone model
    best_validation_cer: float
    parameters: int
    padding_fraction: float
    train_seconds: float
    train_cpu_seconds: float
    audio_seconds_seen: float
    stop_reason: StopReason
    validation_metric: str = "val_cer"
    excluded_utterances: int = 0  # rows the units cannot encode (words without a pronunciation)


def seed_everything(seed: int) -> None:
    """Seed every generator the run draws from: initial weights, dropout, SpecAugment."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains the network of a model config on a feature index: set up here, run by :meth:`fit`."""

    def __init__(
        self,
        model_config: AnyModelConfig,
        config: TrainingConfig,
        index: pd.DataFrame,
        features: Mapping[str, torch.Tensor],
        stats: NormalisationStats,
        frames_per_second: float,
        units: Units | None = None,
    ) -> None:
        """``units``: what the model outputs (default: the characters); ``model_config`` must
        have one class per token. Utterances the units cannot encode are left out."""
        self.config = config
        self.units = units or CharacterUnits()
        if model_config.n_classes != len(self.units.tokens):
            raise ValueError(
                f"the model has {model_config.n_classes} classes but the {self.units.kind} "
                f"units have {len(self.units.tokens)} tokens"
            )
        self.ranks = Ranks.join(select_device(config.device))
        if self.ranks.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls and convolutions
            torch.backends.cudnn.allow_tf32 = True
        if config.threads:  # else torch's default: all cores, or OMP_NUM_THREADS
            torch.set_num_threads(config.threads)
        # batches of ever new shapes fragment glibc's heaps and fill oneDNN's cache of kernels
        configure_memory(
            config.malloc_mmap_threshold_mb,
            config.onednn_primitive_cache,
            config.load_triton_without_gpu,
        )
        seed_everything(config.seed)

        trained_on = index[index.split.isin(("train", "validation"))]  # never the test rows
        usable, self.excluded_utterances = encodable_rows(trained_on, self.units)
        self.train_index, self.validation_index = split_index(usable)
        self.metric = selection_metric(self.units)
        augment = SpecAugment(**config.spec_augment) if config.spec_augment else None
        self.train_data = UtteranceDataset(
            self.train_index, features, stats, augment, self.units, config.seed
        )
        self.loader_settings = LoaderSettings.from_params(config.loader)
        self.frames_per_second = frames_per_second
        max_batch_frames = int(config.batch_seconds * frames_per_second)
        validation_data = UtteranceDataset(self.validation_index, features, stats, units=self.units)
        self.validator = Validator(
            validation_data, max_batch_frames, self.ranks, self.loader_settings
        )

        self.model = build_acoustic_model(model_config).to(self.ranks.device)
        self.ddp_model = self.ranks.wrap(self.model)
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
        # batch_seconds is each rank's: a global batch holds every rank's share
        global_batch_frames = max_batch_frames * self.ranks.world_size
        self.epoch_batches: list[Batches] = plan_epochs(
            self.train_index, config.epochs, global_batch_frames, config.seed, config.sortagrad
        )
        total_steps = max(1, sum(len(batches) for batches in self.epoch_batches))
        self.schedule = OneCycle(config.learning_rate, total_steps, config.pct_start)
        set_rates(self.optimizer, self.schedule(0))
        self.checkpoint = Checkpoint(
            Path(config.checkpoint_dir) / CHECKPOINT_NAME,
            run_fingerprint(model_config, config, index, self.units),
            writes=self.ranks.is_main,
            resume=config.resume,
        )

    @property
    def total_steps(self) -> int:
        """Steps of the whole run, every epoch planned: the length of the learning-rate cycle."""
        return self.schedule.total_steps

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """The model that is validated and kept: the weights' EMA, or the trained weights."""
        return self.averaged.module if self.averaged is not None else self.model

    def validate(self, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Validation loss and greedy error rates of ``model`` (default: the evaluated model)."""
        return self.validator(self.evaluated_model if model is None else model)

    def fit(self) -> TrainingResult:
        """Train epoch by epoch until the last epoch, early stopping or the time budget.

        Raises :class:`Preempted` after writing a checkpoint when the process gets SIGTERM.
        """
        config, ranks, optimizer = self.config, self.ranks, self.optimizer
        self._log_plan()
        state = self.checkpoint.restore(self.model, self.averaged, optimizer) or RunState()
        set_rates(optimizer, self.schedule(state.cycle_position))
        clock = RunClock(ranks, config.max_minutes, state.train_seconds)
        stop, epochs = None, range(state.epoch + 1, config.epochs)
        if state.history and clock.no_time_for(state.history[-1]["epoch_seconds"]):
            stop, epochs = StopReason.BUDGET_USED_BEFORE, range(0)  # a larger budget goes on
        with StopSignal() as stop_signal:
            for epoch in epochs:
                stop = self._train_epoch(epoch, state, clock, stop_signal)
                if stop is not None:
                    break
        return self._result(state, stop or StopReason.ALL_EPOCHS)

    def _train_epoch(
        self, epoch: int, state: RunState, clock: RunClock, stop_signal: StopSignal
    ) -> StopReason | None:
        """One epoch (the rest of it, resumed inside it), its validation and checkpoint."""
        config, ranks, optimizer = self.config, self.ranks, self.optimizer
        out_of_time, timer = False, CheckpointTimer(config.checkpoint_every_minutes)
        self.model.train()
        meter = EpochMeter(self, epoch, state)
        for batch in meter:
            state.steps_in_epoch += 1  # trained or skipped, the batch is behind a resumed run
            with forward_precision(ranks.device, config.precision):
                loss, _, _ = batch_loss(self.ddp_model, batch, ranks.device)
            if ranks.any(not torch.isfinite(loss).item()):
                logger.warning("Skipping a batch with a non-finite loss (epoch %d)", epoch + 1)
                continue  # clipping cannot save NaN gradients: they would poison every weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.model)
            state.cycle_position = next_position(
                state.cycle_position, self.total_steps, clock.budget_used()
            )
            set_rates(optimizer, self.schedule(state.cycle_position))
            meter.add(ranks.mean(loss), batch)
            # one collective: 2 on any rank told to stop (SIGTERM), 1 when a checkpoint is due
            wanted = ranks.max(2.0 if stop_signal.requested else float(timer.due()))
            if wanted:
                self._save_inside_epoch(state, meter, clock)
                timer.reset()
                if wanted == 2.0:
                    raise Preempted(
                        f"stopped by SIGTERM in epoch {epoch + 1} after step "
                        f"{state.steps_in_epoch}; the checkpoint is written: run again to go on"
                    )
            if clock.out_of_time():
                out_of_time = True
                break
        epoch_seconds, cpu_seconds = meter.seconds, meter.cpu_seconds
        meter.close(state)
        record = {
            "epoch": epoch + 1,
            "train_loss": meter.mean_loss,
            **self.validator.epoch_figures(self.evaluated_model, self._raw_model()),
            "learning_rate": optimizer.param_groups[0]["lr"],
            "audio_seconds_per_second": meter.audio_seconds / epoch_seconds,
            "epoch_seconds": epoch_seconds,
            "padding_fraction": state.padding_fraction,
        }
        state.train_seconds = clock.elapsed()  # wall time of the run, checkpoints included
        state.cpu_seconds += cpu_seconds
        state.add_epoch(epoch, record, self.evaluated_model, self.metric)
        self._log_epoch(record)
        out_of_time = out_of_time or clock.no_time_for(epoch_seconds)
        gainless, patience = state.epochs_without_gain, config.early_stopping_patience
        stop = stop_after_epoch(out_of_time, gainless, patience)
        complete = epoch + 1 == config.epochs or (stop is not None and not stop.resumable)
        self.checkpoint.save(state, complete, self.model, self.averaged, optimizer)
        return stop

    def _save_inside_epoch(self, state: RunState, meter: EpochMeter, clock: RunClock) -> None:
        """A checkpoint at this step of the epoch (with the epoch's figures so far)."""
        meter.snapshot(state)
        state.train_seconds = clock.elapsed()
        self.checkpoint.save(state, False, self.model, self.averaged, self.optimizer)

    def _raw_model(self) -> torch.nn.Module | None:
        """With a weight average: the trained weights, validated beside it; else None."""
        return self.model if self.averaged is not None else None

    def _result(self, state: RunState, stop: StopReason) -> TrainingResult:
        logger.info(
            "Training stopped: %s (%d epochs; budget %s min, patience %d); "
            "best epoch %d (val %s %.1f%%)",
            stop.value,
            len(state.history),
            self.config.max_minutes,
            self.config.early_stopping_patience,
            state.best_epoch,
            self.metric.removeprefix("val_").upper(),
            100 * state.best_cer,
        )
        best = state.best_state
        return TrainingResult(
            state_dict=best if best is not None else self.evaluated_model.state_dict(),
            history=state.history,
            best_epoch=state.best_epoch,
            best_validation_cer=state.best_cer,
            parameters=count_parameters(self.model),
            padding_fraction=state.padding_fraction,
            train_seconds=state.train_seconds,
            train_cpu_seconds=state.cpu_seconds,
            audio_seconds_seen=state.audio_seen,
            stop_reason=stop,
            validation_metric=self.metric,
            excluded_utterances=self.excluded_utterances,
        )

    def _log_plan(self) -> None:
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
            self.config.epochs,
            len(self.epoch_batches[0]) if self.epoch_batches else 0,
        )

    def _log_epoch(self, record: dict[str, float]) -> None:
        logger.info(
            "Epoch %d/%d: train loss %.3f, val loss %.3f, %s (%.0f s)",
            record["epoch"],
            self.config.epochs,
            record["train_loss"],
            record["val_loss"],
            describe_rates(record),
            record["epoch_seconds"],
        )

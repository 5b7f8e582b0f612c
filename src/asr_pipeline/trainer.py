"""The CTC training loop: AdamW, OneCycleLR, SpecAugment, checkpoints, validation, early stopping.

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
from tqdm.auto import tqdm

from asr_pipeline.atomic import atomic_torch_save
from asr_pipeline.batching import BatchLoader, SpecAugment, bucket_batches
from asr_pipeline.decoding import greedy_decode
from asr_pipeline.features import NormalisationStats
from asr_pipeline.metrics import error_rates
from asr_pipeline.model import AcousticModel, ModelConfig, count_parameters

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
    early_stopping_patience: int = 4
    sortagrad: bool = True
    spec_augment: Mapping[str, int] = field(default_factory=dict)
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


def _init_distributed(device: torch.device) -> _Distributed:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size())


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

        self.train_index = index[index.split == "train"].reset_index(drop=True)
        self.validation_index = index[index.split == "validation"].reset_index(drop=True)
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
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.learning_rate,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.epoch_batches = [self._batches(epoch) for epoch in range(config.epochs)]
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.learning_rate,
            pct_start=config.pct_start,
            total_steps=max(1, sum(len(b) for b in self.epoch_batches)),
        )
        self.checkpoint_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME
        self.fingerprint = _run_fingerprint(model_config, config, index)

    def _batches(self, epoch: int) -> list[list[int]]:
        """Global batches of one epoch, rebuilt identically from the seed (after a restart too).

        With SortaGrad (DeepSpeech 2) the first epoch goes from short to long utterances, which
        gets CTC off its all-blank plateau sooner; later epochs are shuffled.
        """
        return bucket_batches(
            self.train_index.num_frames.tolist(),
            self.max_batch_frames,
            seed=self.config.seed * 1000 + epoch,
            shuffle=not (self.config.sortagrad and epoch == 0),
        )

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
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    # -- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.dist.is_main:
            atomic_torch_save(state, self.checkpoint_path)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if not (self.config.resume and self.checkpoint_path.exists()):
            return None
        checkpoint = torch.load(self.checkpoint_path, weights_only=True, map_location=self.device)
        if checkpoint.get("fingerprint") != self.fingerprint:
            logger.info(
                "Checkpoint %s is from other settings or data: starting afresh",
                self.checkpoint_path,
            )
            return None
        if checkpoint.get("complete"):
            logger.info("Checkpoint %s is of a finished run: starting afresh", self.checkpoint_path)
            return None
        logger.info(
            "Resuming from %s after epoch %d", self.checkpoint_path, checkpoint["epoch"] + 1
        )
        return checkpoint

    # -- steps -------------------------------------------------------------------------------
    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = batch.features.to(self.device)
        log_probs, out_lengths = self.ddp_model(features, batch.feature_lengths.to(self.device))
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
    def validate(self) -> dict[str, float]:
        """Validation loss and greedy-decoding CER/WER (NaN without a validation split)."""
        if self.validation_index.empty:
            return {"val_loss": float("nan"), "val_cer": float("nan"), "val_wer": float("nan")}
        self.model.eval()
        if self.dist.world_size > 1:
            # batch-norm statistics drift apart between ranks: all validate rank 0's model
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
        batches = bucket_batches(
            self.validation_index.num_frames.tolist(),
            self.max_batch_frames * 2,
            seed=0,
            shuffle=False,
        )
        references, hypotheses, losses, weights = [], [], [], []
        for batch in self.validation_loader.iterate(batches):
            features = batch.features.to(self.device)
            log_probs, out_lengths = self.model(features, batch.feature_lengths.to(self.device))
            loss = F.ctc_loss(
                log_probs.transpose(0, 1),
                batch.targets,
                out_lengths,
                batch.target_lengths,
                reduction="mean",
                zero_infinity=True,
            )
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
        config = self.config
        logger.info(
            "Training %s parameters on %d utterances (%.2f h), %d validation; %d epochs, ~%d steps",
            f"{count_parameters(self.model):,}",
            len(self.train_index),
            self.train_index.duration_s.sum() / 3600,
            len(self.validation_index),
            config.epochs,
            len(self.epoch_batches[0]) if self.epoch_batches else 0,
        )
        history: list[dict[str, float]] = []
        best_cer, best_epoch, best_state = float("inf"), -1, None
        start_epoch, epochs_without_gain = 0, 0
        train_seconds, cpu_seconds, audio_seen = 0.0, 0.0, 0.0
        padded_frames = real_frames = 0

        checkpoint = self._load_checkpoint()
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            torch.set_rng_state(checkpoint["torch_rng"])
            history = checkpoint["history"]
            best_cer, best_epoch = checkpoint["best_cer"], checkpoint["best_epoch"]
            best_state = checkpoint["best_state"]
            start_epoch = checkpoint["epoch"] + 1
            epochs_without_gain = checkpoint["epochs_without_gain"]
            train_seconds, cpu_seconds = checkpoint["train_seconds"], checkpoint["cpu_seconds"]
            audio_seen = checkpoint["audio_seen"]
            real_frames, padded_frames = checkpoint["real_frames"], checkpoint["padded_frames"]

        budget_s = config.max_minutes * 60 if config.max_minutes else float("inf")
        stop_reason = "all epochs done"
        for epoch in range(start_epoch, config.epochs):
            epoch_start, cpu_start = time.perf_counter(), time.process_time()
            self.model.train()
            batches = self.epoch_batches[epoch]
            losses, epoch_audio = [], 0.0
            progress = tqdm(
                batches,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                disable=not self.dist.is_main,
                leave=False,
            )
            for step, rows in enumerate(progress):
                batch = self.train_loader.load(self._rows_of_rank(rows))
                loss, _, _ = self._loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                losses.append(self._mean_over_ranks(loss))
                real_frames += int(batch.feature_lengths.sum())
                padded_frames += batch.features.shape[0] * batch.features.shape[2]
                epoch_audio += float(batch.feature_lengths.sum()) / self.frames_per_second
                if step % config.log_every_steps == 0:
                    elapsed = time.perf_counter() - epoch_start
                    progress.set_postfix(
                        loss=f"{np.mean(losses[-20:]):.3f}",
                        audio_s_per_s=f"{epoch_audio / max(elapsed, 1e-9):.0f}",
                    )
                if self._all_agree(train_seconds + time.perf_counter() - epoch_start > budget_s):
                    stop_reason = f"time budget of {config.max_minutes} min reached"
                    break
            progress.close()
            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            cpu_seconds += time.process_time() - cpu_start
            audio_seen += epoch_audio * self.dist.world_size
            record = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                **self.validate(),
                "learning_rate": self.scheduler.get_last_lr()[0],
                "audio_seconds_per_second": epoch_audio * self.dist.world_size / epoch_seconds,
                "epoch_seconds": epoch_seconds,
                "padding_fraction": 1 - real_frames / max(padded_frames, 1),
            }
            history.append(record)
            logger.info(
                "Epoch %d/%d: train loss %.3f, val loss %.3f, val CER %.1f%%, WER %.1f%% (%.0f s)",
                epoch + 1,
                config.epochs,
                record["train_loss"],
                record["val_loss"],
                100 * record["val_cer"],
                100 * record["val_wer"],
                epoch_seconds,
            )
            score = record["val_cer"] if not np.isnan(record["val_cer"]) else -epoch
            if score < best_cer:
                best_cer, best_epoch, epochs_without_gain = score, epoch + 1, 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                epochs_without_gain += 1
            finished = (
                epoch + 1 == config.epochs
                or epochs_without_gain >= config.early_stopping_patience
                or stop_reason != "all epochs done"
                or train_seconds + epoch_seconds > budget_s
            )
            finished = self._all_agree(finished)  # each rank has its own clock
            if epochs_without_gain >= config.early_stopping_patience:
                stop_reason = f"no validation gain for {epochs_without_gain} epochs"
            elif train_seconds + epoch_seconds > budget_s and stop_reason == "all epochs done":
                stop_reason = f"time budget of {config.max_minutes} min would be exceeded"
            self._save_checkpoint(
                {
                    "fingerprint": self.fingerprint,
                    "complete": finished,
                    "epoch": epoch,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "best_cer": best_cer,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "epochs_without_gain": epochs_without_gain,
                    "train_seconds": train_seconds,
                    "cpu_seconds": cpu_seconds,
                    "audio_seen": audio_seen,
                    "real_frames": real_frames,
                    "padded_frames": padded_frames,
                }
            )
            if finished:
                break
        logger.info(
            "Training stopped: %s; best epoch %d (val CER %.1f%%)",
            stop_reason,
            best_epoch,
            100 * best_cer if best_cer >= 0 else float("nan"),
        )
        return TrainingResult(
            state_dict=best_state if best_state is not None else self.model.state_dict(),
            history=history,
            best_epoch=best_epoch,
            best_validation_cer=best_cer,
            parameters=count_parameters(self.model),
            padding_fraction=1 - real_frames / max(padded_frames, 1),
            train_seconds=train_seconds,
            train_cpu_seconds=cpu_seconds,
            audio_seconds_seen=audio_seen,
        )

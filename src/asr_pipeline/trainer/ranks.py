"""This process among the ranks of a ``torchrun`` job: device, process group and collectives.

Every rank takes its share of each global batch and all of them must take the same decisions
(skip a batch, stop, the learning rate), so each decision goes through a collective here. Alone,
every helper is the identity and no process group is created.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


def select_device(name: str) -> torch.device:
    """``auto``: this process's GPU (``LOCAL_RANK`` under torchrun) when there is one, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class Ranks:
    """This process's rank, the number of ranks, and the device its tensors live on."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @classmethod
    def join(cls, device: torch.device) -> Ranks:
        """Join the process group that ``torchrun`` describes in the environment, if any."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(device, dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and reports."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` under DistributedDataParallel (gradients averaged over ranks), or as is."""
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        if self.device.type == "cuda":
            # batch norm over the global batch, not each GPU's share (NCCL only: not on CPU).
            # The model's batch-norm layers are replaced in place, so ``model`` stays the one
            # whose weights are saved.
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def share(self, rows: Sequence[int]) -> list[int]:
        """This rank's share of a global batch (every rank gets at least one utterance)."""
        rows = list(rows)
        if len(rows) < self.world_size:
            return [rows[self.rank % len(rows)]]
        return rows[self.rank :: self.world_size]

    def mean(self, value: torch.Tensor) -> float:
        """The mean over ranks of a scalar each rank computed (a global batch's loss)."""
        value = value.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(value)  # gloo has no AVG
            value /= self.world_size
        return value.item()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: ranks must stop or skip at the same step."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def max(self, value: float) -> float:
        """The largest of the ranks' values (float64)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    def gather(self, value: object) -> list[object]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics drift apart between ranks)."""
        if self.world_size == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)

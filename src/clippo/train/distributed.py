"""Process-group set-up for ``torchrun``: NCCL on GPUs, gloo on CPU, a no-op on one process."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs, checkpoints and the final model."""
        return self.rank == 0


def init_distributed(device: str | None = None, timeout_s: float = 600) -> DistEnv:
    """Initialises ``torch.distributed`` from torchrun's environment variables, if present.

    A collective that waits longer than ``timeout_s`` (a stalled or dead rank) raises on the
    ranks that wait, instead of blocking them for good.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (identity on one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def shutdown_distributed() -> None:
    """Waits for every process, then tears the process group down (a no-op on one process)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

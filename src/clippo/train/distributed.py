"""Process-group set-up for ``torchrun``: NCCL on GPUs, gloo on CPU, a no-op on one process."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard

from clippo.models.vit import EncoderBlock


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


# --------------------------------------------------------------------------------------------
# Wrapped and sharded models: what the engine, the tasks and the optimizers share
# --------------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself inside ``torch.compile`` and DDP wrappers (FSDP2 wraps in place)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def is_sharded(t: torch.Tensor) -> bool:
    """Whether ``t`` is an FSDP2 (DTensor) shard rather than a whole tensor."""
    return isinstance(t, DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's part of ``t``: its shard under FSDP, else ``t`` itself (same memory)."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole of ``t`` (a collective on every process when ``t`` is sharded)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_like(local: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The whole tensor of which ``local`` is this process's shard laid out like ``param``."""
    if not isinstance(param, DTensor):
        return local
    spread = DTensor.from_local(
        local, param.device_mesh, param.placements, run_check=False,
        shape=param.shape, stride=param.stride(),
    )  # fmt: skip
    return spread.full_tensor()


def shard_of(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This process's shard of the whole tensor ``full``, laid out like ``param`` (FSDP2's
    dim-0 sharding: ``torch.chunk`` pieces, empty on the ranks past the last piece)."""
    if not isinstance(param, DTensor):
        return full
    if param.placements != (Shard(0),):
        raise NotImplementedError(f"sharding {param.placements} (only FSDP2's Shard(0))")
    mesh = param.device_mesh
    pieces = torch.chunk(full, mesh.size(), dim=0)
    rank = mesh.get_local_rank()
    part = pieces[rank] if rank < len(pieces) else full.new_empty((0, *full.shape[1:]))
    if part.shape != param.to_local().shape:
        raise RuntimeError(
            f"shard of shape {tuple(part.shape)} does not match the local "
            f"{tuple(param.to_local().shape)}"
        )
    return part


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with whole tensors (gathered from every process under FSDP:
    call it on all of them)."""
    return {k: full_tensor(v).detach() for k, v in model.state_dict().items()}


@torch.no_grad()
def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads whole tensors (``full_state_dict``'s, or any checkpoint's) into a plain or an
    FSDP2-sharded model: each process keeps its shard."""
    own = model.state_dict()
    if not any(isinstance(v, DTensor) for v in own.values()):
        model.load_state_dict(state)
        return
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    for k, v in own.items():
        local_tensor(v).copy_(shard_of(state[k].to(v.device), v))


def shard_model(model: nn.Module, param_dtype: torch.dtype | None = None) -> nn.Module:
    """FSDP2: ``fully_shard`` on every transformer block, then on the model (the rest).

    Rank 0's weights are broadcast first (as DDP does), so every process starts alike.
    One-number parameters (the temperature, SigLIP's bias) stay whole on every process, so
    the loss can read them outside the forward: ``average_gradients(model, whole_only=True)``
    averages their gradients. Parameters' ``adafactor_shape`` (the optimizer's factoring view)
    survives sharding.
    ``param_dtype`` (bfloat16): compute in it; master weights and gradient reductions stay
    float32.
    """
    for t in model.state_dict().values():
        dist.broadcast(t, 0)
    views = {
        n: p.adafactor_shape for n, p in model.named_parameters() if hasattr(p, "adafactor_shape")
    }
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for module in model.modules():
        if isinstance(module, EncoderBlock):
            fully_shard(module, mp_policy=policy)
    scalars = {p for p in model.parameters() if p.numel() == 1}
    fully_shard(model, mp_policy=policy, ignored_params=scalars)
    for name, p in model.named_parameters():
        if name in views:
            p.adafactor_shape = views[name]
    return model


def average_gradients(model: nn.Module, whole_only: bool = False) -> None:
    """Averages ``.grad`` over processes (what DDP does in backward; GradCache's passes run
    without DDP's reduction); ``whole_only``: only of the parameters FSDP left whole. A no-op
    on one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [
        p.grad
        for p in model.parameters()
        if p.grad is not None and not (whole_only and isinstance(p, DTensor))
    ]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))

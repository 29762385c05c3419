"""The engine: one training loop for every job (contrastive pre-training, fine-tuning), for one
CPU process and for many GPUs under ``torchrun``.

A job hands ``run`` a **task**, which owns what differs between jobs: the model it builds, the
batches it reads and how a batch becomes a loss (``Task`` below). The engine owns everything
else: device and precision, DDP, the optimizer and schedule over the model's trainable
parameters, atomic checkpoints and exact resume (model, optimizer, schedule step, data
position, random state), the NaN stop, metrics (``metrics.jsonl`` and TensorBoard), progress
(``on_step``), periodic evaluation (an ``Evaluation``, see below) and the final model in
``from_pretrained`` form. It never prints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from clippo.atomic import atomic_write_text
from clippo.extras import MissingExtraError, require
from clippo.models.io import save_pretrained
from clippo.train.checkpoint import (
    first_non_finite,
    list_checkpoints,
    load_latest_checkpoint,
    remove_partial_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clippo.train.config import ExperimentConfig
from clippo.train.distributed import (
    DistEnv,
    all_reduce_mean,
    average_gradients,
    full_state_dict,
    init_distributed,
    load_full_state_dict,
    shard_model,
)
from clippo.train.optim import optimizer_from_config
from clippo.train.schedules import create_schedule


class NonFiniteLossError(FloatingPointError):
    """The loss, the parameters or the optimizer state became NaN or infinite; the message names
    the step and the checkpoint that really is good (or says there is none)."""


def _last_good(ckpt_dir: Path) -> str:
    found = list_checkpoints(ckpt_dir)
    if not found:
        return "no checkpoint was written before it"
    return f"the last good checkpoint, {found[-1][1]}, is kept"


@dataclasses.dataclass
class StepOutput:
    """What a task's ``loss`` returns: the loss to minimise, the examples it covers on this
    process, and extra scalars to log as ``train/NAME``."""

    loss: torch.Tensor
    examples: int
    metrics: dict[str, float | torch.Tensor] = dataclasses.field(default_factory=dict)


class Task(Protocol):
    """What differs between jobs; the engine calls these in this order."""

    total_steps: int

    def build_model(self) -> nn.Module:
        """The model to train (random or pretrained weights); the engine seeds torch first."""

    def batches(self, model: nn.Module, env: DistEnv, start_batch: int) -> Iterable[dict]:
        """An iterable dataset of whole batches for this process, positioned after
        ``start_batch`` batches (DataLoader workers compute them)."""

    def loss(self, model: nn.Module, batch: dict, device: torch.device, autocast) -> StepOutput:
        """One batch -> its loss; the forward pass runs inside the ``autocast()`` context."""

    def logged(self, model: nn.Module) -> dict[str, float]:
        """Scalars of the model to log as ``train/NAME`` after a log step's update (called on
        every process: under FSDP the model's tensors are shards)."""

    # Optional, for ``train.accum_steps`` > 1:
    # accumulate(model, batch, device, autocast, steps, sync_gradients=None) -> StepOutput
    # leaves the whole batch's gradient (on this process) in .grad, working through ``steps``
    # micro-batches; under FSDP it calls ``sync_gradients(last)`` before each micro-batch's
    # backward (FSDP reduces the accumulated gradient in the last one).


class Evaluation(Protocol):
    """Periodic evaluation: the engine asks ``due`` after every step and calls ``run`` (on the
    main process, the others wait) when it says so; ``final`` is true at the last step."""

    def due(self, step: int, final: bool) -> bool: ...

    def run(self, model: nn.Module, step: int, final: bool) -> dict[str, float]: ...


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA, or a CPU whose oneDNN has bf16
    kernels (AVX512-BF16, AMX); elsewhere bf16 is emulated and far slower than fp32."""
    if device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` (fp32, bf16, auto) computes in bfloat16 on ``device``."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def autocast_for(precision: str, device: torch.device):
    """A context factory: bfloat16 autocast for ``bf16`` (and ``auto`` where bf16 is native),
    else none."""
    if uses_bf16(precision, device):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_loader(dataset: Iterable[dict], workers: int) -> DataLoader:
    """The loader of a task's whole-batch dataset: ``workers`` processes prepare batches."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )


@functools.cache
def _summary_writer_class() -> type | None:
    # Cached: a process that runs several trainings (GLUE's learning rates) warns only once.
    try:
        return require("torch.utils.tensorboard", "writing tb/").SummaryWriter
    except MissingExtraError as e:
        warnings.warn(f"{e}; tb/ is not written (metrics.jsonl is)", stacklevel=3)
        return None


class _MetricsWriter:
    """Appends JSON lines and, when TensorBoard is installed, event files."""

    def __init__(self, workdir: Path):
        self.file = (workdir / "metrics.jsonl").open("a")
        writer = _summary_writer_class()
        self.tb = writer(str(workdir / "tb")) if writer is not None else None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# Settings a resumed run may change: they steer logging, saving, evaluation and the machine,
# not what the restored optimizer, schedule and data position mean.
_FREE_ON_RESUME = (
    "data.workers",
    "data.in_memory",  # the same batches either way
    "train.threads",
    # The same gradient and state either way: checkpoints hold whole tensors.
    "train.accum_steps",
    "train.compile",
    "train.sharding",
    "train.log_every",
    "train.ckpt_every",
    "train.keep_ckpts",
    "eval.",
)


def changed_settings(saved: dict, current: dict) -> list[str]:
    """``KEY: OLD -> NEW`` for every setting that differs between a checkpoint's config and the
    current one, except those a resume may change (``train.total_steps`` too, for the rsqrt
    schedule, which is built to be extended)."""

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in tree.items():
            key = f"{prefix}{k}"
            out |= flat(v, key + ".") if isinstance(v, dict) and v else {key: v}
        return out

    old, new = flat(saved), flat(current)
    for k, v in flat(ExperimentConfig().to_dict()).items():  # keys the saved config predates
        if k not in old and not any(o.startswith(k + ".") for o in old):
            old[k] = v
    free = _FREE_ON_RESUME
    if new.get("optim.schedule.decay_type") == "rsqrt":
        free = (*free, "train.total_steps")
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and not any(k == f or k.startswith(f) for f in free)
    ]


def _drop_rows_after(path: Path, step: int) -> None:
    if not path.is_file():
        return
    rows = [x for x in path.read_text().splitlines() if x.strip()]
    keep = [x for x in rows if json.loads(x).get("step", 0) <= step]
    if len(keep) != len(rows):
        atomic_write_text(path, "".join(x + "\n" for x in keep))


def _count_skips(batch: dict, counts: Counter) -> None:
    """Adds a batch's skipped samples, by (reason, shard), from every stream it mixes."""
    for key, value in batch.items():
        if key.endswith("skip_shards"):
            for reason, shards in value.items():
                for shard, n in shards.items():
                    counts[reason, shard] += n


def _skip_metrics(counts: Counter) -> dict[str, int]:
    by_reason: Counter = Counter()
    for (reason, _), n in counts.items():
        by_reason[reason] += n
    return {f"train/skipped/{reason}": n for reason, n in sorted(by_reason.items())}


def _skip_report(counts: Counter) -> dict[str, dict[str, int]]:
    """``{reason: {shard: n}}`` of the samples skipped on the main process."""
    out: dict[str, dict[str, int]] = {}
    for (reason, shard), n in sorted(counts.items()):
        out.setdefault(reason, {})[shard] = n
    return out


def _scalar(value: float | torch.Tensor) -> float:
    return value.item() if isinstance(value, torch.Tensor) else float(value)


def run(
    task: Task,
    cfg: ExperimentConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float] | None], None] | None = None,
    evaluation: Evaluation | None = None,
) -> dict[str, Any]:
    """Trains ``task`` with ``cfg``'s optimizer and loop settings into ``workdir``; returns the
    last logged and evaluated metrics.

    ``on_step(step, metrics)`` is called after every step (metrics only on log steps).
    """
    workdir = Path(workdir)
    env = init_distributed(timeout_s=cfg.train.collective_timeout_s)
    if cfg.train.threads and env.device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed + env.rank)
    ckpt_dir = workdir / "checkpoints"
    if env.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        remove_partial_checkpoints(ckpt_dir)  # what a crash mid-write left
        if not resume and (ckpt_dir.exists() and any(ckpt_dir.iterdir())):
            raise FileExistsError(
                f"{workdir} already holds checkpoints: pass --resume to continue, "
                "or choose a new work directory"
            )

    accum = cfg.train.accum_steps
    if accum > 1 and not hasattr(task, "accumulate"):
        raise ValueError(
            f"train.accum_steps {accum}: {type(task).__name__} has no cached-embedding "
            "accumulation (only the contrastive task does); set train.accum_steps=1"
        )
    model = task.build_model().to(env.device)
    fsdp = cfg.train.sharding == "fsdp" and env.world_size > 1
    eval_copy = None
    if fsdp:
        # Evaluators read whole tensors: the main process keeps an unsharded copy (on the CPU
        # between evaluations) and loads the gathered weights into it when one is due.
        if evaluation is not None and env.is_main:
            eval_copy = copy.deepcopy(model).cpu()
        bf16 = uses_bf16(cfg.train.precision, env.device)
        shard_model(model, torch.bfloat16 if bf16 else None)
    total_steps = task.total_steps
    schedule = create_schedule(total_steps, **dataclasses.asdict(cfg.optim.schedule))
    optimizer, scheduler = optimizer_from_config(model, cfg.optim, schedule)
    step = 0
    passed_over: list[str] = []
    state = load_latest_checkpoint(ckpt_dir, passed_over) if resume else None
    for reason in passed_over:
        warnings.warn(f"resuming from an older checkpoint: {reason}", stacklevel=2)
    if state is not None:
        changed = changed_settings(state.get("config") or {}, cfg.to_dict())
        if changed:
            raise ValueError(
                f"--resume of {workdir} with changed settings ({'; '.join(changed)}): they would "
                "not apply to the restored optimizer and data state; resume with the run's "
                "config.yaml, or start a new work directory"
            )
        load_full_state_dict(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        set_rng_state(state["rng"])
    if env.is_main:  # only now: a refused resume leaves the directory describing its own run
        atomic_write_text(workdir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if resume:
            _drop_rows_after(workdir / "metrics.jsonl", step)  # those steps are trained again

    ddp = model
    if env.world_size > 1 and not fsdp:
        ids = [env.device] if env.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
    forward = torch.compile(ddp) if cfg.train.compile else ddp
    # GradCache's passes must not all-reduce in each backward: gradients are averaged after.
    no_sync = ddp.no_sync if isinstance(ddp, DistributedDataParallel) else contextlib.nullcontext
    autocast = autocast_for(cfg.train.precision, env.device)
    batches = iter(make_loader(task.batches(model, env, step), cfg.data.workers))
    writer = _MetricsWriter(workdir) if env.is_main else None
    last: dict[str, Any] = {}
    seen, skipped, t0 = 0, Counter(), time.perf_counter()
    model.train()
    try:
        while step < total_steps:
            batch = next(batches)
            optimizer.zero_grad(set_to_none=True)
            if accum > 1 and fsdp:
                # FSDP keeps the micro-batches' gradients unsharded and reduce-scatters their
                # sum once, in the last micro-batch's backward.
                out = task.accumulate(
                    forward, batch, env.device, autocast, accum,
                    sync_gradients=model.set_requires_gradient_sync,
                )  # fmt: skip
            elif accum > 1:
                with no_sync():
                    out = task.accumulate(forward, batch, env.device, autocast, accum)
            else:
                out = task.loss(forward, batch, env.device, autocast)
            if not torch.isfinite(out.loss):
                raise NonFiniteLossError(
                    f"loss is {out.loss.item()} at step {step + 1}; stopped, {_last_good(ckpt_dir)}"
                )
            if accum > 1:  # under FSDP only the parameters it left whole are still local
                average_gradients(model, whole_only=fsdp)
            else:
                out.loss.backward()
                if fsdp:  # FSDP reduces its shards' gradients, not those it left whole
                    average_gradients(model, whole_only=True)
            optimizer.step()  # clips by global norm first, as big_vision's chain does
            scheduler.step()
            step += 1
            seen += out.examples * env.world_size
            _count_skips(batch, skipped)

            metrics = None
            if step % cfg.train.log_every == 0 or step == total_steps:
                dt = time.perf_counter() - t0
                metrics = {
                    "train/loss": all_reduce_mean(out.loss.detach()).item(),
                    **{f"train/{k}": _scalar(v) for k, v in out.metrics.items()},
                    **{f"train/{k}": v for k, v in task.logged(model).items()},
                    "train/lr": cfg.optim.lr * schedule(step - 1),
                    "train/grad_norm": float(optimizer.grad_norm),
                    "train/examples_per_s": seen / dt,
                    "train/skipped_images": sum(skipped.values()),
                    **_skip_metrics(skipped),
                    "train/total_steps": total_steps,
                }
                seen, t0 = 0, time.perf_counter()
                last.update(metrics)
                if writer is not None:
                    writer.write(step, metrics)
            if step % cfg.train.ckpt_every == 0 or step == total_steps:
                # An update can poison the weights while the loss that led to it was finite:
                # such a state is never written, so the last checkpoint stays a good one.
                # Whole tensors, gathered on every process under FSDP: a checkpoint resumes
                # under DDP or FSDP alike.
                model_state, optim_state = full_state_dict(model), optimizer.full_state_dict()
                bad = first_non_finite(model_state, optim_state["state"])
                if bad is not None:
                    raise NonFiniteLossError(
                        f"{bad!r} became non-finite by step {step}; stopped without saving it, "
                        f"{_last_good(ckpt_dir)}"
                    )
                if env.is_main:
                    save_checkpoint(
                        ckpt_dir,
                        step,
                        {
                            "model": model_state,
                            "optimizer": optim_state,
                            "scheduler": scheduler.state_dict(),
                            "step": step,
                            "rng": rng_state(),
                            "config": cfg.to_dict(),
                        },
                        keep=cfg.train.keep_ckpts,
                    )
            final = step == total_steps
            if evaluation is not None and evaluation.due(step, final):
                evaluated = model
                if fsdp:
                    weights = full_state_dict(model)  # every process takes part
                    if env.is_main:
                        eval_copy.load_state_dict(weights)
                        evaluated = eval_copy.to(env.device).train()
                if env.is_main:  # other ranks wait: evaluation sets are small
                    results = evaluation.run(evaluated, step, final)
                    if fsdp:
                        eval_copy.cpu()
                    last.update(results)
                    writer.write(step, results)
                if env.world_size > 1:
                    torch.distributed.barrier()
            if on_step is not None:
                on_step(step, metrics)
    finally:
        if writer is not None:
            writer.close()
        del batches
    final_state = full_state_dict(model)  # whole tensors on every process under FSDP
    if env.is_main:
        save_pretrained(model, workdir / "model", state_dict=final_state)
        if skipped:
            report = _skip_report(skipped)
            atomic_write_text(workdir / "skipped.json", json.dumps(report, indent=2) + "\n")
    return last

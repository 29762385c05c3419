"""The training loop: one code path for one CPU process and for many GPUs under ``torchrun``.

``train(cfg, workdir)`` builds the model, optimizer and data from an ``ExperimentConfig``,
trains, checkpoints atomically, resumes exactly (model, optimizer, schedule step, data position,
random state) and writes the final model in ``from_pretrained`` form. It never prints: progress
reaches the caller through ``on_step``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from clippo.data import ImageTransform, MixedBatchDataset, ShardDataset, TextPairDataset
from clippo.data.image_cache import (
    CachedImageShardDataset,
    ImageFeatureCache,
    build_image_feature_cache,
)
from clippo.losses import ContrastiveLoss
from clippo.models import CLIPPO, ContrastiveModel, create_model, from_pretrained, save_pretrained
from clippo.train.checkpoint import (
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clippo.train.config import ExperimentConfig
from clippo.train.distributed import DistEnv, all_reduce_mean, init_distributed
from clippo.train.optim import build_optimizer
from clippo.train.schedules import create_schedule


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


def build_model(cfg: ExperimentConfig) -> ContrastiveModel:
    """The model a config asks for: by name with options, or from a pretrained directory."""
    if cfg.model.init:
        return from_pretrained(cfg.model.init)
    return create_model(
        cfg.model.name,
        **{**cfg.model.options, "grad_checkpointing": cfg.train.grad_checkpointing},
    )


def _prepare_image_feature_cache(
    cfg: ExperimentConfig, model: torch.nn.Module, env: DistEnv
) -> ImageFeatureCache:
    """The cache of ``model``'s image tower over ``cfg.data.train`` in ``cfg.data.image_cache``,
    built by the main process when missing or stale (other processes wait).

    Raises ValueError unless the image tower is locked and augmentation is off: otherwise the
    features change between steps or epochs and a cache would train on the wrong inputs.
    """
    if not getattr(model, "image_locked", False):
        raise ValueError(
            "data.image_cache needs a locked image tower (a LiT model 'lit-L?-...'); "
            f"got {type(model).__name__}"
        )
    aug = cfg.data.augment
    if aug.flip or aug.random_resized_crop:
        raise ValueError(
            "data.image_cache needs data.augment off (flip: false, random_resized_crop: null): "
            "augmented images have no fixed features"
        )
    directory = cfg.data.image_cache
    tower_id = model.image_tower_id()
    device = next(model.parameters()).device

    def build() -> ImageFeatureCache:
        return build_image_feature_cache(
            cfg.data.train,
            directory,
            lambda images: model.image_features(images.to(device)),
            tower_id=tower_id,
            image_size=model.image_size,
            batch_size=cfg.eval.batch_size,
        )

    if env.is_main:
        cache = build()
    if env.world_size > 1:
        torch.distributed.barrier()
    if not env.is_main:
        cache = build()  # finds the complete cache the main process wrote
    return cache


def build_train_loader(
    cfg: ExperimentConfig, model: ContrastiveModel, env: DistEnv, start_batch: int
) -> DataLoader:
    """Infinite loader of whole batches for this rank, positioned after ``start_batch``.

    With ``data.text_pair_fraction``, every batch also holds that share of text pairs
    (``MixedBatchDataset``), split over ranks like the images.
    """
    if cfg.data.batch_size % env.world_size:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} is not divisible by {env.world_size} processes"
        )
    pairs = cfg.data.text_pairs_per_batch
    if pairs and not isinstance(model, CLIPPO):
        raise ValueError(
            f"text/text co-training (data.text_pair_fraction) needs a CLIPPO model, which reads "
            f"both sides as pixels; got {type(model).__name__}"
        )
    if pairs % env.world_size:
        raise ValueError(
            f"{pairs} text pairs per batch are not divisible by {env.world_size} processes"
        )
    aug = cfg.data.augment
    transform = ImageTransform(
        model.image_size,
        train=True,
        flip=aug.flip,
        random_resized_crop=tuple(aug.random_resized_crop) if aug.random_resized_crop else None,
        seed=cfg.train.seed,
    )
    reader = ShardDataset
    if cfg.data.image_cache:  # a locked image tower's features, computed once (LiT)
        reader = functools.partial(
            CachedImageShardDataset, cache=_prepare_image_feature_cache(cfg, model, env)
        )
    # What the image/alt-text stream and the text-pair stream share: position, order, split.
    common = dict(
        text_transform=model.text_transform,  # rendered pixels or token ids
        train=True,
        seed=cfg.train.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        start_batch=start_batch,
        rank=env.rank,
        world_size=env.world_size,
    )
    per_rank = (cfg.data.batch_size - pairs) // env.world_size
    dataset = None  # text pairs only (text_pair_fraction 1): no image/alt-text stream
    if per_rank:
        dataset = reader(cfg.data.train, batch_size=per_rank, image_transform=transform, **common)
    if pairs:
        text_pairs = TextPairDataset(
            cfg.data.text_pairs, batch_size=pairs // env.world_size, **common
        )
        dataset = MixedBatchDataset(dataset, text_pairs)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=cfg.data.workers,
        persistent_workers=cfg.data.workers > 0,
        prefetch_factor=4 if cfg.data.workers > 0 else None,
    )


def _embed_batch(model: torch.nn.Module, batch: dict[str, Any], device: torch.device):
    """``(zimg, ztxt, scale)`` of a batch; a mixed batch's text pairs follow its image rows."""
    images = texts = None  # None in a batch of text pairs only
    if "image" in batch:
        images = batch["image"].to(device, non_blocking=True)
        texts = batch["text_input"].to(device, non_blocking=True)
    if "pair_text_a_input" not in batch:
        return model(images, texts)
    text_a = batch["pair_text_a_input"].to(device, non_blocking=True)
    text_b = batch["pair_text_b_input"].to(device, non_blocking=True)
    return model(images, texts, (text_a, text_b))


def _autocast(cfg: ExperimentConfig, device: torch.device):
    use_bf16 = cfg.train.precision == "bf16" or (
        cfg.train.precision == "auto" and device.type == "cuda"
    )
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _MetricsWriter:
    """Appends JSON lines and, when TensorBoard is installed, event files."""

    def __init__(self, workdir: Path):
        self.file = (workdir / "metrics.jsonl").open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(workdir / "tb"))
        except ImportError:  # TensorBoard is optional.
            self.tb = None

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


def train(
    cfg: ExperimentConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float] | None], None] | None = None,
    eval_fn: Callable[[ContrastiveModel, int], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Trains per ``cfg`` into ``workdir``; returns the last logged and evaluated metrics.

    ``on_step(step, metrics)`` is called after every step (metrics only on log steps);
    ``eval_fn(model, step)`` is called every ``eval.eval_every`` steps and at the end.
    """
    workdir = Path(workdir)
    if not cfg.data.train:
        raise ValueError(
            "data.train is not set: give the training shards, e.g. "
            "--set data.train='data/openclipart/train-{000000..000011}.tar' "
            "(`clippo data openclipart --out data/openclipart` builds them)"
        )
    env = init_distributed()
    if cfg.train.threads and env.device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed + env.rank)
    ckpt_dir = workdir / "checkpoints"
    if env.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        if not resume and (ckpt_dir.exists() and any(ckpt_dir.iterdir())):
            raise FileExistsError(
                f"{workdir} already holds checkpoints: pass --resume to continue, "
                "or choose a new work directory"
            )
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    model = build_model(cfg).to(env.device)
    total_steps = cfg.effective_total_steps  # train.total_steps, or scaled for text pairs
    schedule = create_schedule(total_steps, **dataclasses.asdict(cfg.optim.schedule))
    optimizer, scheduler = build_optimizer(
        model,
        name=cfg.optim.name,
        lr=cfg.optim.lr,
        wd=cfg.optim.wd,
        schedule=schedule,
        grad_clip_norm=cfg.optim.grad_clip_norm,
        **cfg.optim.kwargs,
    )
    step = 0
    state = load_latest_checkpoint(ckpt_dir) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        set_rng_state(state["rng"])

    ddp = (
        DistributedDataParallel(
            model, device_ids=[env.device] if env.device.type == "cuda" else None
        )
        if env.world_size > 1
        else model
    )
    loss_fn = ContrastiveLoss()
    loader = build_train_loader(cfg, model, env, start_batch=step)
    batches = iter(loader)
    writer = _MetricsWriter(workdir) if env.is_main else None
    last: dict[str, Any] = {}
    seen, skipped, t0 = 0, 0, time.perf_counter()
    model.train()
    try:
        while step < total_steps:
            batch = next(batches)
            with _autocast(cfg, env.device):
                zimg, ztxt, scale = _embed_batch(ddp, batch, env.device)
            loss, extras = loss_fn(zimg.float(), ztxt.float(), scale.float())
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at step {step + 1}; stopped, the last good "
                    f"checkpoint in {ckpt_dir} is kept"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()  # clips by global norm first, as big_vision's chain does
            scheduler.step()
            step += 1
            seen += zimg.shape[0] * env.world_size
            skipped += int(batch.get("skipped", 0))

            metrics = None
            if step % cfg.train.log_every == 0 or step == total_steps:
                dt = time.perf_counter() - t0
                metrics = {
                    "train/loss": all_reduce_mean(loss.detach()).item(),
                    "train/accuracy": extras["accuracy"].item(),
                    "train/lr": cfg.optim.lr * schedule(step - 1),
                    "train/temperature": model.logit_scale.item(),
                    "train/grad_norm": float(optimizer.grad_norm),
                    "train/examples_per_s": seen / dt,
                    "train/skipped_images": skipped,
                    "train/total_steps": total_steps,
                }
                seen, t0 = 0, time.perf_counter()
                last.update(metrics)
                if writer is not None:
                    writer.write(step, metrics)
            if step % cfg.train.ckpt_every == 0 or step == total_steps:
                if env.is_main:
                    save_checkpoint(
                        ckpt_dir,
                        step,
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "step": step,
                            "rng": rng_state(),
                            "config": cfg.to_dict(),
                        },
                        keep=cfg.train.keep_ckpts,
                    )
            final = step == total_steps
            every = cfg.train.eval_every
            if eval_fn is not None and (final or (every and step % every == 0)):
                if env.is_main:  # other ranks wait: evaluation sets are small
                    results = eval_fn(model, step)
                    last.update(results)
                    writer.write(step, results)
                if env.world_size > 1:
                    torch.distributed.barrier()
            if on_step is not None:
                on_step(step, metrics)
    finally:
        if writer is not None:
            writer.close()
        del batches, loader
    if env.is_main:
        save_pretrained(model, workdir / "model")
    return last

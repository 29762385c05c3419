"""Small shared pieces of the tests' training set-ups (on the openclipart_small shards)."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset

from clippo.models import ViT, ViTConfig
from clippo.train.config import load_config
from clippo.train.engine import StepOutput


def val_set(shards, captions: str = "all", train_examples: int = 2000) -> dict:
    """The held-out shards as evaluation set "val" with the three evaluators."""
    out, stats = shards
    return {
        "data": str(out / stats["val_pattern"]),
        "captions": captions,
        "evaluators": {
            "retrieval": {},
            "zeroshot": {"prompts": "openclipart"},
            "fewshot": {"shots": [10], "train_examples": train_examples},
        },
    }


def tiny_run_tree(shards, **val) -> dict:
    """Model, data and eval sections for seconds-long runs: mu/16 at 32 px, batch 8, augmented;
    ``val`` goes to ``val_set``."""
    out, stats = shards
    return {
        "model": {"name": "clippo-mu/16", "options": {"image_size": 32, "out_dim": 16}},
        "data": {
            "train": str(out / stats["train_pattern"]),
            "batch_size": 8,
            "workers": 2,
            "shuffle_buffer": 20,
            "augment": {"flip": True, "random_resized_crop": [0.5, 1.0]},
        },
        "eval": {"sets": {"val": val_set(shards, **val)}},
    }


def tiny_cli_args(shards, extra: dict | None = None) -> list[str]:
    """``--set`` arguments that shrink a packaged config to a 2-step run on ``shards``;
    ``extra`` adds or replaces dotted keys."""
    out, stats = shards
    sets = {
        "model.options.image_size": 32,
        "data.train": out / stats["train_pattern"],
        "eval.sets.val.data": out / stats["val_pattern"],
        "data.batch_size": 8,
        "data.workers": 0,
        "data.shuffle_buffer": 20,
        "train.total_steps": 2,
        "optim.schedule.warmup_steps": 1,
        "train.precision": "fp32",
        "eval.sets.val.evaluators.fewshot.train_examples": 40,
    } | (extra or {})
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


class _Batches(IterableDataset):
    """Batch i is a fixed function of i: 4 images (one of two seeds) and a regression target."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        i = self.start
        while True:
            g = torch.Generator().manual_seed(i % 2)  # two batches, in turn
            x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
            yield {"x": x, "y": x.mean(dim=(1, 2, 3)) * 3}
            i += 1


class RegressionTask:
    """A task written against the engine's interface only: a ViT regresses a number."""

    def __init__(self, steps: int, poison_at: int | None = None):
        self.total_steps, self.poison_at, self.calls = steps, poison_at, 0

    def build_model(self):
        return ViT(ViTConfig.from_variant("mu/16", image_size=16, num_classes=1))

    def batches(self, model, env, start_batch):
        return _Batches(start_batch)

    def loss(self, model, batch, device, autocast):
        self.calls += 1
        with autocast():
            pred = model(batch["x"].to(device))[:, 0]
        loss = ((pred.float() - batch["y"]) ** 2).mean()
        if self.calls == self.poison_at:
            loss = loss * float("nan")
        return StepOutput(loss, len(pred), {"abs_error": (pred - batch["y"]).abs().mean()})

    def logged(self, model):
        return {"head_norm": model.head.weight.norm().item()}


class CountingEvaluation:
    def __init__(self, every: int):
        self.every, self.steps = every, []

    def due(self, step, final):
        return final or step % self.every == 0

    def run(self, model, step, final):
        self.steps.append(step)
        return {"probe/step": float(step), "probe/final": float(final)}


def engine_cfg(**train):
    """Optimizer and loop settings for ``RegressionTask`` runs; ``train`` keys override."""
    tree = {
        "optim": {"name": "adamw", "lr": 3e-3, "wd": 0.0, "schedule": {"decay_type": "cosine"}},
        "train": {"log_every": 2, "ckpt_every": 4, "keep_ckpts": 5, "precision": "fp32", **train},
        "data": {"workers": 0},
    }
    return load_config(tree)

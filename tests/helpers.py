"""Small shared pieces of the tests' training set-ups (on the openclipart_small shards)."""

from __future__ import annotations


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

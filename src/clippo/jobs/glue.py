"""The GLUE protocol (CLIPPO section 4.5, following BERT) on the shared engine.

A single sentence is rendered like an alt-text; a sentence pair as ``first [SEP] second`` on one
image (``clippo.models.heads``). The pooled representation feeds a 2-hidden-layer MLP (768
units) to the classes, or one output trained by squared error for STS-B. The whole model is
fine-tuned with AdamW (b1 0.9, b2 0.999, eps 1e-6, weight decay 0.01 times the learning rate
on kernels, as BERT's AdamW), batch 32, 3 epochs, 10% linear warm-up then linear decay,
gradient clipping at norm 1, and the learning rate is chosen from {2e-5, 3e-5, 5e-5} on the
dev set, whose scores are reported (GLUE's test labels are private). The packaged config
``glue.yaml`` holds the recipe; every learning rate is one engine run in its own folder
(``OUT/TASK/lr_LR``, ``clippo.jobs.lr_grid``), so an interrupted protocol resumes where it
stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clippo.data.glue import (
    TaskSplit,
    encode_labels,
    label_vocabulary,
    read_task,
    subsample,
    train_task,
)
from clippo.eval.glue import GlueDevEvaluation
from clippo.jobs.lr_grid import train_at_lr
from clippo.train.config import ExperimentConfig
from clippo.train.tasks import ClassificationTask


def load_splits(cfg: ExperimentConfig) -> tuple[str, dict[str, TaskSplit], dict[str, int]]:
    """``(task, splits, full_sizes)`` of ``cfg.finetune``: the training task's TSV splits,
    subsampled (seeded) to ``max_train`` / ``max_dev`` when set."""
    ft = cfg.finetune
    if not ft.task or not ft.data:
        raise ValueError("finetune.task and finetune.data are required (--task T --data DIR)")
    task = train_task(ft.task)
    splits = read_task(ft.data, task)
    full_sizes = {name: len(s) for name, s in splits.items()}
    splits = {
        name: subsample(s, ft.max_train if name == "train" else ft.max_dev, cfg.train.seed)
        for name, s in splits.items()
    }
    return task, splits, full_sizes


def _train_loss(workdir: Path, last_steps: int) -> float:
    """Mean logged training loss over the last ``last_steps`` steps (the last epoch)."""
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}  # resumes repeat
    tail = [losses[s] for s in sorted(losses)[-last_steps:]]
    return float(np.mean(tail)) if tail else float("nan")


def finetune(
    cfg: ExperimentConfig,
    task: str,
    splits: dict[str, TaskSplit],
    workdir: str | Path,
    *,
    lr: float,
    progress: Callable[[int, float], Any] | None = None,
) -> dict[str, Any]:
    """One learning rate: fine-tunes ``cfg``'s model on ``splits["train"]`` into ``workdir``
    and scores every other split. Resumes an interrupted run; a finished one (``result.json``)
    is read back. Returns ``{"lr", "steps", "train_examples", "train_loss", "seconds", SPLIT:
    compute_metrics(...) + examples}``.

    ``progress(step, loss)`` is called after every logged step.
    """
    train = splits["train"]
    vocab = label_vocabulary(task, train)
    dev = GlueDevEvaluation(task, {n: s for n, s in splits.items() if n != "train"}, vocab)

    def make_job(cfg: ExperimentConfig) -> tuple[ClassificationTask, GlueDevEvaluation]:
        return ClassificationTask(cfg, train, encode_labels(task, train, vocab), vocab), dev

    def summarize(job: ClassificationTask, last: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "train_examples": len(train),
            "train_loss": _train_loss(workdir, job.total_steps // cfg.finetune.epochs),
        }
        for name in dev.splits:
            prefix = f"{name}/"
            out[name] = {k[len(prefix) :]: v for k, v in last.items() if k.startswith(prefix)}
            out[name]["examples"] = int(out[name]["examples"])
        return out

    def on_step(step: int, metrics: dict[str, float] | None) -> None:
        if metrics and progress is not None:
            progress(step, metrics["train/loss"])

    workdir = Path(workdir)
    return train_at_lr(cfg, workdir, lr, make_job, summarize, on_step=on_step)


def run_glue_task(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    progress: Callable[[float, int, float], Any] | None = None,
) -> dict[str, Any]:
    """The full protocol on ``cfg.finetune.task``: fine-tune per learning rate, keep the best.

    MNLI (``mnli``, ``mnli_m`` or ``mnli_mm``) trains once and scores both dev sets; the
    learning rate is chosen on MNLI-m. Each run goes to ``out/TASK/lr_LR``. Returns ``{"task",
    "runs": [finetune results], "best_lr", "columns": {column: dev split}, "scores": {column:
    score}, "metrics": {column: metrics}, sizes and labels}``.
    """
    task, splits, full_sizes = load_splits(cfg)
    dev_names = [name for name in splits if name != "train"]
    runs = []
    for lr in cfg.finetune.lrs:
        report = None if progress is None else (lambda s, loss, lr=lr: progress(lr, s, loss))
        workdir = Path(out) / task / f"lr_{lr:g}"
        runs.append(finetune(cfg, task, splits, workdir, lr=lr, progress=report))
    best = max(runs, key=lambda r: r[dev_names[0]]["score"])
    vocab = label_vocabulary(task, splits["train"])
    # Result columns as the paper's tables name them, and the dev split each one is read from.
    columns = {(name if task == "mnli" else task): name for name in dev_names}
    return {
        "task": task,
        "columns": columns,
        "best_lr": best["lr"],
        "scores": {column: best[name]["score"] for column, name in columns.items()},
        "metrics": {column: best[name] for column, name in columns.items()},
        "runs": runs,
        "sizes": {name: len(s) for name, s in splits.items()},
        "full_sizes": full_sizes,
        "skipped_rows": {name: s.skipped_rows for name, s in splits.items()},
        "labels": list(vocab),
        "epochs": cfg.finetune.epochs,
        "batch_size": cfg.data.batch_size,
        "seed": cfg.train.seed,
    }

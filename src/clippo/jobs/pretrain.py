"""Contrastive pre-training as ``clippo train`` runs it: the contrastive task on the engine,
evaluated on the config's evaluation sets (each on its schedule, and all at the end)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clippo.eval.sets import EvalSets
from clippo.train.config import ExperimentConfig
from clippo.train.engine import run
from clippo.train.tasks import ContrastiveTask


def build_eval_sets(cfg: ExperimentConfig) -> EvalSets:
    """The config's evaluation sets, checked (data present, evaluators and options valid)."""
    return EvalSets(
        cfg.eval.sets,
        batch_size=cfg.eval.batch_size,
        train_data=cfg.data.train or None,
    )


def train(
    cfg: ExperimentConfig,
    workdir: str | Path,
    *,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float] | None], None] | None = None,
    evaluation: EvalSets | None = None,
) -> dict[str, Any]:
    """Trains per ``cfg`` into ``workdir``; returns the last logged and evaluated metrics.

    Everything the run needs is checked before its first step: the training shards, the
    evaluation sets (``evaluation``, built from ``cfg`` when not given) and the model's
    fit for the data (text pairs, feature cache).
    """
    task = ContrastiveTask(cfg)
    if evaluation is None:
        evaluation = build_eval_sets(cfg)
    return run(task, cfg, workdir, resume=resume, on_step=on_step, evaluation=evaluation or None)

"""A fine-tuning protocol's learning-rate grid on the shared engine: one resumable engine run per
learning rate, each in its own folder, the best chosen on held-out data by the caller.

GLUE (``clippo.jobs.glue``) and VQA (``clippo.jobs.vqa``) both run through ``train_at_lr``: a
finished run (``result.json``) is read back, an interrupted one resumes from its checkpoints,
and only the final model stays.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clippo.atomic import atomic_write_text
from clippo.train.config import ExperimentConfig
from clippo.train.engine import Evaluation, Task, run


def train_at_lr(
    cfg: ExperimentConfig,
    workdir: str | Path,
    lr: float,
    make_job: Callable[[ExperimentConfig], tuple[Task, Evaluation]],
    summarize: Callable[[Task, dict[str, Any]], dict[str, Any]],
    *,
    on_step: Callable[[int, dict[str, float] | None], Any] | None = None,
) -> dict[str, Any]:
    """Fine-tunes at learning rate ``lr`` into ``workdir``; returns ``{"lr", "steps",
    **summarize(task, last metrics), "seconds"}``, also written to ``workdir/result.json``.

    ``make_job(cfg)`` gives the task and its evaluation for ``cfg`` with ``optim.lr = lr``.
    A finished run is read back; an interrupted one resumes; the checkpoints are removed at the
    end (the model stays in ``workdir/model``).
    """
    workdir = Path(workdir)
    if (workdir / "result.json").is_file():
        return json.loads((workdir / "result.json").read_text())
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr))
    task, evaluation = make_job(cfg)
    start = time.perf_counter()
    resume = (workdir / "checkpoints").is_dir()
    last = run(task, cfg, workdir, resume=resume, on_step=on_step, evaluation=evaluation)
    result = {"lr": lr, "steps": task.total_steps, **summarize(task, last)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(workdir / "result.json", json.dumps(result, indent=2) + "\n")
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)  # the final model stays
    return result

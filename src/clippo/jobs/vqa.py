"""VQA on the shared engine: CLIPPO's fused protocol and CLIP-ViL's grid protocol with their
learning-rate grids, evaluation of a fine-tuned model, and zero-shot VQA by prompting.

``finetune_vqa`` trains one run per learning rate of ``finetune.lrs`` (``OUT/lr_LR``, resumable,
``clippo.jobs.lr_grid``), scores each on the held-out 10% of the training questions, keeps the
best, and only then scores that one model on the test split (``OUT/metrics.json``,
``OUT/predictions.json`` in the official results format). The packaged configs
``vqa_fused.yaml`` and ``vqa_grid.yaml`` hold the recipes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clippo.data.vqa import VQA_SPLITS, read_question_prior, read_vocabulary, split_pattern
from clippo.eval.vqa import (
    VQAHoldoutEvaluation,
    baselines,
    load_results,
    predict_vqa,
    score_predictions,
    split_records,
    write_vqa_report,
    zero_shot_vqa,
)
from clippo.jobs.lr_grid import train_at_lr
from clippo.models import from_pretrained
from clippo.train.config import ExperimentConfig
from clippo.train.tasks import VQAGridTask, VQATask, grid_protocol_config

VQA_TASKS = {"fused": VQATask, "grid": VQAGridTask}


def blind_baselines(data, records, predictions, candidate_scores=None) -> dict[str, Any]:
    """``baselines`` of a scored split of the VQA folder ``data``: its training split's
    majority answer and question prior beside ``predictions``."""
    return baselines(
        records,
        read_vocabulary(data).answers[0],
        prior=read_question_prior(data),
        candidate_scores=candidate_scores,
        predictions=predictions,
    )


def finetune_vqa(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    on_step: Callable[[float, int, dict[str, float] | None], Any] | None = None,
    test_questions: int | None = None,
) -> dict[str, Any]:
    """``cfg.finetune.protocol`` (fused or grid) on ``cfg.finetune.data``: one run per learning
    rate, the best on the held-out split, then its test scores. Returns what
    ``OUT/metrics.json`` holds: ``best_lr``, ``runs`` (each with its held-out metrics),
    ``model`` (the chosen model directory) and the test scores (overall, per answer type, per
    question type).

    ``on_step(lr, step, metrics)`` is called after every step.
    """
    out = Path(out)
    if cfg.finetune.protocol not in VQA_TASKS:
        raise ValueError(
            f"finetune.protocol must be one of {sorted(VQA_TASKS)}, got {cfg.finetune.protocol!r}"
        )
    if cfg.finetune.protocol == "grid":
        cfg = grid_protocol_config(cfg, out)
    ft = cfg.finetune
    task_class = VQA_TASKS[ft.protocol]
    # A frozen grid backbone's features of each split, next to the training split's.
    caches = {s: Path(ft.feature_cache) / s if ft.feature_cache else None for s in VQA_SPLITS}
    holdout = VQAHoldoutEvaluation(
        split_pattern(ft.data, "holdout"),
        batch_size=cfg.eval.batch_size,
        max_questions=ft.max_dev,
        feature_cache=caches["holdout"],
    )

    def make_job(cfg: ExperimentConfig) -> tuple[VQATask, VQAHoldoutEvaluation]:
        return task_class(cfg), holdout

    def summarize(task: VQATask, last: dict[str, Any]) -> dict[str, Any]:
        return {
            "holdout": {k.removeprefix("holdout/"): v for k, v in last.items() if "holdout/" in k},
            "train_loss": last.get("train/loss"),
        }

    runs = []
    for lr in ft.lrs:
        report = None if on_step is None else (lambda s, m, lr=lr: on_step(lr, s, m))
        runs.append(train_at_lr(cfg, out / f"lr_{lr:g}", lr, make_job, summarize, on_step=report))
    best = max(runs, key=lambda r: r["holdout"]["vqa_accuracy"])
    model_dir = out / f"lr_{best['lr']:g}" / "model"
    start = time.perf_counter()
    predictions, records = predict_vqa(
        from_pretrained(model_dir),
        split_pattern(ft.data, "test"),
        batch_size=cfg.eval.batch_size,
        max_questions=test_questions,
        feature_cache=caches["test"],
    )
    scores = score_predictions(predictions, records)
    base = blind_baselines(ft.data, records, predictions)
    return write_vqa_report(
        out,
        predictions,
        scores,
        split="test",
        protocol=ft.protocol,
        best_lr=best["lr"],
        baselines=base,
        model=str(model_dir),
        runs=runs,
        eval_seconds=round(time.perf_counter() - start, 1),
    )


def evaluate_vqa(
    model_dir: str | Path | None,
    data: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    zero_shot: bool = False,
    batch_size: int = 256,
    max_questions: int | None = None,
    predictions_file: str | Path | None = None,
) -> dict[str, Any]:
    """Scores a model on a split of a VQA data folder into ``OUT/metrics.json`` and
    ``OUT/predictions.json``: a fine-tuned VQA classifier, or (``zero_shot``) any contrastive
    model by prompting (then also beside chance), reported beside the majority answer and the
    question prior of the ``train`` split (``baselines``). With ``predictions_file`` (the
    official results format) no model runs: that file is scored on the split's questions (or
    the first ``max_questions``), each of which it must answer."""
    if (model_dir is None) == (predictions_file is None):
        raise ValueError("give a model directory or a predictions file, not both or neither")
    model = None if model_dir is None else from_pretrained(model_dir)
    urls = split_pattern(data, split)
    start = time.perf_counter()
    extra: dict[str, Any] = {
        "model": None if model_dir is None else str(model_dir),
        "data": str(data),
        "split": split,
    }
    candidates = None
    if predictions_file is not None:
        if zero_shot:
            raise ValueError("--zero-shot runs a model; a predictions file is only scored")
        records = split_records(urls)[:max_questions]
        predictions = load_results(predictions_file)
        extra["predictions_file"] = str(predictions_file)
    elif zero_shot:
        if not hasattr(model, "encode_text"):
            raise ValueError(
                f"{model_dir} is a {type(model).__name__}: zero-shot VQA needs a contrastive "
                "model (encode_image and encode_text)"
            )
        predictions, records, candidates = zero_shot_vqa(
            model,
            urls,
            read_vocabulary(data).answers,
            batch_size=batch_size,
            max_questions=max_questions,
        )
        extra["protocol"] = "zero-shot"
    else:
        if not hasattr(model, "answers"):
            raise ValueError(
                f"{model_dir} is a {type(model).__name__}, not a fine-tuned VQA model: "
                "fine-tune one with `clippo finetune vqa`, or pass --zero-shot"
            )
        with tempfile.TemporaryDirectory() as cache:  # used by a frozen grid backbone
            predictions, records = predict_vqa(
                model, urls, batch_size=batch_size, max_questions=max_questions, feature_cache=cache
            )
        extra["protocol"] = model.protocol
    scores = score_predictions(predictions, records)  # first: it names unanswered questions
    extra["baselines"] = blind_baselines(data, records, predictions, candidates)
    extra["eval_seconds"] = round(time.perf_counter() - start, 1)
    return write_vqa_report(out, predictions, scores, **extra)

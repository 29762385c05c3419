"""GLUE's metrics (CLIPPO section 4.5, following BERT) and the dev-set evaluation of a
fine-tuned classifier.

Accuracy for SST-2, MNLI-m/-mm, QNLI, RTE and the local tasks; F1 (and accuracy) for MRPC and
QQP; Matthews correlation for CoLA; Spearman (and Pearson) for STS-B. The GLUE protocol itself
(fine-tune per learning rate, keep the best on dev) is ``clippo.jobs.glue``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from clippo.data.glue import METRIC_OF, TaskSplit, check_task, encode_labels, split_texts


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's ``rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0 when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom else 0.0


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks)."""
    return pearson(_rank(np.asarray(x, np.float64)), _rank(np.asarray(y, np.float64)))


def matthews_corr(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient of binary labels; 0 when undefined (sklearn's rule)."""
    p, t = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp, tn = float((p & t).sum()), float((~p & ~t).sum())
    fp, fn = float((p & ~t).sum()), float((~p & t).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def f1_binary(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class 1; 0 when there are no true or predicted positives."""
    p, t = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp = float((p & t).sum())
    denom = float(p.sum() + t.sum())
    return 2 * tp / denom if denom else 0.0


def compute_metrics(task: str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """GLUE's metrics for ``task`` as fractions (not percent); ``"score"`` is the task's column.

    Accuracy for SST-2, MNLI-m/-mm, QNLI, RTE and the local tasks; F1 and accuracy for MRPC and
    QQP (score F1); Matthews correlation for CoLA; Spearman and Pearson for STS-B (score
    Spearman). Predictions and labels are class indices (positive class 1) or, for STS-B,
    floats. ``mnli`` means ``mnli_m``. Raises ValueError for WNLI or an unknown task.
    """
    task = check_task(task)
    if task == "mnli":
        task = "mnli_m"
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or not len(labels):
        raise ValueError(
            f"predictions {predictions.shape} and labels {labels.shape} must be equal, 1-D, "
            "non-empty"
        )
    if task == "stsb":
        out = {"spearman": spearman(predictions, labels), "pearson": pearson(predictions, labels)}
    else:
        out = {"accuracy": float((predictions == labels).mean())}
        if task in ("mrpc", "qqp"):
            out["f1"] = f1_binary(predictions, labels)
        elif task == "cola":
            out["matthews_corr"] = matthews_corr(predictions, labels)
    out["score"] = out[METRIC_OF[task]]
    return out


def glue_average(scores: dict[str, float | dict[str, float]]) -> float:
    """The paper's "avg": the mean of the tasks' scores, MNLI-m and -mm counted separately.

    ``scores`` maps task names to a score or to a ``compute_metrics`` dict. The paper averages
    all nine columns of ``GLUE_TASKS``; a partial dict averages what it has.
    """
    if not scores:
        raise ValueError("no task scores to average")
    values = []
    for task, value in scores.items():
        check_task(task)
        values.append(float(value["score"] if isinstance(value, dict) else value))
    return float(np.mean(values))


@torch.no_grad()
def predict(
    classifier: nn.Module, split: TaskSplit, *, batch_size: int = 64, regression: bool = False
) -> np.ndarray:
    """Predicted class indices (or scores for regression) for every example of ``split``;
    ``classifier.classify(texts_a, texts_b)`` gives the logits."""
    was_training = classifier.training
    classifier.eval()
    out = []
    for first in range(0, len(split), batch_size):
        rows = range(first, min(first + batch_size, len(split)))
        logits = classifier.classify(*split_texts(split, rows))
        out.append(logits.float() if regression else logits.argmax(-1))
    classifier.train(was_training)
    return torch.cat(out).cpu().numpy()


class GlueDevEvaluation:
    """The dev splits of a task, scored at the end of a fine-tuning run (the engine's
    ``evaluation``): ``{SPLIT: compute_metrics(...) + examples}`` flattened to ``SPLIT/METRIC``."""

    def __init__(self, task: str, splits: dict[str, TaskSplit], vocab: tuple[str, ...]):
        self.task, self.splits, self.vocab = task, splits, vocab

    def due(self, step: int, final: bool) -> bool:
        """Only at the end of the run."""
        return final

    def scores(self, classifier: nn.Module) -> dict[str, dict[str, float]]:
        """``{split: metrics}`` of every dev split."""
        out = {}
        for name, split in self.splits.items():
            preds = predict(classifier, split, regression=not self.vocab)
            metric_task = name if name in ("mnli_m", "mnli_mm") else self.task
            labels = encode_labels(self.task, split, self.vocab)
            out[name] = compute_metrics(metric_task, preds, labels) | {"examples": len(split)}
        return out

    def run(self, classifier: nn.Module, step: int = 0, final: bool = True) -> dict[str, float]:
        """The dev metrics as flat ``SPLIT/METRIC`` entries, for metrics.jsonl."""
        return {f"{s}/{k}": v for s, m in self.scores(classifier).items() for k, v in m.items()}

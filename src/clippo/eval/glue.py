"""GLUE-style transfer (CLIPPO section 4.5): the GLUE TSV reader, metrics and fine-tuning.

Protocol, as in the paper (which follows BERT): a single sentence is rendered like an alt-text;
a sentence pair is rendered on one image as ``first [SEP] second`` (the renderer's pair mode).
The pooled representation goes through a 2-hidden-layer MLP with 768 units to the classes (or
one output, trained by squared error, for STS-B). The whole model is fine-tuned with AdamW,
batch 32, 3 epochs, 10% linear warm-up then linear decay, and the learning rate is chosen from
{2e-5, 3e-5, 5e-5} on the dev set, whose scores are reported (GLUE's test labels are private).

The representation is the text path's ``pre_logits``: the pooled output (MAP or GAP, as the
model is configured) before the linear head that maps to the contrastive embedding
(big_vision's "representation" of a ViT, the feature its fine-tuning and few-shot evaluators
read). ``representation="embedding"`` takes the
(unnormalised) contrastive embedding instead.

The model side is a ``TextBackbone``: any clippo model's text path (CLIPPO's rendered text,
CLIP*'s and 1T-CLIP's tokens, LiT's text tower) mapping texts or pairs to pooled features.
Tokenised models read a pair as the same ``first [SEP] second`` string, tokenised.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clippo.train.optim import build_optimizer
from clippo.train.schedules import create_schedule

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli_m", "mnli_mm", "qnli", "rte")
LR_GRID = (2e-5, 3e-5, 5e-5)
HIDDEN_UNITS = 768
_BERT_WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's TSV files are and which columns hold the texts and the label.

    ``labels`` is the class vocabulary (None: sorted labels of the training file; empty tuple:
    regression). ``dev`` lists the dev files, one per evaluated split name.
    """

    folder: str
    text_a: int
    text_b: int | None
    label: int
    header: bool
    labels: tuple[str, ...] | None
    dev: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)
    metric: str = "accuracy"  # the task's GLUE score

    @property
    def is_regression(self) -> bool:
        return self.labels == ()


_NLI = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {
    # CoLA: source, label, original label, sentence; no header in train/dev.
    "cola": TaskSpec("CoLA", 3, None, 1, False, ("0", "1"), metric="matthews_corr"),
    "sst2": TaskSpec("SST-2", 0, None, 1, True, ("0", "1")),
    # MRPC: Quality, #1 ID, #2 ID, #1 String, #2 String.
    "mrpc": TaskSpec("MRPC", 3, 4, 0, True, ("0", "1"), metric="f1"),
    # QQP: id, qid1, qid2, question1, question2, is_duplicate.
    "qqp": TaskSpec("QQP", 3, 4, 5, True, ("0", "1"), metric="f1"),
    # STS-B: index, genre, filename, year, old_index, source1, source2, s1, s2, score.
    "stsb": TaskSpec("STS-B", 7, 8, 9, True, (), metric="spearman"),
    # MNLI: ..., sentence1 (8), sentence2 (9), label1, [label2..5 in dev], gold_label (last).
    "mnli": TaskSpec(
        "MNLI",
        8,
        9,
        -1,
        True,
        ("entailment", "neutral", "contradiction"),
        dev=(("mnli_m", "dev_matched.tsv"), ("mnli_mm", "dev_mismatched.tsv")),
    ),
    "qnli": TaskSpec("QNLI", 1, 2, 3, True, _NLI),
    "rte": TaskSpec("RTE", 1, 2, 3, True, _NLI),
    # Local tasks built by ``clippo data langtasks``, in the SST-2 and RTE layouts.
    "fortune_topic": TaskSpec("fortune_topic", 0, None, 1, True, None),
    "manual_nsp": TaskSpec("manual_nsp", 1, 2, 3, True, ("not_next", "next")),
    "manual_translation": TaskSpec(
        "manual_translation", 1, 2, 3, True, ("not_translation", "translation")
    ),
}
LOCAL_TASKS = ("fortune_topic", "manual_nsp", "manual_translation")
_METRIC_OF = {
    "cola": "matthews_corr",
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "spearman",
    **{t: "accuracy" for t in ("sst2", "mnli_m", "mnli_mm", "qnli", "rte", *LOCAL_TASKS)},
}


def _check_task(task: str) -> str:
    task = task.lower().replace("-", "").replace("_", "") if task else task
    aliases = {t.replace("_", ""): t for t in (*TASKS, *_METRIC_OF)}
    if task == "wnli":
        raise ValueError(
            "WNLI is excluded, as in the CLIPPO paper and BERT (its dev set is adversarial to "
            "the training set); GLUE tasks here: " + ", ".join(GLUE_TASKS)
        )
    if task not in aliases:
        raise ValueError(
            f"unknown task {task!r}; GLUE tasks: {', '.join(GLUE_TASKS)} (mnli trains once "
            f"for both); local tasks: {', '.join(LOCAL_TASKS)}"
        )
    return aliases[task]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


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
    task = _check_task(task)
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
    out["score"] = out[_METRIC_OF[task]]
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
        _check_task(task)
        values.append(float(value["score"] if isinstance(value, dict) else value))
    return float(np.mean(values))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class TaskSplit:
    """One split: ``texts_a``, ``texts_b`` (None for single-sentence tasks) and raw labels."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[str]
    skipped_rows: int = 0

    def __len__(self) -> int:
        return len(self.texts_a)


def task_dir(data: str | os.PathLike, task: str) -> Path:
    """``data`` itself when it holds ``train.tsv``, else its GLUE sub-folder (``SST-2``...)."""
    spec = TASKS[_train_task(task)]
    data = Path(data)
    for candidate in (data, data / spec.folder, data / _train_task(task)):
        if (candidate / "train.tsv").is_file():
            return candidate
    raise FileNotFoundError(
        f"no train.tsv for {task} in {data} or {data / spec.folder}: download GLUE (or build the "
        "local tasks with 'clippo data langtasks') and pass its folder"
    )


def _train_task(task: str) -> str:
    task = _check_task(task)
    return "mnli" if task in ("mnli_m", "mnli_mm") else task


def read_tsv(path: str | os.PathLike, task: str) -> TaskSplit:
    """Reads one GLUE TSV file of ``task`` (no quoting, as GLUE's own readers).

    Rows with too few columns are skipped and counted in ``skipped_rows`` (QQP's train file
    has a few).
    """
    spec = TASKS[_train_task(task)]
    texts_a, texts_b, labels, skipped = [], [], [], 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if spec.header and lines:
        lines = lines[1:]
    needed = max(spec.text_a, spec.text_b or 0, spec.label if spec.label >= 0 else 0) + 1
    for line in lines:
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < needed or not cols[spec.label].strip():
            skipped += 1
            continue
        texts_a.append(cols[spec.text_a])
        if spec.text_b is not None:
            texts_b.append(cols[spec.text_b])
        labels.append(cols[spec.label].strip())
    return TaskSplit(texts_a, texts_b if spec.text_b is not None else None, labels, skipped)


def read_task(data: str | os.PathLike, task: str) -> dict[str, TaskSplit]:
    """``{"train": ..., DEV_NAME: ...}`` of a task in the GLUE layout (MNLI: mnli_m, mnli_mm)."""
    spec = TASKS[_train_task(task)]
    folder = task_dir(data, task)
    splits = {"train": read_tsv(folder / "train.tsv", task)}
    for name, file in spec.dev:
        if not (folder / file).is_file():
            raise FileNotFoundError(f"{folder / file} not found")
        splits[name] = read_tsv(folder / file, task)
    return splits


def label_vocabulary(task: str, train: TaskSplit) -> tuple[str, ...]:
    """The class names of ``task`` (empty for regression), from the spec or the train labels."""
    spec = TASKS[_train_task(task)]
    return spec.labels if spec.labels is not None else tuple(sorted(set(train.labels)))


def encode_labels(task: str, split: TaskSplit, vocab: tuple[str, ...]) -> torch.Tensor:
    """Raw labels -> class indices (int64) or, for regression, float32 scores."""
    if not vocab:
        return torch.tensor([float(x) for x in split.labels], dtype=torch.float32)
    index = {name: i for i, name in enumerate(vocab)}
    unknown = sorted(set(split.labels) - set(index))
    if unknown:
        raise ValueError(f"{task}: labels {unknown[:5]} not in the label set {list(vocab)}")
    return torch.tensor([index[x] for x in split.labels], dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def join_pair(text_a: str, text_b: str) -> str:
    """A sentence pair as one text: ``a [SEP] b`` (the renderer's pair mode, for every model)."""
    return f"{text_a} [SEP] {text_b}"


class TextBackbone(nn.Module):
    """Any clippo model's text path as a fine-tuning backbone: texts (or pairs) -> features.

    Pairs become ``a [SEP] b`` (rendered on one image by CLIPPO, tokenised by CLIP* and 1T-CLIP),
    then the model's ``text_transform``; ``representation`` ``"pre_logits"`` (default: pooled,
    before the head) or ``"embedding"`` (the unnormalised contrastive embedding). The whole model
    is fine-tuned, except LiT towers that are locked.
    """

    REPRESENTATIONS = ("pre_logits", "embedding")

    def __init__(self, model: nn.Module, representation: str = "pre_logits") -> None:
        super().__init__()
        if representation not in self.REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {self.REPRESENTATIONS}, got {representation!r}"
            )
        self.model, self.representation = model, representation
        was_training = model.training
        with torch.no_grad():
            self.feature_dim = self.eval()(["feature size probe"]).shape[-1]
        self.train(was_training)

    def preprocess(self, texts_a: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        """The stacked model input (rendered pixels or token ids) of texts or pairs."""
        if texts_b is None:
            return self.model.preprocess_text(list(texts_a))
        if len(texts_a) != len(texts_b):
            raise ValueError(f"got {len(texts_a)} first and {len(texts_b)} second texts")
        pairs = zip(texts_a, texts_b, strict=True)
        return self.model.preprocess_text([join_pair(a, b) for a, b in pairs])

    def forward(self, texts_a: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        x = self.preprocess(texts_a, texts_b)
        if self.representation == "embedding":
            return self.model.encode_text_input(x, normalize=False)
        return self.model.text_features(x)


class GlueClassifier(nn.Module):
    """Backbone -> 2-hidden-layer MLP (768 units, GELU) -> classes, or 1 output for regression."""

    def __init__(self, backbone: nn.Module, num_outputs: int, hidden: int = HIDDEN_UNITS):
        super().__init__()
        self.backbone = backbone
        self.mlp = nn.Sequential(
            nn.Linear(backbone.feature_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, texts_a: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        out = self.mlp(self.backbone(texts_a, texts_b))
        return out[:, 0] if out.shape[1] == 1 else out


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


def _batch(split: TaskSplit, idx: Sequence[int]) -> tuple[list[str], list[str] | None]:
    a = [split.texts_a[i] for i in idx]
    b = None if split.texts_b is None else [split.texts_b[i] for i in idx]
    return a, b


@torch.no_grad()
def predict(
    classifier: nn.Module, split: TaskSplit, *, batch_size: int = 64, regression: bool = False
) -> np.ndarray:
    """Predicted class indices (or scores for regression) for every example of ``split``."""
    classifier.eval()
    out = []
    for first in range(0, len(split), batch_size):
        logits = classifier(*_batch(split, range(first, min(first + batch_size, len(split)))))
        out.append(logits.float() if regression else logits.argmax(-1))
    return torch.cat(out).cpu().numpy()


def subsample(split: TaskSplit, n: int | None, seed: int) -> TaskSplit:
    """``n`` examples drawn without replacement with ``seed`` (all when n is None or larger)."""
    if n is None or n >= len(split):
        return split
    idx = sorted(np.random.default_rng(seed).choice(len(split), n, replace=False).tolist())
    a, b = _batch(split, idx)
    return TaskSplit(a, b, [split.labels[i] for i in idx], split.skipped_rows)


def finetune(
    make_backbone: Callable[[], nn.Module],
    task: str,
    splits: dict[str, TaskSplit],
    *,
    lr: float,
    epochs: int = 3,
    batch_size: int = 32,
    warmup_fraction: float = 0.1,
    weight_decay: float = _BERT_WEIGHT_DECAY,
    seed: int = 0,
    progress: Callable[[int, float], Any] | None = None,
) -> dict[str, Any]:
    """Fine-tunes a fresh backbone + MLP on ``splits["train"]`` and scores every other split.

    BERT's recipe: AdamW (b1 0.9, b2 0.999, eps 1e-6), decoupled weight decay 0.01 on kernels
    scaled by the learning rate as in BERT's AdamW, gradient clipping at norm 1, linear warm-up
    over ``warmup_fraction`` of the steps then linear decay to 0. Cross-entropy, or squared
    error for regression. ``progress(step, loss)`` is called after each step. Returns
    ``{"lr", "steps", "train_loss", "seconds", SPLIT: compute_metrics(...)}``.
    """
    torch.manual_seed(seed)
    train = splits["train"]
    vocab = label_vocabulary(task, train)
    regression = not vocab
    y = encode_labels(task, train, vocab)
    classifier = GlueClassifier(make_backbone(), 1 if regression else len(vocab))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = max(1, steps_per_epoch * epochs)
    schedule = create_schedule(total, decay_type="linear", warmup_percent=warmup_fraction)
    # clippo's AdamW does not scale weight decay by the learning rate; BERT's does.
    optimizer, scheduler = build_optimizer(
        classifier, name="adamw", lr=lr, wd=lr * weight_decay, schedule=schedule, eps=1e-6
    )
    loss_fn = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    start, step, losses = time.perf_counter(), 0, []
    for _ in range(epochs):
        classifier.train()
        order = rng.permutation(len(train))
        for first in range(0, len(train), batch_size):
            idx = order[first : first + batch_size].tolist()
            loss = loss_fn(classifier(*_batch(train, idx)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, losses[-1])
    result: dict[str, Any] = {
        "lr": lr,
        "steps": step,
        "train_examples": len(train),
        "train_loss": float(np.mean(losses[-steps_per_epoch:])) if losses else float("nan"),
    }
    for name, split in splits.items():
        if name == "train":
            continue
        preds = predict(classifier, split, regression=regression)
        metric_task = name if name in ("mnli_m", "mnli_mm") else task
        result[name] = compute_metrics(metric_task, preds, encode_labels(task, split, vocab))
        result[name]["examples"] = len(split)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def run_glue_task(
    make_backbone: Callable[[], nn.Module],
    task: str,
    data: str | os.PathLike,
    *,
    lrs: Sequence[float] = LR_GRID,
    epochs: int = 3,
    batch_size: int = 32,
    max_train: int | None = None,
    max_dev: int | None = None,
    seed: int = 0,
    progress: Callable[[float, int, float], Any] | None = None,
) -> dict[str, Any]:
    """The full protocol on one task: fine-tune per learning rate, keep the best on dev.

    MNLI (``mnli``, ``mnli_m`` or ``mnli_mm``) trains once and scores both dev sets; the
    learning rate is chosen on MNLI-m. ``max_train`` / ``max_dev`` subsample (seeded) for quick
    runs. Returns ``{"task", "runs": [finetune results], "best_lr", "columns": {column: dev split},
    "scores": {column: score}, "metrics": {column: metrics}, sizes and labels}``.
    """
    train_task = _train_task(task)
    splits = read_task(data, train_task)
    full_sizes = {name: len(s) for name, s in splits.items()}
    splits = {
        name: subsample(s, max_train if name == "train" else max_dev, seed)
        for name, s in splits.items()
    }
    dev_names = [name for name in splits if name != "train"]
    runs = []
    for lr in lrs:
        report = None if progress is None else (lambda s, loss, lr=lr: progress(lr, s, loss))
        runs.append(
            finetune(
                make_backbone,
                train_task,
                splits,
                lr=lr,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                progress=report,
            )
        )
    best = max(runs, key=lambda r: r[dev_names[0]]["score"])
    vocab = label_vocabulary(train_task, splits["train"])
    # Result columns as the paper's tables name them, and the dev split each one is read from.
    columns = {(name if train_task == "mnli" else train_task): name for name in dev_names}
    return {
        "task": train_task,
        "columns": columns,
        "best_lr": best["lr"],
        "scores": {column: best[name]["score"] for column, name in columns.items()},
        "metrics": {column: best[name] for column, name in columns.items()},
        "runs": runs,
        "sizes": {name: len(s) for name, s in splits.items()},
        "full_sizes": full_sizes,
        "skipped_rows": {name: s.skipped_rows for name, s in splits.items()},
        "labels": list(vocab),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
    }

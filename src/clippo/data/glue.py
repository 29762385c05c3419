"""GLUE-style language tasks as users hold them: GLUE's TSV layout (and the local tasks that
``clippo data langtasks`` writes in it), the task list, and batches for fine-tuning.

A single sentence is one text; a sentence pair is read as two texts that the model joins
(``clippo.models.heads.join_pair``). ``ClassificationBatches`` feeds the shared training engine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from clippo.data.shards import stack_inputs

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli_m", "mnli_mm", "qnli", "rte")


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
METRIC_OF = {
    "cola": "matthews_corr",
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "spearman",
    **{t: "accuracy" for t in ("sst2", "mnli_m", "mnli_mm", "qnli", "rte", *LOCAL_TASKS)},
}


def check_task(task: str) -> str:
    """The canonical name of a GLUE or local task (case, '-' and '_' ignored); WNLI refused."""
    task = task.lower().replace("-", "").replace("_", "") if task else task
    aliases = {t.replace("_", ""): t for t in (*TASKS, *METRIC_OF)}
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
    spec = TASKS[train_task(task)]
    data = Path(data)
    for candidate in (data, data / spec.folder, data / train_task(task)):
        if (candidate / "train.tsv").is_file():
            return candidate
    raise FileNotFoundError(
        f"no train.tsv for {task} in {data} or {data / spec.folder}: download GLUE (or build the "
        "local tasks with 'clippo data langtasks') and pass its folder"
    )


def train_task(task: str) -> str:
    """The task whose training file serves ``task`` (mnli for mnli_m and mnli_mm)."""
    task = check_task(task)
    return "mnli" if task in ("mnli_m", "mnli_mm") else task


def read_tsv(path: str | os.PathLike, task: str) -> TaskSplit:
    """Reads one GLUE TSV file of ``task`` (no quoting, as GLUE's own readers).

    Rows with too few columns are skipped and counted in ``skipped_rows`` (QQP's train file
    has a few).
    """
    spec = TASKS[train_task(task)]
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
    spec = TASKS[train_task(task)]
    folder = task_dir(data, task)
    splits = {"train": read_tsv(folder / "train.tsv", task)}
    for name, file in spec.dev:
        if not (folder / file).is_file():
            raise FileNotFoundError(f"{folder / file} not found")
        splits[name] = read_tsv(folder / file, task)
    return splits


def label_vocabulary(task: str, train: TaskSplit) -> tuple[str, ...]:
    """The class names of ``task`` (empty for regression), from the spec or the train labels."""
    spec = TASKS[train_task(task)]
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


def split_texts(split: TaskSplit, idx: Sequence[int]) -> tuple[list[str], list[str] | None]:
    """The first texts (and second texts, for pairs) of the rows ``idx`` of ``split``."""
    a = [split.texts_a[i] for i in idx]
    b = None if split.texts_b is None else [split.texts_b[i] for i in idx]
    return a, b


def subsample(split: TaskSplit, n: int | None, seed: int) -> TaskSplit:
    """``n`` examples drawn without replacement with ``seed`` (all when n is None or larger)."""
    if n is None or n >= len(split):
        return split
    idx = sorted(np.random.default_rng(seed).choice(len(split), n, replace=False).tolist())
    a, b = split_texts(split, idx)
    return TaskSplit(a, b, [split.labels[i] for i in idx], split.skipped_rows)


class ClassificationBatches(IterableDataset):
    """Whole batches of one labelled split, epoch after epoch, for ``DataLoader(batch_size=None)``.

    The order is BERT's fine-tuning loop's: one ``np.random.default_rng(seed)`` draws a new
    permutation of the split every epoch, cut into consecutive batches (the last one smaller).
    Each batch: ``text_input`` (``text_transform`` of each text, or of ``join(a, b)`` for pairs,
    stacked; computed in the loader workers), ``label`` (``labels`` rows), ``index``.
    ``start_batch`` resumes exactly; DataLoader workers take batches round robin and ranks
    take interleaved rows of every batch.
    """

    def __init__(
        self,
        split: TaskSplit,
        labels: torch.Tensor,
        *,
        batch_size: int,
        epochs: int,
        text_transform: Callable[[str], Any],
        join: Callable[[str, str], str],
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(labels) != len(split):
            raise ValueError(f"{len(labels)} labels for {len(split)} examples")
        self.split, self.labels = split, labels
        self.batch_size, self.epochs, self.seed = batch_size, epochs, seed
        self.text_transform, self.join = text_transform, join
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one pass over the split (the last one may be smaller)."""
        return math.ceil(len(self.split) / self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch * self.epochs

    def _order(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.epochs):
            order = rng.permutation(len(self.split))
            for first in range(0, len(self.split), self.batch_size):
                yield order[first : first + self.batch_size].tolist()

    def _text(self, i: int) -> str:
        if self.split.texts_b is None:
            return self.split.texts_a[i]
        return self.join(self.split.texts_a[i], self.split.texts_b[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, slot = (info.num_workers, info.id) if info is not None else (1, 0)
        for number, idx in enumerate(self._order()):
            if number < self.start_batch or (number - self.start_batch) % workers != slot:
                continue
            idx = idx[self.rank :: self.world_size]
            yield {
                "text_input": stack_inputs([self.text_transform(self._text(i)) for i in idx]),
                "label": self.labels[idx],
                "index": idx,
            }

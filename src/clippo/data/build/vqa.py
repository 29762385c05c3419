"""Build VQA shards: easy-vqa (the PyPI package's data) or VQAv2 in its official layout.

Sources:

- ``easy-vqa``: the ``easy_vqa`` package (extra ``vqa``): 38,575 train and 9,673 test questions
  on 64x64 PNGs, 13 answers, one answer per question. That answer is stored as ten identical
  human answers, so the official VQA accuracy (averaged over leave-one-out subsets of the
  annotators, which scores 0 against a single annotator) is exact match: 1 or 0.
- ``vqav2:DIR``: ``DIR/v2_OpenEnded_mscoco_{split}_questions.json``,
  ``DIR/v2_mscoco_{split}_annotations.json`` and ``DIR/{split}/COCO_{split}_{id:012d}.jpg`` for
  ``train2014`` (training) and ``val2014`` (written as the test split: test-dev's answers are
  private).

Every question is one sample (its image stored beside it, so an image with five questions is
stored five times): ``KEY.png|jpg`` + ``KEY.json`` with ``question_id``, ``image_id``,
``question``, ``answers`` (the human answers), ``answer_type``, ``question_type`` and
``targets`` (``{answer: VQA score}`` over the vocabulary, the soft targets of the fused
protocol). The answer vocabulary is the majority answers seen at least ``min_count`` times in
the training split (VQAv2's 3,129 at 9 in the literature), written to ``answers.json``, and
the blind question prior (each training question text's top answer) to ``question_prior.json``. A
``holdout`` fraction of the training questions, split by image with a seeded draw, is written
as the ``holdout`` split for choosing the learning rate; the test split is never used for a
choice. Questions whose image is missing or unreadable are skipped and counted in
``stats.json``, which is written last: a folder holding it is a finished build.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clippo.atomic import atomic_write_text
from clippo.data.shards import write_split_shards
from clippo.data.transforms import DEFAULT_MAX_PIXELS, BadImageError, load_image
from clippo.data.vqa import question_prior
from clippo.data.vqa_answers import answer_accuracy, clean_whitespace, normalize_answer
from clippo.extras import require

EASY_VQA_ANNOTATORS = 10  # one answer, stored as ten agreeing annotators (exact-match scoring)
VQAV2_SPLITS = {"train": "train2014", "test": "val2014"}


@dataclass
class VQAQuestion:
    """One question of a source, with its human answers and its image file."""

    question_id: int
    image_id: int
    question: str
    answers: list[str]
    answer_type: str
    question_type: str
    image: Path
    majority: str  # the answer counted for the vocabulary (VQAv2's multiple_choice_answer)


def _easy_vqa_question_type(question: str) -> str:
    # easy-vqa has no question types; its templates differ in their first two words
    # ("is there", "does the", "what color", "what shape", ...).
    return " ".join(question.lower().split()[:2])


def read_easy_vqa(split: str) -> list[VQAQuestion]:
    """The questions of easy-vqa's ``train`` or ``test`` split (package ``easy_vqa``)."""
    if split not in ("train", "test"):
        raise ValueError(f"easy-vqa splits are 'train' and 'test', got {split!r}")
    easy_vqa = require("easy_vqa", "the easy-vqa data set")
    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return [
        VQAQuestion(
            question_id=i,
            image_id=int(image_id),
            question=question,
            answers=[answer] * EASY_VQA_ANNOTATORS,
            answer_type="yes/no" if answer in ("yes", "no") else "other",
            question_type=_easy_vqa_question_type(question),
            image=Path(paths[image_id]),
            majority=answer,
        )
        for i, (question, answer, image_id) in enumerate(
            zip(questions, answers, image_ids, strict=True)
        )
    ]


def _read_json(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (VQAv2's official layout expected)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"{path}: expected a JSON object with a {key!r} list")
    return data[key]


def _most_common(answers: Sequence[str]) -> str:
    counts = Counter(answers)
    return max(answers, key=lambda a: counts[a])  # the first of the most frequent


def read_vqav2(root: str | os.PathLike, split: str) -> list[VQAQuestion]:
    """The questions of a VQAv2 split (``train2014``, ``val2014``) in the official layout.

    Raises FileNotFoundError for a missing question or annotation file, ValueError for a
    question without annotation or bad JSON. Image files are checked when shards are built.
    """
    root = Path(root)
    questions = _read_json(root / f"v2_OpenEnded_mscoco_{split}_questions.json", "questions")
    annotations = _read_json(root / f"v2_mscoco_{split}_annotations.json", "annotations")
    by_id = {a["question_id"]: a for a in annotations}
    out = []
    for q in questions:
        ann = by_id.get(q["question_id"])
        if ann is None:
            raise ValueError(
                f"{root}: question {q['question_id']} of {split} has no annotation in "
                f"v2_mscoco_{split}_annotations.json"
            )
        answers = [clean_whitespace(a["answer"]) for a in ann["answers"]]
        if not answers:
            raise ValueError(f"{root}: question {q['question_id']} of {split} has no answers")
        image_id = int(q["image_id"])
        out.append(
            VQAQuestion(
                question_id=int(q["question_id"]),
                image_id=image_id,
                question=q["question"],
                answers=answers,
                answer_type=ann["answer_type"],
                question_type=ann["question_type"],
                image=root / split / f"COCO_{split}_{image_id:012d}.jpg",
                majority=ann.get("multiple_choice_answer") or _most_common(answers),
            )
        )
    return out


def answer_vocabulary(questions: Sequence[VQAQuestion], min_count: int) -> list[tuple[str, int]]:
    """``(answer, count)`` of the majority answers seen at least ``min_count`` times, most
    frequent first (ties alphabetical)."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(q.majority for q in questions)
    kept = [(a, n) for a, n in counts.items() if n >= min_count]
    return sorted(kept, key=lambda x: (-x[1], x[0]))


def soft_targets(answers: Sequence[str], vocabulary: set[str] | dict) -> dict[str, float]:
    """``{answer: VQA score}`` for every vocabulary answer that scores above 0 against the
    human ``answers`` (the official metric, normalisation included)."""
    candidates = {clean_whitespace(a) for a in answers} | {normalize_answer(a) for a in answers}
    out = {}
    for candidate in sorted(candidates):
        if candidate in vocabulary:
            score = answer_accuracy(candidate, list(answers), None)
            if score > 0:
                out[candidate] = score
    return out


def holdout_by_image(
    questions: Sequence[VQAQuestion], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """``(train, holdout)`` question indices: a seeded ``fraction`` of the images (rounded) and
    all their questions held out; each list grouped by image, images in a seeded order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout must lie in [0, 1), got {fraction}")
    by_image: dict[int, list[int]] = {}
    for i, q in enumerate(questions):
        by_image.setdefault(q.image_id, []).append(i)
    images = sorted(by_image)
    order = [images[i] for i in np.random.default_rng(seed).permutation(len(images))]
    n_held = round(fraction * len(images))
    held = [i for image in order[:n_held] for i in by_image[image]]
    train = [i for image in order[n_held:] for i in by_image[image]]
    return train, held


def _grouped(questions: Sequence[VQAQuestion], seed: int) -> list[int]:
    """All question indices, grouped by image, images in a seeded order."""
    return holdout_by_image(questions, 0.0, seed)[0]


def parse_source(source: str) -> tuple[str, Path | None]:
    """``easy-vqa`` or ``vqav2:DIR`` -> ``(kind, DIR)``; ValueError for anything else."""
    if source == "easy-vqa":
        return "easy-vqa", None
    if source.startswith("vqav2:") and source[len("vqav2:") :]:
        root = Path(source[len("vqav2:") :])
        if not root.is_dir():
            raise FileNotFoundError(f"VQAv2 folder {root} not found")
        return "vqav2", root
    raise ValueError(f"unknown VQA source {source!r}: give easy-vqa or vqav2:DIR")


def read_source(source: str) -> dict[str, list[VQAQuestion]]:
    """``{"train": ..., "test": ...}`` questions of ``easy-vqa`` or ``vqav2:DIR``."""
    kind, root = parse_source(source)
    if kind == "easy-vqa":
        return {"train": read_easy_vqa("train"), "test": read_easy_vqa("test")}
    return {name: read_vqav2(root, split) for name, split in VQAV2_SPLITS.items()}


class _ImageReader:
    """Image bytes checked to decode, the last image kept (questions come grouped by image);
    a missing or broken image is reported by reason."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels, self.path, self.result = max_pixels, None, None

    def __call__(self, path: Path) -> tuple[str, bytes] | str:
        if path != self.path:
            self.path, self.result = path, self._read(path)
        return self.result

    def _read(self, path: Path) -> tuple[str, bytes] | str:
        if not path.is_file():
            return "missing_image"
        data = path.read_bytes()
        try:
            load_image(data, max_pixels=self.max_pixels, name=str(path))
        except BadImageError as e:
            return e.reason
        ext = path.suffix.lower().lstrip(".")
        return ("jpg" if ext == "jpeg" else ext), data


def build_vqa_shards(
    source: str,
    out_dir: str | os.PathLike,
    *,
    min_count: int = 9,
    holdout: float = 0.1,
    seed: int = 0,
    shard_size: int = 5000,
    max_questions: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int], Any] | None = None,
    questions: dict[str, list[VQAQuestion]] | None = None,
) -> dict[str, Any]:
    """Writes ``train``, ``holdout`` and ``test`` shards, ``answers.json``,
    ``question_prior.json`` (``clippo.data.vqa.question_prior`` of the written training
    questions) and ``stats.json``.

    ``max_questions`` keeps that many questions of each source split (seeded, whole images
    first), for quick runs. ``questions`` replaces reading ``source`` (tests). Returns the stats.
    """
    start = time.perf_counter()
    splits_in = questions if questions is not None else read_source(source)
    if max_questions is not None:
        splits_in = {
            name: [qs[i] for i in _grouped(qs, seed)[:max_questions]]
            for name, qs in splits_in.items()
        }
    train_all = splits_in["train"]
    if not train_all:
        raise ValueError(f"{source}: the training split holds no questions")
    vocab = answer_vocabulary(train_all, min_count)
    if not vocab:
        raise ValueError(f"no answer is seen {min_count} times in training: lower min_count")
    answers = {a for a, _ in vocab}
    train_idx, held_idx = holdout_by_image(train_all, holdout, seed)
    rows = {
        "train": (train_all, train_idx),
        "holdout": (train_all, held_idx),
        "test": (splits_in["test"], _grouped(splits_in["test"], seed)),
    }
    read_image = _ImageReader(max_pixels)
    skipped: dict[str, Counter] = {name: Counter() for name in rows}
    written: dict[str, Counter] = {name: Counter() for name in rows}
    majority_in_vocab = Counter()
    train_questions: list[dict] = []  # what the question prior is computed from

    def members(split: str, i: int) -> list[tuple[str, bytes]]:
        q = rows[split][0][i]
        if progress is not None:
            progress(1)
        image = read_image(q.image)
        if isinstance(image, str):
            skipped[split][image] += 1
            return []
        written[split]["questions"] += 1
        written[split][f"answer_type/{q.answer_type}"] += 1
        majority_in_vocab[split] += q.majority in answers
        meta = {
            "question_id": q.question_id,
            "image_id": q.image_id,
            "question": q.question,
            "answers": q.answers,
            "answer_type": q.answer_type,
            "question_type": q.question_type,
            "targets": soft_targets(q.answers, answers),
        }
        if split == "train":
            train_questions.append(meta)
        key = f"q{q.question_id}"
        return [
            (f"{key}.{image[0]}", image[1]),
            (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()),
        ]

    out_dir = Path(out_dir)
    shards = write_split_shards(
        out_dir, {name: idx for name, (_, idx) in rows.items()}, members, shard_size=shard_size
    )
    atomic_write_text(
        out_dir / "answers.json",
        json.dumps(
            {
                "answers": [a for a, _ in vocab],
                "counts": [n for _, n in vocab],
                "min_count": min_count,
                "source": source,
            },
            indent=1,
        )
        + "\n",
    )
    atomic_write_text(
        out_dir / "question_prior.json",
        json.dumps(question_prior(train_questions), ensure_ascii=False, indent=0) + "\n",
    )
    stats = {
        "source": source,
        "params": {
            "min_count": min_count,
            "holdout": holdout,
            "seed": seed,
            "max_questions": max_questions,
        },
        "answers": len(vocab),
        "majority_answer": vocab[0][0],
        **{name: written[name]["questions"] for name in rows},
        "images": {
            "train": len({train_all[i].image_id for i in train_idx}),
            "holdout": len({train_all[i].image_id for i in held_idx}),
        },
        "answer_types": {
            name: {k.split("/", 1)[1]: n for k, n in sorted(c.items()) if "/" in k}
            for name, c in written.items()
        },
        "majority_answer_in_vocabulary": dict(majority_in_vocab),
        "skipped": {name: dict(sorted(c.items())) for name, c in skipped.items() if c},
        **shards,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=1) + "\n")
    return stats

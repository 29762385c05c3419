"""VQA shards at run time: the answer vocabulary, and batches of fused question+image inputs.

A folder written by ``clippo data vqa`` (``clippo.data.build.vqa``) holds ``train``, ``holdout``
and ``test`` shards, ``answers.json`` (the vocabulary) and ``stats.json``. ``VQAShardDataset``
reads them like every clippo shard set (same order, shuffling and exact resume as
``ShardDataset``) and makes the fused protocol's input (CLIPPO appendix A): the question drawn
in 16-px lines at the top of the canvas, the image resized into the rest
(``UnifontRenderer.render_question_on_image``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.data.shards import (
    Sample,
    ShardDataset,
    looks_truncated,
    skip_entries,
    stack_inputs,
)
from clippo.data.transforms import load_image
from clippo.render import UnifontRenderer

VQA_SPLITS = ("train", "holdout", "test")


@dataclass
class AnswerVocabulary:
    """The answers a classifier predicts (most frequent first) and their training counts."""

    answers: list[str]
    counts: list[int]

    def __post_init__(self) -> None:
        self.index = {a: i for i, a in enumerate(self.answers)}

    def __len__(self) -> int:
        return len(self.answers)

    def targets(self, scores: dict[str, float]) -> np.ndarray:
        """``{answer: score}`` -> the float32 soft-target vector (answers outside: ignored)."""
        out = np.zeros(len(self.answers), np.float32)
        for answer, score in scores.items():
            i = self.index.get(answer)
            if i is not None:
                out[i] = score
        return out


def read_vocabulary(data_dir: str | os.PathLike) -> AnswerVocabulary:
    """``DATA/answers.json`` -> the vocabulary; FileNotFoundError says how to build it."""
    path = Path(data_dir) / "answers.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: not a VQA data folder (build one with `clippo data vqa "
            "--source easy-vqa --out DIR`)"
        )
    data = json.loads(path.read_text())
    return AnswerVocabulary(list(data["answers"]), list(data["counts"]))


def split_pattern(data_dir: str | os.PathLike, split: str) -> str:
    """The shard pattern of ``split`` in a VQA data folder (from its ``stats.json``)."""
    if split not in VQA_SPLITS:
        raise ValueError(f"VQA splits are {VQA_SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    stats = data_dir / "stats.json"
    if not stats.is_file():
        raise FileNotFoundError(
            f"{stats} not found: not a finished VQA data folder (build one with `clippo data "
            "vqa --source easy-vqa --out DIR`)"
        )
    pattern = json.loads(stats.read_text()).get(f"{split}_pattern")
    if not pattern:
        raise ValueError(f"{data_dir}: the {split} split holds no questions")
    return str(data_dir / pattern)


def read_questions(urls: str) -> list[dict[str, Any]]:
    """The JSON records (question, answers, types, ids) of every sample of some shards, in
    order, without decoding images: what evaluation scores predictions against."""
    from clippo.data.shards import expand_urls, iter_tar_samples

    out = []
    for url in expand_urls(urls):
        for sample in iter_tar_samples(url):
            if "json" in sample:
                out.append(json.loads(sample["json"]))
    return out


def fused_input(
    renderer: UnifontRenderer, image, question: str, image_size: int, max_lines: int
) -> torch.Tensor:
    """The fused protocol's input: float ``(3, S, S)`` in [-1, 1], question on top."""
    pixels = renderer.render_question_on_image(
        image, question, image_size=image_size, max_lines=max_lines
    )
    arr = pixels.astype(np.float32).transpose(2, 0, 1) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(arr))


class VQAShardDataset(ShardDataset):
    """Whole batches of VQA samples for ``DataLoader(batch_size=None)``.

    Each batch: ``image`` (B, 3, S, S) float in [-1, 1], the fused input (``image_mode="fused"``)
    or the image alone resized to S (``"image"``, for zero-shot scoring); ``target`` (B, answers)
    float soft targets; ``question``, ``answers``, ``answer_type``, ``question_type``,
    ``question_id``; the skip report. ``renderer`` draws the question (the model's Unifont
    settings); other arguments are ``ShardDataset``'s.
    """

    def __init__(
        self,
        urls,
        *,
        vocabulary: AnswerVocabulary,
        renderer: UnifontRenderer,
        image_size: int,
        max_lines: int = 4,
        image_mode: str = "fused",
        **kwargs,
    ):
        if image_mode not in ("fused", "image"):
            raise ValueError(f"image_mode must be 'fused' or 'image', got {image_mode!r}")
        super().__init__(urls, image_transform=None, **kwargs)
        self.vocabulary, self.renderer = vocabulary, renderer
        self.image_size, self.max_lines, self.image_mode = image_size, max_lines, image_mode

    def _check(self, sample: Sample) -> str | tuple[dict, int]:
        if "__error__" in sample:
            return sample["__error__"]
        image = next((sample[e] for e in ("jpg", "jpeg", "png", "webp") if e in sample), None)
        if image is None:
            return "no_image"
        if looks_truncated(image):  # from raw bytes, so a resume skips the same samples
            return "broken"
        try:
            meta = json.loads(sample["json"])
        except (KeyError, ValueError, UnicodeDecodeError):
            return "bad_json"
        if not isinstance(meta, dict) or not isinstance(meta.get("question"), str):
            return "no_question"
        return meta, -1

    def _decode(self, sample: Sample, meta: dict, label: int, epoch: int) -> Sample:
        data = next(sample[ext] for ext in ("jpg", "jpeg", "png", "webp") if ext in sample)
        image = load_image(data, max_pixels=self.max_pixels, name=sample["__key__"])
        if self.image_mode == "fused":
            pixels = fused_input(
                self.renderer, image, meta["question"], self.image_size, self.max_lines
            )
        else:
            resized = image.resize((self.image_size, self.image_size))
            arr = np.asarray(resized, np.float32).transpose(2, 0, 1) / 127.5 - 1.0
            pixels = torch.from_numpy(np.ascontiguousarray(arr, np.float32))
        return {
            "image": pixels,
            "target": self.vocabulary.targets(meta.get("targets") or {}),
            "meta": meta,
        }

    def _collate(self, examples: list[Sample], skips: Counter) -> dict[str, Any]:
        metas = [e["meta"] for e in examples]
        return {
            "image": stack_inputs([e["image"] for e in examples]),
            "target": stack_inputs([e["target"] for e in examples]),
            "question_id": [m.get("question_id") for m in metas],
            "question": [m["question"] for m in metas],
            "answers": [m.get("answers", []) for m in metas],
            "answer_type": [m.get("answer_type", "") for m in metas],
            "question_type": [m.get("question_type", "") for m in metas],
            **skip_entries(skips),
        }


__all__ = [
    "AnswerVocabulary",
    "VQAShardDataset",
    "fused_input",
    "read_questions",
    "read_vocabulary",
    "split_pattern",
]

"""VQA shards at run time: the answer vocabulary, the blind question prior, and batches for both
VQA protocols.

A folder written by ``clippo data vqa`` (``clippo.data.build.vqa``) holds ``train``, ``holdout``
and ``test`` shards, ``answers.json`` (the vocabulary), ``question_prior.json``
(``question_prior``) and ``stats.json``. Every reader skips the same samples
(``vqa_question``). ``VQAShardDataset``
reads them like every clippo shard set (same order, shuffling and exact resume as
``ShardDataset``) and makes the fused protocol's input (CLIPPO appendix A): the question drawn
in 16-px lines at the top of the canvas, the image resized into the rest
(``UnifontRenderer.render_question_on_image``); or the grid protocol's (CLIP-ViL): the image
resized to the tower's size and the question as the model reads it (``question_transform``),
or both as a frozen encoder's cached features (``build_vqa_feature_caches``: one row per
distinct image, keyed by its content hash, and per distinct question, keyed by its text).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.data.image_cache import ImageFeatureCache, find_feature_cache, write_feature_cache
from clippo.data.shards import (
    Sample,
    ShardDataset,
    expand_urls,
    iter_tar_samples,
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


def vqa_question(sample: Sample) -> dict[str, Any] | str:
    """A shard sample's question metadata (its ``.json`` member), or why every VQA reader skips
    it: ``bad_shard`` (or another read error), ``no_image``, ``broken`` (truncated image bytes),
    ``bad_json``, ``no_question``. Decided from the raw bytes, so training, evaluation, the
    feature caches and the scoring of a results file all skip the same samples."""
    if "__error__" in sample:
        return sample["__error__"]
    image = _image_bytes(sample)
    if image is None:
        return "no_image"
    if looks_truncated(image):
        return "broken"
    try:
        meta = json.loads(sample["json"])
    except (KeyError, ValueError, UnicodeDecodeError):
        return "bad_json"
    if not isinstance(meta, dict) or not isinstance(meta.get("question"), str):
        return "no_question"
    return meta


def iter_questions(urls: str) -> Iterator[dict[str, Any]]:
    """The question metadata of every usable sample of some shards, in shard order, without
    decoding images (``vqa_question``'s rule)."""
    for url in expand_urls(urls):
        for sample in iter_tar_samples(url):
            meta = vqa_question(sample)
            if not isinstance(meta, str):
                yield meta


def question_prior(questions: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """A blind model from training questions (metadata with ``question`` and ``targets``): for
    each question text, the answer with the largest soft target summed over the questions that
    ask it (ties: the answer seen first). It answers from the question alone, as a model that
    ignores the image at best can."""
    totals: dict[str, Counter] = {}
    for meta in questions:
        totals.setdefault(meta["question"], Counter()).update(meta.get("targets") or {})
    return {q: c.most_common(1)[0][0] for q, c in totals.items() if c}


def read_question_prior(data_dir: str | os.PathLike) -> dict[str, str]:
    """The ``question_prior`` of a VQA folder's training split: ``question_prior.json``, which
    ``clippo data vqa`` writes beside ``answers.json``; for a folder built before that file
    existed, computed from the training shards."""
    path = Path(data_dir) / "question_prior.json"
    if path.is_file():
        return json.loads(path.read_text())
    return question_prior(iter_questions(split_pattern(data_dir, "train")))


def fused_input(
    renderer: UnifontRenderer, image, question: str, image_size: int, max_lines: int
) -> torch.Tensor:
    """The fused protocol's input: float ``(3, S, S)`` in [-1, 1], question on top."""
    pixels = renderer.render_question_on_image(
        image, question, image_size=image_size, max_lines=max_lines
    )
    arr = pixels.astype(np.float32).transpose(2, 0, 1) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(arr))


def image_input(image, image_size: int) -> torch.Tensor:
    """An image alone as the grid protocol and zero-shot scoring read it: resized (aspect not
    kept, nothing cropped) to ``image_size``, float ``(3, S, S)`` in [-1, 1]."""
    resized = image.convert("RGB").resize((image_size, image_size))
    arr = np.asarray(resized, np.float32).transpose(2, 0, 1) / np.float32(127.5) - np.float32(1.0)
    return torch.from_numpy(np.ascontiguousarray(arr))


def image_content_key(data: bytes) -> str:
    """The cache key of an image: a hash of its encoded bytes (images repeat across questions
    and image ids across splits; equal bytes are equal images)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _image_bytes(sample: Sample) -> bytes | None:
    return next((sample[e] for e in ("jpg", "jpeg", "png", "webp") if e in sample), None)


class VQAShardDataset(ShardDataset):
    """Whole batches of VQA samples for ``DataLoader(batch_size=None)``.

    Each batch: ``image`` (B, 3, S, S) float in [-1, 1], the fused input (``image_mode="fused"``)
    or the image alone resized to S (``"image"``: the grid protocol, zero-shot scoring), or
    instead ``image_features`` (B, L, D) from ``image_cache`` (a frozen tower's grid features,
    keyed by ``image_content_key``); with ``question_transform`` also ``question_input`` (the
    question as the model reads it), or with ``question_cache`` ``question_features`` and
    ``question_mask`` (keyed by the question's text); ``target`` (B, answers) float soft
    targets; ``question``, ``answers``, ``answer_type``, ``question_type``, ``question_id``; the
    skip report. ``renderer`` draws the question of the fused input (the model's Unifont
    settings); other arguments are ``ShardDataset``'s.
    """

    def __init__(
        self,
        urls,
        *,
        vocabulary: AnswerVocabulary,
        renderer: UnifontRenderer | None = None,
        image_size: int,
        max_lines: int = 4,
        image_mode: str = "fused",
        question_transform: Callable[[str], Any] | None = None,
        image_cache: ImageFeatureCache | None = None,
        question_cache: ImageFeatureCache | None = None,
        **kwargs,
    ):
        if image_mode not in ("fused", "image"):
            raise ValueError(f"image_mode must be 'fused' or 'image', got {image_mode!r}")
        if image_mode == "fused" and (renderer is None or image_cache is not None):
            raise ValueError("the fused input needs a renderer and the images (no image_cache)")
        if question_transform is not None and question_cache is not None:
            raise ValueError("give question_transform or question_cache, not both")
        super().__init__(urls, image_transform=None, **kwargs)
        self.vocabulary, self.renderer = vocabulary, renderer
        self.image_size, self.max_lines, self.image_mode = image_size, max_lines, image_mode
        self.question_transform = question_transform
        self.image_cache, self.question_cache = image_cache, question_cache

    def _check(self, sample: Sample) -> str | tuple[dict, int]:
        meta = vqa_question(sample)
        return meta if isinstance(meta, str) else (meta, -1)

    def _decode(self, sample: Sample, meta: dict, label: int, epoch: int) -> Sample:
        data = _image_bytes(sample)
        question = meta["question"]
        out = {"target": self.vocabulary.targets(meta.get("targets") or {}), "meta": meta}
        if self.image_cache is not None:  # a frozen tower's features: no decoding
            out["image_features"] = self.image_cache[image_content_key(data)]
        else:
            image = load_image(data, max_pixels=self.max_pixels, name=sample["__key__"])
            if self.image_mode == "fused":
                out["image"] = fused_input(
                    self.renderer, image, question, self.image_size, self.max_lines
                )
            else:
                out["image"] = image_input(image, self.image_size)
        if self.question_transform is not None:
            out["question_input"] = self.question_transform(question)
        if self.question_cache is not None:
            out["question_features"] = self.question_cache[question]
            out["question_mask"] = self.question_cache.mask(question)
        return out

    def _collate(self, examples: list[Sample], skips: Counter) -> dict[str, Any]:
        metas = [e["meta"] for e in examples]
        inputs = [k for k in MODEL_INPUTS if k in examples[0]]
        return {
            **{k: stack_inputs([e[k] for e in examples]) for k in inputs},
            "target": stack_inputs([e["target"] for e in examples]),
            "question_id": [m.get("question_id") for m in metas],
            "question": [m["question"] for m in metas],
            "answers": [m.get("answers", []) for m in metas],
            "answer_type": [m.get("answer_type", "") for m in metas],
            "question_type": [m.get("question_type", "") for m in metas],
            **skip_entries(skips),
        }


# Batch entry -> the keyword of a VQA model's forward that reads it.
MODEL_INPUTS = {
    "image": "images",
    "image_features": "image_features",
    "question_input": "question_input",
    "question_features": "question_features",
    "question_mask": "question_mask",
}


def vqa_inputs(batch: dict[str, Any], device: torch.device | str | None = None) -> dict:
    """A batch's model inputs as the keyword arguments of a VQA model's forward (the fused
    classifier reads ``images``; the grid model also the question, or cached features)."""
    return {
        arg: batch[key].to(device, non_blocking=True) if device is not None else batch[key]
        for key, arg in MODEL_INPUTS.items()
        if key in batch
    }


def build_vqa_feature_caches(
    urls: str,
    directory: str | os.PathLike,
    *,
    image_size: int,
    image_id: str,
    embed_images: Callable[[torch.Tensor], torch.Tensor],
    question_id: str | None = None,
    question_transform: Callable[[list[str]], Any] | None = None,
    embed_questions: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    batch_size: int = 64,
    progress: Callable[[int], Any] | None = None,
) -> tuple[ImageFeatureCache, ImageFeatureCache | None]:
    """A frozen encoder's features of every distinct image (and question) of VQA shards,
    computed once: ``directory/image_id`` and ``directory/question_id``.

    ``embed_images`` maps float images ``(B, 3, S, S)`` (``image_input``) to grid features
    ``(B, L, D)``; rows are keyed by ``image_content_key``. With ``question_id``,
    ``embed_questions`` maps ``question_transform`` of a list of questions to their token
    features and mask; rows are keyed by the question's text. Complete caches of the same
    shards are reused. ``progress(n)`` is called after every ``n`` samples read.
    """
    shards = expand_urls(urls)
    images = find_feature_cache(Path(directory) / image_id, shards, image_size=image_size)
    questions = None
    if question_id is not None:
        questions = find_feature_cache(Path(directory) / question_id, shards)
    if images is not None and (question_id is None or questions is not None):
        return images, questions

    image_keys: dict[str, bytes] = {}
    texts: dict[str, None] = {}
    for url in shards:
        for sample in iter_tar_samples(url):
            meta = vqa_question(sample)
            if isinstance(meta, str):
                continue  # what the reader skips never needs features
            data = _image_bytes(sample)
            image_keys.setdefault(image_content_key(data), data)
            texts.setdefault(meta["question"])
            if progress is not None:
                progress(1)
    if not image_keys:
        raise ValueError(f"no usable VQA samples in {urls!r}")

    def embed_all(items: list, embed: Callable) -> tuple[np.ndarray, np.ndarray | None]:
        rows, masks = [], []
        for i in range(0, len(items), batch_size):
            with torch.no_grad():
                out = embed(items[i : i + batch_size])
            if isinstance(out, tuple):
                out, mask = out
                masks.append(mask.cpu().numpy())
            rows.append(out.float().cpu().numpy())
        return np.concatenate(rows), (np.concatenate(masks) if masks else None)

    if images is None:
        keys = list(image_keys)

        def embed_image_batch(batch_keys: list[str]) -> torch.Tensor:
            pixels = [
                image_input(load_image(image_keys[k], name=k), image_size) for k in batch_keys
            ]
            return embed_images(torch.stack(pixels))

        features, _ = embed_all(keys, embed_image_batch)
        images = write_feature_cache(
            Path(directory) / image_id,
            keys,
            features,
            tower_id=image_id,
            shards=shards,
            image_size=image_size,
        )
    if question_id is not None and questions is None:
        keys = list(texts)

        def embed_question_batch(batch: list[str]):
            return embed_questions(torch.as_tensor(np.asarray(question_transform(batch))))

        features, mask = embed_all(keys, embed_question_batch)
        questions = write_feature_cache(
            Path(directory) / question_id,
            keys,
            features,
            tower_id=question_id,
            shards=shards,
            mask=mask,
        )
    return images, questions


__all__ = [
    "MODEL_INPUTS",
    "AnswerVocabulary",
    "VQAShardDataset",
    "build_vqa_feature_caches",
    "fused_input",
    "image_content_key",
    "image_input",
    "iter_questions",
    "question_prior",
    "read_question_prior",
    "read_vocabulary",
    "split_pattern",
    "vqa_inputs",
    "vqa_question",
]

"""Prompt sets and CLIP's prompt ensemble: class names -> one embedding per class.

The packaged sets live under ``clippo/assets/prompts/NAME.json`` (class names and templates).
Each class is represented by the mean of its L2-normalised prompt embeddings, renormalised
(big_vision ``discriminative_classifier._average_embeddings``, CLIP's ImageNet notebook). Used by
the zero-shot evaluator and by ``model.classify``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from importlib import resources

import torch

EncodeText = Callable[[list[str]], torch.Tensor]

# Same epsilon as big_vision's class-average renormalisation; keeps an all-zero mean finite.
_NORM_EPS = 1e-8


def load_prompts(name: str, *, canonicalize: bool = False) -> tuple[list[str], list[str]]:
    """Return `(classnames, templates)` shipped under `clippo/assets/prompts/<name>.json`.

    `imagenet`: CLIP's 1,000 ImageNet class names and its 80 templates. `openclipart`: the 22
    category folders of the openclipart package in sorted folder order (label i is the i-th
    folder) and clip-art templates. `canonicalize=True` applies big_vision's
    `canonicalize_text` (what its zero-shot evaluator does by default); note that big_vision's
    `clip_paper` set also appends the bare template "{}", which is not shipped here.
    """
    folder = resources.files("clippo") / "assets" / "prompts"
    available = sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )
    if name not in available:
        raise ValueError(f"unknown prompt set {name!r}; available: {available}")
    data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    classnames, templates = list(data["classnames"]), list(data["templates"])
    if canonicalize:
        classnames = [canonicalize_text(c) for c in classnames]
        templates = [canonicalize_text(t, keep="{}") for t in templates]
    return classnames, templates


def canonicalize_text(text: str, *, keep: str | None = None) -> str:
    """Lowercase, drop punctuation and squeeze whitespace, like big_vision's prompt engineering.

    Underscores become spaces; the exact string `keep` (e.g. the "{}" placeholder) survives.
    """
    drop_punctuation = str.maketrans("", "", string.punctuation)
    text = text.replace("_", " ")
    parts = text.split(keep) if keep else [text]
    text = (keep or "").join(p.translate(drop_punctuation) for p in parts)
    return re.sub(r"\s+", " ", text.lower()).strip()


def build_zeroshot_classifier(
    encode_text: EncodeText,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Return (C, D) float32 zero-shot weights: per class the renormalised mean prompt embedding."""
    if len(classnames) == 0:
        raise ValueError("classnames is empty")
    if len(templates) == 0:
        raise ValueError("templates is empty; use ['{}'] for the bare class name")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"every template needs exactly one '{{}}' placeholder; bad: {bad}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    chunks = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        emb = torch.as_tensor(encode_text(batch)).detach().float().cpu()
        if emb.ndim != 2 or emb.shape[0] != len(batch):
            raise ValueError(
                f"encode_text returned shape {tuple(emb.shape)} for {len(batch)} texts; "
                "expected (N, D)"
            )
        chunks.append(emb)
    emb = torch.cat(chunks).reshape(len(classnames), len(templates), -1)
    emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    mean = emb.mean(dim=1)
    return mean / (mean.norm(dim=-1, keepdim=True) + _NORM_EPS)


def resolve_templates(templates: str | Sequence[str]) -> list[str]:
    """A packaged prompt set's templates (by name, e.g. ``"imagenet"``) or a list of templates
    with one ``{}`` each."""
    if isinstance(templates, str):
        if "{}" in templates:
            return [templates]
        return load_prompts(templates)[1]
    templates = list(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(
            f"templates must be a prompt-set name or a non-empty list of strings with one '{{}}' "
            f"each; bad: {bad or 'empty list'}"
        )
    return templates

"""Zero-shot classification: CLIP's protocol with prompt ensembling.

Each class is represented by the mean of its L2-normalised prompt embeddings, renormalised
(big_vision `discriminative_classifier._average_embeddings`, CLIP's ImageNet notebook). An image
is assigned the classes whose vectors have the largest dot product with its embedding.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import torch

from clippo.eval.registry import register

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


def zeroshot_accuracy(
    image_embeddings: torch.Tensor,
    labels: torch.Tensor,
    classifier: torch.Tensor,
    topk: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Return `{"top1": ..., "top5": ...}`: fraction of images with the label among k best classes.

    Raises ValueError when some k exceeds the number of classes (top-k would be trivially 1.0);
    pass e.g. `topk=(1,)` for small label sets. Ties count against the image: its rank is the
    number of other classes scoring >= its true class, so a collapsed model (all scores equal)
    gets 0, not 1. (big_vision's argmax resolves ties to the lowest class index instead.)
    """
    image_embeddings = torch.as_tensor(image_embeddings).float()
    classifier = torch.as_tensor(classifier).float()
    labels = torch.as_tensor(labels)
    if image_embeddings.ndim != 2 or classifier.ndim != 2:
        raise ValueError(
            f"image_embeddings and classifier must be 2-D, got shapes "
            f"{tuple(image_embeddings.shape)} and {tuple(classifier.shape)}"
        )
    if image_embeddings.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"embedding dims differ: images have D={image_embeddings.shape[1]}, "
            f"classifier has D={classifier.shape[1]}"
        )
    if labels.ndim != 1 or labels.shape[0] != image_embeddings.shape[0]:
        raise ValueError(
            f"labels must have shape ({image_embeddings.shape[0]},) to match image_embeddings, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    num_classes = classifier.shape[0]
    if labels.numel() == 0:
        raise ValueError("no images to evaluate")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    if not topk or any(k < 1 or k > num_classes for k in topk):
        raise ValueError(f"every k in topk={tuple(topk)} must lie in [1, {num_classes}] (C)")

    scores = image_embeddings @ classifier.T
    if not torch.isfinite(scores).all():
        raise ValueError("image_embeddings @ classifier.T has NaN or inf entries")
    true_score = scores.gather(1, labels[:, None].long())
    rank = (scores >= true_score).sum(dim=1) - 1  # minus the true class itself
    return {f"top{k}": (rank < k).float().mean().item() for k in topk}


@register("zeroshot")
@dataclass
class ZeroShotEvaluator:
    """Zero-shot top-1 (and top-5 with 5+ classes) on the set's labelled images, with a packaged
    prompt set (``clippo/assets/prompts/NAME.json``: class names and templates)."""

    prompts: str = ""

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("prompts: name a packaged prompt set, e.g. openclipart or imagenet")
        self.classnames, self.templates = load_prompts(self.prompts)  # a bad name fails now

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        labelled = s.labels >= 0
        if not labelled.any():
            return {}
        classifier = build_zeroshot_classifier(
            ctx.encode_text, self.classnames, self.templates, ctx.batch_size
        )
        topk = (1, 5) if len(self.classnames) >= 5 else (1,)
        acc = zeroshot_accuracy(s.image[labelled], s.labels[labelled], classifier, topk=topk)
        return {f"zeroshot_{k}": v for k, v in acc.items()}

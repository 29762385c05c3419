"""Zero-shot classification: CLIP's protocol with prompt ensembling (``clippo.prompts``).

An image is assigned the classes whose vectors (each the renormalised mean of its prompt
embeddings) have the largest dot product with its embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clippo.eval.registry import register
from clippo.prompts import (
    build_zeroshot_classifier,
    canonicalize_text,
    load_prompts,
    resolve_templates,
)

__all__ = [
    "ZeroShotEvaluator",
    "build_zeroshot_classifier",
    "canonicalize_text",
    "load_prompts",
    "resolve_classes",
    "zeroshot_accuracy",
]


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


def resolve_classes(
    prompts: str, templates: str, set_classnames: list[str] | None
) -> tuple[list[str], list[str]]:
    """Class names and templates of a zero-shot evaluation: a packaged prompt set's
    (``prompts``), or the set's own class names (class folders with a name file, caption sets
    with categories) with ``templates`` (a prompt-set name or one template; default CLIP's 80
    ImageNet ones)."""
    if prompts:
        classnames, packaged = load_prompts(prompts)
        if set_classnames is not None and len(set_classnames) != len(classnames):
            raise ValueError(
                f"prompt set {prompts!r} has {len(classnames)} classes, the data set "
                f"{len(set_classnames)}: drop prompts to use the data set's class names"
            )
        return classnames, resolve_templates(templates) if templates else packaged
    if set_classnames is None:
        raise ValueError(
            "zero-shot needs class names: set prompts (a packaged prompt set), or give the data "
            "set a class-name file (class folders: classnames.txt)"
        )
    return list(set_classnames), resolve_templates(templates or "imagenet")


@register("zeroshot")
@dataclass
class ZeroShotEvaluator:
    """Zero-shot top-1 (and top-5 with 5+ classes) on the set's labelled images, with a packaged
    prompt set (``clippo/assets/prompts/NAME.json``: class names and templates) or the set's own
    class names and ``templates``."""

    prompts: str = ""
    templates: str = ""

    @property
    def needs_classnames(self) -> bool:
        """Without a prompt set the class names must come from the data set."""
        return not self.prompts

    def __post_init__(self) -> None:
        if self.prompts:
            load_prompts(self.prompts)  # a bad name fails now
        if self.templates:
            resolve_templates(self.templates)

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        labelled = s.labels >= 0
        if not labelled.any():
            return {}
        classnames, templates = resolve_classes(self.prompts, self.templates, s.classnames)
        classifier = ctx.classifier(classnames, templates)
        topk = (1, 5) if len(classnames) >= 5 else (1,)
        acc = zeroshot_accuracy(s.image[labelled], s.labels[labelled], classifier, topk=topk)
        return {f"zeroshot_{k}": v for k, v in acc.items()}

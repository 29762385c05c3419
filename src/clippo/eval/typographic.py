"""Typographic-attack evaluator: zero-shot top-1 on clean images and on the same images with a
wrong class name written on them (``clippo.data.typographic``), per font, and the attack rate
(the share of images now classified as the written class).

Metrics: ``typographic_clean_top1``, and per font F (``unifont``, ``dejavu``, ...)
``typographic_F_top1`` and ``typographic_F_attack_rate``; ``typographic_clean_written_rate`` is
how often the clean image is already classified as the class that will be written on it (the
attack rate's baseline, about 1/C for a model that ignores the text).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clippo.data.typographic import TypographicAttack, check_font, font_label, wrong_class
from clippo.eval.registry import register
from clippo.eval.zeroshot import load_prompts, resolve_classes, resolve_templates, zeroshot_accuracy


def attack_metrics(
    clean: torch.Tensor,
    attacked: torch.Tensor,
    labels: torch.Tensor,
    written: torch.Tensor,
    classifier: torch.Tensor,
) -> dict[str, float]:
    """``clean_top1``, ``top1`` (attacked) and ``attack_rate`` (attacked images whose best class
    is the written one) and ``clean_written_rate`` (the same on clean images), from the
    embeddings of the same images, row by row, clean and attacked."""
    if clean.shape != attacked.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and attacked {tuple(attacked.shape)} differ")
    written = torch.as_tensor(written).long()
    if (written == torch.as_tensor(labels)).any():
        raise ValueError("a written class equals the true class: the attack must write a wrong one")
    topk = (1,)
    clean_pred = (clean.float() @ classifier.T).argmax(dim=1)
    attacked_pred = (attacked.float() @ classifier.T).argmax(dim=1)
    return {
        "clean_top1": zeroshot_accuracy(clean, labels, classifier, topk)["top1"],
        "top1": zeroshot_accuracy(attacked, labels, classifier, topk)["top1"],
        "attack_rate": (attacked_pred == written).float().mean().item(),
        "clean_written_rate": (clean_pred == written).float().mean().item(),
    }


@register("typographic")
@dataclass
class TypographicAttackEvaluator:
    """Zero-shot top-1 clean vs. attacked (a wrong class name written on a white label in the
    lower half of each image, per font) and the attack rate; class names and templates as the
    ``zeroshot`` evaluator's. The wrong class of an image depends on (``seed``, its key) only.
    After a run, ``examples`` holds the first ``keep_examples`` attacked images with their
    true, written and predicted classes (for pictures)."""

    prompts: str = ""
    templates: str = ""
    fonts: list[str] = field(default_factory=lambda: ["unifont", "dejavu"])
    seed: int = 0
    keep_examples: int = 8

    @property
    def needs_classnames(self) -> bool:
        """Without a prompt set the class names must come from the data set."""
        return not self.prompts

    def __post_init__(self) -> None:
        if self.prompts:
            load_prompts(self.prompts)
        if self.templates:
            resolve_templates(self.templates)
        if not self.fonts:
            raise ValueError("fonts: list at least one (unifont, dejavu or a .ttf path)")
        for font in self.fonts:
            check_font(font)
        self.examples: list[dict] = []

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        labelled = (s.labels >= 0).nonzero().flatten()
        if not len(labelled):
            return {}
        classnames, templates = resolve_classes(self.prompts, self.templates, s.classnames)
        classifier = ctx.classifier(classnames, templates)
        keys = [s.keys[i] for i in labelled]
        labels = s.labels[labelled]
        n = len(classnames)
        written = torch.tensor(
            [wrong_class(k, int(y), n, self.seed) for k, y in zip(keys, labels, strict=True)]
        )
        texts = {k: classnames[w] for k, w in zip(keys, written.tolist(), strict=True)}
        # Examples spread evenly over the set (shards are often sorted by class).
        picked = sorted({round(i * (len(keys) - 1) / max(1, self.keep_examples - 1))
                         for i in range(min(self.keep_examples, len(keys)))})  # fmt: skip
        shown = {keys[i] for i in picked}
        out: dict[str, float] = {}
        self.examples = [
            {"key": keys[i], "label": classnames[int(labels[i])],
             "written": classnames[int(written[i])], "pred": {}}
            for i in picked
        ]  # fmt: skip
        clean = s.image[labelled]
        clean_pred = (clean @ classifier.T).argmax(1)
        for ex, i in zip(self.examples, picked, strict=True):
            ex["pred"]["clean"] = classnames[int(clean_pred[i])]
        for font in self.fonts:
            name = font_label(font)
            attack = TypographicAttack(ctx.model.image_size, texts, font)
            attacked_set = ctx.embed_images(attack, f"{name} attack", keep_pixels=shown)
            row = {k: i for i, k in enumerate(attacked_set.keys)}
            if any(k not in row for k in keys):  # an image unreadable now: cannot happen twice
                raise ValueError("the attacked pass lost images the clean pass embedded")
            attacked = attacked_set.image[torch.tensor([row[k] for k in keys])]
            m = attack_metrics(clean, attacked, labels, written, classifier)
            out["typographic_clean_top1"] = m["clean_top1"]
            out["typographic_clean_written_rate"] = m["clean_written_rate"]
            out[f"typographic_{name}_top1"] = m["top1"]
            out[f"typographic_{name}_attack_rate"] = m["attack_rate"]
            preds = (attacked @ classifier.T).argmax(1)
            for ex, i in zip(self.examples, picked, strict=True):
                ex["pred"][name] = classnames[int(preds[i])]
                pixels = attacked_set.pixels.get(ex["key"])
                if pixels is not None:  # (3, S, S) in [-1, 1] -> (S, S, 3) uint8
                    image = ((pixels.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
                    ex.setdefault("images", {})[name] = image.to(torch.uint8).numpy()
        return out

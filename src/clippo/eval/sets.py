"""Evaluation sets: named shard sets (or multilingual caption sets in XM3600's layout,
``clippo.data.captionsets``), each embedded once per evaluation and handed to its evaluators
(``clippo.eval.registry``), each on its own schedule; metrics are ``SET/METRIC``.

``EvalSets`` is what a training run's engine calls (``due`` / ``run``) and what
``clippo eval`` runs once. Building it checks every set's data and every evaluator's options,
so a run fails before its first step, not after its last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from clippo.data import BadImageError, ShardDataset, expand_urls, load_image
from clippo.data.captionsets import CAPTIONS_FILE, is_caption_set, read_caption_set
from clippo.eval.registry import build_evaluator
from clippo.models.base import state_fingerprint
from clippo.schema import ConfigError


@dataclass
class EmbeddedSet:
    """Embeddings of a shard set: one row per image, one row per caption."""

    image: torch.Tensor  # (N, D)
    text: torch.Tensor  # (M, D)
    text_image_ids: torch.Tensor  # (M,) row of ``image`` each caption belongs to
    labels: torch.Tensor  # (N,) -1 where a shard has no label
    texts: list[str]
    keys: list[str]
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # {reason: {shard: n}}
    text_languages: list[str] | None = None  # per caption, for multilingual caption sets


def _loader(pattern: str, model, batch_size: int, text_sampling: str, workers: int) -> DataLoader:
    dataset = ShardDataset(
        pattern,
        batch_size=batch_size,
        image_transform=model.image_transform,
        text_transform=None,
        train=False,
        text_sampling=text_sampling,
    )
    return DataLoader(dataset, batch_size=None, num_workers=workers)


@torch.no_grad()
def embed_shards(
    model,
    pattern: str,
    *,
    batch_size: int = 256,
    max_examples: int | None = None,
    with_texts: bool = True,
    captions: str = "all",
    workers: int = 0,
) -> EmbeddedSet:
    """Embeds every image of ``pattern`` and, with ``with_texts``, its captions: every text
    field (``captions="all"``) or the first one (``"first"``, one image/text pair each)."""
    device = next(model.parameters()).device
    images, texts, ids, labels, keys = [], [], [], [], []
    skipped: dict[str, dict[str, int]] = {}
    n = 0
    for batch in _loader(pattern, model, batch_size, "first", workers):
        for reason, shards in batch["skip_shards"].items():
            for shard, count in shards.items():
                skipped.setdefault(reason, {})[shard] = (
                    skipped.get(reason, {}).get(shard, 0) + count
                )
        images.append(model.encode_image(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
        keys.extend(batch["key"])
        if with_texts:
            for i, fields in enumerate(batch["texts"]):
                fields = fields if captions == "all" else fields[:1]
                texts.extend(fields)
                ids.extend([n + i] * len(fields))
        n += len(batch["key"])
        if max_examples is not None and n >= max_examples:
            break
    if not images:
        raise ValueError(f"no usable examples in {pattern!r} (skipped: {skipped or 'none'})")
    text_emb = torch.zeros(0, images[0].shape[1])
    if texts:
        text_emb = torch.cat(
            [
                model.encode_text(texts[i : i + batch_size]).float().cpu()
                for i in range(0, len(texts), batch_size)
            ]
        )
    image = torch.cat(images)
    label = torch.cat(labels).long()
    if max_examples is not None:
        image, label, keys = image[:max_examples], label[:max_examples], keys[:max_examples]
        keep = [j for j, i in enumerate(ids) if i < max_examples]
        text_emb, texts, ids = text_emb[keep], [texts[j] for j in keep], [ids[j] for j in keep]
    ids_t = torch.tensor(ids, dtype=torch.long)
    return EmbeddedSet(image, text_emb, ids_t, label, texts, keys, skipped)


@torch.no_grad()
def embed_caption_set(
    model,
    root: str,
    *,
    batch_size: int = 256,
    with_texts: bool = True,
    captions: str = "all",
) -> EmbeddedSet:
    """Embeds a multilingual caption set (``clippo.data.captionsets``: XM3600's layout): every
    image, and with ``with_texts`` every caption of every language (``captions="first"``: the
    first per language), each distinct string once; ``text_languages`` says each one's language.
    An image that cannot be decoded is skipped with its captions and counted."""
    device = next(model.parameters()).device
    data = read_caption_set(root)
    transform = model.image_transform
    kept: list[int] = []
    images: list[torch.Tensor] = []
    broken = 0
    for start in range(0, len(data), batch_size):
        pixels = []
        for i in range(start, min(start + batch_size, len(data))):
            try:
                image = load_image(data.image_paths[i], draft_size=model.image_size)
            except BadImageError:
                broken += 1
                continue
            pixels.append(transform(image, key=data.keys[i]))
            kept.append(i)
        if pixels:
            images.append(model.encode_image(torch.stack(pixels).to(device)).float().cpu())
    if not images:
        raise ValueError(f"no readable image in {root} ({broken} broken)")
    texts, ids, languages = [], [], []
    if with_texts:
        for row, i in enumerate(kept):
            for lang, fields in sorted(data.captions[i].items()):
                fields = fields if captions == "all" else fields[:1]
                texts.extend(fields)
                ids.extend([row] * len(fields))
                languages.extend([lang] * len(fields))
    text_emb = torch.zeros(0, images[0].shape[1])
    if texts:
        # Translations often repeat a string (en_GB = en): each distinct one is embedded once.
        unique = list(dict.fromkeys(texts))
        emb = torch.cat(
            [
                model.encode_text(unique[i : i + batch_size]).float().cpu()
                for i in range(0, len(unique), batch_size)
            ]
        )
        row_of = {t: r for r, t in enumerate(unique)}
        text_emb = emb[torch.tensor([row_of[t] for t in texts])]
    skipped = {"broken": {CAPTIONS_FILE: broken}} if broken else {}
    return EmbeddedSet(
        image=torch.cat(images),
        text=text_emb,
        text_image_ids=torch.tensor(ids, dtype=torch.long),
        labels=torch.full((len(kept),), -1, dtype=torch.long),
        texts=texts,
        keys=[data.keys[i] for i in kept],
        skipped=skipped,
        text_languages=languages if with_texts else None,
    )


@dataclass
class EvalContext:
    """What an evaluator gets: the model, its set's embeddings and shared helpers."""

    model: nn.Module
    embedded: EmbeddedSet
    batch_size: int
    train_data: str | None  # the run's training shards (the few-shot probe's default source)
    _sets: EvalSets = field(repr=False)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings on the CPU in float32 (for classifiers built from prompts)."""
        return self.model.encode_text(texts).float().cpu()

    def train_embeddings(self, pattern: str, max_examples: int) -> EmbeddedSet:
        """Image embeddings of the first ``max_examples`` of ``pattern``; computed once per
        model state and shared by every set and evaluation that asks."""
        return self._sets.cached_train_embeddings(self.model, pattern, max_examples)


@dataclass
class _Set:
    name: str
    data: str
    every: int
    captions: str
    evaluators: dict[str, Any]

    @property
    def needs_texts(self) -> bool:
        return any(getattr(e, "needs_texts", False) for e in self.evaluators.values())


class EvalSets:
    """The evaluation sets of a config (``eval.sets``), ready to run.

    ``sets`` maps names to objects with ``data``, ``every``, ``captions`` and ``evaluators``
    (``clippo.train.config.EvalSetConfig``); ``train_data`` is the run's training shards.
    """

    def __init__(
        self,
        sets: dict[str, Any],
        *,
        batch_size: int = 256,
        train_data: str | None = None,
        workers: int = 0,
    ):
        self.batch_size, self.train_data, self.workers = batch_size, train_data or None, workers
        self.sets: dict[str, _Set] = {}
        for name, s in sets.items():
            where = f"eval.sets.{name}"
            if not s.data:
                raise ConfigError(f"{where}.data: a shard pattern of held-out pairs is required")
            # A missing file fails now, not after training.
            caption_set = is_caption_set(s.data)
            if caption_set:
                read_caption_set(s.data)
            else:
                expand_urls(s.data)
            evaluators = {
                key: build_evaluator(key, options, f"{where}.evaluators")
                for key, options in s.evaluators.items()
            }
            if not evaluators:
                raise ConfigError(f"{where}.evaluators: list at least one evaluator")
            for key, evaluator in evaluators.items():
                if getattr(evaluator, "needs_languages", False) and not caption_set:
                    raise ConfigError(
                        f"{where}.evaluators.{key}: needs captions per language: set {where}.data "
                        f"to a folder with {CAPTIONS_FILE} (XM3600's layout, `clippo data "
                        "tuxpaint`), not shards"
                    )
            for evaluator in evaluators.values():
                check = getattr(evaluator, "check", None)
                if check is not None:
                    check(self, f"{where}.evaluators")
            self.sets[name] = _Set(name, s.data, s.every, s.captions, evaluators)
        self.embedded: dict[str, EmbeddedSet] = {}  # each set's latest embeddings
        self._train_cache: dict[tuple, EmbeddedSet] = {}

    def skipped(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{set: {reason: {shard: n}}}`` of the samples the latest evaluation skipped."""
        return {name: e.skipped for name, e in self.embedded.items() if e.skipped}

    def __bool__(self) -> bool:
        return bool(self.sets)

    def due(self, step: int, final: bool) -> bool:
        """Whether any set evaluates at ``step``."""
        return any(self._due(s, step, final) for s in self.sets.values())

    @staticmethod
    def _due(s: _Set, step: int, final: bool) -> bool:
        return final or bool(s.every and step % s.every == 0)

    @torch.no_grad()
    def run(self, model: nn.Module, step: int = 0, final: bool = True) -> dict[str, float]:
        """Every set due at ``step`` (all of them when ``final``): ``{SET/METRIC: value}``."""
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        try:
            for s in self.sets.values():
                if not self._due(s, step, final):
                    continue
                # A caption-set folder (XM3600's layout) or image/text shards.
                caption_set = is_caption_set(s.data)
                embed = embed_caption_set if caption_set else embed_shards
                embedded = embed(
                    model,
                    s.data,
                    batch_size=self.batch_size,
                    with_texts=s.needs_texts,
                    captions=s.captions,
                    **({} if caption_set else {"workers": self.workers}),
                )
                self.embedded[s.name] = embedded
                if embedded.skipped:  # metrics over fewer samples than the shards hold
                    total = sum(n for shards in embedded.skipped.values() for n in shards.values())
                    out[f"{s.name}/skipped"] = total
                ctx = EvalContext(model, embedded, self.batch_size, self.train_data, self)
                for evaluator in s.evaluators.values():
                    out.update({f"{s.name}/{k}": v for k, v in evaluator(ctx).items()})
        finally:
            model.train(was_training)
        return out

    def cached_train_embeddings(
        self, model: nn.Module, pattern: str, max_examples: int
    ) -> EmbeddedSet:
        """``embed_shards(pattern, max_examples, no texts)``, reused for an unchanged model."""
        key = (state_fingerprint(model), pattern, max_examples)
        if key not in self._train_cache:
            self._train_cache.clear()  # only the current model's embeddings are worth keeping
            self._train_cache[key] = embed_shards(
                model,
                pattern,
                batch_size=self.batch_size,
                max_examples=max_examples,
                with_texts=False,
                workers=self.workers,
            )
        return self._train_cache[key]

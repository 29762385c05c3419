"""Evaluation sets: named shard sets, multilingual caption sets in XM3600's layout
(``clippo.data.captionsets``) or benchmarks in their download layouts (``kind``: imagenet,
imagefolder, coco, flickr30k; ``clippo.data.benchmarks``), each embedded once per evaluation
and handed to its evaluators (``clippo.eval.registry``), each on its own schedule; metrics are
``SET/METRIC``. Files are decoded in DataLoader workers; the model's device does the rest.

``EvalSets`` is what a training run's engine calls (``due`` / ``run``) and what
``clippo eval`` runs once. Building it checks every set's data and every evaluator's options,
so a run fails before its first step, not after its last.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from clippo.atomic import atomic_write
from clippo.data import ShardDataset, expand_urls
from clippo.data.benchmarks import (
    KINDS,
    ImageFiles,
    LabelledImages,
    collate_image_files,
    read_benchmark,
    read_class_folders,
    sample_per_class,
)
from clippo.data.captionsets import CAPTIONS_FILE, CaptionSet, is_caption_set, read_caption_set
from clippo.data.textpairs import TextPairSet, read_text_pair_set
from clippo.eval.benchmarks import default_evaluators
from clippo.eval.registry import build_evaluator
from clippo.models.base import state_fingerprint
from clippo.prompts import build_zeroshot_classifier
from clippo.schema import ConfigError

# progress(description, total) -> update(n): how a caller (the CLI) shows embedding progress
Progress = Callable[[str, int | None], Callable[[int], None]]


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
    pair_pivots: int | None = None  # text-pair sets: the first N ``text`` rows are the pivots
    classnames: list[str] | None = None  # names of the labels, when the data set has them
    class_ids: list[str] | None = None  # folder / WordNet id per label (class-folder sets)
    pixels: dict[str, torch.Tensor] = field(default_factory=dict)  # kept inputs, by key


def encode_texts(model, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """``model.encode_text`` of ``texts`` (float32, on the CPU; ``batch_size`` at a time), each
    distinct string encoded once (translations and shifted copies repeat strings); row ``i``
    embeds ``texts[i]``."""
    unique = list(dict.fromkeys(texts))
    row_of = {t: r for r, t in enumerate(unique)}
    emb = model.encode_text(unique, batch_size=batch_size).float().cpu()
    return emb[torch.tensor([row_of[t] for t in texts], dtype=torch.long)]


def _loader(
    pattern: str, transform, batch_size: int, text_sampling: str, workers: int
) -> DataLoader:
    dataset = ShardDataset(
        pattern,
        batch_size=batch_size,
        image_transform=transform,
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
    transform=None,
    progress: Callable[[int], None] | None = None,
    keep_pixels: set[str] | None = None,
) -> EmbeddedSet:
    """Embeds every image of ``pattern`` and, with ``with_texts``, its captions: every text
    field (``captions="all"``) or the first one (``"first"``, one image/text pair each).
    ``transform`` replaces ``model.image_transform`` (e.g. a typographic attack); the pixels of
    the images keyed in ``keep_pixels`` are kept in ``EmbeddedSet.pixels``."""
    device = next(model.parameters()).device
    images, texts, ids, labels, keys = [], [], [], [], []
    skipped: dict[str, dict[str, int]] = {}
    pixels: dict[str, torch.Tensor] = {}
    n = 0
    loader = _loader(pattern, transform or model.image_transform, batch_size, "first", workers)
    for batch in loader:
        for reason, shards in batch["skip_shards"].items():
            for shard, count in shards.items():
                skipped.setdefault(reason, {})[shard] = (
                    skipped.get(reason, {}).get(shard, 0) + count
                )
        images.append(model.encode_image(batch["image"].to(device)).float().cpu())
        labels.append(batch["label"])
        keys.extend(batch["key"])
        for i, key in enumerate(batch["key"]):
            if keep_pixels and key in keep_pixels:
                pixels[key] = batch["image"][i]
        if progress is not None:
            progress(len(batch["key"]))
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
        text_emb = encode_texts(model, texts, batch_size)
    image = torch.cat(images)
    label = torch.cat(labels).long()
    if max_examples is not None:
        image, label, keys = image[:max_examples], label[:max_examples], keys[:max_examples]
        keep = [j for j, i in enumerate(ids) if i < max_examples]
        text_emb, texts, ids = text_emb[keep], [texts[j] for j in keep], [ids[j] for j in keep]
    ids_t = torch.tensor(ids, dtype=torch.long)
    out = EmbeddedSet(image, text_emb, ids_t, label, texts, keys, skipped)
    out.pixels = pixels
    return out


@torch.no_grad()
def embed_files(
    model,
    paths: list[Path],
    keys: list[str],
    *,
    transform=None,
    batch_size: int = 256,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    keep_pixels: set[str] | None = None,
) -> tuple[torch.Tensor, list[int], dict[str, int], dict[str, torch.Tensor]]:
    """Embeds image files, decoded in ``workers`` DataLoader processes: ``(embeddings of the
    readable ones, their indices, {index: skip reason} of the others, {key: pixels} for keys in
    keep_pixels)``. The one pass over image files: evaluation sets, ``clippo search`` and
    ``clippo embed`` call it."""
    device = next(model.parameters()).device
    dataset = ImageFiles(paths, keys, transform or model.image_transform)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_image_files,
        pin_memory=device.type == "cuda",
    )
    chunks, kept, skipped, pixels = [], [], {}, {}
    for batch in loader:
        skipped.update(batch["skipped"])
        if batch["image"] is not None:
            chunks.append(model.encode_image(batch["image"].to(device)).float().cpu())
            kept.extend(batch["index"].tolist())
            for row, i in enumerate(batch["index"].tolist()):
                if keep_pixels and keys[i] in keep_pixels:
                    pixels[keys[i]] = batch["image"][row]
        if progress is not None:
            progress(len(batch["index"]) + len(batch["skipped"]))
    if not chunks:
        reasons = dict(Counter(skipped.values()))
        raise ValueError(f"no readable image among {len(paths)} files (skipped: {reasons})")
    return torch.cat(chunks), kept, skipped, pixels


def embed_labelled_images(
    model,
    data: LabelledImages,
    *,
    batch_size: int = 256,
    workers: int = 0,
    transform=None,
    progress: Callable[[int], None] | None = None,
    keep_pixels: set[str] | None = None,
) -> EmbeddedSet:
    """Embeds a labelled image set (``clippo.data.benchmarks``: ImageNet, class folders); no
    texts. Unreadable images are skipped and counted."""
    keys = data.keys
    image, kept, skipped, pixels = embed_files(
        model,
        data.paths,
        keys,
        transform=transform,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        keep_pixels=keep_pixels,
    )
    out = EmbeddedSet(
        image=image,
        text=torch.zeros(0, image.shape[1]),
        text_image_ids=torch.zeros(0, dtype=torch.long),
        labels=torch.tensor([data.labels[i] for i in kept], dtype=torch.long),
        texts=[],
        keys=[keys[i] for i in kept],
        skipped={r: {"images": n} for r, n in Counter(skipped.values()).items()},
        classnames=data.classnames,
        class_ids=data.class_ids,
    )
    out.pixels = pixels
    return out


def embed_caption_set(
    model,
    root: str | os.PathLike | CaptionSet,
    *,
    batch_size: int = 256,
    with_texts: bool = True,
    captions: str = "all",
    workers: int = 0,
    transform=None,
    progress: Callable[[int], None] | None = None,
    keep_pixels: set[str] | None = None,
) -> EmbeddedSet:
    """Embeds a caption set (``clippo.data.captionsets``: XM3600's layout; or a ``CaptionSet``
    read otherwise, e.g. COCO / Flickr30k): every image, and with ``with_texts`` every caption
    of every language (``captions="first"``: the first per language), each distinct string
    once; ``text_languages`` says each one's language. Images with an ``image/category`` get it
    as their label. An image that cannot be decoded is skipped with its captions and counted."""
    data = root if isinstance(root, CaptionSet) else read_caption_set(root)
    image, kept, skipped_files, pixels = embed_files(
        model,
        data.image_paths,
        data.keys,
        transform=transform,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        keep_pixels=keep_pixels,
    )
    images = [image]
    texts, ids, languages = [], [], []
    if with_texts:
        for row, i in enumerate(kept):
            for lang, fields in sorted(data.captions[i].items()):
                fields = fields if captions == "all" else fields[:1]
                texts.extend(fields)
                ids.extend([row] * len(fields))
                languages.extend([lang] * len(fields))
    text_emb = torch.zeros(0, images[0].shape[1])
    if texts:  # translations often repeat a string (en_GB = en): embedded once
        text_emb = encode_texts(model, texts, batch_size)
    reasons = Counter(skipped_files.values())
    skipped = {r: {CAPTIONS_FILE: n} for r, n in reasons.items()}
    labels = torch.full((len(kept),), -1, dtype=torch.long)
    classnames = None
    if data.categories is not None:
        classnames = sorted({c for c in data.categories if c is not None})
        index = {c: i for i, c in enumerate(classnames)}
        labels = torch.tensor(
            [index.get(data.categories[i], -1) for i in kept], dtype=torch.long
        )  # fmt: skip
    out = EmbeddedSet(
        image=torch.cat(images),
        text=text_emb,
        text_image_ids=torch.tensor(ids, dtype=torch.long),
        labels=labels,
        texts=texts,
        keys=[data.keys[i] for i in kept],
        skipped=skipped,
        text_languages=languages if with_texts else None,
        classnames=classnames,
    )
    out.pixels = pixels
    return out


@torch.no_grad()
def embed_text_pairs(
    model,
    data: TextPairSet,
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> EmbeddedSet:
    """Embeds a text-pair set: its distinct ``text_a`` strings, then every pair's ``text_b``
    (each distinct string once), no images. The first ``pair_pivots`` rows are the
    ``text_a`` strings, the rest the ``text_b`` ones; ``text_languages`` gives each ``text_b``
    row its pair's language ("" where none; "" for the pivots) and ``text_image_ids`` every row
    its ``text_a``'s row."""
    texts = data.pivots + data.queries
    text = encode_texts(model, texts, batch_size)
    if progress is not None:
        progress(len(data))  # the bar counts pairs
    return EmbeddedSet(
        image=torch.zeros(0, text.shape[1]),
        text=text,
        text_image_ids=torch.tensor(list(range(len(data.pivots))) + data.targets),
        labels=torch.zeros(0, dtype=torch.long),
        texts=texts,
        keys=[],
        text_languages=[""] * len(data.pivots) + data.languages,
        pair_pivots=len(data.pivots),
    )


@dataclass
class EvalContext:
    """What an evaluator gets: the model, its set's embeddings and shared helpers."""

    model: nn.Module
    embedded: EmbeddedSet
    batch_size: int
    train_data: str | None  # the run's training shards (the few-shot probe's default source)
    _sets: EvalSets = field(repr=False)
    _set: _Set | None = field(default=None, repr=False)
    fingerprint: str = ""  # the model's state_fingerprint, computed once per evaluation

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings on the CPU in float32 (``encode_texts``: for classifiers built from
        prompts, texts an evaluator draws)."""
        return encode_texts(self.model, texts, self.batch_size)

    def classifier(self, classnames: list[str], templates: list[str]) -> torch.Tensor:
        """The zero-shot classifier of ``classnames`` x ``templates`` (``clippo.prompts``),
        computed once per model state and prompt set (and kept in ``cache_dir`` if set)."""
        return self._sets.cached_classifier(self, classnames, templates)

    def train_embeddings(self, pattern: str, max_examples: int, per_class: int = 0) -> EmbeddedSet:
        """Image embeddings of the first ``max_examples`` of ``pattern`` (shards), or of
        ``per_class`` images per class of a class folder; computed once per model state and
        shared by every set and evaluation that asks."""
        return self._sets.cached_train_embeddings(self.model, pattern, max_examples, per_class)

    def embed_images(
        self, transform, description: str, keep_pixels: set[str] | None = None
    ) -> EmbeddedSet:
        """The set's images embedded again through ``transform`` (a PIL image -> tensor
        callable taking ``key=``, e.g. ``clippo.data.typographic.TypographicAttack``)."""
        return self._sets.embed(
            self.model, self._set, with_texts=False, transform=transform,
            description=description, keep_pixels=keep_pixels,
        )  # fmt: skip


@dataclass
class _Set:
    name: str
    data: str
    every: int
    captions: str
    evaluators: dict[str, Any]
    kind: str = ""  # "" (shards or a caption-set folder) or a benchmark kind
    source: LabelledImages | CaptionSet | TextPairSet | None = None  # read once (files)

    @property
    def needs_texts(self) -> bool:
        return any(getattr(e, "needs_texts", False) for e in self.evaluators.values())


def _open_source(
    s: Any, where: str
) -> tuple[str, LabelledImages | CaptionSet | TextPairSet | None]:
    """The set's kind and its file-based data, read now so a bad layout fails before a run."""
    kind = getattr(s, "kind", "") or ""
    options = dict(getattr(s, "options", None) or {})
    if kind in ("", "shards", "captions", "textpairs") and options:
        raise ConfigError(
            f"{where}.options: only benchmark kinds ({', '.join(KINDS)}) take options"
        )
    if kind == "textpairs":
        return kind, read_text_pair_set(s.data)
    if kind in ("", "shards", "captions"):
        if is_caption_set(s.data):
            return "captions", read_caption_set(s.data)
        if kind == "captions":
            read_caption_set(s.data)  # raises naming the expected layout
        expand_urls(s.data)
        return "shards", None
    if kind not in KINDS:
        raise ConfigError(
            f"{where}.kind: unknown kind {kind!r}; known: shards, captions, textpairs, "
            f"{', '.join(KINDS)}"
        )
    unknown = set(options) - {"classnames", "split"}
    if unknown:
        raise ConfigError(
            f"{where}.options: unknown option(s) {sorted(unknown)} (classnames, split)"
        )
    return kind, read_benchmark(kind, s.data, **options)


class EvalSets:
    """The evaluation sets of a config (``eval.sets``), ready to run.

    ``sets`` maps names to objects with ``data``, ``every``, ``captions``, ``evaluators`` and
    optionally ``kind`` / ``options`` (``clippo.train.config.EvalSetConfig``); ``train_data``
    is the run's training shards. ``cache_dir`` keeps zero-shot classifiers between runs.
    """

    def __init__(
        self,
        sets: dict[str, Any],
        *,
        batch_size: int = 256,
        train_data: str | None = None,
        workers: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.batch_size, self.train_data, self.workers = batch_size, train_data or None, workers
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.sets: dict[str, _Set] = {}
        for name, s in sets.items():
            where = f"eval.sets.{name}"
            if not s.data:
                raise ConfigError(f"{where}.data: a shard pattern of held-out pairs is required")
            # A missing file fails now, not after training.
            kind, source = _open_source(s, where)
            listed = s.evaluators
            if not listed and kind in KINDS:  # a benchmark: its default evaluators
                listed = default_evaluators(kind, s.data)
            evaluators = {
                key: build_evaluator(key, options, f"{where}.evaluators")
                for key, options in listed.items()
            }
            if not evaluators:
                raise ConfigError(f"{where}.evaluators: list at least one evaluator")
            for key, evaluator in evaluators.items():
                pairs = getattr(evaluator, "needs_pairs", False)
                if pairs and kind != "textpairs":
                    raise ConfigError(
                        f"{where}.evaluators.{key}: needs held-out text pairs: set {where}.kind: "
                        f"textpairs and {where}.data to pair shards (`clippo data textpairs`' "
                        "val-*.tar)"
                    )
                if kind == "textpairs" and not pairs:
                    raise ConfigError(
                        f"{where}.evaluators.{key}: a textpairs set has no images; its "
                        "evaluator is bitext"
                    )
                if getattr(evaluator, "needs_languages", False) and kind != "captions":
                    raise ConfigError(
                        f"{where}.evaluators.{key}: needs captions per language: set {where}.data "
                        f"to a folder with {CAPTIONS_FILE} (XM3600's layout, `clippo data "
                        "tuxpaint`), not shards"
                    )
                has_names = (isinstance(source, LabelledImages) and source.classnames) or (
                    isinstance(source, CaptionSet) and source.categories
                )
                if getattr(evaluator, "needs_classnames", False) and not has_names:
                    raise ConfigError(
                        f"{where}.evaluators.{key}.prompts: name a packaged prompt set (e.g. "
                        "openclipart, imagenet): this set has no class names of its own"
                    )
                if getattr(evaluator, "needs_texts", False) and isinstance(source, LabelledImages):
                    raise ConfigError(f"{where}.evaluators.{key}: a {kind} set has no captions")
            for evaluator in evaluators.values():
                check = getattr(evaluator, "check", None)
                if check is not None:
                    check(self, f"{where}.evaluators")
            self.sets[name] = _Set(name, s.data, s.every, s.captions, evaluators, kind, source)
        self.embedded: dict[str, EmbeddedSet] = {}  # each set's latest embeddings
        self._train_cache: dict[tuple, EmbeddedSet] = {}
        self._classifiers: dict[tuple, torch.Tensor] = {}
        self._progress: Progress | None = None

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

    def embed(
        self,
        model: nn.Module,
        s: _Set,
        *,
        with_texts: bool,
        transform=None,
        description: str = "",
        keep_pixels: set[str] | None = None,
    ) -> EmbeddedSet:
        """Embeds set ``s`` (its images through ``transform``, default the model's own)."""
        total = len(s.source) if s.source is not None else None
        tick = self._progress(description or s.name, total) if self._progress else None
        common = dict(
            batch_size=self.batch_size, workers=self.workers, transform=transform,
            progress=tick, keep_pixels=keep_pixels,
        )  # fmt: skip
        if isinstance(s.source, TextPairSet):
            return embed_text_pairs(model, s.source, batch_size=self.batch_size, progress=tick)
        if isinstance(s.source, LabelledImages):
            return embed_labelled_images(model, s.source, **common)
        if isinstance(s.source, CaptionSet):
            return embed_caption_set(
                model, s.source, with_texts=with_texts, captions=s.captions, **common
            )
        return embed_shards(model, s.data, with_texts=with_texts, captions=s.captions, **common)

    @torch.no_grad()
    def run(
        self,
        model: nn.Module,
        step: int = 0,
        final: bool = True,
        *,
        progress: Progress | None = None,
    ) -> dict[str, float]:
        """Every set due at ``step`` (all of them when ``final``): ``{SET/METRIC: value}``.
        ``progress(description, total)`` is called before each embedding pass and returns the
        function that is called with the number of images done after each batch."""
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        self._progress = progress
        fingerprint = ""
        try:
            for s in self.sets.values():
                if not self._due(s, step, final):
                    continue
                embedded = self.embed(model, s, with_texts=s.needs_texts)
                self.embedded[s.name] = embedded
                if embedded.skipped:  # metrics over fewer samples than the shards hold
                    total = sum(n for shards in embedded.skipped.values() for n in shards.values())
                    out[f"{s.name}/skipped"] = total
                fingerprint = fingerprint or state_fingerprint(model)
                ctx = EvalContext(
                    model, embedded, self.batch_size, self.train_data, self, s, fingerprint
                )
                for evaluator in s.evaluators.values():
                    out.update({f"{s.name}/{k}": v for k, v in evaluator(ctx).items()})
        finally:
            model.train(was_training)
            self._progress = None
        return out

    def cached_classifier(
        self, ctx: EvalContext, classnames: list[str], templates: list[str]
    ) -> torch.Tensor:
        """``build_zeroshot_classifier`` keyed by (model state, class names, templates)."""
        digest = hashlib.blake2b(repr((classnames, templates)).encode(), digest_size=8)
        key = (ctx.fingerprint or state_fingerprint(ctx.model), digest.hexdigest())
        if key in self._classifiers:
            return self._classifiers[key]
        path = self.cache_dir / f"classifier-{key[0]}-{key[1]}.pt" if self.cache_dir else None
        if path is not None and path.is_file():
            classifier = torch.load(path, map_location="cpu", weights_only=True)
        else:
            classifier = build_zeroshot_classifier(
                ctx.encode_text, classnames, templates, ctx.batch_size
            )
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp: torch.save(classifier, tmp))
        self._classifiers[key] = classifier
        return classifier

    def cached_train_embeddings(
        self, model: nn.Module, pattern: str, max_examples: int, per_class: int = 0
    ) -> EmbeddedSet:
        """``embed_shards(pattern, max_examples, no texts)``, or ``per_class`` images of each
        class of a class folder; reused for an unchanged model."""
        key = (state_fingerprint(model), pattern, max_examples, per_class)
        if key not in self._train_cache:
            self._train_cache.clear()  # only the current model's embeddings are worth keeping
            if Path(pattern).is_dir():
                data = sample_per_class(read_class_folders(pattern), max(per_class, 1))
                tick = (
                    self._progress(f"few-shot pool {pattern}", len(data))
                    if self._progress
                    else None
                )
                embedded = embed_labelled_images(
                    model, data, batch_size=self.batch_size, workers=self.workers, progress=tick
                )
            else:
                embedded = embed_shards(
                    model,
                    pattern,
                    batch_size=self.batch_size,
                    max_examples=max_examples,
                    with_texts=False,
                    workers=self.workers,
                )
            self._train_cache[key] = embedded
        return self._train_cache[key]

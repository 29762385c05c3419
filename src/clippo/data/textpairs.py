"""Text/text pairs at training time: reading pair shards, batching them, mixing them into image
batches (CLIPPO section 3's co-training). ``clippo.data.build.textpairs`` writes the shards."""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from clippo.data.shards import (
    Sample,
    ShardDataset,
    expand_urls,
    iter_tar_samples,
    skip_entries,
)
from clippo.data.transforms import sample_rng

Pair = tuple[str, str]
_JOIN_STREAM = 3  # sample_rng stream of the pair-joining augmentation


def _pair_records(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[dict]:
    """The JSON of every text-pair sample, in shard order; bad shards raise ValueError."""
    for url in expand_urls(urls):
        for sample in iter_tar_samples(url):
            if "__error__" in sample:
                raise ValueError(f"{url}: unreadable shard ({sample['__message__']})")
            if "json" not in sample:
                continue
            meta = json.loads(sample["json"])
            if isinstance(meta, dict) and "text_a" in meta and "text_b" in meta:
                yield meta


def iter_text_pairs(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[Pair]:
    """``(text_a, text_b)`` from text-pair shards, in shard order; bad shards raise ValueError."""
    for meta in _pair_records(urls):
        yield meta["text_a"], meta["text_b"]


@dataclass
class TextPairSet:
    """Held-out text pairs for bitext retrieval: the distinct ``text_a`` strings (``pivots``)
    and, per pair, its ``text_b`` (``queries``), the row of its ``text_a`` (``targets``) and
    its language (``languages``: the shards' ``lang``, "" where a pair has none). A pivot
    repeated across pairs (one English word, several languages) is one candidate."""

    pivots: list[str]
    queries: list[str]
    targets: list[int]
    languages: list[str]

    def __len__(self) -> int:
        return len(self.queries)


def read_text_pair_set(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> TextPairSet:
    """The pairs of ``urls`` (a ``val-*.tar`` of ``clippo data textpairs``) as a TextPairSet."""
    row_of: dict[str, int] = {}
    queries, targets, languages = [], [], []
    for meta in _pair_records(urls):
        targets.append(row_of.setdefault(meta["text_a"], len(row_of)))
        queries.append(meta["text_b"])
        languages.append(str(meta.get("lang", "")))
    if not queries:
        raise ValueError(f"no text pairs in {urls!r} (samples with text_a and text_b in JSON)")
    return TextPairSet(list(row_of), queries, targets, languages)


# --------------------------------------------------------------------------------------------
# Batches for co-training
# --------------------------------------------------------------------------------------------


class TextPairDataset(ShardDataset):
    """Whole batches of text pairs from pair shards, for ``DataLoader(batch_size=None)``.

    Shards are read, shuffled, split over ranks and workers, and resumed (``start_batch``)
    exactly as ``ShardDataset`` reads image shards; the arguments are its own, less the image
    ones. Each batch: ``text_a``, ``text_b``, ``key`` (lists); ``text_a_input``,
    ``text_b_input`` (``text_transform`` of each side, stacked; only with a transform);
    ``skipped`` and ``skip_reasons`` (samples without a valid pair since the previous batch).
    ``leading_spaces`` shifts each side by its own draw.

    ``join_pairs`` (training only): each pair is, with this probability, joined with another
    pair of its batch drawn at random, on both sides and in the same order (drawn too): ``text_a
    = a + " " + a2`` and ``text_b = b + " " + b2``, or the partner first. Words are then also read
    after and before other text, at other places and across other line breaks, as in captions
    that are sentences. A join that a rendering transform would cut (``fits``, after the most
    leading spaces) is not made, so both halves stay visible. The draws depend on (seed, epoch,
    key) and the batch, so a resumed reader joins the same; ``text_a`` and ``text_b`` hold the
    strings as joined.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        batch_size: int,
        text_transform: Callable[[str], Any] | None = None,
        train: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        epoch: int = 0,
        drop_last: bool | None = None,
        infinite: bool | None = None,
        start_batch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        leading_spaces: int = 0,
        join_pairs: float = 0.0,
    ):
        if not isinstance(join_pairs, int | float) or not 0 <= join_pairs <= 1:
            raise ValueError(f"join_pairs must be a probability in [0, 1], got {join_pairs!r}")
        super().__init__(
            urls,
            batch_size=batch_size,
            image_transform=None,
            text_transform=text_transform,
            train=train,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            epoch=epoch,
            drop_last=drop_last,
            infinite=infinite,
            start_batch=start_batch,
            rank=rank,
            world_size=world_size,
            leading_spaces=leading_spaces,
        )
        self.join_pairs = float(join_pairs) if train else 0.0

    def _check(self, sample: Sample) -> str | Pair:
        if "__error__" in sample:
            return sample["__error__"]
        try:
            meta = json.loads(sample["json"]) if "json" in sample else None
        except (ValueError, UnicodeDecodeError):
            return "bad_json"
        a = meta.get("text_a") if isinstance(meta, dict) else None
        b = meta.get("text_b") if isinstance(meta, dict) else None
        if not (isinstance(a, str) and a.strip() and isinstance(b, str) and b.strip()):
            return "no_pair"
        return a, b

    def _decode(self, sample: Sample, text_a: str, text_b: str, epoch: int) -> Sample:
        # Drawn in _collate: joining needs the batch.
        return {"text_a": text_a, "text_b": text_b, "key": sample["__key__"], "epoch": epoch}

    def _joined(self, examples: list[Sample]) -> list[Sample]:
        """``examples`` with the pairs that ``join_pairs`` draws joined to a partner."""
        n = len(examples)
        drawn = {}  # example -> its joined (text_a, text_b)
        for i, e in enumerate(examples):
            rng = sample_rng(self.seed, e["epoch"], e["key"], _JOIN_STREAM)
            if n < 2 or rng.random() >= self.join_pairs:
                continue
            partner = examples[(i + 1 + int(rng.integers(n - 1))) % n]
            first = rng.integers(2) == 0  # this pair before its partner
            drawn[i] = tuple(
                f"{e[k]} {partner[k]}" if first else f"{partner[k]} {e[k]}"
                for k in ("text_a", "text_b")
            )
        fits = getattr(self.text_transform, "fits", None)
        if fits is not None and drawn:  # both sides visible after the most leading spaces
            pad = " " * self.leading_spaces
            ok = fits([pad + t for pair in drawn.values() for t in pair]).reshape(-1, 2).all(1)
            drawn = {i: pair for (i, pair), keep in zip(drawn.items(), ok, strict=True) if keep}
        return [
            {**e, "text_a": drawn[i][0], "text_b": drawn[i][1]} if i in drawn else e
            for i, e in enumerate(examples)
        ]

    def _collate(self, examples: list[Sample], skips: Counter) -> dict[str, Any]:
        if self.join_pairs:
            examples = self._joined(examples)
        batch: dict[str, Any] = {k: [e[k] for e in examples] for k in ("text_a", "text_b", "key")}
        if self.text_transform is not None:  # the whole batch in one call: a, b, a, b, ...
            texts = []
            for e in examples:
                texts += self._spaced([e["text_a"], e["text_b"]], e["epoch"], e["key"])
            inputs = np.asarray(self.text_transform(texts))
            batch["text_a_input"] = torch.from_numpy(np.ascontiguousarray(inputs[0::2]))
            batch["text_b_input"] = torch.from_numpy(np.ascontiguousarray(inputs[1::2]))
        batch.update(skip_entries(skips))
        return batch


class MixedBatchDataset(IterableDataset):
    """CLIPPO's co-training batches: each image/alt-text batch joined by a batch of text pairs.

    A batch is the image batch's dict plus the pair batch's entries prefixed with ``pair_``
    (``pair_text_a``, ``pair_text_a_input``, ``pair_skipped``, ...). Both readers run in the
    same DataLoader worker and count batches alike, so with one ``start_batch`` the pair stream
    resumes exactly where the image stream does. ``images=None``: batches of text pairs only.
    """

    def __init__(self, images: ShardDataset | None, pairs: TextPairDataset):
        if images is not None and images.start_batch != pairs.start_batch:
            raise ValueError(
                f"image and pair readers must resume at the same batch, got "
                f"{images.start_batch} and {pairs.start_batch}"
            )
        self.images, self.pairs = images, pairs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Text pairs only (text_pair_fraction 1): every image batch is empty.
        images = itertools.repeat({}) if self.images is None else self.images
        for image_batch, pair_batch in zip(images, self.pairs, strict=False):
            yield {**image_batch, **{f"pair_{k}": v for k, v in pair_batch.items()}}

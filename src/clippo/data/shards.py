"""Webdataset tar shards (img2dataset layout) -> whole, collated batches, resumable exactly.

A shard holds samples as consecutive tar members sharing a key: ``KEY.jpg|jpeg|png|webp`` with
``KEY.txt`` and/or ``KEY.json`` holding alt-texts (``"texts"``, or ``"title"``,
``"description"``, ``"keywords"``, ``"caption"``) and optionally ``"label"`` (or ``KEY.cls``).

The reading order is a pure function of (shards, seed, epoch, rank, worker): shards are
shuffled per epoch, split across ranks and DataLoader workers, and raw (undecoded) samples pass
through a seeded shuffle buffer before decoding. Resuming after N batches therefore only
advances the raw stream, without decoding anything.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from clippo.data.transforms import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    ImageTransform,
    load_image,
    open_image,
    sample_rng,
)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
# A tar member above this is skipped unread: a small .tar.gz can declare gigabytes.
DEFAULT_MAX_MEMBER_BYTES = 64 * 2**20
TEXT_SAMPLING = ("random", "first", "all")
# Stream ids for sample_rng: the text choice must not correlate with the image augmentation.
_TEXT_STREAM = 1
_SPACES_STREAM = 2  # the leading-spaces augmentation of rendered training texts

Sample = dict[str, Any]


def _expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        lo, hi = span.groups()
        width = len(lo) if len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [out for item in items for out in _expand_braces(head + item + tail)]


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    """Writes ``(name, bytes)`` members as a tar shard, atomically and byte-reproducibly."""
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            # Fixed metadata makes the shard bytes a function of the inputs only.
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)


def write_split_shards(
    out_dir: str | os.PathLike,
    splits: dict[str, Sequence[int]],
    members: Callable[[str, int], list[tuple[str, bytes]]],
    *,
    shard_size: int,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Writes each split's examples as ``SPLIT-000000.tar`` ... of ``shard_size`` examples.

    ``members(split, i)`` gives example ``i``'s tar members. Stale ``SPLIT-*.tar`` and
    ``stats.json`` are removed first, so a folder holding ``stats.json`` is a finished build (the
    caller writes it last). Returns ``{"SPLIT_pattern": brace pattern, "shards": {split: names}}``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").unlink(missing_ok=True)
    for split in splits:
        for stale in out_dir.glob(f"{split}-*.tar"):
            stale.unlink()
    names: dict[str, list[str]] = {}
    for split, indices in splits.items():
        names[split] = []
        for s, first in enumerate(range(0, len(indices), shard_size)):
            chunk = indices[first : first + shard_size]
            name = f"{split}-{s:06d}.tar"
            write_shard(out_dir / name, [m for i in chunk for m in members(split, i)])
            names[split].append(name)
            if progress is not None:
                progress(len(chunk))
    patterns = {f"{split}_pattern": shard_pattern(split, len(n)) for split, n in names.items()}
    return {**patterns, "shards": names}


def shard_pattern(prefix: str, count: int) -> str | None:
    """The brace pattern naming ``count`` shards ``PREFIX-000000.tar`` ...; None when empty."""
    if count <= 1:
        return f"{prefix}-000000.tar" if count else None
    return f"{prefix}-{{000000..{count - 1:06d}}}.tar"


def expand_urls(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from a brace pattern, a glob, a directory (its ``*.tar``), or a list of them.

    Several patterns may also be joined with ``::`` (webdataset's convention). Raises
    FileNotFoundError naming what matched nothing or does not exist.
    """
    if isinstance(urls, str | os.PathLike):
        items = str(urls).split("::")
    else:
        items = [str(u) for u in urls]
    if not items or items == [""]:
        raise FileNotFoundError("no shard paths given")
    out: list[str] = []
    missing: list[str] = []
    for item in items:
        for path in _expand_braces(item):
            if glob.has_magic(path):
                found = sorted(glob.glob(path))
                if not found:
                    raise FileNotFoundError(f"no shards match {path!r}")
                out.extend(found)
            elif os.path.isdir(path):
                found = sorted(
                    str(p) for p in Path(path).iterdir() if p.name.endswith((".tar", ".tar.gz"))
                )
                if not found:
                    raise FileNotFoundError(f"no .tar shards in directory {path!r}")
                out.extend(found)
            elif os.path.isfile(path):
                out.append(path)
            else:
                missing.append(path)
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not found, e.g. {missing[:3]}")
    return out


def iter_tar_samples(
    path: str, max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES
) -> Iterator[Sample]:
    """Raw samples of one shard: {"__key__", "__url__", ext: bytes, ...} per group of members.

    Like webdataset, the key is the member path up to the first dot of its file name. A shard
    that is unreadable or truncated ends with one {"__error__": "bad_shard"} item instead of
    raising, so a long run survives one bad file. A member larger than ``max_member_bytes``
    (None: no limit) is never read: its sample gets ``"__error__": "member_too_large"``.
    """
    current: Sample | None = None
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                dirname, _, name = member.name.rpartition("/")
                stem, dot, ext = name.partition(".")
                if not dot or not stem:
                    continue
                key = f"{dirname}/{stem}" if dirname else stem
                too_large = max_member_bytes is not None and member.size > max_member_bytes
                data = None if too_large else tar.extractfile(member).read()
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": path}
                if too_large:
                    current["__error__"] = "member_too_large"
                    current["__message__"] = (
                        f"{path}: {member.name} is {member.size} bytes, over the "
                        f"max_member_bytes={max_member_bytes}"
                    )
                else:
                    current[ext.lower()] = data
            # tarfile takes a missing end-of-archive marker (two zero blocks) for the end:
            # an uncompressed shard cut between members would otherwise pass as complete.
            if path.endswith(".tar") and os.path.getsize(path) - tar.offset < 1024:
                raise tarfile.ReadError("no end-of-archive marker: the shard is truncated")
    except (tarfile.TarError, OSError, EOFError) as e:
        # The sample being read when the shard broke may be incomplete: drop it.
        yield {"__key__": path, "__url__": path, "__error__": "bad_shard", "__message__": str(e)}
        return
    if current is not None:
        yield current


def sample_texts(sample: Sample) -> list[str]:
    """The non-empty alt-text fields of a raw sample, in order, without duplicates.

    JSON ``"texts"`` wins when present; otherwise ``title``, ``description``, ``keywords``
    (joined with ", ") and ``caption``; then ``KEY.txt``. Raises ValueError for bad JSON.
    """
    texts: list[Any] = []
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{sample['__key__']}.json is not valid JSON: {e}") from e
        if not isinstance(meta, dict):
            raise ValueError(f"{sample['__key__']}.json is not a JSON object")
        if isinstance(meta.get("texts"), list):
            texts.extend(meta["texts"])
        else:
            keywords = meta.get("keywords")
            if isinstance(keywords, list):
                keywords = ", ".join(str(k) for k in keywords if k)
            texts.extend([meta.get("title"), meta.get("description"), keywords])
            texts.append(meta.get("caption"))
    if "txt" in sample:
        texts.append(sample["txt"].decode("utf-8", errors="replace"))
    out: list[str] = []
    for text in texts:
        if isinstance(text, str) and text.strip() and text.strip() not in out:
            out.append(text.strip())
    return out


def sample_label(sample: Sample) -> int:
    """The integer class label from ``KEY.json`` ("label") or ``KEY.cls``; -1 when absent."""
    if "json" in sample:
        meta = json.loads(sample["json"])
        label = meta.get("label") if isinstance(meta, dict) else None
        if isinstance(label, int) and not isinstance(label, bool):
            return label
    if "cls" in sample:
        try:
            return int(sample["cls"].decode().strip())
        except ValueError:
            return -1
    return -1


def _image_entry(sample: Sample) -> tuple[str, bytes] | None:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext, sample[ext]
    return None


def looks_truncated(data: bytes) -> bool:
    """Whether JPEG, PNG or WebP bytes end early; checked from raw bytes so that resuming
    (which never decodes) skips the same samples."""
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-1024:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    if data[:4] == b"RIFF":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    return False


def _shard_name(sample: Sample) -> str:
    return os.path.basename(str(sample.get("__url__", "?")))


def _names(urls: Sequence[str], most: int = 3) -> str:
    names = [os.path.basename(u) for u in urls[:most]]
    return ", ".join(names) + (f", ... ({len(urls)} in all)" if len(urls) > most else "")


def skip_entries(skips: Counter) -> dict[str, Any]:
    """A batch's skip report from counts keyed by (reason, shard name): ``skipped`` (total),
    ``skip_reasons`` ({reason: n}) and ``skip_shards`` ({reason: {shard: n}})."""
    reasons: Counter = Counter()
    shards: dict[str, dict[str, int]] = {}
    for (reason, shard), n in skips.items():
        reasons[reason] += n
        shards.setdefault(reason, {})[shard] = shards.get(reason, {}).get(shard, 0) + n
    return {"skipped": sum(reasons.values()), "skip_reasons": dict(reasons), "skip_shards": shards}


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        rank = 0 if rank is None else rank
        world_size = 1 if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


def stack_inputs(items: list[Any]) -> torch.Tensor:
    """Stacks per-example arrays into one batch tensor (numpy, one thread)."""
    # numpy copies on one thread; torch.stack's intra-op threads stall for seconds when
    # DataLoader workers and the training step already occupy every core.
    return torch.from_numpy(np.stack([np.asarray(x) for x in items]))


class ShardDataset(IterableDataset):
    """Whole batches from webdataset shards; use with ``DataLoader(dataset, batch_size=None)``.

    Each batch is a dict: ``image`` (B, 3, H, W) float in [-1, 1]; ``text`` (B strings: one
    field sampled per example and step, or the first field); ``texts`` (every field, per
    example); ``text_input`` (``text_transform`` of ``text``, stacked; only with a transform);
    ``label`` int64 (B,), -1 where absent; ``key``; ``skipped`` (samples this worker dropped
    since its previous batch) and ``skip_reasons`` (the same, by reason).

    Training (``train=True``) loops over epochs forever, reshuffling shards and samples per
    epoch; evaluation is one ordered pass that keeps the last partial batch. ``start_batch`` is
    how many batches this rank already consumed from a loader with the same number of workers:
    the new loader then continues exactly where that one stopped. That holds because samples
    are dropped on checks of their raw bytes (missing image or text, bad JSON, unreadable
    header, truncated file, a tar member over ``max_member_bytes``, which is never read); an
    image that passes them yet fails to decode (rare) shifts that worker's later batches by one
    sample after a resume. ``text_sampling`` defaults to "random" for training and "first" (the
    title, for openclipart) for evaluation. ``leading_spaces`` (training only): each text goes
    to ``text_transform`` after 0..``leading_spaces`` spaces (uniform, drawn per seed, epoch
    and key), so a rendered text sits at another place on the canvas and breaks its lines
    elsewhere; ``text`` keeps the string as read.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        batch_size: int,
        image_transform: Callable[..., torch.Tensor],
        text_transform: Callable[[str], Any] | None = None,
        train: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        epoch: int = 0,
        drop_last: bool | None = None,
        infinite: bool | None = None,
        text_sampling: str | None = None,
        start_batch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_member_bytes: int | None = DEFAULT_MAX_MEMBER_BYTES,
        leading_spaces: int = 0,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(leading_spaces, int) or leading_spaces < 0:
            raise ValueError(f"leading_spaces must be an int >= 0, got {leading_spaces!r}")
        text_sampling = text_sampling or ("random" if train else "first")
        if text_sampling not in TEXT_SAMPLING:
            raise ValueError(f"text_sampling must be one of {TEXT_SAMPLING}, got {text_sampling!r}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.urls = expand_urls(urls)
        self.batch_size = batch_size
        self.image_transform, self.text_transform = image_transform, text_transform
        self.train, self.seed, self.epoch = train, seed, epoch
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.drop_last = train if drop_last is None else drop_last
        self.infinite = train if infinite is None else infinite
        self.text_sampling, self.start_batch = text_sampling, start_batch
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.max_pixels, self.max_member_bytes = max_pixels, max_member_bytes
        self.leading_spaces = leading_spaces if train else 0

    # -- the raw stream -------------------------------------------------------------------

    def _read_shard(self, url: str) -> Iterator[Sample]:
        """The raw samples of one shard, in order (``InMemoryShardDataset`` keeps them)."""
        return iter_tar_samples(url, self.max_member_bytes)

    def _raw_epoch(self, epoch: int, part: int, parts: int) -> Iterator[Sample]:
        shards = list(self.urls)
        if self.train:
            order = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch]).permutation(len(shards))
            shards = [shards[i] for i in order]
        if len(shards) >= parts:
            for url in shards[part::parts]:
                yield from self._read_shard(url)
        else:
            # Too few shards for every reader to own one: all read all, each keeps every
            # parts-th sample, so none is seen twice per epoch.
            index = 0
            for url in shards:
                for sample in self._read_shard(url):
                    if index % parts == part:
                        yield sample
                    index += 1

    def _shuffled(self, samples: Iterable[Sample], rng: np.random.Generator) -> Iterator[Sample]:
        buffer: list[Sample] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def _raw_stream(self, part: int, parts: int) -> Iterator[tuple[int, Sample]]:
        epoch = self.epoch
        while True:
            samples = self._raw_epoch(epoch, part, parts)
            if self.shuffle_buffer > 1:
                rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, part])
                samples = self._shuffled(samples, rng)
            count = 0
            for sample in samples:
                count += 1
                yield epoch, sample
            if not self.infinite:
                return
            if count == 0:
                raise RuntimeError(
                    f"reader {part} of {parts} (rank {self.rank}) got no samples from "
                    f"{len(self.urls)} shard(s) ({_names(self.urls)}): use fewer workers or "
                    "more data"
                )
            epoch += 1

    # -- per sample -----------------------------------------------------------------------

    def _check(self, sample: Sample) -> str | tuple[list[str], int]:
        """A skip reason, or (texts, label); decides from raw bytes so resuming agrees."""
        if "__error__" in sample:
            return sample["__error__"]
        entry = _image_entry(sample)
        if entry is None:
            return "no_image"
        try:
            texts, label = sample_texts(sample), sample_label(sample)
        except ValueError:
            return "bad_json"
        if not texts:
            return "no_text"
        if looks_truncated(entry[1]):
            return "broken"
        try:
            open_image(entry[1], max_pixels=self.max_pixels, name=sample["__key__"])
        except BadImageError as e:
            return e.reason
        return texts, label

    def _pick_text(self, texts: list[str], epoch: int, key: str) -> str:
        if self.text_sampling != "random" or len(texts) == 1:
            return texts[0]
        rng = sample_rng(self.seed, epoch, key, _TEXT_STREAM)
        return texts[int(rng.integers(len(texts)))]

    def _spaced(self, texts: list[str], epoch: int, key: str) -> list[str]:
        """One example's ``texts`` as ``text_transform`` reads them: each after its own number
        of leading spaces (``leading_spaces``; unchanged when 0)."""
        if not self.leading_spaces:
            return texts
        rng = sample_rng(self.seed, epoch, key, _SPACES_STREAM)
        spaces = rng.integers(0, self.leading_spaces + 1, size=len(texts))
        return [" " * int(n) + text for n, text in zip(spaces, texts, strict=True)]

    def _decoded(self, sample: Sample) -> Image.Image:
        """The RGB image of a sample that passed ``_check``; ``BadImageError`` if it does not
        decode. JPEGs decode at reduced scale (draft) down to the transform's size."""
        return load_image(
            _image_entry(sample)[1],
            max_pixels=self.max_pixels,
            draft_size=getattr(self.image_transform, "size", None),
            name=sample["__key__"],
        )

    def _image(self, sample: Sample, epoch: int) -> torch.Tensor:
        """The ``image`` entry of one example: the decoded, transformed pixels (a subclass may
        look up something else by key, e.g. cached image-tower features)."""
        key = sample["__key__"]
        image = self._decoded(sample)
        if isinstance(self.image_transform, ImageTransform):
            return self.image_transform(image, key=key, epoch=epoch)
        return self.image_transform(image)

    def _decode(self, sample: Sample, texts: list[str], label: int, epoch: int) -> Sample:
        key = sample["__key__"]
        pixels = self._image(sample, epoch)
        text = self._pick_text(texts, epoch, key)
        out = {"image": pixels, "text": text, "texts": texts, "label": label, "key": key}
        if self.text_transform is not None:
            out["text_input"] = self.text_transform(self._spaced([text], epoch, key)[0])
        return out

    def _collate(self, examples: list[Sample], skips: Counter) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "image": stack_inputs([e["image"] for e in examples]),
            "text": [e["text"] for e in examples],
            "texts": [e["texts"] for e in examples],
            "label": torch.tensor([e["label"] for e in examples], dtype=torch.int64),
            "key": [e["key"] for e in examples],
            **skip_entries(skips),
        }
        if self.text_transform is not None:
            batch["text_input"] = stack_inputs([e["text_input"] for e in examples])
        return batch

    # -- batches --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, slot = (info.num_workers, info.id) if info is not None else (1, 0)
        # DataLoader hands out batches round robin from worker 0, so after start_batch
        # batches this slot continues the stream of the worker whose turn comes next.
        worker = (slot + self.start_batch) % workers
        to_skip = len(range(worker, self.start_batch, workers))
        part, parts = self.rank * workers + worker, self.world_size * workers

        examples: list[Sample] = []
        skips: Counter = Counter()
        skipped_slots, last_usable_epoch = 0, self.epoch - 1
        for epoch, sample in self._raw_stream(part, parts):
            if epoch > last_usable_epoch + 1:
                raise RuntimeError(
                    f"reader {part} of {parts} (rank {self.rank}) found no usable sample in a "
                    f"whole epoch of {_names(self.urls)}; skipped so far: "
                    f"{skip_entries(skips)['skip_shards']}"
                )
            checked = self._check(sample)
            if isinstance(checked, str):
                if not to_skip:
                    skips[checked, _shard_name(sample)] += 1
                continue
            last_usable_epoch = epoch
            if to_skip:
                skipped_slots += 1
                if skipped_slots == self.batch_size:
                    to_skip, skipped_slots = to_skip - 1, 0
                continue
            try:
                examples.append(self._decode(sample, *checked, epoch))
            except BadImageError as e:
                skips[e.reason, _shard_name(sample)] += 1
                continue
            if len(examples) == self.batch_size:
                yield self._collate(examples, skips)
                examples, skips = [], Counter()
        if examples and not self.drop_last:
            yield self._collate(examples, skips)


class InMemoryShardDataset(ShardDataset):
    """``ShardDataset`` over a data set small enough for memory: every shard is read and every
    image decoded once, on construction, into one uint8 array; then each epoch's augmentation
    and text rendering start from memory, with no tar reading or image decoding.

    The batches are the streaming reader's, sample for sample: the same order (a function of
    the same raw stream), the same checks and skip counts (decided once, from the same raw
    bytes), the same decoded pixels (JPEG draft at the transform's size) and the same
    per-(seed, epoch, key) augmentation and text choice; ``start_batch`` resumes either's
    position. The array is built in the process that constructs the dataset, so DataLoader
    workers forked from it share its pages. Memory: the decoded images (3 bytes a pixel) and
    each sample's alt-texts.
    """

    def __init__(self, urls: str | os.PathLike | Sequence[str | os.PathLike], **kwargs: Any):
        super().__init__(urls, **kwargs)
        self._shards: dict[str, list[Sample]] = {}
        images: list[np.ndarray] = []
        for url in self.urls:
            kept = []
            for raw in super()._read_shard(url):
                sample = {k: raw[k] for k in ("__key__", "__url__")}
                sample["__checked__"] = checked = super()._check(raw)
                if not isinstance(checked, str):
                    try:
                        images.append(np.asarray(super()._decoded(raw)))
                        sample["__image__"] = len(images) - 1
                    except BadImageError as e:  # skipped when drawn, as streaming skips it
                        sample["__bad_image__"] = (str(e), e.reason)
                kept.append(sample)
            self._shards[url] = kept
        self._shapes = [image.shape for image in images]
        self._offsets = np.cumsum([0] + [image.size for image in images])
        self._pixels = (
            np.concatenate([image.reshape(-1) for image in images])
            if images
            else np.zeros(0, np.uint8)
        )

    @property
    def nbytes(self) -> int:
        """Bytes of decoded pixels held in memory."""
        return self._pixels.nbytes

    def _read_shard(self, url: str) -> Iterator[Sample]:
        return iter(self._shards[url])

    def _check(self, sample: Sample) -> str | tuple[list[str], int]:
        return sample["__checked__"]

    def _decoded(self, sample: Sample) -> Image.Image:
        if "__bad_image__" in sample:
            raise BadImageError(*sample["__bad_image__"])
        i = sample["__image__"]
        pixels = self._pixels[self._offsets[i] : self._offsets[i + 1]]
        return Image.fromarray(pixels.reshape(self._shapes[i]))

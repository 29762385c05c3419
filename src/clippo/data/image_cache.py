"""Pre-computed features of a frozen encoder on disk (LiT paper, appendix E; CLIP-ViL's grid).

A locked image tower without random augmentation maps an image to the same features in every
epoch, so they are computed once and training reads them instead of decoding and embedding the
image again. A cache is one directory per tower identity, ``DIR/<tower_id>/``:

    features.npy   (N, ...) float32, one row per input: LiT's pooled (N, D) image features,
                   or the VQA grid protocol's (N, L, D) grid tokens of each distinct image
                   or text tokens of each distinct question
    mask.npy       (N, L) bool, only for token rows with padding (True: a real token)
    keys.json      the row names: ``"<shard file name>/<sample key>"`` (LiT), an image's
                   content hash or a question's text (VQA grid, ``clippo.data.vqa``)
    meta.json      tower_id, the shard file names, N, the row shape and D (its last size),
                   and what the builder adds (image_size); written last, so a cache without
                   it is incomplete and is rebuilt

The identity is chosen by the caller (``clippo.models.lit.LiT.image_tower_id`` and
``clippo.models.vqa_grid.VQAGridModel.image_cache_id`` hash the tower's weights and input
size), so a changed tower never reads stale features.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.atomic import atomic_write, atomic_write_text
from clippo.data.shards import Sample, ShardDataset, expand_urls
from clippo.data.transforms import ImageTransform

_FILES = ("features.npy", "keys.json", "meta.json")


def cache_row_name(url: str, key: str) -> str:
    """The name of a sample's row: its shard's file name and its key (keys repeat across
    shards in some data sets)."""
    return f"{os.path.basename(url)}/{key}"


class ImageFeatureCache:
    """Read side of a cache directory: ``cache[url, key]`` (a shard sample) or ``cache[name]``
    (a row name) -> the row's float32 features; ``cache.mask(name)`` -> its token mask.

    The feature file is memory-mapped on first use in each process, so the object pickles
    cheaply into DataLoader workers.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta = self.directory / "meta.json"
        if not meta.is_file():
            raise FileNotFoundError(f"{meta} not found: not a complete image-feature cache")
        self.meta: dict[str, Any] = json.loads(meta.read_text())
        self._rows: dict[str, int] | None = None
        self._features: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        """Feature size D (the last size of a row)."""
        return int(self.meta["dim"])

    @property
    def has_mask(self) -> bool:
        """Whether the rows are token sequences with a padding mask."""
        return bool(self.meta.get("mask"))

    def _open(self) -> None:
        names = json.loads((self.directory / "keys.json").read_text())
        self._rows = {name: i for i, name in enumerate(names)}
        self._features = np.load(self.directory / "features.npy", mmap_mode="r")
        if self.has_mask:
            self._masks = np.load(self.directory / "mask.npy", mmap_mode="r")

    def _row(self, key: str | tuple[str, str]) -> int:
        if self._rows is None:
            self._open()
        name = cache_row_name(*key) if isinstance(key, tuple) else key
        row = self._rows.get(name)
        if row is None:
            raise KeyError(
                f"{name!r} is not in the feature cache {self.directory}: the shards changed "
                "since it was built; delete the directory to rebuild it"
            )
        return row

    def __getitem__(self, key: str | tuple[str, str]) -> torch.Tensor:
        row = self._row(key)  # opens the files on first use
        return torch.from_numpy(np.array(self._features[row]))

    def mask(self, key: str | tuple[str, str]) -> torch.Tensor:
        """The row's token mask ``(L,)`` bool (True: a real token); all True without one."""
        row = self._row(key)
        if self._masks is None:
            return torch.ones(self._features.shape[1], dtype=torch.bool)
        return torch.from_numpy(np.array(self._masks[row]))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rows": None, "_features": None, "_masks": None}


def find_feature_cache(
    target: str | os.PathLike, shards: Sequence[str], **settings: Any
) -> ImageFeatureCache | None:
    """The complete cache in ``target`` if it was built over the same shard files (by name)
    with the same ``settings`` (meta entries, e.g. ``image_size``), else None."""
    try:
        cache = ImageFeatureCache(target)
    except FileNotFoundError:
        return None
    names = sorted(os.path.basename(u) for u in shards)
    if sorted(cache.meta["shards"]) != names:
        return None
    if any(cache.meta.get(k) != v for k, v in settings.items()):
        return None
    return cache


def write_feature_cache(
    target: str | os.PathLike,
    keys: Sequence[str],
    features: np.ndarray,
    *,
    tower_id: str,
    shards: Sequence[str],
    mask: np.ndarray | None = None,
    **settings: Any,
) -> ImageFeatureCache:
    """Writes one row per key (``features[i]``, ``mask[i]``) into ``target`` and returns the
    cache; ``meta.json`` (tower_id, the shard file names, ``settings``) is written last."""
    if len(keys) != len(features) or (mask is not None and mask.shape != features.shape[:2]):
        raise ValueError(
            f"{len(keys)} keys, features {features.shape}"
            + ("" if mask is None else f" and mask {mask.shape}")
            + " do not match"
        )
    if len(set(keys)) != len(keys):
        raise ValueError("repeated row names in a feature cache")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten
    features = np.ascontiguousarray(features, np.float32)
    atomic_write(target / "features.npy", lambda p: _save_npy(p, features))
    if mask is not None:
        atomic_write(target / "mask.npy", lambda p: _save_npy(p, np.asarray(mask, bool)))
    atomic_write_text(target / "keys.json", json.dumps(list(keys)))
    meta = {
        "tower_id": tower_id,
        **settings,
        "shards": [os.path.basename(u) for u in shards],
        "count": len(keys),
        "shape": list(features.shape[1:]),
        "dim": int(features.shape[-1]),
        "mask": mask is not None,
    }
    atomic_write_text(target / "meta.json", json.dumps(meta, indent=2))
    return ImageFeatureCache(target)


def build_image_feature_cache(
    urls: str | os.PathLike | Sequence[str | os.PathLike],
    directory: str | os.PathLike,
    embed: Callable[[torch.Tensor], torch.Tensor],
    *,
    tower_id: str,
    image_size: int,
    batch_size: int = 64,
    progress: Callable[[int], Any] | None = None,
) -> ImageFeatureCache:
    """Embeds every usable image of ``urls`` once and writes ``directory/tower_id``.

    ``embed`` maps float images ``(B, 3, S, S)`` in [-1, 1] (``ImageTransform(image_size)``:
    centre crop, no augmentation, exactly as training without augmentation sees them) to
    ``(B, D)`` features. A complete cache of the same shards and size is reused as it is.
    ``progress(n)`` is called after every ``n`` images.
    """
    shards = expand_urls(urls)
    target = Path(directory) / tower_id
    cache = find_feature_cache(target, shards, image_size=image_size)
    if cache is not None:
        return cache

    transform = ImageTransform(image_size, train=False)
    rows: list[np.ndarray] = []
    keys: list[str] = []
    for url in shards:
        # One dataset per shard: the evaluation pass keeps every usable sample, in order.
        dataset = ShardDataset([url], batch_size=batch_size, image_transform=transform, train=False)
        for batch in dataset:
            with torch.no_grad():
                rows.append(embed(batch["image"]).float().cpu().numpy())
            keys.extend(cache_row_name(url, k) for k in batch["key"])
            if progress is not None:
                progress(len(batch["key"]))
    if not rows:
        raise ValueError(f"no usable images in {urls!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{urls!r} holds repeated sample keys within a shard")
    return write_feature_cache(
        target,
        keys,
        np.concatenate(rows),
        tower_id=tower_id,
        shards=shards,
        image_size=image_size,
    )


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a bare path
        np.save(f, array)


class CachedImageShardDataset(ShardDataset):
    """``ShardDataset`` whose ``image`` entries are cached image-tower features ``(B, D)``.

    Samples are read, checked, shuffled and batched exactly as ``ShardDataset`` does (so the same
    seed gives the same batches), but images are never decoded: their features are looked up
    by shard and key.
    """

    def __init__(
        self,
        urls: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        cache: ImageFeatureCache,
        **kwargs,
    ):
        kwargs.setdefault("image_transform", None)  # accepted for a like call; never used
        super().__init__(urls, **kwargs)
        self.cache = cache

    def _image(self, sample: Sample, epoch: int) -> torch.Tensor:
        return self.cache[sample["__url__"], sample["__key__"]]

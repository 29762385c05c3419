"""Pre-computed image-tower features on disk (LiT paper, appendix E).

A locked image tower without random augmentation maps an image to the same features in every
epoch, so they are computed once and training reads them instead of decoding and embedding the
image again. A cache is one directory per tower identity, ``DIR/<tower_id>/``:

    features.npy   (N, D) float32, one row per usable training image
    keys.json      the row names, ``"<shard file name>/<sample key>"``
    meta.json      tower_id, image_size, the shard file names, N and D; written last, so a
                   cache without it is incomplete and is rebuilt

The identity is chosen by the caller (``clippo.models.lit.LiT.image_tower_id`` hashes the
tower's weights and input size), so a changed tower never reads stale features.
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
    """Read side of a cache directory: ``cache[url, key]`` -> the (D,) float32 features.

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

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(self.meta["dim"])

    def _open(self) -> None:
        names = json.loads((self.directory / "keys.json").read_text())
        self._rows = {name: i for i, name in enumerate(names)}
        self._features = np.load(self.directory / "features.npy", mmap_mode="r")

    def __getitem__(self, url_and_key: tuple[str, str]) -> torch.Tensor:
        if self._rows is None:
            self._open()
        name = cache_row_name(*url_and_key)
        row = self._rows.get(name)
        if row is None:
            raise KeyError(
                f"{name} is not in the image-feature cache {self.directory}: the shards changed "
                "since it was built; delete the directory to rebuild it"
            )
        return torch.from_numpy(np.array(self._features[row]))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rows": None, "_features": None}


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
    names = [os.path.basename(u) for u in shards]
    target = Path(directory) / tower_id
    try:
        cache = ImageFeatureCache(target)
        if sorted(cache.meta["shards"]) == sorted(names) and cache.meta["image_size"] == image_size:
            return cache
    except FileNotFoundError:
        pass
    target.mkdir(parents=True, exist_ok=True)
    (target / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten

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
    features = np.concatenate(rows)
    atomic_write(target / "features.npy", lambda p: _save_npy(p, features))
    atomic_write_text(target / "keys.json", json.dumps(keys))
    meta = {
        "tower_id": tower_id,
        "image_size": image_size,
        "shards": names,
        "count": len(keys),
        "dim": int(features.shape[1]),
    }
    atomic_write_text(target / "meta.json", json.dumps(meta, indent=2))
    return ImageFeatureCache(target)


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

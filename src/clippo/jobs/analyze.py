"""Representation analyses of a saved model (``clippo analyze``), each writing its figures and a
JSON of its numbers into one folder.

``analyze_gap``: the modality gap of Liang et al. on held-out image/text pairs, the distances
between matching (and, for contrast, mismatched) pairs and the 2-D PCA picture (paper §4.6 and
C.5, Fig. 5, 10, 11). ``analyze_patches``: the top principal components of every patch
embedding the model has, as tiles, with their explained variance and where their energy lies
in frequency (C.6, Fig. 12). The numbers come from ``clippo.analysis``, the embeddings from
``clippo.eval.sets.embed_shards`` (what every evaluation embeds with), the pictures from
``clippo.eval.plots``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.analysis import (
    frequency_shares,
    mismatched_pair_distances,
    modality_gap,
    pair_distances,
    patch_embedding_pca,
    pca_2d,
)
from clippo.atomic import atomic_write_text
from clippo.data import expand_urls
from clippo.eval.plots import plot_modality_gap, plot_pair_distances, plot_patch_components
from clippo.eval.sets import embed_shards
from clippo.models import CLIPPO, LiT, ViT, from_pretrained
from clippo.models.base import ContrastiveModel

GAP_FILES = ("gap_scatter.png", "pair_distances.png", "gap.json")


def load_model(model_dir: str | os.PathLike) -> torch.nn.Module:
    """A model directory (``from_pretrained``); a big_vision ``.npz`` is named as such, with
    the command that converts it, instead of failing on a missing ``config.json``."""
    path = Path(model_dir)
    if path.is_file() and path.suffix == ".npz":
        raise ValueError(
            f"{path} is a big_vision checkpoint: convert it first with "
            f"`clippo convert bigvision {path} DIR`, then pass DIR"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model directory")
    return from_pretrained(path)


def _model_name(model_dir: str | os.PathLike) -> str:
    """A short name for titles: a run's ``WORKDIR/model`` is called by its run."""
    path = Path(model_dir).resolve()
    return path.parent.name if path.name == "model" else path.name


def _distance_summary(d) -> dict[str, float]:
    return {"mean": d.mean, "median": d.median, "std": d.std}


def analyze_gap(
    model_dir: str | os.PathLike,
    data: str,
    out: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Embeds the image/text pairs of the shards ``data`` (each image with its first text, at
    most ``limit`` pairs) and writes ``GAP_FILES`` into ``out``; returns what gap.json holds."""
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2 (a mismatched pair needs two), got {limit}")
    expand_urls(data)  # a missing shard fails before the model loads
    model = load_model(model_dir)
    if not isinstance(model, ContrastiveModel):
        raise ValueError(
            f"{model_dir} holds a {type(model).__name__}, which embeds no text: the modality gap "
            "needs an image/text model (clippo, untied, clip, 1t-clip, lit)"
        )
    embedded = embed_shards(
        model, data, batch_size=batch_size, max_examples=limit, captions="first"
    )
    # Row i of `images` and of `texts` belong together (captions="first": one text per image).
    images, texts = embedded.image[embedded.text_image_ids], embedded.text
    if len(texts) < 2:
        raise ValueError(f"{data}: {len(texts)} image/text pair(s); the analysis needs at least 2")
    gap = modality_gap(images, texts)
    matching = pair_distances(images, texts)
    mismatched = mismatched_pair_distances(images, texts, seed=seed)
    image_2d, text_2d, explained = pca_2d(images, texts)
    out = Path(out)
    name = _model_name(model_dir)
    plot_modality_gap(
        image_2d,
        text_2d,
        out / GAP_FILES[0],
        title=f"{name}: modality gap {gap:.3f} ({len(texts)} pairs)",
        explained=explained,
    )
    plot_pair_distances(
        matching.distances,
        mismatched.distances,
        out / GAP_FILES[1],
        title=f"{name}: image/text distances (gap {gap:.3f})",
    )
    skipped = sum(n for shards in embedded.skipped.values() for n in shards.values())
    result = {
        "model": str(model_dir),
        "data": data,
        "pairs": len(texts),
        "modality_gap": gap,
        "pair_distance": _distance_summary(matching),
        "mismatched_pair_distance": _distance_summary(mismatched),
        "pca_explained_variance": [float(r) for r in explained],
        "skipped_samples": skipped,
        "seed": seed,
        "definitions": {
            "modality_gap": "|| mean(L2-normalised image emb.) - mean(L2-normalised text emb.) || "
            "(Liang et al. 2022, sec. 4.2)",
            "pair_distance": "Euclidean distance of the L2-normalised embeddings of an image and "
            "its own text",
            "mismatched_pair_distance": "the same for each image and one other image's text (a "
            "seeded random cycle through the pairs)",
        },
        "files": [str(out / f) for f in GAP_FILES],
    }
    atomic_write_text(out / GAP_FILES[2], json.dumps(result, indent=2) + "\n")
    return result


def patch_kernels(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, str]]:
    """Every patch embedding of ``model``: ``{tower: (kernel (D, C, P, P), what it reads)}``.

    A shared CLIPPO has one (it reads images and rendered text); an untied one (``separate``
    tower or ``separate_embedding``) a second for text; CLIP* and 1T-CLIP embed text as tokens,
    so only the image tower's; LiT each tower that is a ViT.
    """
    found: dict[str, tuple[torch.Tensor, str]] = {}
    if isinstance(model, CLIPPO):
        text_kernel = None
        if model.text is not None:
            text_kernel = model.text.patch_embed.weight
        elif hasattr(model, "text_patch_embed"):
            text_kernel = model.text_patch_embed.weight
        if text_kernel is None:
            found["image"] = (model.image.patch_embed.weight, "images and rendered text (shared)")
        else:
            found["image"] = (model.image.patch_embed.weight, "images")
            found["text"] = (text_kernel, "rendered text")
    elif isinstance(model, LiT):
        if isinstance(model.image, ViT):
            found["image"] = (model.image.patch_embed.weight, "images")
        if isinstance(model.text, ViT):
            found["text"] = (model.text.patch_embed.weight, "rendered text")
    elif isinstance(model, ViT):
        found["image"] = (model.patch_embed.weight, "images")
    elif isinstance(getattr(model, "image", None), ViT):  # CLIP*, 1T-CLIP: text as tokens
        found["image"] = (model.image.patch_embed.weight, "images (text enters as tokens)")
    if not found:
        raise ValueError(f"a {type(model).__name__} has no ViT patch embedding to analyse")
    return found


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def analyze_patches(
    model_dir: str | os.PathLike, out: str | os.PathLike, *, k: int = 30
) -> dict[str, Any]:
    """The top-``k`` principal components of each patch embedding of the model as a tile grid
    (``patches_TOWER.png``) and ``patches.json``: explained variance and frequency shares."""
    model = load_model(model_dir)
    out = Path(out)
    towers: dict[str, Any] = {}
    files = []
    for tower, (kernel, reads) in patch_kernels(model).items():
        tiles, explained = patch_embedding_pca(kernel, k)
        shares = frequency_shares(tiles, weights=explained)
        path = out / f"patches_{tower}.png"
        plot_patch_components(
            tiles,
            path,
            title=f"{_model_name(model_dir)}: top {k} principal components of the {tower} patch "
            f"embedding ({100 * explained.sum():.0f}% of variance)",
            explained=explained,
        )
        files.append(str(path))
        towers[tower] = {
            "reads": reads,
            "kernel_shape": list(kernel.shape),
            "explained_variance": [float(r) for r in explained],
            "explained_variance_total": float(explained.sum()),
            "horizontal_frequency_share": shares.pooled_horizontal,
            "high_frequency_share": shares.pooled_high,
            "per_component": {
                "horizontal_frequency_share": _json_floats(shares.horizontal),
                "high_frequency_share": _json_floats(shares.high),
            },
        }
    result = {
        "model": str(model_dir),
        "k": k,
        "towers": towers,
        "definitions": {
            "components": "principal axes of the kernel's D filters (each a C*P*P vector), "
            "mean-centred; tiles stretched to their own range",
            "horizontal_frequency_share": "share of the components' non-DC 2-D FFT energy with "
            "|f_x| > |f_y| (left-right variation; diagonal counts half), components weighted by "
            "explained variance: 0.5 isotropic, above 0.5 more left-right structure",
            "high_frequency_share": "share of that energy above 0.25 cycles/pixel (radial)",
        },
        "files": [*files, str(out / "patches.json")],
    }
    atomic_write_text(out / "patches.json", json.dumps(result, indent=2) + "\n")
    return result

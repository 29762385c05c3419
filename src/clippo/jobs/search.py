"""Text->image search over a user's folder of images (``clippo search``), and embedding a
folder for later use (``clippo embed``): the model's own evaluation preprocessing, batched,
unreadable files skipped and counted."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clippo.data import BadImageError, ImageTransform, load_image
from clippo.eval.plots import plot_search

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The images of ``folder`` and its sub-folders (by suffix), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


@torch.no_grad()
def embed_image_files(
    model,
    paths: Sequence[Path],
    *,
    batch_size: int = 64,
    progress: Callable[[int], Any] | None = None,
) -> tuple[torch.Tensor, list[Path], dict[str, str]]:
    """``(embeddings, embedded paths, {skipped path: reason})``: L2-normalised image embeddings
    with the preprocessing every clippo evaluation uses (``ImageTransform(train=False)``)."""
    transform = ImageTransform(model.image_size, train=False)
    device = next(model.parameters()).device
    model.eval()
    rows, kept, skipped, batch = [], [], {}, []

    def flush() -> None:
        if batch:
            pixels = torch.stack([x for _, x in batch]).to(device)
            rows.append(model.encode_image(pixels).float().cpu())
            kept.extend(p for p, _ in batch)
            batch.clear()

    for path in paths:
        try:
            image = load_image(path.read_bytes(), draft_size=transform.size, name=str(path))
            batch.append((path, transform(image, key=str(path))))
        except (BadImageError, OSError) as e:
            skipped[str(path)] = getattr(e, "reason", type(e).__name__)
        if len(batch) == batch_size:
            flush()
        if progress is not None:
            progress(1)
    flush()
    if not rows:
        raise ValueError(f"no readable images among {len(paths)} files (skipped: {skipped})")
    return torch.cat(rows), kept, skipped


def top_matches(
    model, queries: Sequence[str], image_embeddings: torch.Tensor, top: int
) -> list[list[tuple[int, float]]]:
    """For every query, the ``top`` (row, cosine similarity) of the images, best first."""
    with torch.no_grad():
        text = model.encode_text(list(queries)).float().cpu()
    scores = text @ image_embeddings.T
    values, rows = scores.topk(min(top, scores.shape[1]), dim=1)
    return [
        list(zip(r.tolist(), v.tolist(), strict=True)) for r, v in zip(rows, values, strict=True)
    ]


def search_folder(
    model,
    folder: str | os.PathLike,
    queries: Sequence[str],
    out: str | os.PathLike,
    *,
    top: int = 6,
    progress: Callable[[int], Any] | None = None,
) -> tuple[Path, list[list[tuple[Path, float]]], dict[str, str]]:
    """Embeds every image of ``folder``, finds the ``top`` images per query and writes the
    contact sheet to ``out``; returns it, the matches and the skipped files."""
    embeddings, kept, skipped = embed_image_files(model, image_files(folder), progress=progress)
    matches = top_matches(model, queries, embeddings, top)
    rows = [
        [(np.asarray(load_image(kept[i].read_bytes())), kept[i].name, None) for i, _ in row]
        for row in matches
    ]
    sheet = plot_search(queries, rows, out)
    return sheet, [[(kept[i], s) for i, s in row] for row in matches], skipped

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

from clippo.atomic import atomic_write
from clippo.data import load_image
from clippo.eval.plots import plot_search
from clippo.eval.sets import embed_files, encode_texts

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


def embed_image_files(
    model,
    paths: Sequence[Path],
    *,
    batch_size: int = 64,
    progress: Callable[[int], Any] | None = None,
) -> tuple[torch.Tensor, list[Path], dict[str, str]]:
    """``(embeddings, embedded paths, {skipped path: reason})``: L2-normalised image embeddings
    with the preprocessing every clippo evaluation uses (``eval.sets.embed_files``)."""
    paths = list(paths)
    model.eval()
    emb, kept, skipped, _ = embed_files(
        model, paths, [str(p) for p in paths], batch_size=batch_size, progress=progress
    )
    return emb, [paths[i] for i in kept], {str(paths[i]): r for i, r in skipped.items()}


def top_matches(
    model, queries: Sequence[str], image_embeddings: torch.Tensor, top: int
) -> list[list[tuple[int, float]]]:
    """For every query, the ``top`` (row, cosine similarity) of the images, best first."""
    with torch.no_grad():
        text = encode_texts(model, list(queries))
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


def embed_folder(
    model,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    texts: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: Callable[[int], Any] | None = None,
) -> tuple[Path, dict[str, int]]:
    """Writes ``out`` (``.npz``): ``image_embeddings`` (N, D) float32 with ``image_paths``
    (relative to ``images``) and ``skipped_paths`` / ``skipped_reasons``, and/or
    ``text_embeddings`` with ``texts``; all rows L2-normalised. Returns the file and counts."""
    if images is None and not texts:
        raise ValueError("nothing to embed: give a folder of images and/or texts")
    arrays: dict[str, np.ndarray] = {}
    counts = {}
    if images is not None:
        root = Path(images)
        emb, kept, skipped = embed_image_files(
            model, image_files(root), batch_size=batch_size, progress=progress
        )
        arrays["image_embeddings"] = emb.numpy().astype(np.float32)
        arrays["image_paths"] = np.array([str(p.relative_to(root)) for p in kept])
        arrays["skipped_paths"] = np.array([str(Path(p).relative_to(root)) for p in skipped])
        arrays["skipped_reasons"] = np.array(list(skipped.values()))
        counts.update(images=len(kept), skipped=len(skipped))
    if texts:
        with torch.no_grad():
            emb = encode_texts(model, list(texts), batch_size)
        arrays["text_embeddings"] = emb.numpy()
        arrays["texts"] = np.array(list(texts))
        counts["texts"] = len(texts)
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"{out}: the output is a .npz file")
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append .npz to a name
            np.savez(f, **arrays)

    atomic_write(out, write)
    return out, counts

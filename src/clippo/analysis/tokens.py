"""Tokenization efficiency: CLIPPO's patch sequence lengths against a tokenizer's (paper §4.5).

CLIPPO's "tokens" are the 16x16 patches of the rendered text image. As in the paper (Fig. 4
and 9), a text's length is the row-major index of the last patch holding a rendered pixel, so
that the comparison does not charge CLIPPO for the padding every method would add.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clippo.render import UnifontRenderer

LengthsFn = Callable[[list[str]], Sequence[int]]

# Texts rendered per call: 256 canvases of 224x224 uint8 are ~13 MB, whatever the list length.
_RENDER_CHUNK = 256


def clippo_sequence_length(
    texts: Sequence[str],
    image_size: int = 224,
    patch_size: int = 16,
    **render_options: Any,
) -> list[int]:
    """Per text, the 1-based row-major index of the last patch with a rendered pixel (0: none)."""
    _check_texts(texts)
    if image_size % patch_size:
        raise ValueError(
            f"image_size {image_size} is not a multiple of patch_size {patch_size}: a ViT "
            "cannot cut it into whole patches"
        )
    renderer = UnifontRenderer(image_size=image_size, **render_options)
    if renderer.foreground == renderer.background:
        raise ValueError(
            f"foreground and background are both {renderer.background}: no text pixel would "
            "ever differ from the background"
        )
    grid = image_size // patch_size
    lengths: list[int] = []
    for start in range(0, len(texts), _RENDER_CHUNK):
        images = renderer(list(texts[start : start + _RENDER_CHUNK]))
        ink = images != renderer.background
        per_patch = ink.reshape(-1, grid, patch_size, grid, patch_size).any(axis=(2, 4))
        per_patch = per_patch.reshape(len(images), grid * grid)
        last = grid * grid - per_patch[:, ::-1].argmax(axis=1)
        lengths.extend(np.where(per_patch.any(axis=1), last, 0).tolist())
    return lengths


def _check_texts(texts: Sequence[str]) -> None:
    """A lone string is a sequence too; measuring it character by character is never meant."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a list of strings, not a single string")


def _pieces(
    texts: Sequence[str], model_path: str | os.PathLike, lower: bool
) -> tuple[list[list[int]], int]:
    """Piece ids per text and the unknown id, through the project's Tokenizer (same lowering)."""
    # Lazy: sentencepiece is an optional dependency, not needed for CLIPPO's own lengths.
    from clippo.tokenizer import Tokenizer

    _check_texts(texts)
    tokenizer = Tokenizer(model_path, lower=lower)
    return [tokenizer.pieces(t) for t in texts], tokenizer.processor.unk_id()


def sentencepiece_lengths(
    texts: Sequence[str], model_path: str | os.PathLike, *, lower: bool = True
) -> list[int]:
    """Per text, the number of SentencePiece pieces (no EOS, no cut, no padding)."""
    return [len(ids) for ids in _pieces(texts, model_path, lower)[0]]


def unknown_piece_rate(
    texts: Sequence[str], model_path: str | os.PathLike, *, lower: bool = True
) -> float:
    """Share of all pieces produced for ``texts`` that are the model's unknown id (0 if none)."""
    pieces, unk = _pieces(texts, model_path, lower)
    total = sum(len(ids) for ids in pieces)
    return sum(ids.count(unk) for ids in pieces) / total if total else 0.0


@dataclass(frozen=True)
class LanguageLengths:
    """One language's sequence-length comparison between CLIPPO and another tokenizer."""

    n_texts: int
    mean_clippo: float
    mean_other: float
    clippo_shorter: float  # share of texts where CLIPPO's sequence is strictly shorter


def compare_lengths(
    texts_by_language: Mapping[str, Sequence[str]],
    clippo_lengths_fn: LengthsFn,
    other_lengths_fn: LengthsFn,
) -> dict[str, LanguageLengths]:
    """Per language: mean CLIPPO length, mean other length, share of texts CLIPPO is shorter.

    E.g. ``compare_lengths(c4, clippo_sequence_length, partial(sentencepiece_lengths,
    model_path="t5.model"))``.
    """
    if not texts_by_language:
        raise ValueError("texts_by_language is empty")
    out = {}
    for language, texts in texts_by_language.items():
        texts = list(texts)
        if not texts:
            raise ValueError(f"language {language!r} has no texts")
        ours = np.asarray(clippo_lengths_fn(texts), np.int64)
        other = np.asarray(other_lengths_fn(texts), np.int64)
        if ours.shape != (len(texts),) or other.shape != (len(texts),):
            raise ValueError(
                f"language {language!r}: {len(texts)} texts but {ours.size} CLIPPO and "
                f"{other.size} other lengths; a lengths function must return one per text"
            )
        out[language] = LanguageLengths(
            n_texts=len(texts),
            mean_clippo=float(ours.mean()),
            mean_other=float(other.mean()),
            clippo_shorter=float((ours < other).mean()),
        )
    return out


def share_of_languages_shorter(
    comparison: Mapping[str, LanguageLengths], threshold: float = 0.75
) -> float:
    """Fraction of languages where CLIPPO is shorter for over ``threshold`` of texts (Fig. 4)."""
    if not comparison:
        raise ValueError("comparison is empty")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    wins = sum(r.clippo_shorter > threshold for r in comparison.values())
    return wins / len(comparison)

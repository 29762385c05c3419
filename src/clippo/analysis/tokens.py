"""Tokenization efficiency: CLIPPO's patch sequence lengths against a tokenizer's (paper §4.5).

CLIPPO's "tokens" are the 16x16 patches of the rendered text image. As in the paper (Fig. 4
and 9), a text's length is the row-major index of the last patch holding a rendered pixel, so
that the comparison does not charge CLIPPO for the padding every method would add.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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


CORPORA = ("tuxpaint", "manuals", "fortunes")


def _spread(texts: list[str], most: int | None) -> list[str]:
    """At most ``most`` texts, evenly spaced over the list (all of them for None)."""
    if most is None or len(texts) <= most:
        return texts
    return [texts[i] for i in np.linspace(0, len(texts) - 1, most).round().astype(int)]


def token_corpora(
    names: Sequence[str] = CORPORA, *, max_texts: int | None = None
) -> dict[str, dict[str, list[str]]]:
    """``{corpus: {language: texts}}`` from the Debian packages on this machine.

    ``tuxpaint``: every stamp description (``tuxpaint-stamps-default``, 78 languages with
    English); ``manuals``: the Debian reference's sentences in each installed language
    (``debian-reference-LANG``); ``fortunes``: the English fortunes, one text per entry.
    ``max_texts`` keeps that many per language, evenly spaced.
    """
    # Lazy: the builders import Pillow and torch, which measuring lengths never needs.
    from clippo.data.build import textpairs, tuxpaint

    unknown = [n for n in names if n not in CORPORA]
    if unknown:
        raise ValueError(f"unknown corpus {unknown}; known: {list(CORPORA)}")
    out: dict[str, dict[str, list[str]]] = {}
    for name in names:
        by_lang: dict[str, list[str]] = {}
        if name == "tuxpaint":
            stamps = sorted(Path(tuxpaint.STAMPS_DIR).rglob("*.txt"))
            if not stamps:
                raise FileNotFoundError(
                    f"no stamp descriptions under {tuxpaint.STAMPS_DIR}: "
                    "apt-get install tuxpaint-stamps-default"
                )
            for path in stamps:
                for lang, text in tuxpaint.read_stamp_descriptions(path).items():
                    by_lang.setdefault(lang, []).append(text)
        elif name == "manuals":
            root = Path(textpairs.DEBIAN_REFERENCE_DIR)
            langs = sorted({p.name.split(".")[1] for p in root.glob("ch01.*.html")})
            if not langs:
                raise FileNotFoundError(
                    f"no manual under {root}: apt-get install debian-reference-en"
                )
            for lang in langs:
                docs = textpairs.debian_manual_documents(lang)
                by_lang[lang] = [s for d in docs for s in d]
        else:
            by_lang["en"] = [
                e for path in textpairs.fortune_files() for e in textpairs.read_fortunes(path)
            ]
        out[name] = {lang: _spread(texts, max_texts) for lang, texts in sorted(by_lang.items())}
    return out


@dataclass(frozen=True)
class TokenizationRow:
    """One language of one corpus against one tokenizer (lengths in tokens per text)."""

    corpus: str
    language: str
    tokenizer: str
    n_texts: int
    mean_clippo: float
    mean_tokens: float
    clippo_shorter: float  # share of texts where CLIPPO's sequence is strictly shorter
    unknown_rate: float  # share of the tokenizer's pieces that are its unknown piece


def tokenization_table(
    corpora: Mapping[str, Mapping[str, Sequence[str]]],
    tokenizers: Mapping[str, str | os.PathLike],
    *,
    image_size: int = 224,
    lower: bool = True,
    **render_options: Any,
) -> list[TokenizationRow]:
    """Per corpus, language and tokenizer: CLIPPO's mean length against the tokenizer's.

    ``tokenizers`` maps a display name to a SentencePiece ``.model``. CLIPPO's lengths are
    rendered once per language (``clippo_sequence_length`` with ``image_size`` and
    ``render_options``); texts longer than the canvas are cut, as the model sees them.
    """
    if not tokenizers:
        raise ValueError("give at least one SentencePiece .model")
    for path in tokenizers.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer {path} not found")
    rows = []
    for corpus, by_lang in corpora.items():
        for language, texts in by_lang.items():
            texts = list(texts)
            ours = clippo_sequence_length(texts, image_size=image_size, **render_options)
            for name, path in tokenizers.items():
                pieces, unk = _pieces(texts, path, lower)
                lengths = [len(ids) for ids in pieces]
                result = compare_lengths(
                    {language: texts}, lambda ts, o=ours: o, lambda ts, n=lengths: n
                )
                total = sum(lengths)
                unknown = sum(ids.count(unk) for ids in pieces) / total if total else 0.0
                r = result[language]
                rows.append(
                    TokenizationRow(
                        corpus,
                        language,
                        name,
                        r.n_texts,
                        r.mean_clippo,
                        r.mean_other,
                        r.clippo_shorter,
                        unknown,
                    )  # fmt: skip
                )
    return rows


def tokenization_summary(
    rows: Sequence[TokenizationRow], threshold: float = 0.75
) -> dict[str, dict[str, float]]:
    """``{corpus: {tokenizer: fraction of languages where CLIPPO is shorter for more than
    threshold of texts}}`` (the paper's Fig. 4 summary)."""
    grouped: dict[tuple[str, str], dict[str, LanguageLengths]] = {}
    for r in rows:
        grouped.setdefault((r.corpus, r.tokenizer), {})[r.language] = LanguageLengths(
            r.n_texts, r.mean_clippo, r.mean_tokens, r.clippo_shorter
        )
    out: dict[str, dict[str, float]] = {}
    for (corpus, tokenizer), comparison in grouped.items():
        out.setdefault(corpus, {})[tokenizer] = share_of_languages_shorter(comparison, threshold)
    return out

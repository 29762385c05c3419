"""Per-language image<->text retrieval (CrossModal-3600's protocol) and bitext retrieval.

Image<->text, per language: recall@k over the images that have a caption in that language,
against that language's captions only, with several captions per image counted as COCO and
big_vision do (``clippo.eval.retrieval``: image->text is a hit when any of its captions ranks
in the top k; text->image counts every caption as a query). ``mean/...`` averages the
languages, each weighing the same, as the paper's XM3600 averages do.

Bitext (text->text), per language L other than the pivot (English): each caption in L queries
the pivot captions of *all* images, and is a hit at k when one of its own image's pivot
captions is among the top k. It measures how well the text side aligns languages, even where
the image side is weak. Ties count as misses, as in ``retrieval_ranks``.

``bitext`` is the same retrieval on held-out text pairs (a ``kind: textpairs`` set, e.g. the
``val-*.tar`` of ``clippo data textpairs``): a development score for co-training recipes that
never reads an evaluation benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from clippo.eval.registry import register
from clippo.eval.retrieval import retrieval_metrics, retrieval_ranks


def _normalise(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x).float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _rows_by_language(languages: Sequence[str]) -> dict[str, list[int]]:
    """The row indices of each language, in order of first appearance."""
    rows: dict[str, list[int]] = {}
    for row, lang in enumerate(languages):
        rows.setdefault(lang, []).append(row)
    return rows


def multilingual_retrieval_metrics(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_image_ids: torch.Tensor,
    text_languages: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    *,
    pivot: str = "en",
    languages: Sequence[str] | None = None,
    bitext: bool = True,
) -> dict[str, float]:
    """``{LANG/i2t_recall@k, LANG/t2i_recall@k, LANG/bitext_recall@k, LANG/images, mean/...}``.

    ``text_languages[j]`` is caption j's language; ``languages`` restricts the evaluation (None:
    every language present). Bitext needs the ``pivot`` language and skips the pivot itself.
    ``mean/bitext_recall@k`` averages the bitext languages.
    """
    img = _normalise(image_embeddings)
    txt = _normalise(text_embeddings)
    ids = torch.as_tensor(text_image_ids).long()
    if len(text_languages) != txt.shape[0] or ids.shape != (txt.shape[0],):
        raise ValueError(
            f"{txt.shape[0]} text embeddings but {len(text_languages)} languages and "
            f"{tuple(ids.shape)} image ids: give one of each per caption"
        )
    lang_of = list(text_languages)
    present = sorted(set(lang_of))
    chosen = present if languages is None else list(languages)
    unknown = [lang for lang in chosen if lang not in present]
    if unknown:
        raise ValueError(f"no captions in language(s) {unknown}; present: {present}")
    if not chosen:
        raise ValueError("no language to evaluate")
    if bitext and pivot not in present:
        raise ValueError(f"bitext retrieval needs captions in the pivot language {pivot!r}")
    by_lang = {lang: torch.tensor(rows) for lang, rows in _rows_by_language(lang_of).items()}

    out: dict[str, float] = {}
    for lang in chosen:
        rows = by_lang[lang]
        images, local = torch.unique(ids[rows], return_inverse=True)
        metrics = retrieval_metrics(img[images], txt[rows], local, ks=ks)
        out.update({f"{lang}/{name}": value for name, value in metrics.items()})
        out[f"{lang}/images"] = int(images.numel())
        if bitext and lang != pivot:
            out.update(_bitext(txt, ids, by_lang[lang], by_lang[pivot], lang, ks))
    for name in [f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in ks]:
        out[f"mean/{name}"] = sum(out[f"{lang}/{name}"] for lang in chosen) / len(chosen)
    bitext_langs = [lang for lang in chosen if f"{lang}/bitext_recall@{ks[0]}" in out]
    if bitext_langs:
        for k in ks:
            values = [out[f"{lang}/bitext_recall@{k}"] for lang in bitext_langs]
            out[f"mean/bitext_recall@{k}"] = sum(values) / len(values)
    out["languages"] = len(chosen)
    return out


def _bitext(
    txt: torch.Tensor,
    ids: torch.Tensor,
    query_rows: torch.Tensor,
    pivot_rows: torch.Tensor,
    lang: str,
    ks: Sequence[int],
) -> dict[str, float]:
    """Recall@k of ``lang``'s captions retrieving their image's pivot captions among all."""
    with_pivot = torch.isin(ids[query_rows], ids[pivot_rows])
    query_rows = query_rows[with_pivot]
    if not query_rows.numel():
        return {}
    ranks = retrieval_ranks(txt[query_rows], txt[pivot_rows], ids[query_rows], ids[pivot_rows])
    return {f"{lang}/bitext_recall@{k}": (ranks < k).float().mean().item() for k in ks}


@register("bitext")
@dataclass
class BitextRetrievalEvaluator:
    """Recall@k on held-out text pairs (a ``kind: textpairs`` set): ``b2a`` (each ``text_b``
    retrieves its ``text_a`` among the set's distinct ``text_a`` strings, the direction of the
    multilingual bitext: language X -> English) and ``a2b`` (each distinct ``text_a`` retrieves
    any of its ``text_b``). Where the pairs carry their language (``clippo data textpairs``
    with several languages): ``LANG/b2a_recall@k`` per language and ``mean/b2a_recall@k``, the
    languages weighing the same, as tuxpaint's and XM3600's means do.

    ``leading_spaces`` (e.g. ``[1, 2, 3]``): b2a again with every ``text_b`` drawn after that
    many spaces (another place on the canvas, other line breaks): ``spaces{n}/b2a_recall@k``
    and ``spaces{n}/mean/b2a_recall@k`` per count, and ``spaces_mean/...``, the mean over no
    spaces and each count: how well the text is read wherever it sits."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    leading_spaces: list[int] = field(default_factory=list)
    needs_texts = True
    needs_pairs = True  # its set must be text pairs (``kind: textpairs``)

    def __post_init__(self) -> None:
        bad = [n for n in self.leading_spaces if not isinstance(n, int) or n < 1]
        if bad:
            raise ValueError(f"leading_spaces: counts must be ints >= 1, got {bad}")

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        n = s.pair_pivots
        if n is None or s.text_languages is None:
            raise ValueError("the bitext evaluator needs a text-pair set (kind: textpairs)")
        pivots, queries = _normalise(s.text[:n]), _normalise(s.text[n:])
        pivot_ids, targets = s.text_image_ids[:n], s.text_image_ids[n:]
        languages = s.text_languages[n:]
        # Pairs written without their language are scored as a whole only.
        by_lang = None if "" in languages else _rows_by_language(languages)
        b2a = retrieval_ranks(queries, pivots, targets, pivot_ids)
        a2b = retrieval_ranks(pivots, queries, pivot_ids, targets)
        out = {f"a2b_recall@{k}": (a2b < k).float().mean().item() for k in self.ks}
        unshifted = self._b2a_metrics(b2a, by_lang, per_language=True)
        out.update(unshifted)
        out.update(pairs=len(targets), pivots=len(pivot_ids))
        if by_lang is not None:
            out.update({f"{lang}/pairs": len(rows) for lang, rows in sorted(by_lang.items())})
            out["languages"] = len(by_lang)
        positions = [unshifted]
        for count in self.leading_spaces:
            moved = _normalise(ctx.encode_text([" " * count + t for t in s.texts[n:]]))
            ranks = retrieval_ranks(moved, pivots, targets, pivot_ids)
            metrics = self._b2a_metrics(ranks, by_lang, per_language=False)
            positions.append(metrics)
            out.update({f"spaces{count}/{name}": value for name, value in metrics.items()})
        if self.leading_spaces:  # the shifted metrics' names: no per-language keys
            for name in positions[1]:
                out[f"spaces_mean/{name}"] = sum(m[name] for m in positions) / len(positions)
        return out

    def _b2a_metrics(
        self, ranks: torch.Tensor, by_lang: dict[str, list[int]] | None, per_language: bool
    ) -> dict[str, float]:
        """``b2a_recall@k`` over all queries and, with languages, ``mean/b2a_recall@k`` (and
        with ``per_language`` each ``LANG/b2a_recall@k``)."""
        out = {}
        for k in self.ks:
            out[f"b2a_recall@{k}"] = (ranks < k).float().mean().item()
            if by_lang is None:
                continue
            per = {lang: (ranks[rows] < k).float().mean().item() for lang, rows in by_lang.items()}
            if per_language:
                out.update({f"{lang}/b2a_recall@{k}": value for lang, value in sorted(per.items())})
            out[f"mean/b2a_recall@{k}"] = sum(per.values()) / len(per)
        return out


@register("multilingual")
@dataclass
class MultilingualRetrievalEvaluator:
    """Per-language image<->text and bitext recall@k over a caption set's languages."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    pivot: str = "en"  # the bitext target language
    languages: list[str] = field(default_factory=list)  # empty: every language of the set
    bitext: bool = True
    needs_texts = True
    needs_languages = True  # its set must be a caption set (``clippo.data.captionsets``)

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        if s.text_languages is None:
            raise ValueError("the multilingual evaluator needs captions per language")
        return multilingual_retrieval_metrics(
            s.image,
            s.text,
            s.text_image_ids,
            s.text_languages,
            ks=tuple(self.ks),
            pivot=self.pivot,
            languages=self.languages or None,
            bitext=self.bitext,
        )

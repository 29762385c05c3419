"""Image-text retrieval recall@k (COCO / Flickr30k protocol, several captions per image).

Scores are cosine similarities. Image->text: an image is a hit at k if any of its captions is
among its k best texts. Text->image: a text is a hit at k if its image is among its k best images.

Tie rule (deterministic, pessimistic): a query's rank is the number of *wrong* candidates scoring
>= its best correct candidate, and it is a hit at k iff rank < k. A collapsed model whose
embeddings are all equal therefore gets recall 0 unless k covers (nearly) every candidate.
Identical captions of different images embed identically, so each ties with the other and
both count as misses at k=1: held-out sets whose captions repeat cap recall@1 below 100%
(``clippo data openclipart`` holds out only images with a unique title for that reason).
big_vision sorts with numpy's unstable argsort, so its ties fall in an unspecified order; exact
float ties are rare in practice, so results agree with it whenever there are none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from clippo.eval.registry import register

# Scores are computed in blocks of at most this many entries (64 MiB of float32), so e.g.
# 25k images x 125k captions never materialises the full similarity matrix.
_BLOCK_ENTRIES = 1 << 24


def retrieval_metrics(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_image_ids: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    block_entries: int = _BLOCK_ENTRIES,
) -> dict[str, float]:
    """Return `i2t_recall@k` and `t2i_recall@k` (fractions) for each k in `ks`.

    `text_image_ids[j]` is the row of `image_embeddings` that caption j describes. Every image
    needs at least one caption. As in big_vision, k may exceed the number of candidates (every
    query is then a hit). `block_entries` bounds the similarity block held in memory at once.
    """
    img = torch.as_tensor(image_embeddings).float()
    txt = torch.as_tensor(text_embeddings).float()
    ids = torch.as_tensor(text_image_ids)
    _check_inputs(img, txt, ids, ks)
    img = img / img.norm(dim=1, keepdim=True).clamp_min(1e-12)
    txt = txt / txt.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ids = ids.long()

    n = img.shape[0]
    i2t_rank = retrieval_ranks(img, txt, torch.arange(n), ids, block_entries)
    t2i_rank = retrieval_ranks(txt, img, ids, torch.arange(n), block_entries)
    out = {f"i2t_recall@{k}": (i2t_rank < k).float().mean().item() for k in ks}
    out.update({f"t2i_recall@{k}": (t2i_rank < k).float().mean().item() for k in ks})
    return out


def retrieval_ranks(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    query_groups: torch.Tensor,
    candidate_groups: torch.Tensor,
    block_entries: int = _BLOCK_ENTRIES,
) -> torch.Tensor:
    """Per query: the number of candidates of *other* groups scoring >= its best own-group one.

    A group is what a query and its correct candidates share (an image index: image->text
    queries have their captions, text->image queries their image, a bitext query the pivot
    captions of its image). Rank < k is a hit at k. Embeddings are compared by dot product
    (normalise them first for cosine); every query's group needs at least one candidate.
    """
    queries, candidates = queries.float(), candidates.float()
    query_groups, candidate_groups = query_groups.long(), candidate_groups.long()
    missing = ~torch.isin(query_groups, candidate_groups)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} queries have no correct candidate (groups e.g. "
            f"{query_groups[missing][:5].tolist()})"
        )
    m, n = queries.shape[0], candidates.shape[0]
    rows = max(1, block_entries // max(n, 1))
    ranks = torch.empty(m, dtype=torch.long)
    for start in range(0, m, rows):
        # The best own score is read from the same block, so rounding cannot split a true tie.
        scores = queries[start : start + rows] @ candidates.T
        own = query_groups[start : start + rows, None] == candidate_groups[None, :]
        best_own = scores.masked_fill(~own, float("-inf")).amax(dim=1, keepdim=True)
        ranks[start : start + rows] = ((scores >= best_own) & ~own).sum(dim=1)
    return ranks


def _check_inputs(
    img: torch.Tensor, txt: torch.Tensor, ids: torch.Tensor, ks: Sequence[int]
) -> None:
    if img.ndim != 2 or txt.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D, got image {tuple(img.shape)} and text {tuple(txt.shape)}"
        )
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"embedding dims differ: image D={img.shape[1]}, text D={txt.shape[1]}")
    if img.shape[0] == 0 or txt.shape[0] == 0:
        raise ValueError("need at least one image and one text")
    if ids.ndim != 1 or ids.shape[0] != txt.shape[0]:
        raise ValueError(
            f"text_image_ids must have shape ({txt.shape[0]},), one image index per text, "
            f"got {tuple(ids.shape)}"
        )
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"text_image_ids must be integer indices, got dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= img.shape[0]:
        raise ValueError(
            f"text_image_ids must lie in [0, {img.shape[0]}), got range "
            f"[{int(ids.min())}, {int(ids.max())}]"
        )
    uncaptioned = torch.bincount(ids.long(), minlength=img.shape[0]) == 0
    if uncaptioned.any():
        first = uncaptioned.nonzero()[:5].flatten().tolist()
        raise ValueError(
            f"{int(uncaptioned.sum())} images have no caption in text_image_ids (e.g. {first})"
        )
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"every k in ks={tuple(ks)} must be >= 1")
    if not (torch.isfinite(img).all() and torch.isfinite(txt).all()):
        raise ValueError("embeddings contain NaN or inf")


@register("retrieval")
@dataclass
class RetrievalEvaluator:
    """Image<->text recall@k over an evaluation set's images and captions."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    needs_texts = True

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        return retrieval_metrics(s.image, s.text, s.text_image_ids, ks=tuple(self.ks))

"""Embedding geometry: the modality gap, paired distances, PCA pictures, patch-embedding bases.

The paper's §4.6 and appendix C.5/C.6: the gap of Liang et al. 2022 ("Mind the Gap", §4.2),
the distances between matching image/text embeddings (Fig. 11), the 2-D PCA view of both
sets (Fig. 5, 10), and the top principal components of the patch embedding kernel (Fig. 12).
Inputs are numpy arrays or torch tensors; everything is computed in float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _as_matrix(x: Any, name: str, ndim: int = 2) -> np.ndarray:
    """A float64 numpy copy of an array or (possibly bf16, on-GPU, grad-tracking) tensor."""
    if hasattr(x, "detach"):  # a torch tensor; duck-typed so this module never imports torch
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def _normalized(x: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row has no direction, so it is an error."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} row {int(np.flatnonzero(norms == 0)[0])} is all zeros")
    return x / norms


def _pair(
    image_embeddings: Any, text_embeddings: Any, same_rows: bool, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 matrices (normalised if asked), checked to share the width."""
    img = _as_matrix(image_embeddings, "image_embeddings")
    txt = _as_matrix(text_embeddings, "text_embeddings")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"image_embeddings have width {img.shape[1]} but text_embeddings {txt.shape[1]}"
        )
    if same_rows and img.shape[0] != txt.shape[0]:
        raise ValueError(
            f"{img.shape[0]} image but {txt.shape[0]} text embeddings: pairs need row i of "
            "each to belong together"
        )
    if not normalize:
        return img, txt
    return _normalized(img, "image_embeddings"), _normalized(txt, "text_embeddings")


def modality_gap(image_embeddings: Any, text_embeddings: Any) -> float:
    """Norm of the difference of the mean L2-normalised image and text embeddings (N, D)."""
    img, txt = _pair(image_embeddings, text_embeddings, same_rows=False)
    return float(np.linalg.norm(img.mean(axis=0) - txt.mean(axis=0)))


@dataclass(frozen=True)
class PairDistances:
    """Euclidean distances between matching normalised image and text embeddings (Fig. 11)."""

    distances: np.ndarray  # (N,), row i's image to row i's text

    @property
    def mean(self) -> float:
        """Mean distance over the pairs."""
        return float(self.distances.mean())

    @property
    def median(self) -> float:
        """Median distance over the pairs."""
        return float(np.median(self.distances))

    @property
    def std(self) -> float:
        """Standard deviation of the distances (population, ``ddof=0``)."""
        return float(self.distances.std())


def pair_distances(image_embeddings: Any, text_embeddings: Any) -> PairDistances:
    """Distances between row i of the normalised images and row i of the normalised texts."""
    img, txt = _pair(image_embeddings, text_embeddings, same_rows=True)
    return PairDistances(np.linalg.norm(img - txt, axis=1))


def mismatched_pair_distances(
    image_embeddings: Any, text_embeddings: Any, seed: int = 0
) -> PairDistances:
    """The same distances for non-matching pairs, the contrast to ``pair_distances``: each image
    against one other row's text, one cycle through a seeded random order (no row is its own)."""
    img, txt = _pair(image_embeddings, text_embeddings, same_rows=True)
    if len(img) < 2:
        raise ValueError("one pair has no mismatched partner: give at least 2 pairs")
    order = np.random.default_rng(seed).permutation(len(img))
    # Image order[i] meets text order[i + 1]: a single cycle, so never its own text, and every
    # text is used once, as in the matching distances.
    return PairDistances(np.linalg.norm(img[order] - txt[np.roll(order, -1)], axis=1))


def _principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unit axes (k, D) of the mean-centred rows and the variance share of each."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    total = float((s**2).sum())
    if total == 0:
        raise ValueError("all rows are identical: there is no variance to decompose")
    axes = vt[:k]
    # SVD signs are arbitrary; fix them (largest-magnitude entry positive) so pictures are stable.
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return axes * signs[:, None], s[:k] ** 2 / total


def pca_2d(
    image_embeddings: Any, text_embeddings: Any, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sets on the first two principal axes of their stacked, centred rows (Fig. 5).

    Returns ``(image (N, 2), text (M, 2), explained variance ratio (2,))``. ``normalize``
    (default) projects the L2-normalised embeddings, the geometry ``modality_gap`` measures.
    """
    img, txt = _pair(image_embeddings, text_embeddings, same_rows=False, normalize=normalize)
    if img.shape[1] < 2:
        raise ValueError(f"embeddings of width {img.shape[1]} have no second principal axis")
    joint = np.concatenate([img, txt])
    axes, ratio = _principal_axes(joint, 2)
    projected = (joint - joint.mean(axis=0)) @ axes.T
    return projected[: len(img)], projected[len(img) :], ratio


def patch_embedding_pca(kernel: Any, k: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal components of the (D, C, P, P) patch kernel's D filters, as unit-norm
    tiles (k, C, P, P), and the share of the filters' variance each explains (k,)."""
    filters = _as_matrix(kernel, "kernel", ndim=4)
    d, c, p, q = filters.shape
    most = min(d, c * p * q)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= most:
        raise ValueError(f"k must be an int in [1, {most}] for a kernel of shape {filters.shape}")
    axes, ratio = _principal_axes(filters.reshape(d, c * p * q), int(k))
    return axes.reshape(int(k), c, p, q), ratio


def patch_embedding_components(kernel: Any, k: int = 30) -> np.ndarray:
    """Top-k principal components of the (D, C, P, P) patch kernel's filters, as (k, C, P, P)."""
    return patch_embedding_pca(kernel, k)[0]


@dataclass(frozen=True)
class FrequencyShares:
    """Where the energy of patch tiles lies in the 2-D Fourier plane, DC left out.

    ``horizontal``: the share of energy at frequencies that vary along the horizontal (x)
    axis more than along the vertical, ``|f_x| > |f_y|`` (the diagonal ``|f_x| = |f_y|``
    counts half): 0.5 is isotropic, 1 is pure left-right variation (vertical strokes, letters
    side by side), 0 pure up-down variation (horizontal stripes). ``high``: the share at radial
    frequency above a quarter cycle per pixel (half of Nyquist). Both per tile (NaN for a tile
    with no energy beyond DC) and ``pooled``: over all tiles, each weighted by ``weights``.
    """

    horizontal: np.ndarray  # (k,)
    high: np.ndarray  # (k,)
    pooled_horizontal: float
    pooled_high: float


def frequency_shares(tiles: Any, weights: Any = None) -> FrequencyShares:
    """``FrequencyShares`` of (k, C, P, Q) tiles: the power spectra of the C channels summed
    per tile; ``weights`` (k,), e.g. the explained variance, weigh the tiles when pooling."""
    t = _as_matrix(tiles, "tiles", ndim=4)
    k = t.shape[0]
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or (w < 0).any() or not np.isfinite(w).all() or w.sum() == 0:
        raise ValueError(f"weights must be {k} non-negative finite numbers, not all zero")
    power = (np.abs(np.fft.fft2(t)) ** 2).sum(axis=1)  # (k, P, Q), summed over channels
    fy = np.abs(np.fft.fftfreq(t.shape[2]))[:, None]  # cycles per pixel, rows (vertical)
    fx = np.abs(np.fft.fftfreq(t.shape[3]))[None, :]  # columns (horizontal)
    dc = (fx == 0) & (fy == 0)
    horizontal_mask = np.where(fx > fy, 1.0, np.where(fx == fy, 0.5, 0.0)) * ~dc
    high_mask = (np.hypot(fx, fy) > 0.25) * 1.0
    ac = (power * ~dc).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        horizontal = (power * horizontal_mask).sum(axis=(1, 2)) / ac
        high = (power * high_mask).sum(axis=(1, 2)) / ac
    pooled = (w[:, None, None] * power).sum(axis=0)
    pooled_ac = float((pooled * ~dc).sum())
    if pooled_ac == 0:
        raise ValueError("the tiles are constant: there is no energy beyond DC to share out")
    return FrequencyShares(
        horizontal=horizontal,
        high=high,
        pooled_horizontal=float((pooled * horizontal_mask).sum() / pooled_ac),
        pooled_high=float((pooled * high_mask).sum() / pooled_ac),
    )

"""Embedding geometry: modality gap, paired distances, 2-D PCA and patch-kernel components."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clippo.analysis import (
    frequency_shares,
    mismatched_pair_distances,
    modality_gap,
    pair_distances,
    patch_embedding_components,
    patch_embedding_pca,
    pca_2d,
)


def _assert_equal_up_to_sign(actual: np.ndarray, expected: np.ndarray, axis: int) -> None:
    """Each slice along ``axis`` (a principal axis or its coordinates) may be flipped."""
    a, e = np.moveaxis(actual, axis, 0), np.moveaxis(expected, axis, 0)
    assert a.shape == e.shape
    for got, want in zip(a, e, strict=True):
        sign = 1.0 if np.abs(got - want).max() <= np.abs(got + want).max() else -1.0
        np.testing.assert_allclose(sign * got, want, atol=1e-10)


def test_gap_of_two_orthogonal_points_is_sqrt2():
    images = np.array([[1.0, 0, 0], [5.0, 0, 0], [0.2, 0, 0]])  # all e1 once normalised
    texts = np.array([[0, 3.0, 0], [0, 0.5, 0]])  # all e2
    assert modality_gap(images, texts) == pytest.approx(math.sqrt(2))


def test_gap_of_mirrored_clouds():
    # Images at +-60 degrees around e1 average to (cos 60, 0) = (0.5, 0); texts mirrored
    # around -e1 average to (-0.5, 0): gap = 1. Row norms differ to show normalisation.
    s = math.sin(math.pi / 3)
    images = np.array([[0.5, s], [0.5, -s]]) * np.array([[2.0], [7.0]])
    texts = np.array([[-0.5, s], [-0.5, -s]]) * np.array([[0.1], [3.0]])
    assert modality_gap(images, texts) == pytest.approx(1.0)
    # Without normalising inside, the unequal norms would give a different answer.
    raw = np.linalg.norm(images.mean(0) - texts.mean(0))
    assert abs(raw - 1.0) > 0.5


def test_gap_is_zero_for_the_same_directions_and_allows_different_counts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5))
    assert modality_gap(x, np.concatenate([x * 3, x])) == pytest.approx(0.0, abs=1e-12)


def test_gap_accepts_torch_tensors_with_grad_and_bfloat16():
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    expected = modality_gap(img, txt)
    t_img = torch.tensor(img, dtype=torch.float32, requires_grad=True)
    assert modality_gap(t_img, torch.tensor(txt)) == pytest.approx(expected, rel=1e-6)
    bf16 = modality_gap(torch.tensor(img).bfloat16(), torch.tensor(txt).bfloat16())
    assert bf16 == pytest.approx(expected, rel=2e-2)


def test_pair_distances_on_a_known_example():
    images = np.array([[2.0, 0], [1.0, 0], [0, 4.0]])  # e1, e1, e2
    texts = np.array([[3.0, 0], [0, 0.5], [0, -1.0]])  # e1, e2, -e2
    result = pair_distances(images, texts)
    np.testing.assert_allclose(result.distances, [0.0, math.sqrt(2), 2.0])
    assert result.mean == pytest.approx((math.sqrt(2) + 2) / 3)
    assert result.median == pytest.approx(math.sqrt(2))
    mean = (math.sqrt(2) + 2) / 3
    assert result.std == pytest.approx(math.sqrt((mean**2 + (math.sqrt(2) - mean) ** 2
                                                  + (2 - mean) ** 2) / 3))  # fmt: skip


def test_mismatched_pairs_of_two_are_the_swap():
    images = np.array([[3.0, 0], [0, 2.0]])  # e1, e2
    texts = np.array([[1.0, 0], [-5.0, 0]])  # e1, -e1
    # The only pairing with no row's own text: image 0 with text 1 (e1 to -e1: 2) and image 1
    # with text 0 (e2 to e1: sqrt 2), in whichever order the seed walks the cycle.
    for seed in range(4):
        got = mismatched_pair_distances(images, texts, seed=seed).distances
        np.testing.assert_allclose(sorted(got), [math.sqrt(2), 2.0])


def test_mismatched_pairs_never_meet_their_own_text_and_use_every_text_once():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 8))
    # Texts identical to their images: a matching distance is 0, a mismatched one never is.
    assert pair_distances(x, x).mean == pytest.approx(0.0, abs=1e-12)
    got = mismatched_pair_distances(x, x, seed=3).distances
    assert got.shape == (50,) and got.min() > 0.1
    # Every text is used once: with all images alike, the distances are those of the texts,
    # which sit at distinct angles from it, each once.
    angles = np.linspace(0.1, 3.0, 50)
    texts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    got = mismatched_pair_distances(np.tile([1.0, 0.0], (50, 1)), texts, seed=3).distances
    np.testing.assert_allclose(np.sort(got), 2 * np.sin(angles / 2))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        mismatched_pair_distances(x[:1], x[:1])


def test_pair_distances_need_matching_rows():
    with pytest.raises(ValueError, match="3 image but 2 text embeddings"):
        pair_distances(np.ones((3, 4)), np.ones((2, 4)))


@pytest.mark.parametrize("fn", [modality_gap, pair_distances, pca_2d])
def test_mismatched_or_malformed_embeddings_are_refused(fn):
    with pytest.raises(ValueError, match="image_embeddings have width 4 but text_embeddings 3"):
        fn(np.ones((2, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"text_embeddings must have 2 dimensions, got shape \(4"):
        fn(np.ones((2, 4)), np.ones(4))
    with pytest.raises(ValueError, match="image_embeddings is empty"):
        fn(np.ones((0, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="text_embeddings row 1 is all zeros"):
        fn(np.ones((2, 4)), np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="image_embeddings holds NaN"):
        fn(np.array([[np.nan, 1.0], [1.0, 1.0]]), np.ones((2, 2)))


def test_pca_2d_on_a_hand_derived_matrix():
    # Stacked rows (3, 1, 0), (-3, 1, 0), (1, -1, 0), (-1, -1, 0) have mean 0, variance 5
    # along e1, 1 along e2, none along e3 and no covariance: the axes are e1 and e2 with
    # variance shares 5/6 and 1/6, and the coordinates are the first two columns.
    images = np.array([[3.0, 1, 0], [-3.0, 1, 0]])
    texts = np.array([[1.0, -1, 0], [-1.0, -1, 0]])
    img_2d, txt_2d, ratio = pca_2d(images, texts, normalize=False)
    np.testing.assert_allclose(ratio, [5 / 6, 1 / 6])
    both = np.concatenate([img_2d, txt_2d])
    _assert_equal_up_to_sign(both, np.concatenate([images, texts])[:, :2], axis=1)


def test_pca_2d_matches_an_eigendecomposition_of_the_covariance():
    # A different route: eigenvectors of the covariance of the normalised, stacked rows.
    rng = np.random.default_rng(2)
    images = rng.normal(size=(30, 6)) + 2.0  # a gap: images sit off-centre
    texts = rng.normal(size=(20, 6)) * np.arange(1, 7)
    img_2d, txt_2d, ratio = pca_2d(images, texts)
    joint = np.concatenate(
        [
            images / np.linalg.norm(images, axis=1, keepdims=True),
            texts / np.linalg.norm(texts, axis=1, keepdims=True),
        ]
    )
    centred = joint - joint.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    top = vectors[:, ::-1][:, :2]
    np.testing.assert_allclose(ratio, values[::-1][:2] / values.sum())
    assert img_2d.shape == (30, 2) and txt_2d.shape == (20, 2)
    _assert_equal_up_to_sign(np.concatenate([img_2d, txt_2d]), centred @ top, axis=1)


def test_pca_2d_normalises_by_default():
    rng = np.random.default_rng(3)
    images, texts = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
    scale = rng.uniform(0.1, 10, size=(10, 1))
    for a, b in zip(pca_2d(images, texts), pca_2d(images * scale, texts), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert not np.allclose(
        pca_2d(images, texts, normalize=False)[2], pca_2d(images * scale, texts, normalize=False)[2]
    )


def test_pca_2d_refuses_degenerate_input():
    with pytest.raises(ValueError, match="no second principal axis"):
        pca_2d(np.ones((3, 1)), np.ones((3, 1)), normalize=False)
    with pytest.raises(ValueError, match="all rows are identical"):
        pca_2d(np.ones((3, 2)), np.ones((2, 2)) * 4)  # one direction once normalised


def _two_pattern_kernel() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(6, 3, 4, 4) kernel: filter i = shared + a_i * top-minus-bottom + b_i * left-minus-right."""
    top_minus_bottom = np.zeros((3, 4, 4))
    top_minus_bottom[0, :2], top_minus_bottom[0, 2:] = 1.0, -1.0
    left_minus_right = np.zeros((3, 4, 4))
    left_minus_right[1, :, :2], left_minus_right[1, :, 2:] = 1.0, -1.0
    shared = np.zeros((3, 4, 4))
    shared[2] = 5.0  # in every filter: centring removes it, so no component may show it
    # Zero-mean, uncorrelated coefficients with variances 8 : 4, so the order is fixed.
    a = np.array([2.0, -2, 0, 0, 0, 0])
    b = np.array([0.0, 0, 1, -1, 1, -1])
    kernel = shared + a[:, None, None, None] * top_minus_bottom
    kernel = kernel + b[:, None, None, None] * left_minus_right
    return kernel, top_minus_bottom, left_minus_right


def test_patch_components_recover_two_orthogonal_patterns():
    kernel, first, second = _two_pattern_kernel()
    tiles = patch_embedding_components(kernel, k=2)
    assert tiles.shape == (2, 3, 4, 4)
    expected = np.stack([first / np.linalg.norm(first), second / np.linalg.norm(second)])
    _assert_equal_up_to_sign(tiles, expected, axis=0)


def test_patch_pca_explained_variance_of_the_two_pattern_kernel():
    # Along the unit patterns (norm 4) the filters sit at 4a = (8, -8, 0, 0, 0, 0) and
    # 4b = (0, 0, 4, -4, 4, -4): sums of squares 128 and 64 of a total 192.
    kernel, _, _ = _two_pattern_kernel()
    tiles, explained = patch_embedding_pca(kernel, k=2)
    np.testing.assert_allclose(explained, [2 / 3, 1 / 3])
    np.testing.assert_allclose(tiles, patch_embedding_components(kernel, k=2))


def _cosine_tile(cycles_x: int, cycles_y: int, size: int = 16) -> np.ndarray:
    """(3, P, P): a cosine with the given cycles per tile along x and y in channel 0, constants
    (DC only, which the shares leave out) in the others."""
    y, x = np.mgrid[:size, :size]
    tile = np.empty((3, size, size))
    tile[0] = np.cos(2 * np.pi * (cycles_x * x + cycles_y * y) / size)
    tile[1], tile[2] = 0.7, -2.0
    return tile


def test_frequency_shares_of_known_cosines():
    # 6 cycles per 16 px along x: all energy at |f_x| = 0.375 > 0.25, none along y.
    # 2 cycles along y: |f_y| = 0.125. Diagonal 2+2: |f_x| = |f_y| (counts half),
    # radius 0.177 (low). Each cosine has the same energy, 16*16/2 per +-f peak pair.
    tiles = np.stack([_cosine_tile(6, 0), _cosine_tile(0, 2), _cosine_tile(2, 2)])
    shares = frequency_shares(tiles)
    np.testing.assert_allclose(shares.horizontal, [1.0, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(shares.high, [1.0, 0.0, 0.0], atol=1e-12)
    assert shares.pooled_horizontal == pytest.approx(1.5 / 3)
    assert shares.pooled_high == pytest.approx(1 / 3)
    # Weighted 3 : 1 : 0, the pooled spectrum is 3/4 horizontal-and-high.
    weighted = frequency_shares(tiles, weights=[3.0, 1.0, 0.0])
    assert weighted.pooled_horizontal == pytest.approx(0.75)
    assert weighted.pooled_high == pytest.approx(0.75)


def test_frequency_shares_of_a_transposed_tile_swap_horizontal_and_vertical():
    rng = np.random.default_rng(6)
    tiles = rng.normal(size=(4, 3, 8, 8))
    h = frequency_shares(tiles).horizontal
    np.testing.assert_allclose(frequency_shares(tiles.transpose(0, 1, 3, 2)).horizontal, 1 - h)


def test_frequency_shares_refuse_constant_tiles_and_bad_weights():
    flat = np.stack([_cosine_tile(0, 0) * 0 + 1.0, _cosine_tile(1, 0)])
    shares = frequency_shares(flat)
    assert math.isnan(shares.horizontal[0]) and shares.horizontal[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no energy beyond DC"):
        frequency_shares(flat[:1])
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        frequency_shares(flat, weights=[1.0, -1.0])


def test_patch_components_are_orthonormal_and_match_an_eigendecomposition():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(64, 3, 4, 4)) * rng.uniform(0.1, 3, size=(1, 3, 4, 4))
    tiles = patch_embedding_components(kernel, k=5)
    flat = tiles.reshape(5, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-10)
    values, vectors = np.linalg.eigh(np.cov(kernel.reshape(64, -1), rowvar=False))
    _assert_equal_up_to_sign(flat, vectors[:, ::-1][:, :5].T, axis=0)


def test_patch_components_of_a_torch_patch_embedding_have_the_paper_layout():
    conv = torch.nn.Conv2d(3, 48, 16, stride=16)  # PyTorch (D, C, P, P), as models/vit.py
    tiles = patch_embedding_components(conv.weight, k=30)
    assert tiles.shape == (30, 3, 16, 16) and tiles.dtype == np.float64


def test_patch_components_refuse_bad_k_and_shape():
    kernel, _, _ = _two_pattern_kernel()
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 6\]"):
        patch_embedding_components(kernel, k=7)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 6\]"):
        patch_embedding_components(kernel, k=0)
    with pytest.raises(ValueError, match=r"kernel must have 4 dimensions, got shape \(6, 48\)"):
        patch_embedding_components(kernel.reshape(6, 48), k=2)

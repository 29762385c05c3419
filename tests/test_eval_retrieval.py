import math

import numpy as np
import pytest
import torch

from clippo.eval.retrieval import retrieval_metrics


def _unit_columns(rows: list[list[float]]) -> torch.Tensor:
    """Texts whose first 3 coordinates are the given similarities to images e0, e1, e2."""
    out = []
    for r in rows:
        out.append(r + [math.sqrt(1.0 - sum(v * v for v in r))])
    return torch.tensor(out)


# similarity[image, text] is the text's coordinate for that image.
IMAGES = torch.eye(4)[:3]
TEXTS = _unit_columns(
    [
        [0.9, 0.3, 0.1],  # text 0, image 0
        [0.2, 0.8, 0.5],  # text 1, image 0
        [0.1, 0.6, 0.7],  # text 2, image 1
        [0.5, 0.4, 0.3],  # text 3, image 1
        [0.3, 0.2, 0.9],  # text 4, image 2
    ]
)
IDS = torch.tensor([0, 0, 1, 1, 2])


def test_recall_hand_computed_with_several_captions_per_image():
    # t2i ranks: text0 0, text1 2, text2 1, text3 1, text4 0.
    # i2t: image0's best caption (0.9) wins; image1's best caption (text2, 0.6) loses only to
    # text1 (0.8); image2's caption wins. Only the best own caption matters (COCO rule).
    result = retrieval_metrics(IMAGES, TEXTS, IDS, ks=(1, 2, 3))
    expected = {
        "i2t_recall@1": 2 / 3,
        "i2t_recall@2": 1.0,
        "i2t_recall@3": 1.0,
        "t2i_recall@1": 2 / 5,
        "t2i_recall@2": 4 / 5,
        "t2i_recall@3": 1.0,
    }
    assert result == pytest.approx(expected)


def test_recall_default_keys():
    assert sorted(retrieval_metrics(IMAGES, TEXTS, IDS)) == sorted(
        f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)
    )


def test_recall_uses_cosine_similarity():
    scaled_images = IMAGES * torch.tensor([[2.0], [0.1], [7.0]])
    scaled_texts = TEXTS * torch.tensor([[3.0], [0.5], [1.0], [9.0], [0.2]])
    assert retrieval_metrics(scaled_images, scaled_texts, IDS) == retrieval_metrics(
        IMAGES, TEXTS, IDS
    )


def test_ties_count_against_the_query():
    # Text 0 scores 0.6 with its own image 0 and with image 1: rank 1, a miss at 1.
    images = torch.eye(3)[:2]
    texts = torch.tensor([[0.6, 0.6, math.sqrt(0.28)], [0.0, 1.0, 0.0]])
    result = retrieval_metrics(images, texts, torch.tensor([0, 1]), ks=(1, 2))
    assert result["t2i_recall@1"] == 0.5
    assert result["t2i_recall@2"] == 1.0
    # Image 0 sees 0.6 for its caption and 0.0 for the other: no tie, a hit.
    # Image 1 sees 0.6 for the wrong caption, 1.0 for its own: a hit.
    assert result["i2t_recall@1"] == 1.0


def test_identical_captions_of_two_images_are_a_miss_for_both():
    # The rule for identical captions: they embed identically, so an image's own caption ties
    # with the other image's copy and the tie counts against it. A perfect model scores 1/3
    # image->text R@1 here, not 1: why the demo holds out only images with a unique title.
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # 0 and 1 alike
    result = retrieval_metrics(images, texts, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert result["i2t_recall@1"] == pytest.approx(1 / 3)
    assert result["i2t_recall@2"] == 1.0
    assert result["t2i_recall@1"] == pytest.approx(1 / 3)  # each copy ties images 0 and 1


def test_collapsed_embeddings_get_zero_recall_at_1():
    images = torch.ones(4, 8)
    texts = torch.ones(8, 8)
    ids = torch.arange(8) % 4
    result = retrieval_metrics(images, texts, ids, ks=(1, 4, 7))
    # i2t: 6 wrong captions tie with the own ones; t2i: 3 wrong images tie with the own one.
    assert result == {
        "i2t_recall@1": 0.0,
        "i2t_recall@4": 0.0,
        "i2t_recall@7": 1.0,
        "t2i_recall@1": 0.0,
        "t2i_recall@4": 1.0,
        "t2i_recall@7": 1.0,
    }


def _argsort_reference(img: np.ndarray, txt: np.ndarray, ids: np.ndarray, ks) -> dict:
    """Sort-based recall, as big_vision computes it; valid when there are no ties."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = img @ txt.T
    by_image = np.argsort(-sim, axis=1)
    by_text = np.argsort(-sim, axis=0)
    out = {}
    for k in ks:
        out[f"i2t_recall@{k}"] = np.mean(
            (ids[by_image[:, :k]] == np.arange(len(img))[:, None]).any(axis=1)
        )
        out[f"t2i_recall@{k}"] = np.mean((by_text[:k] == ids[None]).any(axis=0))
    return out


@pytest.mark.parametrize("block_entries", [1, 37, 1 << 24])
def test_recall_matches_sort_reference_for_any_block_size(block_entries):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(40, 16, generator=gen)
    ids = torch.cat([torch.arange(40), torch.randint(0, 40, (80,), generator=gen)])
    texts = images[ids] + 1.2 * torch.randn(120, 16, generator=gen)
    ks = (1, 5, 10)
    expected = _argsort_reference(images.numpy(), texts.numpy(), ids.numpy(), ks)
    assert 0.0 < expected["t2i_recall@1"] < 1.0
    result = retrieval_metrics(images, texts, ids, ks=ks, block_entries=block_entries)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("images", "texts", "ids", "message"),
    [
        (IMAGES, TEXTS, IDS[:4], "text_image_ids must have shape \\(5,\\)"),
        (IMAGES, TEXTS, torch.tensor([0, 0, 1, 1, 3]), "must lie in \\[0, 3\\)"),
        (IMAGES, TEXTS, torch.tensor([0, 0, 1, 1, 1]), "1 images have no caption.*\\[2\\]"),
        (IMAGES, TEXTS, IDS.float(), "integer indices"),
        (IMAGES, TEXTS[:, :3], IDS, "embedding dims differ"),
        (IMAGES[0], TEXTS, IDS, "must be 2-D"),
    ],
)
def test_bad_input_raises(images, texts, ids, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(images, texts, ids)


def test_bad_k_raises():
    with pytest.raises(ValueError, match="ks=\\(0, 1\\) must be >= 1"):
        retrieval_metrics(IMAGES, TEXTS, IDS, ks=(0, 1))

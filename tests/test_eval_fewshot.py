from pathlib import Path

import numpy as np
import pytest
import torch

from clippo.eval.fewshot import fewshot_lsr, lsr_predict, sample_fewshot_indices

# Made by tests/fixtures/eval/make_fewshot_golden.py, which runs big_vision's evaluator code.
GOLDEN = np.load(Path(__file__).parent / "fixtures" / "eval" / "fewshot_golden.npz")
CASES = [
    (i, int(seed), j, int(shots))
    for i, seed in enumerate(GOLDEN["seeds"])
    for j, shots in enumerate(GOLDEN["shots"])
]


@pytest.mark.parametrize(("i", "seed", "j", "shots"), CASES)
def test_sampling_matches_big_vision(i, seed, j, shots):
    idx = sample_fewshot_indices(GOLDEN["train_labels"], shots, seed).numpy()
    np.testing.assert_array_equal(
        GOLDEN["train_features"][idx], GOLDEN[f"sampled_features_seed{seed}_shots{shots}"]
    )


@pytest.mark.parametrize(("i", "seed", "j", "shots"), CASES)
def test_predictions_match_big_vision(i, seed, j, shots):
    preds = lsr_predict(
        torch.from_numpy(GOLDEN[f"sampled_features_seed{seed}_shots{shots}"]),
        torch.from_numpy(GOLDEN[f"sampled_labels_seed{seed}_shots{shots}"]),
        torch.from_numpy(GOLDEN["test_features"]),
        num_classes=int(GOLDEN["num_classes"]),
        l2_reg=float(GOLDEN["l2_reg"]),
    )
    np.testing.assert_array_equal(preds.numpy(), GOLDEN["predictions"][i, j])


@pytest.mark.parametrize(("i", "seed", "j", "shots"), CASES)
def test_accuracy_matches_big_vision(i, seed, j, shots):
    acc = fewshot_lsr(
        torch.from_numpy(GOLDEN["train_features"]),
        torch.from_numpy(GOLDEN["train_labels"]),
        torch.from_numpy(GOLDEN["test_features"]),
        torch.from_numpy(GOLDEN["test_labels"]),
        shots=shots,
        seed=seed,
    )
    assert acc == pytest.approx(GOLDEN["accuracy"][i, j], abs=1e-6)


def test_golden_is_not_trivial():
    assert 0.3 < GOLDEN["accuracy"].min() and GOLDEN["accuracy"].max() < 0.9
    assert len(np.unique(GOLDEN["accuracy"])) > 5


def test_sampling_takes_up_to_shots_per_class_in_class_order():
    labels = np.array([2, 0, 1, 0, 2, 2, 0, 0, 2])
    idx = sample_fewshot_indices(labels, shots=3, seed=0).numpy()
    assert labels[idx].tolist() == [0, 0, 0, 1, 2, 2, 2]  # class 1 has a single example
    assert len(set(idx.tolist())) == len(idx)
    again = sample_fewshot_indices(torch.from_numpy(labels), shots=3, seed=0).numpy()
    np.testing.assert_array_equal(idx, again)
    others = [sample_fewshot_indices(labels, shots=3, seed=s).numpy() for s in range(1, 6)]
    assert any(not np.array_equal(idx, o) for o in others)


def test_sampling_bad_input_raises():
    with pytest.raises(ValueError, match="shots must be >= 1, got 0"):
        sample_fewshot_indices(np.array([0, 1]), shots=0, seed=0)
    with pytest.raises(ValueError, match="integer class indices"):
        sample_fewshot_indices(np.array([0.0, 1.0]), shots=1, seed=0)


def test_separable_classes_are_classified_perfectly():
    gen = torch.Generator().manual_seed(0)
    centers = 10.0 * torch.eye(4, 8)
    labels = torch.arange(4).repeat(10)
    features = centers[labels] + 0.1 * torch.randn(40, 8, generator=gen)
    acc = fewshot_lsr(features, labels, features, labels, shots=5, l2_reg=1.0)
    assert acc == 1.0


def test_whitening_makes_probe_invariant_to_feature_scale_and_shift():
    x = torch.from_numpy(GOLDEN["sampled_features_seed0_shots10"]).double()
    y = torch.from_numpy(GOLDEN["sampled_labels_seed0_shots10"])
    x_test = torch.from_numpy(GOLDEN["test_features"]).double()
    scale, shift = torch.linspace(0.5, 20.0, x.shape[1]).double(), 3.0
    base = lsr_predict(x, y, x_test, num_classes=5)
    moved = lsr_predict(x * scale + shift, y, x_test * scale + shift, num_classes=5)
    np.testing.assert_array_equal(base.numpy(), moved.numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(train_labels=torch.tensor([0, 1])), "train_labels must have shape \\(4,\\)"),
        (dict(test_features=torch.zeros(2, 5)), "test_features must have shape \\(N, 3\\)"),
        (dict(test_labels=torch.tensor([0.0, 1.0])), "test_labels must be integer"),
        (dict(l2_reg=0.0), "l2_reg must be > 0"),
        (dict(num_classes=1), "labels go up to 1, but num_classes=1"),
    ],
)
def test_fewshot_bad_input_raises(kwargs, message):
    args = dict(
        train_features=torch.randn(4, 3),
        train_labels=torch.tensor([0, 1, 0, 1]),
        test_features=torch.randn(2, 3),
        test_labels=torch.tensor([0, 1]),
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fewshot_lsr(**args)

"""Few-shot linear probe by closed-form regularised least squares (big_vision `fewshot_lsr`).

Protocol, as in big_vision: draw `shots` training examples per class with
`numpy.random.default_rng(seed)`; whiten features with the mean and (population) std of those
examples (+1e-5); append a constant feature of 100 so the bias is almost unregularised; regress
one-hot targets mapped to {-1, +1} with ridge penalty `l2_reg` (2**10 in big_vision's configs);
predict the argmax on the test set. big_vision reports this for shots 1, 5, 10, 25 and seeds 0-2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from clippo.eval.registry import register

DEFAULT_L2_REG = 2.0**10
# Large so the bias weight costs almost nothing under the ridge penalty.
_BIAS_FEATURE = 100.0
_STD_EPS = 1e-5


def sample_fewshot_indices(
    labels: torch.Tensor | np.ndarray, shots: int, seed: int, num_classes: int | None = None
) -> torch.Tensor:
    """Return indices of up to `shots` random examples per class, grouped by class 0..C-1.

    Classes with fewer than `shots` examples contribute all they have, as in big_vision, which
    draws one permutation per class in class order from `numpy.random.default_rng(seed)`.
    """
    labels_np = np.asarray(torch.as_tensor(labels).cpu())
    if labels_np.ndim != 1 or labels_np.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels_np.shape}")
    if not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels_np.dtype}")
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if labels_np.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels_np.min()}")
    num_classes = int(labels_np.max()) + 1 if num_classes is None else num_classes
    rng = np.random.default_rng(seed)
    per_class = [
        rng.permutation(np.flatnonzero(labels_np == c))[:shots] for c in range(num_classes)
    ]
    return torch.from_numpy(np.concatenate(per_class).astype(np.int64))


def fewshot_lsr(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    shots: int = 10,
    l2_reg: float = DEFAULT_L2_REG,
    seed: int = 0,
    num_classes: int | None = None,
) -> float:
    """Return test accuracy of a ridge-regression probe fit on `shots` examples per class.

    `num_classes` defaults to 1 + the largest label in train or test.
    """
    x_train = torch.as_tensor(train_features)
    y_train = torch.as_tensor(train_labels)
    x_test = torch.as_tensor(test_features)
    y_test = torch.as_tensor(test_labels)
    _check_split("train", x_train, y_train)
    _check_split("test", x_test, y_test)
    largest = int(max(y_train.max(), y_test.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"labels go up to {largest}, but num_classes={num_classes}")

    idx = sample_fewshot_indices(y_train, shots, seed, num_classes)
    preds = lsr_predict(x_train[idx], y_train[idx], x_test, num_classes=num_classes, l2_reg=l2_reg)
    return (preds == y_test.long()).double().mean().item()


def lsr_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    num_classes: int,
    l2_reg: float = DEFAULT_L2_REG,
) -> torch.Tensor:
    """Fit the whitened ridge-regression probe on all given training rows; return test class ids."""
    x_train = torch.as_tensor(train_features)
    y_train = torch.as_tensor(train_labels)
    x_test = torch.as_tensor(test_features)
    _check_split("train", x_train, y_train)
    if x_test.ndim != 2 or x_test.shape[1] != x_train.shape[1]:
        raise ValueError(
            f"test_features must have shape (N, {x_train.shape[1]}) like train_features, "
            f"got {tuple(x_test.shape)}"
        )
    if not torch.isfinite(x_test).all():
        raise ValueError("test_features contain NaN or inf")
    if not l2_reg > 0:
        raise ValueError(f"l2_reg must be > 0, got {l2_reg}")
    if int(y_train.max()) >= num_classes:
        raise ValueError(
            f"train_labels go up to {int(y_train.max())}, but num_classes={num_classes}"
        )

    # float64: the bias column (100) makes x^T x badly scaled for float32 solves.
    x = x_train.double()
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, unbiased=False, keepdim=True) + _STD_EPS
    x = _whiten_with_bias(x, mean, std)
    targets = 2.0 * torch.nn.functional.one_hot(y_train.long(), num_classes).double() - 1.0

    n, d = x.shape
    # Ridge solution in whichever of the two equivalent forms has the smaller system.
    if n >= d:
        gram = x.T @ x + l2_reg * torch.eye(d, dtype=x.dtype)
        weights = torch.linalg.solve(gram, x.T @ targets)
    else:
        gram = x @ x.T + l2_reg * torch.eye(n, dtype=x.dtype)
        weights = x.T @ torch.linalg.solve(gram, targets)
    return (_whiten_with_bias(x_test.double(), mean, std) @ weights).argmax(dim=1)


def _whiten_with_bias(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = (x - mean) / std
    return torch.nn.functional.pad(x, (0, 1), value=_BIAS_FEATURE)


def _check_split(name: str, features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(
            f"{name}_features must be a non-empty (N, D) array, got shape {tuple(features.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{name}_labels must have shape ({features.shape[0]},) to match {name}_features, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name}_labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"{name}_labels must be >= 0, got {int(labels.min())}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name}_features contain NaN or inf")


@register("fewshot")
@dataclass
class FewShotEvaluator:
    """big_vision's closed-form few-shot probe: the set's labelled images are the test set, the
    first ``train_examples`` labelled images of ``train_data`` (default: the run's training
    shards) the pool that ``shots`` per class are drawn from. ``train_data`` may also be a
    class folder (``ROOT/CLASS/*.jpg``, e.g. ImageNet's train split): then ``per_class`` images
    of each class (default: the largest shot count) are drawn, seeded, and read."""

    shots: list[int] = field(default_factory=lambda: [10])
    train_data: str | None = None
    train_examples: int = 2000
    per_class: int = 0

    def check(self, sets, where: str) -> None:
        """Fails before training when no training source is known or the examples are 0."""
        if not (self.train_data or sets.train_data):
            raise ValueError(
                f"{where}.fewshot.train_data: no labelled training shards (set it, or data.train)"
            )
        if self.train_examples < 1 or any(s < 1 for s in self.shots):
            raise ValueError(f"{where}.fewshot: train_examples and shots must be positive")

    def __call__(self, ctx) -> dict[str, float]:
        s = ctx.embedded
        labelled = s.labels >= 0
        if not self.shots or not labelled.any():
            return {}
        per_class = self.per_class or max(self.shots)
        train = ctx.train_embeddings(
            self.train_data or ctx.train_data, self.train_examples, per_class
        )
        if (
            train.class_ids is not None
            and s.class_ids is not None
            and train.class_ids != s.class_ids
        ):
            raise ValueError(
                f"few-shot: the training classes ({len(train.class_ids)}, e.g. "
                f"{train.class_ids[:3]}) are not the evaluation set's ({len(s.class_ids)}, e.g. "
                f"{s.class_ids[:3]}): labels would not match"
            )
        num_classes = int(max(train.labels.max(), s.labels.max())) + 1
        return {
            f"fewshot_{shots}shot": fewshot_lsr(
                train.image,
                train.labels,
                s.image[labelled],
                s.labels[labelled],
                shots=shots,
                num_classes=num_classes,
            )
            for shots in self.shots
        }

"""Pictures of a run: training curves from ``metrics.jsonl`` and example retrievals."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(metrics_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Loss, learning rate, temperature and in-batch accuracy against step, as one PNG."""
    plt = _pyplot()
    records = [r for r in read_metrics(metrics_path) if "train/loss" in r]
    if not records:
        raise ValueError(f"{metrics_path} holds no training records")
    steps = [r["step"] for r in records]
    panels = [
        ("train/loss", "contrastive loss"),
        ("train/lr", "learning rate"),
        ("train/temperature", "temperature exp(t)"),
        ("train/accuracy", "in-batch image->text accuracy"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.plot(steps, [r[key] for r in records])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_retrievals(
    images: Sequence[np.ndarray],
    queries: Sequence[str],
    candidates: Sequence[Sequence[str]],
    correct: Sequence[Sequence[bool]],
    out: str | os.PathLike,
) -> Path:
    """One row per query image: the image, then its top retrieved texts (green when correct)."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(9, 1.9 * n), gridspec_kw={"width_ratios": [1, 3.2]})
    axes = np.atleast_2d(axes)
    for i in range(n):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_axis_off()
        axes[i, 1].set_axis_off()
        axes[i, 1].text(
            0,
            0.92,
            f"true: {queries[i][:70]}",
            fontsize=9,
            weight="bold",
            va="top",
            transform=axes[i, 1].transAxes,
        )
        for j, (text, ok) in enumerate(zip(candidates[i], correct[i], strict=True)):
            axes[i, 1].text(
                0,
                0.72 - 0.18 * j,
                f"{j + 1}. {text[:75]}",
                fontsize=9,
                va="top",
                color="green" if ok else "black",
                transform=axes[i, 1].transAxes,
            )
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

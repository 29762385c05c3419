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
    """Loss, learning rate, temperature and in-batch accuracy against step, and held-out
    recall@1 of every evaluation set when the run evaluated during training, as one PNG."""
    plt = _pyplot()
    rows = read_metrics(metrics_path)
    records = [r for r in rows if "train/loss" in r]
    if not records:
        raise ValueError(f"{metrics_path} holds no training records")
    steps = [r["step"] for r in records]
    panels = [
        ("train/loss", "loss"),
        ("train/lr", "learning rate"),
        ("train/temperature", "temperature exp(t)"),
        ("train/accuracy", "in-batch accuracy"),
    ]
    panels = [(k, t) for k, t in panels if all(k in r for r in records)]
    held_out = sorted({k for r in rows for k in r if k.endswith("_recall@1") and "/" in k})
    fig, axes = plt.subplots(1, len(panels) + bool(held_out), figsize=(4 * len(panels) + 4, 3.2))
    for ax, (key, title) in zip(axes, panels, strict=False):
        ax.plot(steps, [r[key] for r in records])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if held_out:
        ax = axes[-1]
        for key in held_out:
            points = [(r["step"], 100 * r[key]) for r in rows if key in r]
            ax.plot(*zip(*points, strict=True), marker="o", label=key)
        ax.set_title("held-out recall@1 (%)")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_search(
    queries: Sequence[str],
    results: Sequence[Sequence[tuple[np.ndarray, str, bool | None]]],
    out: str | os.PathLike,
) -> Path:
    """A contact sheet of text->image search: one row per query, its top images left to right,
    each captioned, framed green when it is a hit and red when not (no frame: unknown)."""
    plt = _pyplot()
    cols = max(len(r) for r in results)
    fig, axes = plt.subplots(
        len(queries), cols + 1, figsize=(1.9 * (cols + 1), 2.1 * len(queries)), squeeze=False
    )
    for i, (query, row) in enumerate(zip(queries, results, strict=True)):
        axes[i, 0].set_axis_off()
        axes[i, 0].text(
            0.5, 0.5, f'"{query}"', ha="center", va="center", fontsize=11, weight="bold"
        )
        for j in range(cols):
            ax = axes[i, j + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.set_axis_off()
                continue
            image, caption, hit = row[j]
            ax.imshow(image)
            ax.set_xlabel(caption[:24], fontsize=7)
            color = {True: "green", False: "red", None: "lightgray"}[hit]
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3 if hit is not None else 1)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

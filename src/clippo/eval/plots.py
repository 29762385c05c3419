"""Every picture clippo draws: training curves from ``metrics.jsonl``, example retrievals, and
the representation analyses of ``clippo.analysis`` (the modality-gap scatter, pair-distance
histograms, patch-embedding tiles). The functions take arrays, so they compute nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clippo.atomic import atomic_write


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
    return _save(fig, out, dpi=110)


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
    return _save(fig, out, dpi=90)


def _save(fig, out: str | os.PathLike, dpi: int) -> Path:
    """Writes ``fig`` to ``out`` atomically (a half-written PNG never appears) and closes it."""
    plt = _pyplot()
    out = Path(out)
    atomic_write(out, lambda p: fig.savefig(p, dpi=dpi, format=out.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out


def plot_modality_gap(
    image_2d: np.ndarray,
    text_2d: np.ndarray,
    out: str | os.PathLike,
    *,
    title: str = "",
    explained: Sequence[float] | None = None,
) -> Path:
    """Images and texts on the first two principal axes of their joint matrix, in two colours
    (the paper's Fig. 5: images blue, texts orange)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    size = 8 if len(image_2d) + len(text_2d) < 4000 else 3
    ax.scatter(*np.asarray(image_2d).T, s=size, alpha=0.6, color="tab:blue", label="images")
    ax.scatter(*np.asarray(text_2d).T, s=size, alpha=0.6, color="tab:orange", label="texts")
    if explained is not None:
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}%)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, markerscale=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, dpi=100)


def plot_pair_distances(
    matching: np.ndarray,
    mismatched: np.ndarray | None,
    out: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """Histogram of the distances between matching image/text embeddings (the paper's
    Fig. 11), beside those of mismatched pairs, each with its mean marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    everything = np.concatenate([matching, mismatched if mismatched is not None else []])
    bins = np.linspace(everything.min(), everything.max(), 41)
    groups = [("matching pairs", matching, "tab:green")]
    if mismatched is not None:
        groups.append(("mismatched pairs", mismatched, "tab:gray"))
    for label, values, color in groups:
        mean = float(np.mean(values))
        ax.hist(values, bins=bins, alpha=0.55, color=color, label=f"{label} (mean {mean:.3f})")
        ax.axvline(mean, color=color, linestyle="--", linewidth=1.2)
    ax.set_xlabel("Euclidean distance of L2-normalised embeddings")
    ax.set_ylabel("pairs")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, dpi=100)


def plot_patch_components(
    tiles: np.ndarray,
    out: str | os.PathLike,
    *,
    title: str = "",
    explained: Sequence[float] | None = None,
    columns: int = 10,
) -> Path:
    """Principal components of a patch-embedding kernel (k, C, P, P) as a grid of image tiles
    (the paper's Fig. 12), each stretched to its own full range, first component top left."""
    plt = _pyplot()
    tiles = np.asarray(tiles, dtype=np.float64)
    if tiles.ndim != 4 or tiles.shape[1] not in (1, 3):
        raise ValueError(f"tiles must be (k, 1 or 3, P, P), got shape {tiles.shape}")
    k, _, p, q = tiles.shape
    cols = min(columns, k)
    rows = -(-k // cols)
    gap = max(1, p // 4)
    # One mosaic, drawn with a single imshow: white between tiles, each tile on its own range.
    mosaic = np.ones((rows * (p + gap) - gap, cols * (q + gap) - gap, 3))
    for i, tile in enumerate(tiles):
        tile = tile.transpose(1, 2, 0)
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.full_like(tile, 0.5)
        r, c = divmod(i, cols)
        mosaic[r * (p + gap) : r * (p + gap) + p, c * (q + gap) : c * (q + gap) + q] = tile
    fig, ax = plt.subplots(figsize=(1.0 * cols + 0.2, 1.1 * rows + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    if explained is not None:
        for i in range(k):
            r, c = divmod(i, cols)
            label = f"{i + 1}: {100 * explained[i]:.1f}%"
            x, y = c * (q + gap) + q / 2, r * (p + gap) - 0.6
            ax.text(x, y, label, ha="center", va="bottom", fontsize=6)
    ax.set_title(title, fontsize=9, pad=10)
    fig.tight_layout()
    return _save(fig, out, dpi=100)


def per_language_values(metrics: Mapping[str, float], metric: str) -> dict[str, float]:
    """``{language: value}`` of ``LANG/METRIC`` entries (any ``SET/`` prefix dropped), no mean."""
    out = {}
    for key, value in metrics.items():
        head, _, name = key.rpartition("/")
        lang = head.rpartition("/")[2]
        if name == metric and lang and lang != "mean":
            out[lang] = float(value)
    return out


def plot_per_language_recall(
    runs: Mapping[str, Mapping[str, float]],
    out: str | os.PathLike,
    *,
    k: int = 1,
    chance: Mapping[str, float] | None = None,
) -> Path:
    """Per-language recall@k bars (paper Fig. 3/8): one panel per direction (image->text,
    text->image, bitext when present), one bar colour per run (``{run name: metrics}`` from the
    multilingual evaluator), languages in the order of the first run's mean over directions;
    ``chance`` (``{direction: recall}``) draws a dashed line."""
    plt = _pyplot()
    directions = [
        (d, title)
        for d, title in (
            ("i2t", "image -> text"),
            ("t2i", "text -> image"),
            ("bitext", "text -> English text (bitext)"),
        )
        if any(per_language_values(m, f"{d}_recall@{k}") for m in runs.values())
    ]
    if not runs or not directions:
        raise ValueError(f"no per-language recall@{k} in the metrics")
    first = next(iter(runs.values()))
    score: dict[str, list[float]] = {}
    for d, _ in directions:
        for lang, v in per_language_values(first, f"{d}_recall@{k}").items():
            score.setdefault(lang, []).append(v)
    langs = sorted(score, key=lambda lang: (-sum(score[lang]) / len(score[lang]), lang))
    width = 0.8 / len(runs)
    fig, axes = plt.subplots(
        len(directions), 1, figsize=(max(6.0, 0.22 * len(langs) + 1.5), 2.6 * len(directions))
    )
    axes = np.atleast_1d(axes)
    x = np.arange(len(langs))
    for ax, (d, title) in zip(axes, directions, strict=True):
        for i, (name, metrics) in enumerate(runs.items()):
            values = per_language_values(metrics, f"{d}_recall@{k}")
            heights = [100 * values.get(lang, np.nan) for lang in langs]
            mean = [v for v in (values.get(lang) for lang in langs) if v is not None]
            label = f"{name} (mean {100 * sum(mean) / max(len(mean), 1):.1f})"
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, heights, width, label=label)
        if chance and d in chance:
            ax.axhline(100 * chance[d], color="gray", linestyle="--", linewidth=1, label="chance")
        ax.set_title(f"{title}: recall@{k} (%)", fontsize=10)
        ax.set_xticks(x, langs, rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(langs) - 0.4)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, out, dpi=110)


def plot_tokenization(
    rows: Sequence[Mapping[str, Any]], out: str | os.PathLike, *, title: str = ""
) -> Path:
    """Tokenization efficiency per language (paper Fig. 4/9) for one corpus: per tokenizer, the
    mean sequence lengths of CLIPPO and of the tokenizer (top), and the share of texts where
    CLIPPO is shorter with the paper's 75% line (bottom). ``rows``: dicts with ``language``,
    ``tokenizer``, ``mean_clippo``, ``mean_tokens``, ``clippo_shorter``."""
    plt = _pyplot()
    if not rows:
        raise ValueError("no rows to plot")
    tokenizers = list(dict.fromkeys(r["tokenizer"] for r in rows))
    langs = list(dict.fromkeys(r["language"] for r in rows))
    clippo = {r["language"]: r["mean_clippo"] for r in rows}
    langs.sort(key=lambda lang: (clippo[lang], lang))
    at = {(r["tokenizer"], r["language"]): r for r in rows}
    fig, axes = plt.subplots(2, 1, figsize=(max(5.0, 0.22 * len(langs) + 2), 6.0), sharex=True)
    x = np.arange(len(langs))
    width = 0.8 / (len(tokenizers) + 1)
    axes[0].bar(x - 0.4 + width / 2, [clippo[lang] for lang in langs], width, label="CLIPPO")
    for i, name in enumerate(tokenizers):
        pos = x - 0.4 + (i + 1.5) * width
        axes[0].bar(pos, [at.get((name, g), {}).get("mean_tokens", np.nan) for g in langs], width,
                    label=name)  # fmt: skip
        shares = [100 * at.get((name, g), {}).get("clippo_shorter", np.nan) for g in langs]
        axes[1].bar(x + (i - (len(tokenizers) - 1) / 2) * (0.8 / len(tokenizers)), shares,
                    0.8 / len(tokenizers), label=f"vs {name}")  # fmt: skip
    axes[0].set_ylabel("mean tokens per text")
    axes[0].set_title(title or "sequence length: CLIPPO patches vs SentencePiece pieces")
    axes[1].axhline(75, color="gray", linestyle="--", linewidth=1, label="75%")
    axes[1].set_ylabel("texts CLIPPO shorter (%)")
    axes[1].set_ylim(0, 100)
    axes[1].set_xticks(x, langs, rotation=90, fontsize=7)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out, dpi=110)


def plot_typographic_examples(
    examples: Sequence[Mapping[str, Any]], out: str | os.PathLike, title: str = ""
) -> Path:
    """Attacked images as the model saw them, one row per font, one column per image, each
    titled with its true class, the written one and the model's answer (green: still right;
    red: the written class; black: another). ``examples`` is the typographic evaluator's."""
    plt = _pyplot()
    fonts = sorted({f for ex in examples for f in ex.get("images", {})})
    if not examples or not fonts:
        raise ValueError("no attacked examples to draw")
    fig, axes = plt.subplots(
        len(fonts), len(examples), figsize=(1.9 * len(examples), 2.7 * len(fonts)), squeeze=False
    )
    for r, font in enumerate(fonts):
        for c, ex in enumerate(examples):
            ax = axes[r][c]
            ax.axis("off")
            if font not in ex.get("images", {}):
                continue
            ax.imshow(ex["images"][font], interpolation="nearest")
            pred = ex["pred"].get(font, "?")
            color = "green" if pred == ex["label"] else "red" if pred == ex["written"] else "black"
            ax.set_title(
                f"true: {ex['label']}\nwritten: {ex['written']}\n{font}: {pred}",
                fontsize=7,
                color=color,
            )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out, dpi=120)

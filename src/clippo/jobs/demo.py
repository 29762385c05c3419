"""The demo: a small CLIPPO trained from scratch on Debian's openclipart, on the CPU.

``demo_config`` builds the shards (``clippo.data.build.openclipart``) and the packaged
``demo.yaml`` config pointing at them; ``clippo.jobs.pretrain.train`` trains and evaluates it;
``write_report`` writes ``metrics.json``, the training curves and a search picture. ``clippo
demo`` runs the three and prints what happens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clippo.atomic import atomic_write_text
from clippo.data import iter_tar_samples, load_image, sample_texts
from clippo.data.build.openclipart import build_openclipart_shards
from clippo.data.shards import expand_urls
from clippo.eval.plots import plot_search, plot_training_curves
from clippo.eval.sets import EvalSets
from clippo.jobs.search import top_matches
from clippo.models import from_pretrained
from clippo.train.config import ExperimentConfig, load_config, resolve_config

# The headline metrics, first in the printed table.
DEMO_KEYS = tuple(
    f"val/{k}"
    for k in ("i2t_recall@1", "t2i_recall@1", "i2t_recall@5", "t2i_recall@5", "zeroshot_top1")
)


def demo_config(
    data: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Callable[[int], Any] | None = None,
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Builds (or finds) the openclipart shards in ``data``; returns the demo config reading
    them, with ``overrides`` applied, and the builder's stats."""
    data = Path(data)
    load_config(resolve_config("demo"), overrides)  # a bad --set fails before the shards are built
    stats = build_openclipart_shards(data, progress=progress)
    cfg = load_config(
        resolve_config("demo"),
        [
            f"data.train={data / stats['train_pattern']}",
            f"eval.sets.val.data={data / stats['val_pattern']}",
            *overrides,
        ],
    )
    return cfg, stats


def final_results(results: dict[str, Any], sets: EvalSets, workdir: str | Path) -> dict[str, float]:
    """The held-out metrics of a demo run; a run that had already finished (so trained no
    step now) is evaluated from its saved model."""
    final = {k: v for k, v in results.items() if not k.startswith("train/")}
    if not final:
        final = sets.run(from_pretrained(Path(workdir) / "model"))
    return final


# Everyday queries for the demo's search picture, and the word that makes an image a hit when
# one of its captions contains it (openclipart titles, descriptions and keywords).
DEMO_QUERIES = {
    "a penguin": "penguin",
    "a red heart": "heart",
    "a flower": "flower",
    "a car": "car",
    "a bird": "bird",
    "an apple": "apple",
    "a tree": "tree",
    "a flag": "flag",
}


def _is_hit(word: str, captions: list[str]) -> bool:
    return any(re.search(rf"\b{word}s?\b", c.lower()) for c in captions)


def search_picture(model, cfg: ExperimentConfig, sets: EvalSets, out: Path, top: int = 6) -> Path:
    """Text->image search over the held-out images for ``DEMO_QUERIES``: the ``top`` images per
    query, framed green where a caption of the image names what was asked for."""
    val = sets.embedded["val"]
    matches = top_matches(model, list(DEMO_QUERIES), val.image, top)
    wanted = {val.keys[i] for row in matches for i, _ in row}
    found = {}
    for url in expand_urls(cfg.eval.sets["val"].data):
        for sample in iter_tar_samples(url):
            if sample["__key__"] in wanted:
                raw = next(v for k, v in sample.items() if k in ("jpg", "png", "webp", "jpeg"))
                found[sample["__key__"]] = (np.asarray(load_image(raw)), sample_texts(sample))
    rows = []
    for word, row in zip(DEMO_QUERIES.values(), matches, strict=True):
        cells = []
        for i, _ in row:
            image, captions = found[val.keys[i]]
            cells.append((image, captions[0], _is_hit(word, captions)))
        rows.append(cells)
    return plot_search(list(DEMO_QUERIES), rows, out)


def write_report(
    cfg: ExperimentConfig, workdir: str | Path, results: dict[str, float], sets: EvalSets
) -> list[Path]:
    """``metrics.json``, the training curves (with held-out recall during training) and the
    search picture over the held-out images; returns the files written."""
    workdir = Path(workdir)
    atomic_write_text(workdir / "metrics.json", json.dumps(results, indent=2) + "\n")
    curves = plot_training_curves(workdir / "metrics.jsonl", workdir / "training_curves.png")
    model = from_pretrained(workdir / "model")
    search = search_picture(model, cfg, sets, workdir / "search.png")
    return [workdir / "metrics.json", curves, search]

"""The demo: a small CLIPPO trained from scratch on Debian's openclipart, on the CPU.

``demo_config`` builds the shards (``clippo.data.build.openclipart``) and the packaged
``demo.yaml`` config pointing at them; ``clippo.jobs.pretrain.train`` trains and evaluates it;
``write_report`` writes ``metrics.json`` and the pictures. ``clippo demo`` runs the three and
prints what happens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clippo.atomic import atomic_write_text
from clippo.data import iter_tar_samples, load_image
from clippo.data.build.openclipart import build_openclipart_shards
from clippo.data.shards import expand_urls
from clippo.eval.plots import plot_retrievals, plot_training_curves
from clippo.eval.sets import EvalSets
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


def write_report(
    cfg: ExperimentConfig, workdir: str | Path, results: dict[str, float], sets: EvalSets
) -> list[Path]:
    """``metrics.json``, the training curves and the first six held-out images with their
    top-3 captions; returns the files written."""
    workdir = Path(workdir)
    atomic_write_text(workdir / "metrics.json", json.dumps(results, indent=2) + "\n")
    written = [workdir / "metrics.json"]
    written.append(plot_training_curves(workdir / "metrics.jsonl", workdir / "training_curves.png"))
    val = sets.embedded["val"]
    top = (val.image[:6] @ val.text.T).topk(3, dim=1).indices
    wanted = set(val.keys[:6])
    pictures = {}
    for url in expand_urls(cfg.eval.sets["val"].data):
        for sample in iter_tar_samples(url):
            if sample["__key__"] in wanted:
                raw = next(v for k, v in sample.items() if k in ("jpg", "png", "webp", "jpeg"))
                pictures[sample["__key__"]] = np.asarray(load_image(raw))
    written.append(
        plot_retrievals(
            [pictures[k] for k in val.keys[:6]],
            [val.texts[i] for i in range(6)],
            [[val.texts[j] for j in row] for row in top.tolist()],
            [
                [val.text_image_ids[j].item() == i for j in row]
                for i, row in enumerate(top.tolist())
            ],
            workdir / "retrievals.png",
        )
    )
    return written

"""Prints the docs/results.md table rows of finished runs: held-out metrics, size, compute.

    python scripts/results_table.py runs/demo runs/clippo_untied_demo runs/onetower_clip_demo ...
    python scripts/results_table.py --glue runs/lang_*     # + the language tasks' dev scores

Reads each workdir's config.yaml, metrics.json (the final evaluation), model/ (parameters;
"trained" excludes locked LiT towers), seconds (wall-clock training time, written by
scripts/compare.sh) and, with --glue, glue*/TASK_metrics.json (`clippo finetune glue`,
one directory per fine-tuning seed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from clippo.models import from_pretrained
from clippo.train.config import load_config

COLUMNS = [
    ("i2t_recall@1", "I→T R@1"),
    ("t2i_recall@1", "T→I R@1"),
    ("i2t_recall@5", "I→T R@5"),
    ("t2i_recall@5", "T→I R@5"),
    ("zeroshot_top1", "0-shot top-1"),
    ("fewshot_10shot", "10-shot"),
]
GLUE_TASKS = ["fortune_topic", "manual_nsp", "manual_translation"]  # data/langtasks


def final_metrics(workdir: Path) -> dict:
    """metrics.json (`clippo train` / `clippo demo`), else the last evaluation in metrics.jsonl."""
    if (workdir / "metrics.json").is_file():
        found = json.loads((workdir / "metrics.json").read_text())
    else:
        rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if "i2t_recall@1" in r or "val/i2t_recall@1" in r]
        if not evals:
            raise SystemExit(f"{workdir}: no final evaluation (did the run finish?)")
        found = evals[-1]
    # Runs since the evaluation sets name their metrics "val/..."; earlier runs did not.
    return {k.removeprefix("val/"): v for k, v in found.items()}


def glue_cells(workdir: Path) -> list[str]:
    """Dev score x100 of each local language task: the mean over fine-tuning seeds (glue/,
    glue_seedN/) followed by each seed's score, '-' where it was not fine-tuned."""
    cells = []
    for task in GLUE_TASKS:
        files = sorted(workdir.glob(f"glue*/{task}_metrics.json"))
        scores = [100 * json.loads(f.read_text())["scores"][task] for f in files]
        if not scores:
            cells.append("-")
            continue
        each = " / ".join(f"{x:.1f}" for x in scores)
        cells.append(f"{sum(scores) / len(scores):.2f}" + (f" ({each})" if len(scores) > 1 else ""))
    return cells


def row(workdir: Path, glue: bool = False) -> str:
    cfg = load_config(yaml.safe_load((workdir / "config.yaml").read_text()))
    pairs = cfg.data.text_pair_fraction
    model = from_pretrained(workdir / "model")
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    m = final_metrics(workdir)
    seconds = workdir / "seconds"
    minutes = f"{int(seconds.read_text()) / 60:.1f}" if seconds.is_file() else "?"
    cells = [f"{100 * m[k]:.2f}" for k, _ in COLUMNS] + (glue_cells(workdir) if glue else [])
    size = f"{total / 1e6:.2f}M" + (f" ({trained / 1e6:.2f}M trained)" if trained != total else "")
    return (
        f"| {workdir.name} | `{cfg.model.name}` | "
        + " | ".join(cells)
        # steps with the co-training step rule applied
        + f" | {size} | {cfg.effective_total_steps} x {cfg.data.batch_size}"
        + (f" ({100 * pairs:.0f}% text pairs)" if pairs else "")
        + f" | {minutes} |"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--glue", action="store_true", help="add the language tasks' columns")
    args = parser.parse_args(argv)
    head = ["run", "model", *(c for _, c in COLUMNS), *(GLUE_TASKS if args.glue else [])]
    head += ["params", "steps x batch", "train min"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for w in args.workdirs:
        print(row(w, args.glue))


if __name__ == "__main__":
    main(sys.argv[1:])

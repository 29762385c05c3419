"""Prints the docs/results.md table rows of finished runs: held-out metrics, size, compute.

    python scripts/results_table.py runs/demo runs/clippo_untied_demo runs/onetower_clip_demo ...
    python scripts/results_table.py --glue runs/lang_*     # + the language tasks' dev scores
    python scripts/results_table.py --analysis runs/zoo_*  # gap, distances, patch components
    python scripts/results_table.py --typographic runs/zoo_*   # the typographic attack

Reads each workdir's config.yaml, metrics.json (the final evaluation), model/ (parameters;
"trained" excludes locked LiT towers), seconds (wall-clock training time, written by
scripts/compare.sh) and, with --glue, glue*/TASK_metrics.json (`clippo finetune glue`,
one directory per fine-tuning seed). --analysis and --typographic read runs/analysis/NAME/
(gap.json, patches.json, typographic.json: `bash scripts/compare.sh zoo`'s analyze step).
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
    cells = [f"{100 * m[k]:.2f}" if k in m else "-" for k, _ in COLUMNS]  # '-': not evaluated
    cells += glue_cells(workdir) if glue else []
    size = f"{total / 1e6:.2f}M" + (f" ({trained / 1e6:.2f}M trained)" if trained != total else "")
    return (
        f"| {workdir.name} | `{cfg.model.name}` | "
        + " | ".join(cells)
        # steps with the co-training step rule applied
        + f" | {size} | {cfg.effective_total_steps} x {cfg.data.batch_size}"
        + (f" ({100 * pairs:.0f}% text pairs)" if pairs else "")
        + f" | {minutes} |"
    )


def analysis_row(workdir: Path) -> str:
    """Modality gap, matching / mismatched pair distances, and the patch components'
    horizontal / high-frequency shares per patch embedding (image; text when untied)."""
    out = workdir.parent / "analysis" / workdir.name
    gap = json.loads((out / "gap.json").read_text())
    patches = out / "patches.json"  # absent for a model without a ViT patch embedding
    towers = json.loads(patches.read_text())["towers"] if patches.exists() else {}
    shares = ", ".join(
        f"{name} {t['horizontal_frequency_share']:.3f} / {t['high_frequency_share']:.3f}"
        for name, t in towers.items()
    )
    name = load_config(yaml.safe_load((workdir / "config.yaml").read_text())).model.name
    return (
        f"| {workdir.name} | `{name}` | {gap['modality_gap']:.3f} | "
        f"{gap['pair_distance']['mean']:.3f} | {gap['mismatched_pair_distance']['mean']:.3f} | "
        f"{shares or 'none (no patch embedding)'} |"
    )


def typographic_cells(workdir: Path) -> list[tuple[str, str, list[float]]]:
    """(benchmark, font, [clean top-1, attacked top-1, attack rate, written class's rate on
    clean images]) of a run's typographic.json, as fractions."""
    results = json.loads(
        (workdir.parent / "analysis" / workdir.name / "typographic.json").read_text()
    )
    out = []
    for bench, m in results.items():
        fonts = [k.removeprefix("typographic_").removesuffix("_attack_rate") for k in m
                 if k.endswith("_attack_rate")]  # fmt: skip
        for font in fonts:
            keys = ["clean_top1", f"{font}_top1", f"{font}_attack_rate", "clean_written_rate"]
            out.append((bench, font, [m[f"typographic_{k}"] for k in keys]))
    return out


def typographic_rows(workdir: Path) -> list[str]:
    """Per benchmark and font: clean top-1, attacked top-1, attack rate, and the written
    class's rate on clean images (x100)."""
    return [
        f"| {workdir.name} | {bench} | {font} | "
        + " | ".join(f"{100 * x:.2f}" for x in cells)
        + " |"
        for bench, font, cells in typographic_cells(workdir)
    ]


def typographic_summary(workdirs: list[Path]) -> str:
    """The attack against its baseline over every cell: how far the attack rate is from the
    written class's clean rate, and how often attacked top-1 is above / below clean top-1."""
    cells = [c for w in workdirs for _, _, c in typographic_cells(w)]
    rate = [100 * (c[2] - c[3]) for c in cells]
    top1 = [100 * (c[1] - c[0]) for c in cells]
    above, below = sum(r > 1e-6 for r in rate), sum(r < -1e-6 for r in rate)
    return (
        f"{len(cells)} cells: attack rate minus the written class's clean rate "
        f"{min(rate):+.2f} to {max(rate):+.2f} points (above in {above}, below in {below}); "
        f"attacked top-1 above clean in {sum(t > 1e-6 for t in top1)}, "
        f"below in {sum(t < -1e-6 for t in top1)} (moves {min(top1):+.2f} to {max(top1):+.2f})"
    )


TABLES = {
    "analysis": (
        ["run", "model", "gap", "pair dist. mean", "mismatched mean",
         "patches: horizontal / high share"],
        lambda w: [analysis_row(w)],
    ),
    "typographic": (
        ["run", "set", "font", "clean top-1", "attacked top-1", "attack rate",
         "written class on clean images"],
        typographic_rows,
    ),
}  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--glue", action="store_true", help="add the language tasks' columns")
    parser.add_argument("--analysis", action="store_true", help="the representation analyses")
    parser.add_argument("--typographic", action="store_true", help="the typographic attack")
    args = parser.parse_args(argv)
    for table in ("analysis", "typographic"):
        if getattr(args, table):
            head, rows = TABLES[table]
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for w in args.workdirs:
                print("\n".join(rows(w)))
            if table == "typographic":
                print("\n" + typographic_summary(args.workdirs))
            return
    head = ["run", "model", *(c for _, c in COLUMNS), *(GLUE_TASKS if args.glue else [])]
    head += ["params", "steps x batch", "train min"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for w in args.workdirs:
        print(row(w, args.glue))


if __name__ == "__main__":
    main(sys.argv[1:])

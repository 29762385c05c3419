"""Compares per-language recall (bitext or image<->text) of runs on tuxpaint (docs/multilingual.md).

    python scripts/multilingual_compare.py BASE_METRICS RUN_METRICS [--pairs STATS_JSON] [--k 1] \
        [--direction bitext|i2t|t2i] [--plot OUT.png --labels BASE RUN] [--rerun METRICS]

Each METRICS file is a run's ``metrics.json`` (keys ``tuxpaint/LANG/bitext_recall@k``) or the
``metrics.json`` of ``clippo eval multilingual`` (the same keys under ``"metrics"``). With
``--pairs`` (the ``stats.json`` of the translation-pair shards), the comparison covers the
languages the run was co-trained on and says in how many the run beats the base, and the ratio
of the means. Prints a markdown table; ``--plot`` draws both runs' per-language recall.
``--rerun`` (the same recipe run again, another seed) adds in which languages both runs, one of
them or neither is above the base, and how far the two runs' recall lies apart per language.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from clippo.eval.plots import per_language_values, plot_per_language_recall


def metrics(path: str) -> dict[str, float]:
    """A metrics file's ``{name: value}``."""
    data = json.loads(Path(path).read_text())
    return data.get("metrics", data)


def recall(path: str, k: int, direction: str = "bitext") -> dict[str, float]:
    """``{language: recall@k}`` of a metrics file in ``direction`` (bitext, i2t, t2i)."""
    out = per_language_values(metrics(path), f"{direction}_recall@{k}")
    if not out:
        raise SystemExit(f"{path}: no */{direction}_recall@{k} metrics")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("run")
    ap.add_argument("--pairs", help="stats.json of the translation-pair shards")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument(
        "--direction",
        default="bitext",
        choices=("bitext", "i2t", "t2i"),
        help="which recall the table compares (the plot draws all)",
    )
    ap.add_argument("--plot", help="a PNG of both runs' per-language recall@k")
    ap.add_argument("--labels", nargs=2, default=["base", "run"], metavar=("BASE", "RUN"))
    ap.add_argument("--rerun", help="metrics of the same recipe run again (another seed)")
    args = ap.parse_args()
    base = recall(args.base, args.k, args.direction)
    run = recall(args.run, args.k, args.direction)
    languages = sorted(set(base) & set(run))
    if args.pairs:
        trained = json.loads(Path(args.pairs).read_text())["pairs_per_language"]
        languages = [lang for lang in languages if lang in trained]
    print(f"| language | base R@{args.k} | run R@{args.k} | gain |")
    print("|---|---:|---:|---:|")
    for lang in sorted(languages, key=lambda lang: run[lang] - base[lang], reverse=True):
        gain = 100 * (run[lang] - base[lang])
        print(f"| {lang} | {100 * base[lang]:.2f} | {100 * run[lang]:.2f} | {gain:+.2f} |")
    mean_base = sum(base[lang] for lang in languages) / len(languages)
    mean_run = sum(run[lang] for lang in languages) / len(languages)
    beaten = sum(run[lang] > base[lang] for lang in languages)
    ratio = mean_run / mean_base if mean_base else float("inf")
    print(
        f"\n{len(languages)} languages: mean {100 * mean_base:.2f} -> {100 * mean_run:.2f} "
        f"({ratio:.1f}x, {100 * (mean_run - mean_base):+.2f} points); the run is higher in "
        f"{beaten} of {len(languages)}"
    )
    if args.rerun:
        again = recall(args.rerun, args.k, args.direction)
        above = {lang: (run[lang] > base[lang], again[lang] > base[lang]) for lang in languages}
        for name, want in (
            ("both", (True, True)),
            ("run only", (True, False)),
            ("rerun only", (False, True)),
            ("neither", (False, False)),
        ):
            langs = [lang for lang, a in above.items() if a == want]
            print(
                f"above the base in {name}: {len(langs)}"
                + (f" ({', '.join(langs)})" if 0 < len(langs) < 10 else "")
            )
        gaps = [100 * abs(run[lang] - again[lang]) for lang in languages]
        print(
            f"|run - rerun| per language: median {statistics.median(gaps):.2f}, "
            f"largest {max(gaps):.2f} points"
        )
    if args.plot:
        runs = {args.labels[1]: metrics(args.run), args.labels[0]: metrics(args.base)}
        print(f"wrote {plot_per_language_recall(runs, args.plot, k=args.k)}")


if __name__ == "__main__":
    main()

"""Compares per-language bitext recall of runs on the tuxpaint set (docs/multilingual.md).

    python scripts/multilingual_compare.py BASE_METRICS RUN_METRICS [--pairs STATS_JSON] [--k 1]

Each METRICS file is a run's ``metrics.json`` (keys ``tuxpaint/LANG/bitext_recall@k``) or the
``metrics.json`` of ``clippo eval multilingual`` (the same keys under ``"metrics"``). With
``--pairs`` (the ``stats.json`` of the translation-pair shards), the comparison covers the
languages the run was co-trained on and says in how many the run beats the base, and the ratio
of the means. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def bitext(path: str, k: int) -> dict[str, float]:
    """``{language: bitext recall@k}`` of a metrics file."""
    data = json.loads(Path(path).read_text())
    metrics = data.get("metrics", data)
    pattern = re.compile(rf"^(?:[^/]+/)?([^/]+)/bitext_recall@{k}$")
    out = {}
    for key, value in metrics.items():
        m = pattern.match(key)
        if m and m.group(1) != "mean":
            out[m.group(1)] = float(value)
    if not out:
        raise SystemExit(f"{path}: no */bitext_recall@{k} metrics")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("run")
    ap.add_argument("--pairs", help="stats.json of the translation-pair shards")
    ap.add_argument("--k", type=int, default=1)
    args = ap.parse_args()
    base, run = bitext(args.base, args.k), bitext(args.run, args.k)
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


if __name__ == "__main__":
    main()

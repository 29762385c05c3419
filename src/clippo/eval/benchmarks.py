"""The paper's benchmarks as evaluation sets: each kind's default evaluators, and the table of
the paper's columns (Tables 1 and 6: ImageNet-1k zero-shot and 10-shot, COCO and Flickr30k
image<->text recall@1/5/10), read from ``{benchmark: {metric: value}}``.

``clippo eval --benchmark KIND=PATH`` and a config's ``eval.sets.NAME: {kind: KIND, data:
PATH}`` (with no evaluators listed) both take their evaluators from ``default_evaluators``.
"""

from __future__ import annotations

from collections.abc import Mapping

from clippo.data.benchmarks import find_train_folder

# Preset names -> (kind, what the data is); "openclipart" and "tuxpaint" are clippo's own
# labelled sets (openclipart shards; `clippo data tuxpaint`'s caption set with categories).
BENCHMARKS = {
    "imagenet": "ImageNet-1k val: ILSVRC2012_img_val/ + devkit, or val/WNID/ class folders",
    "imagefolder": "any class folders ROOT/CLASS/*.jpg (+ classnames.txt)",
    "coco": "MS-COCO 5k test: dataset_coco.json + val2014/",
    "flickr30k": "Flickr30k 1k test: dataset_flickr30k.json + flickr30k-images/",
    "openclipart": "clippo's openclipart val shards (22 categories)",
    "tuxpaint": "`clippo data tuxpaint` output (17 stamp categories)",
}
KIND_OF = {"openclipart": "", "tuxpaint": ""}

# The paper's columns, in its order: (benchmark, metric as metrics.json names it, header)
PAPER_COLUMNS = [
    ("imagenet", "zeroshot_top1", "I1k 0-shot"),
    ("imagenet", "fewshot_10shot", "I1k 10-shot"),
    *[
        (bench, f"{d}_recall@{k}", f"{label} {arrow} R@{k}")
        for bench, label in (("coco", "COCO"), ("flickr30k", "Flickr"))
        for d, arrow in (("i2t", "I->T"), ("t2i", "T->I"))
        for k in (1, 5, 10)
    ],
]


def default_evaluators(
    name: str, data: str, *, typographic: bool = False, fonts: list[str] | None = None
) -> dict[str, dict]:
    """The evaluators a benchmark preset runs by default; ``typographic`` adds the attack to
    the labelled ones (with ``fonts``)."""
    if name in ("coco", "flickr30k"):
        return {"retrieval": {"ks": [1, 5, 10]}}
    zeroshot = {
        "imagenet": {"prompts": "imagenet"},
        "imagefolder": {"templates": "imagenet"},
        "openclipart": {"prompts": "openclipart"},
        "tuxpaint": {"templates": "openclipart"},
    }.get(name)
    if zeroshot is None:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    out: dict[str, dict] = {"zeroshot": dict(zeroshot)}
    if name == "imagenet" and (train := find_train_folder(data)) is not None:
        out["fewshot"] = {"shots": [10], "train_data": str(train)}
    if typographic:
        out["typographic"] = dict(zeroshot, **({"fonts": list(fonts)} if fonts else {}))
    return out


def benchmark_kind(name: str) -> str:
    """The ``EvalSetConfig.kind`` of a preset ("" for shards and caption sets)."""
    return KIND_OF.get(name, name)


def paper_table(results: Mapping[str, Mapping[str, float]], label: str) -> list[str]:
    """Lines of a one-row table (values in %) with the paper's columns that ``results`` holds;
    a column whose benchmark was run without that metric shows "-"."""
    columns = [c for c in PAPER_COLUMNS if c[0] in results]
    if not columns:
        return []
    widths = [max(len(h), len(m), 6) for _, m, h in columns]
    pairs = list(zip(columns, widths, strict=True))
    head = f"{'model':<20} " + " ".join(f"{h:>{w}}" for (_, _, h), w in pairs)
    names = f"{'':<20} " + " ".join(f"{m:>{w}}" for (_, m, _), w in pairs)
    cells = []
    for (bench, metric, _), w in pairs:
        value = results[bench].get(metric)
        cells.append(f"{100 * value:>{w}.2f}" if value is not None else f"{'-':>{w}}")
    row = f"{label[:20]:<20} " + " ".join(cells)
    return [head, names, "-" * len(head), row]


def other_metrics_table(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Lines of ``benchmark  metric  value`` for every figure neither in the paper's columns nor
    in the typographic table (values in %, counts as they are)."""
    paper = {(b, m) for b, m, _ in PAPER_COLUMNS}
    rows = [
        (bench, metric, value)
        for bench, metrics in results.items()
        for metric, value in metrics.items()
        if (bench, metric) not in paper and not metric.startswith("typographic_")
    ]
    if not rows:
        return []
    wb = max(len(b) for b, _, _ in rows)
    wm = max(len(m) for _, m, _ in rows)
    lines = [f"{'benchmark':<{wb}}  {'metric':<{wm}}  {'value':>8}", "-" * (wb + wm + 12)]
    for bench, metric, value in rows:
        shown = f"{value:>8d}" if metric == "skipped" else f"{100 * value:>8.2f}"
        lines.append(f"{bench:<{wb}}  {metric:<{wm}}  {shown}")
    return lines


def typographic_table(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Lines of the typographic-attack table (%): per benchmark, clean top-1, and per font the
    attacked top-1 and attack rate."""
    rows = []
    for bench, metrics in results.items():
        if "typographic_clean_top1" not in metrics:
            continue
        fonts = [
            m.removeprefix("typographic_").removesuffix("_attack_rate")
            for m in metrics
            if m.endswith("_attack_rate")
        ]
        for font in fonts:
            rows.append(
                (
                    bench,
                    font,
                    metrics["typographic_clean_top1"],
                    metrics[f"typographic_{font}_top1"],
                    metrics[f"typographic_{font}_attack_rate"],
                    metrics["typographic_clean_written_rate"],
                )
            )
    if not rows:
        return []
    head = (
        f"{'benchmark':<14} {'font':<10} {'clean top-1':>11} {'attacked top-1':>14} "
        f"{'attack rate':>11} {'(clean)':>8}"
    )
    lines = [head, "-" * len(head)]
    for bench, font, clean, top1, rate, base in rows:
        lines.append(
            f"{bench:<14} {font:<10} {100 * clean:>11.2f} {100 * top1:>14.2f} "
            f"{100 * rate:>11.2f} {100 * base:>8.2f}"
        )
    return lines


def nest_metrics(flat: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"SET/METRIC": v}`` -> ``{SET: {METRIC: v}}`` (the ``--output`` JSON's shape)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        bench, _, metric = key.partition("/")
        out.setdefault(bench, {})[metric] = value
    return out

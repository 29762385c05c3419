"""Small, real language tasks from the offline corpora, written in the GLUE TSV layout.

- ``fortune_topic`` (SST-2 layout: ``sentence<TAB>label``): which fortunes file a quotation
  comes from, over ``FORTUNE_TOPICS``; at most ``max_per_class`` fortunes of at most
  ``max_chars`` characters per file; fortunes found in several of these files are dropped.
- ``manual_nsp`` (RTE layout: ``index<TAB>sentence1<TAB>sentence2<TAB>label``): is sentence2 the
  sentence that follows sentence1 in the English Debian reference manual (``next``), or a
  random other sentence of the same split (``not_next``)?
- ``manual_translation`` (RTE layout): is sentence2 the French translation of the English
  sentence1 (``translation``, from ``align_debian_manual``), or the French of another
  sentence of the same manual section when it has one, else of the same split?

Pair tasks split by manual section (a hash of its id), so no sentence is in both splits, and
are balanced exactly (half the anchors, drawn with the seed, get a negative).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from clippo.data.build.textpairs import (
    DEBIAN_REFERENCE_DIR,
    FORTUNES_DIR,
    align_debian_manual,
    is_prose,
    read_debian_manual,
    read_fortunes,
    split_sentences,
)

FORTUNE_TOPICS = (
    "computers",
    "drugs",
    "education",
    "food",
    "law",
    "love",
    "politics",
    "science",
    "sports",
    "work",
)


def _in_dev(key: str, dev_fraction: float) -> bool:
    digest = hashlib.sha1(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction


def _write_tsv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    for row in rows:
        for cell in row:
            if "\t" in str(cell) or "\n" in str(cell):
                raise ValueError(f"cell with a tab or newline would break {path}: {cell!r}")
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_fortune_topic(
    root: str | os.PathLike = FORTUNES_DIR,
    *,
    topics: tuple[str, ...] = FORTUNE_TOPICS,
    max_per_class: int = 150,
    max_chars: int = 300,
    dev_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[dict[str, list[list[str]]], dict[str, Any]]:
    """``{"train"|"dev": [[sentence, topic], ...]}`` and what was dropped (stratified split)."""
    by_topic = {t: read_fortunes(Path(root) / t) for t in topics}
    files_of: defaultdict[str, set] = defaultdict(set)
    for topic, entries in by_topic.items():
        for text in entries:
            files_of[text].add(topic)
    dropped: Counter = Counter()
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list[str]]] = {"train": [], "dev": []}
    for topic, entries in by_topic.items():
        kept = []
        for text in dict.fromkeys(entries):  # drop repeats inside one file, keep order
            if len(files_of[text]) > 1:
                dropped["in_several_topics"] += 1
            elif len(text) > max_chars:
                dropped["too_long"] += 1
            elif not any(c.isalpha() for c in text):
                dropped["no_letters"] += 1
            else:
                kept.append(text)
        dropped["duplicate_in_file"] += len(entries) - len(dict.fromkeys(entries))
        order = rng.permutation(len(kept))[:max_per_class]
        dropped["over_class_cap"] += max(0, len(kept) - max_per_class)
        n_dev = round(len(order) * dev_fraction)
        for j, i in enumerate(order):
            rows["dev" if j < n_dev else "train"].append([kept[i], topic])
    for split in rows:
        rows[split] = [rows[split][i] for i in rng.permutation(len(rows[split]))]
    return rows, {"dropped": dict(sorted(dropped.items()))}


def build_manual_nsp(
    root: str | os.PathLike = DEBIAN_REFERENCE_DIR,
    *,
    max_chars: int = 200,
    dev_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[dict[str, list[list[Any]]], dict[str, Any]]:
    """Next-sentence detection on the English manual; negatives from the same split."""
    anchors: dict[str, list[tuple[str, str]]] = {"train": [], "dev": []}
    pool: dict[str, list[str]] = {"train": [], "dev": []}
    for sec in read_debian_manual("en", root):
        split = "dev" if _in_dev(f"{sec.chapter}#{sec.section}", dev_fraction) else "train"
        sentences = [s for p in sec.paragraphs for s in split_sentences(p)]
        ok = [is_prose(s, max_chars=max_chars) for s in sentences]
        pool[split] += [s for s, good in zip(sentences, ok, strict=True) if good]
        for i in range(len(sentences) - 1):
            if ok[i] and ok[i + 1]:
                anchors[split].append((sentences[i], sentences[i + 1]))
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list[Any]]] = {}
    for split, pairs in anchors.items():
        negative = rng.permutation(len(pairs)) < len(pairs) // 2
        out = []
        for (a, b), neg in zip(pairs, negative, strict=True):
            if neg:
                while True:
                    other = pool[split][int(rng.integers(len(pool[split])))]
                    if other not in (a, b):
                        break
                out.append([a, other, "not_next"])
            else:
                out.append([a, b, "next"])
        rows[split] = [[i, *out[j]] for i, j in enumerate(rng.permutation(len(out)))]
    return rows, {"sentences": {k: len(v) for k, v in pool.items()}}


def build_manual_translation(
    root: str | os.PathLike = DEBIAN_REFERENCE_DIR,
    *,
    max_chars: int = 200,
    dev_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[dict[str, list[list[Any]]], dict[str, Any]]:
    """EN-FR translation detection on the manual; negatives from the same section if possible."""
    aligned, dropped = align_debian_manual("en", "fr", root)
    too_long = sum(max(len(a), len(b)) > max_chars for _, a, b in aligned)
    aligned = [p for p in aligned if max(len(p[1]), len(p[2])) <= max_chars]
    by_split: dict[str, list[tuple[str, str, str]]] = {"train": [], "dev": []}
    for key, a, b in aligned:
        by_split["dev" if _in_dev(key, dev_fraction) else "train"].append((key, a, b))
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list[Any]]] = {}
    same_section = 0
    for split, pairs in by_split.items():
        french_of: defaultdict[str, list[str]] = defaultdict(list)
        for key, _, b in pairs:
            french_of[key].append(b)
        all_french = [b for _, _, b in pairs]
        negative = rng.permutation(len(pairs)) < len(pairs) // 2
        out = []
        for (key, a, b), neg in zip(pairs, negative, strict=True):
            if not neg:
                out.append([a, b, "translation"])
                continue
            candidates = [f for f in french_of[key] if f != b]
            if candidates:
                same_section += 1
            else:
                candidates = all_french
            while True:
                other = candidates[int(rng.integers(len(candidates)))]
                if other != b:
                    break
            out.append([a, other, "not_translation"])
        rows[split] = [[i, *out[j]] for i, j in enumerate(rng.permutation(len(out)))]
    info = {
        "aligned_pairs": len(aligned) + too_long,
        "dropped": {**dict(sorted(dropped.items())), "pair_too_long": too_long},
        "negatives_from_same_section": same_section,
    }
    return rows, info


def build_language_tasks(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    fortunes_root: str | os.PathLike = FORTUNES_DIR,
    manual_root: str | os.PathLike = DEBIAN_REFERENCE_DIR,
) -> dict[str, Any]:
    """Writes ``OUT/{fortune_topic,manual_nsp,manual_translation}/{train,dev}.tsv`` and
    ``OUT/stats.json`` (sizes, label counts, drops); returns the stats."""
    out_dir = Path(out_dir)
    tasks = {
        "fortune_topic": (build_fortune_topic(fortunes_root, seed=seed), ["sentence", "label"]),
        "manual_nsp": (
            build_manual_nsp(manual_root, seed=seed),
            ["index", "sentence1", "sentence2", "label"],
        ),
        "manual_translation": (
            build_manual_translation(manual_root, seed=seed),
            ["index", "sentence1", "sentence2", "label"],
        ),
    }
    stats: dict[str, Any] = {"seed": seed}
    for name, ((rows, info), header) in tasks.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {}
        for split, split_rows in rows.items():
            _write_tsv(folder / f"{split}.tsv", header, split_rows)
            entry[split] = {
                "examples": len(split_rows),
                "labels": dict(sorted(Counter(r[-1] for r in split_rows).items())),
            }
        stats[name] = {**entry, **info}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats

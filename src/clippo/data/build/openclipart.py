"""Build train/val shards from the Debian openclipart packages (images + RDF alt-texts).

Each PNG under ``png/<category>/...`` gets its alt-texts from the RDF metadata of its SVG twin
under ``svg/<category>/...``: ``dc:title``, ``dc:description`` and the keywords (``rdf:li``
inside ``dc:subject``). Like YFCC-100M's title/description/tags, these are noisy, web-like
fields; training samples one per step. The top-level category folder is the class label.

What is dropped, and counted in ``stats.json``:

- a whole image (``skipped``): an exact duplicate of an earlier file (byte-identical PNGs
  appear in several folders; keeping one keeps train and val disjoint), no SVG twin, SVG that
  does not parse, no usable text field, broken image, or more than ``max_pixels`` pixels
  (never decoded: the size is read from the header);
- a text field (``dropped_fields``): empty, without a single letter (e.g. digits only), a
  description equal to the title, or a keyword list made only of generic tags ("unsorted" or
  the image's own category folder name). Single keywords that are empty or have no letter are
  dropped from their list. Keywords keep their order; underscores become spaces.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clippo.data.shards import write_split_shards
from clippo.data.transforms import DEFAULT_MAX_PIXELS, BadImageError, load_image

GENERIC_KEYWORDS = frozenset({"unsorted"})
_FORMATS = {"jpg": ("JPEG", {"quality": 90}), "png": ("PNG", {"optimize": False})}


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def read_svg_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The title, description and keywords of an SVG's RDF metadata ("" / [] when absent).

    Raises ValueError naming the file when the SVG is not well-formed XML.
    """
    fields: dict[str, Any] = {"title": "", "description": "", "keywords": []}
    try:
        for _, element in ET.iterparse(path, events=("end",)):
            if _local(element.tag) != "metadata":
                continue
            # Creator and publisher also hold dc:title elements: only the Work's own count.
            work = next((e for e in element.iter() if _local(e.tag) == "Work"), None)
            for child in work if work is not None else ():
                name = _local(child.tag)
                if name in ("title", "description"):
                    fields[name] = _norm(child.text)
                elif name == "subject":
                    fields["keywords"] = [
                        _norm(li.text) for li in child.iter() if _local(li.tag) == "li"
                    ]
            break
    except ET.ParseError as e:
        raise ValueError(f"{path}: SVG is not well-formed XML ({e})") from e
    return fields


def _has_letter(text: str) -> bool:
    return any(c.isalpha() for c in text)


def clean_alt_texts(
    title: str, description: str, keywords: Sequence[str], category: str
) -> tuple[dict[str, Any], Counter]:
    """Drop non-descriptive fields (see the module doc); returns the kept fields and the counts.

    The kept fields are {"title", "description", "keywords", "texts"}, where ``texts`` lists
    the non-empty ones in that order with the keywords joined by ", ".
    """
    dropped: Counter = Counter()
    kept: dict[str, Any] = {}
    for name, value in (("title", _norm(title)), ("description", _norm(description))):
        if not value:
            dropped[f"{name}_empty"] += 1
            value = ""
        elif not _has_letter(value):
            dropped[f"{name}_no_letters"] += 1
            value = ""
        elif name == "description" and value.casefold() == kept["title"].casefold():
            dropped["description_same_as_title"] += 1
            value = ""
        kept[name] = value
    words: list[str] = []
    for word in keywords:
        word = _norm(word.replace("_", " ") if word else "")
        if not word:
            dropped["keyword_empty"] += 1
        elif not _has_letter(word):
            dropped["keyword_no_letters"] += 1
        elif word.casefold() not in (w.casefold() for w in words):
            words.append(word)
    generic = GENERIC_KEYWORDS | {category.casefold(), category.replace("_", " ").casefold()}
    if not words:
        dropped["keywords_empty"] += 1
    elif all(w.casefold() in generic for w in words):
        dropped["keywords_generic"] += 1
        words = []
    kept["keywords"] = words
    kept["texts"] = [t for t in (kept["title"], kept["description"], ", ".join(words)) if t]
    return kept, dropped


def _process(job: tuple[str, str, str, int, str, int | None]) -> dict[str, Any]:
    """Pool worker: one PNG -> its encoded thumbnail and alt-texts, or a skip reason."""
    src_root, rel, category, image_size, image_format, max_pixels = job
    svg = Path(src_root, "svg", rel).with_suffix(".svg")
    if not svg.is_file():
        return {"skip": "no_svg"}
    try:
        meta = read_svg_metadata(svg)
    except ValueError:
        return {"skip": "bad_svg"}
    fields, dropped = clean_alt_texts(
        meta["title"], meta["description"], meta["keywords"], category
    )
    if not fields["texts"]:
        return {"skip": "no_text", "dropped": dropped}
    try:
        image = load_image(Path(src_root, "png", rel), max_pixels=max_pixels)
    except BadImageError as e:
        return {"skip": e.reason, "dropped": dropped}
    image.thumbnail((image_size, image_size), Image.Resampling.BICUBIC)
    fmt, options = _FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return {"image": buffer.getvalue(), "fields": fields, "dropped": dropped}


def _title_key(result: dict[str, Any]) -> str:
    """An example's first caption (its title), compared case- and space-insensitively."""
    return " ".join(result["fields"]["texts"][0].lower().split())


def _list_pngs(png_root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(png_root)).replace(os.sep, "/")
        for p in png_root.rglob("*")
        if p.suffix.lower() == ".png" and p.is_file()
    )


def build_openclipart_shards(
    out_dir: str | os.PathLike,
    *,
    src_root: str | os.PathLike = "/usr/share/openclipart",
    val_size: int = 1000,
    seed: int = 0,
    image_size: int = 256,
    shard_size: int = 500,
    image_format: str = "jpg",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    files: Sequence[str] | None = None,
    max_examples: int | None = None,
    workers: int = 2,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Write ``train-*.tar``, ``val-*.tar``, ``categories.json`` and ``stats.json``; return stats.

    Images are composited on white and stored with the longer side at most ``image_size``.
    ``val_size`` examples, drawn with ``seed`` among those whose title no other example has
    (so that every held-out caption identifies its image), are held out. ``files`` (paths
    relative to ``png/``) or ``max_examples`` (evenly spaced over the sorted list) restrict
    the build for tests. A finished build with the same parameters is left as is.
    ``progress(n)`` is called as files are processed.
    """
    out_dir, src_root = Path(out_dir), Path(src_root)
    png_root = src_root / "png"
    if not png_root.is_dir():
        raise FileNotFoundError(
            f"{png_root} not found: install the Debian packages openclipart-png and "
            "openclipart-svg, or pass src_root"
        )
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}")
    if shard_size < 1 or image_size < 1 or val_size < 0:
        raise ValueError("shard_size and image_size must be >= 1 and val_size >= 0")
    all_pngs = _list_pngs(png_root)
    if files is not None:
        chosen = sorted({str(f).replace(os.sep, "/") for f in files})
        missing = [f for f in chosen if not (png_root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"not under {png_root}: {missing[:5]}")
    else:
        chosen = all_pngs
    if max_examples is not None and max_examples < len(chosen):
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, max_examples).astype(int)]
    params = {
        "src_root": str(src_root.resolve()),
        "val_size": val_size,
        "seed": seed,
        "image_size": image_size,
        "shard_size": shard_size,
        "image_format": image_format,
        "max_pixels": max_pixels,
        "files_sha1": hashlib.sha1("\n".join(chosen).encode()).hexdigest(),
        "val_rule": "unique_title",
    }
    stats_path = out_dir / "stats.json"
    if stats_path.is_file():
        old = json.loads(stats_path.read_text())
        shards = old.get("shards", {}).get("train", []) + old.get("shards", {}).get("val", [])
        if old.get("params") == params and all((out_dir / s).is_file() for s in shards):
            return old

    start = time.perf_counter()
    categories = sorted(p.name for p in png_root.iterdir() if p.is_dir())
    label_of = {c: i for i, c in enumerate(categories)}
    index_of = {rel: i for i, rel in enumerate(all_pngs)}
    skipped: Counter = Counter()
    dropped: Counter = Counter()
    seen: set[str] = set()
    unique = []
    for rel in chosen:
        digest = hashlib.sha1((png_root / rel).read_bytes()).hexdigest()
        if digest in seen:
            skipped["duplicate_image"] += 1
        else:
            seen.add(digest)
            unique.append(rel)
    if len(unique) <= val_size:
        raise ValueError(f"val_size={val_size} leaves no training data from {len(unique)} images")

    jobs = [
        (str(src_root), rel, rel.split("/")[0], image_size, image_format, max_pixels)
        for rel in unique
    ]
    examples = []
    with multiprocessing.Pool(max(1, workers)) as pool:
        for rel, result in zip(unique, pool.imap(_process, jobs, chunksize=8), strict=True):
            dropped.update(result.get("dropped", {}))
            if "skip" in result:
                skipped[result["skip"]] += 1
            else:
                examples.append((rel, result))
            if progress is not None:
                progress(1)
    if len(examples) <= val_size:
        raise ValueError(f"val_size={val_size} leaves no training data from {len(examples)} usable")

    order = np.random.default_rng(seed).permutation(len(examples)).tolist()
    # Held-out pairs must be told apart by their caption (the title): a title two images share
    # makes either image's hit a tie, which retrieval counts as a miss, capping recall below
    # 100%. So only images whose title no other image has are held out.
    titles = Counter(_title_key(result) for _, result in examples)
    unique_titles = [i for i in order if titles[_title_key(examples[i][1])] == 1]
    if len(unique_titles) < val_size:
        raise ValueError(
            f"val_size={val_size}: only {len(unique_titles)} images have a title no other image has"
        )
    held_out = set(unique_titles[:val_size])
    splits = {"val": sorted(held_out), "train": [i for i in order if i not in held_out]}
    per_category = {c: {"train": 0, "val": 0} for c in categories}

    def members(split: str, i: int) -> list[tuple[str, bytes]]:
        rel, result = examples[i]
        category = rel.split("/")[0]
        per_category[category][split] += 1
        key = f"oc{index_of[rel]:05d}"
        fields = result["fields"]
        meta = {**fields, "category": category, "label": label_of[category], "path": f"png/{rel}"}
        return [
            (f"{key}.{image_format}", result["image"]),
            (f"{key}.txt", fields["texts"][0].encode()),
            (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()),
        ]

    written = write_split_shards(out_dir, splits, members, shard_size=shard_size)
    (out_dir / "categories.json").write_text(json.dumps(categories, indent=1) + "\n")
    stats = {
        "params": params,
        "files": len(chosen),
        "examples": len(examples),
        "train": len(splits["train"]),
        "val": len(splits["val"]),
        "skipped": dict(sorted(skipped.items())),
        "dropped_fields": dict(sorted(dropped.items())),
        "categories": categories,
        "per_category": per_category,
        **written,
        "seconds": round(time.perf_counter() - start, 1),
    }
    stats_path.write_text(json.dumps(stats, indent=1) + "\n")
    return stats

"""The multilingual evaluation set from Debian's ``tuxpaint-stamps-default`` (evaluation only).

Each stamp ``NAME.png`` under ``/usr/share/tuxpaint/stamps/<category>/...`` has a ``NAME.txt``:
its first line is the English description, then ``LANG.utf8=TEXT`` lines give it in up to 77
other languages (Tux Paint's locale codes: ``fr``, ``zh_CN``, ``ca@valencia``, ...); the Tamil
lines are TSCII bytes written as Latin-1 characters (Tux Paint draws them with a TSCII font) and
are read as Unicode Tamil (``clippo.data.build.tscii``). The set is
written in CrossModal-3600's layout (``clippo.data.captionsets``): ``captions.jsonl`` with the
English line under ``en`` and every other language under its code, and ``images/{key}.jpg``
(transparency composited on white, the longer side at most ``image_size``).

A stamp drawn only as an SVG (165 in the package; 785 have a PNG) is left out unless asked
for (``svg=True``, ``clippo data tuxpaint --svg``): CairoSVG (the ``svg`` extra, and Debian's
``libcairo2``) rasterises it with the longer side at ``image_size``, in its safe mode (an SVG
that declares XML entities, one in the package, is refused and counted). The default set is the
PNG stamps only, the set every figure in docs/multilingual.md was measured on.

What is left out, and counted in ``stats.json``: a PNG without a ``.txt`` (mirrored variants,
some Tux figures), a description with an SVG and no PNG (without ``svg``) or an SVG CairoSVG
refuses (``bad_svg``), a ``.txt`` with neither, an unreadable image; a Tamil line that is not
TSCII (``bad_ta_line``: the stamp is kept without it). Never train on this set,
nor on other files of the tuxpaint packages (their message catalogues hold the same
descriptions).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from clippo.atomic import atomic_write, atomic_write_text
from clippo.data.build.tscii import tamil_from_tux_paint
from clippo.data.captionsets import IMAGES_DIR, write_captions_jsonl
from clippo.data.transforms import DEFAULT_MAX_PIXELS, BadImageError, load_image
from clippo.extras import require

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
PIVOT = "en"  # the language of a description's first line
_LANG_LINE = re.compile(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@[A-Za-z]+)?)\.utf8=(.*)$")


class BadTamilLine(ValueError):
    """A stamp's ``ta`` line is not TSCII; ``descriptions`` holds the file's other languages."""

    def __init__(self, message: str, descriptions: dict[str, str]):
        super().__init__(message)
        self.descriptions = descriptions


def read_stamp_descriptions(path: str | os.PathLike) -> dict[str, str]:
    """``{language: description}`` of one stamp ``.txt``: the first line is ``en``.

    Blank descriptions are dropped; other lines (none in the Debian package) are ignored; ``ta``
    is decoded from TSCII. Raises ValueError for a file that is not UTF-8 or has no English
    first line, and BadTamilLine (a ValueError with the other languages) for a Tamil line that
    is not TSCII.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e})") from None
    first = lines[0].strip() if lines else ""
    if not first or _LANG_LINE.match(first):
        raise ValueError(f"{path}: the first line must be the English description")
    out = {PIVOT: first}
    for line in lines[1:]:
        match = _LANG_LINE.match(line.strip())
        if match and match.group(2).strip():
            out.setdefault(match.group(1), match.group(2).strip())
    if "ta" in out:
        try:
            out["ta"] = tamil_from_tux_paint(out["ta"])
        except ValueError as e:
            del out["ta"]
            raise BadTamilLine(f"{path}: the ta line: {e}", out) from None
    return out


def rasterise_svg(
    path: str | os.PathLike, image_size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """An SVG drawn with CairoSVG (safe mode: no XML entities, no external files), the longer
    side ``image_size``, composited on white. BadImageError (reason ``bad_svg``) names the file
    CairoSVG cannot draw; MissingExtraError or OSError say what to install."""
    try:
        cairosvg = require("cairosvg", "rasterising tuxpaint's SVG stamps")
    except OSError as e:  # cairocffi finds no libcairo
        raise OSError(f"CairoSVG needs the cairo library: apt-get install libcairo2 ({e})") from e
    for side in ("output_width", "output_height"):
        try:
            png = cairosvg.svg2png(url=str(path), **{side: image_size})
        except Exception as e:  # XML, entity, size or drawing errors: the file is unusable
            raise BadImageError(f"{path}: CairoSVG cannot draw it ({e})", "bad_svg") from e
        image = load_image(png, max_pixels=max_pixels, name=str(path))
        if max(image.size) <= image_size:
            break  # a tall drawing is drawn again at image_size high
    return image


def build_tuxpaint_set(
    out_dir: str | os.PathLike,
    *,
    stamps_dir: str | os.PathLike = STAMPS_DIR,
    image_size: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    svg: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Writes the stamps with a PNG (and with ``svg``, those with only an SVG) and a
    description to ``out_dir``; returns the statistics.

    Keys are ``tp0000`` ... in the sorted order of the stamps' paths (kept in
    ``"image/path"``); the category folder is kept in ``"image/category"``.
    """
    start = time.perf_counter()
    root = Path(stamps_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: apt-get install tuxpaint-stamps-default (scripts/setup.sh does)"
        )
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    out = Path(out_dir)
    (out / "stats.json").unlink(missing_ok=True)  # present only once the build is complete
    if (out / IMAGES_DIR).is_dir():
        shutil.rmtree(out / IMAGES_DIR)
    (out / IMAGES_DIR).mkdir(parents=True)

    descriptions = sorted(root.rglob("*.txt"))
    pngs = sorted(root.rglob("*.png"))
    skipped: Counter = Counter()
    skipped["png_without_txt"] = sum(not p.with_suffix(".txt").is_file() for p in pngs)
    entries = []
    languages: Counter = Counter()
    for txt in descriptions:
        png, drawing = txt.with_suffix(".png"), txt.with_suffix(".svg")
        if progress is not None:
            progress(1)
        source = png if png.is_file() else drawing if drawing.is_file() else None
        if source is None or (source is drawing and not svg):
            skipped["svg_only" if source is drawing else "no_image"] += 1
            continue
        try:
            per_language = read_stamp_descriptions(txt)
        except BadTamilLine as e:  # the stamp stays, without its Tamil caption
            per_language = e.descriptions
            skipped["bad_ta_line"] += 1
        except ValueError:
            skipped["bad_txt"] += 1
            continue
        try:
            if source is png:
                image = load_image(png, max_pixels=max_pixels)
            else:
                image = rasterise_svg(drawing, image_size, max_pixels)
        except BadImageError as e:
            skipped[e.reason] += 1
            continue
        image.thumbnail((image_size, image_size), Image.Resampling.BICUBIC)
        key = f"tp{len(entries):04d}"
        atomic_write(
            out / IMAGES_DIR / f"{key}.jpg",
            lambda p, image=image: image.save(p, "JPEG", quality=95),
            sync=False,
        )
        rel = source.relative_to(root)
        extra = {"image/path": str(rel).replace(os.sep, "/"), "image/category": rel.parts[0]}
        entries.append((key, {lang: [t] for lang, t in per_language.items()}, extra))
        languages.update(per_language.keys())
    if not entries:
        raise ValueError(f"no stamp under {root} has both an image and a description")
    write_captions_jsonl(out, entries)
    stats = {
        "params": {"stamps_dir": str(root), "image_size": image_size, "svg": svg},
        "images": len(entries),
        "images_from_svg": sum(e[2]["image/path"].endswith(".svg") for e in entries),
        "languages": len(languages),
        "captions_per_language": dict(sorted(languages.items(), key=lambda x: (-x[1], x[0]))),
        "skipped": dict(sorted((k, v) for k, v in skipped.items() if v)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    return stats

"""Multilingual caption sets in CrossModal-3600's official layout, read and written.

The layout (https://google.github.io/crossmodal-3600/): ``captions.jsonl`` holds one JSON
object per image with its key under ``"image/key"`` and, per language code, an object whose
``"caption"`` list holds that language's captions of the image (XM3600 adds
``"caption/tokenized"`` and ``"caption/tokenized/lowercase"``, ignored here); the images are
``images/{key}.jpg`` beside it. ``clippo data tuxpaint`` writes the same layout, so one reader
serves both benchmarks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from clippo.atomic import atomic_write_text

CAPTIONS_FILE = "captions.jsonl"
IMAGES_DIR = "images"
KEY_FIELD = "image/key"
CATEGORY_FIELD = "image/category"


@dataclass
class CaptionSet:
    """Images and their captions per language, in file order."""

    keys: list[str]
    image_paths: list[Path]
    captions: list[dict[str, list[str]]]  # per image: {language: captions}, non-empty lists
    # per image: its "image/category" (tuxpaint's stamp folder), a zero-shot label; None if absent
    categories: list[str | None] | None = None

    @property
    def languages(self) -> list[str]:
        """Every language with a caption, sorted."""
        return sorted({lang for per_image in self.captions for lang in per_image})

    def __len__(self) -> int:
        return len(self.keys)


def is_caption_set(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding ``captions.jsonl`` (not a shard pattern)."""
    return Path(path, CAPTIONS_FILE).is_file()


def _image_path(root: Path, key: str) -> Path:
    return root / IMAGES_DIR / f"{key}.jpg"


def read_caption_set(root: str | os.PathLike, *, check_images: bool = True) -> CaptionSet:
    """Reads ``root/captions.jsonl`` and locates ``root/images/{key}.jpg`` for each line.

    Empty or blank captions are dropped, and a language left without one is dropped for that
    image. Raises ValueError naming the line of a malformed entry or a repeated key, and
    FileNotFoundError for a missing file or image (``check_images=False`` skips that check).
    """
    root = Path(root)
    path = root / CAPTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a caption set is a folder with {CAPTIONS_FILE} and "
            f"{IMAGES_DIR}/KEY.jpg (CrossModal-3600's layout; `clippo data tuxpaint` writes one)"
        )
    keys: list[str] = []
    captions: list[dict[str, list[str]]] = []
    categories: list[str | None] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                entry = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: a line must be a JSON object")
            key = entry.get(KEY_FIELD)
            if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
                raise ValueError(f"{where}: {KEY_FIELD!r} must be a file name stem, got {key!r}")
            if key in seen:
                raise ValueError(f"{where}: key {key!r} repeats line {seen[key]}")
            seen[key] = lineno
            keys.append(key)
            captions.append(_languages(entry, where))
            category = entry.get(CATEGORY_FIELD)
            categories.append(category if isinstance(category, str) and category else None)
    if not keys:
        raise ValueError(f"{path} holds no images")
    paths = [_image_path(root, k) for k in keys]
    if check_images:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images of {path} not found, e.g. {missing[:3]}"
            )
    return CaptionSet(keys, paths, captions, categories if any(categories) else None)


def _languages(entry: dict, where: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lang, value in entry.items():
        if lang.startswith("image/"):  # the key, and any other per-image field
            continue
        if not isinstance(value, dict) or not isinstance(value.get("caption"), list):
            raise ValueError(
                f"{where}: language {lang!r} must be an object with a 'caption' list, "
                f"got {json.dumps(value, ensure_ascii=False)[:80]}"
            )
        if any(not isinstance(c, str) for c in value["caption"]):
            raise ValueError(f"{where}: language {lang!r} has a caption that is not a string")
        texts = [c.strip() for c in value["caption"] if c.strip()]
        if texts:
            out[lang] = texts
    return out


def write_captions_jsonl(
    root: str | os.PathLike, entries: list[tuple[str, dict[str, list[str]], dict[str, str]]]
) -> Path:
    """Writes ``root/captions.jsonl`` from ``(key, {language: captions}, extra image/ fields)``.

    The images (``root/images/{key}.jpg``) are the caller's to write, before this file, so a
    folder with ``captions.jsonl`` is complete.
    """
    lines = []
    for key, per_language, extra in entries:
        if any(not k.startswith("image/") for k in extra):
            raise ValueError(f"extra fields must start with 'image/', got {sorted(extra)}")
        record = {KEY_FIELD: key, **extra}
        record.update({lang: {"caption": list(texts)} for lang, texts in per_language.items()})
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return atomic_write_text(Path(root, CAPTIONS_FILE), "".join(lines))

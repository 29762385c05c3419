"""The paper's benchmarks in the layouts people download them in, read directly (no conversion).

- **ImageNet-1k validation**, two layouts: the official one (``ILSVRC2012_img_val/*.JPEG`` and
  the devkit's ``data/ILSVRC2012_validation_ground_truth.txt`` + ``data/meta.mat``), and class
  folders (``val/n01440764/*.JPEG``, torchvision's ImageFolder). Labels are indices into the
  *sorted* WordNet ids, the order of CLIP's class names (``clippo/assets/prompts/imagenet.json``)
  and of ImageFolder; the devkit's ground truth holds ILSVRC2012 ids, a different order, mapped
  through ``meta.mat``.
- **Any class-folder data set** (``ROOT/CLASS/*.jpg``) with an optional class-name file, so a
  user can zero-shot their own; also the few-shot probe's training source
  (``sample_per_class``).
- **MS-COCO 5k / Flickr30k 1k test** from Karpathy's ``dataset_coco.json`` /
  ``dataset_flickr30k.json`` and the image folders: the first 5 captions of each test image,
  as the papers count them (25,000 / 5,000 captions). Returned as a ``CaptionSet``
  (``clippo.data.captionsets``), the type every captioned evaluation set shares.

Every reader fails with a message naming the missing file or folder and the layout it expects.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clippo.data.captionsets import CaptionSet
from clippo.data.transforms import BadImageError, load_image
from clippo.extras import require

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
IMAGENET_VAL_DIR = "ILSVRC2012_img_val"
DEVKIT_DIRS = ("ILSVRC2012_devkit_t12", "devkit", ".")  # where data/meta.mat may sit
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
CLASSNAMES_FILES = ("classnames.txt", "classnames.json")
CAPTIONS_PER_IMAGE = 5  # COCO has some images with 6 or 7; the papers use the first 5

_IMAGENET_LAYOUTS = (
    "ImageNet-1k validation is read in one of two layouts:\n"
    f"  devkit:        ROOT/{IMAGENET_VAL_DIR}/ILSVRC2012_val_00000001.JPEG ... and\n"
    f"                 ROOT/ILSVRC2012_devkit_t12/{GROUND_TRUTH} + .../{META}\n"
    "  class folders: ROOT/val/n01440764/*.JPEG ... (or ROOT/n01440764/*.JPEG), one folder per "
    "WordNet id"
)
_KARPATHY_LAYOUT = (
    "expected Karpathy's split file ROOT/{json} (from the 'caption_datasets' zip) with the "
    "images beside it: ROOT/FILEPATH/FILENAME for COCO (val2014/, train2014/), "
    "ROOT/flickr30k-images/FILENAME or ROOT/images/FILENAME or ROOT/FILENAME for Flickr30k"
)


@dataclass
class LabelledImages:
    """Image files with integer labels; ``class_ids[i]`` is class i's folder or WordNet id and
    ``classnames[i]`` its name (None: the caller supplies names, e.g. a packaged prompt set)."""

    paths: list[Path]
    labels: list[int]
    class_ids: list[str]
    classnames: list[str] | None = None

    @property
    def keys(self) -> list[str]:
        """One unique key per image: its path relative to the common root, without suffix."""
        root = Path(os.path.commonpath([str(p.parent) for p in self.paths])) if self.paths else None
        return [str(p.relative_to(root).with_suffix("")) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_class_folders(
    root: str | os.PathLike, *, classnames: str | os.PathLike | None = None
) -> LabelledImages:
    """``ROOT/CLASS/*.jpg``: label i is the i-th class folder in sorted order (ImageFolder's).

    Class names come from ``classnames`` (or ``ROOT/classnames.txt|json`` when present): a
    ``.txt`` file with one name per line in sorted-folder order, or a ``.json`` object
    ``{folder: name}`` or list; without one ``classnames`` is None and ``class_ids`` (the
    folder names) serve.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: expected a folder of class folders, ROOT/CLASS/IMAGE.jpg"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels, class_ids = [], [], []
    for folder in folders:
        files = _image_files(folder)
        if not files:
            continue  # an empty folder is no class (ImageFolder refuses; a stray dir is common)
        class_ids.append(folder.name)
        paths.extend(files)
        labels.extend([len(class_ids) - 1] * len(files))
    if not class_ids:
        loose = _image_files(root)
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise FileNotFoundError(
            f"{root} holds no class folder with images{hint}: expected ROOT/CLASS/IMAGE.jpg, one "
            f"folder per class (suffixes {', '.join(IMAGE_SUFFIXES)})"
        )
    if classnames is None:
        found = [root / n for n in CLASSNAMES_FILES if (root / n).is_file()]
        classnames = found[0] if found else None
    names = read_classnames(classnames, class_ids) if classnames is not None else None
    return LabelledImages(paths, labels, class_ids, names)


def read_classnames(path: str | os.PathLike, class_ids: list[str]) -> list[str]:
    """Class names for ``class_ids`` from a ``.txt`` (one per line, in order) or ``.json``
    (``{class_id: name}`` or a list) file; the count must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-name file {path} not found")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            missing = [c for c in class_ids if c not in data]
            if missing:
                raise ValueError(f"{path}: no name for classes {missing[:5]}")
            return [str(data[c]) for c in class_ids]
        names = [str(n) for n in data]
    else:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
    if len(names) != len(class_ids):
        raise ValueError(
            f"{path} names {len(names)} classes, but there are {len(class_ids)} class folders "
            "(one name per line, in sorted folder order)"
        )
    return names


def read_imagenet_devkit_labels(devkit: str | os.PathLike) -> tuple[list[int], list[str]]:
    """The validation labels as sorted-WordNet-id indices, and the sorted WordNet ids, from the
    devkit's ``data/ILSVRC2012_validation_ground_truth.txt`` (ILSVRC2012 ids, 1-based, one line
    per image in file-name order) and ``data/meta.mat`` (its ``synsets`` struct array:
    ``ILSVRC2012_ID``, ``WNID``, ``words``, ``num_children``, ...; the 1,000 leaves are the
    classes)."""
    devkit = Path(devkit)
    meta, truth = devkit / META, devkit / GROUND_TRUTH
    for f in (meta, truth):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found.\n{_IMAGENET_LAYOUTS}")
    scipy_io = require("scipy.io", "reading ImageNet's devkit meta.mat")
    synsets = scipy_io.loadmat(str(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {}
    for s in np.atleast_1d(synsets):
        if int(s["num_children"]) == 0:  # a leaf: one of the classes
            id_to_wnid[int(s["ILSVRC2012_ID"])] = str(s["WNID"])
    wnids = sorted(id_to_wnid.values())
    index = {w: i for i, w in enumerate(wnids)}
    labels = []
    for lineno, line in enumerate(truth.read_text().split(), 1):
        try:
            labels.append(index[id_to_wnid[int(line)]])
        except (ValueError, KeyError):
            raise ValueError(
                f"{truth}:{lineno}: {line!r} is not an ILSVRC2012 class id of {meta}"
            ) from None
    return labels, wnids


def read_imagenet(root: str | os.PathLike) -> LabelledImages:
    """ImageNet-1k validation in the devkit layout or the class-folder layout (see the module
    docstring); labels index the sorted WordNet ids, ``classnames`` is None (use the packaged
    ``imagenet`` prompt set, which is in that order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found.\n{_IMAGENET_LAYOUTS}")
    val = root / IMAGENET_VAL_DIR
    if val.is_dir():
        devkits = [root / d for d in DEVKIT_DIRS if (root / d / META).is_file()]
        if not devkits:
            raise FileNotFoundError(
                f"{val} found, but not the devkit's {META} under {root} (looked in "
                f"{', '.join(DEVKIT_DIRS)}).\n{_IMAGENET_LAYOUTS}"
            )
        labels, wnids = read_imagenet_devkit_labels(devkits[0])
        paths = _image_files(val)
        if len(paths) != len(labels):
            raise ValueError(
                f"{val} holds {len(paths)} images but {devkits[0] / GROUND_TRUTH} has "
                f"{len(labels)} labels (one per image, in file-name order)"
            )
        return LabelledImages(paths, labels, wnids)
    folders = root / "val" if (root / "val").is_dir() else root
    if not any(re.fullmatch(r"n\d{8}", p.name) for p in folders.iterdir() if p.is_dir()):
        raise FileNotFoundError(
            f"{root}: neither {IMAGENET_VAL_DIR}/ nor class folders named by WordNet id "
            f"(n01440764/ ...).\n{_IMAGENET_LAYOUTS}"
        )
    data = read_class_folders(folders)
    return LabelledImages(data.paths, data.labels, data.class_ids, None)


def find_train_folder(root: str | os.PathLike) -> Path | None:
    """ImageNet's training class folders beside the validation images, if present
    (``ROOT/train`` or ``ROOT/ILSVRC2012_img_train``): the 10-shot probe's source."""
    for name in ("train", "ILSVRC2012_img_train"):
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def sample_per_class(data: LabelledImages, per_class: int, seed: int = 0) -> LabelledImages:
    """Up to ``per_class`` images of each class, drawn with ``seed`` (a few-shot pool: ten
    images per ImageNet class are read, not 1.28M)."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels)
    keep = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == c))[:per_class]
            for c in range(len(data.class_ids))
        ]
    )
    keep.sort()
    return LabelledImages(
        [data.paths[i] for i in keep],
        [data.labels[i] for i in keep],
        data.class_ids,
        data.classnames,
    )


def read_karpathy(root: str | os.PathLike, json_name: str, *, split: str = "test") -> CaptionSet:
    """Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json`` split of ``root``: the
    ``split`` images with their first 5 captions (``"sentences"[i]["raw"]``) under language
    ``en``; keys are the image file stems."""
    root = Path(root)
    path = root / json_name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {_KARPATHY_LAYOUT.format(json=json_name)}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected an object with an 'images' list (Karpathy's format)")
    keys, paths, captions, missing = [], [], [], []
    for i, image in enumerate(data["images"]):
        if image.get("split") != split:
            continue
        try:
            filename = image["filename"]
            texts = [s["raw"].strip() for s in image["sentences"]][:CAPTIONS_PER_IMAGE]
        except (KeyError, TypeError):
            raise ValueError(
                f"{path}: images[{i}] needs 'filename' and 'sentences' with 'raw'"
            ) from None
        candidates = [root / image.get("filepath", "") / filename] + [
            root / d / filename for d in ("flickr30k-images", "images")
        ]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(str(candidates[0]))
            continue
        keys.append(Path(filename).stem)
        paths.append(found)
        captions.append({"en": [t for t in texts if t]})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} {split} images of {path} not found, e.g. {missing[:2]}: "
            f"{_KARPATHY_LAYOUT.format(json=json_name)}"
        )
    if not keys:
        raise ValueError(f"{path} has no image with split {split!r}")
    return CaptionSet(keys, paths, captions)


class ImageFiles(Dataset):
    """Image files -> ``(index, pixels or None, skip reason or None)`` through ``transform``
    (called as ``transform(image, key=KEY)``): the map-style dataset that file-based
    evaluation sets load with DataLoader workers. Unreadable images come back as None."""

    def __init__(
        self,
        paths: list[Path],
        keys: list[str],
        transform: Callable[..., torch.Tensor],
    ):
        self.paths, self.keys, self.transform = paths, keys, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = load_image(self.paths[i], draft_size=getattr(self.transform, "size", None))
        except BadImageError as e:
            return i, None, e.reason
        return i, self.transform(image, key=self.keys[i]), None


def collate_image_files(items: list[tuple[int, Any, str | None]]) -> dict[str, Any]:
    """A batch of ``ImageFiles`` items: ``index`` and ``image`` of the readable ones, and
    ``skipped`` ``{index: reason}`` of the others."""
    kept = [(i, x) for i, x, _ in items if x is not None]
    return {
        "index": torch.tensor([i for i, _ in kept], dtype=torch.long),
        "image": torch.stack([x for _, x in kept]) if kept else None,
        "skipped": {i: reason for i, _, reason in items if reason is not None},
    }


KARPATHY_FILES = {"coco": "dataset_coco.json", "flickr30k": "dataset_flickr30k.json"}
KINDS = ("imagenet", "imagefolder", "coco", "flickr30k")


def read_benchmark(
    kind: str, path: str | os.PathLike, *, classnames: str | None = None, split: str = "test"
) -> LabelledImages | CaptionSet:
    """The data of a benchmark ``kind`` (``KINDS``) at ``path``: labelled images (imagenet,
    imagefolder with an optional ``classnames`` file, else the folder names) or captioned
    images (coco, flickr30k, the Karpathy ``split``)."""
    if kind == "imagenet":
        return read_imagenet(path)
    if kind == "imagefolder":  # without a name file the folder names are the class names
        data = read_class_folders(path, classnames=classnames)
        if data.classnames is None:
            data.classnames = [c.replace("_", " ") for c in data.class_ids]
        return data
    if kind in KARPATHY_FILES:
        return read_karpathy(path, KARPATHY_FILES[kind], split=split)
    raise ValueError(f"unknown benchmark kind {kind!r}; known: {', '.join(KINDS)}")

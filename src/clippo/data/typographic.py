"""Typographic attacks (the CLIPPO poster's robustness analysis; CLIP's "Multimodal Neurons"):
the name of a wrong class, written on a white label in the image's lower half.

The attack edits the image the model sees (``ImageTransform.view``: resized and cropped to
``S x S``), so the label is always inside the crop and has the same size relative to the input
for every image. The text is set at 16 px per line, the size CLIPPO reads its rendered text at,
wrapped to the label's width; a label that would not fit in the lower half is scaled down to
fit. Two fonts: ``unifont`` (``clippo.render``, the font CLIPPO was trained to read) and a
regular TrueType font (``dejavu``: DejaVu Sans from Debian's ``fonts-dejavu-core``, or any
``.ttf`` path).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from clippo.data.transforms import ImageTransform, sample_rng, to_tensor
from clippo.render import CELL, UnifontRenderer

TRUETYPE_FONTS = {"dejavu": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"}
FONTS = ("unifont", *TRUETYPE_FONTS)
LABEL_HEIGHT = 0.5  # the label stays in this lower share of the image
_PAD = 2  # white pixels around the text
_WRITTEN_STREAM = 7  # sample_rng stream of the wrong-class draw (independent of augmentation)


def wrong_class(key: str, label: int, num_classes: int, seed: int = 0) -> int:
    """A class other than ``label``, uniform over the others, from a generator that depends only
    on (``seed``, ``key``): an image gets the same wrong class in every run and process."""
    if num_classes < 2:
        raise ValueError("a wrong class needs at least 2 classes")
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside [0, {num_classes})")
    draw = int(sample_rng(seed, 0, key, stream=_WRITTEN_STREAM).integers(num_classes - 1))
    return draw + (draw >= label)


def check_font(font: str) -> str:
    """``unifont``, ``dejavu`` or a TrueType file; raises naming what to install otherwise."""
    if font == "unifont":
        return font
    path = TRUETYPE_FONTS.get(font, font)
    if not Path(path).is_file():
        known = ", ".join(FONTS)
        raise FileNotFoundError(
            f"font {font!r}: {path} not found (fonts: {known}, or a .ttf path; DejaVu Sans is "
            "Debian's fonts-dejavu-core: apt-get install fonts-dejavu-core)"
        )
    return font


@functools.lru_cache(maxsize=8)
def _unifont(width: int) -> UnifontRenderer:
    return UnifontRenderer(image_size=width, background=255, foreground=0, lower=False)


@functools.lru_cache(maxsize=8)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _tight(strip: np.ndarray) -> np.ndarray:
    """Crop a black-on-white strip to the extent of its dark pixels (keeps one row if blank)."""
    rows, cols = np.flatnonzero((strip < 128).any(1)), np.flatnonzero((strip < 128).any(0))
    if not rows.size:
        return strip[:1, :1]
    return strip[: rows[-1] + 1, cols[0] : cols[-1] + 1]


def render_label_text(text: str, width: int, font: str = "unifont") -> np.ndarray:
    """``text`` black on white (uint8 ``(h, w)``), 16 px per line, wrapped to ``width``."""
    font = check_font(font)
    width = max(width, CELL + 1)
    if font == "unifont":
        strip = _unifont(width)(text)  # wraps as the model's renderer does
        rows = np.flatnonzero((strip < 128).any(1))
        lines = (rows[-1] // CELL + 1) if rows.size else 1
        return _tight(strip[: lines * CELL])
    ttf = _truetype(TRUETYPE_FONTS.get(font, font), CELL)
    lines: list[str] = []
    for word in text.split():
        if lines and ttf.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    canvas = Image.new("L", (max(width, *(int(ttf.getlength(w)) + 1 for w in lines or [""])),
                             CELL * max(1, len(lines)) + 4), 255)  # fmt: skip
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((0, i * CELL), line, fill=0, font=ttf)
    return _tight(np.asarray(canvas))


def label_box(size: int, strip_shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], float]:
    """Where the label of a ``strip_shape`` text goes on a ``size x size`` image: its box
    ``(left, top, right, bottom)`` (centred, bottom margin ``size // 32``, inside the lower
    ``LABEL_HEIGHT``) and the scale applied to the text (1 unless it had to shrink)."""
    h, w = strip_shape
    margin = max(1, size // 32)
    avail_w = size - 2 * margin - 2 * _PAD
    avail_h = int(size * LABEL_HEIGHT) - margin - 2 * _PAD
    scale = min(1.0, avail_w / w, avail_h / h)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    bottom = size - margin
    top = bottom - th - 2 * _PAD
    left = (size - tw - 2 * _PAD) // 2
    return (left, top, left + tw + 2 * _PAD, bottom), scale


def draw_label(image: Image.Image, text: str, font: str = "unifont") -> Image.Image:
    """A copy of the square ``image`` with ``text`` on a white label in its lower half."""
    size = image.size[0]
    if image.size[1] != size:
        raise ValueError(f"draw_label takes the model's square view, got {image.size}")
    margin = max(1, size // 32)
    strip = render_label_text(text, size - 2 * margin - 2 * _PAD, font)
    (left, top, right, bottom), scale = label_box(size, strip.shape)
    text_img = Image.fromarray(strip)
    if scale < 1:
        text_img = text_img.resize((right - left - 2 * _PAD, bottom - top - 2 * _PAD), Image.BOX)
    out = image.convert("RGB").copy()
    out.paste((255, 255, 255), (left, top, right, bottom))
    out.paste(text_img.convert("RGB"), (left + _PAD, top + _PAD))
    return out


class TypographicAttack(ImageTransform):
    """The model's evaluation preprocessing with a label drawn on each image: ``texts[key]``
    (the wrong class name chosen for that image) in ``font``."""

    def __init__(self, size: int, texts: dict[str, str], font: str = "unifont"):
        super().__init__(size, train=False)
        self.texts, self.font = texts, check_font(font)

    def __call__(self, image: Image.Image, *, key: str = "", epoch: int = 0) -> torch.Tensor:
        return to_tensor(self.attacked_view(image, key=key))

    def attacked_view(self, image: Image.Image, *, key: str) -> Image.Image:
        """The attacked ``S x S`` image (for pictures of the attack)."""
        if key not in self.texts:
            raise KeyError(f"no attack text for image {key!r}")
        return draw_label(self.view(image, key=key), self.texts[key], self.font)


def font_label(font: str) -> str:
    """A short metric-name label of a font (``unifont``, ``dejavu``, or a file's stem)."""
    return font if font in FONTS else Path(os.fspath(font)).stem.lower()

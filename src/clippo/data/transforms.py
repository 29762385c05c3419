"""Image decoding and preprocessing: bytes -> RGB on white -> (3, size, size) floats in [-1, 1]."""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DEFAULT_MAX_PIXELS = 40_000_000
WHITE = (255, 255, 255)


class BadImageError(ValueError):
    """An image that cannot be used; ``reason`` is "broken" or "too_large" for skip counts."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def sample_rng(seed: int, epoch: int, key: str, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, key, stream), in every process and run.

    Distinct ``stream`` values keep independent draws (augmentation, text choice) uncorrelated.
    """
    # Python's hash() is salted per process, so derive the key's entropy from a fixed digest.
    digest = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), digest, int(stream)])


def open_image(
    src: bytes | str | PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = ""
) -> Image.Image:
    """Open an image lazily (header only) and check its size; raises ``BadImageError``."""
    label = name or (str(src) if not isinstance(src, bytes) else "<bytes>")
    if not isinstance(src, bytes) and not Path(src).is_file():
        raise FileNotFoundError(f"image file not found: {src}")
    try:
        with warnings.catch_warnings():
            # The pixel cap below replaces Pillow's decompression-bomb guard.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{label}: image too large to decode ({e})", "too_large") from e
    except Exception as e:  # Pillow raises many types for garbage headers.
        raise BadImageError(f"{label}: not a readable image ({e})", "broken") from e
    w, h = image.size
    if max_pixels is not None and w * h > max_pixels:
        if image.format == "JPEG":
            # JPEG can decode at 1/2, 1/4 or 1/8 scale, so a huge JPEG need not be skipped.
            # draft() picks the coarsest scale still >= the request, hence the halving.
            scale = math.sqrt(max_pixels / (w * h)) / 2
            image.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
        if image.size[0] * image.size[1] > max_pixels:
            raise BadImageError(
                f"{label}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}", "too_large"
            )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert to RGB, compositing any transparency (RGBA, LA, PA, P or a colour key) on white."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's RGB conversion clips 16-bit values instead of scaling them.
        arr = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((arr * (255.0 / max(arr.max(), 1.0))).astype(np.uint8))
    return image.convert("RGB")


def load_image(
    src: bytes | str | PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    name: str = "",
) -> Image.Image:
    """Decode an image to RGB composited on white; ``BadImageError`` (a ValueError) if unusable.

    ``draft_size`` lets JPEGs decode at a reduced scale that keeps both sides >= it.
    """
    image = open_image(src, max_pixels=max_pixels, name=name)
    label = name or (str(src) if not isinstance(src, bytes) else "<bytes>")
    try:
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        return to_rgb(image)
    except Exception as e:  # truncated or corrupt data surfaces only when decoding
        raise BadImageError(f"{label}: cannot decode image ({e})", "broken") from e


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor (3, H, W) with values in [-1, 1]."""
    # numpy, not torch: torch's intra-op threads stall when DataLoader workers share the cores.
    arr = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr / np.float32(127.5) - np.float32(1.0)))


class ImageTransform:
    """PIL image -> float tensor (3, size, size) in [-1, 1], with optional training augmentation.

    ``crop="center"`` resizes the shorter side to ``size`` and centre-crops; ``crop="pad"``
    resizes the longer side to ``size`` and pads with white. With ``train=True``,
    ``random_resized_crop=(scale_min, scale_max)`` crops a random area fraction (aspect ratio in
    [3/4, 4/3]) instead, and ``flip`` mirrors half the images. The randomness depends only on
    (seed, epoch, key), so a resumed run sees the same augmentations.
    """

    def __init__(
        self,
        size: int,
        *,
        train: bool = False,
        crop: str = "center",
        flip: bool = False,
        random_resized_crop: tuple[float, float] | None = None,
        seed: int = 0,
    ):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if crop not in ("center", "pad"):
            raise ValueError(f"crop must be 'center' or 'pad', got {crop!r}")
        if random_resized_crop is not None:
            lo, hi = (float(v) for v in random_resized_crop)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(
                    f"random_resized_crop must be (scale_min, scale_max) with "
                    f"0 < scale_min <= scale_max <= 1, got {random_resized_crop!r}"
                )
            random_resized_crop = (lo, hi)
        self.size, self.train, self.crop, self.flip = size, train, crop, flip
        self.random_resized_crop, self.seed = random_resized_crop, seed

    def __repr__(self) -> str:
        return (
            f"ImageTransform({self.size}, train={self.train}, crop={self.crop!r}, "
            f"flip={self.flip}, random_resized_crop={self.random_resized_crop}, seed={self.seed})"
        )

    def __call__(self, image: Image.Image, *, key: str = "", epoch: int = 0) -> torch.Tensor:
        """Transform one image; ``key`` and ``epoch`` seed its augmentation."""
        return to_tensor(self.view(image, key=key, epoch=epoch))

    def view(self, image: Image.Image, *, key: str = "", epoch: int = 0) -> Image.Image:
        """The ``size x size`` RGB image the model sees, before the conversion to floats (what a
        picture of the model's input, or an edit of it such as a typographic attack, starts
        from)."""
        image = to_rgb(image)
        augment = self.train and (self.flip or self.random_resized_crop is not None)
        rng = sample_rng(self.seed, epoch, key) if augment else None
        if self.train and self.random_resized_crop is not None:
            out = self._resize(image, self._random_box(image.size, rng))
        elif self.crop == "pad":
            out = self._pad(image)
        else:
            out = self._resize(image, self._center_box(image.size))
        if self.train and self.flip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out

    def _resize(self, image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        # One resize with a source box crops and scales in a single pass; reducing_gap makes
        # large downscales cheap without visible loss.
        return image.resize(
            (self.size, self.size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0
        )

    @staticmethod
    def _center_box(wh: tuple[int, int]) -> tuple[float, float, float, float]:
        w, h = wh
        side = min(w, h)
        x0, y0 = (w - side) / 2, (h - side) / 2
        return (x0, y0, x0 + side, y0 + side)

    def _random_box(
        self, wh: tuple[int, int], rng: np.random.Generator
    ) -> tuple[float, float, float, float]:
        w, h = wh
        lo, hi = self.random_resized_crop
        for _ in range(10):
            area = w * h * rng.uniform(lo, hi)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
            if cw <= w and ch <= h:
                x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
                return (x0, y0, x0 + cw, y0 + ch)
        return self._center_box(wh)

    def _pad(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        scale = self.size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = image.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        canvas = Image.new("RGB", (self.size, self.size), WHITE)
        canvas.paste(resized, ((self.size - nw) // 2, (self.size - nh) // 2))
        return canvas

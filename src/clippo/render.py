"""Text -> pixels: GNU Unifont lookup rendering, bit-exact with big_vision's ``render_unifont``.

Every glyph is a 16x16 binary cell. Each glyph is trimmed horizontally (one column of spacing,
a minimum width), glyphs are laid out left to right and wrapped with the reference's rule (a
glyph goes to line ``floor(cumulative_width / (image_size - widest_glyph))``), and the lines are
stacked from the top, cut at the image bottom. Everything per glyph is precomputed once, so a
batch of texts renders with a handful of numpy operations and no per-character Python.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

PACKAGED_TABLE = Path(__file__).parent / "assets" / "unifont" / "unifont-15.0.01.npz"
CELL = 16  # Unifont glyph cell height and maximum width, in pixels
_N_CODEPOINTS = 0x110000
_ROW_SHIFTS = np.arange(CELL - 1, -1, -1, dtype=np.uint16)  # bit of each pixel row in a column
_CHUNK_TEXTS = 64  # texts laid out at once: bounds the intermediates whatever the list length

TextInput = str | bytes | Sequence[str | bytes]


def _read_hex(path: Path) -> dict[int, bytes]:
    """Parse a Unifont .hex file into {code point: 32 bytes}, 8-px glyphs in the left half."""
    glyphs = {}
    with open(path, encoding="ascii", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            cp, sep, bits = line.partition(":")
            try:
                code, raw = int(cp, 16), bytes.fromhex(bits)
            except ValueError:
                code, raw = -1, b""
            if not sep or not 0 <= code < _N_CODEPOINTS or len(raw) not in (16, 32):
                raise ValueError(
                    f"{path}:{lineno}: not a Unifont glyph line "
                    f"('XXXX:' + 32 or 64 hex digits): {line[:80]!r}"
                )
            if len(raw) == 16:
                cell = bytearray(32)
                cell[0::2] = raw
                raw = bytes(cell)
            glyphs[code] = raw
    return glyphs


@functools.lru_cache(maxsize=4)
def _glyph_table(hex_files: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """(code points, glyph bytes (N, 32)) from the packaged table or from .hex files."""
    if hex_files is None:
        with np.load(PACKAGED_TABLE) as data:
            return data["codepoints"].astype(np.int64), data["glyphs"]
    glyphs: dict[int, bytes] = {}
    for path in hex_files:
        glyphs.update(_read_hex(Path(path)))  # later files win, as in the reference
    cps = np.array(sorted(glyphs), np.int64)
    table = np.frombuffer(b"".join(glyphs[c] for c in cps.tolist()), np.uint8).reshape(-1, 32)
    return cps, table


@functools.lru_cache(maxsize=8)
def _layout_tables(
    hex_files: tuple[str, ...] | None, lower: bool, monospace: bool, spacing: int, min_width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point glyph row; per glyph trimmed width and trimmed columns as 16-bit masks.

    Row 0 is the blank glyph that every code point without a glyph maps to. Module-level caching
    means forked DataLoader workers share these arrays with the parent instead of rebuilding them.
    """
    cps, glyph_bytes = _glyph_table(hex_files)
    index = np.zeros(_N_CODEPOINTS, np.int32)
    index[cps] = np.arange(1, len(cps) + 1, dtype=np.int32)
    if lower:  # tf.strings.lower with its default encoding lowercases ASCII A-Z only
        index[ord("A") : ord("Z") + 1] = index[ord("a") : ord("z") + 1]
    bits = np.unpackbits(glyph_bytes, axis=1).reshape(-1, CELL, CELL)  # (glyph, row, col)
    # Each column as a 16-bit mask, top row in the most significant bit.
    packed = np.ascontiguousarray(np.packbits(bits.transpose(0, 2, 1), axis=2))
    cols = np.zeros((len(packed) + 1, CELL), np.uint16)
    cols[1:] = packed.view(">u2")[..., 0]
    n = len(cols)
    if monospace:
        return index, np.full(n, CELL, np.int64), cols
    inked = cols != 0
    blank = ~inked.any(1)
    first_ink = np.where(blank, 0, inked.argmax(1))
    last_ink = np.where(blank, 0, CELL - 1 - inked[:, ::-1].argmax(1))
    first = np.maximum(first_ink - spacing, 0)
    end = np.minimum(np.maximum(last_ink + spacing, first + min_width), CELL)  # slice end
    width = np.maximum(end - first, 0).astype(np.int64)
    j = np.arange(CELL)
    trimmed = np.take_along_axis(cols, np.minimum(first[:, None] + j, CELL - 1), axis=1)
    trimmed[j[None, :] >= width[:, None]] = 0
    return index, width, trimmed


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Validate an integer argument and return it as int."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _as_str(text: str | bytes) -> str:
    """Decode bytes exactly as TensorFlow's UTF-8 decoder with errors='replace' does."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes | bytearray | memoryview):
        # Python's maximal-subpart U+FFFD substitution matches TF's unicode_decode (fuzz-tested).
        return bytes(text).decode("utf-8", "replace")
    raise TypeError(f"text must be str or bytes, got {type(text).__name__}")


def _without_surrogates(text: str) -> str:
    """Lone surrogates become the U+FFFD(s) that their invalid UTF-8 bytes decode to."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class UnifontRenderer:
    """Render text as images with GNU Unifont, pixel-identical to big_vision's render_unifont."""

    def __init__(
        self,
        image_size: int = 224,
        font_size: int = 16,
        max_chars: int | None = 768,
        background: int = 127,
        foreground: int = 0,
        lower: bool = True,
        monospace: bool = False,
        spacing: int = 1,
        min_width: int = 4,
        hex_files: Sequence[str | PathLike] | None = None,
    ) -> None:
        self.image_size = _check_int("image_size", image_size, CELL + 1)
        if font_size != CELL:
            raise ValueError(
                f"font_size={font_size} is not supported: only 16 (Unifont's native size) is "
                "rendered exactly; the reference resizes glyphs with area interpolation otherwise"
            )
        self.font_size = CELL
        self.max_chars = None if max_chars is None else _check_int("max_chars", max_chars, 0)
        self.background = _check_int("background", background, 0, 255)
        self.foreground = _check_int("foreground", foreground, 0, 255)
        for name, flag in (("lower", lower), ("monospace", monospace)):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        self.lower, self.monospace = bool(lower), bool(monospace)
        self.spacing = _check_int("spacing", spacing, 0)
        self.min_width = _check_int("min_width", min_width, 0)
        if isinstance(hex_files, str | PathLike):
            raise TypeError("hex_files must be a list of paths, not a single path")
        self.hex_files = None if hex_files is None else tuple(str(p) for p in hex_files)
        for path in self.hex_files or ():
            if not Path(path).is_file():
                raise FileNotFoundError(f"Unifont .hex file not found: {path}")
        self._tables = _layout_tables(
            self.hex_files, self.lower, self.monospace, self.spacing, self.min_width
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-serialisable dict; ``UnifontRenderer(**d)`` rebuilds."""
        return {
            "image_size": self.image_size,
            "font_size": self.font_size,
            "max_chars": self.max_chars,
            "background": self.background,
            "foreground": self.foreground,
            "lower": self.lower,
            "monospace": self.monospace,
            "spacing": self.spacing,
            "min_width": self.min_width,
            "hex_files": None if self.hex_files is None else list(self.hex_files),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"UnifontRenderer({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnifontRenderer) and self.config() == other.config()

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the settings only; the tables come from the per-process cache on unpickling.
        return self.config()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __call__(self, texts: TextInput) -> np.ndarray:
        """Render one text to (H, W) uint8, or a sequence of texts to (N, H, W) uint8."""
        if isinstance(texts, str | bytes):
            return self._render([_as_str(texts)], self.image_size)[0]
        if not isinstance(texts, Sequence | np.ndarray):
            raise TypeError(
                f"texts must be str, bytes or a sequence of them, got {type(texts).__name__}"
            )
        return self._render([_as_str(t) for t in texts], self.image_size)

    def fits(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """(N,) bool: whether all of each text is drawn, none of it cut by ``max_chars`` or by
        the canvas's last line (an empty text fits): the layout ``__call__`` draws."""
        texts = [_as_str(t) for t in texts]
        glyphs, lengths, uncut = self._glyphs(texts)
        out = lengths == uncut
        if len(glyphs):
            text_id, _, line = _layout(self._tables[1][glyphs], lengths, self.image_size)
            last = np.full(len(texts), -1, np.int64)
            np.maximum.at(last, text_id, line)
            out &= last < -(-self.image_size // CELL)
        return out

    def render_pair(self, first: TextInput, second: TextInput) -> np.ndarray:
        """Render sentence pairs as ``first + " [SEP] " + second`` (the paper's GLUE protocol)."""
        if isinstance(first, str | bytes) and isinstance(second, str | bytes):
            return self(_as_str(first) + " [SEP] " + _as_str(second))
        if isinstance(first, str | bytes) or isinstance(second, str | bytes):
            raise TypeError("render_pair needs two texts or two sequences of texts")
        if len(first) != len(second):
            raise ValueError(f"render_pair got {len(first)} first and {len(second)} second texts")
        pairs = zip(first, second, strict=True)
        return self([_as_str(a) + " [SEP] " + _as_str(b) for a, b in pairs])

    def render_question_on_image(
        self,
        image: Any,
        question: str | bytes,
        *,
        image_size: int | None = None,
        max_lines: int = 4,
    ) -> np.ndarray:
        """Draw ``question`` in 16-px lines at the top and the image resized below (VQA input).

        The question takes as many lines as it needs, at most ``max_lines`` (4 = 64 px by
        default; longer questions are cut); the image is resized, without keeping its aspect
        ratio, to fill the rest of the ``image_size`` x ``image_size`` canvas. Returns uint8
        (S, S, 3).
        """
        from PIL import Image

        size = (
            self.image_size
            if image_size is None
            else _check_int("image_size", image_size, CELL + 1)
        )
        max_lines = _check_int("max_lines", max_lines, 1, size // CELL - 1)
        text = self._render([_as_str(question)], size)[0]
        inked = (text != self.background).reshape(-1, size).any(1)[: size // CELL * CELL]
        bands = np.flatnonzero(inked.reshape(-1, CELL).any(1))
        lines = min(max(int(bands[-1]) + 1 if len(bands) else 1, 1), max_lines)
        if isinstance(image, Image.Image):
            pil = image.convert("RGB")
        else:
            array = np.asarray(image)
            if (
                array.dtype != np.uint8
                or array.ndim not in (2, 3)
                or (array.ndim == 3 and array.shape[2] not in (1, 3))
            ):
                raise ValueError(
                    "image must be a PIL image or uint8 array of shape (H, W) or "
                    f"(H, W, 3), got {array.dtype} {array.shape}"
                )
            pil = Image.fromarray(
                array.reshape(array.shape[:2]) if array.ndim == 3 and array.shape[2] == 1 else array
            ).convert("RGB")
        out = np.empty((size, size, 3), np.uint8)
        out[: lines * CELL] = text[: lines * CELL, :, None]
        out[lines * CELL :] = np.asarray(
            pil.resize((size, size - lines * CELL), Image.Resampling.BILINEAR)
        )
        return out

    @staticmethod
    def to_rgb(images: np.ndarray) -> np.ndarray:
        """Repeat gray images (..., H, W) into three channels (..., H, W, 3)."""
        return np.repeat(np.asarray(images)[..., None], 3, axis=-1)

    def _render(self, texts: list[str], size: int) -> np.ndarray:
        """Lay out and draw decoded texts on (len(texts), size, size) uint8 canvases."""
        n_bands = -(-size // CELL)  # line slots, the last one possibly cut by the image bottom
        out = np.empty((len(texts), size, size), np.uint8)
        # Drawn in chunks so the intermediates stay small and reused: all at once, 10k texts took
        # ~230 MiB of fresh memory beside the output, whose page faults made one call over a
        # long list several times slower per text than calls of 256.
        whole = size % CELL == 0  # else the last line slot is drawn on a spare canvas, then cut
        if not whole:
            spare = np.empty((min(len(texts), _CHUNK_TEXTS), n_bands * CELL, size), np.uint8)
        for first in range(0, len(texts), _CHUNK_TEXTS):
            chunk = texts[first : first + _CHUNK_TEXTS]
            n = len(chunk)
            canvas = out[first : first + n] if whole else spare[:n]
            canvas.fill(self.background)
            self._render_chunk(chunk, canvas, size)
            if not whole:
                out[first : first + n] = canvas[:, :size]
        return out

    def _render_chunk(self, texts: list[str], out: np.ndarray, size: int) -> None:
        """Draw decoded texts on ``out`` (len(texts), line slots * 16, size), background-filled."""
        glyphs, lengths, _ = self._glyphs(texts)
        if len(glyphs):
            self._draw(out, glyphs, lengths, size)

    def _glyphs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The glyph rows of all ``texts`` one after another, each cut at ``max_chars`` (lone
        surrogates as U+FFFD); each text's glyph count, and what it would be uncut."""
        index = self._tables[0]
        cut = [t[: self.max_chars] for t in texts] if self.max_chars else texts
        try:
            encoded = "".join(cut).encode("utf-32-le")
        except UnicodeEncodeError:  # lone surrogates, rare: fix them, then cut again
            texts = [_without_surrogates(t) for t in texts]
            cut = [t[: self.max_chars] for t in texts] if self.max_chars else texts
            encoded = "".join(cut).encode("utf-32-le")
        lengths = np.fromiter(map(len, cut), np.int64, len(texts))
        uncut = np.fromiter(map(len, texts), np.int64, len(texts))
        return index[np.frombuffer(encoded, np.uint32)], lengths, uncut

    def _draw(self, out: np.ndarray, glyphs: np.ndarray, lengths: np.ndarray, size: int) -> None:
        """Scatter the glyph columns of all texts into ``out`` (background-filled)."""
        _, widths, columns = self._tables
        n_bands = out.shape[1] // CELL
        w = widths[glyphs]
        text_id, begins, line = _layout(w, lengths, size)
        keep = line < n_bands
        if not keep.all():
            glyphs, w, begins, line, text_id = (a[keep] for a in (glyphs, w, begins, line, text_id))
        slot = text_id * n_bands + line
        new_line = np.ones(len(slot), bool)
        new_line[1:] = slot[1:] != slot[:-1]
        x = begins - np.maximum.accumulate(np.where(new_line, begins, 0))
        row = np.cumsum(new_line) - 1  # compact index of each used (text, line)
        canvas = np.zeros((int(row[-1]) + 1 if len(row) else 0, size), np.uint16)
        total = int(w.sum())
        if total:
            owner = np.repeat(np.arange(len(w)), w)
            j = np.arange(total) - np.repeat(np.cumsum(w) - w, w)
            canvas[row[owner], x[owner] + j] = columns[glyphs[owner], j]
        ink = ((canvas[:, None, :] >> _ROW_SHIFTS[None, :, None]) & 1).astype(bool)
        lines = out.reshape(-1, CELL, size)
        lines[slot[new_line]] = np.where(ink, np.uint8(self.foreground), np.uint8(self.background))


def _layout(
    w: np.ndarray, lengths: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For glyphs of widths ``w`` (all texts one after another, ``lengths`` each): each glyph's
    text, left edge over the whole run, and line (the reference's wrap rule, in float32 as it
    computes it)."""
    text_id = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    nonempty = lengths > 0
    ends = np.cumsum(w)  # running right edge of each glyph over the whole batch
    begins = ends - w
    text_begin = np.zeros(len(lengths), np.int64)
    text_begin[nonempty] = begins[starts[nonempty]]
    widest = np.zeros(len(lengths), np.int64)
    widest[nonempty] = np.maximum.reduceat(w, starts[nonempty])
    cum = (ends - text_begin[text_id]).astype(np.float32)
    line = np.floor(cum / (size - widest).astype(np.float32)[text_id]).astype(np.int64)
    return text_id, begins, line


def draw_patch_grid(image: np.ndarray, patch: int = 16) -> np.ndarray:
    """Return an RGB copy of ``image`` with the ViT patch grid drawn in red (1-px lines)."""
    image = np.asarray(image)
    if (
        image.dtype != np.uint8
        or image.ndim not in (2, 3)
        or (image.ndim == 3 and image.shape[2] != 3)
    ):
        raise ValueError(
            f"image must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}"
        )
    patch = _check_int("patch", patch, 1)
    rgb = UnifontRenderer.to_rgb(image) if image.ndim == 2 else image.copy()
    rgb[::patch, :] = (255, 0, 0)
    rgb[:, ::patch] = (255, 0, 0)
    return rgb


def render_to_png(
    text: str | bytes,
    path: str | PathLike,
    *,
    image_size: int = 224,
    show_grid: bool = False,
    **renderer_kwargs: Any,
) -> np.ndarray:
    """Render ``text`` and save it (RGB with the patch grid if asked); return the image.

    The format follows the suffix of ``path`` (``.jpg`` writes a JPEG), PNG when it has none;
    a suffix Pillow cannot write raises ValueError before anything is rendered or written.
    """
    from PIL import Image

    suffix = Path(path).suffix.lower()
    image_format = Image.registered_extensions().get(suffix) if suffix else "PNG"
    if image_format not in Image.SAVE:
        raise ValueError(
            f"{path}: unknown image suffix {suffix!r}; use .png, .jpg or another format "
            "Pillow writes"
        )
    image = UnifontRenderer(image_size=image_size, **renderer_kwargs)(text)
    if show_grid:
        image = draw_patch_grid(image)
    Image.fromarray(image).save(path, format=image_format)
    return image

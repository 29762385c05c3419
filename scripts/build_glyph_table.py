"""Build the packaged Unifont glyph table used by ``clippo.render``.

Plane 0 comes from Debian's ``unifont`` package (``unifont.hex``); planes 1 and up come from
``fonts-unifont``'s ``unifont_upper.otf``, whose pixel-square outlines are rasterised back to
bitmaps here (GNU Unifont ships no upper-plane ``.hex`` in Debian). The result is one compressed
``.npz`` with ``codepoints`` (uint32, sorted) and ``glyphs`` (uint8, one 32-byte row per code
point, in the reference renderer's layout: two bytes per pixel row, 8-pixel-wide glyphs in the
left byte).

    python scripts/build_glyph_table.py                      # rebuild the packaged table
    python scripts/build_glyph_table.py --upper-hex /tmp/u.hex   # also write planes 1+ as .hex
    python scripts/build_glyph_table.py --check-otf /usr/share/fonts/opentype/unifont/unifont.otf

``--check-otf`` rasterises the plane-0 OTF and compares it with ``unifont.hex`` glyph by glyph,
which validates the rasteriser used for the upper planes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from fontTools.pens.recordingPen import RecordingPen
from fontTools.ttLib import TTFont

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "clippo" / "assets" / "unifont"
PLANE0_HEX = Path("/usr/share/unifont/unifont.hex")
UPPER_OTF = Path("/usr/share/fonts/opentype/unifont/unifont_upper.otf")
COPYRIGHT = Path("/usr/share/doc/unifont/copyright")
GPL2 = Path("/usr/share/common-licenses/GPL-2")


def read_hex(path: Path) -> dict[int, bytes]:
    """Parse a Unifont .hex file into {code point: 32-byte glyph in the reference layout}."""
    glyphs = {}
    for line in path.read_text(encoding="ascii").splitlines():
        if not line.strip():
            continue
        cp, bits = line.strip().split(":")
        glyphs[int(cp, 16)] = to_cell_bytes(bytes.fromhex(bits))
    return glyphs


def to_cell_bytes(raw: bytes) -> bytes:
    """Place 16-byte (8x16) glyphs in the left byte of each 2-byte row, as the reference does."""
    if len(raw) == 32:
        return raw
    if len(raw) != 16:
        raise ValueError(f"glyph of {len(raw)} bytes; Unifont glyphs are 16 or 32 bytes")
    cell = bytearray(32)
    cell[0::2] = raw
    return bytes(cell)


def rasterise_otf(path: Path, min_cp: int = 0) -> dict[int, tuple[int, np.ndarray]]:
    """Rasterise every mapped glyph of a Unifont OTF to (cell width, 16 x width bool bitmap)."""
    font = TTFont(str(path))
    units = font["head"].unitsPerEm // 16  # font units per pixel
    ascent = font["hhea"].ascent
    glyph_set = font.getGlyphSet()
    hmtx = font["hmtx"]
    out = {}
    for cp, name in sorted(font.getBestCmap().items()):
        if cp < min_cp:
            continue
        advance, lsb = hmtx[name]
        # Combining marks have zero advance and are drawn left of the origin by minus their
        # lsb; shifting them back reproduces unifont.hex (checked with --check-otf).
        shift = -lsb if advance == 0 else 0
        pen = RecordingPen()
        glyph_set[name].draw(pen)
        bitmap = _fill(pen.value, shift, units, ascent, 24)
        if bitmap[:, 16:].any() or advance > 16 * units:
            raise ValueError(f"U+{cp:04X}: glyph wider than 16 pixels")
        bitmap = bitmap[:, :16]
        narrow = advance <= 8 * units and not bitmap[:, 8:].any()
        out[cp] = (8 if narrow else 16, bitmap[:, : 8 if narrow else 16])
    return out


def _fill(ops: list, shift: int, units: int, ascent: int, width: int) -> np.ndarray:
    """Nonzero-winding fill of axis-aligned polygons sampled at pixel centres."""
    edges = []  # vertical edges as (x, y_low, y_high, direction)
    for contour in _contours(ops):
        for (x0, y0), (x1, y1) in zip(contour, contour[1:] + contour[:1], strict=True):
            if x0 == x1 and y0 != y1:
                edges.append((x0 + shift, min(y0, y1), max(y0, y1), 1 if y1 > y0 else -1))
            elif y0 != y1:
                raise ValueError("outline has a non-axis-aligned edge")
    bitmap = np.zeros((16, width), bool)
    if not edges:
        return bitmap
    ex, ylo, yhi, direction = (np.array(v, float) for v in zip(*edges, strict=True))
    if (ex < 0).any():
        raise ValueError("outline extends left of its cell")
    yc = ascent - units * (np.arange(16) + 0.5)
    xc = units * (np.arange(width) + 0.5)
    spans = (ylo[None, :] < yc[:, None]) & (yc[:, None] < yhi[None, :])  # (rows, edges)
    right = ex[None, :] > xc[:, None]  # (cols, edges)
    winding = np.einsum("re,ce,e->rc", spans.astype(float), right.astype(float), direction)
    return winding != 0


def _contours(ops: list) -> list[list[tuple[float, float]]]:
    """Split RecordingPen operations into closed point lists."""
    contours, current = [], []
    for op, args in ops:
        if op == "moveTo":
            current = [args[0]]
        elif op == "lineTo":
            current.append(args[0])
        elif op in ("closePath", "endPath"):
            if current and current[-1] == current[0]:
                current.pop()
            contours.append(current)
            current = []
        else:
            raise ValueError(f"unexpected outline operation {op!r}; Unifont outlines are lines")
    return contours


def bitmap_to_hex(bitmap: np.ndarray) -> str:
    """Encode a 16 x 8 or 16 x 16 bool bitmap as Unifont hex digits."""
    return np.packbits(bitmap, axis=1).tobytes().hex().upper()


def check_otf(otf: Path, plane0: dict[int, bytes]) -> list[int]:
    """Compare the rasterised plane-0 OTF with unifont.hex and print the agreement."""
    raster = rasterise_otf(otf)
    same = sum(
        1
        for cp, (_, bm) in raster.items()
        if cp in plane0 and to_cell_bytes(bytes.fromhex(bitmap_to_hex(bm))) == plane0[cp]
    )
    common = len(raster.keys() & plane0.keys())
    print(f"{otf.name}: {same}/{common} glyphs identical to unifont.hex")
    return [
        cp
        for cp, (_, bm) in raster.items()
        if cp in plane0 and to_cell_bytes(bytes.fromhex(bitmap_to_hex(bm))) != plane0[cp]
    ]


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plane0", type=Path, default=PLANE0_HEX)
    ap.add_argument("--upper-otf", type=Path, default=UPPER_OTF)
    ap.add_argument("--out", type=Path, default=ASSETS / "unifont-15.0.01.npz")
    ap.add_argument("--upper-hex", type=Path, help="also write planes 1+ as a 6-digit .hex file")
    ap.add_argument("--check-otf", type=Path, help="plane-0 OTF to validate the rasteriser")
    args = ap.parse_args()

    plane0 = read_hex(args.plane0)
    if max(plane0) > 0xFFFF:
        raise ValueError(f"{args.plane0} holds code points above U+FFFF")
    if args.check_otf:
        check_otf(args.check_otf, plane0)
    upper = rasterise_otf(args.upper_otf, min_cp=0x10000)
    if args.upper_hex:
        lines = [f"{cp:06X}:{bitmap_to_hex(bm)}\n" for cp, (_, bm) in upper.items()]
        args.upper_hex.write_text("".join(lines), encoding="ascii")
        print(f"wrote {len(lines)} glyphs to {args.upper_hex}")

    glyphs = dict(plane0)
    for cp, (_, bm) in upper.items():
        glyphs[cp] = to_cell_bytes(np.packbits(bm, axis=1).tobytes())
    cps = np.array(sorted(glyphs), np.uint32)
    table = np.frombuffer(b"".join(glyphs[int(c)] for c in cps), np.uint8).reshape(-1, 32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, codepoints=cps, glyphs=table)
    for src, name in ((COPYRIGHT, "COPYRIGHT"), (GPL2, "GPL-2")):
        if src.exists():
            shutil.copyfile(src, args.out.parent / name)
    print(
        f"wrote {len(cps)} glyphs ({len(plane0)} plane 0, {len(upper)} planes 1+) to "
        f"{args.out} ({args.out.stat().st_size / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()

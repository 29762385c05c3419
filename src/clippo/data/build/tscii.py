"""TSCII 1.7, the 8-bit Tamil encoding Tux Paint's stamp descriptions use for ``ta``.

Tux Paint draws Tamil with a TSCII font, so its ``ta.utf8=`` lines hold TSCII bytes written as
the Latin-1 characters of the same values ("´Õ" is TSCII 0xB4 0xD5, "ஒரு"). ``decode_tscii``
turns such a line into Unicode Tamil. TSCII stores text in visual order: the vowel signs that
are drawn left of their consonant (ெ ே ை, bytes 0xA6-0xA8) come before it, and the two-part
vowels ொ ோ ௌ are that sign, the consonant and a right part (ா 0xA1 or ௗ 0xAA); Unicode stores
the consonant first. Checked against glibc's ``iconv -f TSCII`` on every byte and on every Tamil
description of the Debian package (tests/fixtures/tscii_golden.json, written by
scripts/make_tscii_fixtures.py).
"""

from __future__ import annotations

import unicodedata

# The 18 Tamil consonants in TSCII's order (bytes 0xB8-0xC9; with a virama 0xEC-0xFD).
_CONSONANTS = "கஙசஞடணதநபமயரலவழளறன"
_NO_NGA_NYA = _CONSONANTS.replace("ங", "").replace("ஞ", "")  # those with ு 0xCC-, ூ 0xDC-
_GRANTHA = "ஜஷஸஹ"  # 0x83-0x86, with a virama 0x88-0x8B
_VIRAMA = "\u0bcd"


def _table() -> dict[int, str]:
    table = {b: chr(b) for b in range(0x80)}
    runs = {
        0x80: "௦௧",
        0x82: ["ஸ்ரீ", *_GRANTHA, "க்ஷ", *(c + _VIRAMA for c in _GRANTHA), "க்ஷ" + _VIRAMA],
        0x8D: "௨௩௪௫‘’“”௬௭௮௯",
        0x99: ["ஙு", "ஞு", "ஙூ", "ஞூ", *"௰௱௲"],
        0xA1: "ாிீுூெேை©ௗஅஆஇஈஉஊஎஏஐஒஓஔஃ" + _CONSONANTS,
        0xCA: ["டி", "டீ"],
        0xCC: [c + "ு" for c in _NO_NGA_NYA] + [c + "ூ" for c in _NO_NGA_NYA],
        0xEC: [c + _VIRAMA for c in _CONSONANTS] + ["இ"],  # 0xFE: இ again, as in glibc
    }
    for start, chars in runs.items():
        table.update(zip(range(start, start + len(chars)), chars, strict=True))
    return table  # 0xA0 and 0xFF are unassigned


_TABLE = _table()
_PREFIX = {0xA6: "ெ", 0xA7: "ே", 0xA8: "ை"}  # drawn left of the consonant
_TWO_PART = {(0xA6, 0xA1): "ொ", (0xA7, 0xA1): "ோ", (0xA6, 0xAA): "ௌ"}
_CONSONANT_BYTES = {b for b, s in _TABLE.items() if s in {*_CONSONANTS, *_GRANTHA, "க்ஷ"}}


def decode_tscii(data: bytes) -> str:
    """Unicode Tamil (NFC) of TSCII 1.7 ``data``; ValueError names an unassigned byte.

    A left vowel sign moves after the consonant that follows it (a Grantha consonant and க்ஷ
    too, where glibc leaves the sign in front); a sign with no consonant after it stays as it
    is, as in glibc.
    """
    out = []
    i = 0
    while i < len(data):
        byte = data[i]
        if byte not in _TABLE:
            raise ValueError(f"not TSCII: byte 0x{byte:02X} at position {i} is unassigned")
        nxt = data[i + 1] if i + 1 < len(data) else None
        if byte in _PREFIX and nxt in _CONSONANT_BYTES:
            after = data[i + 2] if i + 2 < len(data) else None
            sign = _TWO_PART.get((byte, after))
            out.append(_TABLE[nxt] + (sign or _PREFIX[byte]))
            i += 3 if sign else 2
            continue
        out.append(_TABLE[byte])
        i += 1
    return unicodedata.normalize("NFC", "".join(out))


def tamil_from_tux_paint(text: str) -> str:
    """A Tux Paint ``ta`` description as Unicode Tamil: TSCII read through its Latin-1
    characters; a line with any character above U+00FF is Unicode already and kept."""
    if any(ord(ch) > 0xFF for ch in text):
        return text
    return decode_tscii(text.encode("latin-1"))

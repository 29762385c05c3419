"""TSCII, Tux Paint's Tamil encoding, against glibc's iconv (tests/fixtures/tscii_golden.json,
written by scripts/make_tscii_fixtures.py)."""

import json
from pathlib import Path

import pytest

from clippo.data.build.tscii import decode_tscii, tamil_from_tux_paint

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "tscii_golden.json").read_text("utf-8"))


def test_every_byte_decodes_as_glibc_iconv():
    assert len(GOLDEN["bytes"]) == 128
    for hex_byte, expected in GOLDEN["bytes"].items():
        data = bytes.fromhex(hex_byte)
        if expected is None:  # 0xA0 and 0xFF: iconv refuses them
            with pytest.raises(ValueError, match=f"byte 0x{hex_byte.upper()} at position 0"):
                decode_tscii(data)
        else:
            assert decode_tscii(data) == expected, hex_byte
    assert [k for k, v in GOLDEN["bytes"].items() if v is None] == ["a0", "ff"]
    assert decode_tscii(bytes(range(0x80))) == bytes(range(0x80)).decode("ascii")


def test_left_vowel_signs_move_after_their_consonant_as_glibc_iconv():
    for hex_bytes, expected in GOLDEN["sequences"].items():
        assert decode_tscii(bytes.fromhex(hex_bytes)) == expected, hex_bytes
    assert decode_tscii(b"\xa7\xb8\xa1") == "\u0b95\u0bcb"  # கோ: one code point for the vowel
    assert decode_tscii(b"\xa6\xb8\xaa") == "\u0b95\u0bcc"  # கௌ composed (NFC)
    # Where glibc leaves the sign in front: a Grantha consonant and the cluster க்ஷ take it too.
    assert decode_tscii(b"\xa6\x83\xa1") == "ஜொ"
    assert decode_tscii(b"\xa7\x87") == "க்ஷே"


def test_every_tux_paint_tamil_description_decodes_as_glibc_iconv():
    assert len(GOLDEN["tux_paint"]) == 51
    for hex_bytes, expected in GOLDEN["tux_paint"].items():
        as_written = bytes.fromhex(hex_bytes).decode("latin-1")  # the .txt's characters
        assert tamil_from_tux_paint(as_written) == expected
    assert tamil_from_tux_paint("´Õ ¸¢É¢ §¸¡Æ¢") == "ஒரு கினி கோழி"  # "A guinea fowl."
    assert tamil_from_tux_paint("ஒரு கினி கோழி") == "ஒரு கினி கோழி"  # Unicode already: kept

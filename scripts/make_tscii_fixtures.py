"""Writes tests/fixtures/tscii_golden.json: what glibc's ``iconv -f TSCII -t UTF-8`` (the
reference) makes of every TSCII byte, of a few left-vowel-sign sequences and of every Tamil
description in Debian's tuxpaint-stamps-default. ``tests/test_tscii.py`` checks
``clippo.data.build.tscii`` against it.

    python3 scripts/make_tscii_fixtures.py          # needs glibc's iconv and the tuxpaint stamps
"""

from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

from clippo.data.build.tuxpaint import STAMPS_DIR

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tscii_golden.json"
SEQUENCES = [  # left sign + consonant (+ right part); a sign with nothing to move onto
    "a7b8a1", "a6b8a1", "a6b8aa", "a8b8", "a6b8", "a7b8", "a6", "61a6", "a6a6b8", "a6ab",
    "a6ec", "a8c9a1", "a7c3a1",
]  # fmt: skip


def iconv(data: bytes) -> str | None:
    run = subprocess.run(["iconv", "-f", "TSCII", "-t", "UTF-8"], input=data, capture_output=True)
    return unicodedata.normalize("NFC", run.stdout.decode("utf-8")) if run.returncode == 0 else None


def tux_paint_lines() -> list[str]:
    """Each distinct ``ta.utf8=`` line's bytes, hex, in the order of the sorted ``.txt`` paths."""
    lines = []
    for path in sorted(STAMPS_DIR.rglob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("ta.utf8=") and line[8:].strip():
                lines.append(line[8:].strip().encode("latin-1").hex())
    return list(dict.fromkeys(lines))


def main() -> None:
    version = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout
    golden = {
        "reference": "glibc iconv -f TSCII -t UTF-8, NFC: " + version.splitlines()[0],
        "bytes": {f"{b:02x}": iconv(bytes([b])) for b in range(0x80, 0x100)},
        "sequences": {h: iconv(bytes.fromhex(h)) for h in SEQUENCES},
        "tux_paint": {h: iconv(bytes.fromhex(h)) for h in tux_paint_lines()},
    }
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(golden['tux_paint'])} Tux Paint lines")


if __name__ == "__main__":
    main()

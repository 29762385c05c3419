"""Render golden text images with big_vision's own ``render_unifont`` op.

Runs the reference unchanged: ``pp_ops.py`` is read from a big_vision checkout (or bare git
repository) given on the command line, with throw-away stand-ins for the three big_vision/absl
names it imports, and TensorFlow from a scratch environment:

    python3 -m venv /tmp/renderer/venv && /tmp/renderer/venv/bin/pip install tensorflow-cpu numpy
    python3 scripts/build_glyph_table.py --upper-hex /tmp/renderer/unifont_upper-15.0.01.hex
    /tmp/renderer/venv/bin/python scripts/make_render_fixtures.py \\
        --big-vision /work/.mirror/google-research+big_vision/repo \\
        --upper-hex /tmp/renderer/unifont_upper-15.0.01.hex

Writes ``tests/fixtures/render/golden.npz``: the input strings as raw UTF-8 bytes (invalid
sequences and encoded lone surrogates included), and for each renderer configuration the
reference images as packed bits (1 = text pixel; every golden image is two-valued). Strings on
which the reference raises are recorded in ``reference_errors`` instead.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PP_OPS = "big_vision/pp/proj/clippo/pp_ops.py"
OPENCLIPART_SVG = Path("/usr/share/openclipart/svg")
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
_META = re.compile(rb"<(dc:title|dc:description|rdf:li)>([^<]*)</\1>")


def openclipart_texts(root: Path = OPENCLIPART_SVG) -> list[str]:
    """Alt-texts from openclipart SVG metadata: title, description, keywords, in path order."""
    texts = []
    for path in sorted(root.rglob("*.svg")):
        fields: dict[bytes, list[str]] = {}
        for tag, value in _META.findall(path.read_bytes()):
            fields.setdefault(tag, []).append(html.unescape(value.decode("utf-8", "replace")))
        # The first dc:title is the image's; later ones belong to the agent (author) blocks.
        for tag in (b"dc:title", b"dc:description"):
            if fields.get(tag) and fields[tag][0].strip():
                texts.append(fields[tag][0].strip())
        keywords = [k.strip() for k in fields.get(b"rdf:li", []) if k.strip()]
        if keywords:
            texts.append(" ".join(keywords))
    return texts


def tuxpaint_texts(root: Path = TUXPAINT_STAMPS, stamps: int = 3) -> list[str]:
    """Every translation (77 languages, many scripts) of the first few tuxpaint stamp texts."""
    texts = []
    for path in sorted(root.rglob("*.txt"))[:stamps]:
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.append(line.split("=", 1)[1] if ".utf8=" in line else line)
    return texts


def edge_case_texts() -> list[str | bytes]:
    """Hand-written strings for the details that decide pixels."""
    long_text = "The quick brown fox jumps over the lazy dog. " * 20
    return [
        "",
        " ",
        "   ",
        "\t",
        "\n",
        "\t\n\r ",
        "\x00",
        "\x00\x01\x1f\x7f",
        "a\tb\nc\rd",
        "A Photo Of A CAT",
        "MiXeD CaSe ÀÉÎÕÜ ÇÑ ΣΩΔ ЖЩЯ İSTANBUL ǅ",
        "ÄÖÜ äöü ß ẞ",
        "e\u0301 a\u0300 o\u0308 n\u0303 \u0301\u0302\u0303 Z\u0351\u0352\u0353\u0354",
        "Ελληνικά γράμματα",
        "Кириллица и ёлка",
        "العربية نص",
        "עברית טקסט",
        "हिन्दी पाठ",
        "ภาษาไทย",
        "中文文本，日本語のテキスト",
        "한국어 텍스트",
        "😀🐱🚀 emoji 👍🏽 👨‍👩‍👧",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 𐍈 𓀀 🀄 \U0001f9ff \U000e0041 \U0010fffd \U000f0000",
        "\ufffd \ufeff \u200b\u200c\u200d \u2028\u2029 \ue000",
        "iiiiiiiiii" * 30,
        "W" * 200,
        "M" * 800,
        long_text,
        long_text[:767],
        long_text[:768],
        long_text[:769],
        "x" * 5000,
        " " * 1000,
        "\u4e00" * 300,
        "a" + "\u0301" * 800,
        # Invalid UTF-8 and CESU/surrogate bytes: the reference replaces them with U+FFFD.
        b"\xff\xfe",
        b"abc\x80def",
        b"\xc0\xaf",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"ABC\xedDEF",
        b"\xc3\x28\xa0\xa1",
        "lone \ud800 surrogate".encode("utf-8", "surrogatepass"),
        "pair \ud83d\ude00 as surrogates".encode("utf-8", "surrogatepass"),
    ]


def fixture_texts(n_alt: int = 400, seed: int = 0) -> list[bytes]:
    """The fixture's inputs as raw bytes: alt-texts, translations and edge cases."""
    alt = openclipart_texts()
    rng = random.Random(seed)
    picked = rng.sample(alt, n_alt)
    texts = picked + tuxpaint_texts() + edge_case_texts()
    return [t if isinstance(t, bytes) else t.encode("utf-8") for t in texts]


def load_reference(big_vision: Path, plane0_hex: Path, upper_hex: Path):
    """Return big_vision's ``get_pp_render_text`` factory, loaded from ``big_vision``."""
    if (big_vision / PP_OPS).exists():
        source = (big_vision / PP_OPS).read_text()
    else:  # a bare repository, as fetched into /work/.mirror
        source = subprocess.run(
            ["git", "-C", str(big_vision), "show", f"HEAD:{PP_OPS}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    # pp_ops.py imports these three names only to register the op with big_vision's pipeline.
    utils = types.ModuleType("big_vision.pp.utils")
    utils.InKeyOutKey = lambda **_: lambda fn: fn
    registry = types.ModuleType("big_vision.pp.registry")
    registry.Registry = types.SimpleNamespace(register=lambda _: lambda fn: fn)
    pp = types.ModuleType("big_vision.pp")
    pp.utils = utils
    sys.modules.update(
        {
            "big_vision": types.ModuleType("big_vision"),
            "big_vision.pp": pp,
            "big_vision.pp.utils": utils,
            "big_vision.pp.registry": registry,
        }
    )
    module = types.ModuleType("reference_pp_ops")
    exec(compile(source, PP_OPS, "exec"), module.__dict__)

    # The op opens its .hex files at fixed relative paths; give it a directory where they are.
    workdir = Path(tempfile.mkdtemp(prefix="bv_unifont_"))
    fontdir = workdir / "big_vision/pp/proj/clippo"
    fontdir.mkdir(parents=True)
    (fontdir / "unifont-9.0.06.hex").symlink_to(plane0_hex.resolve())
    (fontdir / "unifont_upper-9.0.06.hex").symlink_to(upper_hex.resolve())

    def factory(**kwargs):
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            return module.get_pp_render_text(**kwargs)
        finally:
            os.chdir(cwd)

    return factory


# (clippo keyword arguments, which texts) for every golden configuration.
CONFIGS = [
    ({"image_size": 224}, "all"),
    ({"image_size": 64}, "all"),
    ({"image_size": 384}, "all"),
    ({"image_size": 100}, "subset"),
    ({"image_size": 224, "monospace": True}, "subset"),
    ({"image_size": 224, "lower": False}, "subset"),
    ({"image_size": 224, "spacing": 0, "min_width": 0}, "subset"),
    ({"image_size": 224, "spacing": 3, "min_width": 7}, "subset"),
    ({"image_size": 224, "max_chars": 20, "background": 0, "foreground": 255}, "subset"),
    ({"image_size": 224, "max_chars": 0}, "subset"),
]


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-vision", type=Path, required=True)
    ap.add_argument("--plane0-hex", type=Path, default=Path("/usr/share/unifont/unifont.hex"))
    ap.add_argument("--upper-hex", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/render/golden.npz")
    args = ap.parse_args()
    import tensorflow as tf

    factory = load_reference(args.big_vision, args.plane0_hex, args.upper_hex)
    texts = fixture_texts()
    subset = list(range(0, len(texts), 5)) + list(range(len(texts) - 60, len(texts)))
    subset = sorted(set(subset))
    arrays, configs, errors = {}, [], {}
    for k, (kwargs, which) in enumerate(CONFIGS):
        ref_kwargs = dict(kwargs)
        bg = ref_kwargs.pop("background", 127)
        fg = ref_kwargs.pop("foreground", 0)
        render = tf.function(factory(**ref_kwargs, background_brightness=bg, text_brightness=fg))
        index = list(range(len(texts))) if which == "all" else subset
        images, ok = [], []
        for i in index:
            try:
                rgb = render(tf.constant(texts[i])).numpy()
            except Exception as e:  # noqa: BLE001 - the reference's failures are data here
                errors.setdefault(str(i), f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            if not (rgb == rgb[..., :1]).all() or not np.isin(rgb, (bg, fg)).all():
                raise AssertionError(f"text {i}: reference output is not two-valued gray")
            images.append(np.packbits(rgb[..., 0] == fg, axis=-1))
            ok.append(i)
        arrays[f"bits_{k}"] = np.stack(images)
        arrays[f"index_{k}"] = np.array(ok, np.int32)
        configs.append(kwargs)
        print(f"config {k} {kwargs}: {len(ok)} images, {len(index) - len(ok)} reference errors")
    blob = b"".join(texts)
    offsets = np.cumsum([0] + [len(t) for t in texts]).astype(np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        texts_blob=np.frombuffer(blob, np.uint8),
        texts_offsets=offsets,
        configs=np.array(json.dumps(configs)),
        reference_errors=np.array(json.dumps(errors)),
        tensorflow_version=np.array(tf.__version__),
        **arrays,
    )
    print(
        f"{len(texts)} texts -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); "
        f"reference errors: {errors}"
    )


if __name__ == "__main__":
    main()

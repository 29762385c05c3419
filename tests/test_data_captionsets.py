"""Caption sets in CrossModal-3600's official layout (captions.jsonl + images/KEY.jpg), and the
tuxpaint stamps written in that layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clippo.cli import main
from clippo.data.build.tuxpaint import (
    STAMPS_DIR,
    BadTamilLine,
    build_tuxpaint_set,
    rasterise_svg,
    read_stamp_descriptions,
)
from clippo.data.captionsets import is_caption_set, read_caption_set, write_captions_jsonl
from clippo.data.transforms import BadImageError

XM3600 = Path(__file__).parent / "fixtures" / "xm3600"


def test_reads_the_official_layout():
    data = read_caption_set(XM3600)
    assert data.keys == ["000411001ff7dd4f", "00084b63d3d9d1b7", "0009cd30dfef5a52"]
    assert data.image_paths[0] == XM3600 / "images" / "000411001ff7dd4f.jpg"
    assert data.languages == ["en", "fr", "ja"]
    # "caption/tokenized" and its lower-cased twin are ignored; an empty list drops the language.
    assert data.captions[0]["en"] == ["A red square on a white wall.", "A red tile."]
    assert data.captions[1]["ja"] == ["曇り空の下の緑の野原。"]
    assert "ja" not in data.captions[2]
    assert is_caption_set(XM3600) and not is_caption_set(XM3600 / "images")


def _write(tmp_path, *lines, image_keys=("a",)):
    (tmp_path / "images").mkdir(exist_ok=True)
    for key in image_keys:
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{key}.jpg")
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"image/key": "a", "en": {"caption": ["x"]}}', "{oops"], r"captions.jsonl:2: not valid"),
        (['{"en": {"caption": ["x"]}}'], r":1: 'image/key' must be a file name stem, got None"),
        (['{"image/key": "../a"}'], "must be a file name stem"),
        (['{"image/key": "a"}', '{"image/key": "a"}'], r":2: key 'a' repeats line 1"),
        (['{"image/key": "a", "en": ["x"]}'], "language 'en' must be an object with a 'caption'"),
        (['{"image/key": "a", "en": {"caption": [3]}}'], "has a caption that is not a string"),
        (["[1]"], "must be a JSON object"),
        ([""], "holds no images"),
    ],
)
def test_malformed_lines_are_named(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        read_caption_set(_write(tmp_path, *lines))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions.jsonl not found"):
        read_caption_set(tmp_path)
    root = _write(tmp_path, '{"image/key": "b", "en": {"caption": ["x"]}}')
    with pytest.raises(FileNotFoundError, match=r"1 images of .* not found, e.g. .*b\.jpg"):
        read_caption_set(root)
    assert read_caption_set(root, check_images=False).keys == ["b"]


def test_write_then_read_round_trips(tmp_path):
    _write(tmp_path, "", image_keys=("k1", "k2"))
    write_captions_jsonl(
        tmp_path,
        [("k1", {"en": ["one"], "zh_CN": ["一"]}, {"image/path": "x/one.png"}),
         ("k2", {"en": ["two", "2"]}, {})],
    )  # fmt: skip
    data = read_caption_set(tmp_path)
    assert data.captions == [{"en": ["one"], "zh_CN": ["一"]}, {"en": ["two", "2"]}]
    first = json.loads((tmp_path / "captions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"image/key": "k1", "image/path": "x/one.png",
                     "en": {"caption": ["one"]}, "zh_CN": {"caption": ["一"]}}  # fmt: skip
    with pytest.raises(ValueError, match="must start with 'image/'"):
        write_captions_jsonl(tmp_path, [("k1", {}, {"path": "x"})])


def test_stamp_description_format(tmp_path):
    path = tmp_path / "frog.txt"
    path.write_text(
        "A frog.\nfr.utf8=Une grenouille.\nzh_CN.utf8=青蛙。\nca@valencia.utf8=Una granota.\n"
        "de.utf8=   \nnot a language line\n",
        encoding="utf-8",
    )
    assert read_stamp_descriptions(path) == {
        "en": "A frog.", "fr": "Une grenouille.", "zh_CN": "青蛙。", "ca@valencia": "Una granota."
    }  # fmt: skip
    path.write_text("fr.utf8=Une grenouille.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="first line must be the English description"):
        read_stamp_descriptions(path)
    path.write_bytes(b"A \xff frog\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_stamp_descriptions(path)
    # Tux Paint's Tamil is TSCII written as Latin-1 characters: read as Unicode Tamil.
    path.write_text("A hand.\nta.utf8=´Õ ¨¸.\n", encoding="utf-8")
    assert read_stamp_descriptions(path) == {"en": "A hand.", "ta": "ஒரு கை."}
    path.write_text("A hand.\nta.utf8=´Õ \xff.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"frog.txt: the ta line: not TSCII: byte 0xFF"):
        read_stamp_descriptions(path)


@pytest.fixture
def few_stamps(tmp_path):
    """Two real stamps, a mirrored PNG without description, an SVG-only and an image-less one."""
    frog = STAMPS_DIR / "animals" / "amphibians" / "frog-1"
    if not frog.with_suffix(".png").is_file():
        pytest.skip("tuxpaint-stamps-default is not installed")
    root = tmp_path / "stamps"
    (root / "animals").mkdir(parents=True)
    (root / "town").mkdir()
    for ext in (".png", ".txt"):
        shutil.copy(frog.with_suffix(ext), root / "animals" / f"frog{ext}")
        shutil.copy(frog.with_suffix(ext), root / "town" / f"sign{ext}")
    shutil.copy(frog.with_suffix(".png"), root / "animals" / "frog_mirror.png")
    shutil.copy(frog.with_suffix(".txt"), root / "town" / "tree.txt")
    (root / "town" / "tree.svg").write_text("<svg/>")
    shutil.copy(frog.with_suffix(".txt"), root / "town" / "gift.txt")
    return root


def test_tuxpaint_build_writes_the_xm3600_layout_and_counts_skips(few_stamps, tmp_path):
    out = tmp_path / "set"
    stats = build_tuxpaint_set(out, stamps_dir=few_stamps, image_size=32)
    assert stats["images"] == 2
    assert stats["skipped"] == {"no_image": 1, "png_without_txt": 1, "svg_only": 1}
    data = read_caption_set(out)
    assert data.keys == ["tp0000", "tp0001"]
    frog = read_stamp_descriptions(STAMPS_DIR / "animals" / "amphibians" / "frog-1.txt")
    assert data.captions[0] == {lang: [text] for lang, text in frog.items()}
    assert stats["languages"] == len(frog)
    with Image.open(data.image_paths[0]) as image:
        assert image.format == "JPEG" and max(image.size) == 32 and image.mode == "RGB"
    line = json.loads((out / "captions.jsonl").read_text(encoding="utf-8").splitlines()[1])
    assert (line["image/path"], line["image/category"]) == ("town/sign.png", "town")
    # A rebuild replaces the folder's images: no stale file survives.
    (out / "images" / "stale.jpg").write_bytes(b"x")
    build_tuxpaint_set(out, stamps_dir=few_stamps, image_size=32)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["tp0000.jpg", "tp0001.jpg"]


def test_tuxpaint_stamp_with_a_bad_tamil_line_is_kept_without_it(few_stamps, tmp_path):
    sign = few_stamps / "town" / "sign.txt"
    sign.write_text("A sign.\nfr.utf8=Un panneau.\nta.utf8=´Õ \xff.\n", encoding="utf-8")
    with pytest.raises(BadTamilLine, match=r"sign.txt: the ta line: not TSCII") as caught:
        read_stamp_descriptions(sign)
    assert caught.value.descriptions == {"en": "A sign.", "fr": "Un panneau."}
    stats = build_tuxpaint_set(tmp_path / "set", stamps_dir=few_stamps, image_size=32)
    assert stats["images"] == 2 and stats["skipped"]["bad_ta_line"] == 1
    data = read_caption_set(tmp_path / "set")
    assert data.captions[1] == {"en": ["A sign."], "fr": ["Un panneau."]}


def test_tuxpaint_svg_only_stamps_are_drawn_when_asked(few_stamps, tmp_path):
    pytest.importorskip("cairosvg")
    for ext in (".svg", ".txt"):  # a real SVG-only stamp, 256 x 188 as drawn at width 256
        shutil.copy(STAMPS_DIR / "animals" / "birds" / f"swallow{ext}", few_stamps / "animals")
    shutil.copy(few_stamps / "town" / "tree.txt", few_stamps / "town" / "xml.txt")
    (few_stamps / "town" / "xml.svg").write_text(  # XML entities: refused in the safe mode
        '<!DOCTYPE svg [<!ENTITY ns "http://www.w3.org/2000/svg">]><svg xmlns="&ns;" width="9" '
        'height="9"/>'
    )
    stats = build_tuxpaint_set(tmp_path / "set", stamps_dir=few_stamps, image_size=32, svg=True)
    # tree.svg is "<svg/>": no size, so CairoSVG cannot draw it either.
    assert (stats["images"], stats["images_from_svg"]) == (3, 1)
    assert stats["skipped"] == {"bad_svg": 2, "no_image": 1, "png_without_txt": 1}
    data = read_caption_set(tmp_path / "set")
    line = json.loads((tmp_path / "set" / "captions.jsonl").read_text().splitlines()[1])
    assert line["image/path"] == "animals/swallow.svg" and data.captions[1]["en"] == ["A swallow."]
    with Image.open(data.image_paths[1]) as image:  # the longer side 32, the drawing's aspect
        assert image.size == (32, 23) and image.mode == "RGB"
        # transparency composited on white (JPEG: near white), the bird's dark feathers drawn
        assert min(image.getpixel((0, 0))) >= 250 and np.asarray(image)[..., 0].min() < 64
    tall = rasterise_svg(STAMPS_DIR / "clothes" / "black_dress.svg", 64)  # drawn 256 x 276
    assert tall.size == (59, 64)
    with pytest.raises(BadImageError, match=r"xml.svg: CairoSVG cannot draw it \(Entities"):
        rasterise_svg(few_stamps / "town" / "xml.svg", 32)
    # Without svg the set is the PNG stamps only, as every published figure was measured.
    stats = build_tuxpaint_set(tmp_path / "png", stamps_dir=few_stamps, image_size=32)
    assert (stats["images"], stats["images_from_svg"], stats["skipped"]["svg_only"]) == (2, 0, 3)


def test_cli_data_tuxpaint(few_stamps, tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "tuxpaint", "--out", str(out), "--stamps", str(few_stamps)]) == 0
    assert '"images": 2' in capsys.readouterr().out
    assert main(["data", "tuxpaint", "--out", str(out), "--stamps", str(tmp_path / "no")]) == 2
    assert "apt-get install tuxpaint-stamps-default" in capsys.readouterr().err

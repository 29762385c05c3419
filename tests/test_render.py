"""Tests for clippo.render: bit-exactness with big_vision's render_unifont, and robustness."""

from __future__ import annotations

import ast
import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import clippo.render as render_module
from clippo.render import (
    PACKAGED_TABLE,
    UnifontRenderer,
    draw_patch_grid,
    render_to_png,
)

GOLDEN = Path(__file__).parent / "fixtures" / "render" / "golden.npz"
PLANE0_HEX = Path("/usr/share/unifont/unifont.hex")


def _load_golden():
    with np.load(GOLDEN) as data:
        blob, offsets = data["texts_blob"].tobytes(), data["texts_offsets"]
        texts = [blob[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        configs = json.loads(str(data["configs"]))
        cases = []
        for k, cfg in enumerate(configs):
            size = cfg["image_size"]
            bits = np.unpackbits(data[f"bits_{k}"], axis=-1)[..., :size].astype(bool)
            cases.append((cfg, data[f"index_{k}"], bits))
        errors = json.loads(str(data["reference_errors"]))
    return texts, cases, errors


TEXTS, CASES, REFERENCE_ERRORS = _load_golden()


def _expected(cfg: dict, bits: np.ndarray) -> np.ndarray:
    return np.where(bits, cfg.get("foreground", 0), cfg.get("background", 127)).astype(np.uint8)


def test_golden_fixture_covers_required_inputs():
    sizes = {cfg["image_size"] for cfg, _, _ in CASES if len(cfg) == 1}
    assert {224, 64, 384} <= sizes
    assert len(CASES[0][1]) >= 500 and not REFERENCE_ERRORS
    decoded = b"".join(TEXTS).decode("utf-8", "replace")
    for sample in ("α", "и", "ع", "ע", "ह", "ก", "中", "한", "😀", "\t", "\n", "\u0301"):
        assert sample in decoded
    assert b"" in TEXTS and max(len(t) for t in TEXTS) > 768


@pytest.mark.parametrize("case", range(len(CASES)), ids=lambda k: json.dumps(CASES[k][0]))
def test_matches_reference_pixels_exactly(case):
    cfg, index, bits = CASES[case]
    got = UnifontRenderer(**cfg)([TEXTS[i] for i in index])
    want = _expected(cfg, bits)
    wrong = [int(i) for i, g, w in zip(index, got, want, strict=True) if not np.array_equal(g, w)]
    assert got.shape == want.shape and got.dtype == np.uint8
    assert not wrong, f"{len(wrong)} texts differ from the reference, e.g. {TEXTS[wrong[0]]!r}"


def test_golden_comparison_detects_a_one_column_change():
    cfg, index, bits = CASES[0]
    got = UnifontRenderer(**{**cfg, "spacing": 2})([TEXTS[i] for i in index])
    assert not np.array_equal(got, _expected(cfg, bits))


def test_str_and_bytes_inputs_render_alike():
    cfg, index, bits = CASES[0]
    r = UnifontRenderer(**cfg)
    want = _expected(cfg, bits)
    for i, expected in zip(index, want, strict=True):
        raw = TEXTS[i]
        # Lone surrogates were stored as their UTF-8 bytes; the str form must render the same.
        text = raw.decode("utf-8", "surrogatepass") if b"surrogate" in raw else None
        if text is None:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
        np.testing.assert_array_equal(r(text), expected)


def test_single_text_and_batch_shapes():
    r = UnifontRenderer()
    assert r("A photo of a cat").shape == (224, 224)
    batch = r(["first", "second"])
    assert batch.shape == (2, 224, 224) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[1], r("second"))
    assert r([]).shape == (0, 224, 224)
    assert r(("a", b"b")).shape == (2, 224, 224)
    assert UnifontRenderer(image_size=100)(["x"] * 3).shape == (3, 100, 100)


def test_empty_and_blank_texts_give_background():
    r = UnifontRenderer()
    for text in ("", " ", "   ", b""):
        assert (r(text) == 127).all()


def test_lowercasing_is_ascii_only_like_tf_strings_lower():
    lower, keep = UnifontRenderer(), UnifontRenderer(lower=False)
    np.testing.assert_array_equal(lower("CAT"), lower("cat"))
    assert not np.array_equal(keep("CAT"), keep("cat"))
    np.testing.assert_array_equal(lower("ÀΣЖ"), keep("ÀΣЖ"))  # non-ASCII letters stay upper
    assert not np.array_equal(lower("ÀΣЖ"), lower("àσж"))


def test_text_is_cut_at_max_chars():
    r = UnifontRenderer(max_chars=5)
    np.testing.assert_array_equal(r("hello world"), r("hello"))
    unlimited = UnifontRenderer(max_chars=None)
    assert not np.array_equal(unlimited("hello world"), unlimited("hello"))


def test_to_rgb_repeats_channels():
    r = UnifontRenderer()
    imgs = r(["a", "b"])
    rgb = r.to_rgb(imgs)
    assert rgb.shape == (2, 224, 224, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], imgs)


def test_render_pair_draws_sep_between_texts():
    r = UnifontRenderer()
    np.testing.assert_array_equal(r.render_pair("a b", "c"), r("a b [SEP] c"))
    pairs = r.render_pair(["x", "y"], [b"z", "w"])
    np.testing.assert_array_equal(pairs[1], r("y [SEP] w"))
    with pytest.raises(ValueError, match="2 first and 1 second"):
        r.render_pair(["x", "y"], ["z"])
    with pytest.raises(TypeError, match="two texts or two sequences"):
        r.render_pair("x", ["z"])


def test_bad_input_types_raise_type_error_naming_the_type():
    r = UnifontRenderer()
    for bad, name in ((None, "NoneType"), (3, "int"), (2.5, "float"), ([b"ok", 7], "int")):
        with pytest.raises(TypeError, match=name):
            r(bad)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(), st.binary()), max_size=4), st.sampled_from([17, 64, 224]))
def test_any_unicode_or_bytes_renders_two_valued_images(texts, size):
    r = UnifontRenderer(image_size=size)
    out = r(texts)
    assert out.shape == (len(texts), size, size) and out.dtype == np.uint8
    assert np.isin(out, (0, 127)).all()
    for text, img in zip(texts, out, strict=True):  # batching never changes a text's pixels
        np.testing.assert_array_equal(r(text), img)


@pytest.mark.parametrize("size", [224, 40])
def test_long_list_is_drawn_in_bounded_chunks_with_the_same_pixels(monkeypatch, size):
    r = UnifontRenderer(image_size=size)
    # Golden texts (every script, blanks, > 768 characters) and a lone surrogate mid-list.
    texts = [TEXTS[i % len(TEXTS)] for i in range(300)]
    texts[150] = "a\ud800b"
    monkeypatch.setattr(render_module, "_CHUNK_TEXTS", len(texts))
    at_once = r(texts)
    chunks: list[int] = []
    render_chunk = UnifontRenderer._render_chunk

    def counted(self, chunk, out, size):
        chunks.append(len(chunk))
        render_chunk(self, chunk, out, size)

    monkeypatch.setattr(UnifontRenderer, "_render_chunk", counted)
    monkeypatch.setattr(render_module, "_CHUNK_TEXTS", 7)
    tracemalloc.start()
    in_chunks = r(texts)
    extra = tracemalloc.get_traced_memory()[1] - in_chunks.nbytes  # numpy reports to tracemalloc
    tracemalloc.stop()
    assert max(chunks) == 7 and sum(chunks) == len(texts)
    assert extra < 2**20  # intermediates scale with the chunk (~0.3 MiB), not the list (~7 MiB)
    np.testing.assert_array_equal(in_chunks, at_once)
    calls = np.concatenate([r(texts[i : i + 50]) for i in range(0, len(texts), 50)])
    np.testing.assert_array_equal(calls, at_once)
    assert at_once.shape == (len(texts), size, size) and at_once.flags.c_contiguous


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", min_codepoint=0x20), max_size=40))
def test_surrogate_free_str_equals_its_utf8_bytes(text):
    r = UnifontRenderer(image_size=64)
    np.testing.assert_array_equal(r(text), r(text.encode("utf-8")))


def test_lone_surrogates_render_like_their_replacement_characters():
    r = UnifontRenderer()
    np.testing.assert_array_equal(r("a\ud800b"), r("a\ufffd\ufffd\ufffdb"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"image_size": 16}, ValueError, "image_size must be >= 17"),
        ({"image_size": "224"}, TypeError, "image_size must be an int"),
        ({"font_size": 8}, ValueError, "font_size=8 is not supported"),
        ({"background": 256}, ValueError, r"background must be in \[0, 255\]"),
        ({"spacing": -1}, ValueError, "spacing must be >= 0"),
        ({"lower": "yes"}, TypeError, "lower must be a bool"),
        ({"hex_files": "/x.hex"}, TypeError, "list of paths"),
        ({"hex_files": ["/nonexistent.hex"]}, FileNotFoundError, "/nonexistent.hex"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        UnifontRenderer(**kwargs)


def test_config_round_trips_through_json():
    r = UnifontRenderer(image_size=384, lower=False, max_chars=None)
    d = json.loads(json.dumps(r.config()))
    assert UnifontRenderer(**d) == r
    assert d["image_size"] == 384 and d["hex_files"] is None


def test_pickle_is_small_and_renders_the_same():
    r = UnifontRenderer(image_size=64, spacing=2)
    blob = pickle.dumps(r)
    assert len(blob) < 1000  # settings only, never the glyph table
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone("pickled"), r("pickled"))


def test_glyph_tables_are_shared_between_renderers():
    a, b = UnifontRenderer(image_size=64), UnifontRenderer(image_size=384)
    assert all(x is y for x, y in zip(a._tables, b._tables, strict=True))


def test_user_hex_files_replace_the_packaged_table(tmp_path):
    # A one-glyph font: 'a' is a full 8x16 block, everything else is blank.
    hex_file = tmp_path / "tiny.hex"
    hex_file.write_text("0061:" + "FF" * 16 + "\n")
    r = UnifontRenderer(image_size=32, hex_files=[hex_file])
    img = r("ab")
    assert (img[:16, :8] == 0).all() and (img[:16, 8:] == 127).all() and (img[16:] == 127).all()
    upper = tmp_path / "upper.hex"
    upper.write_text("01F600:" + "F000" * 16 + "\n")
    img = UnifontRenderer(image_size=32, hex_files=[hex_file, upper])("😀")
    assert (img[:16, 0:4] == 0).all() and (img[:16, 4:] == 127).all()


def test_malformed_hex_file_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.hex"
    bad.write_text("0041:" + "00" * 16 + "\n0042:XYZ\n")
    with pytest.raises(ValueError, match=r"bad\.hex:2"):
        UnifontRenderer(hex_files=[bad])


@pytest.mark.skipif(not PLANE0_HEX.exists(), reason="Debian's unifont package is not installed")
def test_packaged_table_equals_debian_unifont_hex_for_plane0():
    from_hex = UnifontRenderer(hex_files=[PLANE0_HEX])
    packaged = UnifontRenderer()
    _, index, _ = CASES[0]
    plane0 = [
        TEXTS[i]
        for i in index
        if all(ord(c) < 0x10000 for c in TEXTS[i].decode("utf-8", "replace"))
    ]
    np.testing.assert_array_equal(from_hex(plane0), packaged(plane0))


def test_packaged_table_is_compact():
    assert PACKAGED_TABLE.stat().st_size < 2_000_000
    assert (PACKAGED_TABLE.parent / "COPYRIGHT").exists()


def test_render_module_does_not_import_torch():
    tree = ast.parse(Path(render_module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names
            if isinstance(node, ast.Import)
            else [type("A", (), {"name": node.module or ""})]
        )
    }
    assert "torch" not in imported and "tensorflow" not in imported


def test_question_on_image_puts_text_lines_above_resized_image():
    r = UnifontRenderer()
    image = np.zeros((50, 80, 3), np.uint8)
    image[..., 1] = 200
    out = r.render_question_on_image(image, "What color is the square?")
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:16, :, 0], r("What color is the square?")[:16])
    assert (out[16:, :, 1] == 200).all() and (out[16:, :, 0] == 0).all()
    long_q = "why " * 200
    capped = r.render_question_on_image(Image.fromarray(image), long_q, image_size=384)
    assert capped.shape == (384, 384, 3)
    assert (capped[64:, :, 1] == 200).all() and (capped[:64] != 200).all()
    two = r.render_question_on_image(image, long_q, max_lines=2)
    assert (two[32:, :, 1] == 200).all()
    with pytest.raises(ValueError, match="uint8"):
        r.render_question_on_image(np.zeros((4, 4, 3), np.float32), "q")


def test_patch_grid_marks_every_16th_row_and_column():
    img = UnifontRenderer()("grid")
    grid = draw_patch_grid(img)
    assert grid.shape == (224, 224, 3)
    red = (grid == (255, 0, 0)).all(-1)
    assert red[::16].all() and red[:, ::16].all()
    assert not red[1:16, 1:16].any()
    with pytest.raises(ValueError, match="uint8"):
        draw_patch_grid(np.zeros((4, 4), np.int64))


def test_render_to_png_writes_the_rendered_pixels(tmp_path):
    path = tmp_path / "out.png"
    img = render_to_png("some text", path, image_size=64)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    np.testing.assert_array_equal(img, UnifontRenderer(image_size=64)("some text"))
    grid = render_to_png("some text", tmp_path / "g.png", show_grid=True)
    assert np.asarray(Image.open(tmp_path / "g.png")).shape == (224, 224, 3)
    assert (grid[0] == (255, 0, 0)).all()


def test_cli_render_writes_what_the_model_sees_with_optional_grid(tmp_path):
    from PIL import Image

    from clippo.cli import main

    plain, grid = tmp_path / "plain.png", tmp_path / "grid.png"
    assert main(["render", "Ünïcode café", "-o", str(plain), "--image-size", "64"]) == 0
    assert (
        main(["render", "Ünïcode café", "-o", str(grid), "--image-size", "64", "--show-grid"]) == 0
    )
    expected = UnifontRenderer(image_size=64)("Ünïcode café")
    np.testing.assert_array_equal(np.asarray(Image.open(plain)), expected)
    rgb = np.asarray(Image.open(grid))
    assert rgb.shape == (64, 64, 3)
    assert (rgb[::16, :] == (255, 0, 0)).all() and (rgb[:, ::16] == (255, 0, 0)).all()
    inside = np.ones((64, 64), bool)
    inside[::16, :] = inside[:, ::16] = False
    np.testing.assert_array_equal(rgb[inside], UnifontRenderer.to_rgb(expected)[inside])


@pytest.mark.parametrize(("unit", "most"), [("a", 32), ("வ", 17), ("中", 17), ("W ", 18)])
def test_fits_says_whether_every_glyph_is_drawn(unit, most):
    r = UnifontRenderer(64)
    fits = r.fits([unit * k for k in range(1, 41)])
    assert fits.tolist() == [k <= most for k in range(1, 41)]
    # The last unit that fits changes the pixels; the next one is not drawn at all.
    assert not np.array_equal(r(unit * (most - 1)), r(unit * most))
    assert np.array_equal(r(unit * most), r(unit * (most + 1)))


def test_fits_counts_the_max_chars_cut_and_takes_odd_strings():
    r = UnifontRenderer(224, max_chars=5)
    assert r.fits(["abcde", "abcdef", "", b"abc", "a\ud800b"]).tolist() == [
        True, False, True, True, True
    ]  # fmt: skip

"""Tokenization efficiency: CLIPPO's patch lengths against hand-counted renders, piece counts."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from clippo.analysis import (
    LanguageLengths,
    clippo_sequence_length,
    compare_lengths,
    sentencepiece_lengths,
    share_of_languages_shorter,
    unknown_piece_rate,
)
from clippo.render import UnifontRenderer
from clippo.tokenizer import train_tokenizer

FORTUNES = Path("/usr/share/games/fortunes/fortunes")

# Hand counts. The default renderer trims each Unifont glyph to its inked columns plus one
# column of spacing either side (cut at the 16-px cell, at least 4 wide); widths read from its
# glyph table: c 7, a 7, t 6, h 7, e 7, l 6, o 7 (each with a blank first column, ink to the
# last), space 4 (blank), 中 12 (ink in columns 1-11), 文 15 (ink in all), م 6, ر 7, ح 7, ب 7
# (blank first column), ا 4 (ink in column 1 only), 😀 16 (ink in columns 1-15). Glyphs sit
# side by side from x = 0 on the first 16-px line, so one line's length is the patch column
# of the last inked pixel column (x // 16), plus one.
HAND_COUNTED = [
    ("ca", 1),  # 7 + 7 = 14 px: last ink at x = 13, patch 0
    ("cat", 2),  # 7 + 7 + 6 = 20 px: last ink at x = 19, patch 1
    ("hello", 3),  # 7 + 7 + 6 + 6 + 7 = 33 px: 'o' inks x = 32, one column into patch 2
    ("Hello", 3),  # upper-case ASCII is rendered lower-cased, as the paper's pipeline does
    ("   a", 2),  # 3 blank spaces shift 'a' to x = 12..18: ink at 13..18 reaches patch 1
    ("ca   ", 1),  # trailing spaces are laid out but draw nothing
    ("中文中文", 4),  # 12 + 15 + 12 + 15 = 54 px: last ink at x = 53, patch 3
    ("مرحبا", 2),  # drawn left to right: 6 + 7 + 7 + 7 = 27, then ا inks x = 28, patch 1
    ("ببا", 1),  # 7 + 7 = 14, ا inks x = 15 only: 18 px wide but every pixel in patch 0
    ("😀", 1),  # one 16-px glyph, ink in x = 1..15
    ("😀😀", 2),  # second emoji inks x = 17..31, patch 1
    # Wrap rule: glyph k goes to line floor(7k / (224 - 7)) = floor(k / 31), so 30 'c' fill
    # line 0 (210 px) and 'c' 31..35 start line 1 at x = 0: 5 * 7 = 35 px, last ink x = 34,
    # patch column 2 of patch row 1 -> 14 + 3 = 17.
    ("c" * 35, 17),
    ("", 0),  # nothing to draw
    ("     ", 0),  # Unifont's space glyph is blank
    ("\u00a0\u3000 ", 0),  # so are no-break and ideographic space
    ("\n", 1),  # but control characters are drawn as boxed hex codes by Unifont
]


@pytest.mark.parametrize(("text", "expected"), HAND_COUNTED, ids=[repr(t) for t, _ in HAND_COUNTED])
def test_clippo_length_matches_hand_count(text, expected):
    assert clippo_sequence_length([text]) == [expected]


def test_clippo_length_of_a_list_keeps_order():
    texts = [t for t, _ in HAND_COUNTED]
    assert clippo_sequence_length(texts) == [n for _, n in HAND_COUNTED]


def test_monospace_cjk_takes_full_16px_cells():
    # Monospace cells are 16 px: 中 inks x = 2..12, 文 (second cell) x = 16..30, a third 中
    # x = 34..44; proportional "中文中" would be 12 + 15 + 12 = 39 px, i.e. also 3 patches.
    assert clippo_sequence_length(["中文", "中文中"], monospace=True) == [2, 3]
    assert clippo_sequence_length(["中文"]) == [2]  # 12 + 15 = 27 px, last ink x = 26


def test_clippo_length_at_other_image_size_uses_that_grid():
    # At 64 px a row has 4 patches; the wrap rule is floor(7k / 57): 'c' 1..8 on line 0
    # (56 px), 'c' 9..10 start line 1 (14 px, patch 0 of row 1) -> 4 + 1 = 5.
    assert clippo_sequence_length(["hello", "c" * 10], image_size=64) == [3, 5]


def test_render_options_reach_the_renderer():
    # Inverted colours: ink is still whatever differs from the (now black) background.
    assert clippo_sequence_length(["hello", "  "], background=0, foreground=255) == [3, 0]


def test_long_list_is_rendered_in_chunks_with_the_same_lengths():
    base = [t for t, _ in HAND_COUNTED]
    texts = base * (600 // len(base) + 1)  # crosses the 256-text chunk boundaries
    assert clippo_sequence_length(texts) == [n for _, n in HAND_COUNTED] * (len(texts) // len(base))


def test_clippo_length_is_the_last_inked_patch_of_the_render():
    # Cross-check on real sentences against the rendered image, looping patch by patch.
    texts = _fortune_lines()[:40]
    image = UnifontRenderer()(texts)
    for img, length in zip(image, clippo_sequence_length(texts), strict=True):
        inked = [
            (img[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] != 127).any()
            for r in range(14)
            for c in range(14)
        ]
        assert length == (max(i for i, v in enumerate(inked) if v) + 1 if any(inked) else 0)


def test_clippo_length_rejects_bad_geometry():
    with pytest.raises(ValueError, match="not a multiple of patch_size 16"):
        clippo_sequence_length(["a"], image_size=100)
    with pytest.raises(ValueError, match="foreground and background are both 127"):
        clippo_sequence_length(["a"], foreground=127)


def test_a_single_string_is_refused_not_measured_per_character(char_model):
    with pytest.raises(TypeError, match="not a single string"):
        clippo_sequence_length("hello")
    with pytest.raises(TypeError, match="not a single string"):
        sentencepiece_lengths("hello", char_model)


def _fortune_lines() -> list[str]:
    if not FORTUNES.is_file():
        pytest.skip(f"{FORTUNES} (Debian's fortunes-min) is not installed")
    raw = FORTUNES.read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in raw.splitlines() if line.strip() not in ("", "%")]


@pytest.fixture(scope="module")
def unigram_model(tmp_path_factory):
    """A 100-piece unigram model on ~400 English fortune lines (no Hangul in its vocabulary)."""
    out = tmp_path_factory.mktemp("spm") / "unigram100.model"
    return train_tokenizer(_fortune_lines()[:400], out, 100, character_coverage=1.0)


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    """A character model: one piece per character plus '▁' per word, so counts are by hand."""
    out = tmp_path_factory.mktemp("spm") / "char.model"
    return train_tokenizer(_fortune_lines()[:400], out, 100, model_type="char")


def test_sentencepiece_lengths_hand_counted_on_a_char_model(char_model):
    # "the cat" -> ▁ t h e ▁ c a t = 8; upper case is lower-cased first, as the towers do.
    # Hangul is not in the vocabulary: SentencePiece folds a run of unknown characters into one
    # unknown piece, so "한국어 한국" -> ▁ <unk> ▁ <unk> = 4.
    texts = ["the cat", "THE CAT", "", "   ", "한국어 한국"]
    assert sentencepiece_lengths(texts, char_model) == [8, 8, 0, 0, 4]
    # Cased: "THE" and "CAT" are unknown runs -> ▁ <unk> ▁ <unk>.
    assert sentencepiece_lengths(["THE CAT"], char_model, lower=False) == [4]


def test_unknown_piece_rate_hand_counted_on_a_char_model(char_model):
    assert unknown_piece_rate(["the cat"], char_model) == 0.0
    assert unknown_piece_rate(["한국어 한국"], char_model) == 0.5  # 2 of 4 pieces
    assert unknown_piece_rate(["THE CAT"], char_model, lower=False) == 0.5
    # Pooled over all pieces, not averaged per text: 1 unknown among 8 + 2 pieces.
    assert unknown_piece_rate(["the cat", "한국어"], char_model) == pytest.approx(0.1)
    assert unknown_piece_rate(["", "  "], char_model) == 0.0  # no pieces at all


def test_unigram_model_knows_english_but_not_korean(unigram_model):
    english = ["the cat sat on the mat", "a gift of a flower will soon be made to you"]
    korean = ["고양이가 매트 위에 앉았다", "한국어 문장입니다"]
    assert unknown_piece_rate(english, unigram_model) == 0.0
    assert unknown_piece_rate(korean, unigram_model) > 0.3  # one <unk> per word, one ▁ per word
    # A 100-piece unigram model merges some letters ("▁the" is one piece), so English costs
    # fewer pieces than the char model's one per character, yet at least one per word.
    lengths = sentencepiece_lengths(english, unigram_model)
    for text, n in zip(english, lengths, strict=True):
        assert len(text.split()) <= n < len(text.replace(" ", "")) + len(text.split())


def test_compare_lengths_summarises_per_language():
    texts = {"en": ["a", "b", "c", "d"], "ko": ["e", "f"]}
    ours = {"a": 1, "b": 1, "c": 1, "d": 5, "e": 1, "f": 2}
    other = {"a": 2, "b": 2, "c": 2, "d": 2, "e": 3, "f": 3}
    result = compare_lengths(
        texts, lambda ts: [ours[t] for t in ts], lambda ts: [other[t] for t in ts]
    )
    assert result == {
        "en": LanguageLengths(n_texts=4, mean_clippo=2.0, mean_other=2.0, clippo_shorter=0.75),
        "ko": LanguageLengths(n_texts=2, mean_clippo=1.5, mean_other=3.0, clippo_shorter=1.0),
    }
    # "More efficient" is shorter for *over* 75% of texts: en's exactly 75% does not count.
    assert share_of_languages_shorter(result) == 0.5
    assert share_of_languages_shorter(result, threshold=0.7) == 1.0


def test_compare_lengths_counts_ties_as_not_shorter():
    result = compare_lengths({"x": ["a", "b"]}, lambda ts: [3, 2], lambda ts: [3, 3])
    assert result["x"].clippo_shorter == 0.5


def test_compare_lengths_with_renderer_and_tokenizer(char_model):
    # en: "ca" is 1 patch vs ▁ c a = 3 pieces; "hello" 3 patches vs 6 pieces.
    # ko: "한국어" (15 + 14 + 15 = 44 px, last ink x = 43) is 3 patches vs ▁ <unk> = 2 pieces.
    result = compare_lengths(
        {"en": ["ca", "hello"], "ko": ["한국어"]},
        clippo_sequence_length,
        functools.partial(sentencepiece_lengths, model_path=char_model),
    )
    assert result["en"] == LanguageLengths(2, 2.0, 4.5, 1.0)
    assert result["ko"] == LanguageLengths(1, 3.0, 2.0, 0.0)
    assert share_of_languages_shorter(result) == 0.5


def test_compare_lengths_rejects_bad_inputs():
    with pytest.raises(ValueError, match="texts_by_language is empty"):
        compare_lengths({}, len, len)
    with pytest.raises(ValueError, match="'en' has no texts"):
        compare_lengths({"en": []}, len, len)
    with pytest.raises(ValueError, match="2 texts but 1 CLIPPO and 2 other lengths"):
        compare_lengths({"en": ["a", "b"]}, lambda ts: [1], lambda ts: [1, 1])
    with pytest.raises(ValueError, match="comparison is empty"):
        share_of_languages_shorter({})
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        share_of_languages_shorter({"x": LanguageLengths(1, 1.0, 2.0, 1.0)}, threshold=1.0)


def test_importing_analysis_pulls_in_neither_torch_nor_sentencepiece():
    import subprocess
    import sys

    code = (
        "import sys, clippo.analysis; "
        "print(sorted(m for m in ('torch', 'sentencepiece') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lengths_are_plain_ints():
    lengths = clippo_sequence_length(["cat"])
    assert type(lengths[0]) is int and np.asarray(lengths).dtype.kind == "i"

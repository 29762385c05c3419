"""The tokenization-efficiency table per corpus, language and tokenizer (paper Fig. 4/9), its
corpora from the Debian packages, and `clippo analyze tokens`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clippo.analysis import (
    TokenizationRow,
    token_corpora,
    tokenization_summary,
    tokenization_table,
)
from clippo.cli import main
from clippo.data.build.textpairs import fortune_files, read_fortunes
from clippo.tokenizer import train_tokenizer

STAMPS = Path("/usr/share/tuxpaint/stamps")


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    """One piece per character plus '▁' per word (no Hangul in its vocabulary)."""
    try:
        lines = [e for path in fortune_files() for e in read_fortunes(path)][:400]
    except FileNotFoundError:
        pytest.skip("fortunes is not installed")
    out = tmp_path_factory.mktemp("spm") / "char.model"
    return train_tokenizer(lines, out, 100, model_type="char")


def test_table_hand_counted(char_model):
    # en: "ca" is 1 patch vs ▁ c a = 3 pieces; "hello" 3 patches vs 6 pieces.
    # ko: "한국어" is 3 patches (44 px) vs ▁ <unk> = 2 pieces, half of them unknown.
    corpora = {"demo": {"en": ["ca", "hello"], "ko": ["한국어"]}}
    rows = tokenization_table(corpora, {"char": char_model})
    assert rows == [
        TokenizationRow("demo", "en", "char", 2, 2.0, 4.5, 1.0, 0.0),
        TokenizationRow("demo", "ko", "char", 1, 3.0, 2.0, 0.0, 0.5),
    ]
    assert tokenization_summary(rows) == {"demo": {"char": 0.5}}
    # At 32 px (2 x 2 patches) "hello" wraps its 'o' to line 1 (ink x = 1..6: patch 2 + 1 =
    # 3) and "ca" stays 1; "한국어" wraps 어 to line 1 as well -> 3 (read off the renders).
    small = tokenization_table(corpora, {"char": char_model}, image_size=32)
    assert [r.mean_clippo for r in small] == [2.0, 3.0]


def test_table_rejects_missing_tokenizers(tmp_path):
    with pytest.raises(ValueError, match="at least one SentencePiece"):
        tokenization_table({"c": {"en": ["a"]}}, {})
    with pytest.raises(FileNotFoundError, match="tokenizer .*none.model not found"):
        tokenization_table({"c": {"en": ["a"]}}, {"x": tmp_path / "none.model"})


def test_corpora_from_the_debian_packages():
    with pytest.raises(ValueError, match=r"unknown corpus \['bogus'\]"):
        token_corpora(["bogus"])
    if not Path("/usr/share/games/fortunes").is_dir():
        pytest.skip("fortunes is not installed")
    fortunes = token_corpora(["fortunes"], max_texts=5)["fortunes"]
    assert list(fortunes) == ["en"] and len(fortunes["en"]) == 5
    if not STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default is not installed")
    tuxpaint = token_corpora(["tuxpaint"])["tuxpaint"]
    assert len(tuxpaint) == 78 and len(tuxpaint["en"]) == 952  # every description, SVG too
    assert "Una granota." in tuxpaint["ca"]


def test_cli_analyze_tokens(char_model, tmp_path, capsys):
    args = ["analyze", "tokens", "--tokenizer", str(char_model), "--corpus", "fortunes"]
    assert main([*args, "--max-texts", "10", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "fortunes  vs char" in printed and "of 1 languages" in printed
    record = json.loads((tmp_path / "tokens.json").read_text())
    assert record["rows"][0]["n_texts"] == 10 and record["image_size"] == 224
    assert (tmp_path / "tokens_fortunes.png").stat().st_size > 1000
    # A name longer than the column (multi_spm16000) widens it: the columns stay aligned.
    long_name = tmp_path / "a_multilingual_tokenizer.model"
    long_name.write_bytes(char_model.read_bytes())
    args = ["analyze", "tokens", "--tokenizer", str(long_name), "--corpus", "fortunes"]
    assert main([*args, "--max-texts", "10", "--out", str(tmp_path / "long")]) == 0
    head, _, row = capsys.readouterr().out.splitlines()[:3]
    assert row.index(" 10 ") + 3 == head.index("texts") + len("texts")

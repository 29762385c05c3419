"""The SentencePiece tokenizer: training on real alt-texts, sticky-EOS padding and truncation."""

import pickle

import numpy as np
import pytest

from clippo.cli import main
from clippo.data.shards import expand_urls, iter_tar_samples, sample_texts
from clippo.tokenizer import EOS_ID, Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def alt_texts(openclipart_small):
    out, stats = openclipart_small
    return [
        text
        for url in expand_urls(str(out / stats["train_pattern"]))
        for sample in iter_tar_samples(url)
        for text in sample_texts(sample)
    ]


def test_trained_model_has_requested_size_and_t5_id_layout(openclipart_tokenizer):
    tok = Tokenizer(openclipart_tokenizer)
    assert tok.vocab_size == 300
    assert (tok.processor.pad_id(), tok.eos_id, tok.processor.unk_id()) == (0, EOS_ID, 2)
    assert tok.processor.bos_id() == -1


def test_encode_pads_with_eos_and_round_trips(openclipart_tokenizer, alt_texts):
    tok = Tokenizer(openclipart_tokenizer, max_len=196)
    ids = tok(alt_texts[:50])
    assert ids.shape == (50, 196) and ids.dtype == np.int32
    assert (ids >= 0).all() and (ids < tok.vocab_size).all()
    assert (ids[:, -1] == EOS_ID).all()  # what `last` pooling reads
    for text, row in zip(alt_texts[:50], ids, strict=True):
        n = len(tok.processor.encode(text.lower()))
        assert (row[n:] == EOS_ID).all() and EOS_ID not in row[:n]
        assert tok.decode(row) == " ".join(text.lower().split())


def test_long_text_is_cut_keeping_the_final_eos(openclipart_tokenizer, alt_texts):
    tok = Tokenizer(openclipart_tokenizer, max_len=8)
    text = " ".join(alt_texts[:20])
    full = tok.processor.encode(text.lower())
    assert len(full) > 8
    np.testing.assert_array_equal(tok(text), full[:7] + [EOS_ID])


def test_lowercases_unless_told_not_to(openclipart_tokenizer):
    lower = Tokenizer(openclipart_tokenizer, max_len=16)
    cased = Tokenizer(openclipart_tokenizer, max_len=16, lower=False)
    np.testing.assert_array_equal(lower("Piano Keyboard"), lower("piano keyboard"))
    assert not np.array_equal(cased("Piano Keyboard"), cased("piano keyboard"))


def test_single_string_and_empty_batch_shapes(openclipart_tokenizer):
    tok = Tokenizer(openclipart_tokenizer, max_len=12)
    assert tok("a cat").shape == (12,)
    assert tok([]).shape == (0, 12)
    np.testing.assert_array_equal(tok(""), np.full(12, EOS_ID))


def test_pickled_tokenizer_encodes_the_same(openclipart_tokenizer, alt_texts):
    tok = Tokenizer(openclipart_tokenizer, max_len=32)
    expected = tok(alt_texts[:10])
    clone = pickle.loads(pickle.dumps(tok))
    assert clone._sp is None  # rebuilt from the model bytes, not the C++ object
    np.testing.assert_array_equal(clone(alt_texts[:10]), expected)


def test_too_large_vocabulary_names_the_largest_possible(alt_texts, tmp_path):
    with pytest.raises(ValueError, match=r"32000-piece vocabulary: .* at most \d+"):
        train_tokenizer(alt_texts, tmp_path / "big.model", 32_000)
    assert not (tmp_path / "big.model").exists()


def test_missing_model_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="clippo tokenizer train"):
        Tokenizer(tmp_path / "nope.model")


def test_cli_trains_from_shards(openclipart_small, tmp_path, capsys):
    out, stats = openclipart_small
    model = tmp_path / "t.model"
    pattern = str(out / stats["train_pattern"])
    args = ["tokenizer", "train", "--shards", pattern, "--out", str(model)]
    assert main([*args, "--vocab-size", "200"]) == 0
    assert f"wrote {model}: 200 pieces" in capsys.readouterr().out
    assert Tokenizer(model).vocab_size == 200
    assert main([*args, "--vocab-size", "32000"]) == 2
    assert "pass a vocabulary size of at most" in capsys.readouterr().err


def test_cli_trains_on_both_sides_of_text_pairs_and_covers_every_character(tmp_path, capsys):
    from clippo.analysis.tokens import unknown_piece_rate
    from clippo.data.build.textpairs import write_text_pair_shards
    from clippo.data.build.translations import iso_codes_pairs

    # Real English-Japanese and English-Russian names: 2 scripts besides Latin, and
    # many kanji seen once or twice.
    pairs = iso_codes_pairs("ja")[:150] + iso_codes_pairs("ru")[:150]
    stats = write_text_pair_shards(pairs, tmp_path / "pairs", source="translation")
    pattern = str(tmp_path / "pairs" / stats["train_pattern"])
    full, partial = tmp_path / "full.model", tmp_path / "partial.model"
    args = ["tokenizer", "train", "--pairs", pattern, "--vocab-size", "500"]
    assert main([*args, "--character-coverage", "1.0", "--out", str(full)]) == 0
    assert "600 texts from 300 text pairs in 1 shards" in capsys.readouterr().out
    assert main([*args, "--character-coverage", "0.98", "--out", str(partial)]) == 0
    japanese = [b for _, b in pairs[:150]]
    assert unknown_piece_rate(japanese, full) == 0.0  # every character it was trained on
    assert unknown_piece_rate(japanese, partial) > 0.0  # rare kanji fall out at 98%
    assert unknown_piece_rate([a for a, _ in pairs], full) == 0.0  # the English side too
    assert main(["tokenizer", "train", "--out", str(tmp_path / "x.model")]) == 2
    assert "give --shards" in capsys.readouterr().err

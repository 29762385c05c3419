"""Text/text pairs: sentence splitting, the four pair sources on real files, shards, langtasks."""

import json
from collections import Counter
from pathlib import Path

import pytest

from clippo.cli import main
from clippo.data.build import textpairs
from clippo.data.build.langtasks import (
    build_fortune_topic,
    build_manual_nsp,
    build_manual_translation,
)
from clippo.data.build.textpairs import (
    DEBIAN_FAQ_DIR,
    DEBIAN_REFERENCE_DIR,
    FORTUNES_DIR,
    align_debian_manual,
    corpus_pairs,
    debian_manual_documents,
    display_width,
    letter_script,
    manual_files,
    manual_languages,
    nsp_pairs,
    read_aligned_lines,
    read_backtranslation_pairs,
    read_debian_manual,
    read_fortunes,
    read_tsv_pairs,
    split_sentences,
    word_dropout_pairs,
    write_text_pair_shards,
)
from clippo.data.glue import read_task
from clippo.data.textpairs import iter_text_pairs, read_text_pair_set


@pytest.fixture(scope="module")
def manual_ch03(tmp_path_factory):
    """One real chapter of the Debian reference manual in English and French."""
    root = tmp_path_factory.mktemp("manual")
    for lang in ("en", "fr"):
        (root / f"ch03.{lang}.html").symlink_to(DEBIAN_REFERENCE_DIR / f"ch03.{lang}.html")
    return root


FAQ_FIXTURE = Path(__file__).parent / "fixtures" / "debian_faq"  # the FAQ's installed layout


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Mr. Smith met Dr. Jones at 5 p.m. on Friday. They talked.",
            ["Mr. Smith met Dr. Jones at 5 p.m. on Friday.", "They talked."],
        ),
        ("Use a tool, e.g. grep. It helps.", ["Use a tool, e.g. grep.", "It helps."]),
        ("J. R. R. Tolkien wrote it. Version 2.5 is out.",
         ["J. R. R. Tolkien wrote it.", "Version 2.5 is out."]),
        ("The U.S. Army marched. Then it rained.",
         ["The U.S. Army marched.", "Then it rained."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ('"Stop!" he said. She did not.', ['"Stop!" he said.', "She did not."]),
        ("It ends here. \u201cA new quote.\u201d Done.",
         ["It ends here.", "\u201cA new quote.\u201d", "Done."]),
        ("Bonjour ! Comment ça va ? Très bien, c.-à-d. parfait.",
         ["Bonjour !", "Comment ça va ?", "Très bien, c.-à-d. parfait."]),
        ("Wait... What?   Fine (really.) ok", ["Wait...", "What?", "Fine (really.) ok"]),
        ("no end punctuation", ["no end punctuation"]),
        ("Debian 是一个发行版。它很好！真的吗？是的",
         ["Debian 是一个发行版。", "它很好！", "真的吗？", "是的"]),
        ("「はい。」次の文です。 Then English.", ["「はい。」", "次の文です。", "Then English."]),
        ("", []),
    ],
)  # fmt: skip
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_manual_reader_extracts_prose_by_section(manual_ch03):
    sections = read_debian_manual("en", manual_ch03)
    assert sections[0].chapter == "ch03" and sections[0].section == "_the_system_initialization"
    first = sections[1].paragraphs[0]
    assert first.startswith("The computer system undergoes several phases of boot strap")
    assert "(OS) to the user." in first  # inline links' text kept, markup gone
    texts = [p for s in sections for p in s.paragraphs]
    assert not any(p.startswith(("Table 3.", "Table of Contents", "Prev")) for p in texts)
    assert [s.section for s in sections] == [
        s.section for s in read_debian_manual("fr", manual_ch03)
    ]
    with pytest.raises(FileNotFoundError, match="debian-reference-de"):
        read_debian_manual("de", manual_ch03)


def test_nsp_pairs_are_consecutive_sentences_within_a_section(manual_ch03):
    documents = debian_manual_documents("en", manual_ch03)
    pairs = list(nsp_pairs(documents))
    assert len(pairs) > 50
    assert pairs[0] == (
        "It is wise for you as the system administrator to know roughly how the Debian system "
        "is started and configured.",
        "Although the exact details are in the source files of the packages installed and "
        "their documentations, it is a bit overwhelming for most of us.",
    )
    consecutive = {(d[i], d[i + 1]) for d in documents for i in range(len(d) - 1)}
    assert set(pairs) <= consecutive
    assert all(len(a.split()) >= 3 and len(b.split()) >= 3 for a, b in pairs)
    # Never across documents: the last sentence of one section never pairs with the next's.
    neighbours = zip(documents, documents[1:], strict=False)
    boundaries = {(d1[-1], d2[0]) for d1, d2 in neighbours if d1 and d2}
    assert not set(pairs) & (boundaries - consecutive)


def test_manual_alignment_pairs_translations_and_counts_drops(manual_ch03):
    pairs, dropped = align_debian_manual("en", "fr", manual_ch03)
    assert len(pairs) > 30
    assert pairs[0][1].startswith("It is wise for you as the system administrator")
    assert pairs[0][2].startswith("En tant tant qu\u2019administrateur du système")
    assert all(a != b for _, a, b in pairs)
    assert dropped["paragraph_untranslated"] > 0  # this chapter has untranslated paragraphs


def test_faq_layout_english_at_the_top_translations_in_language_folders():
    assert manual_files("en", FAQ_FIXTURE, manual="debian-faq") == [
        FAQ_FIXTURE / "basic-defs.en.html"  # index.en.html is only a table of contents
    ]
    assert manual_files("fr", FAQ_FIXTURE, manual="debian-faq") == [
        FAQ_FIXTURE / "fr" / "basic-defs.fr.html"
    ]
    assert manual_languages("debian-faq", FAQ_FIXTURE) == ["en", "fr", "ja"]
    with pytest.raises(FileNotFoundError, match="apt-get install debian-faq-de"):
        manual_files("de", FAQ_FIXTURE, manual="debian-faq")
    with pytest.raises(ValueError, match="unknown manual 'debian-policy'"):
        manual_files("en", FAQ_FIXTURE, manual="debian-policy")
    sections = read_debian_manual("en", FAQ_FIXTURE, manual="debian-faq")
    assert [(s.chapter, s.section) for s in sections] == [
        ("basic-defs", "whatisfaq"),
        ("basic-defs", "whatisdebian"),
    ]  # no table of contents, table caption or cell
    assert sections[0].paragraphs[1] == "The FAQ is kept in debian-faq."  # markup gone


def test_faq_aligns_with_the_reference_manual_aligner_in_latin_and_cjk_scripts():
    pairs, dropped = align_debian_manual("en", "fr", FAQ_FIXTURE, manual="debian-faq")
    assert pairs == [
        ("basic-defs#whatisfaq",
         "This document gives frequently asked questions about the Debian distribution.",
         "Ce document répond aux questions les plus fréquentes sur la distribution Debian."),
        ("basic-defs#whatisfaq", "Pointers to other documentation will be given.",
         "Des liens vers d'autres documentations seront fournis."),
        ("basic-defs#whatisdebian",
         "Debian GNU/Linux is a particular distribution of the Linux operating system.",
         "Debian GNU/Linux est une distribution particulière du système d'exploitation Linux."),
    ]  # fmt: skip
    assert dropped == {"paragraph_untranslated": 1, "paragraph_sentence_count_mismatch": 1}
    # Japanese: split at 。 (no space follows it), lengths compared in Unifont columns (the
    # second pair is 47 characters against 16, but 47 columns against 32).
    pairs, dropped = align_debian_manual("en", "ja", FAQ_FIXTURE, manual="debian-faq")
    assert [(a, b) for _, a, b in pairs] == [
        ("This document gives frequently asked questions about the Debian distribution.",
         "この文書は Debian ディストリビューションについてよく聞かれる疑問を集めています。"),
        ("Pointers to other documentation will be given.", "他の文書へのポインタを示します。"),
        ("The FAQ is kept in debian-faq.", "FAQ は debian-faq パッケージにあります。"),
    ]  # fmt: skip
    assert dropped == {"section_missing": 1, "paragraphs_in_dropped_sections": 2}
    assert display_width("他の文書へ") == 10 and display_width("Debian é") == 8


def test_faq_is_a_translation_corpus_of_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(textpairs.MANUAL_DIRS, "debian-faq", FAQ_FIXTURE)
    pairs, info, languages = corpus_pairs("translation", ["debian-faq"], lang_b="ja")
    assert len(pairs) == 3 and info["alignment_dropped"]["section_missing"] == 1
    assert languages is None  # one language: the pairs need no tag
    pairs, info, languages = corpus_pairs("translation", ["debian-faq"], lang_b="all")
    assert info["pairs_per_language"] == {"fr": {"debian-faq": 3}, "ja": {"debian-faq": 3}}
    assert len(pairs) == 6 and languages == ["fr"] * 3 + ["ja"] * 3
    out = tmp_path / "faq"
    assert main(["data", "textpairs", "--source", "translation", "--corpus", "debian-faq",
                 "iso-codes", "--lang-b", "fr,ja", "--max-per-language", "5",
                 "--out", str(out)]) == 0  # fmt: skip
    stats = json.loads((out / "stats.json").read_text())
    assert stats["pairs_per_language"] == {
        "fr": {"debian-faq": 3, "iso-codes": 5},
        "ja": {"debian-faq": 3, "iso-codes": 5},
    }
    written = set(iter_text_pairs(str(out / stats["train_pattern"])))
    japanese = "他の文書へのポインタを示します。"
    assert ("Pointers to other documentation will be given.", japanese) in written
    # Each sample carries its language (the bitext evaluator's per-language scores).
    held = read_text_pair_set(str(out / stats["train_pattern"]))
    language_of = dict(zip(held.queries, held.languages, strict=True))
    assert language_of[japanese] == "ja" and sorted(set(held.languages)) == ["fr", "ja"]
    assert Counter(held.languages) == {"fr": 8, "ja": 8}
    assert main(["data", "textpairs", "--source", "translation", "--corpus", "debian-faq",
                 "iso-codes", "--lang-b", "fr,ja", "--max-per-language", "5",
                 "--min-per-language", "10", "--out", str(tmp_path / "bal")]) == 0  # fmt: skip
    balanced = json.loads((tmp_path / "bal" / "stats.json").read_text())
    assert (balanced["train"], balanced["repeated"]) == (20, {"fr": 2, "ja": 2})
    assert main(["data", "textpairs", "--source", "translation", "--corpus", "debian-faq",
                 "iso-codes", "--lang-b", "fr,ja", "--max-per-language", "5",
                 "--balance-scripts", "0", "--out", str(tmp_path / "scripts")]) == 0  # fmt: skip
    by_script = json.loads((tmp_path / "scripts" / "stats.json").read_text())
    assert by_script["balance_scripts"] == 0 and by_script["scripts"]["fr"] == "LATIN"
    assert by_script["scripts"]["ja"] in {"CJK", "KATAKANA", "HIRAGANA"}
    assert by_script["train"] == 16 and by_script["repeated"] == {}  # 8 and 8: already equal
    assert main(["data", "textpairs", "--source", "translation", "--corpus", "iso-codes",
                 "--lang-b", "fr,ja", "--max-per-language", "5", "--balance-scripts", "2",
                 "--out", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "balance_scripts must be in [0, 1], got 2.0" in capsys.readouterr().err


@pytest.mark.skipif(
    not (DEBIAN_FAQ_DIR / "de" / "index.de.html").is_file(), reason="needs debian-faq-de"
)
def test_installed_faq_aligns_most_of_its_german_translation():
    pairs, dropped = align_debian_manual("en", "de", manual="debian-faq")
    assert len(pairs) > 900 and len(pairs) > 5 * sum(dropped.values())
    assert ("basic-defs#whatisdebian", "Debian GNU/Linux is:") in {p[:2] for p in pairs}


def test_fortunes_reader_splits_entries_and_drops_attributions():
    entries = read_fortunes(FORTUNES_DIR / "debian")
    assert len(entries) == 85
    assert entries[0].endswith('beading on their upper lips."')  # "-- Branden ..." cut
    assert not any("debian-devel" in e and e.rstrip().endswith("debian-devel") for e in entries)
    assert all("\n" not in e and "  " not in e for e in entries)


def test_aligned_lines_and_tsv_translation_pairs(tmp_path):
    pairs, _ = align_debian_manual("en", "fr", DEBIAN_REFERENCE_DIR)
    pairs = pairs[:20]
    (tmp_path / "a.en").write_text("\n".join(a for _, a, _ in pairs) + "\n\n")
    (tmp_path / "a.fr").write_text("\n".join(b for _, _, b in pairs) + "\n\n")
    assert list(read_aligned_lines(tmp_path / "a.en", tmp_path / "a.fr")) == [
        (a, b) for _, a, b in pairs
    ]
    (tmp_path / "short.fr").write_text("one line\n")
    with pytest.raises(ValueError, match="differ in length"):
        list(read_aligned_lines(tmp_path / "a.en", tmp_path / "short.fr"))
    (tmp_path / "p.tsv").write_text("".join(f"{a}\t{b}\n" for _, a, b in pairs))
    assert list(read_tsv_pairs(tmp_path / "p.tsv")) == [(a, b) for _, a, b in pairs]


def test_backtranslation_pairs(tmp_path):
    path = tmp_path / "bt.txt"
    path.write_text("The cat sat. -> The cat was sitting.\n\nA -> B -> C\nx\ty\n")
    assert list(read_backtranslation_pairs(path)) == [
        ("The cat sat.", "The cat was sitting."),
        ("A", "B -> C"),
        ("x", "y"),
    ]
    path.write_text("ok -> fine\nno separator here\n")
    with pytest.raises(ValueError, match=r"bt.txt:2"):
        list(read_backtranslation_pairs(path))


def test_word_dropout_pairs_are_seeded_subsequences():
    sentences = read_fortunes(FORTUNES_DIR / "debian")[:30]
    pairs = list(word_dropout_pairs(sentences, rate=0.3, seed=1))
    assert pairs == list(word_dropout_pairs(sentences, rate=0.3, seed=1))
    assert pairs != list(word_dropout_pairs(sentences, rate=0.3, seed=2))
    assert sum(a != b for a, b in pairs) > len(pairs) // 2
    for (a, b), original in zip(pairs, [s for s in sentences if len(s.split()) >= 3], strict=True):
        words = original.split()
        for kept in (a.split(), b.split()):
            assert kept and len(kept) <= len(words)
            it = iter(words)
            assert all(w in it for w in kept)  # an ordered subsequence
    assert list(word_dropout_pairs(sentences, rate=0.0)) == [
        (s, s) for s in sentences if len(s.split()) >= 3
    ]
    with pytest.raises(ValueError, match="rate"):
        list(word_dropout_pairs(sentences, rate=1.0))


def test_shards_round_trip(tmp_path):
    pairs = list(nsp_pairs([split_sentences(e) for e in read_fortunes(FORTUNES_DIR / "debian")]))
    assert len(pairs) >= 10
    stats = write_text_pair_shards(
        pairs + pairs[:3], tmp_path, source="nsp", val_size=4, shard_size=5, seed=0
    )
    assert stats["pairs"] == len(pairs) and stats["duplicates_dropped"] == 3
    assert stats["train"] == len(pairs) - 4 and stats["val"] == 4
    assert json.loads((tmp_path / "stats.json").read_text())["pairs"] == len(pairs)
    train = list(iter_text_pairs(str(tmp_path / stats["train_pattern"])))
    val = list(iter_text_pairs(str(tmp_path / stats["val_pattern"])))
    assert len(stats["shards"]["train"]) == -(-(len(pairs) - 4) // 5)
    assert sorted(train + val) == sorted(pairs) and not set(train) & set(val)
    assert train != pairs[4:]  # shuffled before sharding


def test_cli_textpairs_nsp_and_dropout_from_a_text_file(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(read_fortunes(FORTUNES_DIR / "debian")[:40]) + "\n")
    assert main(["data", "textpairs", "--source", "nsp", "--corpus", str(corpus),
                 "--out", str(tmp_path / "nsp")]) == 0  # fmt: skip
    stats = json.loads((tmp_path / "nsp" / "stats.json").read_text())
    documents = [[s for p in corpus.read_text().split("\n\n") for s in split_sentences(p)]]
    assert stats["pairs"] == len(set(nsp_pairs(documents))) > 0
    assert main(["data", "textpairs", "--source", "dropout", "--corpus", str(corpus),
                 "--out", str(tmp_path / "drop"), "--seed", "3"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "drop" / "stats.json").read_text())["source"] == "dropout"
    assert main(["data", "textpairs", "--source", "nsp", "--corpus", "nowhere",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "neither a preset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown pair source"):
        corpus_pairs("mlm", [str(corpus)])


def test_manual_tasks_are_balanced_and_split_by_section(manual_ch03):
    rows, _ = build_manual_nsp(manual_ch03, dev_fraction=0.3)
    for split_rows in rows.values():
        labels = [r[3] for r in split_rows]
        assert abs(labels.count("next") - labels.count("not_next")) <= 1
    train_a = {r[1] for r in rows["train"]}
    assert not train_a & {r[1] for r in rows["dev"]}
    documents = debian_manual_documents("en", manual_ch03)
    consecutive = {(d[i], d[i + 1]) for d in documents for i in range(len(d) - 1)}
    for _, a, b, label in rows["train"] + rows["dev"]:
        assert ((a, b) in consecutive) == (label == "next")
    rows, info = build_manual_translation(manual_ch03, dev_fraction=0.3)
    aligned = {(a, b) for _, a, b in align_debian_manual("en", "fr", manual_ch03)[0]}
    for split_rows in rows.values():
        labels = [r[3] for r in split_rows]
        assert abs(labels.count("translation") - labels.count("not_translation")) <= 1
        for _, a, b, label in split_rows:
            assert ((a, b) in aligned) == (label == "translation")
    assert info["negatives_from_same_section"] > 0


def test_fortune_topic_task_and_glue_reader(tmp_path):
    rows, info = build_fortune_topic(topics=("food", "sports"), max_per_class=40)
    assert len(rows["train"]) == 60 and len(rows["dev"]) == 20
    assert {r[1] for r in rows["dev"]} == {"food", "sports"}
    assert not {r[0] for r in rows["train"]} & {r[0] for r in rows["dev"]}
    assert info["dropped"]["over_class_cap"] > 0
    food = set(read_fortunes(FORTUNES_DIR / "food"))
    assert all((text in food) == (label == "food") for text, label in rows["train"])
    folder = tmp_path / "fortune_topic"
    folder.mkdir()
    for split, split_rows in rows.items():
        lines = ["sentence\tlabel"] + [f"{t}\t{lab}" for t, lab in split_rows]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    splits = read_task(tmp_path, "fortune_topic")
    assert splits["train"].texts_a == [r[0] for r in rows["train"]]
    assert splits["dev"].labels == [r[1] for r in rows["dev"]]


def test_cli_langtasks_writes_glue_layout(tmp_path, capsys):
    assert main(["data", "langtasks", "--out", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    for task in ("fortune_topic", "manual_nsp", "manual_translation"):
        splits = read_task(tmp_path, task)
        assert len(splits["train"]) == stats[task]["train"]["examples"] > 100
        assert len(splits["dev"]) == stats[task]["dev"]["examples"] > 50
    assert (
        Path(tmp_path / "manual_nsp" / "dev.tsv")
        .read_text()
        .startswith("index\tsentence1\tsentence2\tlabel\n")
    )
    assert "manual_translation" in capsys.readouterr().out


def test_min_per_language_repeats_small_languages_and_keeps_the_val_split(tmp_path):
    pairs = [(f"en{i}", f"fr{i}") for i in range(10)] + [(f"en{i}", f"nso{i}") for i in range(3)]
    languages = ["fr"] * 10 + ["nso"] * 3
    common = dict(source="translation", val_size=4, shard_size=5, languages=languages)
    plain = write_text_pair_shards(pairs, tmp_path / "plain", **common)
    balanced = write_text_pair_shards(pairs, tmp_path / "bal", min_per_language=8, **common)

    def read(name, stats, split):
        return list(iter_text_pairs(str(tmp_path / name / stats[f"{split}_pattern"])))

    assert read("bal", balanced, "val") == read("plain", plain, "val")  # the same dev set
    train = read("bal", balanced, "train")
    plain_train = read("plain", plain, "train")
    per_lang = Counter("nso" if b.startswith("nso") else "fr" for _, b in train)
    nso = sum(1 for _, b in plain_train if b.startswith("nso"))
    fr = len(plain_train) - nso
    assert per_lang["nso"] == 8 and per_lang["fr"] == max(fr, 8)  # fr: repeated only below 8
    assert set(train) == set(plain_train)  # repeats, nothing new
    counts = Counter(train)
    assert (
        max(counts[p] for p in plain_train if p[1].startswith("nso"))
        - min(counts[p] for p in plain_train if p[1].startswith("nso"))
        <= 1
    )  # whole passes first, then part of one
    assert balanced["repeated"] == {"nso": 8 - nso, **({"fr": 8 - fr} if fr < 8 else {})}
    assert balanced["train"] == len(train) and "repeated" not in plain
    with pytest.raises(ValueError, match="balancing needs each pair's language"):
        write_text_pair_shards(pairs, tmp_path / "x", source="translation", min_per_language=8)


def test_balance_scripts_repeats_each_script_to_its_tempered_count(tmp_path):
    # Latin in two languages, Cyrillic and Tamil in one each: the counts per script, not per
    # language, are tempered (n_max * (n / n_max) ** alpha), the val split stays the same.
    pairs = [(f"cat {i}", f"chat {i}") for i in range(40)]
    pairs += [(f"dog {i}", f"Hund {i}") for i in range(24)]
    pairs += [(f"house {i}", f"дом {i}") for i in range(12)]
    pairs += [(f"rooster {i}", f"சேவல் {i}") for i in range(6)]
    languages = ["fr"] * 40 + ["de"] * 24 + ["ru"] * 12 + ["ta"] * 6
    common = dict(source="translation", val_size=10, shard_size=16, languages=languages)
    plain = write_text_pair_shards(pairs, tmp_path / "plain", **common)
    balanced = write_text_pair_shards(pairs, tmp_path / "bal", balance_scripts=0.5, **common)

    def read(name, stats, split):
        return list(iter_text_pairs(str(tmp_path / name / stats[f"{split}_pattern"])))

    assert read("bal", balanced, "val") == read("plain", plain, "val")
    script = {"c": "LATIN", "d": "LATIN", "h": "CYRILLIC", "r": "TAMIL"}
    per_script = lambda train: Counter(script[a[0]] for a, _ in train)  # noqa: E731
    before, after = (
        per_script(read("plain", plain, "train")),
        per_script(read("bal", balanced, "train")),
    )
    n_max = before["LATIN"]
    for name, n in before.items():
        assert after[name] == max(n, round(n_max * (n / n_max) ** 0.5)), name
    assert after["LATIN"] == n_max and after["TAMIL"] > 2 * before["TAMIL"]
    assert balanced["scripts"] == {"de": "LATIN", "fr": "LATIN", "ru": "CYRILLIC", "ta": "TAMIL"}
    assert balanced["repeated"] == {k: after[k] - before[k] for k in ("CYRILLIC", "TAMIL")}
    assert set(read("bal", balanced, "train")) == set(read("plain", plain, "train"))
    one = write_text_pair_shards(pairs, tmp_path / "one", balance_scripts=1.0, **common)
    assert one["repeated"] == {} and one["train"] == plain["train"]  # alpha 1: as written
    with pytest.raises(ValueError, match=r"balance_scripts must be in \[0, 1\], got 1.5"):
        write_text_pair_shards(pairs, tmp_path / "x", balance_scripts=1.5, **common)
    with pytest.raises(ValueError, match="give one"):
        write_text_pair_shards(
            pairs, tmp_path / "x", balance_scripts=0.5, min_per_language=9, **common
        )


def test_letter_script_is_the_most_common_script_of_the_letters():
    assert letter_script(["சேவல்", "ஒரு x"]) == "TAMIL"  # signs are not letters; one Latin x
    assert letter_script(["Хлеб", "дом"]) == "CYRILLIC"
    assert letter_script(["猫と犬"]) == "CJK"  # two ideographs, one kana
    assert letter_script(["123", "!?", ""]) == ""

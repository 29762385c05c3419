"""English-X translation pairs from FreeDict dictionaries, gettext catalogues (iso-codes, the
programs' messages) and CLDR's emoji names."""

from __future__ import annotations

import gettext
import gzip
import struct
from pathlib import Path

import pytest

from clippo.data.build.textpairs import corpus_pairs
from clippo.data.build.translations import (
    _B64,
    ISO_CATALOGUES,
    LOCALE_DIR,
    _dictd_number,
    cldr_locales,
    cldr_pairs,
    freedict_locales,
    freedict_pairs,
    gettext_locales,
    gettext_pairs,
    iso_codes_locales,
    iso_codes_pairs,
    read_mo,
    translation_pairs,
)


def _b64(n: int) -> str:
    digits = ""
    while True:
        digits = _B64[n % 64] + digits
        n //= 64
        if not n:
            return digits


def _write_dictd(root, code: str, entries: list[tuple[str, str]]) -> None:
    """A dictd dictionary in FreeDict's layout: index (folded headword, base64 offset and
    length) and the gzip'd entries."""
    data, index = b"", []
    for head, body in [("00databaseinfo", "00-database-info\nabout\n"), *entries]:
        text = body.encode()
        index.append(f"{head.lower()}\t{_b64(len(data))}\t{_b64(len(text))}")
        data += text
    (root / f"freedict-eng-{code}.index").write_text("\n".join(index) + "\n")
    (root / f"freedict-eng-{code}.dict.dz").write_bytes(gzip.compress(data))


def test_dictd_numbers_are_base64_digits():
    assert [_dictd_number(s) for s in ("A", "B", "BA", "//", "c/")] == [0, 1, 64, 4095, 1855]
    assert all(_dictd_number(_b64(n)) == n for n in (0, 63, 64, 12345, 10**7))


def test_freedict_entries_give_headword_and_first_translation(tmp_path):
    _write_dictd(
        tmp_path,
        "fra",
        [
            ("abyssinia", "Abyssinia /əbisiniə/\n1. Abyssinie\n2. Ethiopie\n"),
            ("blow-off", "blow-off /blˈəʊ/ <n>\n see: {exhaust}\nAbblase <fem> [techn.], Ablass\n"),
            ("adam", "Adam /ædəm/\nAdam\n"),  # untranslated: left out
            ("123", "123\nun deux trois\n"),  # no letters in the headword: left out
            ("frog", 'frog /frɒɡ/ <n>\n   "frogs" - grenouilles\n   grenouille (f) ; crapaud\n'),
        ],
    )
    assert freedict_locales(tmp_path) == {"fr": tmp_path / "freedict-eng-fra.index"}
    assert freedict_pairs("fr", tmp_path) == [
        ("Abyssinia", "Abyssinie"),
        ("blow-off", "Abblase"),
        ("frog", "grenouille"),
    ]
    with pytest.raises(FileNotFoundError, match=r"no FreeDict English-de dictionary.*\['fr'\]"):
        freedict_pairs("de", tmp_path)


def test_iso_codes_pairs_are_translated_names_only():
    pairs = iso_codes_pairs("fr")
    assert ("Albania", "Albanie") in pairs and ("Germany", "Allemagne") in pairs
    assert all(a != b for a, b in pairs)  # "Afghanistan" is the same in French: left out
    assert ("Afghanistan", "Afghanistan") not in pairs
    with pytest.raises(FileNotFoundError, match="no iso-codes catalogues for locale 'xx'"):
        iso_codes_pairs("xx")


def _write_mo(path: Path, messages: dict[bytes, bytes]) -> Path:
    """A gettext .mo catalogue (little-endian, revision 0) holding ``messages`` as given."""
    keys = sorted(messages)
    start = 28 + 16 * len(keys)
    blob, originals, translations = b"", [], []
    for table, items in ((originals, keys), (translations, [messages[k] for k in keys])):
        for item in items:
            table.append((len(item), start + len(blob)))
            blob += item + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
    tables = b"".join(struct.pack("<2I", *e) for e in originals + translations)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables + blob)
    return path


def test_read_mo_decodes_as_the_header_says_and_matches_python_gettext(tmp_path):
    latin1 = {
        b"": "Content-Type: text/plain; charset=ISO-8859-1\nLast-Translator: Jürgen\n".encode(
            "latin-1"
        ),
        b"Open": "Öffnen".encode("latin-1"),
        b"menu\x04Quit": b"Beenden",
        b"one file\0%d files": b"eine Datei\0%d Dateien",
    }
    mo = _write_mo(tmp_path / "de.mo", latin1)
    assert read_mo(mo) == {"Open": "Öffnen", "menu\x04Quit": "Beenden"}
    with pytest.raises(UnicodeDecodeError):  # why clippo reads .mo files itself
        gettext.GNUTranslations(mo.open("rb"))
    utf8 = {k: v.decode("latin-1").encode() for k, v in latin1.items()}
    utf8[b""] = b"Content-Type: text/plain; charset=UTF-8\n"
    mo = _write_mo(tmp_path / "de8.mo", utf8)
    python = gettext.GNUTranslations(mo.open("rb"))._catalog
    assert read_mo(mo) == {k: v for k, v in python.items() if isinstance(k, str) and k}
    bad = _write_mo(tmp_path / "bad.mo", {b"": b"Content-Type: text/plain; charset=NOPE-9\n"})
    with pytest.raises(ValueError, match="unknown charset 'NOPE-9'"):
        read_mo(bad)
    junk = tmp_path / "junk.mo"
    junk.write_bytes(b"junk" * 8)
    with pytest.raises(ValueError, match="not a gettext .mo catalogue"):
        read_mo(junk)


def test_installed_iso_codes_catalogues_read_as_python_gettext_reads_them():
    """The iso-codes pairs did not change when read_mo replaced Python's gettext."""
    read = 0
    for locale in iso_codes_locales():
        for name in ISO_CATALOGUES:
            mo = LOCALE_DIR / locale / "LC_MESSAGES" / f"{name}.mo"
            if mo.is_file():
                python = gettext.GNUTranslations(mo.open("rb"))._catalog
                expected = [(k, v) for k, v in python.items() if isinstance(k, str) and k]
                assert list(read_mo(mo).items()) == expected, mo
                read += 1
    assert read > 100  # setup.sh installs iso-codes: 311 catalogues here


def test_gettext_pairs_are_clean_interface_messages_never_tuxpaint(tmp_path):
    head = b"Content-Type: text/plain; charset=UTF-8\n"
    messages = {
        b"": head,
        b"_Open": "Ö_ffnen".encode(),
        b"_Save": "保存(_S)".encode(),
        b"Could not read the file": b"Datei konnte nicht gelesen werden",
        b"Cannot open %s": b"Kann %s nicht \xc3\xb6ffnen",  # a format directive
        b"<b>Bold</b>": b"<b>Fett</b>",  # markup
        b"line one\nline two": b"Zeile eins\nZeile zwei",
        b"file_name_here": b"datei_name_hier",  # an identifier, not text
        b"OK": b"OK",  # untranslated
        b"button\x04Close": b"Schlie\xc3\x9fen",
        b"A" * 81: b"B" * 81,  # too long
    }
    _write_mo(tmp_path / "de" / "LC_MESSAGES" / "gtk20.mo", messages)
    _write_mo(
        tmp_path / "de" / "LC_MESSAGES" / "glib20.mo", {b"": head, b"_Open": "Ö_ffnen".encode()}
    )
    _write_mo(tmp_path / "de" / "LC_MESSAGES" / "tuxpaint.mo", {b"": head, b"Apple": b"Apfel"})
    _write_mo(tmp_path / "de" / "LC_MESSAGES" / "iso_3166-1.mo", {b"": head, b"Spain": b"Spanien"})
    _write_mo(tmp_path / "fr" / "LC_MESSAGES" / "tuxpaint.mo", {b"": head, b"Apple": b"Pomme"})
    assert gettext_locales(tmp_path) == ["de"]  # fr has only the evaluation set's catalogue
    assert gettext_pairs("de", tmp_path) == [
        ("Open", "Öffnen"),  # glib20 first (by name), and once though gtk20 has it too
        ("Could not read the file", "Datei konnte nicht gelesen werden"),
        ("Save", "保存"),
        ("Close", "Schließen"),
    ]
    with pytest.raises(FileNotFoundError, match="no message catalogues for locale 'fr'"):
        gettext_pairs("fr", tmp_path)


def test_translation_pairs_cap_count_and_refuse_unknown_corpora():
    pairs, languages, info = translation_pairs(
        ["iso-codes"], ["fr", "ja", "zz"], max_per_language=50
    )
    assert len(pairs) == 100 and info["languages"] == 2  # zz: no catalogue, skipped
    assert languages == ["fr"] * 50 + ["ja"] * 50  # each pair's locale
    assert info["pairs_per_language"] == {"fr": {"iso-codes": 50}, "ja": {"iso-codes": 50}}
    again, _, _ = translation_pairs(["iso-codes"], ["fr", "ja"], max_per_language=50)
    assert again == pairs  # seeded
    with pytest.raises(ValueError, match=r"unknown translation corpora \['wiki'\]"):
        translation_pairs(["wiki"], ["fr"])
    with pytest.raises(ValueError, match="no translation pairs"):
        translation_pairs(["iso-codes"], ["zz"])


@pytest.mark.skipif("fr" not in freedict_locales(), reason="needs dict-freedict-eng-fra")
def test_corpus_pairs_reads_many_languages_through_the_translation_source():
    pairs, info, languages = corpus_pairs(
        "translation", ["freedict", "iso-codes"], lang_b="fr,ja", max_per_language=20
    )
    counts = info["pairs_per_language"]
    assert counts["fr"] == {"freedict": 20, "iso-codes": 20} and counts["ja"]["iso-codes"] == 20
    assert len(pairs) == sum(sum(c.values()) for c in counts.values())
    assert {lang: languages.count(lang) for lang in set(languages)} == {
        lang: sum(c.values()) for lang, c in counts.items()
    }  # each pair tagged with its own language


def _annotations(root, stem, names, *, keywords=()):
    """A CLDR annotation file: ``names`` as ``{emoji: short name}`` (type="tts")."""
    rows = [f'<annotation cp="{cp}">{kw}</annotation>' for cp, kw in keywords]
    rows += [f'<annotation cp="{cp}" type="tts">{name}</annotation>' for cp, name in names.items()]
    (root / f"{stem}.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<ldml><annotations>'
        + "".join(rows)
        + "</annotations></ldml>\n",
        encoding="utf-8",
    )


def test_cldr_annotations_pair_english_and_translated_short_names(tmp_path):
    english = {"🐸": "frog", "🍎": "red apple", "🇫🇷": "flag: France", "🐈": "cat"}
    _annotations(tmp_path, "en", english, keywords=[("🐸", "face | frog")])
    _annotations(tmp_path, "root", {})
    _annotations(tmp_path, "de_CH", {"🐸": "Frosch"})  # a regional variant: left out
    # Keywords (no type) are not names; a name equal to the English and "↑↑↑" are left out.
    _annotations(tmp_path, "fa", {"🐸": "قورباغه", "🍎": "سیب قرمز", "🐈": "cat", "🇫🇷": "↑↑↑"},
                 keywords=[("🐸", "قورباغه | صورت")])  # fmt: skip
    _annotations(tmp_path, "pt", {"🐸": "sapo", "🍎": "maçã vermelha"})  # Brazilian
    _annotations(tmp_path, "pt_PT", {"🍎": "maçã encarnada"})  # overrides pt's apple only
    _annotations(tmp_path, "zh_Hant", {"🐸": "青蛙"})  # a script locale: no parent zh.xml
    _annotations(tmp_path, "zh", {"🍎": "红苹果"})
    assert cldr_locales(tmp_path) == {
        "fa": "fa", "pt_BR": "pt", "pt": "pt_PT", "zh_CN": "zh", "zh_TW": "zh_Hant",
    }  # fmt: skip
    assert cldr_pairs("fa", tmp_path) == [("red apple", "سیب قرمز"), ("frog", "قورباغه")]
    assert cldr_pairs("pt_BR", tmp_path) == [("red apple", "maçã vermelha"), ("frog", "sapo")]
    assert cldr_pairs("pt", tmp_path) == [("red apple", "maçã encarnada"), ("frog", "sapo")]
    assert cldr_pairs("zh_TW", tmp_path) == [("frog", "青蛙")]
    with pytest.raises(FileNotFoundError, match="no CLDR emoji annotations for locale 'nso'"):
        cldr_pairs("nso", tmp_path)


@pytest.mark.skipif(not cldr_locales(), reason="needs unicode-cldr-core")
def test_cldr_preset_reaches_scripts_the_dictionaries_miss():
    pairs, _, info = translation_pairs(["cldr"], ["fa", "hy", "ta", "zh_CN", "nso"])
    assert ("frog", "قورباغه") in pairs and ("frog", "գորտ") in pairs
    assert ("frog", "青蛙") in pairs
    assert set(info["pairs_per_language"]) == {"fa", "hy", "ta", "zh_CN"}  # nso: none in CLDR

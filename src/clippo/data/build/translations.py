"""English-X translation pairs in many languages from Debian packages, for multilingual
co-training (CLIPPO section 3's text/text "translation" task).

Sources (all offline, ``../shared/DATA.md``):

- ``freedict``: the FreeDict English-X dictionaries (``dict-freedict-eng-XXX``, dictd format:
  ``.index`` lines ``headword<TAB>offset<TAB>length`` in dictd's base64, into the gzip'd
  ``.dict.dz``). Each entry gives the English headword and its first translation: everyday
  words and short phrases.
- ``iso-codes``: the gettext catalogues of Debian's ``iso-codes`` (country, language and
  currency names, 100+ locales): short, alt-text-like strings.
- ``gettext``: the message catalogues of the programs installed
  (``/usr/share/locale/LOCALE/LC_MESSAGES/*.mo``: GTK's and GLib's from ``libgtk2.0-common`` and
  ``libglib2.0-data``, apt's, dpkg's, ...): interface labels, descriptions and error messages,
  the only sentences here in some languages (nso, hy, km, mk, ta). iso-codes' catalogues are
  their own corpus; the tuxpaint packages' are never read.
- ``cldr``: the emoji annotations of Unicode CLDR (``unicode-cldr-core``:
  ``/usr/share/unicode/cldr/common/annotations/LOCALE.xml``): each emoji's short name
  (``type="tts"``) in English and in ~100 locales, everyday nouns (animals, food, objects,
  weather, people) in scripts the dictionaries miss (fa, hy, ta, kab, zh, ...).

``clippo.data.build.textpairs.corpus_pairs`` adds the manuals (``debian-reference`` and
``debian-faq``, aligned English-X by ``align_debian_manual``) and writes the shards.

Languages are named by the locale codes the evaluation uses (tuxpaint's, XM3600's): ``fr``,
``de``, ``zh_CN``, ``pt_BR``. Never read the tuxpaint packages here: they are the evaluation set.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

DICTD_DIR = Path("/usr/share/dictd")
LOCALE_DIR = Path("/usr/share/locale")
CLDR_ANNOTATIONS_DIR = Path("/usr/share/unicode/cldr/common/annotations")
ISO_CATALOGUES = ("iso_3166-1", "iso_639-2", "iso_4217")

# FreeDict's ISO 639-3 codes -> the locale codes of the evaluation sets.
FREEDICT_LOCALES = {
    "afr": "af", "ara": "ar", "bul": "bg", "ces": "cs", "cym": "cy", "dan": "da", "deu": "de",
    "ell": "el", "fin": "fi", "fra": "fr", "gle": "ga", "hin": "hi", "hrv": "hr", "hun": "hu",
    "ind": "id", "ita": "it", "jpn": "ja", "lat": "la", "lit": "lt", "nld": "nl", "nor": "nb",
    "pol": "pl", "por": "pt", "rus": "ru", "spa": "es", "srp": "sr", "swe": "sv", "swh": "sw",
    "tur": "tr",
}  # fmt: skip
# CLDR annotation files whose name is not the evaluation sets' locale code. CLDR's ``pt`` is
# Brazilian Portuguese and ``pt_PT`` holds only its differences from ``pt``; ``no`` is Bokmal.
CLDR_LOCALES = {"zh": "zh_CN", "zh_Hant": "zh_TW", "pt": "pt_BR", "pt_PT": "pt", "no": "nb",
                "sr_Latn": "sr@latin"}  # fmt: skip
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_MARKUP = re.compile(r"<[^>]*>|\[[^\]]*\]|\{[^}]*\}|\([^)]*\)")
_SKIP = ("see:", "synonyms:", "note:", "antonyms:", "see also:", '"')
_MNEMONIC_SUFFIX = re.compile(r"\s*\((?:_|&)\w\)")  # "打开(_O)": CJK catalogues' mnemonics
_NOT_PLAIN = re.compile(r"%|\$|\{|\}|<|>|\\|&|\n|\r|\t|_(?!\w)")


class ExtraCorpus(NamedTuple):
    """A translation corpus (a preset of ``TRANSLATION_SOURCES`` or a caller's): the locales
    it has, and its English-X pairs in one of them (``translation_pairs`` asks only for listed
    locales; None or [] where it has none)."""

    locales: Callable[[], Iterable[str]]
    pairs: Callable[[str], list[tuple[str, str]] | None]


def _dictd_number(text: str) -> int:
    """dictd's base64 offsets and lengths (big-endian digits of ``_B64``)."""
    n = 0
    for ch in text:
        n = n * 64 + _B64.index(ch)
    return n


def _first_translation(entry: str, max_chars: int) -> str | None:
    """The first usable translation of a dictd entry (the lines after the headword line)."""
    for line in entry.splitlines()[1:]:
        line = line.strip()
        if not line or line.lower().startswith(_SKIP):
            continue
        line = re.sub(r"^\d+\.\s*", "", line)
        line = _MARKUP.sub("", line)
        first = re.split(r"[,;]", line)[0].strip(" .-‐")
        if first and any(c.isalpha() for c in first) and len(first) <= max_chars:
            return first
    return None


def freedict_locales(root: str | Path = DICTD_DIR) -> dict[str, Path]:
    """``{locale: index file}`` of the installed English-X FreeDict dictionaries."""
    out = {}
    for index in sorted(Path(root).glob("freedict-eng-*.index")):
        code = index.name.removeprefix("freedict-eng-").removesuffix(".index")
        if code in FREEDICT_LOCALES:
            out[FREEDICT_LOCALES[code]] = index
    return out


def freedict_pairs(
    locale: str, root: str | Path = DICTD_DIR, *, max_chars: int = 40
) -> list[tuple[str, str]]:
    """(English headword, first translation) of every usable entry, in index order; entries
    whose headword has no letters, is longer than ``max_chars``, or equals its translation are
    left out."""
    installed = freedict_locales(root)
    if locale not in installed:
        raise FileNotFoundError(
            f"no FreeDict English-{locale} dictionary under {root} (installed: "
            f"{sorted(installed)}); apt-get install dict-freedict-eng-XXX"
        )
    index = installed[locale]
    data = gzip.decompress(index.with_suffix(".dict.dz").read_bytes())
    pairs = []
    for line in index.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00database"):
            continue
        _, offset, length = parts
        start = _dictd_number(offset)
        entry = data[start : start + _dictd_number(length)].decode("utf-8", errors="replace")
        # The entry's own first line keeps the headword's case (the index folds it).
        head = _MARKUP.sub("", entry.split("\n", 1)[0].split(" /", 1)[0]).strip()
        if not head or len(head) > max_chars or not any(c.isalpha() for c in head):
            continue
        translation = _first_translation(entry, max_chars)
        if translation and translation.lower() != head.lower():
            pairs.append((head, translation))
    return pairs


_MO_MAGIC = 0x950412DE


def read_mo(path: str | Path) -> dict[str, str]:
    """``{message: translation}`` of a gettext ``.mo`` catalogue, decoded with the charset its
    header names (a message with a context is keyed ``context\\x04message``; plural forms are
    left out). Python's ``gettext`` stops at a header that is not UTF-8 before reading its
    charset (a translator's name in Latin-1); this reads it as the charset says."""
    data = Path(path).read_bytes()
    order = next((o for o in ("little", "big") if int.from_bytes(data[:4], o) == _MO_MAGIC), None)
    if order is None or len(data) < 20:
        raise ValueError(f"{path}: not a gettext .mo catalogue")

    def word(at: int) -> int:
        return int.from_bytes(data[at : at + 4], order)

    def string(table: int, i: int) -> bytes:
        length, offset = word(table + 8 * i), word(table + 8 * i + 4)
        return data[offset : offset + length]

    count, originals, translations = word(8), word(12), word(16)
    raw = [(string(originals, i), string(translations, i)) for i in range(count)]
    header = next((t for m, t in raw if m == b""), b"").decode("ascii", "replace")
    charset = re.search(r"charset=([\w.-]+)", header)
    encoding = charset.group(1) if charset and charset.group(1).upper() != "CHARSET" else "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"{path}: unknown charset {encoding!r} in its header") from None
    return {
        m.decode(encoding, "replace"): t.decode(encoding, "replace")
        for m, t in raw
        if m and b"\0" not in m  # the header, and plural forms ("one\0many")
    }


def _catalogue_pairs(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """(English message, translation) of gettext catalogues, in catalogue order; untranslated
    messages (equal to the English) left out."""
    return [
        (english, translated)
        for mo in paths
        for english, translated in read_mo(mo).items()
        if english and translated and english != translated
    ]


def iso_codes_locales(root: str | Path = LOCALE_DIR) -> list[str]:
    """Locales with at least one of the iso-codes catalogues."""
    return sorted(
        d.name
        for d in Path(root).iterdir()
        if any((d / "LC_MESSAGES" / f"{c}.mo").is_file() for c in ISO_CATALOGUES)
    )


def iso_codes_pairs(locale: str, root: str | Path = LOCALE_DIR) -> list[tuple[str, str]]:
    """(English name, translated name) of countries, languages and currencies in ``locale``;
    untranslated names (equal to the English) are left out."""
    found = [
        Path(root) / locale / "LC_MESSAGES" / f"{c}.mo"
        for c in ISO_CATALOGUES
        if (Path(root) / locale / "LC_MESSAGES" / f"{c}.mo").is_file()
    ]
    if not found:
        raise FileNotFoundError(
            f"no iso-codes catalogues for locale {locale!r} under {root} "
            "(apt-get install iso-codes)"
        )
    return _catalogue_pairs(found)


def _message_catalogues(locale: str, root: str | Path = LOCALE_DIR) -> list[Path]:
    """The programs' message catalogues of ``locale``, by name: every ``.mo`` but iso-codes'
    (a corpus of its own) and the tuxpaint packages' (the evaluation set's)."""
    folder = Path(root) / locale / "LC_MESSAGES"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.mo") if not p.stem.startswith(("iso_", "tuxpaint")))


def gettext_locales(root: str | Path = LOCALE_DIR) -> list[str]:
    """Locales with at least one program's message catalogue (``_message_catalogues``)."""
    return sorted(d.name for d in Path(root).iterdir() if _message_catalogues(d.name, root))


def _clean_message(text: str) -> str | None:
    """An interface message as plain text, or None when it is not one: the context dropped,
    the mnemonic marker removed (``_Open``, ``打开(_O)``); messages with format directives,
    markup, escapes or line breaks, several underscores, or no letter are left out."""
    text = text.split("\x04", 1)[-1]  # "context\x04message"
    text = _MNEMONIC_SUFFIX.sub("", text).strip()
    if text.count("_") > 1 or _NOT_PLAIN.search(text) or not any(c.isalpha() for c in text):
        return None
    return text.replace("_", "")


def gettext_pairs(
    locale: str, root: str | Path = LOCALE_DIR, max_chars: int = 80
) -> list[tuple[str, str]]:
    """(English message, translation) from the message catalogues of the programs installed
    (GTK, GLib, apt, ...: labels, descriptions and error messages, sentences rather than
    names), cleaned by ``_clean_message``, at most ``max_chars`` characters each, every pair
    once, in catalogue order."""
    found = _message_catalogues(locale, root)
    if not found:
        raise FileNotFoundError(
            f"no message catalogues for locale {locale!r} under {root} (installed with the "
            "programs: apt-get install libgtk2.0-common libglib2.0-data ...)"
        )
    pairs = {}
    for english, translated in _catalogue_pairs(found):
        english, translated = _clean_message(english), _clean_message(translated)
        if (
            english
            and translated
            and english != translated
            and max(len(english), len(translated)) <= max_chars
        ):
            pairs.setdefault((english, translated), None)
    return list(pairs)


def cldr_locales(root: str | Path = CLDR_ANNOTATIONS_DIR) -> dict[str, str]:
    """``{locale: CLDR file stem}`` of the annotation files with a language of their own
    (``fa``, ``zh_Hant``, ``sr_Latn``, ``pt_PT`` as in ``CLDR_LOCALES``; regional variants
    such as ``de_CH`` and English are left out)."""
    out = {}
    for path in sorted(Path(root).glob("*.xml")):
        stem = path.stem
        if stem in CLDR_LOCALES:
            out[CLDR_LOCALES[stem]] = stem
        elif "_" not in stem and stem not in ("en", "root"):
            out[stem] = stem
    return out


@functools.lru_cache(maxsize=8)  # en.xml is read once for every locale's pairs
def _cldr_names(path: Path) -> dict[str, str]:
    """``{emoji: short name}`` of one annotation file; ``↑↑↑`` (inherit) left out."""
    import xml.etree.ElementTree as ET

    names = {}
    for node in ET.parse(path).getroot().iter("annotation"):
        text = (node.text or "").strip()
        if node.get("type") == "tts" and text and text != "↑↑↑":
            names[node.get("cp")] = text
    return names


def cldr_pairs(locale: str, root: str | Path = CLDR_ANNOTATIONS_DIR) -> list[tuple[str, str]]:
    """(English short name, ``locale``'s short name) of every emoji both name, in code-point
    order; names equal to the English are left out. A child locale (``pt_PT``) inherits the
    names it does not override from its parent (``pt``), as CLDR resolves them."""
    root = Path(root)
    stem = cldr_locales(root).get(locale)
    if stem is None:
        raise FileNotFoundError(
            f"no CLDR emoji annotations for locale {locale!r} under {root} "
            "(apt-get install unicode-cldr-core)"
        )
    names: dict[str, str] = {}
    parts = stem.split("_")
    for i in range(1, len(parts) + 1):
        # Script locales (zh_Hant, sr_Latn) are roots of their own in CLDR, not children.
        if i > 1 and len(parts[i - 1]) == 4 and parts[i - 1].istitle():
            names = {}
        if (root / f"{'_'.join(parts[:i])}.xml").is_file():
            names |= _cldr_names(root / f"{'_'.join(parts[:i])}.xml")
    english = _cldr_names(root / "en.xml")
    return [
        (english[cp], name)
        for cp, name in sorted(names.items())
        if cp in english and name.lower() != english[cp].lower()
    ]


# The built-in sources: each the same interface as a caller's ``extra`` corpora.
TRANSLATION_SOURCES = {
    "freedict": ExtraCorpus(freedict_locales, freedict_pairs),
    "iso-codes": ExtraCorpus(iso_codes_locales, iso_codes_pairs),
    "cldr": ExtraCorpus(cldr_locales, cldr_pairs),
    "gettext": ExtraCorpus(gettext_locales, gettext_pairs),
}
TRANSLATION_PRESETS = tuple(TRANSLATION_SOURCES)


def translation_pairs(
    corpora: Sequence[str],
    locales: Sequence[str],
    *,
    max_per_language: int | None = None,
    seed: int = 0,
    extra: dict[str, ExtraCorpus] | None = None,
) -> tuple[list[tuple[str, str]], list[str], dict[str, Any]]:
    """English-X pairs from ``corpora`` (``TRANSLATION_PRESETS``, or names of ``extra``) for
    each of ``locales`` (``["all"]``: every locale one of the corpora has); at most
    ``max_per_language`` per language and corpus (a seeded sample). Returns the pairs, each
    pair's locale and the per-language counts."""
    sources = TRANSLATION_SOURCES | (extra or {})
    bad = [c for c in corpora if c not in sources]
    if bad:
        raise ValueError(f"unknown translation corpora {bad}; valid: {list(sources)}")
    if list(locales) == ["all"]:
        available = {loc for corpus in corpora for loc in sources[corpus].locales()}
        locales = sorted(available - {"en"})
    rng = np.random.default_rng(seed)
    pairs: list[tuple[str, str]] = []
    languages: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for corpus in corpora:
        have = set(sources[corpus].locales())  # listed once per corpus, not per locale
        for locale in locales:
            found = sources[corpus].pairs(locale) if locale in have else None
            if not found:
                continue
            if max_per_language is not None and len(found) > max_per_language:
                keep = np.sort(rng.choice(len(found), max_per_language, replace=False))
                found = [found[i] for i in keep]
            counts.setdefault(locale, {})[corpus] = len(found)
            pairs.extend(found)
            languages.extend([locale] * len(found))
    if not pairs:
        raise ValueError(f"no translation pairs from {list(corpora)} for locales {list(locales)}")
    return pairs, languages, {"languages": len(counts), "pairs_per_language": counts}

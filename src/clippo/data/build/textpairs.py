"""Builds text/text pair shards for contrastive co-training (CLIPPO section 3), offline.

Four pair sources, each yielding ``(text_a, text_b)``:

- ``nsp_pairs``: consecutive sentences of a document (the paper's C4 next-sentence pairs);
- ``read_aligned_lines`` / ``read_tsv_pairs``: parallel translations (WMT19-style files);
- ``read_backtranslation_pairs``: ``original -> back-translated`` lines;
- ``word_dropout_pairs``: one sentence twice, each copy with random words dropped (seeded).

Corpora here: any text files (paragraphs split at blank lines), the Debian manuals in DocBook
HTML, the reference manual and the FAQ (one document per section; ``align_debian_manual`` pairs
the English version with a translation where sections, paragraphs and sentences line up), and
the fortunes files. Pairs are written as
webdataset tar shards of ``KEY.json`` samples ``{"text_a", "text_b", "source", ...}``, without
images, with a ``stats.json``; ``clippo.data.textpairs`` reads them back for training.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from clippo.data.build.translations import (
    TRANSLATION_PRESETS,
    ExtraCorpus,
    translation_pairs,
)
from clippo.data.shards import write_split_shards

DEBIAN_REFERENCE_DIR = Path("/usr/share/debian-reference")
DEBIAN_FAQ_DIR = Path("/usr/share/doc/debian/FAQ")
# The Debian manuals in DocBook HTML that share one reader and aligner: their folders.
MANUAL_DIRS = {"debian-reference": DEBIAN_REFERENCE_DIR, "debian-faq": DEBIAN_FAQ_DIR}
FORTUNES_DIR = Path("/usr/share/games/fortunes")
PAIR_SOURCES = ("nsp", "translation", "backtranslation", "dropout")
CORPUS_PRESETS = ("debian-reference", "debian-faq", "fortunes")

Pair = tuple[str, str]

# --------------------------------------------------------------------------------------------
# Sentence splitting
# --------------------------------------------------------------------------------------------

# Lower-case, without the final dot. A dot after one of these does not end a sentence.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms mme mlle dr prof st jr sr rev hon gen col lt sgt capt cpt gov sen rep pres
    vs cf e.g i.e viz al approx ca inc ltd co corp dept est fig figs no nos vol vols pp p
    ed eds jan feb mar apr jun jul aug sep sept oct nov dec mt ft u.s u.k a.m p.m ph.d
    c.-à-d p.ex ex env
    """.split()
)
_CLOSERS = "\"'”’»)]"
_OPENERS = "\"'“‘«(["
_CJK_STOPS = "。！？"
_CJK_CLOSERS = "」』）】〕"
# A candidate end: terminal punctuation (French puts a space before ! ? and ;), then closing
# quotes or brackets, then white space and what follows; or a CJK full stop, which needs no
# space after it (Chinese and Japanese put none).
_END = re.compile(
    rf"(?:\.\.\.|…|[.!?]+)[{re.escape(_CLOSERS)}]*(?=\s+\S)"
    rf"|[{_CJK_STOPS}]+[{re.escape(_CLOSERS + _CJK_CLOSERS)}]*(?=\s*\S)"
)


def _last_token(text: str) -> str:
    token = text.rsplit(None, 1)[-1] if text.strip() else ""
    return token.lstrip(_OPENERS).lower()


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences, keeping abbreviations, initials and decimals intact.

    A sentence ends at ``.``, ``!``, ``?`` or an ellipsis, after any closing quotes or
    brackets, when the next word starts with an upper-case letter, a digit, or an opening quote
    or bracket followed by one; and at every CJK full stop (``_CJK_STOPS``), space or not. A
    dot does not end a sentence after a known abbreviation ("Dr.", "e.g."), a single letter
    (initials) or a dotted token ("U.S."). ``"Stop!" he said`` stays whole because "he" is
    lower case. White space is collapsed.
    """
    text = " ".join(text.split())
    sentences, start = [], 0
    for match in _END.finditer(text):
        nxt_at = match.end()
        while nxt_at < len(text) and text[nxt_at].isspace():
            nxt_at += 1
        following = text[nxt_at:]
        head = following.lstrip(_OPENERS)
        cjk = match.group(0)[0] in _CJK_STOPS  # unambiguous: CJK scripts have no case
        if not cjk and not (head and (head[0].isupper() or head[0].isdigit())):
            continue
        punct = match.group(0).rstrip(_CLOSERS)
        if punct == ".":
            core = _last_token(text[start : match.start()])
            if core in ABBREVIATIONS or (len(core) == 1 and core.isalpha()):
                continue
            if "." in core and all(len(part) <= 2 for part in core.split(".")):
                continue  # dotted initialisms: U.S., e.g (already listed), i.e
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


# --------------------------------------------------------------------------------------------
# Pair sources
# --------------------------------------------------------------------------------------------


def is_prose(sentence: str, min_words: int = 3, max_chars: int = 400) -> bool:
    """A usable sentence: ``min_words`` words or more, at most ``max_chars``, mostly letters."""
    if len(sentence.split()) < min_words or len(sentence) > max_chars:
        return False
    letters = sum(c.isalpha() for c in sentence)
    return letters >= 0.5 * sum(not c.isspace() for c in sentence)


def nsp_pairs(
    documents: Iterable[Sequence[str]], *, min_words: int = 3, max_chars: int = 400
) -> Iterator[Pair]:
    """Consecutive sentence pairs ``(s_i, s_i+1)`` within each document (a list of sentences).

    A pair is kept when both sentences pass ``is_prose``; pairs never cross documents.
    """
    for sentences in documents:
        for a, b in zip(sentences, sentences[1:], strict=False):
            if is_prose(a, min_words, max_chars) and is_prose(b, min_words, max_chars):
                yield a, b


def _open_text(path: str | os.PathLike) -> Iterator[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        yield from f


def read_aligned_lines(path_a: str | os.PathLike, path_b: str | os.PathLike) -> Iterator[Pair]:
    """Parallel translations from two files with one sentence per line, line i <-> line i.

    Blank lines on either side are skipped; files of different lengths raise ValueError.
    """
    lines_a, lines_b = list(_open_text(path_a)), list(_open_text(path_b))
    if len(lines_a) != len(lines_b):
        raise ValueError(
            f"aligned files differ in length: {path_a} has {len(lines_a)} lines, "
            f"{path_b} has {len(lines_b)}"
        )
    for a, b in zip(lines_a, lines_b, strict=True):
        a, b = " ".join(a.split()), " ".join(b.split())
        if a and b:
            yield a, b


def _split_pair_line(line: str, separators: Sequence[str], path: Any, lineno: int) -> Pair:
    for sep in separators:
        if sep in line:
            a, _, b = line.partition(sep)
            a, b = " ".join(a.split()), " ".join(b.split())
            if a and b:
                return a, b
    raise ValueError(
        f"{path}:{lineno}: expected two texts separated by one of {list(separators)}: {line[:80]!r}"
    )


def read_tsv_pairs(path: str | os.PathLike) -> Iterator[Pair]:
    """Parallel translations from one file of ``text_a<TAB>text_b`` lines (blank lines skipped)."""
    for lineno, line in enumerate(_open_text(path), 1):
        if line.strip():
            yield _split_pair_line(line.rstrip("\n"), ("\t",), path, lineno)


def read_backtranslation_pairs(path: str | os.PathLike) -> Iterator[Pair]:
    """``(original, back-translated)`` from lines ``original -> back-translated`` (or a tab)."""
    for lineno, line in enumerate(_open_text(path), 1):
        if line.strip():
            yield _split_pair_line(line.rstrip("\n"), ("\t", " -> "), path, lineno)


def drop_words(sentence: str, rate: float, rng: np.random.Generator) -> str:
    """``sentence`` with each word dropped with probability ``rate``; at least one word stays."""
    words = sentence.split()
    if not words:
        return ""
    keep = rng.random(len(words)) >= rate
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)


def word_dropout_pairs(
    sentences: Iterable[str], *, rate: float = 0.1, seed: int = 0, min_words: int = 3
) -> Iterator[Pair]:
    """Each sentence twice, with words dropped independently (seeded per sentence index)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"word dropout rate must lie in [0, 1), got {rate}")
    for i, sentence in enumerate(sentences):
        if len(sentence.split()) < min_words:
            continue
        rng = np.random.default_rng([seed & 0xFFFFFFFF, i])
        yield drop_words(sentence, rate, rng), drop_words(sentence, rate, rng)


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------


def read_text_documents(path: str | os.PathLike) -> list[list[str]]:
    """A plain text file (``.gz`` too) as one document: paragraphs split at blank lines.

    Returns [sentences of the file] so that ``nsp_pairs`` does not pair across files.
    """
    paragraphs, current = [], []
    for line in _open_text(path):
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return [[s for p in paragraphs for s in split_sentences(p)]]


@dataclass
class ManualSection:
    """One section of the Debian reference manual: chapter file, anchor id, prose paragraphs."""

    chapter: str
    section: str
    paragraphs: list[str]


class _ManualParser(HTMLParser):
    """Collects the text of ``<p>`` elements outside tables, captions, code and navigation."""

    _SKIP_DIV = frozenset({"toc", "navheader", "navfooter", "list-of-tables", "titlepage"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []  # (section id, paragraph text)
        self.section = ""
        self._stack: list[tuple[str, bool]] = []  # (tag, starts a skipped region)
        self._skip = 0
        self._heading = 0
        self._para: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "a" and self._heading and attr.get("id"):
            self.section = attr["id"] or ""
        if tag in ("a", "img", "br", "col", "meta", "link", "hr"):
            return  # void or self-closing in this XHTML: never pushed
        skip = (
            tag in ("table", "pre")
            or (tag == "div" and attr.get("class", "") in self._SKIP_DIV)
            or (tag == "p" and attr.get("class") == "title")  # table and figure captions
        )
        self._stack.append((tag, skip))
        self._skip += skip
        if tag in ("h1", "h2", "h3", "h4", "h5"):
            self._heading += 1
        if tag == "p" and not self._skip:
            self._para = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("a", "img", "br", "col", "meta", "link", "hr"):
            return
        while self._stack:
            open_tag, skip = self._stack.pop()
            self._skip -= skip
            if open_tag in ("h1", "h2", "h3", "h4", "h5"):
                self._heading -= 1
            if open_tag == "p" and self._para is not None:
                text = " ".join("".join(self._para).split())
                if text:
                    self.blocks.append((self.section, text))
                self._para = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._para is not None and not self._skip:
            self._para.append(data)


def manual_files(
    lang: str = "en", root: str | os.PathLike | None = None, *, manual: str = "debian-reference"
) -> list[Path]:
    """The chapter files of a Debian manual in ``lang`` (its file suffix: ``fr``, ``zh-cn``).

    ``debian-reference``: ``pr01``, ``ch*`` and ``apa`` ``.LANG.html`` in one folder (the index
    is only a table of contents). ``debian-faq``: ``NAME.en.html`` at the top, the translations
    in ``LANG/NAME.LANG.html``, every chapter but the index. A chapter is named by the file
    name's first part, the same in every language. Raises FileNotFoundError naming the Debian
    package to install.
    """
    if manual not in MANUAL_DIRS:
        raise ValueError(f"unknown manual {manual!r}; known: {list(MANUAL_DIRS)}")
    root = Path(root if root is not None else MANUAL_DIRS[manual])
    if manual == "debian-reference":
        files = sorted(root.glob(f"pr01.{lang}.html")) + sorted(root.glob(f"ch*.{lang}.html"))
        files += sorted(root.glob(f"apa.{lang}.html"))
        package = f"debian-reference-{lang}"
    else:
        folder = root if lang == "en" else root / lang
        files = sorted(p for p in folder.glob(f"*.{lang}.html") if p.name.split(".")[0] != "index")
        package = "debian-faq" if lang == "en" else f"debian-faq-{lang}"
    if not files:
        raise FileNotFoundError(
            f"no {manual} HTML for language {lang!r} under {root}: apt-get install {package}"
        )
    return files


def manual_languages(manual: str, root: str | os.PathLike | None = None) -> list[str]:
    """The file suffixes of the languages a Debian manual is installed in (``en``, ``zh-cn``)."""
    root = Path(root if root is not None else MANUAL_DIRS[manual])
    if manual == "debian-reference":
        return sorted({p.name.split(".")[1] for p in root.glob("ch01.*.html")})
    english = ["en"] if (root / "index.en.html").is_file() else []
    return english + sorted(p.parent.name for p in root.glob("*/index.*.html"))


def read_debian_manual(
    lang: str = "en",
    root: str | os.PathLike | None = None,
    *,
    manual: str = "debian-reference",
) -> list[ManualSection]:
    """The prose paragraphs of a Debian manual's chapters in ``lang``, by section.

    ``manual``: ``debian-reference`` or ``debian-faq`` (``manual_files``), read from ``root``
    (default: where Debian installs it). Both are DocBook HTML with the same section anchors in
    every language.
    """
    sections: list[ManualSection] = []
    for path in manual_files(lang, root, manual=manual):
        parser = _ManualParser()
        parser.feed(path.read_text(encoding="utf-8"))
        chapter = path.name.split(".")[0]
        for section, text in parser.blocks:
            if not sections or (sections[-1].chapter, sections[-1].section) != (chapter, section):
                sections.append(ManualSection(chapter, section, []))
            sections[-1].paragraphs.append(text)
    return sections


def debian_manual_documents(
    lang: str = "en",
    root: str | os.PathLike | None = None,
    *,
    manual: str = "debian-reference",
) -> list[list[str]]:
    """A Debian manual as documents of sentences, one document per section."""
    return [
        [s for p in sec.paragraphs for s in split_sentences(p)]
        for sec in read_debian_manual(lang, root, manual=manual)
    ]


def display_width(text: str) -> int:
    """Columns ``text`` takes in Unifont: 2 for wide (CJK) characters, 1 for the others, so
    that lengths compare across scripts (a Chinese sentence has far fewer characters than its
    English translation, but a similar width)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def align_debian_manual(
    lang_a: str = "en",
    lang_b: str = "fr",
    root: str | os.PathLike | None = None,
    *,
    manual: str = "debian-reference",
    max_length_ratio: float = 2.0,
) -> tuple[list[tuple[str, str, str]], Counter]:
    """Sentence pairs ``(section key, text in lang_a, text in lang_b)`` and what was dropped.

    The two versions of ``manual`` share section anchors. A section aligns when it has as many
    paragraphs in both; a paragraph pair when it is translated (differs) and splits into as many
    sentences; a sentence pair when it differs and neither side is more than
    ``max_length_ratio`` times wider (``display_width``). Everything else is counted in the
    returned Counter (in units of what was dropped).
    """
    secs_a = {
        (s.chapter, s.section): s.paragraphs
        for s in read_debian_manual(lang_a, root, manual=manual)
    }
    secs_b = {
        (s.chapter, s.section): s.paragraphs
        for s in read_debian_manual(lang_b, root, manual=manual)
    }
    dropped: Counter = Counter()
    pairs = []
    for key, paras_a in secs_a.items():
        paras_b = secs_b.get(key)
        if paras_b is None:
            dropped["section_missing"] += 1
            dropped["paragraphs_in_dropped_sections"] += len(paras_a)
            continue
        if len(paras_a) != len(paras_b):
            dropped["section_paragraph_count_mismatch"] += 1
            dropped["paragraphs_in_dropped_sections"] += len(paras_a)
            continue
        for pa, pb in zip(paras_a, paras_b, strict=True):
            if pa == pb:
                dropped["paragraph_untranslated"] += 1
                continue
            sa, sb = split_sentences(pa), split_sentences(pb)
            if len(sa) != len(sb):
                dropped["paragraph_sentence_count_mismatch"] += 1
                continue
            for a, b in zip(sa, sb, strict=True):
                wa, wb = display_width(a), display_width(b)
                if a == b:
                    dropped["sentence_identical"] += 1
                elif max(wa, wb) > max_length_ratio * min(wa, wb):
                    dropped["sentence_length_ratio"] += 1
                else:
                    pairs.append((f"{key[0]}#{key[1]}", a, b))
    return pairs, dropped


def read_fortunes(path: str | os.PathLike) -> list[str]:
    """The entries of one fortune file (separated by ``%`` lines), white space collapsed.

    The attribution (from the first line starting with ``--`` to the end of the entry, which
    may run over several lines) is removed so that the text is the quote itself.
    """
    entries, current = [], []
    for line in _open_text(path):
        if line.rstrip("\n") == "%":
            entries.append(current)
            current = []
        else:
            current.append(line)
    entries.append(current)
    out = []
    for lines in entries:
        cut = next((i for i, ln in enumerate(lines) if ln.strip().startswith("--")), len(lines))
        text = " ".join(" ".join(lines[:cut]).split())
        if text:
            out.append(text)
    return out


def fortune_files(root: str | os.PathLike = FORTUNES_DIR) -> list[Path]:
    """The fortune data files under ``root`` (no ``.dat`` indexes or ``.u8`` links)."""
    root = Path(root)
    files = sorted(p for p in root.iterdir() if p.is_file() and "." not in p.name)
    if not files:
        raise FileNotFoundError(f"no fortune files under {root}: apt-get install fortunes")
    return files


def fortunes_documents(root: str | os.PathLike = FORTUNES_DIR) -> list[list[str]]:
    """Every fortune as a document of sentences (NSP pairs stay inside one fortune)."""
    return [split_sentences(e) for path in fortune_files(root) for e in read_fortunes(path)]


def corpus_documents(corpus: Sequence[str], lang: str = "en") -> list[list[str]]:
    """Documents of sentences from presets (``debian-reference``, ``debian-faq``,
    ``fortunes``) or text files."""
    documents: list[list[str]] = []
    for item in corpus:
        if item in MANUAL_DIRS:
            documents += debian_manual_documents(lang, manual=item)
        elif item == "fortunes":
            documents += fortunes_documents()
        elif Path(item).is_dir():
            for path in sorted(Path(item).rglob("*")):
                if path.is_file() and path.suffix in (".txt", ".gz", ""):
                    documents += read_text_documents(path)
        elif Path(item).is_file():
            documents += read_text_documents(item)
        else:
            raise FileNotFoundError(
                f"corpus {item!r} is neither a preset {list(CORPUS_PRESETS)} nor a file or folder"
            )
    return documents


# Locale -> the language suffix of the manuals' HTML files.
MANUAL_LANGUAGES = {"zh_CN": "zh-cn", "zh_TW": "zh-tw", "pt_BR": "pt-br"}


def _manual_locales(manual: str) -> list[str]:
    """The locales (``zh_CN``, not ``zh-cn``) a Debian manual is installed in."""
    locales = {suffix: locale for locale, suffix in MANUAL_LANGUAGES.items()}
    return [locales.get(lang, lang) for lang in manual_languages(manual)]


def _manual_pairs(locale: str, manual: str) -> list[Pair] | None:
    """English-``locale`` sentence pairs of a manual, or None where it is not installed."""
    if locale not in _manual_locales(manual):
        return None
    lang_b = MANUAL_LANGUAGES.get(locale, locale)
    return [(a, b) for _, a, b in align_debian_manual("en", lang_b, manual=manual)[0]]


def corpus_pairs(
    source: str,
    corpus: Sequence[str],
    *,
    lang: str = "en",
    lang_b: str = "fr",
    dropout_rate: float = 0.1,
    seed: int = 0,
    max_per_language: int | None = None,
) -> tuple[list[Pair], dict[str, Any], list[str] | None]:
    """All pairs of ``source`` from ``corpus``, a description of what was read and dropped, and
    each pair's language where several are read at once (else None).

    ``translation``: a manual (``debian-reference`` or ``debian-faq``, aligned
    ``lang``/``lang_b`` by ``align_debian_manual``), two files of aligned lines, or ``.tsv``
    files; with a preset of ``TRANSLATION_PRESETS`` (``freedict``, ``iso-codes``, ``cldr``,
    ``gettext``) among the corpora, or several ``lang_b``
    (``fr,de,ja`` or ``all``), English-X pairs in each language from every corpus named
    (``clippo.data.build.translations``, at most ``max_per_language`` per language and corpus);
    ``backtranslation``: files of ``original -> back-translated``
    lines; ``nsp`` and ``dropout``: presets, text files or folders of them.
    """
    if source not in PAIR_SOURCES:
        raise ValueError(f"unknown pair source {source!r}; valid: {list(PAIR_SOURCES)}")
    info: dict[str, Any] = {}
    languages: list[str] | None = None
    if source == "nsp":
        documents = corpus_documents(corpus, lang)
        info.update(documents=len(documents), sentences=sum(map(len, documents)))
        pairs = list(nsp_pairs(documents))
    elif source == "dropout":
        documents = corpus_documents(corpus, lang)
        sentences = [s for d in documents for s in d if is_prose(s)]
        info.update(documents=len(documents), sentences=len(sentences))
        pairs = list(word_dropout_pairs(sentences, rate=dropout_rate, seed=seed))
    elif source == "translation":
        if any(c in TRANSLATION_PRESETS for c in corpus) or "," in lang_b or lang_b == "all":
            # Many languages at once (clippo.data.build.translations).
            pairs, languages, more = translation_pairs(
                corpus,
                lang_b.split(","),
                max_per_language=max_per_language,
                seed=seed,
                extra={
                    manual: ExtraCorpus(
                        functools.partial(_manual_locales, manual),
                        functools.partial(_manual_pairs, manual=manual),
                    )
                    for manual in MANUAL_DIRS
                },
            )
            info.update(more)
        elif len(corpus) == 1 and corpus[0] in MANUAL_DIRS:
            lang_b = MANUAL_LANGUAGES.get(lang_b, lang_b)
            aligned, dropped = align_debian_manual(lang, lang_b, manual=corpus[0])
            pairs = [(a, b) for _, a, b in aligned]
            info["alignment_dropped"] = dict(sorted(dropped.items()))
        elif len(corpus) == 2 and not any(str(c).endswith(".tsv") for c in corpus):
            pairs = list(read_aligned_lines(*corpus))
        else:
            pairs = [p for path in corpus for p in read_tsv_pairs(path)]
    else:
        pairs = [p for path in corpus for p in read_backtranslation_pairs(path)]
    return pairs, info, languages


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


def letter_script(texts: Iterable[str]) -> str:
    """The most common script among the letters of ``texts``: the first word of each letter's
    Unicode name (LATIN, CYRILLIC, TAMIL, HANGUL, CJK, ...); ``""`` where there is no letter."""
    count = Counter(
        unicodedata.name(ch, "?").split()[0] for text in texts for ch in text if ch.isalpha()
    )
    return count.most_common(1)[0][0] if count else ""


def _repeat_to(
    train: list[int], groups: list[str], target: Callable[[int], int], rng: np.random.Generator
) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """``(pair index, copy)`` samples of the training pairs ``train``, each group (a pair's
    language or script) with fewer than ``target(its count)`` pairs repeated up to it (whole
    passes, then a seeded part of one), shuffled; and the repeats per group."""
    samples = [(i, 0) for i in train]
    by_group: dict[str, list[int]] = {}
    for i in train:
        by_group.setdefault(groups[i], []).append(i)
    repeated: dict[str, int] = {}
    for group, rows in sorted(by_group.items()):
        need = target(len(rows)) - len(rows)
        if need <= 0:
            continue
        whole, part = divmod(need, len(rows))
        for copy in range(1, whole + 1):
            samples += [(i, copy) for i in rows]
        samples += [(i, whole + 1) for i in rng.permutation(rows)[:part].tolist()]
        repeated[group] = need
    return [samples[j] for j in rng.permutation(len(samples))], repeated


def write_text_pair_shards(
    pairs: Iterable[Pair],
    out_dir: str | os.PathLike,
    *,
    source: str,
    val_size: int = 0,
    seed: int = 0,
    shard_size: int = 10_000,
    info: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
    languages: Sequence[str] | None = None,
    min_per_language: int = 0,
    balance_scripts: float | None = None,
) -> dict[str, Any]:
    """Shuffle, deduplicate and write pairs as ``train-*.tar`` / ``val-*.tar``; return stats.

    Each sample is ``KEY.json``: ``{"text_a", "text_b", "source"}``, and ``"lang"`` (the pair's
    ``languages`` entry; a pair repeated in two languages keeps the first) where given.
    ``min_per_language`` balances the training split: a language with fewer training pairs
    is repeated (whole passes, then a seeded part of one) up to that many, so it weighs more
    in every batch; the validation split is drawn first and is the same with or without it.
    ``balance_scripts`` (alpha in [0, 1]) balances by script instead (each language's script:
    ``letter_script`` of its text_b sides): a script with n training pairs is repeated up to
    ``n_max * (n / n_max) ** alpha``, n_max the largest script's count (temperature sampling,
    as for mT5's languages; alpha 1 repeats nothing, 0 makes every script as large as the
    largest), so a script used by one language weighs more against the many Latin ones.
    ``stats.json`` records the counts, the shard names and ``info`` (what the corpus reader
    reported).
    """
    if shard_size < 1 or val_size < 0 or min_per_language < 0:
        raise ValueError("shard_size must be >= 1, val_size and min_per_language >= 0")
    start = time.perf_counter()
    pairs = list(pairs)
    if languages is not None and len(languages) != len(pairs):
        raise ValueError(f"{len(languages)} languages for {len(pairs)} pairs: give one per pair")
    if (min_per_language or balance_scripts is not None) and languages is None:
        raise ValueError("balancing needs each pair's language (several --lang-b)")
    if balance_scripts is not None and not 0 <= balance_scripts <= 1:
        raise ValueError(f"balance_scripts must be in [0, 1], got {balance_scripts}")
    if min_per_language and balance_scripts is not None:
        raise ValueError("min_per_language and balance_scripts: give one (languages or scripts)")
    seen: set[Pair] = set()
    unique: list[Pair] = []
    unique_languages: list[str] = []
    duplicates = 0
    for i, pair in enumerate(pairs):
        if pair in seen:
            duplicates += 1
        else:
            seen.add(pair)
            unique.append(pair)
            if languages is not None:
                unique_languages.append(languages[i])
    if len(unique) <= val_size:
        raise ValueError(f"val_size={val_size} leaves no training pairs from {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique)).tolist()
    # A sample is (pair index, copy): copy 0 is the pair itself, copies 1+ its repeats.
    samples = {"val": [(i, 0) for i in order[:val_size]]}
    samples["train"] = [(i, 0) for i in order[val_size:]]
    repeated: dict[str, int] = {}
    balance: dict[str, Any] = {}
    rng = np.random.default_rng(seed + 1)
    if min_per_language:
        balance = {"min_per_language": min_per_language}
        samples["train"], repeated = _repeat_to(
            order[val_size:], unique_languages, lambda n: min_per_language, rng
        )
    elif balance_scripts is not None:
        texts: dict[str, list[str]] = {}
        for (_, b), lang in zip(unique, unique_languages, strict=True):
            texts.setdefault(lang, []).append(b)
        script_of = {lang: letter_script(t) for lang, t in texts.items()}
        scripts = [script_of[lang] for lang in unique_languages]
        n_max = max(Counter(scripts[i] for i in order[val_size:]).values())
        balance = {
            "balance_scripts": balance_scripts,
            "scripts": {lang: script_of[lang] for lang in sorted(script_of)},
        }
        samples["train"], repeated = _repeat_to(
            order[val_size:],
            scripts,
            lambda n: round(n_max * (n / n_max) ** balance_scripts),
            rng,
        )
    splits = {split: range(len(items)) for split, items in samples.items()}

    def members(split: str, j: int) -> list[tuple[str, bytes]]:
        i, copy = samples[split][j]
        a, b = unique[i]
        meta = {"text_a": a, "text_b": b, "source": source}
        if languages is not None:
            meta["lang"] = unique_languages[i]
        key = f"{source}{i:08d}" + (f"r{copy}" if copy else "")
        return [(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())]

    written = write_split_shards(out_dir, splits, members, shard_size=shard_size, progress=progress)
    lengths = np.array([len(t) for p in unique for t in p])
    stats = {
        "source": source,
        "pairs": len(unique),
        "duplicates_dropped": duplicates,
        "train": len(splits["train"]),
        "val": len(splits["val"]),
        **({**balance, "repeated": repeated} if balance else {}),
        "chars_mean": round(float(lengths.mean()), 1),
        "chars_p95": int(np.percentile(lengths, 95)),
        "seed": seed,
        "sha1": hashlib.sha1(json.dumps(unique, ensure_ascii=False).encode()).hexdigest(),
        **(info or {}),
        **written,
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(stats, indent=1, ensure_ascii=False) + "\n"
    (Path(out_dir) / "stats.json").write_text(text)
    return stats

"""The official VQA answer normalisation and per-question accuracy (GT-Vision-Lab/VQA's
``vqaEval.py`` at a013f00), as pure text functions.

They live in the data stage because both sides need them: the builders turn human answers into
soft targets (each answer's VQA score, ``clippo.data.build.vqa``) and the evaluator scores
predictions (``clippo.eval.vqa``, which documents the rules and aggregates per answer and
question type). Tested against the official code in ``tests/test_eval_vqa.py``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

# The 21 characters the official code treats as punctuation; the apostrophe, colon and period
# are not among them (periods have their own rule below).
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'

# The official pattern is "(?!<=\d)(\.)(?!\d)": "(?!<=" is a negative *lookahead* for "<=" (a
# typo for the lookbehind "(?<!"), which can never fail in front of a period, so any period not
# followed by a digit is deleted, "5." and "a.b" alike. Its \d is ASCII only under Python 2,
# where the official code runs without re.UNICODE.
_PERIOD = re.compile(r"\.(?![0-9])")
# The official code passes re.UNICODE (== 32) as the positional `count` of sub().
_PERIOD_LIMIT = 32
_DIGIT_COMMA_DIGIT = re.compile(r"[0-9],[0-9]")

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# Contractions the official code restores. Each word lacking exactly one of its apostrophes is
# mapped to it ("dont" -> "don't"; "couldnt've" and "couldn'tve" -> "couldn't've", but not
# "couldntve"). The official table's "I" forms have capitalised keys, which can never match the
# lowercased words they are looked up with, so they are left out; so are its identity entries.
_CONTRACTED_FORMS = """
    ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've
    hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am
    mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at
    shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's
    someone'd someone'd've someone'll someone's something'd something'd've something'll
    that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas
    wasn't we'd've we've weren't what'll what're what's what've when's where'd where's
    where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't
    wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contraction_table() -> dict[str, str]:
    """Map each one-apostrophe-short spelling of a contracted form to the form."""
    table = {}
    for form in _CONTRACTED_FORMS:
        for i, char in enumerate(form):
            if char == "'":
                table[form[:i] + form[i + 1 :]] = form
    # The official table has this one entry backwards; its effect is kept.
    table["somebody'd"] = "somebodyd"
    return table


_CONTRACTIONS = _contraction_table()


def clean_whitespace(answer: str) -> str:
    """Turn newlines and tabs into spaces and strip the ends (applied to every answer)."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """Delete or space out punctuation, then delete periods not followed by a digit."""
    # Whether a mark is deleted or spaced is decided on the input text, for all its occurrences.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def _process_digits_articles(text: str) -> str:
    """Lowercase, number words to digits, drop articles, restore contractions, single spaces."""
    words = (_NUMBER_WORDS.get(word, word) for word in text.lower().split())
    kept = [_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(kept)


# Answers repeat heavily (yes/no, small numbers, colours): caching makes scoring several times
# faster (2.3 s -> 0.4 s for 20k synthetic questions).
@functools.lru_cache(maxsize=1 << 18)
def normalize_answer(answer: str) -> str:
    """Return the official normalisation of an answer (used when the humans disagree)."""
    return _process_digits_articles(_process_punctuation(clean_whitespace(answer)))


def answer_accuracy(
    prediction: str, human_answers: Sequence[str], records: Sequence[Mapping] | None
) -> float:
    """Leave-one-out accuracy; ``records`` (the answer dicts, or None) decide which humans are
    identical."""
    if len(human_answers) == 0:
        raise ValueError("human_answers is empty: VQA accuracy needs at least one human answer")
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}")
    answers = [clean_whitespace(a) for a in human_answers]
    pred = clean_whitespace(prediction)
    if len(set(answers)) > 1:
        answers = [normalize_answer(a) for a in answers]
        pred = normalize_answer(pred)
    matches = [a == pred for a in answers]
    n = len(answers)
    ids = [r.get("answer_id") for r in records] if records is not None else list(range(n))
    if all(isinstance(i, int) for i in ids) and len(set(ids)) == n:
        # Distinct records (always so in VQAv2): leaving out human i removes only human i.
        others = [sum(matches) - m for m in matches]
    else:
        # The official code leaves out every answer record equal to human i's (after the
        # normalisation above), so identical duplicate records drop out together.
        assert records is not None
        recs = [{**r, "answer": a} for r, a in zip(records, answers, strict=True)]
        others = [sum(m for r, m in zip(recs, matches, strict=True) if r != ri) for ri in recs]
    # Summed in order from 0 and divided once, exactly as the official code, so the floats match.
    total = 0.0
    for k in others:
        total += min(1.0, k / 3)
    return total / n


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Return the official VQA accuracy in [0, 1] of one predicted answer against human answers."""
    return answer_accuracy(prediction, list(human_answers), None)

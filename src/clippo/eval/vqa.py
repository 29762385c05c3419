"""The official VQA accuracy (VQAv2 open-ended), as GT-Vision-Lab/VQA's evaluation code computes it.

Reproduces ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at its latest commit (a013f00,
"Fixed processing answers bug"), behaviour for behaviour, checked against that code in
``tests/test_eval_vqa.py`` (fixtures from ``scripts/make_vqa_fixtures.py``).

For one question with human answers h_1..h_n (10 in VQAv2) and a prediction p:

1. Newlines and tabs become spaces and the ends are stripped, in every answer.
2. Only if the humans (after step 1) do not all give the same string, every human answer *and*
   the prediction are normalised (``normalize_answer``). With unanimous humans nothing more
   is done, so e.g. "Yes" scores 0 against ten "yes" (official behaviour since a013f00).
3. accuracy = mean over i of min(1, #{j != i : h_j == p} / 3), i.e. min(1, #matches / 3)
   averaged over the n leave-one-out subsets: 1, 2, 3, 4+ matching humans of 10 give 0.3, 0.6,
   0.9, 1.0.

Overall, per answer type and per question type scores are plain means of the per-question
accuracies. The official code reports them in percent rounded to 2 decimals; these functions
return unrounded fractions.

Quirks of the official code kept here: only ``;/[]"{}()=+\\_-><@`,?!`` count as punctuation (not
``' : . # $ % & * ~ ^ |``); a punctuation mark touching a space anywhere in the answer is deleted
everywhere, otherwise replaced by a space, and a digit-comma-digit anywhere ("1,000") deletes all
of them; a period is deleted unless an ASCII digit follows (the intended lookbehind is a typo),
and only the first 32 such periods (``re.UNICODE`` is passed as ``count``); "none" becomes "0";
the capitalised contraction keys ("Im", "Ive", "Id've") never match lowercased words, and
"somebody'd" maps to "somebodyd"; a human answer left out of its own leave-one-out subset is
removed together with any *identical* answer record (same answer, confidence and id).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clippo.atomic import atomic_write_text

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


def _accuracy(
    prediction: str, human_answers: Sequence[str], records: Sequence[Mapping] | None
) -> float:
    """Leave-one-out accuracy; `records` (answer dicts) decide which humans are identical."""
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
    return _accuracy(prediction, list(human_answers), None)


def _load_annotations(annotations: Any) -> list[Mapping]:
    """Accept a path, the loaded annotation JSON, or its list of annotations."""
    if isinstance(annotations, str | os.PathLike):
        with open(annotations, encoding="utf-8") as f:
            annotations = json.load(f)
    if isinstance(annotations, Mapping):
        if "annotations" not in annotations:
            raise ValueError("annotation JSON has no 'annotations' list (VQAv2 format expected)")
        annotations = annotations["annotations"]
    anns = list(annotations)
    if not anns:
        raise ValueError("annotations contain no questions")
    return anns


def _id_order(qid: Any) -> tuple:
    """Sort key for question ids of any type in messages: ints numerically, then the rest."""
    return (0, qid, "") if isinstance(qid, int) else (1, 0, repr(qid))


def _mean(values: Sequence[float]) -> float:
    """Sum in order then divide, as the official aggregation does."""
    return float(sum(values)) / len(values)


def vqa_scores(
    predictions: Mapping[int, str],
    annotations: Mapping[str, Any] | Sequence[Mapping[str, Any]] | str | os.PathLike,
) -> dict[str, Any]:
    """Return overall, per answer type, per question type and per question accuracy (fractions).

    `annotations` is a VQAv2 annotation file (path or loaded JSON, ``{"annotations": [...]}``)
    or its list of annotations. As the official code requires, `predictions` must hold exactly
    one answer for every annotated question id.
    """
    anns = _load_annotations(annotations)
    seen: set[int] = set()
    for ann in anns:
        qid = ann["question_id"]
        if qid in seen:
            raise ValueError(f"question id {qid!r} appears more than once in the annotations")
        seen.add(qid)
    unknown = sorted((q for q in predictions if q not in seen), key=_id_order)
    if unknown:
        raise ValueError(
            f"predictions for {len(unknown)} question id(s) not in the annotations, "
            f"e.g. {unknown[:5]}"
        )
    missing = sorted(q for q in seen if q not in predictions)
    if missing:
        raise ValueError(
            f"no prediction for {len(missing)} of {len(seen)} annotated question(s), "
            f"e.g. {missing[:5]}"
        )

    per_question: dict[int, float] = {}
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    for ann in anns:
        qid = ann["question_id"]
        records = ann["answers"]
        if not records:
            raise ValueError(f"question {qid!r} has no human answers")
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise TypeError(
                f"prediction for question {qid!r} must be a str, got {type(prediction).__name__}"
            )
        acc = _accuracy(prediction, [r["answer"] for r in records], records)
        per_question[qid] = acc
        by_answer_type.setdefault(ann["answer_type"], []).append(acc)
        by_question_type.setdefault(ann["question_type"], []).append(acc)
    return {
        "overall": _mean(list(per_question.values())),
        "per_answer_type": {k: _mean(v) for k, v in by_answer_type.items()},
        "per_question_type": {k: _mean(v) for k, v in by_question_type.items()},
        "per_question": per_question,
        "num_questions": len(per_question),
    }


def write_results(predictions: Mapping[int, str], path: str | os.PathLike) -> Path:
    """Write predictions in the official results format ``[{"question_id", "answer"}]``."""
    for qid, answer in predictions.items():
        # The official loader indexes results by question id, which are ints in VQAv2.
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise ValueError(f"question ids must be ints, got {qid!r}")
        if not isinstance(answer, str):
            raise ValueError(f"answer for question {qid} must be a str, got {answer!r}")
    results = [{"question_id": qid, "answer": predictions[qid]} for qid in sorted(predictions)]
    return atomic_write_text(path, json.dumps(results))


def load_results(path: str | os.PathLike) -> dict[int, str]:
    """Read an official results file back into ``{question_id: answer}``."""
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"{path}: results must be a JSON list of {{question_id, answer}} objects")
    out: dict[int, str] = {}
    for item in results:
        qid = item["question_id"]
        if qid in out:
            raise ValueError(f"{path}: question id {qid} has more than one answer")
        out[qid] = item["answer"]
    return out

import json
import re
from pathlib import Path

import pytest

from clippo.eval.vqa import (
    clean_whitespace,
    load_results,
    normalize_answer,
    vqa_accuracy,
    vqa_scores,
    write_results,
)

# Written by scripts/make_vqa_fixtures.py; golden.json is what the official GT-Vision-Lab/VQA
# evaluation code (vqaEval.py at a013f00, run under Python 2.7) reports for these files.
FIXTURES = Path(__file__).parent / "fixtures" / "vqa"
ANNOTATIONS = FIXTURES / "v2_mscoco_val2014_annotations.json"
RESULTS = FIXTURES / "v2_OpenEnded_mscoco_val2014_results.json"
DUPLICATE_RECORD_QID = 114001


@pytest.fixture(scope="module")
def golden():
    return json.loads((FIXTURES / "golden.json").read_text())


@pytest.fixture(scope="module")
def annotations():
    return json.loads(ANNOTATIONS.read_text())


@pytest.fixture(scope="module")
def predictions():
    return load_results(RESULTS)


def _pct(fraction: float) -> float:
    """The official code reports round(100 * accuracy, 2)."""
    return round(100 * fraction, 2)


def test_per_question_accuracy_matches_official(golden, annotations, predictions):
    scores = vqa_scores(predictions, annotations)
    assert scores["num_questions"] == len(golden["evalQA"]) == 44
    assert {str(q) for q in scores["per_question"]} == set(golden["evalQA"])
    for qid, acc in scores["per_question"].items():
        assert _pct(acc) == golden["evalQA"][str(qid)], qid
    # The fixture spans every score a 10-human question can get, plus the duplicate-record one.
    assert set(golden["evalQA"].values()) == {0.0, 30.0, 60.0, 83.33, 90.0, 100.0}


def test_overall_and_per_type_match_official(golden, annotations, predictions):
    scores = vqa_scores(predictions, annotations)
    official = golden["accuracy"]
    assert _pct(scores["overall"]) == official["overall"]
    assert {k: _pct(v) for k, v in scores["per_answer_type"].items()} == official["perAnswerType"]
    assert set(official["perAnswerType"]) == {"yes/no", "number", "other"}
    per_qtype = {k: _pct(v) for k, v in scores["per_question_type"].items()}
    assert per_qtype == official["perQuestionType"]


def test_vqa_accuracy_matches_official_per_question(golden, annotations, predictions):
    for ann in annotations["annotations"]:
        qid = ann["question_id"]
        acc = vqa_accuracy(predictions[qid], [a["answer"] for a in ann["answers"]])
        if qid == DUPLICATE_RECORD_QID:
            # Plain strings are distinct humans: 3 "red" of 10 give 0.9 (see below).
            assert acc == pytest.approx(0.9, abs=1e-12)
            assert golden["evalQA"][str(qid)] == 83.33
        else:
            assert _pct(acc) == golden["evalQA"][str(qid)], qid


def test_identical_answer_records_leave_out_together(annotations):
    # The official code drops from "the other humans" every record equal to the left-out one.
    # Records A, A (identical), R (red, other id), then 7 blue; prediction "red":
    #   left-out A: others hold only R          -> min(1, 1/3) = 1/3, twice
    #   left-out R: others hold A, A            -> 2/3
    #   left-out blue: others hold A, A, R      -> 1, seven times
    # (2/3 + 2/3 + 7) / 10 = 25/30.
    (ann,) = [a for a in annotations["annotations"] if a["question_id"] == DUPLICATE_RECORD_QID]
    assert ann["answers"][0] == ann["answers"][1]
    scores = vqa_scores({DUPLICATE_RECORD_QID: "red"}, [ann])
    assert scores["per_question"][DUPLICATE_RECORD_QID] == pytest.approx(25 / 30, abs=1e-12)


@pytest.mark.parametrize(
    "matching, expected",
    [
        # k of 10 humans match. Leaving out a matching human leaves k-1 matches, leaving out any
        # other leaves k; each subset scores min(1, matches / 3) and the 10 subsets are averaged:
        (0, 0.0),  # 0
        (1, 0.3),  # (1*0 + 9*(1/3)) / 10 = 3/10
        (2, 0.6),  # (2*(1/3) + 8*(2/3)) / 10 = (2/3 + 16/3) / 10 = 6/10
        (3, 0.9),  # (3*(2/3) + 7*1) / 10 = (2 + 7) / 10 = 9/10, not 1
        (4, 1.0),  # (4*1 + 6*1) / 10
        (10, 1.0),
    ],
)
def test_leave_one_out_hand_computed(matching, expected):
    humans = ["cat"] * matching + ["dog"] * (10 - matching)
    assert vqa_accuracy("cat", humans) == pytest.approx(expected, abs=1e-12)


def test_fewer_than_ten_humans():
    # 3 unanimous humans: each subset has 2 matches -> 2/3; a lone human: 0 others -> 0.
    assert vqa_accuracy("yes", ["yes"] * 3) == pytest.approx(2 / 3, abs=1e-12)
    assert vqa_accuracy("yes", ["yes"]) == 0.0


def test_unanimous_humans_disable_normalisation():
    # Only newlines/tabs and the ends are cleaned when every human gave the same string.
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("\tyes \n", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes"] * 8 + ["\tyes", "yes\n"]) == 1.0  # unanimous once cleaned
    # One human differing in case makes the humans diverse: everything is normalised.
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["Yes"]) == 1.0
    assert vqa_accuracy("two", ["2"] * 9 + ["two"]) == 1.0


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Yes.", "yes"),
        ("  The Dog\t", "dog"),
        ("a\nb", "b"),
        ("red  and \t blue", "red and blue"),
        ("An apple", "apple"),
        ("a", ""),
        ("two dogs", "2 dogs"),
        ("none", "0"),
        ("Ten", "10"),
        ("eleven", "eleven"),
        ("1,000", "1000"),
        ("1,000-2,000", "10002000"),  # a digit-comma-digit deletes every punctuation mark
        ("hot-dog, yes", "hot dog yes"),  # ", " touches a space: deleted; "-" does not: space
        ("black - white", "black white"),
        ("black-and-white", "black and white"),
        ("black- and-white", "black andwhite"),  # one "-" touches a space: all are deleted
        ("x-ray - scan", "xray scan"),
        ("hot-dog (bun)", "hot dog bun"),
        ("left/right", "left right"),
        ('"stop"', "stop"),
        ("what?!", "what"),
        ("[a]{b}(c)=d+e\\f_g<h>i@j`k;l", "b c d e f g h i j k l"),
        ("2.5", "2.5"),
        (".5", ".5"),
        ("v.2", "v.2"),
        ("3.", "3"),
        ("u.s.a.", "usa"),
        ("yes" + "." * 35, "yes..."),  # only the first 32 periods are deleted
        ("١.٥", "١٥"),  # only ASCII digits protect a period
        ("10:30", "10:30"),
        ("man's", "man's"),
        ("#1 $5 50% a&b *", "#1 $5 50% a&b *"),
        ("dont", "don't"),
        ("Isnt it", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("couldntve", "couldntve"),
        ("'ows'at", "'ow's'at"),
        ("yall'd've", "y'all'd've"),
        ("Im", "im"),
        ("Ive", "ive"),
        ("shes", "shes"),
        ("somebody'd", "somebodyd"),
        ("somebodyd", "somebodyd"),
        ("", ""),
    ],
)
def test_normalize_answer(answer, expected):
    assert normalize_answer(answer) == expected


def test_clean_whitespace_keeps_inner_spaces():
    assert clean_whitespace(" a\tb\nc  d ") == "a b c  d"


def test_results_round_trip(tmp_path, annotations, predictions):
    path = write_results({3: "two", 1: "yes", 2: " A dog\n"}, tmp_path / "sub" / "results.json")
    assert json.loads(path.read_text()) == [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 2, "answer": " A dog\n"},
        {"question_id": 3, "answer": "two"},
    ]
    assert load_results(path) == {1: "yes", 2: " A dog\n", 3: "two"}
    # The fixture predictions survive a round trip and score the same from a path.
    again = load_results(write_results(predictions, tmp_path / "again.json"))
    assert again == predictions
    assert vqa_scores(again, ANNOTATIONS) == vqa_scores(predictions, annotations)


def _one_annotation(qid: int, answers: list[str]) -> dict:
    records = [
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
    ]
    return {
        "question_id": qid,
        "question_type": "what",
        "answer_type": "other",
        "answers": records,
        "multiple_choice_answer": answers[0] if answers else "",
        "image_id": 1,
    }


def test_bad_input_errors(tmp_path, annotations, predictions):
    with pytest.raises(
        ValueError,
        match="^human_answers is empty: VQA accuracy needs at least one human answer$",
    ):
        vqa_accuracy("yes", [])
    with pytest.raises(
        ValueError,
        match=re.escape("predictions for 2 question id(s) not in the annotations, e.g. [7, 999]"),
    ):
        vqa_scores({**predictions, 999: "x", 7: "y"}, annotations)
    missing = {q: a for q, a in predictions.items() if q not in (100000, 100001)}
    with pytest.raises(
        ValueError,
        match=re.escape("no prediction for 2 of 44 annotated question(s), e.g. [100000, 100001]"),
    ):
        vqa_scores(missing, annotations)
    with pytest.raises(ValueError, match="^question 5 has no human answers$"):
        vqa_scores({5: "yes"}, [_one_annotation(5, [])])
    with pytest.raises(ValueError, match="^question id 5 appears more than once in the annot"):
        vqa_scores({5: "yes"}, [_one_annotation(5, ["yes"]), _one_annotation(5, ["no"])])
    with pytest.raises(ValueError, match="^annotations contain no questions$"):
        vqa_scores({}, {"annotations": []})
    with pytest.raises(ValueError, match="^annotation JSON has no 'annotations' list"):
        vqa_scores({}, {"questions": []})
    with pytest.raises(TypeError, match="^prediction for question 5 must be a str, got NoneType$"):
        vqa_scores({5: None}, [_one_annotation(5, ["yes"])])
    with pytest.raises(ValueError, match="^question ids must be ints, got '5'$"):
        write_results({"5": "yes"}, tmp_path / "r.json")
    with pytest.raises(ValueError, match="^answer for question 5 must be a str, got 3$"):
        write_results({5: 3}, tmp_path / "r.json")
    dup = tmp_path / "dup.json"
    dup.write_text(
        json.dumps([{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}])
    )
    with pytest.raises(ValueError, match="question id 1 has more than one answer$"):
        load_results(dup)

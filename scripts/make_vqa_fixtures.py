"""Writes tests/fixtures/vqa: a small VQAv2-format set, predictions, and what the official VQA
evaluation code (GT-Vision-Lab/VQA) scores. ``tests/test_eval_vqa.py`` checks clippo against it.

The official code is not part of clippo; point this script at any checkout of it:

    git clone https://github.com/GT-Vision-Lab/VQA /tmp/vqa      # or: git archive HEAD | tar -x
    python3 scripts/make_vqa_fixtures.py /tmp/vqa --commit "$(git -C /tmp/vqa rev-parse HEAD)"

The official code is Python 2. By default it runs here under Python 3 with run-time shims that
restore its Python 2 behaviour (print statements, mixed tab/space indentation, ASCII-only ``\\d``
in its regexes, and Python 2's round-half-away-from-zero). With ``--python2 python2.7`` it also
runs unmodified under Python 2 (the golden numbers then come from that run), and the script
stops if the two runs disagree.

Each question's prediction and human answers exercise one rule of the official answer
normalisation or scoring; the comment beside it names the rule and the accuracy it should get.
"""

from __future__ import annotations

import argparse
import decimal
import json
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "vqa"

# (question_type, answer_type, question, [(human answer, count)...] summing to 10, prediction)
CASES = [
    # yes/no
    ("is the", "yes/no", "Is the dog asleep?", [("yes", 10)], "yes"),  # unanimous, exact: 1
    ("is the", "yes/no", "Is the sky clear?", [("yes", 10)], "Yes"),  # unanimous: no lowercase, 0
    ("is this", "yes/no", "Is this a kitchen?", [("yes", 10)], " yes\n"),  # ends stripped: 1
    # newline/tab cleaning comes before the unanimity test: still unanimous, 1
    ("is this", "yes/no", "Is this indoors?", [("yes", 8), ("\tyes", 1), ("yes\n", 1)], "yes\t"),
    ("are there", "yes/no", "Are there clouds?", [("yes", 7), ("no", 3)], "No."),  # 3 match: 0.9
    ("are there", "yes/no", "Are there people?", [("yes", 9), ("Yes", 1)], "YES!"),  # diverse: 1
    # only the first 32 periods are deleted ("yes..." remains): 0
    ("is the", "yes/no", "Is the man happy?", [("yes", 6), ("no", 4)], "yes" + "." * 35),
    ("is this", "yes/no", "Is this a boy?", [("yes", 5), ("no", 5)], "no"),  # 5 match: 1
    ("is the", "yes/no", "Is the door open?", [("no", 9), ("No", 1)], "yes"),  # 0 match: 0
    # number
    # humans diverse: "two" -> "2" on both sides, 7 match: 1
    ("how many", "number", "How many dogs?", [("2", 5), ("3", 3), ("two", 2)], "two"),
    # digit-comma-digit deletes the comma: 2 match, 0.6
    ("how many", "number", "How many bricks?", [("1000", 1), ("1,000", 1), ("500", 8)], "1,000"),
    ("how many", "number", "How many cats?", [("2", 10)], "two"),  # unanimous: no "two"->"2", 0
    ("how many", "number", "How many birds?", [("0", 4), ("1", 6)], "none"),  # "none"->"0": 1
    ("how many", "number", "How many cars?", [("3", 1), ("4", 9)], "3."),  # end period: 0.3
    # a period before a digit is kept: 3 match, 0.9
    ("what number is", "number", "What number is on the sign?", [("2.5", 3), ("3", 7)], "2.5"),
    # ".5" keeps its period and gets no leading zero: 1 match, 0.3
    ("how many", "number", "How much is left?", [(".5", 1), ("0.5", 2), ("half", 7)], ".5"),
    # lowercased, then "ten" -> "10": 3 match, 0.9
    ("how many", "number", "How many eggs?", [("10", 2), ("ten", 1), ("eleven", 7)], "Ten"),
    # a digit-comma-digit anywhere deletes every punctuation mark, the hyphen too: 0.3
    (
        "how many",
        "number",
        "How many people fit?",
        [("1000 2000", 5), ("10002000", 1), ("many", 4)],
        "1,000-2,000",
    ),
    # number words inside phrases: 0.6
    (
        "how many",
        "number",
        "How many animals?",
        [("three dogs", 1), ("3 dogs", 1), ("3", 8)],
        "Three dogs",
    ),
    # \d is ASCII only (Python 2): the period between Arabic-Indic digits goes, 3 match: 0.9
    ("what number is", "number", "What number is shown?", [("١٥", 3), ("15", 7)], "١.٥"),
    # other
    # the colon is not punctuation: 3 match, 0.9
    ("what time", "other", "What time is it?", [("10:30", 3), ("1030", 1), ("noon", 6)], "10:30"),
    # articles are dropped: "dog", 3 match, 0.9
    (
        "what is the",
        "other",
        "What is the animal?",
        [("dog", 2), ("the dog", 1), ("cat", 7)],
        "a dog",
    ),
    ("what is", "other", "What is this fruit?", [("apple", 4), ("apples", 6)], "An Apple"),  # 1
    # "dont" -> "don't": 2 match, 0.6
    ("what does the", "other", "What does it say?", [("don't know", 2), ("stop", 8)], "dont know"),
    ("what", "other", "What is it not?", [("isn't", 1), ("is", 9)], "isnt"),  # 0.3
    # capitalised "Im" key never matches: "im" stays, matches only the human "im", 0.3
    ("what", "other", "Who is it?", [("i'm", 4), ("im", 1), ("me", 5)], "Im"),
    # the backwards entry: "somebody'd" -> "somebodyd", 0.6
    ("what", "other", "Who did it?", [("somebodyd", 2), ("somebody", 8)], "somebody'd"),
    # hyphen between words becomes a space: 3 match, 0.9
    (
        "what color is the",
        "other",
        "What color is the cow?",
        [("black and white", 2), ("black-and-white", 1), ("black", 7)],
        "Black-and-White",
    ),
    # a hyphen touching a space is deleted instead: "black white", 1
    (
        "what color is the",
        "other",
        "What color is the cat?",
        [("black white", 4), ("black", 6)],
        "black - white",
    ),
    # one hyphen touches a space, so every hyphen is deleted: "xray scan", 3 match, 0.9
    (
        "what is",
        "other",
        "What kind of image?",
        [("xray scan", 3), ("x ray scan", 1), ("scan", 6)],
        "x-ray - scan",
    ),
    # a hyphen inside a word becomes a space: "t shirt", 1 match, 0.3
    (
        "what is the",
        "other",
        "What is he wearing?",
        [("tshirt", 5), ("t shirt", 1), ("shirt", 4)],
        "t-shirt",
    ),
    # humans differ only by punctuation: all normalised, 1
    (
        "what sport is",
        "other",
        "What sport is this?",
        [("frisbee", 5), ("frisbee!", 5)],
        "Frisbee?",
    ),
    # periods between letters go: "usa", 3 match, 0.9
    ("what is", "other", "What country?", [("usa", 2), ("u.s.a.", 1), ("america", 7)], "U.S.A."),
    ("what kind of", "other", "What kind of sign?", [("stop", 8), ("stop sign", 2)], '"stop"'),  # 1
    ("what", "other", "Which way?", [("left right", 1), ("left", 9)], "left/right"),  # 0.3
    # inner tab and runs of spaces collapse, article dropped: "on table", 0.9
    (
        "where are the",
        "other",
        "Where are the keys?",
        [("on table", 3), ("table", 7)],
        "  on   the\ttable ",
    ),
    # humans differing in case are all lowercased: 5 match, 1
    (
        "what color is the",
        "other",
        "What color is the bus?",
        [("Red", 2), ("red", 3), ("blue", 5)],
        "RED",
    ),
    # the apostrophe is not punctuation: only "mans" matches, 0.3
    ("none of the above", "other", "Whose hat?", [("man's", 2), ("mans", 1), ("man", 7)], "mans"),
    ("what is", "other", "What is on the shirt?", [("#1", 2), ("1", 8)], "#1"),  # "#" kept: 0.6
    # "(" touches a space so it is deleted, ")" and "-" become spaces: 0.3
    (
        "what is the",
        "other",
        "What is the food?",
        [("hot dog bun", 1), ("hot dog", 9)],
        "hot-dog (bun)",
    ),
    # "none" -> "0" in any answer type: 5 match, 1
    ("what", "other", "What is in the box?", [("nothing", 5), ("none", 5)], "None"),
    # articles alone normalise to "": matches the human "the", 0.3
    ("what", "other", "What is that?", [("the", 1), ("it", 9)], "A"),
    ("what", "other", "What is he holding?", [("bat", 6), ("racket", 4)], ""),  # empty: 0
]

# Question index whose first two human answer records are identical (same answer, confidence and
# id): leaving one out removes both, so 3 "red" of 10 score 25/30 instead of 0.9.
DUPLICATE_RECORD_CASE = (
    "what color is the",
    "other",
    "What color is the apple?",
    [("red", 3), ("blue", 7)],
    "red",
)


def _answer_records(humans: list[tuple[str, int]], duplicate_first: bool) -> list[dict]:
    """Ten official answer records; optionally the second is an exact copy of the first."""
    answers = [a for a, count in humans for _ in range(count)]
    assert len(answers) == 10, humans
    records = [
        {"answer": a, "answer_confidence": ("yes", "maybe")[i % 4 == 3], "answer_id": i + 1}
        for i, a in enumerate(answers)
    ]
    if duplicate_first:
        records[1] = dict(records[0])
    return records


def build_dataset() -> tuple[dict, dict, list[dict]]:
    """Questions JSON, annotations JSON and results list in the official VQAv2 formats."""
    common = {
        "info": {"description": "clippo VQA evaluation fixture", "version": "2.0"},
        "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        "data_type": "mscoco",
        "data_subtype": "val2014",
    }
    questions, annotations, results = [], [], []
    cases = [(c, False) for c in CASES] + [(DUPLICATE_RECORD_CASE, True)]
    for i, ((q_type, a_type, question, humans, prediction), dup) in enumerate(cases):
        image_id = 100 + i // 3  # VQAv2 has several questions per image
        question_id = image_id * 1000 + i % 3
        records = _answer_records(humans, dup)
        most_common = max(humans, key=lambda h: h[1])[0]
        questions.append({"image_id": image_id, "question": question, "question_id": question_id})
        annotations.append(
            {
                "question_type": q_type,
                "multiple_choice_answer": most_common,
                "answers": records,
                "image_id": image_id,
                "answer_type": a_type,
                "question_id": question_id,
            }
        )
        results.append({"question_id": question_id, "answer": prediction})
    questions_json = {**common, "task_type": "Open-Ended", "questions": questions}
    annotations_json = {**common, "annotations": annotations}
    return questions_json, annotations_json, results


# Runs the official code; valid Python 2 and 3. argv: repo, annotations, questions, results, out.
RUNNER = r"""
import json, sys
repo, ann_file, ques_file, res_file, out_file = sys.argv[1:6]
sys.path.insert(0, repo + '/PythonHelperTools/vqaTools')
sys.path.insert(0, repo + '/PythonEvaluationTools')
from vqa import VQA
from vqaEvaluation.vqaEval import VQAEval
vqa = VQA(ann_file, ques_file)
res = vqa.loadRes(res_file, ques_file)
ev = VQAEval(vqa, res, n=2)
ev.evaluate()
out = {'accuracy': ev.accuracy, 'evalQA': ev.evalQA, 'evalQuesType': ev.evalQuesType,
       'evalAnsType': ev.evalAnsType, 'python': sys.version.split()[0]}
with open(out_file, 'w') as f:
    json.dump(out, f, indent=1, sort_keys=True)
"""


def _py3_source(path: Path) -> str:
    """Official Python 2 source made to compile under Python 3, behaviour unchanged."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        # Python 2 reads a tab as "up to the next multiple of 8"; spell that out in spaces.
        indent = re.match(r"[ \t]*", line).group()
        line = indent.expandtabs(8) + line[len(indent) :]
        line = re.sub(r"^(\s*)print\s+(.+)$", r"\1print(\2)", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _round_py2(x: float, n: int = 0) -> float:
    """Python 2's round(): the exact binary value, halves away from zero."""
    q = decimal.Decimal(1).scaleb(-n)
    return float(decimal.Decimal(x).quantize(q, rounding=decimal.ROUND_HALF_UP))


def run_official_py3(repo: Path, files: list[Path], out: Path) -> None:
    """Run the official code in this Python 3 process with the shims described above."""
    vqa_mod = types.ModuleType("vqa")
    exec(
        compile(_py3_source(repo / "PythonHelperTools/vqaTools/vqa.py"), "vqa.py", "exec"),
        vqa_mod.__dict__,
    )
    eval_mod = types.ModuleType("vqaEvaluation.vqaEval")
    eval_mod.__dict__["round"] = _round_py2
    src = _py3_source(repo / "PythonEvaluationTools/vqaEvaluation/vqaEval.py")
    exec(compile(src, "vqaEval.py", "exec"), eval_mod.__dict__)
    official = eval_mod.VQAEval

    class Py2Regex(official):
        """Python 2 compiles the official str patterns without re.UNICODE: ASCII \\d."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.periodStrip = re.compile(self.periodStrip.pattern, re.ASCII)
            self.commaStrip = re.compile(self.commaStrip.pattern, re.ASCII)

    eval_mod.VQAEval = Py2Regex
    package = types.ModuleType("vqaEvaluation")
    package.vqaEval = eval_mod
    saved = {k: sys.modules.get(k) for k in ("vqa", "vqaEvaluation", "vqaEvaluation.vqaEval")}
    sys.modules.update(
        {"vqa": vqa_mod, "vqaEvaluation": package, "vqaEvaluation.vqaEval": eval_mod}
    )
    argv = sys.argv
    try:
        sys.argv = ["runner", str(repo), *map(str, files), str(out)]
        exec(compile(RUNNER, "runner", "exec"), {"__name__": "runner"})
    finally:
        sys.argv = argv
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def run_official_py2(python2: str, repo: Path, files: list[Path], out: Path) -> None:
    """Run the official code unmodified under a Python 2 interpreter."""
    cmd = [python2, "-c", RUNNER, str(repo), *map(str, files), str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    """Write the fixture JSON files and the official evaluation's numbers (golden.json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official_repo", type=Path, help="checkout of GT-Vision-Lab/VQA")
    parser.add_argument("--commit", default="a013f0043c1e2cdc995922dfe257f7149aa9af06")
    parser.add_argument("--python2", help="also run the official code under this Python 2")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    questions, annotations, results = build_dataset()
    args.out.mkdir(parents=True, exist_ok=True)
    files = [
        args.out / "v2_mscoco_val2014_annotations.json",
        args.out / "v2_OpenEnded_mscoco_val2014_questions.json",
        args.out / "v2_OpenEnded_mscoco_val2014_results.json",
    ]
    for path, data in zip(files, (annotations, questions, results), strict=True):
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        py3_out = Path(tmp) / "py3.json"
        run_official_py3(args.official_repo.resolve(), files, py3_out)
        golden = json.loads(py3_out.read_text())
        if args.python2:
            py2_out = Path(tmp) / "py2.json"
            run_official_py2(args.python2, args.official_repo.resolve(), files, py2_out)
            golden_py2 = json.loads(py2_out.read_text())
            for key in ("accuracy", "evalQA", "evalQuesType", "evalAnsType"):
                if golden[key] != golden_py2[key]:
                    sys.exit(f"Python 2 and shimmed Python 3 runs disagree on {key}")
            golden = golden_py2
    golden["official"] = {
        "repo": "GT-Vision-Lab/VQA",
        "commit": args.commit,
        "file": "PythonEvaluationTools/vqaEvaluation/vqaEval.py",
        "python": golden.pop("python"),
    }
    (args.out / "golden.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(results)} questions to {args.out}; overall {golden['accuracy']['overall']}")


if __name__ == "__main__":
    main()

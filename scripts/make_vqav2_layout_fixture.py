"""Writes tests/fixtures/vqav2: a tiny VQAv2 in the official file layout (questions and
annotations JSON, COCO-named JPEGs) for the reader's tests. A layout fixture only: the images
are 16x16 colour squares and the questions are made up.

    python scripts/make_vqav2_layout_fixture.py
"""

import io
import json
from pathlib import Path

from PIL import Image

OUT = Path(__file__).parent.parent / "tests" / "fixtures" / "vqav2"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "gray": (128,) * 3}

# (image_id, colour, [(question_id, question, question_type, answer_type, ten answers)])
SPLITS = {
    "train2014": [
        (
            9,
            "red",
            [
                (90, "What color is it?", "what color is the", "other", ["red"] * 10),
                (91, "Is it red?", "is the", "yes/no", ["yes"] * 9 + ["no"]),
            ],
        ),
        (
            25,
            "green",
            [
                (
                    250,
                    "What color is it?",
                    "what color is the",
                    "other",
                    ["green"] * 8 + ["dark green", "Green."],
                ),
                (
                    251,
                    "How many squares?",
                    "how many",
                    "number",
                    ["1"] * 4 + ["one"] * 4 + ["2", "1 "],
                ),
            ],
        ),
        (
            30,
            "blue",
            [
                (
                    300,
                    "What color is it?",
                    "what color is the",
                    "other",
                    ["blue"] * 6 + ["navy"] * 2 + ["purple", "blue"],
                ),
                (301, "Is it red?", "is the", "yes/no", ["no"] * 10),
            ],
        ),
        (
            42,
            "gray",
            [
                (
                    420,
                    "What color is it?",
                    "what color is the",
                    "other",
                    ["gray"] * 5 + ["grey"] * 5,
                ),
                (421, "Is it red?", "is the", "yes/no", ["no"] * 7 + ["yes"] * 3),
            ],
        ),
    ],
    "val2014": [
        (
            7,
            "red",
            [
                (70, "Is it red?", "is the", "yes/no", ["yes"] * 10),
                (71, "What color is it?", "what color is the", "other", ["red"] * 10),
            ],
        ),
        (8, "blue", [(80, "How many squares?", "how many", "number", ["one"] * 6 + ["1"] * 4)]),
    ],
}


def jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    for split, images in SPLITS.items():
        (OUT / split).mkdir(parents=True, exist_ok=True)
        questions, annotations = [], []
        for image_id, colour, rows in images:
            (OUT / split / f"COCO_{split}_{image_id:012d}.jpg").write_bytes(jpeg(COLOURS[colour]))
            for qid, question, qtype, atype, answers in rows:
                questions.append({"image_id": image_id, "question": question, "question_id": qid})
                top = max(answers, key=answers.count)
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": qtype,
                    "answer_type": atype, "multiple_choice_answer": top,
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                for i, a in enumerate(answers)],
                })  # fmt: skip
        head = {"info": {}, "license": {}, "data_subtype": split}
        (OUT / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({**head, "task_type": "Open-Ended", "questions": questions}, indent=1)
        )
        (OUT / f"v2_mscoco_{split}_annotations.json").write_text(
            json.dumps({**head, "annotations": annotations}, indent=1)
        )


if __name__ == "__main__":
    main()

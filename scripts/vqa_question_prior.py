"""The question-only baseline of a VQA data folder: every test question answered with the answer
most often given to the same question text in the training split (no image seen), scored with
the official VQA accuracy; and, given a predictions file, how often a model's yes/no answers
equal that prior's (1.0: it answers yes/no from the question alone).

    python scripts/vqa_question_prior.py --data data/easy_vqa \
        [--predictions runs/vqa_grid_clippo/predictions.json ...]
"""

import argparse
import json
from collections import Counter, defaultdict

from clippo.data.vqa import read_questions, split_pattern
from clippo.eval.vqa import load_results, score_predictions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="a folder of `clippo data vqa`")
    p.add_argument("--predictions", nargs="*", default=[], help="official results files")
    args = p.parse_args()
    answers_of = defaultdict(Counter)
    for r in read_questions(split_pattern(args.data, "train")):
        for a in set(r["answers"]):
            answers_of[r["question"]][a] += 1
    test = read_questions(split_pattern(args.data, "test"))
    prior = {
        r["question_id"]: answers_of[r["question"]].most_common(1)[0][0]
        if answers_of[r["question"]]
        else ""
        for r in test
    }
    scores = score_predictions(prior, test)
    out = {"question_only": {"overall": scores["overall"], **scores["per_answer_type"]}}
    yes_no = [r["question_id"] for r in test if r["answer_type"] == "yes/no"]
    for path in args.predictions:
        predicted = load_results(path)
        same = sum(predicted[q] == prior[q] for q in yes_no) / len(yes_no)
        out[path] = {"yes/no answers equal to the question-only prior": same}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

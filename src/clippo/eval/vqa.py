"""The official VQA accuracy (VQAv2 open-ended), as GT-Vision-Lab/VQA's evaluation code computes it.

Reproduces ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at its latest commit (a013f00,
"Fixed processing answers bug"), behaviour for behaviour, checked against that code in
``tests/test_eval_vqa.py`` (fixtures from ``scripts/make_vqa_fixtures.py``). The per-question
part (normalisation, leave-one-out accuracy) lives in ``clippo.data.vqa_answers``, where the
data builders also use it for soft targets; this module aggregates it, reads and writes the
official results format, and scores models on VQA shards: a fine-tuned classifier
(``predict_vqa``, ``VQAHoldoutEvaluation``) or any contrastive model by prompting
(``zero_shot_vqa``); ``baselines`` puts what answers without the image beside a model's
answers: chance, the majority answer, the question prior
(``clippo.data.vqa.question_prior``).

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

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clippo.atomic import atomic_write_text
from clippo.data.vqa import AnswerVocabulary, VQAShardDataset, iter_questions, vqa_inputs
from clippo.data.vqa_answers import (
    answer_accuracy,
    clean_whitespace,
    normalize_answer,
    vqa_accuracy,
)
from clippo.render import UnifontRenderer

__all__ = [
    "clean_whitespace",
    "load_results",
    "normalize_answer",
    "vqa_accuracy",
    "vqa_scores",
    "write_results",
]


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
        acc = answer_accuracy(prediction, [r["answer"] for r in records], records)
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


# --------------------------------------------------------------------------------------------
# Evaluating models on VQA shards (``clippo data vqa``): fine-tuned classifiers and zero-shot
# --------------------------------------------------------------------------------------------


def annotations_of(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Shard records (``clippo.data.vqa``) -> VQAv2 annotations that ``vqa_scores`` reads."""
    return [
        {
            "question_id": r["question_id"],
            "answer_type": r["answer_type"],
            "question_type": r["question_type"],
            "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(r["answers"])],
        }
        for r in records
    ]


def _vqa_batches(
    model,
    urls: str,
    vocabulary,
    *,
    image_mode: str,
    batch_size: int,
    workers: int,
    feature_cache: str | os.PathLike | None = None,
):
    cfg = getattr(model, "cfg", None)
    render = {k: v for k, v in (getattr(cfg, "render", None) or {}).items() if k != "image_size"}
    options = {"question_transform": getattr(model, "question_transform", None)}
    if feature_cache is not None and getattr(cfg, "freeze_encoder", False):
        # A frozen grid backbone: each distinct image and question embedded once.
        images, questions = model.feature_caches(urls, feature_cache, batch_size=batch_size)
        options.update(image_cache=images, question_cache=questions)
        if questions is not None:
            options["question_transform"] = None
    dataset = VQAShardDataset(
        urls,
        vocabulary=vocabulary,
        renderer=UnifontRenderer(**render),
        image_size=model.image_size,
        max_lines=getattr(cfg, "max_lines", 4),
        image_mode=image_mode,
        batch_size=batch_size,
        train=False,
        **options,
    )
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)


def predict_vqa(
    model,
    urls: str,
    *,
    batch_size: int = 256,
    max_questions: int | None = None,
    workers: int = 1,
    feature_cache: str | os.PathLike | None = None,
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """A fine-tuned VQA model's top answer per question of the shards ``urls`` (a
    ``VQAClassifier`` reading the fused input, or a ``VQAGridModel`` reading the image and the
    question): ``({question_id: answer}, records)``, the first ``max_questions`` questions
    when set. With ``feature_cache`` (a folder for these shards) a frozen grid backbone embeds
    each distinct image and question once (``VQAGridModel.feature_caches``)."""
    vocabulary = AnswerVocabulary(list(model.answers), [0] * len(model.answers))
    was_training = model.training
    model.eval()
    predictions: dict[int, str] = {}
    records: list[dict[str, Any]] = []
    image_mode = "fused" if model.protocol == "fused" else "image"
    loader = _vqa_batches(
        model,
        urls,
        vocabulary,
        image_mode=image_mode,
        batch_size=batch_size,
        workers=workers,
        feature_cache=feature_cache,
    )
    with torch.no_grad():
        for batch in loader:
            top = model(**vqa_inputs(batch)).argmax(-1).tolist()
            for i, qid in enumerate(batch["question_id"]):
                predictions[qid] = model.answers[top[i]]
                records.append(_record(batch, i))
            if max_questions is not None and len(records) >= max_questions:
                break
    model.train(was_training)
    if max_questions is not None:
        records = records[:max_questions]
        predictions = {r["question_id"]: predictions[r["question_id"]] for r in records}
    return predictions, records


# What scoring needs of each question (``_record``, ``split_records``).
RECORD_KEYS = ("question_id", "question", "answers", "answer_type", "question_type")


def _record(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    return {k: batch[k][i] for k in RECORD_KEYS}


def score_predictions(
    predictions: Mapping[int, str], records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """``vqa_scores`` of predictions against shard records, without the per-question list."""
    scores = vqa_scores(predictions, annotations_of(records))
    return {k: v for k, v in scores.items() if k != "per_question"}


class VQAHoldoutEvaluation:
    """The held-out split scored at the end of a fine-tuning run (the engine's ``evaluation``):
    ``holdout/vqa_accuracy`` and ``holdout/vqa_accuracy/ANSWER_TYPE``, for choosing the
    learning rate."""

    def __init__(
        self,
        urls: str,
        *,
        batch_size: int = 256,
        max_questions: int | None = None,
        feature_cache: str | os.PathLike | None = None,
    ):
        self.urls, self.batch_size, self.max_questions = urls, batch_size, max_questions
        self.feature_cache = feature_cache  # a frozen grid backbone's, for these shards

    def due(self, step: int, final: bool) -> bool:
        """Only at the end of the run."""
        return final

    def run(self, model, step: int = 0, final: bool = True) -> dict[str, float]:
        """The held-out metrics as flat ``holdout/...`` entries, for metrics.jsonl."""
        predictions, records = predict_vqa(
            model,
            self.urls,
            batch_size=self.batch_size,
            max_questions=self.max_questions,
            feature_cache=self.feature_cache,
        )
        scores = score_predictions(predictions, records)
        out = {"holdout/vqa_accuracy": scores["overall"], "holdout/questions": len(records)}
        for kind, value in scores["per_answer_type"].items():
            out[f"holdout/vqa_accuracy/{kind}"] = value
        return out


def write_vqa_report(
    out_dir: str | os.PathLike,
    predictions: Mapping[int, str],
    scores: Mapping[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """``OUT/metrics.json`` (scores and ``extra``) and ``OUT/predictions.json`` (the official
    results format); returns what metrics.json holds."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(dict(predictions), out_dir / "predictions.json")
    report = {**extra, **scores}
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report


def zero_shot_vqa(
    model,
    urls: str,
    answers: Sequence[str],
    *,
    batch_size: int = 256,
    max_questions: int | None = None,
    prompt: str = "question: {q} answer: {a}",
    workers: int = 1,
) -> tuple[dict[int, str], list[dict[str, Any]], dict[int, list[float]]]:
    """Zero-shot VQA (CLIP-ViL section 5): each candidate answer is scored by the similarity of
    the image embedding with the embedding of ``prompt`` filled with the question and the
    answer (rendered, for CLIPPO). Returns ``(predictions, records, per-question accuracy of
    every candidate)``; the last gives the chance level."""
    vocabulary = AnswerVocabulary(list(answers), [0] * len(answers))
    loader = _vqa_batches(
        model, urls, vocabulary, image_mode="image", batch_size=batch_size, workers=workers
    )
    cache: dict[str, torch.Tensor] = {}  # questions repeat: embed each prompt set once
    predictions: dict[int, str] = {}
    records: list[dict[str, Any]] = []
    candidate_scores: dict[int, list[float]] = {}
    model.eval()
    with torch.no_grad():
        for batch in loader:
            zimg = model.encode_image(batch["image"])
            for i, qid in enumerate(batch["question_id"]):
                question = batch["question"][i]
                if question not in cache:
                    prompts = [prompt.format(q=question, a=a) for a in answers]
                    cache[question] = model.encode_text(prompts)
                best = int((cache[question] @ zimg[i]).argmax())
                predictions[qid] = answers[best]
                record = _record(batch, i)
                records.append(record)
                candidate_scores[qid] = [vqa_accuracy(a, record["answers"]) for a in answers]
            if max_questions is not None and len(records) >= max_questions:
                break
    if max_questions is not None:
        records = records[:max_questions]
        keep = {r["question_id"] for r in records}
        predictions = {q: a for q, a in predictions.items() if q in keep}
        candidate_scores = {q: s for q, s in candidate_scores.items() if q in keep}
    return predictions, records, candidate_scores


def split_records(urls: str) -> list[dict[str, Any]]:
    """The questions of VQA shards as scoring records (question id and text, the human answers,
    answer and question type), in shard order, for scoring a results file."""
    return [
        {k: meta.get(k, [] if k == "answers" else "") for k in RECORD_KEYS}
        for meta in iter_questions(urls)
    ]


def baselines(
    records: Sequence[Mapping[str, Any]],
    majority_answer: str,
    *,
    prior: Mapping[str, str] | None = None,
    candidate_scores: Mapping[int, Sequence[float]] | None = None,
    predictions: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """What answers without the image, beside a model's answers, overall and per answer type:
    ``majority`` (always the training set's majority answer); with ``prior``
    (``clippo.data.vqa.question_prior``) ``question_prior`` (its answer for the question text,
    the majority answer for a text never seen in training); with ``candidate_scores``
    ``chance`` (a uniformly random candidate's expected accuracy); with ``prior`` and
    ``predictions`` ``same_as_prior``, the share of the model's answers equal to the prior's
    (1.0: the model answers these questions from the question alone)."""
    by_type: dict[str, list[dict[str, float]]] = {}
    for r in records:
        row = {"majority": vqa_accuracy(majority_answer, r["answers"])}
        if prior is not None:
            guess = prior.get(r["question"], majority_answer)
            row["question_prior"] = vqa_accuracy(guess, r["answers"])
            if predictions is not None:
                row["same_as_prior"] = float(predictions[r["question_id"]] == guess)
        if candidate_scores is not None:
            row["chance"] = _mean(list(candidate_scores[r["question_id"]]))
        by_type.setdefault(r["answer_type"], []).append(row)

    def means(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: _mean([row[k] for row in rows]) for k in (rows[0] if rows else {})}

    return {
        **means([row for rows in by_type.values() for row in rows]),
        "majority_answer": majority_answer,
        "per_answer_type": {kind: means(rows) for kind, rows in by_type.items()},
    }

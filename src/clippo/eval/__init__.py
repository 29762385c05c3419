"""Evaluators that take embeddings (or an embedding function), so any model can be scored.

Importing this package registers every evaluator (``clippo.eval.registry``); evaluation sets
(``clippo.eval.sets``) run them by name.
"""

from clippo.eval.fewshot import FewShotEvaluator, fewshot_lsr, lsr_predict, sample_fewshot_indices
from clippo.eval.multilingual import (
    BitextRetrievalEvaluator,
    MultilingualRetrievalEvaluator,
    multilingual_retrieval_metrics,
)
from clippo.eval.registry import EVALUATORS, build_evaluator, register
from clippo.eval.retrieval import RetrievalEvaluator, retrieval_metrics, retrieval_ranks
from clippo.eval.typographic import TypographicAttackEvaluator, attack_metrics
from clippo.eval.zeroshot import (
    ZeroShotEvaluator,
    build_zeroshot_classifier,
    canonicalize_text,
    load_prompts,
    zeroshot_accuracy,
)

__all__ = [
    "EVALUATORS",
    "BitextRetrievalEvaluator",
    "FewShotEvaluator",
    "MultilingualRetrievalEvaluator",
    "RetrievalEvaluator",
    "TypographicAttackEvaluator",
    "ZeroShotEvaluator",
    "attack_metrics",
    "build_evaluator",
    "build_zeroshot_classifier",
    "canonicalize_text",
    "fewshot_lsr",
    "load_prompts",
    "lsr_predict",
    "multilingual_retrieval_metrics",
    "register",
    "retrieval_metrics",
    "retrieval_ranks",
    "sample_fewshot_indices",
    "zeroshot_accuracy",
]

"""Evaluators that take embeddings (or an embedding function), so any model can be scored."""

from clippo.eval.fewshot import fewshot_lsr, lsr_predict, sample_fewshot_indices
from clippo.eval.retrieval import retrieval_metrics
from clippo.eval.zeroshot import (
    build_zeroshot_classifier,
    canonicalize_text,
    load_prompts,
    zeroshot_accuracy,
)

__all__ = [
    "build_zeroshot_classifier",
    "canonicalize_text",
    "fewshot_lsr",
    "load_prompts",
    "lsr_predict",
    "retrieval_metrics",
    "sample_fewshot_indices",
    "zeroshot_accuracy",
]

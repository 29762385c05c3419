"""Analyses of trained models and of the input representation (paper §4.5, §4.6, C.5, C.6).

numpy only at import: torch tensors are accepted but never required, and sentencepiece is
imported only when a tokenizer's lengths are asked for.
"""

from clippo.analysis.gap import (
    FrequencyShares,
    PairDistances,
    frequency_shares,
    mismatched_pair_distances,
    modality_gap,
    pair_distances,
    patch_embedding_components,
    patch_embedding_pca,
    pca_2d,
)
from clippo.analysis.tokens import (
    LanguageLengths,
    clippo_sequence_length,
    compare_lengths,
    sentencepiece_lengths,
    share_of_languages_shorter,
    unknown_piece_rate,
)

__all__ = [
    "FrequencyShares",
    "LanguageLengths",
    "PairDistances",
    "clippo_sequence_length",
    "compare_lengths",
    "frequency_shares",
    "mismatched_pair_distances",
    "modality_gap",
    "pair_distances",
    "patch_embedding_components",
    "patch_embedding_pca",
    "pca_2d",
    "sentencepiece_lengths",
    "share_of_languages_shorter",
    "unknown_piece_rate",
]

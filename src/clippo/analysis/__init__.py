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
    CORPORA,
    LanguageLengths,
    TokenizationRow,
    clippo_sequence_length,
    compare_lengths,
    sentencepiece_lengths,
    share_of_languages_shorter,
    token_corpora,
    tokenization_summary,
    tokenization_table,
    unknown_piece_rate,
)

__all__ = [
    "FrequencyShares",
    "CORPORA",
    "LanguageLengths",
    "PairDistances",
    "TokenizationRow",
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
    "token_corpora",
    "tokenization_summary",
    "tokenization_table",
    "unknown_piece_rate",
]

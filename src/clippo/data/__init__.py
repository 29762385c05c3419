"""Data at run time: webdataset shards -> batches, image preprocessing, text pairs, task data.

The offline builders that write these data sets live in ``clippo.data.build``.
"""

from clippo.data.shards import (
    InMemoryShardDataset,
    ShardDataset,
    expand_urls,
    iter_tar_samples,
    sample_label,
    sample_texts,
)
from clippo.data.textpairs import MixedBatchDataset, TextPairDataset, iter_text_pairs
from clippo.data.transforms import (
    BadImageError,
    ImageTransform,
    load_image,
    open_image,
    sample_rng,
    to_rgb,
    to_tensor,
)

__all__ = [
    "BadImageError",
    "ImageTransform",
    "InMemoryShardDataset",
    "MixedBatchDataset",
    "ShardDataset",
    "TextPairDataset",
    "expand_urls",
    "iter_tar_samples",
    "iter_text_pairs",
    "load_image",
    "open_image",
    "sample_label",
    "sample_rng",
    "sample_texts",
    "to_rgb",
    "to_tensor",
]

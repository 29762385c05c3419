"""Data: webdataset shards -> batches, image preprocessing, and data-set builders."""

from clippo.data.openclipart import build_openclipart_shards, clean_alt_texts, read_svg_metadata
from clippo.data.shards import (
    ShardDataset,
    expand_urls,
    iter_tar_samples,
    sample_label,
    sample_texts,
)
from clippo.data.textpairs import (
    MixedBatchDataset,
    TextPairDataset,
    iter_text_pairs,
    split_sentences,
    write_text_pair_shards,
)
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
    "MixedBatchDataset",
    "ShardDataset",
    "TextPairDataset",
    "build_openclipart_shards",
    "clean_alt_texts",
    "expand_urls",
    "iter_tar_samples",
    "iter_text_pairs",
    "load_image",
    "open_image",
    "read_svg_metadata",
    "sample_label",
    "sample_rng",
    "sample_texts",
    "split_sentences",
    "to_rgb",
    "to_tensor",
    "write_text_pair_shards",
]

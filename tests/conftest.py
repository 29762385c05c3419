"""Shared fixtures: small real shards built once per session from Debian's openclipart."""

import pytest
import torch

from clippo.data.build.openclipart import build_openclipart_shards


@pytest.fixture(scope="session")
def openclipart_small(tmp_path_factory):
    """Shards of 240 real openclipart images (40 held out), 64 px, several shards per split."""
    out = tmp_path_factory.mktemp("openclipart_small")
    stats = build_openclipart_shards(
        out, max_examples=240, val_size=40, image_size=64, shard_size=50, workers=1
    )
    return out, stats


@pytest.fixture(scope="session")
def openclipart_tokenizer(openclipart_small, tmp_path_factory):
    """A 300-piece SentencePiece model trained on the small shards' training alt-texts."""
    from clippo.data.shards import expand_urls, iter_tar_samples, sample_texts
    from clippo.tokenizer import train_tokenizer

    out, stats = openclipart_small
    texts = [
        text
        for url in expand_urls(str(out / stats["train_pattern"]))
        for sample in iter_tar_samples(url)
        for text in sample_texts(sample)
    ]
    return train_tokenizer(texts, tmp_path_factory.mktemp("tokenizer") / "spm300.model", 300)


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for a test: the 2 cores are shared with loader workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Shared fixtures: small real shards built once per session from Debian's openclipart."""

import pytest

from clippo.data import build_openclipart_shards


@pytest.fixture(scope="session")
def openclipart_small(tmp_path_factory):
    """Shards of 240 real openclipart images (40 held out), 64 px, several shards per split."""
    out = tmp_path_factory.mktemp("openclipart_small")
    stats = build_openclipart_shards(
        out, max_examples=240, val_size=40, image_size=64, shard_size=50, workers=1
    )
    return out, stats

"""Offline data-set builders, one file per source: they read raw corpora and write the shards or
files that training and evaluation read (``clippo data ...``). Training never imports them."""

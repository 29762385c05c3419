"""LiT's pre-computed image features (LiT appendix E): time per epoch and the largest batch.

Trains a locked-image LiT model (``lit_demo`` by default; ``--set`` overrides as for
``clippo train``) over whole epochs of real shards, once computing the locked tower live and once
from the on-disk feature cache, through the same data pipeline (``ShardDataset`` /
``CachedImageShardDataset``, no DataLoader workers) and training step. Prints seconds per
epoch, the one-off cache build, and the speed-up for 1 and for N epochs (build counted once, as
the paper counts it).

Largest batch: a binary search over the batch size, each probe one training step (forward,
loss, backward, optimizer step) at that batch in a fresh process, measured by the peak resident
memory (``ru_maxrss``, Python and torch included) against ``--mem-cap-mib``. With the cache the
probe builds no image tower, as in the paper ("no image models are loaded"); without it the
locked tower runs without autograd, as in training.

    python bench/lit_cache.py                                 # builds small openclipart shards
    python bench/lit_cache.py --shards 'data/openclipart/train-*.tar' --epochs 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clippo.data import ImageTransform, ShardDataset
from clippo.data.image_cache import CachedImageShardDataset, build_image_feature_cache
from clippo.losses import ContrastiveLoss
from clippo.train.config import load_config, resolve_config
from clippo.train.optim import build_optimizer
from clippo.train.tasks import build_model


def _config(args, batch: int | None = None):
    sets = list(args.set) + ["data.workers=0", "train.precision=fp32"]
    if batch is not None:
        sets.append(f"data.batch_size={batch}")
    return load_config(resolve_config(args.config), sets)


def _optimizer(cfg, model):
    opt, _ = build_optimizer(
        model, name=cfg.optim.name, lr=cfg.optim.lr, wd=cfg.optim.wd, schedule=lambda s: 1.0
    )
    return opt


def _epoch_seconds(cfg, model, dataset) -> tuple[float, int]:
    opt, loss_fn = _optimizer(cfg, model), ContrastiveLoss()
    model.train()
    t, n = time.perf_counter(), 0
    for batch in dataset:
        zi, zt, s = model(batch["image"], batch["text_input"])
        loss, _ = loss_fn(zi, zt, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(batch["key"])
    return time.perf_counter() - t, n


def time_epochs(args, shards: str, cache_dir: Path) -> dict:
    """Seconds for one epoch live and from the cache, and for building the cache."""
    cfg = _config(args)
    torch.manual_seed(0)
    model = build_model(cfg)
    common = dict(
        batch_size=cfg.data.batch_size,
        text_transform=model.text_transform,
        train=True,
        infinite=False,
        shuffle_buffer=cfg.data.shuffle_buffer,
    )
    live, n = _epoch_seconds(
        cfg, model, ShardDataset(shards, image_transform=ImageTransform(model.image_size), **common)
    )
    t = time.perf_counter()
    cache = build_image_feature_cache(
        shards,
        cache_dir,
        model.image_features,
        tower_id=model.image_tower_id(),
        image_size=model.image_size,
        batch_size=cfg.eval.batch_size,
    )
    build = time.perf_counter() - t
    cached, _ = _epoch_seconds(cfg, model, CachedImageShardDataset(shards, cache=cache, **common))
    return {"examples": n, "live": live, "build": build, "cached": cached, "dim": cache.dim}


def probe(args) -> None:
    """One training step at ``--probe-batch`` in this process; prints the peak RSS in MiB."""
    cfg = _config(args, args.probe_batch)
    model = build_model(cfg)
    if args.cached:  # as from the cache: no image tower in memory, features as input
        model.image = None
        images = torch.randn(args.probe_batch, model.cfg.image_features)
    else:
        images = torch.rand(args.probe_batch, 3, model.image_size, model.image_size) * 2 - 1
    texts = [f"an example alt-text number {i}" for i in range(args.probe_batch)]
    text_input = torch.from_numpy(model.text_transform(texts))
    opt = _optimizer(cfg, model)
    zi, zt, s = model(images, text_input)
    loss, _ = ContrastiveLoss()(zi, zt, s)
    loss.backward()
    opt.step()
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _peak_mib(args, batch: int, cached: bool) -> float:
    cmd = [sys.executable, __file__, "--config", args.config, "--probe-batch", str(batch)]
    cmd += [a for s in args.set for a in ("--set", s)] + (["--cached"] if cached else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:  # an allocation failure counts as not fitting
        return float("inf")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def largest_batch(args, cached: bool) -> tuple[int, float]:
    """The largest batch (within a factor-of-2 bracket, then bisected to ``--resolution``)
    whose training step peaks under the memory cap, and that peak."""
    fits, peak = 0, 0.0
    batch = args.start_batch
    while batch <= args.max_batch:
        p = _peak_mib(args, batch, cached)
        if p > args.mem_cap_mib:
            break
        fits, peak, batch = batch, p, batch * 2
    lo, hi = fits, min(batch, args.max_batch + 1)
    while hi - lo > max(args.resolution, 1) and lo:
        mid = (lo + hi) // 2
        p = _peak_mib(args, mid, cached)
        if p <= args.mem_cap_mib:
            lo, peak = mid, p
        else:
            hi = mid
    return lo, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="lit_demo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--shards", help="training shards; default: build small openclipart ones")
    parser.add_argument("--examples", type=int, default=512, help="images in built shards")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the N-epoch speed-up")
    parser.add_argument("--mem-cap-mib", type=float, default=2048)
    parser.add_argument("--start-batch", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16384)
    parser.add_argument("--resolution", type=int, default=32, help="bisection stops at this gap")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cached", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe_batch:
        return probe(args)

    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards
        if shards is None:
            from clippo.data.build.openclipart import build_openclipart_shards

            stats = build_openclipart_shards(
                Path(tmp) / "shards",
                max_examples=args.examples,
                val_size=0,
                image_size=128,
                shard_size=128,
                workers=1,
            )
            shards = str(Path(tmp) / "shards" / stats["train_pattern"])
        t = time_epochs(args, shards, Path(tmp) / "cache")
    cfg = _config(args)
    n, e = t["examples"], args.epochs
    print(
        f"config {args.config} {' '.join(args.set)}: model {cfg.model.name}, "
        f"batch {cfg.data.batch_size}, {n} examples/epoch, {torch.get_num_threads()} thread(s)"
    )
    print(f"live (locked tower computed every step): {t['live']:8.2f} s/epoch")
    print(f"cache build (one pass, {t['dim']}-d features): {t['build']:8.2f} s")
    print(f"from cache:                               {t['cached']:8.2f} s/epoch")
    print(f"speed-up per epoch after the build:       {t['live'] / t['cached']:8.2f}x")
    print(
        f"speed-up over 1 epoch, build included:    {t['live'] / (t['build'] + t['cached']):8.2f}x"
    )
    total = e * t["live"] / (t["build"] + e * t["cached"])
    print(f"speed-up over {e} epochs, build included:   {total:8.2f}x")
    print(
        f"\nlargest batch with peak RSS <= {args.mem_cap_mib:.0f} MiB (one training step in a "
        f"fresh process, ru_maxrss, bisected to {args.resolution}):"
    )
    for cached in (False, True):
        batch, peak = largest_batch(args, cached)
        name = "from cache" if cached else "live"
        print(f"  {name:<10}  batch {batch:6d}  (peak {peak:7.0f} MiB)")


if __name__ == "__main__":
    main()

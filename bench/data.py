"""Data pipeline throughput: image/alt-text pairs per second that one loader worker (one CPU
core) prepares, stage by stage, on real shards; and how many workers a GPU step rate needs.

Stages per pair: read (tar members), decode (PIL, JPEG draft), augment (random resized crop +
flip at the model's size, to float tensors), render (Unifont, the alt-text to pixels). The
last line runs the real ``ShardDataset`` (all stages, shuffling, collation) in this process.

    python bench/data.py --shards '/work/main/data/openclipart/train-{000000..000001}.tar'
    python bench/data.py --size 224 --pairs 500   # CLIPPO-B/16 resolution
    python bench/data.py --size 64 --text-pairs 'data/textpairs/multi_ui1500/train-*.tar'

``--text-pairs`` adds the text-pair reader (``TextPairDataset``, both sides rendered after 0-4
leading spaces, batches of 192: the multilingual recipe's) in this process, in pairs/s.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from clippo.data import ImageTransform, ShardDataset
from clippo.data.shards import expand_urls, iter_tar_samples, sample_texts
from clippo.data.textpairs import TextPairDataset
from clippo.data.transforms import load_image
from clippo.render import UnifontRenderer


def _image_bytes(sample: dict) -> bytes | None:
    for ext in ("jpg", "jpeg", "png", "webp"):
        if ext in sample:
            return sample[ext]
    return None


def measure(shards: str, size: int, pairs: int) -> dict[str, float]:
    """Seconds per pair of each stage, over the first ``pairs`` usable samples."""
    t0 = time.perf_counter()
    samples = []
    for url in expand_urls(shards):
        for s in iter_tar_samples(url):
            if "__error__" not in s and _image_bytes(s) is not None and sample_texts(s):
                samples.append(s)
            if len(samples) == pairs:
                break
        if len(samples) == pairs:
            break
    read = (time.perf_counter() - t0) / len(samples)

    t0 = time.perf_counter()
    images = [load_image(_image_bytes(s), draft_size=size) for s in samples]
    decode = (time.perf_counter() - t0) / len(samples)

    transform = ImageTransform(size, train=True, flip=True, random_resized_crop=(0.6, 1.0))
    t0 = time.perf_counter()
    for s, image in zip(samples, images, strict=True):
        transform(image, key=s["__key__"])
    augment = (time.perf_counter() - t0) / len(samples)

    renderer = UnifontRenderer(image_size=size)
    texts = [sample_texts(s)[0] for s in samples]
    t0 = time.perf_counter()
    for text in texts:
        renderer(text)
    render = (time.perf_counter() - t0) / len(samples)
    return {"read": read, "decode": decode, "augment": augment, "render": render, "n": len(samples)}


def loader_rate(shards: str, size: int, pairs: int, batch: int = 64) -> float:
    """Pairs/s of the training reader itself (``ShardDataset``) in this one process."""
    dataset = ShardDataset(
        shards,
        batch_size=batch,
        image_transform=ImageTransform(size, train=True, flip=True, random_resized_crop=(0.6, 1.0)),
        text_transform=UnifontRenderer(image_size=size),
        train=True,
        shuffle_buffer=256,
    )
    return _rate(dataset, pairs, batch)


def text_pair_rate(shards: str, size: int, pairs: int, batch: int = 192) -> float:
    """Pairs/s of the text-pair reader (``TextPairDataset``) in this one process."""
    dataset = TextPairDataset(
        shards,
        batch_size=batch,
        text_transform=UnifontRenderer(image_size=size),
        train=True,
        shuffle_buffer=256,
        leading_spaces=4,
    )
    return _rate(dataset, pairs, batch)


def _rate(dataset, pairs: int, batch: int) -> float:
    batches = iter(dataset)
    next(batches)  # fills the shuffle buffer: not the steady state
    t0 = time.perf_counter()
    n = 0
    for b in itertools.islice(batches, max(1, pairs // batch)):
        n += len(b["key"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shards", default="/work/main/data/openclipart/train-{000000..000001}.tar")
    p.add_argument("--size", type=int, action="append", help="image side (repeatable; 64, 224)")
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument(
        "--gpu-rate", type=float, default=0.0,
        help="a GPU's training examples/s: print the loader workers it needs",
    )  # fmt: skip
    p.add_argument("--text-pairs", default="", metavar="PATTERN", help="text-pair shards")
    args = p.parse_args()
    torch.set_num_threads(1)  # a loader worker is one process on one core
    print(f"shards {args.shards}; one process, 1 thread; pairs/s per loader worker")
    columns = ("read", "decode", "augment", "render", "all", "loader")
    print(f"{'size':>5} " + " ".join(f"{c:>8}" for c in columns))
    for size in args.size or [64, 224]:
        s = measure(args.shards, size, args.pairs)
        total = s["read"] + s["decode"] + s["augment"] + s["render"]
        rates = [1 / s[k] for k in ("read", "decode", "augment", "render")] + [1 / total]
        loader = loader_rate(args.shards, size, args.pairs)
        print(f"{size:>5} " + " ".join(f"{r:>8.0f}" for r in rates) + f" {loader:>8.0f}")
        if args.text_pairs:
            print(f"      text pairs: {text_pair_rate(args.text_pairs, size, args.pairs):.0f}")
        if args.gpu_rate:
            print(f"      {args.gpu_rate:.0f} examples/s need {args.gpu_rate / loader:.1f} workers")


if __name__ == "__main__":
    main()

"""Texts per second: clippo's renderer vs the reference op, Pillow and SentencePiece.

All single-core figures are taken with the process pinned to one CPU; the DataLoader figures
then use as many cores as there are workers.

    python3 bench/render.py           # clippo, Pillow, SentencePiece, DataLoader workers
    # the reference, from the TensorFlow venv of scripts/make_render_fixtures.py:
    /tmp/renderer/venv/bin/python bench/render.py --reference-only \\
        --big-vision /work/.mirror/google-research+big_vision/repo \\
        --upper-hex /tmp/renderer/unifont_upper-15.0.01.hex
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "src"))
from make_render_fixtures import load_reference, openclipart_texts  # noqa: E402

UNIFONT_OTF = "/usr/share/fonts/opentype/unifont/unifont.otf"


def rate(fn, texts: list[str], repeats: int = 3) -> float:
    """Best-of-``repeats`` texts per second of ``fn(texts)``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def clippo_batched(renderer, batch: int):
    """Render in batches of ``batch`` (``batch == 1``: one call per text)."""

    def run(texts):
        for i in range(0, len(texts), batch):  # outputs are dropped, as a pipeline consumes them
            renderer(texts[i]) if batch == 1 else renderer(texts[i : i + batch])

    return run


def pillow_renderer(size: int = 224):
    """Draw each text with Pillow from Unifont's OTF, wrapped at 28 characters per line."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(UNIFONT_OTF, 16)
    per_line = size // 8

    def run(texts):
        for text in texts:
            img = Image.new("L", (size, size), 127)
            lines = [text[i : i + per_line] for i in range(0, len(text), per_line)][: size // 16]
            ImageDraw.Draw(img).multiline_text(
                (0, 0), "\n".join(lines), fill=0, font=font, spacing=0
            )
            np.asarray(img)

    return run


def sentencepiece_encoder(texts: list[str]):
    """Train a unigram SentencePiece model (<= 4k pieces) on ``texts``; return its encoder."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=4000,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return lambda batch: sp.encode(batch, num_threads=1)


def reference_renderer(big_vision: Path, upper_hex: Path, texts: list[str], size: int = 224):
    """The reference op over ``texts`` in a single-threaded tf.data pipeline, built once."""
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    op = load_reference(big_vision, Path("/usr/share/unifont/unifont.hex"), upper_hex)(
        image_size=size
    )

    ds = tf.data.Dataset.from_tensor_slices(texts).map(op, num_parallel_calls=1)

    def run(_):
        for _ in ds:
            pass

    return run


def dataloader_rate(renderer, texts: list[str], workers: int, batch: int = 256) -> float:
    """Texts per second through a torch DataLoader whose workers render in collate_fn."""
    import torch
    from torch.utils.data import DataLoader

    def collate(items):
        return torch.from_numpy(renderer(items))

    loader = DataLoader(
        texts,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up: start the workers
        break
    start = time.perf_counter()
    n = sum(len(b) for b in loader)
    return n / (time.perf_counter() - start)


def _render_share(texts: list[str]) -> int:
    for i in range(0, len(texts), 256):
        _FORKED_RENDERER(texts[i : i + 256])
    return len(texts)


def forked_rate(renderer, texts: list[str], processes: int) -> float:
    """Texts per second of ``processes`` forked workers rendering shares of ``texts``."""
    import multiprocessing

    global _FORKED_RENDERER
    _FORKED_RENDERER = renderer  # inherited by the forked workers with its tables
    shares = [texts[k::processes] for k in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(_render_share, [s[:256] for s in shares])  # warm-up
        start = time.perf_counter()
        n = sum(pool.map(_render_share, shares))
        return n / (time.perf_counter() - start)


_FORKED_RENDERER = None


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--big-vision", type=Path, help="big_vision checkout for the reference op")
    ap.add_argument("--upper-hex", type=Path, help="planes 1+ .hex (build_glyph_table.py)")
    ap.add_argument(
        "--reference-only",
        action="store_true",
        help="measure only the reference op (for a Python with TensorFlow)",
    )
    args = ap.parse_args()

    texts = random.Random(0).sample(openclipart_texts(), args.n)
    print(
        f"{len(texts)} openclipart alt-texts, mean {np.mean([len(t) for t in texts]):.1f} "
        f"characters; 224 px grayscale output"
    )
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cpus)})
    if args.reference_only:
        fn = reference_renderer(args.big_vision, args.upper_hex, texts[:2000])
        print(
            f"one core:\n  {'reference render_unifont (TF, tf.data)':45s} "
            f"{rate(fn, texts[:2000]):>10,.0f} texts/s"
        )
        return
    from clippo.render import UnifontRenderer

    start = time.perf_counter()
    renderer = UnifontRenderer()
    print(
        f"renderer construction (glyph table load + layout tables): "
        f"{time.perf_counter() - start:.3f} s"
    )
    rows = [(f"clippo, batches of {b}", clippo_batched(renderer, b)) for b in (256, 32, 1)]
    # A large list in one call must cost no more per text than batches of 256.
    one_call = clippo_batched(renderer, len(texts))
    rows.insert(1, (f"clippo, one call over all {len(texts)} texts", one_call))
    rows.append(("Pillow (Unifont OTF, ImageDraw)", pillow_renderer()))
    rows.append(("SentencePiece encode (unigram, <=4k vocab)", sentencepiece_encoder(texts)))
    try:
        if args.big_vision is None or args.upper_hex is None:
            raise ImportError("pass --big-vision and --upper-hex")
        rows.append(
            (
                "reference render_unifont (TF, tf.data)",
                reference_renderer(args.big_vision, args.upper_hex, texts[:2000]),
            )
        )
    except ImportError as e:
        print(
            f"reference render_unifont: not measured here (TensorFlow not installed or no "
            f"big_vision given: {e}); see --reference-only"
        )
    print("one core:")
    for name, fn in rows:
        few = texts if "reference" not in name and "Pillow" not in name else texts[:2000]
        print(f"  {name:45s} {rate(fn, few):>10,.0f} texts/s")
    os.sched_setaffinity(0, all_cpus)
    for processes in range(1, min(len(all_cpus), 2) + 1):
        print(
            f"forked processes rendering (batch 256, outputs dropped), {processes}: "
            f"{forked_rate(renderer, texts * 2, processes):>10,.0f} texts/s"
        )
    try:
        for workers in range(0, min(len(all_cpus), 2) + 1):
            print(
                f"DataLoader, {workers} worker(s), batch 256: "
                f"{dataloader_rate(renderer, texts, workers):>10,.0f} texts/s"
            )
    except ImportError:
        print("DataLoader: not measured (torch not available)")


if __name__ == "__main__":
    main()

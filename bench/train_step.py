"""Training throughput: examples/s of full training steps (forward, loss, backward, optimizer).

Uses random images and one repeated alt-text so it measures the model and optimizer, not the data
pipeline (see bench/render.py and the data pipeline figures for those).

    python bench/train_step.py                       # the demo config and B/16
    python bench/train_step.py --config demo --steps 10 --precision bf16
    python bench/train_step.py --config multilingual_cotrain_ui --set model.init=null \
        --steps 10 --profile 3                       # where a step's time goes

For CLIPPO models it also prints the model's GFLOP/s (bench/gpu_check.py's count: 6 per block
parameter and token, plus attention, for the image and the rendered text) beside a large matrix
product's on the same threads and precision: the ceiling a training step's products can reach.
"""

from __future__ import annotations

import argparse
import time

import torch
from gpu_check import flops_per_example
from torch.profiler import ProfilerActivity, profile

from clippo.losses import ContrastiveLoss
from clippo.models import CLIPPO, count_parameters
from clippo.train.config import load_config, resolve_config
from clippo.train.optim import build_optimizer
from clippo.train.tasks import build_model


def matmul_gflops(precision: str, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an ``n`` x ``n`` by ``n`` x ``n`` matrix product (after one warm-up)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def measure(
    config: str,
    overrides: list[str],
    batch: int | None,
    steps: int,
    precision: str,
    profile_steps: int = 0,
):
    """Returns (examples/s, parameters, batch, model FLOPs per example or None) over ``steps``
    timed steps after one warm-up; with ``profile_steps``, prints the operators that took the
    most time over that many more steps."""
    cfg = load_config(resolve_config(config), overrides)
    model = build_model(cfg)
    batch = batch or cfg.data.batch_size
    size = model.image_size
    opt, sched = build_optimizer(
        model,
        name=cfg.optim.name,
        lr=cfg.optim.lr,
        wd=cfg.optim.wd,
        schedule=lambda s: 1.0,
        grad_clip_norm=1.0,
    )
    loss_fn = ContrastiveLoss()
    images = torch.rand(batch, 3, size, size) * 2 - 1
    # What the model's text path reads (rendered pixels or token ids) for a typical alt-text.
    texts = model.preprocess_text(["Owl on Branch: owl, animal, bird"] * batch)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            zi, zt, s = model(images, texts)
        loss, _ = loss_fn(zi.float(), zt.float(), s.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    rate = batch * steps / (time.perf_counter() - t)
    if profile_steps:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(profile_steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    flops = flops_per_example(model, size, False) if isinstance(model, CLIPPO) else None
    return rate, count_parameters(model), batch, flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", action="append", help="config name or path (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile N more steps of each config, print the top operators")  # fmt: skip
    args = p.parse_args()
    runs = (
        [(c, args.set, args.batch, args.steps) for c in args.config]
        if args.config
        else [
            ("demo", args.set, None, args.steps),
            ("clippo_b16_yfcc", ["model.options.image_size=224"], 8, 1),
        ]
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}")
    print(f"a 4096^3 matrix product: {matmul_gflops(args.precision):.0f} GFLOP/s")
    print(f"{'config':<24} {'params':>10} {'batch':>6} {'examples/s':>11} {'model GFLOP/s':>14}")
    for config, overrides, batch, steps in runs:
        rate, n, b, flops = measure(config, overrides, batch, steps, args.precision, args.profile)
        gflops = f"{rate * flops / 1e9:.0f}" if flops else "-"
        print(f"{config:<24} {n / 1e6:>9.2f}M {b:>6} {rate:>11.1f} {gflops:>14}")


if __name__ == "__main__":
    main()

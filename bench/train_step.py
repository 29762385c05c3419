"""Training throughput: examples/s of full training steps (forward, loss, backward, optimizer).

Uses random images and one repeated alt-text so it measures the model and optimizer, not the data
pipeline (see bench/render.py and the data pipeline figures for those).

    python bench/train_step.py                       # the demo config and B/16
    python bench/train_step.py --config demo --steps 10 --precision bf16
"""

from __future__ import annotations

import argparse
import time

import torch

from clippo.losses import ContrastiveLoss
from clippo.models import count_parameters
from clippo.train.config import load_config, resolve_config
from clippo.train.optim import build_optimizer
from clippo.train.tasks import build_model


def measure(config: str, overrides: list[str], batch: int | None, steps: int, precision: str):
    """Returns (examples/s, parameters, batch) over ``steps`` timed steps after one warm-up."""
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
    return batch * steps / (time.perf_counter() - t), count_parameters(model), batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", action="append", help="config name or path (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
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
    print(f"{'config':<20} {'params':>10} {'batch':>6} {'examples/s':>11}")
    for config, overrides, batch, steps in runs:
        rate, n, b = measure(config, overrides, batch, steps, args.precision)
        print(f"{config:<20} {n / 1e6:>9.2f}M {b:>6} {rate:>11.1f}")


if __name__ == "__main__":
    main()

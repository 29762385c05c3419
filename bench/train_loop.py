"""The training loop's throughput with its data pipeline: examples/s of ``clippo train``'s engine
with DataLoader workers reading, decoding, augmenting and rendering beside the training step,
the shards streamed (``streaming``) or the data set decoded once into memory (``in_memory``,
``data.in_memory``); and of the same engine fed one real batch over and over (``no data work``:
the loop's compute-only figure, beside ``bench/train_step.py``'s on synthetic tensors).

    python bench/train_loop.py --config demo --steps 120 \\
        --shards '/work/main/data/openclipart/train-{000000..000011}.tar'
    python bench/train_step.py --config demo --precision fp32 --steps 20   # compute only

The rate is the steady state: examples over seconds of the log windows after the first
``--skip`` (worker start-up and the first shuffle buffer fill fall in those); no evaluation,
no checkpoint before the last step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.data import IterableDataset

from clippo.train.config import load_config, resolve_config
from clippo.train.engine import run
from clippo.train.tasks import ContrastiveTask

VARIANTS = {
    "no data work": ["data.workers=0"],
    "streaming": ["data.in_memory=false"],
    "in_memory": ["data.in_memory=true"],
}


class _Repeated(IterableDataset):
    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        return itertools.repeat(self.batch)


class RepeatedBatchTask(ContrastiveTask):
    """The contrastive task on the first batch of its real reader, repeated: no data work."""

    def batches(self, model, env, start_batch):
        return _Repeated(next(iter(super().batches(model, env, start_batch))))


def steady_rate(metrics: Path, batch: int, skip: int) -> float:
    """examples/s over the logged windows of ``metrics`` (metrics.jsonl) after the first
    ``skip``."""
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    steps = [0] + [r["step"] for r in rows if "train/examples_per_s" in r]
    rates = [r["train/examples_per_s"] for r in rows if "train/examples_per_s" in r]
    if len(rates) <= skip:
        raise ValueError(f"no log window after the first {skip}: raise --steps")
    examples = [(b - a) * batch for a, b in zip(steps, steps[1:], strict=False)]
    seconds = [n / rate for n, rate in zip(examples, rates, strict=True)]
    return sum(examples[skip:]) / sum(seconds[skip:])


def measure(config: str, overrides: list[str], steps: int, skip: int) -> dict[str, float]:
    """examples/s of each variant over the same ``steps``-step run."""
    out = {}
    for name, variant in VARIANTS.items():
        cfg = load_config(
            resolve_config(config),
            [
                "eval.sets={}",
                f"train.total_steps={steps}",
                "train.log_every=10",
                f"train.ckpt_every={steps}",
                "optim.schedule.warmup_steps=0",
                *overrides,
                *variant,
            ],
        )
        task = (RepeatedBatchTask if name == "no data work" else ContrastiveTask)(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            run(task, cfg, tmp)
            out[name] = steady_rate(Path(tmp) / "metrics.jsonl", cfg.data.batch_size, skip)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="demo")
    p.add_argument("--shards", required=True, help="data.train: the training shards")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--skip", type=int, default=2, help="log windows (10 steps) left out")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    overrides = [f"data.train={args.shards}", f"train.precision={args.precision}", *args.set]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}")
    rates = measure(args.config, overrides, args.steps, args.skip)
    base = rates["no data work"]
    print(f"{'data':<13} {'examples/s':>11} {'of no data work':>16}")
    for name, rate in rates.items():
        print(f"{name:<13} {rate:>11.1f} {rate / base:>15.1%}")


if __name__ == "__main__":
    main()

"""Where a fused-VQA fine-tuning step spends its time: the data side (reading the shards, drawing
each question above its image) and the training step (forward, sigmoid loss, backward, SGD with
clipping), measured apart on real easy-vqa batches (docs/results.md, VQA runs (e)-(i)).

    clippo data vqa --source easy-vqa --out data/easy_vqa --min-count 1
    python bench/vqa_step.py --data data/easy_vqa --model runs/demo/model --image-size 112
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from clippo.train.config import load_config, resolve_config
from clippo.train.distributed import DistEnv
from clippo.train.optim import optimizer_from_config
from clippo.train.tasks import VQATask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="a folder of `clippo data vqa`")
    p.add_argument("--model", required=True, help="a clippo model directory or a model name")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="timed batches (after one warm-up)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_key = "model.init" if "/" in args.model else "model.name"
    cfg = load_config(
        resolve_config("vqa_fused"),
        [
            f"finetune.data={args.data}",
            f"{model_key}={args.model}",
            f"finetune.image_size={args.image_size}",
            f"data.batch_size={args.batch}",
        ],
    )
    task = VQATask(cfg)
    model = task.build_model()
    batches = iter(task.batches(model, DistEnv(), 0))
    next(batches)  # fills the shuffle buffer
    start = time.perf_counter()
    held = [next(batches) for _ in range(args.batches + 1)]
    data_s = (time.perf_counter() - start) / len(held)

    opt, _ = optimizer_from_config(model, cfg.optim, lambda s: 1.0)  # as training builds it

    def step(batch: dict) -> None:
        out = task.loss(model, batch, torch.device("cpu"), nullcontext)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    step(held[0])  # warm-up
    start = time.perf_counter()
    for batch in held[1:]:
        step(batch)
    step_s = (time.perf_counter() - start) / args.batches
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, batch {args.batch}")
    print(f"canvas {model.image_size} px, {model.tower.cfg.to_dict()['depth']}-layer tower")
    print(f"data side      {data_s:.3f} s/batch  (one process, steady state)")
    print(f"training step  {step_s:.3f} s/step   (batches pre-read)")
    print(f"steps in 20 minutes at these rates, data beside: {1200 / (step_s + data_s):.0f}")


if __name__ == "__main__":
    main()

"""What ``bench/gpu.sh`` runs: correctness and speed of training steps on one device.

Writes ``gpu_check.json`` and ``gpu_check.md`` into the output folder. See ``bench/gpu.sh``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from clippo.factory import create_model
from clippo.losses import ContrastiveLoss
from clippo.models import count_parameters
from clippo.train.distributed import shard_model
from clippo.train.optim import build_optimizer

H200_BF16_FLOPS = 989e12  # dense bf16 peak (NVIDIA's H100/H200 SXM figure, no sparsity)


def _setup(tiny: bool, cpu: bool) -> dict:
    if tiny:
        return dict(name="clippo-mu/16", options={"image_size": 32, "out_dim": 16},
                    batches=[8, 16], steps=3, size=32)  # fmt: skip
    return dict(name="clippo-B/16", options={"image_size": 224, "pool_type": "map"},
                batches=[256, 512, 1024], steps=10, size=224)  # fmt: skip


def _group() -> None:
    """A one-process group, so DDP and FSDP2 run as they would on 8 devices (minus traffic)."""
    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)


def _inputs(model, batch: int, size: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    words = ["owl", "branch", "red", "car", "tree", "bird", "house", "blue", "cat", "sun"]
    idx = torch.randint(0, len(words), (batch, 4), generator=g).tolist()
    texts = model.preprocess_text([" ".join(words[i] for i in row) for row in idx])
    return images.to(device), texts.to(device)


def flops_per_example(model, size: int, checkpointing: bool) -> float:
    """Model FLOPs of one training example (image + text through the ViT): 6 per parameter and
    token in the blocks, plus attention's two matmuls; x4/3 with recomputed activations."""
    vit = model.image
    tokens = (size // vit.cfg.patch_size) ** 2
    d, depth = vit.cfg.width, vit.cfg.depth
    block_params = sum(p.numel() for p in vit.blocks.parameters())
    forward = 2 * block_params * tokens + depth * 4 * tokens * tokens * d
    per_pass = 3 * forward * (4 / 3 if checkpointing else 1)
    return 2 * per_pass  # the image and the rendered text


def _peak_memory(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS


def _train_setup(setup, device, *, checkpointing=False, wrap="none", compiled=False):
    torch.manual_seed(0)
    opts = {**setup["options"], "grad_checkpointing": checkpointing}
    model = create_model(setup["name"], **opts).to(device)
    forward = model
    if wrap == "ddp":
        _group()
        ids = [device] if device.type == "cuda" else None
        forward = DistributedDataParallel(model, device_ids=ids)
    elif wrap == "fsdp":
        _group()
        shard_model(model, torch.bfloat16 if device.type == "cuda" else None)
        forward = model
    if compiled:
        forward = torch.compile(forward, dynamic=False)
    opt, sched = _adamw(model)
    return model, forward, opt, sched


def _adamw(model):
    # AdamW through torch's fused kernel: one launch per parameter group, as a GPU run should
    # (open_clip's torch AdamW launches multi-tensor kernels too).
    return build_optimizer(
        model, name="adamw", lr=1e-3, wd=1e-4, schedule=lambda s: 1.0, fused=True
    )


def _step_fn(forward, opt, sched, images, texts, device, bf16: bool):
    loss_fn = ContrastiveLoss()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )

    def step() -> float:
        with autocast:
            zi, zt, s = forward(images, texts)
        loss, _ = loss_fn(zi.float(), zt.float(), s.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.detach()

    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_forward(setup, device) -> dict:
    """The device's forward against the CPU's (bf16 autocast on the device, fp32 on the CPU);
    with --cpu, CPU bf16 autocast against CPU fp32."""
    torch.manual_seed(0)
    model = create_model(setup["name"], **setup["options"]).eval()
    images, texts = _inputs(model, 4, setup["size"], "cpu")
    with torch.no_grad():
        ref_i, ref_t, _ = model(images, texts)
        m = model.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            zi, zt, _ = m(images.to(device), texts.to(device))
    cos = torch.nn.functional.cosine_similarity
    pairs = ((zi.float().cpu(), ref_i), (zt.float().cpu(), ref_t))
    worst = min(cos(a, b).min().item() for a, b in pairs)
    err = max((a - b).abs().max().item() for a, b in pairs)
    return {"min_cosine": worst, "max_abs_diff": err, "ok": worst > 0.99}


def check_training(setup, device, bf16) -> dict:
    """20 steps on one fixed batch lower the loss."""
    model, forward, opt, sched = _train_setup(setup, device)
    images, texts = _inputs(model, setup["batches"][0], setup["size"], device)
    step = _step_fn(forward, opt, sched, images, texts, device, bf16)
    losses = [float(step()) for _ in range(20)]
    return {"first": losses[0], "last": losses[-1], "ok": losses[-1] < losses[0]}


def _examples_per_s(step, steps: int, batch: int, device) -> float:
    """Training examples per second over ``steps`` timed steps, after two warm-up steps (and
    compilation)."""
    for _ in range(2):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def measure(setup, device, batch, bf16, **kw) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model, forward, opt, sched = _train_setup(setup, device, **kw)
    images, texts = _inputs(model, batch, setup["size"], device)
    step = _step_fn(forward, opt, sched, images, texts, device, bf16)
    rate = _examples_per_s(step, setup["steps"], batch, device)
    out = {"examples_per_s": rate, "peak_memory_gib": _peak_memory(device)}
    if device.type == "cuda":
        flops = flops_per_example(model, setup["size"], kw.get("checkpointing", False))
        out["mfu"] = rate * flops / H200_BF16_FLOPS
    return out


class _HFCLIP(torch.nn.Module):
    """Hugging Face's ``CLIPModel`` behind clippo's ``forward(images, tokens) -> (zimg, ztxt,
    scale)``, so the same step (and loss) times it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, tokens):
        out = self.model(input_ids=tokens, pixel_values=images)
        zi = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        zt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        return zi, zt, self.model.logit_scale.exp()


def _other_model(name: str, setup: dict):
    """``(model, text length, vocabulary)`` of open_clip's ViT-B-16 or Hugging Face's CLIP at
    clippo's size (random weights: nothing is downloaded); tiny versions with ``--tiny``."""
    tiny = setup["size"] != 224
    if name == "open_clip":
        import open_clip

        if tiny:
            raise RuntimeError("open_clip has no tiny ViT preset; run without --tiny")
        return open_clip.create_model("ViT-B-16", pretrained=None), 77, 49408
    import transformers

    size = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(image_size=setup["size"], patch_size=16, **({} if not tiny else size))
    if not tiny:  # ViT-B/16 for images, CLIP's 12-layer 512-wide text transformer
        vision |= dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12)  # fmt: skip
    text = dict(max_position_embeddings=16, vocab_size=1000, **size) if tiny else {}
    config = transformers.CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=16 if tiny else 512
    )
    model = transformers.CLIPModel(config)
    return _HFCLIP(model), text.get("max_position_embeddings", 77), config.text_config.vocab_size


def measure_other(name: str, setup: dict, device, batch: int, bf16: bool) -> dict:
    """Examples/s and peak memory of another library's CLIP, timed exactly like clippo's."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model, length, vocab = _other_model(name, setup)
    model = model.to(device)
    images = (torch.rand(batch, 3, setup["size"], setup["size"]) * 2 - 1).to(device)
    tokens = torch.randint(1, vocab, (batch, length)).to(device)
    opt, sched = _adamw(model)
    step = _step_fn(model, opt, sched, images, tokens, device, bf16)
    rate = _examples_per_s(step, setup["steps"], batch, device)
    return {"examples_per_s": rate, "peak_memory_gib": _peak_memory(device)}


def _other_libraries(setup, device, bf16, start, budget_s) -> dict:
    """open_clip's and Hugging Face's CLIP at clippo's first batch size, or why not."""
    found = {}
    batch = setup["batches"][0]
    for name, module in (("open_clip", "open_clip"), ("hf_clip", "transformers")):
        try:
            __import__(module)
        except Exception as e:  # open_clip fails on a torchvision that cannot load its ops
            found[name] = f"unavailable ({type(e).__name__}: {str(e)[:80]})"
            continue
        if time.perf_counter() - start > budget_s:
            found[name] = "skipped (time budget)"
            continue
        try:
            r = measure_other(name, setup, device, batch, bf16)
            found[name] = (
                f"batch {batch}: {r['examples_per_s']:.1f} examples/s, "
                f"peak {r['peak_memory_gib']:.2f} GiB"
            )
        except Exception as e:
            found[name] = f"failed: {type(e).__name__}: {str(e)[:160]}"
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--cpu", action="store_true", help="run on the CPU (no GPU needed)")
    p.add_argument("--tiny", action="store_true", help="a tiny model and batches: seconds")
    p.add_argument("--budget-s", type=float, default=420.0)
    args = p.parse_args()
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if args.tiny and device.type == "cpu":
        # A tiny model gains nothing from threads, and spinning threads on busy cores stall.
        torch.set_num_threads(1)
    setup = _setup(args.tiny, args.cpu)
    bf16 = device.type == "cuda"
    start = time.perf_counter()
    report = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": setup["name"],
        "options": setup["options"],
        "precision": "bf16 autocast" if bf16 else "fp32",
    }
    report["parameters"] = count_parameters(create_model(setup["name"], **setup["options"]))
    report["forward_vs_cpu"] = check_forward(setup, device)
    report["train_20_steps"] = check_training(setup, device, bf16)
    plan = []
    for batch in setup["batches"]:
        plan += [dict(batch=batch), dict(batch=batch, checkpointing=True)]
    first = setup["batches"][0]
    plan += [dict(batch=first, compiled=True), dict(batch=first, wrap="ddp"),
             dict(batch=first, wrap="fsdp")]  # fmt: skip
    rows = []
    for run in plan:
        row = {
            "batch": run["batch"],
            "compiled": run.get("compiled", False),
            "checkpointing": run.get("checkpointing", False),
            "wrap": run.get("wrap", "none"),
        }
        if time.perf_counter() - start > args.budget_s:
            row["status"] = "skipped (time budget)"
        elif row["compiled"] and args.tiny and device.type == "cpu":
            # Inductor's C++ build alone takes about a minute on 2 cores; tests/test_scale.py
            # checks that compiled training equals eager.
            row["status"] = "skipped (--cpu --tiny: compilation takes ~1 min here)"
        else:
            try:
                kw = {k: v for k, v in run.items() if k != "batch"}
                row |= measure(setup, device, run["batch"], bf16, **kw)
                row["status"] = "ok"
            except torch.OutOfMemoryError:
                row["status"] = "out of memory"
            except Exception as e:  # reported, not fatal: the other rows still count
                row["status"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
    report["throughput"] = rows
    report["other_libraries"] = _other_libraries(setup, device, bf16, start, args.budget_s)
    report["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(_markdown(report))
    print(_markdown(report))
    if dist.is_initialized():
        dist.destroy_process_group()


def _markdown(r: dict) -> str:
    f, t = r["forward_vs_cpu"], r["train_20_steps"]
    lines = [
        f"{r['date']}, {r['device']}, torch {r['torch']}, {r['model']} {r['options']}, "
        f"{r['parameters'] / 1e6:.2f}M parameters, {r['precision']}",
        "",
        f"- forward vs CPU: min cosine {f['min_cosine']:.5f}, max |diff| {f['max_abs_diff']:.2e} "
        f"({'ok' if f['ok'] else 'FAIL'})",
        f"- 20 steps: loss {t['first']:.3f} -> {t['last']:.3f} ({'ok' if t['ok'] else 'FAIL'})",
        *(f"- {k}: {v}" for k, v in r["other_libraries"].items()),
        "",
        "| batch | wrap | compiled | act. ckpt | examples/s | peak mem (GiB) | MFU | status |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in r["throughput"]:
        rate = f"{row['examples_per_s']:.1f}" if "examples_per_s" in row else ""
        mem = f"{row['peak_memory_gib']:.2f}" if "peak_memory_gib" in row else ""
        mfu = f"{100 * row['mfu']:.1f}%" if "mfu" in row else "n/a"
        lines.append(
            f"| {row['batch']} | {row['wrap']} | {row['compiled']} | {row['checkpointing']} | "
            f"{rate} | {mem} | {mfu} | {row['status']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

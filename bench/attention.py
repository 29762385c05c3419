"""Attention kernels on this machine: ms per forward+backward for ViT-shaped inputs.

Why ``clippo.models.vit.attend`` bypasses ``scaled_dot_product_attention`` for bfloat16 on CPU.

    python bench/attention.py                       # demo shape: 512 x 3 heads x 49 tokens x 64
    python bench/attention.py --batch 64 --heads 12 --tokens 197
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from clippo.models.vit import attend


def sdpa_math(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


def timed(fn, shape, dtype, reps: int) -> float:
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    fn(q, k, v).sum().backward()
    t = time.perf_counter()
    for _ in range(reps):
        fn(q, k, v).sum().backward()
    return (time.perf_counter() - t) / reps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--tokens", type=int, default=49)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    shape = (a.batch, a.heads, a.tokens, a.head_dim)
    fns = {
        "sdpa (default)": F.scaled_dot_product_attention,
        "sdpa math": sdpa_math,
        "clippo attend": attend,
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {shape}")
    print(f"{'kernel':<16} {'fp32 ms':>9} {'bf16 ms':>9}")
    for name, fn in fns.items():
        ms = [timed(fn, shape, dt, a.reps) for dt in (torch.float32, torch.bfloat16)]
        print(f"{name:<16} {ms[0]:>9.1f} {ms[1]:>9.1f}")


if __name__ == "__main__":
    main()

"""CLIP's symmetric contrastive loss, over the global batch when training on several processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _AllGather(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own slice, summed over
    ranks, so every rank's parameters see the gradient of the global loss."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates ``x`` from every rank (rank order), differentiably; identity on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGather.apply(x)


def contrastive_loss(
    zimg: torch.Tensor, ztxt: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over pairs of 0.5 * (NLL image->text + NLL text->image) of the scaled cosine logits.

    Inputs are L2-normalised embeddings of matching pairs (row i of each). Returns the loss and
    diagnostics (``accuracy``: fraction of images whose own text scores highest).
    """
    if zimg.shape != ztxt.shape or zimg.ndim != 2:
        raise ValueError(
            f"image and text embeddings must both be (N, D); got {tuple(zimg.shape)} "
            f"and {tuple(ztxt.shape)}"
        )
    logits = (zimg @ ztxt.T) * logit_scale
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == target).float().mean()
    return loss, {"accuracy": accuracy}


class ContrastiveLoss(nn.Module):
    """The CLIP loss over the global batch: gathers both embeddings from every rank, with
    gradients, then applies ``contrastive_loss`` (LiT appendix D: global beats per-device)."""

    def forward(
        self, zimg: torch.Tensor, ztxt: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return contrastive_loss(gather_with_grad(zimg), gather_with_grad(ztxt), logit_scale)

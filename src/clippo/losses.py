"""Contrastive losses, over the global batch when training on several processes.

``softmax``: CLIP's symmetric cross-entropy over the scaled cosine logits. ``sigmoid``: SigLIP's
pairwise binary loss (big_vision's ``siglip`` trainer), with a learned bias. On several
processes both see every rank's embeddings through a differentiable all-gather; with
``local=True`` (open_clip's ``local_loss``) each rank computes only its own rows of the global
logit matrix against all gathered columns, which has the same gradient (after DDP averages
it) at 1/world the logit memory and compute. The sigmoid loss always works that way, as
big_vision's does per device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

LOSSES = ("softmax", "sigmoid")


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
        # all_reduce + slice, not reduce_scatter: gloo has no reduce_scatter.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def _world() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenates ``x`` from every rank (rank order), differentiably; identity on one process."""
    if _world()[1] == 1:
        return x
    return _AllGather.apply(x)


def _check_pairs(zimg: torch.Tensor, ztxt: torch.Tensor) -> None:
    if zimg.shape != ztxt.shape or zimg.ndim != 2:
        raise ValueError(
            f"image and text embeddings must both be (N, D); got {tuple(zimg.shape)} "
            f"and {tuple(ztxt.shape)}"
        )


def contrastive_loss(
    zimg: torch.Tensor, ztxt: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over pairs of 0.5 * (NLL image->text + NLL text->image) of the scaled cosine logits.

    Inputs are L2-normalised embeddings of matching pairs (row i of each). Returns the loss and
    diagnostics (``accuracy``: fraction of images whose own text scores highest).
    """
    _check_pairs(zimg, ztxt)
    logits = (zimg @ ztxt.T) * logit_scale
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == target).float().mean()
    return loss, {"accuracy": accuracy}


def local_contrastive_loss(
    zimg: torch.Tensor,
    ztxt: torch.Tensor,
    zimg_all: torch.Tensor,
    ztxt_all: torch.Tensor,
    logit_scale: torch.Tensor,
    offset: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The softmax loss of this rank's pairs (rows ``offset..offset+n`` of the global matrix)
    against every column: the mean over ranks equals ``contrastive_loss`` on the whole batch."""
    _check_pairs(zimg, ztxt)
    target = torch.arange(zimg.shape[0], device=zimg.device) + offset
    logits_img = (zimg @ ztxt_all.T) * logit_scale
    logits_txt = (ztxt @ zimg_all.T) * logit_scale
    loss = 0.5 * (F.cross_entropy(logits_img, target) + F.cross_entropy(logits_txt, target))
    with torch.no_grad():
        accuracy = (logits_img.argmax(dim=1) == target).float().mean()
    return loss, {"accuracy": accuracy}


def sigmoid_loss(
    zimg: torch.Tensor,
    ztxt_all: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    offset: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SigLIP: ``-sum_j log sigmoid(y_ij (s * zimg_i . ztxt_j + b))`` averaged over this rank's
    rows i, with ``y_ij`` +1 for the matching text (column ``offset + i``) and -1 otherwise.

    ``ztxt_all`` holds every rank's texts; with one process and ``offset`` 0 it is big_vision's
    per-device formula. Returns the loss and ``accuracy`` (own text scores highest).
    """
    if zimg.ndim != 2 or ztxt_all.ndim != 2 or zimg.shape[1] != ztxt_all.shape[1]:
        raise ValueError(
            f"embeddings must be (n, D) and (N, D); got {tuple(zimg.shape)} and "
            f"{tuple(ztxt_all.shape)}"
        )
    n = zimg.shape[0]
    logits = (zimg @ ztxt_all.T) * logit_scale + logit_bias
    target = torch.arange(n, device=zimg.device) + offset
    labels = -torch.ones_like(logits)
    labels[torch.arange(n, device=zimg.device), target] = 1.0
    loss = -F.logsigmoid(labels * logits).sum() / n
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == target).float().mean()
    return loss, {"accuracy": accuracy}


class ContrastiveLoss(nn.Module):
    """The contrastive loss over the global batch (LiT appendix D: global beats per-device).

    ``kind``: ``softmax`` (CLIP) or ``sigmoid`` (SigLIP, needs ``logit_bias``). ``local``: for
    softmax, each rank computes only its rows of the global logit matrix (same gradient).
    Every rank must hold the same number of pairs.
    """

    def __init__(self, kind: str = "softmax", local: bool = False):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; valid: {', '.join(LOSSES)}")
        self.kind, self.local = kind, local

    def forward(
        self,
        zimg: torch.Tensor,
        ztxt: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rank, world = _world()
        offset = rank * zimg.shape[0]
        if self.kind == "sigmoid":
            if logit_bias is None:
                raise ValueError("the sigmoid loss needs the model's learned logit bias")
            _check_pairs(zimg, ztxt)
            return sigmoid_loss(zimg, gather_with_grad(ztxt), logit_scale, logit_bias, offset)
        zimg_all, ztxt_all = gather_with_grad(zimg), gather_with_grad(ztxt)
        if not self.local or world == 1:
            return contrastive_loss(zimg_all, ztxt_all, logit_scale)
        return local_contrastive_loss(zimg, ztxt, zimg_all, ztxt_all, logit_scale, offset)

"""big_vision's text transformer (``models/proj/image_text/text_transformer.py``) in PyTorch.

Token embedding plus a learned position embedding, the ViT's pre-LN encoder blocks and final
LayerNorm, a pooling step (``last`` by default: with sticky-EOS tokenization the last position
always holds EOS), and a linear head. No causal mask, as in big_vision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from clippo.models.vit import (
    LN_EPS,
    VARIANTS,
    EncoderBlock,
    MAPHead,
    _lecun_normal_,
    run_blocks,
)

TEXT_POOL_TYPES = ("last", "first", "gap", "max", "map")


@dataclass
class TextTransformerConfig:
    """Hyper-parameters of the text tower; ``from_variant("B")`` fills the size fields."""

    width: int = 768
    depth: int = 12
    mlp_dim: int = 3072
    num_heads: int = 12
    vocab_size: int = 32_000
    max_len: int = 196  # the CLIPPO paper's text length, in tokens here
    pool_type: str = "last"
    num_classes: int = 0  # 0: no head
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.pool_type not in TEXT_POOL_TYPES:
            raise ValueError(
                f"text pool_type must be one of {TEXT_POOL_TYPES}, got {self.pool_type!r}"
            )
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> TextTransformerConfig:
        """Config for a ViT size name (``"B"``; a ``/16`` patch suffix is ignored)."""
        name = variant.partition("/")[0]
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        width, depth, mlp_dim, heads = VARIANTS[name]
        kw = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads)
        return cls(**{**kw, **overrides})

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


def make_token_embed(vocab_size: int, width: int) -> nn.Embedding:
    """Token embedding with flax ``nn.Embed``'s init: truncated normal, variance 1/width."""
    embed = nn.Embedding(vocab_size, width)
    _lecun_normal_(embed.weight, width)
    return embed


def make_text_pos_embed(max_len: int, width: int) -> nn.Parameter:
    """Learned position embedding, normal with std 1/sqrt(width) as in big_vision."""
    return nn.Parameter(torch.randn(1, max_len, width) / math.sqrt(width))


def check_tokens(tokens: torch.Tensor, max_len: int) -> None:
    """Raises ValueError unless ``tokens`` is an integer ``(N, max_len)`` tensor."""
    if tokens.ndim != 2 or tokens.shape[1] != max_len or tokens.is_floating_point():
        raise ValueError(
            f"expected integer token ids (N, {max_len}), got {tokens.dtype} {tuple(tokens.shape)}"
        )


class TextTransformer(nn.Module):
    """Token ids ``(N, max_len)`` -> ``(N, num_classes or width)``."""

    def __init__(self, cfg: TextTransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.token_embed = make_token_embed(cfg.vocab_size, d)
        self.pos_embed = make_text_pos_embed(cfg.max_len, d)
        self.blocks = nn.ModuleList(
            EncoderBlock(d, cfg.mlp_dim, cfg.num_heads) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.map_head = MAPHead(d, cfg.mlp_dim, cfg.num_heads) if cfg.pool_type == "map" else None
        self.head = None
        if cfg.num_classes:
            # flax nn.Dense defaults: LeCun-normal kernel, zero bias.
            self.head = nn.Linear(d, cfg.num_classes)
            _lecun_normal_(self.head.weight, d)
            nn.init.zeros_(self.head.bias)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids -> the output tokens after the final norm, before pooling ``(N, L, width)``."""
        cfg = self.cfg
        check_tokens(tokens, cfg.max_len)
        x = self.token_embed(tokens.long()) + self.pos_embed
        return self.norm(run_blocks(self.blocks, x, cfg.grad_checkpointing and self.training))

    def forward_features(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``encoded`` (N, L, width), ``pre_logits`` (pooled) and ``logits``."""
        cfg = self.cfg
        x = self.encode_tokens(tokens)
        out = {"encoded": x}
        if cfg.pool_type == "last":
            pooled = x[:, -1]
        elif cfg.pool_type == "first":
            pooled = x[:, 0]
        elif cfg.pool_type == "gap":
            pooled = x.mean(dim=1)
        elif cfg.pool_type == "max":
            pooled = x.amax(dim=1)
        else:
            pooled = self.map_head(x)
        out["pre_logits"] = pooled
        if self.head is not None:
            out["logits"] = self.head(pooled)
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.forward_features(tokens)
        return out.get("logits", out["pre_logits"])

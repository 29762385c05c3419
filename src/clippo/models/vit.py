"""The one Vision Transformer: big_vision's ViT (pre-LN, learned or sin-cos posemb, MAP/GAP/token
pooling, optional pre-logits and a linear head), written for PyTorch.

Module layout follows big_vision so checkpoints map one-to-one (see ``clippo.convert``); numerics
follow it too: LayerNorm eps 1e-6, tanh-approximated GELU, Xavier-uniform kernels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clippo.models.io import PretrainedModel, register

# Width, depth, MLP size and heads per variant name (big_vision's table, "Scaling ViTs" Table 2).
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
}
POOL_TYPES = ("map", "gap", "tok")
POSEMB_TYPES = ("learn", "sincos2d")
LN_EPS = 1e-6


@dataclass
class ViTConfig:
    """Hyper-parameters of one ViT; ``ViTConfig.from_variant("B/16")`` fills the size fields."""

    width: int = 768
    depth: int = 12
    mlp_dim: int = 3072
    num_heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    posemb: str = "learn"
    pool_type: str = "map"
    num_classes: int = 0  # 0: no head; CLIPPO uses the head as the embedding projection.
    rep_size: int = 0  # 0: no pre-logits layer.
    head_zeroinit: bool = False
    in_channels: int = 3
    grad_checkpointing: bool = False
    extra: dict = field(default_factory=dict)  # unused keys kept for forward compatibility

    def __post_init__(self) -> None:
        if self.pool_type not in POOL_TYPES:
            raise ValueError(f"pool_type must be one of {POOL_TYPES}, got {self.pool_type!r}")
        if self.posemb not in POSEMB_TYPES:
            raise ValueError(f"posemb must be one of {POSEMB_TYPES}, got {self.posemb!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> ViTConfig:
        """Config for a variant name like ``"B/16"`` (size ``B``, 16x16 patches)."""
        name, _, patch = variant.partition("/")
        if name not in VARIANTS:
            raise ValueError(f"unknown ViT variant {name!r}; known: {', '.join(VARIANTS)}")
        width, depth, mlp_dim, heads = VARIANTS[name]
        kw = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads)
        if patch:
            kw["patch_size"] = int(patch)
        return cls(**{**kw, **overrides})

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MoCo v3 layout), shape (1, h*w, width)."""
    if width % 4:
        raise ValueError(f"sincos2d position embedding needs width divisible by 4, got {width}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = torch.arange(width // 4, dtype=torch.float64) / (width // 4 - 1)
    omega = 1.0 / temperature**omega
    y = y.flatten()[:, None].double() * omega[None]
    x = x.flatten()[:, None].double() * omega[None]
    pe = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    return pe.float()[None]


def _lecun_normal_(weight: torch.Tensor, fan_in: int) -> None:
    # flax's LeCun normal: truncated at two standard deviations, rescaled to keep variance 1/fan_in.
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def _xavier_linear(in_dim: int, out_dim: int) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(layer.weight)
    return layer


def make_patch_embed(cfg: ViTConfig) -> nn.Conv2d:
    """The patch embedding: a stride-``patch_size`` convolution, LeCun-normal kernel."""
    conv = nn.Conv2d(cfg.in_channels, cfg.width, cfg.patch_size, stride=cfg.patch_size)
    _lecun_normal_(conv.weight, cfg.in_channels * cfg.patch_size**2)
    nn.init.zeros_(conv.bias)
    return conv


def make_head(cfg: ViTConfig) -> nn.Linear:
    """The output head mapping the pooled representation to ``num_classes``."""
    rep = cfg.rep_size or cfg.width
    head = nn.Linear(rep, cfg.num_classes)
    if cfg.head_zeroinit:
        nn.init.zeros_(head.weight)
    else:
        _lecun_normal_(head.weight, rep)
    nn.init.zeros_(head.bias)
    return head


class MlpBlock(nn.Module):
    """Dense -> GELU(tanh) -> Dense."""

    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.fc1 = _xavier_linear(width, mlp_dim)
        self.fc2 = _xavier_linear(mlp_dim, width)
        for b in (self.fc1.bias, self.fc2.bias):
            nn.init.normal_(b, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Attention(nn.Module):
    """Multi-head dot-product attention with separate q/k/v/out projections (flax's layout)."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.query, self.key, self.value, self.out = (
            _xavier_linear(width, width) for _ in range(4)
        )
        for layer in (self.query, self.key, self.value, self.out):
            nn.init.zeros_(layer.bias)
        # flax stores these kernels per head; Adafactor factors its second moments on that shape.
        head_dim = width // num_heads
        for layer in (self.query, self.key, self.value):
            layer.weight.adafactor_shape = (num_heads, head_dim, width)
        self.out.weight.adafactor_shape = (width, num_heads, head_dim)

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        n, lq, d = q_in.shape
        h = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, -1, h, d // h).transpose(1, 2)

        q, k, v = heads(self.query(q_in)), heads(self.key(kv_in)), heads(self.value(kv_in))
        return self.out(attend(q, k, v).transpose(1, 2).reshape(n, lq, d))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (N, heads, L, d) tensors.

    ``scaled_dot_product_attention`` everywhere except bfloat16 on CPU, where PyTorch's fused
    CPU kernels are 2-5x slower than three plain ops for ViT-length sequences
    (bench/attention.py); that path keeps the softmax in float32, as the fused kernels do.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v)
    logits = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    return logits.softmax(-1).to(v.dtype) @ v


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = MlpBlock(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y)
        return x + self.mlp(self.norm2(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, grad_checkpointing: bool) -> torch.Tensor:
    """Applies the encoder blocks in order, recomputing activations in backward if asked."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if grad_checkpointing else block(x)
    return x


class MAPHead(nn.Module):
    """Multihead attention pooling: a learned probe attends over the tokens, then LN + MLP."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, width))
        # flax's xavier on a (1, 1, d) tensor: fan_in 1, fan_out d.
        bound = math.sqrt(6.0 / (1 + width))
        nn.init.uniform_(self.probe, -bound, bound)
        self.attn = Attention(width, num_heads)
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = MlpBlock(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)
        y = self.attn(probe, x)
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


@register("vit")
class ViT(PretrainedModel):
    """Vision Transformer returning the pooled (and projected) representation.

    ``forward(x)`` takes float images ``(N, C, H, W)`` and returns ``(N, num_classes or width)``;
    ``forward_features`` also returns the intermediate outputs big_vision exposes.
    """

    def config_dict(self) -> dict:
        """``{"model_type": "vit", "vit": ...}``: the ViT's settings, nested."""
        return {"model_type": "vit", "vit": self.cfg.to_dict()}

    @classmethod
    def from_config(cls, config: dict, directory=None) -> ViT:
        """A random-weight ViT from ``config_dict()``'s dict."""
        return cls(ViTConfig(**config["vit"]))

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.patch_embed = make_patch_embed(cfg)
        n_patches = cfg.grid**2
        if cfg.posemb == "learn":
            self.pos_embed = nn.Parameter(torch.randn(1, n_patches, d) / math.sqrt(d))
        else:
            self.register_buffer(
                "pos_embed", posemb_sincos_2d(cfg.grid, cfg.grid, d), persistent=False
            )
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if cfg.pool_type == "tok" else None
        self.blocks = nn.ModuleList(
            EncoderBlock(d, cfg.mlp_dim, cfg.num_heads) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.map_head = MAPHead(d, cfg.mlp_dim, cfg.num_heads) if cfg.pool_type == "map" else None
        self.pre_logits = nn.Linear(d, cfg.rep_size) if cfg.rep_size else None
        self.head = make_head(cfg) if cfg.num_classes else None

    def forward_features(
        self, x: torch.Tensor, patch_embed: nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """Runs the ViT; returns ``encoded``, ``head_input``, ``pre_logits`` and ``logits``.

        ``patch_embed`` replaces the tower's own stem (CLIPPO's untied-embedding ablation).
        """
        return self.forward_embedded(self.embed_patches(x, patch_embed))

    def embed_patches(self, x: torch.Tensor, patch_embed: nn.Module | None = None) -> torch.Tensor:
        """Images ``(N, C, S, S)`` -> patch embeddings plus position embedding ``(N, L, width)``,
        in raster order (row by row)."""
        cfg = self.cfg
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"expected images (N, {cfg.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[-2:] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"expected {cfg.image_size}x{cfg.image_size} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize them or resample the position embedding"
            )
        x = (patch_embed or self.patch_embed)(x).flatten(2).transpose(1, 2)
        return x + self.pos_embed.to(x.dtype)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        # The class token (pool type "tok") first, then the blocks and the final norm.
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        grad_checkpointing = self.cfg.grad_checkpointing and self.training
        return self.norm(run_blocks(self.blocks, x, grad_checkpointing))

    def encode_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens ``(N, L, width)`` -> the encoder's output tokens ``(N, L, width)``
        after the final norm, before pooling (no class token): grid features (CLIP-ViL)."""
        x = self._encode(x)
        return x[:, 1:] if self.cls is not None else x

    def tokens(self, x: torch.Tensor, patch_embed: nn.Module | None = None) -> torch.Tensor:
        """Images -> their patch tokens after the last block and the final norm, before
        pooling: ``(N, grid**2, width)`` in raster order."""
        return self.encode_tokens(self.embed_patches(x, patch_embed))

    def forward_embedded(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Runs the encoder, pooling and head on embedded tokens ``(N, L, width)``.

        ``forward_features`` embeds patches; one-tower CLIP feeds embedded text tokens here.
        """
        cfg = self.cfg
        x = self._encode(x)
        out = {"encoded": x}
        if cfg.pool_type == "map":
            pooled = self.map_head(x)
        elif cfg.pool_type == "gap":
            pooled = x.mean(dim=1)
        else:
            pooled = x[:, 0]
        out["head_input"] = pooled
        if self.pre_logits is not None:
            pooled = torch.tanh(self.pre_logits(pooled))
        out["pre_logits"] = pooled
        if self.head is not None:
            out["logits"] = self.head(pooled)
        return out

    def forward(self, x: torch.Tensor, patch_embed: nn.Module | None = None) -> torch.Tensor:
        out = self.forward_features(x, patch_embed)
        return out.get("logits", out["pre_logits"])

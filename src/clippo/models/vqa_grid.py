"""VQA with an encoder as the backbone of a task model (CLIP-ViL section 3.1, MCAN fusion).

The image tower of any clippo model yields **grid features**: a ViT's patch tokens after the
last block and the final norm, before pooling (``ViT.tokens``), or EfficientNet-Lite0's last
feature map flattened to tokens (``EfficientNetLite0.tokens``). The question is read by the
model's own text side (``ContrastiveModel.text_tokens``: CLIPPO's rendered question through
the same ViT, CLIP*'s and 1T-CLIP's token features, each with its padding mask) or, for an
encoder without a text side (EfficientNet-Lite0, a plain or random ViT), by a small learned
embedding of the question's UTF-8 bytes inside the task model (``QuestionBytes``,
``ByteEmbedding``): no tokenizer and no word vectors, the pixel-only spirit kept, and the
fusion's question self-attention builds words from bytes.

The fusion is MCAN's encoder-decoder (Yu et al. 2019, "Deep Modular Co-Attention Networks",
which CLIP-ViL puts on CLIP's grid): ``layers`` self-attention layers over the question, then
``layers`` guided-attention layers over the grid (self-attention over grid tokens, then
attention from the grid to the final question tokens), each residual with a post-norm and a
feed-forward layer; attentional pooling ("AttFlat") of both sequences, their sum, a
LayerNorm and a linear classifier over the answers, trained with sigmoid cross-entropy on the
soft targets. Masked tokens (question padding) are never attended to nor pooled, so what
they hold does not change the output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clippo.data.vqa import build_vqa_feature_caches
from clippo.models.base import state_fingerprint
from clippo.models.heads import image_tower
from clippo.models.io import PretrainedModel, model_from_config, register
from clippo.models.vit import ViT

QUESTION_SOURCES = ("encoder", "bytes")


@dataclass
class MCANConfig:
    """The fusion's size: width, layers per stack, heads, feed-forward size, dropout, and the
    byte embedding's length for encoders without a text side."""

    width: int = 256
    layers: int = 2
    heads: int = 8
    mlp_dim: int = 1024
    dropout: float = 0.1
    max_bytes: int = 128  # question bytes read by the byte embedding (longer ones are cut)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"fusion width {self.width} is not divisible by {self.heads} heads")
        for name in ("width", "layers", "heads", "mlp_dim", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"fusion {name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"fusion dropout must lie in [0, 1), got {self.dropout}")


# -- the question as bytes ------------------------------------------------------------------


class QuestionBytes:
    """str -> int64 ``(max_len,)``: UTF-8 bytes + 1, padded with 0 (cut at ``max_len``);
    picklable, for DataLoader workers."""

    def __init__(self, max_len: int):
        self.max_len = max_len

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        single = isinstance(texts, str)
        rows = [texts] if single else list(texts)
        out = np.zeros((len(rows), self.max_len), np.int64)
        for i, text in enumerate(rows):
            data = np.frombuffer(text.encode("utf-8")[: self.max_len], np.uint8)
            out[i, : len(data)] = data.astype(np.int64) + 1
        return out[0] if single else out


class ByteEmbedding(nn.Module):
    """Byte ids ``(N, L)`` (``QuestionBytes``) -> ``(N, L', width)`` embeddings with a learned
    position embedding, and the mask of real bytes (the first position always counts). The
    columns after the batch's longest question are dropped (L' <= L): they are padding in
    every row, which the fusion ignores, so only the compute changes."""

    def __init__(self, max_len: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(257, width, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.randn(1, max_len, width) * 0.02)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.long()
        ids = ids[:, : max(1, int((ids != 0).sum(dim=1).max()))]
        mask = ids != 0
        mask[:, 0] = True
        return self.embed(ids) + self.pos_embed[:, : ids.shape[1]], mask


# -- MCAN -----------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """MCAN's MHAtt: q/k/v projections, scaled dot-product attention over the keys that the
    mask keeps (``(N, Lk)`` bool, True: attend), dropout on the attention map, a merge."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, q, k, v, key_mask: torch.Tensor | None) -> torch.Tensor:
        n, lq, d = q.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, -1, h, d // h).transpose(1, 2)

        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            split(self.query(q)),
            split(self.key(k)),
            split(self.value(v)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(n, lq, d))


class FeedForward(nn.Sequential):
    """Linear -> ReLU -> dropout -> linear (MCAN's FFN)."""

    def __init__(self, width: int, mlp_dim: int, dropout: float):
        super().__init__(
            nn.Linear(width, mlp_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mlp_dim, width)
        )


class SelfAttentionLayer(nn.Module):
    """MCAN's SA unit: x = LN(x + SA(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: MCANConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.width, cfg.heads, cfg.dropout)
        self.ffn = FeedForward(cfg.width, cfg.mlp_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, x, x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class GuidedAttentionLayer(nn.Module):
    """MCAN's SGA unit: self-attention over the grid, then attention from the grid to the
    question (``y``, masked by ``y_mask``), then the feed-forward layer; post-norm."""

    def __init__(self, cfg: MCANConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.width, cfg.heads, cfg.dropout)
        self.guided_attn = MultiHeadAttention(cfg.width, cfg.heads, cfg.dropout)
        self.ffn = FeedForward(cfg.width, cfg.mlp_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.width) for _ in range(3))

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        x = self.norms[0](x + self.drop(self.self_attn(x, x, x, None)))
        x = self.norms[1](x + self.drop(self.guided_attn(x, y, y, y_mask)))
        return self.norms[2](x + self.drop(self.ffn(x)))


class AttentionPooling(nn.Module):
    """MCAN's AttFlat: an MLP scores every token, a softmax over the tokens the mask keeps
    weighs them, and the weighted sum is projected to ``2 * width``."""

    def __init__(self, cfg: MCANConfig):
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(cfg.width, cfg.width),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.width, 1),
        )
        self.proj = nn.Linear(cfg.width, 2 * cfg.width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(x).squeeze(-1).float()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1).to(x.dtype)
        return self.proj((weights.unsqueeze(-1) * x).sum(dim=1))


class MCANFusion(nn.Module):
    """Grid ``(N, Li, Di)`` and question ``(N, Lq, Dq)`` (+ its mask) -> ``(N, 2 * width)``.

    Each input is normalised and projected to the fusion width; ``layers`` SA layers encode
    the question, ``layers`` SGA layers the grid guided by the encoded question (MCAN's
    encoder-decoder); both are pooled (AttFlat), summed and normalised.
    """

    def __init__(self, cfg: MCANConfig, image_dim: int, question_dim: int):
        super().__init__()
        self.image_in = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, cfg.width))
        self.question_in = nn.Sequential(
            nn.LayerNorm(question_dim), nn.Linear(question_dim, cfg.width)
        )
        self.question_layers = nn.ModuleList(SelfAttentionLayer(cfg) for _ in range(cfg.layers))
        self.image_layers = nn.ModuleList(GuidedAttentionLayer(cfg) for _ in range(cfg.layers))
        self.question_pool = AttentionPooling(cfg)
        self.image_pool = AttentionPooling(cfg)
        self.norm = nn.LayerNorm(2 * cfg.width)

    def forward(
        self, grid: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor
    ) -> torch.Tensor:
        x, y = self.image_in(grid), self.question_in(question)
        for layer in self.question_layers:
            y = layer(y, question_mask)
        for layer in self.image_layers:
            x = layer(x, y, question_mask)
        return self.norm(self.image_pool(x, None) + self.question_pool(y, question_mask))


# -- the task model -------------------------------------------------------------------------


@dataclass
class VQAGridConfig:
    """The answers, the backbone (its own model config), where the question is read, the
    fusion's size, and whether the backbone is frozen."""

    answers: list[str] = field(default_factory=list)
    backbone: dict = field(default_factory=dict)  # the backbone's config.json (model_type)
    question: str = "encoder"  # encoder: the backbone's text side; bytes: a byte embedding
    fusion: MCANConfig = field(default_factory=MCANConfig)
    freeze_encoder: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.fusion, dict):
            self.fusion = MCANConfig(**self.fusion)
        if self.question not in QUESTION_SOURCES:
            raise ValueError(f"question must be one of {QUESTION_SOURCES}, got {self.question!r}")

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        return {
            "model_type": "vqa_grid",
            "answers": list(self.answers),
            "backbone": dict(self.backbone),
            "question": self.question,
            "fusion": asdict(self.fusion),
            "freeze_encoder": self.freeze_encoder,
        }


@register("vqa_grid")
class VQAGridModel(PretrainedModel):
    """A backbone's grid and question features, MCAN fusion, a linear layer to the answers.

    ``backbone``: a contrastive model with per-token text features (CLIPPO, CLIP*, 1T-CLIP;
    ``question="encoder"``) or an image tower (a ``ViT``, ``EfficientNetLite0``;
    ``question="bytes"``). With ``freeze_encoder`` the backbone has no gradients and stays in
    eval mode, and its features may come from a cache (``image_features``,
    ``question_features`` + ``question_mask`` in ``forward``).

    ``forward(images, question_input)``: float ``(N, 3, S, S)`` in [-1, 1] (the image resized
    to the tower's size) and what ``question_transform`` makes -> ``(N, answers)`` logits.
    """

    protocol = "grid"

    def __init__(self, backbone: nn.Module, cfg: VQAGridConfig):
        super().__init__()
        if not cfg.answers:
            raise ValueError("a VQA model needs at least one answer")
        if cfg.question == "encoder" and not getattr(backbone, "supports_text_tokens", False):
            raise ValueError(
                f"{type(backbone).__name__} gives no per-token text features for the question "
                "(CLIPPO, CLIP* and 1T-CLIP do): use question 'bytes'"
            )
        image_tower(backbone)  # a clear error for a backbone without a ViT or EfficientNet
        cfg.backbone = backbone.config_dict()
        self.cfg, self.backbone = cfg, backbone
        fusion = cfg.fusion
        self.question_embed = None
        if cfg.question == "bytes":
            self.question_embed = ByteEmbedding(fusion.max_bytes, fusion.width)
        with torch.no_grad():  # the feature sizes, from a probe through the backbone
            was_training = backbone.training
            backbone.eval()
            size = self.image_size
            image_dim = self.image_grid(torch.zeros(1, 3, size, size)).shape[-1]
            question_dim = fusion.width
            if cfg.question == "encoder":
                probe = torch.as_tensor(np.asarray(self.question_transform(["?"])))
                question_dim = backbone.text_tokens(probe)[0].shape[-1]
            backbone.train(was_training)
        self.fusion = MCANFusion(fusion, image_dim, question_dim)
        self.head = nn.Linear(2 * fusion.width, len(cfg.answers))
        if cfg.freeze_encoder:
            backbone.requires_grad_(False)
        self.train()

    @classmethod
    def from_config(cls, config: dict, directory=None) -> VQAGridModel:
        """Backbone (built from its nested config) and fusion, random weights."""
        config = dict(config)
        backbone = model_from_config(config.pop("backbone"), directory)
        return cls(backbone, VQAGridConfig(**config))

    def train(self, mode: bool = True) -> VQAGridModel:
        """As ``nn.Module.train``, but a frozen backbone always stays in eval mode (BatchNorm
        statistics, dropout), as its cached features were computed."""
        super().train(mode)
        if self.cfg.freeze_encoder:
            self.backbone.eval()
        return self

    @property
    def answers(self) -> list[str]:
        """The answer of each output."""
        return self.cfg.answers

    @property
    def image_size(self) -> int:
        """Side of the square images the image tower reads."""
        tower = image_tower(self.backbone)
        return tower.cfg.image_size if isinstance(tower, ViT) else tower.image_size

    @property
    def question_transform(self):
        """str -> the question input (rendered pixels, token ids or bytes); picklable."""
        if self.cfg.question == "bytes":
            return QuestionBytes(self.cfg.fusion.max_bytes)
        return self.backbone.text_transform

    def image_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> grid features ``(N, L, D)``; without autograd when the backbone is
        frozen."""
        weight = next(self.backbone.parameters())
        images = images.to(weight.device, weight.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_encoder):
            return image_tower(self.backbone).tokens(images)

    def encode_question(self, question_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The question input -> its features ``(N, L, D)`` and mask ``(N, L)`` (the
        backbone's text tokens, without autograd when frozen, or the byte embedding)."""
        if self.question_embed is not None:
            return self.question_embed(question_input.to(self.head.weight.device))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_encoder):
            return self.backbone.text_tokens(question_input)

    def forward(
        self,
        images: torch.Tensor | None = None,
        question_input: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
        question_features: torch.Tensor | None = None,
        question_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits over the answers; cached ``image_features`` replace ``images``, cached
        ``question_features`` and ``question_mask`` replace ``question_input``."""
        device, dtype = self.head.weight.device, self.head.weight.dtype
        grid = self.image_grid(images) if image_features is None else image_features
        if question_features is None:
            question_features, question_mask = self.encode_question(question_input)
        fused = self.fusion(
            grid.to(device, dtype),
            question_features.to(device, dtype),
            question_mask.to(device, torch.bool),
        )
        return self.head(fused)

    def feature_caches(self, urls: str, directory: str | Path, *, batch_size: int = 256):
        """The frozen backbone's features of every distinct image of the VQA shards ``urls``
        (and of every distinct question, when the backbone reads it), computed once into
        ``directory`` or read back from there: ``(image_cache, question_cache or None)``
        (``clippo.data.vqa.build_vqa_feature_caches``). One folder per shard set: the caches
        of one split are rebuilt over another's."""
        if not self.cfg.freeze_encoder:
            raise ValueError("only a frozen backbone's features can be cached")
        encoder_question = self.cfg.question == "encoder"
        was_training = self.training
        self.eval()
        try:
            return build_vqa_feature_caches(
                urls,
                directory,
                image_size=self.image_size,
                image_id=self.image_cache_id(),
                embed_images=self.image_grid,
                question_id=self.question_cache_id() if encoder_question else None,
                question_transform=self.question_transform,
                embed_questions=self.encode_question,
                batch_size=batch_size,
            )
        finally:
            self.train(was_training)

    def image_cache_id(self) -> str:
        """Names the grid-feature function: tower kind, input size, a hash of its weights."""
        tower = image_tower(self.backbone)
        return f"grid-{type(tower).__name__.lower()}-{self.image_size}px-{state_fingerprint(tower)}"

    def question_cache_id(self) -> str:
        """Names the question-feature function: the backbone's kind, a hash of its config
        (renderer settings, tokenizer file), its weights and its tokenizer's bytes."""
        h = hashlib.blake2b(digest_size=8)
        settings = {k: v for k, v in self.cfg.backbone.items() if k != "tokenizer"}
        h.update(json.dumps(settings, sort_keys=True).encode())
        tokenizer = self.cfg.backbone.get("tokenizer")  # its bytes, wherever the file lives
        if tokenizer and Path(tokenizer).is_file():
            h.update(Path(tokenizer).read_bytes())
        kind = self.cfg.backbone.get("model_type", "model")
        return f"question-{kind}-{state_fingerprint(self.backbone)}-{h.hexdigest()}"

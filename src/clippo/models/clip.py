"""The CLIPPO paper's tokenized baselines: CLIP* (two towers) and 1T-CLIP (one shared tower).

CLIP*: a ViT with MAP head for images and big_vision's text transformer for SentencePiece
tokens, each with a linear head to ``out_dim``. 1T-CLIP: one ViT, encoder and head shared by
both modalities; images enter through the patch embedding, tokens through their own token and
position embeddings. Both read text through a ``clippo.tokenizer.Tokenizer`` and expose the same
interface as ``CLIPPO``, so the training loop and evaluators serve all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clippo.models.base import ContrastiveModel, l2_normalize
from clippo.models.io import register
from clippo.models.text_transformer import (
    TextTransformer,
    TextTransformerConfig,
    check_tokens,
    make_text_pos_embed,
    make_token_embed,
)
from clippo.models.vit import ViT, ViTConfig
from clippo.tokenizer import EOS_ID


@dataclass
class CLIPConfig:
    """CLIP*: the image ViT, the text transformer, the embedding size and the tokenizer file."""

    vit: ViTConfig = field(default_factory=lambda: ViTConfig.from_variant("B/16"))
    text: TextTransformerConfig = field(
        default_factory=lambda: TextTransformerConfig.from_variant("B")
    )
    out_dim: int = 768
    temperature_init: float = 10.0
    bias_init: float | None = None  # SigLIP's learned logit bias (loss.name sigmoid)
    tokenizer: str | None = None  # a SentencePiece .model; needed only to read strings

    def __post_init__(self) -> None:
        if isinstance(self.vit, dict):
            self.vit = ViTConfig(**self.vit)
        if isinstance(self.text, dict):
            self.text = TextTransformerConfig(**self.text)
        self.vit.num_classes = self.text.num_classes = self.out_dim

    @property
    def max_len(self) -> int:
        """Tokens per text."""
        return self.text.max_len

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        return {
            "model_type": "clip",
            "vit": self.vit.to_dict(),
            "text": self.text.to_dict(),
            "out_dim": self.out_dim,
            "temperature_init": self.temperature_init,
            **({"bias_init": self.bias_init} if self.bias_init is not None else {}),
            "tokenizer": self.tokenizer,
        }


@dataclass
class OneTowerCLIPConfig:
    """1T-CLIP: the shared ViT, the token vocabulary and length, and the tokenizer file."""

    vit: ViTConfig = field(default_factory=lambda: ViTConfig.from_variant("B/16"))
    vocab_size: int = 32_000
    max_len: int = 196
    out_dim: int = 768
    temperature_init: float = 10.0
    bias_init: float | None = None  # SigLIP's learned logit bias (loss.name sigmoid)
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vit, dict):
            self.vit = ViTConfig(**self.vit)
        self.vit.num_classes = self.out_dim

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        return {
            "model_type": "1t-clip",
            "vit": self.vit.to_dict(),
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "out_dim": self.out_dim,
            "temperature_init": self.temperature_init,
            **({"bias_init": self.bias_init} if self.bias_init is not None else {}),
            "tokenizer": self.tokenizer,
        }


class _TokenizedCLIP(ContrastiveModel):
    """What CLIP* and 1T-CLIP share: the temperature, the tokenizer and the open_clip interface.

    ``encode_image(x)``: images (float ``(N, 3, H, W)`` in [-1, 1], uint8, PIL, paths) ->
    L2-normalised ``(N, out_dim)``.
    ``encode_text(texts)``: strings, tokenized with the model's tokenizer -> the same.
    ``text_transform``: str -> ``(max_len,)`` int32 ids, what the data pipeline stacks.
    ``forward(images, tokens)`` -> ``(zimg, ztxt, logit_scale)`` for the contrastive loss.
    """

    def __init__(self, cfg: CLIPConfig | OneTowerCLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ViT(cfg.vit)
        self.init_temperature(cfg.temperature_init, cfg.bias_init)
        self._tokenizer = None
        if cfg.tokenizer is not None:
            _ = self.tokenizer  # fail early on a missing file or a vocabulary too large

    @property
    def tokenizer(self):
        """The SentencePiece tokenizer of ``cfg.tokenizer`` (loaded on first use)."""
        if self._tokenizer is None:
            from clippo.tokenizer import Tokenizer

            if self.cfg.tokenizer is None:
                raise ValueError(
                    "this model has no tokenizer: create it with tokenizer=PATH.model "
                    "(train one with `clippo tokenizer train`)"
                )
            tok = Tokenizer(self.cfg.tokenizer, max_len=self.cfg.max_len)
            if tok.vocab_size > self.vocab_size:
                raise ValueError(
                    f"tokenizer {self.cfg.tokenizer} has {tok.vocab_size} pieces but the model "
                    f"embeds only {self.vocab_size}"
                )
            self._tokenizer = tok
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding."""
        raise NotImplementedError

    @property
    def text_transform(self):
        """str -> int32 token ids ``(max_len,)``; picklable, for DataLoader workers."""
        return self.tokenizer

    def _token_features(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The text path's ``pre_logits`` and (with a head) ``logits``."""
        raise NotImplementedError

    supports_text_tokens = True

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled features of token ids before the text head."""
        return self._token_features(tokens.to(self.t.device))["pre_logits"]

    def _encoded_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The text path's tokens after the final norm, before pooling ``(N, max_len, D)``."""
        raise NotImplementedError

    def text_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(N, max_len)`` -> the text path's output tokens before pooling and their
        mask: the tokens up to and including the first EOS hold text, the EOS padding after it
        does not (``clippo.tokenizer`` pads with EOS, as big_vision's sticky EOS does)."""
        tokens = tokens.to(self.t.device)
        eos = self.tokenizer.eos_id if self.cfg.tokenizer is not None else EOS_ID
        position = torch.arange(tokens.shape[1], device=tokens.device)
        # The first EOS; a text without one (cut by another tokenizer) is text throughout.
        first = torch.where(tokens == eos, position, tokens.shape[1]).amin(dim=1, keepdim=True)
        return self._encoded_tokens(tokens), position[None] <= first

    def encode_text_input(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds token ids ``(N, max_len)``, as ``text_transform`` makes them."""
        out = self._token_features(tokens.to(self.t.device))
        z = out.get("logits", out["pre_logits"])
        return l2_normalize(z) if normalize else z


@register("clip")
class CLIP(_TokenizedCLIP):
    """CLIP*: a ViT for images and a text transformer for tokens, trained from scratch."""

    config_class = CLIPConfig

    def __init__(self, cfg: CLIPConfig):
        super().__init__(cfg)
        self.text = TextTransformer(cfg.text)

    @property
    def vocab_size(self) -> int:
        return self.cfg.text.vocab_size

    def _token_features(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.text.forward_features(tokens)

    def _encoded_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text.encode_tokens(tokens)


@register("1t-clip")
class OneTowerCLIP(_TokenizedCLIP):
    """1T-CLIP: one ViT (encoder, pooling, head) for both images and tokens."""

    config_class = OneTowerCLIPConfig

    def __init__(self, cfg: OneTowerCLIPConfig):
        super().__init__(cfg)
        self.token_embed = make_token_embed(cfg.vocab_size, cfg.vit.width)
        self.text_pos_embed = make_text_pos_embed(cfg.max_len, cfg.vit.width)

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def _embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        check_tokens(tokens, self.cfg.max_len)
        return self.token_embed(tokens.long()) + self.text_pos_embed

    def _token_features(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.image.forward_embedded(self._embed_tokens(tokens))

    def _encoded_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.image.encode_tokens(self._embed_tokens(tokens))

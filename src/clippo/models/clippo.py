"""CLIPPO: one ViT encodes images and text rendered as images; CLIP-style contrastive model.

The default shares everything (patch embedding, encoder, MAP head and output head), as in the
paper. ``text_tower`` switches on the weight-sharing ablations of the paper's Table 9.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clippo.models.base import ContrastiveModel, l2_normalize
from clippo.models.io import register
from clippo.models.vit import ViT, ViTConfig, make_head, make_patch_embed

TEXT_TOWERS = ("shared", "separate_embedding", "separate_head", "separate")


@dataclass
class CLIPPOConfig:
    """A CLIPPO model: the ViT, the embedding size, the temperature init and the renderer."""

    vit: ViTConfig = field(default_factory=lambda: ViTConfig.from_variant("B/16"))
    out_dim: int = 768
    temperature_init: float = 10.0
    bias_init: float | None = None  # SigLIP's learned logit bias (loss.name sigmoid)
    text_tower: str = "shared"
    # Keyword arguments of clippo.render.UnifontRenderer; image_size always follows the ViT's.
    render: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.vit, dict):
            self.vit = ViTConfig(**self.vit)
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {self.text_tower!r}")
        self.vit.num_classes = self.out_dim
        self.render = {**self.render, "image_size": self.vit.image_size}

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        return {
            "model_type": "clippo",
            "vit": self.vit.to_dict(),
            "out_dim": self.out_dim,
            "temperature_init": self.temperature_init,
            **({"bias_init": self.bias_init} if self.bias_init is not None else {}),
            "text_tower": self.text_tower,
            "render": dict(self.render),
        }


def text_pixels_to_input(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 rendered text ``(N, H, W)`` -> ``(N, 3, H, W)`` in [-1, 1] of ``dtype`` (the reading
    model's weights'), as big_vision's ``value_range(-1, 1)`` maps 0..255."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 3:
        raise ValueError(
            f"expected uint8 text images (N, H, W), got {pixels.dtype} {tuple(pixels.shape)}"
        )
    x = (pixels.float() / 127.5 - 1.0).to(dtype)
    return x[:, None].expand(-1, 3, -1, -1)


@register("clippo")
class CLIPPO(ContrastiveModel):
    """One-tower CLIPPO model with the open_clip interface.

    ``encode_image(x)``: images (float ``(N, 3, H, W)`` in [-1, 1], uint8, PIL, paths) ->
    L2-normalised ``(N, out_dim)``.
    ``encode_text(texts)``: list of strings, rendered with the model's Unifont settings -> the same.
    ``text_transform``: str -> rendered uint8 pixels, what the data pipeline stacks.
    ``forward(images, text_input)`` -> ``(zimg, ztxt, logit_scale)`` for the contrastive loss, with
    rendered text as ``text_input``; ``forward(images, text_input, (text_a, text_b))`` adds
    rendered text/text pairs.
    """

    config_class = CLIPPOConfig
    supports_text_tokens = True

    def __init__(self, cfg: CLIPPOConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ViT(cfg.vit)
        self.text = None
        if cfg.text_tower == "separate":
            self.text = ViT(cfg.vit)
        elif cfg.text_tower == "separate_embedding":
            self.text_patch_embed = make_patch_embed(cfg.vit)
        elif cfg.text_tower == "separate_head":
            self.text_head = make_head(cfg.vit)
        self.init_temperature(cfg.temperature_init, cfg.bias_init)
        self._renderer = None

    @property
    def renderer(self):
        """The Unifont renderer with this model's settings (built on first use)."""
        if self._renderer is None:
            from clippo.render import UnifontRenderer

            self._renderer = UnifontRenderer(**self.cfg.render)
        return self._renderer

    @property
    def text_transform(self):
        """str -> uint8 rendered text ``(H, W)``; picklable, for DataLoader workers."""
        return self.renderer

    def encode_text_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds already rendered text: uint8 ``(N, H, W)``."""
        tower = self.text if self.text is not None else self.image
        head = self.text_head if self.cfg.text_tower == "separate_head" else tower.head
        z = self.text_features(pixels)
        if head is not None:
            z = head(z)
        return l2_normalize(z) if normalize else z

    def encode_text_input(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds what ``text_transform`` makes (rendered text); the models' common name."""
        return self.encode_text_pixels(pixels, normalize=normalize)

    def text_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features of rendered text before the head, through the text path's modules."""
        x = text_pixels_to_input(pixels.to(self.t.device), self.t.dtype)
        tower = self.text if self.text is not None else self.image
        patch_embed = getattr(self, "text_patch_embed", None)
        return tower.forward_features(x, patch_embed=patch_embed)["pre_logits"]

    def text_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rendered text uint8 ``(N, H, W)`` -> the text path's patch tokens after the final
        norm ``(N, grid**2, width)`` and their mask: the patches up to the last one with ink,
        in raster order, hold text; the blank patches after it are the padding of rendered
        text (the first patch always counts, so an empty text keeps one token)."""
        tower = self.text if self.text is not None else self.image
        x = text_pixels_to_input(pixels.to(self.t.device), self.t.dtype)
        tokens = tower.tokens(x, patch_embed=getattr(self, "text_patch_embed", None))
        p, g = tower.cfg.patch_size, tower.cfg.grid
        ink = (pixels != self.renderer.background).reshape(len(pixels), g, p, g, p)
        inked = ink.any(dim=(2, 4)).reshape(len(pixels), g * g).to(tokens.device)
        position = torch.arange(g * g, device=tokens.device)
        last = torch.where(inked, position, 0).amax(dim=1, keepdim=True)
        return tokens, position[None] <= last

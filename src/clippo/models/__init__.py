"""Models: the ViT, the text transformer, CLIPPO, the CLIP* and 1T-CLIP baselines, LiT, the
factory."""

from clippo.models.base import ContrastiveModel
from clippo.models.clip import CLIP, CLIPConfig, OneTowerCLIP, OneTowerCLIPConfig
from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.factory import (
    count_parameters,
    create_model,
    from_pretrained,
    list_models,
    save_pretrained,
)
from clippo.models.lit import LiT, LiTConfig, create_lit
from clippo.models.text_transformer import TextTransformer, TextTransformerConfig
from clippo.models.vit import ViT, ViTConfig

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CLIPPO",
    "CLIPPOConfig",
    "ContrastiveModel",
    "LiT",
    "LiTConfig",
    "OneTowerCLIP",
    "OneTowerCLIPConfig",
    "TextTransformer",
    "TextTransformerConfig",
    "ViT",
    "ViTConfig",
    "count_parameters",
    "create_lit",
    "create_model",
    "from_pretrained",
    "list_models",
    "save_pretrained",
]

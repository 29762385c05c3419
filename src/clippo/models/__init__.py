"""Models: the ViT, the text transformer, CLIPPO, the CLIP* and 1T-CLIP baselines, LiT, task
heads (the fused VQA classifier, the VQA grid model) and their directories (``io``). Names ->
models: ``clippo.factory.create_model``."""

from clippo.models.base import ContrastiveModel, count_parameters, state_fingerprint
from clippo.models.clip import CLIP, CLIPConfig, OneTowerCLIP, OneTowerCLIPConfig
from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.heads import (
    TextBackbone,
    TextClassifier,
    TextClassifierConfig,
    VQAClassifier,
    VQAClassifierConfig,
    image_tower,
)
from clippo.models.io import from_pretrained, model_from_config, save_pretrained
from clippo.models.lit import LiT, LiTConfig
from clippo.models.text_transformer import TextTransformer, TextTransformerConfig
from clippo.models.vit import ViT, ViTConfig
from clippo.models.vqa_grid import MCANConfig, VQAGridConfig, VQAGridModel

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CLIPPO",
    "CLIPPOConfig",
    "ContrastiveModel",
    "LiT",
    "LiTConfig",
    "MCANConfig",
    "OneTowerCLIP",
    "OneTowerCLIPConfig",
    "TextBackbone",
    "TextClassifier",
    "TextClassifierConfig",
    "TextTransformer",
    "TextTransformerConfig",
    "VQAClassifier",
    "VQAClassifierConfig",
    "VQAGridConfig",
    "VQAGridModel",
    "ViT",
    "ViTConfig",
    "image_tower",
    "count_parameters",
    "from_pretrained",
    "model_from_config",
    "save_pretrained",
    "state_fingerprint",
]

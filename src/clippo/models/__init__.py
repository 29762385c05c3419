"""Models: the ViT, the one-tower CLIPPO model and the factory."""

from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.factory import (
    count_parameters,
    create_model,
    from_pretrained,
    list_models,
    save_pretrained,
)
from clippo.models.vit import ViT, ViTConfig

__all__ = [
    "CLIPPO",
    "CLIPPOConfig",
    "ViT",
    "ViTConfig",
    "count_parameters",
    "create_model",
    "from_pretrained",
    "list_models",
    "save_pretrained",
]

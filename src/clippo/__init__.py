"""clippo: CLIP with Pixels Only, in PyTorch."""

from clippo.models import create_model, from_pretrained, list_models, save_pretrained

__version__ = "0.1.0"
__all__ = ["create_model", "from_pretrained", "list_models", "save_pretrained"]

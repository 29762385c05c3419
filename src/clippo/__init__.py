"""clippo: CLIP with Pixels Only, in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["create_model", "from_pretrained", "list_models", "save_pretrained"]


def __getattr__(name: str):
    # Lazy, so that `import clippo.render` (numpy only) does not pay for importing torch.
    if name in __all__:
        from clippo import models

        return getattr(models, name)
    raise AttributeError(f"module 'clippo' has no attribute {name!r}")

"""clippo: CLIP with Pixels Only, in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
_FACTORY = ("create_model", "create_model_and_transforms", "list_models")
_IO = ("from_pretrained", "save_pretrained")
__all__ = [*_FACTORY, *_IO]


def __getattr__(name: str):
    # Lazy, so that `import clippo.render` (numpy only) does not pay for importing torch.
    if name in _FACTORY:
        from clippo import factory

        return getattr(factory, name)
    if name in _IO:
        from clippo.models import io

        return getattr(io, name)
    raise AttributeError(f"module 'clippo' has no attribute {name!r}")

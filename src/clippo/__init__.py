"""clippo: CLIP with Pixels Only, in PyTorch."""

__version__ = "0.1.0"

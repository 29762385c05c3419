"""Model directories, read and written in one place: ``config.json`` + ``model.safetensors``
(+ ``tokenizer.model`` for the token models), Hugging Face style.

Every model class clippo saves derives from ``PretrainedModel`` and names its ``model_type``
with ``@register``: CLIPPO (``clippo``), CLIP* (``clip``), 1T-CLIP (``1t-clip``), LiT
(``lit``), a plain ViT such as a converted big_vision classifier (``vit``) and a fine-tuned
text classifier (``text_classifier``, whose config nests its backbone's), a fine-tuned VQA
classifier (``vqa_classifier``: an image tower and a head over answers), the VQA grid model
(``vqa_grid``: a backbone, nested, and an MCAN fusion) and EfficientNet-Lite0
(``efficientnet-lite0``). ``save_pretrained``
writes any of them, atomically per file; ``from_pretrained`` reads any of them back, and names
the file and the problem when a directory is not a valid model. Both are also methods, as in
Hugging Face: ``model.save_pretrained(d)``, ``CLIPPO.from_pretrained(d, torch_dtype=...)``.

This module imports no model class (they import it): the registry maps names to classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clippo.atomic import atomic_write, atomic_write_text

_TOKENIZER_FILE = "tokenizer.model"
_MODEL_TYPES: dict[str, type] = {}
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def register(name: str):
    """Class decorator: ``config.json``'s ``"model_type": name`` builds this class."""

    def decorate(cls: type) -> type:
        if name in _MODEL_TYPES and _MODEL_TYPES[name] is not cls:
            raise ValueError(f"model_type {name!r} is already registered")
        cls.model_type = name
        _MODEL_TYPES[name] = cls
        return cls

    return decorate


def model_types() -> list[str]:
    """The registered ``model_type`` names."""
    return sorted(_MODEL_TYPES)


class PretrainedModel(torch.nn.Module):
    """A model with a ``config.json``: ``save_pretrained`` / ``from_pretrained`` methods.

    Subclasses set ``config_class`` (built from the dict) and keep their config in ``cfg``
    (with ``to_dict()``); those whose config is laid out otherwise override ``config_dict`` and
    ``from_config``.
    """

    model_type: str | None = None
    config_class: type | None = None

    def config_dict(self) -> dict:
        """What ``config.json`` holds, ``model_type`` included."""
        return {"model_type": self.model_type, **self.cfg.to_dict()}

    @classmethod
    def from_config(cls, config: dict, directory: str | os.PathLike | None = None):
        """A model with random weights from ``config_dict()``'s dict (without ``model_type``)."""
        return cls(cls.config_class(**config))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes ``config.json``, ``model.safetensors`` (and a tokenizer) into ``directory``."""
        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        map_location: str | torch.device = "cpu",
        torch_dtype: torch.dtype | str | None = None,
    ):
        """Loads a model directory, in eval mode; on a subclass, the directory must hold one
        (``CLIPPO.from_pretrained`` refuses a CLIP* directory)."""
        return from_pretrained(directory, map_location, torch_dtype, expect=cls)


def model_from_config(config: dict, directory: str | os.PathLike | None = None) -> torch.nn.Module:
    """Builds a model (random weights) from the dict that ``config.json`` holds.

    A relative ``tokenizer`` path is looked up in ``directory`` (where ``save_pretrained``
    copies the tokenizer) before the working directory.
    """
    config = dict(config)
    kind = config.pop("model_type", "clippo")
    if kind not in _MODEL_TYPES:
        raise ValueError(f"unknown model_type {kind!r}; known: {model_types()}")
    tokenizer = config.get("tokenizer")
    if tokenizer and directory is not None and not Path(tokenizer).is_absolute():
        if (Path(directory) / tokenizer).is_file():
            config["tokenizer"] = str(Path(directory) / tokenizer)
    return _MODEL_TYPES[kind].from_config(config, directory)


def _config_of(model: torch.nn.Module) -> dict:
    if not isinstance(model, PretrainedModel) or model.model_type is None:
        raise TypeError(f"{type(model).__name__} is not a clippo model (no registered model_type)")
    return model.config_dict()


def _tokenizer_path(config: dict) -> str | None:
    """The tokenizer file a config refers to, at the top or in a nested backbone."""
    if config.get("tokenizer"):
        return config["tokenizer"]
    return _tokenizer_path(config["backbone"]) if "backbone" in config else None


def _set_tokenizer(config: dict, name: str) -> None:
    if config.get("tokenizer"):
        config["tokenizer"] = name
    elif "backbone" in config:
        _set_tokenizer(config["backbone"], name)


def _dtype(torch_dtype: torch.dtype | str | None) -> torch.dtype | None:
    if torch_dtype is None or isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype not in _DTYPES:
        raise ValueError(f"unknown torch_dtype {torch_dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[torch_dtype]


def save_pretrained(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Writes ``config.json``, ``model.safetensors`` and any ``tokenizer.model`` into
    ``directory`` (atomically per file); returns the directory. ``state_dict``: the weights to
    write instead of ``model.state_dict()`` (whole tensors of a sharded model)."""
    config = _config_of(model)  # before touching the directory: an unsavable model writes nothing
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = model.state_dict() if state_dict is None else state_dict
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    atomic_write(directory / "model.safetensors", lambda p: save_file(tensors, p))
    source = _tokenizer_path(config)
    if source:
        # The directory carries its own tokenizer, so it stays usable wherever it is copied.
        target = directory / _TOKENIZER_FILE
        if not (target.exists() and target.samefile(source)):
            data = Path(source).read_bytes()
            atomic_write(target, lambda p: Path(p).write_bytes(data))
        _set_tokenizer(config, _TOKENIZER_FILE)
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2))
    return directory


def read_config(directory: str | os.PathLike) -> dict:
    """``directory/config.json`` as a dict; names the file when it is missing or not JSON."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a clippo model directory")
    config_file = directory / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    return config


def from_pretrained(
    directory: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    torch_dtype: torch.dtype | str | None = None,
    *,
    expect: type | None = None,
) -> torch.nn.Module:
    """Loads any model ``save_pretrained`` wrote (or ``clippo convert`` converted), in eval mode.

    ``torch_dtype`` casts the weights (``torch.bfloat16`` or ``"bfloat16"``; default float32);
    ``expect`` (what ``Class.from_pretrained`` passes) refuses a directory of another kind.
    """
    dtype = _dtype(torch_dtype)
    directory = Path(directory)
    config = read_config(directory)
    config_file = directory / "config.json"
    kind = config.get("model_type", "clippo")
    if expect is not None and expect is not PretrainedModel and kind in _MODEL_TYPES:
        if not issubclass(_MODEL_TYPES[kind], expect):
            raise ValueError(
                f"{directory} holds a {kind!r} model, not a {expect.__name__}: load it with "
                f"clippo.from_pretrained, which reads any kind"
            )
    try:
        model = model_from_config(config, directory)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{config_file}: not a valid model config ({e})") from None
    weights = directory / "model.safetensors"
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights}: unreadable, truncated or not safetensors ({e})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # wrong shapes
        first = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"{weights}: weights do not match config.json ({first})") from None
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not match config.json "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model = model.to(map_location)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()

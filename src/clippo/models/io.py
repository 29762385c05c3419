"""Model directories, read and written in one place: ``config.json`` + ``model.safetensors``
(+ ``tokenizer.model`` for the token models), Hugging Face style.

Every model clippo builds has a ``cfg`` whose ``to_dict()`` names its ``model_type``: CLIPPO
(``clippo``), CLIP* (``clip``), 1T-CLIP (``1t-clip``), LiT (``lit``), a plain ViT such as a
converted big_vision classifier (``vit``) and a fine-tuned text classifier
(``text_classifier``, whose config nests its backbone's) and a fine-tuned VQA classifier
(``vqa_classifier``: an image tower and a head over answers). ``save_pretrained`` writes any of
them, atomically per file; ``from_pretrained`` reads any of them back, and names the file and
the problem when a directory is not a valid model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clippo.atomic import atomic_write, atomic_write_text
from clippo.models.clip import CLIP, CLIPConfig, OneTowerCLIP, OneTowerCLIPConfig
from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.heads import (
    TextBackbone,
    TextClassifier,
    TextClassifierConfig,
    VQAClassifier,
    VQAClassifierConfig,
)
from clippo.models.lit import LiT, LiTConfig
from clippo.models.vit import ViT, ViTConfig

_TOKENIZER_FILE = "tokenizer.model"
MODEL_TYPES = ("clippo", "clip", "1t-clip", "lit", "vit", "text_classifier", "vqa_classifier")


def model_from_config(config: dict, directory: str | os.PathLike | None = None) -> torch.nn.Module:
    """Builds a model (random weights) from the dict that ``config.json`` holds.

    A relative ``tokenizer`` path is looked up in ``directory`` (where ``save_pretrained``
    copies the tokenizer) before the working directory.
    """
    config = dict(config)
    kind = config.pop("model_type", "clippo")
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {kind!r}; known: {list(MODEL_TYPES)}")
    tokenizer = config.get("tokenizer")
    if tokenizer and directory is not None and not Path(tokenizer).is_absolute():
        if (Path(directory) / tokenizer).is_file():
            config["tokenizer"] = str(Path(directory) / tokenizer)
    if kind == "vit":
        return ViT(ViTConfig(**config["vit"]))
    if kind == "vqa_classifier":
        return VQAClassifier.from_config(VQAClassifierConfig(**config))
    if kind == "text_classifier":
        backbone = model_from_config(config.pop("backbone"), directory)
        cfg = TextClassifierConfig(**config)
        return TextClassifier(TextBackbone(backbone, cfg.representation), cfg)
    types = {
        "clippo": (CLIPPO, CLIPPOConfig),
        "clip": (CLIP, CLIPConfig),
        "1t-clip": (OneTowerCLIP, OneTowerCLIPConfig),
        "lit": (LiT, LiTConfig),
    }
    model_cls, cfg_cls = types[kind]
    return model_cls(cfg_cls(**config))


def _config_of(model: torch.nn.Module) -> dict:
    if isinstance(model, ViT):
        return {"model_type": "vit", "vit": model.cfg.to_dict()}
    if not hasattr(getattr(model, "cfg", None), "to_dict"):
        raise TypeError(f"{type(model).__name__} is not a clippo model (no cfg.to_dict())")
    return model.cfg.to_dict()


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


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike) -> Path:
    """Writes ``config.json``, ``model.safetensors`` and any ``tokenizer.model`` into
    ``directory`` (atomically per file); returns the directory."""
    config = _config_of(model)  # before touching the directory: an unsavable model writes nothing
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
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


def from_pretrained(directory: str | os.PathLike, map_location: str = "cpu") -> torch.nn.Module:
    """Loads any model ``save_pretrained`` wrote (or ``clippo convert`` converted), in eval mode."""
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
    try:
        model = model_from_config(config, directory)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{config_file}: not a valid model config ({e})") from None
    weights = directory / "model.safetensors"
    try:
        state = load_file(weights, device=map_location)
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
    return model.eval()

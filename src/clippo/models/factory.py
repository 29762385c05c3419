"""Models by name (open_clip style) and the Hugging Face-style ``config.json`` +
``model.safetensors`` directory format."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.vit import VARIANTS, ViTConfig

# Model-name prefix -> CLIPPO text_tower setting.
_FAMILIES = {"clippo": "shared", "clippo-untied": "separate"}
_VIT_KEYS = set(ViTConfig.__dataclass_fields__)


def list_models() -> list[str]:
    """Every name ``create_model`` accepts, at patch size 16 (any ``/P`` works)."""
    return [f"{fam}-{v}/16" for fam in _FAMILIES for v in VARIANTS]


def parse_model_name(name: str) -> tuple[str, str]:
    """``"clippo-untied-B/16"`` -> ``("clippo-untied", "B/16")``."""
    family, _, variant = name.rpartition("-")
    if family not in _FAMILIES or variant.partition("/")[0] not in VARIANTS:
        raise ValueError(
            f"unknown model name {name!r}: expected FAMILY-VARIANT/PATCH with FAMILY in "
            f"{sorted(_FAMILIES)} and VARIANT in {list(VARIANTS)}, e.g. 'clippo-B/16'"
        )
    return family, variant


def create_model(name: str = "clippo-B/16", **overrides) -> CLIPPO:
    """Builds a randomly initialised model by name.

    Keyword overrides go to the ViT (``image_size``, ``pool_type``, ``posemb``, ``depth``, ...)
    or to the model (``out_dim``, ``temperature_init``, ``text_tower``, ``render``).
    """
    family, variant = parse_model_name(name)
    vit_kw = {k: overrides.pop(k) for k in list(overrides) if k in _VIT_KEYS}
    model_keys = set(CLIPPOConfig.__dataclass_fields__) - {"vit"}
    unknown = set(overrides) - model_keys
    if unknown:
        raise ValueError(
            f"unknown model option(s) {sorted(unknown)}; valid: {sorted(_VIT_KEYS | model_keys)}"
        )
    overrides.setdefault("text_tower", _FAMILIES[family])
    cfg = CLIPPOConfig(vit=ViTConfig.from_variant(variant, **vit_kw), **overrides)
    return CLIPPO(cfg)


def model_from_config(config: dict) -> CLIPPO:
    """Builds a model from the dict that ``config.json`` holds."""
    config = dict(config)
    kind = config.pop("model_type", "clippo")
    if kind != "clippo":
        raise ValueError(f"unknown model_type {kind!r} in config")
    return CLIPPO(CLIPPOConfig(**config))


def save_pretrained(model: CLIPPO, directory: str | os.PathLike) -> Path:
    """Writes ``config.json`` and ``model.safetensors`` into ``directory`` (atomically per file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(directory / "model.safetensors", lambda p: save_file(tensors, p))
    text = json.dumps(model.cfg.to_dict(), indent=2)
    _atomic_write(directory / "config.json", lambda p: Path(p).write_text(text))
    return directory


def from_pretrained(directory: str | os.PathLike, map_location: str = "cpu") -> CLIPPO:
    """Loads a model saved by ``save_pretrained`` (or converted by ``clippo convert``)."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a clippo model directory")
    model = model_from_config(json.loads((directory / "config.json").read_text()))
    state = load_file(directory / "model.safetensors", device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not match config.json "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.eval()


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def count_parameters(model: torch.nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters())

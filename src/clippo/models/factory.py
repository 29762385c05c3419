"""Models by name (open_clip style) and the Hugging Face-style ``config.json`` +
``model.safetensors`` directory format."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clippo.models.base import ContrastiveModel
from clippo.models.clip import CLIP, CLIPConfig, OneTowerCLIP, OneTowerCLIPConfig
from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.lit import LiT, LiTConfig, create_lit
from clippo.models.text_transformer import TextTransformerConfig
from clippo.models.vit import VARIANTS, ViTConfig

# Model-name prefix -> what it builds: CLIPPO (with its text_tower setting), CLIP*, 1T-CLIP,
# LiT with its image and text tower settings (lit-Lu: locked image, random text tower).
_FAMILIES = {
    "clippo": "shared",
    "clippo-untied": "separate",
    "clip": "clip",
    "1t-clip": "1t-clip",
    **{f"lit-{i}{t}": "lit" for i in "LUu" for t in "LUu"},
}
_VIT_KEYS = set(ViTConfig.__dataclass_fields__)
_MODEL_TYPES = {
    "clippo": CLIPPOConfig,
    "clip": CLIPConfig,
    "1t-clip": OneTowerCLIPConfig,
    "lit": LiTConfig,
}
_TOKENIZER_FILE = "tokenizer.model"


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


def _check_options(options: dict, valid: set[str]) -> None:
    unknown = set(options) - valid
    if unknown:
        raise ValueError(
            f"unknown model option(s) {sorted(unknown)}; valid: {sorted(_VIT_KEYS | valid)}"
        )


def create_model(name: str = "clippo-B/16", **overrides) -> ContrastiveModel:
    """Builds a randomly initialised model by name.

    Keyword overrides go to the ViT (``image_size``, ``pool_type``, ``posemb``, ``depth``, ...)
    or to the model: ``out_dim``, ``temperature_init``; CLIPPO's ``text_tower`` and ``render``;
    the tokenized models' ``tokenizer`` (a SentencePiece file, which also sets ``vocab_size``
    unless given), ``vocab_size`` and ``max_len``; CLIP*'s ``text`` (text-transformer fields,
    e.g. ``{"pool_type": "map"}``; its size follows the ViT's otherwise). LiT
    (``lit-XY-VARIANT``, X and Y the image and text settings L, U or u): the ViT is the text
    tower's (pixels, or the size of a tokens tower) and ``image_size`` also the image tower's
    input; ``LiTConfig`` fields such as ``image_tower``, ``image_source``, ``image_head``,
    ``text_tower``, ``text_source``, ``tokenizer``, ``max_len``, ``out_dim``.
    """
    family, variant = parse_model_name(name)
    vit_kw = {k: overrides.pop(k) for k in list(overrides) if k in _VIT_KEYS}
    vit = ViTConfig.from_variant(variant, **vit_kw)
    if _FAMILIES[family] == "lit":
        fixed = {"vit", "image_mode", "text_mode", "image_size", "image_vit", "image_features"}
        _check_options(overrides, set(LiTConfig.__dataclass_fields__) - fixed)
        vit.num_classes = 0  # the text head projects
        modes = family.removeprefix("lit-")
        cfg = LiTConfig(
            image_mode=modes[0],
            text_mode=modes[1],
            image_size=vit.image_size,
            vit=vit,
            **overrides,
        )
        return create_lit(cfg)
    if family in ("clippo", "clippo-untied"):
        _check_options(overrides, set(CLIPPOConfig.__dataclass_fields__) - {"vit"})
        overrides.setdefault("text_tower", _FAMILIES[family])
        return CLIPPO(CLIPPOConfig(vit=vit, **overrides))

    if overrides.get("tokenizer") is not None and "vocab_size" not in overrides:
        from clippo.tokenizer import Tokenizer

        overrides["vocab_size"] = Tokenizer(overrides["tokenizer"]).vocab_size
    if family == "1t-clip":
        _check_options(overrides, set(OneTowerCLIPConfig.__dataclass_fields__) - {"vit"})
        return OneTowerCLIP(OneTowerCLIPConfig(vit=vit, **overrides))

    _check_options(
        overrides, set(CLIPConfig.__dataclass_fields__) - {"vit"} | {"vocab_size", "max_len"}
    )
    # The text tower is scaled with the image tower, as in the paper.
    text_kw = dict(
        width=vit.width,
        depth=vit.depth,
        mlp_dim=vit.mlp_dim,
        num_heads=vit.num_heads,
        grad_checkpointing=vit.grad_checkpointing,
    )
    text_kw.update({k: overrides.pop(k) for k in ("vocab_size", "max_len") if k in overrides})
    text_kw.update(overrides.pop("text", None) or {})
    unknown = set(text_kw) - set(TextTransformerConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown text option(s) {sorted(unknown)}; "
            f"valid: {sorted(TextTransformerConfig.__dataclass_fields__)}"
        )
    return CLIP(CLIPConfig(vit=vit, text=TextTransformerConfig(**text_kw), **overrides))


def model_from_config(config: dict, directory: str | os.PathLike | None = None) -> ContrastiveModel:
    """Builds a model from the dict that ``config.json`` holds.

    A relative ``tokenizer`` path is looked up in ``directory`` (where ``save_pretrained``
    copies the tokenizer) before the working directory.
    """
    config = dict(config)
    kind = config.pop("model_type", "clippo")
    if kind not in _MODEL_TYPES:
        raise ValueError(f"unknown model_type {kind!r} in config; known: {sorted(_MODEL_TYPES)}")
    tokenizer = config.get("tokenizer")
    if tokenizer and directory is not None and not Path(tokenizer).is_absolute():
        if (Path(directory) / tokenizer).is_file():
            config["tokenizer"] = str(Path(directory) / tokenizer)
    cfg = _MODEL_TYPES[kind](**config)
    return {"clippo": CLIPPO, "clip": CLIP, "1t-clip": OneTowerCLIP, "lit": LiT}[kind](cfg)


def save_pretrained(model: ContrastiveModel, directory: str | os.PathLike) -> Path:
    """Writes ``config.json``, ``model.safetensors`` and any ``tokenizer.model`` into ``directory``
    (atomically per file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(directory / "model.safetensors", lambda p: save_file(tensors, p))
    config = model.cfg.to_dict()
    if config.get("tokenizer"):
        # The directory carries its own tokenizer, so it stays usable wherever it is copied.
        source = Path(config["tokenizer"])
        target = directory / _TOKENIZER_FILE
        if not (target.exists() and target.samefile(source)):
            data = source.read_bytes()
            _atomic_write(target, lambda p: Path(p).write_bytes(data))
        config["tokenizer"] = _TOKENIZER_FILE
    text = json.dumps(config, indent=2)
    _atomic_write(directory / "config.json", lambda p: Path(p).write_text(text))
    return directory


def from_pretrained(directory: str | os.PathLike, map_location: str = "cpu") -> ContrastiveModel:
    """Loads a model saved by ``save_pretrained`` (or converted by ``clippo convert``)."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a clippo model directory")
    model = model_from_config(json.loads((directory / "config.json").read_text()), directory)
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

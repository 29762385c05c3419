"""Task heads: a clippo model's text path as a backbone, and a classifier on top of it.

``TextBackbone`` reads any contrastive model's text path (CLIPPO's rendered text, CLIP*'s and
1T-CLIP's tokens, LiT's text tower): ``representation="pre_logits"`` is the pooled output
before the head that maps to the contrastive embedding (big_vision's "representation", what
its fine-tuning reads); ``"embedding"`` is the unnormalised contrastive embedding. A sentence
pair is one text, ``first [SEP] second`` (CLIPPO renders it on one image; token models
tokenise the same string).

``TextClassifier`` is the GLUE protocol's model (CLIPPO paper, following BERT): the backbone,
then a 2-hidden-layer MLP (768 units, GELU) to the classes, or to one output for regression.

``VQAClassifier`` is the fused VQA protocol's model (CLIPPO appendix A): any clippo model's
image tower (``image_tower``) reading the question drawn above the image, then a fresh linear
layer to one logit per answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from clippo.models.io import PretrainedModel, model_from_config, register
from clippo.models.lit import EfficientNetLite0
from clippo.models.vit import ViT, ViTConfig

REPRESENTATIONS = ("pre_logits", "embedding")


def join_pair(text_a: str, text_b: str) -> str:
    """A sentence pair as one text: ``a [SEP] b`` (the renderer's pair mode, for every model)."""
    return f"{text_a} [SEP] {text_b}"


class TextBackbone(nn.Module):
    """Any clippo model's text path as a fine-tuning backbone: texts (or pairs) -> features.

    ``preprocess`` makes the model input (rendered pixels or token ids; what DataLoader workers
    compute), ``features`` maps it to ``(N, feature_dim)``. The whole model is fine-tuned,
    except LiT towers that are locked.
    """

    def __init__(self, model: nn.Module, representation: str = "pre_logits") -> None:
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {REPRESENTATIONS}, got {representation!r}"
            )
        self.model, self.representation = model, representation
        was_training = model.training
        with torch.no_grad():
            self.feature_dim = self.eval()(["feature size probe"]).shape[-1]
        self.train(was_training)

    def text_transform(self, text: str):
        """One text (a pair already joined) -> the model's text input; picklable."""
        return self.model.text_transform(text)

    def preprocess(self, texts_a: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        """The stacked model input (rendered pixels or token ids) of texts or pairs."""
        if texts_b is None:
            return self.model.preprocess_text(list(texts_a))
        if len(texts_a) != len(texts_b):
            raise ValueError(f"got {len(texts_a)} first and {len(texts_b)} second texts")
        pairs = zip(texts_a, texts_b, strict=True)
        return self.model.preprocess_text([join_pair(a, b) for a, b in pairs])

    def features(self, text_input: torch.Tensor) -> torch.Tensor:
        """Pooled features of preprocessed text input."""
        if self.representation == "embedding":
            return self.model.encode_text_input(text_input, normalize=False)
        return self.model.text_features(text_input)

    def forward(self, texts_a: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        return self.features(self.preprocess(texts_a, texts_b))


@dataclass
class TextClassifierConfig:
    """The head and what it predicts; ``backbone`` is the backbone model's own config."""

    num_outputs: int = 2
    hidden: int = 768
    representation: str = "pre_logits"
    labels: list[str] = field(default_factory=list)  # class names; empty for regression
    backbone: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        return {
            "model_type": "text_classifier",
            "num_outputs": self.num_outputs,
            "hidden": self.hidden,
            "representation": self.representation,
            "labels": list(self.labels),
            "backbone": self.backbone,
        }


@register("text_classifier")
class TextClassifier(PretrainedModel):
    """Backbone -> 2-hidden-layer MLP (GELU) -> classes, or 1 output for regression.

    ``forward(text_input)`` takes preprocessed input (``backbone.preprocess``), as batches from
    the data pipeline do; ``classify(texts_a, texts_b)`` takes strings.
    """

    @classmethod
    def from_config(cls, config: dict, directory=None) -> TextClassifier:
        """Backbone (built from its nested config) and head, random weights."""
        config = dict(config)
        backbone = model_from_config(config.pop("backbone"), directory)
        cfg = TextClassifierConfig(**config)
        return cls(TextBackbone(backbone, cfg.representation), cfg)

    def __init__(self, backbone: TextBackbone, cfg: TextClassifierConfig):
        super().__init__()
        cfg.representation = backbone.representation
        cfg.backbone = backbone.model.cfg.to_dict()
        self.cfg, self.backbone = cfg, backbone
        self.mlp = nn.Sequential(
            nn.Linear(backbone.feature_dim, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.num_outputs),
        )

    @property
    def is_regression(self) -> bool:
        """One output trained by squared error (STS-B)."""
        return self.cfg.num_outputs == 1 and not self.cfg.labels

    def forward(self, text_input: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.backbone.features(text_input))
        return out[:, 0] if out.shape[1] == 1 else out

    def classify(self, texts_a: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        """Logits (or regression scores) for strings or sentence pairs."""
        return self(self.backbone.preprocess(texts_a, texts_b))


# --------------------------------------------------------------------------------------------
# VQA: an image tower and a linear classifier over answers (CLIPPO's fused protocol)
# --------------------------------------------------------------------------------------------

IMAGE_TOWER_KINDS = ("vit", "efficientnet-lite0")


def image_tower(model: nn.Module) -> nn.Module:
    """The image tower of any clippo model: CLIPPO's (tied or untied), CLIP*'s and 1T-CLIP's
    ViT, LiT's image tower (a ViT or EfficientNet-Lite0), or a plain ViT (a converted
    big_vision classifier, or one built from scratch). The tower's own output head stays on
    the tower; ``VQAClassifier`` reads the pooled features before it."""
    if isinstance(model, ViT | EfficientNetLite0):
        return model
    tower = getattr(model, "image", None)
    if isinstance(tower, ViT | EfficientNetLite0):
        return tower
    raise ValueError(
        f"{type(model).__name__} has no image tower clippo can fine-tune (a ViT or "
        "EfficientNet-Lite0)"
    )


@dataclass
class VQAClassifierConfig:
    """The tower (its kind and settings), the answers, and how questions are drawn."""

    answers: list[str] = field(default_factory=list)
    tower: str = "vit"  # or efficientnet-lite0
    vit: dict = field(default_factory=dict)  # the tower's ViTConfig (tower "vit")
    image_size: int = 224
    max_lines: int = 4  # question lines (16 px each) at the top of the canvas
    render: dict = field(default_factory=dict)  # UnifontRenderer settings for the question

    def to_dict(self) -> dict:
        """JSON-serialisable form (what ``config.json`` holds)."""
        return {
            "model_type": "vqa_classifier",
            "answers": list(self.answers),
            "tower": self.tower,
            "vit": dict(self.vit),
            "image_size": self.image_size,
            "max_lines": self.max_lines,
            "render": dict(self.render),
        }


@register("vqa_classifier")
class VQAClassifier(PretrainedModel):
    """An image tower reading the fused question+image canvas, then a fresh linear layer to
    one logit per answer (CLIPPO appendix A: the whole tower is fine-tuned).

    ``forward(images)``: float ``(N, 3, S, S)`` in [-1, 1] -> ``(N, answers)`` logits. The ViT's
    features are its pooled ``pre_logits`` (before the contrastive head, which is dropped).
    """

    protocol = "fused"

    def __init__(self, tower: nn.Module, cfg: VQAClassifierConfig):
        super().__init__()
        if not cfg.answers:
            raise ValueError("a VQA classifier needs at least one answer")
        if isinstance(tower, ViT):
            tower.head = None  # the contrastive projection is not part of the features
            tower.cfg.num_classes = 0
            cfg.tower, cfg.vit, cfg.image_size = "vit", tower.cfg.to_dict(), tower.cfg.image_size
            features = tower.cfg.rep_size or tower.cfg.width
        else:
            cfg.tower, cfg.vit, features = "efficientnet-lite0", {}, tower.features
        self.cfg, self.tower = cfg, tower
        self.head = nn.Linear(features, len(cfg.answers))
        nn.init.zeros_(self.head.weight)  # big_vision's fresh heads start at zero
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_config(cls, config: dict, directory=None) -> VQAClassifier:
        """Random weights in the shape of ``config_dict()``'s dict (``from_pretrained`` then
        loads them)."""
        cfg = VQAClassifierConfig(**config)
        if cfg.tower not in IMAGE_TOWER_KINDS:
            raise ValueError(f"tower must be one of {IMAGE_TOWER_KINDS}, got {cfg.tower!r}")
        if cfg.tower == "vit":
            tower = ViT(ViTConfig(**cfg.vit))
        else:
            tower = EfficientNetLite0(cfg.image_size, pretrained=False)
        return cls(tower, cfg)

    @property
    def image_size(self) -> int:
        """Side of the square canvas the tower reads."""
        return self.cfg.image_size

    @property
    def answers(self) -> list[str]:
        """The answer of each output."""
        return self.cfg.answers

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled tower features ``(N, D)``."""
        images = images.to(self.head.weight.device, self.head.weight.dtype)
        if isinstance(self.tower, ViT):
            return self.tower.forward_features(images)["pre_logits"]
        return self.tower(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

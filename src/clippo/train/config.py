"""Experiment configs: YAML mapped onto dataclasses, validated on load.

An unknown key anywhere raises ``ConfigError`` naming its full dotted path, so a typo never
silently falls back to a default. ``--set a.b=value`` overrides use the same validation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it."""


@dataclass
class ModelConfig:
    """Which model to build: a factory name plus overrides passed to ``create_model``."""

    name: str = "clippo-B/16"
    options: dict = field(default_factory=dict)  # e.g. {image_size: 224, pool_type: map}
    init: str | None = None  # a from_pretrained directory to start from


@dataclass
class AugmentConfig:
    """Training-time image augmentation."""

    flip: bool = False
    random_resized_crop: list[float] | None = None  # [min_scale, max_scale]


@dataclass
class DataConfig:
    """Where the shards are and how batches are formed."""

    train: str = ""  # shard pattern, e.g. data/openclipart/train-{000000..000007}.tar
    val: str | None = None
    batch_size: int = 256  # global batch, split evenly over processes
    workers: int = 2
    shuffle_buffer: int = 2_000
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # LiT (appendix E): a directory for the locked image tower's features, computed once
    # and read instead of the images; needs a locked image tower and no augmentation.
    image_cache: str | None = None
    # Co-training (CLIPPO section 3): this share of every batch is text/text pairs read from
    # text_pairs (shards of `clippo data textpairs`), both sides through the text path.
    text_pairs: str | None = None
    text_pair_fraction: float = 0.0  # in [0, 1]; 1: text pairs only

    @property
    def text_pairs_per_batch(self) -> int:
        """Text pairs in every global batch: ``text_pair_fraction`` of it, rounded half up."""
        return math.floor(self.batch_size * self.text_pair_fraction + 0.5)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (big_vision's ``create_learning_rate_schedule`` arguments)."""

    decay_type: str = "rsqrt"
    warmup_steps: int = 0
    cooldown_steps: int = 0
    timescale: int = 10_000
    linear_end: float = 0.0
    power: float = 1.0


@dataclass
class OptimConfig:
    """Optimizer: big_vision's Adafactor variant or AdamW, decoupled weight decay."""

    name: str = "adafactor"
    lr: float = 1e-3
    wd: float = 1e-4
    grad_clip_norm: float = 1.0
    kwargs: dict = field(default_factory=dict)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class TrainConfig:
    """Loop settings."""

    total_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_ckpts: int = 2
    eval_every: int = 0  # 0: evaluate only at the end
    precision: str = "auto"  # auto (bf16 autocast on GPU), fp32, bf16
    grad_checkpointing: bool = False
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    # The paper's step rule for co-training: scale total_steps by batch / image pairs per batch,
    # so as many image/alt-text pairs are seen as without text pairs (50% pairs -> 2x steps).
    keep_image_pairs_constant: bool = False


@dataclass
class EvalConfig:
    """Evaluations run on the validation shards."""

    retrieval: bool = True
    captions: str = "all"  # retrieval captions per image: "all" fields (COCO-style) or "first"
    zeroshot: str | None = "openclipart"  # a prompt set from clippo/assets/prompts
    fewshot_shots: list[int] = field(default_factory=lambda: [10])
    fewshot_train_examples: int = 2000  # labelled training examples embedded for the probe
    batch_size: int = 256


@dataclass
class ExperimentConfig:
    """A whole experiment: one YAML file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Plain-dict form (what ``config.yaml`` in a work directory holds)."""
        return dataclasses.asdict(self)

    @property
    def effective_total_steps(self) -> int:
        """The steps the loop runs: ``train.total_steps``, times batch / image pairs per batch
        (rounded up) when ``train.keep_image_pairs_constant``."""
        if not self.train.keep_image_pairs_constant:
            return self.train.total_steps
        batch = self.data.batch_size
        image_pairs = batch - self.data.text_pairs_per_batch
        return -(-self.train.total_steps * batch // image_pairs)


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"unknown config key {where!r}; valid keys here: {sorted(known)}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(hint, value: Any, path: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, path) for v in value] if args else list(value)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section")
    node[last] = value


def load_config(
    source: str | os.PathLike | dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Reads a YAML file (or dict), applies ``key.path=value`` overrides, validates everything."""
    if source is None:
        tree: dict = {}
    elif isinstance(source, dict):
        tree = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        tree = yaml.safe_load(path.read_text()) or {}
    tree = _deepcopy(tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    cfg = _build(ExperimentConfig, tree, "")
    _check_values(cfg)
    return cfg


def _deepcopy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _deepcopy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deepcopy(v) for v in tree]
    return tree


def _check_values(cfg: ExperimentConfig) -> None:
    from clippo.models.factory import parse_model_name

    try:
        parse_model_name(cfg.model.name)
    except ValueError as e:
        raise ConfigError(f"model.name: {e}") from None
    if cfg.optim.name not in ("adafactor", "adamw"):
        raise ConfigError(f"optim.name must be 'adafactor' or 'adamw', got {cfg.optim.name!r}")
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(
            f"train.precision must be auto, fp32 or bf16, got {cfg.train.precision!r}"
        )
    for name in ("total_steps", "log_every", "ckpt_every", "keep_ckpts"):
        if getattr(cfg.train, name) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {getattr(cfg.train, name)}")
    if cfg.eval.captions not in ("all", "first"):
        raise ConfigError(f"eval.captions must be 'all' or 'first', got {cfg.eval.captions!r}")
    if cfg.data.batch_size <= 1:
        raise ConfigError(f"data.batch_size must be at least 2, got {cfg.data.batch_size}")
    _check_text_pairs(cfg)


def _check_text_pairs(cfg: ExperimentConfig) -> None:
    from clippo.models.factory import parse_model_name

    data = cfg.data
    if not 0.0 <= data.text_pair_fraction <= 1.0:
        raise ConfigError(
            f"data.text_pair_fraction must lie in [0, 1], got {data.text_pair_fraction}"
        )
    if data.text_pair_fraction == 0.0:
        return
    if not data.text_pairs:
        raise ConfigError(
            f"data.text_pairs: a text-pair shard pattern is required when "
            f"data.text_pair_fraction is {data.text_pair_fraction}"
        )
    pairs = data.text_pairs_per_batch
    if pairs == 0 or (pairs == data.batch_size and data.text_pair_fraction < 1.0):
        raise ConfigError(
            f"data.text_pair_fraction {data.text_pair_fraction} of data.batch_size "
            f"{data.batch_size} gives {pairs} text pairs per batch: need at least one text pair "
            "and one image pair (or text_pair_fraction 1.0 for text pairs only)"
        )
    if pairs == data.batch_size and cfg.train.keep_image_pairs_constant:
        raise ConfigError(
            "train.keep_image_pairs_constant: with data.text_pair_fraction 1.0 no image pairs "
            "are seen, so no step count keeps them constant; set train.total_steps instead"
        )
    family, _ = parse_model_name(cfg.model.name)
    if not cfg.model.init and not family.startswith("clippo"):
        raise ConfigError(
            f"data.text_pair_fraction: text/text co-training needs a CLIPPO model (pixels for "
            f"both sides), not {cfg.model.name!r}"
        )

"""Experiment configs: YAML mapped onto dataclasses, validated on load.

An unknown key anywhere raises ``ConfigError`` naming its full dotted path, so a typo never
silently falls back to a default; a key that moved says where it went. ``--set a.b=value``
overrides use the same validation (``clippo.schema``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clippo.factory import parse_model_name
from clippo.losses import LOSSES
from clippo.models.vqa_grid import QUESTION_SOURCES, MCANConfig
from clippo.schema import ConfigError, apply_overrides, build, read_yaml
from clippo.train.optim import OPTIMIZERS
from clippo.train.schedules import create_schedule

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "resolve_config"]

CONFIG_DIR = Path(__file__).parent.parent / "configs"
SHARDINGS = ("ddp", "fsdp")


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """A config by file path, or by name from the packaged recipes (``clippo_b16_yfcc``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / f"{str(name_or_path).removesuffix('.yaml')}.yaml"
    if packaged.is_file():
        return packaged
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"no config file {str(name_or_path)!r}; packaged configs: {known}")


@dataclass
class ModelConfig:
    """Which model to build: a factory name plus overrides passed to ``create_model``."""

    name: str = "clippo-B/16"
    options: dict = field(default_factory=dict)  # e.g. {image_size: 224, pool_type: map}
    # A from_pretrained directory to start from; options then describe it (checked), except a
    # CLIPPO image_size, which resamples its position embedding (a larger canvas).
    init: str | None = None


@dataclass
class AugmentConfig:
    """Training-time augmentation."""

    flip: bool = False
    random_resized_crop: list[float] | None = None  # [min_scale, max_scale]
    # Rendered text (CLIPPO's): every training text (alt-text, both sides of a text pair) is
    # drawn after 0..leading_spaces spaces, so words sit at other places and lines break
    # elsewhere; a space is 4 pixels wide. 0: off.
    leading_spaces: int = 0
    # Text pairs: each pair is, with this probability, joined with another pair of its batch on
    # both sides ("a a2" / "b b2", or the partner first), where the rendered join fits the
    # canvas; words are then read inside longer texts, as in sentence captions. 0: off.
    join_pairs: float = 0.0


@dataclass
class DataConfig:
    """Where the shards are and how batches are formed."""

    train: str = ""  # shard pattern, e.g. data/openclipart/train-{000000..000007}.tar
    batch_size: int = 256  # global batch, split evenly over processes
    workers: int = 2
    shuffle_buffer: int = 2_000
    # Read the shards and decode every training image once, before the first step, and keep
    # them in memory (for a small data set): the same batches as streaming, less CPU per step.
    in_memory: bool = False
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
    warmup_percent: float | None = None  # instead of warmup_steps: this fraction of the run


@dataclass
class OptimConfig:
    """Optimizer: big_vision's Adafactor variant, AdamW or SGD with momentum, decoupled weight
    decay."""

    name: str = "adafactor"
    lr: float = 1e-3
    wd: float = 1e-4
    grad_clip_norm: float = 1.0
    # false: weight decay scaled by the schedule only (big_vision); true: also by the learning
    # rate (PyTorch's and BERT's AdamW), as the GLUE fine-tuning recipe needs.
    wd_times_lr: bool = False
    kwargs: dict = field(default_factory=dict)
    # Learning-rate multipliers by parameter name (regular expressions matched in full, the
    # first match wins), e.g. {"head\\..*": 10} for a fresh head (big_vision's lr_mults).
    lr_mults: dict = field(default_factory=dict)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class TrainConfig:
    """Loop settings."""

    total_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_ckpts: int = 2
    # fp32, bf16 (autocast), or auto: bf16 where the hardware computes it natively (CUDA, CPUs
    # with AVX512-BF16 or AMX), fp32 elsewhere (emulated bf16 runs ~20x slower on AVX2 CPUs).
    precision: str = "fp32"
    grad_checkpointing: bool = False
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    # Seconds a collective (all-reduce, barrier) may wait for a stalled rank before it fails.
    collective_timeout_s: float = 600.0
    # The paper's step rule for co-training: scale total_steps by batch / image pairs per batch,
    # so as many image/alt-text pairs are seen as without text pairs (50% pairs -> 2x steps).
    keep_image_pairs_constant: bool = False
    # GradCache (open_clip's --accum-freq): the batch runs as this many micro-batches, first
    # without gradients to get every embedding, then again with them; the gradient is the
    # whole batch's, the activation memory a micro-batch's.
    accum_steps: int = 1
    compile: bool = False  # torch.compile the model's forward (same numbers as eager)
    # ddp: whole model on every process; fsdp: FSDP2 (fully_shard per transformer block).
    sharding: str = "ddp"


@dataclass
class LossConfig:
    """The contrastive loss (``clippo.losses``): softmax (CLIP) or sigmoid (SigLIP)."""

    name: str = "softmax"
    # softmax: each process computes only its rows of the global logit matrix (open_clip's
    # local_loss); same gradient, 1/processes of the logits. The sigmoid loss always does.
    local: bool = False
    bias_init: float = -10.0  # sigmoid: the learned logit bias's start (big_vision's siglip)


@dataclass
class EvalSetConfig:
    """One named evaluation set: its data, its evaluators and their options, its schedule.

    ``evaluators`` maps registered names (``clippo.eval.registry``: retrieval, zeroshot,
    fewshot, multilingual, bitext, ...) to their options, e.g.
    ``{zeroshot: {prompts: openclipart}}``.
    Metrics are written as ``SET/METRIC``.
    """

    # shard pattern of held-out image/text pairs, or a caption-set folder (XM3600's layout),
    # or the folder of a benchmark of ``kind``, or text-pair shards (kind textpairs)
    data: str = ""
    # "" (shards or a caption set, by what ``data`` is), textpairs (held-out text pairs of
    # `clippo data textpairs`, for the bitext evaluator) or a benchmark in its download layout:
    # imagenet, imagefolder, coco, flickr30k (clippo.data.benchmarks); with no evaluators
    # listed, a benchmark gets its default ones (clippo.eval.benchmarks)
    kind: str = ""
    options: dict = field(default_factory=dict)  # reader options: classnames (file), split
    every: int = 0  # steps between evaluations during training; 0: only at the end
    captions: str = "all"  # retrieval captions per image: "all" fields (COCO-style) or "first"
    evaluators: dict = field(default_factory=dict)


@dataclass
class EvalConfig:
    """The evaluation sets of a run (each embedded once per evaluation)."""

    batch_size: int = 256
    sets: dict[str, EvalSetConfig] = field(default_factory=dict)


@dataclass
class FinetuneConfig:
    """Classification fine-tuning (``clippo finetune``): the task, its data and the head.

    The model to fine-tune is ``model.init`` (a model directory) or ``model.name`` (random
    init); the run lasts ``epochs`` passes over the training split (``train.total_steps`` is
    not used), and the protocol tries every learning rate in ``lrs``, keeping the best on dev.
    """

    task: str = ""  # a GLUE task (sst2, mnli, ...) or a local task (fortune_topic, ...)
    data: str = ""  # the task folder or the GLUE root folder (GLUE's TSV layout)
    representation: str = "pre_logits"  # or "embedding": the unnormalised contrastive one
    hidden: int = 768  # the MLP head's width (2 hidden layers)
    epochs: int = 3
    lrs: list[float] = field(default_factory=lambda: [2e-5, 3e-5, 5e-5])
    max_train: int | None = None  # subsample the training split (seeded), for quick runs
    max_dev: int | None = None  # subsample the dev (VQA: held-out) split, for quick runs
    # VQA (`clippo finetune vqa`; runs train.total_steps steps, not epochs): the protocol, the
    # canvas size (a pretrained tower's position embedding is resampled to it), question lines.
    protocol: str = ""  # fused or grid
    image_size: int | None = None  # None: the tower's own resolution
    max_lines: int = 4
    # The grid protocol (CLIP-ViL): the encoder frozen (its features computed once, kept in
    # feature_cache; `clippo finetune vqa` uses OUT/feature_cache) or trained at encoder_lr_mult
    # times the learning rate; the question read by the encoder's text side (encoder), a learned
    # byte embedding (bytes), or the first where the model has one (auto); the MCAN fusion.
    freeze_encoder: bool = True
    encoder_lr_mult: float = 0.1
    question: str = "auto"
    feature_cache: str = ""
    fusion: MCANConfig = field(default_factory=MCANConfig)


@dataclass
class ExperimentConfig:
    """A whole experiment: one YAML file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

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


# Keys of earlier configs that now live elsewhere, and where.
_SETS = "evaluation is configured per named set under eval.sets (README, 'Configs')"
MOVED = {
    "data.val": f"{_SETS}: eval.sets.val.data=PATTERN",
    "train.eval_every": f"{_SETS}: eval.sets.NAME.every=STEPS",
    "eval.retrieval": f"{_SETS}: eval.sets.NAME.evaluators.retrieval={{}}",
    "eval.captions": f"{_SETS}: eval.sets.NAME.captions=first|all",
    "eval.zeroshot": f"{_SETS}: eval.sets.NAME.evaluators.zeroshot.prompts=NAME",
    "eval.fewshot_shots": f"{_SETS}: eval.sets.NAME.evaluators.fewshot.shots=[10]",
    "eval.fewshot_train_examples": (f"{_SETS}: eval.sets.NAME.evaluators.fewshot.train_examples=N"),
}


def load_config(
    source: str | os.PathLike | dict | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Reads a YAML file (or dict), applies ``key.path=value`` overrides, validates everything."""
    if source is None:
        tree: dict = {}
    elif isinstance(source, dict):
        tree = dict(source)
    else:
        tree = read_yaml(source)
    cfg = build(ExperimentConfig, apply_overrides(tree, overrides), "", MOVED)
    _check_values(cfg)
    return cfg


def _check_values(cfg: ExperimentConfig) -> None:
    try:
        parse_model_name(cfg.model.name)
    except ValueError as e:
        raise ConfigError(f"model.name: {e}") from None
    if cfg.optim.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name must be one of {sorted(OPTIMIZERS)}, got {cfg.optim.name!r}")
    for pattern, mult in cfg.optim.lr_mults.items():
        if not isinstance(mult, int | float) or isinstance(mult, bool) or mult < 0:
            raise ConfigError(f"optim.lr_mults.{pattern} must be a number >= 0, got {mult!r}")
    # Values that would train backwards or mean nothing.
    for key, value in (
        ("optim.lr", cfg.optim.lr),
        ("optim.wd", cfg.optim.wd),
        ("optim.grad_clip_norm", cfg.optim.grad_clip_norm),
        ("data.shuffle_buffer", cfg.data.shuffle_buffer),
        ("data.workers", cfg.data.workers),
        ("data.augment.leading_spaces", cfg.data.augment.leading_spaces),
        ("train.threads", cfg.train.threads),
    ):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    known = set(inspect.signature(OPTIMIZERS[cfg.optim.name]).parameters)
    known -= {"params", "lr", "wd", "grad_clip_norm"}
    unknown = sorted(set(cfg.optim.kwargs) - known)
    if unknown:
        raise ConfigError(
            f"optim.kwargs: {unknown} are not options of {cfg.optim.name}; valid: {sorted(known)}"
        )
    try:  # the values too (e.g. fused AdamW has no eps_root), on a one-number parameter
        OPTIMIZERS[cfg.optim.name]([torch.zeros(1)], cfg.optim.lr, **cfg.optim.kwargs)
    except ValueError as e:
        raise ConfigError(f"optim.kwargs: {e}") from None
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(
            f"train.precision must be auto, fp32 or bf16, got {cfg.train.precision!r}"
        )
    if cfg.train.collective_timeout_s <= 0:
        raise ConfigError(
            f"train.collective_timeout_s must be positive, got {cfg.train.collective_timeout_s}"
        )
    if cfg.loss.name not in LOSSES:
        raise ConfigError(f"loss.name must be one of {', '.join(LOSSES)}, got {cfg.loss.name!r}")
    if cfg.train.sharding not in SHARDINGS:
        raise ConfigError(
            f"train.sharding must be one of {', '.join(SHARDINGS)}, got {cfg.train.sharding!r}"
        )
    if cfg.train.accum_steps > cfg.data.batch_size:
        raise ConfigError(
            f"train.accum_steps {cfg.train.accum_steps} exceeds data.batch_size "
            f"{cfg.data.batch_size}: every micro-batch needs at least one example"
        )
    for name in ("total_steps", "log_every", "ckpt_every", "keep_ckpts", "accum_steps"):
        if getattr(cfg.train, name) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {getattr(cfg.train, name)}")
    for name, s in cfg.eval.sets.items():
        if s.captions not in ("all", "first"):
            raise ConfigError(
                f"eval.sets.{name}.captions must be 'all' or 'first', got {s.captions!r}"
            )
        if s.every < 0:
            raise ConfigError(f"eval.sets.{name}.every must be >= 0, got {s.every}")
        if not isinstance(s.evaluators, dict) or not all(
            isinstance(v, dict | None) for v in s.evaluators.values()
        ):
            raise ConfigError(
                f"eval.sets.{name}.evaluators: expected a mapping of evaluator names to "
                "options, e.g. {retrieval: {}, zeroshot: {prompts: openclipart}}"
            )
    if cfg.eval.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be positive, got {cfg.eval.batch_size}")
    if cfg.data.batch_size <= 1:
        raise ConfigError(f"data.batch_size must be at least 2, got {cfg.data.batch_size}")
    if cfg.finetune.representation not in ("pre_logits", "embedding"):
        raise ConfigError(
            "finetune.representation must be 'pre_logits' or 'embedding', "
            f"got {cfg.finetune.representation!r}"
        )
    if cfg.data.in_memory and cfg.data.image_cache:
        raise ConfigError(
            "data.in_memory and data.image_cache: choose one (the cache already replaces the "
            "images by the locked tower's features)"
        )
    if cfg.data.in_memory and (cfg.finetune.task or cfg.finetune.protocol):
        raise ConfigError(
            "data.in_memory decodes data.train for contrastive pre-training; fine-tuning "
            "(finetune.task / finetune.protocol) reads its own data, so leave data.in_memory off"
        )
    for key in ("leading_spaces", "join_pairs"):
        if getattr(cfg.data.augment, key) and cfg.finetune.task:
            raise ConfigError(
                f"data.augment.{key} augments the texts of contrastive pre-training; "
                "fine-tuning (finetune.task) reads its own data and would ignore it: set it to 0"
            )
    if cfg.finetune.protocol not in ("", "fused", "grid"):
        raise ConfigError(f"finetune.protocol must be fused or grid, got {cfg.finetune.protocol!r}")
    if cfg.finetune.question not in ("auto", *QUESTION_SOURCES):
        raise ConfigError(
            f"finetune.question must be auto, encoder or bytes, got {cfg.finetune.question!r}"
        )
    _check_text_pairs(cfg)
    if not cfg.finetune.task:  # fine-tuning's steps follow finetune.epochs and the data
        _check_schedule(cfg)


def _check_schedule(cfg: ExperimentConfig) -> None:
    """The schedule fits the run ``train.total_steps`` decides, before the first step."""
    schedule, steps = cfg.optim.schedule, cfg.effective_total_steps
    if schedule.warmup_percent is None and steps > 1 and schedule.warmup_steps >= steps:
        raise ConfigError(
            f"optim.schedule.warmup_steps: a {schedule.warmup_steps}-step warm-up must be shorter "
            f"than the {steps}-step run (train.total_steps); set optim.schedule.warmup_steps "
            f"below {steps}, or optim.schedule.warmup_steps=0 and "
            "optim.schedule.warmup_percent=FRACTION (of the run, e.g. 0.05)"
        )
    try:
        create_schedule(steps, **dataclasses.asdict(schedule))
    except ValueError as e:
        raise ConfigError(f"optim.schedule: {e}") from None


def _check_text_pairs(cfg: ExperimentConfig) -> None:
    data = cfg.data
    if not 0.0 <= data.text_pair_fraction <= 1.0:
        raise ConfigError(
            f"data.text_pair_fraction must lie in [0, 1], got {data.text_pair_fraction}"
        )
    join = data.augment.join_pairs
    if not 0 <= join <= 1:
        raise ConfigError(f"data.augment.join_pairs must be a probability in [0, 1], got {join!r}")
    if data.text_pair_fraction == 0.0:
        if join:
            raise ConfigError(
                "data.augment.join_pairs joins text pairs, but data.text_pair_fraction is 0"
            )
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

"""Tasks: what one kind of training job puts into the engine (``clippo.train.engine``).

``ContrastiveTask``: CLIP-style pre-training of any clippo model (CLIPPO, CLIP*, 1T-CLIP, LiT)
on image/alt-text shards, with CLIPPO's text/text co-training and LiT's cached image features.
``ClassificationTask``: fine-tuning a model's text path with a classifier head on a labelled
split (the GLUE protocol).
``VQATask``: fine-tuning a model's image tower with a linear head over answers on VQA shards,
the question drawn above the image (CLIPPO's fused protocol).
``VQAGridTask``: the encoder as the backbone of an MCAN task model reading its grid and
question features (CLIP-ViL's protocol), the encoder frozen (features cached once) or tuned.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from clippo.convert import resample_posemb
from clippo.data import (
    ImageTransform,
    InMemoryShardDataset,
    MixedBatchDataset,
    ShardDataset,
    TextPairDataset,
)
from clippo.data.glue import ClassificationBatches, TaskSplit
from clippo.data.image_cache import (
    CachedImageShardDataset,
    ImageFeatureCache,
    build_image_feature_cache,
)
from clippo.data.vqa import (
    VQAShardDataset,
    read_vocabulary,
    split_pattern,
    vqa_inputs,
)
from clippo.factory import create_model
from clippo.losses import ContrastiveLoss
from clippo.models import ContrastiveModel, from_pretrained
from clippo.models.clippo import CLIPPO
from clippo.models.heads import (
    TextBackbone,
    TextClassifier,
    TextClassifierConfig,
    VQAClassifier,
    VQAClassifierConfig,
    image_tower,
    join_pair,
)
from clippo.models.vit import ViT, ViTConfig
from clippo.models.vqa_grid import VQAGridConfig, VQAGridModel
from clippo.render import UnifontRenderer
from clippo.train.config import ExperimentConfig, ModelConfig
from clippo.train.distributed import DistEnv, full_tensor, unwrap
from clippo.train.engine import StepOutput, make_loader

# --------------------------------------------------------------------------------------------
# Contrastive pre-training
# --------------------------------------------------------------------------------------------


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The model a config asks for: by name with options, or from a pretrained directory.

    With ``loss.name: sigmoid`` a contrastive model gets SigLIP's learned bias
    (``loss.bias_init``) unless it has one.
    """
    if cfg.model.init:
        model = from_pretrained(cfg.model.init)
        image_size = _check_init_options(model, cfg.model)
        if image_size is not None:
            model = resize_clippo(model, image_size)
    else:
        options = {**cfg.model.options, "grad_checkpointing": cfg.train.grad_checkpointing}
        if cfg.loss.name == "sigmoid" and not cfg.finetune.task:
            options.setdefault("bias_init", cfg.loss.bias_init)
        return create_model(cfg.model.name, **options)
    if cfg.loss.name == "sigmoid" and not cfg.finetune.task and model.logit_bias is None:
        model.add_logit_bias(cfg.loss.bias_init)
    return model


def _check_init_options(model: nn.Module, mc: ModelConfig) -> int | None:
    """``model.options`` beside ``model.init`` describe the loaded model: each must equal what
    its ``config.json`` holds (a ViT field or a model field), or ValueError names it; except
    ``image_size`` on a CLIPPO model, returned when it differs (the canvas to resize to)."""
    if not mc.options:
        return None
    loaded = model.cfg.to_dict() if hasattr(getattr(model, "cfg", None), "to_dict") else {}
    vit = loaded.get("vit", {})
    resize = None
    for key, value in mc.options.items():
        have = vit.get(key, loaded.get(key, "(not an option of this model)"))
        if key == "image_size" and isinstance(model, CLIPPO) and value != have:
            resize = int(value)
        elif value != have:
            raise ValueError(
                f"model.options.{key}={value!r} but {mc.init} has {have!r}: with model.init the "
                "options describe the loaded model; only a CLIPPO model's image_size may differ "
                "(its position embedding is resampled)"
            )
    return resize


def resize_clippo(model: CLIPPO, image_size: int) -> CLIPPO:
    """``model`` reading (and rendering text on) ``image_size`` canvases: each tower's position
    embedding resized as ``resize_vit`` does, every other weight the same."""
    vit = dataclasses.replace(model.cfg.vit, image_size=image_size)
    resized = CLIPPO(dataclasses.replace(model.cfg, vit=vit))
    resized.load_state_dict(_resample_pos_embeds(model.state_dict(), vit, ("image.", "text.")))
    return resized.to(next(model.parameters()).dtype)


def _prepare_image_feature_cache(
    cfg: ExperimentConfig, model: ContrastiveModel, env: DistEnv
) -> ImageFeatureCache:
    """The cache of ``model``'s image tower over ``cfg.data.train`` in ``cfg.data.image_cache``,
    built by the main process when missing or stale (other processes wait).

    Raises ValueError unless the image tower is locked and augmentation is off: otherwise the
    features change between steps or epochs and a cache would train on the wrong inputs.
    """
    if not model.image_locked:
        raise ValueError(
            "data.image_cache needs a locked image tower (a LiT model 'lit-L?-...'); "
            f"got {type(model).__name__}"
        )
    aug = cfg.data.augment
    if aug.flip or aug.random_resized_crop:
        raise ValueError(
            "data.image_cache needs data.augment off (flip: false, random_resized_crop: null): "
            "augmented images have no fixed features"
        )
    directory = cfg.data.image_cache
    tower_id = model.image_tower_id()
    device = next(model.parameters()).device
    return build_on_main(
        env,
        lambda: build_image_feature_cache(
            cfg.data.train,
            directory,
            lambda images: model.image_features(images.to(device)),
            tower_id=tower_id,
            image_size=model.image_size,
            batch_size=cfg.eval.batch_size,
        ),
    )


def build_on_main(env: DistEnv, build):
    """``build()`` on the main process first, then on the others after a barrier (where it
    finds what the main process wrote, e.g. a complete feature cache)."""
    if env.is_main:
        out = build()
    if env.world_size > 1:
        torch.distributed.barrier()
    if not env.is_main:
        out = build()
    return out


def train_batches(
    cfg: ExperimentConfig, model: ContrastiveModel, env: DistEnv, start_batch: int
) -> ShardDataset | MixedBatchDataset:
    """The infinite dataset of whole batches for this rank, positioned after ``start_batch``.

    With ``data.text_pair_fraction``, every batch also holds that share of text pairs
    (``MixedBatchDataset``), split over ranks like the images.
    """
    if cfg.data.batch_size % env.world_size:
        raise ValueError(
            f"data.batch_size {cfg.data.batch_size} is not divisible by {env.world_size} processes"
        )
    pairs = cfg.data.text_pairs_per_batch
    if pairs % env.world_size:
        raise ValueError(
            f"{pairs} text pairs per batch are not divisible by {env.world_size} processes"
        )
    aug = cfg.data.augment
    if aug.leading_spaces and not isinstance(model.text_transform, UnifontRenderer):
        raise ValueError(
            f"data.augment.leading_spaces={aug.leading_spaces} shifts rendered text; "
            f"{type(model).__name__} ({cfg.model.name}) reads text through a tokenizer: set it to 0"
        )
    transform = ImageTransform(
        model.image_size,
        train=True,
        flip=aug.flip,
        random_resized_crop=tuple(aug.random_resized_crop) if aug.random_resized_crop else None,
        seed=cfg.train.seed,
    )
    reader = InMemoryShardDataset if cfg.data.in_memory else ShardDataset
    if cfg.data.image_cache:  # a locked image tower's features, computed once (LiT)
        reader = functools.partial(
            CachedImageShardDataset, cache=_prepare_image_feature_cache(cfg, model, env)
        )
    # What the image/alt-text stream and the text-pair stream share: position, order, split.
    common = dict(
        text_transform=model.text_transform,  # rendered pixels or token ids
        train=True,
        seed=cfg.train.seed,
        shuffle_buffer=cfg.data.shuffle_buffer,
        start_batch=start_batch,
        rank=env.rank,
        world_size=env.world_size,
        leading_spaces=aug.leading_spaces,
    )
    per_rank = (cfg.data.batch_size - pairs) // env.world_size
    dataset = None  # text pairs only (text_pair_fraction 1): no image/alt-text stream
    if per_rank:
        dataset = reader(cfg.data.train, batch_size=per_rank, image_transform=transform, **common)
    if pairs:
        text_pairs = TextPairDataset(
            cfg.data.text_pairs,
            batch_size=pairs // env.world_size,
            join_pairs=aug.join_pairs,
            **common,
        )
        dataset = MixedBatchDataset(dataset, text_pairs)
    return dataset


def build_train_loader(
    cfg: ExperimentConfig, model: ContrastiveModel, env: DistEnv, start_batch: int
) -> DataLoader:
    """``train_batches`` in the engine's loader (``data.workers`` worker processes)."""
    return make_loader(train_batches(cfg, model, env, start_batch), cfg.data.workers)


def _split_inputs(inputs: dict, steps: int) -> list[dict]:
    """A batch's model inputs as ``steps`` micro-batches: image/alt-text rows and text-pair
    rows are each split into ``steps`` parts, so every micro-batch holds both kinds."""

    def parts(x: torch.Tensor, what: str) -> list[torch.Tensor]:
        if len(x) < steps:
            raise ValueError(
                f"train.accum_steps {steps} exceeds the {len(x)} {what} per process in a batch: "
                "every micro-batch needs at least one"
            )
        return list(torch.tensor_split(x, steps))

    columns = {}
    for key, value in inputs.items():
        if key == "text_pairs":
            a, b = (parts(x, "text pairs") for x in value)
            columns[key] = list(zip(a, b, strict=True))
        else:
            columns[key] = parts(value, "image/alt-text pairs")
    return [{k: v[i] for k, v in columns.items()} for i in range(steps)]


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class ContrastiveTask:
    """CLIP's contrastive loss over the global batch of image/text (and text/text) pairs."""

    def __init__(self, cfg: ExperimentConfig):
        if not cfg.data.train and cfg.data.text_pairs_per_batch < cfg.data.batch_size:
            raise ValueError(
                "data.train is not set: give the training shards, e.g. "
                "--set data.train='data/openclipart/train-{000000..000011}.tar' "
                "(`clippo data openclipart --out data/openclipart` builds them)"
            )
        self.cfg = cfg
        self.total_steps = cfg.effective_total_steps  # scaled for text pairs when asked
        self.loss_fn = ContrastiveLoss(cfg.loss.name, local=cfg.loss.local)

    def build_model(self) -> nn.Module:
        """The config's model (``build_model``)."""
        return build_model(self.cfg)

    def batches(self, model: ContrastiveModel, env: DistEnv, start_batch: int):
        """Image/alt-text batches (with text pairs, or cached image features, as configured)."""
        return train_batches(self.cfg, model, env, start_batch)

    def _inputs(self, batch: dict, device: torch.device) -> dict:
        """The model's keyword inputs of a batch, on ``device``."""
        inputs = {}
        if "image" in batch:
            # The cached reader (this task built it) puts tower features where images go.
            key = "image_features" if self.cfg.data.image_cache else "images"
            inputs[key] = batch["image"].to(device, non_blocking=True)
            inputs["text_input"] = batch["text_input"].to(device, non_blocking=True)
        if "pair_text_a_input" in batch:
            inputs["text_pairs"] = (
                batch["pair_text_a_input"].to(device, non_blocking=True),
                batch["pair_text_b_input"].to(device, non_blocking=True),
            )
        return inputs

    def _loss(self, model: nn.Module, zimg, ztxt, scale) -> tuple[torch.Tensor, dict]:
        bias = unwrap(model).logit_bias if self.loss_fn.kind == "sigmoid" else None
        return self.loss_fn(zimg.float(), ztxt.float(), scale.float(), bias)

    def loss(self, model: nn.Module, batch: dict, device: torch.device, autocast) -> StepOutput:
        """The contrastive loss of one batch; text pairs' rows follow the image rows."""
        with autocast():
            zimg, ztxt, scale = model(**self._inputs(batch, device))
        loss, extras = self._loss(model, zimg, ztxt, scale)
        return StepOutput(loss, zimg.shape[0], {"accuracy": extras["accuracy"]})

    def accumulate(
        self,
        model: nn.Module,
        batch: dict,
        device: torch.device,
        autocast,
        steps: int,
        sync_gradients: Callable[[bool], None] | None = None,
    ) -> StepOutput:
        """GradCache: the whole batch's loss and gradient in ``steps`` micro-batches.

        Pass 1 embeds every micro-batch without gradients; the loss over all embeddings gives
        the gradient of each embedding (and of the temperature and bias); pass 2 re-runs each
        micro-batch with gradients, with the random state pass 1 had (dropout, stochastic
        layers), and backpropagates its cached embedding gradient. Leaves the gradients in
        ``.grad`` (on this process: the engine averages them over processes).
        ``sync_gradients(last)`` (FSDP's ``set_requires_gradient_sync``) is called before each
        micro-batch of pass 2, true for the last one only.
        """
        micro = _split_inputs(self._inputs(batch, device), steps)
        states, zimgs, ztxts = [], [], []
        with torch.no_grad():
            for inputs in micro:
                states.append(_rng_state(device))
                with autocast():
                    zimg, ztxt, _ = model(**inputs)
                zimgs.append(zimg.float())
                ztxts.append(ztxt.float())
        zimg = torch.cat(zimgs).requires_grad_()
        ztxt = torch.cat(ztxts).requires_grad_()
        loss, extras = self._loss(model, zimg, ztxt, unwrap(model).logit_scale.exp())
        loss.backward()
        sizes = [len(z) for z in zimgs]
        grads = zip(zimg.grad.split(sizes), ztxt.grad.split(sizes), strict=True)
        for i, (inputs, state, (gimg, gtxt)) in enumerate(zip(micro, states, grads, strict=True)):
            if sync_gradients is not None:
                sync_gradients(i == steps - 1)
            _set_rng_state(device, state)
            with autocast():
                zimg_m, ztxt_m, _ = model(**inputs)
            torch.autograd.backward([zimg_m.float(), ztxt_m.float()], [gimg, gtxt])
        return StepOutput(loss.detach(), zimg.shape[0], {"accuracy": extras["accuracy"]})

    def logged(self, model: ContrastiveModel) -> dict[str, float]:
        """The learned temperature (and the sigmoid loss's bias)."""
        out = {"temperature": full_tensor(model.logit_scale).exp().item()}
        if self.loss_fn.kind == "sigmoid":
            out["bias"] = full_tensor(model.logit_bias).item()
        return out


# --------------------------------------------------------------------------------------------
# Classification fine-tuning
# --------------------------------------------------------------------------------------------


class ClassificationTask:
    """Fine-tunes a model's text path and a fresh MLP head on one labelled split (the GLUE
    protocol): cross-entropy over the classes, or squared error for regression.

    ``train`` is the split, ``labels`` its encoded labels (``clippo.data.glue.encode_labels``),
    ``vocab`` the class names (empty for regression). The model is ``model.init`` (a
    ``from_pretrained`` directory) or ``model.name`` with ``model.options`` (random init).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        train: TaskSplit,
        labels: torch.Tensor,
        vocab: tuple[str, ...],
    ):
        if not len(train):
            raise ValueError("the training split is empty")
        self.cfg, self.train, self.labels, self.vocab = cfg, train, labels, vocab
        steps_per_epoch = math.ceil(len(train) / cfg.data.batch_size)
        self.total_steps = max(1, steps_per_epoch * cfg.finetune.epochs)
        self.loss_fn = nn.MSELoss() if not vocab else nn.CrossEntropyLoss()

    def build_model(self) -> TextClassifier:
        """Backbone (pretrained or random) and a fresh head."""
        ft = self.cfg.finetune
        backbone = TextBackbone(build_model(self.cfg), ft.representation)
        head = TextClassifierConfig(
            num_outputs=len(self.vocab) or 1, hidden=ft.hidden, labels=list(self.vocab)
        )
        return TextClassifier(backbone, head)

    def batches(self, model: TextClassifier, env: DistEnv, start_batch: int):
        """The training split in BERT's epoch order, texts preprocessed in the workers."""
        return ClassificationBatches(
            self.train,
            self.labels,
            batch_size=self.cfg.data.batch_size,
            epochs=self.cfg.finetune.epochs,
            text_transform=model.backbone.text_transform,
            join=join_pair,
            seed=self.cfg.train.seed,
            start_batch=start_batch,
            rank=env.rank,
            world_size=env.world_size,
        )

    def loss(self, model: nn.Module, batch: dict, device: torch.device, autocast) -> StepOutput:
        """Cross-entropy (or squared error) of the head's outputs."""
        labels = batch["label"].to(device)
        with autocast():
            out = model(batch["text_input"].to(device, non_blocking=True))
        loss = self.loss_fn(out.float(), labels)
        metrics = {}
        if self.vocab:
            metrics["accuracy"] = (out.argmax(-1) == labels).float().mean()
        return StepOutput(loss, len(labels), metrics)

    def logged(self, model: nn.Module) -> dict[str, float]:
        """Nothing beyond the engine's figures."""
        return {}


# --------------------------------------------------------------------------------------------
# VQA fine-tuning, fused protocol
# --------------------------------------------------------------------------------------------


def resize_vit(vit: ViT, image_size: int) -> ViT:
    """``vit`` reading ``image_size`` images: a learned position embedding is resampled
    (bilinear, big_vision's ``resample_posemb``), a sin-cos one rebuilt; same weights else."""
    if image_size == vit.cfg.image_size:
        return vit
    cfg = dataclasses.replace(vit.cfg, image_size=image_size)
    resized = ViT(cfg)
    resized.load_state_dict(_resample_pos_embeds(vit.state_dict(), cfg))
    return resized


def _resample_pos_embeds(state: dict, cfg: ViTConfig, prefixes: tuple[str, ...] = ("",)) -> dict:
    """``state`` with each ``{prefix}pos_embed`` it holds resampled to ``cfg``'s grid when
    learned (bilinear, big_vision's ``resample_posemb``); a sin-cos table is not in the state:
    the model that loads it builds its own."""
    if cfg.posemb == "learn":
        for key in (f"{prefix}pos_embed" for prefix in prefixes):
            if key in state:
                state[key] = resample_posemb(state[key], cfg.grid)
    return state


def render_settings(model: nn.Module) -> dict:
    """A model's Unifont renderer settings (CLIPPO's, e.g. the 9.0.06 glyphs of a converted
    checkpoint), without the size; the defaults for models that render no text."""
    render = getattr(getattr(model, "cfg", None), "render", None) or {}
    return {k: v for k, v in render.items() if k != "image_size"}


class VQATask:
    """CLIPPO's fused VQA protocol (appendix A, B.1): the image tower of ``model.init`` (any
    clippo model directory) or of ``model.name`` (random init) reads the question drawn in
    16-px lines above the image, a fresh linear layer maps its pooled features to the answers,
    and the sum over answers of the sigmoid cross-entropy with the soft targets (each answer's
    VQA score) is minimised. ``finetune.image_size`` resamples the position embedding; the run
    lasts ``train.total_steps`` steps over the ``train`` shards of ``finetune.data``.
    """

    protocol = "fused"

    def __init__(self, cfg: ExperimentConfig):
        ft = cfg.finetune
        if ft.protocol != self.protocol:
            raise ValueError(
                f"finetune.protocol {ft.protocol!r}: {type(self).__name__} runs {self.protocol!r}"
            )
        if not ft.data:
            raise ValueError("finetune.data is required: a folder of `clippo data vqa` (--data)")
        self.cfg = cfg
        self.vocabulary = read_vocabulary(ft.data)
        self.train_urls = split_pattern(ft.data, "train")
        self.total_steps = cfg.train.total_steps

    def build_model(self) -> VQAClassifier:
        """The tower (pretrained or random) at the fine-tuning resolution, and a fresh head."""
        ft = self.cfg.finetune
        source = build_model(self.cfg)
        tower = image_tower(source).requires_grad_(True)  # a LiT tower may come locked
        if ft.image_size and isinstance(tower, ViT):
            tower = resize_vit(tower, ft.image_size)
        elif ft.image_size and ft.image_size != source.image_size:
            raise ValueError(
                f"finetune.image_size {ft.image_size}: only a ViT tower is resized; build the "
                f"model at that size instead (it reads {source.image_size} px)"
            )
        head = VQAClassifierConfig(
            answers=list(self.vocabulary.answers),
            max_lines=ft.max_lines,
            render=render_settings(source),
            image_size=getattr(source, "image_size", 224),
        )
        return VQAClassifier(tower, head)

    def batches(self, model: VQAClassifier, env: DistEnv, start_batch: int):
        """The training questions on their fused canvases, soft targets beside them."""
        return self._reader(
            env,
            start_batch,
            renderer=UnifontRenderer(**model.cfg.render),
            image_size=model.image_size,
            max_lines=model.cfg.max_lines,
        )

    def _reader(self, env: DistEnv, start_batch: int, **options) -> VQAShardDataset:
        """The training split for this process, positioned after ``start_batch`` batches."""
        cfg = self.cfg
        if cfg.data.batch_size % env.world_size:
            raise ValueError(
                f"data.batch_size {cfg.data.batch_size} is not divisible by {env.world_size} "
                "processes"
            )
        return VQAShardDataset(
            self.train_urls,
            vocabulary=self.vocabulary,
            batch_size=cfg.data.batch_size // env.world_size,
            train=True,
            seed=cfg.train.seed,
            shuffle_buffer=cfg.data.shuffle_buffer,
            start_batch=start_batch,
            rank=env.rank,
            world_size=env.world_size,
            **options,
        )

    def loss(self, model: nn.Module, batch: dict, device: torch.device, autocast) -> StepOutput:
        """Sigmoid cross-entropy summed over answers, averaged over questions (big_vision's
        ``sigmoid_xent``); ``vqa_score`` is the soft target of the top answer."""
        target = batch["target"].to(device, non_blocking=True)
        with autocast():
            logits = model(**vqa_inputs(batch, device))
        logits = logits.float()
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).mean()
        score = target.gather(1, logits.argmax(-1, keepdim=True)).mean()
        return StepOutput(loss, len(target), {"vqa_score": score})

    def logged(self, model: nn.Module) -> dict[str, float]:
        """Nothing beyond the engine's figures."""
        return {}


# --------------------------------------------------------------------------------------------
# VQA fine-tuning, grid protocol (the encoder as a task model's backbone)
# --------------------------------------------------------------------------------------------


def grid_protocol_config(cfg: ExperimentConfig, out: str | Path) -> ExperimentConfig:
    """The grid protocol's derived settings: the feature cache in ``OUT/feature_cache`` unless
    ``finetune.feature_cache`` names one, and with an unfrozen encoder its learning-rate
    multiplier ``finetune.encoder_lr_mult`` (``optim.lr_mults`` on ``backbone.*``)."""
    ft = cfg.finetune
    cache = ft.feature_cache or str(Path(out) / "feature_cache")
    optim = cfg.optim
    if not ft.freeze_encoder and ft.encoder_lr_mult != 1.0:
        mults = {r"backbone\..*": ft.encoder_lr_mult, **optim.lr_mults}
        optim = dataclasses.replace(optim, lr_mults=mults)
    ft = dataclasses.replace(ft, feature_cache=cache)
    return dataclasses.replace(cfg, finetune=ft, optim=optim)


class VQAGridTask(VQATask):
    """CLIP-ViL's protocol (section 3.1) with MCAN's fusion (``clippo.models.vqa_grid``): the
    grid features of the image tower of ``model.init`` (any clippo model directory) or of
    ``model.name`` (random init), the question through the model's own text side
    (``finetune.question``: ``encoder``; ``auto`` picks it for CLIPPO, CLIP* and 1T-CLIP) or a
    learned byte embedding (``bytes``; ``auto``'s choice for a plain ViT or LiT), the fusion
    and the classifier trained with the sum over answers of the sigmoid cross-entropy with the
    soft targets. With ``finetune.freeze_encoder`` (default) the encoder's grid and question
    features are computed once per distinct image and question and read from
    ``finetune.feature_cache``/train (``VQAGridModel.feature_caches``); otherwise the encoder
    trains too, at ``finetune.encoder_lr_mult`` times the learning rate
    (``grid_protocol_config``)."""

    protocol = "grid"

    def __init__(self, cfg: ExperimentConfig):
        super().__init__(cfg)
        ft = cfg.finetune
        if ft.image_size:
            raise ValueError(
                "finetune.image_size is the fused protocol's canvas; the grid protocol reads "
                "the tower at its own size (build a model by name at another size instead)"
            )
        if ft.freeze_encoder and not ft.feature_cache:
            raise ValueError(
                "finetune.feature_cache: a folder for the frozen encoder's features is required "
                "(`clippo finetune vqa` uses OUT/feature_cache)"
            )

    def build_model(self) -> VQAGridModel:
        """The backbone (pretrained or random), frozen or not, and a fresh fusion and head."""
        ft = self.cfg.finetune
        source = build_model(self.cfg)
        question = ft.question
        if question == "auto":
            question = "encoder" if getattr(source, "supports_text_tokens", False) else "bytes"
        backbone = source
        if question == "bytes":  # only the image tower is used: keep only it
            backbone = image_tower(source)
            if isinstance(backbone, ViT):
                backbone.head = None  # the contrastive projection reads pooled features
                backbone.cfg.num_classes = 0
        backbone.requires_grad_(True)  # a LiT tower may come locked; the model freezes it
        head = VQAGridConfig(
            answers=list(self.vocabulary.answers),
            question=question,
            fusion=dataclasses.replace(ft.fusion),
            freeze_encoder=ft.freeze_encoder,
        )
        return VQAGridModel(backbone, head)

    def batches(self, model: VQAGridModel, env: DistEnv, start_batch: int):
        """The training questions: images resized to the tower's size and the question as the
        model reads it, or the frozen encoder's cached features of both."""
        if not model.cfg.freeze_encoder:
            return self._reader(
                env,
                start_batch,
                image_mode="image",
                image_size=model.image_size,
                question_transform=model.question_transform,
            )
        directory = Path(self.cfg.finetune.feature_cache) / "train"
        batch_size = self.cfg.eval.batch_size
        images, questions = build_on_main(
            env, lambda: model.feature_caches(self.train_urls, directory, batch_size=batch_size)
        )
        return self._reader(
            env,
            start_batch,
            image_mode="image",
            image_size=model.image_size,
            image_cache=images,
            question_cache=questions,
            question_transform=None if questions is not None else model.question_transform,
        )

"""Training from pre-computed image features (LiT appendix E): checks and builds the cache."""

from __future__ import annotations

import torch

from clippo.data.image_cache import ImageFeatureCache, build_image_feature_cache
from clippo.train.config import ExperimentConfig
from clippo.train.distributed import DistEnv


def prepare_image_feature_cache(
    cfg: ExperimentConfig, model: torch.nn.Module, env: DistEnv
) -> ImageFeatureCache:
    """The cache of ``model``'s image tower over ``cfg.data.train`` in ``cfg.data.image_cache``,
    built by the main process when missing or stale (other processes wait).

    Raises ValueError unless the image tower is locked and augmentation is off: otherwise the
    features change between steps or epochs and a cache would train on the wrong inputs.
    """
    if not getattr(model, "image_locked", False):
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

    def build() -> ImageFeatureCache:
        return build_image_feature_cache(
            cfg.data.train,
            directory,
            lambda images: model.image_features(images.to(device)),
            tower_id=tower_id,
            image_size=model.image_size,
            batch_size=cfg.eval.batch_size,
        )

    if env.is_main:
        cache = build()
    if env.world_size > 1:
        torch.distributed.barrier()
    if not env.is_main:
        cache = build()  # finds the complete cache the main process wrote
    return cache

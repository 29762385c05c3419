"""What every clippo model shares: the temperature, the open_clip interface, and the text path.

A model defines ``text_transform`` (str -> what its text path reads: rendered pixels or token
ids; picklable, so DataLoader workers run it), ``encode_text_input`` (that input, stacked ->
embeddings) and ``text_features`` (the same input -> pooled features before the head).
Everything else follows from here, the same for CLIPPO, CLIP*, 1T-CLIP and LiT.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from clippo.data.transforms import ImageTransform, load_image
from clippo.models.io import PretrainedModel
from clippo.prompts import build_zeroshot_classifier, resolve_templates

ImageInput = torch.Tensor | np.ndarray | Image.Image | str | os.PathLike


def l2_normalize(z: torch.Tensor) -> torch.Tensor:
    """Unit rows; big_vision divides by (norm + 1e-8) rather than clamping the norm."""
    return z / (z.norm(dim=-1, keepdim=True) + 1e-8)


def check_texts(texts: list[str] | str) -> list[str]:
    """``texts`` as a non-empty list of strings; a clear error for anything else."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes | bytearray):
        raise TypeError("texts must be str or a list of str, got bytes: decode them first")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to encode: pass at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return texts


def to_weights(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` on ``weight``'s device and, if floating, in its dtype: a model cast to bf16 or fp16
    reads fp32 images and features (integer input is left for the model to refuse)."""
    return x.to(weight.device, weight.dtype if x.is_floating_point() else x.dtype)


def _check_pixels(x: torch.Tensor) -> torch.Tensor:
    """A ``(N, 3, H, W)`` tensor as model input: uint8 scaled to [-1, 1]; floats must already
    be in [-1, 1] (a [0, 1] batch is accepted with a warning: it is probably unscaled)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W) or (3, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise TypeError(f"images must be float in [-1, 1] or uint8 in 0..255, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError("no images to encode: the batch is empty")
    lo, hi = x.min().item(), x.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("images contain NaN or inf")
    if lo < -1.01 or hi > 1.01:
        raise ValueError(
            f"float images must lie in [-1, 1] (clippo's value range, as big_vision's "
            f"value_range(-1, 1)); got values in [{lo:.3g}, {hi:.3g}]: pass uint8 images, "
            f"or scale 0..255 by x / 127.5 - 1 and 0..1 by x * 2 - 1"
        )
    if lo >= 0.0 and hi > 0.0:
        warnings.warn(
            f"images lie in [{lo:.3g}, {hi:.3g}], no negative value: clippo reads [-1, 1], so "
            "these may be unscaled [0, 1] images (use x * 2 - 1); ignore this for images that "
            "are genuinely all bright",
            stacklevel=3,
        )
    return x


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters())


def state_fingerprint(module: nn.Module) -> str:
    """A hash of a module's weights and buffers (names, dtypes, shapes, bytes): equal for equal
    functions of the same class, so caches of its outputs can be keyed by it."""
    h = hashlib.blake2b(digest_size=8)
    h.update(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ContrastiveModel(PretrainedModel):
    """Base of the image/text models: ``self.image`` embeds images, ``self.t`` is log-scale.

    Capabilities are declared here and overridden by the models that have them, such as
    ``image_locked`` (a frozen image tower whose features can be cached). Every model
    co-trains on text/text pairs (``forward``'s ``text_pairs``).
    """

    supports_text_tokens = False  # text_tokens: per-token text features (VQA grid protocol)

    @property
    def image_locked(self) -> bool:
        """Whether the image tower is frozen, so its features can be computed once."""
        return False

    def init_temperature(self, init: float, bias_init: float | None = None) -> None:
        """The learned temperature ``t``, stored as log(init) (the paper: init 10), and with
        ``bias_init`` SigLIP's learned logit bias ``b`` (big_vision: -10)."""
        self.t = nn.Parameter(torch.tensor([math.log(init)]))
        if bias_init is not None:
            self.b = nn.Parameter(torch.tensor([float(bias_init)]))

    def add_logit_bias(self, init: float) -> None:
        """Gives a model built without one SigLIP's logit bias (kept in its config.json)."""
        self.cfg.bias_init = init
        self.b = nn.Parameter(torch.tensor([float(init)], device=self.t.device))

    @property
    def logit_bias(self) -> nn.Parameter | None:
        """The learned logit bias of the sigmoid loss, or None (softmax-trained models)."""
        return getattr(self, "b", None)

    @property
    def logit_scale(self) -> nn.Parameter:
        """The learned log-scale ``t`` (open_clip's meaning): similarities are multiplied by
        ``logit_scale.exp()``, 10 at the paper's initialisation."""
        return self.t

    @property
    def image_size(self) -> int:
        """Side of the square images the image path reads."""
        return self.cfg.vit.image_size

    @property
    def text_transform(self):
        raise NotImplementedError

    def encode_text_input(self, text_input: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def text_features(self, text_input: torch.Tensor) -> torch.Tensor:
        """The text path's pooled features before its head (``pre_logits``), unnormalised: what
        fine-tuning on language tasks reads (``clippo.eval.glue``)."""
        raise NotImplementedError

    def text_tokens(self, text_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text path's output tokens before pooling ``(N, L, D)`` and the mask of those
        that hold text ``(N, L)`` bool (True: text; False: padding), for what
        ``text_transform`` makes (stacked). Models with ``supports_text_tokens`` have it."""
        raise ValueError(f"{type(self).__name__} gives no per-token text features")

    @property
    def image_transform(self) -> ImageTransform:
        """PIL image -> ``(3, S, S)`` floats in [-1, 1]: the one evaluation preprocessing
        (shorter side resized to ``image_size`` with bicubic filtering, centre crop,
        transparency on white) that evaluation, ``clippo search``/``embed`` and
        ``create_model_and_transforms`` share."""
        return ImageTransform(self.image_size, train=False)

    def preprocess_images(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Images as a user holds them -> the float ``(N, 3, S, S)`` batch in [-1, 1].

        Takes PIL images, file paths, ``(H, W, 3)`` uint8 numpy arrays (preprocessed with
        ``image_transform``), and tensors: float ``(N, 3, S, S)`` or ``(3, S, S)`` in [-1, 1],
        or uint8 in 0..255 (scaled to [-1, 1]); tensors are not resized. A list may mix them.
        """
        if isinstance(images, torch.Tensor):
            return _check_pixels(images[None] if images.ndim == 3 else images)
        if isinstance(images, np.ndarray | Image.Image | str | os.PathLike):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("no images to encode: pass at least one image")
        transform = self.image_transform
        rows = []
        for i, image in enumerate(images):
            if isinstance(image, torch.Tensor):
                if image.ndim != 3:
                    raise ValueError(
                        f"images[{i}]: a tensor in a list must be one (3, H, W) image, "
                        f"got shape {tuple(image.shape)}"
                    )
                rows.append(_check_pixels(image[None])[0])
                continue
            if isinstance(image, str | os.PathLike):
                # As the shard reader and `clippo embed` decode: large JPEGs at reduced scale.
                image = load_image(image, draft_size=transform.size)
            elif isinstance(image, np.ndarray):
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
                    raise ValueError(
                        f"images[{i}]: a numpy image must be uint8 (H, W, 3|4), got "
                        f"{image.dtype} {image.shape}"
                    )
                image = Image.fromarray(image)
            elif not isinstance(image, Image.Image):
                raise TypeError(
                    f"images[{i}] is {type(image).__name__}: pass PIL images, file paths, "
                    "numpy uint8 arrays or tensors"
                )
            rows.append(transform(image))
        return torch.stack(rows)

    def encode_image(
        self, images: ImageInput | Sequence[ImageInput], normalize: bool = True
    ) -> torch.Tensor:
        """Embeds images: float ``(N, 3, H, W)`` tensors in [-1, 1], or anything
        ``preprocess_images`` takes (PIL images, file paths, uint8 tensors or arrays)."""
        return self.embed_pixels(self.preprocess_images(images), normalize)

    def embed_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds a float ``(N, 3, H, W)`` batch in [-1, 1] without checking it (training)."""
        z = self.image(to_weights(pixels, self.t))
        return l2_normalize(z) if normalize else z

    @torch.no_grad()
    def classify(
        self,
        images: ImageInput | Sequence[ImageInput],
        class_names: Sequence[str],
        templates: str | Sequence[str] = "imagenet",
    ) -> torch.Tensor:
        """Zero-shot classification in one call: ``(N, C)`` probabilities over ``class_names``.

        Each class is CLIP's prompt ensemble over ``templates`` (a packaged set's name,
        ``imagenet``'s 80 photo templates by default, ``openclipart`` for clip art, or a list
        like ``["a photo of a {}."]``); probabilities are the softmax of the scaled cosines.
        """
        if isinstance(class_names, str):
            raise TypeError("class_names must be a list of class names, got one str")
        class_names = check_texts(list(class_names))
        weights = build_zeroshot_classifier(
            self.encode_text, class_names, resolve_templates(templates)
        ).to(self.t.device)
        zimg = self.encode_image(images).float()
        return (self.logit_scale.exp().float() * zimg @ weights.T).softmax(dim=-1)

    def preprocess_text(self, texts: list[str] | str) -> torch.Tensor:
        """Strings -> the stacked input of the text path (``text_transform`` of each)."""
        return torch.from_numpy(np.ascontiguousarray(self.text_transform(texts)))

    def encode_text(
        self, texts: list[str] | str, normalize: bool = True, batch_size: int = 256
    ) -> torch.Tensor:
        """Embeds strings, any language: ``text_transform``, then the text path.

        Works through ``batch_size`` texts at a time, so a long list costs no more memory per
        text than a short one.
        """
        texts = check_texts(texts)
        chunks = [
            self.encode_text_input(self.preprocess_text(texts[i : i + batch_size]), normalize)
            for i in range(0, len(texts), batch_size)
        ]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def encode_image_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds pre-computed image-tower features (models with a lockable image tower)."""
        raise ValueError(f"{type(self).__name__} takes images, not pre-computed image features")

    def forward(
        self,
        images: torch.Tensor | None = None,
        text_input: torch.Tensor | None = None,
        text_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        image_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both embeddings and the logit scale, for the contrastive loss.

        ``image_features`` replaces ``images`` with a locked tower's cached features (LiT).
        ``text_pairs``: ``(text_a, text_b)`` inputs of the text path for text/text co-training
        (CLIPPO section 3; for the token models, token ids on both sides, as the paper's 1T-CLIP).
        Both sides go through the text path; their rows follow the image/alt-text rows, so
        ``zimg = [images; text_a]`` and ``ztxt = [alt-texts; text_b]``. Images and alt-texts
        may be ``None`` together: a batch of text pairs only.
        """
        zimg = None
        if image_features is not None:
            zimg = self.encode_image_features(image_features)
        elif images is not None or text_pairs is None:
            zimg = self.embed_pixels(images)
        if text_pairs is None:
            return zimg, self.encode_text_input(text_input), self.logit_scale.exp()
        text_a, text_b = text_pairs
        texts = text_b if text_input is None else torch.cat([text_input, text_b])
        rows = texts.shape[0]
        # One pass over every text of the batch.
        z = self.encode_text_input(torch.cat([texts, text_a]))
        zimg = z[rows:] if zimg is None else torch.cat([zimg, z[rows:]])
        return zimg, z[:rows], self.logit_scale.exp()

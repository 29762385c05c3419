"""What every clippo model shares: the temperature, the open_clip interface, and the text path.

A model defines ``text_transform`` (str -> what its text path reads: rendered pixels or token
ids; picklable, so DataLoader workers run it), ``encode_text_input`` (that input, stacked ->
embeddings) and ``text_features`` (the same input -> pooled features before the head).
Everything else follows from here, the same for CLIPPO, CLIP*, 1T-CLIP and LiT.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn


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


class ContrastiveModel(nn.Module):
    """Base of the image/text models: ``self.image`` embeds images, ``self.t`` is log-scale.

    Capabilities are declared here and overridden by the models that have them:
    ``supports_text_pairs`` (text/text co-training, both sides through the text path) and
    ``image_locked`` (a frozen image tower whose features can be cached).
    """

    supports_text_pairs = False

    @property
    def image_locked(self) -> bool:
        """Whether the image tower is frozen, so its features can be computed once."""
        return False

    def init_temperature(self, init: float) -> None:
        """The learned temperature ``t``, stored as log(init) (the paper: init 10)."""
        self.t = nn.Parameter(torch.tensor([math.log(init)]))

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

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeds float images ``(N, 3, H, W)`` in [-1, 1]."""
        z = self.image(to_weights(images, self.t))
        return l2_normalize(z) if normalize else z

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

        ``image_features`` replaces ``images`` with a locked tower's cached features (LiT);
        ``text_pairs`` adds text/text pairs (models with ``supports_text_pairs``).
        """
        if text_pairs is not None:
            raise ValueError(
                f"text/text pairs need a model that reads both sides as pixels (CLIPPO); "
                f"got {type(self).__name__}"
            )
        if image_features is not None:
            zimg = self.encode_image_features(image_features)
        else:
            zimg = self.encode_image(images)
        return zimg, self.encode_text_input(text_input), self.logit_scale.exp()

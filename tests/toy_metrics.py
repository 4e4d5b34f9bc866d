"""Small deterministic metrics for engine tests, put into the metric registry per test.

``ToyPairMetric`` compares pixels directly; the ``Toy*Embedding`` metrics are a real torch
module (a fixed random projection of 16x16 pixels) that count how many images they embed,
so tests can see what the reference cache saved. Registering replaces registry entries
only for the duration of a test (``register``) or of a subprocess (``install``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from unified_bench import metrics as registry
from unified_bench.core.errors import WeightsNotFoundError
from unified_bench.metrics import EmbeddingMetric, MetricInfo, MetricSpec, PairInput, PairMetric, PairScore

EMBED_SIZE = 16


class ToyPairMetric(PairMetric):
    """1 - mean absolute pixel difference (reconstruction resized to the reference)."""

    name = "toy-pair"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        self.checkpoint = checkpoint

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(self.name, self.kind, self.checkpoint, None, {"compare": "mean abs diff at reference size"})

    def score_pairs(self, pairs: Sequence[PairInput]) -> list[PairScore]:
        out = []
        for pair in pairs:
            ref = np.asarray(pair.reference, dtype=np.float64)
            recon = np.asarray(pair.reconstruction.resize(pair.reference.size, Image.BILINEAR), dtype=np.float64)
            out.append(PairScore(1.0 - float(np.abs(ref - recon).mean()) / 255.0))
        return out


class ToyEmbedding(EmbeddingMetric):
    """Fixed random linear projection of a 16x16 thumbnail; weights depend only on ``seed``."""

    name = "toy-embed"
    seed: ClassVar[int] = 0
    #: images per ``embed`` call, across all instances (the engine builds one per run)
    calls: ClassVar[list[int]] = []

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        super().__init__(device)
        self.checkpoint = checkpoint or "toy"
        generator = torch.Generator().manual_seed(self.seed)
        self.module = torch.nn.Linear(3 * EMBED_SIZE * EMBED_SIZE, 32)
        with torch.no_grad():
            self.module.weight.copy_(torch.randn(self.module.weight.shape, generator=generator))
            self.module.bias.copy_(torch.randn(self.module.bias.shape, generator=generator))

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(self.name, self.kind, self.checkpoint, f"seed{self.seed}", {"size": EMBED_SIZE})

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        arrays = [np.asarray(im.resize((EMBED_SIZE, EMBED_SIZE), Image.BILINEAR), dtype=np.float32) for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0 - 0.5

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels.flatten(1))

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        type(self).calls.append(int(pixels.shape[0]))
        return super().embed_pixels(pixels)


class ToyClip(ToyEmbedding):
    name = "clip"
    seed = 1
    calls: ClassVar[list[int]] = []


class ToyDinov2(ToyEmbedding):
    name = "dinov2"
    seed = 2
    calls: ClassVar[list[int]] = []


class ToyDinov3(ToyEmbedding):
    name = "dinov3"
    seed = 3
    calls: ClassVar[list[int]] = []


class ToyLongclip(ToyEmbedding):
    name = "longclip"
    seed = 4
    calls: ClassVar[list[int]] = []


class ToySiglip(ToyEmbedding):
    name = "siglip"
    seed = 5
    calls: ClassVar[list[int]] = []


TOY_CLASSES = {cls.name: cls for cls in (ToyPairMetric, ToyEmbedding, ToyClip, ToyDinov2, ToyDinov3, ToyLongclip, ToySiglip)}


def spec(name: str) -> MetricSpec:
    cls = TOY_CLASSES[name]
    return MetricSpec(name, f"{__name__}:{cls.__name__}", "toy", f"test-only {cls.__name__}", offline=True)


def register(monkeypatch, *names: str) -> None:
    """Replace registry entries ``names`` by toy metrics for one test; reset call counters."""
    for name in names:
        monkeypatch.setitem(registry._BUILTIN, name, spec(name))
        cls = TOY_CLASSES[name]
        if issubclass(cls, ToyEmbedding):
            cls.calls = []


def install(*names: str) -> None:
    """Same as ``register`` for a subprocess that runs the CLI."""
    for name in names:
        registry._BUILTIN[name] = spec(name)


class ToyFragileEmbedding(ToyEmbedding):
    """Fails on any image smaller than 2x2, to show one bad sample does not sink its batch."""

    name = "toy-fragile"
    calls: ClassVar[list[int]] = []

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if any(min(im.size) < 2 for im in images):
            raise ValueError("image smaller than 2x2")
        return super().preprocess(images)


class ToyMissingWeights(ToyEmbedding):
    """A metric whose checkpoint is never there."""

    name = "toy-missing"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        raise WeightsNotFoundError(f"metric toy-missing: checkpoint {checkpoint!r} not found; pass --checkpoint toy-missing=PATH")


TOY_CLASSES.update({cls.name: cls for cls in (ToyFragileEmbedding, ToyMissingWeights)})

"""The metric contract.

Two kinds of metric score a (reference, reconstruction) pair:

- :class:`EmbeddingMetric` embeds images with a backbone (``embed -> [N, D]``, L2-normalised);
  the pair score is the cosine similarity. The engine batches, caches reference embeddings
  on disk and loads one backbone at a time.
- :class:`PairMetric` scores pairs directly (SSIM, PSNR, the Shapes oracle). It may also
  report named sub-scores (e.g. per-attribute F1), stored as ``"<metric>.<sub>"``.

A metric is built by :func:`unified_bench.metrics.build_metric`; the engine calls ``close()``
when it is done so the next backbone can use the memory.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from unified_bench.metrics.graph import FusedForward


@dataclass(frozen=True)
class MetricInfo:
    """What was used to compute a metric; recorded in every run record."""

    name: str
    kind: str  # "embedding" | "pair"
    checkpoint: str | None = None  # hub id or local path actually loaded
    revision: str | None = None  # hub commit hash, or sha256 of a local weights file
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    dtype: str | None = None

    def cache_key(self) -> str:
        """Stable digest of everything that changes a reference embedding."""
        payload = json.dumps(
            {
                "name": self.name,
                "checkpoint": self.checkpoint,
                "revision": self.revision,
                "preprocessing": self.preprocessing,
                "dtype": self.dtype,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "checkpoint": self.checkpoint,
            "revision": self.revision,
            "preprocessing": dict(self.preprocessing),
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class PairInput:
    """One pair handed to a PairMetric. ``meta`` carries dataset ground truth (e.g. a scene)."""

    sample_id: str
    reference: Image.Image
    reconstruction: Image.Image
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PairScore:
    """A PairMetric's verdict on one pair: the score, optional sub-scores, or an error."""

    value: float | None
    sub_scores: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


class Metric(ABC):
    """Common surface of every metric."""

    #: registry name, e.g. "clip"
    name: ClassVar[str]
    kind: ClassVar[str]
    #: whether the metric's score is a similarity in [-1, 1] (averaged as such) or another unit
    unit: ClassVar[str] = "cosine"

    @property
    @abstractmethod
    def info(self) -> MetricInfo: ...

    def close(self) -> None:
        """Release model memory; the engine calls this before loading the next metric."""


class EmbeddingMetric(Metric):
    kind = "embedding"
    #: the fused CPU graph that ``forward`` runs through, once ``enable_fusion`` made one
    fused: FusedForward | None = None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    def pipelined(self) -> bool:
        """Whether ``embed == embed_pixels(preprocess(...))`` with per-image preprocessing,
        so the engine may preprocess on worker threads (False: it calls ``embed``)."""
        return True

    def enable_fusion(self) -> bool:
        """Run ``forward`` through a fused CPU graph from now on (see
        :mod:`unified_bench.metrics.graph`); False when this metric or its device/dtype cannot."""
        return False

    @property
    def execution(self) -> str:
        """How ``forward`` ran, for the run record: 'eager' or 'fused graph (oneDNN)'."""
        return "fused graph (oneDNN)" if self.fused is not None and self.fused.active else "eager"

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> pixel tensor [N, 3, H, W] exactly as the official protocol prepares them."""

    @abstractmethod
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel tensor -> raw embeddings [N, D] (not normalised)."""

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> L2-normalised float32 embeddings [N, D] on the CPU."""
        return self.embed_pixels(self.preprocess(images))

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels -> L2-normalised float32 embeddings [N, D] on the CPU.

        Split from ``embed`` so the engine can preprocess the next batch on worker threads
        while the backbone runs this one.
        """
        features = self.forward(pixels).float()
        return torch.nn.functional.normalize(features, p=2, dim=-1).cpu()


class PairMetric(Metric):
    kind = "pair"

    #: whether score_pairs needs dataset ground truth in PairInput.meta
    needs_meta: ClassVar[bool] = False

    @abstractmethod
    def score_pairs(self, pairs: Sequence[PairInput]) -> list[PairScore]: ...

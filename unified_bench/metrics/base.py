"""The metric contract.

A metric declares what it reads (``Metric.reads``), among :data:`READ_MODES`:

- ``"image"``: a reference image vs a reconstruction image (every image metric; the default);
- ``"text"``: a reference text (or ground truth in ``meta``) vs a candidate text;
- ``"image-text"``: an image vs the reference text it should show.

Two kinds of metric score a (reference, reconstruction) pair of images:

- :class:`EmbeddingMetric` embeds images with a backbone (``embed -> [N, D]``, L2-normalised);
  the pair score is the cosine similarity. The engine batches, caches reference embeddings
  on disk and loads one backbone at a time.
- :class:`PairMetric` scores pairs directly (SSIM, PSNR, the Shapes oracle). It may also
  report named sub-scores (e.g. per-attribute F1), stored as ``"<metric>.<sub>"``.

Texts are read by a :class:`TextEmbedder` (a text tower: ``embed_texts -> TextEmbeddings``,
L2-normalised, with each text's :class:`TokenCount` so truncation is never silent):
:class:`TextEmbeddingMetric` scores a text pair by cosine, :class:`ImageTextMetric` an image
against a text. A :class:`PairMetric` may also score texts directly (``score_texts``).

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

from unified_bench.metrics.device_resize import DeviceResize, PackedImages
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
class PixelNormalization:
    """The last step of a processor, ``(pixels / 255 - mean) / std``, run on the metric's device.

    ``arithmetic`` reproduces the CPU processor's own float steps so the pixels are bit for bit
    the same: ``"numpy"`` (transformers' PIL processors: ``x.astype(float64) * rescale_factor``
    rounded to float32, then float32 ``(x - mean) / std``) or ``"torchvision"`` (``ToTensor``:
    float32 ``x / 255``, then ``Normalize``).
    """

    arithmetic: str  # "numpy" | "torchvision"
    scale: float  # rescale factor ("numpy") or divisor ("torchvision")
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.arithmetic not in ("numpy", "torchvision"):
            raise ValueError(f"unknown pixel arithmetic {self.arithmetic!r}")

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> normalised float32 on ``pixels``' device."""
        if self.arithmetic == "numpy":
            x = (pixels.to(torch.float64) * self.scale).to(torch.float32)
        else:
            # A tensor divisor, not a Python number: CUDA divides by a scalar as a multiply by
            # its reciprocal, which can differ from the CPU's division in the last bit.
            x = pixels.to(torch.float32) / torch.tensor(self.scale, dtype=torch.float32, device=pixels.device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).reshape(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).reshape(-1, 1, 1)
        return (x - mean) / std


#: What a metric can read: an image pair, a text pair, or an image and a text.
READ_MODES: tuple[str, ...] = ("image", "text", "image-text")


@dataclass(frozen=True)
class PairInput:
    """One pair handed to a PairMetric. ``meta`` carries dataset ground truth (e.g. a scene).
    ``reference`` is None only for a metric with ``reference_optional`` and ground truth in meta."""

    sample_id: str
    reference: Image.Image | None
    reconstruction: Image.Image
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TextInput:
    """One sample handed to a PairMetric in text mode: the candidate ``text`` and what it is
    scored against, the ``reference_text`` or ground truth in ``meta`` (either may be None)."""

    sample_id: str
    text: str
    reference_text: str | None = None
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TokenCount:
    """How one text fitted a text tower: its token count (special tokens included) against the
    tower's context. A text longer than the context was cut to it before embedding."""

    tokens: int
    context: int

    @property
    def truncated(self) -> bool:
        return self.tokens > self.context

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "context": self.context, "truncated": self.truncated}


@dataclass(frozen=True)
class TextEmbeddings:
    """L2-normalised float32 text features [N, D] on the CPU and each text's token count."""

    vectors: torch.Tensor
    tokens: list[TokenCount]


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
    #: what the metric reads, among READ_MODES; the first is its mode on the image trip
    reads: ClassVar[tuple[str, ...]] = ("image",)

    @property
    @abstractmethod
    def info(self) -> MetricInfo: ...

    def close(self) -> None:
        """Release model memory; the engine calls this before loading the next metric."""


class EmbeddingMetric(Metric):
    kind = "embedding"
    #: the fused CPU graph that ``forward`` runs through, once ``enable_fusion`` made one
    fused: FusedForward | None = None
    #: set by ``preprocess_on_device``: ``preprocess`` stops at uint8 pixels, ``embed_pixels``
    #: finishes them with this on the metric's device
    normalization: PixelNormalization | None = None
    #: set by ``preprocess_on_device(resize=True)``: ``preprocess`` only packs the decoded
    #: images, ``embed_pixels`` resizes and crops them on the device first
    device_resize: DeviceResize | None = None

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

    def preprocess_on_device(self, resize: bool = True) -> str:
        """Move the end of preprocessing from the CPU threads to the metric's device without
        changing a pixel, and say what moved (``device_steps``): "none" (this metric cannot),
        "normalise", or "resize, crop, normalise".

        - normalise: ``preprocess`` returns the resized, cropped pixels as uint8 and
          ``embed_pixels`` rescales and normalises them on the device
          (:class:`PixelNormalization`, the processor's own float arithmetic);
        - resize (when asked and the metric's resize is one :mod:`device_resize` reproduces):
          ``preprocess`` only packs the decoded images and the device also resizes and crops.

        On a GPU the threads' per-image Pillow work is what limits scoring; on a CPU this only
        moves work from one place to another.
        """
        if self.defer_normalization():
            self.device_resize = self.resize_plan() if resize else None
        return self.device_steps

    def defer_normalization(self) -> bool:
        """Set ``normalization`` (see ``preprocess_on_device``); False when this metric's
        preprocessing cannot be split before its float steps."""
        return False

    def resize_plan(self) -> DeviceResize | None:
        """This metric's resize + crop as a :class:`DeviceResize`, or None when not reproducible."""
        return None

    @property
    def device_steps(self) -> str:
        """For the run record: which preprocessing steps ran on the metric's device."""
        if self.normalization is None:
            return "none"
        return "resize, crop, normalise" if self.device_resize is not None else "normalise"

    @property
    def execution(self) -> str:
        """How ``forward`` ran, for the run record: 'eager' or 'fused graph (oneDNN)'."""
        return "fused graph (oneDNN)" if self.fused is not None and self.fused.active else "eager"

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor | PackedImages:
        """Images -> pixel tensor [N, 3, H, W] exactly as the official protocol prepares them
        (uint8 or packed images after ``preprocess_on_device``)."""

    @abstractmethod
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel tensor -> raw embeddings [N, D] (not normalised)."""

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images -> L2-normalised float32 embeddings [N, D] on the CPU."""
        return self.embed_pixels(self.preprocess(images))

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor | PackedImages) -> torch.Tensor:
        """Preprocessed pixels -> L2-normalised float32 embeddings [N, D] on the CPU.

        Split from ``embed`` so the engine can preprocess the next batch on worker threads
        while the backbone runs this one. uint8 pixels and packed images
        (``preprocess_on_device``) are finished on the device first.
        """
        if isinstance(pixels, PackedImages):
            if self.normalization is None:
                raise ValueError(f"metric {self.name!r} got packed images but does not preprocess on the device")
            pixels = self.normalization(pixels.resize(self.device))
        elif pixels.dtype == torch.uint8:
            if self.normalization is None:
                raise ValueError(f"metric {self.name!r} got uint8 pixels but does not normalise on the device")
            pixels = self.normalization(pixels.to(self.device, non_blocking=True))
        features = self.forward(pixels).float()
        return torch.nn.functional.normalize(features, p=2, dim=-1).cpu()


class PairMetric(Metric):
    kind = "pair"

    #: whether score_pairs needs dataset ground truth in PairInput.meta
    needs_meta: ClassVar[bool] = False
    #: whether score_pairs can score a reconstruction with no reference image (ground truth in meta)
    reference_optional: ClassVar[bool] = False

    @abstractmethod
    def score_pairs(self, pairs: Sequence[PairInput]) -> list[PairScore]: ...

    def score_texts(self, inputs: Sequence[TextInput]) -> list[PairScore]:
        """Text mode (a metric whose ``reads`` holds "text"): one verdict per candidate text."""
        raise NotImplementedError(f"metric {self.name!r} does not read texts")


class TextEmbedder(ABC):
    """A text tower: texts -> L2-normalised features, each text's token count recorded.

    ``encode_texts`` truncates every text to ``context_length`` tokens (the tower cannot read
    more); ``embed_texts`` says which were cut, so no truncation goes unrecorded.
    """

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Tokens the tower reads, special tokens included."""

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in tokens before truncation, special tokens included."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> raw text features [N, D] (not normalised), each cut to the context."""

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> TextEmbeddings:
        texts = list(texts)
        context = self.context_length
        tokens = [TokenCount(count, context) for count in self.count_tokens(texts)]
        features = self.encode_texts(texts).float()
        return TextEmbeddings(torch.nn.functional.normalize(features, p=2, dim=-1).cpu(), tokens)


class TextEmbeddingMetric(Metric, TextEmbedder):
    """Scores a (reference text, text) pair by the cosine of their text features."""

    kind = "text-embedding"
    reads = ("text",)


class ImageTextMetric(EmbeddingMetric, TextEmbedder):
    """Scores an image against a text: cosine of image features (``embed``) and text
    features (``embed_texts``) in one shared space."""

    kind = "image-text"
    reads = ("image-text",)

"""Embedding metrics on Hugging Face transformers backbones: clip, dinov2, dinov3, siglip.

Each follows the official UAE scoring scripts (``CLIP.py``, ``DINO_v2.py``, ``DINO_v3.py``):
the checkpoint's own image processor (``processor(images=..., return_tensors="pt")``), then

- clip:   projected image features (``get_image_features``; we load only the vision tower
          with its projection, ``CLIPVisionModelWithProjection``, which computes the same thing);
- dinov2 / dinov3: ``last_hidden_state[:, 0, :]``, the CLS token after the final norm;
- siglip: the pooled (attention-pooling head) image features.

The engine L2-normalises and takes cosines. Differences from the official scripts are
deliberate and listed in docs/metrics.md: images are batched (the scripts embed one image at
a time; batching changes results only at float rounding level), and on CUDA the default dtype
is fp16 (the scripts run these three in fp32; pass ``--dtype float32`` to match exactly).

Processor backend: transformers 4.x, which the official scripts ran on, used the PIL ("slow")
image processors unless told otherwise; transformers 5 defaults to torchvision ones, which
resize slightly differently. We ask for the PIL backend so preprocessing matches the paper's;
DINOv3 only has a torchvision processor, which is what the official script used too.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from PIL import Image

from unified_bench.core.errors import ConfigError
from unified_bench.metrics.base import EmbeddingMetric, MetricInfo, PixelNormalization
from unified_bench.metrics.device_resize import FILTERS, DeviceResize, PackedImages, hf_geometry
from unified_bench.metrics.graph import FusedForward, can_fuse
from unified_bench.metrics.runtime import dtype_name, quiet_transformers, resolve_dtype
from unified_bench.metrics.weights import ResolvedCheckpoint, load_errors, resolve_checkpoint

#: Image-processor settings that change pixels; recorded in MetricInfo (and so the cache key).
_PREPROCESSING_KEYS = (
    "do_convert_rgb",
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "max_num_patches",
    "patch_size",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "value"):  # enums (PILImageResampling)
        return _jsonable(value.value)
    return str(value)


def load_image_processor(path: Any, prefer_pil: bool) -> Any:
    """The checkpoint's image processor, PIL-backed when asked and available.

    transformers >= 5 with named backends takes ``backend="pil"``; earlier releases spell the
    same choice ``use_fast=False``. Either falls back to the only processor a model has.
    """
    from transformers import AutoImageProcessor

    if importlib.util.find_spec("transformers.image_processing_backends") is not None:
        return AutoImageProcessor.from_pretrained(path, backend="pil" if prefer_pil else "torchvision")
    return AutoImageProcessor.from_pretrained(path, use_fast=not prefer_pil)


def processor_backend(processor: Any) -> str:
    """'pil' or 'torchvision': which library resizes the pixels."""
    try:
        from transformers.image_processing_backends import PilBackend

        return "pil" if isinstance(processor, PilBackend) else "torchvision"
    except ImportError:  # transformers before named backends: *Fast classes use torchvision
        return "torchvision" if type(processor).__name__.endswith("Fast") else "pil"


def processor_settings(processor: Any) -> dict[str, Any]:
    """The processor's class, backend and every setting that changes the pixels."""
    settings = processor.to_dict()
    out: dict[str, Any] = {
        "processor": type(processor).__name__,
        "backend": processor_backend(processor),
    }
    for key in _PREPROCESSING_KEYS:
        if key in settings and settings[key] is not None:
            out[key] = _jsonable(settings[key])
    return out


def checkpoint_config(metric: str, resolved: ResolvedCheckpoint, model_types: frozenset[str]) -> Any:
    """The config of an HF checkpoint directory, refused unless its model type is one of ``model_types``."""
    from transformers import AutoConfig

    if not resolved.path.is_dir():
        raise ConfigError(
            f"metric {metric!r}: checkpoint {resolved.requested!r} is a file; expected a Hugging Face "
            "checkpoint directory (config.json, preprocessor_config.json, weights) or a hub id"
        )
    config = AutoConfig.from_pretrained(resolved.path)
    if config.model_type not in model_types:
        raise ConfigError(
            f"metric {metric!r}: checkpoint {resolved.requested!r} is a {config.model_type!r} model; "
            f"expected one of {sorted(model_types)}"
        )
    return config


def load_tower(metric: str, resolved: ResolvedCheckpoint, model_cls: type, config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """One tower of an HF checkpoint, refused when any weight it needs is missing or mismatched
    (never score with silently random-initialised layers)."""
    model, report = model_cls.from_pretrained(resolved.path, config=config, dtype=dtype, output_loading_info=True)
    missing = sorted(report.get("missing_keys") or [])
    mismatched = list(report.get("mismatched_keys") or [])
    if missing or mismatched:
        shown = ", ".join(map(str, (missing + mismatched)[:5]))
        raise ConfigError(
            f"metric {metric!r}: checkpoint {resolved.requested!r} does not hold every weight "
            f"{model_cls.__name__} needs (missing or mismatched: {shown}); is it the right model?"
        )
    return model


def clip_tower_config(config: Any, tower: str) -> Any:
    """The config of a CLIP checkpoint's ``tower`` ("vision" or "text"), with its projection width.

    The projection width lives on the top-level config; a sub-config's own projection_dim is
    only a default and would build a wrong-sized projection. A single-tower checkpoint
    (``clip_vision_model``, ``clip_text_model``) is its own config.
    """
    if config.model_type != "clip":
        return config
    sub = getattr(config, f"{tower}_config")
    sub.projection_dim = config.projection_dim
    return sub


class HFVisionMetric(EmbeddingMetric):
    """Shared loading and batching for transformers vision backbones."""

    unit = "cosine"
    #: config.json ``model_type`` values this metric accepts
    model_types: ClassVar[frozenset[str]]
    #: how the embedding is taken from the model output (recorded in MetricInfo)
    pooling: ClassVar[str]
    #: see the module docstring: the official scripts' transformers 4.x used PIL processors
    prefer_pil_processor: ClassVar[bool] = True
    #: whether the fused CPU graph (unified_bench.metrics.graph) keeps this metric's numbers
    fusable: ClassVar[bool] = True

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        *,
        resolved: ResolvedCheckpoint | None = None,
    ) -> None:
        super().__init__(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.resolved = resolved or resolve_checkpoint(self.name, checkpoint)
        self.model, self.processor = self._load(self.resolved)
        self._info = MetricInfo(
            name=self.name,
            kind=self.kind,
            checkpoint=self.resolved.recorded,
            revision=self.resolved.revision,
            preprocessing={**processor_settings(self.processor), "pooling": self.pooling},
            dtype=dtype_name(self.torch_dtype),
        )

    # -- loading ---------------------------------------------------------------------------

    def _load(self, resolved: ResolvedCheckpoint) -> tuple[torch.nn.Module, Any]:
        with quiet_transformers(), load_errors(self.name, resolved.requested, resolved.path):
            config = checkpoint_config(self.name, resolved, self.model_types)
            processor = load_image_processor(resolved.path, self.prefer_pil_processor)
            model_cls, model_config = self._model_class(config)
            model = load_tower(self.name, resolved, model_cls, model_config, self.torch_dtype)
        return model.to(self.device).eval(), processor

    def _model_class(self, config: Any) -> tuple[type, Any]:
        """(model class, config to build it with) for ``config``; vision tower only."""
        from transformers import AutoModel

        return AutoModel, config

    # -- embedding -------------------------------------------------------------------------

    @property
    def info(self) -> MetricInfo:
        return self._info

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor | PackedImages:
        if self.device_resize is not None and self.device_resize.supports(images):
            return self.device_resize.pack(images)
        if self.normalization is not None:
            return self.processor(
                images=list(images), do_rescale=False, do_normalize=False, return_tensors="pt"
            )["pixel_values"]
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def defer_normalization(self) -> bool:
        """PIL processors (resize and crop in uint8, then NumPy float steps) can stop before
        the float steps; transformers' torchvision processors fold rescale into normalise,
        different arithmetic, so they keep theirs."""
        processor = self.processor
        if (
            not self.pipelined
            or processor_backend(processor) != "pil"
            or not (processor.do_rescale and processor.do_normalize)
        ):
            return False
        mean, std = processor.image_mean, processor.image_std
        self.normalization = PixelNormalization(
            "numpy",
            float(processor.rescale_factor),
            tuple(float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean])),
            tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std])),
        )
        return True

    def resize_plan(self) -> DeviceResize | None:
        resample = self.processor.resample
        geometry = hf_geometry(self.processor)
        if geometry is None or resample is None or int(resample) not in FILTERS:
            return None
        return DeviceResize(int(resample), geometry)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, self.torch_dtype)
        if self.fused is not None:
            return self.fused(pixels)
        return self._pool(self.model(pixel_values=pixels))

    def _pool(self, output: Any) -> torch.Tensor:
        raise NotImplementedError

    def enable_fusion(self) -> bool:
        if not self.fusable or not self.pipelined or not can_fuse(self.device, self.torch_dtype):
            return False
        if self.fused is None:
            self.fused = FusedForward(self.model, self._pool, label=f"metric {self.name!r}")
        return True

    def close(self) -> None:
        self.model = None
        self.processor = None
        self.fused = None
        self.normalization = None
        self.device_resize = None


class ClipMetric(HFVisionMetric):
    """CLIP projected image features (``get_image_features``), as in the official CLIP.py."""

    name = "clip"
    model_types = frozenset({"clip", "clip_vision_model"})
    pooling = "visual_projection(pooler_output)"

    def _model_class(self, config: Any) -> tuple[type, Any]:
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection, clip_tower_config(config, "vision")

    def _pool(self, output: Any) -> torch.Tensor:
        return output.image_embeds


class Dinov2Metric(HFVisionMetric):
    """DINOv2 CLS token after the final layer norm, as in the official DINO_v2.py."""

    name = "dinov2"
    model_types = frozenset({"dinov2", "dinov2_with_registers"})
    pooling = "last_hidden_state[:, 0]"

    def _pool(self, output: Any) -> torch.Tensor:
        return output.last_hidden_state[:, 0, :]


class Dinov3Metric(Dinov2Metric):
    """DINOv3 ViT CLS token after the final norm, as in the official DINO_v3.py."""

    name = "dinov3"
    model_types = frozenset({"dinov3_vit"})


class SiglipMetric(HFVisionMetric):
    """SigLIP / SigLIP 2 pooled image features (the attention-pooling head's output).

    SigLIP 2 fixed-resolution checkpoints are ``siglip`` models and load like SigLIP;
    NaFlex checkpoints (``siglip2``) also pass the processor's patch mask and shapes.
    """

    name = "siglip"
    model_types = frozenset({"siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model"})
    pooling = "pooler_output"
    #: fused, a tiny SigLIP's cosines moved by up to 6e-5 (the other backbones: ~1e-7), so it stays eager
    fusable = False

    def _model_class(self, config: Any) -> tuple[type, Any]:
        from transformers import Siglip2VisionModel, SiglipVisionModel

        naflex = config.model_type.startswith("siglip2")
        cls = Siglip2VisionModel if naflex else SiglipVisionModel
        vision = config.vision_config if config.model_type in ("siglip", "siglip2") else config
        return cls, vision

    @property
    def naflex(self) -> bool:
        return self.model.config.model_type.startswith("siglip2")

    @property
    def pipelined(self) -> bool:
        return not self.naflex  # NaFlex needs the processor's mask and shapes, not just pixels

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if not self.naflex:
            return super().embed(images)
        # NaFlex keeps each image's aspect ratio: pixels arrive as padded patch sequences
        # with a mask and per-image patch-grid shapes, all of which the model needs.
        inputs = self.processor(images=list(images), return_tensors="pt")
        inputs = {
            key: value.to(self.device, self.torch_dtype) if key == "pixel_values" else value.to(self.device)
            for key, value in inputs.items()
        }
        features = self.model(**inputs).pooler_output.float()
        return torch.nn.functional.normalize(features, p=2, dim=-1).cpu()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.naflex:
            raise RuntimeError("NaFlex SigLIP 2 needs the processor's patch mask; call embed(), not forward()")
        return super().forward(pixels)

    def _pool(self, output: Any) -> torch.Tensor:
        return output.pooler_output

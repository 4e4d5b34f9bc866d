"""The Shapes track: procedural scenes with exact ground truth, captions, splits and an oracle.

Stable API for the runner and the reference trainer::

    from unified_bench.tracks.shapes import shapes_samples, DEFAULT_METRICS
    samples = shapes_samples("test", size=256, limit=None)   # list[ShapesSample]
    s = samples[0]
    s.sample_id      # "shapes-test-00000" (stable; safe file name)
    s.image          # PIL RGB image, rendered on first access (byte-identical everywhere)
    s.scene          # Scene: objects with shape, color, size, position
    s.caption_long   # canonical long caption; s.caption_short: shapes and colours only
    s.paraphrase("long", variant=1)
    s.meta           # {"scene": {...}, ...}: PairInput.meta for the shapes-attr metric
    DEFAULT_METRICS  # ("shapes-attr", "effnet"); ssim by name only

Modules: ``scene`` (attributes, seeded generator), ``render`` (exact anti-aliased
rasteriser), ``captions`` (grammar, paraphrases, parser), ``splits`` (fixed splits,
``export_hf``), ``compare`` (F1 definitions), ``oracle`` (network, training,
``ShapesAttrMetric``), ``calibration`` (the calibration table). Commands:
``python -m unified_bench.tracks.shapes --help``. Heavy imports (torch) happen only in
``oracle`` and ``calibration``.
"""

from unified_bench.tracks.shapes.captions import caption, paraphrase, parse
from unified_bench.tracks.shapes.render import blank_image, render
from unified_bench.tracks.shapes.scene import (
    COLOR_NAMES,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    complete_scene,
    scene_from_seed,
)
from unified_bench.tracks.shapes.splits import (
    DEFAULT_METRICS,
    SPLIT_SEEDS,
    SPLIT_SIZES,
    ShapesSample,
    export_hf,
    shapes_samples,
)

__all__ = [
    "COLOR_NAMES",
    "COLORS",
    "DEFAULT_METRICS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SPLIT_SEEDS",
    "SPLIT_SIZES",
    "Scene",
    "ShapeObject",
    "ShapesSample",
    "blank_image",
    "caption",
    "complete_scene",
    "export_hf",
    "paraphrase",
    "parse",
    "render",
    "scene_from_seed",
    "shapes_samples",
]

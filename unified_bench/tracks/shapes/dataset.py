"""The Shapes track as an evaluation dataset (registered as ``shapes`` by import path)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from unified_bench.core.errors import DatasetError
from unified_bench.datasets.base import EvalDataset, Sample
from unified_bench.tracks.shapes.splits import DEFAULT_METRICS, shapes_samples


def load_shapes(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    split = options.get("split", "test")
    try:
        size = int(options.get("size", 256))
    except ValueError:
        raise DatasetError(f"--data-arg size expects an integer, got {options['size']!r}") from None
    shapes = shapes_samples(split, size)
    # the scene travels as sample meta to the shapes-attr metric (Pair.meta)
    samples = [Sample(s.sample_id, image=_LazyRender(s), meta=s.meta) for s in shapes]
    return EvalDataset(
        "shapes" if split == "test" else f"shapes:{split}",
        samples,
        tuple(DEFAULT_METRICS),
        f"Shapes track, split {split}, {size} px",
        {"kind": "shapes", "split": split, "size": size},
    )


class _LazyRender:
    """Render a Shapes sample when the runner reaches it, without caching the pixels on the
    sample (``ShapesSample.image`` is a cached property; 1000 cached renders add up)."""

    def __init__(self, sample) -> None:
        self.sample = sample

    def __call__(self):
        return type(self.sample).image.func(self.sample)

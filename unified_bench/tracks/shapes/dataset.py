"""The Shapes track as an evaluation dataset (registered as ``shapes`` by import path).

Each sample has its render (the image trip's reference) and its prompt (the text trip's start):
the scene's canonical caption at ``--data-arg detail=long|short`` (default long), written by
:func:`unified_bench.tracks.shapes.captions.caption`, the function the ``shapes-oracle``
adapter captions with, so the text trip starts from what the oracle captioner would say of a
perfect image. The prompt is not part of the dataset fingerprint (ids and reference bytes), and
the image trip reads only ids, references and meta, which ``detail`` does not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from unified_bench.core.errors import DatasetError
from unified_bench.datasets.base import EvalDataset, Sample
from unified_bench.tracks.shapes.captions import DETAILS, caption
from unified_bench.tracks.shapes.splits import DEFAULT_METRICS, shapes_samples


def load_shapes(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    split = options.get("split", "test")
    try:
        size = int(options.get("size", 256))
    except ValueError:
        raise DatasetError(f"--data-arg size expects an integer, got {options['size']!r}") from None
    detail = options.get("detail", "long")
    if detail not in DETAILS:
        raise DatasetError(f"--data-arg detail must be one of {', '.join(DETAILS)} (the prompt's caption detail), got {detail!r}")
    shapes = shapes_samples(split, size)
    # the scene travels as sample meta to the shapes-attr metric (Pair.meta)
    samples = [Sample(s.sample_id, image=_LazyRender(s), meta=s.meta, prompt=caption(s.scene, detail)) for s in shapes]
    source = {"kind": "shapes", "split": split, "size": size}
    if "detail" in options:  # only when asked: a default run records what it recorded before
        source["detail"] = detail
    return EvalDataset(
        "shapes" if split == "test" else f"shapes:{split}",
        samples,
        tuple(DEFAULT_METRICS),
        f"Shapes track, split {split}, {size} px",
        source,
    )


class _LazyRender:
    """Render a Shapes sample when the runner reaches it, without caching the pixels on the
    sample (``ShapesSample.image`` is a cached property; 1000 cached renders add up)."""

    def __init__(self, sample) -> None:
        self.sample = sample

    def __call__(self):
        return type(self.sample).image.func(self.sample)

"""Fixed train / val / test splits of the Shapes track.

Scene ``i`` of a split is drawn from ``SeedSequence([SPLIT_SEEDS[split], i, attempt])`` for
``attempt = 0, 1, ...`` until the scene *belongs* to the split: a scene's split is fixed by
the SHA-256 of its canonical JSON (bucket ``digest % 20``: 0 -> test, 1 -> val, 2..19 ->
train). So the splits never share a scene, and sample ``i`` can be made without making
samples ``0..i-1``. The image's position jitter comes from the sample seed (the first 8
bytes of SHA-256 of the sample id), captions' paraphrases likewise.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unified_bench.tracks.shapes.captions import caption, paraphrase
from unified_bench.tracks.shapes.render import render
from unified_bench.tracks.shapes.scene import Scene, random_scene
from unified_bench.core.errors import DatasetError

SPLIT_SEEDS: dict[str, int] = {"train": 1_000, "val": 2_000, "test": 3_000}
SPLIT_SIZES: dict[str, int] = {"train": 20_000, "val": 1_000, "test": 1_000}
_BUCKETS = 20
_BUCKET_SPLIT = {0: "test", 1: "val"}  # every other bucket is train
DEFAULT_SIZE = 256
#: the track's default metrics, in report order. Not ``ssim``: on these plain-background scenes
#: a blank image scores about as high as a perfect re-render (docs/metrics.md); it stays
#: available by name (``--metrics shapes-attr,effnet,ssim``).
DEFAULT_METRICS: tuple[str, ...] = ("shapes-attr", "effnet")


def split_of(scene: Scene) -> str:
    """Which split owns ``scene`` (a pure function of its content)."""
    digest = hashlib.sha256(scene.to_json().encode()).digest()
    return _BUCKET_SPLIT.get(int.from_bytes(digest[:8], "big") % _BUCKETS, "train")


def check_split(split: str) -> str:
    if split not in SPLIT_SEEDS:
        raise DatasetError(f"unknown Shapes split {split!r}; use one of {', '.join(SPLIT_SEEDS)}")
    return split


def sample_id(split: str, index: int) -> str:
    return f"shapes-{split}-{index:05d}"


def sample_seed(split: str, index: int) -> int:
    """Seed of a sample's rendering details and paraphrases (from its id only)."""
    digest = hashlib.sha256(sample_id(split, index).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def split_scene(split: str, index: int) -> Scene:
    """Scene ``index`` of ``split`` (any non-negative index; the fixed split uses 0..size-1)."""
    check_split(split)
    if index < 0:
        raise DatasetError(f"sample index must be >= 0, got {index}")
    for attempt in range(10_000):
        scene = random_scene(np.random.default_rng(np.random.SeedSequence([SPLIT_SEEDS[split], index, attempt])))
        if split_of(scene) == split:
            return scene
    raise AssertionError("unreachable: every split owns a twentieth of the scene space or more")


@dataclass(frozen=True)
class ShapesSample:
    """One Shapes sample: ground truth, captions and (lazily) its rendered image."""

    sample_id: str
    split: str
    index: int
    seed: int
    scene: Scene
    size: int = DEFAULT_SIZE
    caption_short: str = field(init=False)
    caption_long: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "caption_short", caption(self.scene, "short"))
        object.__setattr__(self, "caption_long", caption(self.scene, "long"))

    @cached_property
    def image(self) -> Image.Image:
        """The rendered image (rendered on first access)."""
        return render(self.scene, self.size, jitter_seed=self.seed)

    def paraphrase(self, detail: str, variant: int = 0) -> str:
        """Paraphrase number ``variant`` of this sample's caption at ``detail``."""
        return paraphrase(self.scene, detail, seed=self.seed + variant)

    @property
    def meta(self) -> dict[str, Any]:
        """Ground truth for the ``shapes-attr`` metric (``PairInput.meta``)."""
        return {"scene": self.scene.to_dict(), "split": self.split, "index": self.index}


def make_sample(split: str, index: int, size: int = DEFAULT_SIZE) -> ShapesSample:
    return ShapesSample(sample_id(split, index), split, index, sample_seed(split, index), split_scene(split, index), size)


def iter_samples(split: str, size: int = DEFAULT_SIZE, limit: int | None = None, start: int = 0) -> Iterator[ShapesSample]:
    """Samples ``start..`` of the fixed split (``limit`` of them, default: to the split's end)."""
    check_split(split)
    stop = SPLIT_SIZES[split] if limit is None else min(SPLIT_SIZES[split], start + limit)
    for index in range(start, stop):
        yield make_sample(split, index, size)


def shapes_samples(split: str = "test", size: int = DEFAULT_SIZE, limit: int | None = None) -> list[ShapesSample]:
    """The first ``limit`` samples of ``split`` rendered at ``size`` px (stable API for the runner)."""
    if size < 16:
        raise DatasetError(f"Shapes images need size >= 16 px, got {size}")
    if limit is not None and limit < 1:
        raise DatasetError("limit must be >= 1")
    return list(iter_samples(split, size, limit))


def attribute_counts(split: str, limit: int | None = None) -> dict[str, Counter]:
    """How often each attribute value occurs in ``split`` (for the data card)."""
    counts: dict[str, Counter] = {"objects per scene": Counter()}
    for sample in iter_samples(split, limit=limit):
        counts["objects per scene"][len(sample.scene)] += 1
        for obj in sample.scene.objects:
            for name, value in obj.to_dict().items():
                counts.setdefault(name, Counter())[value] += 1
    return counts


def export_hf(out_dir: str | Path, split: str, *, size: int = DEFAULT_SIZE, limit: int | None = None):
    """Write ``split`` as a Hugging Face dataset (``save_to_disk``) and return it.

    Columns: ``sample_id``, ``image``, ``caption_short``, ``caption_long``, ``scene`` (the
    scene's canonical JSON string; ``Scene.from_dict`` reads it back), ``seed``.
    """
    import datasets

    def rows() -> Iterator[dict[str, Any]]:
        for sample in iter_samples(split, size, limit):
            yield {
                "sample_id": sample.sample_id,
                "image": sample.image,
                "caption_short": sample.caption_short,
                "caption_long": sample.caption_long,
                "scene": sample.scene.to_json(),
                "seed": sample.seed,
            }

    features = datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "image": datasets.Image(),
            "caption_short": datasets.Value("string"),
            "caption_long": datasets.Value("string"),
            "scene": datasets.Value("string"),
            "seed": datasets.Value("uint64"),
        }
    )
    dataset = datasets.Dataset.from_list(list(rows()), features=features, split=datasets.NamedSplit(split))
    dataset.info.description = json.dumps({"track": "shapes", "split": split, "size": size, "limit": limit})
    dataset.save_to_disk(str(out_dir))
    return dataset

"""Datasets for the trip tests, registered per test (``register``) or per subprocess (``install``).

``shapes-prompted``: Shapes test scenes whose prompt is their ground-truth caption (``detail``:
long or short), with their render and scene: what ``--data shapes --data-arg detail=...`` gives
once the Shapes dataset carries prompts. ``colour-prompts``: text-only prompts in the mock
adapter's own caption language (so the mock can draw them). Either takes ``blank=ID,ID`` (those
prompts become white space) and ``no_prompt=ID,ID`` (those samples get none).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from unified_bench.datasets import registry
from unified_bench.datasets.base import EvalDataset, Sample

SPECS = {
    "shapes-prompted": registry.DatasetSpec(
        "shapes-prompted", "trip_datasets:shapes_prompted", "Shapes scenes with their caption as prompt (tests)",
        ("shapes-attr", "effnet"), options=None,
    ),
    "colour-prompts": registry.DatasetSpec(
        "colour-prompts", "trip_datasets:colour_prompts", "prompts the mock adapter can draw (tests)",
        ("toy-pair",), options=None,
    ),
}


def register(monkeypatch) -> None:
    for name, spec in SPECS.items():
        monkeypatch.setitem(registry.DATASETS, name, spec)


def install() -> None:
    for spec in SPECS.values():
        registry.REGISTRY.register(spec)


def _prompt(sample_id: str, prompt: str | None, options: Mapping[str, str]) -> str | None:
    if sample_id in options.get("no_prompt", "").split(","):
        return None
    if sample_id in options.get("blank", "").split(","):
        return BLANK
    return prompt


BLANK = " \t "
#: the stage of a blank prompt's error: a dataset marks it (``Sample.bad``) where samples can
#: say they are bad, else the runner finds it
BLANK_STAGE = "dataset" if hasattr(Sample, "bad") else "prompt"


def _sample(sample_id: str, prompt: str | None, **fields) -> Sample:
    if prompt == BLANK and hasattr(Sample, "bad"):
        return Sample.bad(sample_id, f"sample {sample_id}: the prompt is empty or only white space", meta=fields.get("meta"))
    return Sample(sample_id, prompt=prompt, **fields)


def shapes_prompted(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    from unified_bench.tracks.shapes.dataset import _LazyRender
    from unified_bench.tracks.shapes.splits import shapes_samples

    detail = options.get("detail", "long")
    shapes = shapes_samples("test", int(options.get("size", 128)), limit=int(options.get("n", 8)))
    samples = [
        _sample(s.sample_id, _prompt(s.sample_id, s.caption_long if detail == "long" else s.caption_short, options),
                image=_LazyRender(s), meta=s.meta)
        for s in shapes
    ]
    return EvalDataset("shapes-prompted", samples, ("shapes-attr", "effnet"), "Shapes with prompts", {"detail": detail})


def colour_prompts(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    rng = np.random.default_rng(int(options.get("seed", 0)))
    samples = []
    for index in range(int(options.get("n", 6))):
        colours = " ".join("#%02x%02x%02x" % tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(4))
        sample_id = f"p{index}"
        samples.append(_sample(sample_id, _prompt(sample_id, f"a calm picture; quadrant colours {colours}; mostly gray", options)))
    return EvalDataset("colour-prompts", samples, ("toy-pair",), "colour prompts", {})

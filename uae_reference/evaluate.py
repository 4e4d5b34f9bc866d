"""Quality checks of the two halves on held-out Shapes scenes (the issue's acceptance bars).

- **Decoder**: render every test scene from its *ground-truth long caption* with the decoder,
  parse the result with the Shapes oracle and compare with the true scene: object-level F1 and
  per-attribute F1 (:func:`unified_bench.tracks.shapes.compare.compare_scenes`).
- **Encoder**: caption every test image, parse the caption with the grammar's parser and
  compare with the true scene: *attribute precision* — of the attribute values the captions
  state, the fraction that are right (pooled over samples and attributes). Also reported:
  how many attributes a caption states per true object, and the share of long captions.
- **What the vision tower sees** (:func:`vision_probe`): a linear probe per grid cell on the
  vision tower's merged tokens (what the LLM reads), trained on the train split and scored on
  held-out scenes. It tells a captioner that cannot *see* an attribute from one that sees it
  and does not *say* it.

Each figure comes with a 95% percentile-bootstrap interval over samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from unified_bench.tracks.shapes.captions import parse
from unified_bench.tracks.shapes.compare import compare_scenes
from unified_bench.tracks.shapes.scene import ATTRIBUTES
from unified_bench.tracks.shapes.splits import DEFAULT_SIZE, ShapesSample, iter_samples
from unified_bench.core.stats import bootstrap_joint_ci, bootstrap_mean_ci
from uae_reference.model import UAEModel


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


_NAN = float("nan")


def _mean(values: Sequence[float]) -> Estimate:
    ci = bootstrap_mean_ci(list(values))
    return Estimate(ci.estimate, ci.low, ci.high) if ci else Estimate(_NAN, _NAN, _NAN)


def _ratio(num: Sequence[float], den: Sequence[float]) -> Estimate:
    """A pooled ratio sum(num) / sum(den) with a bootstrap interval (NaN when nothing is stated)."""
    ci = bootstrap_joint_ci({"num": list(num), "den": list(den)}, lambda m: m["num"] / m["den"] if m["den"] else _NAN)
    return Estimate(ci.estimate, ci.low, ci.high) if ci else Estimate(_NAN, _NAN, _NAN)


@dataclass
class DecoderQuality:
    n: int
    f1: Estimate
    attribute_f1: dict[str, Estimate]
    count: Estimate

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncoderQuality:
    n: int
    precision: Estimate
    attribute_precision: dict[str, Estimate]
    #: stated attribute values per true object (4 = every attribute of every object)
    attributes_per_object: Estimate
    #: captions that state a position for every object they mention
    long_fraction: Estimate
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def test_samples(n: int, split: str = "test", size: int = DEFAULT_SIZE) -> list[ShapesSample]:
    """The first ``n`` samples of ``split``; images at the size the runner's references have."""
    return list(iter_samples(split, size, n))


def _batched(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


@torch.no_grad()
def decoder_quality(
    model: UAEModel,
    samples: Sequence[ShapesSample],
    *,
    oracle=None,
    batch_size: int = 100,
    seed: int = 0,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> DecoderQuality:
    """Render the ground-truth long captions and score them with the Shapes oracle."""
    from unified_bench.tracks.shapes.oracle import ShapesOracle

    oracle = oracle or ShapesOracle("bundled")
    comparisons = []
    for start, batch in _batched(list(samples), batch_size):
        captions = [s.caption_long for s in batch]
        seeds = [seed * 1_000_003 + start + i for i in range(len(batch))]
        images = model.generate(captions, seeds=seeds, num_steps=num_steps, guidance_scale=guidance_scale)
        for sample, parsed in zip(batch, oracle.parse(images)):
            comparisons.append(compare_scenes(sample.scene, parsed))
        if progress:
            progress(len(batch))
    return DecoderQuality(
        n=len(comparisons),
        f1=_mean([c.f1 for c in comparisons]),
        attribute_f1={a: _mean([c.attribute_f1(a) for c in comparisons]) for a in ATTRIBUTES},
        count=_mean([c.count_score for c in comparisons]),
    )


@torch.no_grad()
def encoder_quality(
    model: UAEModel,
    samples: Sequence[ShapesSample],
    *,
    batch_size: int = 100,
    seed: int = 0,
    temperature: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> EncoderQuality:
    """Caption the images, parse the captions, and measure attribute precision."""
    rows = []
    examples = []
    for start, batch in _batched(list(samples), batch_size):
        seeds = [seed * 1_000_003 + start + i for i in range(len(batch))]
        texts = model.sample_captions([s.image for s in batch], seeds=seeds, temperature=temperature).texts
        for sample, text in zip(batch, texts):
            parsed = parse(text)
            comparison = compare_scenes(sample.scene, parsed)
            stated = comparison.attribute_stated
            rows.append(
                {
                    "matched": sum(comparison.attribute_matches.values()),
                    "stated": sum(stated.values()),
                    **{f"matched_{a}": comparison.attribute_matches[a] for a in ATTRIBUTES},
                    **{f"stated_{a}": stated[a] for a in ATTRIBUTES},
                    "per_object": sum(stated.values()) / max(1, len(sample.scene)),
                    "long": float(bool(parsed.objects) and all(o.position is not None for o in parsed.objects)),
                }
            )
            if len(examples) < 5:
                examples.append(f"{sample.caption_long}  ->  {text}")
        if progress:
            progress(len(batch))
    column = lambda key: [r[key] for r in rows]  # noqa: E731
    return EncoderQuality(
        n=len(rows),
        precision=_ratio(column("matched"), column("stated")),
        attribute_precision={
            a: _ratio(column(f"matched_{a}"), column(f"stated_{a}")) for a in ATTRIBUTES if sum(column(f"stated_{a}"))
        },
        attributes_per_object=_mean(column("per_object")),
        long_fraction=_mean(column("long")),
        examples=examples,
    )


def _visual_tokens(model: UAEModel, samples: Sequence[ShapesSample], batch_size: int) -> torch.Tensor:
    """The vision tower's merged tokens (the LLM's image input): [N, T, D]."""
    rows = []
    for _, batch in _batched(list(samples), batch_size):
        inputs = model.caption_prompt_inputs([s.image for s in batch])
        with torch.no_grad():
            out = model.encoder.model.visual(inputs["pixel_values"].to(model.encoder.dtype), grid_thw=inputs["image_grid_thw"])
        rows.append(out.pooler_output.float().reshape(len(batch), -1, out.pooler_output.shape[-1]).cpu())
    return torch.cat(rows)


def vision_probe(
    model: UAEModel,
    train: Sequence[ShapesSample],
    held_out: Sequence[ShapesSample],
    *,
    attributes: Sequence[str] = ("size", "shape", "color"),
    batch_size: int = 100,
) -> dict[str, dict[str, float]]:
    """Per attribute: held-out accuracy of logistic-regression probes that read the attribute
    of the object in each grid cell from the vision tower's tokens (one probe per cell, fitted
    on the train scenes that hold an object there); ``mean`` over cells, ``chance`` the
    majority-class rate of the held-out objects.

    When the tower gives one merged token per grid cell (the tiny preset: 96 px, 16 px patches
    merged 2 x 2, a 3 x 3 grid) a cell's probe reads that cell's token; otherwise all tokens.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from unified_bench.tracks.shapes.scene import POSITIONS

    for attribute in attributes:
        if attribute not in ATTRIBUTES or attribute == "position":
            raise ValueError(f"attributes are shape, color or size; got {attribute!r}")
    x_train, x_test = _visual_tokens(model, train, batch_size).numpy(), _visual_tokens(model, held_out, batch_size).numpy()
    per_cell = x_train.shape[1] == len(POSITIONS)

    def features(x: np.ndarray, rows: list[int], index: int) -> np.ndarray:
        return x[rows, index] if per_cell else x[rows].reshape(len(rows), -1)

    report = {}
    for attribute in attributes:
        y_train = [{o.position: getattr(o, attribute) for o in s.scene.objects} for s in train]
        y_test = [{o.position: getattr(o, attribute) for o in s.scene.objects} for s in held_out]
        accuracy, chance = {}, []
        for index, cell in enumerate(POSITIONS):
            fit_rows = [i for i, y in enumerate(y_train) if cell in y]
            test_rows = [i for i, y in enumerate(y_test) if cell in y]
            if not fit_rows or not test_rows:
                continue
            truth = np.array([y_test[i][cell] for i in test_rows])
            probe = LogisticRegression(max_iter=3000).fit(features(x_train, fit_rows, index), [y_train[i][cell] for i in fit_rows])
            accuracy[cell] = float((probe.predict(features(x_test, test_rows, index)) == truth).mean())
            chance.append(max(float(np.mean(truth == value)) for value in set(truth)))
        report[attribute] = {**accuracy, "mean": float(np.mean(list(accuracy.values()))), "chance": float(np.mean(chance))}
    return report


def summarise(value: Estimate | float) -> float:
    return value.value if isinstance(value, Estimate) else float(value)



"""The Shapes track's calibration table: upper bounds and floor scored by the scoring engine.

Rows: ``shapes-oracle detail=long`` (everything a caption can carry), ``shapes-oracle
detail=short`` (shapes and colours only) and ``blank`` (nothing). Each row is a real round
trip through the adapter contract (caption the reference, generate from the caption) and
the real scoring engine (``score_and_write`` with the ground-truth scene in ``Pair.meta``),
written as a run directory ``OUT/<row>/`` (images/, captions.jsonl, results.json,
scores.csv). References are written once to ``OUT/refs/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.adapters.base import check_captions, check_images
from unified_bench.tracks.shapes.compare import SUB_SCORES
from unified_bench.tracks.shapes.splits import DEFAULT_METRICS, ShapesSample, shapes_samples

#: (row label, adapter name, adapter arguments)
CALIBRATION_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("shapes-oracle-long", "shapes-oracle", {"detail": "long"}),
    ("shapes-oracle-short", "shapes-oracle", {"detail": "short"}),
    ("blank", "blank", {}),
)


@dataclass
class CalibrationRow:
    label: str
    model: str
    args: dict[str, Any]
    n: int
    errors: int
    #: metric or "shapes-attr.<sub>" -> (mean, ci low, ci high)
    scores: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    failed_metrics: dict[str, str] = field(default_factory=dict)


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def round_trip(
    samples: Sequence[ShapesSample],
    model: str,
    args: dict[str, Any],
    out_dir: Path,
    refs: dict[str, Path],
    *,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[list, list[dict]]:
    """Caption and regenerate every sample with adapter ``model``; write a run directory.

    Returns the scoring pairs and the per-sample errors.
    """
    from unified_bench.adapters.registry import build_adapter
    from unified_bench.core.protocol import OFFICIAL_CAPTION_PROMPT
    from unified_bench.core.seeds import seed_for
    from unified_bench.scoring import Pair

    adapter = build_adapter(model, args)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    pairs, errors, lines = [], [], []
    size = adapter.capabilities.native_resolution
    try:
        for batch in _batches(list(samples), batch_size):
            seeds = [seed_for(seed, s.sample_id) for s in batch]
            captions = check_captions(adapter.caption([s.image for s in batch], prompt=OFFICIAL_CAPTION_PROMPT, seeds=seeds), len(batch))
            ok = [(s, c.value, sd) for s, c, sd in zip(batch, captions, seeds) if c.ok]
            errors += [{"sample_id": s.sample_id, "stage": "caption", "message": c.error} for s, c in zip(batch, captions) if not c.ok]
            generated = check_images(
                adapter.generate([c for _, c, _ in ok], seeds=[sd for _, _, sd in ok], size=size), len(ok)
            )
            for (sample, text, sample_seed), image in zip(ok, generated):
                if not image.ok:
                    errors.append({"sample_id": sample.sample_id, "stage": "generate", "message": image.error})
                    continue
                path = images_dir / f"{sample.sample_id}.png"
                image.value.save(path)
                lines.append({"sample_id": sample.sample_id, "caption": text, "seed": sample_seed})
                pairs.append(Pair(sample.sample_id, refs[sample.sample_id], path, sample.meta))
    finally:
        adapter.close()
    with open(out_dir / "captions.jsonl", "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    return pairs, errors


def calibrate(
    out_dir: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    size: int = 256,
    metrics: Sequence[str] = DEFAULT_METRICS,
    rows: Sequence[tuple[str, str, dict[str, Any]]] = CALIBRATION_ROWS,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[CalibrationRow]:
    """Run every calibration row on ``split`` and score it; see the module docstring."""
    from unified_bench.scoring import ScoringConfig, score_and_write

    out_dir = Path(out_dir)
    samples = shapes_samples(split, size, limit)
    refs_dir = out_dir / "refs"
    refs_dir.mkdir(parents=True, exist_ok=True)
    refs = {}
    for sample in samples:
        refs[sample.sample_id] = refs_dir / f"{sample.sample_id}.png"
        if not refs[sample.sample_id].exists():
            sample.image.save(refs[sample.sample_id])
    results = []
    for label, model, args in rows:
        log(f"{label}: round trip of {len(samples)} {split} samples")
        row_dir = out_dir / label
        pairs, errors = round_trip(samples, model, args, row_dir, refs, seed=seed)
        outcome = score_and_write(
            pairs,
            ScoringConfig(metrics=list(metrics), progress=False),
            row_dir,
            run_extra={"dataset": {"name": "shapes", "split": split, "limit": limit, "size": size}, "model": {"name": model, "args": args}},
            command=f"unified-bench shapes calibrate --split {split}",
        )
        row = CalibrationRow(label, model, dict(args), len(samples), len(errors) + len(outcome.report.errors))
        for failure in outcome.failures:
            row.failed_metrics[failure.metric] = failure.message
        res = outcome.results
        for name in metrics:
            ci = res["confidence_intervals"].get(name)
            if ci:
                row.scores[name] = (ci["mean"], ci["low"], ci["high"])
        for key, sub in res.get("sub_scores", {}).items():
            if sub.get("ci95"):
                row.scores[key] = (sub["ci95"]["mean"], sub["ci95"]["low"], sub["ci95"]["high"])
        results.append(row)
    return results


def markdown_table(rows: Sequence[CalibrationRow]) -> str:
    """The calibration table (means with 95% bootstrap CIs) as Markdown."""
    keys = ["shapes-attr", *(f"shapes-attr.{s}" for s in SUB_SCORES)]
    extra = sorted({k for r in rows for k in r.scores if not k.startswith("shapes-attr")})
    header = ["row", "n", *(k.replace("shapes-attr.", "") if k != "shapes-attr" else "F1" for k in keys), *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label, str(row.n - row.errors) + (f" ({row.errors} err)" if row.errors else "")]
        for key in (*keys, *extra):
            value = row.scores.get(key)
            cells.append("n/a" if value is None or math.isnan(value[0]) else f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    failed = {m: msg for r in rows for m, msg in r.failed_metrics.items()}
    for metric, message in sorted(failed.items()):
        lines.append(f"\n(metric {metric} not computed: {message})")
    return "\n".join(lines)

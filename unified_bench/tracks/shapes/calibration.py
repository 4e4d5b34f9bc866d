"""The Shapes track's calibration table: upper bounds and floor scored by the scoring engine.

Rows: ``shapes-oracle detail=long`` (everything a caption can carry), ``shapes-oracle
detail=short`` (shapes and colours only) and ``blank`` (nothing). Each row is one
``run_eval`` on the ``shapes`` dataset: the runner's round trip through the adapter contract
(caption the reference, generate from the caption) and the real scoring engine (with the
ground-truth scene in ``Pair.meta``). Row ``<row>`` is a normal run directory ``OUT/<row>/``
(refs/, images/, captions.jsonl, run.json, errors.jsonl, results.json, scores.csv):
``unified-bench eval --resume`` continues it and the leaderboard builder reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.tracks.shapes.compare import SUB_SCORES
from unified_bench.tracks.shapes.splits import DEFAULT_METRICS

#: (row label, adapter name, adapter arguments)
CALIBRATION_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("shapes-oracle-long", "shapes-oracle", {"detail": "long"}),
    ("shapes-oracle-short", "shapes-oracle", {"detail": "short"}),
    ("blank", "blank", {}),
)

#: Samples per adapter call (both calibration adapters take 64 or more).
BATCH_SIZE = 64


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


def calibrate(
    out_dir: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    size: int = 256,
    metrics: Sequence[str] = DEFAULT_METRICS,
    rows: Sequence[tuple[str, str, dict[str, Any]]] = CALIBRATION_ROWS,
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> list[CalibrationRow]:
    """Run every calibration row on ``split`` through the runner and score it; see the module
    docstring. ``resume``: continue (or just rescore) row directories an earlier call left."""
    from unified_bench.runner.eval import EvalConfig, run_eval

    out_dir = Path(out_dir)
    results = []
    for label, model, args in rows:
        log(f"{label}: round trip of the first {limit or 'all'} {split} samples")
        outcome = run_eval(
            EvalConfig(
                model=model,
                model_args=dict(args),
                data="shapes",
                data_args={"split": split, "size": str(size)},
                limit=limit,
                metrics=list(metrics),
                seed=seed,
                out=out_dir / label,
                batch_size=BATCH_SIZE,
                resume=resume,
                progress=False,
                command=f"unified-bench shapes calibrate --split {split}",
            )
        )
        assert outcome.score is not None  # run_eval scores a single-process run
        score = outcome.score
        # the score report's errors include the runner's (caption/generate) errors
        row = CalibrationRow(label, model, dict(args), outcome.finished + len(outcome.errors), len(score.report.errors))
        for failure in score.failures:
            row.failed_metrics[failure.metric] = failure.message
        res = score.results
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

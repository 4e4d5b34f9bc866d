"""Scoring: pair matching, the batched/cached engine, and statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from unified_bench.core.provenance import new_run_record
from unified_bench.core.run_lock import RunDirLock
from unified_bench.results.io import write_report
from unified_bench.results.model import SampleError, ScoreReport
from unified_bench.results.record import RunRecord
from unified_bench.scoring.engine import MetricFailure, ScoringConfig, score
from unified_bench.scoring.pairing import Pair, Pairing, match_pairs

__all__ = [
    "MetricFailure",
    "Pair",
    "Pairing",
    "ScoreOutcome",
    "ScoringConfig",
    "match_pairs",
    "score",
    "score_and_write",
    "score_folders",
    "write_scored",
]


@dataclass
class ScoreOutcome:
    report: ScoreReport
    results: dict[str, Any]
    failures: list[MetricFailure]
    out_dir: Path

    @property
    def ok(self) -> bool:
        """True when every metric loaded and every sample scored (in every cycle)."""
        later = [c for c in self.report.cycles if c.cycle > 1]
        return (
            not self.failures
            and not self.report.errors
            and not any(c.vs_original.errors or (c.vs_previous is not None and c.vs_previous.errors) for c in later)
        )


def score_and_write(
    pairs: Sequence[Pair],
    config: ScoringConfig,
    out_dir: str | Path,
    *,
    unmatched_images: Sequence[str] = (),
    unmatched_refs: Sequence[str] = (),
    run_extra: dict[str, Any] | None = None,
    command: str | None = None,
    console: Console | None = None,
    extra_errors: Sequence[SampleError] = (),
) -> ScoreOutcome:
    """Score pairs and write ``results.json`` + ``scores.csv`` into ``out_dir``.

    ``extra_errors`` are failures from before scoring (e.g. the runner's caption/generate
    stages); they are listed in ``results.json`` ``errors`` ahead of scoring errors.
    """
    report, failures, timings = score(pairs, config, console=console)
    report.errors = [*extra_errors, *report.errors]
    report.unmatched_images = list(unmatched_images)
    report.unmatched_refs = list(unmatched_refs)
    return write_scored(report, failures, timings, config, out_dir, run_extra=run_extra, command=command)


def write_scored(
    report: ScoreReport,
    failures: Sequence[MetricFailure],
    timings: dict[str, float],
    config: ScoringConfig,
    out_dir: str | Path,
    *,
    run_extra: dict[str, Any] | None = None,
    command: str | None = None,
) -> ScoreOutcome:
    """Add the run record to a scored report and write ``results.json`` + ``scores.csv``
    (the second half of :func:`score_and_write`, for callers that score in several calls)."""
    record = new_run_record(command=command, device=config.device, **(run_extra or {}))
    record["metrics"] = report.run.get("metrics", [])
    record["timings"] = {**record.get("timings", {}), **timings}
    record["scoring"] = {
        "metrics_requested": list(config.metrics),
        "checkpoint_overrides": dict(config.checkpoints),
        "batch_size": config.batch_size,
        "dtype": config.dtype,
        "metric_failures": [{"metric": f.metric, "message": f.message} for f in failures],
    }
    report.run = RunRecord.from_dict(record).to_dict()  # typed: a malformed record fails here, not on a reader
    results = write_report(report, out_dir)
    return ScoreOutcome(report, results, list(failures), Path(out_dir))


def score_folders(
    images_dir: str | Path,
    refs_dir: str | Path,
    out_dir: str | Path,
    config: ScoringConfig,
    *,
    command: str | None = None,
    console: Console | None = None,
    name: str | None = None,
) -> ScoreOutcome:
    """``unified-bench score`` as a library call; ``name`` is the run's display label.
    ``out_dir`` is locked against other processes while it is scored."""
    with RunDirLock(out_dir, command=command, console=console):
        return _score_folders(images_dir, refs_dir, out_dir, config, command=command, console=console, name=name)


def _score_folders(
    images_dir: str | Path,
    refs_dir: str | Path,
    out_dir: str | Path,
    config: ScoringConfig,
    *,
    command: str | None,
    console: Console | None,
    name: str | None,
) -> ScoreOutcome:
    pairing = match_pairs(images_dir, refs_dir)
    return score_and_write(
        pairing.pairs,
        config,
        out_dir,
        unmatched_images=pairing.unmatched_images,
        unmatched_refs=pairing.unmatched_refs,
        run_extra={
            "dataset": {"images": str(images_dir), "refs": str(refs_dir)},
            **({"name": name} if name is not None else {}),
        },
        command=command,
        console=console,
    )

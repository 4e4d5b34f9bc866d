"""Scoring a run directory: its finished samples and its run record into ``results.json``.

A one-cycle image trip is scored as it always was. A text-trip or multi-cycle run scores
each cycle against the original (image trip: cycle k's reconstruction vs the reference;
text trip: cycle k's final caption vs the first prompt, and its drawing vs the sample's
image where there is one) and against the previous cycle (cycle k's output vs cycle
k-1's). Cycle 1 is scored in the call a one-cycle run makes, so its numbers are that run's;
each later cycle is one engine call for both comparisons (every backbone loads once per
cycle, and an image both compared and compared against is embedded once)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from unified_bench.core.errors import ConfigError
from unified_bench.core.run_lock import RunDirLock
from unified_bench.datasets.base import natural_key
from unified_bench.results.model import CycleResult, MetricScores, SampleError, ScoreReport
from unified_bench.results.record import RECORD_VERSION, ModelRecord, RunInfo
from unified_bench.runner.config import EvalConfig
from unified_bench.runner.store import CaptionRecord, RunState, RunStore, cycle_dir
from unified_bench.scoring import MetricFailure, Pair, ScoreOutcome, ScoringConfig, score, score_and_write, write_scored
from unified_bench.scoring.keys import resolve_metric_key


def score_run(out: Path, config: EvalConfig, *, console: Console | None = None) -> ScoreOutcome:
    """Score the finished samples of run directory ``out`` into ``out/results.json``, holding
    its lock (re-entrant: ``eval`` scores under the lock it already holds)."""
    with RunDirLock(out, command=config.command, console=console):
        return _score_run(out, config, console=console)


def _score_run(out: Path, config: EvalConfig, *, console: Console | None) -> ScoreOutcome:
    store = RunStore(out)
    run = store.read_run_info() or RunInfo()
    state = store.read_state()
    trip = run.trip_name
    records = sorted(state.finished.values(), key=lambda r: natural_key(r.sample_id))
    metrics = _metrics_for(config, run, has_images=any(r.reference for r in records))
    pairs = [_pair(store, r, store, r, trip) for r in records]
    runner_errors = _runner_errors(state)
    # on the text trip a key without a mode reads texts where its metric can
    scoring = replace(config.scoring, metrics=metrics, progress=config.progress, trip=trip)
    shas = {r.sample_id: r.reference_sha256 for r in records}
    shas.update({e.sample_id: e.reference_sha256 for e in state.errors.values()})
    dataset = run.dataset_info.to_dict() if run.dataset_info is not None else {"name": run.dataset}
    run_extra = {
        "record_version": RECORD_VERSION,
        "model": ModelRecord(name=run.model, args=run.model_args, adapter=run.adapter).to_dict(),
        "protocol": run.protocol,
        "protocol_executed": run.executed_protocol().to_dict(),
        "dataset": {**dataset, "reference_sha256": dict(sorted(shas.items(), key=lambda kv: natural_key(kv[0])))},
        "seeds": {
            "global_seed": run.seed,
            "derivation": "seed_for(global_seed, sample_id): sha256 of both, first 8 bytes mod 2**31",
            "per_sample": {r.sample_id: r.seed for r in records},
        },
        "runner": {
            "batch_size": run.batch_size,
            "limit": run.limit,
            "shards": run.shards,
            "finished": len(records),
            "failed": len(runner_errors),
            **_incomplete(run, state),
        },
        "timings": {k: v for k, v in (run.timings or {}).items() if isinstance(v, (int, float)) and math.isfinite(v)},
    }
    if run.training is not None:
        run_extra["training"] = run.training.to_dict()
    if run.captions_from is not None:
        run_extra["captions_from"] = run.captions_from
    name = config.name if config.name is not None else run.name
    if name is not None:
        run_extra["name"] = name
    if run.trip is None and not run.cycles:  # a one-cycle image trip: today's file
        return score_and_write(
            pairs,
            scoring,
            out,
            run_extra=run_extra,
            command=config.command,
            console=console,
            extra_errors=runner_errors,
        )
    report, failures, timings = score(pairs, scoring, console=console)
    report.errors = [*runner_errors, *report.errors]
    report.trip = trip
    report.cycles = [CycleResult(1, ScoreReport(report.samples, report.metrics, report.errors))]
    origin = state.finished
    for cycle in range(2, (run.cycles or 1) + 1):
        result, more_failures, more_timings = _score_cycle(out, cycle, origin, trip, scoring, console)
        report.cycles.append(result)
        failures += [f for f in more_failures if f.metric not in {g.metric for g in failures}]
        timings.update({f"cycle{cycle}.{key}": value for key, value in more_timings.items()})
    return write_scored(report, failures, timings, scoring, out, run_extra=run_extra, command=config.command)


#: a pair of the previous-cycle comparison is scored as ``<id>@previous`` in the cycle's
#: one engine call ('@' is not in any sample id)
_PREVIOUS = "@previous"


def _score_cycle(
    out: Path, cycle: int, origin: dict[str, CaptionRecord], trip: str, scoring: ScoringConfig, console: Console | None
) -> tuple[CycleResult, list[MetricFailure], dict[str, float]]:
    """Cycle ``cycle`` (> 1) against the original and against cycle ``cycle - 1``, in one
    engine call."""
    root = RunStore(out)
    store = RunStore(cycle_dir(out, cycle), tree=out)
    before = RunStore(cycle_dir(out, cycle - 1), tree=out)
    state, previous = store.read_state(), before.read_state().finished
    records = [
        r for r in sorted(state.finished.values(), key=lambda r: natural_key(r.sample_id))
        if r.sample_id in origin and r.sample_id in previous
    ]
    originals = [_pair(root, origin[r.sample_id], store, r, trip) for r in records]
    drifts = [
        replace(_pair(before, previous[r.sample_id], store, r, trip, meta=False), sample_id=r.sample_id + _PREVIOUS)
        for r in records
    ]
    report, failures, timings = score([*originals, *drifts], scoring, console=console)
    vs_original = _part(report, slice(0, len(originals)), lambda sid: not sid.endswith(_PREVIOUS))
    vs_previous = _part(report, slice(len(originals), None), lambda sid: sid.endswith(_PREVIOUS))
    vs_original.errors = [*_runner_errors(state), *vs_original.errors]
    return CycleResult(cycle, vs_original, vs_previous), failures, timings


def _part(report: ScoreReport, rows: slice, mine) -> ScoreReport:  # noqa: ANN001
    """The pairs ``rows`` of a report scored in one call, with their own ids back."""
    strip = lambda sid: sid[: -len(_PREVIOUS)] if sid.endswith(_PREVIOUS) else sid  # noqa: E731
    return ScoreReport(
        [replace(s, sample_id=strip(s.sample_id)) for s in report.samples[rows]],
        [
            MetricScores(
                m.name, m.unit, m.values[rows], {k: v[rows] for k, v in m.sub_scores.items()}, {k: v[rows] for k, v in m.tokens.items()}
            )
            for m in report.metrics
        ],
        [replace(e, sample_id=strip(e.sample_id)) for e in report.errors if mine(e.sample_id)],
    )


def _pair(
    where: RunStore, compared_to: CaptionRecord, store: RunStore, record: CaptionRecord, trip: str, *, meta: bool = True
) -> Pair:
    """``record``'s output (in ``store``) against ``compared_to`` (in ``where``): on the image
    trip its reconstruction vs ``compared_to``'s input image (the original reference) or
    output (the previous cycle's reconstruction); on the text trip its caption vs
    ``compared_to``'s prompt (the original) or caption (the previous cycle), and its drawing vs
    the sample's image or the previous drawing. ``meta``: the ground truth travels (vs the
    original); without it a metric compares with what ``compared_to`` holds."""
    recon = store.resolve(record.image)
    truth = record.meta if meta else None
    if trip == "image":
        return Pair(record.sample_id, where.resolve(compared_to.reference if meta else compared_to.image), recon, truth)
    if meta:  # vs the original: the first prompt, and the dataset's image where there is one
        reference = where.resolve(compared_to.reference) if compared_to.reference else None
        reference_text = compared_to.prompt
    else:
        reference, reference_text = where.resolve(compared_to.image), compared_to.caption
    return Pair(record.sample_id, reference, recon, truth, reference_text=reference_text, text=record.caption)


def _runner_errors(state: RunState) -> list[SampleError]:
    return [
        SampleError(e.sample_id, e.stage, e.message)
        for e in sorted(state.errors.values(), key=lambda e: natural_key(e.sample_id))
    ]


def _incomplete(run: RunInfo, state: RunState) -> dict:
    """The runner keys of a run whose last session stopped early (its server stopped
    answering): marked incomplete, with the reason and the count of samples never run."""
    last = run.invocations[-1] if run.invocations else None
    if last is None or not last.stopped or run.shards is not None:
        return {}
    owned = run.owned_samples or []
    not_run = sum(1 for sid in owned if sid not in state.finished and sid not in state.errors)
    return {"incomplete": True, "stopped": last.stopped, "not_run": not_run}


def _metrics_for(config: EvalConfig, run: RunInfo, *, has_images: bool = True) -> list[str]:
    from unified_bench.metrics import parse_metric_list

    if config.metrics:
        return list(config.metrics)
    if run.metrics:  # what the run (or its shards) asked for
        return list(run.metrics)
    defaults = tuple((run.dataset_info.default_metrics if run.dataset_info is not None else None) or ())
    if not defaults:
        raise ConfigError("no --metrics given and the dataset declares no default metrics")
    return trip_metrics(parse_metric_list(",".join(defaults)), run.trip_name, has_images=has_images)


def trip_metrics(defaults: Sequence[str], trip: str, *, has_images: bool) -> list[str]:
    """A dataset's default metrics for ``trip``. The image trip takes them as declared. The
    text trip keeps those that read text (``shapes-attr`` parses the caption against the
    scene; ``clip-text``, ``clip-t2i``...) and, when the samples have images, scores the
    drawing with every metric that reads images as ``NAME@image`` (Shapes: ``shapes-attr``,
    ``shapes-attr@image``, ``effnet@image``): the text score says what survived the trip,
    the drawing's says whether it was lost in the drawing or in the description."""
    if trip == "image":
        return list(defaults)
    texts, drawings = [], []
    for key in defaults:
        if "@" in key:  # a mode the dataset chose
            texts.append(key)
            continue
        if resolve_metric_key(key, "text")[1] in ("text", "image-text"):
            texts.append(key)
        if has_images and resolve_metric_key(key, "image")[1] == "image":
            drawings.append(f"{key}@image")
    return list(dict.fromkeys([*texts, *drawings]))

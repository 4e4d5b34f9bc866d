"""Scoring a run directory: its finished samples and its run record into ``results.json``."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from unified_bench.core.errors import ConfigError
from unified_bench.core.run_lock import RunDirLock
from unified_bench.datasets.base import natural_key
from unified_bench.results.model import SampleError
from unified_bench.results.record import RECORD_VERSION, ModelRecord, RunInfo
from unified_bench.runner.config import EvalConfig
from unified_bench.runner.store import RunState, RunStore
from unified_bench.scoring import Pair, ScoreOutcome, score_and_write


def score_run(out: Path, config: EvalConfig, *, console: Console | None = None) -> ScoreOutcome:
    """Score the finished samples of run directory ``out`` into ``out/results.json``, holding
    its lock (re-entrant: ``eval`` scores under the lock it already holds)."""
    with RunDirLock(out, command=config.command, console=console):
        return _score_run(out, config, console=console)


def _score_run(out: Path, config: EvalConfig, *, console: Console | None) -> ScoreOutcome:
    store = RunStore(out)
    run = store.read_run_info() or RunInfo()
    state = store.read_state()
    metrics = _metrics_for(config, run)
    records = sorted(state.finished.values(), key=lambda r: natural_key(r.sample_id))
    pairs = [Pair(r.sample_id, store.resolve(r.reference), store.resolve(r.image), r.meta) for r in records]
    runner_errors = [
        SampleError(e.sample_id, e.stage, e.message)
        for e in sorted(state.errors.values(), key=lambda e: natural_key(e.sample_id))
    ]
    scoring = replace(config.scoring, metrics=metrics, progress=config.progress)
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
    return score_and_write(
        pairs,
        scoring,
        out,
        run_extra=run_extra,
        command=config.command,
        console=console,
        extra_errors=runner_errors,
    )


def _incomplete(run: RunInfo, state: RunState) -> dict:
    """The runner keys of a run whose last session stopped early (its server stopped
    answering): marked incomplete, with the reason and the count of samples never run."""
    last = run.invocations[-1] if run.invocations else None
    if last is None or not last.stopped or run.shards is not None:
        return {}
    owned = run.owned_samples or []
    not_run = sum(1 for sid in owned if sid not in state.finished and sid not in state.errors)
    return {"incomplete": True, "stopped": last.stopped, "not_run": not_run}


def _metrics_for(config: EvalConfig, run: RunInfo) -> list[str]:
    from unified_bench.metrics import parse_metric_list

    if config.metrics:
        return list(config.metrics)
    if run.metrics:  # what the run (or its shards) asked for
        return list(run.metrics)
    defaults = tuple((run.dataset_info.default_metrics if run.dataset_info is not None else None) or ())
    if not defaults:
        raise ConfigError("no --metrics given and the dataset declares no default metrics")
    return parse_metric_list(",".join(defaults))

"""Typed results of a scoring run and their ``results.json`` form.

``results.json`` keeps the official UAE scoring script's keys and nesting
(``model_types``, ``similarities_by_model``, ``statistics_by_model``, ``summary`` with
``overall_average``) so existing tooling reads it, and adds ``unified_score``,
``extended_score``, ``confidence_intervals``, ``sub_scores``, ``samples``, ``errors``,
``unmatched`` and ``run`` (the run record), and ``truncation`` when a text metric ran (each
text's token count against its tower's context). ``schema.json`` beside this file is the contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from unified_bench.metrics import EXTENDED_METRICS, PAPER_METRICS, TokenCount
from unified_bench.results.record import RunRecord
from unified_bench.core.stats import bootstrap_joint_ci, bootstrap_mean_ci, finite, paired_difference_ci

SCHEMA_VERSION = 1

#: metrics whose unit is not a similarity in [0, 1]; kept out of ``overall_average``.
NON_SIMILARITY_METRICS = frozenset({"psnr"})


@dataclass(frozen=True)
class SampleRecord:
    """One matched pair: where its files are and the reference's content hash."""

    sample_id: str
    reference: str
    reconstruction: str
    reference_sha256: str | None = None


@dataclass(frozen=True)
class SampleError:
    sample_id: str
    stage: str  # "load", "metric", "caption", "generate", ...
    message: str
    metric: str | None = None


@dataclass
class MetricScores:
    """Per-sample scores of one metric key, aligned with ``ScoreReport.samples`` (None = failed).

    ``tokens``: for a metric that read texts, each text's token count against its tower's
    context, per role ("text": the candidate, "reference_text"), aligned with the samples.
    """

    name: str
    unit: str
    values: list[float | None]
    sub_scores: dict[str, list[float | None]] = field(default_factory=dict)
    tokens: dict[str, list[TokenCount | None]] = field(default_factory=dict)

    def truncated(self, index: int) -> bool | None:
        """Whether any text of sample ``index`` was cut to the context (None: no text read)."""
        counts = [role[index] for role in self.tokens.values() if role[index] is not None]
        return any(count.truncated for count in counts) if counts else None


@dataclass
class ScoreReport:
    """Everything a scoring run produced; ``to_results_json`` makes ``results.json``."""

    samples: list[SampleRecord]
    metrics: list[MetricScores]
    errors: list[SampleError] = field(default_factory=list)
    unmatched_images: list[str] = field(default_factory=list)
    unmatched_refs: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    #: set on a text-trip or multi-cycle run ("image" or "text"): ``results.json`` then adds
    #: ``trip``, ``cycles`` and ``cycle_curves``; None keeps a one-cycle image trip's file as it was
    trip: str | None = None
    #: every cycle, cycle 1 first (its ``vs_original`` holds the same scores as this report)
    cycles: list[CycleResult] = field(default_factory=list)

    def metric(self, name: str) -> MetricScores:
        for scores in self.metrics:
            if scores.name == name:
                return scores
        raise KeyError(name)

    @property
    def failed_samples(self) -> set[str]:
        return {err.sample_id for err in self.errors}

    def to_results_json(self) -> dict[str, Any]:
        similarities, statistics, summary, intervals, sub_scores = self._score_parts()
        data = {
            "schema_version": SCHEMA_VERSION,
            "model_types": [m.name for m in self.metrics],
            "similarities_by_model": similarities,
            "statistics_by_model": statistics,
            "summary": summary,
            "unified_score": self._composite(PAPER_METRICS),
            "extended_score": self._composite(EXTENDED_METRICS),
            "confidence_intervals": intervals,
            "sub_scores": sub_scores,
            "units": {m.name: m.unit for m in self.metrics},
            "samples": [asdict(s) for s in self.samples],
            "errors": [asdict(e) for e in self.errors],
            "unmatched": {"images": list(self.unmatched_images), "refs": list(self.unmatched_refs)},
            "run": self.run,
        }
        truncation = truncation_json(self.metrics, [s.sample_id for s in self.samples])
        if truncation:  # absent when no metric read texts: image runs' files are unchanged
            data["truncation"] = truncation
        if self.trip is not None:
            data["trip"] = self.trip
            data["cycles"] = [cycle.to_json() for cycle in self.cycles]
            data["cycle_curves"] = cycle_curves(self.cycles)
        return data

    def scores_block(self) -> dict[str, Any]:
        """This report's scores in the official shape, for one entry of ``cycles``: the
        sample ids, per-sample scores, statistics, summary, CIs, sub-scores and errors."""
        similarities, statistics, summary, intervals, sub_scores = self._score_parts()
        block = {
            "samples": [s.sample_id for s in self.samples],
            "similarities_by_model": similarities,
            "statistics_by_model": statistics,
            "summary": summary,
            "confidence_intervals": intervals,
            "sub_scores": sub_scores,
            "errors": [asdict(e) for e in self.errors],
        }
        truncation = truncation_json(self.metrics, block["samples"])
        if truncation:
            block["truncation"] = truncation
        return block

    @classmethod
    def from_scores_block(cls, block: Mapping[str, Any], units: Mapping[str, str]) -> ScoreReport:
        """The report a :meth:`scores_block` was written from (file paths are not kept)."""
        ids = list(block["samples"])
        metrics = []
        for name, values in block["similarities_by_model"].items():
            subs = {
                key.split(".", 1)[1]: [sub["values"].get(sid) for sid in ids]
                for key, sub in (block.get("sub_scores") or {}).items()
                if key.split(".", 1)[0] == name
            }
            tokens = tokens_from_json((block.get("truncation") or {}).get(name), ids)
            metrics.append(MetricScores(name, units.get(name, "cosine"), [values.get(sid) for sid in ids], subs, tokens))
        return cls([SampleRecord(sid, "", "") for sid in ids], metrics, [SampleError(**e) for e in block.get("errors", [])])

    def _score_parts(self) -> tuple[dict, dict, dict, dict, dict]:
        """similarities_by_model, statistics_by_model, summary, confidence_intervals, sub_scores."""
        ids = [s.sample_id for s in self.samples]
        similarities: dict[str, dict[str, float | None]] = {}
        statistics: dict[str, dict[str, Any]] = {}
        intervals: dict[str, Any] = {}
        sub_scores: dict[str, dict[str, Any]] = {}
        for scores in self.metrics:
            similarities[scores.name] = {sid: _clean(v) for sid, v in zip(ids, scores.values)}
            stats = metric_statistics(scores.values)
            if stats is not None:
                statistics[scores.name] = stats
            ci = bootstrap_mean_ci(scores.values)
            intervals[scores.name] = ci.to_dict() if ci else None
            for sub, values in scores.sub_scores.items():
                ci_sub = bootstrap_mean_ci(values)
                sub_scores[f"{scores.name}.{sub}"] = {
                    "values": {sid: _clean(v) for sid, v in zip(ids, values)},
                    "mean": ci_sub.estimate if ci_sub else None,
                    "ci95": ci_sub.to_dict() if ci_sub else None,
                }
        averages = {
            name: stats["average_similarity"]
            for name, stats in statistics.items()
            if name not in NON_SIMILARITY_METRICS
        }
        summary: dict[str, Any] = {}
        if averages:
            summary = {
                "models_used": list(averages),
                "average_scores_by_model": averages,
                "overall_average": sum(averages.values()) / len(averages),
                "best_model": list(max(averages.items(), key=lambda item: item[1])),
                "worst_model": list(min(averages.items(), key=lambda item: item[1])),
            }
        return similarities, statistics, summary, intervals, sub_scores

    @classmethod
    def from_results_json(cls, data: Mapping[str, Any]) -> ScoreReport:
        """The report a ``results.json`` was written from (validate it first: ``load_results``).

        Statistics, CIs and composites are derived, so they are recomputed, not read:
        ``from_results_json(d).to_results_json() == d`` for every file this tool wrote.
        """
        samples = [SampleRecord(**record) for record in data["samples"]]
        if not samples:  # a stored file without sample records still has per-sample scores
            ids = sorted({sid for values in data["similarities_by_model"].values() for sid in values})
            samples = [SampleRecord(sid, "", "") for sid in ids]
        ids = [s.sample_id for s in samples]
        units = data.get("units") or {}
        metrics = []
        for name in data["model_types"]:
            values = data["similarities_by_model"].get(name, {})
            subs = {
                key.split(".", 1)[1]: [block["values"].get(sid) for sid in ids]
                for key, block in (data.get("sub_scores") or {}).items()
                if key.split(".", 1)[0] == name
            }
            tokens = tokens_from_json((data.get("truncation") or {}).get(name), ids)
            metrics.append(MetricScores(name, units.get(name, "cosine"), [values.get(sid) for sid in ids], subs, tokens))
        unmatched = data.get("unmatched") or {}
        cycles = [
            CycleResult(
                int(entry["cycle"]),
                cls.from_scores_block(entry, units),
                cls.from_scores_block(entry["vs_previous"], units) if entry.get("vs_previous") else None,
            )
            for entry in data.get("cycles") or []
        ]
        return cls(
            samples,
            metrics,
            [SampleError(**error) for error in data.get("errors", [])],
            list(unmatched.get("images", [])),
            list(unmatched.get("refs", [])),
            dict(data.get("run") or {}),
            data.get("trip"),
            cycles,
        )

    def at_cycle(self, cycle: int, versus: str = "original") -> ScoreReport:
        """Cycle ``cycle``'s scores as a report of this run (same run record): against the
        original (``versus="original"``) or against the previous cycle (``"previous"``). Cycle 1
        against the original is the run's own scores, also for a run without cycles."""
        if versus not in ("original", "previous"):
            raise ValueError(f"versus must be 'original' or 'previous', got {versus!r}")
        if cycle == 1 and versus == "original":
            return self  # cycle 1 of every run is the run's own scores
        for entry in self.cycles:
            if entry.cycle == cycle:
                part = entry.vs_original if versus == "original" else entry.vs_previous
                if part is None:
                    raise ValueError("cycle 1 has no previous cycle to be compared with")
                return replace(part, run=self.run, trip=None, cycles=[])
        raise ValueError(f"the run has no cycle {cycle} (it has {len(self.cycles) or 1})")

    def drop(self) -> ScoreReport:
        """Per sample and metric, cycle 1's score minus the last cycle's (both against the
        original; None where either is missing): how much a sample lost over the cycles, as a
        report of this run, so two runs' drops can be compared pair by pair."""
        if len(self.cycles) < 2:
            raise ValueError("the run has one cycle: there is no drop to compare")
        first, last = self.cycles[0].vs_original, self.cycles[-1].vs_original
        last_by_id = {m.name: dict(zip((s.sample_id for s in last.samples), m.values)) for m in last.metrics}
        metrics = []
        for scores in first.metrics:
            after = last_by_id.get(scores.name, {})
            values = [
                None if v is None or after.get(s.sample_id) is None else v - after[s.sample_id]  # type: ignore[operator]
                for s, v in zip(first.samples, scores.values)
            ]
            metrics.append(MetricScores(scores.name, scores.unit, values))
        return ScoreReport(list(first.samples), metrics, list(first.errors), run=self.run)

    @property
    def record(self) -> RunRecord:
        """The run record, typed."""
        return RunRecord.from_dict(self.run)

    def _composite(self, names: Sequence[str]) -> dict[str, Any] | None:
        """Mean of per-metric means x100, present only when every named metric ran."""
        present = {m.name: m.values for m in self.metrics}
        if not all(name in present and finite(present[name]).size for name in names):
            return None
        columns = {name: present[name] for name in names}
        ci = bootstrap_joint_ci(columns, lambda means: sum(means.values()) / len(means), scale=100.0)
        if ci is None:
            return None
        return {"value": ci.estimate, "metrics": list(names), "scale": 100, "ci95": ci.to_dict()}


def truncation_json(metrics: Sequence[MetricScores], ids: Sequence[str]) -> dict[str, Any]:
    """``results.json`` ``truncation``: per metric key that read texts, how many samples had a
    text cut to the tower's context, and per sample and role the token count and context."""
    out: dict[str, Any] = {}
    for scores in metrics:
        if not scores.tokens:
            continue
        samples: dict[str, dict[str, Any]] = {}
        for index, sid in enumerate(ids):
            roles = {role: counts[index].to_dict() for role, counts in scores.tokens.items() if counts[index] is not None}
            if roles:
                samples[sid] = roles
        cut = sum(1 for index in range(len(ids)) if scores.truncated(index))
        out[scores.name] = {"truncated_samples": cut, "samples": samples}
    return out


def tokens_from_json(block: Mapping[str, Any] | None, ids: Sequence[str]) -> dict[str, list[TokenCount | None]]:
    """The inverse of one metric's :func:`truncation_json` block."""
    if not block:
        return {}
    roles = sorted({role for record in block["samples"].values() for role in record})
    tokens: dict[str, list[TokenCount | None]] = {}
    for role in roles:
        column: list[TokenCount | None] = []
        for sid in ids:
            record = block["samples"].get(sid, {}).get(role)
            column.append(None if record is None else TokenCount(record["tokens"], record["context"]))
        tokens[role] = column
    return tokens


@dataclass
class CycleResult:
    """One cycle of a trip, scored against the original (how much survives: cycle k's
    output vs the sample's first input) and against the previous cycle (how fast it drifts:
    cycle k's output vs cycle k-1's; None for cycle 1)."""

    cycle: int
    vs_original: ScoreReport
    vs_previous: ScoreReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            **self.vs_original.scores_block(),
            "vs_previous": self.vs_previous.scores_block() if self.vs_previous is not None else None,
        }


def cycle_curves(cycles: Sequence[CycleResult]) -> dict[str, Any]:
    """Per metric, its curve over the cycles: the mean score of each cycle against the
    original (``by_cycle``) and against the previous cycle (``vs_previous_by_cycle``, null
    for cycle 1), their mean over cycles, the ``drop`` from cycle 1 to the last (difference
    of the two means), the same drop paired per sample with a 95% bootstrap CI (samples
    scored in both), and the ``drift_rate``: the drop per cycle after the first."""
    names: list[str] = []
    for cycle in cycles:
        names += [m.name for m in cycle.vs_original.metrics if m.name not in names]
    curves: dict[str, Any] = {}
    for name in names:
        by_cycle = [_mean_of(cycle.vs_original, name) for cycle in cycles]
        previous = [_mean_of(cycle.vs_previous, name) if cycle.vs_previous is not None else None for cycle in cycles]
        present = [v for v in by_cycle if v is not None]
        drop = by_cycle[0] - by_cycle[-1] if len(cycles) > 1 and None not in (by_cycle[0], by_cycle[-1]) else None
        paired = _paired_drop(cycles[0].vs_original, cycles[-1].vs_original, name) if len(cycles) > 1 else None
        curves[name] = {
            "by_cycle": by_cycle,
            "vs_previous_by_cycle": previous,
            "mean_over_cycles": sum(present) / len(present) if present else None,
            "drop": drop,
            "drop_paired_ci95": paired.to_dict() if paired is not None else None,
            "drift_rate": drop / (len(cycles) - 1) if drop is not None else None,
        }
    return curves


def _mean_of(report: ScoreReport, name: str) -> float | None:
    try:
        values = finite(report.metric(name).values)
    except KeyError:
        return None
    return float(values.mean()) if values.size else None


def _paired_drop(first: ScoreReport, last: ScoreReport, name: str):
    """Paired bootstrap CI of mean(first - last) over the samples scored in both."""
    try:
        a = dict(zip((s.sample_id for s in first.samples), first.metric(name).values))
        b = dict(zip((s.sample_id for s in last.samples), last.metric(name).values))
    except KeyError:
        return None
    shared = [sid for sid in a if sid in b]
    return paired_difference_ci([b[sid] for sid in shared], [a[sid] for sid in shared])


def metric_statistics(values: Sequence[float | None]) -> dict[str, Any] | None:
    """The official script's per-metric statistics block (None when no pair is valid)."""
    valid = finite(values)
    if valid.size == 0:
        return None
    return {
        "total_images": len(values),
        "valid_pairs": int(valid.size),
        "average_similarity": float(valid.mean()),
        "min_similarity": float(valid.min()),
        "max_similarity": float(valid.max()),
    }


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def scores_table_rows(report: ScoreReport) -> list[Mapping[str, Any]]:
    """Rows of ``scores.csv``: one per sample, one column per metric and sub-score. A
    text-trip or multi-cycle run has one row per (cycle, comparison, sample), led by
    ``trip``, ``cycle`` and ``versus`` (``original`` or ``previous``) columns."""
    if report.trip is None:
        return _rows(report)
    rows: list[Mapping[str, Any]] = []
    for cycle in report.cycles:
        for versus, part in (("original", cycle.vs_original), ("previous", cycle.vs_previous)):
            if part is not None:
                rows += [{"trip": report.trip, "cycle": cycle.cycle, "versus": versus, **row} for row in _rows(part)]
    return rows


def _rows(report: ScoreReport) -> list[Mapping[str, Any]]:
    rows = []
    errors_by_sample: dict[str, list[str]] = {}
    for err in report.errors:
        errors_by_sample.setdefault(err.sample_id, []).append(
            f"{err.stage}{'/' + err.metric if err.metric else ''}: {err.message}"
        )
    for index, sample in enumerate(report.samples):
        row: dict[str, Any] = {
            "sample_id": sample.sample_id,
            "reference": sample.reference,
            "reconstruction": sample.reconstruction,
        }
        for scores in report.metrics:
            row[scores.name] = _clean(scores.values[index])
            for sub, values in scores.sub_scores.items():
                row[f"{scores.name}.{sub}"] = _clean(values[index])
            if scores.tokens:
                row[f"{scores.name}.truncated"] = scores.truncated(index)
        row["error"] = " | ".join(errors_by_sample.get(sample.sample_id, []))
        rows.append(row)
    return rows

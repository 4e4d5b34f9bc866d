"""Paired comparisons of two runs on the same samples: the leaderboard's compare page and
``unified-bench compare`` (:func:`compare_reports`) compute their differences here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unified_bench.core.stats import (
    DEFAULT_ALPHA,
    DEFAULT_POWER,
    PairedPower,
    paired_difference_ci,
    paired_joint_difference,
    paired_permutation_p,
    paired_power,
    per_sample_statistic,
)
from unified_bench.leaderboard.entries import RunEntry, model_name
from unified_bench.metrics import EXTENDED_METRICS, PAPER_METRICS
from unified_bench.results import ScoreReport


@dataclass(frozen=True)
class Difference:
    """mean(b - a) over samples where both scored, with its paired-bootstrap 95% CI."""

    metric: str
    mean: float | None
    low: float | None
    high: float | None
    n: int
    #: two-sided sign-flip permutation p-value (computed only where asked for: ``p_values=True``)
    p_value: float | None = None
    a_mean: float | None = None  # each run's mean over the n pairs used
    b_mean: float | None = None
    #: MDE and required n of the paired t-test (computed only where asked for: ``power=``)
    resolution: PairedPower | None = None

    @property
    def significant(self) -> bool:
        """The CI excludes zero (no correction for the many pairs on a page)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def sample_signature(run: RunEntry) -> tuple[tuple[str, str], ...] | None:
    """(sample id, reference sha256) for every sample; None when a hash is missing.

    Two runs are compared only when their signatures are equal: the same ids *and* the same
    reference images, so a renamed or re-encoded reference set never counts as the same.
    """
    items = []
    for sample in run.samples:
        if not sample.reference_sha256:
            return None
        items.append((sample.sample_id, sample.reference_sha256))
    return tuple(sorted(items)) if items else None


def paired_differences(a: RunEntry, b: RunEntry, metrics: Sequence[str]) -> list[Difference]:
    """Per-metric paired differences b - a; the runs must share a sample signature."""
    ids = [s.sample_id for s in a.samples]
    a_scores = {s.sample_id: s.scores for s in a.samples}
    b_scores: Mapping[str, Mapping[str, float | None]] = {s.sample_id: s.scores for s in b.samples}
    return metric_differences(ids, a_scores, b_scores, metrics)


def metric_differences(
    ids: Sequence[str],
    a_scores: Mapping[str, Mapping[str, float | None]],
    b_scores: Mapping[str, Mapping[str, float | None]],
    metrics: Sequence[str],
    *,
    p_values: bool = False,
    power: float | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> list[Difference]:
    """Per-metric paired differences b - a over ``ids`` (samples where both scored); with
    ``power``, each one's MDE and required n at that power and ``alpha``."""
    out = []
    for metric in metrics:
        xs = [a_scores[i].get(metric) for i in ids]
        ys = [b_scores[i].get(metric) for i in ids]
        pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
        resolution = None if power is None else paired_power([y - x for x, y in pairs], power=power, alpha=alpha)
        ci = paired_difference_ci(xs, ys)
        if ci is None:
            out.append(Difference(metric, None, None, None, 0, resolution=resolution))
            continue
        p = paired_permutation_p(xs, ys) if p_values else None
        a_mean = sum(x for x, _ in pairs) / len(pairs)
        b_mean = sum(y for _, y in pairs) / len(pairs)
        out.append(Difference(metric, ci.estimate, ci.low, ci.high, ci.n, p, a_mean, b_mean, resolution))
    return out


# --- unified-bench compare -------------------------------------------------------------------

COMPOSITES = (("unified_score", PAPER_METRICS), ("extended_score", EXTENDED_METRICS))


@dataclass
class RunComparison:
    """Run ``b`` against run ``a``: per-metric and composite differences b - a over the samples
    both share (same id and same reference SHA-256), and what differs between the runs."""

    a: str
    b: str
    shared: int
    differences: list[Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    power: float = DEFAULT_POWER
    alpha: float = DEFAULT_ALPHA

    @property
    def notes(self) -> list[str]:
        """One line per difference whose MDE or required n could not be computed, saying why."""
        return [f"{d.metric}: {d.resolution.note}" for d in self.differences if d.resolution is not None and d.resolution.note]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.a,
            "run_b": self.b,
            "shared_samples": self.shared,
            "power": self.power,
            "alpha": self.alpha,
            "differences": [
                {
                    "metric": d.metric,
                    "n": d.n,
                    "a": d.a_mean,
                    "b": d.b_mean,
                    "difference": d.mean,
                    "ci_low": d.low,
                    "ci_high": d.high,
                    "p_value": d.p_value,
                    "mde": None if d.resolution is None else d.resolution.mde,
                    "required_n": None if d.resolution is None else d.resolution.required_n,
                    "sd_difference": None if d.resolution is None else d.resolution.sd,
                    "note": None if d.resolution is None else d.resolution.note,
                }
                for d in self.differences
            ],
            "warnings": list(self.warnings),
            "notes": self.notes,
        }


def report_label(report: ScoreReport) -> str:
    """The label a run is shown with (its ``--name``, else its model)."""
    run = report.run if report.run.get("run_id") else {**report.run, "run_id": "unknown"}
    return model_name(run)


def _reference_hashes(report: ScoreReport) -> dict[str, str | None]:
    recorded = (report.record.dataset.reference_sha256 if report.record.dataset is not None else None) or {}
    return {s.sample_id: s.reference_sha256 or recorded.get(s.sample_id) for s in report.samples}


def _scores(report: ScoreReport) -> dict[str, dict[str, float | None]]:
    ids = [s.sample_id for s in report.samples]
    out: dict[str, dict[str, float | None]] = {sid: {} for sid in ids}
    for metric in report.metrics:
        for sid, value in zip(ids, metric.values):
            out[sid][metric.name] = value
    return out


def compare_reports(
    a: ScoreReport,
    b: ScoreReport,
    *,
    a_label: str | None = None,
    b_label: str | None = None,
    power: float = DEFAULT_POWER,
    alpha: float = DEFAULT_ALPHA,
) -> RunComparison:
    """``b`` - ``a`` per metric they share and per composite both can have, with paired-bootstrap
    95% CIs, permutation p-values, and the MDE and required n of the paired t-test at ``power`` and
    ``alpha``; one warning per difference in samples, dataset, executed protocol or metric weights."""
    a_label = a_label or report_label(a)
    b_label = b_label or report_label(b)
    ha, hb = _reference_hashes(a), _reference_hashes(b)
    ids = [sid for sid in ha if sid in hb and ha[sid] is not None and ha[sid] == hb[sid]]
    warnings = _sample_warnings(ha, hb, len(ids))
    warnings += _record_warnings(a, b)
    a_metrics = [m.name for m in a.metrics]
    b_metrics = {m.name for m in b.metrics}
    shared_metrics = [m for m in a_metrics if m in b_metrics]
    only_a = [m for m in a_metrics if m not in b_metrics]
    only_b = sorted(b_metrics - set(a_metrics))
    if only_a or only_b:
        warnings.append(
            "metrics: not compared, scored in one run only: "
            + "; ".join(f"{side} {', '.join(names)}" for side, names in (("A", only_a), ("B", only_b)) if names)
        )
    for key, names in COMPOSITES:  # a composite one run has and the other cannot
        lacking = {side: [m for m in names if m not in have] for side, have in (("A", set(a_metrics)), ("B", b_metrics))}
        if any(not missing for missing in lacking.values()) and any(lacking.values()):
            side = "A" if lacking["A"] else "B"
            warnings.append(f"composite: {key} not compared: {side} lacks {', '.join(lacking[side])}")
    a_scores, b_scores = _scores(a), _scores(b)
    differences = metric_differences(ids, a_scores, b_scores, shared_metrics, p_values=True, power=power, alpha=alpha)
    for key, names in COMPOSITES:
        if not ids or not all(name in shared_metrics for name in names):
            continue
        a_cols = {name: [a_scores[i][name] for i in ids] for name in names}
        b_cols = {name: [b_scores[i][name] for i in ids] for name in names}
        # the composite's per-sample difference, over samples with every metric in both runs
        per_sample = per_sample_statistic(b_cols, mean_of_means, scale=100.0) - per_sample_statistic(a_cols, mean_of_means, scale=100.0)
        resolution = paired_power(per_sample.tolist(), power=power, alpha=alpha)
        result = paired_joint_difference(a_cols, b_cols, mean_of_means, scale=100.0)
        if result is None:
            differences.append(Difference(key, None, None, None, 0, resolution=resolution))
            continue
        interval, p = result
        mean = lambda cols: 100.0 * sum(_nanmean(v) for v in cols.values()) / len(cols)  # noqa: E731
        differences.append(
            Difference(key, interval.estimate, interval.low, interval.high, interval.n, p, mean(a_cols), mean(b_cols), resolution)
        )
    return RunComparison(a_label, b_label, len(ids), differences, warnings, power, alpha)


def mean_of_means(means: Mapping[str, float]) -> float:
    """The composite scores (unified, extended): the unweighted mean of the metric means."""
    return sum(means.values()) / len(means)


def _nanmean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else float("nan")


def _sample_warnings(ha: Mapping[str, str | None], hb: Mapping[str, str | None], shared: int) -> list[str]:
    only_a = [s for s in ha if s not in hb]
    only_b = [s for s in hb if s not in ha]
    changed = [s for s in ha if s in hb and ha[s] is not None and hb[s] is not None and ha[s] != hb[s]]
    unhashed = [s for s in ha if s in hb and (ha[s] is None or hb[s] is None)]
    parts = [
        f"{len(ids)} {what}"
        for ids, what in (
            (only_a, "only in A"),
            (only_b, "only in B"),
            (changed, "with different reference images"),
            (unhashed, "without a reference hash"),
        )
        if ids
    ]
    if not parts:
        return []
    return [f"samples: {', '.join(parts)}; compared on the {shared} shared"]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _record_warnings(a: ScoreReport, b: ScoreReport) -> list[str]:
    ra, rb = a.record, b.record
    warnings = []
    da = ra.dataset.name if ra.dataset is not None else None
    db = rb.dataset.name if rb.dataset is not None else None
    if da != db:
        warnings.append(f"dataset: A {da!r}, B {db!r}")
    ea, eb = ra.executed(), rb.executed()
    if (ea is None) != (eb is None):
        side = "A" if ea is None else "B"
        warnings.append(f"protocol: run {side} records no executed protocol (record version 1, or no adapter ran)")
    else:
        if ea is not None and eb is not None:
            fa, fb = _flatten({"caption": ea.to_dict().get("caption"), "generation": ea.to_dict().get("generation")}), _flatten(
                {"caption": eb.to_dict().get("caption"), "generation": eb.to_dict().get("generation")}
            )
        else:  # neither records what ran: compare what was requested
            fa, fb = _flatten(ra.protocol or {}), _flatten(rb.protocol or {})
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                warnings.append(f"protocol: {key} A {fa.get(key)!r}, B {fb.get(key)!r}")
    for ma in ra.metrics:
        mb = rb.metric(ma.name)
        if mb is None:
            continue
        if (ma.checkpoint, ma.revision) != (mb.checkpoint, mb.revision):
            warnings.append(
                f"metric weights: {ma.name} A {ma.checkpoint!r} (revision {ma.revision!r}), "
                f"B {mb.checkpoint!r} (revision {mb.revision!r})"
            )
    return warnings


def compare_runs(
    reports: Sequence[ScoreReport],
    labels: Sequence[str] | None = None,
    *,
    power: float = DEFAULT_POWER,
    alpha: float = DEFAULT_ALPHA,
) -> list[RunComparison]:
    """Each report after the first against the first."""
    if len(reports) < 2:
        raise ValueError("compare needs at least two runs")
    labels = list(labels) if labels is not None else [report_label(r) for r in reports]
    return [
        compare_reports(reports[0], other, a_label=labels[0], b_label=label, power=power, alpha=alpha)
        for other, label in zip(reports[1:], labels[1:])
    ]


def comparison_frame(comparisons: Sequence[RunComparison]):
    """One row per (run pair, metric): a pandas DataFrame for the md/csv writers."""
    import pandas as pd

    rows = [{**{k: v for k, v in c.to_dict().items() if k in ("run_a", "run_b")}, **d} for c in comparisons for d in c.to_dict()["differences"]]
    columns = ["run_a", "run_b", "metric", "n", "a", "b", "difference", "ci_low", "ci_high", "p_value", "mde", "required_n"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["required_n"] = frame["required_n"].astype("Int64")  # a count, empty where none applies
    return frame

"""Ranks that ties share, and what a track's sample set can resolve.

Among the verified rows of a track scored on the same samples, a row's rank is one plus the
number of rows significantly better than it (Chatbot Arena's rule), so rows the set cannot
separate share a rank. "Significantly better": the paired bootstrap of the track-score
difference over the shared samples (:func:`unified_bench.core.stats.resampled_statistic`, the
draws of the compare page's intervals) rejects "no difference" after Holm's correction over the
comparisons made for that row. The worst rank a row could take is the number of ranked rows
minus the number significantly worse than it.

Rows without per-sample scores (reported entries) and rows whose comparison cannot be made
(other samples, a missing score, fewer than two samples, a difference that is the same on every
sample) are not ranked, each with a note that says why. See docs/statistics.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unified_bench.core.stats import (
    BOOTSTRAP_SEED,
    DEFAULT_ALPHA,
    DEFAULT_POWER,
    bootstrap_p_value,
    holm_adjust,
    minimum_detectable_effect,
    per_sample_statistic,
    resampled_statistic,
)
from unified_bench.leaderboard.comparison import COMPOSITES, mean_of_means, sample_signature
from unified_bench.leaderboard.entries import RunEntry
from unified_bench.leaderboard.tracks import Track

#: bootstrap resamples per row: Holm's smallest threshold alpha / (rows - 1) stays above the
#: smallest bootstrap p-value, 2 / (1 + resamples), up to about 250 rows
RANK_RESAMPLES = 10_000
SCALE = 100.0  # the board's scale: differences in points

REPORTED_NOTE = "not ranked by the paired rule: a reported number has no per-sample scores to compare"
NOT_ENOUGH_RUNS = "not enough runs"


@dataclass(frozen=True)
class RowRank:
    """A verified row's place: ``rank`` (the best it could take) to ``upper`` (the worst), or a note."""

    rank: int | None
    upper: int | None = None
    note: str | None = None
    better: tuple[str, ...] = ()  # run ids significantly better than this row
    worse: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrackResolution:
    """The MDE of a track's score at its set size, from its verified rows' pooled differences."""

    samples: int | None
    runs: int
    power: float
    alpha: float
    sd: float | None = None  # pooled sd of the per-sample score differences (points)
    mde: float | None = None  # points
    note: str | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "samples": self.samples,
            "runs": self.runs,
            "power": self.power,
            "alpha": self.alpha,
            "sd_difference": self.sd,
            "mde": self.mde,
            "note": self.note,
        }

    @property
    def sentence(self) -> str:
        """The line under a track table."""
        samples = "an unknown number of" if self.samples is None else str(self.samples)
        power = f"{self.power * 100:g} % power"
        if self.mde is not None:
            return f"With {samples} samples this track resolves differences of about {self.mde:.2f} points ({power})."
        return f"With {samples} samples this track's resolution ({power}) is not known: {self.note}."


def score_parts(track: Track) -> tuple[str, ...]:
    """The metrics a track's score is made of (a composite's, or the one metric's)."""
    if track.score_key is not None:
        return dict(COMPOSITES)[track.score_key]
    return (track.score_metric or "",)


def _columns(entry: RunEntry, parts: Sequence[str]) -> tuple[dict[str, list[float | None]], str | None]:
    """The track score's per-sample columns in sample-id order, or a note saying what is missing."""
    samples = sorted(entry.samples, key=lambda s: s.sample_id)
    columns = {m: [s.scores.get(m) for s in samples] for m in parts}
    for metric, values in columns.items():
        missing = sum(1 for v in values if v is None or not math.isfinite(v))
        if missing == len(values):
            return columns, f"not ranked: {metric} is missing from this run"
        if missing:
            return columns, f"not ranked: no {metric} score for {missing} of {len(values)} samples (ranks compare complete per-sample scores)"
    return columns, None


def _label(entry: RunEntry) -> str:
    return f"{entry.model_name} (run {entry.run_id[:12]})"


@dataclass
class _Pool:
    """The rows that can be compared: complete track scores on the largest shared sample set."""

    group: list[RunEntry]
    samples: int | None
    columns: dict[str, dict[str, list[float | None]]]
    notes: dict[str, str]  # run id -> why it is left out


def _pool(track: Track, entries: Sequence[RunEntry]) -> _Pool:
    parts = score_parts(track)
    notes: dict[str, str] = {}
    groups: dict[tuple, list[RunEntry]] = defaultdict(list)
    columns: dict[str, dict[str, list[float | None]]] = {}
    for entry in sorted(entries, key=lambda e: e.run_id):
        signature = sample_signature(entry)
        columns[entry.run_id], note = _columns(entry, parts)
        if signature is None:
            note = "not ranked: reference hashes are missing, so its samples cannot be matched with other rows'"
        if note is not None:
            notes[entry.run_id] = note
        else:
            groups[signature].append(entry)
    if not groups:
        return _Pool([], track.pinned_size(), columns, notes)
    # verified rows are on the track's pinned samples; anything else is set apart, never mixed in
    signature = max(groups, key=lambda s: (len(groups[s]), len(s), s))
    group = groups.pop(signature)
    for others in groups.values():
        for entry in others:
            notes[entry.run_id] = f"not ranked: scored on other samples than the {len(group)} other verified row(s)"
    return _Pool(group, len(signature), columns, notes)


def _per_sample(pool: _Pool) -> dict[str, np.ndarray]:
    """Each pooled row's per-sample track score (points)."""
    return {e.run_id: per_sample_statistic(pool.columns[e.run_id], mean_of_means, scale=SCALE) for e in pool.group}


def track_resolution(
    track: Track, entries: Sequence[RunEntry], *, power: float = DEFAULT_POWER, alpha: float = DEFAULT_ALPHA
) -> TrackResolution:
    """What the track's set resolves, pooled over ``entries`` (the board passes its verified rows;
    docs/statistics.md passes every shipped row)."""
    pool = _pool(track, entries)
    return _resolution(pool.samples, list(_per_sample(pool).values()), power, alpha)


def rank_runs(
    track: Track,
    entries: Sequence[RunEntry],
    *,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    resamples: int = RANK_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[dict[str, RowRank], TrackResolution]:
    """Ranks of ``entries`` (the track's verified rows with a score) by run id, and the track's resolution."""
    pool = _pool(track, entries)
    out = {run_id: RowRank(None, note=note) for run_id, note in pool.notes.items()}
    group, n, columns = pool.group, pool.samples, pool.columns
    per_sample = _per_sample(pool)
    resolution = _resolution(n, list(per_sample.values()), power, alpha)
    if not group:
        return out, resolution
    if n is None or n < 2:
        for entry in group:
            out[entry.run_id] = RowRank(None, note=f"not ranked: fewer than 2 samples ({n}); the set separates nothing")
        return out, resolution

    # a difference that is the same on every sample admits no test: such runs are not independent
    # measurements (the same scores stored twice, or shifted), so neither is ranked
    constant: dict[str, list[str]] = defaultdict(list)
    for i, a in enumerate(group):
        for b in group[i + 1 :]:
            diff = per_sample[b.run_id] - per_sample[a.run_id]
            shift = float(diff.mean())
            if not diff.std(ddof=1) > 1e-12 * max(1.0, abs(shift)):
                constant[a.run_id].append(f"{_label(b)}'s by {shift + 0.0:+.4g}")  # + 0.0: no "-0"
                constant[b.run_id].append(f"{_label(a)}'s by {-shift + 0.0:+.4g}")
    for run_id, partners in constant.items():
        out[run_id] = RowRank(
            None,
            note=f"not ranked: its score differs from {'; '.join(partners)} points on every sample alike "
            "(zero variance), so no test applies",
        )
    ranked = [e for e in group if e.run_id not in constant]

    draws, estimate = {}, {}
    for entry in ranked:
        result = resampled_statistic(columns[entry.run_id], mean_of_means, scale=SCALE, resamples=resamples, seed=seed)
        assert result is not None  # complete columns
        estimate[entry.run_id], draws[entry.run_id] = result
    for entry in ranked:
        others = [e for e in ranked if e is not entry]
        p_values = [bootstrap_p_value(draws[o.run_id] - draws[entry.run_id]) for o in others]
        adjusted = holm_adjust(p_values)
        better = tuple(o.run_id for o, p in zip(others, adjusted) if p <= alpha and estimate[o.run_id] > estimate[entry.run_id])
        worse = tuple(o.run_id for o, p in zip(others, adjusted) if p <= alpha and estimate[o.run_id] < estimate[entry.run_id])
        out[entry.run_id] = RowRank(1 + len(better), len(ranked) - len(worse), None, better, worse)
    return out, resolution


def _resolution(samples: int | None, per_sample: Sequence[np.ndarray], power: float, alpha: float) -> TrackResolution:
    """MDE at ``samples`` from the pooled variance of every pair's per-sample differences."""
    runs = len(per_sample)
    if runs < 2:
        note = f"{NOT_ENOUGH_RUNS} ({runs} verified run{'' if runs == 1 else 's'} with per-sample scores; needs 2)"
        return TrackResolution(samples, runs, power, alpha, note=note)
    if samples is None or samples < 2:
        return TrackResolution(samples, runs, power, alpha, note="fewer than 2 samples")
    variances = []
    for i in range(runs):
        for j in range(i + 1, runs):
            variances.append(float(np.var(per_sample[j] - per_sample[i], ddof=1)))
    sd = math.sqrt(sum(variances) / len(variances))
    if sd == 0.0:
        return TrackResolution(samples, runs, power, alpha, 0.0, note="zero variance: the runs' per-sample scores differ by constants")
    mde = minimum_detectable_effect(samples, power=power, alpha=alpha) * sd
    return TrackResolution(samples, runs, power, alpha, sd, mde)

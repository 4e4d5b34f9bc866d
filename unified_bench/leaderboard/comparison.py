"""Paired comparisons of two runs on the same samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from unified_bench.leaderboard.entries import RunEntry
from unified_bench.core.stats import paired_difference_ci


@dataclass(frozen=True)
class Difference:
    """mean(b - a) over samples where both scored, with its paired-bootstrap 95% CI."""

    metric: str
    mean: float | None
    low: float | None
    high: float | None
    n: int

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
    out = []
    for metric in metrics:
        xs = [a_scores[i].get(metric) for i in ids]
        ys = [b_scores[i].get(metric) for i in ids]
        n = sum(1 for x, y in zip(xs, ys, strict=True) if x is not None and y is not None)
        ci = paired_difference_ci(xs, ys)
        if ci is None:
            out.append(Difference(metric, None, None, None, 0))
        else:
            out.append(Difference(metric, ci.estimate, ci.low, ci.high, n))
    return out

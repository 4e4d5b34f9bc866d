"""Small pure statistics used for every reported number."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
BOOTSTRAP_SEED = 0  # fixed so that the same scores always give the same interval


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int
    level: float = DEFAULT_LEVEL
    resamples: int = DEFAULT_RESAMPLES
    method: str = "percentile bootstrap"

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "mean": self.estimate,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "level": self.level,
            "resamples": self.resamples,
            "method": self.method,
        }


def finite(values: Sequence[float | None]) -> np.ndarray:
    """Drop None/NaN/inf: a missing score is never averaged."""
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def bootstrap_indices(n: int, resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """[resamples, n] indices drawn with replacement; shared across metrics for joint CIs."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def bootstrap_mean_ci(
    values: Sequence[float | None],
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Percentile-bootstrap CI of the mean of the finite values; None when there are none."""
    arr = finite(values)
    if arr.size == 0:
        return None
    means = arr[bootstrap_indices(arr.size, resamples, seed)].mean(axis=1)
    return _interval(float(arr.mean()), means, arr.size, level, resamples)


def bootstrap_joint_ci(
    columns: Mapping[str, Sequence[float | None]],
    statistic: Callable[[Mapping[str, float]], float],
    *,
    scale: float = 1.0,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """CI of ``statistic(per-column means)`` resampling rows jointly (rows = samples).

    Each column is aligned by sample; a missing value is skipped within its column only.
    Used for the unified score, a mean of per-metric means over the same samples.
    """
    if not columns:
        return None
    matrix = np.array(
        [[np.nan if v is None else float(v) for v in col] for col in columns.values()], dtype=np.float64
    )
    matrix[~np.isfinite(matrix)] = np.nan
    n = matrix.shape[1]
    if n == 0 or np.isnan(matrix).all(axis=1).any():
        return None
    names = list(columns)

    def stat(m: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            means = np.nanmean(m, axis=-1)
        return statistic(dict(zip(names, means.tolist()))) * scale

    estimate = stat(matrix)
    idx = bootstrap_indices(n, resamples, seed)
    with np.errstate(all="ignore"):
        col_means = np.nanmean(matrix[:, idx], axis=-1)  # [metrics, resamples]
    draws = np.array([statistic(dict(zip(names, col_means[:, r].tolist()))) * scale for r in range(resamples)])
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None
    return _interval(estimate, draws, n, level, resamples)


def paired_difference_ci(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Paired bootstrap CI of mean(b - a) over samples where both are finite."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    diffs = [
        (y - x)
        for x, y in zip(a, b)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    return bootstrap_mean_ci(diffs, level=level, resamples=resamples, seed=seed)


def _interval(estimate: float, draws: np.ndarray, n: int, level: float, resamples: int) -> Interval:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(estimate, float(low), float(high), n, level, resamples)


def paired_permutation_p(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> float | None:
    """Two-sided sign-flip permutation p-value of mean(b - a) over samples where both are finite.

    Under the null (a and b exchangeable within each sample) each difference's sign is a fair
    coin; p = (1 + #{|mean of flipped| >= |observed mean|}) / (1 + resamples). None without pairs.
    """
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    diffs = finite([None if x is None or y is None else y - x for x, y in zip(a, b)])
    if diffs.size == 0:
        return None
    observed = abs(float(diffs.mean()))
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(resamples, diffs.size))
    flipped = np.abs((signs * diffs).mean(axis=1))
    extreme = int(np.count_nonzero(flipped >= observed - 1e-12 * max(1.0, observed)))
    return (1 + extreme) / (1 + resamples)


def paired_joint_difference(
    a_columns: Mapping[str, Sequence[float | None]],
    b_columns: Mapping[str, Sequence[float | None]],
    statistic: Callable[[Mapping[str, float]], float],
    *,
    scale: float = 1.0,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[Interval, float] | None:
    """``statistic(b's column means) - statistic(a's)`` with a paired bootstrap CI (rows resampled
    jointly for both runs) and a sign-flip permutation p-value (a row's a and b swapped).

    Columns are aligned by sample (the same rows in both runs); a missing value is skipped within
    its column, as the composite scores do. None when a column has no finite value.
    """
    names = list(a_columns)
    if not names or set(b_columns) != set(names):
        return None

    def matrix(columns: Mapping[str, Sequence[float | None]]) -> np.ndarray:
        m = np.array([[np.nan if v is None else float(v) for v in columns[k]] for k in names], dtype=np.float64)
        m[~np.isfinite(m)] = np.nan
        return m

    ma, mb = matrix(a_columns), matrix(b_columns)
    if ma.shape != mb.shape or ma.shape[1] == 0 or np.isnan(ma).all(axis=1).any() or np.isnan(mb).all(axis=1).any():
        return None
    n = ma.shape[1]

    def stat(means: np.ndarray) -> np.ndarray:  # [metrics, draws] -> [draws]
        return np.array([statistic(dict(zip(names, means[:, r].tolist()))) * scale for r in range(means.shape[1])])

    with np.errstate(all="ignore"):
        estimate = float(stat(np.nanmean(mb, axis=1)[:, None])[0] - stat(np.nanmean(ma, axis=1)[:, None])[0])
        idx = bootstrap_indices(n, resamples, seed)
        draws = stat(np.nanmean(mb[:, idx], axis=-1)) - stat(np.nanmean(ma[:, idx], axis=-1))
        swap = np.random.default_rng(seed).random((resamples, n)) < 0.5  # [draws, rows]
        pa = np.where(swap[None], mb[:, None, :], ma[:, None, :])
        pb = np.where(swap[None], ma[:, None, :], mb[:, None, :])
        null = stat(np.nanmean(pb, axis=-1)) - stat(np.nanmean(pa, axis=-1))
    draws = draws[np.isfinite(draws)]
    if draws.size == 0 or not math.isfinite(estimate):
        return None
    null = null[np.isfinite(null)]
    extreme = int(np.count_nonzero(np.abs(null) >= abs(estimate) - 1e-12 * max(1.0, abs(estimate))))
    return _interval(estimate, draws, n, level, resamples), (1 + extreme) / (1 + null.size)

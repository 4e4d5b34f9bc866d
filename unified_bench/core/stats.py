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


def _column_matrix(columns: Mapping[str, Sequence[float | None]], names: Sequence[str]) -> np.ndarray:
    """[metrics, rows] of floats; None and non-finite values become NaN."""
    m = np.array([[np.nan if v is None else float(v) for v in columns[k]] for k in names], dtype=np.float64)
    m[~np.isfinite(m)] = np.nan
    return m


def _statistic_of(
    statistic: Callable[[Mapping[str, float]], float], names: Sequence[str], means: np.ndarray, scale: float
) -> np.ndarray:
    """``statistic * scale`` for each column of ``means`` ([metrics, k] -> [k]).

    A statistic made of arithmetic (a mean of means) is called once on whole arrays, which gives
    the same floats as calling it per column; any other is called once per column.
    """
    try:
        out = np.asarray(statistic(dict(zip(names, means))), dtype=np.float64) * scale
        if out.shape == (means.shape[1],):
            return out
    except (TypeError, ValueError):
        pass
    return np.array([statistic(dict(zip(names, means[:, r].tolist()))) * scale for r in range(means.shape[1])])


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
    ma, mb = _column_matrix(a_columns, names), _column_matrix(b_columns, names)
    if ma.shape != mb.shape or ma.shape[1] == 0 or np.isnan(ma).all(axis=1).any() or np.isnan(mb).all(axis=1).any():
        return None
    n = ma.shape[1]

    def stat(means: np.ndarray) -> np.ndarray:  # [metrics, draws] -> [draws]
        return _statistic_of(statistic, names, means, scale)

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


# ---- the paired bootstrap as a test, and Holm's step-down ---------------------------------------


def resampled_statistic(
    columns: Mapping[str, Sequence[float | None]],
    statistic: Callable[[Mapping[str, float]], float],
    *,
    scale: float = 1.0,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, np.ndarray] | None:
    """``statistic(column means) * scale`` and its value on each bootstrap resample of the rows.

    The resamples are ``bootstrap_indices(rows, resamples, seed)``, the draws of
    :func:`paired_joint_difference`: for two runs over the same rows, the difference of their
    draws is the paired bootstrap of the difference, so each run's draws are made once and any
    number of pairs reuse them. None when a column has no finite value.
    """
    names = list(columns)
    if not names:
        return None
    matrix = _column_matrix(columns, names)
    if matrix.shape[1] == 0 or np.isnan(matrix).all(axis=1).any():
        return None
    idx = bootstrap_indices(matrix.shape[1], resamples, seed)
    with np.errstate(all="ignore"):
        estimate = float(_statistic_of(statistic, names, np.nanmean(matrix, axis=1)[:, None], scale)[0])
        means = np.stack([np.nanmean(row[idx], axis=-1) for row in matrix])  # [metrics, draws], one metric at a time
        draws = _statistic_of(statistic, names, means, scale)
    return estimate, draws


def per_sample_statistic(
    columns: Mapping[str, Sequence[float | None]],
    statistic: Callable[[Mapping[str, float]], float],
    *,
    scale: float = 1.0,
) -> np.ndarray:
    """``statistic`` of each row's own values (a sample's composite score), NaN where a column is missing."""
    names = list(columns)
    matrix = _column_matrix(columns, names)
    with np.errstate(all="ignore"):
        out = _statistic_of(statistic, names, matrix, scale)
    out[np.isnan(matrix).any(axis=0)] = np.nan
    return out


def bootstrap_p_value(draws: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap draws of a difference.

    Twice the smaller share of draws on either side of zero, counting the observed data as one
    more draw so that p is never 0: p = min(1, 2 (1 + min(#{d <= 0}, #{d >= 0})) / (1 + B)).
    It inverts the percentile interval: p <= 1 - level exactly when the interval of that level
    excludes zero (up to the one added draw). All draws zero (identical runs) give p = 1.
    """
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return 1.0
    tail = min(int(np.count_nonzero(draws <= 0)), int(np.count_nonzero(draws >= 0)))
    return min(1.0, 2.0 * (1 + tail) / (1 + draws.size))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: H_i is rejected at family-wise level alpha when its
    adjusted p-value is <= alpha. The k-th smallest p (k = 1..m) is multiplied by m - k + 1,
    capped at 1, and made non-decreasing along that order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - k) * float(p[i])))
        adjusted[i] = running
    return adjusted.tolist()


# ---- power of the paired t-test: what a set of n samples can resolve -------------------------

DEFAULT_POWER = 0.8
DEFAULT_ALPHA = 0.05
#: above this many samples a required n is reported as not reachable
MAX_REQUIRED_N = 10**9


def paired_t_power(effect: float, n: float, alpha: float = DEFAULT_ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test at level ``alpha`` with ``n`` pairs when
    the true mean difference is ``effect`` standard deviations of the per-sample differences.

    Exact: T = mean / (sd / sqrt(n)) follows the noncentral t with n - 1 degrees of freedom and
    noncentrality effect * sqrt(n), and the test rejects when |T| > t_{1-alpha/2, n-1}.
    """
    from scipy import stats

    df = n - 1.0
    critical = stats.t.ppf(1.0 - alpha / 2.0, df)
    noncentrality = abs(effect) * math.sqrt(n)
    upper = stats.nct.sf(critical, df, noncentrality)
    # P(T < -c) as P(-T > c), -T ~ nct(df, -nc): scipy's nct.cdf returns NaN deep in this tail
    lower = stats.nct.sf(critical, df, -noncentrality)
    return float(upper + (lower if math.isfinite(lower) else 0.0))


def _increasing_root(f: Callable[[float], float], low: float, high: float, limit: float) -> float | None:
    """The root of increasing ``f`` above ``low`` (f(low) < 0), doubling ``high`` until f(high) >= 0."""
    from scipy.optimize import brentq

    while f(high) < 0:
        low, high = high, high * 2.0
        if high > limit:
            return None
    return float(brentq(f, low, high, xtol=1e-12, rtol=1e-12))


def minimum_detectable_effect(n: int, *, power: float = DEFAULT_POWER, alpha: float = DEFAULT_ALPHA) -> float:
    """The true mean difference, in standard deviations of the per-sample differences, that the
    two-sided paired t-test with ``n`` pairs detects with probability ``power`` (n >= 2)."""
    if n < 2:
        raise ValueError("a power computation needs at least 2 samples")
    root = _increasing_root(lambda d: paired_t_power(d, n, alpha) - power, 0.0, 1.0, 1e12)
    assert root is not None  # the power tends to 1 as the effect grows
    return root


def required_samples(effect: float, *, power: float = DEFAULT_POWER, alpha: float = DEFAULT_ALPHA) -> int | None:
    """The smallest n >= 2 at which the two-sided paired t-test detects a true difference of
    ``effect`` standard deviations with probability ``power``; None when none up to
    ``MAX_REQUIRED_N`` does (an effect of 0 never is)."""
    effect = abs(effect)
    if effect == 0:
        return None
    if paired_t_power(effect, 2, alpha) >= power:
        return 2
    root = _increasing_root(lambda n: paired_t_power(effect, n, alpha) - power, 2.0, 4.0, MAX_REQUIRED_N)
    if root is None:
        return None
    n = max(2, math.ceil(root))
    while n > 2 and paired_t_power(effect, n - 1, alpha) >= power:  # the root solved a continuous n
        n -= 1
    while paired_t_power(effect, n, alpha) < power:
        n += 1
    return n


@dataclass(frozen=True)
class PairedPower:
    """What a paired comparison over ``n`` samples resolves (two-sided paired t-test).

    ``mde``: the smallest true mean difference detected with probability ``power`` at level
    ``alpha``, for these n and the observed sd of the per-sample differences. ``required_n``: the
    samples the observed difference would need to be detected with that power. Each is None with
    a ``note`` saying why (fewer than 2 samples, zero variance, an observed difference of 0).
    """

    n: int
    difference: float | None
    sd: float | None
    power: float
    alpha: float
    mde: float | None
    required_n: int | None
    note: str | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "n": self.n,
            "sd_difference": self.sd,
            "power": self.power,
            "alpha": self.alpha,
            "mde": self.mde,
            "required_n": self.required_n,
            "note": self.note,
        }


def check_power_settings(power: float, alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha}: must lie between 0 and 1")
    if not alpha < power < 1.0:
        raise ValueError(f"power {power}: must lie between alpha ({alpha}) and 1")


def paired_power(
    differences: Sequence[float | None], *, power: float = DEFAULT_POWER, alpha: float = DEFAULT_ALPHA
) -> PairedPower:
    """MDE and required n from per-sample differences (None and non-finite values are dropped)."""
    check_power_settings(power, alpha)
    d = finite(differences)
    n = int(d.size)
    if n < 2:
        return PairedPower(n, float(d.mean()) if n else None, None, power, alpha, None, None,
                           f"fewer than 2 shared samples (n={n}): no power computation")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if not sd > 1e-12 * max(1.0, abs(mean)):
        return PairedPower(n, mean, 0.0, power, alpha, None, None,
                           f"zero variance: every sample differs by exactly {mean:.6g}; no power computation applies")
    mde = minimum_detectable_effect(n, power=power, alpha=alpha) * sd
    needed = required_samples(mean / sd, power=power, alpha=alpha)
    note = None
    if needed is None:
        note = ("the observed difference is 0: no number of samples resolves it" if mean == 0
                else f"the observed difference needs more than {MAX_REQUIRED_N} samples")
    return PairedPower(n, mean, sd, power, alpha, mde, needed, note)

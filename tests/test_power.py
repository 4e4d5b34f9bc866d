"""What a set of samples can resolve: the paired t-test's power, MDE and required n, Holm's
step-down and the paired bootstrap as a test (unified_bench.core.stats), each checked against
an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from unified_bench.core.stats import (
    bootstrap_p_value,
    holm_adjust,
    minimum_detectable_effect,
    paired_joint_difference,
    paired_power,
    paired_t_power,
    per_sample_statistic,
    required_samples,
    resampled_statistic,
)

#: fixed per-sample differences (a pilot comparison of two runs on 40 samples)
PILOT = np.random.default_rng(20261207).normal(0.004, 0.03, size=40)


def integral_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test without the noncentral t: T = (Z + effect sqrt(n)) /
    sqrt(V / df) with Z normal and V chi-square(df); integrate the normal tails over V."""
    df = n - 1
    c = stats.t.ppf(1 - alpha / 2, df)
    shift = effect * math.sqrt(n)

    log_norm = (df / 2) * math.log(2) + math.lgamma(df / 2)

    def tails(v: float) -> float:  # P(|T| > c | V = v) times the chi-square density, in plain math
        s = c * math.sqrt(v / df)
        upper = 0.5 * math.erfc((s - shift) / math.sqrt(2))
        lower = 0.5 * math.erfc((s + shift) / math.sqrt(2))
        return (upper + lower) * math.exp((df / 2 - 1) * math.log(v) - v / 2 - log_norm) if v > 0 else 0.0

    spread = 40 * math.sqrt(2 * df)  # the chi-square's mass, however large df is
    value, _ = integrate.quad(tails, max(0.0, df - spread), df + spread, points=[df], limit=400, epsabs=1e-13)
    return value


def bisect(f, low: float, high: float) -> float:
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) < 0 else (low, mid)
    return (low + high) / 2


def test_power_matches_numerical_integration():
    for effect, n in ((0.0, 10), (0.3, 40), (0.5, 34), (1.2, 5), (0.1, 500)):
        assert paired_t_power(effect, n) == pytest.approx(integral_power(effect, n), abs=1e-7)
    assert paired_t_power(0.0, 25) == pytest.approx(0.05)  # no effect: the test's level


def test_mde_and_required_n_against_an_independent_computation():
    """Acceptance 1: MDE and required n from fixed data, against the integral and bisection."""
    result = paired_power(PILOT.tolist())
    sd = PILOT.std(ddof=1)
    assert result.n == 40 and result.sd == pytest.approx(sd) and result.difference == pytest.approx(PILOT.mean())
    independent_mde = bisect(lambda d: integral_power(d, 40) - 0.8, 0.0, 5.0) * sd
    assert result.mde == pytest.approx(independent_mde, rel=1e-6)
    effect = PILOT.mean() / sd
    low, high = 2, 100_000  # the smallest n with power >= 0.8, by bisection over integers
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if integral_power(effect, mid) >= 0.8 else (mid + 1, high)
    assert result.required_n == low
    assert result.note is None
    # the textbook normal approximation is close (it ignores the t's heavier tails)
    approx = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / math.sqrt(40)
    assert result.mde == pytest.approx(approx, rel=0.05) and result.mde > approx
    # published sample sizes for the one-sample t-test at alpha 0.05 two-sided, power 0.8 (G*Power)
    assert [required_samples(d) for d in (0.8, 0.5, 0.2)] == [15, 34, 199]
    # power and alpha are options
    stricter = paired_power(PILOT.tolist(), power=0.9, alpha=0.01)
    assert stricter.mde == pytest.approx(bisect(lambda d: integral_power(d, 40, 0.01) - 0.9, 0.0, 5.0) * sd, rel=1e-6)
    assert stricter.mde > result.mde and stricter.required_n > result.required_n


def test_a_true_difference_equal_to_the_mde_is_detected_in_80_percent_of_sets():
    """Acceptance 1: 2,000 synthetic paired sets with a true difference equal to the MDE; the paired
    t-test the MDE assumes rejects in 80 % +- 3 points of them."""
    result = paired_power(PILOT.tolist())
    rng = np.random.default_rng(7)
    sets, n = 2000, result.n
    a = rng.normal(0.7, 0.1, size=(sets, n))
    b = a + rng.normal(result.mde, result.sd, size=(sets, n))
    rejected = stats.ttest_rel(b, a, axis=1).pvalue < 0.05
    assert abs(rejected.mean() - 0.8) <= 0.03, rejected.mean()
    # at the required n, the observed difference (taken as the truth) is detected as often
    differences = rng.normal(result.difference, result.sd, size=(sets, result.required_n))
    rate = (stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05).mean()
    assert abs(rate - 0.8) <= 0.03, rate


def test_power_bad_input_gives_notes_not_nans():
    one = paired_power([0.2])
    assert one.mde is None and one.required_n is None and "fewer than 2 shared samples (n=1)" in one.note
    none = paired_power([None, float("nan")])
    assert none.n == 0 and none.difference is None and none.mde is None
    flat = paired_power([0.01] * 12)
    assert flat.sd == 0 and flat.mde is None and flat.note.startswith("zero variance: every sample differs by exactly 0.01")
    zero = paired_power([0.1, -0.1, 0.2, -0.2])
    assert zero.mde > 0 and zero.required_n is None and "observed difference is 0" in zero.note
    tiny = paired_power([1e-7 + 0.01, 1e-7 - 0.01] * 5)  # would need ~10^11 samples
    assert tiny.required_n is None and "more than" in tiny.note
    assert required_samples(50.0) == 2  # resolved by the smallest set there is
    with pytest.raises(ValueError):
        paired_power(PILOT.tolist(), power=0.03)
    with pytest.raises(ValueError):
        minimum_detectable_effect(1)


def holm_reject(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as stated: walk the sorted p-values, reject while p_(k) <= alpha / (m - k + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_values_reject_what_the_procedure_rejects():
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([]) == [] and holm_adjust([0.3]) == [0.3]
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(1, 12))
        p = (rng.random(m) ** 3).tolist()
        adjusted = holm_adjust(p)
        assert all(a >= q for a, q in zip(adjusted, p)) and max(adjusted) <= 1
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.5):
            assert {i for i, a in enumerate(adjusted) if a <= alpha} == holm_reject(p, alpha)


def test_bootstrap_p_inverts_the_percentile_interval():
    """p <= 0.05 exactly when the 95 % percentile interval of the same draws excludes zero, up to
    the one added draw; the paired draws are those of paired_joint_difference."""
    rng = np.random.default_rng(5)
    for shift in (0.0, 0.005, 0.01, 0.02, 0.05):
        a = rng.random((2, 60))
        b = a + shift + rng.normal(0, 0.05, (2, 60))
        cols_a, cols_b = {"x": a[0].tolist(), "y": a[1].tolist()}, {"x": b[0].tolist(), "y": b[1].tolist()}
        stat = lambda m: (m["x"] + m["y"]) / 2  # noqa: E731
        est_a, draws_a = resampled_statistic(cols_a, stat, scale=100.0)
        est_b, draws_b = resampled_statistic(cols_b, stat, scale=100.0)
        interval, _ = paired_joint_difference(cols_a, cols_b, stat, scale=100.0)
        low, high = np.quantile(draws_b - draws_a, [0.025, 0.975])
        assert (est_b - est_a, low, high) == pytest.approx((interval.estimate, interval.low, interval.high), abs=1e-9)
        p = bootstrap_p_value(draws_b - draws_a)
        share = min(np.mean(draws_b - draws_a <= 0), np.mean(draws_b - draws_a >= 0))
        assert p == pytest.approx(2 * share, abs=2.5e-3)
        if abs(share - 0.025) > 0.002:
            assert (p <= 0.05) == (low > 0 or high < 0)
    assert bootstrap_p_value(np.zeros(1000)) == 1.0  # identical runs
    assert bootstrap_p_value(np.full(999, 0.3)) == pytest.approx(2 / 1000)  # never 0


def test_per_sample_statistic_is_each_samples_composite():
    cols = {"x": [0.5, 0.7, None], "y": [0.1, 0.3, 0.2]}
    out = per_sample_statistic(cols, lambda m: (m["x"] + m["y"]) / 2, scale=100.0)
    assert out[:2].tolist() == pytest.approx([30.0, 50.0]) and math.isnan(out[2])

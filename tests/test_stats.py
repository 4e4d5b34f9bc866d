"""unified_bench.core.stats: the bootstrap intervals behind every reported number."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unified_bench.core.stats import (
    bootstrap_joint_ci,
    bootstrap_mean_ci,
    finite,
    paired_difference_ci,
)


def test_interval_contains_the_mean_and_is_reproducible():
    values = np.random.default_rng(1).normal(0.7, 0.1, size=50).tolist()
    ci = bootstrap_mean_ci(values)
    assert ci.estimate == pytest.approx(np.mean(values))
    assert ci.low < ci.estimate < ci.high
    assert ci.n == 50 and ci.level == 0.95
    assert bootstrap_mean_ci(values) == ci  # fixed seed: same scores, same interval


def test_interval_width_matches_the_normal_approximation():
    # For the mean of n normal draws the 95% interval is about +-1.96 * sd / sqrt(n).
    values = np.random.default_rng(2).normal(0.0, 1.0, size=400)
    ci = bootstrap_mean_ci(values.tolist(), resamples=2000)
    expected = 2 * 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert ci.high - ci.low == pytest.approx(expected, rel=0.15)


def test_constant_input_gives_a_zero_width_interval():
    ci = bootstrap_mean_ci([0.8125] * 30)
    assert ci.low == ci.estimate == ci.high == 0.8125


def test_missing_values_are_skipped_not_counted():
    ci = bootstrap_mean_ci([0.5, None, float("nan"), 0.7, float("inf"), 0.9])
    assert ci.n == 3 and ci.estimate == pytest.approx(0.7)
    assert finite([None, 1.0, float("-inf"), 2.0]).tolist() == [1.0, 2.0]
    assert bootstrap_mean_ci([None, float("nan")]) is None
    assert bootstrap_mean_ci([]) is None


def test_single_value():
    ci = bootstrap_mean_ci([0.3])
    assert (ci.low, ci.estimate, ci.high, ci.n) == (0.3, 0.3, 0.3, 1)


def test_paired_difference():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 0.9, size=40)
    shift = bootstrap_mean_ci((a + 0.05 - a).tolist())
    ci = paired_difference_ci(a.tolist(), (a + 0.05).tolist())
    assert ci.estimate == pytest.approx(0.05) and ci.high - ci.low == pytest.approx(shift.high - shift.low, abs=1e-12)
    assert ci.high - ci.low < 1e-9  # a constant shift is known exactly, however noisy a is

    # pairing matters: b is a noisy copy of a; the paired interval excludes 0 where
    # comparing the two means as if independent would not
    b = a + 0.01 + rng.normal(0, 0.005, size=40)
    paired = paired_difference_ci(a.tolist(), b.tolist())
    assert 0 < paired.low < paired.estimate < paired.high
    assert paired.estimate == pytest.approx(np.mean(b - a))


def test_paired_difference_skips_incomplete_pairs_and_checks_lengths():
    ci = paired_difference_ci([0.1, None, 0.3, 0.4], [0.2, 0.5, float("nan"), 0.6])
    assert ci.n == 2 and ci.estimate == pytest.approx((0.1 + 0.2) / 2)
    with pytest.raises(ValueError):
        paired_difference_ci([0.1], [0.1, 0.2])


def test_joint_interval_of_a_mean_of_means():
    rng = np.random.default_rng(4)
    columns = {name: rng.uniform(0.6, 0.9, size=30).tolist() for name in ("clip", "dinov2")}
    columns["dinov2"][5] = None  # missing in one column only
    ci = bootstrap_joint_ci(columns, lambda means: sum(means.values()) / len(means), scale=100.0)
    expected = 100 * (np.mean(columns["clip"]) + np.mean(finite(columns["dinov2"]))) / 2
    assert ci.estimate == pytest.approx(expected)
    assert ci.low < ci.estimate < ci.high and ci.n == 30

    constant = bootstrap_joint_ci({"a": [0.5] * 10, "b": [0.7] * 10}, lambda m: sum(m.values()) / 2, scale=100.0)
    assert constant.low == pytest.approx(60.0) and constant.high == pytest.approx(60.0)
    assert bootstrap_joint_ci({"a": [0.5, 0.6], "b": [None, None]}, lambda m: sum(m.values())) is None
    assert bootstrap_joint_ci({}, lambda m: 0.0) is None


def test_joint_interval_is_narrower_than_adding_independent_ones():
    # Two metrics that move together: resampling rows jointly keeps their correlation.
    base = np.random.default_rng(5).uniform(0.4, 0.9, size=60)
    columns = {"a": base.tolist(), "b": (base + 0.1).tolist()}
    diff = bootstrap_joint_ci(columns, lambda m: m["b"] - m["a"])
    assert diff.high - diff.low < 1e-9


def test_paired_permutation_p_against_exhaustive_sign_flips():
    import itertools

    from unified_bench.core.stats import paired_permutation_p

    a = [0.1, 0.5, 0.3, None, 0.9, 0.2]
    b = [0.4, 0.6, 0.2, 0.7, 1.0, 0.5]
    diffs = np.array([0.3, 0.1, -0.1, 0.1, 0.3])
    observed = abs(diffs.mean())
    flips = [abs((np.array(s) * diffs).mean()) for s in itertools.product([-1, 1], repeat=5)]
    exact = np.mean([f >= observed - 1e-12 for f in flips])  # 4/32
    p = paired_permutation_p(a, b, resamples=20000)
    assert abs(p - exact) < 0.01
    assert paired_permutation_p([None], [1.0]) is None
    assert paired_permutation_p([0.5, 0.5], [0.5, 0.5]) == 1.0


def test_paired_joint_difference_of_a_mean_of_means():
    from unified_bench.core.stats import paired_difference_ci, paired_joint_difference, paired_permutation_p

    rng = np.random.default_rng(1)
    a = {"x": rng.random(30).tolist(), "y": rng.random(30).tolist()}
    b = {"x": (np.array(a["x"]) + 0.2).tolist(), "y": (np.array(a["y"]) + 0.1 + rng.normal(0, 0.05, 30)).tolist()}
    interval, p = paired_joint_difference(a, b, lambda m: (m["x"] + m["y"]) / 2, scale=100.0)
    assert interval.estimate == pytest.approx(100 * (np.mean(b["x"]) + np.mean(b["y"]) - np.mean(a["x"]) - np.mean(a["y"])) / 2)
    assert interval.low < interval.estimate < interval.high and interval.low > 0
    assert interval.n == 30 and p < 0.01
    # one column, no missing values: the per-sample paired functions give the same numbers
    one = paired_joint_difference({"x": a["y"]}, {"x": b["y"]}, lambda m: m["x"])
    ci = paired_difference_ci(a["y"], b["y"])
    assert (one[0].estimate, one[0].low, one[0].high) == pytest.approx((ci.estimate, ci.low, ci.high))
    assert paired_joint_difference({"x": [None]}, {"x": [1.0]}, lambda m: m["x"]) is None
    same = paired_joint_difference(a, a, lambda m: m["x"])
    assert same[0].estimate == 0 and same[1] == 1.0
    assert paired_permutation_p(a["x"], a["x"]) == 1.0

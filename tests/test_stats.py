"""The statistics module on simulated timings: coverage of its intervals, and the operating
characteristics of the regression verdicts that rest on them (seeded, so reproducible)."""

import math

import numpy as np
import pytest

from bench import stats
from bench.compare import verdict_of

# Log-normal timings whose IQR is 30% of the median: exp(z s) - exp(-z s) = 2 sinh(z s) = 0.3,
# z = 0.6745 the normal's upper quartile.
SIGMA = math.asinh(0.15) / 0.6745


def timings(rng, n, scale=1.0):
    return scale * np.exp(SIGMA * rng.standard_normal(n))


def test_the_simulated_timings_have_the_spread_the_requirements_name():
    x = timings(np.random.default_rng(0), 200_000)
    assert stats.iqr_over_median(x) == pytest.approx(0.30, abs=0.005)


def test_quartiles_and_iqr_are_numpys_linear_ones():
    x = [5.0, 1.0, 2.0, 4.0]  # sorted 1 2 4 5: Q1 = 1.75, median 3, Q3 = 4.25
    assert stats.quartiles(x) == (1.75, 3.0, 4.25)
    assert stats.iqr(x) == 2.5 and stats.iqr_over_median(x) == 2.5 / 3


@pytest.mark.parametrize("n", [5, 12, 40, 101])
def test_the_median_interval_covers_the_median_95_percent_of_the_time(n):
    rng = np.random.default_rng(n)
    hits = sum(stats.median_interval(timings(rng, n)).contains(1.0) for _ in range(2000))
    assert 0.93 <= hits / 2000 <= 0.97


@pytest.mark.parametrize("n", [5, 12, 40, 101])
def test_the_ratio_interval_covers_the_true_ratio_95_percent_of_the_time(n):
    rng = np.random.default_rng(100 + n)
    hits = sum(
        stats.ratio_interval(timings(rng, n, 1.3), timings(rng, n)).contains(1.3)
        for _ in range(2000)
    )
    assert 0.93 <= hits / 2000 <= 0.97


def regression_rate(slowdown, pairs=1000, n=40, threshold=0.10, seed=0):
    """The share of (baseline, candidate) pairs whose verdict is 'regression'."""
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(pairs):
        base, cand = timings(rng, n), timings(rng, n, slowdown)
        interval = stats.ratio_interval(cand, base)
        found += verdict_of(interval.low, interval.high, threshold) == "regression"
    return found / pairs


def test_operating_characteristics_of_the_regression_verdict():
    """IQR 30% of the median, 40 samples a side, 1,000 pairs, threshold 10% (the README quotes
    these rates: 0.0%, 0.3% and 99.8% at these seeds)."""
    assert regression_rate(1.0) <= 0.01  # false alarms between identical distributions
    assert regression_rate(1.05) <= 0.01  # a slowdown within the threshold
    assert regression_rate(1.5) >= 0.99  # a real 50% slowdown is caught


def test_the_interval_narrows_with_more_samples_and_widens_with_noise():
    rng = np.random.default_rng(1)
    widths = [stats.median_interval(timings(rng, n)).relative_halfwidth() for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]
    quiet = stats.ratio_interval(timings(rng, 50) * 1.0, np.exp(0.01 * rng.standard_normal(50)))
    noisy = stats.ratio_interval(timings(rng, 50), timings(rng, 50))
    assert quiet.high - quiet.low < noisy.high - noisy.low


def test_a_million_samples_cost_one_sort():
    rng = np.random.default_rng(2)
    interval = stats.ratio_interval(timings(rng, 1_000_000, 2.0), timings(rng, 5))
    assert interval.low < 2.0 < interval.high


@pytest.mark.parametrize("n", [1, 4])
def test_too_few_samples_give_no_ratio_and_the_range_as_the_median_interval(n):
    x = np.arange(1.0, n + 1)
    with pytest.raises(ValueError, match="at least 5 samples"):
        stats.ratio_interval(x, x)
    assert (stats.median_interval(x).low, stats.median_interval(x).high) == (1.0, float(n))


def test_a_level_that_rounds_to_one_gives_the_whole_line():
    """1 - 1e-300 is 1.0 in float: the interval is [0, inf], as with scipy, not an error."""
    x = np.arange(1.0, 11.0)
    interval = stats.ratio_interval(x, x, level=1 - 1e-300)
    assert (interval.low, interval.high) == (0.0, math.inf)
    assert stats.normal_quantile(0.0) == -math.inf and stats.normal_quantile(1.0) == math.inf

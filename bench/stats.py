"""The statistics of the harness, in one place: quartiles, the median with its confidence interval,
and the ratio of two medians with its interval. Every table, flag and verdict takes them from here.

All of it is distribution-free or nearly so (timings are skewed, with a long right tail: no normal
model of the samples), deterministic (the same samples give the same interval, so verdicts are
reproducible) and O(n log n) in time and O(n) in memory, whatever the sample count.

- Quartiles and IQR: numpy's default (linear interpolation between order statistics, Hyndman and
  Fan's type 7), the one definition used everywhere.
- The median's interval: order statistics, whose coverage comes from the binomial distribution
  alone; interpolated between neighbouring order statistics (Hettmansperger and Sheather, 1986) so
  that the coverage is close to the level asked for, not just above it.
- The ratio of medians: Bonett and Price's interval for ln(median_1) - ln(median_2) (Bonett and
  Price, "Statistical inference for a linear function of medians", Psychological Methods 2002):
  each side's log median gets a variance from the spread of the order statistics around it, and
  the two combine as independent estimates. Times are positive, so the ratio of medians is the
  exponential of the difference of log medians.

Two distributions are needed, and neither needs scipy: the Binomial(n, 1/2) cdf (exact integer
arithmetic up to EXACT_BINOMIAL_N samples, a log-space sum of the tail beyond) and the normal
quantile (the standard library's `statistics.NormalDist`, Wichura's AS241). The sampler, the
history, the reports and every verdict rest on these intervals, and a GPU machine may have no
scipy: a missing optional package must not cost the measurement itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95  # the confidence level of every interval the harness reports
# Below this many samples a side no interval is given: one of the order statistics would have to
# be the sample's extreme, and 4 samples cover the median only 87.5% of the time at best.
MIN_SAMPLES = 5
# Up to this many samples the binomial cdf is an exact sum of integers (a few milliseconds at
# most); beyond it, a sum of floating-point terms from log-gamma (within 2e-9 of scipy's at a
# million samples: log-gamma's rounding, far below what any interval here can show).
EXACT_BINOMIAL_N = 4096
_STANDARD_NORMAL = NormalDist()


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    def relative_halfwidth(self) -> float:
        """The larger distance from the estimate to a bound, as a fraction of the estimate: the
        "+-2%" of a median known to 2%."""
        if not self.estimate:
            return math.inf
        return max(self.high - self.estimate, self.estimate - self.low) / abs(self.estimate)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _sorted(samples) -> np.ndarray:
    x = np.sort(np.asarray(samples, dtype=np.float64))
    if x.size == 0:
        raise ValueError("no samples")
    return x


def quartiles(samples) -> tuple[float, float, float]:
    """(Q1, median, Q3), numpy's linear interpolation (type 7)."""
    q1, med, q3 = np.quantile(_sorted(samples), [0.25, 0.5, 0.75])
    return float(q1), float(med), float(q3)


def iqr(samples) -> float:
    q1, _, q3 = quartiles(samples)
    return q3 - q1


def iqr_over_median(samples) -> float:
    """IQR / median: the spread of a case, as the tables and flags quote it."""
    q1, med, q3 = quartiles(samples)
    return (q3 - q1) / med if med > 0 else math.inf


def normal_quantile(p: float) -> float:
    """The standard normal distribution's quantile: normal_quantile(0.975) = 1.95996...; -inf and
    inf at 0 and 1, as scipy's norm.ppf (a level of 1 - 1e-300 rounds to 1: the interval is
    then everything)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return _STANDARD_NORMAL.inv_cdf(p)


def binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2): the coverage of order statistics around a median."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if 2 * k >= n:  # the upper part, by symmetry, from the smaller tail
        return 1.0 - binomial_half_cdf(n - k - 1, n)
    if n <= EXACT_BINOMIAL_N:
        total, term = 0, 1  # C(n, 0)
        for i in range(k + 1):
            total += term
            term = term * (n - i) // (i + 1)
        return total / 2**n  # int / int rounds correctly, however large
    # k < n / 2: the terms shrink going down from C(n, k) / 2^n; stop once they no longer count.
    term = math.exp(
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    )
    total, i = term, k
    while i > 0 and term > total * 1e-18:
        term *= i / (n - i + 1)
        total += term
        i -= 1
    return total


def _binomial_half_quantile(q: float, n: int) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, 1/2) (0 < q < 1)."""
    k = min(n, max(0, math.floor(n / 2 + normal_quantile(q) * math.sqrt(n) / 2)))
    while k < n and binomial_half_cdf(k, n) < q:
        k += 1
    while k > 0 and binomial_half_cdf(k - 1, n) >= q:
        k -= 1
    return k


def _coverage(n: int, k: int) -> float:
    """P(x_(k) <= median <= x_(n-k+1)) for any continuous distribution (1-based k)."""
    return 1.0 - 2.0 * binomial_half_cdf(k - 1, n)


def _outer_rank(n: int, level: float) -> int:
    """The largest k with coverage(n, k) >= level (1-based; 1 where the extremes cover less)."""
    k = _binomial_half_quantile((1 - level) / 2, n)  # coverage(n, k) >= level here, or k = 0
    while k > 1 and _coverage(n, k) < level:
        k -= 1
    return max(k, 1)


def median_interval(samples, level: float = LEVEL) -> Interval:
    """The median and its distribution-free confidence interval at `level`.

    [x_(k), x_(n-k+1)] covers the median with probability coverage(n, k) whatever the
    distribution; between the k that covers at least `level` and k + 1 that covers less, the
    bounds are interpolated as Hettmansperger and Sheather derived, which brings the coverage to
    about `level`. With fewer than MIN_SAMPLES samples the interval is the whole sample's range.
    """
    x = _sorted(samples)
    n = x.size
    median = float(np.median(x))
    if n < MIN_SAMPLES:
        return Interval(median, float(x[0]), float(x[-1]), level)
    k = _outer_rank(n, level)
    outer = _coverage(n, k)
    inner = _coverage(n, k + 1) if k + 1 <= (n + 1) // 2 else 0.0
    if outer <= level or outer == inner:
        weight = 0.0
    else:
        share = (outer - level) / (outer - inner)
        weight = (n - k) * share / (k + (n - 2 * k) * share)
    low = (1 - weight) * x[k - 1] + weight * x[k]
    high = (1 - weight) * x[n - k] + weight * x[n - k - 1]
    return Interval(median, float(low), float(high), level)


def _log_median_variance(x: np.ndarray) -> float:
    """Bonett and Price's variance of ln(median) from the order statistics around it."""
    n = x.size
    c = max(1, round((n + 1) / 2 - math.sqrt(n)))
    z = normal_quantile((1 + _coverage(n, c)) / 2)
    spread = math.log(x[n - c]) - math.log(x[c - 1])
    return (spread / (2 * z)) ** 2


def ratio_interval(numerator, denominator, level: float = LEVEL) -> Interval:
    """median(numerator) / median(denominator) with its confidence interval at `level`.

    Samples must be > 0 (times). Each side needs MIN_SAMPLES samples; ValueError otherwise.
    """
    a, b = _sorted(numerator), _sorted(denominator)
    if min(a.size, b.size) < MIN_SAMPLES:
        raise ValueError(f"a ratio interval needs at least {MIN_SAMPLES} samples a side")
    if a[0] <= 0 or b[0] <= 0:
        raise ValueError("a ratio of medians needs samples > 0")
    log_ratio = math.log(np.median(a)) - math.log(np.median(b))
    half = normal_quantile((1 + level) / 2) * math.sqrt(
        _log_median_variance(a) + _log_median_variance(b)
    )
    return Interval(
        math.exp(log_ratio), math.exp(log_ratio - half), math.exp(log_ratio + half), level
    )

"""Statistics for the bench report: pure functions, no I/O, no numpy needed.

Conventions (docs/benchmarking.md (part 2) says the same for readers):
- percentile: nearest-rank. The p-th percentile of N sorted samples is the sample at
  1-based rank ceil(p/100 * N) (rank 1 for p == 0). It is always a measured value,
  never an interpolation, so "p99 = 812 us" means some request really took 812 us.
- median over repetitions: the middle value; for an even count, the mean of the two
  middle values (the only place we average).
- ratio with spread: ratio of medians, bracketed by the rep extremes
  [min(a)/max(b), max(a)/min(b)] -- the widest disagreement any pairing of reps shows.
- paired ratio (what the report's ratio tables and verdict show): rep i of A over rep i
  of B (the runner interleaves reps, so a pair shares the machine's state); the point is
  the geometric mean of the pair ratios, with a seeded percentile-bootstrap 95 % CI over
  the pairs; no CI below 3 pairs. "No difference shown" when the CI includes 1.
- histogram: bins are [edge_i, edge_i+1), the last one closed [edge_n-1, edge_n];
  values outside the edges are not counted (the caller reports them separately).
- chi-square: goodness of fit of observed counts against expected counts (uniform
  when not given), dof = k - 1; chi2_sf gives the p-value.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank p-th percentile (0 <= p <= 100) of values (any order)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} outside [0, 100]")
    ordered = sorted(values)
    return percentile_sorted(ordered, p)


def percentile_sorted(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of values already sorted ascending (no copy)."""
    if not ordered:
        raise ValueError("percentile of no values")
    n = len(ordered)
    # round() guards against p/100*n landing a hair above an integer (e.g. 99.9% of 1000).
    exact = round(p / 100.0 * n, 9)
    rank = max(1, math.ceil(exact))
    return ordered[min(rank, n) - 1]


def percentiles(values: Sequence[float], ps: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles for several p at once (sorts once)."""
    ordered = sorted(values)
    return [percentile_sorted(ordered, p) for p in ps]


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin [edges[i], edges[i+1]); the last bin includes its right edge."""
    if len(edges) < 2:
        raise ValueError("histogram needs at least two edges")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError("histogram edges must increase strictly")
    counts = [0] * (len(edges) - 1)
    lo, hi = edges[0], edges[-1]
    for v in values:
        if v < lo or v > hi:
            continue
        if v == hi:
            counts[-1] += 1
            continue
        counts[bisect.bisect_right(edges, v) - 1] += 1
    return counts


def linear_edges(lo: float, hi: float, bins: int) -> list[float]:
    """bins + 1 equally spaced edges from lo to hi (hi > lo)."""
    if bins < 1 or hi <= lo:
        raise ValueError("need bins >= 1 and hi > lo")
    step = (hi - lo) / bins
    return [lo + i * step for i in range(bins)] + [hi]


def median(values: Sequence[float]) -> float:
    """Median: middle value, mean of the two middle values for an even count."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    if n % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


@dataclass(frozen=True)
class Summary:
    """One figure over repetitions: median with its [min, max]."""

    median: float
    min: float
    max: float
    n: int  # how many repetitions went in (valid ones only)


def summarize(values: Sequence[float]) -> Summary:
    """Median, min and max of the repetitions' values."""
    if not values:
        raise ValueError("summary of no values")
    return Summary(median(values), min(values), max(values), len(values))


@dataclass(frozen=True)
class Ratio:
    """a/b as ratio of medians with the rep-extreme spread [min a/max b, max a/min b]."""

    value: float
    lo: float
    hi: float


def ratio(a: Sequence[float], b: Sequence[float]) -> Ratio | None:
    """Ratio of medians of a over b; None when b can be zero or negative (no meaning)."""
    if not a or not b:
        return None
    if min(b) <= 0.0:
        return None
    sa, sb = summarize(a), summarize(b)
    return Ratio(sa.median / sb.median, sa.min / sb.max, sa.max / sb.min)


def chi_square(
    observed: Sequence[float], expected: Sequence[float] | None = None
) -> float:
    """Pearson's chi-square statistic; expected defaults to the uniform split of the total."""
    k = len(observed)
    if k == 0:
        raise ValueError("chi-square of no categories")
    if expected is None:
        total = float(sum(observed))
        expected = [total / k] * k
    if len(expected) != k:
        raise ValueError("observed and expected differ in length")
    stat = 0.0
    for o, e in zip(observed, expected):
        if e <= 0.0:
            if o != 0:
                return math.inf
            continue
        stat += (o - e) ** 2 / e
    return stat


def max_min_ratio(counts: Sequence[float]) -> float:
    """Largest count over smallest (inf when some upstream got nothing)."""
    if not counts:
        raise ValueError("max/min of no counts")
    lo = min(counts)
    return math.inf if lo <= 0 else max(counts) / lo


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof): the p-value of a chi-square statistic."""
    if dof < 1:
        raise ValueError("dof must be >= 1")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series below a+1, continued fraction above)."""
    if x < a + 1.0:
        term = 1.0 / a
        total = term
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        p = total * math.exp(-x + a * math.log(x) - math.lgamma(a))
        return max(0.0, 1.0 - p)
    # Lentz's continued fraction for Q.
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


# ---------------------------------------------------------------- paired ratios


BOOTSTRAP_SEED = 20261122
BOOTSTRAP_RESAMPLES = 10_000
MIN_PAIRS_FOR_CI = 3


@dataclass(frozen=True)
class PairedRatio:
    """a/b from paired repetitions (rep i of a over rep i of b).

    value: geometric mean of the per-pair ratios (the ratio is scale-free, so it is
    averaged on the log scale; for one pair it is that pair's ratio). lo, hi: the
    percentile-bootstrap 95 % confidence interval of that geometric mean (pairs resampled
    with replacement, nearest-rank 2.5th and 97.5th percentiles of the resampled means),
    None when there are fewer than min_pairs pairs. n: the number of pairs.
    """

    value: float
    lo: float | None
    hi: float | None
    n: int

    @property
    def has_ci(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def spans_one(self) -> bool:
        """The CI includes 1: no difference shown (False when there is no CI)."""
        return self.has_ci and self.lo <= 1.0 <= self.hi  # type: ignore[operator]


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of statistic(values): resample with replacement `resamples`
    times from a PRNG seeded with `seed` (deterministic), take the nearest-rank
    (1-level)/2 and (1+level)/2 percentiles of the resampled statistics."""
    if not values:
        raise ValueError("bootstrap of no values")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    rng = random.Random(seed)
    n = len(values)
    boot = sorted(
        statistic([values[rng.randrange(n)] for _ in range(n)])
        for _ in range(resamples)
    )
    tail = (1.0 - level) / 2.0 * 100.0
    return percentile_sorted(boot, tail), percentile_sorted(boot, 100.0 - tail)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def paired_ratio(
    pairs: Sequence[tuple[float, float]],
    min_pairs: int = MIN_PAIRS_FOR_CI,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> PairedRatio | None:
    """Ratio a/b from pairs (a_i, b_i); None when no pair or any value is <= 0 (a ratio of
    those means nothing). CI from bootstrap_ci over the log ratios (None below min_pairs)."""
    if not pairs or any(a <= 0.0 or b <= 0.0 for a, b in pairs):
        return None
    logs = [math.log(a / b) for a, b in pairs]
    value = math.exp(_mean(logs))
    if len(logs) < min_pairs:
        return PairedRatio(value, None, None, len(logs))
    if max(logs) - min(logs) == 0.0:  # every pair agrees: the CI is that point
        return PairedRatio(value, value, value, len(logs))
    lo, hi = bootstrap_ci(logs, _mean, seed=seed, resamples=resamples)
    return PairedRatio(value, math.exp(lo), math.exp(hi), len(logs))

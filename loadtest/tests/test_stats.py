"""loadtest/stats.py: nearest-rank percentiles, histogram, summaries, ratios, chi-square."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from anywhere: `pytest loadtest/tests`
    sys.path.insert(0, str(ROOT))

from loadtest import stats

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------- percentile (nearest rank)


@pytest.mark.parametrize(
    ("p", "expected"),
    # The textbook nearest-rank example: rank = ceil(p/100 * 5).
    [(0, 15), (5, 15), (20, 15), (30, 20), (40, 20), (50, 35), (80, 40), (100, 50)],
)
def test_percentile_nearest_rank_known_array(p: float, expected: float) -> None:
    assert stats.percentile([15, 20, 35, 40, 50], p) == expected


def test_percentile_ignores_input_order() -> None:
    assert stats.percentile([50, 15, 40, 20, 35], 50) == 35


def test_percentile_is_always_a_sample_never_interpolated() -> None:
    values = [1.0, 2.0, 10.0, 100.0]
    for p in (1, 25, 26, 49, 50, 51, 75, 99, 100):
        assert stats.percentile(values, p) in values


def test_percentile_of_one_value_is_that_value() -> None:
    for p in (0, 50, 99.99, 100):
        assert stats.percentile([7.5], p) == 7.5


def test_percentile_exact_ranks_do_not_round_up_on_float_noise() -> None:
    # 0.07 * 100 == 7.000000000000001 in binary floating point: still rank 7.
    hundred = list(range(1, 101))
    assert stats.percentile(hundred, 7) == 7
    assert stats.percentile(hundred, 29) == 29
    assert stats.percentile(list(range(1, 1001)), 99.9) == 999
    assert stats.percentile(list(range(1, 10_001)), 99.99) == 9999


def test_percentile_rank_just_above_an_integer_goes_up() -> None:
    assert stats.percentile(list(range(1, 101)), 99.5) == 100
    assert stats.percentile(list(range(1, 11)), 91) == 10


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1.0], -1)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 100.5)


def test_percentiles_matches_single_calls() -> None:
    rng = random.Random(7)
    values = [rng.expovariate(1.0) for _ in range(997)]
    ps = (0, 50, 90, 99, 99.9, 100)
    assert stats.percentiles(values, ps) == [stats.percentile(values, p) for p in ps]


# ---------------------------------------------------------------- histogram


def test_histogram_bins_are_left_closed_last_bin_closed() -> None:
    values = [0, 0.5, 1, 1.5, 2, 2.5, 3, -1, 4]
    # [0,1): 0, 0.5   [1,2): 1, 1.5   [2,3]: 2, 2.5, 3   outside: -1, 4
    assert stats.histogram(values, [0, 1, 2, 3]) == [2, 2, 3]


def test_histogram_counts_sum_to_values_inside_edges() -> None:
    rng = random.Random(3)
    values = [rng.uniform(-1, 11) for _ in range(5000)]
    edges = stats.linear_edges(0, 10, 20)
    counts = stats.histogram(values, edges)
    assert len(counts) == 20
    assert sum(counts) == sum(1 for v in values if 0 <= v <= 10)


def test_histogram_uneven_edges() -> None:
    assert stats.histogram([1, 2, 3, 10, 11, 99, 100], [1, 10, 100]) == [3, 4]


def test_histogram_rejects_bad_edges() -> None:
    with pytest.raises(ValueError):
        stats.histogram([1], [1])
    with pytest.raises(ValueError):
        stats.histogram([1], [0, 1, 1])


def test_linear_edges() -> None:
    assert stats.linear_edges(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1]
    with pytest.raises(ValueError):
        stats.linear_edges(1, 1, 4)


# ---------------------------------------------------------------- median / summary


def test_median_odd_and_even() -> None:
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([5]) == 5
    with pytest.raises(ValueError):
        stats.median([])


def test_summarize_median_min_max() -> None:
    s = stats.summarize([110_000, 90_000, 100_000])
    assert (s.median, s.min, s.max, s.n) == (100_000, 90_000, 110_000, 3)


# ---------------------------------------------------------------- ratio with spread


def test_ratio_of_medians_with_rep_extremes() -> None:
    r = stats.ratio([100_000, 110_000, 90_000], [50_000, 55_000, 45_000])
    assert r is not None
    assert r.value == pytest.approx(2.0)
    assert r.lo == pytest.approx(90_000 / 55_000)  # min a / max b
    assert r.hi == pytest.approx(110_000 / 45_000)  # max a / min b
    assert r.lo <= r.value <= r.hi


def test_ratio_single_rep_has_no_spread() -> None:
    r = stats.ratio([3.0], [2.0])
    assert r is not None
    assert (r.value, r.lo, r.hi) == (1.5, 1.5, 1.5)


def test_ratio_undefined_for_empty_or_non_positive_denominator() -> None:
    assert stats.ratio([], [1.0]) is None
    assert stats.ratio([1.0], []) is None
    assert stats.ratio([1.0], [0.0, 2.0]) is None
    assert stats.ratio([1.0], [-1.0]) is None


# ---------------------------------------------------------------- chi-square


def test_chi_square_uniform_hand_computed() -> None:
    # expected 50 each: (44-50)^2/50 + (56-50)^2/50 = 36/50 + 36/50 = 1.44
    assert stats.chi_square([44, 56]) == pytest.approx(1.44)
    # expected 20 each: 100/20 + 0 + 100/20 = 10
    assert stats.chi_square([10, 20, 30]) == pytest.approx(10.0)
    assert stats.chi_square([100, 100, 100, 100]) == 0.0


def test_chi_square_explicit_expected_hand_computed() -> None:
    # (10-5)^2/5 + (20-10)^2/10 + (30-15)^2/15 = 5 + 10 + 15
    assert stats.chi_square([10, 20, 30], [5, 10, 15]) == pytest.approx(30.0)


def test_chi_square_zero_expected() -> None:
    assert stats.chi_square([0, 10], [0, 10]) == 0.0
    assert stats.chi_square([1, 9], [0, 10]) == math.inf
    with pytest.raises(ValueError):
        stats.chi_square([1, 2], [1])
    with pytest.raises(ValueError):
        stats.chi_square([])


def test_chi2_sf_known_critical_values() -> None:
    assert stats.chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert stats.chi2_sf(6.634896601021214, 1) == pytest.approx(0.01, rel=1e-9)
    assert stats.chi2_sf(11.070497693516351, 5) == pytest.approx(0.05, rel=1e-9)


@pytest.mark.parametrize("x", [0.1, 1.0, 3.0, 10.0, 40.0])
def test_chi2_sf_closed_forms_for_even_dof(x: float) -> None:
    # dof 2: e^(-x/2); dof 4: e^(-x/2) (1 + x/2)
    assert stats.chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-9)
    assert stats.chi2_sf(x, 4) == pytest.approx(
        math.exp(-x / 2) * (1 + x / 2), rel=1e-9
    )


def test_chi2_sf_edges() -> None:
    assert stats.chi2_sf(0.0, 3) == 1.0
    assert stats.chi2_sf(math.inf, 3) == 0.0
    with pytest.raises(ValueError):
        stats.chi2_sf(1.0, 0)


def test_max_min_ratio() -> None:
    assert stats.max_min_ratio([100, 150, 120]) == 1.5
    assert stats.max_min_ratio([100, 0]) == math.inf


# ---------------------------------------------------------------- paired ratios, bootstrap


def test_paired_ratio_two_pairs_known_bootstrap() -> None:
    # pair ratios 1 and 4: resampled geometric means are 1 (p=.25), 2 (p=.5), 4 (p=.25),
    # so the 2.5th percentile is 1 and the 97.5th is 4; the point is sqrt(1*4) = 2.
    r = stats.paired_ratio([(1.0, 1.0), (8.0, 2.0)], min_pairs=2)
    assert r is not None
    assert r.value == pytest.approx(2.0)
    assert (r.lo, r.hi) == (pytest.approx(1.0), pytest.approx(4.0))
    assert r.n == 2 and r.has_ci and r.spans_one


def test_paired_ratio_identical_pairs_has_a_point_ci() -> None:
    r = stats.paired_ratio([(100_000, 50_000), (110_000, 55_000), (90_000, 45_000)])
    assert r is not None
    assert (r.value, r.lo, r.hi) == (pytest.approx(2.0), 2.0, 2.0)
    assert not r.spans_one


def test_paired_ratio_pairs_by_rep_not_by_sorting() -> None:
    # unpaired extremes would give [1.8/2.2, 2.2/1.8]; pairing removes the shared drift
    pairs = [(1.8, 1.8), (2.0, 2.0), (2.2, 2.2)]
    r = stats.paired_ratio(pairs)
    assert r is not None and (r.value, r.lo, r.hi) == (1.0, 1.0, 1.0)


def test_paired_ratio_three_pairs_ci_is_within_pair_extremes() -> None:
    r = stats.paired_ratio([(2.0, 1.0), (2.2, 1.0), (1.8, 1.0)])
    assert r is not None and r.n == 3
    # 3 pairs: the resampled means range from the smallest to the largest pair ratio
    assert r.lo == pytest.approx(1.8) and r.hi == pytest.approx(2.2)
    assert r.lo <= r.value <= r.hi and not r.spans_one


def test_bootstrap_is_seeded_and_deterministic() -> None:
    pairs = [(1.0 + 0.1 * i, 1.0 + 0.07 * ((i * 7) % 5)) for i in range(8)]
    a, b = stats.paired_ratio(pairs), stats.paired_ratio(pairs)
    assert a == b
    c = stats.paired_ratio(pairs, seed=1)
    assert c is not None and a is not None and c.value == a.value


def test_bootstrap_ci_of_mean_known_normal_case() -> None:
    # 200 values spread evenly 0..199 (mean 99.5, sd ~57.7): the bootstrap CI of the mean
    # is close to mean ± 1.96·sd/sqrt(n) = 99.5 ± 8.0
    values = [float(i) for i in range(200)]
    lo, hi = stats.bootstrap_ci(values, lambda v: sum(v) / len(v), resamples=4000)
    assert lo == pytest.approx(99.5 - 8.0, abs=1.2)
    assert hi == pytest.approx(99.5 + 8.0, abs=1.2)


def test_paired_ratio_too_few_pairs_has_no_ci() -> None:
    r = stats.paired_ratio([(3.0, 1.0), (3.3, 1.0)])
    assert r is not None and r.n == 2
    assert r.lo is None and r.hi is None and not r.has_ci and not r.spans_one


def test_paired_ratio_undefined_for_non_positive_or_empty() -> None:
    assert stats.paired_ratio([]) is None
    assert stats.paired_ratio([(1.0, 0.0), (1.0, 1.0), (1.0, 1.0)]) is None
    assert stats.paired_ratio([(-1.0, 1.0), (1.0, 1.0), (1.0, 1.0)]) is None
    with pytest.raises(ValueError):
        stats.bootstrap_ci([], lambda v: 0.0)

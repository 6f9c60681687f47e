"""Tests for pilot_lib.analysis.stats against independent references.

References: statsmodels (Wilson), scipy.stats.bootstrap (percentile bootstrap),
the classical resampling bootstrap and full enumeration of resamples (exact median bootstrap),
scipy.stats.t (Student-t interval), and closed forms worked out in the tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis import stats

# ---------------------------------------------------------------------------
# z_value
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [(0.95, 1.959963984540054), (0.90, 1.6448536269514722), (0.99, 2.5758293035489004)],
)
def test_z_value_textbook(confidence: float, expected: float) -> None:
    assert stats.z_value(confidence) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 95])
def test_z_value_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        stats.z_value(confidence)


# ---------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------


def _wilson_cases() -> list[tuple[int, int, float]]:
    cases = []
    for confidence in (0.80, 0.90, 0.95, 0.99):
        for n in (1, 2, 3, 5, 10, 17, 30, 100, 401, 12_345):
            for successes in sorted({0, 1, n // 3, n // 2, n - 1, n}):
                if 0 <= successes <= n:
                    cases.append((successes, n, confidence))
    return cases


@pytest.mark.parametrize(("successes", "n", "confidence"), _wilson_cases())
def test_wilson_matches_statsmodels(successes: int, n: int, confidence: float) -> None:
    low, high = stats.wilson_interval(successes, n, confidence)
    ref_low, ref_high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    assert 0.0 <= low <= successes / n <= high <= 1.0


def test_wilson_textbook_value() -> None:
    # 81 of 263 at 95% (Newcombe 1998, Table I example style), worked by hand:
    # p = 0.30798, z^2/n = 0.014607; centre = (p + z^2/2n) / (1 + z^2/n)
    z = 1.959963984540054
    n, k = 263, 81
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = stats.wilson_interval(k, n)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_wilson_edges_are_exact() -> None:
    assert stats.wilson_interval(0, 20)[0] == 0.0
    assert stats.wilson_interval(20, 20)[1] == 1.0
    # Not degenerate at the edges, unlike the Wald interval.
    assert stats.wilson_interval(0, 20)[1] > 0.1
    assert stats.wilson_interval(20, 20)[0] < 0.9
    # n = 1: wide on both outcomes and mirror images of each other.
    lo0, hi0 = stats.wilson_interval(0, 1)
    lo1, hi1 = stats.wilson_interval(1, 1)
    assert lo0 == 0.0 and hi1 == 1.0
    assert hi0 == pytest.approx(1 - lo1, abs=1e-12)
    # 0 of 1: centre and half-width are both z^2 / 2 / (1 + z^2), so high = z^2 / (1 + z^2).
    z2 = 1.959963984540054**2
    assert hi0 == pytest.approx(z2 / (1 + z2), abs=1e-12)
    assert round(hi0, 4) == 0.7935


def test_wilson_no_data_is_nan() -> None:
    low, high = stats.wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)


def test_wilson_narrows_with_n() -> None:
    widths = [np.diff(stats.wilson_interval(n // 2, n))[0] for n in (10, 100, 1000, 10_000)]
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] == pytest.approx(2 * 1.96 * 0.5 / 100, rel=0.01)


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(-1, 10, 0.95), (11, 10, 0.95), (0, -1, 0.95), (5, 10, 0.0), (5, 10, 1.5), (0, 0, 2.0)],
)
def test_wilson_bad_input(successes: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        stats.wilson_interval(successes, n, confidence)


# ---------------------------------------------------------------------------
# Student-t interval for a mean
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "std", "n", "confidence"),
    [
        (2.1, 0.8, 2, 0.95),
        (2.1, 0.8, 30, 0.95),
        (-4.0, 12.5, 7, 0.90),
        (0.0, 1.0, 10_000, 0.99),
        (3.3, 0.0, 50, 0.95),
    ],
)
def test_mean_interval_matches_scipy_t(mean: float, std: float, n: int, confidence: float) -> None:
    low, high = stats.mean_interval(mean, std, n, confidence)
    if std == 0:
        assert (low, high) == (mean, mean)
        return
    ref = st.t.interval(confidence, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    assert (low, high) == pytest.approx(ref, rel=1e-12)


def test_mean_interval_from_raw_sample() -> None:
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 1.3, size=40)
    low, high = stats.mean_interval(x.mean(), x.std(ddof=1), x.size)
    ref = st.t.interval(0.95, df=x.size - 1, loc=x.mean(), scale=st.sem(x))
    assert (low, high) == pytest.approx(ref, rel=1e-12)


def test_mean_interval_edges() -> None:
    assert all(math.isnan(v) for v in stats.mean_interval(1.0, 0.5, 0))
    assert stats.mean_interval(1.0, 0.0, 1) == (-math.inf, math.inf)
    assert stats.mean_interval(1.0, math.nan, 5) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="std"):
        stats.mean_interval(1.0, -0.1, 5)
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_interval(1.0, 0.5, 5, confidence=1.0)


# ---------------------------------------------------------------------------
# Bootstrap of a median
# ---------------------------------------------------------------------------


def _scipy_median_interval(x: np.ndarray, confidence: float, seed: int) -> tuple[float, float]:
    res = st.bootstrap(
        (x,),
        np.median,
        method="percentile",
        confidence_level=confidence,
        n_resamples=5000,
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


@pytest.mark.parametrize(
    ("size", "confidence", "data_seed"),
    [(7, 0.95, 0), (41, 0.95, 1), (300, 0.95, 2), (1000, 0.90, 3), (250, 0.99, 4)],
)
def test_bootstrap_median_matches_scipy(size: int, confidence: float, data_seed: int) -> None:
    x = np.random.default_rng(data_seed).lognormal(3.0, 0.6, size=size)
    low, high = stats.bootstrap_median_interval(x, confidence, n_resamples=5000, seed=11)
    ref_low, ref_high = _scipy_median_interval(x, confidence, seed=99)
    width = ref_high - ref_low
    # Different random streams: the bounds agree up to Monte-Carlo error.
    assert abs(low - ref_low) < 0.1 * width
    assert abs(high - ref_high) < 0.1 * width
    assert low <= np.median(x) <= high


def test_bootstrap_median_coverage() -> None:
    # Exponential(1) has median ln 2; a 95% interval should cover it in most trials.
    true_median = math.log(2)
    covered = 0
    for trial in range(200):
        x = np.random.default_rng(1000 + trial).exponential(1.0, size=50)
        low, high = stats.bootstrap_median_interval(x, n_resamples=1000, seed=trial)
        covered += low <= true_median <= high
    assert 0.88 * 200 <= covered <= 0.995 * 200


def test_bootstrap_median_deterministic_and_seed_sensitive() -> None:
    x = np.random.default_rng(3).normal(10, 2, size=501)
    a = stats.bootstrap_median_interval(x, seed=5)
    b = stats.bootstrap_median_interval(list(x), seed=5)
    c = stats.bootstrap_median_interval(x, seed=6)
    assert a == b
    assert a != c


def test_bootstrap_median_edges() -> None:
    assert all(math.isnan(v) for v in stats.bootstrap_median_interval([]))
    assert all(math.isnan(v) for v in stats.bootstrap_median_interval([math.nan, math.nan]))
    assert stats.bootstrap_median_interval([4.2]) == (4.2, 4.2)
    assert stats.bootstrap_median_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)
    # NaNs are dropped, not propagated.
    with_nan = stats.bootstrap_median_interval([1.0, math.nan, 2.0, 3.0, 10.0], seed=1)
    without = stats.bootstrap_median_interval([1.0, 2.0, 3.0, 10.0], seed=1)
    assert with_nan == without
    # Two values: resample medians are x1, (x1+x2)/2 or x2; the bounds are among them.
    low, high = stats.bootstrap_median_interval([1.0, 3.0])
    assert (low, high) == (1.0, 3.0)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.bootstrap_median_interval([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_median_interval([1.0, 2.0], confidence=0)


def test_bootstrap_median_blocks_do_not_change_the_distribution(monkeypatch) -> None:
    # Force many small blocks; the interval must still match scipy.
    monkeypatch.setattr(stats, "_MAX_CELLS_PER_BLOCK", 1000)
    x = np.random.default_rng(8).lognormal(1.0, 0.4, size=400)
    low, high = stats.bootstrap_median_interval(x, n_resamples=4000, seed=2)
    ref_low, ref_high = _scipy_median_interval(x, 0.95, seed=3)
    width = ref_high - ref_low
    assert abs(low - ref_low) < 0.1 * width
    assert abs(high - ref_high) < 0.1 * width


# ---------------------------------------------------------------------------
# Bootstrap of a ratio of medians (two independent samples)
# ---------------------------------------------------------------------------


def _median_ratio(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(u, axis=axis) / np.median(v, axis=axis)


@pytest.mark.parametrize("data_seed", [0, 1, 2])
def test_bootstrap_ratio_matches_scipy(data_seed: int) -> None:
    rng = np.random.default_rng(data_seed)
    agent = rng.lognormal(3.0, 0.6, size=200)
    control = rng.lognormal(3.4, 0.5, size=150)
    ratio, low, high = stats.bootstrap_median_ratio_interval(
        agent, control, n_resamples=5000, seed=4
    )
    assert ratio == pytest.approx(np.median(agent) / np.median(control), rel=1e-12)
    res = st.bootstrap(
        (agent, control),
        _median_ratio,
        method="percentile",
        paired=False,
        n_resamples=5000,
        rng=np.random.default_rng(40 + data_seed),
        vectorized=True,
    )
    ref_low, ref_high = res.confidence_interval.low, res.confidence_interval.high
    width = ref_high - ref_low
    assert abs(low - ref_low) < 0.1 * width
    assert abs(high - ref_high) < 0.1 * width
    assert low <= ratio <= high


def test_bootstrap_ratio_coverage() -> None:
    # Medians ln2 * 1 and ln2 * 2: true ratio 0.5.
    covered = 0
    for trial in range(200):
        rng = np.random.default_rng(5000 + trial)
        agent, control = rng.exponential(1.0, size=60), rng.exponential(2.0, size=80)
        _, low, high = stats.bootstrap_median_ratio_interval(
            agent, control, n_resamples=1000, seed=trial
        )
        covered += low <= 0.5 <= high
    assert 0.88 * 200 <= covered <= 0.995 * 200


def test_bootstrap_ratio_deterministic() -> None:
    rng = np.random.default_rng(12)
    a, b = rng.normal(20, 4, 300), rng.normal(30, 5, 200)
    assert stats.bootstrap_median_ratio_interval(
        a, b, seed=3
    ) == stats.bootstrap_median_ratio_interval(a, b, seed=3)


def test_bootstrap_ratio_edges() -> None:
    assert all(math.isnan(v) for v in stats.bootstrap_median_ratio_interval([], [1.0, 2.0]))
    assert all(math.isnan(v) for v in stats.bootstrap_median_ratio_interval([1.0], []))
    # Denominator median 0: no ratio.
    assert all(math.isnan(v) for v in stats.bootstrap_median_ratio_interval([1.0], [0.0, 0.0, 5]))
    # Single values: the ratio and a zero-width interval.
    assert stats.bootstrap_median_ratio_interval([3.0], [4.0]) == (0.75, 0.75, 0.75)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.bootstrap_median_ratio_interval([1.0], [2.0], n_resamples=-5)


# ---------------------------------------------------------------------------
# Sample sizes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("margin", "p", "confidence", "expected"),
    [
        (0.05, 0.5, 0.95, 385),  # 1.96^2 * 0.25 / 0.0025 = 384.15
        (0.03, 0.5, 0.95, 1068),  # 1067.07
        (0.10, 0.5, 0.95, 97),  # 96.04
        (0.05, 0.5, 0.99, 664),  # 2.5758^2 * 0.25 / 0.0025 = 663.49
        (0.05, 0.2, 0.95, 246),  # 3.8415 * 0.16 / 0.0025 = 245.85
        (0.02, 0.0, 0.95, 1),  # a certain outcome needs no more than one decision
    ],
)
def test_required_sample_size_worked_values(
    margin: float, p: float, confidence: float, expected: int
) -> None:
    assert stats.required_sample_size(margin, p, confidence) == expected


def test_required_sample_size_gives_the_margin() -> None:
    # At the returned n the normal-approximation half-width is within the margin,
    # and one fewer decision is not enough.
    z = st.norm.ppf(0.975)
    for margin in (0.01, 0.025, 0.04, 0.05, 0.07, 0.15):
        n = stats.required_sample_size(margin)
        assert z * math.sqrt(0.25 / n) <= margin + 1e-12
        assert z * math.sqrt(0.25 / (n - 1)) > margin


@pytest.mark.parametrize(("margin", "p"), [(0.0, 0.5), (1.0, 0.5), (-0.05, 0.5), (0.05, 1.2)])
def test_required_sample_size_bad_input(margin: float, p: float) -> None:
    with pytest.raises(ValueError):
        stats.required_sample_size(margin, p)


def _clear_closed_form(estimate: float, threshold: float, confidence: float = 0.95) -> int:
    # Wilson interval at p is {t : (p - t)^2 <= z^2 t (1 - t) / n}; t lies outside
    # it once n > z^2 t (1 - t) / (p - t)^2.
    z = st.norm.ppf(0.5 + confidence / 2)
    return math.floor(z * z * threshold * (1 - threshold) / (estimate - threshold) ** 2) + 1


@pytest.mark.parametrize(
    ("estimate", "threshold", "confidence"),
    [
        (0.85, 0.80, 0.95),
        (0.75, 0.80, 0.95),
        (0.83, 0.80, 0.95),
        (0.52, 0.60, 0.95),
        (0.90, 0.50, 0.95),
        (0.81, 0.80, 0.95),
        (0.10, 0.20, 0.90),
        (0.62, 0.60, 0.99),
        (1.00, 0.99, 0.95),
        (0.00, 0.01, 0.95),
    ],
)
def test_sample_size_to_clear_closed_form(
    estimate: float, threshold: float, confidence: float
) -> None:
    n = stats.sample_size_to_clear(estimate, threshold, confidence)
    assert n == _clear_closed_form(estimate, threshold, confidence)


def test_sample_size_to_clear_hand_checked() -> None:
    # 85% observed against an 80% threshold: 1.96^2 * 0.8 * 0.2 / 0.05^2 = 245.85 -> 246.
    n = stats.sample_size_to_clear(0.85, 0.80)
    assert n == 246
    # At n the Wilson interval around 85% (statsmodels, fractional count) clears 80%;
    # at n - 1 it does not.
    low_n, _ = proportion_confint(0.85 * n, n, alpha=0.05, method="wilson")
    low_before, _ = proportion_confint(0.85 * (n - 1), n - 1, alpha=0.05, method="wilson")
    assert low_n > 0.80 >= low_before


def test_sample_size_to_clear_monotone() -> None:
    # Closer to the threshold needs more decisions, from either side.
    above = [stats.sample_size_to_clear(0.80 + d, 0.80) for d in (0.15, 0.10, 0.05, 0.02, 0.01)]
    below = [stats.sample_size_to_clear(0.80 - d, 0.80) for d in (0.15, 0.10, 0.05, 0.02, 0.01)]
    assert above == sorted(above) and len(set(above)) == len(above)
    assert below == sorted(below) and len(set(below)) == len(below)
    # Higher confidence needs more decisions.
    assert stats.sample_size_to_clear(0.85, 0.8, 0.99) > stats.sample_size_to_clear(0.85, 0.8)


def test_sample_size_to_clear_edges() -> None:
    assert stats.sample_size_to_clear(0.8, 0.8) is None
    # 0.801 vs 0.80 needs about 615,000 decisions: more than a cap of 1,000, less than
    # the default cap; 0.8001 needs 61 million, more than the default cap.
    assert stats.sample_size_to_clear(0.801, 0.8, max_n=1000) is None
    assert stats.sample_size_to_clear(0.801, 0.8) == _clear_closed_form(0.801, 0.8) == 614_634
    assert stats.sample_size_to_clear(0.8001, 0.8) is None
    with pytest.raises(ValueError, match="proportion"):
        stats.sample_size_to_clear(80, 0.8)
    with pytest.raises(ValueError, match="proportion"):
        stats.sample_size_to_clear(0.8, -0.1)


# ---------------------------------------------------------------------------
# Exact bootstrap distribution of a median, from a band of counts
# ---------------------------------------------------------------------------
#
# Tolerances. A classical percentile bound from B resamples is the empirical
# p-quantile of B draws from the exact distribution G, so G at that bound is
# within p +- sqrt(p (1 - p) / B) (one Monte-Carlo standard deviation, in
# probability units); 5 of them is used below (+ 1/B for np.quantile's
# interpolation between two draws). On the value scale, for a smooth,
# near-normal bootstrap distribution with standard deviation s, the bound's
# standard deviation is sqrt(p (1 - p) / B) / phi(1.96) * s = 0.0153 W at
# B = 2,000 and 0.0097 W at B = 5,000 (W = 3.92 s, the 95% interval's width), so
# two independent estimates differ by 0.1 W only beyond 4.6 (B = 2,000) or 7.3
# (B = 5,000) standard deviations of their difference.


def _enumerated_median_cdf(x: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Every one of the n^n equally likely resamples: the median's exact distribution."""
    arr = np.asarray(x, dtype=float)
    n = arr.size
    grids = np.meshgrid(*[np.arange(n)] * n, indexing="ij")
    idx = np.stack([g.ravel() for g in grids], axis=1)
    support, counts = np.unique(np.median(arr[idx], axis=1), return_counts=True)
    return support, np.cumsum(counts) / idx.shape[0]


def _cdf_at(values: np.ndarray, cdf: np.ndarray, t: np.ndarray, strict: bool = False) -> np.ndarray:
    """P(M <= t) (or P(M < t) when strict) for a distribution given as support + CDF."""
    side = "left" if strict else "right"
    return np.concatenate(([0.0], cdf))[np.searchsorted(values, t, side=side)]


@pytest.mark.parametrize(
    "x",
    [
        [4.2],
        [1.0, 3.0],
        [1.0, 2.0, 2.0],
        [1.0, 2.0, 3.0, 4.0],
        [5.0, 1.0, 1.0, 3.0, 3.0],
        [1.0, 1.0, 2.0, 3.0, 5.0, 8.0],
        [2.0, 2.0, 2.0, 2.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 4.0],
        [-3.0, 7.5, 0.25, 7.5, -1.0, 2.0, 9.0],
    ],
)
def test_exact_median_distribution_equals_full_enumeration(x: list[float]) -> None:
    dist = stats.median_bootstrap_distribution(*stats.median_band_from_values(x))
    support, cdf = _enumerated_median_cdf(x)
    points = np.union1d(support, dist.values)
    got = _cdf_at(dist.values, dist.cdf, points)
    assert got == pytest.approx(_cdf_at(support, cdf, points), abs=1e-12)
    assert dist.median == np.median(x)
    assert dist.n == len(x) and dist.lost_mass == 0.0


@pytest.mark.parametrize(
    ("size", "ties", "data_seed"),
    [
        (7, False, 0),
        (8, False, 1),
        (41, True, 2),
        (300, False, 3),
        (1000, True, 4),
        (1001, False, 5),
    ],
)
def test_exact_median_distribution_matches_resampling(
    size: int, ties: bool, data_seed: int
) -> None:
    # DKW: sup |ECDF - G| > 0.016 with probability < 2 exp(-2 B 0.016^2) = 7e-5 for B = 20,000.
    x = np.random.default_rng(data_seed).lognormal(3.0, 0.6, size=size)
    if ties:
        x = np.round(x)
    dist = stats.median_bootstrap_distribution(*stats.median_band_from_values(x))
    meds = np.sort(stats._bootstrap_medians(np.sort(x), 20_000, np.random.default_rng(7)))
    points = np.union1d(meds, dist.values)
    ecdf = np.searchsorted(meds, points, side="right") / meds.size
    assert np.max(np.abs(ecdf - _cdf_at(dist.values, dist.cdf, points))) < 0.016


@pytest.mark.parametrize(("size", "ties"), [(10_001, False), (10_000, False), (20_000, True)])
def test_band_loses_nothing(size: int, ties: bool) -> None:
    x = np.random.default_rng(size).gamma(2.0, 10.0, size=size)
    if ties:
        x = np.round(x, 1)
    band = stats.median_band_from_values(x)
    whole = stats.median_band_from_values(x, sds=1e9)  # every value
    assert whole.n_below == 0 and whole.counts.sum() == size
    assert band.values.size <= 7 * math.sqrt(size) + 8
    assert band.counts.sum() < size / 5  # a band, not the sample
    narrow = stats.median_bootstrap_distribution(*band)
    full = stats.median_bootstrap_distribution(*whole)
    assert narrow.lost_mass < stats.MEDIAN_BAND_MAX_LOST and full.lost_mass < 1e-15
    assert narrow.median == full.median == np.median(x)
    # Same CDF wherever the band has support, up to the mass it leaves out.
    at = _cdf_at(full.values, full.cdf, narrow.values)
    assert np.max(np.abs(narrow.cdf - at)) <= stats.MEDIAN_BAND_MAX_LOST
    assert narrow.cdf[0] < 1e-9 and narrow.cdf[-1] > 1 - 1e-9


def test_band_ranks_leave_out_less_than_1e9_for_any_size() -> None:
    sizes = list(range(1, 3000)) + [int(v) for v in np.logspace(3.5, 9, 40)]
    for n in sizes:
        lo, hi = stats.median_band_ranks(n)
        assert 0 <= lo <= (n - 1) // 2 and n // 2 <= hi <= n - 1
        assert hi - lo + 1 <= 7 * math.sqrt(n) + 8
        # Worst case: every value below the lower cut's rank is below the band.
        lost = stats.median_band_lost_mass(lo, hi - lo + 1, n)
        assert lost < stats.MEDIAN_BAND_MAX_LOST, n
    assert stats.median_band_ranks(1) == (0, 0)
    assert stats.median_band_lost_mass(0, 1, 1) == 0.0
    assert stats.median_band_lost_mass(10, 5, 21) < 1.0  # ranks 11-15: the middle is 11
    assert stats.median_band_lost_mass(11, 5, 21) == 1.0  # ranks 12-16 miss it
    with pytest.raises(ValueError, match="n_total"):
        stats.median_band_ranks(0)


@pytest.mark.parametrize(
    ("size", "confidence", "ties", "data_seed"),
    [
        (7, 0.95, False, 0),
        (8, 0.95, False, 1),
        (41, 0.95, True, 2),
        (300, 0.95, False, 3),
        (1000, 0.90, False, 4),
        (1001, 0.95, True, 5),
        (250, 0.99, False, 6),
        (2000, 0.95, False, 7),
    ],
)
def test_exact_median_interval_agrees_with_classical_and_scipy(
    size: int, confidence: float, ties: bool, data_seed: int
) -> None:
    x = np.random.default_rng(data_seed).lognormal(3.0, 0.6, size=size)
    if ties:
        x = np.round(x)
    low, high = stats.exact_median_interval(x, confidence)
    dist = stats.median_bootstrap_distribution(*stats.median_band_from_values(x))
    alpha = (1 - confidence) / 2
    b = 5000
    classical = stats.bootstrap_median_interval(x, confidence, n_resamples=b, seed=11)
    reference = _scipy_median_interval(x, confidence, seed=99)
    for ref in (classical, reference):
        for p, bound in zip((alpha, 1 - alpha), ref, strict=True):
            eps = 5 * math.sqrt(p * (1 - p) / b) + 1 / b
            # ref is an empirical p-quantile of draws from the exact distribution.
            assert _cdf_at(dist.values, dist.cdf, np.array([bound]))[0] >= p - eps
            assert _cdf_at(dist.values, dist.cdf, np.array([bound]), strict=True)[0] <= p + eps
        if size >= 300 and not ties:
            width = ref[1] - ref[0]
            assert abs(low - ref[0]) < 0.1 * width and abs(high - ref[1]) < 0.1 * width
    # The exact bounds are the exact quantiles of the distribution.
    assert _cdf_at(dist.values, dist.cdf, np.array([low]))[0] >= alpha - 1e-12
    assert _cdf_at(dist.values, dist.cdf, np.array([low]), strict=True)[0] < alpha
    assert low <= np.median(x) <= high


def _exact_ratio_cdf(num: np.ndarray, den: np.ndarray) -> Any:
    """CDF of median*(num) / median*(den) for two independent exact distributions (den > 0)."""
    a = stats.median_bootstrap_distribution(*stats.median_band_from_values(num))
    b = stats.median_bootstrap_distribution(*stats.median_band_from_values(den))
    pb = np.diff(np.concatenate(([0.0], b.cdf)))

    def cdf(r: float, strict: bool = False) -> float:
        return float(np.sum(pb * _cdf_at(a.values, a.cdf, r * b.values, strict)))

    return cdf


@pytest.mark.parametrize(
    ("n_agent", "n_control", "ties", "data_seed"),
    [(200, 150, False, 0), (61, 80, False, 1), (1001, 800, True, 2), (999, 1000, False, 3)],
)
def test_exact_ratio_interval_agrees_with_classical_and_scipy(
    n_agent: int, n_control: int, ties: bool, data_seed: int
) -> None:
    rng = np.random.default_rng(data_seed)
    agent = rng.lognormal(3.0, 0.6, size=n_agent)
    control = rng.lognormal(3.4, 0.5, size=n_control)
    if ties:
        agent, control = np.round(agent), np.round(control)
    b = 5000
    ratio, low, high = stats.exact_median_ratio_interval(agent, control, n_resamples=b, seed=4)
    assert ratio == np.median(agent) / np.median(control)
    classical = stats.bootstrap_median_ratio_interval(agent, control, n_resamples=b, seed=4)[1:]
    res = st.bootstrap(
        (agent, control),
        _median_ratio,
        method="percentile",
        paired=False,
        n_resamples=b,
        rng=np.random.default_rng(40 + data_seed),
        vectorized=True,
    )
    scipy_ref = (res.confidence_interval.low, res.confidence_interval.high)
    exact = _exact_ratio_cdf(agent, control)
    for bounds in ((low, high), classical, scipy_ref):
        # Every method's bounds are empirical quantiles of the same exact ratio distribution.
        for p, bound in zip((0.025, 0.975), bounds, strict=True):
            eps = 5 * math.sqrt(p * (1 - p) / b) + 1 / b
            assert exact(bound) >= p - eps and exact(bound, strict=True) <= p + eps
    for ref in (classical, scipy_ref):
        width = ref[1] - ref[0]
        assert abs(low - ref[0]) < 0.1 * width and abs(high - ref[1]) < 0.1 * width
    assert low <= ratio <= high


def test_exact_ratio_interval_seeded() -> None:
    rng = np.random.default_rng(12)
    a, b = rng.normal(20, 4, 300), rng.normal(30, 5, 200)
    first = stats.exact_median_ratio_interval(a, b, seed=3)
    assert first == stats.exact_median_ratio_interval(list(a), b[::-1], seed=3)
    assert first != stats.exact_median_ratio_interval(a, b, seed=4)
    assert first[0] == np.median(a) / np.median(b)


def test_exact_intervals_edges() -> None:
    assert all(math.isnan(v) for v in stats.exact_median_interval([]))
    assert all(math.isnan(v) for v in stats.exact_median_interval([math.nan, math.nan]))
    assert stats.exact_median_interval([4.2]) == (4.2, 4.2)
    assert stats.exact_median_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert stats.exact_median_interval([1.0, 3.0]) == (1.0, 3.0)  # medians 1, 2, 3 w.p. 1/4 1/2 1/4
    assert stats.exact_median_interval([1.0, math.nan, 2.0, 3.0, 10.0]) == (
        stats.exact_median_interval([1.0, 2.0, 3.0, 10.0])
    )
    # Five values 2..10: P(median* <= 2) = P(Bin(5, 0.2) >= 3) = 0.058 >= 0.025 and
    # P(median* <= 8) = P(Bin(5, 0.8) >= 3) = 0.942 < 0.975: bounds 2 and 10.
    assert stats.exact_median_interval([2, 4, 6, 8, 10]) == (2.0, 10.0)
    with pytest.raises(ValueError, match="confidence"):
        stats.exact_median_interval([1.0, 2.0], confidence=1.0)

    assert all(math.isnan(v) for v in stats.exact_median_ratio_interval([], [1.0, 2.0]))
    assert all(math.isnan(v) for v in stats.exact_median_ratio_interval([1.0], []))
    assert all(math.isnan(v) for v in stats.exact_median_ratio_interval([1.0], [0.0, 0.0, 5]))
    assert stats.exact_median_ratio_interval([3.0], [4.0]) == (0.75, 0.75, 0.75)
    assert stats.exact_median_ratio_interval([3.0] * 4, [4.0] * 7) == (0.75, 0.75, 0.75)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.exact_median_ratio_interval([1.0], [2.0], n_resamples=0)


def test_median_bootstrap_distribution_rejects_bad_bands() -> None:
    with pytest.raises(ValueError, match="increasing"):
        stats.median_bootstrap_distribution([2.0, 1.0], [1, 1], 0, 2)
    with pytest.raises(ValueError, match=">= 1"):
        stats.median_bootstrap_distribution([1.0, 2.0], [1, 0], 0, 2)
    with pytest.raises(ValueError, match="n_below"):
        stats.median_bootstrap_distribution([1.0, 2.0], [3, 3], 5, 10)
    with pytest.raises(ValueError, match="middle rank"):
        stats.median_bootstrap_distribution([1.0, 2.0], [2, 2], 0, 11)
    with pytest.raises(ValueError, match="same length"):
        stats.median_bootstrap_distribution([1.0, 2.0], [2], 0, 2)

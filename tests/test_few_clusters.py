"""Few clusters: the restricted wild cluster bootstrap-t and leave-one-cluster-out bounds.

The wild bootstrap p-value is checked against a plain loop written here (one
replication at a time, the textbook WCR recipe), the inversion against the
p-values at its bounds, the leave-one-out bounds against statsmodels' CR1 on
the unit-level data with each cluster dropped, and the one-sided miss with 12
clusters by a small seeded simulation of benchmarks/bench_few_clusters.py's
scenarios (binomial tolerance; the full table is in docs/decisions.md).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as st

from pilot_lib.analysis import clustered

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_few_clusters", ROOT / "benchmarks" / "bench_few_clusters.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _weeks(seed: int, g: int = 12, p: float = 0.85, sd: float = 0.03, volume: int = 300):
    rng = np.random.default_rng(seed)
    n = rng.poisson(volume, g).astype(float)
    y = rng.binomial(n.astype(int), np.clip(p + rng.normal(0, sd, g), 0, 1)).astype(float)
    return y, n


def _loop_pvalues(y, n, null, weights):
    """WCR one replication at a time: y* = null n + w e0; t* the CR1 t of y* against null."""
    g = len(y)

    def t_stat(yy):
        r = yy.sum() / n.sum()
        e = yy - r * n
        se = math.sqrt(g / (g - 1) * sum(x * x for x in e)) / n.sum()
        return (r - null) / se

    t_obs = t_stat(y)
    e0 = y - null * n
    t_star = [t_stat(null * n + w * e0) for w in weights]
    return (
        sum(t >= t_obs for t in t_star) / len(t_star),
        sum(t <= t_obs for t in t_star) / len(t_star),
    )


def test_webb_weights_are_the_six_points_equally_often() -> None:
    w = clustered.webb_weights(6000, 12, seed=3)
    values, counts = np.unique(np.round(w, 12), return_counts=True)
    expected = np.round(
        [-math.sqrt(1.5), -1, -math.sqrt(0.5), math.sqrt(0.5), 1, math.sqrt(1.5)], 12
    )
    assert np.allclose(values, expected)
    # each 1/6 of 72,000 draws: within 4 binomial standard deviations
    assert np.all(np.abs(counts - 12000) < 4 * math.sqrt(72000 * (1 / 6) * (5 / 6)))
    assert abs(w.mean()) < 0.02 and abs((w**2).mean() - 1) < 0.02
    assert np.array_equal(w, clustered.webb_weights(6000, 12, seed=3))  # seeded


@pytest.mark.parametrize("null", [0.80, 0.84, 0.88])
def test_wild_pvalues_match_a_plain_loop(null: float) -> None:
    y, n = _weeks(1)
    w = clustered.webb_weights(499, 12, seed=9)
    assert clustered.wild_bootstrap_pvalues(y, n, null, w) == pytest.approx(
        _loop_pvalues(y, n, null, w), abs=1e-12
    )


def test_wild_interval_inverts_the_test() -> None:
    y, n = _weeks(2)
    ci = clustered.wild_bootstrap_interval(y, n, 0.95, (0.0, 1.0), reps=1999, seed=5)
    w = clustered.webb_weights(1999, 12, seed=5)
    r = y.sum() / n.sum()
    assert ci.low < r < ci.high
    se = clustered.clustered_ratio(y, n)[1]
    eps = 1e-3 * se
    # just inside each bound the one-sided test does not reject; just outside it does
    assert clustered.wild_bootstrap_pvalues(y, n, ci.low + eps, w)[0] >= 0.025
    assert clustered.wild_bootstrap_pvalues(y, n, ci.low - 50 * eps, w)[0] < 0.025
    assert clustered.wild_bootstrap_pvalues(y, n, ci.high - eps, w)[1] >= 0.025
    assert clustered.wild_bootstrap_pvalues(y, n, ci.high + 50 * eps, w)[1] < 0.025
    # deterministic
    assert ci == clustered.wild_bootstrap_interval(y, n, 0.95, (0.0, 1.0), reps=1999, seed=5)


def test_wild_interval_is_close_to_cr1_with_homogeneous_clusters() -> None:
    """With 25 alike clusters the bootstrap-t and t(G - 1) agree to a few percent of the width."""
    y, n = _weeks(4, g=25, sd=0.01)
    r, se, g = clustered.clustered_ratio(y, n)
    t = st.t.ppf(0.975, g - 1)
    ci = clustered.wild_bootstrap_interval(y, n, 0.95, (0.0, 1.0), reps=1999)
    assert ci.low == pytest.approx(r - t * se, abs=0.1 * t * se)
    assert ci.high == pytest.approx(r + t * se, abs=0.1 * t * se)


def test_wild_interval_needs_two_clusters_and_variation() -> None:
    nan = clustered.wild_bootstrap_interval([5.0], [10.0])
    assert math.isnan(nan.low) and math.isnan(nan.high)
    alike = clustered.wild_bootstrap_interval([5.0, 5.0, 5.0], [10.0, 10.0, 10.0])
    assert math.isnan(alike.low) and alike.estimate == 0.5


def test_leave_one_out_bounds_match_statsmodels() -> None:
    y, n = _weeks(6, g=8, volume=40)
    units, groups = [], []
    for g, (yy, nn) in enumerate(zip(y, n, strict=True)):
        units += [1.0] * int(yy) + [0.0] * int(nn - yy)
        groups += [g] * int(nn)
    units, groups = np.array(units), np.array(groups)
    lows, highs = [], []
    for g in range(8):
        keep = groups != g
        fit = sm.OLS(units[keep], np.ones(keep.sum())).fit(
            cov_type="cluster", cov_kwds={"groups": pd.factorize(groups[keep])[0]}
        )
        t = st.t.ppf(0.975, 6)
        lows.append(fit.params[0] - t * fit.bse[0])
        highs.append(fit.params[0] + t * fit.bse[0])
    low, high = clustered.leave_one_out_bounds(y, n)
    assert low == pytest.approx(min(lows), rel=1e-9)
    assert high == pytest.approx(max(highs), rel=1e-9)
    assert clustered.leave_one_out_bounds([1.0, 2.0], [3.0, 4.0]) == (
        pytest.approx(math.nan, nan_ok=True),
        pytest.approx(math.nan, nan_ok=True),
    )


def test_few_cluster_coverage_with_twelve_weeks() -> None:
    """The seeded small version of benchmarks/bench_few_clusters.py.

    400 replications a scenario, 399 bootstrap draws: the wild bootstrap's
    one-sided miss stays within binomial noise of the bench's 20,000-replication
    figures (docs/decisions.md), and no scenario's miss is far above nominal.
    """
    bench = _bench()
    reps = 400
    tolerance = 3 * math.sqrt(0.04 * 0.96 / reps)  # 3 binomial SDs at 4%
    for i, scenario in enumerate(bench.scenarios()):
        m = bench.miss_rates(scenario, 12, reps, 399, seed=77 + i)
        assert m["replications"] >= reps * 0.99, scenario.name
        assert m["wild"] <= 0.04 + tolerance, (scenario.name, m)
        # the gate's side is the one checked: a bound no tighter than CR1's would miss as often
        assert m["wild"] <= m["cr1"] + tolerance, (scenario.name, m)

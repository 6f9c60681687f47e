"""Anytime-valid confidence sequences: the published formula, and weekly looks without a false GO."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis.gate import judge_kpi
from pilot_lib.analysis.sequential import anytime_valid_bounds, cs_half_width, cs_rho, widening
from pilot_lib.config import KpiThreshold


def published(sigma: float, n: float, rho: float, alpha: float) -> float:
    """Waudby-Smith et al.'s asymptotic CS half-width, written out as GrowthBook documents it."""
    return sigma * math.sqrt(
        (2 * (n * rho**2 + 1)) / (n**2 * rho**2) * math.log(math.sqrt(n * rho**2 + 1) / alpha)
    )


def test_half_width_hand_worked() -> None:
    # n = 100, rho = 0.1 (n rho^2 = 1), alpha = 0.05, sigma = 2:
    # 2 (1 + 1) / (100^2 x 0.01) = 0.04; log(sqrt(2) / 0.05) = log(28.2843) = 3.342308;
    # half-width = 2 sqrt(0.04 x 3.342308) = 2 x 0.365640 = 0.731280.
    assert cs_half_width(2.0, 100, 0.1, 0.05) == pytest.approx(0.731280, abs=2e-6)


@pytest.mark.parametrize("alpha", [0.05, 0.10, 0.01])
@pytest.mark.parametrize("n", [1, 10, 977, 30_000, 1_000_000])
@pytest.mark.parametrize("rho", [0.003, 0.05, 0.4])
def test_half_width_is_the_published_formula(alpha: float, n: int, rho: float) -> None:
    assert cs_half_width(1.7, n, rho, alpha) == pytest.approx(
        published(1.7, n, rho, alpha), rel=1e-12
    )


@pytest.mark.parametrize("planned", [500, 30_000])
def test_rho_makes_the_sequence_tightest_near_the_planned_sample(planned: int) -> None:
    rho = cs_rho(planned)
    best = optimize.minimize_scalar(
        lambda r: published(1.0, planned, r, 0.05), bounds=(1e-6, 1.0), method="bounded"
    )
    # The closed-form rho is the approximate minimiser: within 1% of the best width.
    assert published(1.0, planned, rho, 0.05) <= best.fun * 1.01


def test_widening_hand_worked() -> None:
    # At the planned sample (fraction 1), n rho^2 = c = 2 log 20 + log(1 + 2 log 20)
    # = 5.991465 + 1.944690 = 7.936155; ratio = sqrt(2 (c + 1) / c x log(sqrt(c + 1) / 0.05))
    # / 1.959964 = sqrt(2.252011 x 4.090785) / 1.959964 = 3.035209 / 1.959964 = 1.548604.
    assert widening(1.0) == pytest.approx(1.548604, abs=2e-6)
    # A twelfth of the way: n rho^2 = c / 12 = 0.661346; sqrt(5.024135 x 3.249546) / 1.959964
    # = 4.040564 / 1.959964 = 2.061550 times the fixed interval.
    assert widening(1 / 12) == pytest.approx(2.061550, abs=2e-6)
    # The ratio is the same whatever the planned sample.
    for planned in (1_000, 123_456):
        rho = cs_rho(planned)
        n = planned / 3
        ratio = cs_half_width(1.0, n, rho) * math.sqrt(n) / 1.959963984540054
        assert ratio == pytest.approx(widening(1 / 3), rel=1e-12)


def test_bounds_widen_each_side_about_the_estimate() -> None:
    low, high = anytime_valid_bounds(0.85, 0.84, 0.855, 0.5)
    k = widening(0.5)
    assert (0.85 - low, high - 0.85) == pytest.approx((0.01 * k, 0.005 * k))
    assert anytime_valid_bounds(2.0, -math.inf, math.inf, 1.0) == (-math.inf, math.inf)


@pytest.mark.parametrize("bad", [0.0, -0.2])
def test_bad_arguments_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        widening(bad)
    with pytest.raises(ValueError, match="planned_n"):
        cs_rho(bad)
    with pytest.raises(ValueError, match="alpha"):
        cs_half_width(1.0, 10, 0.1, alpha=1.0)


def test_confidence_sequence_covers_at_every_sample_size() -> None:
    """Seeded: 2,000 Bernoulli(0.3) series of 3,000 decisions, the CS tuned for 3,000 and
    checked after every decision from the 30th: it excludes the truth at some point in at
    most 5% of series (the fixed 95% interval, checked as often, does far more often)."""
    rng = np.random.default_rng(5)
    reps, horizon, p = 2_000, 3_000, 0.3
    hits = np.cumsum(rng.random((reps, horizon)) < p, axis=1, dtype=np.int32)
    n = np.arange(1, horizon + 1)
    start = 30
    est = hits[:, start - 1 :] / n[start - 1 :]
    sigma = math.sqrt(p * (1 - p))
    rho = cs_rho(horizon)
    half = np.array([cs_half_width(sigma, k, rho) for k in n[start - 1 :]])
    missed = (np.abs(est - p) > half).any(axis=1).mean()
    assert missed <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / reps)
    fixed = (np.abs(est - p) > 1.959964 * sigma / np.sqrt(n[start - 1 :])).any(axis=1).mean()
    assert fixed > 0.3


# --------------------------------------------------------------------------------------
# The test: weekly looks at a KPI whose true value sits exactly on the threshold
# --------------------------------------------------------------------------------------

WEEKS = 12
PER_WEEK = 500
REPLICATES = 2_000
THRESHOLD = KpiThreshold(
    kpi="task_completion_rate", comparator=">", value=0.80, unit="proportion", min_samples=100
)


def weekly_looks(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative successes and Wilson bounds (statsmodels) after each week, per series."""
    rng = np.random.default_rng(seed)
    hits = rng.binomial(PER_WEEK, THRESHOLD.value, size=(REPLICATES, WEEKS)).cumsum(axis=1)
    n = PER_WEEK * np.arange(1, WEEKS + 1)
    low, high = proportion_confint(hits, n, alpha=0.05, method="wilson")
    return hits, n, low, high


def passes(hits: np.ndarray, n: np.ndarray, low: np.ndarray, high: np.ndarray, interim: bool):
    """Whether the gate's judge_kpi calls each look a PASS (interim: with the CS)."""
    out = np.zeros(hits.shape, dtype=bool)
    for i in range(hits.shape[0]):
        for k in range(hits.shape[1]):
            record = {
                "estimate": hits[i, k] / n[k],
                "low": low[i, k],
                "high": high[i, k],
                "n": int(n[k]),
            }
            fraction = (k + 1) / WEEKS if interim else None
            out[i, k] = judge_kpi(THRESHOLD, record, interim_fraction=fraction).status == "PASS"
    return out


def test_weekly_looks_false_go_fixed_inflates_interim_does_not() -> None:
    """True completion exactly 80% against "> 80%": any PASS is a false GO. Nominal: 2.5%
    (one side of a 95% interval). Twelve weekly looks at the fixed interval: about 9-10%.
    Twelve weekly looks in interim mode: at or below 2.5%. And the interim looks of weeks
    1-11 followed by the final run's fixed interval at week 12: about the nominal rate."""
    hits, n, low, high = weekly_looks(20260410)
    fixed = passes(hits, n, low, high, interim=False)
    interim = passes(hits, n, low, high, interim=True)
    tol = 4 * math.sqrt(0.025 * 0.975 / REPLICATES)  # 1.4 points
    fixed_rate = fixed.any(axis=1).mean()
    interim_rate = interim.any(axis=1).mean()
    # One look alone is nominal: the final week's fixed interval.
    assert abs(fixed[:, -1].mean() - 0.025) <= tol
    assert fixed_rate > 0.025 + tol and fixed_rate > 0.06, fixed_rate
    assert interim_rate <= 0.025, interim_rate
    combined = (interim[:, :-1].any(axis=1) | fixed[:, -1]).mean()
    assert combined <= 0.025 + tol, combined

"""The gate's operating characteristics (issue 22) against a direct simulation of the gate:
synthetic phase-2 records judged by ``gate.judge_kpi`` itself, with other seeds, and the
NO-GO rule of ``evaluate_gate``; binomial tolerance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pilot_lib.analysis.gate import _stops, judge_kpi
from pilot_lib.analysis.operating import operating_characteristics
from pilot_lib.config import KpiThreshold


def _direct(th: KpiThreshold, truth: float, se: float, g: int, rule: str, reps: int, seed: int):
    """(PASS share, NO-GO share) of judge_kpi on records drawn the way a pilot of G clusters
    with this SE would produce them: a CR1 t-interval around a noisy estimate."""
    rng = np.random.default_rng(seed)
    q = st.t.ppf(0.975, g - 1)
    passes = stops = 0
    for _ in range(reps):
        est = truth + se * rng.standard_normal()
        se_hat = se * math.sqrt(rng.chisquare(g - 1) / (g - 1))
        record = {
            "estimate": est,
            "low": est - q * se_hat,
            "high": est + q * se_hat,
            "n": 10_000,
            "se": se_hat,
        }
        v = judge_kpi(th, record)
        passes += v.status == "PASS"
        stops += _stops(v, rule)
    return passes / reps, stops / reps


@pytest.mark.parametrize(
    ("comparator", "value", "se", "g", "rule"),
    [
        (">", 0.80, 0.013, 12, "EXTEND"),
        ("<", 0.20, 0.0136, 12, "EXTEND"),
        ("<", 0.20, 0.0136, 12, "NO-GO"),
    ],
)
def test_operating_characteristics_match_a_direct_simulation_of_the_gate(
    comparator: str, value: float, se: float, g: int, rule: str
) -> None:
    th = KpiThreshold(
        kpi="task_completion_rate" if comparator == ">" else "escalation_rate",
        comparator=comparator,
        value=value,
        unit="proportion",
        min_samples=100,
    )
    oc = operating_characteristics(th.higher_is_better, value, se, g, missed_not_shown=rule)
    sign = 1 if th.higher_is_better else -1
    reps = 1500
    bad, _ = _direct(th, value - sign * se, se, g, rule, reps, seed=5)
    _, good_stop = _direct(th, value + sign * se, se, g, rule, reps, seed=6)
    at, _ = _direct(th, value, se, g, rule, reps, seed=7)

    def close(sim: float, got: float) -> None:
        p = max(got, 1 / reps)
        assert abs(sim - got) <= 3 * math.sqrt(p * (1 - p) / reps) + 1e-3, (sim, got)

    close(bad, oc["wrong_go"])
    close(good_stop, oc["wrong_no_go"])
    close(at, oc["pass_at_threshold"])
    # the worst wrong GO is about the interval's one-sided 2.5%
    assert oc["pass_at_threshold"] == pytest.approx(0.025, abs=0.004)
    if (
        rule == "NO-GO"
    ):  # the point-estimate rule stops a good pilot 1 SE clear about 16% of the time
        assert oc["wrong_no_go"] == pytest.approx(st.norm.cdf(-1), abs=0.01)
    else:  # the default needs the whole interval to miss
        assert oc["wrong_no_go"] < 0.01


def test_no_standard_error_no_operating_characteristics() -> None:
    assert operating_characteristics(True, 0.8, math.nan, 12) is None
    assert operating_characteristics(True, 0.8, 0.01, 1) is None

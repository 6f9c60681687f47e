"""The gate's operating characteristics: how often its KPI verdicts would be wrong.

For one KPI at the pilot's sample size and clustering: the chance of a **wrong
GO** (the KPI PASSes although the truth sits ``distance_se`` standard errors on
the wrong side of its threshold) and of a **wrong NO-GO** (the KPI alone stops
the pilot although the truth sits ``distance_se`` standard errors on the right
side), by a seeded simulation of the gate's rule.

The model of the estimate: ``estimate = truth + se Z`` and ``se_hat = se
sqrt(V)``, ``Z`` standard normal and ``V`` a chi-square on ``G - 1`` degrees of
freedom over ``G - 1`` (the CR1 variance of ``G`` clusters), so that ``(estimate -
truth) / se_hat`` is Student t on ``G - 1``, the distribution the CR1 interval
assumes. The gate's rule on it: PASS when ``estimate -/+ t(G - 1) se_hat`` clears
the threshold; a NO-GO from the KPI when the whole interval misses it, or, with
``statistics.missed_not_shown: NO-GO``, when the estimate does. ``se`` is the
pilot's own clustered standard error: the table says how this pilot, with its
weeks and its spread, would judge a process a given distance from the line.
The few-cluster bootstrap and the fragility checks are not simulated (the
bootstrap is the gate's guard where this model is optimistic: skewed weeks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = [
    "OC_DISTANCE_SE",
    "OC_REPS",
    "OC_SEED",
    "operating_characteristics",
    "stated_distance",
]

#: The default distance of the truth from the threshold, in the pilot's standard errors
#: (the gate states it in the KPI's unit instead: :func:`stated_distance`).
OC_DISTANCE_SE = 1.0


def stated_distance(unit: str, threshold: float) -> float:
    """The distance from the threshold the gate's table tests, in the KPI's unit.

    2 percentage points for a proportion (a rate or a share); 5% of the threshold
    otherwise (a cost per decision: $0.125 at $2.50). A distance a business reads
    as "clearly on one side", the same for every pilot, so the table compares
    pilots: a larger or steadier pilot has lower error rates at the same distance.
    """
    return 0.02 if unit == "proportion" else 0.05 * abs(threshold)


#: Simulated pilots per KPI (Monte Carlo standard error at most 0.35 points).
OC_REPS = 20_000
#: The seed of the simulation.
OC_SEED = 20260701


def operating_characteristics(
    higher_is_better: bool,
    threshold: float,
    se: float,
    clusters: int,
    *,
    distance_se: float = OC_DISTANCE_SE,
    missed_not_shown: str = "EXTEND",
    confidence: float = 0.95,
    reps: int = OC_REPS,
    seed: int = OC_SEED,
) -> dict[str, Any] | None:
    """Wrong GO and wrong NO-GO rates of one KPI's verdict; None without a usable ``se``.

    Returns ``wrong_go`` (PASS with the truth ``distance_se`` SEs on the wrong side),
    ``wrong_no_go`` (the KPI stops the pilot with the truth as far on the right side),
    ``right_go`` (the KPI passes with the truth there: the power to see a good process),
    ``pass_at_threshold`` (PASS with the truth on the threshold: the largest a wrong
    GO can be, about ``(1 - confidence) / 2``), ``distance`` (in the KPI's unit),
    ``distance_se``, ``clusters``, ``reps`` and ``seed``.
    """
    if not (se is not None and math.isfinite(se) and se > 0) or clusters < 2:
        return None
    df = clusters - 1
    q = float(_st.t.ppf(0.5 + confidence / 2, df))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((3, reps))
    v = rng.chisquare(df, size=(3, reps)) / df
    sign = 1.0 if higher_is_better else -1.0
    d = distance_se * se

    def judge(truth: float, k: int) -> tuple[float, float]:
        est = truth + se * z[k]
        half = q * se * np.sqrt(v[k])
        near, far = (est - half, est + half) if higher_is_better else (est + half, est - half)
        passes = sign * (near - threshold) > 0
        shown_miss = sign * (far - threshold) < 0
        misses = sign * (est - threshold) <= 0
        stops = shown_miss | (misses if missed_not_shown == "NO-GO" else False)
        return float(passes.mean()), float(stops.mean())

    wrong_go, _ = judge(threshold - sign * d, 0)
    right_go, wrong_no_go = judge(threshold + sign * d, 1)
    at_threshold, _ = judge(threshold, 2)
    return {
        "wrong_go": wrong_go,
        "wrong_no_go": wrong_no_go,
        "right_go": right_go,
        "pass_at_threshold": at_threshold,
        "distance": d,
        "distance_se": distance_se,
        "clusters": int(clusters),
        "missed_not_shown": missed_not_shown,
        "reps": reps,
        "seed": seed,
    }

"""Sample-ratio mismatch: did the cohorts receive the split the pilot planned?

Experiment platforms (GrowthBook, Eppo, Statsig) check this before any metric:
if the agent cohort got 60% of the cases where the plan said 50%, something
other than chance decided which case went where (a routing rule, a filter, a
logging gap), and the agent-against-control comparison is no longer like for
like. The check works on two counts (cases assigned to each cohort), nothing
else.

- **Fixed horizon** (the final gate): Pearson's chi-square goodness of fit of
  the two counts against the planned shares, one degree of freedom, at
  ``alpha`` = 0.001 (the platforms' default: the check runs on every
  experiment, so false alarms must be rare).
- **Interim looks** (sequential): an anytime-valid p-value from the
  beta-binomial mixture likelihood ratio (Robbins 1970; the binomial case of
  Lindon & Malek's sequential SRM test): with the prior Beta(k p0, k (1 - p0))
  around the planned share ``p0`` (``k`` = 100), ``p = min(1, 1 / BF)`` where
  ``BF`` is the mixture's likelihood over the null's. By Ville's inequality it
  exceeds ``alpha`` only with probability ``alpha`` however often one looks.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy import special as _sp
from scipy import stats as _st

__all__ = ["SRM_ALPHA", "SampleRatioCheck", "sample_ratio_check", "sequential_srm_pvalue"]

#: The significance level of the check (GrowthBook, Eppo and Statsig use 0.001).
SRM_ALPHA = 0.001
#: Concentration of the sequential test's beta prior around the planned share.
_PRIOR_CONCENTRATION = 100.0


class SampleRatioCheck(NamedTuple):
    """The check's outcome: counts, planned and observed shares, p-value and verdict.

    ``mismatch`` is True when ``p_value < alpha``. ``method`` names the test.
    """

    agent: int
    control: int
    planned_agent_share: float
    observed_agent_share: float
    statistic: float
    p_value: float
    alpha: float
    mismatch: bool
    method: str


def sequential_srm_pvalue(agent: int, control: int, planned_agent_share: float) -> float:
    """Anytime-valid p-value of "the split is the planned one" (beta-binomial mixture).

    ``1 / BF`` capped at 1, ``BF = B(x + a, m + b) / B(a, b) / (p0^x (1 - p0)^m)`` with
    ``x``, ``m`` the agent and control counts and ``a = k p0``, ``b = k (1 - p0)``.
    """
    p0 = planned_agent_share
    a, b = _PRIOR_CONCENTRATION * p0, _PRIOR_CONCENTRATION * (1 - p0)
    log_bf = (
        _sp.betaln(agent + a, control + b)
        - _sp.betaln(a, b)
        - (agent * math.log(p0) + control * math.log1p(-p0))
    )
    return float(min(1.0, math.exp(-log_bf)))


def sample_ratio_check(
    agent: int,
    control: int,
    planned_agent_share: float,
    alpha: float = SRM_ALPHA,
    sequential: bool = False,
) -> SampleRatioCheck:
    """Chi-square (or, ``sequential``, anytime-valid) test of the cohort split.

    ``planned_agent_share``: the agent cohort's planned share of agent + control
    cases, strictly between 0 and 1. With no case at all the p-value is 1.
    """
    if not 0 < planned_agent_share < 1:
        raise ValueError(
            f"the planned agent share must be between 0 and 1, got {planned_agent_share}"
        )
    n = agent + control
    observed = agent / n if n else math.nan
    if n == 0:
        return SampleRatioCheck(
            agent, control, planned_agent_share, observed, 0.0, 1.0, alpha, False, "no cases"
        )
    if sequential:
        p = sequential_srm_pvalue(agent, control, planned_agent_share)
        stat, method = math.nan, "anytime-valid beta-binomial mixture test (interim look)"
    else:
        expected = (n * planned_agent_share, n * (1 - planned_agent_share))
        res = _st.chisquare([agent, control], expected)
        stat, p = float(res.statistic), float(res.pvalue)
        method = "Pearson chi-square goodness of fit, 1 degree of freedom"
    return SampleRatioCheck(
        agent, control, planned_agent_share, observed, stat, p, alpha, p < alpha, method
    )

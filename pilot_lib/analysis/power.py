"""Sample-size advice with power: how many samples settle an inconclusive KPI.

The gate passes a KPI when the whole two-sided interval at ``confidence``
(95%) clears the threshold: for a higher-is-better KPI, the lower bound is above
it. That is a one-sided test at ``alpha = (1 - confidence) / 2`` (2.5%). The
sample that settles the KPI **with probability** ``power`` (80% by default),
if the true value equals the current estimate, is the classical one-sided
power calculation at that ``alpha``:

- a proportion ``p`` against threshold ``t``: Cohen's arcsine effect size
  ``h = |2 asin(sqrt(p)) - 2 asin(sqrt(t))|`` and
  ``n = ((z_{1-alpha} + z_{power}) / h)^2``, times the design effect of the
  KPI's interval when decisions cluster (weeks, users, cases). This is what
  ``statsmodels.stats.power.NormalIndPower().solve_power(effect_size=h,
  alpha=0.025, power=0.8, ratio=0, alternative="larger")`` solves
  (0.83 against 0.80: 643 at 50% power, 1,313 at 80%);
- any other KPI (a mean, a ratio of medians): the standard error on the side
  of the interval that must clear, ``se = |estimate - bound| / z`` with ``z``
  the interval's two-sided quantile, scaled as ``1 / sqrt(n)``:
  ``n_needed = n ((z_{1-alpha} + z_{power}) se / |estimate - threshold|)^2``;
  the same as ``NormalIndPower`` with the effect size ``distance / (se sqrt(n))``.

The previous advice (the sample at which the interval would *just* clear if the
estimate held) settles the KPI only about half the time: it is the 50%-power
answer. Sample sizes are totals; the gate subtracts what the pilot already has.
"""

from __future__ import annotations

import math

from scipy import special as _sp

__all__ = [
    "DEFAULT_POWER",
    "one_sided_alpha",
    "proportion_sample_size",
    "side_sample_size",
]

#: Chance that extending by the advised sample settles the KPI, if the estimate holds.
DEFAULT_POWER = 0.80

#: More samples than this are not advised (the estimate sits on the threshold).
MAX_SAMPLES = 100_000_000


def _check(power: float, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if not 0 < power < 1:
        raise ValueError(
            f"power must be between 0 and 1 (statistics: power in the pilot file, e.g. 0.8), "
            f"got {power}"
        )


def one_sided_alpha(confidence: float = 0.95) -> float:
    """The error rate of the gate's PASS rule: one side of a two-sided interval, ``(1 - c) / 2``."""
    return (1 - confidence) / 2


def _z_sum(power: float, confidence: float) -> float:
    """``z_{1-alpha} + z_{power}`` with ``alpha`` the one-sided rate of the PASS rule."""
    _check(power, confidence)
    return float(_sp.ndtri(1 - one_sided_alpha(confidence)) + _sp.ndtri(power))


def _total(n: float) -> int | None:
    if not math.isfinite(n) or n > MAX_SAMPLES:
        return None
    # Round before ceil so float noise does not push an exact integer up by one.
    return max(1, math.ceil(round(n, 6)))


def proportion_sample_size(
    estimate: float,
    threshold: float,
    power: float = DEFAULT_POWER,
    confidence: float = 0.95,
    design_effect: float = 1.0,
) -> int | None:
    """Total sample for which a proportion's interval clears ``threshold`` with probability ``power``.

    Assumes the true rate equals ``estimate``; the interval is two-sided at
    ``confidence``, so clearing it is a one-sided test at ``(1 - confidence) / 2``.
    Uses the arcsine (Cohen's h) normal approximation, as statsmodels'
    ``NormalIndPower`` with ``ratio=0``, multiplied by ``design_effect`` (the
    variance of the KPI's clustered estimate over the binomial one; 1 for
    independent decisions).

    Returns the total number of samples (decisions, users...), at least 1;
    ``None`` when the estimate equals the threshold or more than
    :data:`MAX_SAMPLES` would be needed. Example: 0.83 against 0.80 needs 1,313
    at 80% power and 643 at 50%.
    """
    if not (0 <= estimate <= 1 and 0 <= threshold <= 1):
        raise ValueError(
            f"estimate and threshold must be proportions, got {estimate} and {threshold}"
        )
    if not (design_effect > 0 and math.isfinite(design_effect)):
        raise ValueError(f"design_effect must be a positive number, got {design_effect}")
    h = abs(2 * math.asin(math.sqrt(estimate)) - 2 * math.asin(math.sqrt(threshold)))
    zs = _z_sum(power, confidence)
    if h == 0:
        return None
    return _total(design_effect * (zs / h) ** 2)


def side_sample_size(
    n: int,
    estimate: float,
    bound: float,
    threshold: float,
    power: float = DEFAULT_POWER,
    confidence: float = 0.95,
) -> int | None:
    """Total sample for which the interval's ``bound`` side clears ``threshold`` with probability ``power``.

    For KPIs that are not a simple proportion (cost per decision, the
    efficiency gain's ratio of medians). The standard error on the side that
    must clear is read off the interval: ``se = |estimate - bound| / z`` with
    ``z`` the two-sided normal quantile at ``confidence`` (an asymmetric
    interval, such as a bootstrap one, keeps its asymmetry; a cluster-robust one
    already carries its design effect). It shrinks as ``1 / sqrt(n)``, so
    ``n_needed = n ((z_{1-alpha} + z_{power}) se / |estimate - threshold|)^2``.

    Returns the total sample, at least 1; ``None`` when the estimate equals the
    threshold, the bound is not finite or equals the estimate, ``n < 1``, or more
    than :data:`MAX_SAMPLES` would be needed.
    """
    zs = _z_sum(power, confidence)
    distance = abs(estimate - threshold)
    spread = abs(estimate - bound)
    if n < 1 or distance == 0 or not math.isfinite(spread) or spread == 0:
        return None
    z = float(_sp.ndtri(0.5 + confidence / 2))
    se = spread / z
    return _total(n * (zs * se / distance) ** 2)

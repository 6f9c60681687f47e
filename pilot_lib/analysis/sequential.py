"""Anytime-valid confidence sequences for interim looks at the KPIs.

A fixed 95% interval is valid for one look at a sample size fixed in advance.
Teams look every week; each look is another 2.5% chance that an interval
clears a threshold the KPI does not truly meet, and over twelve looks the chance
of a false GO is about four times the nominal one. A confidence sequence is a
band valid at every sample size at once: the chance that it *ever* excludes
the true value, however often one looks and whenever one stops, is at most
``alpha``.

The workbook uses the asymptotic confidence sequence of Waudby-Smith, Arnold,
Wu and Ramdas ("Time-uniform central limit theory and asymptotic confidence
sequences", Annals of Statistics, 2024), the closed form that GrowthBook and
Eppo document for sequential testing. After ``n`` samples with standard
deviation ``sigma`` per sample, the estimate ``+/-``::

    sigma * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * log( sqrt(n rho^2 + 1) / alpha ) )

with ``alpha = 1 - confidence`` (two-sided: with probability at least 95% the
band never excludes the true value on either side; by symmetry a false PASS,
one side, is about half that). ``rho`` sets the sample size at which the band
is tightest; the workbook tunes it for the planned sample (the pilot window's
end), ``rho^2 = (2 log(1/alpha) + log(1 + 2 log(1/alpha))) / N``, fixed before
the looks. Only the ratio ``n / N`` then matters: the band is 2.06 times the
fixed interval's half-width a twelfth of the way through the window and 1.55
times at its end.

``sigma`` comes from the KPI's own interval, per side: ``sigma = se sqrt(n)``
with ``se = |estimate - bound| / z``, so a cluster-robust or asymmetric
interval stays so, widened by :func:`widening`.
"""

from __future__ import annotations

import math

from scipy import special as _sp

__all__ = [
    "anytime_valid_bounds",
    "cs_half_width",
    "cs_rho",
    "widening",
]


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (0.05 for 95%), got {alpha}")


def cs_rho(planned_n: float, alpha: float = 0.05) -> float:
    """The tuning ``rho`` that makes the confidence sequence tightest at ``planned_n`` samples.

    ``rho = sqrt((2 log(1/alpha) + log(1 + 2 log(1/alpha))) / planned_n)``, the
    approximate minimiser of the half-width at ``n = planned_n`` given in
    Waudby-Smith et al. (and GrowthBook's documentation).
    """
    _check_alpha(alpha)
    if not planned_n > 0:
        raise ValueError(f"planned_n must be > 0, got {planned_n}")
    two_log = 2 * math.log(1 / alpha)
    return math.sqrt((two_log + math.log(1 + two_log)) / planned_n)


def cs_half_width(sigma: float, n: float, rho: float, alpha: float = 0.05) -> float:
    """Half-width of the asymptotic confidence sequence after ``n`` samples.

    ``sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha))``;
    ``sigma`` is the standard deviation of one sample (in the KPI's unit), ``n``
    the number of samples (> 0), ``rho`` from :func:`cs_rho`. Two-sided
    coverage ``1 - alpha`` uniformly over ``n``.
    """
    _check_alpha(alpha)
    if not n > 0 or not rho > 0:
        raise ValueError(f"need n > 0 and rho > 0, got n={n}, rho={rho}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    v = n * rho * rho
    return sigma * math.sqrt(2 * (v + 1) / (n * v) * math.log(math.sqrt(v + 1) / alpha))


def widening(fraction: float, confidence: float = 0.95) -> float:
    """How many times wider the confidence sequence is than the fixed interval.

    ``fraction`` is ``n / N``: the share of the planned sample (the pilot
    window) seen at this look, in (0, 1] (larger values are allowed: the band
    keeps its validity after the planned end, only its tuning is off). The fixed
    interval's half-width is ``z se`` with ``z`` the two-sided normal quantile;
    the ratio is ``cs_half_width(se sqrt(n), n, rho) / (z se)``, which depends on
    ``n`` and ``N`` only through ``fraction``. 1.549 at 95% and fraction 1.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if not fraction > 0:
        raise ValueError(f"fraction must be > 0 (share of the planned sample), got {fraction}")
    alpha = 1 - confidence
    z = float(_sp.ndtri(0.5 + confidence / 2))
    # sigma = 1, n = fraction, planned N = 1: the same ratio for any N.
    return cs_half_width(1.0, fraction, cs_rho(1.0, alpha), alpha) * math.sqrt(fraction) / z


def anytime_valid_bounds(
    estimate: float,
    low: float,
    high: float,
    fraction: float,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """The confidence sequence's bounds at this look, from the fixed interval ``(low, high)``.

    Each side is widened about the estimate by :func:`widening`: the standard
    error per side is ``|estimate - bound| / z``, so the band is
    ``estimate -/+ cs_half_width(se sqrt(n), n, rho)``. Infinite or NaN bounds
    stay as they are. Bounds may leave [0, 1] for a proportion only when the
    fixed interval's side is wide; they are not clipped (the gate compares them
    with the threshold only).
    """
    k = widening(fraction, confidence)
    lo = estimate - (estimate - low) * k if math.isfinite(low) else low
    hi = estimate + (high - estimate) * k if math.isfinite(high) else high
    return lo, hi

"""Confidence intervals and sample sizes used by every phase.

All intervals are two-sided at ``confidence`` (default 0.95). Functions return
``(nan, nan)`` when there is no data (``n == 0``); callers label such figures
"no data" instead of showing a NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

# scipy.special, not scipy.stats: the same functions (agreeing to 1e-8 relative at
# ten million draws, to 1e-12 below a thousand), at a third of the import time, which
# every phase kernel pays (0.65 s of CPU each)
from scipy import special as _sp

__all__ = [
    "DEFAULT_RESAMPLES",
    "MEDIAN_BAND_MAX_LOST",
    "MEDIAN_BAND_SDS",
    "MedianBand",
    "MedianBootstrap",
    "bootstrap_median_interval",
    "bootstrap_median_ratio_interval",
    "exact_median_interval",
    "exact_median_ratio_interval",
    "mean_interval",
    "median_band_from_values",
    "median_band_lost_mass",
    "median_band_ranks",
    "median_bootstrap_distribution",
    "median_distribution_interval",
    "median_ratio_distribution_interval",
    "required_sample_size",
    "sample_size_to_clear",
    "wilson_interval",
    "z_value",
]

#: Bootstrap resamples per interval. 2,000 keeps the Monte-Carlo error of a 95%
#: percentile bound well under a tenth of the interval's width for the sample
#: sizes a pilot produces, and runs in well under a second for 10,000 values.
#: Also the number of seeded draws per cohort of the ratio-of-medians interval
#: built from exact bootstrap distributions (:func:`median_ratio_distribution_interval`).
DEFAULT_RESAMPLES = 2000

#: Half-width of the band of ranks around the middle that the exact bootstrap
#: distribution of a median needs, in standard deviations of a resample's rank
#: count at the median (``sqrt(N) / 2``): 7 leaves out a probability of about
#: 3e-12 (see :func:`median_band_lost_mass`).
MEDIAN_BAND_SDS = 7.0

#: Largest probability of the median's bootstrap distribution a band may leave out.
MEDIAN_BAND_MAX_LOST = 1e-9

# Stop adding (lower, upper) middle pairs for even N once the mass left is below this.
_PAIR_TAIL = 1e-16
# Floating tolerance when reading a quantile off an exactly computed CDF.
_CDF_TOL = 1e-12

# Resample in blocks so memory stays bounded (block x n int64 indices).
_MAX_CELLS_PER_BLOCK = 4_000_000


def _binom_sf(k: int, n: int, p: Any) -> Any:
    """``P(Binomial(n, p) > k)``, elementwise over ``p`` (1 when ``k < 0``)."""
    return 1.0 if k < 0 else _sp.bdtrc(k, n, p)


def _binom_cdf(k: int, n: int, p: Any) -> Any:
    """``P(Binomial(n, p) <= k)``, elementwise over ``p`` (0 when ``k < 0``)."""
    return 0.0 if k < 0 else _sp.bdtr(k, n, p)


def _binom_pmf(k: int, n: int, p: Any) -> Any:
    """``P(Binomial(n, p) = k)``, elementwise over ``p``, from the log-gamma function."""
    log_pmf = (
        _sp.gammaln(n + 1)
        - _sp.gammaln(k + 1)
        - _sp.gammaln(n - k + 1)
        + _sp.xlogy(k, p)
        + _sp.xlog1py(n - k, -np.asarray(p, dtype=float))
    )
    return np.exp(log_pmf)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def z_value(confidence: float = 0.95) -> float:
    """Two-sided standard-normal quantile: 1.959964 for 0.95."""
    _check_confidence(confidence)
    return float(_sp.ndtri(0.5 + confidence / 2))


def _wilson_bounds(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson bounds for an observed proportion ``p`` (any real ``0 <= p <= 1``) over ``n > 0``."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``.

    Parameters
    ----------
    successes, n:
        Counts; ``0 <= successes <= n``.
    confidence:
        Two-sided coverage, e.g. 0.95.

    Returns
    -------
    (low, high):
        Bounds in [0, 1]. ``(nan, nan)`` when ``n == 0``. Unlike the normal
        (Wald) interval it stays inside [0, 1] and is not degenerate at 0 of n
        or n of n.
    """
    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    low, high = _wilson_bounds(successes / n, n, z_value(confidence))
    # Exact bounds at the edges (floating error otherwise leaves 1e-17).
    if successes == 0:
        low = 0.0
    if successes == n:
        high = 1.0
    return (low, high)


def mean_interval(mean: float, std: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean from its summary statistics.

    Used for cost per decision, where the engine returns the mean, the sample
    standard deviation (``ddof=1``) and the count, so no row leaves the engine.
    ``(nan, nan)`` when ``n == 0``; a zero-width interval when ``n == 1``
    would be dishonest, so ``n == 1`` gives ``(-inf, inf)``.
    """
    _check_confidence(confidence)
    if n <= 0:
        return (math.nan, math.nan)
    if n == 1 or std is None or not math.isfinite(std):
        return (-math.inf, math.inf)
    if std < 0:
        raise ValueError(f"std must be >= 0 (a standard deviation), got {std}")
    t = float(_sp.stdtrit(n - 1, 0.5 + confidence / 2))
    half = t * std / math.sqrt(n)
    return (mean - half, mean + half)


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return arr


def _check_resamples(n_resamples: int) -> None:
    if n_resamples < 1:
        raise ValueError(
            f"n_resamples must be >= 1 (default {DEFAULT_RESAMPLES}), got {n_resamples}"
        )


def _bootstrap_medians(arr: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = arr.size
    block = max(1, min(n_resamples, _MAX_CELLS_PER_BLOCK // max(n, 1)))
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(arr[idx], axis=1)
    return out


def bootstrap_median_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the median of ``values``.

    NaNs are dropped. Seeded (``seed``) so reruns give the same bounds.
    ``(nan, nan)`` for no values; ``(x, x)`` for a single value.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    arr = _as_array(values)
    if arr.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    meds = _bootstrap_medians(arr, n_resamples, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(meds, [alpha, 1 - alpha])
    return (float(low), float(high))


def bootstrap_median_ratio_interval(
    numerator: Sequence[float] | np.ndarray,
    denominator: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Estimate and percentile-bootstrap interval of ``median(numerator) / median(denominator)``.

    The two samples are resampled independently (two cohorts). Used for the
    efficiency gain, ``1 - ratio``. Returns ``(ratio, low, high)``; all NaN when
    either sample is empty or the denominator's median is 0. A resample whose
    denominator median is 0 has no finite ratio and is left out of the
    percentiles (it can only happen when many denominator values are 0).
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    num, den = _as_array(numerator), _as_array(denominator)
    if num.size == 0 or den.size == 0 or np.median(den) == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    num_meds = _bootstrap_medians(num, n_resamples, rng)
    den_meds = _bootstrap_medians(den, n_resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num_meds / den_meds
    ratios = ratios[np.isfinite(ratios)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return (float(np.median(num) / np.median(den)), float(low), float(high))


# --------------------------------------------------------------------------------------
# Exact bootstrap distribution of a median, from a band of counts around the middle
# --------------------------------------------------------------------------------------
class MedianBand(NamedTuple):
    """What the exact bootstrap of a median needs from the data: a bounded summary.

    ``values`` are the distinct values in a band around the median (increasing),
    ``counts`` how often each occurs, ``n_below`` how many values lie below the
    band and ``n_total`` how many values there are in all (the rest lie above).
    """

    values: np.ndarray
    counts: np.ndarray
    n_below: int
    n_total: int


class MedianBootstrap(NamedTuple):
    """The bootstrap distribution of the median of ``n`` values, computed exactly.

    ``values`` (increasing) are the medians a resample can have inside the band
    and ``cdf[i]`` the probability that a resample's median is ``<= values[i]``.
    ``median`` is the sample median; ``lost_mass`` bounds the probability left
    out (resample medians outside the band), below :data:`MEDIAN_BAND_MAX_LOST`
    for a band from :func:`median_band_ranks`.
    """

    values: np.ndarray
    cdf: np.ndarray
    median: float
    n: int
    lost_mass: float


def _middle_ranks(n_total: int) -> tuple[int, int]:
    """1-based ranks of the lower and upper middle order statistics (equal for odd ``n``)."""
    return (n_total + 1) // 2, n_total // 2 + 1


def median_band_ranks(n_total: int, sds: float = MEDIAN_BAND_SDS) -> tuple[int, int]:
    """0-based ranks ``(lo, hi)`` of the order statistics that bound the band.

    The band keeps every value ranked within ``sds`` standard deviations
    (``sqrt(n) / 2`` ranks each) of the middle, plus two ranks for the even-``n``
    pair and float rounding of the cuts: ``7 * sqrt(n) + 8`` ranks at most, the
    whole sample when that is more than ``n``.
    """
    if n_total < 1:
        raise ValueError(f"need at least one value, got n_total={n_total}")
    if not sds > 0:
        raise ValueError(f"sds must be > 0, got {sds}")
    half = math.ceil(sds * math.sqrt(n_total) / 2) + 2
    return max(0, (n_total - 1) // 2 - half), min(n_total - 1, n_total // 2 + half)


def median_band_lost_mass(n_below: int, n_band: int, n_total: int) -> float:
    """Probability that a resample's median falls outside a band.

    The lower middle order statistic of a resample lies below the band when at
    least that many of the ``n`` draws fall below it: ``P(Binomial(n, n_below / n)
    >= lower middle rank)``; likewise above. The sum of the two tails bounds the
    probability the band leaves out. 1.0 when the band misses a middle rank.
    """
    _check_band_counts(n_below, n_band, n_total)
    a, b = _middle_ranks(n_total)
    if n_below >= a or n_below + n_band < b:
        return 1.0
    low = float(_binom_sf(a - 1, n_total, n_below / n_total)) if n_below else 0.0
    above = n_total - n_below - n_band
    high = float(_binom_cdf(b - 1, n_total, 1 - above / n_total)) if above else 0.0
    return low + high


def _check_band_counts(n_below: int, n_band: int, n_total: int) -> None:
    if n_total < 1 or n_below < 0 or n_band < 0 or n_below + n_band > n_total:
        raise ValueError(
            "need 0 <= n_below, 0 <= values in the band and n_below + band <= n_total >= 1, "
            f"got n_below={n_below}, band={n_band}, n_total={n_total}"
        )


def median_band_from_values(
    values: Sequence[float] | np.ndarray, sds: float = MEDIAN_BAND_SDS
) -> MedianBand:
    """The band :func:`median_bootstrap_distribution` needs, from values in memory.

    The same cuts as the engine query of ``kpis``: the order statistics at
    :func:`median_band_ranks`, the count below the lower cut and the distinct
    values (with counts) between the cuts. NaNs are dropped.
    """
    arr = np.sort(_as_array(values))
    if arr.size == 0:
        raise ValueError("no values (after dropping NaNs)")
    lo, hi = median_band_ranks(arr.size, sds)
    low_cut, high_cut = arr[lo], arr[hi]
    n_below = int(np.searchsorted(arr, low_cut, side="left"))
    stop = int(np.searchsorted(arr, high_cut, side="right"))
    band, counts = np.unique(arr[n_below:stop], return_counts=True)
    return MedianBand(band, counts.astype(np.int64), n_below, int(arr.size))


def median_bootstrap_distribution(
    values: Sequence[float] | np.ndarray,
    counts: Sequence[int] | np.ndarray,
    n_below: int,
    n_total: int,
) -> MedianBootstrap:
    """Exact bootstrap distribution of the median from a band of counts around it.

    A bootstrap resample draws ``n`` values with replacement, so the number of
    draws at or below ``x`` is Binomial(n, F(x)) with ``F`` the sample's
    empirical CDF. For odd ``n`` the resample median is the order statistic of
    rank ``m = (n + 1) / 2`` and ``P(median* <= x) = P(Binomial(n, F(x)) >= m)``
    at every data value ``x``: the classical bootstrap's distribution with
    infinitely many resamples. For even ``n = 2k`` the median is the mean of the
    order statistics of ranks ``k`` and ``k + 1``; the probability that they are
    ``v_i`` and ``v_j > v_i`` is ``C(n, k) (F_i^k - F_{i-1}^k) ((1 - F_{j-1})^k -
    (1 - F_j)^k)`` and that both are ``v_i`` is ``P(X*_(k) = v_i)`` minus the
    pairs, so the distribution of the mean is exact as well (pairs are added
    until the probability left is below 1e-16).

    Parameters
    ----------
    values, counts:
        Distinct values of the band, increasing, and how often each occurs (>= 1).
    n_below:
        Number of values below the band.
    n_total:
        Number of values in all; the band must contain the middle rank(s).

    Returns
    -------
    MedianBootstrap
        Support and CDF of the resample median, the sample median, ``n`` and the
        probability left out (outside the band or truncated).
    """
    v = np.asarray(values, dtype=float)
    c = np.asarray(counts)
    if v.ndim != 1 or v.shape != c.shape or v.size == 0:
        raise ValueError("values and counts must be non-empty 1-D arrays of the same length")
    if np.isnan(v).any() or (np.diff(v) <= 0).any():
        raise ValueError("band values must be distinct, increasing and not NaN")
    if not np.issubdtype(c.dtype, np.integer) and not np.array_equal(c, np.round(c)):
        raise ValueError("counts must be whole numbers")
    c = c.astype(np.int64)
    if (c < 1).any():
        raise ValueError("counts must be >= 1")
    n_total, n_below = int(n_total), int(n_below)
    _check_band_counts(n_below, int(c.sum()), n_total)
    a, b = _middle_ranks(n_total)
    cum = n_below + np.cumsum(c)  # values <= v_i
    if n_below >= a or cum[-1] < b:
        raise ValueError(
            f"the band (ranks {n_below + 1} to {cum[-1]} of {n_total}) must contain the "
            f"middle rank(s) {a} and {b}"
        )
    median = float(v[np.searchsorted(cum, a)])
    if b != a:
        median = float((median + v[np.searchsorted(cum, b)]) / 2)
    lost = median_band_lost_mass(n_below, int(c.sum()), n_total)
    n = float(n_total)
    f = cum / n
    sf = _binom_sf(a - 1, n_total, f)  # P(X*_(a) <= v_i)
    if a == b:
        return MedianBootstrap(v, sf, median, n_total, lost)

    k = a  # n = 2k: the middle ranks are k and k + 1
    low = float(_binom_sf(k - 1, n_total, n_below / n)) if n_below else 0.0
    marginal = np.diff(np.concatenate(([low], sf)))  # P(X*_(k) = v_i)
    cum_f, c_f = cum.astype(float), c.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # P(X*_(k) = v_i and X*_(k+1) > v_i): exactly k draws <= v_i, at least one equal.
        above_i = _binom_pmf(k, n_total, f) * -np.expm1(k * np.log1p(-c_f / cum_f))
        left_i = n - cum_f  # values above v_i
        same = np.clip(marginal - above_i, 0.0, None)
        pair_values, pair_mass = [v], [same]
        for offset in range(1, v.size):
            i = np.arange(v.size - offset)
            j = i + offset
            # The k draws above X*_(k) all lie above v_{j-1}, and at least one equals v_j.
            beyond_prev = k * np.log1p(-(cum_f[j - 1] - cum_f[i]) / left_i[i])
            at_j = -np.expm1(k * np.log1p(-c_f[j] / (n - cum_f[j - 1])))
            pair_values.append((v[i] + v[j]) / 2)
            pair_mass.append(above_i[i] * np.exp(beyond_prev) * at_j)
            rest = float(
                np.sum(above_i[i] * np.exp(k * np.log1p(-(cum_f[j] - cum_f[i]) / left_i[i])))
            )
            if rest < _PAIR_TAIL:
                lost += rest
                break
    support, where = np.unique(np.concatenate(pair_values), return_inverse=True)
    mass = np.bincount(where, weights=np.concatenate(pair_mass), minlength=support.size)
    return MedianBootstrap(support, low + np.cumsum(mass), median, n_total, lost)


def _inverse_cdf(dist: MedianBootstrap, p: np.ndarray) -> np.ndarray:
    """Smallest support value whose CDF reaches ``p`` (the last one past the band)."""
    idx = np.searchsorted(dist.cdf, np.asarray(p, dtype=float) - _CDF_TOL, side="left")
    return dist.values[np.minimum(idx, dist.values.size - 1)]


def median_distribution_interval(
    dist: MedianBootstrap, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of an exact median bootstrap distribution.

    The ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    distribution (smallest value whose CDF reaches the level): the bounds the
    classical percentile bootstrap approaches as its resamples grow, without
    its Monte-Carlo error.
    """
    _check_confidence(confidence)
    alpha = (1 - confidence) / 2
    low, high = _inverse_cdf(dist, np.array([alpha, 1 - alpha]))
    return (float(low), float(high))


def median_ratio_distribution_interval(
    numerator: MedianBootstrap,
    denominator: MedianBootstrap,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Estimate and percentile interval of ``median(numerator) / median(denominator)``.

    Draws ``n_resamples`` resample medians from each exact distribution by the
    inverse CDF of seeded uniforms (numerator first): each draw has exactly the
    distribution of the median of a classical bootstrap resample, so the result
    is distributed like :func:`bootstrap_median_ratio_interval`'s while each
    draw costs a binary search instead of a resample. Returns ``(ratio, low,
    high)``; all NaN when the denominator's median is 0. Draws whose denominator
    median is 0 are left out, as in the classical function.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    if denominator.median == 0 or math.isnan(denominator.median):
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    num = _inverse_cdf(numerator, rng.random(n_resamples))
    den = _inverse_cdf(denominator, rng.random(n_resamples))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num / den
    ratios = ratios[np.isfinite(ratios)]
    ratio = numerator.median / denominator.median
    if ratios.size == 0:
        return (ratio, math.nan, math.nan)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return (float(ratio), float(low), float(high))


def _distribution_of(values: Sequence[float] | np.ndarray) -> MedianBootstrap | None:
    arr = _as_array(values)
    if arr.size == 0:
        return None
    return median_bootstrap_distribution(*median_band_from_values(arr))


def exact_median_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """:func:`bootstrap_median_interval` without resampling: from the exact distribution.

    NaNs are dropped; ``(nan, nan)`` for no values; ``(x, x)`` for one value.
    """
    _check_confidence(confidence)
    dist = _distribution_of(values)
    if dist is None:
        return (math.nan, math.nan)
    return median_distribution_interval(dist, confidence)


def exact_median_ratio_interval(
    numerator: Sequence[float] | np.ndarray,
    denominator: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """:func:`bootstrap_median_ratio_interval` from the two exact median distributions.

    Same contract: ``(ratio, low, high)``, all NaN when either sample is empty
    or the denominator's median is 0.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    num, den = _distribution_of(numerator), _distribution_of(denominator)
    if num is None or den is None:
        return (math.nan, math.nan, math.nan)
    return median_ratio_distribution_interval(num, den, confidence, n_resamples, seed)


def required_sample_size(margin: float, p: float = 0.5, confidence: float = 0.95) -> int:
    """Decisions needed to estimate a proportion within ``+/- margin``.

    ``n = ceil(z^2 p (1 - p) / margin^2)`` (normal approximation); ``p = 0.5``
    is the worst case and the default. ``margin`` is a fraction (0.05 = 5 points).
    Example: margin 0.05 at 95% gives 385.
    """
    if not 0 < margin < 1:
        raise ValueError(
            f"margin must be a fraction between 0 and 1 (0.05 = 5 points), got {margin}"
        )
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a proportion, got {p}")
    z = z_value(confidence)
    # Round before ceil: 1.96^2 * 0.25 / 0.05^2 is 384.1459..., but float noise
    # must not push an exact integer up by one.
    return max(1, math.ceil(round(z * z * p * (1 - p) / (margin * margin), 9)))


def sample_size_to_clear(
    estimate: float,
    threshold: float,
    confidence: float = 0.95,
    max_n: int = 10_000_000,
) -> int | None:
    """Smallest ``n`` whose Wilson interval at ``estimate`` lies wholly on one side of ``threshold``.

    Answers "how many decisions in total would settle this KPI?" for an
    INCONCLUSIVE proportion, assuming the observed rate stays exactly at
    ``estimate`` (the Wilson bounds are evaluated at ``p = estimate``, not at a
    rounded count, so the answer does not jump with rounding). The Wilson
    interval shrinks as ``n`` grows, so the answer is the closed form
    ``floor(z^2 t (1 - t) / (estimate - t)^2) + 1`` for threshold ``t``; it is
    found by bisection on the interval itself. ``None`` when the estimate equals
    the threshold (no sample size settles it) or more than ``max_n`` would be needed.
    """
    if not (0 <= estimate <= 1 and 0 <= threshold <= 1):
        raise ValueError("estimate and threshold must be proportions")
    z = z_value(confidence)
    if estimate == threshold:
        return None

    def clears(n: int) -> bool:
        low, high = _wilson_bounds(estimate, n, z)
        return low > threshold if estimate > threshold else high < threshold

    if not clears(max_n):
        return None
    lo, hi = 1, max_n
    while lo < hi:
        mid = (lo + hi) // 2
        if clears(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo

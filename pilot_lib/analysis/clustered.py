"""Intervals that allow for how the data were produced: clustered decisions.

Decisions are not independent draws: those of one week share its staff, its
volumes and its prompt version; those of one user share the user's habits;
those of one case share the case. A rate or a mean over decisions is then a
*ratio estimator*, ``r = sum_g y_g / sum_g n_g`` over clusters ``g`` (``y_g``
the cluster's total of the outcome, ``n_g`` its count), whose variance the
cluster-robust ("sandwich") estimator gives from the clusters' residual totals
``e_g = y_g - r n_g``::

    Var(r) = G / (G - 1) * sum_g e_g^2 / N^2          (CR1, N = sum_g n_g)

the small-sample factor ``G / (G - 1)`` being the one statsmodels' cluster
covariance uses for a mean (its ``(N - 1) / (N - K)`` factor is 1 for one
regressor). The interval is ``r +/- t(G - 1) * se``: Student t with ``G - 1``
degrees of freedom, as a careful analyst does with few clusters.

The engine does the work: :func:`cluster_residual_sums` groups the decision log
by cluster and returns one row, ``G`` and ``sum_g e_g^2`` per figure, however
many clusters there are (a million cases included); nothing at decision-log
size becomes a pandas frame.

The *design effect* is the clustered variance over the variance the same
estimate would have from independent decisions (``p (1 - p) / n`` for a
proportion, ``s^2 / n`` for a mean): 1 for independent data, 40 when the
between-week variation makes the estimate as uncertain as one from 40 times
fewer independent decisions.

For the efficiency gain (a ratio of medians) there is no closed form:
:func:`cluster_bootstrap_median_ratio` resamples whole weeks from per-week
histograms the engine returns (see its docstring for the approximation and
its bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import ibis
import ibis.expr.types as ir
import numpy as np
from scipy import special as _sp

__all__ = [
    "CLUSTER_LEVELS",
    "HISTOGRAM_BINS",
    "ClusterSums",
    "ClusteredInterval",
    "cluster_bootstrap_median_ratio",
    "cluster_robust_se",
    "cluster_residual_sums",
    "clustered_interval",
    "clustered_ratio",
    "decision_cluster_key",
    "t_value",
]

ClusterLevel = Literal["week", "user", "case", "none"]

#: The levels ``statistics.cluster_by`` accepts.
CLUSTER_LEVELS: tuple[str, ...] = ("week", "user", "case", "none")

#: Log-scale bins per cohort for the week bootstrap of the efficiency gain.
HISTOGRAM_BINS = 2048


class ClusterSums(NamedTuple):
    """What the cluster-robust variance of a ratio needs, from the engine.

    ``clusters`` is ``G`` (clusters with at least one counted unit) and
    ``sq_residuals`` is ``sum_g (y_g - r n_g)^2`` at the estimate ``r``.
    """

    clusters: int
    sq_residuals: float


class ClusteredInterval(NamedTuple):
    """A ratio estimate with its cluster-robust interval and the independent one.

    ``low``/``high`` are the honest bounds (the cluster-robust t-interval, never
    narrower than the independent interval ``low_iid``/``high_iid``: see
    :func:`clustered_interval`). ``se`` is the cluster-robust standard error,
    ``se_iid`` the independent one, ``design_effect = (se / se_iid)^2`` (NaN when
    ``se_iid`` is 0) and ``clusters`` is ``G``.
    """

    estimate: float
    se: float
    low: float
    high: float
    clusters: int
    design_effect: float
    se_iid: float
    low_iid: float
    high_iid: float


def t_value(df: float, confidence: float = 0.95) -> float:
    """Two-sided Student-t quantile with ``df`` degrees of freedom (4.303 for 2 at 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(_sp.stdtrit(df, 0.5 + confidence / 2))


def cluster_robust_se(n: float, sq_residuals: float, clusters: int) -> float:
    """CR1 standard error of a ratio estimator ``sum y / sum n`` (same scale as the ratio).

    ``sqrt(G / (G - 1) * sum_g e_g^2) / N`` with ``N = n`` the total count and
    ``e_g`` the clusters' residual totals. NaN when ``G < 2`` (the variation
    between clusters cannot be estimated from one cluster) or ``n == 0``.
    """
    if clusters < 2 or n <= 0:
        return math.nan
    if sq_residuals < 0:
        raise ValueError(f"a sum of squares must be >= 0, got {sq_residuals}")
    return math.sqrt(clusters / (clusters - 1) * sq_residuals) / n


def clustered_ratio(
    totals: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray
) -> tuple[float, float, int]:
    """Ratio estimate, CR1 standard error and ``G`` from per-cluster totals in memory.

    ``totals[g]`` is cluster g's sum of the outcome, ``counts[g]`` its number of
    units; clusters with no unit are left out. For small per-cluster tables
    (weeks, users) and for checking the engine path.
    """
    y = np.asarray(totals, dtype=float)
    n = np.asarray(counts, dtype=float)
    if y.shape != n.shape or y.ndim != 1:
        raise ValueError("totals and counts must be 1-D arrays of the same length")
    keep = n > 0
    y, n = y[keep], n[keep]
    big_n = float(n.sum())
    if big_n == 0:
        return (math.nan, math.nan, 0)
    r = float(y.sum()) / big_n
    resid = y - r * n
    return (r, cluster_robust_se(big_n, float(resid @ resid), int(y.size)), int(y.size))


def clustered_interval(
    estimate: float,
    se: float,
    clusters: int,
    iid: tuple[float, float],
    se_iid: float,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> ClusteredInterval:
    """The honest interval: cluster-robust t-interval, never narrower than the independent one.

    ``estimate +/- t(G - 1) * se``, clipped to ``bounds`` ((0, 1) for a
    proportion); each side then widened to the independent interval ``iid``
    (Wilson or Student-t) where that reaches further. A sandwich variance from a
    dozen clusters is itself noisy and can fall below the independent variance
    by chance; an interval narrower than independent sampling would give claims
    a precision the data do not have. With ``G < 2`` (or ``se`` NaN) the
    independent interval stands, with ``design_effect`` NaN.
    """
    low_iid, high_iid = iid
    deff = (se / se_iid) ** 2 if se_iid > 0 and math.isfinite(se) else math.nan
    if clusters < 2 or not math.isfinite(se):
        return ClusteredInterval(
            estimate, se, low_iid, high_iid, clusters, deff, se_iid, low_iid, high_iid
        )
    half = t_value(clusters - 1, confidence) * se
    low = max(bounds[0], estimate - half)
    high = min(bounds[1], estimate + half)
    if math.isfinite(low_iid):
        low = min(low, low_iid)
    if math.isfinite(high_iid):
        high = max(high, high_iid)
    if not (math.isfinite(low_iid) and math.isfinite(high_iid)):
        low, high = low_iid, high_iid  # no independent interval (one unit): none at all
    return ClusteredInterval(estimate, se, low, high, clusters, deff, se_iid, low_iid, high_iid)


def decision_cluster_key(table: ir.Table, cluster_by: str) -> tuple[ir.Value | None, str, str]:
    """The engine expression naming each decision's cluster, the level used and a note.

    ``week``: the Monday of the decision timestamp's ISO week. ``user``: the
    ``user_id`` column; a decision with no user is its own case's cluster
    (``"case:" + case_id``), and a log without a ``user_id`` column is clustered
    by case instead (the note says so). ``case``: ``case_id``. ``none``: None
    (independent decisions).
    """
    if cluster_by not in CLUSTER_LEVELS:
        raise ValueError(
            f"statistics.cluster_by must be one of {list(CLUSTER_LEVELS)}, got {cluster_by!r}"
        )
    if cluster_by == "none":
        return None, "none", ""
    if cluster_by == "week":
        return table.timestamp.truncate("W").cast("date"), "week", ""
    case = ibis.literal("case:") + table.case_id.cast("string")
    if cluster_by == "user":
        if "user_id" not in table.columns:
            return (
                case,
                "case",
                "the decision log has no user_id column: clustered by case instead of user",
            )
        return ibis.coalesce(table.user_id.cast("string"), case), "user", ""
    return case, "case", ""


def cluster_residual_sums(
    table: ir.Table,
    key: ir.Value,
    figures: Mapping[str, tuple[ir.Value, ir.Value, float]],
) -> dict[str, ClusterSums]:
    """``G`` and ``sum_g (y_g - r n_g)^2`` per figure, in two engine aggregates, one row back.

    Parameters
    ----------
    table:
        The rows (decisions in the window); ``key`` names each row's cluster.
    figures:
        Name -> ``(y, n, r)``: the per-row outcome (0 where not counted), the
        per-row count (1 where counted, 0 otherwise, e.g. a null flag) and the
        ratio estimate ``r = sum y / sum n`` already known from the totals.

    Returns
    -------
    dict
        Name -> :class:`ClusterSums`. Residual totals are formed per cluster
        before squaring, so no large sums cancel. Works for any number of
        clusters: the per-cluster rows never leave the engine.
    """
    cols: dict[str, Any] = {"_cluster": key}
    for i, (y, n, _) in enumerate(figures.values()):
        cols[f"_y{i}"] = y.cast("float64")
        cols[f"_n{i}"] = n.cast("float64")
    rows = table.select(**cols)
    per_cluster = rows.group_by("_cluster").aggregate(
        **{f"{p}{i}": rows[f"_{p}{i}"].sum() for i in range(len(figures)) for p in ("y", "n")}
    )
    aggs: dict[str, Any] = {}
    for i, (_, _, r) in enumerate(figures.values()):
        y, n = per_cluster[f"y{i}"].fill_null(0.0), per_cluster[f"n{i}"].fill_null(0.0)
        r_lit = ibis.literal(0.0 if not math.isfinite(r) else float(r))
        resid = y - r_lit * n
        aggs[f"g{i}"] = (n > 0).cast("int64").sum()
        aggs[f"s{i}"] = (resid * resid).sum()
    row = per_cluster.aggregate(**aggs).execute().iloc[0]
    out = {}
    for i, name in enumerate(figures):
        g, s = row[f"g{i}"], row[f"s{i}"]
        g = 0 if g is None or (isinstance(g, float) and math.isnan(g)) else int(g)
        s = 0.0 if s is None or (isinstance(s, float) and math.isnan(s)) else float(s)
        out[name] = ClusterSums(g, s)
    return out


# --------------------------------------------------------------------------------------
# Efficiency gain: a week bootstrap of the ratio of medians from per-week histograms
# --------------------------------------------------------------------------------------
def _binned_medians(counts: np.ndarray, sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of each weighted pooled histogram (row of ``weights`` x weeks).

    ``counts``/``sums`` are weeks x bins (bins in increasing value order).
    The median bin is the one holding rank ``ceil(N / 2)``; its value is the
    mean of the values in that bin over the resampled weeks.
    """
    pooled_n = weights @ counts  # resamples x bins
    pooled_s = weights @ sums
    total = pooled_n.sum(axis=1)
    cum = np.cumsum(pooled_n, axis=1)
    half = np.ceil(total / 2)
    idx = (cum < half[:, None]).sum(axis=1)
    idx = np.minimum(idx, counts.shape[1] - 1)
    rows = np.arange(weights.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        med = pooled_s[rows, idx] / pooled_n[rows, idx]
    med[total == 0] = np.nan
    return med


def cluster_bootstrap_median_ratio(
    numerator: tuple[np.ndarray, np.ndarray],
    denominator: tuple[np.ndarray, np.ndarray],
    paired: bool,
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Draws of ``median(numerator) / median(denominator)`` resampling whole weeks.

    Parameters
    ----------
    numerator, denominator:
        Each a pair ``(counts, sums)`` of weeks x bins arrays: per week, the
        number of values in each bin of a shared, increasing binning and their
        sum (the engine's histogram, :func:`kpis._weekly_histograms`).
    paired:
        True when both cohorts ran in the same weeks (agent and control): a
        resample draws weeks once and takes both cohorts' cases of those weeks,
        keeping what the week did to both. False for agent against a
        pre-pilot baseline: each cohort's weeks are drawn on their own.

    Returns
    -------
    numpy.ndarray
        ``n_resamples`` ratios (seeded), NaN where a resample's denominator
        median is 0 or a cohort drew no case.

    The median of a resample is read from the pooled histogram: the bin that
    holds its middle rank, valued at the mean of that bin's values, so it is off
    by at most one bin's width (with 2,048 log-scale bins between a cohort's
    smallest and largest cycle time, a fraction ``ln(max / min) / 2048`` of the
    value: 0.4% for a range of a factor 3,000), far below the bootstrap spread.
    """
    n_counts, n_sums = numerator
    d_counts, d_sums = denominator
    rng = np.random.default_rng(seed)
    g_num = n_counts.shape[0]
    g_den = d_counts.shape[0]
    w_num = rng.multinomial(g_num, np.full(g_num, 1.0 / g_num), size=n_resamples).astype(float)
    if paired:
        if g_num != g_den:
            raise ValueError("paired cohorts need the same weeks (rows)")
        w_den = w_num
    else:
        w_den = rng.multinomial(g_den, np.full(g_den, 1.0 / g_den), size=n_resamples).astype(float)
    num = _binned_medians(n_counts, n_sums, w_num)
    den = _binned_medians(d_counts, d_sums, w_den)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den
    ratio[~np.isfinite(ratio)] = np.nan
    return ratio

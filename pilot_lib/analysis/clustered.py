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

For the efficiency gain (a ratio of medians) :func:`median_ratio_variance`
linearises each median (Woodruff's method: a median's design effect is that
of the proportion of values at or below it), from one row per cohort and week.
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
    "ClusterSums",
    "ClusteredInterval",
    "FEW_CLUSTERS",
    "FewClusterInterval",
    "cluster_bootstrap_t_interval",
    "few_cluster_interval",
    "leave_one_out_bounds",
    "WildBootstrapInterval",
    "MedianRatioVariance",
    "cluster_robust_se",
    "cluster_residual_sums",
    "clustered_interval",
    "clustered_ratio",
    "decision_cluster_key",
    "median_ratio_variance",
    "t_value",
    "webb_weights",
    "wild_bootstrap_interval",
    "wild_bootstrap_pvalues",
]

ClusterLevel = Literal["week", "user", "case", "none"]

#: The levels ``statistics.cluster_by`` accepts.
CLUSTER_LEVELS: tuple[str, ...] = ("week", "user", "case", "none")


class ClusterSums(NamedTuple):
    """What the cluster-robust variance of a ratio needs, from the engine.

    ``clusters`` is ``G`` (clusters with at least one counted unit) and
    ``sq_residuals`` is ``sum_g (y_g - r n_g)^2`` at the estimate ``r``.
    ``totals``/``counts``: each cluster's ``y_g`` and ``n_g`` (clusters in the
    order of their key), kept only when there are few clusters (fewer than
    :data:`FEW_CLUSTERS`: a few dozen numbers), for the few-cluster interval;
    empty otherwise.
    """

    clusters: int
    sq_residuals: float
    totals: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()


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
    keep_below: int | None = None,
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
        clusters: the per-cluster rows leave the engine only when there are
        fewer than ``keep_below`` of them (default :data:`FEW_CLUSTERS`; a
        third, small query), as each figure's ``totals``/``counts``.
    """
    keep_below = FEW_CLUSTERS if keep_below is None else keep_below
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
    aggs["_rows"] = per_cluster.count()
    row = per_cluster.aggregate(**aggs).execute().iloc[0]
    small = None
    if 0 < int(row["_rows"]) < keep_below:
        small = per_cluster.order_by(per_cluster["_cluster"].asc()).execute()
    out = {}
    for i, name in enumerate(figures):
        g, s = row[f"g{i}"], row[f"s{i}"]
        g = 0 if g is None or (isinstance(g, float) and math.isnan(g)) else int(g)
        s = 0.0 if s is None or (isinstance(s, float) and math.isnan(s)) else float(s)
        if small is None:
            out[name] = ClusterSums(g, s)
            continue
        ys = small[f"y{i}"].fillna(0.0).to_numpy(dtype=float)
        ns = small[f"n{i}"].fillna(0.0).to_numpy(dtype=float)
        keep = ns > 0
        out[name] = ClusterSums(g, s, tuple(ys[keep].tolist()), tuple(ns[keep].tolist()))
    return out


# --------------------------------------------------------------------------------------
# Efficiency gain: the ratio of two medians, linearised
# --------------------------------------------------------------------------------------
class MedianRatioVariance(NamedTuple):
    """Variance of ``log(median_a / median_b)``, clustered and independent.

    ``clustered`` and ``independent`` are variances on the log scale;
    ``design_effect`` their quotient; ``clusters`` the G whose ``G - 1``
    degrees of freedom the interval uses (the smaller cohort's for unpaired
    cohorts); ``cohort_design_effects`` the design effect of each median alone.
    """

    clustered: float
    independent: float
    design_effect: float
    clusters: int
    cohort_design_effects: tuple[float, float]


def _median_residuals(below: np.ndarray, counts: np.ndarray, cv: float) -> tuple[np.ndarray, float]:
    """Per-cluster linearised residuals of ``log(median)`` and the median's design effect.

    The median ``m`` solves ``F(m) = 1/2``; its influence is ``(F(m) - 1{x <= m}) / f(m)``
    (Woodruff 1952; Francisco & Fuller 1991), so on the log scale a cluster's residual
    total is ``-(below_g - F n_g) / (N f(m) m)`` with ``F = sum below / N``. The
    density drops out: ``1 / (f(m) m) = cv / sqrt(F (1 - F) / N)``, ``cv`` being the
    median's independent standard error over the median. So the median's design
    effect is the design effect of the proportion of values at or below it.
    """
    n_total = float(counts.sum())
    f_hat = float(below.sum()) / n_total
    srs = f_hat * (1 - f_hat) / n_total
    resid = below - f_hat * counts
    g = int((counts > 0).sum())
    cr1 = g / (g - 1) * float(resid @ resid) / n_total**2 if g > 1 else math.nan
    scale = cv / math.sqrt(srs) if srs > 0 else math.nan
    deff = cr1 / srs if srs > 0 else math.nan
    return -resid / n_total * scale, deff


def median_ratio_variance(
    numerator: tuple[np.ndarray, np.ndarray, float],
    denominator: tuple[np.ndarray, np.ndarray, float],
    paired: bool,
) -> MedianRatioVariance:
    """Cluster-robust variance of ``log(median(numerator) / median(denominator))``.

    Parameters
    ----------
    numerator, denominator:
        Each ``(below, counts, cv)``: per cluster (week) the number of values at or
        below the cohort's median and the number of values; ``cv`` the median's
        standard error under independent sampling divided by the median (from
        the exact bootstrap distribution). For ``paired`` cohorts the two arrays
        are aligned on the same clusters (zeros where a cohort had none).
    paired:
        True when both cohorts ran in the same weeks (agent and control): the
        residuals are subtracted week by week before squaring, so what a week
        did to both cohorts cancels. False (agent against a pre-pilot
        baseline): the two variances add, each with its own clusters.

    Returns
    -------
    MedianRatioVariance
        NaN variances when a cohort has fewer than two clusters.

    CR1 on the linearised residuals: ``G / (G - 1) sum_g e_g^2``. The
    independent variance is ``cv_num^2 + cv_den^2``.
    """
    (b1, n1, cv1), (b2, n2, cv2) = numerator, denominator
    b1, n1, b2, n2 = (np.asarray(x, dtype=float) for x in (b1, n1, b2, n2))
    e1, d1 = _median_residuals(b1, n1, cv1)
    e2, d2 = _median_residuals(b2, n2, cv2)
    independent = cv1**2 + cv2**2
    if paired:
        if e1.shape != e2.shape:
            raise ValueError("paired cohorts need the same clusters (aligned arrays)")
        g = int(((n1 + n2) > 0).sum())
        e = e1 - e2
        var = g / (g - 1) * float(e @ e) if g > 1 else math.nan
    else:
        g1, g2 = int((n1 > 0).sum()), int((n2 > 0).sum())
        g = min(g1, g2)
        var = g1 / (g1 - 1) * float(e1 @ e1) + g2 / (g2 - 1) * float(e2 @ e2) if g > 1 else math.nan
    deff = var / independent if independent > 0 else math.nan
    return MedianRatioVariance(var, independent, deff, g, (d1, d2))


# --------------------------------------------------------------------------------------
# Few clusters: the restricted wild cluster bootstrap-t (Webb weights)
# --------------------------------------------------------------------------------------
#: Below this many clusters a KPI is judged with the wild cluster bootstrap-t
#: (``statistics.few_clusters`` in the pilot file overrides it).
FEW_CLUSTERS = 30
#: Bootstrap replications of the wild cluster bootstrap (MacKinnon's advice for
#: p-values near 0.025: thousands, an odd count less one so that alpha (B + 1) is whole).
BOOTSTRAP_REPS = 9999
#: The fixed seed of the bootstrap weights: the same data give the same interval.
BOOTSTRAP_SEED = 20260601

#: Webb's (2014) six-point distribution: +/- sqrt(1/2), 1, sqrt(3/2), each 1/6.
#: Mean 0, variance 1, fourth moment 7/6; with G clusters it has 6^G distinct
#: draws (Rademacher only 2^G: 4,096 with 12 clusters), so the bootstrap p-value
#: is not lumpy with a dozen weeks.
WEBB_POINTS = np.array(
    [-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0, math.sqrt(1.5)]
)


class WildBootstrapInterval(NamedTuple):
    """The wild cluster bootstrap-t interval of a ratio and what it was computed from.

    ``low``/``high``: the set of values the restricted bootstrap test does not
    reject at ``(1 - confidence) / 2`` on either side (clipped to the bounds).
    ``reps``/``seed``: the bootstrap draws. ``clusters``: ``G``.
    """

    estimate: float
    low: float
    high: float
    clusters: int
    reps: int
    seed: int


def webb_weights(reps: int, clusters: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """A ``(reps, clusters)`` array of Webb six-point weights from a seeded generator."""
    rng = np.random.default_rng(seed)
    return WEBB_POINTS[rng.integers(0, 6, size=(reps, clusters))]


def _ratio_t(y: np.ndarray, n: np.ndarray, null: float) -> float:
    """CR1 t statistic ``(r - null) / se`` of the ratio ``sum y / sum n``."""
    big_n = float(n.sum())
    r = float(y.sum()) / big_n
    e = y - r * n
    g = y.size
    se = math.sqrt(g / (g - 1) * float(e @ e)) / big_n
    return (r - null) / se if se > 0 else math.copysign(math.inf, r - null) * (r != null)


def wild_bootstrap_pvalues(
    totals: Sequence[float] | np.ndarray,
    counts: Sequence[float] | np.ndarray,
    null: float,
    weights: np.ndarray,
) -> tuple[float, float]:
    """One-sided p-values of ``H0: ratio = null`` by the restricted wild cluster bootstrap-t.

    The bootstrap imposes the null (MacKinnon and Webb's WCR): each cluster's
    residual at the null, ``e0_g = y_g - null n_g``, is multiplied by a weight
    ``w_g`` (one row of ``weights`` per replication), giving bootstrap totals
    ``y*_g = null n_g + w_g e0_g``; the bootstrap t statistic ``t*`` is the CR1
    t statistic of those totals against ``null``. Returns ``(p_above, p_below)``:
    the shares of ``t*`` at or above, and at or below, the observed ``t``
    (``p_above`` small: the ratio is shown above ``null``).
    """
    y = np.asarray(totals, dtype=float)
    n = np.asarray(counts, dtype=float)
    big_n = float(n.sum())
    g = y.size
    t_obs = _ratio_t(y, n, null)
    e0 = y - null * n
    d = weights @ e0 / big_n  # r* - null, one per replication
    resid = weights * e0 - d[:, None] * n
    se = np.sqrt(g / (g - 1) * np.einsum("ij,ij->i", resid, resid)) / big_n
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(se > 0, d / se, 0.0)
    return float(np.mean(t_star >= t_obs)), float(np.mean(t_star <= t_obs))


def wild_bootstrap_interval(
    totals: Sequence[float] | np.ndarray,
    counts: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> WildBootstrapInterval:
    """Interval of ``sum y / sum n`` by inverting the restricted wild cluster bootstrap-t.

    ``totals[g]``/``counts[g]``: cluster g's outcome total and count (clusters
    with no unit left out). The lower bound is the smallest null the test
    "ratio above the null" does not reject at ``(1 - confidence) / 2``, the upper
    the largest the test "below" does not; each found by bisection to 1e-4
    standard errors, with the same seeded weights at every null (so the interval
    is a deterministic function of the per-cluster sums). NaN bounds with fewer
    than 2 clusters or no variation between clusters' residuals.

    Why: with a dozen weekly clusters, a few of them in an incident, CR1 with
    Student t on ``G - 1`` misses on one side up to five times its nominal
    2.5%; the restricted wild bootstrap with Webb weights stays near nominal
    (MacKinnon and Webb 2017, 2018; the seeded table in docs/decisions.md).
    """
    y = np.asarray(totals, dtype=float)
    n = np.asarray(counts, dtype=float)
    keep = n > 0
    y, n = y[keep], n[keep]
    g = int(y.size)
    nan = WildBootstrapInterval(math.nan, math.nan, math.nan, g, reps, seed)
    if g < 2:
        return nan
    r, se, _ = clustered_ratio(y, n)
    if not (math.isfinite(se) and se > 0):
        return nan._replace(estimate=r)
    alpha = (1 - confidence) / 2
    w = webb_weights(reps, g, seed)

    def bound(side: int) -> float:
        # side -1: lower bound (test "above"); +1: upper bound (test "below")
        def rejected(null: float) -> bool:
            p_above, p_below = wild_bootstrap_pvalues(y, n, null, w)
            return (p_above if side < 0 else p_below) < alpha

        limit = bounds[0] if side < 0 else bounds[1]
        inside, step = r, 4 * se
        outside = r + side * step
        while not rejected(outside):
            if (side < 0 and outside <= limit) or (side > 0 and outside >= limit):
                return limit
            inside, step = outside, step * 2
            outside = r + side * step
            if step > 1e6 * se:
                return math.inf * side
        while abs(outside - inside) > 1e-4 * se:
            mid = (inside + outside) / 2
            if rejected(mid):
                outside = mid
            else:
                inside = mid
        return max(min(inside, bounds[1]), bounds[0])

    return WildBootstrapInterval(r, bound(-1), bound(+1), g, reps, seed)


def cluster_bootstrap_t_interval(
    totals: Sequence[float] | np.ndarray,
    counts: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-t interval of ``sum y / sum n`` from resampling whole clusters (seeded).

    Each replication draws ``G`` clusters with replacement and forms the CR1 t
    statistic ``t* = (r* - r) / se*``; the bounds are ``r - q(1 - a) se`` and
    ``r - q(a) se``, ``a = (1 - confidence) / 2``. Unlike the wild bootstrap with
    symmetric weights, it carries the skew that a few incident weeks give the
    rate's distribution (Hall 1992: the bootstrap-t is second-order accurate on
    one side). Replications whose clusters are all alike (``se* = 0``) are left
    out. NaN bounds with fewer than 2 clusters or ``se = 0``.
    """
    y = np.asarray(totals, dtype=float)
    n = np.asarray(counts, dtype=float)
    keep = n > 0
    y, n = y[keep], n[keep]
    g = int(y.size)
    if g < 2:
        return (math.nan, math.nan)
    r, se, _ = clustered_ratio(y, n)
    if not (math.isfinite(se) and se > 0):
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, g, size=(reps, g))
    yy, nn = y[idx], n[idx]
    big_n = nn.sum(axis=1)
    rs = yy.sum(axis=1) / big_n
    resid = yy - rs[:, None] * nn
    ses = np.sqrt(g / (g - 1) * np.einsum("ij,ij->i", resid, resid)) / big_n
    ok = ses > 0
    t_star = (rs[ok] - r) / ses[ok]
    a = (1 - confidence) / 2
    q_low, q_high = np.quantile(t_star, [a, 1 - a])
    low = max(bounds[0], r - float(q_high) * se)
    high = min(bounds[1], r - float(q_low) * se)
    return (low, high)


class FewClusterInterval(NamedTuple):
    """The few-cluster interval of a ratio (the restricted wild cluster bootstrap-t).

    ``low``/``high``: the gate's bounds; ``reps``/``seed``: the bootstrap draws.
    """

    low: float
    high: float
    clusters: int
    reps: int
    seed: int


def few_cluster_interval(
    totals: Sequence[float] | np.ndarray,
    counts: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> FewClusterInterval:
    """The interval a KPI with fewer than :data:`FEW_CLUSTERS` clusters is judged with.

    The restricted wild cluster bootstrap-t with Webb weights
    (:func:`wild_bootstrap_interval`), seeded, so a deterministic function of
    the per-cluster sums. The seeded simulation in
    ``benchmarks/bench_few_clusters.py`` (table in docs/decisions.md) gives its
    one-sided miss with 12 clusters beside CR1's and the cluster bootstrap-t's
    (:func:`cluster_bootstrap_t_interval`, which carries skew better but gives
    bounds two to three times wider on real pilots: not used by the gate). NaN
    bounds with fewer than 2 clusters or no variation.
    """
    wb = wild_bootstrap_interval(totals, counts, confidence, bounds, reps, seed)
    return FewClusterInterval(wb.low, wb.high, wb.clusters, reps, seed)


def leave_one_out_bounds(
    totals: Sequence[float] | np.ndarray,
    counts: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """The lowest lower and the highest upper CR1 bound with any one cluster left out.

    For each cluster ``g``: the ratio and CR1 standard error of the other
    ``G - 1`` clusters and their ``t(G - 2)`` interval. A PASS whose bound does
    not clear its threshold once some single week is left out rests on that
    week (the gate calls it fragile). NaN with fewer than 3 clusters.
    """
    y = np.asarray(totals, dtype=float)
    n = np.asarray(counts, dtype=float)
    keep = n > 0
    y, n = y[keep], n[keep]
    if y.size < 3:
        return (math.nan, math.nan)
    t = t_value(y.size - 2, confidence)
    lows, highs = [], []
    for g in range(y.size):
        mask = np.arange(y.size) != g
        r, se, _ = clustered_ratio(y[mask], n[mask])
        if not math.isfinite(se):
            continue
        lows.append(max(bounds[0], r - t * se))
        highs.append(min(bounds[1], r + t * se))
    if not lows:
        return (math.nan, math.nan)
    return (min(lows), max(highs))

"""Risk-coverage: the confidence threshold that buys the most automation for an agreed error rate.

The agent escalates a decision to a human when its confidence is below
``confidence_threshold``. Raising the threshold hands fewer decisions to the agent
(*coverage* falls) and, if confidence means anything, the ones it keeps are right
more often (*risk* falls). For each threshold ``t`` of a grid:

- coverage ``c(t)``: decisions with ``confidence >= t`` over decisions with a
  confidence (null confidences are left out and counted);
- risk ``r(t)``: decisions with ``confidence >= t`` whose outcome is known and
  wrong (``correct`` false) over those with ``confidence >= t`` and a known
  outcome (``correct`` not null).

Both are ratio estimators over clusters (``statistics.cluster_by``, default the
week): the interval is the cluster-robust one of
:mod:`pilot_lib.analysis.clustered` (CR1 sandwich, t on G - 1, never narrower than
the Wilson interval); with ``cluster_by: none``, the Wilson interval.

The recommended threshold is the lowest on the grid whose risk interval lies at
or below ``risk_coverage.max_error_rate`` (upper bound <= target). Without a
target nothing is recommended.

One pass in the engine
----------------------
The decision log is grouped once by (cluster, threshold bin), a bin being the
highest grid threshold at or below the confidence. Window functions then give
each (cluster, bin) row the cluster's cumulative counts from that bin up (the
cluster's covered decisions at every threshold from just above the cluster's
next lower bin up to this one). The sums over clusters that the sandwich needs at
each threshold (``sum_g n_g^2``, ``sum_g n_g y_g``, ``sum_g y_g^2``) are then
"range additions": each row adds its values where its range starts and takes
them off just past its end, grouped by threshold. One query returns at most a
row per threshold, however many clusters (a million cases included); the
running sums over the thresholds are taken in Python on that small result.
Every count is an integer, so the residual sums of squares are formed exactly
(Python integers) before the one division.

Cost and reviewer load (what-if)
--------------------------------
Moving the threshold from today's ``t0`` to ``t``: raising it escalates the
decisions not escalated today with ``t0 <= confidence < t``; lowering it
releases today's ``low_confidence`` escalations with ``t <= confidence < t0``.
Decisions escalated for another reason (missing data, out of scope, a tool
failure) stay escalated. Assumed: a decision that moves takes on the average
review minutes of the group it joins (low-confidence escalations against
decisions not escalated, both measured in the log), its model and tool cost do
not change, and the log's mix of decisions holds. Cost per decision is model +
tool + review minutes / 60 x ``costs.review_hourly_rate_usd``, as in phase 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from pilot_lib.analysis import clustered
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import Pilot

__all__ = [
    "CURVE_COLUMNS",
    "RiskCoverage",
    "risk_coverage",
    "risk_coverage_chart",
    "risk_coverage_from_table",
    "threshold_grid",
]

PHASE = "drift_analysis"
#: Decision-log columns the curve and its what-if read (besides the cluster key's).
NEEDED_COLUMNS = frozenset(
    {
        "timestamp",
        "confidence",
        "correct",
        "escalated",
        "escalation_reason",
        "review_minutes",
        "model_cost_usd",
        "tool_cost_usd",
    }
)
#: The notebook section the findings point to (phase 3).
SECTION = "Where to set the confidence threshold (risk-coverage)"
#: Outcome-known shares above and below today's threshold further apart than this
#: (with enough decisions on each side) may bias the curve: a warning says so.
SELECTION_GAP = 0.10
#: Decisions each side of today's threshold needed before the selection check speaks.
SELECTION_MIN_DECISIONS = 30

CURVE_COLUMNS = [
    "threshold",
    "decisions",
    "covered",
    "coverage",
    "coverage_low",
    "coverage_high",
    "coverage_se",
    "known_covered",
    "errors",
    "risk",
    "risk_low",
    "risk_high",
    "risk_se",
    "risk_design_effect",
    "risk_clusters",
]

_RANGE_VALUES = ("a", "kn", "e", "a2", "aN", "k2", "ke", "e2", "gk")
_BIN_VALUES = ("n", "known", "known_esc", "esc", "noesc", "lowc", "rev", "rev_noesc", "rev_lowc")
_BIN_FLOATS = ("rev", "rev_noesc", "rev_lowc", "mt")
_CLUSTER_VALUES = ("N2", "gN")
#: Group keys of the one-row-per-cluster contributions and of the null-confidence rows.
_CLUSTER_K = -100
_NULL_BIN = -2
_BELOW_BIN = -1


def threshold_grid(step: float = 0.01, today: float | None = None) -> np.ndarray:
    """Thresholds from 0 to 1 every ``step``, with today's threshold added (sorted, unique).

    Values are rounded to 12 decimals so that ``0.29`` is the same number as the
    literal (``29 * 0.01`` is not).
    """
    if not 0 < step <= 1:
        raise ValueError(f"the grid step must be in (0, 1], got {step}")
    count = int(round(1 / step))
    values = {round(k * step, 12) for k in range(count + 1) if round(k * step, 12) <= 1}
    if today is not None:
        values.add(round(float(today), 12))
    return np.array(sorted(values), dtype=float)


# ---- the engine pass ---------------------------------------------------------------------
def _bin_expr(conf: ir.NumericValue, grid: np.ndarray) -> ir.IntegerValue:
    """Index of the highest grid threshold at or below ``conf`` (-1 below the grid)."""
    cases = [(conf >= float(g), i) for i, g in reversed(list(enumerate(grid)))]
    return ibis.cases(*cases, else_=_BELOW_BIN)


def _engine_sums(table: ir.Table, key: ir.Value, grid: np.ndarray) -> pd.DataFrame:
    """The one query: per threshold index ``k`` the range-added and per-bin sums (small)."""
    conf = table.confidence
    has_conf = conf.notnull()
    if conf.type().is_floating():
        has_conf = has_conf & ~conf.isnan().fill_null(True)
    correct = table.correct
    known = correct.notnull()
    wrong = (known & ~correct.fill_null(True)).fill_null(False)
    esc = table.escalated.fill_null(False)
    lowc = (esc & (table.escalation_reason == "low_confidence")).fill_null(False)
    rev = table.review_minutes.cast("float64")
    rows = table.select(
        _c=key,
        _b=ibis.ifelse(has_conf, _bin_expr(conf, grid), _NULL_BIN),
        _known=known.cast("int64"),
        _wrong=wrong.cast("int64"),
        _known_esc=(known & esc).cast("int64"),
        _esc=esc.cast("int64"),
        _lowc=lowc.cast("int64"),
        _rev=rev,
        _rev_noesc=ibis.ifelse(esc, 0.0, rev),
        _rev_lowc=ibis.ifelse(lowc, rev, 0.0),
        _mt=(table.model_cost_usd + table.tool_cost_usd).cast("float64"),
    )
    g = rows.group_by(["_c", "_b"]).aggregate(
        n=rows.count(),
        known=rows._known.sum(),
        wrong=rows._wrong.sum(),
        known_esc=rows._known_esc.sum(),
        esc=rows._esc.sum(),
        lowc=rows._lowc.sum(),
        rev=rows._rev.sum(),
        rev_noesc=rows._rev_noesc.sum(),
        rev_lowc=rows._rev_lowc.sum(),
        mt=rows._mt.sum(),
    )
    down = ibis.window(group_by=g._c, order_by=ibis.desc(g._b), rows=(None, 0))
    up = ibis.window(group_by=g._c, order_by=g._b)
    with_conf = ibis.ifelse(g._b >= _BELOW_BIN, g.n, 0)
    w = g.mutate(
        cum_a=with_conf.sum().over(down),
        cum_k=ibis.ifelse(g._b >= _BELOW_BIN, g.known, 0).sum().over(down),
        cum_e=ibis.ifelse(g._b >= _BELOW_BIN, g.wrong, 0).sum().over(down),
        prev=g._b.lag().over(up),
        ng=with_conf.sum().over(ibis.window(group_by=g._c)),
    )
    i64, f64 = ibis.literal(0, "int64"), ibis.literal(0.0, "float64")

    def part(k: ir.IntegerValue, values: dict[str, ir.Value], source: ir.Table) -> ir.Table:
        cols: dict[str, ir.Value] = {"k": k.cast("int64")}
        for name in (*_RANGE_VALUES, *_BIN_VALUES, *_CLUSTER_VALUES, "mt"):
            zero = f64 if name in _BIN_FLOATS else i64
            cols[name] = values.get(name, zero).cast("float64" if name in _BIN_FLOATS else "int64")
        return source.select(**cols)

    ranges = w.filter(w._b >= 0)
    range_values = {
        "a": ranges.cum_a,
        "kn": ranges.cum_k,
        "e": ranges.cum_e,
        "a2": ranges.cum_a * ranges.cum_a,
        "aN": ranges.cum_a * ranges.ng,
        "k2": ranges.cum_k * ranges.cum_k,
        "ke": ranges.cum_k * ranges.cum_e,
        "e2": ranges.cum_e * ranges.cum_e,
        "gk": (ranges.cum_k > 0).cast("int64"),
    }
    start = ibis.ifelse(ranges.prev.isnull() | (ranges.prev < 0), 0, ranges.prev + 1)
    starts = part(start, range_values, ranges)
    ends = part(ranges._b + 1, {k: -v for k, v in range_values.items()}, ranges)
    bins = part(
        w._b,
        {
            "n": w.n,
            "known": w.known,
            "known_esc": w.known_esc,
            "esc": w.esc,
            "noesc": w.n - w.esc,
            "lowc": w.lowc,
            "rev": w.rev,
            "rev_noesc": w.rev_noesc,
            "rev_lowc": w.rev_lowc,
            "mt": w.mt,
        },
        w,
    )
    first = w.filter(w.prev.isnull())  # one row per cluster
    clusters = part(
        ibis.literal(_CLUSTER_K, "int64"),
        {"N2": first.ng * first.ng, "gN": (first.ng > 0).cast("int64")},
        first,
    )
    allparts = starts.union(ends).union(bins).union(clusters)
    sums = {
        name: allparts[name].sum()
        for name in (*_RANGE_VALUES, *_BIN_VALUES, *_CLUSTER_VALUES, "mt")
    }
    return allparts.group_by("k").aggregate(**sums).to_pandas()


# ---- from the small result to the curve --------------------------------------------------
def _sq_residuals(n2: int, ny: int, y2: int, n_total: int, y_total: int) -> float:
    """``sum_g (y_g - r n_g)^2`` with ``r = Y / N``, exactly from integer sums, then as a float.

    ``= (N^2 sum y^2 - 2 Y N sum n y + Y^2 sum n^2) / N^2``; Python integers do not
    round, so the large terms cancel without loss.
    """
    if n_total <= 0:
        return math.nan
    num = n_total * n_total * y2 - 2 * y_total * n_total * ny + y_total * y_total * n2
    return max(num, 0) / (n_total * n_total)


def _interval(
    successes: int, n: int, sq: float, clusters: int, level: str, confidence: float
) -> clustered.ClusteredInterval | None:
    if n <= 0:
        return None
    p = successes / n
    low, high = wilson_interval(successes, n, confidence)
    se_iid = math.sqrt(p * (1 - p) / n)
    if level == "none":
        return clustered.ClusteredInterval(p, se_iid, low, high, n, 1.0, se_iid, low, high)
    se = clustered.cluster_robust_se(n, sq, clusters)
    return clustered.clustered_interval(p, se, clusters, (low, high), se_iid, confidence, (0, 1))


def _int(x: Any) -> int:
    return 0 if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _float(x: Any) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class RiskCoverage:
    """The risk-coverage curve of one pilot, today's threshold on it, and the recommendation.

    Attributes
    ----------
    curve:
        One row per grid threshold (:data:`CURVE_COLUMNS`): ``decisions`` with a
        confidence, ``covered`` (at or above the threshold), ``coverage`` and its
        interval, ``known_covered`` (covered with a known outcome), ``errors`` among
        them, ``risk`` (share wrong, NaN when none covered is known) and its interval.
        Proportions in [0, 1].
    today, target, recommended:
        Today's ``confidence_threshold``; ``risk_coverage.max_error_rate`` (None: not
        set); the lowest grid threshold whose risk upper bound is at or below the
        target (None: no target, or none meets it).
    counts:
        Decisions in the pilot window, without confidence, with a known outcome, and
        the outcome-known shares at or above / below today's threshold and among
        escalated / not escalated decisions.
    load:
        What the cost and reviewer-load what-if needs: decisions, escalations, review
        minutes (total, per low-confidence escalation, per decision not escalated),
        model + tool cost (USD), the hourly rate, the window's weeks.
    """

    curve: pd.DataFrame
    today: float
    target: float | None
    recommended: float | None
    cluster_by: str
    counts: dict[str, Any]
    load: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: "confirmed on held-out weeks", "candidate: confirm on new data" or "" (none recommended)
    recommendation_status: str = ""
    #: The split-half check: weeks in each half, the threshold chosen on the first half
    #: and its error rate with interval on the second.
    holdout: dict[str, Any] = field(default_factory=dict)
    #: Per grid threshold: decisions not escalated / escalated for low confidence in its bin.
    _noesc: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _lowc: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    # ---- reading the curve ----------------------------------------------------------------
    def _index(self, threshold: float) -> int:
        grid = self.curve["threshold"].to_numpy()
        hits = np.flatnonzero(np.isclose(grid, threshold, rtol=0, atol=1e-9))
        if not hits.size:
            nearest = grid[np.argmin(np.abs(grid - threshold))] if grid.size else math.nan
            raise ValueError(
                f"threshold {threshold:g} is not on the curve's grid (step "
                f"risk_coverage.grid_step); the nearest is {nearest:g}"
            )
        return int(hits[0])

    def at(self, threshold: float) -> dict[str, Any]:
        """The curve's row at ``threshold`` (a grid value) as a dict."""
        return self.curve.iloc[self._index(threshold)].to_dict()

    @property
    def statement(self) -> str:
        """What the curve says about where to set the threshold, in plain words."""
        return " ".join(self.notes)

    def what_if(self, threshold: float) -> dict[str, Any]:
        """Coverage, risk, cost per decision and reviewer load at ``threshold`` (a grid value).

        Returns ``threshold``, ``coverage`` and ``risk`` with their bounds,
        ``newly_escalated`` / ``released`` (decisions, over the pilot window),
        ``escalations_per_week``, ``reviewer_hours_per_week``, ``cost_per_decision``
        (USD) and the same three for today. See the module docstring for the
        assumptions; NaN where the log has no decisions.
        """
        k, k0 = self._index(threshold), self._index(self.today)
        newly = int(self._noesc[k0:k].sum()) if k > k0 else 0
        released = int(self._lowc[k:k0].sum()) if k < k0 else 0
        ld = self.load
        extra = ld["extra_review_minutes"]
        moved = newly - released
        delta_minutes = moved * extra if moved else 0.0
        weeks, n, rate = ld["weeks"], ld["decisions"], ld["review_hourly_rate_usd"]

        def cost(minutes: float) -> float:
            return (ld["model_tool_usd"] + minutes / 60 * rate) / n if n else math.nan

        row = self.curve.iloc[k]
        return {
            "threshold": float(row["threshold"]),
            "coverage": row["coverage"],
            "coverage_low": row["coverage_low"],
            "coverage_high": row["coverage_high"],
            "risk": row["risk"],
            "risk_low": row["risk_low"],
            "risk_high": row["risk_high"],
            "newly_escalated": newly,
            "released": released,
            "escalations_per_week": (ld["escalations"] + moved) / weeks,
            "reviewer_hours_per_week": (ld["review_minutes"] + delta_minutes) / 60 / weeks,
            "cost_per_decision": cost(ld["review_minutes"] + delta_minutes),
            "today_escalations_per_week": ld["escalations"] / weeks,
            "today_reviewer_hours_per_week": ld["review_minutes"] / 60 / weeks,
            "today_cost_per_decision": cost(ld["review_minutes"]),
        }

    # ---- display ------------------------------------------------------------------------
    def curve_view(self, step: float = 0.05) -> pd.DataFrame:
        """The curve every ``step`` (plus today's and the recommended threshold), for reading."""
        c = self.curve
        keep = np.isclose((c["threshold"] / step) % 1, 0, atol=1e-6) | np.isclose(
            (c["threshold"] / step) % 1, 1, atol=1e-6
        )
        for t in (self.today, self.recommended):
            if t is not None:
                keep |= np.isclose(c["threshold"], t, atol=1e-9)
        rows = c[keep]

        def pct(x: float) -> str:
            return "no data" if not math.isfinite(x) else f"{100 * x:.1f}%"

        def mark(t: float) -> str:
            marks = []
            if math.isclose(t, self.today, abs_tol=1e-9):
                marks.append("today")
            if self.recommended is not None and math.isclose(t, self.recommended, abs_tol=1e-9):
                marks.append("recommended")
            return ", ".join(marks)

        return pd.DataFrame(
            {
                "threshold": rows["threshold"].map(lambda x: f"{x:.2f}"),
                "": rows["threshold"].map(mark),
                "coverage": rows["coverage"].map(pct),
                "coverage interval": [
                    f"{pct(lo)} to {pct(hi)}"
                    for lo, hi in zip(rows["coverage_low"], rows["coverage_high"], strict=True)
                ],
                "error rate (risk)": rows["risk"].map(pct),
                "risk interval": [
                    f"{pct(lo)} to {pct(hi)}"
                    for lo, hi in zip(rows["risk_low"], rows["risk_high"], strict=True)
                ],
                "decisions with outcome": rows["known_covered"].map(lambda x: f"{int(x):,}"),
            }
        ).reset_index(drop=True)

    def what_if_view(self, threshold: float) -> pd.DataFrame:
        """Today against ``threshold``: coverage, risk, escalations, reviewer hours, cost."""
        now, then = self.what_if(self.today), self.what_if(threshold)

        def pct(x: float) -> str:
            return "no data" if not math.isfinite(x) else f"{100 * x:.1f}%"

        def ci(r: dict[str, Any], name: str) -> str:
            return f"{pct(r[name])} ({pct(r[name + '_low'])} to {pct(r[name + '_high'])})"

        def num(x: float, spec: str) -> str:
            return "no data" if not math.isfinite(x) else format(x, spec)

        rows = [
            ("confidence threshold", f"{self.today:.2f}", f"{threshold:.2f}"),
            ("coverage (decided without a human)", ci(now, "coverage"), ci(then, "coverage")),
            ("error rate among them", ci(now, "risk"), ci(then, "risk")),
            (
                "escalations per week",
                num(now["escalations_per_week"], ",.0f"),
                num(then["escalations_per_week"], ",.0f"),
            ),
            (
                "reviewer hours per week",
                num(now["reviewer_hours_per_week"], ",.1f"),
                num(then["reviewer_hours_per_week"], ",.1f"),
            ),
            (
                "cost per decision (USD)",
                num(now["cost_per_decision"], ",.3f"),
                num(then["cost_per_decision"], ",.3f"),
            ),
        ]
        return pd.DataFrame(rows, columns=["", "today", "at the chosen threshold"])

    def chart(self) -> Any:
        """:func:`risk_coverage_chart` of this curve."""
        return risk_coverage_chart(self)

    def to_result(self) -> dict[str, Any]:
        """JSON-able dict for the phase 3 result (key ``risk_coverage``)."""
        from pilot_lib.results import to_jsonable

        rec = self.what_if(self.recommended) if self.recommended is not None else None
        return to_jsonable(
            {
                "today": self.today,
                "target_max_error_rate": self.target,
                "recommended_threshold": self.recommended,
                "recommendation_status": self.recommendation_status,
                "holdout": self.holdout,
                "cluster_by": self.cluster_by,
                "today_figures": self.what_if(self.today) if len(self.curve) else None,
                "recommended_figures": rec,
                "counts": self.counts,
                "load": self.load,
                "statement": self.statement,
                "curve": self.curve,
            }
        )


# ---- building it ---------------------------------------------------------------------------
def risk_coverage_from_table(
    decisions: ir.Table,
    pilot: Pilot,
    confidence: float = 0.95,
    target: float | None = None,
    today: float | None = None,
) -> RiskCoverage:
    """The risk-coverage curve of the decisions in the pilot window of ``decisions``.

    ``target`` and ``today`` override ``risk_coverage.max_error_rate`` and
    ``confidence_threshold`` of the pilot file (for a what-if or a test). Rows with
    ``pilot.pilot_window.start_ts <= timestamp < end_ts`` are used.
    """
    settings = pilot.risk_coverage
    target = settings.max_error_rate if target is None else target
    today = float(pilot.confidence_threshold if today is None else today)
    grid = threshold_grid(settings.grid_step, today)
    window = pilot.pilot_window
    t = decisions.filter(
        (decisions.timestamp >= window.start_ts) & (decisions.timestamp < window.end_ts)
    )
    key, level, key_note = clustered.decision_cluster_key(t, pilot.statistics.cluster_by)
    if key is None:
        key = ibis.literal("all")
    raw = _engine_sums(t, key, grid)
    result = _assemble(raw, grid, pilot, level, key_note, confidence, target, today)
    if result.recommended is not None:
        _split_half(result, t, key, level, grid, pilot, key_note, confidence, target, today)
    return result


#: The seed of the split of the weeks into a selection half and a confirmation half.
SPLIT_SEED = 20260622
#: Fewer weeks than this: no split (each half would be too thin to say anything).
SPLIT_MIN_CLUSTERS = 6


def split_clusters(clusters: list[Any], seed: int = SPLIT_SEED) -> tuple[list[Any], list[Any]]:
    """The clusters (sorted) dealt at random into a selection and a confirmation half.

    A seeded permutation: the first ``ceil(G / 2)`` are the selection half. The same
    clusters always give the same halves.
    """
    ordered = sorted(clusters)
    order = np.random.default_rng(seed).permutation(len(ordered))
    half = math.ceil(len(ordered) / 2)
    pick = [ordered[i] for i in sorted(order[:half])]
    rest = [ordered[i] for i in sorted(order[half:])]
    return pick, rest


def _split_half(
    result: RiskCoverage,
    t: ir.Table,
    key: ir.Value,
    level: str,
    grid: np.ndarray,
    pilot: Pilot,
    key_note: str,
    confidence: float,
    target: float | None,
    today: float,
) -> None:
    """Choose the threshold on a seeded half of the weeks, confirm it on the other half.

    Confirmed (the error rate's upper bound on the held-out half at or below the
    target): the recommendation is the threshold chosen on the selection half.
    The curves of each half keep the pilot's clustering. Otherwise (or with fewer
    than :data:`SPLIT_MIN_CLUSTERS` weeks) the
    whole-window threshold stays, labelled "candidate: confirm on new data": a
    threshold picked on the same decisions it is then judged on flatters itself.
    """
    week, _, _ = clustered.decision_cluster_key(t, "week")
    keyed = t.mutate(_split_week=week.cast("string"))
    clusters = keyed.select("_split_week").distinct().execute()["_split_week"].tolist()
    candidate = "candidate: confirm on new data"
    if len(clusters) < SPLIT_MIN_CLUSTERS:
        result.recommendation_status = candidate
        result.holdout = {"reason": f"only {len(clusters)} week(s): no held-out half"}
    else:
        pick, rest = split_clusters(clusters)

        def half(keys: list[Any]) -> RiskCoverage:
            part = keyed.filter(keyed._split_week.isin(keys))
            part_key, _, _ = clustered.decision_cluster_key(part, pilot.statistics.cluster_by)
            raw = _engine_sums(part, ibis.literal("all") if part_key is None else part_key, grid)
            return _assemble(raw, grid, pilot, level, key_note, confidence, target, today)

        chosen = half(pick).recommended
        held = half(rest)
        at = held.at(chosen) if chosen is not None else None
        confirmed = at is not None and math.isfinite(at["risk_high"]) and at["risk_high"] <= target
        result.holdout = {
            "selection_clusters": [str(k) for k in pick],
            "confirmation_clusters": [str(k) for k in rest],
            "chosen_on_selection": chosen,
            "confirmation_risk": None if at is None else at["risk"],
            "confirmation_risk_low": None if at is None else at["risk_low"],
            "confirmation_risk_high": None if at is None else at["risk_high"],
        }
        if confirmed:
            result.recommended = chosen
            result.recommendation_status = "confirmed on held-out weeks"
        else:
            result.recommendation_status = candidate
    result.notes = _notes(result, key_note)
    result.findings = _findings(result)


def _assemble(
    raw: pd.DataFrame,
    grid: np.ndarray,
    pilot: Pilot,
    level: str,
    key_note: str,
    confidence: float,
    target: float | None,
    today: float,
) -> RiskCoverage:
    size = len(grid)
    by_k = {int(r["k"]): r for r in raw.to_dict("records")}

    def arr(name: str, lo: int = 0, hi: int = size) -> list[int]:
        return [_int(by_k.get(k, {}).get(name)) for k in range(lo, hi)]

    # range-added values: running sums over the thresholds (exact integers)
    ranged = {name: np.cumsum(np.array(arr(name), dtype=object)) for name in _RANGE_VALUES}
    per_bin = {name: np.array(arr(name), dtype=object) for name in ("n", "known", "noesc", "lowc")}
    every = list(by_k.values())

    def total(name: str, keys: range | None = None) -> float:
        rows = every if keys is None else [by_k[k] for k in keys if k in by_k]
        return sum(_float(r.get(name)) for r in rows if int(r["k"]) != _CLUSTER_K)

    cluster_row = by_k.get(_CLUSTER_K, {})
    n2_all, g_all = _int(cluster_row.get("N2")), _int(cluster_row.get("gN"))
    n_decisions = int(total("n"))
    n_null = _int(by_k.get(_NULL_BIN, {}).get("n"))
    n_conf = n_decisions - n_null
    rows = []
    for k, thr in enumerate(grid):
        a, kn, e = int(ranged["a"][k]), int(ranged["kn"][k]), int(ranged["e"][k])
        cov = _interval(
            a,
            n_conf,
            _sq_residuals(n2_all, int(ranged["aN"][k]), int(ranged["a2"][k]), n_conf, a),
            g_all,
            level,
            confidence,
        )
        risk = _interval(
            e,
            kn,
            _sq_residuals(int(ranged["k2"][k]), int(ranged["ke"][k]), int(ranged["e2"][k]), kn, e),
            int(ranged["gk"][k]),
            level,
            confidence,
        )
        rows.append(
            {
                "threshold": float(thr),
                "decisions": n_conf,
                "covered": a,
                "coverage": cov.estimate if cov else math.nan,
                "coverage_low": cov.low if cov else math.nan,
                "coverage_high": cov.high if cov else math.nan,
                "coverage_se": cov.se if cov else math.nan,
                "known_covered": kn,
                "errors": e,
                "risk": risk.estimate if risk else math.nan,
                "risk_low": risk.low if risk else math.nan,
                "risk_high": risk.high if risk else math.nan,
                "risk_se": risk.se if risk else math.nan,
                "risk_design_effect": risk.design_effect if risk else math.nan,
                "risk_clusters": risk.clusters if risk else 0,
            }
        )
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)

    # ---- outcomes known where? (selection) ---------------------------------------------
    k0 = int(np.flatnonzero(np.isclose(grid, today, atol=1e-9))[0])
    n_above = int(sum(per_bin["n"][k0:]))
    known_above = int(sum(per_bin["known"][k0:]))
    n_below = n_conf - n_above
    known_below = int(total("known", range(_BELOW_BIN, k0)))
    n_known = known_above + known_below
    n_esc = int(total("esc"))
    known_esc = int(total("known_esc"))
    known_all = int(total("known"))
    counts = {
        "decisions": n_decisions,
        "without_confidence": n_null,
        "with_known_outcome": n_known,
        "known_share": n_known / n_conf if n_conf else math.nan,
        "known_share_at_or_above_today": known_above / n_above if n_above else math.nan,
        "known_share_below_today": known_below / n_below if n_below else math.nan,
        "known_share_escalated": known_esc / n_esc if n_esc else math.nan,
        "known_share_not_escalated": (
            (known_all - known_esc) / (n_decisions - n_esc) if n_decisions - n_esc else math.nan
        ),
        "decisions_at_or_above_today": n_above,
        "decisions_below_today": n_below,
    }

    # ---- load: review minutes measured in the log ---------------------------------------
    lowc_n, noesc_n = total("lowc"), total("noesc")
    rev_lowc, rev_noesc = total("rev_lowc"), total("rev_noesc")
    per_lowc = rev_lowc / lowc_n if lowc_n else math.nan
    if not lowc_n and n_esc:  # no low-confidence escalation: the average escalation
        per_lowc = (total("rev") - rev_noesc) / n_esc
    per_noesc = rev_noesc / noesc_n if noesc_n else 0.0
    extra = per_lowc - per_noesc if math.isfinite(per_lowc) else math.nan
    load = {
        "decisions": n_decisions,
        "escalations": n_esc,
        "low_confidence_escalations": int(lowc_n),
        "review_minutes": total("rev"),
        "review_minutes_per_low_confidence_escalation": per_lowc,
        "review_minutes_per_decision_not_escalated": per_noesc,
        "extra_review_minutes": extra if math.isfinite(extra) else 0.0,
        "model_tool_usd": total("mt"),
        "review_hourly_rate_usd": float(pilot.costs.review_hourly_rate_usd),
        "weeks": pilot.pilot_window.weeks,
    }

    recommended = None
    if target is not None:
        meets = curve[(curve["known_covered"] > 0) & (curve["risk_high"] <= target)]
        if not meets.empty:
            recommended = float(meets["threshold"].iloc[0])
    result = RiskCoverage(
        curve=curve,
        today=today,
        target=target,
        recommended=recommended,
        cluster_by=level,
        counts=counts,
        load=load,
        _noesc=np.array(per_bin["noesc"], dtype=np.int64),
        _lowc=np.array(per_bin["lowc"], dtype=np.int64),
    )
    result.notes = _notes(result, key_note)
    result.findings = _findings(result)
    return result


def risk_coverage(pilot: Pilot, data: Any) -> RiskCoverage | None:
    """Phase 3 section ``risk_coverage`` (:data:`pilot_lib.phases.PHASE_SECTIONS`).

    None when the pilot has no decision log or the log lacks a column of
    :data:`NEEDED_COLUMNS` (the data contract requires them all: a hand-made table).
    """
    table = data.table("decisions") if hasattr(data, "table") else getattr(data, "decisions", data)
    if table is None or not isinstance(table, ir.Table):
        return None
    if not set(table.columns) >= NEEDED_COLUMNS:
        return None
    return risk_coverage_from_table(table, pilot)


# ---- words ----------------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 1) -> str:
    return "no data" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def _no_outcome_reason(c: dict[str, Any]) -> str:
    """Why no decision has both a confidence and a known outcome, in plain words."""
    if not c["decisions"]:
        return "no decision falls in the pilot window"
    if c["without_confidence"] >= c["decisions"]:
        return f"the confidence is null on all {c['decisions']:,} decisions in the pilot window"
    return "no decision with a confidence has a known outcome (correct)"


def _notes(r: RiskCoverage, key_note: str) -> list[str]:
    c = r.counts
    notes = []
    if c["with_known_outcome"] == 0:
        notes.append(
            f"No decision of the {c['decisions']:,} in the pilot window has both a confidence "
            "and a known outcome (correct), so the error rate at any threshold cannot be "
            "measured; the curve shows coverage only."
        )
    else:
        notes.append(
            f"Outcomes (correct) are known for {c['with_known_outcome']:,} of the "
            f"{c['decisions'] - c['without_confidence']:,} decisions with a confidence "
            f"({_pct(c['known_share'])}); the rest are not yet checked and are left out of the "
            "error rate, which assumes they err like checked decisions of the same confidence."
        )
        notes.append(
            f"Known for {_pct(c['known_share_at_or_above_today'])} of decisions at or above "
            f"today's threshold and {_pct(c['known_share_below_today'])} below it "
            f"({_pct(c['known_share_escalated'])} of escalated, "
            f"{_pct(c['known_share_not_escalated'])} of other decisions)"
            + (
                ": checking depends on confidence, so the curve may be biased."
                if _selection_gap(r)
                else ": checked about equally often either side, so no sign of selection bias."
            )
        )
    if c["without_confidence"]:
        notes.append(f"{c['without_confidence']:,} decisions without a confidence are left out.")
    if key_note:
        notes.append(key_note + ".")
    today = r.at(r.today)
    notes.append(
        f"At today's threshold {r.today:.2f} the agent decides {_pct(today['coverage'])} of "
        f"decisions alone with an error rate of {_pct(today['risk'])} "
        f"({_pct(today['risk_low'])} to {_pct(today['risk_high'])})."
    )
    deff = today["risk_design_effect"]
    if r.cluster_by != "none" and math.isfinite(deff) and deff > 2:
        notes.append(
            f"That interval is wide because the error rate varies from {r.cluster_by} to "
            f"{r.cluster_by} (design effect {deff:.1f}): a threshold chosen on the whole "
            "window holds only if the agent's error rate is stable, which the drift "
            "findings above judge."
        )
    if r.target is None:
        notes.append(
            "The pilot file sets no risk_coverage.max_error_rate, so no threshold is "
            "recommended: which error rate is acceptable is a business decision, not a "
            "statistical one. Agree one and add it to the pilot file."
        )
    elif r.recommended is None:
        notes.append(
            f"No threshold on the grid keeps the error rate's upper bound at or below the "
            f"target {_pct(r.target)}."
        )
    else:
        rec = r.what_if(r.recommended)
        h = r.holdout
        if r.recommendation_status.startswith("confirmed"):
            notes.append(
                f"Recommendation {r.recommended:.2f} chosen on a seeded half of the "
                f"weeks ({len(h['selection_clusters'])}) and confirmed on the other "
                f"{len(h['confirmation_clusters'])}: there its error rate is "
                f"{_pct(h['confirmation_risk'])} (up to {_pct(h['confirmation_risk_high'])})."
            )
        elif r.recommendation_status:
            why = h.get("reason") or (
                "no threshold met the target on the selection half"
                if h.get("chosen_on_selection") is None
                else f"{h['chosen_on_selection']:.2f}, chosen on a seeded half of the "
                f"weeks, reached {_pct(h['confirmation_risk_high'])} on the other half"
            )
            notes.append(
                f"Candidate: confirm on new data. The threshold below was chosen on the same "
                f"decisions it is judged on; held out: {why}."
            )
        notes.append(
            f"The lowest threshold whose error rate stays at or below the target "
            f"{_pct(r.target)} with its interval is {r.recommended:.2f}: coverage "
            f"{_pct(rec['coverage'])}, error rate {_pct(rec['risk'])} (up to "
            f"{_pct(rec['risk_high'])}); escalations {rec['escalations_per_week']:,.0f} a week "
            f"(today {rec['today_escalations_per_week']:,.0f}), reviewer hours "
            f"{rec['reviewer_hours_per_week']:,.1f} a week (today "
            f"{rec['today_reviewer_hours_per_week']:,.1f}), cost per decision "
            f"${rec['cost_per_decision']:,.3f} (today ${rec['today_cost_per_decision']:,.3f})."
        )
    return notes


def _selection_gap(r: RiskCoverage) -> bool:
    c = r.counts
    a, b = c["known_share_at_or_above_today"], c["known_share_below_today"]
    enough = min(c["decisions_at_or_above_today"], c["decisions_below_today"])
    return (
        enough >= SELECTION_MIN_DECISIONS
        and math.isfinite(a)
        and math.isfinite(b)
        and abs(a - b) > SELECTION_GAP
    )


def _zero_if_nan(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _findings(r: RiskCoverage) -> list[Finding]:
    out: list[Finding] = []
    c = r.counts
    if _selection_gap(r):
        out.append(
            Finding(
                PHASE,
                "risk_coverage_outcome_selection",
                "warning",
                f"Outcomes are checked for {_pct(c['known_share_at_or_above_today'])} of the "
                f"decisions the agent handles alone but {_pct(c['known_share_below_today'])} of "
                "those it escalates, so the error rates by threshold may be biased.",
                {"counts": dict(c), "section": SECTION},
            )
        )
    if r.target is None or not len(r.curve):
        return out
    today = r.at(r.today)
    evidence = {
        "today": r.today,
        "target": r.target,
        "recommended": r.recommended,
        "risk": today["risk"],
        "risk_low": today["risk_low"],
        "risk_high": today["risk_high"],
        "coverage": today["coverage"],
        "section": SECTION,
    }
    if c["with_known_outcome"] == 0:
        out.append(
            Finding(
                PHASE,
                "risk_coverage_no_outcomes",
                "warning",
                f"The agreed error rate of {_pct(r.target)} cannot be checked: "
                f"{_no_outcome_reason(c)}.",
                evidence,
            )
        )
        return out
    fix = ""
    if r.recommended is not None and r.recommended > r.today:
        rec = r.what_if(r.recommended)
        fix = (
            f" Raising the threshold to {r.recommended:.2f} would meet it, leaving the agent "
            f"{_pct(rec['coverage'])} of decisions (today {_pct(today['coverage'])}) and adding "
            f"{rec['reviewer_hours_per_week'] - rec['today_reviewer_hours_per_week']:,.1f} "
            "reviewer hours a week."
        )
    elif r.recommended is None:
        fix = " No threshold meets it."
    if today["risk_low"] > r.target:
        out.append(
            Finding(
                PHASE,
                "risk_above_target",
                "blocking",
                f"At today's confidence threshold ({r.today:.2f}) the agent's own decisions are "
                f"wrong {_pct(today['risk'])} of the time ({_pct(today['risk_low'])} to "
                f"{_pct(today['risk_high'])}), above the agreed {_pct(r.target)}." + fix,
                evidence | {"headline": "Error rate above target"},
            )
        )
    elif today["risk_high"] > r.target:
        out.append(
            Finding(
                PHASE,
                "risk_not_shown_within_target",
                "warning",
                f"At today's confidence threshold ({r.today:.2f}) the agent's own decisions are "
                f"wrong {_pct(today['risk'])} of the time, but the interval reaches "
                f"{_pct(today['risk_high'])}: not shown to stay within the agreed "
                f"{_pct(r.target)}." + fix,
                evidence | {"headline": "Error rate not shown within target"},
            )
        )
    elif r.recommended is not None and r.recommended < r.today:
        rec = r.what_if(r.recommended)
        gain = rec["coverage"] - _zero_if_nan(today["coverage"])
        if not gain > 0:  # a lower threshold that changes nothing: no decision moves
            return out
        out.append(
            Finding(
                PHASE,
                "threshold_could_go_lower",
                "info",
                f"The confidence threshold could safely go lower: at {r.recommended:.2f} "
                f"instead of {r.today:.2f} the agent would decide {100 * gain:+.1f} points more "
                f"decisions alone ({_pct(rec['coverage'])}) with an error rate of "
                f"{_pct(rec['risk'])} (up to {_pct(rec['risk_high'])}, target "
                f"{_pct(r.target)}), saving "
                f"{rec['today_reviewer_hours_per_week'] - rec['reviewer_hours_per_week']:,.1f} "
                "reviewer hours a week.",
                evidence | {"gain_points": 100 * gain},
            )
        )
    return out


# ---- chart ----------------------------------------------------------------------------------
def risk_coverage_chart(r: RiskCoverage) -> Any:
    """Risk (error rate among the agent's own decisions, with its interval) against coverage.

    Today's threshold and the recommended one are marked; the target is a dashed line.
    Colour-blind safe (Okabe-Ito blue, orange, vermilion), and the markers differ in shape.
    """
    import matplotlib.pyplot as plt

    from pilot_lib.report.charts import OKABE_ITO, _pct_axis, no_data_figure

    title = "Risk-coverage: error rate of the agent's own decisions by coverage"
    c = r.curve.dropna(subset=["risk"])
    if c.empty:
        return no_data_figure(title, "no decision has a known outcome")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(c["coverage"], c["risk"], color=OKABE_ITO[0], label="error rate (risk)")
    ax.fill_between(
        c["coverage"], c["risk_low"], c["risk_high"], color=OKABE_ITO[0], alpha=0.18, lw=0
    )
    if r.target is not None:
        ax.axhline(r.target, color="#555", ls="--", lw=1, label=f"target {100 * r.target:.1f}%")
    marks = [(r.today, "today", "o", OKABE_ITO[3])]
    if r.recommended is not None:
        marks.append((r.recommended, "recommended", "D", OKABE_ITO[1]))
    for thr, label, marker, colour in marks:
        row = r.at(thr)
        if not math.isfinite(row["risk"]):
            continue
        ax.plot(
            row["coverage"],
            row["risk"],
            marker=marker,
            ms=8,
            ls="none",
            color=colour,
            label=f"{label}: threshold {thr:.2f}",
        )
    ax.set_xlabel("coverage: share of decisions the agent handles without a human")
    ax.set_ylabel("error rate among them")
    _pct_axis(ax)
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(bottom=0)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig

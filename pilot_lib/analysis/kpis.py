"""Phase 2: KPI baselining.

The five KPIs of the playbook over the pilot window, each with its interval,
sample size and unit, beside the threshold the pilot file wrote down before the
pilot started (no pass/fail verdict here: that is phase 5).

============================  ====================================================
KPI                           definition
============================  ====================================================
task completion (business)    accepted / decisions; technical = completed / decisions
process efficiency gain       1 - median(agent cycle time) / median(control cycle time)
user adoption rate            engaged eligible users / eligible users, first month
cost per decision             (model + tool + review minutes / 60 x hourly rate) / decisions
escalation rate               escalated / decisions, by reason
============================  ====================================================

Intervals: Wilson score for proportions, Student-t from the engine's mean,
standard deviation and count for cost per decision, a seeded percentile
bootstrap for the ratio of medians (``stats.DEFAULT_RESAMPLES`` draws per
cohort from each median's exact bootstrap distribution; the cohort medians'
bounds are that distribution's exact percentiles), and Newcombe's
square-and-add interval for the paired gap between technical and business
completion.

Those are the intervals if decisions were independent. Decisions cluster (by
week, user or case: ``pilot.statistics.cluster_by``, default week), so every KPI
interval is widened for it (:mod:`pilot_lib.analysis.clustered`): a
cluster-robust CR1 interval with Student t on ``G - 1`` degrees of freedom for
the rates and the cost per decision, from per-cluster sums the engine reduces to
one row; for the efficiency gain each median linearised (Woodruff's method)
from one row per cohort and week.
The honest bounds are ``low``/``high`` (never narrower than the independent
ones, kept as ``low_iid``/``high_iid``), with ``se``, ``design_effect``,
``clusters`` and ``cluster_by`` beside them. Weekly rows stay within-week
(independent) intervals.

Work happens in the engine: the decision log, cases and adoption tables are
Ibis expressions (DuckDB by default) and only aggregates come back to pandas:
one row of window totals, one row per week, one row per escalation reason.
The efficiency interval needs, per cohort, the count of cycle times below a
band around the median and the distinct cycle times in the band with their
counts (about ``7 * sqrt(closed cases)`` rows), never a whole column.

"No data" (an empty window, a zero denominator, an all-null column, a missing
data set) is never an error: the figure's estimate and bounds are NaN inside
:class:`KpiTable`, its ``status`` is ``"no data"`` and its ``note`` says why;
:meth:`KpiTable.display_table` shows "no data", never "nan".
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from pilot_lib.analysis import clustered, stats
from pilot_lib.analysis.findings import Finding
from pilot_lib.config import ESCALATION_REASONS, KPI_NAMES, Pilot, load_pilot
from pilot_lib.errors import ContractError

if TYPE_CHECKING:  # pragma: no cover
    from pilot_lib.ingest.contracts import PilotData

__all__ = [
    "BASELINE_COMPARISON",
    "COMPLETION_GAP_LIMIT",
    "CONTROL_COMPARISON",
    "FIRST_MONTH_DAYS",
    "KPI_COLUMNS",
    "KPI_LABELS",
    "PHASE",
    "TOOL_FAILURE_SHARE_LIMIT",
    "KpiTable",
    "compute_kpis",
    "compute_kpis_from_tables",
    "paired_difference_interval",
]

#: Phase key of the result file and of the findings raised here.
PHASE = "kpi_baselining"

#: Efficiency comparison labels (``KpiTable.efficiency["comparison_label"]``).
CONTROL_COMPARISON = "vs concurrent control cohort (same weeks)"
BASELINE_COMPARISON = "vs pre-pilot baseline (weaker: no concurrent control)"

#: Tool failures "dominate" escalations above this share (or when they are the largest reason).
TOOL_FAILURE_SHARE_LIMIT = 0.40
#: A technical-minus-business completion gap above this is flagged as an adoption problem.
COMPLETION_GAP_LIMIT = 0.15
#: The adoption rate's "first month": weeks whose Monday falls in [start, start + 28 days).
FIRST_MONTH_DAYS = 28

#: Row labels of the KPI table, in display order. The five KPIs of the playbook
#: are the headline rows; the others sit beside them as context.
KPI_LABELS: dict[str, str] = {
    "task_completion_rate": "Task completion (business: accepted without correction)",
    "technical_completion_rate": "Task completion (technical: well-formed output)",
    "efficiency_gain": "Process efficiency gain (end-to-end cycle time)",
    "adoption_rate": "User adoption (first month)",
    "override_rate": "Override rate (outputs users modified or replaced)",
    "override_rate_decision_log": "Override rate (decision log)",
    "cost_per_decision": "Cost per decision",
    "escalation_rate": "Escalation rate",
    "low_confidence_share": "Decisions below the confidence threshold",
}
_HEADLINE = {
    "task_completion_rate",
    "efficiency_gain",
    "adoption_rate",
    "cost_per_decision",
    "escalation_rate",
}
_SAMPLE_NOUN = {
    "efficiency_gain": "cases",
    "adoption_rate": "users",
    "override_rate": "outputs seen",
}

_DECISION_COLUMNS = (
    "timestamp",
    "case_id",
    "completed",
    "accepted",
    "overridden",
    "escalated",
    "escalation_reason",
    "confidence",
    "model_cost_usd",
    "tool_cost_usd",
    "review_minutes",
)
_CASE_COLUMNS = ("case_id", "cohort", "opened_at", "closed_at")
_ADOPTION_COLUMNS = ("user_id", "week", "eligible", "engaged", "decisions_seen", "overrides")

KPI_COLUMNS = [
    "kpi",
    "label",
    "headline",
    "estimate",
    "low",
    "high",
    "n",
    "unit",
    "status",
    "method",
    "note",
    "comparator",
    "threshold",
    "min_samples",
    "se",
    "design_effect",
    "clusters",
    "cluster_by",
    "low_iid",
    "high_iid",
    "interval_method",
    "low_cr1",
    "high_cr1",
    "loo_low",
    "loo_high",
]

_WEEKLY_COLUMNS = [
    "week",
    "decisions",
    "completed",
    "accepted",
    "escalated",
    "overridden",
    "technical_rate",
    "technical_low",
    "technical_high",
    "business_rate",
    "business_low",
    "business_high",
    "escalation_rate",
    "escalation_low",
    "escalation_high",
    "override_rate",
    "override_low",
    "override_high",
    "cost_per_decision",
    "cost_low",
    "cost_high",
]
_WEEKLY_ADOPTION_COLUMNS = [
    "week",
    "users",
    "eligible_users",
    "engaged_users",
    "adoption_rate",
    "adoption_low",
    "adoption_high",
    "decisions_seen",
    "overrides",
    "override_rate",
    "override_low",
    "override_high",
]
_WEEKLY_CYCLE_COLUMNS = ["week", "cohort", "cases", "closed", "open", "median_cycle_hours"]
_REASON_COLUMNS = [
    "reason",
    "escalations",
    "share_of_escalations",
    "rate_per_decision",
    "rate_low",
    "rate_high",
]
_COST_COLUMNS = ["component", "total_usd", "per_decision_usd", "share_of_cost"]


# --------------------------------------------------------------------------------------
# Result container
# --------------------------------------------------------------------------------------
@dataclass
class KpiTable:
    """Phase 2 result: every KPI with its interval, sample size and threshold.

    Attributes
    ----------
    kpis:
        One row per figure (columns :data:`KPI_COLUMNS`): ``estimate``, ``low``,
        ``high`` (NaN when ``status == "no data"``), ``n`` (decisions for rates
        and cost; closed cases of the smaller cohort for efficiency; eligible
        users for adoption; outputs seen for the adoption override rate),
        ``unit`` ("proportion" or "usd"), ``method``, ``note`` and the pilot
        file's threshold (``comparator``, ``threshold``, ``min_samples``; None /
        NaN when the file sets none). ``headline`` marks the five playbook KPIs.
        ``low``/``high`` allow for clustering at ``cluster_by``; beside them
        ``se`` (clustered standard error, the estimate's scale), ``design_effect``
        (clustered / independent variance), ``clusters`` (G) and the
        independent bounds ``low_iid``/``high_iid``.
    weekly:
        Per ISO week (``week`` = its Monday) of the decision log: counts,
        technical / business completion, escalation and override rates with
        Wilson bounds, cost per decision with Student-t bounds.
    weekly_adoption:
        Per week: eligible and engaged users, adoption rate with Wilson bounds,
        outputs seen, overrides and override rate with bounds.
    weekly_cycle_time:
        Per week the case was opened and cohort: cases, closed, open and the
        median cycle time in hours of the closed ones (median from the engine).
    completion:
        Technical and business completion with intervals, their gap with
        Newcombe's paired interval, and a note.
    escalation_by_reason:
        The four reasons always (zeros included; an "unspecified" row only when
        escalations carry an unknown or missing reason): count, share of
        escalations (NaN when there are none), rate per decision with bounds.
    cost_breakdown:
        Model, tool and human-review parts: total, per decision (US dollars) and
        share of the total cost.
    cost:
        Cost per decision against the manual cost per case: saving per decision,
        ratio, decisions per case and the agent's cost per case.
    efficiency:
        Which comparison was used (``comparison``: "control", "baseline" or
        None; ``comparison_label``), medians (hours) with bootstrap intervals,
        closed and open cases per cohort, the ratio and the gain with bounds.
    adoption:
        First-month eligible and engaged users and both override rates.
    flags:
        :class:`~pilot_lib.analysis.findings.Finding` objects for the analyst.
    """

    pilot_name: str
    confidence: float
    seed: int
    pilot_window: tuple[dt.date, dt.date]
    baseline_window: tuple[dt.date, dt.date]
    kpis: pd.DataFrame
    weekly: pd.DataFrame
    weekly_adoption: pd.DataFrame
    weekly_cycle_time: pd.DataFrame
    completion: dict[str, Any]
    escalation_by_reason: pd.DataFrame
    cost_breakdown: pd.DataFrame
    cost: dict[str, Any]
    efficiency: dict[str, Any]
    adoption: dict[str, Any]
    flags: list[Finding] = field(default_factory=list)
    cluster_by: str = "none"

    def kpi(self, name: str) -> dict[str, Any]:
        """One row of :attr:`kpis` as a dict; KeyError for an unknown name."""
        rows = self.kpis[self.kpis["kpi"] == name]
        if rows.empty:
            raise KeyError(f"no KPI named {name!r}; known: {list(self.kpis['kpi'])}")
        return rows.iloc[0].to_dict()

    def display_table(self, headline_only: bool = False) -> pd.DataFrame:
        """The KPI table as strings for people: no NaN, "no data" where there is none.

        Columns: KPI, estimate with interval (e.g. ``"86.1% (85.7%-86.5%)"``),
        sample (``"n=29,431 decisions"``), threshold (``"> 80.0%"``, or
        ``"none set"``), the threshold's minimum sample, the design effect of
        the interval (``"42.3 (13 weeks)"``; empty when the decisions are
        treated as independent or there is no data) and the note.
        """
        ci = f"Estimate ({_pct_label(self.confidence)} CI)"
        rows = []
        frame = self.kpis[self.kpis["headline"]] if headline_only else self.kpis
        for r in frame.to_dict(orient="records"):
            rows.append(
                {
                    "KPI": r["label"],
                    ci: _format_estimate(r),
                    "Sample": self._format_sample(r),
                    "Threshold": _format_threshold(r),
                    "Min. sample": (
                        f"{int(r['min_samples']):,}" if r["comparator"] is not None else ""
                    ),
                    "Design effect": _format_design_effect(r),
                    "Note": r["note"] or "",
                }
            )
        columns = ["KPI", ci, "Sample", "Threshold", "Min. sample", "Design effect", "Note"]
        return pd.DataFrame(rows, columns=columns)

    def cost_per_decision_at(self, review_hourly_rate_usd: float) -> float:
        """What-if: the cost per decision (US dollars) at another loaded hourly review rate.

        Model and tool costs stay; the human-review part scales with the rate
        (review minutes do not change). NaN when there were no decisions.
        """
        if review_hourly_rate_usd < 0:
            raise ValueError(
                f"the hourly rate must be >= 0 US dollars, got {review_hourly_rate_usd}"
            )
        decisions = self.completion.get("decisions") or 0
        old_rate = self.cost.get("review_hourly_rate_usd")
        if not decisions or not old_rate:
            return math.nan
        parts = dict(
            zip(self.cost_breakdown["component"], self.cost_breakdown["total_usd"], strict=True)
        )
        review = parts.get("human_review", 0.0) * review_hourly_rate_usd / old_rate
        return (parts.get("model", 0.0) + parts.get("tool", 0.0) + review) / decisions

    def _format_sample(self, r: dict[str, Any]) -> str:
        n = int(r["n"])
        if r["kpi"] == "efficiency_gain" and self.efficiency.get("comparison"):
            e = self.efficiency
            return (
                f"n={n:,} (agent {int(e['n_agent']):,}; "
                f"{e['comparison']} {int(e['n_comparison']):,} closed cases)"
            )
        return f"n={n:,} {_SAMPLE_NOUN.get(r['kpi'], 'decisions')}"

    def to_result(self) -> dict[str, Any]:
        """Everything phase 5 and batch runs need, as JSON-able types (NaN becomes None).

        ``kpis`` is a list of dicts with kpi, label, headline, estimate, low, high,
        n, unit, status, method, note, comparator, threshold and min_samples, so a
        verdict can be reached from the result file alone.
        """
        from pilot_lib.results import to_jsonable

        kpis = []
        for r in self.kpis.to_dict(orient="records"):
            has_threshold = r["comparator"] is not None
            r["threshold"] = float(r["threshold"]) if has_threshold else None
            r["min_samples"] = int(r["min_samples"]) if has_threshold else None
            r["n"] = int(r["n"])
            r["clusters"] = int(r["clusters"])
            r["headline"] = bool(r["headline"])
            kpis.append(r)
        return to_jsonable(
            {
                "pilot": self.pilot_name,
                "confidence": self.confidence,
                "seed": self.seed,
                "bootstrap_resamples": stats.DEFAULT_RESAMPLES,
                "cluster_by": self.cluster_by,
                "pilot_window": {"start": self.pilot_window[0], "end": self.pilot_window[1]},
                "baseline_window": {
                    "start": self.baseline_window[0],
                    "end": self.baseline_window[1],
                },
                "kpis": kpis,
                "completion": self.completion,
                "efficiency": self.efficiency,
                "adoption": self.adoption,
                "cost": self.cost,
                "cost_breakdown": self.cost_breakdown,
                "escalation_by_reason": self.escalation_by_reason,
                "weekly": self.weekly,
                "weekly_adoption": self.weekly_adoption,
                "weekly_cycle_time": self.weekly_cycle_time,
                "findings": self.flags,
            }
        )


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------
def compute_kpis(
    pilot: Pilot | str | Path,
    data: PilotData | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> KpiTable:
    """Compute the phase 2 KPI table for a pilot.

    Parameters
    ----------
    pilot:
        A loaded :class:`~pilot_lib.config.Pilot`, or a pilot folder / pilot file path.
    data:
        The pilot's contract-checked data (``pilot_lib.ingest.contracts.load_pilot_data``);
        loaded from the pilot file when None.
    confidence:
        Two-sided coverage of every interval (0.95 = 95%).
    seed:
        Seed of the efficiency bootstrap; the same seed gives the same bounds.
    """
    if not isinstance(pilot, Pilot):
        pilot = load_pilot(pilot)
    if data is None:
        from pilot_lib.ingest.contracts import load_pilot_data

        data = load_pilot_data(pilot)
    table = compute_kpis_from_tables(
        pilot,
        data.decisions,
        cases=data.cases,
        adoption=data.adoption,
        confidence=confidence,
        seed=seed,
    )
    _note_trace_costs(table, getattr(data, "manifest", None))
    return table


def _note_trace_costs(table: KpiTable, manifest: dict[str, Any] | None) -> None:
    """Add to the cost notes that model cost came from token counts and the price table.

    Only for a decision log built from traces (the store manifest's
    ``datasets.decisions.traces``) where some decisions carried no cost.
    """
    traces = (((manifest or {}).get("datasets") or {}).get("decisions") or {}).get("traces")
    priced = ((traces or {}).get("reconciliation") or {}).get("decisions_priced_from_tokens")
    if not priced:
        return
    text = (
        f"model cost of {priced:,} decisions computed from their token counts and the "
        "pilot file's price table (traces.prices): the traces carry no cost"
    )
    is_cost = table.kpis["kpi"] == "cost_per_decision"
    table.kpis.loc[is_cost, "note"] = [
        f"{n}; {text}" if n else text for n in table.kpis.loc[is_cost, "note"]
    ]
    table.cost["note"] = f"{table.cost['note']}; {text}" if table.cost.get("note") else text


def compute_kpis_from_tables(
    pilot: Pilot,
    decisions: ir.Table,
    cases: ir.Table | None = None,
    adoption: ir.Table | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> KpiTable:
    """Compute the KPI table from Ibis tables with the contract columns.

    Parameters
    ----------
    pilot:
        The pilot: windows, thresholds, hourly review rate, manual cost per case,
        confidence threshold.
    decisions:
        Decision log (docs/data-contracts.md). Rows with ``pilot.pilot_window.start_ts
        <= timestamp < end_ts`` count. Nulls in a flag column are left out of
        that flag's denominator (contract-valid data has none).
    cases:
        Cases with ``cohort`` agent / control / baseline; None when the pilot
        names no cases data set (efficiency then has no data).
    adoption:
        User x week adoption table; None when the pilot names none (adoption and
        the adoption-based override rate then have no data).
    confidence, seed:
        Interval coverage and bootstrap seed.

    Raises
    ------
    ContractError
        A table lacks a column the KPIs need, or a count exceeds its denominator.
    """
    stats.z_value(confidence)  # validates 0 < confidence < 1
    _require_columns(decisions, "decisions", _DECISION_COLUMNS)
    if cases is not None:
        _require_columns(cases, "cases", _CASE_COLUMNS)
    if adoption is not None:
        _require_columns(adoption, "adoption", _ADOPTION_COLUMNS)

    rate = pilot.costs.review_hourly_rate_usd
    window = _in_window(decisions, decisions.timestamp, pilot.pilot_window)
    totals = _decision_totals(window, rate, pilot.confidence_threshold)
    window_text = _window_text(pilot.pilot_window.start, pilot.pilot_window.end)
    empty_reason = f"no decisions in the pilot window ({window_text})"

    cluster_by = pilot.statistics.cluster_by
    clustering = _decision_clustering(
        window, cluster_by, rate, pilot.confidence_threshold, totals, pilot.statistics.few_clusters
    )
    completion, completion_figs = _completion(totals, confidence, empty_reason, clustering)
    reasons = _escalation_by_reason(window, totals, confidence)
    escalation_fig = _proportion_figure(
        "escalation_rate",
        totals["escalated"],
        totals["escalated_n"],
        confidence,
        "escalated / decisions in the pilot window",
        _null_reason("escalated", totals["decisions"], empty_reason),
        _left_out_note("escalated", totals["escalated_n"], totals["decisions"]),
        clustering,
        "escalated",
    )
    override_log_fig = _proportion_figure(
        "override_rate_decision_log",
        totals["overridden"],
        totals["overridden_n"],
        confidence,
        "overridden / decisions in the pilot window (decision log)",
        _null_reason("overridden", totals["decisions"], empty_reason),
        _left_out_note("overridden", totals["overridden_n"], totals["decisions"]),
        clustering,
        "overridden",
    )
    low_conf_fig = _proportion_figure(
        "low_confidence_share",
        totals["below_threshold"],
        totals["confidence_n"],
        confidence,
        f"decisions with confidence < {pilot.confidence_threshold:g} (the pilot's "
        "confidence threshold) / decisions with a confidence",
        _null_reason("confidence", totals["decisions"], empty_reason),
        _left_out_note("confidence", totals["confidence_n"], totals["decisions"]),
        clustering,
        "below_threshold",
    )
    cost_fig, cost_breakdown, cost = _cost(totals, pilot, confidence, empty_reason, clustering)
    efficiency, efficiency_fig, weekly_cycle = _efficiency(
        cases, pilot, confidence, seed, cluster_by
    )
    adoption_summary, adoption_figs, weekly_adoption = _adoption(
        adoption, pilot, confidence, cluster_by
    )

    figures = {
        f.kpi: f
        for f in [
            *completion_figs,
            efficiency_fig,
            *adoption_figs,
            override_log_fig,
            cost_fig,
            escalation_fig,
            low_conf_fig,
        ]
    }
    kpis = _kpi_frame(pilot, [figures[k] for k in KPI_LABELS])
    for name in ("override_rate", "override_rate_decision_log"):
        f = figures[name]
        adoption_summary[name] = {
            "estimate": f.estimate,
            "low": f.low,
            "high": f.high,
            "n": f.n,
            "design_effect": f.design_effect,
            "cluster_by": f.cluster_by,
        }
    weekly = _weekly_decisions(window, rate, confidence)

    table = KpiTable(
        pilot_name=pilot.name,
        confidence=confidence,
        seed=seed,
        pilot_window=(pilot.pilot_window.start, pilot.pilot_window.end),
        baseline_window=(pilot.baseline_window.start, pilot.baseline_window.end),
        kpis=kpis,
        weekly=weekly,
        weekly_adoption=weekly_adoption,
        weekly_cycle_time=weekly_cycle,
        completion=completion,
        escalation_by_reason=reasons,
        cost_breakdown=cost_breakdown,
        cost=cost,
        efficiency=efficiency,
        adoption=adoption_summary,
        cluster_by=cluster_by,
    )
    table.flags = _flags(table, totals, cases is None, adoption is None, window_text)
    return table


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
@dataclass
class _Figure:
    kpi: str
    estimate: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    method: str = ""
    note: str = ""
    no_data: str | None = None  # reason, when there is no figure
    se: float = math.nan  # standard error of the estimate (cluster-robust when clustered)
    design_effect: float = math.nan
    clusters: int = 0
    cluster_by: str = "none"
    low_iid: float = math.nan  # the interval if the units were independent
    high_iid: float = math.nan
    interval_method: str = "cr1"  # "cr1" or "few-cluster bootstrap" (what low/high are)
    low_cr1: float = math.nan  # the CR1 + t(G - 1) interval, kept beside the bootstrap's
    high_cr1: float = math.nan
    loo_low: float = math.nan  # lowest lower / highest upper CR1 bound leaving out one cluster
    loo_high: float = math.nan


def _no_data(kpi: str, reason: str, method: str, n: int = 0) -> _Figure:
    return _Figure(kpi, n=n, method=method, note=f"no data ({reason})", no_data=reason)


@dataclass(frozen=True)
class _Clustering:
    """How the figures of one data set are clustered: the level used and the engine's sums."""

    level: str = "none"
    sums: dict[str, clustered.ClusterSums] = field(default_factory=dict)
    note: str = ""  # e.g. a fallback from user to case
    few: int = clustered.FEW_CLUSTERS  # below this many clusters: the few-cluster bootstrap

    @property
    def noun(self) -> str:
        return {"week": "weeks", "user": "users", "case": "cases"}.get(self.level, "units")


_INDEPENDENT = _Clustering()


def _method_suffix(clustering: _Clustering, iid_name: str) -> str:
    if clustering.level == "none":
        return f"{iid_name} (decisions treated as independent: statistics.cluster_by none)"
    return (
        f"cluster-robust (CR1 sandwich) interval clustered by {clustering.level}, Student t "
        f"with clusters - 1 degrees of freedom, never narrower than the {iid_name}"
    )


def _with_clustering(
    fig: _Figure,
    sums_key: str,
    clustering: _Clustering,
    se_iid: float,
    confidence: float,
    bounds: tuple[float, float],
) -> _Figure:
    """Put the honest (clustered) bounds into ``fig.low``/``high``, keeping the independent ones."""
    fig.low_iid, fig.high_iid, fig.se = fig.low, fig.high, se_iid
    fig.cluster_by = clustering.level
    sums = clustering.sums.get(sums_key)
    if clustering.level == "none" or sums is None:
        fig.clusters = fig.n
        fig.design_effect = 1.0
        return fig
    se = clustered.cluster_robust_se(fig.n, sums.sq_residuals, sums.clusters)
    ci = clustered.clustered_interval(
        fig.estimate, se, sums.clusters, (fig.low, fig.high), se_iid, confidence, bounds
    )
    fig.low, fig.high = ci.low, ci.high
    fig.low_cr1, fig.high_cr1 = ci.low, ci.high
    fig.se, fig.design_effect, fig.clusters = ci.se, ci.design_effect, ci.clusters
    extra = []
    if sums.totals and 2 < sums.clusters < clustering.few:
        few = clustered.few_cluster_interval(sums.totals, sums.counts, confidence, bounds)
        if math.isfinite(few.low) and math.isfinite(few.high):
            low = few.low if not math.isfinite(fig.low_iid) else min(few.low, fig.low_iid)
            high = few.high if not math.isfinite(fig.high_iid) else max(few.high, fig.high_iid)
            fig.low, fig.high = low, high
            fig.interval_method = "few-cluster bootstrap"
            fig.method += (
                f"; fewer than {clustering.few} {clustering.noun}: judged with the restricted "
                f"wild cluster bootstrap-t (Webb weights, {few.reps:,} seeded replications), "
                "never narrower than the independent interval; CR1 kept beside it"
            )
        fig.loo_low, fig.loo_high = clustered.leave_one_out_bounds(
            sums.totals, sums.counts, confidence, bounds
        )
    if clustering.note:
        extra.append(clustering.note)
    if sums.clusters < 2:
        extra.append(
            f"only {sums.clusters} {clustering.level}: the variation between "
            f"{clustering.noun} cannot be estimated; independent interval shown"
        )
    if extra:
        fig.note = "; ".join([fig.note, *extra]) if fig.note else "; ".join(extra)
    return fig


def _proportion_figure(
    kpi: str,
    successes: int,
    n: int,
    confidence: float,
    method: str,
    no_data_reason: str | None,
    note: str = "",
    clustering: _Clustering = _INDEPENDENT,
    sums_key: str | None = None,
) -> _Figure:
    method = f"{method}; {_method_suffix(clustering, 'Wilson score interval')}"
    if n == 0:
        fig = _no_data(kpi, no_data_reason or "zero denominator", method)
        fig.cluster_by = clustering.level
        return fig
    low, high = _wilson(successes, n, confidence, kpi)
    p = successes / n
    fig = _Figure(kpi, p, low, high, n, method, note)
    se_iid = math.sqrt(p * (1 - p) / n)
    return _with_clustering(fig, sums_key or kpi, clustering, se_iid, confidence, (0.0, 1.0))


def _wilson(successes: int, n: int, confidence: float, what: str) -> tuple[float, float]:
    if successes > n:
        raise ContractError(
            f"{what}: {successes:,} successes out of {n:,} is impossible; a count exceeds its "
            "denominator (check the data set against docs/data-contracts.md)"
        )
    if n == 0:
        return (math.nan, math.nan)
    return stats.wilson_interval(successes, n, confidence)


def _null_reason(column: str, decisions: int, empty_reason: str) -> str:
    if decisions == 0:
        return empty_reason
    return f"{column} is null on all {decisions:,} decisions in the pilot window"


def _left_out_note(column: str, known: int, decisions: int) -> str:
    missing = decisions - known
    if decisions and missing:
        return f"{missing:,} decisions with a null {column} left out"
    return ""


def _kpi_frame(pilot: Pilot, figures: list[_Figure]) -> pd.DataFrame:
    rows = []
    for f in figures:
        threshold = pilot.threshold(f.kpi)
        rows.append(
            {
                "kpi": f.kpi,
                "label": KPI_LABELS[f.kpi],
                "headline": f.kpi in _HEADLINE,
                "estimate": float(f.estimate),
                "low": float(f.low),
                "high": float(f.high),
                "n": int(f.n),
                "unit": KPI_NAMES.get(f.kpi, "proportion"),
                "status": "no data" if f.no_data is not None else "ok",
                "method": f.method,
                "note": f.note,
                "comparator": threshold.comparator if threshold else None,
                "threshold": threshold.value if threshold else math.nan,
                "min_samples": threshold.min_samples if threshold else pd.NA,
                "se": float(f.se),
                "design_effect": float(f.design_effect),
                "clusters": int(f.clusters),
                "cluster_by": f.cluster_by,
                "low_iid": float(f.low_iid),
                "high_iid": float(f.high_iid),
                "interval_method": f.interval_method,
                "low_cr1": float(f.low_cr1),
                "high_cr1": float(f.high_cr1),
                "loo_low": float(f.loo_low),
                "loo_high": float(f.loo_high),
            }
        )
    frame = pd.DataFrame(rows, columns=KPI_COLUMNS)
    frame["n"] = frame["n"].astype("int64")
    frame["clusters"] = frame["clusters"].astype("int64")
    frame["min_samples"] = frame["min_samples"].astype("Int64")
    # Object dtype keeps None (pandas' string dtype would turn it into NaN).
    frame["comparator"] = pd.Series([r["comparator"] for r in rows], dtype=object)
    return frame


# --------------------------------------------------------------------------------------
# Decision log
# --------------------------------------------------------------------------------------
def _require_columns(table: ir.Table, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ContractError(
            f"{name}: missing column(s) {missing} needed for the KPIs; "
            f"the {name} contract in docs/data-contracts.md lists every column"
        )


def _in_window(table: ir.Table, column: ir.Column, window: Any) -> ir.Table:
    return table.filter((column >= window.start_ts) & (column < window.end_ts))


def _total_cost(t: ir.Table, rate: float) -> ir.FloatingValue:
    return t.model_cost_usd + t.tool_cost_usd + t.review_minutes / 60.0 * rate


def _decision_totals(t: ir.Table, rate: float, confidence_threshold: float) -> dict[str, Any]:
    """One aggregate query over the window; returns plain Python numbers (0 for empty sums)."""
    cost = _total_cost(t, rate)
    has_cost = cost.notnull()
    agg = t.aggregate(
        decisions=t.count(),
        completed=t.completed.sum(),
        completed_n=t.completed.count(),
        accepted=t.accepted.sum(),
        accepted_n=t.accepted.count(),
        both=(t.completed & t.accepted).sum(),
        completed_only=(t.completed & ~t.accepted).sum(),
        accepted_only=(~t.completed & t.accepted).sum(),
        neither=(~t.completed & ~t.accepted).sum(),
        overridden=t.overridden.sum(),
        overridden_n=t.overridden.count(),
        escalated=t.escalated.sum(),
        escalated_n=t.escalated.count(),
        below_threshold=(t.confidence < confidence_threshold).sum(),
        confidence_n=t.confidence.count(),
        cost_n=cost.count(),
        cost_mean=cost.mean(),
        cost_std=cost.std(how="sample"),
        model_usd=t.model_cost_usd.sum(where=has_cost),
        tool_usd=t.tool_cost_usd.sum(where=has_cost),
        review_usd=(t.review_minutes / 60.0 * rate).sum(where=has_cost),
    ).execute()
    row = agg.iloc[0].to_dict()
    # a DISTINCT inside the aggregate above makes DuckDB run the whole query on its
    # slow path (3.2 s against 0.15 s + 1.05 s as two queries on 10M decisions)
    row["cases"] = t.case_id.nunique().execute()
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in ("cost_mean", "cost_std", "model_usd", "tool_usd", "review_usd"):
            out[key] = _float(value)
        else:
            out[key] = _int(value)
    return out


def _decision_clustering(
    t: ir.Table,
    cluster_by: str,
    rate: float,
    confidence_threshold: float,
    totals: dict[str, Any],
    few: int = clustered.FEW_CLUSTERS,
) -> _Clustering:
    """The engine's cluster sums for every decision-log figure (one aggregate, one row back;
    with fewer than ``few`` clusters, the per-cluster sums too)."""
    key, level, note = clustered.decision_cluster_key(t, cluster_by)
    if key is None or totals["decisions"] == 0:
        return _Clustering(level, {}, note)

    def flag(col: ir.BooleanValue) -> tuple[ir.Value, ir.Value]:
        return col.cast("int64").fill_null(0), col.notnull().cast("int64")

    def ratio(k: str, n: str) -> float:
        return totals[k] / totals[n] if totals[n] else 0.0

    cost = _total_cost(t, rate)
    below = t.confidence < confidence_threshold
    figures = {
        "accepted": (*flag(t.accepted), ratio("accepted", "accepted_n")),
        "completed": (*flag(t.completed), ratio("completed", "completed_n")),
        "escalated": (*flag(t.escalated), ratio("escalated", "escalated_n")),
        "overridden": (*flag(t.overridden), ratio("overridden", "overridden_n")),
        "below_threshold": (
            below.cast("int64").fill_null(0),
            t.confidence.notnull().cast("int64"),
            ratio("below_threshold", "confidence_n"),
        ),
        "cost": (
            cost.fill_null(0.0),
            cost.notnull().cast("int64"),
            totals["cost_mean"] if totals["cost_n"] else 0.0,
        ),
    }
    sums = clustered.cluster_residual_sums(t, key, figures, keep_below=few)
    return _Clustering(level, sums, note, few)


def _int(value: Any) -> int:
    return 0 if value is None or pd.isna(value) else int(value)


def _float(value: Any) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def _completion(
    totals: dict[str, Any],
    confidence: float,
    empty_reason: str,
    clustering: _Clustering = _INDEPENDENT,
) -> tuple[dict[str, Any], list[_Figure]]:
    decisions = totals["decisions"]
    business = _proportion_figure(
        "task_completion_rate",
        totals["accepted"],
        totals["accepted_n"],
        confidence,
        "accepted without correction / decisions in the pilot window",
        _null_reason("accepted", decisions, empty_reason),
        _left_out_note("accepted", totals["accepted_n"], decisions),
        clustering,
        "accepted",
    )
    technical = _proportion_figure(
        "technical_completion_rate",
        totals["completed"],
        totals["completed_n"],
        confidence,
        "well-formed output / decisions in the pilot window",
        _null_reason("completed", decisions, empty_reason),
        _left_out_note("completed", totals["completed_n"], decisions),
        clustering,
        "completed",
    )
    a, b, c, d = (totals[k] for k in ("both", "completed_only", "accepted_only", "neither"))
    gap, gap_low, gap_high = paired_difference_interval(a, b, c, d, confidence)
    if a + b + c + d == 0:
        gap_note = "no data (no decision with both completion flags known)"
    else:
        gap_note = (
            "technical minus business completion: well-formed outputs that were not "
            "accepted without correction. The gap is where adoption problems hide."
        )
        if gap > COMPLETION_GAP_LIMIT:
            gap_note += (
                f" At {gap * 100:.1f} points it is above {COMPLETION_GAP_LIMIT * 100:.0f}: "
                "an adoption problem."
            )
    completion = {
        "decisions": decisions,
        "technical": technical.estimate,
        "technical_low": technical.low,
        "technical_high": technical.high,
        "technical_n": technical.n,
        "business": business.estimate,
        "business_low": business.low,
        "business_high": business.high,
        "business_n": business.n,
        "business_low_iid": business.low_iid,
        "business_high_iid": business.high_iid,
        "business_design_effect": business.design_effect,
        "technical_low_iid": technical.low_iid,
        "technical_high_iid": technical.high_iid,
        "technical_design_effect": technical.design_effect,
        "cluster_by": clustering.level,
        "gap": gap,
        "gap_low": gap_low,
        "gap_high": gap_high,
        "gap_n": a + b + c + d,
        "completed_not_accepted": b,
        "accepted_not_completed": c,
        "gap_method": (
            "Newcombe square-and-add interval for a paired difference of proportions "
            "(decisions treated as independent)"
        ),
        "note": gap_note,
    }
    return completion, [business, technical]


def paired_difference_interval(
    both: int,
    first_only: int,
    second_only: int,
    neither: int,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Difference of two proportions measured on the same units, with its interval.

    For the technical-vs-business gap: ``first`` = completed, ``second`` = accepted.
    The difference is ``(first_only - second_only) / n``; the interval is
    Newcombe's square-and-add (hybrid score) interval for paired data (Newcombe
    1998, method 10), built from the Wilson intervals of the two marginal
    proportions and their correlation. Returns ``(difference, low, high)``,
    clipped to [-1, 1]; all NaN when ``n == 0``.
    """
    counts = (both, first_only, second_only, neither)
    if any(x < 0 for x in counts):
        raise ValueError(f"counts must be >= 0, got {counts}")
    n = sum(counts)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    first, second = both + first_only, both + second_only
    p1, p2 = first / n, second / n
    l1, u1 = stats.wilson_interval(first, n, confidence)
    l2, u2 = stats.wilson_interval(second, n, confidence)
    margins = first * (n - first) * second * (n - second)
    if margins == 0:
        phi = 0.0
    else:
        # Newcombe's continuity-corrected correlation estimate.
        cross = both * neither - first_only * second_only
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross >= 0:
            phi = 0.0
        else:
            phi = cross / math.sqrt(margins)
    diff = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 + (p2 - l2) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2)))
    return (diff, max(-1.0, diff - dl), min(1.0, diff + du))


def _escalation_by_reason(t: ir.Table, totals: dict[str, Any], confidence: float) -> pd.DataFrame:
    escalated = t.filter(t.escalated)
    reason = escalated.escalation_reason.cast("string")
    known = reason.isin(list(ESCALATION_REASONS))
    labelled = escalated.select(reason=known.ifelse(reason, ibis.literal("unspecified")))
    grouped = labelled.group_by("reason").aggregate(escalations=labelled.count()).execute()
    counts = {
        str(r): int(c) for r, c in zip(grouped["reason"], grouped["escalations"], strict=True)
    }
    order = list(ESCALATION_REASONS) + (["unspecified"] if counts.get("unspecified") else [])
    total = sum(counts.values())
    decisions = totals["escalated_n"]
    rows = []
    for name in order:
        count = counts.get(name, 0)
        low, high = _wilson(count, decisions, confidence, f"escalations for {name}")
        rows.append(
            {
                "reason": name,
                "escalations": count,
                "share_of_escalations": count / total if total else math.nan,
                "rate_per_decision": count / decisions if decisions else math.nan,
                "rate_low": low,
                "rate_high": high,
            }
        )
    frame = pd.DataFrame(rows, columns=_REASON_COLUMNS)
    frame["escalations"] = frame["escalations"].astype("int64")
    return frame


def _cost(
    totals: dict[str, Any],
    pilot: Pilot,
    confidence: float,
    empty_reason: str,
    clustering: _Clustering = _INDEPENDENT,
) -> tuple[_Figure, pd.DataFrame, dict[str, Any]]:
    rate = pilot.costs.review_hourly_rate_usd
    manual = pilot.costs.manual_cost_per_case_usd
    n = totals["cost_n"]
    method = (
        f"(model + tool cost + review minutes / 60 x ${rate:,.2f}/h) / decisions; "
        + _method_suffix(
            clustering, "Student-t interval from the mean, standard deviation and count"
        )
    )
    parts = {
        "model": totals["model_usd"],
        "tool": totals["tool_usd"],
        "human_review": totals["review_usd"],
    }
    total_usd = sum(0.0 if math.isnan(v) else v for v in parts.values())
    rows = []
    for name, value in parts.items():
        value = 0.0 if math.isnan(value) else value
        rows.append(
            {
                "component": name,
                "total_usd": value if n else math.nan,
                "per_decision_usd": value / n if n else math.nan,
                "share_of_cost": value / total_usd if total_usd > 0 else math.nan,
            }
        )
    breakdown = pd.DataFrame(rows, columns=_COST_COLUMNS)
    decisions_per_case = totals["decisions"] / totals["cases"] if totals["cases"] else math.nan
    if n == 0:
        reason = (
            empty_reason
            if totals["decisions"] == 0
            else "no decision in the pilot window has all three cost columns"
        )
        fig = _no_data("cost_per_decision", reason, method)
        fig.cluster_by = clustering.level
        cost = {
            "cost_per_decision_usd": math.nan,
            "manual_cost_per_case_usd": manual,
            "saving_per_decision_usd": math.nan,
            "cost_ratio_to_manual": math.nan,
            "decisions_per_case": decisions_per_case,
            "agent_cost_per_case_usd": math.nan,
            "review_hourly_rate_usd": rate,
            "total_cost_usd": math.nan,
            "note": fig.note,
        }
        return fig, breakdown, cost
    mean = totals["cost_mean"]
    low, high = stats.mean_interval(mean, totals["cost_std"], n, confidence)
    per_case = total_usd / totals["cases"] if totals["cases"] else math.nan
    saving = manual - mean
    note = (
        f"manual handling costs ${manual:,.2f} per case: "
        + (
            f"the agent saves ${saving:,.2f} per decision (it costs {mean / manual:.0%} of manual)"
            if saving >= 0
            else f"the agent costs ${-saving:,.2f} more per decision than manual "
            f"({mean / manual:.0%} of manual)"
        )
        + (
            f"; {decisions_per_case:.2f} decisions per case, ${per_case:,.2f} per case"
            if totals["cases"]
            else ""
        )
    )
    left_out = totals["decisions"] - n
    if left_out:
        note += f"; {left_out:,} decisions with a null cost column left out"
    if not (math.isfinite(low) and math.isfinite(high)):
        note += "; one decision: no interval"
    fig = _Figure("cost_per_decision", mean, low, high, n, method, note)
    std = totals["cost_std"]
    se_iid = std / math.sqrt(n) if n > 1 and math.isfinite(std) else math.nan
    fig = _with_clustering(fig, "cost", clustering, se_iid, confidence, (-math.inf, math.inf))
    cost = {
        "cost_per_decision_usd": mean,
        "cost_low": fig.low,
        "cost_high": fig.high,
        "cost_low_iid": fig.low_iid,
        "cost_high_iid": fig.high_iid,
        "cost_design_effect": fig.design_effect,
        "manual_cost_per_case_usd": manual,
        "saving_per_decision_usd": saving,
        "cost_ratio_to_manual": mean / manual,
        "decisions_per_case": decisions_per_case,
        "agent_cost_per_case_usd": per_case,
        "review_hourly_rate_usd": rate,
        "total_cost_usd": total_usd,
        "note": note,
    }
    return fig, breakdown, cost


def _weekly_decisions(t: ir.Table, rate: float, confidence: float) -> pd.DataFrame:
    """Per-week aggregates of the decision log (week = Monday of the ISO week)."""
    m = t.mutate(week=t.timestamp.truncate("W").cast("date"), cost=_total_cost(t, rate))
    weekly = (
        m.group_by("week")
        .aggregate(
            decisions=m.count(),
            completed=m.completed.sum(),
            completed_n=m.completed.count(),
            accepted=m.accepted.sum(),
            accepted_n=m.accepted.count(),
            escalated=m.escalated.sum(),
            escalated_n=m.escalated.count(),
            overridden=m.overridden.sum(),
            overridden_n=m.overridden.count(),
            cost_n=m.cost.count(),
            cost_mean=m.cost.mean(),
            cost_std=m.cost.std(how="sample"),
        )
        .order_by("week")
        .execute()
    )
    rows = []
    for r in weekly.to_dict(orient="records"):
        row: dict[str, Any] = {"week": _as_date(r["week"]), "decisions": _int(r["decisions"])}
        for flag, prefix in (
            ("completed", "technical"),
            ("accepted", "business"),
            ("escalated", "escalation"),
            ("overridden", "override"),
        ):
            k, n = _int(r[flag]), _int(r[f"{flag}_n"])
            row[flag] = k
            low, high = _wilson(k, n, confidence, f"weekly {flag}")
            row[f"{prefix}_rate"] = k / n if n else math.nan
            row[f"{prefix}_low"], row[f"{prefix}_high"] = low, high
        n_cost = _int(r["cost_n"])
        mean = _float(r["cost_mean"])
        row["cost_per_decision"] = mean if n_cost else math.nan
        row["cost_low"], row["cost_high"] = stats.mean_interval(
            mean, _float(r["cost_std"]), n_cost, confidence
        )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=_WEEKLY_COLUMNS)
    for col in ("decisions", "completed", "accepted", "escalated", "overridden"):
        frame[col] = frame[col].astype("int64")
    return frame


def _as_date(value: Any) -> dt.date:
    return pd.Timestamp(value).date()


# --------------------------------------------------------------------------------------
# Cases: efficiency gain
# --------------------------------------------------------------------------------------
def _cycle_hours(t: ir.Table) -> ir.FloatingValue:
    """Wall-clock hours from opened_at to closed_at, computed in the engine (null while open)."""
    return t.closed_at.delta(t.opened_at, unit="microsecond").cast("float64") / 3.6e9


def _efficiency(
    cases: ir.Table | None,
    pilot: Pilot,
    confidence: float,
    seed: int,
    cluster_by: str = "none",
) -> tuple[dict[str, Any], _Figure, pd.DataFrame]:
    method = (
        "1 - median(agent cycle time) / median(comparison cycle time), wall-clock hours from "
        "opened to closed; bootstrap of the ratio of medians from each cohort's exact bootstrap "
        "distribution of the median (binomial formula on the engine's counts around the "
        f"median), {stats.DEFAULT_RESAMPLES:,} seeded draws per cohort"
    )
    if cluster_by == "week":
        method += (
            "; clustered by week: each median linearised (Woodruff: its design effect is that "
            "of the share of cases at or below it, paired week by week for a concurrent "
            "control), CR1 variance of log(ratio), Student t with weeks - 1 degrees of "
            "freedom, never narrower than the case bootstrap"
        )
    else:
        method += (
            "; cases treated as independent (statistics.cluster_by "
            f"{cluster_by}: the cases data have no user, and each case is its own cluster)"
            if cluster_by in ("user", "case")
            else "; cases treated as independent (statistics.cluster_by none)"
        )
    efficiency: dict[str, Any] = {
        "comparison": None,
        "comparison_label": None,
        "cohorts": {},
        "n_agent": 0,
        "n_comparison": 0,
        "open_agent": 0,
        "open_comparison": 0,
        "agent_median_hours": math.nan,
        "agent_median_low": math.nan,
        "agent_median_high": math.nan,
        "comparison_median_hours": math.nan,
        "comparison_median_low": math.nan,
        "comparison_median_high": math.nan,
        "ratio": math.nan,
        "ratio_low": math.nan,
        "ratio_high": math.nan,
        "gain": math.nan,
        "gain_low": math.nan,
        "gain_high": math.nan,
        "note": "",
    }
    if cases is None:
        fig = _no_data("efficiency_gain", "the pilot names no cases data set", method)
        efficiency["note"] = fig.note
        return efficiency, fig, pd.DataFrame(columns=_WEEKLY_CYCLE_COLUMNS)

    pw, bw = pilot.pilot_window, pilot.baseline_window
    cohort = cases.cohort.cast("string")
    in_pilot = cohort.isin(["agent", "control"]) & (cases.opened_at >= pw.start_ts)
    in_pilot &= cases.opened_at < pw.end_ts
    in_baseline = (cohort == "baseline") & (cases.opened_at >= bw.start_ts)
    in_baseline &= cases.opened_at < bw.end_ts
    scoped = cases.filter(in_pilot | in_baseline).mutate(
        cohort=cohort, cycle_hours=_cycle_hours(cases)
    )

    counts = (
        scoped.group_by("cohort")
        .aggregate(cases=scoped.count(), closed=scoped.cycle_hours.count())
        .execute()
    )
    cohorts = {
        name: {"cases": 0, "closed": 0, "open": 0} for name in ("agent", "control", "baseline")
    }
    for r in counts.to_dict(orient="records"):
        n_cases, closed = _int(r["cases"]), _int(r["closed"])
        cohorts[str(r["cohort"])] = {"cases": n_cases, "closed": closed, "open": n_cases - closed}
    efficiency["cohorts"] = cohorts

    by_week = scoped.mutate(week=scoped.opened_at.truncate("W").cast("date"))
    weekly = (
        by_week.group_by(["week", "cohort"])
        .aggregate(
            cases=by_week.count(),
            closed=by_week.cycle_hours.count(),
            median_cycle_hours=by_week.cycle_hours.median(),
        )
        .order_by(["week", "cohort"])
        .execute()
    )
    weekly_rows = [
        {
            "week": _as_date(r["week"]),
            "cohort": str(r["cohort"]),
            "cases": _int(r["cases"]),
            "closed": _int(r["closed"]),
            "open": _int(r["cases"]) - _int(r["closed"]),
            "median_cycle_hours": _float(r["median_cycle_hours"]),
        }
        for r in weekly.to_dict(orient="records")
    ]
    weekly_cycle = pd.DataFrame(weekly_rows, columns=_WEEKLY_CYCLE_COLUMNS)

    if cohorts["control"]["closed"] > 0:
        comparison, label = "control", CONTROL_COMPARISON
    elif cohorts["baseline"]["closed"] > 0:
        comparison, label = "baseline", BASELINE_COMPARISON
    else:
        comparison, label = None, None
    efficiency.update(
        comparison=comparison,
        comparison_label=label,
        n_agent=cohorts["agent"]["closed"],
        open_agent=cohorts["agent"]["open"],
    )
    if comparison is not None:
        efficiency.update(
            n_comparison=cohorts[comparison]["closed"],
            open_comparison=cohorts[comparison]["open"],
        )

    pilot_text = _window_text(pw.start, pw.end)
    if cohorts["agent"]["closed"] == 0:
        reason = f"no closed agent-cohort cases opened in the pilot window ({pilot_text})"
        if cohorts["agent"]["open"]:
            reason += f"; {cohorts['agent']['open']:,} still open"
        fig = _no_data("efficiency_gain", reason, method)
        efficiency["note"] = fig.note
        return efficiency, fig, weekly_cycle
    if comparison is None:
        reason = (
            "no closed control cases in the pilot window and no closed baseline cases in the "
            f"baseline window ({_window_text(bw.start, bw.end)}) to compare with"
        )
        fig = _no_data("efficiency_gain", reason, method, n=0)
        efficiency["note"] = fig.note
        return efficiency, fig, weekly_cycle

    dists = _cycle_distributions(
        scoped, {name: cohorts[name]["closed"] for name in ("agent", comparison)}
    )
    agent_dist, comparison_dist = dists["agent"], dists[comparison]
    ratio, ratio_low, ratio_high = stats.median_ratio_distribution_interval(
        agent_dist, comparison_dist, confidence=confidence, seed=seed
    )
    agent_low, agent_high = stats.median_distribution_interval(agent_dist, confidence)
    comp_low, comp_high = stats.median_distribution_interval(comparison_dist, confidence)
    efficiency.update(
        agent_median_hours=agent_dist.median,
        agent_median_low=agent_low,
        agent_median_high=agent_high,
        comparison_median_hours=comparison_dist.median,
        comparison_median_low=comp_low,
        comparison_median_high=comp_high,
        ratio=ratio,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
    )
    n = min(agent_dist.n, comparison_dist.n)
    if math.isnan(ratio):
        fig = _no_data(
            "efficiency_gain",
            f"the {comparison} cohort's median cycle time is 0 hours; no ratio",
            method,
            n=n,
        )
        efficiency["note"] = fig.note
        return efficiency, fig, weekly_cycle

    gain, gain_low_iid, gain_high_iid = 1 - ratio, 1 - ratio_high, 1 - ratio_low
    gain_low, gain_high = gain_low_iid, gain_high_iid
    z = stats.z_value(confidence)
    se_iid = (ratio_high - ratio_low) / (2 * z)
    se, deff, clusters = se_iid, 1.0, n
    level = "case" if cluster_by in ("user", "case") else "none"
    if cluster_by == "week":
        level = "week"
        weekly_ci = _week_clustered_ratio(
            scoped, comparison, agent_dist, comparison_dist, ratio, confidence
        )
        clusters, deff = weekly_ci["clusters"], weekly_ci["design_effect"]
        if weekly_ci["low"] is not None:
            r_low = min(weekly_ci["low"], ratio_low)
            r_high = max(weekly_ci["high"], ratio_high)
            efficiency.update(ratio_low=r_low, ratio_high=r_high)
            gain_low, gain_high = 1 - r_high, 1 - r_low
            se = weekly_ci["se"]
    efficiency.update(
        gain=gain,
        gain_low=gain_low,
        gain_high=gain_high,
        gain_low_iid=gain_low_iid,
        gain_high_iid=gain_high_iid,
        design_effect=deff,
        clusters=clusters,
        cluster_by=level,
    )
    if comparison == "control":
        note = (
            f"{label}: agent and control cases opened in the pilot window; median "
            f"{efficiency['agent_median_hours']:,.1f} h vs "
            f"{efficiency['comparison_median_hours']:,.1f} h"
        )
    else:
        note = (
            f"{label}: agent cases in the pilot window against baseline cases in the baseline "
            f"window; seasonal or volume changes are not controlled for; median "
            f"{efficiency['agent_median_hours']:,.1f} h vs "
            f"{efficiency['comparison_median_hours']:,.1f} h"
        )
    open_total = efficiency["open_agent"] + efficiency["open_comparison"]
    if open_total:
        note += (
            f"; open cases left out: {efficiency['open_agent']:,} agent, "
            f"{efficiency['open_comparison']:,} {comparison}"
        )
    if cluster_by == "week" and clusters < 2:
        note += (
            f"; only {clusters} week: the variation between weeks cannot be estimated; "
            "case bootstrap shown"
        )
    efficiency["note"] = note
    fig = _Figure("efficiency_gain", gain, gain_low, gain_high, n, method, note)
    fig.se, fig.design_effect, fig.clusters, fig.cluster_by = se, deff, clusters, level
    fig.low_iid, fig.high_iid = gain_low_iid, gain_high_iid
    return efficiency, fig, weekly_cycle


def _distribution_sd(dist: stats.MedianBootstrap) -> float:
    """Standard deviation of an exact median bootstrap distribution (the median's independent SE)."""
    cdf = np.asarray(dist.cdf, dtype=float)
    pmf = np.diff(np.concatenate(([0.0], cdf)))
    pmf = np.clip(pmf, 0.0, None)
    total = pmf.sum()
    if total <= 0:
        return math.nan
    mean = float(pmf @ dist.values) / total
    return math.sqrt(float(pmf @ (dist.values - mean) ** 2) / total)


def _weekly_median_counts(
    scoped: ir.Table, medians: dict[str, float]
) -> dict[str, dict[dt.date, tuple[int, int]]]:
    """Per cohort and week (Monday of ``opened_at``): closed cases at or below the median, closed.

    One engine aggregate, one row per cohort and week.
    """
    rows = scoped.filter(scoped.cycle_hours.notnull() & scoped.cohort.isin(list(medians)))
    median = ibis.cases(
        *[(rows.cohort == name, ibis.literal(float(m))) for name, m in medians.items()],
        else_=ibis.null("float64"),
    )
    marked = rows.mutate(
        week=rows.opened_at.truncate("W").cast("date"),
        at_or_below=(rows.cycle_hours <= median).cast("int64"),
    )
    frame = (
        marked.group_by(["cohort", "week"])
        .aggregate(below=marked.at_or_below.sum(), closed=marked.count())
        .execute()
    )
    out: dict[str, dict[dt.date, tuple[int, int]]] = {name: {} for name in medians}
    for r in frame.to_dict(orient="records"):
        out[str(r["cohort"])][_as_date(r["week"])] = (_int(r["below"]), _int(r["closed"]))
    return out


def _week_clustered_ratio(
    scoped: ir.Table,
    comparison: str,
    agent: stats.MedianBootstrap,
    other: stats.MedianBootstrap,
    ratio: float,
    confidence: float,
) -> dict[str, Any]:
    """Week-clustered interval of the ratio of medians, agent over ``comparison``.

    Each median is linearised (:func:`clustered.median_ratio_variance`): its
    design effect is that of the share of cases at or below it, whose per-week
    counts come from the engine. Agent and control ran in the same weeks, so
    their residuals are paired week by week; a baseline's weeks are its own.
    The interval is ``ratio x exp(+/- t(G - 1) x se(log ratio))``; bounds None
    when ``G < 2`` or a median's spread is unknown.
    """
    counts = _weekly_median_counts(scoped, {"agent": agent.median, comparison: other.median})
    cv_a, cv_b = _distribution_sd(agent) / agent.median, _distribution_sd(other) / other.median
    paired = comparison == "control"
    if paired:
        weeks = sorted(set(counts["agent"]) | set(counts[comparison]))
        arrays = [
            (
                np.array([counts[name].get(w, (0, 0))[0] for w in weeks], dtype=float),
                np.array([counts[name].get(w, (0, 0))[1] for w in weeks], dtype=float),
            )
            for name in ("agent", comparison)
        ]
    else:
        arrays = [
            (
                np.array([b for b, _ in counts[name].values()], dtype=float),
                np.array([n for _, n in counts[name].values()], dtype=float),
            )
            for name in ("agent", comparison)
        ]
    none = {"clusters": 0, "low": None, "high": None, "se": math.nan, "design_effect": math.nan}
    if not (math.isfinite(cv_a) and math.isfinite(cv_b)) or agent.median <= 0:
        return none
    mv = clustered.median_ratio_variance((*arrays[0], cv_a), (*arrays[1], cv_b), paired=paired)
    if mv.clusters < 2 or not math.isfinite(mv.clustered):
        return {**none, "clusters": mv.clusters}
    half = clustered.t_value(mv.clusters - 1, confidence) * math.sqrt(mv.clustered)
    return {
        "clusters": mv.clusters,
        "low": ratio * math.exp(-half),
        "high": ratio * math.exp(half),
        "se": ratio * math.sqrt(mv.clustered),
        "design_effect": mv.design_effect,
    }


#: Band widenings tried (x2 each) when an engine's quantiles leave a band short,
#: before falling back to every distinct value (only a non-exact quantile can need it).
_BAND_ATTEMPTS = 3


def _cycle_distributions(
    scoped: ir.Table, closed: dict[str, int]
) -> dict[str, stats.MedianBootstrap]:
    """Exact bootstrap distribution of each cohort's median cycle time (``closed`` > 0 each).

    Three small queries whatever the number of cases: the cuts (around the order
    statistics ``stats.median_band_ranks`` from the middle, by a histogram) and,
    per cohort, the count below the lower cut and the distinct cycle times with
    their counts between the cuts: about ``7 * sqrt(closed)`` rows per cohort.
    The counts are exact whatever the cuts; if the cuts leave the band short
    (probability left out above ``stats.MEDIAN_BAND_MAX_LOST``) it is widened.
    """
    sds = stats.MEDIAN_BAND_SDS
    for attempt in range(_BAND_ATTEMPTS + 1):
        full = attempt == _BAND_ATTEMPTS  # last resort: the whole range
        bands = _cycle_bands(scoped, closed, None if full else sds)
        lost = [
            stats.median_band_lost_mass(b.n_below, int(b.counts.sum()), b.n_total)
            for b in bands.values()
        ]
        if full or max(lost) <= stats.MEDIAN_BAND_MAX_LOST:
            break
        sds *= 2
    return {name: stats.median_bootstrap_distribution(*band) for name, band in bands.items()}


#: Equal-width bins per cohort for finding the band's cuts (rows fetched: bins x cohorts).
_CUT_BINS = 4096


def _histogram_cuts(
    scoped: ir.Table, closed: dict[str, int], sds: float
) -> dict[str, tuple[float | None, float | None]]:
    """Cuts that enclose the order statistics ``stats.median_band_ranks`` names.

    Two streaming aggregates with memory bounded whatever the number of cases
    (an exact quantile would hold every value): each cohort's range, then a
    histogram of ``_CUT_BINS`` equal-width bins. The lower cut is the lower edge
    of the bin holding the lower rank, the upper cut the upper edge of the bin
    holding the upper rank, so the band holds at least the ranks asked for (plus
    the rest of those two bins). The band's counts are exact whatever the cuts;
    the caller widens the band if a bin edge fell the wrong side by rounding.
    """
    rows = scoped.filter(scoped.cycle_hours.notnull() & scoped.cohort.isin(list(closed)))
    ranges = (
        rows.group_by("cohort")
        .aggregate(low=rows.cycle_hours.min(), high=rows.cycle_hours.max())
        .execute()
        .set_index("cohort")
    )
    cuts: dict[str, tuple[float | None, float | None]] = {n: (None, None) for n in closed}
    widths: dict[str, tuple[float, float]] = {}
    for name in closed:
        low, high = float(ranges.at[name, "low"]), float(ranges.at[name, "high"])
        if high > low:
            widths[name] = (low, (high - low) / _CUT_BINS)
    if not widths:
        return cuts
    cases = [
        (rows.cohort == name, ((rows.cycle_hours - low) / width).floor())
        for name, (low, width) in widths.items()
    ]
    raw_bin = ibis.cases(*cases, else_=ibis.null("float64"))
    binned = rows.filter(rows.cohort.isin(list(widths))).mutate(
        bin=ibis.least(ibis.greatest(raw_bin, 0), _CUT_BINS - 1).cast("int64")
    )
    hist = binned.group_by(["cohort", "bin"]).aggregate(n=binned.count()).execute()
    for name, (low, width) in widths.items():
        lo_rank, hi_rank = stats.median_band_ranks(closed[name], sds)
        mine = hist[hist["cohort"] == name].sort_values("bin")
        through = mine["n"].cumsum().to_numpy()
        bins = mine["bin"].to_numpy()
        lo_bin = int(bins[np.searchsorted(through, lo_rank + 1)])
        hi_bin = int(bins[min(np.searchsorted(through, hi_rank + 1), len(bins) - 1)])
        lo_cut = None if lo_rank == 0 else low + lo_bin * width
        hi_cut = None if hi_rank >= closed[name] - 1 else low + (hi_bin + 1) * width
        cuts[name] = (lo_cut, hi_cut)
    return cuts


def _cycle_bands(
    scoped: ir.Table, closed: dict[str, int], sds: float | None
) -> dict[str, stats.MedianBand]:
    """The bounded summary of each cohort's closed cycle hours around its median.

    ``sds`` None takes every value (no cuts). The cuts come from
    :func:`_histogram_cuts` (no cut on a side where the band reaches the smallest
    or largest value); values below the lower cut come back as one count per
    cohort, values above the upper cut not at all.
    """
    cuts = {name: (None, None) for name in closed}
    if sds is not None:
        cuts = _histogram_cuts(scoped, closed, sds)

    rows = scoped.filter(scoped.cycle_hours.notnull() & scoped.cohort.isin(list(closed)))
    hours = rows.cycle_hours
    below, above = ibis.literal(False), ibis.literal(False)
    for name, (lo_cut, hi_cut) in cuts.items():
        if lo_cut is not None:
            below |= (rows.cohort == name) & (hours < lo_cut)
        if hi_cut is not None:
            above |= (rows.cohort == name) & (hours > hi_cut)
    kept = rows.filter(~above).mutate(value=ibis.ifelse(below, ibis.null("float64"), hours))
    frame = kept.group_by(["cohort", "value"]).aggregate(n=kept.count()).execute()

    bands = {}
    for name, n in closed.items():
        mine = frame[frame["cohort"] == name]
        in_band = mine[mine["value"].notna()].sort_values("value")
        bands[name] = stats.MedianBand(
            values=in_band["value"].to_numpy(dtype=float),
            counts=in_band["n"].to_numpy(dtype=np.int64),
            n_below=int(mine.loc[mine["value"].isna(), "n"].sum()),
            n_total=n,
        )
    return bands


# --------------------------------------------------------------------------------------
# Adoption
# --------------------------------------------------------------------------------------
def _adoption(
    adoption: ir.Table | None, pilot: Pilot, confidence: float, cluster_by: str = "none"
) -> tuple[dict[str, Any], list[_Figure], pd.DataFrame]:
    pw = pilot.pilot_window
    first_end = pw.start + dt.timedelta(days=FIRST_MONTH_DAYS)
    month_text = _window_text(pw.start, first_end - dt.timedelta(days=1))
    adoption_method = (
        "users engaged in a week they were eligible / users eligible in any week of the first "
        f"month (weeks starting {month_text})"
    )
    override_method = (
        "overrides / agent outputs seen, summed over the pilot window's weeks (adoption data)"
    )
    # The adoption table has no case: clustering by case falls back to the user.
    override_level = {"week": "week", "user": "user", "case": "user"}.get(cluster_by, "none")
    override_clustering = _Clustering(
        override_level,
        {},
        "the adoption data have no case: clustered by user" if cluster_by == "case" else "",
    )
    summary: dict[str, Any] = {
        "first_month": {"start": pw.start, "end": first_end - dt.timedelta(days=1)},
        "eligible_users": 0,
        "engaged_users": 0,
        "decisions_seen": 0,
        "overrides": 0,
    }
    if adoption is None:
        reason = "the pilot names no adoption data set"
        figs = [
            _no_data("adoption_rate", reason, adoption_method),
            _no_data("override_rate", reason, override_method),
        ]
        figs[1].cluster_by = override_level
        summary["note"] = figs[0].note
        return summary, figs, pd.DataFrame(columns=_WEEKLY_ADOPTION_COLUMNS)

    t = adoption.mutate(week=adoption.week.cast("date"))
    window = t.filter((t.week >= pw.start) & (t.week <= pw.end))
    first = window.filter(window.week < first_end)

    per_user = first.group_by("user_id").aggregate(
        was_eligible=first.eligible.any(),
        engaged_while_eligible=(first.eligible & first.engaged).any(),
    )
    users = per_user.aggregate(
        eligible_users=per_user.was_eligible.sum(),
        engaged_users=(per_user.was_eligible & per_user.engaged_while_eligible).sum(),
    ).execute()
    eligible = _int(users["eligible_users"].iloc[0])
    engaged = _int(users["engaged_users"].iloc[0])

    seen_totals = window.aggregate(
        decisions_seen=window.decisions_seen.sum(), overrides=window.overrides.sum()
    ).execute()
    seen = _int(seen_totals["decisions_seen"].iloc[0])
    overrides = _int(seen_totals["overrides"].iloc[0])

    adoption_fig = _proportion_figure(
        "adoption_rate",
        engaged,
        eligible,
        confidence,
        adoption_method,
        f"no eligible users in the first month (weeks starting {month_text})",
        f"{engaged:,} of {eligible:,} eligible users engaged in the first month",
    )
    # Each user counts once: users are the units, already independent of each other.
    adoption_fig.method = adoption_method + (
        "; Wilson score interval (each user counted once: the users are the clusters)"
    )
    adoption_fig.cluster_by = "user"
    if override_level != "none" and seen:
        key = window.week if override_level == "week" else window.user_id.cast("string")
        sums = clustered.cluster_residual_sums(
            window,
            key,
            {"overrides": (window.overrides, window.decisions_seen, overrides / seen)},
        )
        override_clustering = _Clustering(override_level, sums, override_clustering.note)
    override_fig = _proportion_figure(
        "override_rate",
        overrides,
        seen,
        confidence,
        override_method,
        "no agent outputs seen in the adoption data for the pilot window",
        "users modifying or replacing outputs is a trust signal, not only usage",
        override_clustering,
        "overrides",
    )
    summary.update(
        eligible_users=eligible,
        engaged_users=engaged,
        decisions_seen=seen,
        overrides=overrides,
        note=adoption_fig.note,
    )

    weekly = (
        window.group_by("week")
        .aggregate(
            users=window.count(),
            eligible_users=window.eligible.sum(),
            engaged_users=(window.eligible & window.engaged).sum(),
            decisions_seen=window.decisions_seen.sum(),
            overrides=window.overrides.sum(),
        )
        .order_by("week")
        .execute()
    )
    rows = []
    for r in weekly.to_dict(orient="records"):
        el, en = _int(r["eligible_users"]), _int(r["engaged_users"])
        sn, ov = _int(r["decisions_seen"]), _int(r["overrides"])
        a_low, a_high = _wilson(en, el, confidence, "weekly adoption")
        o_low, o_high = _wilson(ov, sn, confidence, "adoption overrides")
        rows.append(
            {
                "week": _as_date(r["week"]),
                "users": _int(r["users"]),
                "eligible_users": el,
                "engaged_users": en,
                "adoption_rate": en / el if el else math.nan,
                "adoption_low": a_low,
                "adoption_high": a_high,
                "decisions_seen": sn,
                "overrides": ov,
                "override_rate": ov / sn if sn else math.nan,
                "override_low": o_low,
                "override_high": o_high,
            }
        )
    weekly_adoption = pd.DataFrame(rows, columns=_WEEKLY_ADOPTION_COLUMNS)
    return summary, [adoption_fig, override_fig], weekly_adoption


# --------------------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------------------
def _flags(
    table: KpiTable,
    totals: dict[str, Any],
    no_cases: bool,
    no_adoption: bool,
    window_text: str,
) -> list[Finding]:
    flags: list[Finding] = []
    if totals["decisions"] == 0:
        flags.append(
            Finding(
                PHASE,
                "no_decisions_in_window",
                "warning",
                f"The decision log has no decisions in the pilot window ({window_text}), so "
                "completion, cost and escalation have no data. Check the pilot window dates "
                "and the decision log's timestamps.",
                {"pilot_window": window_text},
            )
        )

    reasons = table.escalation_by_reason.set_index("reason")["escalations"]
    escalations = int(reasons.sum())
    tool = int(reasons.get("tool_failure", 0))
    if escalations and tool:
        others = reasons.drop("tool_failure")
        largest = tool >= int(others.max()) if len(others) else True
        share = tool / escalations
        if largest or share > TOOL_FAILURE_SHARE_LIMIT:
            why = "the largest reason" if largest else ""
            if share > TOOL_FAILURE_SHARE_LIMIT:
                why = (why + " and " if why else "") + (
                    f"more than {TOOL_FAILURE_SHARE_LIMIT:.0%} of escalations"
                )
            flags.append(
                Finding(
                    PHASE,
                    "tool_failures_dominate_escalations",
                    "warning",
                    f"Tool failures cause {share:.0%} of escalations ({tool:,} of "
                    f"{escalations:,}), {why}: an integration problem, not a model problem. "
                    "Fix the tool and data connections before tuning the model.",
                    {
                        "tool_failure_escalations": tool,
                        "escalations": escalations,
                        "share": share,
                        "by_reason": {str(k): int(v) for k, v in reasons.items()},
                    },
                )
            )

    gap = table.completion["gap"]
    if not math.isnan(gap) and gap > COMPLETION_GAP_LIMIT:
        c = table.completion
        flags.append(
            Finding(
                PHASE,
                "completion_gap",
                "warning",
                f"The agent produces a well-formed output on {c['technical']:.1%} of decisions, "
                f"but only {c['business']:.1%} are accepted without correction: a gap of "
                f"{gap * 100:.1f} percentage points (more than {COMPLETION_GAP_LIMIT * 100:.0f}). "
                "That is an adoption "
                "problem: users do not act on outputs that are technically fine.",
                {
                    "technical": c["technical"],
                    "business": c["business"],
                    "gap": gap,
                    "gap_low": c["gap_low"],
                    "gap_high": c["gap_high"],
                },
            )
        )

    for r in table.kpis.to_dict(orient="records"):
        if r["comparator"] is None or r["n"] >= r["min_samples"]:
            continue
        label, minimum = r["label"], int(r["min_samples"])
        if r["status"] == "no data":
            message = (
                f"{label} has {r['note']}: it cannot be judged against its threshold, which "
                f"needs at least {minimum:,} samples."
            )
        else:
            message = (
                f"{label} rests on n={r['n']:,}, below the minimum sample size of {minimum:,} "
                "that the pilot file sets for it: too few to judge it against its threshold."
            )
        flags.append(
            Finding(
                PHASE,
                "below_min_samples",
                "warning",
                message,
                {"kpi": r["kpi"], "n": r["n"], "min_samples": int(r["min_samples"])},
            )
        )

    e = table.efficiency
    if e["comparison"] == "baseline":
        flags.append(
            Finding(
                PHASE,
                "efficiency_vs_baseline",
                "warning",
                "The efficiency gain is measured against the pre-pilot baseline because there is "
                "no concurrent control cohort. That is weaker evidence: changes in season, volume "
                "or staffing between the two periods are not controlled for.",
                {"comparison": e["comparison_label"], "n_baseline": e["n_comparison"]},
            )
        )
    if no_cases:
        flags.append(
            Finding(
                PHASE,
                "no_cases_data",
                "info",
                "The pilot names no cases data set, so the efficiency gain cannot be measured.",
                {},
            )
        )
    if no_adoption:
        flags.append(
            Finding(
                PHASE,
                "no_adoption_data",
                "info",
                "The pilot names no adoption data set, so the adoption and override rates of "
                "users cannot be measured; the decision log's override rate is shown instead.",
                {},
            )
        )
    return flags


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------
def _window_text(start: dt.date, end: dt.date) -> str:
    return f"{start.isoformat()} to {end.isoformat()}"


def _pct_label(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _format_value(x: float, unit: str) -> str:
    if unit == "usd":
        return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"
    return f"{x:.1%}"


def _format_estimate(r: dict[str, Any]) -> str:
    if r["status"] == "no data" or not math.isfinite(r["estimate"]):
        return "no data"
    unit = r["unit"]
    est = _format_value(r["estimate"], unit)
    low, high = r["low"], r["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{est} (no interval: n={int(r['n'])})"
    sep = " to " if low < 0 or high < 0 else "-"
    return f"{est} ({_format_value(low, unit)}{sep}{_format_value(high, unit)})"


def _format_design_effect(r: dict[str, Any]) -> str:
    """``"42.3 (13 weeks)"``: how many times the independent variance the clustered one is."""
    deff, level = r.get("design_effect"), r.get("cluster_by")
    if r["status"] == "no data" or level in (None, "none") or deff is None:
        return ""
    if not math.isfinite(deff):
        return f"n/a ({int(r['clusters'])} {level})"
    noun = {"week": "weeks", "user": "users", "case": "cases"}.get(level, level)
    return f"{deff:,.1f} ({int(r['clusters']):,} {noun})"


def _format_threshold(r: dict[str, Any]) -> str:
    if r["comparator"] is None:
        return "none set"
    return f"{r['comparator']} {_format_value(float(r['threshold']), r['unit'])}"

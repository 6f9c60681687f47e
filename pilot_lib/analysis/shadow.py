"""Shadow mode (phase 2): the agent decided silently while humans did the work.

A shadow decision is a row of the decision log with ``shadow`` true: the agent's
action (``agent_outcome``) and the human's (``human_outcome``) on the same case.
It never counts toward a live KPI (``PilotData.table("decisions")`` leaves it out);
this module compares the two sides:

- the agreement rate (``agent_outcome == human_outcome``) with its interval,
  cluster-robust by ``statistics.cluster_by`` (CR1 sandwich, t on G - 1, never
  narrower than Wilson; Wilson alone with ``cluster_by: none``), overall, per
  segment (``shadow.segment_by``, default the workflow) and per prompt version;
- each kind of disagreement, a pair (agent outcome, human outcome): its count, its
  share of the shadow decisions and of the disagreements, and its cost in dollars,
  from ``shadow.disagreement_costs_usd`` when the pilot file prices the kind, else
  the rows' ``review_minutes`` at ``costs.review_hourly_rate_usd``.

Everything is computed in the engine; only one row per segment or kind leaves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from pilot_lib.analysis import clustered, stats
from pilot_lib.analysis.findings import Finding
from pilot_lib.config import Pilot, PilotFileError, Problem
from pilot_lib.results import to_jsonable

__all__ = [
    "SECTION_HEADING",
    "ShadowReview",
    "agreement_interval",
    "shadow_mode",
    "shadow_review",
]

PHASE = "kpi_baselining"
#: The notebook heading of this section (blocking findings name it for the board page).
SECTION_HEADING = "Shadow mode: agent and human side by side"

_AGREEMENT_COLUMNS = [
    "segment",
    "value",
    "shadow_decisions",
    "agreed",
    "agreement",
    "low",
    "high",
    "clusters",
    "design_effect",
]
_DISAGREEMENT_COLUMNS = [
    "agent_outcome",
    "human_outcome",
    "count",
    "share_of_shadow",
    "share_of_disagreements",
    "review_minutes",
    "cost_usd",
    "cost_basis",
]


@dataclass
class ShadowReview:
    """What shadow mode shows. Shares are fractions; costs US dollars; minutes minutes.

    ``agreement`` holds the overall figure (estimate, low, high, method, clusters,
    design effect); ``by_segment`` one row per value of each ``segment_by`` column
    and ``by_version`` one per prompt version (columns ``_AGREEMENT_COLUMNS``);
    ``disagreements`` one row per kind, most frequent first.
    """

    shadow_decisions: int
    agreed: int
    agreement: dict[str, Any]
    by_segment: pd.DataFrame
    by_version: pd.DataFrame
    disagreements: pd.DataFrame
    settings: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def disagreement_cost_usd(self) -> float:
        """Total dollars of every disagreement (0 when there is none)."""
        return float(self.disagreements["cost_usd"].sum()) if len(self.disagreements) else 0.0

    def summary_table(self) -> pd.DataFrame:
        """One row: shadow decisions, agreement with its bounds, the target, the cost."""
        a = self.agreement
        return pd.DataFrame(
            [
                {
                    "shadow decisions": self.shadow_decisions,
                    "agreed": self.agreed,
                    "agreement": a["estimate"],
                    "low": a["low"],
                    "high": a["high"],
                    "target (min_agreement)": self.settings.get("min_agreement"),
                    "disagreement cost (USD)": round(self.disagreement_cost_usd, 2),
                }
            ]
        )

    def agreement_table(self) -> pd.DataFrame:
        """Agreement per segment and per prompt version, one row each."""
        parts = [f for f in (self.by_segment, self.by_version) if len(f)]
        if not parts:
            return pd.DataFrame(columns=_AGREEMENT_COLUMNS)
        return pd.concat(parts, ignore_index=True)

    def disagreement_table(self) -> pd.DataFrame:
        """Each kind of disagreement: count, shares and cost, most frequent first."""
        return self.disagreements.copy()

    def to_result(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "shadow_decisions": self.shadow_decisions,
                "agreed": self.agreed,
                "agreement": self.agreement,
                "by_segment": self.by_segment,
                "by_version": self.by_version,
                "disagreements": self.disagreements,
                "disagreement_cost_usd": self.disagreement_cost_usd,
                "settings": self.settings,
                "findings": self.findings,
            }
        )


def agreement_interval(
    table: ir.Table, agree: ir.BooleanValue, cluster_by: str, confidence: float = 0.95
) -> dict[str, Any]:
    """Share of ``table``'s rows where ``agree`` holds, with its honest interval.

    Cluster-robust (CR1, t on G - 1) by ``cluster_by`` (``week``, ``user``,
    ``case``), never narrower than the Wilson interval; ``none``: Wilson alone.
    Fewer than two clusters: Wilson, ``design_effect`` NaN. No rows: estimate and
    bounds NaN. Two engine aggregates, one row back each.
    """
    y = agree.fill_null(False).cast("int64")
    row = table.aggregate(n=table.count(), k=y.sum()).execute().iloc[0]
    n = int(row["n"] or 0)
    k = int(row["k"] or 0) if n else 0
    if n == 0:
        return {
            "estimate": math.nan,
            "low": math.nan,
            "high": math.nan,
            "n": 0,
            "agreed": 0,
            "clusters": 0,
            "design_effect": math.nan,
            "cluster_by": cluster_by,
            "method": "no shadow decisions",
        }
    p = k / n
    low_iid, high_iid = stats.wilson_interval(k, n, confidence)
    key, level, note = clustered.decision_cluster_key(table, cluster_by)
    if level == "week":
        key, level, note = _few_weeks_fallback(table, key, note)
    out = {"estimate": p, "n": n, "agreed": k, "cluster_by": level}
    if key is None:
        return out | {
            "low": low_iid,
            "high": high_iid,
            "clusters": n,
            "design_effect": 1.0,
            "method": "Wilson score interval (statistics.cluster_by none)",
        }
    sums = clustered.cluster_residual_sums(table, key, {"agree": (y, ibis.literal(1), p)})["agree"]
    se = clustered.cluster_robust_se(n, sums.sq_residuals, sums.clusters)
    ci = clustered.clustered_interval(
        p,
        se,
        sums.clusters,
        (low_iid, high_iid),
        math.sqrt(p * (1 - p) / n),
        confidence,
        (0.0, 1.0),
    )
    method = (
        f"cluster-robust (CR1 sandwich) interval clustered by {level}, Student t with "
        "clusters - 1 degrees of freedom, never narrower than the Wilson score interval"
    )
    if note:
        method += f"; {note}"
    detectable = (
        (clustered.t_value(ci.clusters - 1, confidence) + _Z80) * ci.se
        if ci.clusters >= 2 and math.isfinite(ci.se)
        else math.nan
    )
    return out | {
        "low": ci.low,
        "high": ci.high,
        "clusters": ci.clusters,
        "design_effect": ci.design_effect,
        "method": method,
        "detectable_margin": detectable,
    }


#: Fewer weeks than this: shadow agreement is clustered by day (or by case) instead.
MIN_WEEKS = 5
_Z80 = 0.8416212335729143  # the 80% power quantile of the standard normal


def _few_weeks_fallback(
    table: ir.Table, week_key: ir.Value, note: str
) -> tuple[ir.Value, str, str]:
    """With fewer than :data:`MIN_WEEKS` weeks, cluster by day (or by case with fewer days).

    Two weekly clusters give t(1) = 12.71: an interval that says nothing (issue 22:
    with a true agreement of 0.75 against a 0.80 target it blocked 11% of pilots,
    and at 0.937 the warning fired 40-65% of the time). Days keep what shares a day
    (staff, volumes) together and give enough clusters for t; with fewer than
    :data:`MIN_WEEKS` days, the case is the cluster.
    """
    counts = table.aggregate(
        weeks=week_key.nunique(), days=table.timestamp.truncate("D").nunique()
    ).execute()
    weeks, days = int(counts["weeks"].iloc[0] or 0), int(counts["days"].iloc[0] or 0)
    if weeks >= MIN_WEEKS:
        return week_key, "week", note
    if days >= MIN_WEEKS:
        why = f"only {weeks} week(s) of shadow decisions: clustered by day ({days} days)"
        return table.timestamp.truncate("D").cast("date"), "day", why
    case_key, _, _ = clustered.decision_cluster_key(table, "case")
    why = f"only {weeks} week(s) and {days} day(s) of shadow decisions: clustered by case"
    return case_key, "case", why


def _agreement_rows(
    table: ir.Table, agree_col: str, column: str, cluster_by: str, confidence: float
) -> list[dict[str, Any]]:
    values = table.select(v=table[column].cast("string")).distinct().order_by("v").execute()["v"]
    rows = []
    for value in values:
        part = table.filter(
            table[column].isnull() if pd.isna(value) else table[column].cast("string") == value
        )
        fig = agreement_interval(part, part[agree_col], cluster_by, confidence)
        rows.append(
            {
                "segment": column,
                "value": None if pd.isna(value) else str(value),
                "shadow_decisions": fig["n"],
                "agreed": fig["agreed"],
                "agreement": fig["estimate"],
                "low": fig["low"],
                "high": fig["high"],
                "clusters": fig["clusters"],
                "design_effect": fig["design_effect"],
            }
        )
    return rows


def _disagreements(
    table: ir.Table, agree_col: str, n: int, costs: dict[str, float], hourly_rate: float
) -> pd.DataFrame:
    kinds = (
        table.filter(~table[agree_col])
        .group_by(["agent_outcome", "human_outcome"])
        .aggregate(count=ibis._.count(), review_minutes=ibis._.review_minutes.sum())
        .execute()
    )
    total = int(kinds["count"].sum()) if len(kinds) else 0
    rows = []
    for r in kinds.itertuples(index=False):
        kind = f"{r.agent_outcome} -> {r.human_outcome}"
        count = int(r.count)
        minutes = float(r.review_minutes or 0.0)
        if kind in costs:
            cost, basis = costs[kind] * count, f"pilot file: ${costs[kind]:,.2f} per disagreement"
        else:
            cost = minutes / 60 * hourly_rate
            basis = f"review minutes at ${hourly_rate:,.2f} an hour"
        rows.append(
            {
                "agent_outcome": str(r.agent_outcome),
                "human_outcome": str(r.human_outcome),
                "count": count,
                "share_of_shadow": count / n if n else math.nan,
                "share_of_disagreements": count / total if total else math.nan,
                "review_minutes": minutes,
                "cost_usd": cost,
                "cost_basis": basis,
            }
        )
    frame = pd.DataFrame(rows, columns=_DISAGREEMENT_COLUMNS)
    return frame.sort_values(
        ["count", "agent_outcome", "human_outcome"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)


def _check_segments(pilot: Pilot, table: ir.Table) -> None:
    unknown = [c for c in pilot.shadow.segment_by if c not in table.columns]
    if unknown:
        where = str(pilot._path) if pilot._path is not None else "the pilot file"
        raise PilotFileError(
            where,
            [
                Problem(
                    where,
                    "shadow.segment_by",
                    str(unknown),
                    f"not columns of the decision log; use some of {sorted(table.columns)}",
                )
            ],
        )


def shadow_review(pilot: Pilot, shadow: ir.Table, confidence: float = 0.95) -> ShadowReview | None:
    """Compare the agent with the human on the shadow decisions ``shadow`` (valid rows).

    Returns None when there is no shadow decision. ``shadow.min_agreement`` set and
    the agreement's upper bound below it: a blocking finding (the agent is shown to
    disagree with the people it would replace more than the pilot agreed to accept);
    the estimate or only the lower bound below it: a warning (not yet shown to reach it).
    """
    settings = pilot.shadow
    _check_segments(pilot, shadow)
    t = shadow.mutate(_agree=(shadow.agent_outcome == shadow.human_outcome).fill_null(False))
    cluster_by = pilot.statistics.cluster_by
    overall = agreement_interval(t, t._agree, cluster_by, confidence)
    n = overall["n"]
    if n == 0:
        return None
    by_segment = pd.DataFrame(
        [
            row
            for column in settings.segment_by
            for row in _agreement_rows(t, "_agree", column, cluster_by, confidence)
        ],
        columns=_AGREEMENT_COLUMNS,
    )
    by_version = pd.DataFrame(
        _agreement_rows(t, "_agree", "prompt_version", cluster_by, confidence),
        columns=_AGREEMENT_COLUMNS,
    )
    disagreements = _disagreements(
        t, "_agree", n, settings.disagreement_costs_usd, pilot.costs.review_hourly_rate_usd
    )
    review = ShadowReview(
        shadow_decisions=n,
        agreed=overall["agreed"],
        agreement=overall,
        by_segment=by_segment,
        by_version=by_version,
        disagreements=disagreements,
        settings=settings.model_dump(),
    )
    review.findings = _findings(review)
    return review


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _findings(review: ShadowReview) -> list[Finding]:
    target = review.settings.get("min_agreement")
    if target is None:
        return []
    a = review.agreement
    evidence = {
        "shadow_decisions": review.shadow_decisions,
        "agreed": review.agreed,
        "agreement": a["estimate"],
        "low": a["low"],
        "high": a["high"],
        "min_agreement": target,
        "disagreement_cost_usd": review.disagreement_cost_usd,
    }
    figures = (
        f"the agent agreed with the human on {review.agreed:,} of {review.shadow_decisions:,} "
        f"shadow decisions ({_pct(a['estimate'])}, 95% CI {_pct(a['low'])} to {_pct(a['high'])}"
        f", {a.get('clusters', 0):,} {a.get('cluster_by', '')} clusters)"
    )
    margin = a.get("detectable_margin")
    power = (
        f" With this many shadow decisions and clusters, a true agreement "
        f"{100 * margin:.1f} points above the target is shown with 80% power."
        if isinstance(margin, float) and math.isfinite(margin)
        else ""
    )
    evidence["detectable_margin"] = margin
    if a["high"] < target:
        return [
            Finding(
                PHASE,
                "shadow_agreement_below_target",
                "blocking",
                f"In shadow mode {figures}, below the {_pct(target)} agreed before the pilot even "
                f"at the interval's upper end. Its disagreements would have cost "
                f"${review.disagreement_cost_usd:,.0f}.",
                evidence | {"headline": "Shadow agreement too low", "section": SECTION_HEADING},
            )
        ]
    if a["low"] < target:
        return [
            Finding(
                PHASE,
                "shadow_agreement_not_shown",
                "warning",
                f"In shadow mode {figures}; the {_pct(target)} target is inside the interval, so "
                "reaching it is not yet shown. More shadow decisions would settle it." + power,
                evidence,
            )
        ]
    return []


def shadow_mode(pilot: Pilot, data: Any) -> ShadowReview | None:
    """Phase 2 section ``shadow_mode``: :func:`shadow_review` on the pilot's shadow decisions.

    None when the pilot has no decision log or no shadow decision in it.
    """
    if data is None or not hasattr(data, "shadow_decisions"):
        return None
    shadow = data.shadow_decisions()
    if shadow is None:
        return None
    return shadow_review(pilot, shadow)

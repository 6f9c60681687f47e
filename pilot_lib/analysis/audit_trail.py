"""Audit-trail completeness: is every decision chain on record, from request to action?

The playbook: "Every agent decision must be logged with the inputs, reasoning
trace, tools called, and final action ... a trace ID that spans the entire
decision chain: from initial user request through model calls, tool executions,
and human approvals." Phase 4 checks that, decision by decision, from the ids the
data sets share (the same whether the decision log came from a table or from
traces: a trace-built log gets its ``tool_calls`` from the ``execute_tool`` spans).

A **chain** is one decision of the log, or one proposed action of the
``approvals`` data set whose ``trace_id`` names no decision (an action nobody can
trace back to a request). Its links, each checked only where it applies:

``request``
    The decision carries a trace id (an empty one links nothing). An action that
    traces to no decision misses this link and the next.
``model_call``
    The decision logged model usage (input or output tokens above 0).
``tool_call``
    With a ``tool_calls`` data set: a decision that acted (completed and not
    escalated) logged at least one call. An escalated or failed decision needs none.
``tool_result``
    Every tool (system and operation) a decision called answered at least once,
    unless the decision was escalated: a decision that went on, or stopped, without
    the answer of a tool it asked and without handing over to a human leaves its
    chain open (the system it could not reach). Without a ``tool_calls`` data set
    these two links are not checked (a warning says so).
``approval``
    An action of the decision (approvals joined on ``trace_id``) at a level that
    requires approval has the approval on record: decided (or timed out), by a
    named approver when approved or rejected, and not run as ``auto``.
``executed_action``
    An action approved or within autonomous authority (``auto``) has its
    execution on record (``executed_at``).

Everything is computed in the engine: one row per chain is never pulled into
Python; what leaves is the counts by link, one row per week, the cluster sums
for the interval and at most :data:`LISTED` incomplete chains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from pilot_lib.analysis import clustered
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.shared import shared
from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import Pilot
from pilot_lib.ingest.engine import materialize
from pilot_lib.results import to_jsonable

__all__ = ["LINKS", "LISTED", "SECTION", "AuditTrailReview", "audit_trail_review"]

PHASE = "incident_drill_review"
#: The notebook heading the detail sits under (phase 4).
SECTION = "Audit trail: is every decision chain on record?"
#: Incomplete chains listed by id in the result (all are counted).
LISTED = 200

#: Link -> what its absence means, in words.
LINKS: dict[str, str] = {
    "request": "no trace id linking the decision to its request",
    "model_call": "no model call logged",
    "tool_call": "no tool call logged for a decision that acted",
    "tool_result": "a tool called that never answered, and no human took over",
    "approval": "an approval the policy requires is not on record",
    "executed_action": "an approved or autonomous action whose execution is not on record",
}

_ACTED_DECISIONS = ("approved", "auto")


@dataclass
class AuditTrailReview:
    """Phase 4: how many decision chains are complete, which links are missing, and where.

    Attributes
    ----------
    chains, complete:
        Chains counted (decisions plus actions tracing to no decision) and those
        with every applicable link on record.
    share, low, high:
        ``complete / chains`` and its interval (cluster-robust by
        ``statistics.cluster_by``, never narrower than Wilson; see docs/decisions.md).
    missing:
        Link -> chains missing it (a chain can miss several).
    orphan_actions:
        Proposed actions whose ``trace_id`` names no decision.
    checked:
        Link -> None when checked, else why not (e.g. no ``tool_calls`` data set).
    listed:
        Up to :data:`LISTED` incomplete chains, earliest first: ``chain`` (decision or
        action id), ``kind``, ``timestamp``, ``missing`` (links, comma-separated).
    weekly:
        Per ISO week: chains, complete, share.
    """

    chains: int
    complete: int
    share: float
    low: float
    high: float
    se: float
    design_effect: float
    clusters: int
    cluster_by: str
    missing: dict[str, int]
    orphan_actions: int
    checked: dict[str, str | None]
    listed: pd.DataFrame
    weekly: pd.DataFrame
    min_complete_share: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def incomplete(self) -> int:
        return self.chains - self.complete

    def summary(self) -> pd.DataFrame:
        """One row per link: checked or not, chains missing it, and what that means."""
        rows = []
        for link, meaning in LINKS.items():
            why_not = self.checked.get(link)
            rows.append(
                {
                    "link": link,
                    "checked": "yes" if why_not is None else f"no: {why_not}",
                    "chains missing it": self.missing.get(link, 0),
                    "share of chains": (self.missing.get(link, 0) / self.chains)
                    if self.chains
                    else math.nan,
                    "meaning": meaning,
                }
            )
        return pd.DataFrame(rows)

    def headline(self) -> str:
        """The share in one sentence, with its interval and the threshold."""
        if not self.chains:
            return "No decision chains to check: the decision log is empty."
        return (
            f"{self.complete:,} of {self.chains:,} decision chains complete "
            f"({self.share:.2%}; 95% interval {self.low:.2%} to {self.high:.2%}, "
            f"clustered by {self.cluster_by}); the pilot file asks for at least "
            f"{self.min_complete_share:.0%}."
        )

    def to_result(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "chains": self.chains,
                "complete": self.complete,
                "share": self.share,
                "low": self.low,
                "high": self.high,
                "se": self.se,
                "design_effect": self.design_effect,
                "clusters": self.clusters,
                "cluster_by": self.cluster_by,
                "min_complete_share": self.min_complete_share,
                "missing": self.missing,
                "orphan_actions": self.orphan_actions,
                "checked": self.checked,
                "listed": self.listed.to_dict(orient="records"),
                "listed_total": self.incomplete,
                "weekly": self.weekly.to_dict(orient="records"),
                "findings": self.findings,
            }
        )


def _approval_levels(pilot: Pilot) -> list[str]:
    return [lvl.name for lvl in pilot.approvals.levels if lvl.requires_approval]


def _action_gaps(approvals: ir.Table, pilot: Pilot) -> ir.Table:
    """Per proposed action: whether its approval and its execution are on record."""
    needs = approvals.required_level.isin(_approval_levels(pilot))
    decided = approvals.decided_at.notnull() | (approvals.decision == "timed_out")
    named = ~approvals.decision.isin(["approved", "rejected"]) | approvals.approver_level.notnull()
    approval_missing = needs & ((approvals.decision == "auto") | ~decided | ~named)
    execution_missing = approvals.decision.isin(_ACTED_DECISIONS) & approvals.executed_at.isnull()
    return approvals.select(
        "action_id",
        "trace_id",
        "proposed_at",
        approval_missing=approval_missing.fill_null(False),
        execution_missing=execution_missing.fill_null(False),
    )


def _chains(
    pilot: Pilot, data: Any, cluster_by: str
) -> tuple[ir.Table, dict[str, str | None], str]:
    """One row per chain with a boolean column per link (True = missing), in the engine."""
    d = data.table("decisions")
    calls = data.table("tool_calls")
    approvals = data.table("approvals")
    checked: dict[str, str | None] = dict.fromkeys(LINKS)

    trace = d.trace_id.cast("string")
    has_trace = trace.notnull() & (trace.strip() != "")
    tokens = d.input_tokens.fill_null(0) + d.output_tokens.fill_null(0)
    acted = d.completed.fill_null(False) & ~d.escalated.fill_null(False)
    key, level, _ = clustered.decision_cluster_key(d, cluster_by)
    cols: dict[str, Any] = {
        "chain": d.decision_id.cast("string"),
        "kind": ibis.literal("decision"),
        "timestamp": d.timestamp,
        "trace": ibis.ifelse(has_trace, trace, ibis.null("string")),
        "request": ~has_trace,
        "model_call": tokens <= 0,
        "_acted": acted,
        "_escalated": d.escalated.fill_null(False),
        "_cluster": (key.cast("string") if key is not None else d.decision_id.cast("string")),
    }
    chains = d.select(**cols)

    if calls is not None:
        # per decision and tool: did any attempt get an answer? (the shared aggregate that
        # integration health reads too: the tool calls are grouped once per store)
        per_tool = shared(data, "tool_calls_by_decision_tool")
        per_decision = per_tool.group_by(decision_id=per_tool.decision_id.cast("string")).aggregate(
            _calls=per_tool.count(), _unanswered=(per_tool.ok == 0).cast("int64").sum()
        )
        chains = chains.left_join(per_decision, chains.chain == per_decision.decision_id)
        chains = chains.mutate(
            tool_call=chains._acted & (chains._calls.fill_null(0) == 0),
            tool_result=~chains._escalated & (chains._unanswered.fill_null(0) > 0),
        ).drop("decision_id", "_calls", "_unanswered")
    else:
        reason = "the pilot names no tool_calls data set (and its decision log is not traces)"
        checked["tool_call"] = checked["tool_result"] = reason
        chains = chains.mutate(tool_call=ibis.literal(False), tool_result=ibis.literal(False))

    if approvals is not None:
        gaps = _action_gaps(approvals, pilot)
        traced = gaps.filter(gaps.trace_id.notnull())
        per_trace = traced.group_by(_trace=traced.trace_id.cast("string")).aggregate(
            _approval=traced.approval_missing.cast("int64").sum(),
            _execution=traced.execution_missing.cast("int64").sum(),
        )
        chains = chains.left_join(per_trace, chains.trace == per_trace._trace)
        chains = chains.mutate(
            approval=chains._approval.fill_null(0) > 0,
            executed_action=chains._execution.fill_null(0) > 0,
        ).drop("_trace", "_approval", "_execution")
        # Actions whose trace names no decision: chains without a request or a model call.
        known = d.select(_t=d.trace_id.cast("string")).distinct()
        orphans = gaps.left_join(known, gaps.trace_id.cast("string") == known._t)
        orphans = orphans.filter(orphans._t.isnull())
        week = orphans.proposed_at.truncate("W").cast("date").cast("string")
        orphan_rows = orphans.select(
            chain=orphans.action_id.cast("string"),
            kind=ibis.literal("action"),
            timestamp=orphans.proposed_at,
            trace=orphans.trace_id.cast("string"),
            request=ibis.literal(True),
            model_call=ibis.literal(True),
            _acted=ibis.literal(False),
            _escalated=ibis.literal(False),
            _cluster=week if level == "week" else orphans.action_id.cast("string"),
            tool_call=ibis.literal(False),
            tool_result=ibis.literal(False),
            approval=orphans.approval_missing,
            executed_action=orphans.execution_missing,
        )
        chains = chains.union(orphan_rows.select(*chains.columns))
    else:
        reason = "the pilot names no approvals data set"
        checked["approval"] = checked["executed_action"] = reason
        chains = chains.mutate(approval=ibis.literal(False), executed_action=ibis.literal(False))

    incomplete = ibis.literal(False)
    for link in LINKS:
        chains = chains.mutate(**{link: chains[link].fill_null(False)})
        incomplete = incomplete | chains[link]
    return chains.mutate(_incomplete=incomplete), checked, level


def audit_trail_review(pilot: Pilot, data: Any) -> AuditTrailReview | None:
    """Check every decision chain of the pilot (phase 4); None without a decision log.

    Returns
    -------
    AuditTrailReview
        Counts, the share of complete chains with its interval, missing links by
        kind, the first :data:`LISTED` incomplete chains, and findings: a blocking
        one when the share is below ``audit_trail.min_complete_share``; a warning
        on incomplete chains within the limit, and when tool calls cannot be checked.
    """
    if data is None or data.table("decisions") is None:
        return None
    cluster_by = pilot.statistics.cluster_by
    chains, checked, level = _chains(pilot, data, cluster_by)
    # One pass over the chains: counts per week and cluster, small, kept in the engine; the
    # totals, the weekly shares and the cluster sums all read it (the chains are built
    # again only to list the incomplete ones, when there are any).
    cells = materialize(
        chains.group_by(
            _week=chains.timestamp.truncate("W").cast("date"), _cluster=chains._cluster
        ).aggregate(
            chains=chains.count(),
            complete=(~chains._incomplete).cast("int64").sum(),
            incomplete=chains._incomplete.cast("int64").sum(),
            orphans=(chains.kind == "action").cast("int64").sum(),
            **{f"m_{link}": chains[link].cast("int64").sum() for link in LINKS},
        ),
        "audit_cells",
    )
    totals = cells.aggregate(
        chains=cells.chains.sum(),
        incomplete=cells.incomplete.sum(),
        orphans=cells.orphans.sum(),
        **{f"m_{link}": cells[f"m_{link}"].sum() for link in LINKS},
    ).execute()
    row = totals.iloc[0]
    n = int(row["chains"] or 0)
    incomplete = int(row["incomplete"] or 0) if n else 0
    complete = n - incomplete
    missing = {link: int(row[f"m_{link}"] or 0) if n else 0 for link in LINKS}
    orphans = int(row["orphans"] or 0) if n else 0
    share = complete / n if n else math.nan

    if n:
        low_iid, high_iid = wilson_interval(complete, n)
        se_iid = math.sqrt(share * (1 - share) / n)
    else:
        low_iid = high_iid = se_iid = math.nan
    if n and level != "none":
        # per-cell counts summed per cluster are the per-chain sums: the same residuals
        sums = clustered.cluster_residual_sums(
            cells, cells._cluster, {"complete": (cells.complete, cells.chains, share)}
        )["complete"]
        se = clustered.cluster_robust_se(n, sums.sq_residuals, sums.clusters)
        ci = clustered.clustered_interval(
            share, se, sums.clusters, (low_iid, high_iid), se_iid, 0.95, (0.0, 1.0)
        )
        low, high, deff, clusters = ci.low, ci.high, ci.design_effect, ci.clusters
    else:
        low, high, deff, clusters, se = low_iid, high_iid, 1.0, n, se_iid

    listed = _listed(chains) if incomplete else _empty_listed()
    weekly = _weekly(cells) if n else pd.DataFrame(columns=["week", "chains", "complete", "share"])
    review = AuditTrailReview(
        chains=n,
        complete=complete,
        share=share,
        low=low,
        high=high,
        se=se,
        design_effect=deff,
        clusters=clusters,
        cluster_by=level,
        missing=missing,
        orphan_actions=orphans,
        checked=checked,
        listed=listed,
        weekly=weekly,
        min_complete_share=pilot.audit_trail.min_complete_share,
    )
    review.findings = _findings(review)
    return review


def _empty_listed() -> pd.DataFrame:
    return pd.DataFrame(columns=["chain", "kind", "timestamp", "missing"])


def _listed(chains: ir.Table) -> pd.DataFrame:
    bad = chains.filter(chains._incomplete)
    missing = ibis.literal("")
    for link in LINKS:
        missing = missing + ibis.ifelse(bad[link], ibis.literal(link + ","), ibis.literal(""))
    out = (
        bad.select("chain", "kind", "timestamp", missing=missing)
        .order_by(["timestamp", "chain"])
        .limit(LISTED)
        .execute()
    )
    out["missing"] = out["missing"].str.rstrip(",").str.replace(",", ", ")
    out["timestamp"] = pd.to_datetime(out["timestamp"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    return out.reset_index(drop=True)


def _weekly(cells: ir.Table) -> pd.DataFrame:
    out = (
        cells.group_by(week=cells._week)
        .aggregate(chains=cells.chains.sum(), complete=cells.complete.sum())
        .order_by("week")
        .execute()
    )
    out["week"] = pd.to_datetime(out["week"]).dt.strftime("%Y-%m-%d")
    out["chains"] = out["chains"].astype(int)
    out["complete"] = out["complete"].astype(int)
    out["share"] = out["complete"] / out["chains"]
    return out.reset_index(drop=True)


def _findings(r: AuditTrailReview) -> list[Finding]:
    out: list[Finding] = []
    if not r.chains:
        return out
    kinds = {k: v for k, v in r.missing.items() if v}
    worst = ", ".join(
        f"{LINKS[k]} ({v:,})" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
    )
    evidence = {
        "chains": r.chains,
        "complete": r.complete,
        "share": r.share,
        "low": r.low,
        "high": r.high,
        "min_complete_share": r.min_complete_share,
        "missing": r.missing,
        "orphan_actions": r.orphan_actions,
        "chain_ids": list(r.listed["chain"])[:20],
        "section": SECTION,
    }
    if r.share < r.min_complete_share:
        out.append(
            Finding(
                PHASE,
                "audit_trail_incomplete",
                "blocking",
                f"The audit trail is incomplete: {r.complete:,} of {r.chains:,} decision chains "
                f"({r.share:.1%}) are on record from request to action, below the agreed "
                f"{r.min_complete_share:.0%}. Missing: {worst}.",
                evidence | {"headline": "Audit trail incomplete"},
            )
        )
    elif r.incomplete:
        out.append(
            Finding(
                PHASE,
                "audit_trail_gaps",
                "warning",
                f"{r.incomplete:,} of {r.chains:,} decision chains have a gap ({worst}); "
                f"{r.share:.2%} are complete, within the agreed {r.min_complete_share:.0%}.",
                evidence,
            )
        )
    if r.checked.get("tool_call"):
        out.append(
            Finding(
                PHASE,
                "audit_trail_tools_unchecked",
                "warning",
                "Tool calls are not logged, so the audit trail's tool link cannot be checked: "
                "the playbook requires every tool execution in the decision's trace. Add a "
                "tool_calls data set (docs/data-contracts.md).",
                {"section": SECTION},
            )
        )
    return out

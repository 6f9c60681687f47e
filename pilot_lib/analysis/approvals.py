"""Phase 4: human-approval review against the decision-authority policy.

:func:`review_approvals` reads the ``approvals`` data set (one row per action the
agent proposed, see ``docs/data-contracts.md``) and the pilot file's
``approvals`` policy, and reports:

- **SLA**: the share of approval requests decided within the SLA, with a Wilson
  interval and its ``n``. The requests are the actions whose amount needs
  approval under the policy (``policy.required_level(amount)`` is a level with
  ``requires_approval``) and that were routed to a human (decision not
  ``auto``; an ``auto`` one is a violation, below). A request is within the SLA
  when a human decided it (``approved``, ``rejected`` or ``escalated``) and
  ``decided_at - proposed_at <= sla_minutes``.
- **Latency** per authority level (the level the policy requires for the
  amount): p50, p90, p95 and max in minutes over the requests a human decided
  (numpy's linear percentiles). Requests that timed out without a human
  decision are counted beside them, not mixed into the percentiles.
- **Timeouts**: every routed action whose decision is ``timed_out``, or has no
  ``decided_at``, or was decided after the SLA, with its final state
  (``executed`` when ``executed_at`` is set, else the decision). The playbook's
  rule: an expired SLA rejects or escalates, never approves. A timeout that
  ends ``approved`` or ``executed`` on an action that needed approval is a
  violation; one that ends rejected or escalated is fine, and
  ``matches_policy`` says whether it is the policy's ``timeout_action`` (a
  ``timed_out`` record never executed counts as rejected: the action did not
  go ahead; ``escalate`` needs an ``escalated`` record).
- **Violations** (every one listed, with action and trace ids), kinds:

  ``timeout_approved``
      a timed-out request that ended approved or executed;
  ``above_authority``
      executed on an approval from a level below the one the amount requires
      (ranked with ``policy.level_rank``, required level from the policy, not
      from the ``required_level`` column);
  ``approver_not_recorded``
      executed on an approval that names no ``approver_level`` (its authority
      cannot be audited);
  ``executed_without_approval``
      executed although the amount needs approval and the decision is not
      ``approved`` (``rejected``, ``escalated``, ``timed_out``, or ``auto``
      above the autonomous limit);
  ``executed_before_approval``
      approved, but ``executed_at`` is before ``decided_at``;
  ``auto_above_limit``
      decided ``auto`` although the amount needs approval (not executed; an
      executed one is ``executed_without_approval``).

  One action can break several rules and is then listed once per rule.

Data problems are findings (``"warning"``), never exceptions: levels not in the
policy (``required_level`` or ``approver_level``), a ``required_level`` column
that disagrees with the policy for the amount, unknown decisions, decisions
before proposals, duplicate action ids (the earliest proposal counts), and rows
without a usable action id, amount or ``proposed_at`` (left out and counted).

Engine
------
An Ibis table in contract types (the checked evidence store's) is reviewed in
its engine; no row of it becomes a pandas frame unless a listing or a finding
names it. The engine cleans the rows (text stripped as Python's ``str.strip``
does, unusable and duplicate rows counted), derives the policy level and the
flags above, and returns only:

- counts per policy level that do not depend on the SLA;
- the latency distribution: one row per policy level, flags and distinct
  latency (whole microseconds) with its count, over the routed requests with a
  decision time. The SLA share, its interval, the timeouts per level and the
  percentiles (numpy's, on the values the counts stand for) are computed from
  it, so :meth:`ApprovalReview.sla_what_if` gives the figures of any other SLA
  without a second review;
- the rows a listing or a finding names: possible timeouts, rule breaks and
  data problems (few, on a healthy log).

Other input (a pandas DataFrame, string timestamps) is cleaned in pandas and
reviewed the same way from an in-memory table.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from pilot_lib.analysis.drills import (
    _clean_text,
    _id_list,
    _is_missing,
    _parse_timestamps,
    _require_columns,
    _small_frame,
)
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import ApprovalPolicy
from pilot_lib.results import to_jsonable

__all__ = ["DECISIONS", "PHASE", "VIOLATION_KINDS", "ApprovalReview", "review_approvals"]

PHASE = "incident_drill_review"

#: Decision values of the ``approvals`` contract.
DECISIONS = ("approved", "rejected", "escalated", "timed_out", "auto")
_HUMAN_DECISIONS = ("approved", "rejected", "escalated")

#: Violation kinds, in the order they are listed, with a plain description.
VIOLATION_KINDS: dict[str, str] = {
    "timeout_approved": "were approved or executed after their approval timed out",
    "above_authority": (
        "were executed on an approval from a level below the one their amount requires"
    ),
    "approver_not_recorded": "were executed on an approval that names no approver level",
    "executed_without_approval": "were executed without the approval their amount requires",
    "executed_before_approval": "were executed before they were approved",
    "auto_above_limit": "were decided autonomously although their amount needs human approval",
}

_REQUIRED = [
    "action_id",
    "proposed_at",
    "amount",
    "required_level",
    "decided_at",
    "decision",
    "approver_level",
    "executed_at",
]
_OPTIONAL = ["trace_id"]

VIOLATION_COLUMNS = [
    "action_id",
    "trace_id",
    "kind",
    "detail",
    "amount",
    "policy_level",
    "approver_level",
    "decision",
    "proposed_at",
    "decided_at",
    "executed_at",
]
TIMEOUT_COLUMNS = [
    "action_id",
    "trace_id",
    "amount",
    "policy_level",
    "needs_approval",
    "proposed_at",
    "decided_at",
    "latency_minutes",
    "decision",
    "executed_at",
    "final_state",
    "matches_policy",
    "status",
]
LATENCY_COLUMNS = [
    "level",
    "requires_approval",
    "n_actions",
    "n_requests",
    "n_decided",
    "p50_minutes",
    "p90_minutes",
    "p95_minutes",
    "max_minutes",
    "n_within_sla",
    "share_within_sla",
    "ci_low",
    "ci_high",
    "n_timed_out",
]


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50": math.nan, "p90": math.nan, "p95": math.nan, "max": math.nan}
    p50, p90, p95 = np.percentile(values, [50, 90, 95])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "max": float(values.max())}


def _minutes(latency_us: Any) -> np.ndarray:
    """Microseconds from proposal to decision as minutes, the way pandas'
    ``Timedelta.total_seconds() / 60`` computes them (so figures match to the bit)."""
    return np.asarray(latency_us, dtype=float) / 1e6 / 60.0


@dataclass(frozen=True)
class _LatencyFacts:
    """What the SLA figures need, for any SLA: computed once by the review.

    ``levels``: one row per policy level (``LEVEL_FACT_COLUMNS``), counts that do
    not depend on the SLA. ``distribution``: one row per policy level, flags and
    distinct latency (``DISTRIBUTION_COLUMNS``) over the routed requests a
    human or the system decided (``decided_at`` set, not ``timed_out``, clocks
    fine), with the number of requests; sorted by latency. A request counts
    toward the within-SLA share when ``decided`` and ``latency_minutes <= sla``,
    and as a timeout when ``latency_minutes > sla``.
    """

    levels: pd.DataFrame
    distribution: pd.DataFrame

    def at_sla(self, sla: float, confidence: float) -> tuple[dict[str, Any], pd.DataFrame]:
        """Overall figures at ``sla`` minutes and per-level ``(n_within_sla, n_timed_out)``."""
        d = self.distribution
        minutes = d["latency_minutes"].to_numpy(dtype=float)
        n = d["n"].to_numpy(dtype=np.int64)
        decided = d["decided"].to_numpy(dtype=bool)
        needs = d["needs_approval"].to_numpy(dtype=bool)
        within = decided & (minutes <= sla)
        late = minutes > sla
        lv = self.levels
        n_requests = int(lv["n_requests"].sum())
        n_within = int(n[within].sum())
        low, high = wilson_interval(n_within, n_requests, confidence)
        per_level = pd.DataFrame(
            {
                "n_within_sla": [
                    int(n[within & (d["policy_level"] == name).to_numpy()].sum())
                    for name in lv["level"]
                ],
                "n_timed_out": [
                    int(fixed) + int(n[late & needs & (d["policy_level"] == name).to_numpy()].sum())
                    for name, fixed in zip(lv["level"], lv["n_timeout_fixed_needing"], strict=True)
                ],
            },
            index=lv["level"].to_numpy(),
        )
        figures = {
            "sla_minutes": float(sla),
            "confidence": confidence,
            "n_requests": n_requests,
            "n_within_sla": n_within,
            "share_within_sla": n_within / n_requests if n_requests else math.nan,
            "ci_low": low,
            "ci_high": high,
            "n_timeouts": int(lv["n_timeout_fixed"].sum()) + int(n[late].sum()),
        }
        return figures, per_level

    def decided_minutes(self, level: str | None = None) -> np.ndarray:
        """Latency in minutes of every decided request (of one level), one value per request."""
        d = self.distribution
        keep = d["decided"].to_numpy(dtype=bool)
        if level is not None:
            keep = keep & (d["policy_level"] == level).to_numpy()
        return np.repeat(
            d["latency_minutes"].to_numpy(dtype=float)[keep], d["n"].to_numpy(dtype=np.int64)[keep]
        )


@dataclass(frozen=True)
class ApprovalReview:
    """The approval review. See the module docstring for the definitions.

    Attributes
    ----------
    summary:
        Headline figures: ``share_within_sla`` with ``ci_low`` / ``ci_high``
        (Wilson, ``confidence``) over ``n_requests``, overall latency
        percentiles (minutes), counts of timeouts and violations. Shares and
        percentiles are NaN when there is no data (``n`` says so).
    latency:
        One row per policy level, lowest first (see ``LATENCY_COLUMNS``).
    violations:
        Every violation, one row per action and kind, with ``action_id``,
        ``trace_id``, ``kind``, ``detail`` (plain words) and the row's values.
    timeouts:
        Every timed-out request with its ``final_state``, ``matches_policy``
        and ``status`` (``"violation"`` or ``"ok"``).
    findings:
        One ``"blocking"`` finding per violation kind (all ids in the evidence),
        the SLA share (``"info"``), data problems (``"warning"``).
    actions:
        The cleaned actions with the derived columns (``policy_level``,
        ``needs_approval``, ``latency_minutes``, ``within_sla``, ``timed_out``,
        ``final_state``...), for drill-down: a lazy Ibis table (filter it, then
        ``.to_pandas()``), never executed by the review.
    latency_facts:
        The compact latency distribution the SLA figures come from (one row per
        distinct latency, level and flags, with its count) and the per-level
        counts; :meth:`sla_what_if` recomputes the SLA figures from it.
    """

    summary: dict[str, Any]
    latency: pd.DataFrame
    violations: pd.DataFrame
    timeouts: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)
    actions: Any = None  # ibis.expr.types.Table
    latency_facts: _LatencyFacts | None = None

    @property
    def passed(self) -> bool:
        """True when no blocking finding (no violation) stands."""
        return not any(f.severity == "blocking" for f in self.findings)

    def sla_what_if(self, sla_minutes: float) -> dict[str, Any]:
        """The SLA figures under another SLA, without reviewing the approvals again.

        Returns ``sla_minutes``, ``confidence``, ``n_requests``, ``n_within_sla``,
        ``share_within_sla`` with ``ci_low`` / ``ci_high`` and ``n_timeouts``:
        the values :func:`review_approvals` gives for the same data at
        ``sla_minutes`` (they come from the same latency distribution).
        """
        sla = _check_sla(sla_minutes)
        if self.latency_facts is None:
            raise ValueError("this review keeps no latency distribution to recompute the SLA from")
        figures, _ = self.latency_facts.at_sla(sla, float(self.summary["confidence"]))
        return figures

    def to_result(self) -> dict[str, Any]:
        """JSON-able summary for the phase result file (every violation included)."""
        return to_jsonable(
            {
                "passed": self.passed,
                "summary": self.summary,
                "latency": self.latency,
                "violations": self.violations,
                "timeouts": self.timeouts,
                "findings": self.findings,
            }
        )


def _check_sla(sla_minutes: Any) -> float:
    try:
        sla = float(sla_minutes)
    except (TypeError, ValueError):
        sla = math.nan
    if not (math.isfinite(sla) and sla > 0):
        raise ValueError(f"sla_minutes must be a positive number of minutes, got {sla_minutes}")
    return sla


def review_approvals(
    approvals: Any,
    policy: ApprovalPolicy,
    sla_minutes: float | None = None,
    confidence: float = 0.95,
    versions: Sequence[Any] | None = None,
) -> ApprovalReview:
    """Review human approvals against the decision-authority ``policy``.

    Parameters
    ----------
    approvals:
        The ``approvals`` data set as an Ibis table or a pandas DataFrame
        (contract columns; ``trace_id`` optional). An Ibis table in contract
        types is reviewed in its engine (see the module docstring); other
        input is cleaned in pandas first.
    policy:
        The pilot file's ``approvals`` section: levels (lowest first, each with
        ``max_amount`` in US dollars and ``requires_approval``), SLA and
        ``timeout_action``.
    sla_minutes:
        Approval SLA in minutes; ``None`` uses ``policy.sla_minutes``.
    confidence:
        Coverage of the Wilson interval on the within-SLA share.
    versions:
        The threshold changes in force over the pilot, oldest first, each with
        ``effective_at`` (a timestamp, None for "from the start") and ``levels``
        (the same level names and ``requires_approval`` as ``policy``, other
        ``max_amount``): :func:`pilot_lib.analysis.authority.load_policy_versions`.
        An action's policy level is then the one of the version in force at its
        ``proposed_at``. None: ``policy``'s levels throughout.

    Returns
    -------
    ApprovalReview
        Never raises on bad rows (they become findings); a missing required
        column raises :class:`~pilot_lib.errors.ContractError`.
        :meth:`ApprovalReview.sla_what_if` gives the SLA figures under another
        SLA from this review, without a second one.
    """
    sla = _check_sla(policy.sla_minutes if sla_minutes is None else sla_minutes)

    findings: list[Finding] = []
    with _cleaned_table(approvals, policy, findings, versions) as cleaned:
        facts = _latency_facts(cleaned.work, policy)
        frame = _rows_of_interest(cleaned.work, sla)
    n_raw, n_unusable, n_duplicates = cleaned.n_raw, cleaned.n_unusable, cleaned.n_duplicates

    level_names = [lvl.name for lvl in policy.levels]
    requires = {lvl.name: lvl.requires_approval for lvl in policy.levels}
    frame["policy_level"] = pd.Series(
        [
            _policy_in_force(policy, versions, t).required_level(float(a))
            for a, t in zip(frame["amount"], frame["proposed_at"], strict=True)
        ],
        index=frame.index,
        dtype=object,
    )
    frame["needs_approval"] = frame["policy_level"].map(requires).astype(bool)
    frame["policy_rank"] = frame["policy_level"].map(policy.level_rank)
    frame["latency_minutes"] = _minutes(frame["latency_us"])

    _unknown_decision_finding(frame, findings)
    _level_findings(frame, level_names, findings)
    clock_bad = frame["latency_minutes"] < 0
    if clock_bad.any():
        ids = list(frame.loc[clock_bad, "action_id"])
        findings.append(
            Finding(
                PHASE,
                "approvals_decided_before_proposed",
                "warning",
                f"{len(ids)} approval(s) are decided before they were proposed ({_id_list(ids)}); "
                "their latency is left out of the SLA share and the percentiles. Check the clocks.",
                {"action_ids": ids},
            )
        )
        frame.loc[clock_bad, "latency_minutes"] = math.nan

    decision = frame["decision"]
    executed = frame["executed_at"].notna()
    routed = decision.ne("auto")
    timed_out = (
        routed
        & ~clock_bad
        & (decision.eq("timed_out") | frame["decided_at"].isna() | (frame["latency_minutes"] > sla))
    )
    frame["timed_out"] = timed_out
    frame["final_state"] = pd.Series(
        [
            "executed" if ex else (d if d is not None else "no decision")
            for ex, d in zip(executed, decision, strict=True)
        ],
        index=frame.index,
        dtype=object,
    )

    # --- violations -------------------------------------------------------------------
    expected_state = {"reject": "rejected", "escalate": "escalated"}[policy.timeout_action]
    rows: list[dict[str, Any]] = []

    def add(kind: str, mask: pd.Series, detail: Any) -> None:
        for _, r in frame.loc[mask].iterrows():
            rows.append(
                {
                    "action_id": r["action_id"],
                    "trace_id": r["trace_id"],
                    "kind": kind,
                    "detail": detail(r),
                    "amount": float(r["amount"]),
                    "policy_level": r["policy_level"],
                    "approver_level": r["approver_level"],
                    "decision": r["decision"],
                    "proposed_at": r["proposed_at"],
                    "decided_at": r["decided_at"],
                    "executed_at": r["executed_at"],
                }
            )

    timeout_bad = (
        timed_out & frame["needs_approval"] & frame["final_state"].isin(["approved", "executed"])
    )
    add(
        "timeout_approved",
        timeout_bad,
        lambda r: (
            f"{_timeout_how(r, sla)}, yet it ended {r['final_state']}; the policy says an expired "
            f"approval is {expected_state}, never approved"
        ),
    )
    approved_exec = executed & decision.eq("approved") & frame["needs_approval"]
    approver_known = frame["approver_level"].isin(level_names)
    approver_rank = frame["approver_level"].map(
        lambda v: policy.level_rank(v) if v in level_names else -1
    )
    add(
        "above_authority",
        approved_exec & approver_known & (approver_rank < frame["policy_rank"]),
        lambda r: (
            f"{_money(r['amount'])} needs '{r['policy_level']}' approval but was approved by "
            f"'{r['approver_level']}' and executed"
        ),
    )
    add(
        "approver_not_recorded",
        approved_exec & frame["approver_level"].isna(),
        lambda r: (
            f"{_money(r['amount'])} needs '{r['policy_level']}' approval; it was executed on an "
            "approval that names no approver level"
        ),
    )
    add(
        "executed_without_approval",
        executed & frame["needs_approval"] & ~decision.eq("approved"),
        lambda r: (
            f"{_money(r['amount'])} needs '{r['policy_level']}' approval but was executed with "
            f"decision '{r['decision']}'"
        ),
    )
    add(
        "executed_before_approval",
        executed
        & decision.eq("approved")
        & frame["decided_at"].notna()
        & (frame["executed_at"] < frame["decided_at"]),
        lambda r: (
            f"executed at {r['executed_at']}, "
            f"{(r['decided_at'] - r['executed_at']).total_seconds() / 60:,.1f} minutes before "
            f"the approval at {r['decided_at']}"
        ),
    )
    add(
        "auto_above_limit",
        decision.eq("auto") & frame["needs_approval"] & ~executed,
        lambda r: (
            f"{_money(r['amount'])} needs '{r['policy_level']}' approval but was decided "
            "autonomously (not executed)"
        ),
    )
    violations = pd.DataFrame(rows, columns=VIOLATION_COLUMNS)
    if not violations.empty:
        kind_order = {k: i for i, k in enumerate(VIOLATION_KINDS)}
        violations = (
            violations.assign(_k=violations["kind"].map(kind_order))
            .sort_values(["_k", "proposed_at", "action_id"], kind="mergesort")
            .drop(columns="_k")
            .reset_index(drop=True)
        )
    for kind, description in VIOLATION_KINDS.items():
        of_kind = violations.loc[violations["kind"] == kind]
        if of_kind.empty:
            continue
        ids = list(of_kind["action_id"])
        findings.append(
            Finding(
                PHASE,
                f"approval_{kind}",
                "blocking",
                f"{len(ids)} action(s) {description}: {_id_list(ids)} "
                "(every one is listed in the violations table).",
                {
                    "action_ids": ids,
                    "trace_ids": [None if _is_missing(t) else t for t in of_kind["trace_id"]],
                },
            )
        )

    # --- timeouts ---------------------------------------------------------------------
    timeouts = frame.loc[timed_out].copy()
    # A 'timed_out' record that was never executed did not go ahead: that is the
    # 'reject' policy applied. 'escalate' needs an escalated record.
    timeouts["matches_policy"] = timeouts["final_state"].eq(expected_state) | (
        (policy.timeout_action == "reject") & timeouts["final_state"].eq("timed_out")
    )
    timeouts["status"] = np.where(timeout_bad[timed_out], "violation", "ok")
    timeouts = timeouts[TIMEOUT_COLUMNS].reset_index(drop=True)
    off_policy = timeouts.loc[(timeouts["status"] == "ok") & ~timeouts["matches_policy"]]
    if not off_policy.empty:
        states = {str(k): int(v) for k, v in off_policy["final_state"].value_counts().items()}
        ids = list(off_policy["action_id"])
        findings.append(
            Finding(
                PHASE,
                "approval_timeout_off_policy",
                "warning",
                f"{len(ids)} timed-out approval(s) did not end the way the policy says "
                f"('{expected_state}'): {', '.join(f'{n} {s}' for s, n in states.items())} "
                f"({_id_list(ids)}). None was approved, but the timeout rule is not applied "
                "as written.",
                {
                    "action_ids": ids,
                    "final_states": states,
                    "timeout_action": policy.timeout_action,
                },
            )
        )

    # --- SLA share and latency (from the latency distribution) ------------------------
    at_sla, per_level = facts.at_sla(sla, confidence)
    n_requests = at_sla["n_requests"]
    n_within = at_sla["n_within_sla"]
    low, high = at_sla["ci_low"], at_sla["ci_high"]
    share = at_sla["share_within_sla"]
    overall = _percentiles(facts.decided_minutes())
    lv = facts.levels.set_index("level")

    latency_rows = []
    for lvl in policy.levels:
        n_req = int(lv.at[lvl.name, "n_requests"])
        n_in = int(per_level.at[lvl.name, "n_within_sla"])
        lo, hi = wilson_interval(n_in, n_req, confidence)
        pct = _percentiles(facts.decided_minutes(lvl.name))
        latency_rows.append(
            {
                "level": lvl.name,
                "requires_approval": lvl.requires_approval,
                "n_actions": int(lv.at[lvl.name, "n_actions"]),
                "n_requests": n_req,
                "n_decided": int(lv.at[lvl.name, "n_decided"]),
                "p50_minutes": pct["p50"],
                "p90_minutes": pct["p90"],
                "p95_minutes": pct["p95"],
                "max_minutes": pct["max"],
                "n_within_sla": n_in,
                "share_within_sla": n_in / n_req if n_req else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "n_timed_out": int(per_level.at[lvl.name, "n_timed_out"]),
            }
        )
    latency_table = pd.DataFrame(latency_rows, columns=LATENCY_COLUMNS)
    n_actions = int(lv["n_actions"].sum())

    if n_actions == 0:
        findings.append(
            Finding(
                PHASE,
                "approvals_empty",
                "warning",
                "No approval records were loaded, so the human approval workflow and its SLA "
                "timeouts have not been shown to work.",
                {"rows": n_raw},
            )
        )
    elif n_requests:
        findings.append(
            Finding(
                PHASE,
                "approval_sla_share",
                "info",
                f"{share:.1%} of {n_requests:,} approval requests were decided within the "
                f"{sla:g}-minute SLA ({confidence:.0%} interval {low:.1%} to {high:.1%}).",
                {"share": share, "ci_low": low, "ci_high": high, "n": n_requests},
            )
        )
    else:
        findings.append(
            Finding(
                PHASE,
                "approval_no_requests",
                "info",
                "No action in the approvals log needed human approval under the policy, so the "
                "approval SLA could not be measured.",
                {"rows": n_actions},
            )
        )

    summary = {
        "sla_minutes": sla,
        "confidence": confidence,
        "timeout_action": policy.timeout_action,
        "n_actions": n_actions,
        "n_unusable_rows": n_unusable,
        "n_duplicate_rows": n_duplicates,
        "n_needing_approval": int(lv["n_needing_approval"].sum()),
        "n_requests": n_requests,
        "n_decided": int(lv["n_decided"].sum()),
        "n_within_sla": n_within,
        "share_within_sla": share,
        "ci_low": low,
        "ci_high": high,
        "p50_minutes": overall["p50"],
        "p90_minutes": overall["p90"],
        "p95_minutes": overall["p95"],
        "max_minutes": overall["max"],
        "n_executed": int(lv["n_executed"].sum()),
        "n_timeouts": len(timeouts),
        "n_timeout_violations": int((timeouts["status"] == "violation").sum()),
        "n_timeouts_matching_policy": int(timeouts["matches_policy"].sum()),
        "n_violations": len(violations),
        "n_actions_with_violations": int(violations["action_id"].nunique()),
        "violations_by_kind": {k: int((violations["kind"] == k).sum()) for k in VIOLATION_KINDS},
    }
    return ApprovalReview(
        summary=summary,
        latency=latency_table,
        violations=violations,
        timeouts=timeouts,
        findings=findings,
        actions=_actions_view(cleaned.lazy, sla),
        latency_facts=facts,
    )


def _timeout_how(r: pd.Series, sla: float) -> str:
    if r["decision"] == "timed_out":
        return "the approval timed out"
    if _is_missing(r["decided_at"]):
        return "the approval was never decided"
    return f"the approval was decided after {r['latency_minutes']:,.1f} minutes, past the {sla:g}-minute SLA"


# ---- cleaning ------------------------------------------------------------------------

#: Code points Python's ``str.strip()`` removes (``str.isspace``), as a regex class
#: body understood by RE2 (DuckDB) and Java (Spark).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in _WHITESPACE)
_STRIP_PATTERN = f"^[{_WS_CLASS}]+|[{_WS_CLASS}]+$"

_TEXT_COLUMNS = ("action_id", "trace_id", "required_level", "decision", "approver_level")
_TIME_COLUMNS = ("proposed_at", "decided_at", "executed_at")
_CLEAN_SCHEMA = {
    "action_id": "string",
    "trace_id": "string",
    "required_level": "string",
    "decision": "string",
    "approver_level": "string",
    "amount": "float64",
    "proposed_at": "timestamp(6)",
    "decided_at": "timestamp(6)",
    "executed_at": "timestamp(6)",
}
_UNUSABLE_REASONS = (
    "no action_id",
    "no proposed_at",
    "missing, negative or non-numeric amount",
    "unparseable proposed_at",
    "unparseable decided_at",
    "unparseable executed_at",
)


@dataclass(frozen=True)
class _Cleaned:
    """The usable, de-duplicated approvals with the derived columns (:func:`_derive`),
    and what cleaning left out.

    ``work`` is what the review's queries read: a copy cached in the engine once,
    valid while the review runs. ``lazy`` is the same table as an expression over
    the input, for the drill-down table the review hands back.
    """

    work: ir.Table
    lazy: ir.Table
    n_raw: int
    n_unusable: int
    n_duplicates: int


@contextlib.contextmanager
def _cleaned_table(
    approvals: Any,
    policy: ApprovalPolicy,
    findings: list[Finding],
    versions: Sequence[Any] | None = None,
) -> Iterator[_Cleaned]:
    """Clean the approvals (unusable and duplicate rows become findings) and derive the
    columns every figure is counted from.

    An Ibis table whose columns have the contract types (text columns strings,
    ``amount`` a number, times timestamps of at most microsecond precision) is
    cleaned in its engine. Anything else (a DataFrame, string timestamps) is
    cleaned in pandas and reviewed from an in-memory table. Either way the typed
    rows with their derived columns are cached in the engine once (released on
    exit), so each later query is a small one over that copy.
    """
    in_engine = False
    if isinstance(approvals, ir.Table):
        _require_columns("approvals", list(approvals.columns), _REQUIRED)
        in_engine = _engine_ready(approvals)
    if in_engine:
        marked = _typed_and_marked(approvals)
        n_raw = n_unusable = n_duplicates = -1
    else:
        raw = _small_frame(approvals, "approvals", _REQUIRED, _OPTIONAL)
        frame, n_unusable, n_duplicates = _clean(raw, findings)
        n_raw = len(raw)
        table = ibis.memtable(frame[list(_CLEAN_SCHEMA)], schema=_CLEAN_SCHEMA)
        marked = table.mutate(_reason=ibis.null().cast("string"))
    derived = _derive(marked, policy, versions)
    work = derived.cache()
    try:
        if in_engine:
            yield _clean_in_engine(derived, work, findings)
        else:
            yield _Cleaned(
                _usable(work, False), _usable(derived, False), n_raw, n_unusable, n_duplicates
            )
    finally:
        with contextlib.suppress(Exception):
            work.release()


def _engine_ready(table: ir.Table) -> bool:
    """Whether the table's types let the engine clean it exactly as pandas would."""
    schema = table.schema()
    for name in _TEXT_COLUMNS:
        if name in schema and not (schema[name].is_string() or schema[name].is_null()):
            return False
    amount = schema["amount"]
    if not (amount.is_floating() or amount.is_integer() or amount.is_null()):
        return False
    for name in _TIME_COLUMNS:
        dtype = schema[name]
        if dtype.is_null():
            continue
        if not dtype.is_timestamp() or (dtype.scale is not None and dtype.scale > 6):
            return False
    return True


def _engine_text(col: ir.Value) -> ir.StringValue:
    """``_clean_text`` in the engine: surrounding whitespace stripped, empty -> null."""
    if col.type().is_null():
        return col.cast("string")
    return col.re_replace(_STRIP_PATTERN, "").nullif("")


def _typed_and_marked(table: ir.Table) -> ir.Table:
    """The contract columns, text cleaned, with ``_reason``: why a row is unusable (else null)."""
    cols: dict[str, ir.Value] = {}
    for name in _TEXT_COLUMNS:
        cols[name] = (
            _engine_text(table[name]) if name in table.columns else ibis.null().cast("string")
        )
    cols["amount"] = table["amount"].cast("float64")
    for name in _TIME_COLUMNS:
        col = table[name]
        cols[name] = col.cast("timestamp") if col.type().is_null() else col
    typed = table.select(**cols)
    bad_amount = (
        typed.amount.isnull()
        | typed.amount.isnan().fill_null(True)
        | (typed.amount == math.inf)
        | (typed.amount == -math.inf)
        | (typed.amount < 0).fill_null(True)
    )
    return typed.mutate(
        _reason=ibis.cases(
            (typed.action_id.isnull(), _UNUSABLE_REASONS[0]),
            (typed.proposed_at.isnull(), _UNUSABLE_REASONS[1]),
            (bad_amount, _UNUSABLE_REASONS[2]),
            else_=ibis.null().cast("string"),
        )
    )


def _usable(marked: ir.Table, dedupe: bool) -> ir.Table:
    """The usable rows; with ``dedupe``, the earliest proposal of each action id (ties
    broken by the other columns, so the choice does not depend on the engine's row order)."""
    clean = marked.filter(marked._reason.isnull()).drop("_reason")
    if not dedupe:
        return clean
    order = [
        ibis.asc(c, nulls_first=False)
        for c in ("proposed_at", "decided_at", "executed_at", "amount", "decision")
    ]
    ranked = clean.mutate(
        _n=ibis.row_number().over(ibis.window(group_by=clean.action_id, order_by=order))
    )
    return ranked.filter(ranked._n == 0).drop("_n")


def _clean_in_engine(marked: ir.Table, work: ir.Table, findings: list[Finding]) -> _Cleaned:
    """Count (and list) the unusable and duplicate rows of ``work``, the cached ``marked``."""
    usable = work._reason.isnull()
    counts = (
        work.aggregate(
            rows=work.count(),
            unusable=ibis.ifelse(usable, 0, 1).sum(),
            ids=work.action_id.nunique(where=usable),
        )
        .to_pandas()
        .iloc[0]
    )
    n_raw = int(counts["rows"])
    n_unusable = int(counts["unusable"]) if n_raw else 0
    n_duplicates = n_raw - n_unusable - (int(counts["ids"]) if n_raw else 0)
    if n_unusable:
        bad = (
            work.filter(~usable)
            .select("_reason", "action_id", "proposed_at")
            .order_by([ibis.asc("proposed_at"), ibis.asc("action_id")])
            .to_pandas()
        )
        by_reason = {
            reason: [
                None if _is_missing(a) else a
                for a in bad.loc[bad["_reason"] == reason, "action_id"]
            ]
            for reason in _UNUSABLE_REASONS
            if (bad["_reason"] == reason).any()
        }
        _unusable_finding(by_reason, n_unusable, findings)
    if n_duplicates:
        clean = work.filter(usable)
        repeated = (
            clean.group_by("action_id")
            .aggregate(rows=clean.count())
            .filter(lambda t: t.rows > 1)
            .to_pandas()
        )
        _duplicate_finding(sorted(repeated["action_id"]), n_duplicates, findings)
    dedupe = n_duplicates > 0
    return _Cleaned(_usable(work, dedupe), _usable(marked, dedupe), n_raw, n_unusable, n_duplicates)


def _unusable_finding(by_reason: dict[str, list[Any]], n: int, findings: list[Finding]) -> None:
    findings.append(
        Finding(
            PHASE,
            "approvals_rows_unusable",
            "warning",
            f"{n} approval row(s) were left out of the review because "
            + "; ".join(f"{len(v)} have {k}" for k, v in by_reason.items())
            + ". Fix them in the approvals data.",
            {"rows": n, "action_ids_by_reason": by_reason},
        )
    )


def _duplicate_finding(ids: list[Any], n: int, findings: list[Finding]) -> None:
    findings.append(
        Finding(
            PHASE,
            "approvals_duplicate_action_id",
            "warning",
            f"{len(ids)} action id(s) appear more than once ({_id_list(ids)}); the earliest "
            f"proposal of each is reviewed and {n} later row(s) are left out.",
            {"action_ids": ids, "rows_left_out": n},
        )
    )


def _clean(raw: pd.DataFrame, findings: list[Finding]) -> tuple[pd.DataFrame, int, int]:
    """Typed approvals sorted by (proposed_at, action_id), the number of unusable rows and
    of duplicate rows; both become findings and are left out."""
    frame = pd.DataFrame(
        {
            "action_id": _clean_text(raw["action_id"]),
            "trace_id": _clean_text(raw["trace_id"]),
            "required_level": _clean_text(raw["required_level"]),
            "decision": _clean_text(raw["decision"]),
            "approver_level": _clean_text(raw["approver_level"]),
        }
    )
    frame["amount"] = pd.to_numeric(raw["amount"], errors="coerce").astype(float)
    bad_ts: dict[str, pd.Series] = {}
    for col in _TIME_COLUMNS:
        frame[col], bad_ts[col] = _parse_timestamps(raw[col])

    problems = dict(
        zip(
            _UNUSABLE_REASONS,
            (
                frame["action_id"].isna(),
                frame["proposed_at"].isna() & ~bad_ts["proposed_at"],
                ~(frame["amount"] >= 0) | ~np.isfinite(frame["amount"]),
                bad_ts["proposed_at"],
                bad_ts["decided_at"],
                bad_ts["executed_at"],
            ),
            strict=True,
        )
    )
    unusable = pd.Series(False, index=frame.index)
    by_reason: dict[str, list[Any]] = {}
    for reason, mask in problems.items():
        new = mask & ~unusable
        if new.any():
            by_reason[reason] = [None if _is_missing(a) else a for a in frame.loc[new, "action_id"]]
        unusable |= mask
    if unusable.any():
        _unusable_finding(by_reason, int(unusable.sum()), findings)
    n_unusable = int(unusable.sum())
    frame = frame.loc[~unusable]
    frame = frame.sort_values(["proposed_at", "action_id"], kind="mergesort")
    dup = frame["action_id"].duplicated(keep="first")
    if dup.any():
        _duplicate_finding(sorted(set(frame.loc[dup, "action_id"])), int(dup.sum()), findings)
    frame = frame.loc[~dup]
    return frame.reset_index(drop=True), n_unusable, int(dup.sum())


# ---- the review in the engine ----------------------------------------------------------

#: Per-level counts that do not depend on the SLA (see ``_LatencyFacts``).
LEVEL_FACT_COLUMNS = [
    "level",
    "n_actions",
    "n_needing_approval",
    "n_requests",
    "n_decided",
    "n_executed",
    "n_timeout_fixed",
    "n_timeout_fixed_needing",
]
DISTRIBUTION_COLUMNS = ["policy_level", "needs_approval", "decided", "latency_minutes", "n"]


def _flag(expr: ir.BooleanValue) -> ir.BooleanValue:
    return expr.fill_null(False)


def _policy_in_force(policy: ApprovalPolicy, versions: Sequence[Any] | None, at: Any) -> Any:
    """The ladder in force at ``at`` (``policy`` itself without versions or a time)."""
    chosen: Any = policy
    if versions and at is not None and not pd.isna(at):
        for v in versions:
            if v.effective_at is None or pd.Timestamp(at) >= v.effective_at:
                chosen = ApprovalPolicy(
                    sla_minutes=policy.sla_minutes,
                    levels=list(v.levels),
                    timeout_action=policy.timeout_action,
                )
    return chosen


def _level_expr(amount: ir.NumericValue, levels: Sequence[Any]) -> ir.StringValue:
    names = [lvl.name for lvl in levels]
    bounded = [(lvl.name, lvl.max_amount) for lvl in levels if lvl.max_amount is not None]
    if bounded:
        return ibis.cases(
            *[(amount <= float(limit), name) for name, limit in bounded], else_=names[-1]
        )
    return ibis.literal(names[-1])


def _derive(
    clean: ir.Table, policy: ApprovalPolicy, versions: Sequence[Any] | None = None
) -> ir.Table:
    """The cleaned approvals with the columns every figure is counted from (no SLA yet)."""
    levels = policy.levels
    names = [lvl.name for lvl in levels]
    amount = clean.amount
    policy_level = _level_expr(amount, levels)
    # Threshold changes: the ladder in force at proposed_at (latest change first).
    timed = [v for v in (versions or []) if v.effective_at is not None]
    if timed:
        policy_level = ibis.cases(
            *[
                (clean.proposed_at >= v.effective_at.to_pydatetime(), _level_expr(amount, v.levels))
                for v in reversed(timed)
            ],
            else_=policy_level,
        )
    needing = [lvl.name for lvl in levels if lvl.requires_approval]
    t = clean.mutate(policy_level=policy_level)
    needs = _flag(t.policy_level.isin(needing)) if needing else ibis.literal(False)
    decision = t.decision
    latency_us = t.decided_at.delta(t.proposed_at, unit="microsecond")
    t = t.mutate(
        needs_approval=needs,
        policy_rank=ibis.cases(*[(t.policy_level == n, i) for i, n in enumerate(names)], else_=-1),
        latency_us=latency_us,
    )
    clock_bad = _flag(t.latency_us < 0)
    executed = t.executed_at.notnull()
    approved = _flag(decision == "approved")
    human = _flag(decision.isin(list(_HUMAN_DECISIONS)))
    routed = decision.isnull() | _flag(decision != "auto")
    timed_out_record = _flag(decision == "timed_out")
    measurable = t.needs_approval & routed & ~clock_bad
    approved_exec = executed & approved & t.needs_approval
    approver = t.approver_level
    approver_rank = ibis.cases(*[(approver == n, i) for i, n in enumerate(names)], else_=-1)
    req = t.required_level
    return t.mutate(
        clock_bad=clock_bad,
        executed=executed,
        measurable=measurable,
        decided=measurable & human & t.decided_at.notnull(),
        timeout_fixed=routed & ~clock_bad & (timed_out_record | t.decided_at.isnull()),
        late_candidate=routed & ~clock_bad & ~timed_out_record & t.decided_at.notnull(),
        rule_broken=(
            (approved_exec & _flag(approver.isin(names)) & (approver_rank < t.policy_rank))
            | (approved_exec & approver.isnull())
            | (executed & t.needs_approval & ~approved)
            | (executed & approved & _flag(t.executed_at < t.decided_at))
            | (_flag(decision == "auto") & t.needs_approval & ~executed)
        ),
        data_problem=(
            req.isnull()
            | ~_flag(req.isin(names))
            | _flag(req != t.policy_level)
            | (approver.notnull() & ~_flag(approver.isin(names)))
            | decision.isnull()
            | ~_flag(decision.isin(list(DECISIONS)))
        ),
    )


def _count(flag: ir.BooleanValue) -> ir.IntegerScalar:
    return ibis.ifelse(flag, 1, 0).sum()


def _latency_facts(derived: ir.Table, policy: ApprovalPolicy) -> _LatencyFacts:
    """Per-level counts and the latency distribution: two small aggregates in the engine."""
    t = derived
    counts = (
        t.group_by(level=t.policy_level)
        .aggregate(
            n_actions=t.count(),
            n_needing_approval=_count(t.needs_approval),
            n_requests=_count(t.measurable),
            n_decided=_count(t.decided),
            n_executed=_count(t.executed),
            n_timeout_fixed=_count(t.timeout_fixed),
            n_timeout_fixed_needing=_count(t.timeout_fixed & t.needs_approval),
        )
        .to_pandas()
    )
    names = [lvl.name for lvl in policy.levels]
    levels = (
        counts.set_index("level")
        .reindex(names)
        .fillna(0)
        .astype("int64")
        .rename_axis("level")
        .reset_index()
    )[LEVEL_FACT_COLUMNS]
    late = t.filter(t.late_candidate)
    dist = (
        late.group_by(
            policy_level=late.policy_level,
            needs_approval=late.needs_approval,
            decided=late.decided,
            latency_us=late.latency_us,
        )
        .aggregate(n=late.count())
        .to_pandas()
    )
    dist = dist.assign(
        latency_minutes=_minutes(dist["latency_us"]),
        needs_approval=dist["needs_approval"].astype(bool),
        decided=dist["decided"].astype(bool),
        n=dist["n"].astype("int64"),
    )
    dist = dist.sort_values(
        ["latency_minutes", "policy_level", "needs_approval", "decided"], kind="mergesort"
    )
    return _LatencyFacts(levels, dist[DISTRIBUTION_COLUMNS].reset_index(drop=True))


def _late_threshold_us(sla: float) -> int:
    """A whole number of microseconds below every latency that is over ``sla`` minutes
    (with room for the rounding of ``us / 1e6 / 60``); the exact test runs on the rows."""
    return int(min(math.floor(sla * 6e7 * (1 - 1e-9)) - 1, 2**62))


def _rows_of_interest(derived: ir.Table, sla: float) -> pd.DataFrame:
    """The few rows a listing or a finding needs, in (proposed_at, action_id) order.

    Every row that may have timed out at ``sla``, broken a rule, or carries a data
    problem (unknown level or decision, a ``required_level`` that disagrees with
    the policy, a decision logged before the proposal).
    """
    t = derived
    maybe_late = t.late_candidate & _flag(t.latency_us > _late_threshold_us(sla))
    wanted = t.timeout_fixed | maybe_late | t.rule_broken | t.data_problem | t.clock_bad
    frame = (
        t.filter(wanted)
        .select(
            "action_id",
            "trace_id",
            "required_level",
            "decision",
            "approver_level",
            "amount",
            "proposed_at",
            "decided_at",
            "executed_at",
            "latency_us",
        )
        .order_by([ibis.asc("proposed_at"), ibis.asc("action_id")])
        .to_pandas()
    )
    for col in _TIME_COLUMNS:
        frame[col], _ = _parse_timestamps(frame[col])
    for col in _TEXT_COLUMNS:
        frame[col] = pd.Series(
            [None if _is_missing(v) else v for v in frame[col]], index=frame.index, dtype=object
        )
    frame["amount"] = frame["amount"].astype(float)
    frame["latency_us"] = frame["latency_us"].astype(float)
    return frame.reset_index(drop=True)


def _actions_view(derived: ir.Table, sla: float) -> ir.Table:
    """The drill-down table (lazy): cleaned actions with their derived columns at ``sla``."""
    t = derived
    minutes = ibis.ifelse(t.clock_bad, ibis.null().cast("float64"), t.latency_us / 1e6 / 60.0)
    late = t.late_candidate & _flag(minutes > sla)
    decision = t.decision
    return t.select(
        "action_id",
        "trace_id",
        "required_level",
        "decision",
        "approver_level",
        "amount",
        "proposed_at",
        "decided_at",
        "executed_at",
        "policy_level",
        "needs_approval",
        "policy_rank",
        latency_minutes=minutes,
        within_sla=t.decided & _flag(minutes <= sla),
        timed_out=t.timeout_fixed | late,
        final_state=ibis.cases(
            (t.executed, "executed"), (decision.notnull(), decision), else_="no decision"
        ),
    ).order_by([ibis.asc("proposed_at"), ibis.asc("action_id")])


def _unknown_decision_finding(frame: pd.DataFrame, findings: list[Finding]) -> None:
    unknown = sorted({d for d in frame["decision"] if d not in DECISIONS}, key=str)
    if unknown:
        ids = list(frame.loc[~frame["decision"].isin(DECISIONS), "action_id"])
        findings.append(
            Finding(
                PHASE,
                "approvals_unknown_decision",
                "warning",
                f"{len(ids)} approval(s) have a decision outside {list(DECISIONS)} "
                f"({', '.join(repr(u) for u in unknown)}): {_id_list(ids)}. They are treated as "
                "not approved.",
                {"action_ids": ids, "values": [None if u is None else u for u in unknown]},
            )
        )


def _level_findings(frame: pd.DataFrame, level_names: list[str], findings: list[Finding]) -> None:
    """Unknown levels and ``required_level`` values that disagree with the policy."""
    req = frame["required_level"]
    unknown_req = req.notna() & ~req.isin(level_names)
    missing_req = req.isna()
    appr = frame["approver_level"]
    unknown_appr = appr.notna() & ~appr.isin(level_names)
    if unknown_req.any() or unknown_appr.any():
        values = sorted(set(req[unknown_req]) | set(appr[unknown_appr]))
        ids = list(frame.loc[unknown_req | unknown_appr, "action_id"])
        unverifiable = list(
            frame.loc[
                unknown_appr
                & frame["decision"].eq("approved")
                & frame["executed_at"].notna()
                & frame["needs_approval"],
                "action_id",
            ]
        )
        tail = (
            f" The authority of {len(unverifiable)} executed approval(s) cannot be checked: "
            f"{_id_list(unverifiable)}."
            if unverifiable
            else ""
        )
        findings.append(
            Finding(
                PHASE,
                "approvals_unknown_level",
                "warning",
                f"{len(ids)} approval(s) name authority levels the policy does not have "
                f"({', '.join(repr(v) for v in values)}; the policy's levels are {level_names}): "
                f"{_id_list(ids)}.{tail}",
                {
                    "unknown_levels": values,
                    "action_ids": ids,
                    "required_level_unknown": list(frame.loc[unknown_req, "action_id"]),
                    "approver_level_unknown": list(frame.loc[unknown_appr, "action_id"]),
                    "authority_unverifiable": unverifiable,
                    "policy_levels": level_names,
                },
            )
        )
    mismatch = req.isin(level_names) & req.ne(frame["policy_level"])
    if mismatch.any() or missing_req.any():
        ids = list(frame.loc[mismatch, "action_id"])
        examples = [
            {
                "action_id": r["action_id"],
                "amount": float(r["amount"]),
                "required_level": r["required_level"],
                "policy_level": r["policy_level"],
            }
            for _, r in frame.loc[mismatch].head(20).iterrows()
        ]
        missing_ids = list(frame.loc[missing_req, "action_id"])
        parts = []
        if ids:
            parts.append(
                f"{len(ids)} approval(s) record a required_level that the policy does not give "
                f"for their amount ({_id_list(ids)})"
            )
        if missing_ids:
            parts.append(f"{len(missing_ids)} have no required_level ({_id_list(missing_ids)})")
        findings.append(
            Finding(
                PHASE,
                "approvals_required_level_mismatch",
                "warning",
                "; ".join(parts)
                + ". The review uses the policy's level for each amount; check how the "
                "approval system routes requests.",
                {"action_ids": ids, "missing_required_level": missing_ids, "examples": examples},
            )
        )

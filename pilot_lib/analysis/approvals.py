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

Approval logs are thousands of rows, so the table is executed into pandas
(only the contract's columns); this module is not meant for decision-log-sized
input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pilot_lib.analysis.drills import (
    _clean_text,
    _id_list,
    _is_missing,
    _parse_timestamps,
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
        ``needs_approval``, ``latency_minutes``...), for drill-down.
    """

    summary: dict[str, Any]
    latency: pd.DataFrame
    violations: pd.DataFrame
    timeouts: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)
    actions: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def passed(self) -> bool:
        """True when no blocking finding (no violation) stands."""
        return not any(f.severity == "blocking" for f in self.findings)

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


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50": math.nan, "p90": math.nan, "p95": math.nan, "max": math.nan}
    p50, p90, p95 = np.percentile(values, [50, 90, 95])
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "max": float(values.max())}


def review_approvals(
    approvals: Any,
    policy: ApprovalPolicy,
    sla_minutes: float | None = None,
    confidence: float = 0.95,
) -> ApprovalReview:
    """Review human approvals against the decision-authority ``policy``.

    Parameters
    ----------
    approvals:
        The ``approvals`` data set as an Ibis table or a pandas DataFrame
        (contract columns; ``trace_id`` optional). Executed into pandas whole.
    policy:
        The pilot file's ``approvals`` section: levels (lowest first, each with
        ``max_amount`` in US dollars and ``requires_approval``), SLA and
        ``timeout_action``.
    sla_minutes:
        Approval SLA in minutes; ``None`` uses ``policy.sla_minutes``.
    confidence:
        Coverage of the Wilson interval on the within-SLA share.

    Returns
    -------
    ApprovalReview
        Never raises on bad rows (they become findings); a missing required
        column raises :class:`~pilot_lib.errors.ContractError`.
    """
    sla = float(policy.sla_minutes if sla_minutes is None else sla_minutes)
    if not (math.isfinite(sla) and sla > 0):
        raise ValueError(f"sla_minutes must be a positive number of minutes, got {sla_minutes}")

    raw = _small_frame(approvals, "approvals", _REQUIRED, _OPTIONAL)
    findings: list[Finding] = []
    frame, n_unusable, n_duplicates = _clean(raw, findings)

    level_names = [lvl.name for lvl in policy.levels]
    requires = {lvl.name: lvl.requires_approval for lvl in policy.levels}
    frame["policy_level"] = pd.Series(
        [policy.required_level(float(a)) for a in frame["amount"]], index=frame.index, dtype=object
    )
    frame["needs_approval"] = frame["policy_level"].map(requires).astype(bool)
    frame["policy_rank"] = frame["policy_level"].map(policy.level_rank)
    latency = (frame["decided_at"] - frame["proposed_at"]).dt.total_seconds() / 60.0
    frame["latency_minutes"] = latency.astype(float)

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
    human = decision.isin(_HUMAN_DECISIONS)
    routed = decision.ne("auto")
    requests = frame["needs_approval"] & routed
    measurable = requests & ~clock_bad
    within = measurable & human & frame["decided_at"].notna() & (frame["latency_minutes"] <= sla)
    frame["within_sla"] = within
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

    # --- SLA share and latency --------------------------------------------------------
    decided = measurable & human & frame["decided_at"].notna()
    n_requests = int(measurable.sum())
    n_within = int(within.sum())
    low, high = wilson_interval(n_within, n_requests, confidence)
    share = n_within / n_requests if n_requests else math.nan
    overall = _percentiles(frame.loc[decided, "latency_minutes"].to_numpy(dtype=float))

    latency_rows = []
    for lvl in policy.levels:
        at = frame["policy_level"] == lvl.name
        req = measurable & at
        n_req = int(req.sum())
        n_in = int((within & at).sum())
        lo, hi = wilson_interval(n_in, n_req, confidence)
        pct = _percentiles(frame.loc[decided & at, "latency_minutes"].to_numpy(dtype=float))
        latency_rows.append(
            {
                "level": lvl.name,
                "requires_approval": lvl.requires_approval,
                "n_actions": int(at.sum()),
                "n_requests": n_req,
                "n_decided": int((decided & at).sum()),
                "p50_minutes": pct["p50"],
                "p90_minutes": pct["p90"],
                "p95_minutes": pct["p95"],
                "max_minutes": pct["max"],
                "n_within_sla": n_in,
                "share_within_sla": n_in / n_req if n_req else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "n_timed_out": int((timed_out & at & frame["needs_approval"]).sum()),
            }
        )
    latency_table = pd.DataFrame(latency_rows, columns=LATENCY_COLUMNS)

    if len(frame) == 0:
        findings.append(
            Finding(
                PHASE,
                "approvals_empty",
                "warning",
                "No approval records were loaded, so the human approval workflow and its SLA "
                "timeouts have not been shown to work.",
                {"rows": len(raw)},
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
                {"rows": len(frame)},
            )
        )

    summary = {
        "sla_minutes": sla,
        "confidence": confidence,
        "timeout_action": policy.timeout_action,
        "n_actions": len(frame),
        "n_unusable_rows": n_unusable,
        "n_duplicate_rows": n_duplicates,
        "n_needing_approval": int(frame["needs_approval"].sum()),
        "n_requests": n_requests,
        "n_decided": int(decided.sum()),
        "n_within_sla": n_within,
        "share_within_sla": share,
        "ci_low": low,
        "ci_high": high,
        "p50_minutes": overall["p50"],
        "p90_minutes": overall["p90"],
        "p95_minutes": overall["p95"],
        "max_minutes": overall["max"],
        "n_executed": int(executed.sum()),
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
        actions=frame.reset_index(drop=True),
    )


def _timeout_how(r: pd.Series, sla: float) -> str:
    if r["decision"] == "timed_out":
        return "the approval timed out"
    if _is_missing(r["decided_at"]):
        return "the approval was never decided"
    return f"the approval was decided after {r['latency_minutes']:,.1f} minutes, past the {sla:g}-minute SLA"


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
    for col in ("proposed_at", "decided_at", "executed_at"):
        frame[col], bad_ts[col] = _parse_timestamps(raw[col])

    problems = {
        "no action_id": frame["action_id"].isna(),
        "no proposed_at": frame["proposed_at"].isna() & ~bad_ts["proposed_at"],
        "missing, negative or non-numeric amount": ~(frame["amount"] >= 0)
        | ~np.isfinite(frame["amount"]),
        "unparseable proposed_at": bad_ts["proposed_at"],
        "unparseable decided_at": bad_ts["decided_at"],
        "unparseable executed_at": bad_ts["executed_at"],
    }
    unusable = pd.Series(False, index=frame.index)
    by_reason: dict[str, list[Any]] = {}
    for reason, mask in problems.items():
        new = mask & ~unusable
        if new.any():
            by_reason[reason] = [None if _is_missing(a) else a for a in frame.loc[new, "action_id"]]
        unusable |= mask
    if unusable.any():
        findings.append(
            Finding(
                PHASE,
                "approvals_rows_unusable",
                "warning",
                f"{int(unusable.sum())} approval row(s) were left out of the review because "
                + "; ".join(f"{len(v)} have {k}" for k, v in by_reason.items())
                + ". Fix them in the approvals data.",
                {"rows": int(unusable.sum()), "action_ids_by_reason": by_reason},
            )
        )
    n_unusable = int(unusable.sum())
    frame = frame.loc[~unusable]
    frame = frame.sort_values(["proposed_at", "action_id"], kind="mergesort")
    dup = frame["action_id"].duplicated(keep="first")
    if dup.any():
        ids = sorted(set(frame.loc[dup, "action_id"]))
        findings.append(
            Finding(
                PHASE,
                "approvals_duplicate_action_id",
                "warning",
                f"{len(ids)} action id(s) appear more than once ({_id_list(ids)}); the earliest "
                f"proposal of each is reviewed and {int(dup.sum())} later row(s) are left out.",
                {"action_ids": ids, "rows_left_out": int(dup.sum())},
            )
        )
    frame = frame.loc[~dup]

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
    return frame.reset_index(drop=True), n_unusable, int(dup.sum())


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

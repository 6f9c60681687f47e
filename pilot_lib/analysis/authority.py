"""Phase 4: decision authority as an Open Policy Agent (Rego) policy, replayed on the log.

The playbook implements decision authority "as a policy engine (Open Policy Agent
...) that evaluates each proposed action against the current thresholds", and asks
to "simulate a policy update and verify that the agent's behavior changes within one
decision cycle". This module:

- exports the pilot file's ``approvals.levels`` as a Rego policy (:data:`REGO_POLICY`,
  the same text for every pilot) and its data document (:func:`policy_document`: the
  levels of every policy version), written to ``policy/`` in each run folder;
- **replays** every logged proposed action (the ``approvals`` data set) through that
  policy with a real Rego engine in-process (``regopy``, Microsoft's rego-cpp): the
  route the log records (``required_level``, and whether the action ran on its own,
  ``decision == "auto"``) against the route the policy in force at ``proposed_at``
  gives for its amount. Under-routed actions (ran, or were routed, below what the
  policy requires) block; over-routed ones (sent higher than needed) are a warning;
- answers a **what-if** on changed thresholds through the same policy with a changed
  data document (:meth:`AuthorityReview.what_if`);
- checks every **policy change** the ``policy_versions`` data set records: among the
  actions after the change for which the old and the new policy disagree, how many
  still followed the old one before the first followed the new one (the lag), judged
  against ``approvals.policy_change_max_lag_decisions``.

What the approval review (:mod:`pilot_lib.analysis.approvals`) already finds is not
repeated here: approvers below the required level, executions before decisions,
timeouts that end approved. The replay is about the route itself.

Engine: the log stays in its engine. Only the distinct ``(policy version, amount)``
pairs leave it, are decided by Rego in batches of :data:`BATCH` amounts, and go back
as a small memtable that is joined to the log; counts and the listed actions (at most
:data:`MAX_LISTED`) are the only other things fetched.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from pilot_lib.analysis.findings import Finding
from pilot_lib.config import ApprovalPolicy, AuthorityLevel, Pilot
from pilot_lib.results import to_jsonable

__all__ = [
    "BATCH",
    "MAX_LISTED",
    "PILOT_FILE_VERSION",
    "REGO_POLICY",
    "SECTION",
    "AuthorityReview",
    "PolicyVersion",
    "RegoAuthority",
    "WhatIf",
    "authority_review",
    "load_policy_versions",
    "policy_document",
    "write_policy",
]

PHASE = "incident_drill_review"
#: Heading of the notebook section (phase 4) that shows this review.
SECTION = "Decision authority policy"
#: Name of the version the pilot file's own levels form (in force until the first
#: version of the ``policy_versions`` data set, if any).
PILOT_FILE_VERSION = "pilot_file"
#: Amounts per Rego query: one query over ~1,000 amounts takes a few hundredths of a
#: second; a single giant input array is superlinear.
BATCH = 1000
#: Differing actions listed by id in the result (the total is always stated).
MAX_LISTED = 200
#: Top-level key of the data document (not ``authority``: it would collide with the
#: package's own path, ``data.pilot.authority``).
DATA_KEY = "authority_policy"
QUERY_PATH = "data.pilot.authority"

#: The decision-authority policy. Levels are ordered lowest first and their
#: ``max_amount`` increase (the pilot file and the ``policy_versions`` contract
#: enforce it), so the level that must decide an amount sits after every limit below
#: the amount; above every limit, the highest level decides.
REGO_POLICY = """\
# Decision authority of an agentic-AI pilot (agentic-pilot-workbook).
# Data document: data.authority_policy = {
#   "current": "<version>",
#   "versions": {"<version>": {"effective_at": "<ISO time or null>",
#                              "levels": [{"name": ..., "max_amount": <USD or null>,
#                                          "requires_approval": <bool>}, ...]}}}
# Levels are listed lowest first; max_amount increases; only the last may be null.
package pilot.authority

import rego.v1

versions := data.authority_policy.versions

limits(levels) := [l.max_amount | some l in levels; l.max_amount != null]

# Position (0 = lowest) of the level that must decide `amount`: the lowest whose
# max_amount covers it; above every limit, the highest level.
rank_of(levels, amount) := min([count([x | some x in limits(levels); x < amount]), count(levels) - 1])

route(version, amount) := r if {
	levels := versions[version].levels
	i := rank_of(levels, amount)
	r := {
		"level": levels[i].name,
		"rank": i,
		"requires_approval": levels[i].requires_approval,
		"policy_version": version,
	}
}

# One proposed action: input {"amount": 1234.56, "policy_version": "v2"} (version optional).
decision := route(object.get(input, "policy_version", data.authority_policy.current), input.amount)

# Autonomous execution is allowed when the deciding level needs no approval.
default allow_autonomous := false

allow_autonomous if not decision.requires_approval

# A batch: input {"policy_version": "v2", "amounts": [...]} gives the rank of each amount.
batch_ranks := [i |
	levels := versions[input.policy_version].levels
	lim := limits(levels)
	top := count(levels) - 1
	some a in input.amounts
	i := min([count([x | some x in lim; x < a]), top])
]
"""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _money(x: float) -> str:
    return f"${x:,.2f}"


# ---- policy versions -----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyVersion:
    """One version of the authority ladder; ``effective_at`` None: in force from the start."""

    name: str
    effective_at: pd.Timestamp | None
    levels: tuple[AuthorityLevel, ...]

    def level_doc(self) -> list[dict[str, Any]]:
        return [
            {
                "name": lvl.name,
                "max_amount": lvl.max_amount,
                "requires_approval": lvl.requires_approval,
            }
            for lvl in self.levels
        ]


def _pilot_version(levels: Sequence[AuthorityLevel]) -> PolicyVersion:
    return PolicyVersion(PILOT_FILE_VERSION, None, tuple(levels))


def load_policy_versions(pilot: Pilot, data: Any) -> tuple[list[PolicyVersion], list[Finding]]:
    """The policy versions in force over the pilot, oldest first, and problems found.

    The first is always the pilot file's ladder (``effective_at`` None); then each
    version of the ``policy_versions`` data set (valid rows) by ``effective_at``. A
    version is left out, with a warning, when its rows do not form a ladder the pilot
    file accepts, or when its level names or ``requires_approval`` flags differ from
    the pilot file's (the log's ``required_level`` is read against the pilot file's
    names; a version may move thresholds, not rename or add levels).
    """
    versions = [_pilot_version(pilot.approvals.levels)]
    findings: list[Finding] = []
    table = data.table("policy_versions") if data is not None else None
    if table is None:
        return versions, findings
    rows = table.select(
        "policy_version", "effective_at", "level", "max_amount", "requires_approval"
    ).execute()  # one row per level per version: small
    base = [(lvl.name, lvl.requires_approval) for lvl in pilot.approvals.levels]
    for name, rows_v in rows.groupby("policy_version", sort=False):
        rows_v = rows_v.assign(_open=rows_v["max_amount"].isna()).sort_values(
            ["_open", "max_amount"], kind="mergesort"
        )
        problem = None
        try:
            levels = [
                AuthorityLevel(
                    name=str(r.level),
                    max_amount=None if pd.isna(r.max_amount) else float(r.max_amount),
                    requires_approval=bool(r.requires_approval),
                )
                for r in rows_v.itertuples()
            ]
            ApprovalPolicy(sla_minutes=pilot.approvals.sla_minutes, levels=levels)
            if [(lvl.name, lvl.requires_approval) for lvl in levels] != base:
                problem = (
                    f"its levels {[(lvl.name, lvl.requires_approval) for lvl in levels]} are not "
                    f"the pilot file's {base} (names, order and requires_approval must match)"
                )
        except ValueError as exc:
            problem = f"its levels do not form a valid ladder ({exc})"
        if problem is not None:
            findings.append(
                Finding(
                    PHASE,
                    "authority_policy_version_unusable",
                    "warning",
                    f"Policy version {name!r} in policy_versions is left out of the replay: "
                    f"{problem}.",
                    {"policy_version": str(name), "section": SECTION},
                )
            )
            continue
        versions.append(
            PolicyVersion(str(name), pd.Timestamp(rows_v["effective_at"].iloc[0]), tuple(levels))
        )
    versions[1:] = sorted(versions[1:], key=lambda v: v.effective_at)
    return versions, findings


def policy_document(versions: Sequence[PolicyVersion]) -> dict[str, Any]:
    """The Rego data document for ``versions``; ``current`` is the last (newest) one."""
    return {
        DATA_KEY: {
            "current": versions[-1].name,
            "versions": {
                v.name: {
                    "effective_at": None if v.effective_at is None else v.effective_at.isoformat(),
                    "levels": v.level_doc(),
                }
                for v in versions
            },
        }
    }


def write_policy(folder: str | Path, pilot: Pilot) -> tuple[Path, Path]:
    """Write ``policy/authority.rego`` and ``policy/data.json`` (the pilot file's levels)
    under ``folder``, atomically; returns both paths.

    The data document holds the pilot file's ladder only: threshold changes the
    ``policy_versions`` data set records are in the phase-4 result
    (``authority_policy.policy_document``), where the log is read.
    """
    from pilot_lib.runs import atomic_write_text

    out = Path(folder) / "policy"
    out.mkdir(parents=True, exist_ok=True)
    doc = policy_document([_pilot_version(pilot.approvals.levels)])
    rego = atomic_write_text(out / "authority.rego", REGO_POLICY)
    data = atomic_write_text(out / "data.json", json.dumps(doc, indent=2) + "\n")
    return rego, data


# ---- the Rego engine -----------------------------------------------------------------------


class RegoAuthority:
    """:data:`REGO_POLICY` with a data document, evaluated in-process by regopy."""

    def __init__(self, document: dict[str, Any], policy: str = REGO_POLICY) -> None:
        from regopy import Interpreter

        self.document = document
        self._rego = Interpreter()
        self._rego.add_module("authority", policy)
        self._rego.add_data_json(json.dumps(document))

    def _query(self, rule: str, input_doc: dict[str, Any]) -> Any:
        self._rego.set_input_term(json.dumps(input_doc))
        out = self._rego.query(f"{QUERY_PATH}.{rule}")
        text = str(out)
        if not out.ok():
            raise RuntimeError(f"the authority policy failed on {rule}: {text}")
        parsed = json.loads(text)
        if "expressions" not in parsed:  # undefined: e.g. an unknown policy version
            raise RuntimeError(f"the authority policy gave no {rule} for input {input_doc}")
        return parsed["expressions"][0]

    def decide(self, amount: float, policy_version: str | None = None) -> dict[str, Any]:
        """The route for one action: ``{"level", "rank", "requires_approval", "policy_version"}``."""
        doc: dict[str, Any] = {"amount": float(amount)}
        if policy_version is not None:
            doc["policy_version"] = policy_version
        return self._query("decision", doc)

    def ranks(self, policy_version: str, amounts: Sequence[float]) -> list[int]:
        """Rank (0 = lowest level) of the deciding level of each amount, in order."""
        out: list[int] = []
        values = [float(a) for a in amounts]
        for start in range(0, len(values), BATCH):
            chunk = values[start : start + BATCH]
            got = self._query("batch_ranks", {"policy_version": policy_version, "amounts": chunk})
            if len(got) != len(chunk):
                raise RuntimeError("the authority policy returned a rank list of the wrong length")
            out.extend(int(i) for i in got)
        return out


def _ranks_table(rego: RegoAuthority, pairs: pd.DataFrame, names: list[str]) -> ir.Table:
    """A memtable ``(vidx, amount, rank)`` for the distinct ``pairs`` (``vidx``, ``amount``)."""
    parts = []
    for vidx, group in pairs.groupby("vidx", sort=True):
        amounts = group["amount"].to_numpy(dtype=float)
        parts.append(
            pd.DataFrame(
                {
                    "vidx": int(vidx),
                    "amount": amounts,
                    "rank": rego.ranks(names[int(vidx)], amounts),
                }
            )
        )
    frame = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"vidx": [], "amount": [], "rank": []})
    )
    frame = frame.astype({"vidx": "int64", "amount": "float64", "rank": "int64"})
    return ibis.memtable(frame)


# ---- the replay -----------------------------------------------------------------------------

REPLAY_KINDS: dict[str, str] = {
    "under_routed": "ran or were routed below the level the policy requires",
    "over_routed": "were sent to a higher level than the policy requires",
    "within_change_lag": (
        "followed the superseded policy just after a change, within the allowed lag"
    ),
    "unknown_level": "record a required_level the policy does not have",
}
LISTING_COLUMNS = [
    "action_id",
    "trace_id",
    "proposed_at",
    "amount",
    "policy_version",
    "kind",
    "logged_level",
    "decision",
    "policy_level",
    "detail",
]


@dataclass
class WhatIf:
    """Approval load under changed thresholds, against the pilot file's (same log, same Rego)."""

    thresholds: dict[str, float | None]
    per_level: pd.DataFrame  # level, requires_approval, actions_now, actions_what_if, change
    n_actions: int
    weeks: int
    needing_approval_now: int
    needing_approval_what_if: int
    median_handling_minutes: float
    sla_minutes: float
    share_within_sla_now: float
    autonomous_value_now: float
    autonomous_value_what_if: float

    @property
    def approvals_per_week_now(self) -> float:
        return self.needing_approval_now / self.weeks if self.weeks else math.nan

    @property
    def approvals_per_week_what_if(self) -> float:
        return self.needing_approval_what_if / self.weeks if self.weeks else math.nan

    @property
    def added_approvals_per_week(self) -> float:
        return self.approvals_per_week_what_if - self.approvals_per_week_now

    def approver_hours_per_week(self, approvals_per_week: float) -> float:
        return approvals_per_week * self.median_handling_minutes / 60.0

    @property
    def added_approver_hours_per_week(self) -> float:
        return self.approver_hours_per_week(self.added_approvals_per_week)

    @property
    def load_change(self) -> float:
        """Relative change in approvals (0.25 = a quarter more); NaN when none are needed now."""
        if self.needing_approval_now == 0:
            return math.nan
        return self.needing_approval_what_if / self.needing_approval_now - 1.0

    @property
    def sla_note(self) -> str:
        """What the change means for the approval SLA, with the assumptions said plainly."""
        change = self.load_change
        base = (
            f"Assumptions: each approval takes the log's median proposal-to-decision time "
            f"({self.median_handling_minutes:,.1f} min; it includes time waiting in the queue, "
            "so the approver hours are an upper bound on hands-on work), and the approvers' "
            "capacity stays as it was in the pilot. "
        )
        if math.isnan(change) or abs(change) < 1e-12:
            return base + (
                f"The approval load does not change, so the measured SLA share "
                f"({self.share_within_sla_now:.1%} within {self.sla_minutes:g} min) stands."
            )
        if change > 0:
            return base + (
                f"Approvals rise by {change:.0%} ({self.added_approvals_per_week:+,.1f} a week, "
                f"{self.added_approver_hours_per_week:+,.1f} approver hours a week). The "
                f"{self.share_within_sla_now:.1%} within the {self.sla_minutes:g}-minute SLA was "
                "measured at the pilot's load; it holds only if approver time grows by the same "
                f"{change:.0%}, otherwise queues lengthen and expect that share to fall."
            )
        return base + (
            f"Approvals fall by {-change:.0%} ({self.added_approvals_per_week:+,.1f} a week); the "
            f"{self.share_within_sla_now:.1%} within the {self.sla_minutes:g}-minute SLA should "
            "hold or improve."
        )

    def table(self) -> pd.DataFrame:
        """The headline figures, one row each (for the notebook)."""
        rows = [
            ("actions in the log", self.n_actions, self.n_actions),
            ("needing approval", self.needing_approval_now, self.needing_approval_what_if),
            ("approvals per week", self.approvals_per_week_now, self.approvals_per_week_what_if),
            (
                "approver hours per week",
                self.approver_hours_per_week(self.approvals_per_week_now),
                self.approver_hours_per_week(self.approvals_per_week_what_if),
            ),
            (
                "value run autonomously (USD)",
                self.autonomous_value_now,
                self.autonomous_value_what_if,
            ),
        ]
        return pd.DataFrame(rows, columns=["figure", "pilot file thresholds", "what-if"])

    def to_result(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "thresholds": self.thresholds,
                "per_level": self.per_level.to_dict(orient="records"),
                "n_actions": self.n_actions,
                "weeks": self.weeks,
                "needing_approval_now": self.needing_approval_now,
                "needing_approval_what_if": self.needing_approval_what_if,
                "approvals_per_week_now": self.approvals_per_week_now,
                "approvals_per_week_what_if": self.approvals_per_week_what_if,
                "added_approvals_per_week": self.added_approvals_per_week,
                "median_handling_minutes": self.median_handling_minutes,
                "added_approver_hours_per_week": self.added_approver_hours_per_week,
                "sla_minutes": self.sla_minutes,
                "share_within_sla_now": self.share_within_sla_now,
                "autonomous_value_now": self.autonomous_value_now,
                "autonomous_value_what_if": self.autonomous_value_what_if,
                "sla_note": self.sla_note,
            }
        )


@dataclass
class AuthorityReview:
    """The replay of the log through the Rego policy, the policy changes and the what-if."""

    versions: list[PolicyVersion]
    document: dict[str, Any]
    counts: dict[str, int]
    n_actions: int
    listed: pd.DataFrame
    changes: pd.DataFrame
    max_lag: int
    baseline: WhatIf
    findings: list[Finding] = field(default_factory=list)
    #: What the what-if needs to run again (the log, still in its engine).
    _log: Any = field(default=None, repr=False)
    _pilot: Any = field(default=None, repr=False)
    _facts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def policy_sha256(self) -> str:
        return _sha256(REGO_POLICY)

    @property
    def document_sha256(self) -> str:
        return _sha256(json.dumps(self.document, sort_keys=True))

    @property
    def n_differing(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("under_routed", "over_routed", "unknown_level"))

    @property
    def note(self) -> str:
        """One plain sentence on which policy the log was replayed against."""
        if len(self.versions) == 1:
            return (
                "No policy_versions data set: the pilot file's levels are the only policy, "
                "so there is no threshold change to check."
            )
        return (
            f"{len(self.versions) - 1} recorded threshold change(s); each action is replayed "
            "against the version in force when it was proposed."
        )

    def summary(self) -> pd.DataFrame:
        """Counts by replay kind (all kinds listed, zeros included)."""
        return pd.DataFrame(
            [
                {"kind": k, "actions": self.counts.get(k, 0), "meaning": text}
                for k, text in REPLAY_KINDS.items()
            ]
        )

    def versions_table(self) -> pd.DataFrame:
        rows = []
        for v in self.versions:
            for rank, lvl in enumerate(v.levels):
                rows.append(
                    {
                        "policy_version": v.name,
                        "effective_at": v.effective_at,
                        "rank": rank,
                        "level": lvl.name,
                        "max_amount": lvl.max_amount,
                        "requires_approval": lvl.requires_approval,
                    }
                )
        return pd.DataFrame(rows)

    def what_if(self, thresholds: dict[str, float | None]) -> WhatIf:
        """The approval load had the levels had other ``max_amount`` (US dollars), by level
        name; levels not named keep the pilot file's. The changed ladder must still be
        valid (increasing limits; only the last without one), else ``ValueError``."""
        return _what_if(self._log, self._pilot, thresholds, self._facts)

    def to_result(self) -> dict[str, Any]:
        listed = self.listed
        return to_jsonable(
            {
                "policy_sha256": self.policy_sha256,
                "policy_document_sha256": self.document_sha256,
                "policy_document": self.document,
                "n_actions": self.n_actions,
                "replay": {
                    "counts": {k: self.counts.get(k, 0) for k in REPLAY_KINDS},
                    "n_differing": self.n_differing,
                    "n_listed": len(listed),
                    "listed_cap": MAX_LISTED,
                    "differing_actions": listed.to_dict(orient="records"),
                },
                "policy_changes": self.changes.to_dict(orient="records"),
                "max_lag_decisions": self.max_lag,
                "what_if_at_pilot_file_thresholds": self.baseline.to_result(),
                "findings": self.findings,
            }
        )


def _version_index(t: ir.Table, versions: Sequence[PolicyVersion]) -> ir.IntegerValue:
    """Index in ``versions`` of the version in force at ``proposed_at``."""
    branches = [
        (t.proposed_at >= v.effective_at.to_pydatetime(), i)
        for i, v in reversed(list(enumerate(versions)))
        if v.effective_at is not None
    ]
    if not branches:
        return ibis.literal(0, "int64")
    return ibis.cases(*branches, else_=0).cast("int64")


def _route_flags(
    t: ir.Table, rank: ir.IntegerValue, requires: list[bool]
) -> tuple[ir.BooleanValue, ir.BooleanValue]:
    """(under, over) for the policy route at ``rank`` against the logged route."""
    needs = ibis.cases(*[(rank == i, r) for i, r in enumerate(requires)], else_=False)
    auto = (t.decision == "auto").fill_null(False)
    logged = t.logged_rank
    under = (needs & auto) | (logged < rank).fill_null(False)
    over = ~under & ((logged > rank).fill_null(False) | (~needs & ~auto))
    return under, over


def _what_if(
    log: ir.Table, pilot: Pilot, thresholds: dict[str, float | None], facts: dict[str, Any]
) -> WhatIf:
    levels = list(pilot.approvals.levels)
    names = [lvl.name for lvl in levels]
    unknown = sorted(set(thresholds) - set(names))
    if unknown:
        raise ValueError(f"unknown level(s) {unknown} in the what-if; levels: {names}")
    changed = [
        AuthorityLevel(
            name=lvl.name,
            max_amount=thresholds.get(lvl.name, lvl.max_amount),
            requires_approval=lvl.requires_approval,
        )
        for lvl in levels
    ]
    try:
        ApprovalPolicy(sla_minutes=pilot.approvals.sla_minutes, levels=changed)
    except ValueError:
        limits = {lvl.name: lvl.max_amount for lvl in changed}
        raise ValueError(
            f"the limits {limits} do not form a ladder: each max_amount must be above the one "
            "below it, and only the highest level may have none"
        ) from None
    now = _pilot_version(levels)
    scenario = PolicyVersion("what_if", None, tuple(changed))
    rego = RegoAuthority(policy_document([now, scenario]))
    amounts = log.select("amount").distinct().execute()["amount"]
    pairs = pd.concat(
        [pd.DataFrame({"vidx": 0, "amount": amounts}), pd.DataFrame({"vidx": 1, "amount": amounts})]
    )
    ranks = _ranks_table(rego, pairs, [now.name, scenario.name])
    r_now = ranks.filter(ranks.vidx == 0).select("amount", rank_now="rank")
    r_new = ranks.filter(ranks.vidx == 1).select("amount", rank_new="rank")
    joined = log.select("amount").join(r_now, "amount").join(r_new, "amount")
    agg = (
        joined.group_by(["rank_now", "rank_new"])
        .aggregate(n=joined.count(), value=joined.amount.sum())
        .execute()
    )
    requires = [lvl.requires_approval for lvl in levels]
    per_level = pd.DataFrame(
        {
            "level": names,
            "requires_approval": requires,
            "actions_now": [int(agg.loc[agg.rank_now == i, "n"].sum()) for i in range(len(names))],
            "actions_what_if": [
                int(agg.loc[agg.rank_new == i, "n"].sum()) for i in range(len(names))
            ],
        }
    )
    per_level["change"] = per_level["actions_what_if"] - per_level["actions_now"]
    free = [i for i, r in enumerate(requires) if not r]
    needing_now = int(agg.loc[~agg.rank_now.isin(free), "n"].sum())
    needing_new = int(agg.loc[~agg.rank_new.isin(free), "n"].sum())
    return WhatIf(
        thresholds={lvl.name: lvl.max_amount for lvl in changed},
        per_level=per_level,
        n_actions=int(agg["n"].sum()),
        weeks=int(facts["weeks"]),
        needing_approval_now=needing_now,
        needing_approval_what_if=needing_new,
        median_handling_minutes=float(facts["median_minutes"]),
        sla_minutes=float(pilot.approvals.sla_minutes),
        share_within_sla_now=float(facts["share_within_sla"]),
        autonomous_value_now=float(agg.loc[agg.rank_now.isin(free), "value"].sum()),
        autonomous_value_what_if=float(agg.loc[agg.rank_new.isin(free), "value"].sum()),
    )


def _log_facts(log: ir.Table, sla_minutes: float) -> dict[str, Any]:
    """Weeks with actions, the median proposal-to-decision time of human decisions
    (minutes) and the share of routed actions decided by a human within the SLA."""
    minutes = log.decided_at.delta(log.proposed_at, unit="second").cast("float64") / 60.0
    human = log.decision.isin(["approved", "rejected", "escalated"]).fill_null(False)
    routed = (log.decision != "auto").fill_null(True)
    within = human & log.decided_at.notnull() & (minutes <= sla_minutes).fill_null(False)
    agg = log.aggregate(
        weeks=log.proposed_at.truncate("W").nunique(),
        # a null outside the human decisions rather than ``where=``: Spark's percentile
        # needs a constant percentage, which a filtered quantile is not
        median_minutes=ibis.ifelse(human & log.decided_at.notnull(), minutes, ibis.null()).median(),
        routed=routed.sum(),
        within=(routed & within).sum(),
    ).execute()
    row = agg.iloc[0]
    routed_n = int(row["routed"] or 0)
    return {
        "weeks": int(row["weeks"] or 0),
        "median_minutes": float(row["median_minutes"])
        if pd.notna(row["median_minutes"])
        else math.nan,
        "share_within_sla": int(row["within"] or 0) / routed_n if routed_n else math.nan,
    }


def authority_review(pilot: Pilot, data: Any) -> AuthorityReview | None:
    """Replay the ``approvals`` log through the Rego authority policy (see the module
    docstring). None when the pilot has no approvals data set."""
    log = data.table("approvals") if data is not None else None
    if log is None:
        return None
    versions, findings = load_policy_versions(pilot, data)
    document = policy_document(versions)
    rego = RegoAuthority(document)
    names = [v.name for v in versions]
    level_names = [lvl.name for lvl in pilot.approvals.levels]
    requires = [lvl.requires_approval for lvl in pilot.approvals.levels]
    max_lag = pilot.approvals.policy_change_max_lag_decisions

    base_cols = ["action_id", "trace_id", "proposed_at", "amount", "required_level", "decision"]
    t = log.select(*base_cols)
    t = t.mutate(
        vidx=_version_index(t, versions),
        logged_rank=ibis.cases(
            *[(t.required_level == n, i) for i, n in enumerate(level_names)], else_=None
        ).cast("int64"),
    )
    t = t.mutate(pidx=(t.vidx - 1).cast("int64"))
    # The distinct (version, amount) pairs Rego decides: each action under the version in
    # force, and, after a change, under the version it replaced.
    pairs = (
        ibis.union(
            t.select(vidx=t.vidx, amount=t.amount),
            t.filter(t.vidx >= 1).select(vidx=t.pidx, amount=t.amount),
        )
        .distinct()
        .execute()
    )
    ranks = _ranks_table(rego, pairs, names)
    now = ranks.select(vidx="vidx", amount="amount", rank_now="rank")
    prev = ranks.select(pidx="vidx", amount="amount", rank_prev="rank")
    t = t.join(now, ["vidx", "amount"]).left_join(prev, ["pidx", "amount"])
    t = t.select(*base_cols, "vidx", "pidx", "logged_rank", "rank_now", "rank_prev")
    under_now, over_now = _route_flags(t, t.rank_now, requires)
    under_prev, over_prev = _route_flags(t, t.rank_prev, requires)
    affected = (t.vidx >= 1) & (t.rank_now != t.rank_prev).fill_null(False)
    known = t.logged_rank.notnull()
    t = t.mutate(
        under_now=under_now,
        over_now=over_now,
        affected=affected,
        follows_now=affected & known & ~under_now & ~over_now,
        follows_prev=affected & known & ~under_prev & ~over_prev,
    )

    # Policy changes: first action that followed the new policy, and the lag before it.
    followed = t.filter(t.follows_now)
    firsts = followed.group_by("vidx").aggregate(first_new_at=followed.proposed_at.min())
    t = t.left_join(firsts, "vidx").select(t, "first_new_at")
    in_lag = t.follows_prev & (t.first_new_at.isnull() | (t.proposed_at < t.first_new_at))
    t = t.mutate(in_lag=in_lag.fill_null(False))
    hit = t.filter(t.affected)
    change_stats = (
        hit.group_by("vidx")
        .aggregate(
            n_affected=hit.count(),
            n_followed_new=hit.follows_now.sum(),
            n_followed_old=hit.follows_prev.sum(),
            lag_decisions=hit.in_lag.sum(),
            first_new_at=hit.first_new_at.max(),
        )
        .execute()
    )
    changes, lag_ok = _changes_table(versions, change_stats, t, max_lag)
    ok_versions = [i for i, ok in lag_ok.items() if ok]
    grace = t.in_lag & (t.vidx.isin(ok_versions) if ok_versions else ibis.literal(False))
    kind = ibis.cases(
        (~known, "unknown_level"),
        (grace, "within_change_lag"),
        (t.under_now, "under_routed"),
        (t.over_now, "over_routed"),
        else_=ibis.null("string"),
    )
    t = t.mutate(kind=kind)
    count_frame = t.group_by("kind").aggregate(n=t.count()).execute()
    counts = {
        str(k): int(n)
        for k, n in zip(count_frame["kind"], count_frame["n"], strict=True)
        if pd.notna(k)
    }
    n_actions = int(count_frame["n"].sum())
    listed = (
        t.filter(t.kind.notnull())
        .order_by([t.proposed_at, t.action_id])
        .limit(MAX_LISTED)
        .select(*base_cols, "vidx", "rank_now", "kind")
        .execute()
    )
    listed = _describe_listed(listed, names, level_names, requires)

    facts = _log_facts(log, pilot.approvals.sla_minutes)
    baseline = _what_if(log, pilot, {}, facts)
    findings.extend(_findings(counts, listed, changes, max_lag))
    return AuthorityReview(
        versions=versions,
        document=document,
        counts=counts,
        n_actions=n_actions,
        listed=listed,
        changes=changes,
        max_lag=max_lag,
        baseline=baseline,
        findings=findings,
        _log=log,
        _pilot=pilot,
        _facts=facts,
    )


CHANGE_COLUMNS = [
    "policy_version",
    "replaces",
    "effective_at",
    "n_affected",
    "n_followed_new",
    "n_followed_old",
    "lag_decisions",
    "first_new_action_id",
    "first_new_at",
    "lag_hours",
    "status",
]


def _changes_table(
    versions: Sequence[PolicyVersion], stats: pd.DataFrame, t: ir.Table, max_lag: int
) -> tuple[pd.DataFrame, dict[int, bool]]:
    rows = []
    ok: dict[int, bool] = {}
    for i in range(1, len(versions)):
        v = versions[i]
        s = stats[stats["vidx"] == i]
        n_aff = int(s["n_affected"].iloc[0]) if len(s) else 0
        first_at = s["first_new_at"].iloc[0] if len(s) else None
        first_at = None if first_at is None or pd.isna(first_at) else pd.Timestamp(first_at)
        lag = int(s["lag_decisions"].iloc[0]) if len(s) else 0
        first_id = None
        if first_at is not None:
            hit = (
                t.filter((t.vidx == i) & t.follows_now)
                .order_by([t.proposed_at, t.action_id])
                .limit(1)
                .select("action_id")
                .execute()
            )
            first_id = str(hit["action_id"].iloc[0])
        if v.levels == versions[i - 1].levels:
            status = "no change in thresholds"
        elif n_aff == 0:
            status = "not exercised"
        elif first_at is None:
            status = "never followed"
        elif lag <= max_lag:
            status = "honoured"
        else:
            status = "late"
        ok[i] = status in ("honoured", "no change in thresholds")
        rows.append(
            {
                "policy_version": v.name,
                "replaces": versions[i - 1].name,
                "effective_at": v.effective_at,
                "n_affected": n_aff,
                "n_followed_new": int(s["n_followed_new"].iloc[0]) if len(s) else 0,
                "n_followed_old": int(s["n_followed_old"].iloc[0]) if len(s) else 0,
                "lag_decisions": lag,
                "first_new_action_id": first_id,
                "first_new_at": first_at,
                "lag_hours": (first_at - v.effective_at).total_seconds() / 3600.0
                if first_at is not None
                else None,
                "status": status,
            }
        )
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS), ok


def _describe_listed(
    listed: pd.DataFrame, names: list[str], level_names: list[str], requires: list[bool]
) -> pd.DataFrame:
    out = listed.copy()
    out["policy_version"] = [names[int(i)] for i in out["vidx"]]
    out["policy_level"] = [level_names[int(r)] for r in out["rank_now"]]
    out = out.rename(columns={"required_level": "logged_level"})

    def detail(r: pd.Series) -> str:
        need = int(r["rank_now"])
        pol = level_names[need]
        if r["kind"] == "unknown_level":
            return f"logged level {r['logged_level']!r} is not in the policy"
        ran = "ran autonomously" if r["decision"] == "auto" else f"routed to {r['logged_level']}"
        wants = f"needs {pol} approval" if requires[need] else f"may run autonomously ({pol})"
        return f"{ran}; the policy in force ({r['policy_version']}) {wants}"

    out["detail"] = [detail(r) for _, r in out.iterrows()] if len(out) else []
    return out.reindex(columns=LISTING_COLUMNS)


def _findings(
    counts: dict[str, int],
    listed: pd.DataFrame,
    changes: pd.DataFrame,
    max_lag: int,
) -> list[Finding]:
    out: list[Finding] = []

    def ids(kind: str) -> list[str]:
        return [str(x) for x in listed.loc[listed["kind"] == kind, "action_id"]]

    under = counts.get("under_routed", 0)
    if under:
        shown = ids("under_routed")
        out.append(
            Finding(
                PHASE,
                "authority_under_routed",
                "blocking",
                f"{under} logged action(s) ran or were routed below the authority level the "
                f"policy requires for their amount (e.g. {', '.join(shown[:5])}). The agent's "
                "approval routing does not follow the decision-authority policy.",
                {
                    "headline": "Approval routing bypassed",
                    "section": SECTION,
                    "n": under,
                    "action_ids": shown,
                },
            )
        )
    over = counts.get("over_routed", 0)
    if over:
        shown = ids("over_routed")
        out.append(
            Finding(
                PHASE,
                "authority_over_routed",
                "warning",
                f"{over} logged action(s) were sent to a higher approval level than the policy "
                f"requires (e.g. {', '.join(shown[:5])}): extra load on approvers.",
                {"section": SECTION, "n": over, "action_ids": shown},
            )
        )
    for r in changes.itertuples():
        when = pd.Timestamp(r.effective_at).strftime("%Y-%m-%d %H:%M")
        if r.status == "not exercised":
            out.append(
                Finding(
                    PHASE,
                    "authority_policy_change_not_exercised",
                    "warning",
                    f"Policy version {r.policy_version} (effective {when}) was never exercised: "
                    "no logged action after it falls where the old and new thresholds disagree, "
                    "so the update was never observed in the agent's behaviour.",
                    {"section": SECTION, "policy_version": r.policy_version},
                )
            )
        elif r.status in ("late", "never followed"):
            tail = (
                "no later action followed the new policy"
                if r.status == "never followed"
                else f"the first to follow it was {r.first_new_action_id}, "
                f"{r.lag_hours:,.1f} hours after the change"
            )
            out.append(
                Finding(
                    PHASE,
                    "authority_policy_change_lag",
                    "blocking",
                    f"After policy version {r.policy_version} took effect ({when}), "
                    f"{r.lag_decisions} affected action(s) still followed the old thresholds "
                    f"(allowed: {max_lag}); {tail}.",
                    {
                        "headline": "Policy change not followed",
                        "section": SECTION,
                        "policy_version": r.policy_version,
                        "lag_decisions": int(r.lag_decisions),
                        "max_lag_decisions": max_lag,
                    },
                )
            )
    return out

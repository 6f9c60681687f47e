"""Decision authority as a Rego policy (issue 12): export, replay, what-if, policy changes.

Every figure is checked against a count made here from the raw rows (pandas), with
the thresholds read from the pilot file or the policy_versions CSV; the Rego engine
itself is checked on hand-built actions at and around every level boundary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pytest
import yaml
from regopy import Interpreter

from pilot_lib.analysis.authority import (
    PILOT_FILE_VERSION,
    REGO_POLICY,
    SECTION,
    RegoAuthority,
    authority_review,
    policy_document,
)
from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.config import Pilot, load_pilot
from pilot_lib.ingest.contracts import load_pilot_data
from pilot_lib.results import to_jsonable

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "pilots"
SAMPLE_NAMES = ["claims-auto", "it-ticket-routing", "invoice-reconciliation"]


@pytest.fixture(scope="module")
def loaded() -> dict[str, tuple[Pilot, Any]]:
    out = {}
    for name in SAMPLE_NAMES:
        pilot = load_pilot(SAMPLES / name)
        out[name] = (pilot, load_pilot_data(pilot))
    return out


@pytest.fixture(scope="module")
def reviews(loaded) -> dict[str, Any]:
    return {name: authority_review(p, d) for name, (p, d) in loaded.items()}


def _expected_level(levels: list[dict], amount: float) -> str:
    """The pilot file's rule, written out: lowest level whose max covers the amount."""
    for lvl in levels:
        if lvl.get("max_amount") is None or amount <= lvl["max_amount"]:
            return lvl["name"]
    return levels[-1]["name"]


def _raw_levels(name: str) -> list[dict]:
    doc = yaml.safe_load((SAMPLES / name / "pilot.yaml").read_text(encoding="utf-8"))
    return [
        {
            "name": lvl["name"],
            "max_amount": lvl.get("max_amount"),
            "requires_approval": lvl.get("requires_approval", True),
        }
        for lvl in doc["approvals"]["levels"]
    ]


# ---- the exported policy, evaluated by regopy --------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_exported_policy_agrees_with_the_pilot_file_at_every_boundary(name: str) -> None:
    levels = _raw_levels(name)
    pilot = load_pilot(SAMPLES / name)
    from pilot_lib.analysis.authority import _pilot_version

    doc = policy_document([_pilot_version(pilot.approvals.levels)])
    rego = Interpreter()
    rego.add_module("authority", REGO_POLICY)
    rego.add_data_json(json.dumps(doc))
    amounts = [0.0, 0.01, 1e12]
    for lvl in levels:
        if lvl["max_amount"] is not None:
            m = float(lvl["max_amount"])
            amounts += [m - 0.01, m, round(m + 0.01, 2)]
    for amount in amounts:
        rego.set_input_term(json.dumps({"amount": amount}))
        got = json.loads(str(rego.query("data.pilot.authority.decision")))["expressions"][0]
        want = _expected_level(levels, amount)
        assert got["level"] == want, (name, amount)
        want_lvl = next(lvl for lvl in levels if lvl["name"] == want)
        assert got["requires_approval"] == want_lvl["requires_approval"]
        rego.set_input_term(json.dumps({"amount": amount}))
        # a query whose value is false reads "undefined" in regopy: ask for the package
        package = json.loads(str(rego.query("data.pilot.authority")))["expressions"][0]
        assert package["allow_autonomous"] is (not want_lvl["requires_approval"])
    # the batch rule gives the same answers, in order, across batches
    engine = RegoAuthority(doc)
    ranks = engine.ranks(PILOT_FILE_VERSION, amounts * 400)  # > one batch
    names = [lvl["name"] for lvl in levels]
    assert [names[r] for r in ranks] == [_expected_level(levels, a) for a in amounts * 400]


# ---- replay on the samples ------------------------------------------------------------------


def _versions_in_force(name: str) -> list[tuple[pd.Timestamp | None, list[dict]]]:
    """(effective_at, levels) from the pilot file and the raw policy_versions CSV."""
    out: list[tuple[pd.Timestamp | None, list[dict]]] = [(None, _raw_levels(name))]
    path = SAMPLES / name / "policy_versions.csv"
    if path.exists():
        raw = pd.read_csv(path)
        for _, g in raw.groupby("policy_version"):
            g = g.sort_values("max_amount", na_position="last")
            levels = [
                {
                    "name": r.level,
                    "max_amount": None if pd.isna(r.max_amount) else float(r.max_amount),
                    "requires_approval": bool(r.requires_approval),
                }
                for r in g.itertuples()
            ]
            out.append((pd.Timestamp(g["effective_at"].iloc[0]), levels))
        out[1:] = sorted(out[1:], key=lambda v: v[0])
    return out


def _raw_valid_approvals(data: Any) -> pd.DataFrame:
    return data.table("approvals").execute()


def _independent_replay(frame: pd.DataFrame, versions: list) -> pd.Series:
    """under/over/None per row, by the version in force at proposed_at (pandas, row by row)."""
    kinds = []
    for r in frame.itertuples():
        levels = versions[0][1]
        for eff, lv in versions[1:]:
            if r.proposed_at >= eff:
                levels = lv
        names = [lvl["name"] for lvl in levels]
        need = names.index(_expected_level(levels, r.amount))
        needs = levels[need]["requires_approval"]
        logged = names.index(r.required_level)
        auto = r.decision == "auto"
        if (needs and auto) or logged < need:
            kinds.append("under_routed")
        elif logged > need or (not needs and not auto):
            kinds.append("over_routed")
        else:
            kinds.append(None)
    return pd.Series(kinds, index=frame.index, dtype=object)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_samples_replay_without_differences_and_match_an_independent_count(
    name: str, loaded, reviews
) -> None:
    pilot, data = loaded[name]
    review = reviews[name]
    frame = _raw_valid_approvals(data)
    kinds = _independent_replay(frame, _versions_in_force(name))
    assert review.n_actions == len(frame)
    assert review.counts.get("under_routed", 0) == int((kinds == "under_routed").sum()) == 0
    assert review.counts.get("over_routed", 0) == int((kinds == "over_routed").sum()) == 0
    assert not [f for f in review.findings if f.severity == "blocking"]
    result = json.loads(json.dumps(to_jsonable(review.to_result())))
    assert result["replay"]["n_differing"] == 0
    assert len(result["policy_sha256"]) == 64


def test_claims_auto_policy_change_is_honoured_at_once(loaded, reviews) -> None:
    review = reviews["claims-auto"]
    change = review.changes.set_index("policy_version").loc["v2"]
    _, data = loaded["claims-auto"]
    frame = _raw_valid_approvals(data)
    eff = pd.Timestamp("2026-04-13 09:00:00")
    affected = frame[(frame.proposed_at >= eff) & (frame.amount > 2000) & (frame.amount <= 2500)]
    assert change["n_affected"] == len(affected) == 28
    assert change["n_followed_new"] == int((affected.required_level == "adjuster").sum()) == 28
    assert change["lag_decisions"] == 0 and change["status"] == "honoured"
    first = affected.sort_values("proposed_at").iloc[0]
    assert change["first_new_action_id"] == first.action_id
    assert change["lag_hours"] == pytest.approx((first.proposed_at - eff).total_seconds() / 3600)
    # v1 repeats the pilot file: not a change, no finding about it
    assert review.changes.set_index("policy_version").loc["v1", "status"] == (
        "no change in thresholds"
    )
    assert [f.code for f in review.findings] == []


def test_approval_review_counts_requests_by_the_policy_in_force(loaded) -> None:
    """claims-auto's SLA requests (the figure test_figures_unchanged lets move) recounted."""
    from pilot_lib.phases import incident_phase

    pilot, data = loaded["claims-auto"]
    result = incident_phase(pilot, data).to_result()
    frame = _raw_valid_approvals(data)
    limit = frame.proposed_at.map(
        lambda t: 2000.0 if t >= pd.Timestamp("2026-04-13 09:00") else 2500.0
    )
    requests = (frame.amount > limit) & (frame.decision != "auto")
    sla = next(f for f in result["findings"] if f["code"] == "approval_sla_share")
    assert sla["evidence"]["n"] == int(requests.sum()) == 316
    assert result["passed"] is True
    assert "authority_policy" in result


# ---- what-if --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["claims-auto", "it-ticket-routing"])
def test_what_if_matches_an_independent_count(name: str, loaded, reviews) -> None:
    pilot, data = loaded[name]
    review = reviews[name]
    frame = _raw_valid_approvals(data)
    levels = _raw_levels(name)
    first = levels[0]["name"]
    new_limit = levels[0]["max_amount"] * 0.6
    w = review.what_if({first: new_limit})
    changed = [dict(levels[0], max_amount=new_limit), *levels[1:]]
    now_level = frame.amount.map(lambda a: _expected_level(levels, a))
    new_level = frame.amount.map(lambda a: _expected_level(changed, a))
    free = {lvl["name"] for lvl in levels if not lvl["requires_approval"]}
    assert w.needing_approval_now == int((~now_level.isin(free)).sum())
    assert w.needing_approval_what_if == int((~new_level.isin(free)).sum())
    assert w.autonomous_value_what_if == pytest.approx(frame.amount[new_level.isin(free)].sum())
    assert w.autonomous_value_now == pytest.approx(frame.amount[now_level.isin(free)].sum())
    per = w.per_level.set_index("level")
    for lvl in levels:
        assert per.loc[lvl["name"], "actions_what_if"] == int((new_level == lvl["name"]).sum())
    weeks = frame.proposed_at.dt.to_period("W-SUN").nunique()
    assert w.weeks == weeks
    human = frame[
        frame.decision.isin(["approved", "rejected", "escalated"]) & frame.decided_at.notna()
    ]
    median = ((human.decided_at - human.proposed_at).dt.total_seconds() / 60).median()
    assert w.median_handling_minutes == pytest.approx(median)
    added = (w.needing_approval_what_if - w.needing_approval_now) / weeks
    assert w.added_approvals_per_week == pytest.approx(added)
    assert w.added_approver_hours_per_week == pytest.approx(added * median / 60)
    assert "Assumptions" in w.sla_note and "rise" in w.sla_note
    # the pilot file's own thresholds: zero change
    base = review.baseline
    assert base.needing_approval_what_if == base.needing_approval_now
    assert base.added_approvals_per_week == 0
    with pytest.raises(ValueError):
        review.what_if({levels[1]["name"]: 1.0})  # below the level under it: not a ladder


# ---- hand-built logs ------------------------------------------------------------------------


class _Data:
    """A stand-in for PilotData: ``table(name)`` gives in-memory Ibis tables."""

    def __init__(self, **tables: pd.DataFrame) -> None:
        self.tables = {k: ibis.memtable(v) for k, v in tables.items()}

    def table(self, name: str) -> Any:
        return self.tables.get(name)


LEVELS = [
    {"name": "auto", "max_amount": 100.0, "requires_approval": False},
    {"name": "lead", "max_amount": 1000.0},
    {"name": "head"},
]


@pytest.fixture
def small_pilot(tmp_path: Path) -> Pilot:
    from tests.test_gate import PILOT_DOC

    doc = json.loads(json.dumps(PILOT_DOC))
    doc["approvals"] = {"sla_minutes": 60, "levels": LEVELS}
    (tmp_path / "d.csv").write_text("x\n")
    (tmp_path / "c.csv").write_text("x\n")
    (tmp_path / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_pilot(tmp_path)


def _actions(
    rows: list[tuple[str, float, str, str]], start: str = "2026-03-02 09:00"
) -> pd.DataFrame:
    """(action_id, amount, required_level, decision), one an hour from ``start``."""
    t0 = pd.Timestamp(start)
    out = []
    for i, (aid, amount, level, decision) in enumerate(rows):
        at = t0 + pd.Timedelta(hours=i)
        human = decision != "auto"
        out.append(
            {
                "action_id": aid,
                "trace_id": f"t{i}",
                "proposed_at": at,
                "amount": amount,
                "required_level": level,
                "decided_at": at + pd.Timedelta(minutes=30 if human else 0),
                "decision": decision,
                "approver_level": level,
                "executed_at": at + pd.Timedelta(minutes=40),
            }
        )
    return pd.DataFrame(out)


def test_planted_under_and_over_routed_actions_are_found(small_pilot: Pilot) -> None:
    log = _actions(
        [
            ("ok-1", 50.0, "auto", "auto"),
            ("ok-2", 100.0, "auto", "auto"),  # exactly at the limit: autonomous
            ("under-auto", 100.01, "auto", "auto"),  # a cent above: needed lead
            ("under-level", 5000.0, "lead", "approved"),  # needed head
            ("over-level", 500.0, "head", "approved"),
            ("over-human", 20.0, "auto", "approved"),  # could have run on its own
            ("ok-3", 1000.0, "lead", "approved"),
            ("ok-4", 1e9, "head", "rejected"),
        ]
    )
    review = authority_review(small_pilot, _Data(approvals=log))
    frame = log.copy()
    kinds = _independent_replay(
        frame, [(None, [dict({"requires_approval": True}, **x) for x in LEVELS])]
    )
    assert review.counts.get("under_routed") == int((kinds == "under_routed").sum()) == 2
    assert review.counts.get("over_routed") == int((kinds == "over_routed").sum()) == 2
    listed = review.listed.set_index("action_id")["kind"].to_dict()
    assert listed == {
        "under-auto": "under_routed",
        "under-level": "under_routed",
        "over-level": "over_routed",
        "over-human": "over_routed",
    }
    codes = {f.code: f for f in review.findings}
    assert codes["authority_under_routed"].severity == "blocking"
    assert codes["authority_under_routed"].evidence["section"] == SECTION
    assert codes["authority_over_routed"].severity == "warning"
    assert "no threshold change" in review.note


def _versions_csv(change_at: str) -> pd.DataFrame:
    rows = []
    for version, at, first in (("v1", "2026-03-02 00:00:00", 100.0), ("v2", change_at, 50.0)):
        for lvl, mx in zip(LEVELS, [first, 1000.0, None], strict=True):
            rows.append(
                {
                    "policy_version": version,
                    "effective_at": pd.Timestamp(at),
                    "level": lvl["name"],
                    "max_amount": mx,
                    "requires_approval": lvl.get("requires_approval", True),
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("late", "severity"), [(0, None), (1, None), (3, "blocking")])
def test_policy_change_lag(small_pilot: Pilot, late: int, severity: str | None) -> None:
    """The autonomous limit falls from 100 to 50 at 12:00; actions at 75 (affected) after it:
    ``late`` of them still run on their own, then the rest go to a lead."""
    before = [
        ("b1", 75.0, "auto", "auto"),
        ("b2", 20.0, "auto", "auto"),
        ("b3", 75.0, "auto", "auto"),
    ]
    after = [(f"late{i}", 75.0, "auto", "auto") for i in range(late)]
    after += [("unaffected", 20.0, "auto", "auto")]
    after += [(f"new{i}", 75.0, "lead", "approved") for i in range(3)]
    log = _actions(before + after)
    change_at = str(pd.Timestamp("2026-03-02 09:00") + pd.Timedelta(hours=len(before) - 0.5))
    review = authority_review(
        small_pilot, _Data(approvals=log, policy_versions=_versions_csv(change_at))
    )
    change = review.changes.set_index("policy_version").loc["v2"]
    # independent: affected = after the change with 50 < amount <= 100
    t = log[log.proposed_at >= pd.Timestamp(change_at)]
    affected = t[(t.amount > 50) & (t.amount <= 100)].sort_values("proposed_at")
    first_new = affected[affected.required_level == "lead"].iloc[0]
    expected_lag = int((affected.proposed_at < first_new.proposed_at).sum())
    assert change["lag_decisions"] == expected_lag == late
    assert change["first_new_action_id"] == first_new.action_id
    assert change["lag_hours"] == pytest.approx(
        (first_new.proposed_at - pd.Timestamp(change_at)).total_seconds() / 3600
    )
    blocking = [f for f in review.findings if f.severity == "blocking"]
    if severity is None:
        assert not blocking
        assert review.counts.get("within_change_lag", 0) == late
        assert change["status"] == "honoured"
    else:
        codes = {f.code: f for f in blocking}
        assert sorted(codes) == ["authority_policy_change_lag", "authority_under_routed"]
        assert f"{late} affected action(s)" in codes["authority_policy_change_lag"].message
        assert review.counts.get("under_routed") == late  # no grace over the limit
        assert change["status"] == "late"


def test_change_never_exercised_is_a_warning(small_pilot: Pilot) -> None:
    log = _actions([("a", 20.0, "auto", "auto"), ("b", 500.0, "lead", "approved")])
    review = authority_review(
        small_pilot, _Data(approvals=log, policy_versions=_versions_csv("2026-03-02 09:30:00"))
    )
    assert [(f.code, f.severity) for f in review.findings] == [
        ("authority_policy_change_not_exercised", "warning")
    ]


def test_under_routing_reaches_the_gate_and_makes_it_no_go(small_pilot: Pilot) -> None:
    from tests.test_gate import kpi, results

    log = _actions([("fine", 20.0, "auto", "auto"), ("bypass", 5000.0, "auto", "auto")])
    review = authority_review(small_pilot, _Data(approvals=log))
    good = results(
        kpi("task_completion_rate", 0.9, 0.88, 0.92, 1000),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    assert evaluate_gate(small_pilot, good).decision == "GO"
    res = json.loads(json.dumps(good))
    res["incident_drill_review"] = to_jsonable(
        {"findings": review.findings, "authority_policy": review.to_result()}
    )
    gate = evaluate_gate(small_pilot, res)
    assert gate.decision == "NO-GO"
    assert [f.code for f in gate.blocking] == ["authority_under_routed"]
    page = json.dumps(to_jsonable(gate.to_result()))
    assert "Approval routing bypassed" in page and "bypass" in page


# ---- a real run writes the policy -------------------------------------------------------------


def test_a_run_writes_the_policy_and_it_evaluates(tmp_path: Path) -> None:
    from pilot_lib.runner import run_pilot

    run = run_pilot(SAMPLES / "claims-auto", tmp_path / "runs", phases=[1], export=False)
    assert run.run_dir is not None
    folder = Path(run.run_dir) / "policy"
    rego_text = (folder / "authority.rego").read_text(encoding="utf-8")
    data = json.loads((folder / "data.json").read_text(encoding="utf-8"))
    assert rego_text == REGO_POLICY
    rego = Interpreter()
    rego.add_module("authority", rego_text)
    rego.add_data_json(json.dumps(data))
    for amount, level in [(2500.0, "autonomous"), (2500.01, "adjuster"), (7500.01, "supervisor")]:
        rego.set_input_term(json.dumps({"amount": amount}))
        out = json.loads(str(rego.query("data.pilot.authority.decision")))
        assert out["expressions"][0]["level"] == level


def test_authority_widget_draws_the_what_if_and_refuses_a_broken_ladder(reviews) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from pilot_lib.report.notebook import authority_widget

    review = reviews["claims-auto"]
    InteractiveShell.instance()  # display() publishes rich output, as in a kernel
    try:
        widget = authority_widget(review, {"autonomous": 1500.0})
    finally:
        InteractiveShell.clear_instance()
    first = "".join(
        str(o.get("text", "")) + "".join(map(str, o.get("data", {}).values()))
        for o in widget.children[-1].outputs
    )
    assert "Approvals rise" in first  # 1,500 < 2,500: more approvals
    widget.children[0].children[1].value = 9000.0  # above the adjuster's 7,500: not a ladder
    assert review.what_if({"autonomous": 1500.0}).needing_approval_what_if > (
        review.baseline.needing_approval_now
    )
    with pytest.raises(ValueError, match="do not form a ladder"):
        review.what_if({"autonomous": 9000.0})


def test_a_policy_version_that_is_not_a_ladder_is_quarantined() -> None:
    """A broken version's rows are quarantined: whole for a rule about the version, the
    repeated rows for a level (or limit) listed twice; what remains of such a version
    lacks a level of the pilot file's ladder, and phase 4 leaves it out (see
    test_a_version_with_other_levels_is_left_out_with_a_warning)."""
    from pilot_lib.ingest.contracts import validate_dataset

    good = _versions_csv("2026-03-02 12:00:00")
    bad = good[good.policy_version == "v2"].assign(policy_version="v3")
    bad.loc[bad.level == "lead", "max_amount"] = None  # two levels without a limit
    twice = good[good.policy_version == "v1"].assign(policy_version="v4")
    twice.loc[twice.level == "lead", "level"] = "auto"  # a level listed twice
    moved = good[good.policy_version == "v1"].assign(policy_version="v5")
    moved.loc[moved.level == "head", "effective_at"] = pd.Timestamp("2026-04-01")
    split = validate_dataset(
        "policy_versions", ibis.memtable(pd.concat([good, bad, twice, moved], ignore_index=True))
    )
    valid = split.valid.execute()
    quarantined = split.quarantined.execute()
    assert sorted(valid.policy_version.unique()) == ["v1", "v2", "v4"]
    assert set(valid.loc[valid.policy_version == "v4", "level"]) == {"head"}
    rules = quarantined.groupby("policy_version")["_quarantine_rule"].agg(set).to_dict()
    assert rules == {
        "v3": {"policy_version with more than one level without max_amount"},
        "v4": {"policy_version with a level listed twice"},
        "v5": {"policy_version with more than one effective_at"},
    }


def test_a_version_with_other_levels_is_left_out_with_a_warning(small_pilot: Pilot) -> None:
    """What remains of a version whose repeated level was quarantined is not the pilot
    file's ladder: the replay leaves it out and says so."""
    log = _actions([("a", 20.0, "auto", "auto"), ("b", 500.0, "lead", "approved")])
    versions = _versions_csv("2026-03-02 09:30:00")
    partial = versions[(versions.policy_version == "v2") & (versions.level != "lead")]
    review = authority_review(
        small_pilot,
        _Data(
            approvals=log,
            policy_versions=pd.concat([versions[versions.policy_version == "v1"], partial]),
        ),
    )
    unusable = [f for f in review.findings if f.code == "authority_policy_version_unusable"]
    assert [(f.severity, f.evidence["policy_version"]) for f in unusable] == [("warning", "v2")]
    assert "left out of the replay" in unusable[0].message

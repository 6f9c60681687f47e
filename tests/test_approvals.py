"""Approval review on hand-built approval tables, checked against statsmodels and numpy."""

from __future__ import annotations

import json
import math

import ibis
import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis.approvals import PHASE, VIOLATION_KINDS, review_approvals
from pilot_lib.config import ApprovalPolicy
from pilot_lib.errors import ContractError

POLICY = ApprovalPolicy(
    sla_minutes=240,
    timeout_action="reject",
    levels=[
        {"name": "autonomous", "max_amount": 2500, "requires_approval": False},
        {"name": "adjuster", "max_amount": 7500},
        {"name": "supervisor"},
    ],
)
T0 = pd.Timestamp("2026-04-01 09:00:00")
COLUMNS = [
    "action_id",
    "trace_id",
    "proposed_at",
    "amount",
    "required_level",
    "decided_at",
    "decision",
    "approver_level",
    "executed_at",
]


def action(
    action_id: str,
    amount: float,
    latency: float | None,
    decision: str,
    approver: str | None,
    executed_after: float | None,
    required: str | None = None,
    proposed_offset_hours: float = 0.0,
) -> dict:
    """One approvals row; times in minutes after the proposal (None = not set)."""
    proposed = T0 + pd.Timedelta(hours=proposed_offset_hours)
    return {
        "action_id": action_id,
        "trace_id": f"tr-{action_id}",
        "proposed_at": proposed,
        "amount": amount,
        "required_level": required or POLICY.required_level(amount),
        "decided_at": None if latency is None else proposed + pd.Timedelta(minutes=latency),
        "decision": decision,
        "approver_level": approver,
        "executed_at": None
        if executed_after is None
        else proposed + pd.Timedelta(minutes=executed_after),
    }


def table(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("proposed_at", "decided_at", "executed_at"):
        frame[col] = pd.to_datetime(frame[col])
    return frame


# Adjuster-level requests (amount 2,500-7,500): human latencies in minutes. Late ones are
# rejected or escalated, so no violation. Plus one that timed out without a decision.
ADJUSTER_LATENCIES = [5, 12, 30, 45, 60, 90, 120, 200, 239, 240, 241, 300]
SUPERVISOR_LATENCIES = [15, 100, 500]


def clean_rows() -> list[dict]:
    rows = []
    for i, lat in enumerate(ADJUSTER_LATENCIES):
        late = lat > 240
        decision = "rejected" if late else "approved"
        rows.append(
            action(
                f"adj{i:02d}", 3000 + 100 * i, lat, decision, "adjuster", None if late else lat + 1
            )
        )
    rows.append(action("adj-to", 5000, None, "timed_out", None, None))
    for i, lat in enumerate(SUPERVISOR_LATENCIES):
        late = lat > 240
        decision = "rejected" if late else "approved"
        rows.append(
            action(f"sup{i}", 9000 + i, lat, decision, "supervisor", None if late else lat + 5)
        )
    # Autonomous: no approval needed, not part of the SLA share.
    rows.append(action("auto0", 1200, None, "auto", None, 0.5))
    rows.append(action("auto1", 2500, None, "auto", None, 0.5))  # exactly at the limit
    return rows


def test_clean_table_has_no_violations_and_passes():
    review = review_approvals(table(clean_rows()), POLICY)
    assert review.violations.empty
    assert review.passed is True
    assert not [f for f in review.findings if f.severity != "info"]
    assert all(f.phase == PHASE for f in review.findings)


def test_within_sla_share_and_wilson_interval_match_statsmodels():
    review = review_approvals(table(clean_rows()), POLICY)
    s = review.summary
    # Worked by hand: adjuster <= 240 min: 10 of 12 decided + 1 timed out (13 requests);
    # supervisor <= 240: 2 of 3. Autonomous ones are not requests.
    assert s["n_requests"] == 16
    assert s["n_within_sla"] == 12
    assert s["share_within_sla"] == pytest.approx(12 / 16)
    low, high = proportion_confint(12, 16, alpha=0.05, method="wilson")
    assert s["ci_low"] == pytest.approx(low, abs=1e-12)
    assert s["ci_high"] == pytest.approx(high, abs=1e-12)

    latency = review.latency.set_index("level")
    assert latency.loc["adjuster", "n_requests"] == 13
    assert latency.loc["adjuster", "n_within_sla"] == 10
    lo, hi = proportion_confint(10, 13, alpha=0.05, method="wilson")
    assert latency.loc["adjuster", "ci_low"] == pytest.approx(lo, abs=1e-12)
    assert latency.loc["adjuster", "ci_high"] == pytest.approx(hi, abs=1e-12)


def test_latency_percentiles_per_level_match_numpy():
    review = review_approvals(table(clean_rows()), POLICY)
    latency = review.latency.set_index("level")
    assert list(latency.index) == ["autonomous", "adjuster", "supervisor"]
    for level, values in (("adjuster", ADJUSTER_LATENCIES), ("supervisor", SUPERVISOR_LATENCIES)):
        expected = np.percentile(np.array(values, dtype=float), [50, 90, 95])
        got = latency.loc[level, ["p50_minutes", "p90_minutes", "p95_minutes"]].to_numpy(float)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert latency.loc[level, "max_minutes"] == max(values)
        assert latency.loc[level, "n_decided"] == len(values)
    # The timed-out request is counted, not mixed into the percentiles.
    assert latency.loc["adjuster", "n_timed_out"] == 3  # 241, 300 and the undecided one
    assert latency.loc["autonomous", "n_requests"] == 0
    assert math.isnan(latency.loc["autonomous", "p50_minutes"])
    overall = np.percentile(ADJUSTER_LATENCIES + SUPERVISOR_LATENCIES, [50, 90, 95])
    s = review.summary
    np.testing.assert_allclose([s["p50_minutes"], s["p90_minutes"], s["p95_minutes"]], overall)


def test_sla_override():
    review = review_approvals(table(clean_rows()), POLICY, sla_minutes=60)
    # <= 60 min: adjuster 5, 12, 30, 45, 60 and supervisor 15.
    assert review.summary["n_within_sla"] == 6
    assert review.summary["sla_minutes"] == 60


def test_timeout_ending_approved_is_a_violation():
    rows = [
        *clean_rows(),
        action("late-appr", 4000, 300, "approved", "adjuster", 301),  # executed
        action("late-noexec", 4000, 250, "approved", "adjuster", None),  # approved, not run
        action("to-exec", 4000, None, "timed_out", None, 400),  # timed out, then executed
    ]
    review = review_approvals(table(rows), POLICY)
    v = review.violations
    timeout_ids = list(v.loc[v["kind"] == "timeout_approved", "action_id"])
    assert sorted(timeout_ids) == ["late-appr", "late-noexec", "to-exec"]
    # The executed-after-timeout one also broke the approval rule.
    assert list(v.loc[v["kind"] == "executed_without_approval", "action_id"]) == ["to-exec"]
    t = review.timeouts.set_index("action_id")
    assert t.loc["late-appr", "final_state"] == "executed"
    assert t.loc["late-noexec", "final_state"] == "approved"
    assert (t.loc[["late-appr", "late-noexec", "to-exec"], "status"] == "violation").all()
    blocking = {f.code: f for f in review.findings if f.severity == "blocking"}
    assert sorted(blocking["approval_timeout_approved"].evidence["action_ids"]) == timeout_ids
    assert review.passed is False


def test_timeout_ending_rejected_is_fine_and_matches_policy():
    review = review_approvals(table(clean_rows()), POLICY)
    t = review.timeouts.set_index("action_id")
    assert sorted(t.index) == ["adj-to", "adj10", "adj11", "sup2"]
    assert (t["status"] == "ok").all()
    assert t.loc["adj10", "final_state"] == "rejected" and t.loc["adj10", "matches_policy"]
    assert t.loc["adj-to", "final_state"] == "timed_out" and t.loc["adj-to", "matches_policy"]
    assert review.summary["n_timeout_violations"] == 0


def test_timeout_ending_escalated_is_fine_but_off_policy_when_policy_rejects():
    rows = [*clean_rows(), action("late-esc", 4000, 260, "escalated", "adjuster", None)]
    review = review_approvals(table(rows), POLICY)
    t = review.timeouts.set_index("action_id")
    assert t.loc["late-esc", "status"] == "ok"
    assert not t.loc["late-esc", "matches_policy"]
    assert review.violations.empty
    off = next(f for f in review.findings if f.code == "approval_timeout_off_policy")
    assert off.severity == "warning" and off.evidence["action_ids"] == ["late-esc"]
    escalate_policy = POLICY.model_copy(update={"timeout_action": "escalate"})
    t2 = review_approvals(table(rows), escalate_policy).timeouts.set_index("action_id")
    assert t2.loc["late-esc", "matches_policy"]
    assert not t2.loc["adj10", "matches_policy"]


def test_executed_above_authority_uses_the_policy_not_the_column():
    rows = [
        *clean_rows(),
        # 9,000 needs supervisor; the column wrongly says adjuster; an adjuster approved it.
        action("over", 9000, 20, "approved", "adjuster", 25, required="adjuster"),
        # Same, but never executed: not a violation of this rule.
        action("over-noexec", 9000, 20, "approved", "adjuster", None),
        # Approved by a higher level than needed: fine.
        action("higher", 4000, 20, "approved", "supervisor", 25),
    ]
    review = review_approvals(table(rows), POLICY)
    v = review.violations
    assert list(v["action_id"]) == ["over"]
    row = v.iloc[0]
    assert row["kind"] == "above_authority"
    assert row["trace_id"] == "tr-over"
    assert row["policy_level"] == "supervisor"
    assert "supervisor" in row["detail"] and "adjuster" in row["detail"]
    mismatch = next(f for f in review.findings if f.code == "approvals_required_level_mismatch")
    assert mismatch.evidence["action_ids"] == ["over"]
    assert mismatch.severity == "warning"


def test_executed_without_approval_is_a_violation():
    rows = [
        *clean_rows(),
        action("rej-exec", 4000, 30, "rejected", "adjuster", 40),
        action("esc-exec", 9000, 30, "escalated", "adjuster", 40),
        action("auto-exec", 3000, None, "auto", None, 1),  # auto above the 2,500 limit
        action("auto-noexec", 3000, None, "auto", None, None),
        action("auto-ok", 2400, None, "auto", None, 1),
    ]
    review = review_approvals(table(rows), POLICY)
    v = review.violations
    by_kind = {k: sorted(g["action_id"]) for k, g in v.groupby("kind")}
    assert by_kind == {
        "executed_without_approval": ["auto-exec", "esc-exec", "rej-exec"],
        "auto_above_limit": ["auto-noexec"],
    }
    assert review.summary["violations_by_kind"]["executed_without_approval"] == 3
    codes = {f.code for f in review.findings if f.severity == "blocking"}
    assert codes == {"approval_executed_without_approval", "approval_auto_above_limit"}


def test_executed_before_approval_and_missing_approver_are_violations():
    rows = [
        *clean_rows(),
        action("early", 4000, 60, "approved", "adjuster", 10),
        action("who", 4000, 60, "approved", None, 70),
    ]
    review = review_approvals(table(rows), POLICY)
    v = review.violations.set_index("action_id")
    assert v.loc["early", "kind"] == "executed_before_approval"
    assert "50.0 minutes" in v.loc["early", "detail"]
    assert v.loc["who", "kind"] == "approver_not_recorded"


def test_every_violation_is_listed():
    rows = [action(f"v{i:03d}", 8000 + i, 10, "approved", "adjuster", 11) for i in range(40)]
    review = review_approvals(table(rows), POLICY)
    assert sorted(review.violations["action_id"]) == [f"v{i:03d}" for i in range(40)]
    finding = next(f for f in review.findings if f.code == "approval_above_authority")
    assert len(finding.evidence["action_ids"]) == 40
    assert finding.evidence["trace_ids"][0] == "tr-v000"
    result = review.to_result()
    assert len(result["violations"]) == 40
    assert set(VIOLATION_KINDS) == set(result["summary"]["violations_by_kind"])


def test_unknown_levels_and_decisions_are_findings_not_crashes():
    rows = [
        *clean_rows(),
        action("intern", 4000, 30, "approved", "intern", 31),
        action("boss", 4000, 30, "approved", "adjuster", 31, required="vice_president"),
        action("maybe", 4000, 30, "pending", "adjuster", None),
    ]
    review = review_approvals(table(rows), POLICY)
    unknown = next(f for f in review.findings if f.code == "approvals_unknown_level")
    assert unknown.severity == "warning"
    assert unknown.evidence["unknown_levels"] == ["intern", "vice_president"]
    assert unknown.evidence["approver_level_unknown"] == ["intern"]
    assert unknown.evidence["required_level_unknown"] == ["boss"]
    assert unknown.evidence["authority_unverifiable"] == ["intern"]
    decision = next(f for f in review.findings if f.code == "approvals_unknown_decision")
    assert decision.evidence["action_ids"] == ["maybe"]
    # The unknown approver cannot be ranked, so it is not claimed as a violation.
    assert review.violations.empty


def test_unusable_and_duplicate_rows_are_counted():
    rows = [*clean_rows(), action("neg", -5, 10, "approved", "adjuster", 11)]
    frame = table(rows)
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # duplicate adj00
    frame = frame.astype({"proposed_at": object})
    frame.loc[2, "proposed_at"] = "yesterday-ish"
    review = review_approvals(frame, POLICY)
    unusable = next(f for f in review.findings if f.code == "approvals_rows_unusable")
    assert unusable.evidence["action_ids_by_reason"] == {
        "missing, negative or non-numeric amount": ["neg"],
        "unparseable proposed_at": ["adj02"],
    }
    dup = next(f for f in review.findings if f.code == "approvals_duplicate_action_id")
    assert dup.evidence == {"action_ids": ["adj00"], "rows_left_out": 1}
    assert review.summary["n_unusable_rows"] == 2
    assert review.summary["n_duplicate_rows"] == 1
    assert review.summary["n_actions"] == len(clean_rows()) - 1


def test_decided_before_proposed_is_left_out_of_the_sla():
    rows = [*clean_rows(), action("clock", 4000, -30, "approved", "adjuster", 5)]
    review = review_approvals(table(rows), POLICY)
    found = next(f for f in review.findings if f.code == "approvals_decided_before_proposed")
    assert found.evidence["action_ids"] == ["clock"]
    assert review.summary["n_requests"] == 16  # unchanged


def test_empty_table_is_labelled_no_data():
    review = review_approvals(table([]), POLICY)
    assert [f.code for f in review.findings] == ["approvals_empty"]
    assert review.summary["n_requests"] == 0
    assert math.isnan(review.summary["share_within_sla"])
    assert review.violations.empty and review.timeouts.empty
    json.dumps(review.to_result(), allow_nan=False)


def test_ibis_table_gives_the_same_review():
    rows = [
        *clean_rows(),
        action("over", 9000, 20, "approved", "adjuster", 25),
        action("rej-exec", 4000, 30, "rejected", "adjuster", 40),
    ]
    frame = table(rows)
    from_pandas = review_approvals(frame, POLICY)
    from_ibis = review_approvals(ibis.memtable(frame), POLICY)
    assert from_pandas.summary == from_ibis.summary
    pd.testing.assert_frame_equal(from_pandas.latency, from_ibis.latency)
    pd.testing.assert_frame_equal(
        from_pandas.violations.astype(str), from_ibis.violations.astype(str)
    )


def test_string_timestamps_are_parsed():
    frame = table(clean_rows())
    for col in ("proposed_at", "decided_at", "executed_at"):
        frame[col] = frame[col].dt.strftime("%Y-%m-%d %H:%M:%S")
    review = review_approvals(frame, POLICY)
    assert review.summary["n_within_sla"] == 12


def test_missing_column_names_the_data_set_and_column():
    with pytest.raises(ContractError, match=r"approvals.*'decision'"):
        review_approvals(table(clean_rows()).drop(columns=["decision"]), POLICY)


def test_bad_sla_is_rejected():
    with pytest.raises(ValueError, match="sla_minutes"):
        review_approvals(table(clean_rows()), POLICY, sla_minutes=0)


def test_result_is_json_serializable():
    rows = [*clean_rows(), action("over", 9000, 20, "approved", "adjuster", 25)]
    result = review_approvals(table(rows), POLICY).to_result()
    text = json.dumps(result, allow_nan=False)
    assert result["passed"] is False
    assert "approval_above_authority" in text


# ---------------------------------------------------------------------------
# The review in the engine, and the SLA what-if from the review's distribution
# ---------------------------------------------------------------------------


def messy_rows() -> list[dict]:
    """Every kind of violation, data problem and edge latency in one table."""
    return [
        *clean_rows(),
        action("late-appr", 4000, 300, "approved", "adjuster", 301),
        action("to-exec", 4000, None, "timed_out", None, 400),
        action("over", 9000, 20, "approved", "adjuster", 25, required="adjuster"),
        action("rej-exec", 4000, 30, "rejected", "adjuster", 40),
        action("auto-noexec", 3000, None, "auto", None, None),
        action("early", 4000, 60, "approved", "adjuster", 10),
        action("who", 4000, 60, "approved", None, 70),
        action("intern", 4000, 30, "approved", "intern", 31),
        action("maybe", 4000, 30, "pending", "adjuster", None),
        action("clock", 4000, -30, "approved", "adjuster", 5),
        action("late-esc", 4000, 260, "escalated", "adjuster", None),
        action("sub-sec", 4000, 240 + 1e-6 / 60, "approved", "adjuster", 250),  # 1 us late
        action(" padded\t", 5000, 239.5, "approved", "\u3000adjuster ", 241),
    ]


def same_review(a, b) -> None:
    assert a.summary.keys() == b.summary.keys()
    for key, value in a.summary.items():
        other = b.summary[key]
        assert value == other or (value != value and other != other), key
    pd.testing.assert_frame_equal(a.latency, b.latency)
    for name in ("violations", "timeouts"):
        pd.testing.assert_frame_equal(
            getattr(a, name).astype(object), getattr(b, name).astype(object), check_dtype=False
        )
    assert [(f.code, f.message, f.evidence) for f in a.findings] == [
        (f.code, f.message, f.evidence) for f in b.findings
    ]


@pytest.mark.parametrize("rows", [clean_rows, messy_rows], ids=["clean", "messy"])
@pytest.mark.parametrize("sla", [None, 60, 239.5, 240])
def test_engine_review_equals_the_pandas_review(rows, sla):
    frame = table(rows())
    from_pandas = review_approvals(frame, POLICY, sla_minutes=sla)
    in_engine = review_approvals(ibis.memtable(frame), POLICY, sla_minutes=sla)
    same_review(from_pandas, in_engine)


def test_engine_strips_text_as_python_does():
    from pilot_lib.analysis.approvals import _WHITESPACE

    assert set(_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}
    values = [" a ", "\u3000b\u2028", "\x1c\x85c\xa0", "", "  ", None, "d\u200b", "e f"]
    frame = table([action(f"x{i}", 4000, 10, "approved", "adjuster", 11) for i in range(8)])
    frame["trace_id"] = values
    review = review_approvals(ibis.memtable(frame), POLICY)
    got = review.actions.select("action_id", "trace_id").to_pandas().set_index("action_id")
    expected = [None if v is None else (v.strip() or None) for v in values]
    assert [None if pd.isna(v) else v for v in got.loc[frame["action_id"], "trace_id"]] == expected


def test_engine_review_pulls_a_distribution_not_the_rows():
    n = 3000
    rng = np.random.default_rng(3)
    rows = [
        action(f"r{i:05d}", 3000, float(rng.integers(1, 200)), "approved", "adjuster", 300)
        for i in range(n)
    ]
    review = review_approvals(ibis.memtable(table(rows)), POLICY)
    facts = review.latency_facts
    assert len(facts.distribution) < 200  # one row per distinct latency, not per request
    assert int(facts.distribution["n"].sum()) == n
    assert review.summary["n_requests"] == n and review.summary["n_within_sla"] == n
    assert review.timeouts.empty and review.violations.empty
    assert isinstance(review.actions, ibis.expr.types.Table)  # the drill-down stays lazy
    assert review.actions.count().execute() == n


@pytest.mark.parametrize("rows", [clean_rows, messy_rows], ids=["clean", "messy"])
def test_sla_what_if_equals_a_fresh_review_at_that_sla(rows):
    frame = table(rows())
    review = review_approvals(ibis.memtable(frame), POLICY)
    keys = ["n_requests", "n_within_sla", "share_within_sla", "ci_low", "ci_high", "n_timeouts"]
    for sla in (5, 15, 30, 59.9, 60, 239.5, 240, 241, 300, 1440):
        fresh = review_approvals(ibis.memtable(frame), POLICY, sla_minutes=sla).summary
        what_if = review.sla_what_if(sla)
        assert what_if["sla_minutes"] == sla
        assert {k: what_if[k] for k in keys} == {k: fresh[k] for k in keys}, sla
    with pytest.raises(ValueError, match="sla_minutes"):
        review.sla_what_if(0)


def test_sla_what_if_does_not_depend_on_the_reviews_own_sla():
    frame = table(messy_rows())
    at_60 = review_approvals(frame, POLICY, sla_minutes=60)
    at_240 = review_approvals(frame, POLICY)
    for sla in (30, 60, 240, 480):
        assert at_60.sla_what_if(sla) == at_240.sla_what_if(sla)


def test_phase_four_reviews_the_approvals_once(tiny_pilot, tmp_path, monkeypatch):
    import ipywidgets

    from pilot_lib.analysis import approvals as approvals_module
    from pilot_lib.phases import incident_phase
    from pilot_lib.report import notebook as nb

    calls = []
    real = approvals_module.review_approvals

    def counting(*args, **kwargs):
        calls.append(kwargs.get("sla_minutes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(approvals_module, "review_approvals", counting)
    ctx = nb.open_phase("incident_drill_review", tiny_pilot, tmp_path / "run")
    review = incident_phase(ctx.pilot, ctx.data)
    box = nb.sla_widget(ctx, review)
    slider = box.children[0].children[1]  # the control below its label
    for sla in (15, 60, 1440, int(ctx.pilot.approvals.sla_minutes)):
        slider.value = sla
    assert len(calls) == 1  # the phase's review; the slider reuses it

    (out,) = [c for c in box.children if isinstance(c, ipywidgets.Output)]
    first = "".join(o.get("text", "") for o in out.outputs)
    sla = int(ctx.pilot.approvals.sla_minutes)
    fresh = real(ctx.data.table("approvals"), ctx.pilot.approvals, sla_minutes=sla).summary
    assert f"Within a {sla}-minute SLA" in first
    assert f"of {fresh['n_requests']:,} requests; {fresh['n_timeouts']:,} timed out." in first

    assert isinstance(nb.sla_widget(ctx, review.approvals), ipywidgets.VBox)
    no_approvals = type(review)(drills=review.drills, approvals=None, findings=[])
    assert "No approvals data set" in nb.sla_widget(ctx, no_approvals).data

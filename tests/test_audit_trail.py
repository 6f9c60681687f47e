"""Audit-trail completeness (phase 4): every decision chain from request to action.

Each figure is checked against an independent count from the raw frames (pandas,
written here from the link definitions in docs/data-contracts.md and
pilot_lib.analysis.audit_trail), the interval against statsmodels' cluster-robust
OLS, and the blocking finding end to end: it turns the claims-auto GO into a NO-GO
and reaches the go/no-go page.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from pilot_lib import phases
from pilot_lib.analysis.audit_trail import LINKS, audit_trail_review
from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import load_pilot
from pilot_lib.ingest.contracts import load_pilot_data
from pilot_lib.report import board
from tests.conftest import gate_of, tiny_frames, tiny_tool_calls, write_pilot

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "data" / "pilots" / "claims-auto"


def _gappy_frames() -> dict[str, pd.DataFrame]:
    """The tiny pilot with tool calls and one planted gap of every kind."""
    frames = tiny_frames(n_decisions=60)
    dec = frames["decisions"]
    # decisions that acted (completed, not escalated) carry the tool links
    # (past the first six, whose trace ids the approvals use)
    acted = [i for i in dec.index[dec["completed"] & ~dec["escalated"]] if i >= 6]
    dec.loc[acted[0], "trace_id"] = ""  # request
    dec.loc[acted[1], ["input_tokens", "output_tokens"]] = 0  # model_call
    calls = tiny_tool_calls(dec)
    calls = calls[calls["decision_id"] != dec.loc[acted[2], "decision_id"]]  # tool_call
    failed = calls["decision_id"] == dec.loc[acted[3], "decision_id"]
    calls.loc[failed, "status"] = "error_5xx"  # tool_result
    # an escalated decision without any call is not a gap
    escalated = [i for i in dec.index[dec["escalated"]] if i >= 6]
    calls = calls[calls["decision_id"] != dec.loc[escalated[0], "decision_id"]]
    frames["tool_calls"] = calls.reset_index(drop=True)
    app = frames["approvals"]
    # a0 auto (ok), a1 adjuster approved (ok), a2 supervisor approved (ok), a3 auto (ok),
    # a4 adjuster timed out (ok: the outcome is on record), a5 supervisor rejected (ok)
    app.loc[1, "decision"] = "auto"  # approval: an adjuster-level action run as auto
    app.loc[1, "approver_level"] = None
    app.loc[2, "executed_at"] = pd.NaT  # executed_action: approved, never executed
    orphan = app.iloc[[3]].assign(action_id="a-orphan", trace_id="t-none")
    frames["approvals"] = pd.concat([app, orphan], ignore_index=True)
    return frames


def _expected(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per chain with a boolean per link (True = missing), from the raw frames."""
    dec = frames["decisions"].copy()
    calls = frames["tool_calls"]
    app = frames["approvals"].copy()
    acted = dec["completed"] & ~dec["escalated"]
    n_calls = dec["decision_id"].map(calls.groupby("decision_id").size()).fillna(0)
    answered = (
        calls.assign(ok=calls["status"] == "ok")
        .groupby(["decision_id", "system", "tool"])["ok"]
        .any()
    )
    unanswered = dec["decision_id"].map((~answered).groupby(level="decision_id").sum()).fillna(0)
    needs = app["required_level"].isin(["adjuster", "supervisor"])
    decided = app["decided_at"].notna() | (app["decision"] == "timed_out")
    named = ~app["decision"].isin(["approved", "rejected"]) | app["approver_level"].notna()
    app["approval"] = needs & ((app["decision"] == "auto") | ~decided | ~named)
    app["executed_action"] = app["decision"].isin(["approved", "auto"]) & app["executed_at"].isna()
    has_trace = dec["trace_id"].fillna("").str.strip() != ""
    by_trace = app.groupby("trace_id")[["approval", "executed_action"]].any()
    rows = pd.DataFrame(
        {
            "chain": dec["decision_id"],
            "kind": "decision",
            "timestamp": dec["timestamp"],
            "request": ~has_trace,
            "model_call": (dec["input_tokens"] + dec["output_tokens"]) <= 0,
            "tool_call": acted & (n_calls == 0),
            "tool_result": ~dec["escalated"] & (unanswered > 0),
            "approval": [
                bool(h and t in by_trace.index and by_trace.loc[t, "approval"])
                for h, t in zip(has_trace, dec["trace_id"], strict=True)
            ],
            "executed_action": [
                bool(h and t in by_trace.index and by_trace.loc[t, "executed_action"])
                for h, t in zip(has_trace, dec["trace_id"], strict=True)
            ],
        }
    )
    orphan = app[~app["trace_id"].isin(dec["trace_id"])]
    rows = pd.concat(
        [
            rows,
            pd.DataFrame(
                {
                    "chain": orphan["action_id"],
                    "kind": "action",
                    "timestamp": orphan["proposed_at"],
                    "request": True,
                    "model_call": True,
                    "tool_call": False,
                    "tool_result": False,
                    "approval": orphan["approval"],
                    "executed_action": orphan["executed_action"],
                }
            ),
        ],
        ignore_index=True,
    )
    rows["incomplete"] = rows[list(LINKS)].any(axis=1)
    return rows


@pytest.fixture(scope="module")
def gappy(tmp_path_factory: pytest.TempPathFactory):
    frames = _gappy_frames()
    folder = write_pilot(tmp_path_factory.mktemp("audit") / "p", frames)
    pilot = load_pilot(folder)
    data = load_pilot_data(pilot)
    return frames, pilot, data


def test_counts_by_link_match_an_independent_count(gappy) -> None:
    frames, pilot, data = gappy
    review = audit_trail_review(pilot, data)
    want = _expected(frames)
    assert review.chains == len(want)
    assert review.complete == int((~want["incomplete"]).sum())
    assert review.missing == {link: int(want[link].sum()) for link in LINKS}
    # every kind was planted exactly once (the orphan action misses two links)
    assert review.missing == {
        "request": 2,
        "model_call": 2,
        "tool_call": 1,
        "tool_result": 1,
        "approval": 1,
        "executed_action": 1,
    }
    assert review.orphan_actions == 1
    listed = set(review.listed["chain"])
    assert listed == set(want.loc[want["incomplete"], "chain"])
    orphan = review.listed.set_index("chain").loc["a-orphan"]
    assert orphan["kind"] == "action" and orphan["missing"] == "request, model_call"
    assert all(v is None for v in review.checked.values())


def test_interval_matches_statsmodels_cluster_robust_ols(gappy) -> None:
    frames, pilot, data = gappy
    review = audit_trail_review(pilot, data)
    want = _expected(frames)
    y = (~want["incomplete"]).astype(float).to_numpy()
    week = pd.to_datetime(want["timestamp"]).dt.to_period("W-SUN").astype(str)
    groups = pd.factorize(week)[0]
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert review.share == pytest.approx(fit.params[0], abs=1e-12)
    assert review.se == pytest.approx(fit.bse[0], rel=1e-9)
    g = len(set(groups))
    assert review.clusters == g
    half = stats.t.ppf(0.975, g - 1) * fit.bse[0]
    low_w, high_w = wilson_interval(int(y.sum()), len(y))
    assert review.low == pytest.approx(max(0.0, min(fit.params[0] - half, low_w)))
    assert review.high == pytest.approx(min(1.0, max(fit.params[0] + half, high_w)))


def test_weekly_shares_match_pandas(gappy) -> None:
    frames, pilot, data = gappy
    review = audit_trail_review(pilot, data)
    want = _expected(frames)
    monday = pd.to_datetime(want["timestamp"]).dt.to_period("W-SUN").dt.start_time
    by_week = want.assign(week=monday.dt.strftime("%Y-%m-%d")).groupby("week")
    expected = pd.DataFrame(
        {"chains": by_week.size(), "complete": (~by_week["incomplete"].sum().astype(bool))}
    )
    expected["complete"] = by_week.apply(lambda g: int((~g["incomplete"]).sum()))
    got = review.weekly.set_index("week")
    assert got["chains"].to_dict() == expected["chains"].to_dict()
    assert got["complete"].to_dict() == expected["complete"].to_dict()


def test_below_the_threshold_is_blocking_above_it_a_warning(gappy, tmp_path: Path) -> None:
    frames, pilot, data = gappy
    review = audit_trail_review(pilot, data)
    assert review.share < 0.99
    codes = {f.code: f.severity for f in review.findings}
    assert codes == {"audit_trail_incomplete": "blocking"}
    blocking = review.findings[0]
    assert blocking.evidence["headline"] == "Audit trail incomplete"
    assert "a-orphan" in blocking.evidence["chain_ids"]
    folder = write_pilot(
        tmp_path / "lenient", frames, doc_changes={"audit_trail": {"min_complete_share": 0.5}}
    )
    lenient = audit_trail_review(load_pilot(folder), load_pilot_data(folder))
    assert {f.code: f.severity for f in lenient.findings} == {"audit_trail_gaps": "warning"}


def test_without_tool_calls_the_tool_link_is_not_checked_and_a_warning_says_so(
    tmp_path: Path,
) -> None:
    folder = write_pilot(tmp_path / "p", tiny_frames())
    review = audit_trail_review(load_pilot(folder), load_pilot_data(folder))
    assert review.checked["tool_call"] and review.checked["tool_result"]
    assert review.missing["tool_call"] == review.missing["tool_result"] == 0
    assert "audit_trail_tools_unchecked" in {f.code for f in review.findings}
    assert "not checked" not in review.summary().loc[0, "checked"]
    assert review.summary().set_index("link").loc["tool_call", "checked"].startswith("no:")


def test_bad_pilot_file_setting_names_the_field(tmp_path: Path) -> None:
    from pilot_lib.config import PilotFileError

    folder = write_pilot(
        tmp_path / "p", tiny_frames(), doc_changes={"audit_trail": {"min_complete_share": 1.5}}
    )
    with pytest.raises(PilotFileError, match="min_complete_share"):
        load_pilot(folder)


def test_the_result_is_in_the_phase_4_result_and_its_findings(gappy) -> None:
    _, pilot, data = gappy
    result = phases.incident_phase(pilot, data).to_result()
    assert result["audit_trail"]["chains"] == audit_trail_review(pilot, data).chains
    assert "audit_trail_incomplete" in {f["code"] for f in result["findings"]}
    assert result["passed"] is False


def test_broken_trace_ids_turn_the_claims_auto_go_into_no_go_on_the_page(tmp_path: Path) -> None:
    folder = tmp_path / "claims-auto"
    shutil.copytree(CLAIMS, folder)
    store = tmp_path / "store"
    before, results = gate_of(folder, store)
    assert before.decision == "GO"

    # The logging layer lost the trace id of 2% of the decisions: nothing else changes.
    dec = pd.read_parquet(folder / "decisions.parquet")
    lost = np.random.default_rng(5).random(len(dec)) < 0.02
    dec.loc[lost, "trace_id"] = ""
    dec.to_parquet(folder / "decisions.parquet", index=False)
    decision, after = gate_of(folder, store)
    pilot = load_pilot(folder)
    # only the audit trail moved: the other phases' results are the same as before
    assert after["kpi_baselining"]["kpis"] == results["kpi_baselining"]["kpis"]
    results = after
    assert decision.decision == "NO-GO"
    assert [f.code for f in decision.blocking] == ["audit_trail_incomplete"]
    reasons = decision.reasons()
    assert [r.headline for r in reasons if r.phase == "incident_drill_review"] == [
        "Audit trail incomplete"
    ]
    page = board.board_top(decision, pilot, None, [], [], "0")
    assert "Audit trail incomplete" in page
    audit = results["incident_drill_review"]["audit_trail"]
    assert f"{audit['complete']:,} of {audit['chains']:,} decision chains" in page
    # the chains broken are those decisions (the few quarantined rows aside)
    assert audit["missing"]["request"] == pytest.approx(lost.sum(), abs=10)

"""Integration health (phase 2): every figure against an independent computation.

Figures are checked against pandas written here from the raw rows, the intervals
against statsmodels' cluster-robust OLS of the error indicator on a constant and
its Wilson interval; the findings on a hand-built log with one of each problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import tiny_frames, tiny_tool_calls, write_pilot
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.analysis.integration import integration_health
from pilot_lib.config import PilotFileError, load_pilot
from pilot_lib.ingest.contracts import load_pilot_data
from pilot_lib.phases import kpi_phase
from pilot_lib.report.charts import error_rate_chart

T0 = pd.Timestamp("2026-03-03 09:00:00")


def _row(i: str, decision: str, system: str, start: pd.Timestamp, ms: float | None, status: str,
         attempt: int = 1, key: str | None = None, side: bool = False, tool: str = "get") -> dict:  # fmt: skip
    return {
        "call_id": i,
        "decision_id": decision,
        "trace_id": None,
        "system": system,
        "tool": tool,
        "started_at": start,
        "ended_at": None if ms is None else start + pd.Timedelta(milliseconds=ms),
        "status": status,
        "http_status": {"ok": 200, "error_5xx": 503, "error_4xx": 404}.get(status),
        "attempt": attempt,
        "idempotency_key": key,
        "side_effect": side,
        "cost_usd": 0.0,
    }


def _problem_log(decisions: pd.DataFrame) -> pd.DataFrame:
    """The clean tiny log plus: a hammering call, an ignored breaker, a double execution."""
    rows = tiny_tool_calls(decisions).to_dict("records")
    ids = decisions["decision_id"].tolist()
    at = [pd.Timestamp(x) + pd.Timedelta(seconds=5) for x in decisions["timestamp"]]
    # 1. a retry storm on "cmdb": 4 attempts 50 ms apart (decision 0)
    t = at[0]
    for k in range(4):
        rows.append(_row(f"storm-{k}", ids[0], "cmdb", t, 100, "error_5xx", attempt=k + 1))
        t += pd.Timedelta(milliseconds=150)
    rows.append(_row("storm-ok", ids[0], "cmdb", t + pd.Timedelta(seconds=1), 100, "ok", 1))
    # 2. an ignored breaker on "ledger": 7 failures, single attempts of 7 decisions,
    # 2 s apart with backoff-free single tries (not retries: attempt 1 each)
    t = at[1]
    for k in range(7):
        # one burst, 3 s apart: seven single-attempt calls of decision 1
        rows.append(_row(f"brk-{k}", ids[1], "ledger", t, 2000, "timeout", tool=f"t{k}"))
        t += pd.Timedelta(seconds=3)
    # 3. a payment executed twice under one key (decision 9), retried after a lost reply
    t = at[9]
    rows.append(_row("dup-1", ids[9], "payments", t, 400, "ok", 1, "pay-dup", True, "post_payment"))
    rows.append(
        _row(
            "dup-2",
            ids[9],
            "payments",
            t + pd.Timedelta(seconds=2),
            400,
            "ok",
            2,
            "pay-dup",
            True,
            "post_payment",
        )  # fmt: skip
    )
    return pd.DataFrame(rows)


#: The problem log has one ignored-breaker run; these tests judge it as blocking.
ZERO_RUNS = {"max_ignored_breaker_runs": 0}


def _load(tmp_path: Path, calls: pd.DataFrame, **doc) -> tuple:
    frames = tiny_frames()
    frames["tool_calls"] = calls(frames["decisions"]) if callable(calls) else calls
    folder = write_pilot(tmp_path / "p", frames, doc_changes=doc or None)
    pilot = load_pilot(folder)
    return pilot, load_pilot_data(pilot), frames


def test_clean_log_gives_no_finding(tmp_path: Path) -> None:
    pilot, data, _ = _load(tmp_path, tiny_tool_calls)
    h = integration_health(pilot, data)
    assert h.findings == []
    assert set(h.systems["system"]) == {"crm", "payments"}


def test_no_tool_calls_no_section(tmp_path: Path) -> None:
    frames = tiny_frames()
    pilot = load_pilot(write_pilot(tmp_path / "p", frames))
    assert integration_health(pilot, load_pilot_data(pilot)) is None


def test_problem_log_gives_exactly_those_findings(tmp_path: Path) -> None:
    pilot, data, frames = _load(tmp_path, _problem_log, integration=ZERO_RUNS)
    h = integration_health(pilot, data)
    codes = sorted(f.code for f in h.findings)
    assert codes == sorted(
        ["retry_storm", "circuit_breaker_ignored", "duplicate_side_effects"]
        + ["integration_error_rate", "integration_error_rate"]  # cmdb 4 of 5, ledger 7 of 7
    )
    by = {f.code: f for f in h.findings}
    dup = by["duplicate_side_effects"]
    assert dup.severity == "blocking"
    assert dup.evidence["duplicate_keys"] == ["pay-dup"]
    assert dup.evidence["duplicate_decision_ids"] == [frames["decisions"]["decision_id"][9]]
    assert dup.evidence["headline"] == "Actions executed twice"
    assert by["retry_storm"].evidence["hammering_calls"] == {"cmdb": 1}
    assert by["circuit_breaker_ignored"].evidence["longest_run"] == 7
    # the storm's 4 failures are retries of one call: no breaker run above 5 there
    assert by["circuit_breaker_ignored"].evidence["systems"] == ["ledger"]
    assert h.hung["count"] == 0  # every call returned, within 300 s of its decision's first
    for f in h.findings:
        if f.severity == "blocking":
            assert f.evidence["section"] == "Integration health" and f.evidence["headline"]


def test_hung_decisions_follow_the_timeout(tmp_path: Path) -> None:
    def log(decisions: pd.DataFrame) -> pd.DataFrame:
        rows = tiny_tool_calls(decisions).to_dict("records")
        ids = decisions["decision_id"].tolist()
        rows.append(_row("never", ids[3], "crm", T0, None, "timeout", tool="slow"))
        rows.append(_row("long-a", ids[5], "crm", T0, 100, "ok", tool="a"))
        rows.append(
            _row("long-b", ids[5], "crm", T0 + pd.Timedelta(seconds=50), 100, "ok", tool="b")
        )
        return pd.DataFrame(rows)

    integration = {"decision_timeout_seconds": 40, "breaker_pause_seconds": 10}
    pilot, data, frames = _load(tmp_path, log, integration=integration)
    h = integration_health(pilot, data)
    raw = frames["tool_calls"]
    raw = raw[raw["started_at"] >= pd.Timestamp(pilot.pilot_window.start_ts)]
    per = raw.groupby("decision_id").agg(
        first=("started_at", "min"), last=("ended_at", "max"),
        open=("ended_at", lambda s: s.isna().any()),
    )  # fmt: skip
    expected = per[per["open"] | ((per["last"] - per["first"]).dt.total_seconds() > 40)]
    assert h.hung["count"] == len(expected) == 2
    assert h.hung["decision_ids"] == sorted(expected.index)
    assert [f.code for f in h.findings if f.severity == "blocking"] == ["hung_decisions"]


def test_figures_match_pandas_and_statsmodels(tmp_path: Path) -> None:
    pilot, data, frames = _load(tmp_path, _problem_log)
    h = integration_health(pilot, data)
    raw = frames["tool_calls"].copy()
    raw["week"] = raw["started_at"].dt.to_period("W-SUN").dt.start_time.dt.date
    sent = raw[raw["status"] != "circuit_open"].copy()
    sent["err"] = sent["status"].isin(["error_5xx", "timeout", "error_4xx"]).astype(float)
    for system, g in sent.groupby("system"):
        row = h.systems.set_index("system").loc[system]
        assert row["attempts"] == (raw["system"] == system).sum()
        assert row["errors"] == g["err"].sum()
        assert row["error_rate"] == pytest.approx(g["err"].mean())
        assert row["errors_5xx"] == (g["status"] == "error_5xx").sum()
        assert row["errors_timeout"] == (g["status"] == "timeout").sum()
        ok = g[g["ended_at"].notna()]
        ms = (ok["ended_at"] - ok["started_at"]).dt.total_seconds() * 1000
        assert row["p50_ms"] == pytest.approx(np.quantile(ms, 0.5))
        assert row["p95_ms"] == pytest.approx(np.quantile(ms, 0.95))
        # interval: CR1 by week with t(G-1), never narrower than Wilson
        wl, wh = proportion_confint(int(g["err"].sum()), len(g), alpha=0.05, method="wilson")
        weeks = g["week"].astype(str)
        if weeks.nunique() >= 2 and 0 < g["err"].mean() < 1:
            fit = sm.OLS(g["err"].to_numpy(), np.ones(len(g))).fit(
                cov_type="cluster", cov_kwds={"groups": pd.factorize(weeks)[0]}
            )
            half = stats.t.ppf(0.975, weeks.nunique() - 1) * fit.bse[0]
            low = min(max(0.0, fit.params[0] - half), wl)
            high = max(min(1.0, fit.params[0] + half), wh)
        else:
            low, high = wl, wh
        assert row["error_low"] == pytest.approx(low, abs=1e-12)
        assert row["error_high"] == pytest.approx(high, abs=1e-12)
    # weekly: one system-week against statsmodels clustered by decision
    g = sent[sent["system"] == "ledger"]
    wrow = h.weekly[h.weekly["system"] == "ledger"].iloc[0]
    assert wrow["errors"] == g["err"].sum() == 7
    # one decision: no between-decision variation to estimate, so Wilson stands
    assert (wrow["low"], wrow["high"]) == pytest.approx(
        proportion_confint(7, 7, alpha=0.05, method="wilson")
    )
    # retries: the storm call has 4 attempts then a fresh call
    cmdb = h.systems.set_index("system").loc["cmdb"]
    assert (cmdb["calls"], cmdb["attempts"], cmdb["retried_calls"]) == (2, 5, 1)
    assert cmdb["retries_per_call"] == pytest.approx(3 / 2)


def test_weekly_interval_matches_statsmodels_by_decision() -> None:
    from pilot_lib.analysis.integration import _moment_interval

    rng = np.random.default_rng(3)
    dec = np.repeat(np.arange(30), rng.integers(1, 5, 30))
    err = (rng.random(len(dec)) < 0.2 + 0.4 * (dec % 3 == 0)).astype(float)
    frame = pd.DataFrame({"d": dec, "e": err})
    per = frame.groupby("d")["e"].agg(["sum", "count"])
    low, high = _moment_interval(
        int(err.sum()), len(err), len(per), float((per["sum"] ** 2).sum()),
        float((per["sum"] * per["count"]).sum()), float((per["count"] ** 2).sum()), 0.95,
    )  # fmt: skip
    fit = sm.OLS(err, np.ones(len(err))).fit(cov_type="cluster", cov_kwds={"groups": dec})
    half = stats.t.ppf(0.975, len(per) - 1) * fit.bse[0]
    wl, wh = proportion_confint(int(err.sum()), len(err), alpha=0.05, method="wilson")
    assert low == pytest.approx(min(fit.params[0] - half, wl), rel=1e-9)
    assert high == pytest.approx(max(fit.params[0] + half, wh), rel=1e-9)


def test_escalations_link_to_the_failed_system(tmp_path: Path) -> None:
    frames = tiny_frames()
    d = frames["decisions"]
    d.loc[[2, 4, 6], ["escalated", "escalation_reason"]] = [True, "tool_failure"]
    rows = tiny_tool_calls(d).to_dict("records")
    ids = d["decision_id"].tolist()
    at = [pd.Timestamp(x) + pd.Timedelta(seconds=5) for x in d["timestamp"]]
    rows.append(_row("f2", ids[2], "cmdb", at[2], 100, "error_5xx"))
    rows.append(_row("f4", ids[4], "cmdb", at[4], 0, "circuit_open"))
    frames["tool_calls"] = pd.DataFrame(rows)
    pilot = load_pilot(write_pilot(tmp_path / "p", frames))
    h = integration_health(pilot, load_pilot_data(pilot))
    # pandas: tool_failure escalations with a failed call, per system
    tc = frames["tool_calls"]
    failed = tc[tc["status"] != "ok"][["system", "decision_id"]].drop_duplicates()
    esc = d[d["escalated"] & (d["escalation_reason"] == "tool_failure")]["decision_id"]
    expected = failed[failed["decision_id"].isin(esc)].groupby("system").size()
    got = h.escalation_table().set_index("system")["tool_failure_escalations"]
    assert got.to_dict() == expected.to_dict() == {"cmdb": 2}
    assert h.unlinked_tool_failure_escalations == len(set(esc) - set(failed["decision_id"]))
    # the decision that met the open circuit escalated
    assert h.systems.set_index("system").loc["cmdb", "open_escalated"] == 1
    assert h.systems.set_index("system").loc["cmdb", "circuit_openings"] == 1


def test_blocking_finding_reaches_the_gate(tmp_path: Path) -> None:
    from pilot_lib.report.board import board_top

    pilot, data, _ = _load(tmp_path, _problem_log, integration=ZERO_RUNS)
    phase2 = kpi_phase(pilot, data).to_result()
    section = phase2["integration_health"]
    # every KPI passing and nothing else found: GO; with this section's findings: NO-GO
    passing = [
        {"kpi": "task_completion_rate", "estimate": 0.9, "low": 0.88, "high": 0.92, "n": 1000},
        {"kpi": "cost_per_decision", "estimate": 1.0, "low": 0.9, "high": 1.1, "n": 1000},
        {"kpi": "escalation_rate", "estimate": 0.05, "low": 0.04, "high": 0.06, "n": 1000},
    ]

    def results(findings: list) -> dict:
        return {
            "kpi_baselining": {"kpis": passing, "findings": findings},
            "drift_analysis": {"findings": []},
            "incident_drill_review": {"findings": []},
        }

    assert evaluate_gate(pilot, results([])).decision == "GO"
    assert section["findings"] and all(f in phase2["findings"] for f in section["findings"])
    gate = evaluate_gate(pilot, results(section["findings"]))
    assert gate.decision == "NO-GO"
    assert {f.code for f in gate.blocking} == {
        "duplicate_side_effects",
        "retry_storm",
        "circuit_breaker_ignored",
    }
    heads = [r.headline for r in gate.reasons()]
    assert {"Actions executed twice", "Retry storm", "Circuit breaker ignored"} <= set(heads)
    assert "Actions executed twice" in board_top(gate, pilot, None)


def test_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(PilotFileError) as err:
        _load(tmp_path, tiny_tool_calls, integration={"max_error_rate": 1.5})
    assert "integration.max_error_rate" in str(err.value)
    with pytest.raises(PilotFileError) as err:
        _load(tmp_path / "b", tiny_tool_calls, integration={"breaker_pause_seconds": 400})
    assert "breaker_pause_seconds" in str(err.value)


def test_chart_draws(tmp_path: Path) -> None:
    pilot, data, _ = _load(tmp_path, _problem_log)
    fig = error_rate_chart(integration_health(pilot, data))
    assert fig.axes and len(fig.axes[0].lines) >= 3


def test_tool_calls_from_sdk_spans_match_the_spans(tmp_path: Path) -> None:
    """The invoice sample's traces were written by the OpenTelemetry SDK: every
    execute_tool span of a built decision is one tool_calls row with its attributes."""
    import json

    from pilot_lib.ingest.store import build_store, open_store

    root = Path(__file__).resolve().parent.parent / "data" / "pilots" / "invoice-reconciliation"
    pilot = load_pilot(root)
    data = open_store(build_store(pilot, tmp_path / "store").path, pilot)
    built = data.table("tool_calls").execute().set_index("call_id").sort_index()
    decisions = data.table("decisions").execute()
    spans = []
    with open(root / "traces" / "agent-traces.otlp.jsonl", encoding="utf-8") as fh:
        for line in fh:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for sp in ss["spans"]:
                        attrs = {
                            a["key"]: next(iter(a["value"].values())) for a in sp["attributes"]
                        }
                        if attrs.get("gen_ai.operation.name") == "execute_tool":
                            spans.append(
                                {
                                    "call_id": sp["spanId"],
                                    "trace_id": sp["traceId"],
                                    "system": attrs["server.address"],
                                    "tool": attrs["gen_ai.tool.name"],
                                    "http": int(attrs.get("http.response.status_code", 0)),
                                    "start": int(sp["startTimeUnixNano"]) // 1000,
                                }
                            )
    raw = pd.DataFrame(spans).set_index("call_id")
    # spans of built decisions only (lost or quarantined decisions have none)
    raw = raw[raw["trace_id"].isin(set(decisions["trace_id"]))]
    assert set(built.index) <= set(raw.index)
    missing = raw.loc[~raw.index.isin(built.index)]
    assert len(missing) <= 5  # the clock-stepped spans quarantined by the span rules
    raw = raw.loc[built.index]
    assert (built["system"] == raw["system"]).all()
    assert (built["tool"] == raw["tool"]).all()
    expected = np.where(raw["http"] >= 500, "error_5xx", "ok")
    assert (built["status"].to_numpy() == expected).all()
    start_us = built["started_at"].astype("datetime64[us]").astype("int64")
    assert (start_us.to_numpy() == raw["start"].to_numpy()).all()
    ids = dict(zip(decisions["trace_id"], decisions["decision_id"], strict=True))
    assert (built["decision_id"] == raw["trace_id"].map(ids)).all()
    # Attempts the spans do not state are inferred: a span after failed spans of the same
    # tool in the same trace is their retry; counted here straight from the raw spans.
    raw = raw.assign(failed=raw["http"] >= 500).sort_values(["trace_id", "tool", "start"])
    attempt, prev = [], None
    for trace, tool, failed in raw[["trace_id", "tool", "failed"]].itertuples(index=False):
        same = prev is not None and prev[:2] == (trace, tool)
        attempt.append(attempt[-1] + 1 if same and prev[2] else 1)
        prev = (trace, tool, failed)
    raw["attempt"] = attempt
    assert (built["attempt"] == raw.loc[built.index, "attempt"]).all()
    assert (raw["attempt"] == 2).sum() > 0  # the AP ledger's retries


def test_the_invoice_samples_ledger_retries_back_off() -> None:
    """The trace sample's AP ledger outage weeks: retried once after a 1-2 s backoff, so
    the agent is not hammering; its tool_failure escalations link to the ledger."""
    root = Path(__file__).resolve().parent.parent / "data" / "pilots" / "invoice-reconciliation"
    pilot = load_pilot(root)
    section = integration_health(pilot, load_pilot_data(pilot))
    systems = section.systems_table().set_index("system")
    ledger = systems.loc["apledger.mainframe.internal"]
    assert ledger["attempts"] > ledger["calls"] and ledger["hammering calls"] == 0
    assert {f.code for f in section.findings} == {"integration_error_rate"}
    links = section.escalation_table().set_index("system")
    assert list(links.index) == ["apledger.mainframe.internal"]


def test_limits_are_counts_and_rates_from_the_pilot_file(tmp_path: Path) -> None:
    """Issue 22: one ignored-breaker run is a warning by default, more than the limit blocks;
    hammering blocks above its share of retried calls; double execution always blocks."""
    pilot, data, _ = _load(tmp_path, _problem_log)
    by = {f.code: f for f in integration_health(pilot, data).findings}
    assert by["circuit_breaker_run"].severity == "warning"  # 1 run, limit 1
    assert "circuit_breaker_ignored" not in by
    assert by["retry_storm"].severity == "blocking"  # cmdb: 1 of 1 retried calls, above 1%
    assert by["duplicate_side_effects"].severity == "blocking"
    lenient = {"max_hammering_share": 1.0, "max_ignored_breaker_runs": 5}
    pilot, data, _ = _load(tmp_path / "lenient", _problem_log, integration=lenient)
    by = {f.code: f for f in integration_health(pilot, data).findings}
    assert by["retries_without_backoff"].severity == "warning"
    assert "integration.max_hammering_share" in by["retries_without_backoff"].message
    assert by["duplicate_side_effects"].severity == "blocking"  # zero-tolerance, not settable
    with pytest.raises(PilotFileError):
        _load(tmp_path / "bad", tiny_tool_calls, integration={"max_duplicate_actions": 1})

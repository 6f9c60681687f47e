"""Shadow mode (phase 2): agreement, its intervals, disagreement costs, and live KPIs untouched.

Every figure is checked against an independent computation from the raw rows:
pandas for counts and shares, statsmodels' cluster-robust OLS of the agreement
indicator on a constant (CR1) and ``proportion_confint(method="wilson")``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import tiny_frames, write_pilot
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.analysis.shadow import SECTION_HEADING, shadow_mode
from pilot_lib.config import PilotFileError, load_pilot
from pilot_lib.ingest.contracts import load_pilot_data
from pilot_lib.phases import drift_phase, kpi_phase
from pilot_lib.results import to_jsonable

OUTCOMES = np.array(["approve", "deny", "refer"])


def shadow_rows(n: int = 120, seed: int = 3, agree: float = 0.8) -> pd.DataFrame:
    """Shadow decisions on the tiny pilot's control cases, over its four weeks."""
    rng = np.random.default_rng(seed)
    base = tiny_frames()["decisions"]
    start = pd.Timestamp("2026-03-02")
    human = OUTCOMES[rng.integers(0, 3, n)]
    agrees = rng.random(n) < agree
    # weeks differ in agreement so the clustering matters
    agent = np.where(agrees, human, OUTCOMES[(np.searchsorted(OUTCOMES, human) + 1) % 3])
    rows = pd.DataFrame(
        {
            "decision_id": [f"s{i:04d}" for i in range(n)],
            "timestamp": start + pd.to_timedelta(np.sort(rng.integers(0, 27 * 86400, n)), "s"),
            "trace_id": [f"st{i:04d}" for i in range(n)],
            "agent_id": "agent-1",
            "workflow": np.where(rng.random(n) < 0.5, "claims", "glass"),
            "case_id": [f"c{1 + 3 * (i % 4):03d}" for i in range(n)],  # control cases
            "prompt_version": np.where(np.arange(n) < n // 2, "v1", "v2"),
            "user_id": [f"u{i % 4}" for i in range(n)],
            "completed": True,
            "accepted": False,
            "overridden": False,
            "escalated": False,
            "escalation_reason": None,
            "confidence": np.round(rng.uniform(0.5, 1.0, n), 3),
            "correct": pd.array([None] * n, dtype="boolean"),
            "input_tokens": rng.integers(200, 2000, n).astype("int64"),
            "output_tokens": rng.integers(50, 500, n).astype("int64"),
            "model_cost_usd": np.round(rng.uniform(0.01, 0.2, n), 4),
            "tool_cost_usd": 0.0,
            "review_minutes": np.round(rng.uniform(1.0, 9.0, n), 2),
            "claim_amount": np.round(rng.uniform(500, 9500, n), 2),
            "channel": "web",
            "shadow": True,
            "agent_outcome": agent,
            "human_outcome": human,
        }
    )
    return rows[base.columns.tolist() + ["shadow", "agent_outcome", "human_outcome"]]


def with_shadow(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    frames = tiny_frames()
    live = frames["decisions"].assign(shadow=False, agent_outcome=None, human_outcome=None)
    frames["decisions"] = pd.concat([live, rows], ignore_index=True)
    return frames


@pytest.fixture
def shadow_pilot(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    rows = shadow_rows()
    folder = write_pilot(
        tmp_path / "shadow",
        with_shadow(rows),
        doc_changes={
            "shadow": {
                "segment_by": ["workflow"],
                "min_agreement": 0.7,
                "disagreement_costs_usd": {"approve -> deny": 400.0},
            }
        },
    )
    return folder, rows


def _cluster_ci(y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """statsmodels' CR1 interval of a mean, t on G - 1, widened to Wilson."""
    fit = sm.OLS(y, np.ones(len(y))).fit(cov_type="cluster", cov_kwds={"groups": groups})
    g = len(np.unique(groups))
    half = sps.t.ppf(0.975, g - 1) * float(fit.bse[0])
    p = float(y.mean())
    lo_w, hi_w = proportion_confint(int(y.sum()), len(y), method="wilson")
    return min(max(0.0, p - half), lo_w), max(min(1.0, p + half), hi_w)


def _shadow_clusters(part) -> np.ndarray:
    """The clusters of issue 22's rule, from the raw rows: weeks when there are at least 5,
    else days when there are at least 5, else cases."""
    weeks = part["timestamp"].dt.to_period("W-SUN").dt.start_time.to_numpy()
    days = part["timestamp"].dt.floor("D").to_numpy()
    if len(np.unique(weeks)) >= 5:
        return weeks
    if len(np.unique(days)) >= 5:
        return days
    return part["case_id"].astype(str).to_numpy()


def test_agreement_and_its_cluster_interval_match_statsmodels(shadow_pilot) -> None:
    folder, rows = shadow_pilot
    pilot = load_pilot(folder)
    review = shadow_mode(pilot, load_pilot_data(pilot))
    y = (rows["agent_outcome"] == rows["human_outcome"]).to_numpy(dtype=float)
    weeks = rows["timestamp"].dt.to_period("W-SUN").dt.start_time.to_numpy()
    assert len(np.unique(weeks)) == 4  # fewer than 5 weeks: clustered by day (issue 22)
    days = _shadow_clusters(rows)
    low, high = _cluster_ci(y, days)
    a = review.agreement
    assert review.shadow_decisions == len(rows) and review.agreed == int(y.sum())
    assert a["estimate"] == pytest.approx(y.mean(), rel=1e-12)
    assert a["cluster_by"] == "day" and a["clusters"] == len(np.unique(days)) > 4
    assert (a["low"], a["high"]) == pytest.approx((low, high), rel=1e-9)
    # the power statement: the margin above the target this sample shows with 80% power
    se = (high - low) / 2 / sps.t.ppf(0.975, a["clusters"] - 1)
    if a["low"] > 0 and a["high"] < 1:
        assert a["detectable_margin"] == pytest.approx(
            (sps.t.ppf(0.975, a["clusters"] - 1) + sps.norm.ppf(0.8)) * se, rel=0.05
        )

    # per segment and per version: the same computation on each group of the raw rows
    for column, frame in (("workflow", review.by_segment), ("prompt_version", review.by_version)):
        for value, part in rows.groupby(column):
            got = frame.loc[frame["value"] == value].iloc[0]
            yy = (part["agent_outcome"] == part["human_outcome"]).to_numpy(dtype=float)
            ww = _shadow_clusters(part)
            assert got["shadow_decisions"] == len(part)
            assert got["agreement"] == pytest.approx(yy.mean(), rel=1e-12)
            assert (got["low"], got["high"]) == pytest.approx(_cluster_ci(yy, ww), rel=1e-9)


def test_agreement_is_wilson_when_decisions_are_independent(tmp_path: Path) -> None:
    rows = shadow_rows(n=50, seed=9)
    folder = write_pilot(
        tmp_path / "iid", with_shadow(rows), doc_changes={"statistics": {"cluster_by": "none"}}
    )
    pilot = load_pilot(folder)
    a = shadow_mode(pilot, load_pilot_data(pilot)).agreement
    k = int((rows["agent_outcome"] == rows["human_outcome"]).sum())
    assert (a["low"], a["high"]) == pytest.approx(
        proportion_confint(k, 50, method="wilson"), rel=1e-12
    )
    assert "Wilson" in a["method"]


def test_disagreement_kinds_and_costs_from_the_raw_rows(shadow_pilot) -> None:
    folder, rows = shadow_pilot
    pilot = load_pilot(folder)
    review = shadow_mode(pilot, load_pilot_data(pilot))
    off = rows[rows["agent_outcome"] != rows["human_outcome"]]
    expected = off.groupby(["agent_outcome", "human_outcome"]).agg(
        count=("decision_id", "size"), minutes=("review_minutes", "sum")
    )
    got = review.disagreements.set_index(["agent_outcome", "human_outcome"])
    assert sorted(got.index) == sorted(expected.index)
    for kind, e in expected.iterrows():
        g = got.loc[kind]
        assert g["count"] == e["count"]
        assert g["share_of_shadow"] == pytest.approx(e["count"] / len(rows))
        assert g["share_of_disagreements"] == pytest.approx(e["count"] / len(off))
        if kind == ("approve", "deny"):  # priced in the pilot file
            assert g["cost_usd"] == pytest.approx(400.0 * e["count"])
            assert "pilot file" in g["cost_basis"]
        else:  # review minutes at the hourly rate (60 USD in the tiny pilot)
            assert g["cost_usd"] == pytest.approx(e["minutes"] / 60 * 60.0)
            assert "review minutes" in g["cost_basis"]
    assert list(review.disagreements["count"]) == sorted(review.disagreements["count"])[::-1]
    json.dumps(review.to_result())


def test_shadow_rows_leave_every_live_figure_unchanged(tmp_path: Path, shadow_pilot) -> None:
    folder, _ = shadow_pilot
    plain = write_pilot(tmp_path / "plain", tiny_frames())
    results = []
    for f in (plain, folder):
        pilot = load_pilot(f)
        data = load_pilot_data(pilot)
        kpis = kpi_phase(pilot, data)
        drift = drift_phase(pilot, data)
        cov = kpis.coverage.to_result()
        results.append(
            json.loads(
                json.dumps(
                    to_jsonable(
                        {
                            "kpis": kpis.table.to_result(),
                            "drift": drift.report.to_result(),
                            "weeks": cov["decisions_by_week"],
                            "versions": cov["decisions_by_prompt_version"],
                            "correct_known_share": cov["outcome"]["correct_known_share"],
                        }
                    )
                )
            )
        )
    before, after = results
    assert before["kpis"].pop("pilot") == "tiny" and after["kpis"].pop("pilot") == "tiny"
    assert after == before


def test_shadow_row_without_both_outcomes_is_quarantined(tmp_path: Path) -> None:
    rows = shadow_rows(n=20)
    rows.loc[3, "human_outcome"] = None
    rows.loc[5, "agent_outcome"] = None
    frames = with_shadow(rows)
    frames["decisions"]["shadow"] = frames["decisions"]["shadow"].astype("boolean")
    frames["decisions"].loc[0, "shadow"] = pd.NA  # null shadow: a live decision, no outcomes needed
    pilot = load_pilot(write_pilot(tmp_path / "q", frames))
    data = load_pilot_data(pilot)
    by_rule = dict(data.checks["decisions"].by_rule.itertuples(index=False))
    assert by_rule == {"shadow decision without agent_outcome or human_outcome": 2}
    assert data.shadow_decisions().count().execute() == 18
    assert data.table("decisions").count().execute() == len(tiny_frames()["decisions"])


def test_no_shadow_decisions_no_section(tiny_pilot: Path) -> None:
    pilot = load_pilot(tiny_pilot)
    data = load_pilot_data(pilot)
    assert shadow_mode(pilot, data) is None
    assert "shadow_mode" not in kpi_phase(pilot, data).to_result()


def test_unknown_segment_column_names_the_setting(tmp_path: Path) -> None:
    folder = write_pilot(
        tmp_path / "bad",
        with_shadow(shadow_rows(n=10)),
        doc_changes={"shadow": {"segment_by": ["region"]}},
    )
    pilot = load_pilot(folder)
    with pytest.raises(PilotFileError, match=r"shadow\.segment_by"):
        shadow_mode(pilot, load_pilot_data(pilot))


def test_agreement_below_target_blocks_and_reaches_the_gate(tmp_path: Path) -> None:
    rows = shadow_rows(n=200, seed=4, agree=0.55)
    folder = write_pilot(
        tmp_path / "low", with_shadow(rows), doc_changes={"shadow": {"min_agreement": 0.9}}
    )
    pilot = load_pilot(folder)
    kpis = kpi_phase(pilot, load_pilot_data(pilot))
    (finding,) = kpis.shadow_mode.findings
    assert finding.code == "shadow_agreement_below_target" and finding.severity == "blocking"
    assert finding.evidence["high"] < 0.9
    assert finding.evidence["section"] == SECTION_HEADING
    result = kpis.to_result()
    assert "shadow_agreement_below_target" in [f["code"] for f in result["findings"]]

    # the gate: KPIs that all pass, with and without the finding
    (blocking,) = [f for f in result["findings"] if f["severity"] == "blocking"]
    assert gate_decision(pilot, []).decision == "GO"
    with_it = gate_decision(pilot, [blocking])
    assert with_it.decision == "NO-GO"
    reason = next(r for r in with_it.reasons() if r.headline == "Shadow agreement too low")
    assert reason.section == SECTION_HEADING
    assert f"{100 * finding.evidence['agreement']:.1f}%" in reason.detail


def gate_decision(pilot, findings: list[dict]):
    """The gate on passing KPIs (as tests/test_gate.py builds them) and ``findings``."""
    lo, hi = proportion_confint(950, 1000, method="wilson")
    kpis = [
        {"kpi": "task_completion_rate", "estimate": 0.95, "low": lo, "high": hi, "n": 1000},
        {"kpi": "cost_per_decision", "estimate": 1.9, "low": 1.8, "high": 2.0, "n": 1000},
        {"kpi": "escalation_rate", "estimate": 0.05, "low": 0.04, "high": 0.06, "n": 1000},
    ]
    phase = findings[0]["phase"] if findings else "kpi_baselining"
    results = {
        "kpi_baselining": {"kpis": kpis, "findings": []},
        "drift_analysis": {"findings": []},
        "incident_drill_review": {"findings": []},
    }
    results[phase]["findings"] = list(findings)
    return evaluate_gate(pilot, results)


def test_agreement_near_target_is_a_warning(tmp_path: Path) -> None:
    rows = shadow_rows(n=60, seed=5, agree=0.8)
    y = (rows["agent_outcome"] == rows["human_outcome"]).mean()
    folder = write_pilot(
        tmp_path / "near",
        with_shadow(rows),
        doc_changes={"shadow": {"min_agreement": float(round(y, 2))}},
    )
    pilot = load_pilot(folder)
    (finding,) = shadow_mode(pilot, load_pilot_data(pilot)).findings
    assert finding.severity == "warning" and finding.code == "shadow_agreement_not_shown"
    assert not math.isnan(finding.evidence["low"])

"""Cost attribution, prompt patterns and budgets (analysis/costs.py, issue 13).

Every figure is checked against an independent computation on the raw rows: pandas
group-bys, DuckDB SQL written here, statsmodels' cluster-robust covariance for the
intervals (as tests/test_clustered.py does), and a hand-worked budget log.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import statsmodels.api as sm

from pilot_lib.analysis.costs import (
    DIMENSIONS,
    SECTION_HEADING,
    cost_attribution,
)
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.analysis.kpis import compute_kpis_from_tables
from pilot_lib.config import Pilot, PilotFileError, load_pilot
from tests.conftest import PILOT_DOC, write_pilot

RATE = 60.0
PRICES = {
    "big": {"input_per_million_usd": 8.0, "output_per_million_usd": 24.0},
    "small": {"input_per_million_usd": 0.5, "output_per_million_usd": 2.0},
}


def make_pilot(
    cluster_by: str = "week",
    prices: dict[str, Any] | None = None,
    budgets: list[dict[str, Any]] | None = None,
    volume: float | None = None,
) -> Pilot:
    raw = copy.deepcopy(PILOT_DOC)
    raw["datasets"] = {"decisions": {"path": "d.parquet"}, "cases": {"path": "c.parquet"}}
    raw["pilot_window"] = {"start": "2026-03-02", "end": "2026-05-24"}
    raw["baseline_window"] = {"start": "2026-01-05", "end": "2026-03-01"}
    raw["drift"]["reference_window"] = {"start": "2026-03-02", "end": "2026-03-29"}
    raw["drift"]["current_window"] = {"start": "2026-04-27", "end": "2026-05-24"}
    raw["costs"] = {"review_hourly_rate_usd": RATE, "manual_cost_per_case_usd": 12.0}
    raw["costs"]["model_prices"] = PRICES if prices is None else prices
    if volume is not None:
        raw["costs"]["production_volume_per_month"] = volume
    raw["statistics"] = {"cluster_by": cluster_by}
    raw["budgets"] = budgets or []
    return Pilot.model_validate(raw)


def cost_log(seed: int = 3, weeks: int = 12, per_week: int = 300) -> pd.DataFrame:
    """Decisions with week effects on cost, two agents, three prompt versions, two models
    (one unpriced), some null model and business unit."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2026-03-02")
    for w in range(weeks):
        n = per_week + int(rng.integers(-40, 40))
        ts = start + pd.Timedelta(days=7 * w) + pd.to_timedelta(rng.uniform(0, 7 * 86400, n), "s")
        rows.append(
            pd.DataFrame(
                {
                    "timestamp": ts,
                    "case_id": [f"c{w}-{i // 2}" for i in range(n)],
                    "user_id": [f"u{k}" for k in rng.integers(0, 25, n)],
                    "agent_id": rng.choice(["triage", "settle"], n, p=[0.7, 0.3]),
                    "workflow": rng.choice(["fnol", "payout"], n),
                    "prompt_version": rng.choice(["v1", "v2", "v3"], n, p=[0.5, 0.3, 0.2]),
                    "model": rng.choice(
                        ["big", "small", "mystery", None], n, p=[0.5, 0.2, 0.2, 0.1]
                    ),
                    "business_unit": rng.choice(["Claims", "Payments", None], n, p=[0.5, 0.3, 0.2]),
                    "input_tokens": rng.integers(0, 6000, n),
                    "output_tokens": rng.integers(0, 900, n),
                    "model_cost_usd": rng.gamma(2.0, 0.03, n) * (1 + rng.normal(0, 0.3) ** 2),
                    "tool_cost_usd": rng.choice([0.0, 0.01, 0.02], n),
                    "review_minutes": rng.exponential(1.0, n) * (1 + 0.5 * (w % 3)),
                    "completed": True,
                    "accepted": True,
                    "overridden": False,
                    "escalated": False,
                    "escalation_reason": None,
                    "confidence": 0.9,
                }
            )
        )
    df = pd.concat(rows, ignore_index=True)
    df["timestamp"] = df["timestamp"].astype("datetime64[us]")
    df["decision_id"] = [f"d{i:06d}" for i in range(len(df))]
    # a decision with no tokens at all, and one outside the window
    df.loc[5, ["input_tokens", "output_tokens"]] = 0
    extra = df.iloc[[0]].copy()
    extra["timestamp"] = pd.Timestamp("2026-06-01 10:00").as_unit("us")
    extra["decision_id"] = "late"
    return pd.concat([df, extra], ignore_index=True)


def statsmodels_cluster_se(y: np.ndarray, groups: np.ndarray) -> float:
    fit = sm.OLS(y, np.ones_like(y, dtype=float)).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(groups)[0]}
    )
    return float(fit.bse[0])


def expected_parts(df: pd.DataFrame, single_price: str | None = None) -> pd.DataFrame:
    """Per decision: model, business unit, input/output split, review and total, by hand."""
    out = df.copy()
    out["model"] = out["model"].fillna(single_price or "unknown")
    out["business_unit"] = out["business_unit"].fillna(PILOT_DOC["business_unit"])
    p_in = out["model"].map(lambda m: PRICES.get(m, {}).get("input_per_million_usd", np.nan))
    p_out = out["model"].map(lambda m: PRICES.get(m, {}).get("output_per_million_usd", np.nan))
    w_in, w_out = out["input_tokens"] * p_in, out["output_tokens"] * p_out
    tokens = out["input_tokens"] + out["output_tokens"]
    share = np.where(
        p_in.notna() & (w_in + w_out > 0),
        w_in / (w_in + w_out),
        np.where(tokens > 0, out["input_tokens"] / tokens.where(tokens > 0, 1), 1.0),
    )
    out["input_usd"] = out["model_cost_usd"] * share
    out["output_usd"] = out["model_cost_usd"] - out["input_usd"]
    out["tool_usd"] = out["tool_cost_usd"]
    out["review_usd"] = out["review_minutes"] / 60 * RATE
    out["cost"] = out["model_cost_usd"] + out["tool_cost_usd"] + out["review_usd"]
    return out[out["timestamp"] < pd.Timestamp("2026-05-25")]


def week_of(ts: pd.Series) -> np.ndarray:
    return ts.dt.to_period("W-SUN").dt.start_time.to_numpy()


# --------------------------------------------------------------------------------------
# Cost per decision by dimension
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cluster_by", ["week", "user", "none"])
def test_breakdown_matches_pandas_and_statsmodels(cluster_by: str) -> None:
    df = cost_log()
    section = cost_attribution(make_pilot(cluster_by), ibis.memtable(df))
    exp = expected_parts(df)
    groups_all = {
        "week": week_of(exp["timestamp"]),
        "user": exp["user_id"].to_numpy(),
        "none": None,
    }[cluster_by]
    exp = exp.assign(_all="all", _cluster=groups_all if groups_all is not None else 0)
    checked = 0
    for dim in ("overall", *DIMENSIONS):
        col = "_all" if dim == "overall" else dim
        got = section.breakdown(dim).set_index("value")
        assert sorted(got.index) == sorted(exp[col].unique()), dim
        for value, rows in exp.groupby(col):
            row = got.loc[value]
            y = rows["cost"].to_numpy()
            n = len(y)
            assert row["decisions"] == n
            assert row["cost_per_decision_usd"] == pytest.approx(y.mean(), rel=1e-12)
            for part in ("input_usd", "output_usd", "tool_usd", "review_usd"):
                assert row[part] == pytest.approx(rows[part].mean(), rel=1e-9, abs=1e-15), part
            assert row["total_usd"] == pytest.approx(y.sum(), rel=1e-12)
            se_iid = y.std(ddof=1) / math.sqrt(n)
            low_iid, high_iid = st.t.interval(0.95, n - 1, loc=y.mean(), scale=se_iid)
            assert row["low_iid"] == pytest.approx(low_iid, abs=1e-12)
            assert row["high_iid"] == pytest.approx(high_iid, abs=1e-12)
            if cluster_by == "none":
                assert (row["low"], row["high"]) == (row["low_iid"], row["high_iid"])
            else:
                se = statsmodels_cluster_se(y, rows["_cluster"].to_numpy())
                g = rows["_cluster"].nunique()
                half = st.t.ppf(0.975, g - 1) * se
                assert row["clusters"] == g
                assert row["design_effect"] == pytest.approx((se / se_iid) ** 2, rel=1e-8)
                assert row["low"] == pytest.approx(min(y.mean() - half, low_iid), abs=1e-10)
                assert row["high"] == pytest.approx(max(y.mean() + half, high_iid), abs=1e-10)
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize("cluster_by", ["week", "case"])
def test_overall_is_the_kpi_and_the_parts_add_up_to_it(cluster_by: str) -> None:
    df = cost_log(seed=11)
    pilot = make_pilot(cluster_by)
    section = cost_attribution(pilot, ibis.memtable(df))
    kpi = compute_kpis_from_tables(pilot, ibis.memtable(df)).kpis.set_index("kpi")
    kpi = kpi.loc["cost_per_decision"]
    overall = section.overall
    assert overall["decisions"] == kpi["n"]
    # the breakdown's intervals are CR1 (the KPI keeps its CR1 bounds beside the few-cluster
    # bootstrap's, issue 22)
    cr1 = ("low_cr1", "high_cr1") if kpi["interval_method"] != "cr1" else ("low", "high")
    for key, kpi_key in (("cost_per_decision_usd", "estimate"), ("low", cr1[0]), ("high", cr1[1])):
        assert overall[key] == pytest.approx(kpi[kpi_key], rel=1e-12), key
    parts = sum(overall[p] for p in ("input_usd", "output_usd", "tool_usd", "review_usd"))
    assert parts == pytest.approx(overall["cost_per_decision_usd"], rel=1e-12)
    by_version = section.breakdown("prompt_version")
    assert by_version["total_usd"].sum() == pytest.approx(overall["total_usd"], rel=1e-12)
    assert by_version["share_of_cost"].sum() == pytest.approx(1.0, rel=1e-12)


def test_missing_model_and_business_unit_columns_take_the_stand_ins() -> None:
    df = cost_log().drop(columns=["model", "business_unit"])
    pilot = make_pilot(prices={"big": PRICES["big"]})  # one priced model: it stands in
    section = cost_attribution(pilot, ibis.memtable(df))
    assert section.breakdown("model")["value"].tolist() == ["big"]
    assert section.breakdown("business_unit")["value"].tolist() == [PILOT_DOC["business_unit"]]
    exp = expected_parts(df.assign(model=None, business_unit=None), single_price="big")
    assert section.overall["input_usd"] == pytest.approx(exp["input_usd"].mean(), rel=1e-9)
    assert section.notes == []  # every decision priced

    unpriced = cost_attribution(make_pilot(prices={}), ibis.memtable(df))
    assert unpriced.breakdown("model")["value"].tolist() == ["unknown"]
    tokens = df["input_tokens"] + df["output_tokens"]
    assert "in proportion to their token counts" in unpriced.notes[0]
    assert f"{len(df) - 1:,} decisions" in unpriced.notes[0]
    in_window = df["decision_id"] != "late"
    share = (df["input_tokens"] / tokens.where(tokens > 0)).fillna(1.0)
    want = (df["model_cost_usd"] * share)[in_window].mean()
    assert unpriced.overall["input_usd"] == pytest.approx(want, rel=1e-9)


def test_prompt_patterns_match_duckdb_sql() -> None:
    df = cost_log(seed=5)
    section = cost_attribution(make_pilot(), ibis.memtable(df))
    exp = expected_parts(df)  # noqa: F841 (read by the SQL below)
    sql = duckdb.sql(
        """
        SELECT prompt_version, count(*) AS decisions, avg(cost) AS cpd, sum(cost) AS total,
               sum(input_tokens) / (sum(input_tokens) + sum(output_tokens)) AS tok_share,
               sum(input_usd) / sum(model_cost_usd) AS in_cost_share,
               avg(input_tokens) AS mean_in, avg(model_cost_usd) AS model_cpd,
               sum(cost) / (SELECT sum(cost) FROM exp) AS spend_share
        FROM exp GROUP BY prompt_version ORDER BY total DESC
        """
    ).df()
    got = section.prompt_patterns
    assert got["prompt_version"].tolist() == sql["prompt_version"].tolist()
    assert got["rank"].tolist() == [1, 2, 3]
    for col, want in (
        ("decisions", "decisions"),
        ("cost_per_decision_usd", "cpd"),
        ("total_usd", "total"),
        ("input_token_share", "tok_share"),
        ("input_cost_share", "in_cost_share"),
        ("mean_input_tokens", "mean_in"),
        ("model_cost_per_decision_usd", "model_cpd"),
        ("share_of_spend", "spend_share"),
    ):
        np.testing.assert_allclose(got[col].to_numpy(float), sql[want].to_numpy(float), rtol=1e-9)
    np.testing.assert_allclose(got["input_cost_share"] + got["output_cost_share"], 1.0)
    assert (
        section.top_contributors(2)["prompt_version"].tolist() == sql["prompt_version"][:2].tolist()
    )


# --------------------------------------------------------------------------------------
# Budgets on a hand-built log
# --------------------------------------------------------------------------------------
def budget_log() -> pd.DataFrame:
    """Agent A: 50 on 10 Mar, 40 + 40 on 30 Mar, 40 on 31 Mar, 40 on 2 Apr; agent B: 10."""

    def dec(i: int, when: str, agent: str, model_usd: float) -> dict[str, Any]:
        return {
            "decision_id": f"d{i}",
            "timestamp": pd.Timestamp(when),
            "case_id": f"c{i}",
            "user_id": "u",
            "agent_id": agent,
            "workflow": "w",
            "prompt_version": "v1",
            "model": "big",
            "business_unit": None,
            "input_tokens": 1000,
            "output_tokens": 100,
            "model_cost_usd": model_usd,
            "tool_cost_usd": 1.0,
            "review_minutes": 0.0,
            "completed": True,
            "accepted": True,
            "overridden": False,
            "escalated": False,
            "escalation_reason": None,
            "confidence": 0.9,
        }

    rows = [
        dec(1, "2026-03-10 10:00", "A", 49.0),
        dec(2, "2026-03-30 09:00", "A", 39.0),
        dec(3, "2026-03-30 10:00", "A", 39.0),
        dec(4, "2026-03-31 09:00", "A", 39.0),
        dec(5, "2026-04-02 09:00", "A", 39.0),
        dec(6, "2026-03-15 09:00", "B", 9.0),
    ]
    df = pd.DataFrame(rows)
    df["timestamp"] = df["timestamp"].astype("datetime64[us]")
    return df


def test_budget_burn_breach_projection_and_fallback_by_hand() -> None:
    budget = {"agent": "A", "monthly_usd": 100, "fallback_model": "small"}
    pilot = make_pilot(budgets=[budget], volume=600)
    (b,) = cost_attribution(pilot, ibis.memtable(budget_log())).budgets
    assert b.decisions == 5 and b.spend_usd == pytest.approx(210.0)
    assert b.first_over_pace_day == dt.date(2026, 3, 10)  # 50 > 100 x 10/31
    assert b.first_breach_day == dt.date(2026, 3, 30)  # month-to-date 130 > 100
    assert b.peak_month_to_date_usd == pytest.approx(170.0)
    daily = b.daily.set_index("day")
    assert len(daily) == 84  # every pilot day, 2 Mar to 24 May
    assert daily.loc[dt.date(2026, 3, 30), "month_to_date_usd"] == pytest.approx(130.0)
    assert daily.loc[dt.date(2026, 4, 2), "month_to_date_usd"] == pytest.approx(40.0)
    assert daily.loc[dt.date(2026, 3, 30), "pace_usd"] == pytest.approx(100 * 30 / 31)
    # d3 (90 spent before it) still runs on the big model; d4 (130 before) on the small
    # one: 1000 x 0.5 + 100 x 2.0 per million tokens, plus its 1.00 tool cost
    fallback_cost = 1000 * 0.5e-6 + 100 * 2.0e-6 + 1.0
    assert b.fallback_decisions == 1
    assert b.spend_with_fallback_usd == pytest.approx(210.0 - 40.0 + fallback_cost)
    assert b.fallback_saving_usd == pytest.approx(40.0 - fallback_cost)
    assert daily.loc[dt.date(2026, 3, 31), "month_to_date_with_fallback_usd"] == pytest.approx(
        130.0 + fallback_cost
    )
    # production: 600 a month, A made 5 of the 6 decisions at 42.00 each
    assert b.scope_share == pytest.approx(5 / 6)
    assert b.projected_month_usd == pytest.approx(42.0 * 500)
    at_full_price = 100 / 42.0
    assert b.projected_month_with_fallback_usd == pytest.approx(
        100 + (500 - at_full_price) * fallback_cost
    )
    assert b.projected_pilot_pace_month_usd == pytest.approx(210.0 / 84 * 365.25 / 12)
    codes = {
        f.code: f.severity for f in cost_attribution(pilot, ibis.memtable(budget_log())).findings
    }
    assert codes == {"budget_fallback_engaged": "info", "budget_projected_fallback": "info"}


def test_breach_without_fallback_is_blocking_and_projected_over_is_a_warning() -> None:
    pilot = make_pilot(budgets=[{"agent": "A", "monthly_usd": 100}])
    section = cost_attribution(pilot, ibis.memtable(budget_log()))
    by_code = {f.code: f for f in section.findings}
    # the pilot's own pace projects 76.07 a month: under budget, so no projection warning
    assert set(by_code) == {"budget_breached"}
    breached = by_code["budget_breached"]
    assert breached.severity == "blocking"
    assert "30 Mar 2026" in breached.message and "$170.00" in breached.message
    assert breached.evidence["section"] == SECTION_HEADING
    assert breached.evidence["headline"] == "Budget exceeded, no fallback"
    (b,) = section.budgets
    # no production volume in the pilot file: the pilot's own pace, 6 decisions in 84 days
    assert b.volume_source.startswith("the pilot's own pace")
    assert b.projected_month_usd == pytest.approx(42.0 * 5 / 84 * 365.25 / 12)
    at_volume = cost_attribution(
        make_pilot(budgets=[{"agent": "A", "monthly_usd": 100}], volume=600),
        ibis.memtable(budget_log()),
    )
    projected = {f.code: f for f in at_volume.findings}["budget_projected_over"]
    assert projected.severity == "warning"
    assert "$21,000 a month against a $100 budget" in projected.message


def test_budget_met_and_unmatched_scope() -> None:
    pilot = make_pilot(
        budgets=[{"workflow": "w", "monthly_usd": 1000}, {"agent": "nobody", "monthly_usd": 5}],
        volume=10,
    )
    section = cost_attribution(pilot, ibis.memtable(budget_log()))
    assert [(f.code, f.severity) for f in section.findings] == [
        ("budget_met", "info"),
        ("budget_scope_unmatched", "warning"),
    ]
    met = section.budgets[0]
    assert met.first_breach_day is None and met.first_over_pace_day is None
    assert met.projected_month_usd == pytest.approx(220.0 / 6 * 10)
    table = section.budget_table()
    assert table["label"].tolist() == ["workflow w", "agent nobody"]


def test_the_result_is_json_and_the_chart_draws() -> None:
    import json

    pilot = make_pilot(budgets=[{"agent": "A", "monthly_usd": 100, "fallback_model": "small"}])
    section = cost_attribution(pilot, ibis.memtable(budget_log()))
    result = json.loads(json.dumps(section.to_result()))
    assert result["budgets"][0]["first_breach_day"] == "2026-03-30"
    assert len(result["budgets"][0]["daily"]) == 84
    from pilot_lib.report.charts import budget_chart

    fig = budget_chart(section)
    assert len(fig.axes) == 1 and "agent A" in fig.axes[0].get_title(loc="left")


# --------------------------------------------------------------------------------------
# The pilot file
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("budgets", "field", "words"),
    [
        ([{"agent": "a", "workflow": "w", "monthly_usd": 5}], "budgets[0]", "exactly one agent"),
        ([{"monthly_usd": 5}], "budgets[0]", "exactly one agent"),
        ([{"agent": "a", "monthly_usd": 0}], "budgets[0].monthly_usd", "greater than 0"),
        (
            [{"agent": "a", "monthly_usd": 5, "fallback_model": "tiny"}],
            "budgets[0].fallback_model",
            "add it to costs.model_prices",
        ),
        (
            [{"agent": "a", "monthly_usd": 5}, {"agent": "a", "monthly_usd": 9}],
            "budgets[1]",
            "a second budget for agent a",
        ),
        ([{"agent": "a", "monthly_usd": 5, "limit": 3}], "budgets[0].limit", "unknown key"),
    ],
)
def test_bad_budgets_name_the_field_and_the_fix(
    tmp_path: Path, budgets: list[dict[str, Any]], field: str, words: str
) -> None:
    folder = write_pilot(tmp_path / "p", doc_changes={"budgets": budgets})
    with pytest.raises(PilotFileError) as err:
        load_pilot(folder)
    (problem,) = err.value.problems
    assert problem.field == field
    assert words in problem.message
    assert str(folder / "pilot.yaml") in str(err.value)


def test_fallback_priced_in_traces_prices_is_accepted() -> None:
    raw = copy.deepcopy(PILOT_DOC)
    raw["datasets"] = {"decisions": {"path": "d.jsonl", "format": "otel"}, "cases": {"path": "c"}}
    raw["traces"] = {"prices": {"mini": PRICES["small"]}}
    raw["budgets"] = [{"agent": "a", "monthly_usd": 5, "fallback_model": "mini"}]
    pilot = Pilot.model_validate(raw)
    assert set(pilot.model_prices) == {"mini"}


# --------------------------------------------------------------------------------------
# Through the phase and the gate
# --------------------------------------------------------------------------------------
def test_a_blocking_budget_finding_reaches_the_gate_and_makes_it_no_go(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p", doc_changes={"costs": {**PILOT_DOC["costs"]}})
    pilot = load_pilot(folder)
    section = cost_attribution(
        make_pilot(budgets=[{"agent": "A", "monthly_usd": 100}]), ibis.memtable(budget_log())
    )
    findings = section.to_result()["findings"]
    passing = [
        {"kpi": "task_completion_rate", "estimate": 0.9, "low": 0.88, "high": 0.92, "n": 1000},
        {"kpi": "cost_per_decision", "estimate": 1.9, "low": 1.8, "high": 2.0, "n": 1000},
        {"kpi": "escalation_rate", "estimate": 0.1, "low": 0.08, "high": 0.12, "n": 1000},
    ]

    def results(kpi_findings: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kpi_baselining": {"kpis": passing, "findings": kpi_findings},
            "drift_analysis": {"findings": []},
            "incident_drill_review": {"findings": []},
        }

    assert evaluate_gate(pilot, results([])).decision == "GO"
    gate = evaluate_gate(pilot, results(findings))
    assert gate.decision == "NO-GO"
    assert [f.code for f in gate.blocking] == ["budget_breached"]
    (reason,) = [r for r in gate.reasons() if r.headline == "Budget exceeded, no fallback"]
    assert reason.section == SECTION_HEADING
    assert isinstance(Finding.from_dict(findings[0]), Finding)


def test_kpi_phase_carries_the_section(tiny_pilot: Path) -> None:
    from pilot_lib.ingest.contracts import load_pilot_data
    from pilot_lib.phases import kpi_phase

    pilot = load_pilot(tiny_pilot)
    review = kpi_phase(pilot, load_pilot_data(pilot))
    section = review.cost_attribution
    result = review.to_result()["cost_attribution"]
    assert result["overall"]["decisions"] == section.overall["decisions"] > 0
    kpi = review.table.kpis.set_index("kpi").loc["cost_per_decision"]
    assert section.overall["cost_per_decision_usd"] == pytest.approx(kpi["estimate"], rel=1e-12)


def test_trace_decisions_take_their_model_from_the_spans() -> None:
    from pilot_lib.ingest.contracts import load_pilot_data

    root = Path(__file__).resolve().parent.parent
    pilot = load_pilot(root / "data" / "pilots" / "invoice-reconciliation")
    decisions = load_pilot_data(pilot).table("decisions")
    counts = decisions.model.value_counts().execute()
    # every chat span of the sample names gpt-4.1 (gen_ai.request.model): none left null
    assert counts.set_index("model")["model_count"].to_dict() == {"gpt-4.1": 999}

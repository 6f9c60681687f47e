"""The seeded generator and the two committed sample pilots.

The sample pilots' stories are checked by counting on the committed files with
DuckDB SQL and pandas written here, never by reading the generator's
parameters: a change to the generator that breaks a story fails these tests.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.cli import main as cli_main
from pilot_lib.config import load_pilot
from pilot_lib.errors import WorkbookError
from pilot_lib.synth import PRESETS, generate_pilot

PILOTS = Path(__file__).resolve().parents[1] / "data" / "pilots"
CLAIMS = PILOTS / "claims-auto"
TICKETS = PILOTS / "it-ticket-routing"
FILES = (
    "pilot.yaml",
    "candidates.csv",
    "decisions.parquet",
    "cases.parquet",
    "adoption.csv",
    "drill_events.csv",
    "approvals.csv",
)


def sql(query: str) -> pd.DataFrame:
    return duckdb.sql(query).df()


def one(query: str) -> tuple:
    return duckdb.sql(query).fetchall()[0]


def wilson(successes: int, n: int) -> tuple[float, float]:
    low, high = proportion_confint(successes, n, alpha=0.05, method="wilson")
    return float(low), float(high)


def decisions_of(folder: Path) -> str:
    """The live decisions of a sample (its shadow decisions are checked in test_shadow.py)."""
    path = folder / "decisions.parquet"
    if "shadow" in pq.read_schema(path).names:
        return f"(select * from read_parquet('{path}') where not coalesce(shadow, false))"
    return f"read_parquet('{path}')"


def cases_of(folder: Path) -> str:
    return f"read_parquet('{folder / 'cases.parquet'}')"


# --------------------------------------------------------------------------------------
# Generator mechanics
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_gives_byte_identical_files(tmp_path: Path, preset: str) -> None:
    first = generate_pilot(preset, tmp_path / "a", rows=1500, seed=11)
    second = generate_pilot(preset, tmp_path / "b", rows=1500, seed=11)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    first = generate_pilot("claims-auto", tmp_path / "a", rows=1500, seed=11)
    second = generate_pilot("claims-auto", tmp_path / "b", rows=1500, seed=12)
    a = pq.read_table(first / "decisions.parquet").to_pandas()
    b = pq.read_table(second / "decisions.parquet").to_pandas()
    assert len(a) == len(b) == 1500
    assert not a["confidence"].equals(b["confidence"])
    assert not a["timestamp"].equals(b["timestamp"])
    assert (first / "cases.parquet").read_bytes() != (second / "cases.parquet").read_bytes()


def test_unknown_preset_lists_the_presets(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError) as err:
        generate_pilot("claims-manual", tmp_path)
    for name in PRESETS:
        assert name in str(err.value)
    assert not (tmp_path / "claims-manual").exists()


@pytest.mark.parametrize("rows", [0, 199, 100_000_000])
def test_rows_out_of_range_is_a_workbook_error(tmp_path: Path, rows: int) -> None:
    with pytest.raises(WorkbookError, match="--rows"):
        generate_pilot("claims-auto", tmp_path, rows=rows)


def test_negative_seed_is_a_workbook_error(tmp_path: Path) -> None:
    with pytest.raises(WorkbookError, match="--seed"):
        generate_pilot("claims-auto", tmp_path, rows=500, seed=-1)


def test_rows_scale_the_other_data_sets(tmp_path: Path) -> None:
    folder = generate_pilot("it-ticket-routing", tmp_path, rows=6000, seed=3)
    n_decisions, n_ids = one(
        f"select count(*), count(distinct decision_id) from {decisions_of(folder)}"
    )
    assert n_decisions == 6000
    assert n_ids == 5999  # one replayed row
    cohorts = dict(
        duckdb.sql(f"select cohort, count(*) from {cases_of(folder)} group by 1").fetchall()
    )
    assert cohorts["agent"] == n_ids  # one agent case per distinct decision
    assert cohorts["control"] == 600 and cohorts["baseline"] == 1200
    # every decision's case exists, and every agent case has its decision
    (orphans,) = one(
        f"select count(*) from {decisions_of(folder)} d anti join {cases_of(folder)} c "
        "using (case_id)"
    )
    assert orphans == 0
    adoption = pd.read_csv(folder / "adoption.csv")
    assert adoption["user_id"].nunique() == 36 and len(adoption) == 36 * 12
    assert adoption["decisions_seen"].sum() == 6000
    approvals = pd.read_csv(folder / "approvals.csv")
    assert len(approvals) == 120


def test_smallest_log_still_has_every_bad_row(tmp_path: Path) -> None:
    folder = generate_pilot("claims-auto", tmp_path, rows=200, seed=5)
    counts = bad_decision_rows(folder, load_pilot(folder))
    assert counts == {key: 1 for key in counts}, counts


def test_existing_files_in_the_pilot_folder_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "claims-auto").mkdir()
    (tmp_path / "claims-auto" / "notes.txt").write_text("keep me")
    generate_pilot("claims-auto", tmp_path, rows=300, seed=1)
    assert (tmp_path / "claims-auto" / "notes.txt").read_text() == "keep me"


def test_cli_synth_writes_a_loadable_pilot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli_main(["synth", "claims-auto", "--rows", "5000", "--out", str(tmp_path)])
    assert code == 0
    assert "claims-auto" in capsys.readouterr().out
    pilot = load_pilot(tmp_path / "claims-auto")
    assert pilot.name == "claims-auto"
    for name, source in pilot.datasets.items():
        assert pilot.resolve(source.path).is_file(), name
    (rows,) = one(f"select count(*) from {decisions_of(tmp_path / 'claims-auto')}")
    assert rows == 5000


def test_cli_synth_unknown_preset_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pilot_lib.cli", "synth", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "claims-auto" in result.stderr and "it-ticket-routing" in result.stderr
    assert "Traceback" not in result.stderr


def test_decision_log_columns_and_types_follow_the_contract() -> None:
    schema = pq.read_schema(CLAIMS / "decisions.parquet")
    types = {f.name: str(f.type) for f in schema}
    expected = {
        "decision_id": "string",
        "timestamp": "timestamp[us]",
        "trace_id": "string",
        "agent_id": "string",
        "workflow": "string",
        "case_id": "string",
        "prompt_version": "string",
        "user_id": "string",
        "completed": "bool",
        "accepted": "bool",
        "overridden": "bool",
        "escalated": "bool",
        "escalation_reason": "string",
        "confidence": "double",
        "correct": "bool",
        "input_tokens": "int64",
        "output_tokens": "int64",
        "model_cost_usd": "double",
        "tool_cost_usd": "double",
        "review_minutes": "double",
    }
    assert {k: types[k] for k in expected} == expected
    pilot = load_pilot(CLAIMS)
    assert set(pilot.drift.features) <= set(types)
    cases = {f.name: str(f.type) for f in pq.read_schema(CLAIMS / "cases.parquet")}
    assert cases == {
        "case_id": "string",
        "cohort": "string",
        "opened_at": "timestamp[us]",
        "closed_at": "timestamp[us]",
    }
    for folder, sets in ((CLAIMS, "claims"), (TICKETS, "tickets")):
        adoption = pd.read_csv(folder / "adoption.csv")
        assert list(adoption.columns) == [
            "user_id",
            "week",
            "eligible",
            "engaged",
            "decisions_seen",
            "overrides",
        ], sets
        approvals = pd.read_csv(folder / "approvals.csv")
        assert list(approvals.columns) == [
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
        drill = pd.read_csv(folder / "drill_events.csv")
        assert list(drill.columns) == ["drill_id", "event", "timestamp", "action_id", "detail"]


# --------------------------------------------------------------------------------------
# Both sample pilots
# --------------------------------------------------------------------------------------


def bad_decision_rows(folder: Path, pilot) -> dict[str, int]:
    """Count each deliberately bad decision row with SQL written here."""
    d = decisions_of(folder)
    w = pilot.pilot_window
    return {
        "confidence above 1": one(f"select count(*) from {d} where confidence > 1")[0],
        "negative model cost": one(f"select count(*) from {d} where model_cost_usd < 0")[0],
        "null timestamp": one(f"select count(*) from {d} where timestamp is null")[0],
        "unknown reason": one(
            f"select count(*) from {d} where escalation_reason not in "
            "('low_confidence', 'missing_data', 'out_of_scope', 'tool_failure')"
        )[0],
        "duplicate id": one(
            f"select count(*) from (select decision_id from {d} group by 1 having count(*) > 1)"
        )[0],
        "outside window": one(
            f"select count(*) from {d} where timestamp < TIMESTAMP '{w.start_ts}' "
            f"or timestamp >= TIMESTAMP '{w.end_ts}'"
        )[0],
    }


@pytest.mark.parametrize("folder", [CLAIMS, TICKETS], ids=["claims-auto", "it-ticket-routing"])
def test_sample_pilot_loads_and_holds_every_bad_row(folder: Path) -> None:
    pilot = load_pilot(folder)
    assert pilot.name == folder.name
    counts = bad_decision_rows(folder, pilot)
    assert counts == {key: 1 for key in counts}, counts
    # the duplicate is a replay: both rows identical
    (distinct_rows,) = one(
        f"select count(*) from (select distinct * from {decisions_of(folder)} where decision_id in "
        f"(select decision_id from {decisions_of(folder)} group by 1 having count(*) > 1))"
    )
    assert distinct_rows == 1
    (backwards,) = one(f"select count(*) from {cases_of(folder)} where closed_at < opened_at")
    assert backwards == 1
    approvals = pd.read_csv(folder / "approvals.csv", dtype=str)
    unparseable = pd.to_datetime(
        approvals["proposed_at"], errors="coerce", format="%Y-%m-%d %H:%M:%S"
    )
    assert approvals.loc[unparseable.isna(), "proposed_at"].tolist() == ["not-a-date"]
    assert (approvals["amount"].astype(float) < 0).sum() == 1
    (rows,) = one(f"select count(*) from {decisions_of(folder)}")
    assert sum(counts.values()) / rows < 0.001


@pytest.mark.parametrize("folder", [CLAIMS, TICKETS], ids=["claims-auto", "it-ticket-routing"])
def test_sample_pilot_is_small(folder: Path) -> None:
    total = sum(p.stat().st_size for p in PILOTS.rglob("*") if p.is_file())
    assert total < 20 * 2**20


@pytest.mark.parametrize("folder", [CLAIMS, TICKETS], ids=["claims-auto", "it-ticket-routing"])
def test_cases_cohorts_sit_in_their_windows(folder: Path) -> None:
    pilot = load_pilot(folder)
    c = cases_of(folder)
    p, b = pilot.pilot_window, pilot.baseline_window
    (outside,) = one(
        f"select count(*) from {c} where (cohort = 'baseline' and (opened_at < TIMESTAMP "
        f"'{b.start_ts}' or opened_at >= TIMESTAMP '{b.end_ts}')) or (cohort <> 'baseline' and "
        f"(opened_at < TIMESTAMP '{p.start_ts}' or opened_at >= TIMESTAMP '{p.end_ts}'))"
    )
    assert outside == 0
    still_open = dict(
        duckdb.sql(
            f"select cohort, count(*) filter (where closed_at is null) from {c} group by 1"
        ).fetchall()
    )
    assert still_open["baseline"] == 0
    assert 1 <= still_open["agent"] + still_open["control"] <= 40  # a handful, near the end
    (earliest_open,) = one(f"select min(opened_at) from {c} where closed_at is null")
    assert earliest_open >= p.end_ts - dt.timedelta(days=14)
    # every agent decision's case is in the agent cohort
    (mismatch,) = one(
        f"select count(*) from {decisions_of(folder)} d join {c} using (case_id) "
        "where cohort <> 'agent'"
    )
    assert mismatch == 0


@pytest.mark.parametrize("folder", [CLAIMS, TICKETS], ids=["claims-auto", "it-ticket-routing"])
def test_adoption_counts_agree_with_the_decision_log(folder: Path) -> None:
    adoption = pd.read_csv(folder / "adoption.csv")
    seen, overridden, users = one(
        f"select count(*), sum(overridden::int), count(distinct user_id) "
        f"from {decisions_of(folder)}"
    )
    assert adoption["decisions_seen"].sum() == seen
    assert adoption["overrides"].sum() == overridden
    assert adoption["user_id"].nunique() == users
    assert (adoption["overrides"] <= adoption["decisions_seen"]).all()
    assert not adoption.duplicated(["user_id", "week"]).any()
    weeks = pd.to_datetime(adoption["week"])
    assert (weeks.dt.day_of_week == 0).all()
    # not eligible: nothing seen, not engaged
    ineligible = adoption[~adoption["eligible"]]
    assert (ineligible["decisions_seen"] == 0).all() and not ineligible["engaged"].any()
    assert adoption["eligible"].mean() > 0.9


@pytest.mark.parametrize("folder", [CLAIMS, TICKETS], ids=["claims-auto", "it-ticket-routing"])
def test_decision_log_internal_rules(folder: Path) -> None:
    pilot = load_pilot(folder)
    d = decisions_of(folder)
    checks = one(
        f"""select
            count(*) filter (where accepted and not completed),
            count(*) filter (where accepted and overridden),
            count(*) filter (where escalated and escalation_reason is null),
            count(*) filter (where not escalated and escalation_reason is not null),
            count(*) filter (where escalation_reason = 'low_confidence'
                             and confidence >= {pilot.confidence_threshold}),
            count(*) filter (where not escalated and confidence < {pilot.confidence_threshold}),
            avg((correct is not null)::int)
        from {d} where confidence <= 1"""
    )
    assert checks[:6] == (0, 0, 0, 0, 0, 0)
    assert 0.55 < checks[6] < 0.65  # outcome known for about 60% of decisions
    # prompt versions change on week boundaries
    versions = sql(
        f"select prompt_version v, min(timestamp) first, max(timestamp) last from {d} "
        f"where timestamp < TIMESTAMP '{pilot.pilot_window.end_ts}' group by 1 order by 2"
    )
    assert versions["v"].is_monotonic_increasing
    starts = pd.to_datetime(versions["first"])
    assert list(starts.dt.day_of_week) == [0] * len(versions)
    # trace ids unique per decision, and approvals point at them
    (traces, ids) = one(f"select count(distinct trace_id), count(distinct decision_id) from {d}")
    assert traces == ids
    approvals = pd.read_csv(folder / "approvals.csv")
    known = set(
        duckdb.sql(f"select trace_id from {d}").df()["trace_id"]
    )  # small log: fine in a test
    assert approvals["trace_id"].isin(known).all()


# --------------------------------------------------------------------------------------
# Story helpers written for the tests
# --------------------------------------------------------------------------------------


def first_month_adoption(folder: Path, pilot) -> tuple[int, int, float]:
    """(engaged users, eligible users, user-week share) over the first four weeks."""
    adoption = pd.read_csv(folder / "adoption.csv", parse_dates=["week"])
    first = adoption[
        adoption["week"] < pd.Timestamp(pilot.pilot_window.start) + pd.Timedelta(days=28)
    ]
    eligible = first[first["eligible"]]
    by_user = eligible.groupby("user_id")["engaged"].any()
    return int(by_user.sum()), int(len(by_user)), float(eligible["engaged"].mean())


def cycle_hours(folder: Path, cohort: str) -> np.ndarray:
    frame = sql(
        f"select epoch(closed_at - opened_at) / 3600 h from {cases_of(folder)} "
        f"where cohort = '{cohort}' and closed_at >= opened_at"
    )
    return frame["h"].to_numpy()


def efficiency_gain_interval(folder: Path, resamples: int = 300) -> tuple[float, float, float]:
    agent, control = cycle_hours(folder, "agent"), cycle_hours(folder, "control")
    rng = np.random.default_rng(0)
    ratios = np.array(
        [
            np.median(rng.choice(agent, len(agent))) / np.median(rng.choice(control, len(control)))
            for _ in range(resamples)
        ]
    )
    gain = 1 - np.median(agent) / np.median(control)
    low, high = 1 - np.quantile(ratios, [0.975, 0.025])
    return float(gain), float(low), float(high)


def cost_per_decision(folder: Path, hourly_rate: float) -> tuple[float, float, float]:
    frame = sql(
        f"select model_cost_usd + tool_cost_usd + review_minutes * {hourly_rate} / 60 c "
        f"from {decisions_of(folder)}"
    )
    values = frame["c"].to_numpy()
    mean = values.mean()
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(mean), float(mean - half), float(mean + half)


def escalation_reasons(folder: Path) -> pd.Series:
    frame = sql(
        f"select escalation_reason r, count(*) n from {decisions_of(folder)} "
        "where escalated group by 1"
    )
    shares = frame.set_index("r")["n"] / frame["n"].sum()
    return shares.sort_values(ascending=False)


def daily_escalation_chart(folder: Path, pilot) -> pd.DataFrame:
    """7-day moving average of the daily escalation rate, limits from the reference window."""
    w = pilot.pilot_window
    daily = sql(
        f"select timestamp::date dd, avg(escalated::int) rate from {decisions_of(folder)} "
        f"where timestamp >= TIMESTAMP '{w.start_ts}' and timestamp < TIMESTAMP '{w.end_ts}' "
        "group by 1 order by 1"
    )
    daily["day"] = (pd.to_datetime(daily["dd"]) - pd.Timestamp(w.start)).dt.days
    daily["ma"] = daily["rate"].rolling(7).mean()
    ref = pilot.drift.reference_window
    in_ref = daily["day"] < (ref.end - w.start).days + 1
    base = daily.loc[in_ref, "ma"].dropna()
    daily["ucl"] = base.mean() + 2 * base.std(ddof=1)
    daily["lcl"] = base.mean() - 2 * base.std(ddof=1)
    daily["breach"] = daily["ma"] > daily["ucl"]
    return daily


def window_frame(folder: Path, window, columns: str) -> pd.DataFrame:
    return sql(
        f"select {columns} from {decisions_of(folder)} where timestamp >= "
        f"TIMESTAMP '{window.start_ts}' and timestamp < TIMESTAMP '{window.end_ts}'"
    )


def psi(reference: pd.Series, current: pd.Series, bins: int = 10, eps: float = 1e-4) -> float:
    """PSI written for the test: reference-quantile bins (numeric) or categories."""
    if pd.api.types.is_numeric_dtype(reference):
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
        ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
        cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    else:
        cats = sorted(reference.unique())
        ref = np.append(reference.value_counts().reindex(cats).to_numpy(), 0)
        mapped = current.where(current.isin(cats), "__unseen__")
        cur = mapped.value_counts().reindex([*cats, "__unseen__"]).fillna(0).to_numpy()
    r = np.maximum(ref / ref.sum(), eps)
    c = np.maximum(cur / cur.sum(), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def calibration_gap(frame: pd.DataFrame) -> float:
    """Mean confidence minus accuracy over rows with a known outcome."""
    known = frame.dropna(subset=["correct"])
    return float(known["confidence"].mean() - known["correct"].astype(float).mean())


def ece(frame: pd.DataFrame, bins: int = 15) -> float:
    known = frame.dropna(subset=["correct"])
    which = np.minimum((known["confidence"] * bins).astype(int), bins - 1)
    grouped = known.assign(b=which, y=known["correct"].astype(float)).groupby("b")
    sizes = grouped.size()
    gaps = (grouped["confidence"].mean() - grouped["y"].mean()).abs()
    return float((sizes * gaps).sum() / sizes.sum())


def drill_times(folder: Path) -> dict[str, float | list]:
    events = pd.read_csv(folder / "drill_events.csv", parse_dates=["timestamp"])
    at = {
        e: events.loc[events["event"] == e, "timestamp"].iloc[0]
        for e in ("anomaly_injected", "detected", "paged", "paused")
    }
    started = events[events["event"] == "action_started"]
    ends = events[events["event"].isin(["action_completed", "action_rolled_back"])]
    return {
        "detect": (at["detected"] - at["anomaly_injected"]).total_seconds(),
        "page": (at["paged"] - at["detected"]).total_seconds(),
        "pause": (at["paused"] - at["detected"]).total_seconds(),
        "started_before_pause": sorted(
            started.loc[started["timestamp"] < at["paused"], "action_id"]
        ),
        "started_after_pause": sorted(
            started.loc[started["timestamp"] > at["paused"], "action_id"]
        ),
        "endings": ends.groupby("event")["action_id"].apply(sorted).to_dict(),
        "resumed_after_pause": bool(
            (events.loc[events["event"] == "resumed", "timestamp"] > at["paused"]).all()
            and (events["event"] == "resumed").any()
        ),
    }


def approvals_frame(folder: Path, pilot) -> pd.DataFrame:
    frame = pd.read_csv(folder / "approvals.csv")
    for col in ("proposed_at", "decided_at", "executed_at"):
        frame[col] = pd.to_datetime(frame[col], errors="coerce", format="%Y-%m-%d %H:%M:%S")
    frame = frame[frame["proposed_at"].notna() & (frame["amount"] >= 0)].copy()
    rank = {lvl.name: i for i, lvl in enumerate(pilot.approvals.levels)}
    frame["required_rank"] = frame["required_level"].map(rank)
    frame["approver_rank"] = frame["approver_level"].map(rank)
    frame["latency_min"] = (frame["decided_at"] - frame["proposed_at"]).dt.total_seconds() / 60
    return frame


# --------------------------------------------------------------------------------------
# claims-auto: meets every threshold with margin
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def claims():
    return load_pilot(CLAIMS)


def test_claims_completion_and_escalation(claims) -> None:
    n, completed, accepted, overridden, escalated = one(
        f"select count(*), sum(completed::int), sum(accepted::int), sum(overridden::int), "
        f"sum(escalated::int) from {decisions_of(CLAIMS)}"
    )
    assert 25_000 <= n <= 35_000
    assert 0.93 < completed / n < 0.98
    low, _ = wilson(accepted, n)
    assert 0.83 < accepted / n < 0.89 and low > 0.80 + 0.02  # clears 0.80 with margin
    assert 0.04 < overridden / n < 0.08
    _, high = wilson(escalated, n)
    assert 0.07 < escalated / n < 0.12 and high < 0.20
    shares = escalation_reasons(CLAIMS)
    assert shares.index[0] == "low_confidence"
    assert 0.42 < shares["low_confidence"] < 0.58
    assert 0.18 < shares["missing_data"] < 0.32
    assert 0.09 < shares["out_of_scope"] < 0.20
    assert 0.06 < shares["tool_failure"] < 0.15


def test_claims_efficiency_gain_clears_30_percent(claims) -> None:
    gain, low, _ = efficiency_gain_interval(CLAIMS)
    assert 0.35 < gain < 0.45
    assert low >= 0.30
    assert 45 < np.median(cycle_hours(CLAIMS, "control")) < 56
    assert 47 < np.median(cycle_hours(CLAIMS, "baseline")) < 58
    assert 26 < np.median(cycle_hours(CLAIMS, "agent")) < 34
    counts = dict(
        duckdb.sql(f"select cohort, count(*) from {cases_of(CLAIMS)} group by 1").fetchall()
    )
    assert 4000 <= counts["baseline"] <= 6000 and 2500 <= counts["control"] <= 3500


def test_claims_cost_per_decision_is_under_2_50(claims) -> None:
    rate = claims.costs.review_hourly_rate_usd
    assert rate == 62.0
    mean, _, high = cost_per_decision(CLAIMS, rate)
    assert 1.8 <= mean <= 2.15 and high < 2.50
    parts = sql(
        f"select escalated, avg(review_minutes) r, quantile_cont(model_cost_usd, 0.05) m05, "
        f"quantile_cont(model_cost_usd, 0.95) m95, min(tool_cost_usd) t0, max(tool_cost_usd) t1 "
        f"from {decisions_of(CLAIMS)} where model_cost_usd >= 0 group by 1"
    ).set_index("escalated")
    assert 0.5 <= parts.loc[False, "r"] <= 1.0
    assert 10 <= parts.loc[True, "r"] <= 15
    assert parts["m05"].min() >= 0.025 and parts["m95"].max() <= 0.15
    assert parts["t0"].min() >= 0.009 and parts["t1"].max() <= 0.042
    assert mean < claims.costs.manual_cost_per_case_usd


def test_claims_first_month_adoption_clears_60_percent(claims) -> None:
    engaged, eligible, user_week_share = first_month_adoption(CLAIMS, claims)
    assert 55 <= eligible <= 65
    low, _ = wilson(engaged, eligible)
    assert engaged / eligible >= 0.75 and low >= 0.60
    assert user_week_share >= 0.68
    adoption = pd.read_csv(CLAIMS / "adoption.csv")
    assert 0.04 < adoption["overrides"].sum() / adoption["decisions_seen"].sum() < 0.08


def test_claims_drift_episode(claims) -> None:
    drift = claims.drift
    cols = "claim_amount, vehicle_age_years, channel, damage_type, photos_attached"
    ref = window_frame(CLAIMS, drift.reference_window, cols)
    cur = window_frame(CLAIMS, drift.current_window, cols)
    for key in drift.key_features:
        assert psi(ref[key], cur[key]) < 0.1, key
    assert "mobile_app" not in set(ref["channel"])
    assert (cur["channel"] == "mobile_app").mean() > 0.2
    assert psi(ref["channel"], cur["channel"]) > 0.25
    assert psi(ref["photos_attached"], cur["photos_attached"]) > 0.1
    assert "channel" not in drift.key_features


def test_claims_control_chart_breaches_in_weeks_6_to_8_and_recovers(claims) -> None:
    chart = daily_escalation_chart(CLAIMS, claims)
    breach_days = chart.loc[chart["breach"], "day"]
    assert len(breach_days) >= 10
    assert 35 <= breach_days.min() <= 45  # first breach inside the episode, within the lag
    assert breach_days.max() < 70  # back in control well before the end
    assert not chart["breach"].iloc[-14:].any()
    last_week = chart.iloc[-7:]
    assert (last_week["ma"] >= last_week["lcl"]).all()  # in control on both sides at the end
    episode = chart[(chart["day"] >= 35) & (chart["day"] < 56)]["rate"].mean()
    after = chart[chart["day"] >= 63]["rate"].mean()
    assert 0.13 < episode < 0.19
    assert after < 0.09


def test_claims_prompt_versions_and_overconfidence(claims) -> None:
    weeks = sql(
        f"select (date_diff('day', DATE '{claims.pilot_window.start}', timestamp::date) // 7) + 1 "
        f"wk, min(prompt_version) lo, max(prompt_version) hi from {decisions_of(CLAIMS)} "
        f"where timestamp < TIMESTAMP '{claims.pilot_window.end_ts}' group by 1 order by 1"
    )
    assert (weeks["lo"] == weeks["hi"]).all()
    expected = ["v1.0"] * 3 + ["v1.1"] * 2 + ["v1.2"] * 3 + ["v1.3"] * 4
    assert weeks["lo"].tolist() == expected
    cols = "confidence, correct, prompt_version, channel"
    ref = window_frame(CLAIMS, claims.drift.reference_window, cols)
    cur = window_frame(CLAIMS, claims.drift.current_window, cols)
    assert ece(ref) < 0.03 and ece(cur) < 0.03  # calibrated outside the episode
    episode = sql(
        f"select confidence, correct from {decisions_of(CLAIMS)} "
        "where prompt_version = 'v1.2' and channel = 'mobile_app' and confidence <= 1"
    )
    assert calibration_gap(episode) > 0.15  # confident and wrong
    rates = sql(
        f"select prompt_version v, avg(escalated::int) e from {decisions_of(CLAIMS)} group by 1"
    ).set_index("v")["e"]
    assert rates["v1.2"] > 1.5 * rates["v1.1"] and rates["v1.3"] < rates["v1.1"] + 0.01


def test_claims_drill_passes_its_targets(claims) -> None:
    times = drill_times(CLAIMS)
    targets = claims.drills
    assert 85 <= times["detect"] <= 105 and times["detect"] <= targets.max_seconds_to_detect
    assert 30 <= times["page"] <= 50 and times["page"] <= targets.max_seconds_to_page
    assert 60 <= times["pause"] <= 80 and times["pause"] <= targets.max_seconds_to_pause
    assert len(times["started_before_pause"]) == 3
    assert times["started_after_pause"] == []
    assert len(times["endings"]["action_completed"]) == 2
    assert len(times["endings"]["action_rolled_back"]) == 1
    ended = times["endings"]["action_completed"] + times["endings"]["action_rolled_back"]
    assert sorted(ended) == times["started_before_pause"]
    assert times["resumed_after_pause"]


def test_claims_approvals_have_timeouts_and_no_violation(claims) -> None:
    frame = approvals_frame(CLAIMS, claims)
    assert 500 <= len(frame) <= 700
    policy = claims.approvals
    # from 2026-04-13 09:00 the autonomous limit is $2,000 (policy_versions.csv)
    lowered = policy.model_copy(
        update={
            "levels": [
                policy.levels[0].model_copy(update={"max_amount": 2000.0}),
                *policy.levels[1:],
            ]
        }
    )
    after = frame["proposed_at"] >= pd.Timestamp("2026-04-13 09:00")
    expected = (
        frame["amount"]
        .map(policy.required_level)
        .where(~after, frame["amount"].map(lowered.required_level))
    )
    assert (frame["required_level"] == expected).all()
    assert (frame["required_level"] != frame["amount"].map(policy.required_level)).sum() == 28
    assert set(frame["required_level"]) == {"autonomous", "adjuster", "supervisor"}
    auto = frame["decision"] == "auto"
    assert (frame.loc[auto, "required_level"] == "autonomous").all()
    timed_out = frame[frame["decision"] == "timed_out"]
    assert 1 <= len(timed_out) <= 12
    assert timed_out["decided_at"].isna().all() and timed_out["executed_at"].isna().all()
    decided = frame[frame["decision"].isin(["approved", "rejected", "escalated"])]
    assert 35 <= decided["latency_min"].median() <= 55
    assert (decided["latency_min"] <= policy.sla_minutes).all()
    executed = frame[frame["executed_at"].notna()]
    assert set(executed["decision"]) == {"approved", "auto"}
    assert (executed["approver_rank"] >= executed["required_rank"]).all()
    assert (executed["executed_at"] >= executed["proposed_at"]).all()


def test_claims_candidates(claims) -> None:
    candidates = pd.read_csv(CLAIMS / "candidates.csv")
    assert 5 <= len(candidates) <= 8 and candidates["name"].is_unique
    scores = candidates[["impact_score", "data_score", "readiness_score"]]
    needed = np.ceil(stats.norm.ppf(0.975) ** 2 * 0.25 / claims.use_case.completion_margin**2)
    expected = candidates["weekly_volume"] * claims.pilot_window.weeks
    qualifies = (scores.min(axis=1) >= claims.use_case.minimum_score) & (expected >= needed)
    top = candidates.loc[qualifies].assign(total=scores.sum(axis=1)).sort_values("total").iloc[-1]
    assert top["name"] == "Standard auto claims triage (< $10k)"
    assert ((candidates["demo_appeal"] >= 4) & (candidates["impact_score"] <= 2)).any()  # novelty
    assert (expected < needed).sum() >= 1  # too rare to measure
    rare = candidates.loc[candidates["weekly_volume"].idxmin()]
    assert rare["weekly_volume"] <= 3
    no_sme = candidates[~candidates["sme_committed"]]
    assert (no_sme["readiness_score"] <= 2).any()
    borderline = qualifies & (expected < 1.2 * needed)
    assert borderline.sum() == 1


# --------------------------------------------------------------------------------------
# it-ticket-routing: 97% in the lab, 52% in production
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tickets():
    return load_pilot(TICKETS)


def test_tickets_completion_gap_and_escalation(tickets) -> None:
    assert "97%" in tickets.scope
    n, completed, accepted, overridden, escalated = one(
        f"select count(*), sum(completed::int), sum(accepted::int), sum(overridden::int), "
        f"sum(escalated::int) from {decisions_of(TICKETS)}"
    )
    assert 15_000 <= n <= 25_000
    assert 0.88 < completed / n < 0.94
    assert 0.47 <= accepted / n <= 0.57
    _, high = wilson(accepted, n)
    assert high < 0.80  # fails its completion threshold for sure
    assert (completed - accepted) / n > 0.3  # the technical-vs-business gap
    assert 0.33 < overridden / n < 0.43
    low, _ = wilson(escalated, n)
    assert 0.20 < escalated / n < 0.25 and low > 0.20
    shares = escalation_reasons(TICKETS)
    assert shares.index[0] == "tool_failure"
    assert shares["tool_failure"] > 0.40
    assert shares.index[1] == "missing_data"


def test_tickets_first_month_adoption_fails(tickets) -> None:
    engaged, eligible, user_week_share = first_month_adoption(TICKETS, tickets)
    assert 110 <= eligible <= 130
    _, high = wilson(engaged, eligible)
    assert 0.25 < engaged / eligible < 0.45 and high < 0.60
    assert user_week_share < 0.60
    adoption = pd.read_csv(TICKETS / "adoption.csv")
    assert adoption["overrides"].sum() / adoption["decisions_seen"].sum() > 0.3


def test_tickets_efficiency_gain_is_small(tickets) -> None:
    gain, _, high = efficiency_gain_interval(TICKETS)
    assert 0.03 < gain < 0.18
    assert high < 0.25


def test_tickets_cost_per_decision_passes(tickets) -> None:
    rate = tickets.costs.review_hourly_rate_usd
    assert rate == 45.0
    mean, _, high = cost_per_decision(TICKETS, rate)
    assert 0.7 < mean < 1.1 and high < 1.50


def test_tickets_drift_from_week_8(tickets) -> None:
    drift = tickets.drift
    assert set(drift.key_features) == {"abbreviation_ratio", "category"}
    cols = "ticket_length_chars, abbreviation_ratio, priority, category, source_system"
    ref = window_frame(TICKETS, drift.reference_window, cols)
    cur = window_frame(TICKETS, drift.current_window, cols)
    for key in drift.key_features:
        assert psi(ref[key], cur[key]) > 0.25, key
    for stable in ("ticket_length_chars", "priority", "source_system"):
        assert psi(ref[stable], cur[stable]) < 0.1, stable
    assert "saas_access" not in set(ref["category"])
    assert (cur["category"] == "saas_access").mean() > 0.1
    (first_saas,) = one(
        f"select min(timestamp) from {decisions_of(TICKETS)} where category = 'saas_access'"
    )
    assert first_saas >= tickets.pilot_window.start_ts + dt.timedelta(days=49)


def test_tickets_control_chart_in_breach_at_the_end(tickets) -> None:
    chart = daily_escalation_chart(TICKETS, tickets)
    assert chart["breach"].iloc[-7:].all()
    assert chart.loc[chart["breach"], "day"].min() >= 49  # nothing before the drift
    weekly = chart.groupby(chart["day"] // 7)["rate"].mean()
    assert weekly.iloc[-1] > weekly.iloc[:7].mean() + 0.07  # escalations keep rising
    assert weekly.iloc[-2:].mean() > weekly.iloc[-4:-2].mean()
    cols = "confidence, correct"
    ref = window_frame(TICKETS, tickets.drift.reference_window, cols)
    cur = window_frame(TICKETS, tickets.drift.current_window, cols)
    assert ece(ref) < 0.03
    assert calibration_gap(cur) > 0.1 and ece(cur) > 0.1  # overconfident at the end


def test_tickets_escalations_rise_version_after_version(tickets) -> None:
    rates = sql(
        f"select prompt_version v, avg(escalated::int) e from {decisions_of(TICKETS)} "
        "group by 1 order by 1"
    )["e"].to_numpy()
    assert len(rates) == 4
    assert rates[2] > rates[1] + 0.02 and rates[3] > rates[2] + 0.02


def test_tickets_drill_fails(tickets) -> None:
    times = drill_times(TICKETS)
    targets = tickets.drills
    assert times["detect"] <= targets.max_seconds_to_detect
    assert times["page"] <= targets.max_seconds_to_page
    assert 520 <= times["pause"] <= 560 and times["pause"] > targets.max_seconds_to_pause
    assert len(times["started_after_pause"]) == 1


def test_tickets_approvals_hold_two_violations(tickets) -> None:
    frame = approvals_frame(TICKETS, tickets)
    policy = tickets.approvals
    assert 300 <= len(frame) <= 500
    late_approved = frame[
        (frame["decision"] == "approved") & (frame["latency_min"] > policy.sla_minutes)
    ]
    assert len(late_approved) == 1 and late_approved["executed_at"].notna().all()
    executed = frame[frame["executed_at"].notna()]
    too_low = executed[executed["approver_rank"] < executed["required_rank"]]
    assert len(too_low) == 1
    assert too_low["amount"].map(policy.required_level).iloc[0] == policy.levels[-1].name
    timed_out = frame[frame["decision"] == "timed_out"]
    assert timed_out["executed_at"].isna().all()
    assert set(frame["required_level"]) == {lvl.name for lvl in policy.levels}


def test_tickets_candidates_rank_ticket_routing_first(tickets) -> None:
    candidates = pd.read_csv(TICKETS / "candidates.csv")
    scores = candidates[["impact_score", "data_score", "readiness_score"]]
    needed = np.ceil(stats.norm.ppf(0.975) ** 2 * 0.25 / tickets.use_case.completion_margin**2)
    expected = candidates["weekly_volume"] * tickets.pilot_window.weeks
    qualifies = (scores.min(axis=1) >= tickets.use_case.minimum_score) & (expected >= needed)
    top = candidates.loc[qualifies].assign(total=scores.sum(axis=1)).sort_values("total").iloc[-1]
    assert top["name"] == "IT ticket classification and routing"
    assert ((candidates["demo_appeal"] >= 4) & (candidates["impact_score"] <= 2)).any()

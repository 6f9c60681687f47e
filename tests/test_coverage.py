"""Data sufficiency (pilot_lib.analysis.coverage): counts against independent pandas counts,
limits from the pilot file, and the two scenarios of issue 10 end to end through the store,
the phase functions and the gate.

Scenario (a): the newer prompt versions of claims-auto log ``confidence`` on a 0-100
scale, so about 58% of the decisions are quarantined; the KPIs on the rest still pass,
and the gate must say NO-GO because the evidence is incomplete. Scenario (b): the
approvals' amounts come from a spreadsheet with thousands separators ("1,234.50"),
so about 88% of the approvals are quarantined.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PILOT_START, gate_of, tiny_frames, write_pilot

from pilot_lib.analysis.coverage import PREFIX, data_coverage, format_share
from pilot_lib.config import DataSufficiency, PilotFileError, load_pilot
from pilot_lib.ingest.contracts import load_pilot_data
from pilot_lib.ingest.store import build_store, open_store

REPO = Path(__file__).resolve().parents[1]
CLAIMS = REPO / "data" / "pilots" / "claims-auto"


# ---- small helpers ---------------------------------------------------------------------------


def test_format_share_never_rounds_a_partial_share_to_0_or_100() -> None:
    assert format_share(29_994, 30_000) == "99.98%"
    assert format_share(37_998, 37_999) == "99.997%"
    assert format_share(1, 30_000) == "0.003%"
    assert format_share(30_000, 30_000) == "100.0%"
    assert format_share(0, 10) == "0.0%"
    assert format_share(1, 3) == "33.3%"
    assert format_share(0, 0) == "n/a"


def test_settings_defaults_and_per_dataset_limit() -> None:
    ds = DataSufficiency()
    assert ds.max_quarantined_share == 0.05
    assert ds.limit_for("approvals") == 0.05
    ds = DataSufficiency(dataset_limits={"drill_events": 0.2})
    assert ds.limit_for("drill_events") == 0.2
    assert ds.limit_for("decisions") == 0.05


def test_a_small_dataset_is_held_to_the_group_limit_unless_named() -> None:
    ds = DataSufficiency()
    # 11 drill events: one bad row (9%) is shown, not blocking; 3 of 11 (27%) blocks
    assert ds.limit_for("drill_events", 11) == 0.20
    assert 1 / 11 <= ds.limit_for("drill_events", 11) < 3 / 11
    assert ds.limit_for("drill_events", 30) == 0.05
    assert DataSufficiency(dataset_limits={"drill_events": 0.0}).limit_for("drill_events", 11) == 0


def test_unknown_dataset_in_limits_is_a_pilot_file_error(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p", tiny_frames())
    doc = yaml.safe_load((folder / "pilot.yaml").read_text())
    doc["data_sufficiency"] = {"dataset_limits": {"decision": 0.1}}
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(PilotFileError, match="decision"):
        load_pilot(folder)


# ---- counts against an independent pandas computation ----------------------------------------


def _monday(ts: pd.Timestamp) -> dt.date:
    d = ts.date()
    return d - dt.timedelta(days=d.weekday())


def test_counts_per_week_and_version_match_pandas(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=200, seed=3)
    dec = frames["decisions"].copy()
    rng = np.random.default_rng(11)
    bad = rng.random(len(dec)) < 0.15
    dec["confidence"] = dec["confidence"].astype(float)
    dec.loc[bad, "confidence"] = 70.0  # 0-100 scale: quarantined
    dec["timestamp"] = dec["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")  # text, as in a CSV
    dec.loc[3, "timestamp"] = "not a time"  # quarantined, week unknown
    dec.loc[4, "timestamp"] = "2026-05-01 10:00:00"  # quarantined, outside the window
    frames["decisions"] = dec
    folder = write_pilot(tmp_path / "p", frames)
    data = load_pilot_data(folder)
    cov = data_coverage(data.pilot, data)

    # independent count: a row is quarantined when its confidence is off or timestamp bad
    ts = pd.to_datetime(dec["timestamp"], errors="coerce")
    in_window = (ts >= pd.Timestamp(PILOT_START)) & (ts < pd.Timestamp("2026-03-30"))
    quarantined = bad | ts.isna() | ~in_window
    assert cov.dataset("decisions").quarantined == int(quarantined.sum())
    assert cov.without_week == {
        "week unknown": 1,
        "outside the pilot window": 1,
    }
    weeks = pd.DataFrame({"week": ts[in_window].map(_monday), "q": quarantined[in_window]})
    expected = weeks.groupby("week")["q"].agg(["sum", "count"])
    got = cov.weeks.set_index(cov.weeks["week"].map(lambda w: pd.Timestamp(w).date()))
    assert len(got) == 4  # 2 to 29 March 2026: four Monday weeks
    for week, row in expected.iterrows():
        assert got.loc[week, "quarantined"] == row["sum"]
        assert got.loc[week, "valid"] == row["count"] - row["sum"]
    by_version = pd.DataFrame({"v": dec["prompt_version"], "q": quarantined})
    expected_v = by_version.groupby("v")["q"].agg(["sum", "count"])
    got_v = cov.versions.set_index("prompt_version")
    for version, row in expected_v.iterrows():
        assert got_v.loc[version, "quarantined"] == row["sum"]
        assert got_v.loc[version, "valid"] == row["count"] - row["sum"]
        share = row["sum"] / row["count"]
        assert got_v.loc[version, "quarantined_share"] == pytest.approx(share, abs=1e-12)
    # correctness known: independent count over the valid rows
    known = dec.loc[~quarantined, "correct"].notna().sum()
    assert cov.outcome["correct_known"] == known
    assert cov.outcome["outcome_known"] == len(dec)
    # about 15% quarantined: above the 5% default, a blocking finding naming decisions
    codes = [f.code for f in cov.blocking]
    assert "incomplete_dataset" in codes
    msg = next(f.message for f in cov.blocking if f.code == "incomplete_dataset")
    assert msg.startswith(PREFIX) and "decisions" in msg and "confidence outside [0, 1]" in msg


def test_thin_week_is_blocking_and_a_week_share_is_judged_on_its_own(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=200, seed=5)
    dec = frames["decisions"]
    week = dec["timestamp"].map(_monday)
    third = PILOT_START + dt.timedelta(weeks=2)
    # keep 2 decisions of the third week: a thin week (far below a quarter of the median)
    drop = dec.index[week == third][2:]
    frames["decisions"] = dec.drop(index=drop).reset_index(drop=True)
    data = load_pilot_data(write_pilot(tmp_path / "p", frames))
    cov = data_coverage(data.pilot, data)
    thin = cov.weeks.loc[cov.weeks["thin"]]
    assert [pd.Timestamp(w).date() for w in thin["week"]] == [third]
    finding = next(f for f in cov.blocking if f.code == "thin_weeks")
    assert finding.message.startswith(PREFIX)
    assert "16 Mar 2026" in finding.message
    # the median week's daily pace: hand-computed from the frame
    kept = frames["decisions"]["timestamp"].map(_monday).value_counts()
    full = [kept.get(PILOT_START + dt.timedelta(weeks=i), 0) for i in range(4)]
    assert cov.thin_week_minimum == pytest.approx(0.25 * float(np.median(full)))


def test_no_limit_breached_on_clean_data_and_flags_are_warnings(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=200, seed=9)
    dec = frames["decisions"].copy()
    # one low_confidence escalation at 0.95 confidence: kept and flagged (1 of 200 < 5%)
    # (the fixture's own low_confidence escalations sit below 0.7: none is flagged)
    dec.loc[dec["escalation_reason"].eq("low_confidence"), "confidence"] = 0.5
    i = dec.index[~dec["escalated"]][0]
    dec.loc[i, ["escalated", "escalation_reason", "confidence"]] = [True, "low_confidence", 0.95]
    frames["decisions"] = dec
    data = load_pilot_data(write_pilot(tmp_path / "p", frames))
    cov = data_coverage(data.pilot, data)
    assert cov.sufficient, [f.message for f in cov.blocking]
    flags = cov.dataset("decisions").flags
    assert flags["low_confidence escalation at or above confidence_threshold"] == 1
    warning = [f for f in cov.findings if f.code == "flagged_rows"]
    assert [f.severity for f in warning] == ["warning"]
    line = cov.line()
    assert line.startswith("Data coverage: 200 of 200 decisions valid (100.0%)")
    assert "4 of 4 weeks" in line and "within the data_sufficiency limits" in line
    assert "decisions: low_confidence escalation at or above confidence_threshold 1" in line


def test_flag_above_its_limit_blocks(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=200, seed=9)
    dec = frames["decisions"].copy()
    high = dec["confidence"] >= 0.7
    # escalated for low confidence although the confidence clears the pilot's threshold
    dec.loc[high, ["escalated", "escalation_reason"]] = [True, "low_confidence"]
    frames["decisions"] = dec
    data = load_pilot_data(write_pilot(tmp_path / "p", frames))
    cov = data_coverage(data.pilot, data)
    flag = "low_confidence escalation at or above confidence_threshold"
    assert cov.dataset("decisions").flags[flag] == int(high.sum())
    blocking = [f for f in cov.blocking if f.code == "flagged_rows"]
    assert len(blocking) == 1 and flag in blocking[0].message
    assert blocking[0].message.startswith(PREFIX)


def test_limits_come_from_the_pilot_file(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=200, seed=3)
    dec = frames["decisions"].copy()
    dec.loc[dec.index[:16], "confidence"] = 50.0  # 8% quarantined
    frames["decisions"] = dec
    folder = write_pilot(tmp_path / "p", frames)
    data = load_pilot_data(folder)
    assert any(f.code == "incomplete_dataset" for f in data_coverage(data.pilot, data).blocking)
    doc = yaml.safe_load((folder / "pilot.yaml").read_text())
    doc["data_sufficiency"] = {
        "dataset_limits": {"decisions": 0.10},
        "max_group_quarantined_share": 0.5,
    }
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc))
    data = load_pilot_data(folder)
    cov = data_coverage(data.pilot, data)
    assert not [f for f in cov.blocking if f.code.startswith("incomplete")]


def test_unknown_correctness_below_the_limit_blocks(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=100, seed=2)
    frames["decisions"]["correct"] = pd.array([None] * 100, dtype="boolean")
    data = load_pilot_data(write_pilot(tmp_path / "p", frames))
    cov = data_coverage(data.pilot, data)
    assert cov.outcome["correct_known"] == 0
    assert [f.code for f in cov.blocking] == ["correctness_unknown"]


# ---- the two scenarios of issue 10, end to end ------------------------------------------------


def _copy_claims(tmp_path: Path) -> Path:
    folder = tmp_path / "claims-auto"
    shutil.copytree(CLAIMS, folder)
    return folder


def _gate(folder: Path, tmp_path: Path):
    return gate_of(folder, tmp_path / "store")


def test_confidence_on_a_0_100_scale_is_no_go_with_the_coverage_finding(tmp_path: Path) -> None:
    folder = _copy_claims(tmp_path)
    dec = pd.read_parquet(folder / "decisions.parquet")
    newer = dec["prompt_version"].isin(["v1.2", "v1.3"])
    dec.loc[newer, "confidence"] = dec.loc[newer, "confidence"] * 100
    dec.to_parquet(folder / "decisions.parquet", index=False)
    share_newer = newer.mean()
    assert 0.57 < share_newer < 0.59  # the 58%

    decision, results = _gate(folder, tmp_path)
    assert decision.decision == "NO-GO"
    # every KPI still passes on the first half of the pilot: only the coverage blocks
    assert {v.status for v in decision.verdicts} == {"PASS"}
    coverage = [f for f in decision.blocking if f.phase == "kpi_baselining"]
    assert coverage and coverage[0].code == "incomplete_dataset"
    msg = coverage[0].message
    assert msg.startswith("The evidence is incomplete: ")
    assert "decisions" in msg and "confidence outside [0, 1]" in msg
    assert "v1.2" in msg and "v1.3" in msg and "weeks of the pilot window" in msg
    cov = results["kpi_baselining"]["data_coverage"]
    dec_cov = next(d for d in cov["datasets"] if d["dataset"] == "decisions")
    assert dec_cov["quarantined_share"] == pytest.approx(share_newer, abs=0.001)
    assert set(coverage[0].evidence["prompt_versions_above_limit"]) == {"v1.2", "v1.3"}
    # the newer versions ran alone in the last weeks: those weeks hold no valid decision,
    # judged against the pace of the weeks that do (12,484 valid decisions in 5 weeks)
    thin = next(f for f in coverage if f.code == "thin_weeks")
    assert thin.evidence["valid"] == [0] * 7
    assert 600 < thin.evidence["minimum_full_week"] < 650
    assert decision.coverage_line in decision.rationale
    assert "The evidence is incomplete" in decision.rationale
    assert decision.to_result()["data_coverage"]["sufficient"] is False


def _thousands_separators(folder: Path) -> float:
    """Rewrite the approvals' amounts as a spreadsheet exports them ("1,234.50");
    returns the share of amounts that got a separator."""
    raw = pd.read_csv(folder / "approvals.csv", dtype=str, keep_default_na=False)
    amount = pd.to_numeric(raw["amount"], errors="coerce")
    raw["amount"] = [
        f"{a:,.2f}" if pd.notna(a) and a >= 0 else s
        for a, s in zip(amount, raw["amount"], strict=True)
    ]
    raw.to_csv(folder / "approvals.csv", index=False)
    return float(raw["amount"].str.contains(",").mean())


def test_amounts_with_thousands_separators_are_no_go_naming_approvals(tmp_path: Path) -> None:
    folder = _copy_claims(tmp_path)
    with_separator = _thousands_separators(folder)
    assert 0.87 < with_separator < 0.89  # the 88%

    decision, results = _gate(folder, tmp_path)
    assert decision.decision == "NO-GO"
    coverage = [f for f in decision.blocking if f.phase == "kpi_baselining"]
    assert [f.code for f in coverage] == ["incomplete_dataset"]
    assert coverage[0].evidence["dataset"] == "approvals"
    msg = coverage[0].message
    assert msg.startswith("The evidence is incomplete: ") and "approvals" in msg
    assert "unparseable amount" in msg
    cov = results["kpi_baselining"]["data_coverage"]
    appr = next(d for d in cov["datasets"] if d["dataset"] == "approvals")
    assert appr["quarantined_share"] > 0.87
    assert "approvals" in decision.coverage_line


def test_claims_auto_coverage_is_within_the_default_limits(tmp_path: Path) -> None:
    store = tmp_path / "store"
    build_store(CLAIMS, store)
    data = open_store(store, CLAIMS)
    cov = data_coverage(data.pilot, data)
    assert cov.sufficient
    # 30,000 live decisions and 510 shadow ones (issue 12), each checked by the contract
    assert cov.line().startswith("Data coverage: 30,504 of 30,510 decisions valid (99.98%)")
    assert len(cov.weeks) == 12 and not cov.weeks["thin"].any()


def test_data_without_checks_gives_an_empty_coverage_that_says_so(tmp_path: Path) -> None:
    from types import SimpleNamespace

    data = load_pilot_data(write_pilot(tmp_path / "p", tiny_frames()))
    cov = data_coverage(data.pilot, SimpleNamespace(decisions=data.decisions))
    assert cov.datasets == [] and cov.findings == []
    assert cov.line().startswith("Data coverage: not measured")


@pytest.mark.slow
def test_the_command_line_run_says_no_go_with_the_coverage_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from pilot_lib.cli import main
    from pilot_lib.runs import latest_run_dir

    folder = _copy_claims(tmp_path)
    _thousands_separators(folder)
    out = tmp_path / "runs"
    # phase 5 alone computes the earlier phases itself: the whole chain, one notebook
    args = ["run", str(folder), "--out", str(out), "--phases", "5", "--no-export"]
    assert main([*args, "--fail-on", "no-go"]) == 1
    assert "claims-auto: NO-GO; run folder:" in capsys.readouterr().out
    run_dir = latest_run_dir(out / "claims-auto")
    assert run_dir is not None
    gate = json.loads((run_dir / "go_no_go_summary.json").read_text())["result"]
    assert gate["decision"] == "NO-GO"
    (finding,) = [f for f in gate["blocking_findings"] if f["phase"] == "kpi_baselining"]
    assert finding["message"].startswith("The evidence is incomplete: ")
    assert finding["evidence"]["dataset"] == "approvals"
    assert gate["data_coverage"]["sufficient"] is False
    assert gate["data_coverage"]["line"] in gate["rationale"]


def test_one_prompt_version_above_its_limit_blocks_below_the_overall_limit(
    tmp_path: Path,
) -> None:
    frames = tiny_frames(n_decisions=200, seed=3)
    dec = frames["decisions"].copy()
    dec.loc[dec.index[:30], "prompt_version"] = "v3"  # a small version: 30 rows
    dec.loc[dec.index[:7], "confidence"] = 80.0  # 7 of its 30 quarantined (23.3%)
    frames["decisions"] = dec
    data = load_pilot_data(write_pilot(tmp_path / "p", frames))
    cov = data_coverage(data.pilot, data)
    assert cov.dataset("decisions").share == pytest.approx(7 / 200)  # under 5%
    (finding,) = cov.blocking
    assert finding.code == "incomplete_weeks_or_versions"
    assert finding.message.startswith(PREFIX)
    assert "prompt version v3 (23.3% quarantined)" in finding.message
    assert finding.evidence["prompt_versions_above_limit"] == ["v3"]
    assert finding.evidence["weeks_above_limit"] == []  # 7 of the first week's ~50: 14%

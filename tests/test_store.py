"""The checked evidence store: built once, reused while nothing changed, nothing lost.

References are independent of the store: the in-memory check of the same data
(``load_pilot_data``), the input frames themselves, and counts written by hand.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pilot_lib.config import DATASET_NAMES, EngineSettings, PilotFileError, load_pilot
from pilot_lib.errors import ContractError
from pilot_lib.ingest import contracts
from pilot_lib.ingest.contracts import QUARANTINE_RULE_COLUMN, load_pilot_data
from pilot_lib.ingest.engine import connect_engine, resolve_engine
from pilot_lib.ingest.store import (
    MANIFEST,
    StoreError,
    build_store,
    ensure_store,
    open_store,
    store_is_current,
)
from pilot_lib.report import notebook as nb
from tests.conftest import DEFAULT_FILES, tiny_frames, write_pilot

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "pilots"


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every data set the store checks (validate_dataset calls)."""
    calls: list[str] = []
    real = contracts.validate_dataset

    def counting(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(contracts, "validate_dataset", counting)
    return calls


def _frame(table) -> pd.DataFrame:
    out = table.execute()
    return out.sort_values(list(out.columns)).reset_index(drop=True)


def _messy_frames() -> dict[str, pd.DataFrame]:
    """Tiny frames with planted bad rows, duplicates in three data sets among them."""
    frames = tiny_frames(n_decisions=60)
    d = frames["decisions"].copy()
    later = d.iloc[[3]].copy()
    later["timestamp"] = later["timestamp"] + pd.Timedelta(hours=1)
    broken_copy = d.iloc[[5]].copy()
    broken_copy["confidence"] = 7.0  # breaks a rule: quarantined for that, not as a duplicate
    d.loc[10, "model_cost_usd"] = -1.0
    d.loc[11, "escalation_reason"] = "boredom"
    frames["decisions"] = pd.concat([d, later, broken_copy], ignore_index=True)
    c = frames["cases"]
    frames["cases"] = pd.concat([c, c.iloc[[0]]], ignore_index=True)
    a = frames["adoption"]
    frames["adoption"] = pd.concat([a, a.iloc[[2]]], ignore_index=True)
    return frames


def test_store_holds_what_the_in_memory_check_finds(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "messy", _messy_frames())
    pilot = load_pilot(folder)
    info = build_store(pilot, tmp_path / "store", quarantine_dir=tmp_path / "q")
    data = open_store(info.path, pilot)
    reference = load_pilot_data(pilot)
    assert data.report().equals(reference.report())
    assert data.quarantine_summary().equals(reference.quarantine_summary())
    for name in DATASET_NAMES:
        if reference.table(name) is None:
            continue
        pd.testing.assert_frame_equal(_frame(data.table(name)), _frame(reference.table(name)))
        pd.testing.assert_frame_equal(
            _frame(data.quarantined(name)), _frame(reference.quarantined(name))
        )
    rules = dict(data.quarantine_summary().groupby("rule")["rows"].sum())
    assert rules["duplicate decision_id"] == 1
    assert rules["confidence outside [0, 1]"] == 1
    assert rules["duplicate case_id"] == 1
    assert rules["duplicate (user_id, week)"] == 1


def test_nothing_is_lost(tmp_path: Path) -> None:
    frames = _messy_frames()
    folder = write_pilot(tmp_path / "messy", frames)
    info = build_store(folder, tmp_path / "store", quarantine_dir=tmp_path / "q")
    for name, entry in info.manifest["datasets"].items():
        assert entry["rows"] == len(frames[name])
        assert entry["valid"] + entry["quarantined"] == entry["rows"]
        assert sum(r["rows"] for r in entry["by_rule"]) == entry["quarantined"]
        if entry["quarantined"]:
            q = pd.read_parquet(tmp_path / "q" / f"{name}.parquet")
            assert len(q) == entry["quarantined"]
            assert q[QUARANTINE_RULE_COLUMN].notna().all()
        else:
            assert entry["quarantine_file"] is None


def test_the_earliest_row_of_a_repeated_key_is_kept(tmp_path: Path) -> None:
    frames = tiny_frames()
    d = frames["decisions"]
    first = d.iloc[[0]].copy()
    early = first.copy()
    early["timestamp"] = early["timestamp"] - pd.Timedelta(minutes=5)
    early["agent_id"] = "the-earlier-one"
    frames["decisions"] = pd.concat([d, early], ignore_index=True)
    folder = write_pilot(tmp_path / "p", frames)
    data = open_store(build_store(folder, tmp_path / "store").path, load_pilot(folder))
    kept = data.table("decisions")
    kept = kept.filter(kept.decision_id == first["decision_id"].iloc[0]).execute()
    assert kept["agent_id"].tolist() == ["the-earlier-one"]
    bad = data.quarantined("decisions").execute()
    assert bad[QUARANTINE_RULE_COLUMN].tolist() == ["duplicate decision_id"]


def test_data_sets_are_checked_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_checks(monkeypatch)
    folder = write_pilot(tmp_path / "p")
    first = ensure_store(folder, tmp_path / "store")
    assert first.action == "built"
    assert sorted(calls) == sorted(DEFAULT_FILES)  # the data sets the tiny pilot names
    again = ensure_store(folder, tmp_path / "store")
    assert again.action == "reused"
    assert again.fingerprint == first.fingerprint
    assert len(calls) == len(DEFAULT_FILES)  # nothing read or checked a second time
    assert "reused" in again.note() and "built" in first.note()


def test_four_phases_in_one_folder_check_the_data_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_checks(monkeypatch)
    folder = write_pilot(tmp_path / "p")
    run = tmp_path / "run"
    actions = []
    for phase in ("use_case_scoring", "kpi_baselining", "drift_analysis", "incident_drill_review"):
        ctx = nb.open_phase(phase, folder, run)
        actions.append(ctx.store.action)
        assert ctx.data.table("decisions").count().execute() == 40
    assert actions == ["built", "reused", "reused", "reused"]
    assert sorted(calls) == sorted(DEFAULT_FILES)  # the data sets the tiny pilot names


def test_a_changed_input_file_rebuilds(tmp_path: Path) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    ensure_store(folder, tmp_path / "store")
    changed = frames["decisions"].copy()
    changed.loc[0, "model_cost_usd"] = 99.0
    time.sleep(0.01)
    changed.to_parquet(folder / "decisions.parquet", index=False)
    current, reason = store_is_current(load_pilot(folder), tmp_path / "store")
    assert not current and "decisions" in reason
    rebuilt = ensure_store(folder, tmp_path / "store")
    assert rebuilt.action == "built" and "input files changed" in rebuilt.reason
    data = open_store(rebuilt.path, load_pilot(folder))
    assert data.table("decisions").model_cost_usd.max().execute() == 99.0


def test_a_touched_but_identical_file_is_reused(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    first = ensure_store(folder, tmp_path / "store")
    target = folder / "decisions.parquet"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    again = ensure_store(folder, tmp_path / "store")
    assert again.action == "reused"  # same content: the SHA-256 decides, not the clock
    assert again.fingerprint == first.fingerprint


def test_a_changed_pilot_file_rebuilds(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    ensure_store(folder, tmp_path / "store")
    doc = yaml.safe_load((folder / "pilot.yaml").read_text())
    doc["confidence_threshold"] = 0.6
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    rebuilt = ensure_store(folder, tmp_path / "store")
    assert rebuilt.action == "built"
    assert rebuilt.reason == "the pilot file changed"


def test_a_failed_build_keeps_the_earlier_store(tmp_path: Path) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    first = ensure_store(folder, tmp_path / "store")
    before = (tmp_path / "store" / MANIFEST).read_text()
    frames["decisions"].drop(columns=["agent_id"]).to_parquet(
        folder / "decisions.parquet", index=False
    )
    with pytest.raises(ContractError, match="agent_id"):
        ensure_store(folder, tmp_path / "store")
    assert (tmp_path / "store" / MANIFEST).read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".store")] == []
    still = open_store(first.path, load_pilot(folder))  # the earlier store still opens
    assert still.table("decisions").count().execute() == 40


def test_open_store_refuses_another_pilot_file(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    build_store(folder, tmp_path / "store")
    doc = yaml.safe_load((folder / "pilot.yaml").read_text())
    doc["title"] = "Edited after the store was built"
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(StoreError, match="another version of the pilot file"):
        open_store(tmp_path / "store", folder)
    with pytest.raises(StoreError, match="no complete checked evidence store"):
        open_store(tmp_path / "nowhere", folder)


def test_manifest_records_inputs_engine_and_counts(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    info = build_store(folder, tmp_path / "store")
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    pilot = load_pilot(folder)
    assert manifest["pilot_file_sha256"] == pilot.file_hash
    assert manifest["engine"]["name"] == "duckdb"
    assert manifest["engine_label"] == "duckdb (memory limit 512MB)"
    files = manifest["inputs"]["decisions"]["files"]
    assert len(files) == 1 and len(files[0]["sha256"]) == 64
    assert files[0]["size"] == (folder / "decisions.parquet").stat().st_size
    assert manifest["datasets"]["decisions"]["rows"] == 40
    assert info.fingerprint == manifest["fingerprint"]


def test_sample_pilot_store_matches_the_in_memory_check(tmp_path: Path) -> None:
    pilot = load_pilot(SAMPLES / "claims-auto")
    data = open_store(build_store(pilot, tmp_path / "store").path, pilot)
    reference = load_pilot_data(pilot)
    assert data.report().equals(reference.report())
    assert data.quarantine_summary().equals(reference.quarantine_summary())
    d, r = data.table("decisions"), reference.table("decisions")
    for column in ("model_cost_usd", "review_minutes", "input_tokens"):
        assert d[column].sum().execute() == pytest.approx(r[column].sum().execute(), rel=1e-12)


# ---- engine settings -----------------------------------------------------------------


def test_engine_settings_in_the_pilot_file(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "a", doc_changes={"engine": "spark"})
    assert load_pilot(folder).engine.name == "spark"
    folder = write_pilot(
        tmp_path / "b", doc_changes={"engine": {"name": "duckdb", "memory_limit": "512MB"}}
    )
    assert load_pilot(folder).engine.memory_limit == "512MB"
    assert load_pilot(write_pilot(tmp_path / "c")).engine == EngineSettings()


@pytest.mark.parametrize(
    ("engine", "field"),
    [
        ({"name": "duckdb", "memory_limit": "lots"}, "engine.memory_limit"),
        ({"name": "postgres"}, "engine.name"),
        ({"name": "duckdb", "master": "local[2]"}, "engine"),
        ({"name": "duckdb", "threads": 0}, "engine.threads"),
    ],
)
def test_bad_engine_settings_name_the_field(tmp_path: Path, engine: dict, field: str) -> None:
    folder = write_pilot(tmp_path / "p", doc_changes={"engine": engine})
    with pytest.raises(PilotFileError) as err:
        load_pilot(folder)
    assert any(p.field == field for p in err.value.problems), err.value.problems


def test_command_line_overrides_the_pilot_files_engine() -> None:
    spark = EngineSettings(name="spark", master="local[2]")
    assert resolve_engine(spark, name="duckdb") == EngineSettings()
    assert resolve_engine(EngineSettings(), name="spark").name == "spark"
    assert resolve_engine(EngineSettings(), master="local[1]").master == "local[1]"
    assert resolve_engine(spark) == spark


def test_duckdb_gets_a_memory_limit_and_a_spill_folder(tmp_path: Path) -> None:
    con = connect_engine(EngineSettings(memory_limit="256MB", threads=1), spill_dir=tmp_path)
    limit = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "") in ("256.0MiB", "244.1MiB", "256MB", "244.1MB")
    assert con.raw_sql("SELECT current_setting('temp_directory')").fetchone()[0] == str(tmp_path)
    assert con.raw_sql("SELECT current_setting('threads')").fetchone()[0] == 1


def test_manifest_carries_the_flags_and_the_store_reads_them_back(tmp_path: Path) -> None:
    frames = tiny_frames(n_decisions=60)
    d = frames["decisions"].copy()
    d.loc[d["escalation_reason"].eq("low_confidence"), "confidence"] = 0.5
    d.loc[4, ["escalated", "escalation_reason", "confidence"]] = [True, "low_confidence", 0.9]
    d.loc[5, ["escalated", "escalation_reason"]] = [False, "missing_data"]  # quarantined
    frames["decisions"] = d
    folder = write_pilot(tmp_path / "p", frames)
    pilot = load_pilot(folder)
    info = build_store(pilot, tmp_path / "store")
    entry = info.manifest["datasets"]["decisions"]
    assert entry["flags"] == [
        {"flag": "low_confidence escalation at or above confidence_threshold", "rows": 1}
    ]
    assert {"rule": "escalation_reason without escalated", "rows": 1} in entry["by_rule"]
    data = open_store(info.path, pilot)
    reference = load_pilot_data(pilot)  # the in-memory check counts the same flags
    for name in DATASET_NAMES:
        if name in reference.checks:
            assert data.checks[name].flags == reference.checks[name].flags, name
    assert data.flag_summary().equals(reference.flag_summary())


def test_validate_report_shows_the_data_coverage(tmp_path: Path) -> None:
    from pilot_lib.ingest.store import validate_pilot

    frames = tiny_frames(n_decisions=60)
    d = frames["decisions"].copy()
    d.loc[:9, "confidence"] = 55.0  # 10 of 60 quarantined: above the 5% default
    frames["decisions"] = d
    folder = write_pilot(tmp_path / "p", frames)
    report = validate_pilot(folder, store_dir=tmp_path / "store", quarantine_dir=tmp_path / "q")
    text = report.to_text()
    assert "Data coverage: 50 of 60 decisions valid (83.3%)" in text
    assert "blocking: The evidence is incomplete: 10 of 60 decisions (16.7%)" in text

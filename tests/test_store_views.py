"""The store reads only what changed and copies only what it must.

- input fingerprints: size and modification time decide whether a file is hashed
  (the SHA-256 calls are counted);
- a log-sized Parquet input already in contract types is held as a view (its
  quarantined rows' row numbers beside it), checked against the in-memory check
  of the same data (``load_pilot_data``, an independent path that copies);
- a query that does not fit in the engine's memory fails in one line naming
  ``engine.memory_limit``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pilot_lib.config import DATASET_NAMES, EngineSettings, load_pilot
from pilot_lib.errors import EngineMemoryError
from pilot_lib.ingest import store
from pilot_lib.ingest.contracts import QUARANTINE_RULE_COLUMN, load_pilot_data
from pilot_lib.ingest.engine import connect_engine, memory_error_text
from pilot_lib.ingest.sources import connect
from pilot_lib.ingest.store import StoreError, build_store, ensure_store, open_store
from tests.conftest import tiny_frames, write_pilot
from tests.test_store import _frame, _messy_frames


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every file whose SHA-256 is computed."""
    calls: list[str] = []
    real = store._sha256

    def counting(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(store, "_sha256", counting)
    return calls


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> None:
    """Views for inputs of any size (the tiny test files are far below the threshold)."""
    monkeypatch.setattr(store, "VIEW_MIN_BYTES", 0)


# ---- fingerprints ----------------------------------------------------------------------


def test_unchanged_inputs_are_not_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_pilot(tmp_path / "p")
    calls = _count_hashes(monkeypatch)
    first = build_store(folder, tmp_path / "store")
    n_files = sum(len(v["files"]) for v in first.manifest["inputs"].values())
    assert len(calls) == n_files  # a first build hashes every input once
    assert first.manifest["fingerprints"]["sha256_reused"] == 0
    calls.clear()
    assert ensure_store(folder, tmp_path / "store").action == "reused"
    again = build_store(folder, tmp_path / "store")  # validate rebuilds: still no hashing
    assert calls == []
    note = again.manifest["fingerprints"]
    assert note["sha256_computed"] == [] and note["sha256_reused"] == n_files
    assert "size and modification time" in note["rule"]
    assert again.fingerprint == first.fingerprint


def test_a_touched_file_is_hashed_once_and_the_store_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_pilot(tmp_path / "p")
    first = ensure_store(folder, tmp_path / "store")
    target = folder / "decisions.parquet"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
    calls = _count_hashes(monkeypatch)
    again = ensure_store(folder, tmp_path / "store")
    assert again.action == "reused" and again.fingerprint == first.fingerprint
    assert calls == ["decisions.parquet"]  # only the touched file, and its content decided
    assert again.manifest["fingerprints"]["sha256_computed"] == [str(target)]
    (entry,) = again.manifest["inputs"]["decisions"]["files"]
    assert entry["mtime_ns"] == target.stat().st_mtime_ns  # the new time is remembered
    calls.clear()
    assert ensure_store(folder, tmp_path / "store").action == "reused"
    assert calls == []


def test_a_changed_file_of_the_same_size_is_hashed_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_pilot(tmp_path / "p")
    ensure_store(folder, tmp_path / "store")
    target = folder / "candidates.csv"
    text = target.read_text()
    changed = text.replace("True", "Fals", 1) if "True" in text else text[::-1]
    assert len(changed) == len(text)
    target.write_text(changed)
    calls = _count_hashes(monkeypatch)
    rebuilt = ensure_store(folder, tmp_path / "store")
    assert rebuilt.action == "built" and "candidates" in rebuilt.reason
    assert calls.count("candidates.csv") == 1


# ---- views over inputs already in contract types ------------------------------------------


def _messier_frames() -> dict[str, pd.DataFrame]:
    """The messy frames plus a decision without an id and a tool-call log with a repeat."""
    frames = _messy_frames()
    d = frames["decisions"]
    nameless = d.iloc[[7]].copy()
    nameless["decision_id"] = None
    frames["decisions"] = pd.concat([d, nameless], ignore_index=True)
    return frames


def test_a_view_holds_what_the_in_memory_check_finds(tmp_path: Path, views: None) -> None:
    frames = _messier_frames()
    folder = write_pilot(tmp_path / "messy", frames)
    pilot = load_pilot(folder)
    info = build_store(pilot, tmp_path / "store", quarantine_dir=tmp_path / "q")
    entries = info.manifest["datasets"]
    assert entries["decisions"]["storage"] == "view"
    assert entries["cases"]["storage"] == "view"
    assert entries["adoption"]["storage"] == "copy"  # not log-sized
    assert not (info.path / "decisions").exists()  # no copy of the rows
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
    assert rules["null decision_id"] == 1
    assert rules["duplicate decision_id"] == 1
    assert rules["confidence outside [0, 1]"] == 1
    assert rules["duplicate case_id"] == 1
    # nothing lost: every row is valid or in the quarantine file, with its rule
    for name in ("decisions", "cases"):
        entry = entries[name]
        assert entry["rows"] == len(frames[name])
        assert entry["valid"] + entry["quarantined"] == entry["rows"]
        q = pd.read_parquet(tmp_path / "q" / f"{name}.parquet")
        assert len(q) == entry["quarantined"]
        assert q[QUARANTINE_RULE_COLUMN].notna().all()
        excluded = pd.read_parquet(info.path / entry["file"])
        assert sorted(excluded[QUARANTINE_RULE_COLUMN]) == sorted(q[QUARANTINE_RULE_COLUMN])


def test_a_view_over_several_files_and_a_clean_one(tmp_path: Path, views: None) -> None:
    frames = tiny_frames(n_decisions=60)
    d = frames["decisions"]
    folder = write_pilot(tmp_path / "p", frames)
    (folder / "decisions.parquet").unlink()
    parts = folder / "decisions"
    parts.mkdir()
    d.iloc[:30].to_parquet(parts / "a.parquet", index=False)
    # the second file repeats a decision of the first, one hour later: the first is kept
    later = d.iloc[[2]].copy()
    later["timestamp"] += pd.Timedelta(hours=1)
    pd.concat([d.iloc[30:], later]).to_parquet(parts / "b.parquet", index=False)
    doc = yaml.safe_load((folder / "pilot.yaml").read_text())
    doc["datasets"]["decisions"]["path"] = "decisions/*.parquet"
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    pilot = load_pilot(folder)
    info = build_store(pilot, tmp_path / "store")
    entry = info.manifest["datasets"]["decisions"]
    assert entry["storage"] == "view" and entry["row_id"] == ["filename", "file_row_number"]
    assert entry["by_rule"] == [{"rule": "duplicate decision_id", "rows": 1}]
    data = open_store(info.path, pilot)
    pd.testing.assert_frame_equal(_frame(data.table("decisions")), _frame(pilot_valid(pilot)))
    bad = data.quarantined("decisions").execute()
    assert bad["timestamp"].tolist() == later["timestamp"].tolist()
    clean = info.manifest["datasets"]["cases"]  # no bad row: an empty list beside it
    assert clean["storage"] == "view" and clean["quarantined"] == 0
    assert data.quarantined("cases").count().execute() == 0
    assert data.table("cases").count().execute() == len(frames["cases"])


def pilot_valid(pilot):  # the in-memory check's valid decisions
    return load_pilot_data(pilot).table("decisions")


def test_a_view_is_pinned_by_its_inputs_fingerprint(tmp_path: Path, views: None) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    info = ensure_store(folder, tmp_path / "store")
    assert info.manifest["datasets"]["decisions"]["storage"] == "view"
    target = folder / "decisions.parquet"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    assert open_store(info.path, folder).table("decisions").count().execute() == 40  # same bytes
    changed = frames["decisions"].copy()
    changed.loc[0, "model_cost_usd"] = 99.0
    changed.to_parquet(target, index=False)
    with pytest.raises(StoreError, match="view over .*decisions.parquet.* changed"):
        open_store(info.path, folder)
    rebuilt = ensure_store(folder, tmp_path / "store")
    assert rebuilt.action == "built"
    data = open_store(rebuilt.path, folder)
    assert data.table("decisions").model_cost_usd.max().execute() == 99.0


def test_a_small_input_is_copied(tmp_path: Path) -> None:
    info = build_store(write_pilot(tmp_path / "p"), tmp_path / "store")
    assert {e["storage"] for e in info.manifest["datasets"].values()} == {"copy"}


# ---- memory ------------------------------------------------------------------------------


def _too_big(con) -> None:
    # one list of a million strings: an aggregate DuckDB cannot spill
    con.raw_sql("SELECT list(repeat('x', 100)) FROM range(1000000)").fetchall()


def test_running_out_of_memory_names_engine_memory_limit() -> None:
    con = connect_engine(EngineSettings(memory_limit="16MB", threads=1))
    with pytest.raises(EngineMemoryError) as err:
        _too_big(con)
    text = str(err.value)
    assert "\n" not in text
    assert "engine.memory_limit is 16MB" in text and "MiB in use" in text
    assert "SET " not in text  # never DuckDB's SQL advice
    with pytest.raises(EngineMemoryError, match="engine.memory_limit"):
        plain = connect()  # the in-memory check's connection too
        plain.raw_sql("SET memory_limit = '16MB'")
        plain.raw_sql("SET threads = 1")
        _too_big(plain)
    assert con.name == "duckdb" and con.raw_sql("SELECT 1").fetchone() == (1,)


def test_other_errors_are_not_memory_errors() -> None:
    assert memory_error_text(ValueError("no"), "512MB") is None

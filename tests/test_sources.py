"""Sources: the same data from every kind of source gives the same table after typing."""

from __future__ import annotations

from pathlib import Path

import duckdb
import ibis
import pandas as pd
import pytest
import yaml
from conftest import tiny_frames, write_frame, write_pilot

from pilot_lib.config import DatasetSource, load_pilot
from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.contracts import QUARANTINE_RULE_COLUMN, load_pilot_data
from pilot_lib.ingest.sources import (
    connect,
    describe_source,
    infer_format,
    open_dataset,
    open_source,
)


def _set_source(folder: Path, name: str, entry: dict) -> None:
    """Point data set ``name`` of the pilot file in ``folder`` at ``entry``."""
    path = folder / "pilot.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["datasets"][name] = entry
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _write_duckdb(path: Path, tables: dict[str, pd.DataFrame]) -> None:
    con = duckdb.connect(str(path))
    try:
        for name, frame in tables.items():
            con.register("frame_view", frame)
            con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM frame_view')
            con.unregister("frame_view")
    finally:
        con.close()


def _decisions(folder: Path) -> pd.DataFrame:
    data = load_pilot_data(folder)
    assert data.checks["decisions"].quarantined == 0
    return data.decisions.order_by("decision_id").to_pandas()


@pytest.fixture
def reference(tmp_path: Path) -> pd.DataFrame:
    """Decisions read from Parquet, contract-typed: what every other source must match."""
    return _decisions(write_pilot(tmp_path / "ref"))


@pytest.mark.parametrize(
    "entry_kind",
    ["csv", "tsv", "jsonl", "json-format-override", "parquet-glob", "duckdb-file", "duckdb-uri"],
)
def test_same_table_from_every_source(
    tmp_path: Path, reference: pd.DataFrame, entry_kind: str
) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    dec = frames["decisions"]
    if entry_kind in ("csv", "tsv", "jsonl"):
        name = f"decisions.{entry_kind}"
        write_frame(dec, folder / name)
        entry = {"path": name}
    elif entry_kind == "json-format-override":
        dec.to_json(folder / "decisions.log", orient="records", lines=True, date_format="iso")
        entry = {"path": "decisions.log", "format": "jsonl"}
    elif entry_kind == "parquet-glob":
        (folder / "parts").mkdir()
        dec.iloc[:15].to_parquet(folder / "parts" / "part-0.parquet", index=False)
        dec.iloc[15:].to_parquet(folder / "parts" / "part-1.parquet", index=False)
        entry = {"path": "parts/*.parquet"}
    elif entry_kind == "duckdb-file":
        _write_duckdb(folder / "pilot.duckdb", {"decision_log": dec})
        entry = {"database": "pilot.duckdb", "table": "decision_log"}
    else:
        _write_duckdb(folder / "pilot.duckdb", {"decision_log": dec})
        entry = {"uri": f"duckdb://{folder / 'pilot.duckdb'}", "table": "decision_log"}
    _set_source(folder, "decisions", entry)
    got = _decisions(folder)
    pd.testing.assert_frame_equal(got, reference, check_dtype=True)


def test_same_table_from_a_dataframe(tmp_path: Path, reference: pd.DataFrame) -> None:
    folder = write_pilot(tmp_path / "p")
    frame = tiny_frames()["decisions"]
    data = load_pilot_data(folder, overrides={"decisions": frame})
    got = data.decisions.order_by("decision_id").to_pandas()
    pd.testing.assert_frame_equal(got, reference)
    assert data.checks["decisions"].source == "in-memory DataFrame"


def test_reference_matches_the_input_values(reference: pd.DataFrame) -> None:
    """The typed table holds the values written, not just consistent ones."""
    src = tiny_frames()["decisions"].sort_values("decision_id").reset_index(drop=True)
    assert reference["decision_id"].tolist() == src["decision_id"].tolist()
    assert (reference["timestamp"] == src["timestamp"]).all()
    assert reference["confidence"].tolist() == src["confidence"].tolist()
    assert reference["correct"].isna().sum() == src["correct"].isna().sum() == 8
    assert reference["escalated"].tolist() == src["escalated"].tolist()
    assert reference["channel"].tolist() == src["channel"].tolist()  # extra columns kept


def test_two_data_sets_in_one_duckdb_file_join_in_the_engine(tmp_path: Path) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    _write_duckdb(
        folder / "pilot.duckdb", {"decisions": frames["decisions"], "cases": frames["cases"]}
    )
    _set_source(folder, "decisions", {"database": "pilot.duckdb", "table": "decisions"})
    _set_source(folder, "cases", {"database": "pilot.duckdb", "table": "main.cases"})
    data = load_pilot_data(folder)
    joined = data.decisions.join(data.cases, "case_id")
    assert joined.count().to_pyarrow().as_py() == 40  # every decision has its case
    attached = data.con.raw_sql(
        "SELECT count(*) FROM duckdb_databases() WHERE NOT internal"
    ).fetchall()
    assert attached[0][0] == 2  # memory + the file, attached once


def test_unparseable_timestamp_past_the_csv_sample_does_not_fail_the_read(tmp_path: Path) -> None:
    """DuckDB guesses CSV types from ~20k rows; a bad value after them must be quarantined."""
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    n = 25_000
    header = ",".join(frames["decisions"].columns)
    con = duckdb.connect()
    con.execute(
        f"""
        COPY (
          SELECT 'd' || i AS decision_id,
                 CASE WHEN i = {n - 1} THEN 'not-a-date'
                      ELSE strftime(TIMESTAMP '2026-03-02' + to_seconds(i), '%Y-%m-%d %H:%M:%S')
                 END AS timestamp,
                 't' || i AS trace_id, 'agent-1' AS agent_id, 'claims' AS workflow,
                 'c' || (i % 12) AS case_id, 'v1' AS prompt_version, 'u1' AS user_id,
                 true AS completed, true AS accepted, false AS overridden, false AS escalated,
                 NULL::VARCHAR AS escalation_reason,
                 CASE WHEN i = {n - 2} THEN 'high' ELSE '0.5' END AS confidence,
                 NULL::BOOLEAN AS correct, 100 AS input_tokens, 20 AS output_tokens,
                 0.01 AS model_cost_usd, 0.0 AS tool_cost_usd, 1.5 AS review_minutes,
                 1000.0 AS claim_amount, 'web' AS channel
          FROM range({n}) t(i)
        ) TO '{folder / "big.csv"}' (HEADER)
        """
    )
    con.close()
    assert (folder / "big.csv").read_text().splitlines()[0] == header
    _set_source(folder, "decisions", {"path": "big.csv"})
    data = load_pilot_data(folder, quarantine_dir=tmp_path / "q")
    check = data.checks["decisions"]
    assert (check.rows, check.valid, check.quarantined) == (n, n - 2, 2)
    q = pd.read_parquet(tmp_path / "q" / "decisions.parquet")
    assert sorted(q[QUARANTINE_RULE_COLUMN]) == ["unparseable confidence", "unparseable timestamp"]
    assert data.decisions.schema()["timestamp"].is_timestamp()


def test_unparseable_timestamp_past_the_json_sample_does_not_fail_the_read(tmp_path: Path) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    n = 25_000
    big = pd.concat([frames["decisions"]] * (n // 40), ignore_index=True)
    big["decision_id"] = [f"d{i}" for i in range(len(big))]
    big["timestamp"] = big["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    big.loc[len(big) - 1, "timestamp"] = "yesterday"
    big.to_json(folder / "big.jsonl", orient="records", lines=True)
    _set_source(folder, "decisions", {"path": "big.jsonl"})
    data = load_pilot_data(folder)
    assert data.checks["decisions"].quarantined == 1
    assert data.checks["decisions"].by_rule["rule"].tolist() == ["unparseable timestamp"]


@pytest.mark.parametrize(
    ("content", "file_name"),
    [
        (b"PAR1 this is not really parquet PAR1", "decisions.parquet"),
        (b'{"decision_id": "d1", "timestamp": \n not json at all', "decisions.jsonl"),
    ],
)
def test_unreadable_file_names_data_set_and_file(
    tmp_path: Path, content: bytes, file_name: str
) -> None:
    folder = write_pilot(tmp_path / "p")
    (folder / file_name).write_bytes(content)
    _set_source(folder, "decisions", {"path": file_name})
    with pytest.raises(DataSourceError) as info:
        load_pilot_data(folder)
    msg = str(info.value)
    assert "'decisions'" in msg
    assert str(folder / file_name) in msg


def test_unknown_extension_asks_for_a_format(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    (folder / "decisions.xlsx").write_bytes(b"not a spreadsheet either")
    _set_source(folder, "decisions", {"path": "decisions.xlsx"})
    with pytest.raises(DataSourceError, match=r"datasets\.decisions\.format") as info:
        load_pilot_data(folder)
    assert "decisions.xlsx" in str(info.value)


def test_missing_table_in_duckdb_file_lists_the_tables(tmp_path: Path) -> None:
    frames = tiny_frames()
    folder = write_pilot(tmp_path / "p", frames)
    _write_duckdb(folder / "pilot.duckdb", {"decision_log": frames["decisions"]})
    _set_source(folder, "decisions", {"database": "pilot.duckdb", "table": "decisions"})
    with pytest.raises(DataSourceError) as info:
        load_pilot_data(folder)
    msg = str(info.value)
    assert "'decisions'" in msg and "pilot.duckdb" in msg and "decision_log" in msg


def test_file_that_is_not_a_duckdb_database(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    (folder / "pilot.duckdb").write_bytes(b"garbage" * 100)
    _set_source(folder, "decisions", {"database": "pilot.duckdb", "table": "decisions"})
    with pytest.raises(DataSourceError, match="pilot.duckdb"):
        load_pilot_data(folder)


def test_bad_uri_gives_data_source_error(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    _set_source(folder, "cases", {"uri": "nosuchengine://ana:secret@host/db", "table": "cases"})
    with pytest.raises(DataSourceError) as info:
        load_pilot_data(folder)
    msg = str(info.value)
    assert "'cases'" in msg and "nosuchengine://ana:***@host/db" in msg
    assert "secret" not in msg


def test_table_missing_behind_a_uri(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    _set_source(folder, "cases", {"uri": "duckdb://", "table": "cases"})
    with pytest.raises(DataSourceError, match=r"datasets\.cases\.table"):
        load_pilot_data(folder)


def test_glob_that_matches_nothing(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    pilot = load_pilot(folder)
    with pytest.raises(DataSourceError, match="no file matches"):
        open_source(DatasetSource(path="parts/*.parquet"), connect(), pilot.folder, "decisions")


def test_open_dataset_refuses_a_data_set_the_pilot_does_not_name(tmp_path: Path) -> None:
    frames = tiny_frames()
    del frames["candidates"]
    pilot = load_pilot(write_pilot(tmp_path / "p", frames))
    with pytest.raises(DataSourceError, match="datasets.candidates"):
        open_dataset(pilot, "candidates", connect())


def test_open_source_accepts_paths_frames_and_tables(tmp_path: Path) -> None:
    con = connect()
    frame = tiny_frames()["cases"]
    write_frame(frame, tmp_path / "cases.csv")
    from_path = open_source(tmp_path / "cases.csv", con, label="cases")
    from_relative = open_source("cases.csv", con, base_dir=tmp_path, label="cases")
    from_frame = open_source(frame, con, label="cases")
    assert from_path.count().to_pyarrow().as_py() == 12
    assert from_relative.count().to_pyarrow().as_py() == 12
    assert from_frame.count().to_pyarrow().as_py() == 12
    assert open_source(from_frame, con) is from_frame  # a bound table is returned as is
    from_memtable = open_source(ibis.memtable(frame), con, label="cases")
    assert from_memtable.get_backend() is con  # registered on con, so it joins there
    assert from_memtable.join(from_frame, "case_id").count().to_pyarrow().as_py() == 12
    with pytest.raises(DataSourceError):
        open_source(42, con, label="cases")  # type: ignore[arg-type]


def test_relative_paths_resolve_against_the_pilot_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_pilot(tmp_path / "p")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = load_pilot_data(folder)
    assert data.checks["decisions"].rows == 40


def test_infer_format_and_describe_source() -> None:
    assert infer_format("a/b/log.PARQUET") == "parquet"
    assert infer_format("log.csv.gz") == "csv"
    assert infer_format("log.tsv") == "csv"
    assert infer_format("log.ndjson") == "jsonl"
    assert infer_format("log.xlsx") is None
    assert infer_format("log") is None
    src = DatasetSource(uri="postgres://ana:pw@db.example.com:5432/claims", table="decisions")
    assert describe_source(src) == "postgres://ana:***@db.example.com:5432/claims (table decisions)"
    assert describe_source(DatasetSource(database="x.duckdb", table="t")) == "x.duckdb (table t)"
    assert describe_source(pd.DataFrame()) == "in-memory DataFrame"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_a_csv_naming_a_column_twice_is_refused(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "adoption.csv"
    header = delimiter.join(["user_id", "week", "eligible", "week"])
    path.write_text(f"{header}\n" + delimiter.join(["u1", "2026-03-02", "true", "x"]) + "\n")
    with pytest.raises(DataSourceError, match=r"names the column\(s\) \['week'\] more than once"):
        open_source(DatasetSource(path=str(path)), ibis.duckdb.connect(), label="adoption")


def test_a_csv_with_distinct_columns_that_look_renamed_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text('week,week_1,"a,b"\n1,2,3\n')
    table = open_source(DatasetSource(path=str(path)), ibis.duckdb.connect(), label="x")
    assert table.columns == ("week", "week_1", "a,b")


def test_a_csv_that_is_not_utf8_names_the_encoding_problem(tmp_path: Path) -> None:
    path = tmp_path / "candidates.csv"
    path.write_bytes("name,notes\nStándard claims,café\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match="is not UTF-8 text.*Save it as UTF-8"):
        open_source(DatasetSource(path=str(path)), ibis.duckdb.connect(), label="candidates")


def test_the_header_check_reads_the_first_line_not_any_row(tmp_path: Path) -> None:
    """A parallel CSV read may return any row first: on a 10M-decision pilot a data row
    holding "adjuster" twice was taken for a header naming the column twice."""
    from pilot_lib.ingest.sources import _first_csv_row, _refuse_repeated_header, connect

    con = connect()
    path = tmp_path / "approvals.csv"
    rows = "".join(f"a{i};adjuster;adjuster\n" for i in range(50_000))
    path.write_text("\ufeffaction_id;required_level;approver_level\n" + rows, encoding="utf-8")
    assert _first_csv_row(con, str(path)) == ["action_id", "required_level", "approver_level"]
    _refuse_repeated_header(con, str(path), path.name, "approvals")  # no error
    path.write_text("a;b;a\n1;2;3\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"names the column\(s\) \['a'\] more than once"):
        _refuse_repeated_header(con, str(path), path.name, "approvals")

"""Contracts: each rule quarantines the right rows with the right reason, nothing is lost."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pandera.ibis as pa
import pytest
from conftest import PILOT_END, PILOT_START, tiny_frames, tiny_tool_calls, write_pilot
from pandera.errors import SchemaErrors

from pilot_lib.config import DATASET_NAMES, load_pilot
from pilot_lib.errors import ContractError
from pilot_lib.ingest.contracts import (
    CONTRACTS,
    QUARANTINE_RULE_COLUMN,
    PilotData,
    check_predicate,
    contract,
    contract_columns,
    load_pilot_data,
    validate_dataset,
)

KEYS = {
    "candidates": ["name"],
    "decisions": ["decision_id"],
    "cases": ["case_id"],
    "adoption": ["user_id", "week"],
    "drill_events": ["drill_id", "event", "timestamp"],
    "approvals": ["action_id"],
    "policy_versions": ["policy_version", "level"],
}


def _load(
    folder: Path,
    frames: dict[str, pd.DataFrame],
    files: dict[str, str] | None = None,
) -> PilotData:
    write_pilot(folder, frames, files=files)
    return load_pilot_data(folder, quarantine_dir=folder / "quarantine")


def _quarantine(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / "quarantine" / f"{name}.parquet")


def _key(frame: pd.DataFrame, name: str) -> pd.Series:
    cols = KEYS[name]
    return frame[cols].apply(lambda row: "|".join(str(v) for v in row), axis=1)


# Each case: data set, a function that breaks some rows of the clean frame (returns the
# frame), and {row position in the returned frame: expected rule}. Row positions, not ids,
# so duplicates can be told apart; the tests compare the trace/marker column instead.
Breaker = Callable[[pd.DataFrame], pd.DataFrame]


def _set(frame: pd.DataFrame, row: int, **values: object) -> pd.DataFrame:
    frame = frame.copy()
    for col, value in values.items():
        dtype = frame[col].dtype
        if value is None and pd.api.types.is_bool_dtype(dtype):
            frame[col] = frame[col].astype("boolean")
        elif value is None and pd.api.types.is_integer_dtype(dtype):
            frame[col] = frame[col].astype("Int64")
        elif isinstance(value, str) and not pd.api.types.is_string_dtype(dtype):
            frame[col] = frame[col].astype(object)
        frame.loc[row, col] = value
    return frame


def _decision_rows(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame.copy()
    f = _set(f, 1, confidence=1.5)
    f = _set(f, 2, confidence=-0.01)
    f = _set(f, 3, model_cost_usd=-0.5)
    f = _set(f, 4, escalated=True, escalation_reason=None)
    f = _set(f, 5, escalated=True, escalation_reason="coffee_break")
    f = _set(f, 6, timestamp=pd.NaT)
    f = _set(f, 7, timestamp=pd.Timestamp("2026-04-15 10:00"))  # after the window
    f = _set(f, 8, timestamp=pd.Timestamp(PILOT_END) + pd.Timedelta(days=1))  # first instant out
    f = _set(f, 9, timestamp=pd.Timestamp(PILOT_END) + pd.Timedelta(hours=23, minutes=59))  # in
    f = _set(f, 10, timestamp=pd.Timestamp(PILOT_START))  # first instant in
    f = _set(f, 11, agent_id=None)
    f = _set(f, 12, input_tokens=-3)
    f = _set(f, 13, tool_cost_usd=np.nan)
    f = _set(f, 14, timestamp=pd.NaT, confidence=5.0)  # two rules: the first one wins
    f = _set(f, 15, confidence=None, correct=None, user_id=None)  # nullable: stays valid
    f = _set(f, 16, review_minutes=-1.0)
    f = _set(f, 17, completed=None)
    return f


DECISION_RULES = {
    1: "confidence outside [0, 1]",
    2: "confidence outside [0, 1]",
    3: "negative model_cost_usd",
    4: "escalated without escalation_reason",
    5: "unknown escalation_reason",
    6: "null timestamp",
    7: "timestamp outside pilot_window",
    8: "timestamp outside pilot_window",
    11: "null agent_id",
    12: "negative input_tokens",
    13: "null tool_cost_usd",
    14: "null timestamp",
    16: "negative review_minutes",
    17: "null completed",
}


def test_decision_rules_quarantine_the_right_rows(tmp_path: Path) -> None:
    frames = tiny_frames()
    broken = _decision_rows(frames["decisions"])
    broken["marker"] = [f"row{i}" for i in range(len(broken))]  # extra column, kept
    frames["decisions"] = broken
    data = _load(tmp_path / "p", frames)

    q = _quarantine(tmp_path / "p", "decisions")
    got = dict(zip(q["marker"], q[QUARANTINE_RULE_COLUMN], strict=True))
    assert got == {f"row{i}": rule for i, rule in DECISION_RULES.items()}

    valid = data.decisions.select("marker").to_pandas()["marker"]
    expected_valid = {f"row{i}" for i in range(len(broken))} - set(got)
    assert set(valid) == expected_valid
    assert len(valid) == len(expected_valid)  # no row twice

    check = data.checks["decisions"]
    assert (check.rows, check.valid, check.quarantined) == (len(broken), 40 - 14, 14)
    by_rule = dict(zip(check.by_rule["rule"], check.by_rule["rows"], strict=True))
    assert by_rule["confidence outside [0, 1]"] == 2
    assert by_rule["null timestamp"] == 2
    assert sum(by_rule.values()) == 14


def test_duplicate_decision_keeps_the_earliest_valid_row(tmp_path: Path) -> None:
    frames = tiny_frames()
    dec = frames["decisions"].copy()
    dec["marker"] = "original"
    t0 = dec.loc[20, "timestamp"]
    # d0020 again, one hour later, placed first in the file: quarantined (file order does not matter)
    later = dec.iloc[[20]].assign(timestamp=t0 + pd.Timedelta(hours=1), marker="later copy")
    # d0021 twice: the earlier copy breaks a rule, so the later (valid) copy is kept
    t1 = dec.loc[21, "timestamp"]
    bad_first = dec.iloc[[21]].assign(
        timestamp=t1 - pd.Timedelta(hours=1), confidence=3.0, marker="bad earlier copy"
    )
    # d0022 three times, all valid: the first by timestamp is kept
    t2 = dec.loc[22, "timestamp"]
    third = dec.iloc[[22, 22]].assign(
        timestamp=[t2 + pd.Timedelta(minutes=5), t2 + pd.Timedelta(minutes=10)],
        marker=["second copy", "third copy"],
    )
    frames["decisions"] = pd.concat([later, dec, bad_first, third], ignore_index=True)
    data = _load(tmp_path / "p", frames)

    q = _quarantine(tmp_path / "p", "decisions")
    got = sorted(zip(q["decision_id"], q["marker"], q[QUARANTINE_RULE_COLUMN], strict=True))
    assert got == [
        ("d0020", "later copy", "duplicate decision_id"),
        ("d0021", "bad earlier copy", "confidence outside [0, 1]"),
        ("d0022", "second copy", "duplicate decision_id"),
        ("d0022", "third copy", "duplicate decision_id"),
    ]
    valid = data.decisions.to_pandas().set_index("decision_id")
    assert valid.index.is_unique
    assert len(valid) == 40
    assert valid.loc["d0020", "marker"] == "original"
    assert valid.loc["d0021", "marker"] == "original"
    assert valid.loc["d0022", "timestamp"] == t2


def test_unparseable_values_in_csv_are_quarantined_with_their_raw_text(tmp_path: Path) -> None:
    frames = tiny_frames()
    dec = frames["decisions"].astype({"timestamp": object, "input_tokens": object})
    dec.loc[3, "timestamp"] = "not-a-date"
    dec.loc[4, "input_tokens"] = "12.5"  # not a whole number
    dec.loc[5, "confidence"] = np.nan  # empty cell in CSV: null, allowed
    dec = _set(dec, 6, completed="maybe")
    dec["timestamp"] = dec["timestamp"].astype(str)
    frames["decisions"] = dec
    data = _load(tmp_path / "p", frames, files={"decisions": "decisions.csv"})

    q = _quarantine(tmp_path / "p", "decisions").set_index("decision_id")
    assert q[QUARANTINE_RULE_COLUMN].to_dict() == {
        "d0003": "unparseable timestamp",
        "d0004": "unparseable input_tokens",
        "d0006": "unparseable completed",
    }
    assert q.loc["d0003", "timestamp"] == "not-a-date"  # the value as it came in
    assert q.loc["d0004", "input_tokens"] == "12.5"
    assert data.checks["decisions"].valid == 37
    schema = data.decisions.schema()
    assert schema["timestamp"].is_timestamp()
    assert schema["input_tokens"].is_integer()
    assert schema["completed"].is_boolean()


def test_timestamp_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    frames = tiny_frames()
    dec = frames["decisions"].copy()
    dec["timestamp"] = dec["timestamp"].astype(str)
    dec.loc[0, "timestamp"] = "2026-03-10T12:00:00+02:00"
    dec.loc[1, "timestamp"] = "2026-03-10T12:00:00Z"
    frames["decisions"] = dec
    data = _load(tmp_path / "p", frames, files={"decisions": "decisions.jsonl"})
    got = (
        data.decisions.filter(data.decisions.decision_id.isin(["d0000", "d0001"]))
        .order_by("decision_id")
        .timestamp.to_pandas()
        .tolist()
    )
    assert got == [pd.Timestamp("2026-03-10 10:00:00"), pd.Timestamp("2026-03-10 12:00:00")]


CASE_BREAKS: list[tuple[str, Breaker, dict[str, str]]] = [
    (
        "cases",
        lambda f: _set(
            _set(
                _set(f, 0, closed_at=f.loc[0, "opened_at"] - pd.Timedelta(minutes=1)),
                1,
                cohort="pilot",
            ),
            3,
            opened_at=pd.Timestamp("2026-01-01 09:00"),
        ),
        {
            "c000": "closed_at before opened_at",
            "c001": "unknown cohort",
            "c003": "opened_at outside pilot_window",
        },
    ),
    (
        "cases",
        lambda f: _set(
            _set(
                f, 2, opened_at=pd.Timestamp(PILOT_START) + pd.Timedelta(hours=1), closed_at=pd.NaT
            ),
            5,
            opened_at=pd.NaT,
        ),
        {"c002": "opened_at outside baseline_window", "c005": "null opened_at"},
    ),
    (
        "cases",
        lambda f: pd.concat(
            [f, f.iloc[[4]].assign(opened_at=f.loc[4, "opened_at"] + pd.Timedelta(1, "h"))]
        ),
        {"c004@1": "duplicate case_id"},
    ),
    (
        "adoption",
        lambda f: _set(
            _set(_set(f, 0, overrides=20), 1, week=dt.date(2026, 3, 4)),
            2,
            decisions_seen=-1,
        ),
        {
            "u0|2026-03-02": "overrides greater than decisions_seen",
            "u1|2026-03-04": "week not a Monday",
            "u2|2026-03-02": "negative decisions_seen",
        },
    ),
    (
        "adoption",
        lambda f: pd.concat(
            [
                _set(f, 3, week=dt.date(2026, 4, 6)),
                f.iloc[[4]].assign(engaged=False),
                pd.DataFrame([{**f.iloc[5].to_dict(), "week": dt.date(2026, 2, 23)}]),
            ],
            ignore_index=True,
        ),
        {
            "u3|2026-04-06": "week outside pilot_window",
            "u0|2026-03-09@1": "duplicate (user_id, week)",
            "u1|2026-02-23": "week outside pilot_window",
        },
    ),
    (
        "approvals",
        lambda f: _set(
            _set(
                _set(
                    _set(_set(f, 0, required_level="ceo"), 1, approver_level="intern"),
                    2,
                    decided_at=f.loc[2, "proposed_at"] - pd.Timedelta(minutes=5),
                ),
                3,
                decision="maybe",
            ),
            4,
            amount=-10.0,
        ),
        {
            "a-0": "unknown required_level",
            "a-1": "unknown approver_level",
            "a-2": "decided_at before proposed_at",
            "a-3": "unknown decision",
            "a-4": "negative amount",
        },
    ),
    (
        "approvals",
        lambda f: pd.concat(
            [f, f.iloc[[5]].assign(proposed_at=f.loc[5, "proposed_at"] - pd.Timedelta(1, "h"))]
        ),
        {"a-5@0": "duplicate action_id"},  # the original is proposed later: it goes
    ),
    (
        "candidates",
        lambda f: pd.concat(
            [_set(_set(f, 0, impact_score=6), 1, weekly_volume=-5.0), f.iloc[[2]]],
            ignore_index=True,
        ),
        {
            "claims triage": "impact_score outside 1-5",
            "invoice matching": "negative weekly_volume",
            "chat demo@1": "duplicate name",
        },
    ),
    (
        "drill_events",
        lambda f: _set(_set(f, 1, timestamp=pd.NaT), 2, event="coffee"),  # unknown event kept
        {"drill-1|action_started|NaT": "null timestamp"},
    ),
]


def _occurrence_keys(frame: pd.DataFrame, name: str) -> list[str]:
    """Row keys; the 2nd, 3rd... row with the same key gets '@1', '@2'... in file order."""
    keys = _key(frame, name).tolist()
    seen: dict[str, int] = {}
    out = []
    for k in keys:
        n = seen.get(k, 0)
        seen[k] = n + 1
        out.append(k if n == 0 else f"{k}@{n}")
    return out


@pytest.mark.parametrize(("name", "breaker", "expected"), CASE_BREAKS)
def test_rules_of_other_data_sets(
    tmp_path: Path, name: str, breaker: Breaker, expected: dict[str, str]
) -> None:
    frames = tiny_frames()
    broken = breaker(frames[name]).reset_index(drop=True)
    broken["row_key"] = _occurrence_keys(broken, name)
    frames[name] = broken
    data = _load(tmp_path / "p", frames)

    q = _quarantine(tmp_path / "p", name)
    got = dict(zip(q["row_key"], q[QUARANTINE_RULE_COLUMN], strict=True))
    # a key without '@' that appears duplicated means "either copy": compare bare keys too
    assert {k.split("@")[0]: v for k, v in got.items()} == {
        k.split("@")[0]: v for k, v in expected.items()
    }
    valid_keys = data.table(name).select("row_key").to_pandas()["row_key"].tolist()
    assert sorted(valid_keys + list(got)) == sorted(broken["row_key"])  # nothing lost, no overlap
    check = data.checks[name]
    assert check.rows == len(broken)
    assert check.valid + check.quarantined == check.rows
    assert check.quarantined == len(expected)


def test_duplicate_keys_are_resolved_by_the_time_column(tmp_path: Path) -> None:
    # approvals: the copy proposed earlier is kept even though it comes later in the file
    frames = tiny_frames()
    ap = frames["approvals"].copy()
    ap["marker"] = "original"
    earlier = ap.iloc[[5]].assign(
        proposed_at=ap.loc[5, "proposed_at"] - pd.Timedelta(hours=1), marker="earlier"
    )
    frames["approvals"] = pd.concat([ap, earlier], ignore_index=True)
    data = _load(tmp_path / "p", frames)
    kept = data.approvals.filter(data.approvals.action_id == "a-5").marker.to_pandas().tolist()
    assert kept == ["earlier"]


def test_nothing_is_lost_across_all_data_sets(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["tool_calls"] = tiny_tool_calls(frames["decisions"])
    frames["decisions"] = _decision_rows(frames["decisions"])
    data = _load(tmp_path / "p", frames)
    report = data.report()
    assert report["data set"].tolist() == [n for n in DATASET_NAMES if n in frames]
    for row in report.itertuples(index=False):
        assert row.rows == len(frames[row[0]])
        assert row.valid + row.quarantined == row.rows
        assert data.table(row[0]).count().to_pyarrow().as_py() == row.valid
    summary = data.quarantine_summary()
    assert summary.columns.tolist() == ["data set", "rule", "rows"]
    assert summary["rows"].sum() == report["quarantined"].sum() == len(DECISION_RULES)
    assert set(summary["data set"]) == {"decisions"}


def test_clean_pilot_writes_no_quarantine_file(tiny_pilot: Path, tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    data = load_pilot_data(tiny_pilot, quarantine_dir=qdir)
    assert data.report()["quarantined"].sum() == 0
    assert all(c.quarantine_path is None for c in data.checks.values())
    assert not qdir.exists() or not any(qdir.iterdir())
    assert data.quarantine_summary().empty


def test_quarantine_file_holds_rows_and_reason(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["decisions"] = _set(frames["decisions"], 7, confidence=2.0)
    data = _load(tmp_path / "p", frames)
    path = data.checks["decisions"].quarantine_path
    assert path == tmp_path / "p" / "quarantine" / "decisions.parquet"
    q = pd.read_parquet(path)
    assert q.columns[0] == QUARANTINE_RULE_COLUMN
    assert set(frames["decisions"].columns) <= set(q.columns)
    assert q[QUARANTINE_RULE_COLUMN].tolist() == ["confidence outside [0, 1]"]
    assert q["decision_id"].tolist() == ["d0007"]
    assert q["confidence"].tolist() == [2.0]
    # the same rows are available without a file, from the engine
    assert data.quarantined("decisions").count().to_pyarrow().as_py() == 1


def test_missing_column_names_data_set_file_and_column(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["decisions"] = frames["decisions"].drop(columns=["confidence", "escalated"])
    write_pilot(tmp_path / "p", frames)
    with pytest.raises(ContractError) as info:
        load_pilot_data(tmp_path / "p")
    msg = str(info.value)
    assert "'decisions'" in msg
    assert "decisions.parquet" in msg
    assert "'confidence'" in msg and "'escalated'" in msg
    assert "found" in msg and "'decision_id'" in msg


def test_optional_column_may_be_absent(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["candidates"] = frames["candidates"].drop(columns=["notes"])
    frames["drill_events"] = frames["drill_events"].drop(columns=["detail"])
    data = _load(tmp_path / "p", frames)
    assert data.candidates.notes.isnull().all().to_pyarrow().as_py()
    assert data.checks["drill_events"].valid == 6


def test_valid_rows_pass_panderas_own_validation(tmp_path: Path) -> None:
    """An independent check: pandera's Ibis backend accepts every valid table as is."""
    frames = tiny_frames()
    frames["tool_calls"] = tiny_tool_calls(frames["decisions"])
    frames["decisions"] = _decision_rows(frames["decisions"])
    data = _load(tmp_path / "p", frames)
    # policy_versions' rules judge a version's rows together (window functions), which
    # pandera's Ibis backend cannot aggregate (DuckDB: no window inside an aggregate);
    # tests/test_authority.py checks them on planted bad versions instead.
    for name in (n for n in DATASET_NAMES if n in frames and n != "policy_versions"):
        schema = contract(name, data.pilot)
        validated = schema.validate(data.table(name), lazy=True)
        assert validated.count().to_pyarrow().as_py() == data.checks[name].valid
    # ...and rejects the quarantined rows
    bad = data.quarantined("decisions").drop(QUARANTINE_RULE_COLUMN)
    typed = validate_dataset("decisions", bad).checked.select(*contract_columns("decisions"))
    with pytest.raises(SchemaErrors):
        contract("decisions", data.pilot).validate(typed, lazy=True)


def test_pilot_data_without_a_data_set(tmp_path: Path) -> None:
    frames = tiny_frames()
    del frames["candidates"], frames["approvals"]
    data = _load(tmp_path / "p", frames)
    assert data.candidates is None and data.approvals is None
    assert data.report()["data set"].tolist() == [
        "decisions",
        "cases",
        "adoption",
        "drill_events",
        "policy_versions",
    ]
    with pytest.raises(KeyError):
        data.table("no_such_set")


def test_reusing_a_connection_keeps_earlier_tables(tmp_path: Path) -> None:
    con = ibis.duckdb.connect()
    first = load_pilot_data(write_pilot(tmp_path / "a"), con=con)
    frames = tiny_frames(n_decisions=10)
    second = load_pilot_data(write_pilot(tmp_path / "b", frames), con=con)
    assert first.decisions.count().to_pyarrow().as_py() == 40
    assert second.decisions.count().to_pyarrow().as_py() == 10


def test_check_predicate_uses_the_pandera_check() -> None:
    table = ibis.memtable({"x": [-1.0, 0.0, 0.5, 1.0, 2.0, None]})
    pred = check_predicate(pa.Check.in_range(0, 1), table, "x")
    got = table.mutate(ok=pred).ok.to_pandas().tolist()
    assert got[:5] == [False, True, True, True, False]
    assert pd.isna(got[5])
    isin = check_predicate(pa.Check.isin(["a"]), ibis.memtable({"s": ["a", "b"]}), "s")
    assert isin.to_pandas().tolist() == [True, False]
    with pytest.raises(ContractError, match="element-wise"):
        check_predicate(pa.Check(lambda v: v > 0, element_wise=True), table, "x")
    with pytest.raises(ContractError, match="boolean"):
        check_predicate(pa.Check(lambda d: d.table.x + 1), table, "x")


def test_every_contract_matches_the_documentation() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "data-contracts.md").read_text(encoding="utf-8")
    for name, schema in CONTRACTS.items():
        section = doc.split(f"## {name} ")[1].split("\n## ")[0]
        documented = [
            line.split("|")[1].strip()
            for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| column")
        ]
        documented = [c for c in documented if not c.startswith("*")]
        assert documented == list(schema.columns), name
        for line in section.splitlines():
            if not line.startswith("| ") or line.startswith("| column"):
                continue
            cells = [c.strip() for c in line.split("|")[1:-1]]
            if cells[0].startswith("*"):
                continue
            col = schema.columns[cells[0]]
            assert cells[3].startswith("yes") == col.nullable, (name, cells[0])
            doc_type = {
                "string": "string",
                "timestamp": "timestamp",
                "bool": "boolean",
                "float": "float64",
                "int": "int64",
                "date": "date",
            }[cells[1]]
            assert str(col.dtype.type).startswith(doc_type), (name, cells[0])


def test_rules_without_a_pilot_skip_the_windows(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["decisions"] = _set(frames["decisions"], 0, timestamp=pd.Timestamp("2030-01-01"))
    table = ibis.memtable(frames["decisions"])
    assert validate_dataset("decisions", table).quarantined.count().to_pyarrow().as_py() == 0
    pilot = load_pilot(write_pilot(tmp_path / "p", frames))
    split = validate_dataset("decisions", table, pilot)
    rules = split.quarantined[QUARANTINE_RULE_COLUMN].to_pandas().tolist()
    assert rules == ["timestamp outside pilot_window"]


@pytest.mark.parametrize("file_name", ["decisions.parquet", "decisions.csv"])
def test_empty_data_set_counts_zero(tmp_path: Path, file_name: str) -> None:
    frames = tiny_frames()
    frames["decisions"] = frames["decisions"].iloc[:0]
    data = _load(tmp_path / "p", frames, files={"decisions": file_name})
    check = data.checks["decisions"]
    assert (check.rows, check.valid, check.quarantined) == (0, 0, 0)
    assert check.by_rule.empty
    assert data.decisions.count().to_pyarrow().as_py() == 0
    assert data.decisions.schema()["timestamp"].is_timestamp()


# ---- rows that contradict themselves, and flags ----------------------------------------------


def test_rows_that_contradict_themselves_are_quarantined(tmp_path: Path) -> None:
    frames = tiny_frames()
    f = frames["decisions"].copy()
    f = _set(f, 1, escalated=False, escalation_reason="missing_data")
    f = _set(f, 2, completed=False, accepted=True, overridden=False)
    f = _set(f, 3, completed=True, accepted=True, overridden=True)
    # not contradictions: escalated and then accepted; completed, not accepted, overridden
    f = _set(f, 4, escalated=True, escalation_reason="out_of_scope", accepted=True)
    f = _set(f, 5, completed=True, accepted=False, overridden=True)
    f = _set(f, 4, completed=True, overridden=False)
    f["marker"] = [f"row{i}" for i in range(len(f))]
    frames["decisions"] = f
    a = frames["adoption"].copy()
    a = _set(a, 0, eligible=False, engaged=True)
    a = _set(a, 1, engaged=True, decisions_seen=0, overrides=0)
    a = _set(a, 2, eligible=False, engaged=False, decisions_seen=3, overrides=0)  # a flag
    frames["adoption"] = a
    data = _load(tmp_path / "p", frames)

    q = _quarantine(tmp_path / "p", "decisions")
    assert dict(zip(q["marker"], q[QUARANTINE_RULE_COLUMN], strict=True)) == {
        "row1": "escalation_reason without escalated",
        "row2": "accepted without completed",
        "row3": "accepted and overridden",
    }
    qa = _quarantine(tmp_path / "p", "adoption")
    assert sorted(qa[QUARANTINE_RULE_COLUMN]) == [
        "engaged without decisions_seen",
        "engaged without eligible",
    ]
    assert data.checks["adoption"].flags == {"decisions_seen while not eligible": 1}


def test_flagged_rows_are_kept_and_counted(tmp_path: Path) -> None:
    frames = tiny_frames()
    f = frames["decisions"].copy()
    f.loc[f["escalation_reason"].eq("low_confidence"), "confidence"] = 0.5
    f = _set(f, 7, escalated=True, escalation_reason="low_confidence", confidence=0.7)
    f = _set(f, 8, escalated=True, escalation_reason="low_confidence", confidence=0.95)
    frames["decisions"] = f
    ap = frames["approvals"].copy()
    ap = _set(ap, 0, executed_at=ap.loc[0, "proposed_at"] - pd.Timedelta(minutes=1))
    frames["approvals"] = ap
    data = _load(tmp_path / "p", frames)
    # independent count: low_confidence reason at or above the pilot's 0.7 threshold
    expected = int((f["escalation_reason"].eq("low_confidence") & (f["confidence"] >= 0.7)).sum())
    assert expected == 2
    flags = data.checks["decisions"].flags
    assert flags == {"low_confidence escalation at or above confidence_threshold": expected}
    assert data.checks["decisions"].quarantined == 0  # kept: flags never quarantine
    assert data.checks["approvals"].flags == {"executed_at before proposed_at": 1}
    assert data.checks["approvals"].quarantined == 0
    summary = data.flag_summary()
    assert summary.to_dict(orient="records") == [
        {
            "data set": "decisions",
            "flag": "low_confidence escalation at or above confidence_threshold",
            "rows": 2,
        },
        {"data set": "approvals", "flag": "executed_at before proposed_at", "rows": 1},
    ]

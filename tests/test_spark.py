"""The analysis runs on Spark through Ibis' PySpark backend, with the same results as DuckDB.

One local SparkSession serves the whole module. Each test puts the same data in
front of both engines (files read by Spark, or tables in the Spark catalog) and
checks that contracts, KPIs, drift, control-chart inputs and calibration agree
with the DuckDB path, which the other test modules check against independent
computations. The quarantine tests also check Spark against the hand-written
expectations of ``test_contracts``.

Skipped when pyspark is not installed (``pip install -e ".[spark]"``) or no Java
runtime is found.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml


def _java_runtime() -> str | None:
    """The ``java`` executable Spark would start: ``$JAVA_HOME/bin/java`` or ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("java")


pytestmark = [
    pytest.mark.spark,
    # pyspark 4.3 passes copy= to pandas 3's astype when it converts results
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

pytest.importorskip(
    "pyspark", reason="pyspark is not installed (the 'spark' extra: pip install -e '.[spark]')"
)
if _java_runtime() is None:
    pytest.skip(
        "no Java runtime for Spark (set JAVA_HOME or put java on PATH)", allow_module_level=True
    )

import ibis  # noqa: E402
import ibis.expr.operations as ops  # noqa: E402
from conftest import tiny_frames, write_frame, write_pilot  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from test_contracts import (  # noqa: E402  (same broken rows and expected rules as there)
    CASE_BREAKS,
    DECISION_RULES,
    _decision_rows,
    _occurrence_keys,
    _set,
)

from pilot_lib.analysis.calibration import expected_calibration_error  # noqa: E402
from pilot_lib.analysis.drift import drift_windows, feature_drift  # noqa: E402
from pilot_lib.analysis.gate import evaluate_gate  # noqa: E402
from pilot_lib.analysis.integrity import check_thresholds  # noqa: E402
from pilot_lib.analysis.kpis import compute_kpis, compute_kpis_from_tables  # noqa: E402
from pilot_lib.analysis.spc import daily_escalation, prompt_version_rates  # noqa: E402
from pilot_lib.config import DATASET_NAMES, EngineSettings, Pilot, load_pilot  # noqa: E402
from pilot_lib.errors import DataSourceError  # noqa: E402
from pilot_lib.ingest.contracts import (  # noqa: E402
    QUARANTINE_RULE_COLUMN,
    PilotData,
    load_pilot_data,
    validate_dataset,
)
from pilot_lib.ingest.engine import connect_engine  # noqa: E402
from pilot_lib.ingest.sources import connect  # noqa: E402
from pilot_lib.ingest.store import build_store, open_store  # noqa: E402
from pilot_lib.phases import (  # noqa: E402
    drift_phase,
    incident_phase,
    kpi_phase,
    use_case_phase,
)
from pilot_lib.results import to_jsonable  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "pilots"
CLAIMS_AUTO = SAMPLES / "claims-auto"

#: Key columns per data set, to line rows up across engines.
KEYS = {
    "candidates": ["name"],
    "decisions": ["decision_id"],
    "cases": ["case_id"],
    "adoption": ["user_id", "week"],
    "drill_events": ["drill_id", "event", "timestamp"],
    "approvals": ["action_id"],
    "tool_calls": ["call_id"],
    "policy_versions": ["policy_version", "level"],
    "golden_evaluations": ["prompt_version", "golden_case_id"],
    "feedback": ["feedback_id"],
}

RTOL = 1e-9  # engines add floating-point sums in different orders


# ---- the Spark session and engine-agnostic comparisons ---------------------------------------


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One small local Spark session for the module (2 threads, no UI, UTC, own warehouse)."""
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("pilot-workbook-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        # a short-lived JVM: the quick JIT tier and the serial GC halve its CPU time
        .config(
            "spark.driver.extraJavaOptions",
            "-Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        )
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def spark_con(spark: SparkSession) -> Any:
    """An Ibis PySpark backend over the module's session."""
    return ibis.pyspark.connect(spark)


def _assert_same(a: Any, b: Any, where: str = "result") -> None:
    """Equal results from two engines: frames and numbers up to RTOL, the rest exactly."""
    if isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), where
        pd.testing.assert_frame_equal(
            a.reset_index(drop=True),
            b.reset_index(drop=True),
            check_dtype=False,
            rtol=RTOL,
            obj=where,
        )
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_dtype=False, rtol=RTOL, obj=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, (float, np.floating)):
        if math.isnan(a):
            assert math.isnan(float(b)), where
        else:
            assert math.isclose(a, float(b), rel_tol=RTOL, abs_tol=1e-12), f"{where}: {a} != {b}"
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=RTOL, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _rows(table: Any, name: str) -> pd.DataFrame:
    """All rows of a small table or frame, ordered by its key (same order on every engine).

    Columns are sorted by name: Spark's JSON reader orders them alphabetically.
    """
    frame = table if isinstance(table, pd.DataFrame) else table.to_pandas()
    frame = frame[sorted(frame.columns)]
    order = [*KEYS[name], *[c for c in frame.columns if c not in KEYS[name]]]
    return frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


def _assert_same_pilot_data(
    on_spark: PilotData, on_duckdb: PilotData, quarantine_dirs: tuple[Path, Path] | None = None
) -> None:
    """Same counts per data set and rule, same valid rows; same quarantine files if given."""
    spark_report = on_spark.report().drop(columns="source")
    assert spark_report.equals(on_duckdb.report().drop(columns="source"))
    assert on_spark.quarantine_summary().equals(on_duckdb.quarantine_summary())
    for name in on_duckdb.checks:
        _assert_same(
            _rows(on_spark.table(name), name), _rows(on_duckdb.table(name), name), f"valid {name}"
        )
        if quarantine_dirs is None:
            continue
        spark_file, duckdb_file = (folder / f"{name}.parquet" for folder in quarantine_dirs)
        assert spark_file.exists() == duckdb_file.exists(), name
        if duckdb_file.exists():
            assert spark_file.is_file(), name  # one file (Spark's own writer makes a folder)
            got = _rows(pd.read_parquet(spark_file), name)
            expected = _rows(pd.read_parquet(duckdb_file), name)
            # raw values as each reader typed them (Spark's CSV reader infers dates): as text
            keys = KEYS[name]
            _assert_same(got[keys].astype(str), expected[keys].astype(str), f"quarantined {name}")
            _assert_same(
                got[QUARANTINE_RULE_COLUMN], expected[QUARANTINE_RULE_COLUMN], f"rules {name}"
            )


def _write_pilot_doc(folder: Path, datasets: dict[str, dict[str, str]]) -> Path:
    """A valid pilot file in ``folder`` whose ``datasets`` are exactly ``datasets``."""
    write_pilot(folder, {})
    doc = yaml.safe_load((folder / "pilot.yaml").read_text(encoding="utf-8"))
    doc["datasets"] = datasets
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return folder


# ---- contracts: the engine-side quarantine split ---------------------------------------------


def _broken_frames() -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Tiny frames with rows that break rules in every data set, and the expected rules.

    Decisions get ``test_contracts._decision_rows``; every other data set gets the first
    of its cases in ``test_contracts.CASE_BREAKS``. Rows carry a ``row_key`` column.
    """
    frames = tiny_frames()
    expected: dict[str, dict[str, str]] = {}
    decisions = _decision_rows(frames["decisions"])
    decisions["row_key"] = [f"row{i}" for i in range(len(decisions))]
    frames["decisions"] = decisions
    expected["decisions"] = {f"row{i}": rule for i, rule in DECISION_RULES.items()}
    for name, breaker, rules in CASE_BREAKS:
        if name in expected:
            continue
        broken = breaker(frames[name]).reset_index(drop=True)
        broken["row_key"] = _occurrence_keys(broken, name)
        frames[name] = broken
        expected[name] = rules
    return frames, expected


@pytest.fixture(scope="module")
def broken_pilot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A pilot folder (Parquet and CSV files) with bad rows in every data set."""
    frames, expected = _broken_frames()
    folder = write_pilot(tmp_path_factory.mktemp("broken") / "pilot", frames)
    return folder, expected


def test_quarantine_on_spark_sends_the_same_rows_for_the_same_rules(
    spark_con: Any, broken_pilot: tuple[Path, dict[str, dict]], tmp_path: Path
) -> None:
    folder, expected = broken_pilot
    dirs = (tmp_path / "spark", tmp_path / "duckdb")
    on_spark = load_pilot_data(folder, con=spark_con, quarantine_dir=dirs[0])
    on_duckdb = load_pilot_data(folder, quarantine_dir=dirs[1])

    # the files were read by Spark, not by DuckDB
    named = [n for n in DATASET_NAMES if n in expected]
    assert {on_spark.table(n).get_backend().name for n in named} == {"pyspark"}
    for name in named:
        q = pd.read_parquet(dirs[0] / f"{name}.parquet")
        got = dict(zip(q["row_key"], q[QUARANTINE_RULE_COLUMN], strict=True))
        # a duplicated key: either copy may be named in the expectation, as in test_contracts
        assert {k.split("@")[0]: v for k, v in got.items()} == {
            k.split("@")[0]: v for k, v in expected[name].items()
        }, name
        check = on_spark.checks[name]
        assert check.valid + check.quarantined == check.rows
    _assert_same_pilot_data(on_spark, on_duckdb, dirs)


def test_validate_dataset_split_on_a_spark_table(
    spark: SparkSession, spark_con: Any, broken_pilot: tuple[Path, dict[str, dict]]
) -> None:
    # validate_dataset alone, on a table of the Spark catalog
    folder, expected = broken_pilot
    spark.read.parquet(str(folder / "decisions.parquet")).createOrReplaceTempView("raw_decisions")
    split = validate_dataset("decisions", spark_con.table("raw_decisions"), load_pilot(folder))
    rules = split.quarantined.select("row_key", QUARANTINE_RULE_COLUMN).to_pandas()
    assert (
        dict(zip(rules["row_key"], rules[QUARANTINE_RULE_COLUMN], strict=True))
        == (expected["decisions"])
    )
    assert split.valid.count().to_pyarrow().as_py() == 40 - len(expected["decisions"])


@pytest.mark.parametrize("extension", ["csv", "jsonl"])
def test_text_files_read_by_spark_type_and_quarantine_like_duckdb(
    spark_con: Any, tmp_path: Path, extension: str
) -> None:
    frames = tiny_frames()
    dec = frames["decisions"].astype({"timestamp": object, "input_tokens": object})
    dec.loc[3, "timestamp"] = "not-a-date"
    dec.loc[4, "input_tokens"] = "12.5"  # not a whole number
    dec = _set(dec, 6, completed="maybe")
    dec["timestamp"] = dec["timestamp"].astype(str)
    dec.loc[0, "timestamp"] = "2026-03-10T12:00:00+02:00"  # offsets become UTC
    dec.loc[1, "timestamp"] = "2026-03-10T12:00:00Z"
    folder = write_pilot(
        tmp_path / "p",
        {"decisions": dec, "cases": frames["cases"]},
        files={"decisions": f"decisions.{extension}"},
    )
    dirs = (tmp_path / "spark", tmp_path / "duckdb")

    for _ in range(2):  # the second run replaces the file (Spark's own writer would refuse)
        on_spark = load_pilot_data(folder, con=spark_con, quarantine_dir=dirs[0])
    q = pd.read_parquet(dirs[0] / "decisions.parquet").set_index("decision_id")
    assert q[QUARANTINE_RULE_COLUMN].to_dict() == {
        "d0003": "unparseable timestamp",
        "d0004": "unparseable input_tokens",
        "d0006": "unparseable completed",
    }
    assert q.loc["d0003", "timestamp"] == "not-a-date"  # the value as it came in
    valid = on_spark.decisions
    schema = valid.schema()
    assert schema["timestamp"].is_timestamp() and schema["input_tokens"].is_integer()
    first_two = (
        valid.filter(valid.decision_id.isin(["d0000", "d0001"]))
        .order_by("decision_id")
        .timestamp.to_pandas()
        .tolist()
    )
    assert first_two == [pd.Timestamp("2026-03-10 10:00:00"), pd.Timestamp("2026-03-10 12:00:00")]
    on_duckdb = load_pilot_data(folder, quarantine_dir=dirs[1])
    _assert_same_pilot_data(on_spark, on_duckdb, dirs)


def _small_pilot(folder: Path) -> Path:
    """A valid pilot naming only the required data sets (decisions, cases)."""
    frames = tiny_frames()
    return write_pilot(folder, {"decisions": frames["decisions"], "cases": frames["cases"]})


def test_in_memory_override_on_spark(spark_con: Any, tmp_path: Path) -> None:
    # Spark has no temporary tables: the DataFrame becomes a temporary view
    folder = _small_pilot(tmp_path / "p")
    frame = _set(tiny_frames()["decisions"], 2, confidence=1.5)
    data = load_pilot_data(folder, con=spark_con, overrides={"decisions": frame})
    assert data.decisions.get_backend().name == "pyspark"
    assert data.quarantine_summary().values.tolist() == [
        ["decisions", "confidence outside [0, 1]", 1]
    ]


def test_unreadable_file_on_spark_is_a_data_source_error(spark_con: Any, tmp_path: Path) -> None:
    folder = _small_pilot(tmp_path / "p")
    (folder / "cases.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataSourceError) as info:
        load_pilot_data(folder, con=spark_con)
    message = str(info.value)
    assert "'cases'" in message and "cases.parquet" in message


# ---- the pilot-file route: data sets stored as Spark tables ----------------------------------


def test_pilot_file_uri_names_spark_tables(
    spark: SparkSession, spark_con: Any, tmp_path: Path
) -> None:
    frames = tiny_frames()
    frames = {"decisions": _decision_rows(frames["decisions"]), "cases": frames["cases"]}
    spark.sql("CREATE DATABASE IF NOT EXISTS pilot_tables")
    for name, frame in frames.items():  # Parquet files -> managed tables in the warehouse
        path = tmp_path / f"{name}.parquet"
        write_frame(frame, path)
        spark.read.parquet(str(path)).write.mode("overwrite").saveAsTable(f"pilot_tables.{name}")
    expected = load_pilot_data(write_pilot(tmp_path / "files", frames))
    folder = _write_pilot_doc(
        tmp_path / "spark", {n: {"uri": "pyspark://", "table": f"pilot_tables.{n}"} for n in frames}
    )

    # con = the Spark backend: `pyspark://` names that very connection
    on_spark = load_pilot_data(folder, con=spark_con)
    assert on_spark.decisions.get_backend() is spark_con
    _assert_same_pilot_data(on_spark, expected)
    assert on_spark.checks["decisions"].quarantined == len(DECISION_RULES)

    # the default DuckDB connection: `pyspark://` attaches to the active Spark session
    via_url = load_pilot_data(folder)
    assert via_url.decisions.get_backend().name == "pyspark"
    _assert_same_pilot_data(via_url, expected)


def test_missing_spark_table_names_the_data_set_and_table(spark_con: Any, tmp_path: Path) -> None:
    folder = _write_pilot_doc(
        tmp_path / "p",
        {n: {"uri": "pyspark://", "table": f"no_such_db.{n}"} for n in ("decisions", "cases")},
    )
    with pytest.raises(DataSourceError, match=r"'decisions'.*no_such_db\.decisions.*\.table"):
        load_pilot_data(folder, con=spark_con)


# ---- the analysis on claims-auto: Spark vs DuckDB --------------------------------------------


@pytest.fixture(scope="module")
def claims_auto(
    spark_con: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Pilot, PilotData, PilotData]:
    """The bundled claims-auto pilot, its files read by Spark and by DuckDB."""
    pilot = load_pilot(CLAIMS_AUTO)
    qdir = tmp_path_factory.mktemp("claims-auto-quarantine")
    on_spark = load_pilot_data(pilot, con=spark_con, quarantine_dir=qdir / "spark")
    on_duckdb = load_pilot_data(pilot, con=connect(), quarantine_dir=qdir / "duckdb")
    return pilot, on_spark, on_duckdb


def test_claims_auto_contracts_agree(claims_auto: tuple[Pilot, PilotData, PilotData]) -> None:
    _, on_spark, on_duckdb = claims_auto
    assert on_spark.report().equals(on_duckdb.report())
    assert on_spark.quarantine_summary().equals(on_duckdb.quarantine_summary())
    assert on_spark.report()["quarantined"].sum() > 0  # the sample's deliberately bad rows


def test_kpis_on_spark_match_duckdb(claims_auto: tuple[Pilot, PilotData, PilotData]) -> None:
    pilot, on_spark, on_duckdb = claims_auto
    got = compute_kpis_from_tables(
        pilot, on_spark.decisions, cases=on_spark.cases, adoption=on_spark.adoption
    )
    _assert_same(got, compute_kpis(pilot, on_duckdb), "KpiTable")
    for kpi in ("task_completion_rate", "efficiency_gain", "adoption_rate", "cost_per_decision"):
        assert got.kpi(kpi)["n"] > 0, kpi  # not an empty comparison


def test_feature_drift_on_spark_matches_duckdb(
    claims_auto: tuple[Pilot, PilotData, PilotData],
) -> None:
    pilot, on_spark, on_duckdb = claims_auto
    spark_windows = drift_windows(on_spark.decisions, pilot)
    features, bins = pilot.drift.features, pilot.drift.bins
    got = feature_drift(*spark_windows, features, bins=bins)
    expected = feature_drift(*drift_windows(on_duckdb.decisions, pilot), features, bins=bins)
    _assert_same(got, expected, "feature_drift")
    assert got["psi"].max() > 0.1  # the sample's drift episode is in the comparison

    # Spark's approximate quantiles (percentile_approx) work too; the counts stay exact
    approx = feature_drift(*spark_windows, ["claim_amount"], bins=bins, quantiles="approx")
    exact = got.set_index("feature").loc[["claim_amount"]]
    assert approx[["n_reference", "n_current"]].values.tolist() == (
        exact[["n_reference", "n_current"]].values.tolist()
    )
    assert approx["n_bins"].iloc[0] > 1 and np.isfinite(approx["psi"].iloc[0])


def test_control_chart_inputs_on_spark_match_duckdb(
    claims_auto: tuple[Pilot, PilotData, PilotData],
) -> None:
    pilot, on_spark, on_duckdb = claims_auto
    got = daily_escalation(on_spark.decisions, pilot.pilot_window)
    _assert_same(got, daily_escalation(on_duckdb.decisions, pilot.pilot_window), "daily")
    assert len(got) == (pilot.pilot_window.end - pilot.pilot_window.start).days + 1

    rates = prompt_version_rates(on_spark.decisions)
    _assert_same(rates, prompt_version_rates(on_duckdb.decisions), "prompt_version_rates")
    assert len(rates) >= 2


def test_daily_escalation_on_spark_matches_a_pandas_count(spark_con: Any) -> None:
    # independent of DuckDB: the raw file (bad rows and all) counted by pandas
    window = load_pilot(CLAIMS_AUTO).pilot_window
    raw = pd.read_parquet(CLAIMS_AUTO / "decisions.parquet", columns=["timestamp", "escalated"])
    inside = raw[(raw["timestamp"] >= window.start_ts) & (raw["timestamp"] < window.end_ts)]
    by_day = inside.groupby(inside["timestamp"].dt.normalize())["escalated"]

    table = spark_con.read_parquet(str(CLAIMS_AUTO / "decisions.parquet"))
    got = daily_escalation(table, window).set_index("day")
    days = by_day.count().index
    assert got.loc[days, "decisions"].tolist() == by_day.count().astype(int).tolist()
    assert got.loc[days, "escalated"].tolist() == by_day.sum().astype(int).tolist()
    assert int(got["decisions"].sum()) == int(by_day.count().sum())


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_calibration_on_spark_matches_duckdb(
    claims_auto: tuple[Pilot, PilotData, PilotData], strategy: str
) -> None:
    pilot, on_spark, on_duckdb = claims_auto
    bins = pilot.drift.calibration_bins
    _, current_spark = drift_windows(on_spark.decisions, pilot)
    _, current_duckdb = drift_windows(on_duckdb.decisions, pilot)
    got = expected_calibration_error(current_spark, bins=bins, strategy=strategy)
    expected = expected_calibration_error(current_duckdb, bins=bins, strategy=strategy)
    _assert_same(got, expected, f"ECE ({strategy})")
    assert got.n_used > 0 and got.ece > 0


# ---- the checked evidence store on Spark: built, opened, four phases and the gate -----------

#: The phase functions the notebooks and the runner call, in order (phase 5 is the gate).
PHASE_FUNCTIONS = {
    "use_case_scoring": use_case_phase,
    "kpi_baselining": kpi_phase,
    "drift_analysis": drift_phase,
    "incident_drill_review": incident_phase,
}
SPARK_LOCAL = EngineSettings(name="spark", master="local[2]")


@dataclasses.dataclass
class SampleRun:
    """A sample pilot's store built on one engine, opened, and every phase computed from it."""

    pilot: Pilot
    store: Path
    manifest: dict[str, Any]
    data: PilotData
    results: dict[str, Any]  # phase -> its result, as written to the result file
    gate: dict[str, Any]  # evaluate_gate(...).to_result(), as notebook 05 computes it
    seconds: dict[str, float]  # "build", "open" and each phase
    #: Spark only: every result Spark sent back to Python (build, open, phases)
    returned: list[Returned] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Returned:
    """One result a Spark query handed to Python."""

    rows: int
    aggregated: bool  # a GROUP BY / reduction (maybe sorted, limited, filtered), not rows
    tables: frozenset[str]  # the Spark tables and views it reads
    caller: str  # the pilot_lib function that asked, file:line
    capped: bool = False  # rows under a LIMIT of at most LISTING_CAP: a listing by design


#: Rows a listing may hand back (the incomplete chains a finding names: 200).
LISTING_CAP = 1000


def _capped(op: Any) -> bool:
    while isinstance(op, (ops.Sort, ops.Project, ops.Filter, ops.Limit)):
        if isinstance(op, ops.Limit) and op.n is not None and int(op.n) <= LISTING_CAP:
            return True
        op = op.parent
    return False


def _aggregated(op: Any) -> bool:
    while isinstance(op, (ops.Sort, ops.Limit, ops.Project, ops.Filter)):
        op = op.parent
    return isinstance(op, (ops.Aggregate, ops.Distinct))


@contextlib.contextmanager
def _results_from_spark() -> Iterator[list[Returned]]:
    """Record every result the Ibis PySpark backend hands to Python.

    ``execute`` is the one way a result leaves Spark (``to_pyarrow``,
    ``to_pyarrow_batches`` and ``to_pandas`` go through it).
    """
    import traceback

    from ibis.backends.pyspark import Backend

    returned: list[Returned] = []
    real = Backend.execute

    def recording(self: Any, expr: Any, /, **kwargs: Any) -> Any:
        out = real(self, expr, **kwargs)
        op = expr.as_table().op()
        caller = [f for f in traceback.extract_stack()[:-1] if "pilot_lib" in f.filename]
        returned.append(
            Returned(
                rows=len(out) if isinstance(out, (pd.DataFrame, pd.Series)) else 1,
                aggregated=_aggregated(op),
                capped=_capped(op),
                tables=frozenset(t.name for t in op.find(ops.DatabaseTable)),
                caller=(
                    f"{Path(caller[-1].filename).name}:{caller[-1].lineno} {caller[-1].name}"
                    if caller
                    else "?"
                ),
            )
        )
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Backend, "execute", recording)
        yield returned


def _run_sample(name: str, engine: EngineSettings, root: Path) -> SampleRun:
    pilot = load_pilot(SAMPLES / name)
    store_dir = root / f"{name}-{engine.name}" / "store"  # as in a run folder
    started = time.perf_counter()
    info = build_store(pilot, store_dir, engine=engine)
    seconds = {"build": time.perf_counter() - started}
    started = time.perf_counter()
    data = open_store(store_dir, pilot)
    seconds["open"] = time.perf_counter() - started
    results = {}
    for phase, compute in PHASE_FUNCTIONS.items():
        started = time.perf_counter()
        results[phase] = to_jsonable(compute(pilot, data).to_result())
        seconds[phase] = time.perf_counter() - started
    warnings, _ = check_thresholds(pilot)
    gate = to_jsonable(evaluate_gate(pilot, results, warnings).to_result())
    return SampleRun(pilot, store_dir, info.manifest, data, results, gate, seconds)


@pytest.fixture(scope="module")
def sample_runs(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[SampleRun, SampleRun]]:
    """``sample_runs(name)``: (on Spark, on DuckDB) for a bundled sample, computed once."""
    root = tmp_path_factory.mktemp("sample-stores")
    done: dict[str, tuple[SampleRun, SampleRun]] = {}

    def runs(name: str) -> tuple[SampleRun, SampleRun]:
        if name not in done:
            with _results_from_spark() as returned:
                on_spark = _run_sample(name, SPARK_LOCAL, root)
            on_spark.returned = returned
            done[name] = on_spark, _run_sample(name, EngineSettings(), root)
        return done[name]

    return runs


SAMPLE_NAMES = ("claims-auto", "it-ticket-routing")


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_store_on_spark_gives_duckdbs_decision_and_figures(
    spark: SparkSession, sample_runs: Callable[[str], tuple[SampleRun, SampleRun]], sample: str
) -> None:
    on_spark, on_duckdb = sample_runs(sample)

    # the store was built and is read by Spark, in this module's session
    assert on_spark.manifest["engine"]["name"] == "spark"
    assert on_spark.manifest["engine_label"] == "spark (local[2])"
    assert on_spark.data.con._session is spark  # connect_engine reused the running session
    assert {on_spark.data.table(n).get_backend().name for n in on_spark.data.checks} == {"pyspark"}
    for name, entry in on_spark.manifest["datasets"].items():
        written = on_spark.store / entry["file"]
        assert (written / "_SUCCESS").is_file() and list(written.glob("part-*.parquet")), name
        quarantine = entry["quarantine_file"]
        if quarantine:  # one file, whatever Spark's writer does
            assert (on_spark.store / quarantine).is_file(), name
            rows = len(pd.read_parquet(on_spark.store / quarantine))
            assert rows == entry["quarantined"], name
    counts = ("rows", "valid", "quarantined", "by_rule", "valid_columns")
    for name, entry in on_duckdb.manifest["datasets"].items():
        spark_entry = on_spark.manifest["datasets"][name]
        assert {k: spark_entry[k] for k in counts} == {k: entry[k] for k in counts}, name
        # the same quarantine columns (from a raw copy where the reader's type was not
        # the contract's: Spark reads a Parquet timestamp at another precision)
        assert list(spark_entry["quarantine_columns"]) == list(entry["quarantine_columns"])

    # every phase result, leaf by leaf (numbers to RTOL, text exactly), and the gate
    assert on_spark.gate["decision"] == on_duckdb.gate["decision"]
    _assert_same(on_spark.results, on_duckdb.results, "results")
    _assert_same(on_spark.gate, on_duckdb.gate, "gate")
    kpis = on_spark.results["kpi_baselining"]["kpis"]
    assert kpis and all(k["n"] > 0 for k in kpis)  # not an empty comparison
    assert on_spark.results["drift_analysis"] and on_spark.results["incident_drill_review"]


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_only_aggregates_come_back_from_spark(
    sample_runs: Callable[[str], tuple[SampleRun, SampleRun]], sample: str
) -> None:
    # Building, opening and the four phases: Spark sends back counts, sums, quantiles,
    # histograms, never rows of the decision log or the cases. Rows come back only from
    # the data sets that are small by design: candidates (scoring), drill events
    # (drills), approvals (the rows a finding lists), and listings capped by design (the
    # first 200 incomplete decision chains). Spark writes the quarantine itself.
    on_spark, _ = sample_runs(sample)
    small_by_design = ("candidates", "drill_events", "approvals")
    tables_of = {
        name: {t.name for t in on_spark.data.table(name).op().find(ops.DatabaseTable)}
        for name in on_spark.data.checks
    }
    logs = {n: on_spark.manifest["datasets"][n]["valid"] for n in ("decisions", "cases")}
    largest_small = max(on_spark.manifest["datasets"][n]["rows"] for n in small_by_design)
    assert on_spark.returned, "no result came back from Spark"
    rows_back = [r for r in on_spark.returned if not r.aggregated and not r.capped]
    log_tables = tables_of["decisions"] | tables_of["cases"]
    assert not [r for r in rows_back if r.tables & log_tables]
    # rows through a cached intermediate table (its lineage is not in the plan): a few
    assert all(r.rows <= largest_small for r in rows_back), rows_back
    # an aggregate over a log is far smaller than the log (bins, distinct values, days)
    assert max(r.rows for r in on_spark.returned if r.aggregated) < min(logs.values()) / 4


def _types(schema: Any) -> dict[str, Any]:
    """Column types up to nullability and timestamp precision (Spark: micro, unstated)."""
    return {
        c: (t.copy(scale=None) if t.is_timestamp() else t).copy(nullable=True)
        for c, t in schema.items()
    }


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_store_timestamps_read_back_on_spark_as_written(
    sample_runs: Callable[[str], tuple[SampleRun, SampleRun]], sample: str
) -> None:
    # Spark writes timestamps as UTC instants (INT96); read back in the session's UTC
    # they are the wall-clock values DuckDB stored, to the microsecond
    on_spark, on_duckdb = sample_runs(sample)
    compared = 0
    for name in on_duckdb.data.checks:
        spark_table, duckdb_table = on_spark.data.table(name), on_duckdb.data.table(name)
        schema = duckdb_table.schema()
        assert _types(spark_table.schema()) == _types(schema), name
        for column, dtype in schema.items():
            if not (dtype.is_timestamp() or dtype.is_date()):
                continue

            def summary(table: Any, column: str = column, dtype: Any = dtype) -> dict[str, Any]:
                col = table[column]
                aggs = {"n": col.count(), "low": col.min(), "high": col.max()}
                if dtype.is_timestamp():
                    # whole seconds: the engines round a fraction differently in
                    # epoch_seconds (tool_calls carry milliseconds, compared just below)
                    aggs["seconds"] = col.truncate("s").epoch_seconds().sum()
                    aggs["millis"] = col.millisecond().sum()
                    aggs["hours"] = col.hour().sum()
                return table.aggregate(**aggs).to_pandas().iloc[0].to_dict()

            assert summary(spark_table) == summary(duckdb_table), f"{name}.{column}"
            key = KEYS[name][0]
            first = [key, column] if key != column else [column]

            def head(table: Any, first: list[str] = first) -> pd.DataFrame:
                return table.select(*first).order_by(first).limit(5).to_pandas()

            pd.testing.assert_frame_equal(head(spark_table), head(duckdb_table), obj=name)
            compared += 1
    assert compared >= 5  # decisions, cases (2), adoption, drill events, approvals (3)


def test_text_columns_of_a_csv_keep_their_text_on_spark(
    spark: SparkSession, tmp_path: Path
) -> None:
    # Spark's CSV inference would read prompt version "1.10" as 1.1 (one version with
    # "1.1") and user "0042" as 42; the store keeps the text, as DuckDB does
    frames = tiny_frames()
    decisions = frames["decisions"].copy()
    decisions["prompt_version"] = ["1.10" if i % 2 else "1.1" for i in range(len(decisions))]
    decisions["user_id"] = [f"{i % 5:04d}" for i in range(len(decisions))]
    folder = write_pilot(
        tmp_path / "p",
        {"decisions": decisions, "cases": frames["cases"]},
        files={"decisions": "decisions.csv"},
    )
    stored = {}
    for engine in (SPARK_LOCAL, EngineSettings()):
        build_store(folder, tmp_path / engine.name, engine=engine)
        table = open_store(tmp_path / engine.name, folder).decisions
        stored[engine.name] = (
            table.group_by(["prompt_version", "user_id"])
            .aggregate(n=table.count())
            .order_by(["prompt_version", "user_id"])
            .to_pandas()
        )
    _assert_same(stored["spark"], stored["duckdb"], "text columns")
    assert set(stored["spark"]["prompt_version"]) == {"1.1", "1.10"}
    assert set(stored["spark"]["user_id"]) == {"0000", "0001", "0002", "0003", "0004"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _connect_extra_installed() -> bool:
    try:
        from pyspark.sql.connect.utils import check_dependencies

        check_dependencies()
    except Exception:
        return False
    return True


@pytest.mark.parametrize(
    "master", ["foo://bar", "local[x]", "local[0]", "spark://no-port", "sc://", "yarn-client"]
)
def test_a_bad_master_url_is_one_clear_error(spark: SparkSession, master: str) -> None:
    # checked before any session is used, so even with this module's session running
    with pytest.raises(DataSourceError) as info:
        connect_engine(EngineSettings(name="spark", master=master))
    message = str(info.value)
    assert f"{master!r} is not a Spark master URL" in message
    assert "local[*]" in message and "spark://host:7077" in message and "sc://" in message
    assert "\n" not in message


def test_an_unreachable_spark_connect_url_is_one_clear_error(spark: SparkSession) -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(DataSourceError) as info:
        connect_engine(EngineSettings(name="spark", master=f"sc://127.0.0.1:{port}"))
    message = str(info.value)
    assert f"nothing answers at 127.0.0.1:{port}" in message
    if not _connect_extra_installed():
        assert "pip install 'pyspark[connect]'" in message
    assert "\n" not in message


@pytest.mark.skipif(_connect_extra_installed(), reason="pyspark's connect extra is installed")
def _connect_extra_installed() -> bool:
    from pilot_lib.ingest.engine import _connect_extra_missing

    return _connect_extra_missing() is None


@pytest.mark.skipif(
    _connect_extra_installed(),
    reason="pyspark's connect extra is installed (the spark extra installs it): nothing missing",
)
def test_spark_connect_without_the_connect_extra_names_the_extra(spark: SparkSession) -> None:
    with socket.socket() as server:  # something answers, so only the extra is missing
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"sc://127.0.0.1:{server.getsockname()[1]}/;user_id=analyst"
        with pytest.raises(DataSourceError) as info:
            connect_engine(EngineSettings(name="spark", master=url))
    message = str(info.value)
    assert "pyspark's connect extra" in message and "pip install 'pyspark[connect]'" in message
    assert "grpcio" in message  # the package found missing
    assert "nothing answers" not in message


#: A fresh process starting Spark through the workbook, as the CLI and a kernel do.
_START_SPARK = """
import sys
from pilot_lib.config import EngineSettings
from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.engine import connect_engine
try:
    connect_engine(EngineSettings(name="spark", master=sys.argv[1]))
except DataSourceError as exc:
    print(exc)
    sys.exit(3)
print("started")
"""


def _old_java(folder: Path) -> Path:
    """A JAVA_HOME whose java says it is Java 11 (too old for Spark 4) and exits."""
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\nexit 1\n")
    java.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("JAVA_HOME without java", "no Java runtime: JAVA_HOME is {tmp}/no-java, which holds no"),
        ("no java on PATH", "no Java runtime: JAVA_HOME is not set and no java is on PATH"),
        ("Java 11", "{tmp}/java11/bin/java is Java 11"),
        ("master down", "no Spark master answers at spark://127.0.0.1:{port}"),
    ],
)
def test_spark_that_cannot_start_is_one_message_in_a_fresh_process(
    tmp_path: Path, case: str, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    master = "local[1]"
    port = _free_port()
    if case == "JAVA_HOME without java":
        (tmp_path / "no-java").mkdir()
        env["JAVA_HOME"] = str(tmp_path / "no-java")
    elif case == "no java on PATH":
        env.pop("JAVA_HOME", None)
        env["PATH"] = str(Path(sys.executable).parent)
    elif case == "Java 11":
        env["JAVA_HOME"] = str(_old_java(tmp_path / "java11"))
    else:
        master = f"spark://127.0.0.1:{port}"
    proc = subprocess.run(
        [sys.executable, "-c", _START_SPARK, master],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    message = proc.stdout.strip()
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert message.startswith("engine spark:") and "\n" not in message
    assert expected.format(tmp=tmp_path, port=port) in message
    if case != "master down":
        assert "Java 17" in message and "--engine duckdb" in message
    assert "Traceback" not in proc.stderr


def test_unreadable_input_while_building_on_spark_is_a_data_source_error(
    spark: SparkSession, tmp_path: Path
) -> None:
    # two Parquet files of one data set whose confidence column disagrees in type: Spark
    # finds out only while it writes the store (an error from inside a Spark task)
    frames = tiny_frames()
    folder = _small_pilot(tmp_path / "p")
    (folder / "decisions").mkdir()
    decisions = frames["decisions"]
    write_frame(decisions.iloc[:20], folder / "decisions" / "a.parquet")
    text = decisions.iloc[20:].astype({"confidence": str})
    write_frame(text, folder / "decisions" / "b.parquet")
    doc = yaml.safe_load((folder / "pilot.yaml").read_text(encoding="utf-8"))
    doc["datasets"]["decisions"] = {"path": "decisions/*.parquet"}
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    with pytest.raises(DataSourceError) as info:
        build_store(folder, tmp_path / "store", engine=SPARK_LOCAL)
    message = str(info.value)
    assert message.startswith("data set 'decisions' (decisions/*.parquet)")
    assert "b.parquet" in message and "confidence" in message
    assert "\tat " not in message and " at org.apache" not in message  # no Java stack trace
    assert not (tmp_path / "store").exists()  # nothing half-written


#: A phase notebook's first cell in a fresh kernel (no Spark yet), on a Spark-built store.
_PHASE_KERNEL = """
import json, sys, time
started = time.perf_counter()
from pilot_lib.phases import kpi_phase
from pilot_lib.report import notebook as nb
ctx = nb.open_phase("kpi_baselining", sys.argv[1], sys.argv[2])
opened = time.perf_counter()
result = kpi_phase(ctx.pilot, ctx.data).to_result()
done = time.perf_counter()
session = ctx.data.con._session
print(json.dumps({
    "action": ctx.store.action,
    "backends": sorted({ctx.data.table(n).get_backend().name for n in ctx.data.checks}),
    "master": session.sparkContext.master,
    "time_zone": session.conf.get("spark.sql.session.timeZone"),
    "open_seconds": opened - started,
    "phase_seconds": done - opened,
    "result": result,
}))
"""


@pytest.mark.slow
def test_a_phase_kernel_opens_a_spark_built_store_in_a_fresh_process(
    sample_runs: Callable[[str], tuple[SampleRun, SampleRun]],
    record_property: Callable[[str, Any], None],
) -> None:
    on_spark, on_duckdb = sample_runs("claims-auto")
    run_dir = on_spark.store.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["TZ"] = "America/New_York"  # the kernel's local time must not move a timestamp
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PHASE_KERNEL, "data/pilots/claims-auto", str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the kernel started its own local session from the manifest's engine and reused the store
    assert out["action"] == "reused"
    assert out["backends"] == ["pyspark"]
    assert out["master"] == "local[2]" and out["time_zone"] == "UTC"
    _assert_same(to_jsonable(out["result"]), on_duckdb.results["kpi_baselining"], "kernel KPIs")
    for key in ("open_seconds", "phase_seconds"):
        record_property(key, round(out[key], 1))
    record_property("process_seconds", round(wall, 1))
    print(
        f"fresh kernel on a Spark store: open {out['open_seconds']:.1f} s (JVM start included), "
        f"KPI phase {out['phase_seconds']:.1f} s, whole process {wall:.1f} s; in this module's "
        f"session: build {on_spark.seconds['build']:.1f} s, "
        + ", ".join(f"{p} {on_spark.seconds[p]:.1f} s" for p in PHASE_FUNCTIONS)
    )

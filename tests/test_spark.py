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

import dataclasses
import math
import os
import shutil
from collections.abc import Iterator
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
from pilot_lib.analysis.kpis import compute_kpis, compute_kpis_from_tables  # noqa: E402
from pilot_lib.analysis.spc import daily_escalation, prompt_version_rates  # noqa: E402
from pilot_lib.config import DATASET_NAMES, Pilot, load_pilot  # noqa: E402
from pilot_lib.errors import DataSourceError  # noqa: E402
from pilot_lib.ingest.contracts import (  # noqa: E402
    QUARANTINE_RULE_COLUMN,
    PilotData,
    load_pilot_data,
    validate_dataset,
)
from pilot_lib.ingest.sources import connect  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLAIMS_AUTO = REPO / "data" / "pilots" / "claims-auto"

#: Key columns per data set, to line rows up across engines.
KEYS = {
    "candidates": ["name"],
    "decisions": ["decision_id"],
    "cases": ["case_id"],
    "adoption": ["user_id", "week"],
    "drill_events": ["drill_id", "event", "timestamp"],
    "approvals": ["action_id"],
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
    assert {on_spark.table(n).get_backend().name for n in DATASET_NAMES} == {"pyspark"}
    for name in DATASET_NAMES:
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

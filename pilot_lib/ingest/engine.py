"""The engine a pilot is computed on: embedded DuckDB (default) or Spark.

The engine is chosen in the pilot file (``engine:``, see
:class:`pilot_lib.config.EngineSettings`) or on the command line
(``pilot-workbook run --engine spark``), never in code. :func:`connect_engine`
turns that choice into an Ibis connection:

- **DuckDB**: an in-process connection with a memory limit and a spill folder,
  so a decision log larger than memory is processed in bounded memory (DuckDB
  spills sorts, joins and aggregates to disk instead of growing).
- **Spark**: an Ibis PySpark backend on a Spark session: a local one
  (``master: local[*]``, the default), a cluster master URL, or a Spark Connect
  URL (``sc://host:15002``). An error while starting Spark (no Java, no pyspark,
  an unreachable master) is one :class:`~pilot_lib.errors.DataSourceError`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ibis.backends import BaseBackend

from pilot_lib.config import EngineSettings
from pilot_lib.errors import DataSourceError

__all__ = ["connect_engine", "engine_label", "resolve_engine"]

#: Default Spark master for a session the workbook starts itself.
DEFAULT_SPARK_MASTER = "local[*]"


def resolve_engine(
    settings: EngineSettings | None,
    name: str | None = None,
    master: str | None = None,
) -> EngineSettings:
    """The pilot file's engine settings with command-line overrides applied.

    ``name`` (``duckdb`` or ``spark``) replaces the engine; ``master`` the Spark
    master URL. A switch to DuckDB drops a Spark ``master`` from the pilot file.
    """
    base = settings or EngineSettings()
    fields = base.model_dump()
    if name is not None:
        if name not in ("duckdb", "spark"):
            raise DataSourceError(f"--engine takes duckdb or spark, got {name!r}")
        fields["name"] = name
        if name == "duckdb":
            fields["master"] = None
    if master is not None:
        fields["name"] = "spark"
        fields["master"] = master
    return EngineSettings.model_validate(fields)


def engine_label(settings: EngineSettings) -> str:
    """``duckdb (memory limit 1GB)`` / ``spark (local[*])``: for pages and manifests."""
    if settings.name == "spark":
        return f"spark ({settings.master or DEFAULT_SPARK_MASTER})"
    return f"duckdb (memory limit {settings.memory_limit})"


def connect_engine(
    settings: EngineSettings | None = None, spill_dir: Path | None = None
) -> BaseBackend:
    """A new Ibis connection on the chosen engine.

    ``spill_dir`` is where DuckDB writes what does not fit in its memory limit
    (``settings.spill_dir`` wins when set; default: a folder under the system's
    temporary directory). It is created when needed.
    """
    settings = settings or EngineSettings()
    if settings.name == "spark":
        return _connect_spark(settings)
    return _connect_duckdb(settings, spill_dir)


def _connect_duckdb(settings: EngineSettings, spill_dir: Path | None) -> BaseBackend:
    import ibis

    folder = Path(settings.spill_dir) if settings.spill_dir else spill_dir
    if folder is None:
        folder = Path(tempfile.gettempdir()) / f"pilot-workbook-spill-{os.getpid()}"
    con = ibis.duckdb.connect()
    con.raw_sql(f"SET memory_limit = '{settings.memory_limit.strip()}'")
    con.raw_sql(f"SET temp_directory = '{_sql_text(str(folder))}'")
    if settings.threads:
        con.raw_sql(f"SET threads = {int(settings.threads)}")
    return con


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def remove_spill(folder: Path) -> None:
    """Remove a spill folder DuckDB left behind (it holds nothing once a query ends)."""
    shutil.rmtree(folder, ignore_errors=True)


def _connect_spark(settings: EngineSettings) -> BaseBackend:
    master = settings.master or DEFAULT_SPARK_MASTER
    try:
        import ibis
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise DataSourceError(
            "engine spark: pyspark is not installed; install the spark extra "
            "(pip install 'agentic-pilot-workbook[spark]') or run with --engine duckdb"
        ) from exc
    try:
        session = _spark_session(SparkSession, master)
        return ibis.pyspark.connect(session)
    except Exception as exc:  # Java missing, master unreachable: one readable line
        first = " ".join(str(exc).split())[:300]
        raise DataSourceError(
            f"engine spark: cannot start a Spark session on {master}: "
            f"{type(exc).__name__}: {first}. A local session needs Java 17 or newer "
            "(JAVA_HOME or java on PATH); a cluster needs a reachable master URL "
            "(engine.master in the pilot file, or --spark-master)."
        ) from exc


def _spark_session(session_class: Any, master: str) -> Any:
    if master.startswith("sc://"):
        return session_class.builder.remote(master).getOrCreate()
    active = session_class.getActiveSession()
    if active is not None:
        return active
    builder = (
        session_class.builder.master(master)
        .appName("pilot-workbook")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
    )
    return builder.getOrCreate()

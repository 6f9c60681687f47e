"""The engine a pilot is computed on: embedded DuckDB (default) or Spark.

The engine is chosen in the pilot file (``engine:``, see
:class:`pilot_lib.config.EngineSettings`) or on the command line
(``pilot-workbook run --engine spark``), never in code. :func:`connect_engine`
turns that choice into an Ibis connection:

- **DuckDB**: an in-process connection with a memory limit and a spill folder,
  so a decision log larger than memory is processed in bounded memory (DuckDB
  spills sorts, joins and aggregates to disk instead of growing).
- **Spark**: an Ibis PySpark backend on a Spark session: the one already
  running in the process if there is one (a notebook's, a test's), else a new
  one on ``master``: a local one (``local[*]``, the default), a cluster master URL,
  or a Spark Connect URL (``sc://host:15002``). A session the workbook starts runs
  in UTC, without UI, progress bars or Spark's console log. An error while starting
  Spark is one :class:`~pilot_lib.errors.DataSourceError` naming its cause: a master
  URL Spark does not accept, no Java runtime or one older than 17, a master or
  Spark Connect server nothing answers at, Spark Connect without pyspark's
  ``connect`` extra (checked before a JVM starts), or Spark's own root cause.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ibis.backends import BaseBackend

from pilot_lib.config import EngineSettings
from pilot_lib.errors import DataSourceError

__all__ = [
    "SHARED_SPARK_ENV",
    "connect_engine",
    "engine_label",
    "error_text",
    "guard_memory",
    "materialize",
    "memory_error_text",
    "resolve_engine",
    "shared_spark_url",
    "spark_errors",
    "start_shared_spark",
]

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

    if settings.spill_dir:  # a folder the pilot file names: proved writable now, not mid-query
        from pilot_lib.runs import check_writable

        check_writable(
            settings.spill_dir,
            "the engine's spill folder (engine.spill_dir in the pilot file)",
            "set engine.spill_dir to a folder you can write, or remove it to use the "
            "system's temporary folder",
        )
    folder = Path(settings.spill_dir) if settings.spill_dir else spill_dir
    if folder is None:
        folder = Path(tempfile.gettempdir()) / f"pilot-workbook-spill-{os.getpid()}"
    con = ibis.duckdb.connect()
    # every query on this connection reports running out of memory as one line naming
    # engine.memory_limit (not DuckDB's "SET memory_limit" advice)
    guard_memory(con, settings.memory_limit.strip())
    # no progress bar: in a notebook DuckDB shows one as an ipywidget on any query over 2 s,
    # a widget in a cell not tagged `widgets`, with output that differs from run to run
    con.raw_sql("SET enable_progress_bar = false")
    con.raw_sql(f"SET memory_limit = '{settings.memory_limit.strip()}'")
    con.raw_sql(f"SET temp_directory = '{_sql_text(str(folder))}'")
    if settings.threads:
        con.raw_sql(f"SET threads = {int(settings.threads)}")
    return con


#: Methods of Ibis' DuckDB backend that run a query (their errors are translated).
_QUERY_METHODS = (
    "raw_sql",
    "execute",
    "to_pyarrow",
    "to_pyarrow_batches",
    "to_pandas",
    "create_table",
    "insert",
    "to_parquet",
    "to_csv",
)

_USED = re.compile(r"\(([0-9.]+ [KMGT]i?B)\s*/\s*([0-9.]+ [KMGT]i?B) used\)")


def memory_error_text(exc: BaseException, memory_limit: str | None) -> str | None:
    """One line for an engine that ran out of memory, naming ``engine.memory_limit``;
    None when ``exc`` is another error.

    DuckDB's own message ends with advice in SQL (``SET memory_limit='...GB'``,
    ``SET threads=X``) that a pilot-file user cannot apply; the line keeps what it
    could not allocate and how much was in use, and names the pilot file's settings.
    """
    import duckdb

    text = str(exc)
    if not isinstance(exc, duckdb.OutOfMemoryException) and "out of memory error" not in (
        text.lower()
    ):
        return None
    used = _USED.search(text)
    where = f" ({used.group(1)} of {used.group(2)} in use)" if used else ""
    limit = f"engine.memory_limit is {memory_limit}" if memory_limit else "engine.memory_limit"
    return (
        f"the engine ran out of memory in a query{where}: {limit}. Raise engine.memory_limit "
        "in the pilot file (engine: {memory_limit: 2GB}, within the machine's free memory), "
        "or lower engine.threads"
    )


def _guarded(method: Any) -> Any:
    import functools

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        import duckdb

        try:
            return method(self, *args, **kwargs)
        except duckdb.OutOfMemoryException as exc:
            from pilot_lib.errors import EngineMemoryError

            text = memory_error_text(exc, getattr(self, "_memory_limit", None))
            raise EngineMemoryError(text) from None

    return run


def guard_memory(con: BaseBackend, memory_limit: str | None) -> BaseBackend:
    """Make every query of the Ibis DuckDB connection ``con`` raise
    :class:`~pilot_lib.errors.EngineMemoryError` (one line naming ``engine.memory_limit``,
    whose value is ``memory_limit``) instead of DuckDB's ``OutOfMemoryException``.

    Returns ``con`` itself (its class becomes a subclass of Ibis' DuckDB backend whose
    query methods translate the error; nothing else changes). A lazily read result
    (``to_pyarrow_batches``) reports the error of its first batch only.
    """
    if con.name == "duckdb" and not hasattr(type(con), "_memory_guarded"):
        con.__class__ = _guarded_duckdb_class(type(con))
    con._memory_limit = memory_limit  # type: ignore[attr-defined]
    return con


@functools.cache
def _guarded_duckdb_class(base: type) -> type:
    """A subclass of Ibis' DuckDB backend whose query methods raise
    :class:`~pilot_lib.errors.EngineMemoryError` for DuckDB's ``OutOfMemoryException``."""
    methods = {m: _guarded(getattr(base, m)) for m in _QUERY_METHODS if hasattr(base, m)}
    return type(
        "MemoryGuardedDuckDB", (base,), {**methods, "__module__": __name__, "_memory_guarded": True}
    )


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def duckdb_to_parquet(table: Any, path: str | Path) -> None:
    """Write an Ibis ``table`` on DuckDB to one Parquet file at ``path`` with DuckDB's ``COPY``.

    Ibis' own ``to_parquet`` quotes the path with Python's ``repr``, which a
    folder holding both quote characters (``it's a "pilot"``) turns into broken
    SQL; here the path is an SQL string literal, ``'`` doubled.
    """
    backend = table.get_backend()
    query = backend.compile(table)
    backend.raw_sql(f"COPY ({query}) TO '{_sql_text(str(path))}' (FORMAT 'parquet')")


def remove_spill(folder: Path) -> None:
    """Remove a spill folder DuckDB left behind (it holds nothing once a query ends)."""
    shutil.rmtree(folder, ignore_errors=True)


def spark_errors() -> tuple[type[BaseException], ...]:
    """Errors Spark raises for data it cannot read or a query it cannot run (empty
    without pyspark): PySpark's own errors and those coming from the JVM."""
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        return ()
    return (PySparkException, Py4JError)


#: What an engine says when a file it writes (the store, the quarantine, its spill
#: files) cannot be written: the output folder's fault, not the data's.
_WRITE_FAILURES = (
    "no space left on device",
    "disk quota exceeded",
    "read-only file system",
    "could not write",
    "failed to write",
    "cannot write",
)


def write_failure(exc: BaseException) -> str | None:
    """The engine's one-line message when ``exc`` is a failed write (a full disk, a
    read-only or unwritable folder), else None."""
    text = error_text(exc)
    low = text.lower()
    if any(marker in low for marker in _WRITE_FAILURES):
        return text
    if "permission denied" in low and "writ" in low:
        return text
    return None


def error_text(exc: BaseException, limit: int = 400) -> str:
    """One line for an engine error: for an error from Spark's JVM, Spark's own message
    (``[FAILED_READ_FILE...] ... <file> ...``) without the Java stack trace."""
    text = str(exc)
    java = getattr(exc, "java_exception", None)  # py4j's Py4JJavaError
    if java is not None:
        with contextlib.suppress(Exception):  # the JVM may be gone: keep str(exc)
            text = str(java.getMessage() or java.toString())
    text = " ".join(text.split("JVM stacktrace:")[0].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _connect_spark(settings: EngineSettings) -> BaseBackend:
    """The Ibis PySpark backend on the session already running in this process, if any,
    else on a new one for ``settings.master``.

    Every problem is one :class:`DataSourceError` naming the cause: a master URL
    Spark does not accept, no Java runtime (or one too old), a cluster master or a
    Spark Connect server nothing answers at, Spark Connect without pyspark's
    ``connect`` extra. Those are checked before a JVM starts, so the user sees one
    line instead of a Java stack trace; anything else Spark raises while starting is
    reduced to its root cause.
    """
    master = (settings.master or DEFAULT_SPARK_MASTER).strip()
    _check_master_url(master)
    master = shared_spark_url(master) or master
    try:
        import ibis
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise DataSourceError(
            "engine spark: pyspark is not installed; install the spark extra "
            "(pip install 'agentic-pilot-workbook[spark]') or run with --engine duckdb"
        ) from exc
    remote = master.startswith("sc://")
    session = None if remote else _running_session(SparkSession)
    if session is None:
        _preflight(master)
    try:
        if session is None:
            session = _spark_session(SparkSession, master)
        # the contract checks are wide projections on which Spark's constraint
        # propagation grows exponentially (SPARK-33152); it only infers extra filters.
        # A managed service may refuse the setting: then it stays as it is.
        with contextlib.suppress(Exception):
            session.conf.set("spark.sql.constraintPropagation.enabled", "false")
        return ibis.pyspark.connect(session)
    except Exception as exc:  # whatever Spark raised while starting: its root cause, one line
        raise DataSourceError(_start_failure(master, exc)) from exc


#: The master URLs Spark accepts, for messages.
_MASTER_FORMS = (
    "local[*], local[N], spark://host:7077, yarn, k8s://https://host:port, "
    "or a Spark Connect URL sc://host:15002"
)
_LOCAL = re.compile(r"local(\[(\*|[1-9][0-9]*)(,\s*[1-9][0-9]*)?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*[1-9][0-9]*(\s*,\s*[1-9][0-9]*){2}\s*\]")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")
_JAVA_HINT = (
    "Spark needs a Java 17 (or newer) runtime: install one (e.g. apt-get install "
    "openjdk-17-jre-headless) and set JAVA_HOME to it or put its java on PATH, "
    "or run with --engine duckdb"
)
_CONNECT_TIMEOUT = 5.0  # seconds to wait for a cluster master or Spark Connect server


def _check_master_url(master: str) -> None:
    """Raise when ``master`` is not a URL Spark accepts (Spark would fail at JVM start)."""
    ok = (
        _LOCAL.fullmatch(master)
        or _LOCAL_CLUSTER.fullmatch(master)
        or master == "yarn"
        or (master.startswith("k8s://") and len(master) > len("k8s://"))
        or (master.startswith("spark://") and _spark_master_addresses(master) is not None)
        or (master.startswith("sc://") and _connect_address(master) is not None)
    )
    if not ok:
        raise DataSourceError(
            f"engine spark: {master!r} is not a Spark master URL; use {_MASTER_FORMS} "
            "(engine.master in the pilot file, or --spark-master)"
        )


def _spark_master_addresses(master: str) -> list[tuple[str, int]] | None:
    """``spark://h1:7077,h2:7077`` -> [(h1, 7077), (h2, 7077)]; None when malformed."""
    out = []
    for part in master[len("spark://") :].split(","):
        match = _HOST_PORT.fullmatch(part.strip())
        if match is None or not 0 < int(match.group(2)) < 65536:
            return None
        out.append((match.group(1).strip("[]"), int(match.group(2))))
    return out


def _connect_address(master: str) -> tuple[str, int] | None:
    """``sc://host[:port][/;param=value...]`` -> (host, port); port 15002 by default."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit("http://" + master[len("sc://") :])
        host, port = parts.hostname, parts.port or 15002
    except ValueError:
        return None
    return (host, port) if host else None


def _running_session(session_class: Any) -> Any:
    """The Spark session this process already runs (the caller's, a notebook's), or None."""
    active = session_class.getActiveSession()
    if active is not None:
        return active
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:  # started in another thread
        return session_class.builder.getOrCreate()
    return None


def _preflight(master: str) -> None:
    """Before a JVM starts: the Java runtime, the extras and the addresses ``master`` needs."""
    if master.startswith("sc://"):
        address = _connect_address(master)
        assert address is not None
        problems = []
        unreachable = _unreachable(*address)
        if unreachable:
            problems.append(
                f"nothing answers at {address[0]}:{address[1]} ({unreachable}); check the "
                "URL (engine.master in the pilot file, or --spark-master) and that the "
                "Spark Connect server is running"
            )
        missing = _connect_extra_missing()
        if missing:
            problems.append(
                f"Spark Connect needs pyspark's connect extra, not installed here ({missing}): "
                "pip install 'pyspark[connect]'"
            )
        if problems:
            raise DataSourceError(
                f"engine spark: cannot use the Spark Connect server {master}: "
                + "; and ".join(problems)
            )
        return
    java = _java_problem()
    if java:
        raise DataSourceError(
            f"engine spark: cannot start a Spark session on {master}: {java}. {_JAVA_HINT}."
        )
    if master.startswith("spark://"):
        addresses = _spark_master_addresses(master) or []
        reasons = [_unreachable(host, port) for host, port in addresses]
        if all(reasons):
            shown = "; ".join(f"{h}:{p}: {r}" for (h, p), r in zip(addresses, reasons, strict=True))
            raise DataSourceError(
                f"engine spark: no Spark master answers at {master} ({shown}); check the URL "
                "(engine.master in the pilot file, or --spark-master) and that the master is "
                "running, or use a local session (--spark-master 'local[*]')"
            )
    if master == "yarn" and not (
        os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")
    ):
        raise DataSourceError(
            "engine spark: master yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR set to the "
            "folder of the cluster's Hadoop configuration"
        )


def _unreachable(host: str, port: int) -> str | None:
    """Why nothing answers at ``host:port`` (refused, no such host, timed out), or None."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
            return None
    except TimeoutError:
        return f"no answer within {_CONNECT_TIMEOUT:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _connect_extra_missing() -> str | None:
    """What of pyspark's ``connect`` extra (grpcio, ...) is missing, or None."""
    try:
        from pyspark.sql.connect.utils import check_dependencies

        check_dependencies()
    except Exception as exc:  # PySparkImportError / ImportError: the package it names
        return " ".join(str(exc).split()).removeprefix("[PACKAGE_NOT_INSTALLED] ").rstrip(".")
    return None


def _java_executable() -> tuple[str | None, str]:
    """The ``java`` Spark's launcher would run (``$JAVA_HOME/bin/java``, else on PATH),
    and where it was looked for."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        ok = java.is_file() and os.access(java, os.X_OK)
        return (str(java) if ok else None), f"JAVA_HOME is {home}, which holds no bin/java"
    return shutil.which("java"), "JAVA_HOME is not set and no java is on PATH"


def _java_problem() -> str | None:
    """Why no JVM can start (no Java runtime), or None. None too when a JVM already runs."""
    from pyspark import SparkContext

    if SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return None
    java, looked = _java_executable()
    return None if java else f"no Java runtime: {looked}"


def _java_version(java: str) -> tuple[int | None, str]:
    """The major version of ``java`` and its first line of ``java -version`` (or the error)."""
    import subprocess

    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    text = (out.stderr or out.stdout).strip()
    first = text.splitlines()[0] if text else f"exit code {out.returncode}"
    match = re.search(r'version "(1\.)?([0-9]+)', text)
    return (int(match.group(2)) if match else None), first


def _root_cause(exc: BaseException) -> str:
    """The innermost Java exception of a Py4J error, else the exception itself; one line."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            while java.getCause() is not None:
                java = java.getCause()
            text = str(java.toString())
        except Exception:  # the JVM is gone: what Python has
            text = f"{type(exc).__name__}: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _start_failure(master: str, exc: BaseException) -> str:
    """One message for a Spark session that did not start."""
    head = f"engine spark: cannot start a Spark session on {master}"
    condition = None
    for getter in ("getCondition", "getErrorClass"):  # pyspark 4 / 3.5
        if condition is None and callable(getattr(exc, getter, None)):
            condition = getattr(exc, getter)()
    if condition == "JAVA_GATEWAY_EXITED":  # the JVM exited before it answered
        java, looked = _java_executable()
        if java is None:
            return f"{head}: no Java runtime: {looked}. {_JAVA_HINT}."
        major, line = _java_version(java)
        if major is None:
            return f"{head}: {java} does not run ({line}). {_JAVA_HINT}."
        if major < 17:
            return f"{head}: {java} is Java {major} ({line}); {_JAVA_HINT}."
        return (
            f"{head}: the Spark driver exited while starting (Java {major} at {java}); "
            "its own messages above say why"
        )
    if master.startswith("sc://"):
        hint = "Check the URL and that the Spark Connect server is running"
    elif _LOCAL.fullmatch(master):
        hint = "A local session needs Java 17 or newer and some free memory"
    else:
        hint = "Check that the master is running and accepts applications from this machine"
    return (
        f"{head}: {_root_cause(exc)}. {hint} "
        "(engine.master in the pilot file, or --spark-master), or run with --engine duckdb."
    )


def _session_conf(master: str) -> dict[str, str]:
    """The settings of a session the workbook starts: UTC, no UI, no progress bars."""
    conf = {
        "spark.master": master,
        "spark.app.name": "pilot-workbook",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        # no progress bars on the console (they land in notebook outputs and CLI logs)
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
    }
    if _LOCAL.fullmatch(master):
        # a local session talks to itself only: loopback, whatever the host name resolves to
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf


def _spark_session(session_class: Any, master: str) -> Any:
    """A new session (nothing runs yet in this process): UTC, no UI, quiet logs."""
    if master.startswith("sc://"):
        return session_class.builder.remote(master).getOrCreate()
    builder = session_class.builder
    for key, value in _session_conf(master).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # Spark's own log (task failures with Java stack traces) stays off the console: an
    # error reaches the user as one DataSourceError; setLogLevel("WARN") shows it again
    session.sparkContext.setLogLevel("FATAL")
    return session


def materialize(expr: Any, prefix: str = "stage") -> Any:
    """Compute the Ibis table ``expr`` once, for several queries to read.

    On DuckDB a temporary table (gone with the connection); on another engine Ibis'
    cache (Spark: a cached DataFrame). Ibis' cache on DuckDB drops its table when
    garbage collected, which fails noisily once the store has closed the connection.
    """
    from ibis import util as ibis_util

    backend = expr.get_backend()
    if backend.name == "duckdb":
        return backend.create_table(ibis_util.gen_name(prefix), expr, temp=True)
    return expr.cache()


# ---- one Spark session for a whole run ---------------------------------------------------

#: Set by the runner in a phase kernel's environment: the file (in the run folder) that
#: holds the ``sc://`` URL of the run's shared Spark session once it runs.
SHARED_SPARK_ENV = "PILOT_WORKBOOK_SPARK_SHARED"

#: The run's shared session started in this process: (master, sc:// URL).
_SHARED: tuple[str, str] | None = None

#: Longest wait for the shared session's Spark Connect service to answer (seconds).
_SHARED_START_TIMEOUT = 120.0


def shared_spark_url(master: str) -> str | None:
    """The ``sc://`` URL of the run's shared Spark session, for a phase kernel the runner
    started (:data:`SHARED_SPARK_ENV`), or None: then the kernel starts its own session on
    ``master``, as a notebook an analyst opens does. A ``master`` that is already a Spark
    Connect URL is kept."""
    path = os.environ.get(SHARED_SPARK_ENV)
    if not path or master.startswith("sc://"):
        return None
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return url if url.startswith("sc://") and _connect_address(url) else None


def _connect_jar() -> Path | None:
    """pyspark's Spark Connect server jar (bundled from Spark 4.0), or None."""
    try:
        import pyspark
    except ImportError:
        return None
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar"))
    return jars[0] if jars else None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_shared_spark(settings: EngineSettings, log_file: Path) -> str | None:
    """Start this process's Spark session for a whole run, serving Spark Connect on a
    loopback port, and return its ``sc://`` URL; None when it cannot be shared.

    One JVM per run instead of one per phase kernel: the runner builds the store on
    this session and every phase kernel connects to it (:func:`shared_spark_url`).
    The JVM's own console output (``NativeCodeLoader``, log-level notes, Java
    warnings) goes to ``log_file``, not the console. None (the kernels then start their
    own sessions, as before) when the master is already a Spark Connect URL, when pyspark
    lacks the Spark Connect server (before 4.0) or its ``connect`` extra, or when a Spark
    session not started here already runs in this process. A session that fails to start
    raises :class:`DataSourceError` as :func:`connect_engine` does.
    """
    global _SHARED
    master = (settings.master or DEFAULT_SPARK_MASTER).strip()
    _check_master_url(master)
    if master.startswith("sc://"):
        return None
    if _SHARED is not None:
        return _SHARED[1] if _SHARED[0] == master else None
    try:
        from pyspark import SparkConf, SparkContext
        from pyspark.java_gateway import launch_gateway
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    if SparkContext._active_spark_context is not None or _connect_jar() is None:
        return None
    if _connect_extra_missing() is not None:
        return None
    _preflight(master)
    port = _free_port()
    conf = SparkConf()
    for key, value in _session_conf(master).items():
        conf.set(key, value)
    conf.set("spark.plugins", "org.apache.spark.sql.connect.SparkConnectPlugin")
    conf.set("spark.connect.grpc.binding.address", "127.0.0.1")
    conf.set("spark.connect.grpc.binding.port", str(port))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_file.open("ab") as log:
            gateway = launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})
        SparkContext._ensure_initialized(gateway=gateway, conf=conf)
        session = SparkSession.builder.config(conf=conf).getOrCreate()
        session.sparkContext.setLogLevel("FATAL")
    except Exception as exc:
        raise DataSourceError(_start_failure(master, exc)) from exc
    url = f"sc://127.0.0.1:{port}"
    import time

    deadline = time.monotonic() + _SHARED_START_TIMEOUT
    while _unreachable("127.0.0.1", port):
        if time.monotonic() > deadline:
            return None  # the session runs (the store is built on it); kernels start their own
        time.sleep(0.2)
    _SHARED = (master, url)
    return url

"""Open the data sets a pilot file names as Ibis tables (embedded DuckDB by default).

A data set lives in one of three places (``datasets.<name>`` in the pilot file,
see :class:`pilot_lib.config.DatasetSource`):

- ``path``: a Parquet, CSV or JSON-lines file; globs such as ``decisions/*.parquet``
  are allowed. The format comes from ``format`` or else from the extension
  (``.parquet``/``.pq``, ``.csv``/``.tsv``/``.txt``, ``.jsonl``/``.ndjson``/``.json``;
  a trailing ``.gz``/``.zst`` is ignored). Relative paths resolve against the
  pilot file's folder.
- ``database`` + ``table``: a table in a DuckDB database file. The file is attached
  read-only to the same DuckDB connection, so it joins with the other data sets.
- ``uri`` + ``table``: any Ibis connection URL (``postgres://...``, ``pyspark://...``)
  and a table behind it. A ``duckdb://<file>`` URL is attached read-only like
  ``database``; a bare ``<backend>://`` URL whose backend is the connection's own
  (``pyspark://`` when ``con`` is an Ibis PySpark backend) names a table on that
  connection; any other URL opens its own Ibis backend (one per URL and
  connection), so joins across data sets need them to live behind the same URL.

Spark: pass an Ibis PySpark backend as the connection
(``load_pilot_data(pilot, con=ibis.pyspark.connect(spark_session))``). Files named
by ``path`` are then read by Spark, and ``uri: "pyspark://"`` with ``table:
db.name`` opens a table of that session's catalog. Without ``con``, a
``pyspark://`` URL attaches to the process's active Spark session
(``SparkSession.builder.getOrCreate()``), so it finds the tables of a notebook's
or cluster's session; a fresh local session has an empty catalog. A
``pyspark://<warehouse dir>`` URL only works before any session exists (Spark
cannot change its warehouse folder afterwards).

Nothing is read into Python: every function returns a lazy Ibis table, and the
engine scans the files when a query runs. A source that cannot be opened raises
:class:`~pilot_lib.errors.DataSourceError` naming the data set, the file or URL,
and what to do; a user mistake never surfaces as a raw DuckDB traceback.

CSV and JSON readers guess column types from a sample of rows. So that one bad
value past the sample (a timestamp that does not parse, say) cannot make the
whole read fail, the columns a data contract types (``text_columns``) are read as
text and typed by the contract, which quarantines the values that do not parse.
"""

from __future__ import annotations

import glob
import re
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import duckdb
import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pandas as pd
from ibis import util as ibis_util
from ibis.backends import BaseBackend
from ibis.common.exceptions import IbisError, TableNotFound

from pilot_lib.config import TRACE_FORMATS, DatasetSource, Pilot
from pilot_lib.errors import DataSourceError, EngineMemoryError

__all__ = [
    "FORMATS",
    "connect",
    "describe_source",
    "infer_format",
    "open_dataset",
    "open_source",
]

#: File formats a ``path`` may hold, and the extensions that imply each.
FORMATS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq"),
    "csv": (".csv", ".tsv", ".txt"),
    "jsonl": (".jsonl", ".ndjson", ".json"),
}

_COMPRESSION_SUFFIXES = (".gz", ".gzip", ".zst", ".bz2")

#: Errors a reader raises for a bad file or table (not programming errors).
# EngineMemoryError: the connection's memory guard's one line for DuckDB's out-of-memory
_READ_ERRORS = (duckdb.Error, IbisError, TableNotFound, OSError, ValueError, EngineMemoryError)

#: Ibis backends opened for ``uri`` sources, per DuckDB connection, one per URL.
_URI_BACKENDS: weakref.WeakKeyDictionary[Any, dict[str, BaseBackend]] = weakref.WeakKeyDictionary()


def connect() -> BaseBackend:
    """A new embedded, in-memory DuckDB connection (session time zone UTC).

    Each call returns an independent connection; temporary tables and attached
    database files belong to the connection that created them.
    """
    from pilot_lib.ingest.engine import guard_memory

    con = guard_memory(ibis.duckdb.connect(), None)
    con.raw_sql("SET enable_progress_bar = false")  # no ipywidget progress bar in notebooks
    return con


def describe_source(source: DatasetSource | str | Path | pd.DataFrame | ir.Table) -> str:
    """A short text naming where a data set comes from, as the user wrote it.

    Passwords in connection URLs are masked (``postgres://ana:***@host/db``).
    """
    if isinstance(source, DatasetSource):
        if source.path:
            return source.path
        if source.database:
            return f"{source.database} (table {source.table})"
        return f"{_mask_password(source.uri or '')} (table {source.table})"
    if isinstance(source, pd.DataFrame):
        return "in-memory DataFrame"
    if isinstance(source, ir.Table):
        return "Ibis table"
    return str(source)


def infer_format(path: str | Path) -> str | None:
    """The format (``parquet``, ``csv``, ``jsonl``) a file name implies, or ``None``.

    Compression suffixes (``.gz``, ``.zst``, ...) are skipped: ``log.csv.gz`` is CSV.
    """
    suffixes = [s.lower() for s in Path(str(path)).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    if not suffixes:
        return None
    for fmt, extensions in FORMATS.items():
        if suffixes[-1] in extensions:
            return fmt
    return None


def open_dataset(
    pilot: Pilot,
    name: str,
    con: BaseBackend,
    *,
    text_columns: Collection[str] = (),
) -> ir.Table:
    """Open the raw table of data set ``name`` where the pilot file says it lives.

    A ``decisions`` data set in a trace format (``format: otel``, ``openinference``,
    ``langfuse``) is built from its spans (:mod:`pilot_lib.ingest.traces`); this
    returns the decision log only (the store also keeps the span quarantine and
    the reconciliation).

    Parameters
    ----------
    pilot:
        A loaded pilot file; relative paths resolve against its folder.
    name:
        A data set the pilot file names (``decisions``, ``cases``, ...).
    con:
        The Ibis connection the table is registered on (DuckDB from :func:`connect`,
        or another backend such as ``ibis.pyspark.connect(spark_session)``).
    text_columns:
        Columns a CSV or JSON file should deliver as text (the contract types them
        later); the ingest stage passes the data set's contract columns. Default: none.

    Returns
    -------
    ibis.Table
        The raw, untyped-by-contract table (lazy; no rows are read yet).

    Raises
    ------
    DataSourceError
        The pilot file names no such data set, or the source cannot be opened.
    """
    if name not in pilot.datasets:
        raise DataSourceError(
            f"data set {name!r}: the pilot file {pilot.path} does not name it; "
            f"add datasets.{name} (it names {sorted(pilot.datasets)})"
        )
    if pilot.datasets[name].format in TRACE_FORMATS:
        # the decision log is built from spans (docs/trace-sources.md)
        from pilot_lib.ingest.traces import open_trace_decisions

        return open_trace_decisions(pilot, con, name).decisions
    return open_source(
        pilot.datasets[name],
        con,
        base_dir=pilot.folder,
        label=name,
        text_columns=text_columns,
    )


def open_source(
    source: DatasetSource | str | Path | pd.DataFrame | ir.Table,
    con: BaseBackend,
    base_dir: str | Path | None = None,
    label: str = "data",
    *,
    text_columns: Collection[str] = (),
) -> ir.Table:
    """Open one source as an Ibis table.

    Parameters
    ----------
    source:
        A :class:`DatasetSource` from a pilot file; a file path or glob (string or
        ``Path``; format from the extension); an in-memory pandas DataFrame
        (copied into a temporary table on ``con``; a temporary view on Spark); or an
        Ibis table (returned as is; an ``ibis.memtable`` is copied to ``con`` like a
        DataFrame).
    con:
        The Ibis connection the table is registered on (DuckDB, or e.g. PySpark).
    base_dir:
        Folder relative paths resolve against (default: the current directory).
    label:
        The data set's name, used in error messages and table names.
    text_columns:
        Columns a CSV/JSON file should deliver as text (see the module docstring).

    Raises
    ------
    DataSourceError
        The file, database or URL cannot be opened; the message names ``label``,
        the source and the fix.
    """
    if isinstance(source, ir.Table):
        if source.op().find(ops.DatabaseTable):
            return source  # bound to a backend already
        # only in-memory data (ibis.memtable): register it on ``con`` so it joins there
        return _open_in_memory(source, con, label)
    if isinstance(source, pd.DataFrame):
        return _open_in_memory(source, con, label)
    if isinstance(source, (str, Path)):
        source = DatasetSource(path=str(source))
    if isinstance(source, DatasetSource) and source.format in TRACE_FORMATS:
        raise DataSourceError(
            f"data set {label!r}: {source.format} traces are opened through the pilot file "
            "(open_dataset), which knows the traces: settings; give the pilot file"
        )
    if not isinstance(source, DatasetSource):
        raise DataSourceError(
            f"data set {label!r}: cannot open a {type(source).__name__}; give a file path, "
            "a pandas DataFrame, an Ibis table or a pilot-file data set entry"
        )
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if source.path:
        return _open_file(source, con, base, label, text_columns)
    if source.database:
        return _open_duckdb_table(
            _resolve(source.database, base), source.table or "", con, label, source.database
        )
    return _open_uri(source.uri or "", source.table or "", con, base, label)


# ---- files ---------------------------------------------------------------------------


def _resolve(relative: str, base: Path) -> Path:
    p = Path(relative).expanduser()
    return p if p.is_absolute() else base / p


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _table_name(label: str, kind: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", label)
    return ibis_util.gen_name(f"{kind}_{safe}")


def _first_lines(exc: BaseException, n: int = 3, hide: str | None = None) -> str:
    """The first ``n`` lines of an error message on one line; ``hide`` is masked."""
    message = str(exc)
    if hide:
        message = message.replace(f":{hide}@", ":***@")
    lines = []
    for line in message.strip().splitlines():
        line = line.strip()
        # DuckDB echoes the SQL it ran ("LINE 1: ... ^^^^"): noise for a user
        if not line or line.startswith("LINE ") or set(line) <= {"^", " "}:
            continue
        lines.append(line)
    text = " ".join(lines[:n]).rstrip(".!: ")
    return text if len(text) <= 400 else text[:397] + "..."


def _open_file(
    source: DatasetSource,
    con: BaseBackend,
    base: Path,
    label: str,
    text_columns: Collection[str],
) -> ir.Table:
    rel = source.path or ""
    target = _resolve(rel, base)
    fmt = source.format or infer_format(rel)
    if fmt is None:
        raise DataSourceError(
            f"data set {label!r}: cannot tell the format of {target} from its extension; "
            f"set datasets.{label}.format to one of {sorted(FORMATS)} in the pilot file "
            "(a spreadsheet must be saved as CSV first)"
        )
    if _has_glob(rel):
        if not glob.glob(str(target), recursive=True):
            raise DataSourceError(
                f"data set {label!r}: no file matches {target}; check datasets.{label}.path "
                "(paths are relative to the pilot file's folder)"
            )
    elif not target.exists():
        raise DataSourceError(
            f"data set {label!r}: no file at {target}; check datasets.{label}.path "
            "(paths are relative to the pilot file's folder)"
        )
    path = str(target)
    # DuckDB's reader errors are known; other engines (Spark) raise their own driver errors.
    read_errors = _READ_ERRORS if con.name == "duckdb" else (Exception,)
    try:
        if fmt == "parquet":
            return con.read_parquet(path, table_name=_table_name(label, "src"))
        if fmt == "csv":
            if con.name == "duckdb":
                _refuse_repeated_header(con, path, target, label)
            return _read_text_format(con, path, label, "csv", text_columns)
        return _read_text_format(con, path, label, "jsonl", text_columns)
    except read_errors as exc:
        if "not utf-8 encoded" in str(exc).lower():
            raise DataSourceError(
                f"data set {label!r}: {target} is not UTF-8 text (a byte sequence is not "
                "UTF-8; spreadsheets often save Latin-1 or Windows-1252). Save it as UTF-8 "
                "(Excel: 'CSV UTF-8'; or iconv -f WINDOWS-1252 -t UTF-8 in > out) and run again"
            ) from exc
        if fmt == "jsonl" and con.name == "duckdb":
            from pilot_lib.ingest.traces._tables import read_error

            sized = read_error(con, exc, label, fmt, [path], "")
            if "more than the" in str(sized):  # a line too long for the memory limit
                raise sized from exc
        raise DataSourceError(
            f"data set {label!r}: cannot read {target} as {fmt}: {_first_lines(exc)}. "
            f"Check that the file is valid {fmt}, or set datasets.{label}.format in the "
            "pilot file if the extension is misleading."
        ) from exc


def _first_csv_row(con: BaseBackend, path: str) -> list[str]:
    """The fields of the first line of the CSV file ``path`` (BOM dropped); [] when empty."""
    import csv
    import glob as _glob

    files = sorted(_glob.glob(path)) if any(c in path for c in "*?[") else [path]
    if not files:
        return []
    with open(files[0], encoding="utf-8-sig", errors="replace", newline="") as fh:
        line = fh.readline()
    if not line.strip():
        return []
    try:
        sniffed = con.raw_sql(
            f"SELECT Delimiter, Quote FROM sniff_csv({_sql_string(files[0])})"
        ).fetchone()
    except Exception:  # a file DuckDB cannot sniff: the real read reports it
        sniffed = None
    delimiter = sniffed[0] if sniffed and sniffed[0] and len(sniffed[0]) == 1 else ","
    quote = sniffed[1] if sniffed and sniffed[1] and len(sniffed[1]) == 1 else '"'
    return next(csv.reader([line], delimiter=delimiter, quotechar=quote), [])


def _refuse_repeated_header(con: BaseBackend, path: str, shown: Any, label: str) -> None:
    """Raise when the CSV's header names a column twice.

    DuckDB's reader renames the second ``a`` to ``a_1``, so the contract would read
    the first and ignore the other without a word. The header is the file's first line,
    split with the delimiter and quote DuckDB sniffs for the real read. (Not ``LIMIT 1``
    of a headerless read: a parallel reader may return any row first, and a row whose
    values repeat, "adjuster" twice, looked like a repeated header on a large file.)
    """
    names = [n.strip() for n in _first_csv_row(con, path)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataSourceError(
            f"data set {label!r}: {shown} names the column(s) {repeated} more than once in its "
            "header; rename or remove the extra column(s) (otherwise one would be read and the "
            "other silently ignored)"
        )


def _read_text_format(
    con: BaseBackend, path: str, label: str, fmt: str, text_columns: Collection[str]
) -> ir.Table:
    """CSV / JSON-lines with the engine's reader; contract columns come back as text."""

    def read(**overrides: Any) -> ir.Table:
        name = _table_name(label, "src")
        if fmt == "csv":
            return con.read_csv(path, table_name=name, **overrides)
        if con.name != "duckdb":  # other readers (Spark) take JSON lines by default
            return con.read_json(path, table_name=name, **overrides)
        from pilot_lib.ingest.traces._tables import any_compressed, json_object_size

        json_format = "auto" if path.lower().endswith(".json") else "newline_delimited"
        # the longest line DuckDB reads, sized to fit the connection's memory limit
        return con.read_json(
            path,
            table_name=name,
            format=json_format,
            maximum_object_size=json_object_size(con, 1, any_compressed([path])),
            **overrides,
        )

    table = read()
    if con.name not in ("duckdb", "pyspark"):
        return table
    wanted = set(text_columns)
    retype = [c for c in table.columns if c in wanted and not table[c].type().is_string()]
    if not retype:
        return table
    if con.name == "pyspark":
        # Spark's inference would turn user id "0042" into 42 and prompt version "1.10"
        # into 1.1: read again with the inferred schema, contract columns as text. The
        # contract's casts of text columns make a wide plan on which Spark's constraint
        # propagation grows exponentially (SPARK-33152: out of memory); it only adds
        # filters, so it is switched off in this session (as connect_engine does)
        con.raw_sql("SET spark.sql.constraintPropagation.enabled = false")
        return read(schema=_spark_text_schema(con, table, retype))
    schema = table.schema()
    if fmt == "csv":
        return read(types={c: "VARCHAR" for c in retype})
    # read_json takes either no types or the type of every column.
    columns = {c: ("VARCHAR" if c in retype else _duckdb_type(schema[c])) for c in table.columns}
    return read(columns=columns)


def _spark_text_schema(con: BaseBackend, table: ir.Table, text: Collection[str]) -> Any:
    """The Spark schema ``table`` was read with, the ``text`` columns as strings."""
    from pyspark.sql.types import StringType, StructField, StructType

    inferred = con.raw_sql(f"SELECT * FROM `{table.get_name()}`").schema
    return StructType(
        [StructField(f.name, StringType(), True) if f.name in text else f for f in inferred.fields]
    )


def _duckdb_type(dtype: Any) -> str:
    from ibis.backends.sql.datatypes import DuckDBType

    return DuckDBType.to_string(dtype)


# ---- DuckDB database files and URLs ----------------------------------------------------


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _attach_read_only(con: BaseBackend, db_file: Path) -> str:
    """Attach a DuckDB file read-only (once per connection); return its catalog name."""
    wanted = str(db_file.resolve())
    attached = con.raw_sql("SELECT database_name, path FROM duckdb_databases()").fetchall()
    for db_name, db_path in attached:
        if db_path and str(Path(db_path).resolve()) == wanted:
            return db_name
    alias = _table_name(db_file.stem, "db")
    con.raw_sql(f'ATTACH {_sql_string(wanted)} AS "{alias}" (READ_ONLY)')
    return alias


def _tables_in(con: BaseBackend, catalog: str) -> list[str]:
    """Tables and views of an attached database, as ``name`` or ``schema.name``."""
    rows = con.raw_sql(
        f"""
        SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = {_sql_string(catalog)}
        UNION ALL
        SELECT schema_name, view_name FROM duckdb_views()
        WHERE database_name = {_sql_string(catalog)} AND NOT internal
        """
    ).fetchall()
    return sorted(name if schema == "main" else f"{schema}.{name}" for schema, name in rows)


def _split_table(table: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); a bare name -> (None, table)."""
    if "." in table:
        schema, _, name = table.rpartition(".")
        return schema, name
    return None, table


def _open_duckdb_table(
    db_file: Path, table: str, con: BaseBackend, label: str, shown: str
) -> ir.Table:
    if not db_file.is_file():
        raise DataSourceError(
            f"data set {label!r}: no DuckDB database file at {db_file}; check "
            f"datasets.{label}.database (paths are relative to the pilot file's folder)"
        )
    if con.name != "duckdb":
        raise DataSourceError(
            f"data set {label!r}: a DuckDB database file needs a DuckDB connection, "
            f"got a {con.name} connection"
        )
    try:
        catalog = _attach_read_only(con, db_file)
    except _READ_ERRORS as exc:
        raise DataSourceError(
            f"data set {label!r}: cannot open {db_file} as a DuckDB database: "
            f"{_first_lines(exc)}. Check that it is a DuckDB file and that no other "
            "program holds it open for writing."
        ) from exc
    schema, name = _split_table(table)
    database = (catalog, schema or "main")
    try:
        return con.table(name, database=database)
    except _READ_ERRORS as exc:
        found = _tables_in(con, catalog)
        raise DataSourceError(
            f"data set {label!r}: no table {table!r} in {shown} ({db_file}); "
            f"tables there: {found or 'none'}. Fix datasets.{label}.table in the pilot file."
        ) from exc


def _mask_password(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _duckdb_uri_file(uri: str, base: Path) -> Path | None:
    """The file behind a ``duckdb://<file>`` URL, or None (memory / other schemes)."""
    if not uri.lower().startswith("duckdb://"):
        return None
    rest = uri[len("duckdb://") :].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return _resolve(rest, base)


def _password(uri: str) -> str | None:
    try:
        return urlsplit(uri).password or None
    except ValueError:
        return None


def _names_connection(uri: str, con: BaseBackend) -> bool:
    """True for a bare ``<backend>://`` URL naming ``con``'s own backend (``pyspark://``)."""
    scheme, rest = uri.partition("://")[::2]
    return bool(scheme) and scheme.lower() == con.name and not rest.strip("/")


def _open_uri(uri: str, table: str, con: BaseBackend, base: Path, label: str) -> ir.Table:
    shown = _mask_password(uri)
    secret = _password(uri)
    db_file = _duckdb_uri_file(uri, base)
    if db_file is not None and con.name == "duckdb":
        return _open_duckdb_table(db_file, table, con, label, shown)
    backends = _URI_BACKENDS.setdefault(con, {})
    backend = con if _names_connection(uri, con) else backends.get(uri)
    if backend is None:
        try:
            backend = ibis.connect(uri)
        except Exception as exc:  # any driver error: bad URL, missing backend, refused
            raise DataSourceError(
                f"data set {label!r}: cannot connect to {shown}: "
                f"{type(exc).__name__}: {_first_lines(exc, hide=secret)}. "
                f"Check datasets.{label}.uri "
                "(an Ibis connection URL such as postgres://user@host/db) and that the "
                "Ibis backend for it is installed."
            ) from exc
        backends[uri] = backend
    schema, name = _split_table(table)
    try:
        return backend.table(name, database=schema) if schema else backend.table(name)
    except Exception as exc:  # each backend raises its own error for a missing table
        raise DataSourceError(
            f"data set {label!r}: cannot open table {table!r} at {shown}: "
            f"{type(exc).__name__}: {_first_lines(exc, hide=secret)}. "
            f"Fix datasets.{label}.table in "
            "the pilot file."
        ) from exc


# ---- in-memory data ----------------------------------------------------------------------


def _open_in_memory(frame: pd.DataFrame | ir.Table, con: BaseBackend, label: str) -> ir.Table:
    name = _table_name(label, "frame")
    try:
        try:
            return con.create_table(name, frame, temp=True)
        except NotImplementedError:
            # Ibis' Spark backend has no temporary tables; its views are temporary views
            memtable = frame if isinstance(frame, ir.Table) else ibis.memtable(frame)
            return con.create_view(name, memtable)
    except _READ_ERRORS as exc:
        raise DataSourceError(
            f"data set {label!r}: cannot register the in-memory DataFrame: "
            f"{_first_lines(exc)}. Give it plain columns (numbers, text, booleans, timestamps)."
        ) from exc

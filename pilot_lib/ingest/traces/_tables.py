"""Shared SQL pieces of the table-shaped trace readers (OpenInference, Langfuse).

Phoenix span exports and Langfuse exports are tables (Parquet, or JSON Lines with
one record per line), unlike OTLP's nested batches. The readers here build one
DuckDB query per export: they look at the column names and types once (a
``DESCRIBE``, no span is read into Python), choose the SQL that turns each column
into a normalised span column, and materialize the result as a temporary table.

Helpers:

- :func:`read_sql`: the files as one relation with ``source_file`` and 1-based
  ``source_row`` columns (Parquet row number / JSON Lines line number).
- :func:`describe`: column name -> DuckDB type of a relation.
- :func:`pick`: SQL for the first of several candidate columns that exists
  (exports spell the same field ``traceId`` or ``trace_id``).
- :func:`timestamp_sql`, :func:`id_sql`, :func:`text_sql`: typed conversions.
- :func:`dedupe_map_sql`: a list of ``{key, value}`` entries -> a map, first wins.
- :func:`materialize`: run the query into a temporary table, errors as
  :class:`~pilot_lib.errors.DataSourceError`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import ibis.expr.types as ir
import numpy as np
from ibis import util as ibis_util
from ibis.backends import BaseBackend
from ibis.common.exceptions import IbisError

from pilot_lib.errors import DataSourceError, EngineMemoryError

__all__ = [
    "FileScan",
    "scan_file",
    "dedupe_map_sql",
    "describe",
    "entries_sql",
    "file_format",
    "first_line",
    "id_sql",
    "is_object_sql",
    "any_compressed",
    "is_otlp_file",
    "json_leaves_sql",
    "json_object_size",
    "memory_limit_bytes",
    "read_error",
    "materialize",
    "number_text_sql",
    "pick",
    "q",
    "read_sql",
    "sql_string",
    "text_sql",
    "timestamp_sql",
    "type_of",
]

_COMPRESSION = (".gz", ".gzip", ".zst")


def sql_string(text: str) -> str:
    """A SQL string literal of ``text``."""
    return "'" + text.replace("'", "''") + "'"


def q(name: str) -> str:
    """A quoted SQL identifier (column names such as ``attributes.llm.model_name``)."""
    return '"' + name.replace('"', '""') + '"'


def file_format(path: str | Path) -> str:
    """``parquet`` for ``.parquet``/``.pq`` files, else ``jsonl`` (JSON Lines)."""
    suffixes = [s.lower() for s in Path(str(path)).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    return "parquet" if suffixes and suffixes[-1] in (".parquet", ".pq") else "jsonl"


def is_otlp_file(path: str | Path) -> bool:
    """True when a JSON Lines file holds OTLP ``TracesData`` (its first record has ``resourceSpans``).

    Only the first 64 KiB are looked at; Parquet and compressed files are never OTLP here.
    """
    p = Path(path)
    if file_format(p) != "jsonl" or p.suffix.lower() in _COMPRESSION:
        return False
    try:
        with p.open("r", encoding="utf-8", errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return '"resourceSpans"' in head.lstrip()[:65536].split("\n", 1)[0]


#: DuckDB reads no JSON object larger than this, whatever ``maximum_object_size`` says.
_MIN_OBJECT_SIZE = 16 * 1024 * 1024
#: The largest object size asked for (DuckDB's own ceiling is far above).
_MAX_OBJECT_SIZE = 1024 * 1024 * 1024

_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def memory_limit_bytes(con: BaseBackend) -> int | None:
    """The DuckDB connection's ``memory_limit`` in bytes (``None`` when not DuckDB or unknown).

    DuckDB reports it as text (``488.2 MiB`` for ``SET memory_limit = '512MB'``).
    """
    if getattr(con, "name", None) != "duckdb":
        return None
    try:
        text = str(con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0])
    except (duckdb.Error, IbisError, TypeError):
        return None
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]+)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def json_object_size(
    con: BaseBackend, n_files: int = 1, compressed: bool = False, scans: int = 1
) -> int:
    """``maximum_object_size`` (bytes) for ``read_json`` that fits the connection's memory.

    DuckDB allocates a read buffer of twice the object size for each file it reads
    at once (one per thread, ``n_files`` at most), and refuses (``Out of Memory``)
    when those buffers do not fit under ``memory_limit``, even for a one-line file.
    The size is the memory still free under the limit (the limit less what the
    connection's tables already hold, ``duckdb_memory()``) shared by
    ``2 x min(threads, n_files) + 2`` (one share left for the query): 81 MiB for
    two files on two threads on a fresh connection under the default
    ``engine.memory_limit`` of 512MB, 122 MiB for one file. A compressed file
    (gzip, zstd) takes a second buffer of the same size for the decompressed
    text: ``compressed`` halves the size; a query with ``scans`` ``read_json`` calls
    (a Langfuse export's observations, traces and scores) shares it among them. It
    is at most
    1 GiB and at least DuckDB's own 16 MiB minimum. A longer line is an error
    naming the file, the line and its size (:func:`read_error`).
    """
    limit = memory_limit_bytes(con)
    if limit is None:
        return _MAX_OBJECT_SIZE
    try:
        threads = int(con.raw_sql("SELECT current_setting('threads')").fetchone()[0])
    except (duckdb.Error, IbisError, TypeError, ValueError):
        threads = 1
    try:
        used = int(
            con.raw_sql(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"
            ).fetchone()[0]
        )
    except (duckdb.Error, IbisError, TypeError, ValueError):
        used = 0
    per_scan = 2 * max(1, min(threads, max(1, n_files)))
    shares = (per_scan * max(1, scans) + 2) * (2 if compressed else 1)
    size = (max(0, limit - used) // shares) // (1024 * 1024) * (1024 * 1024)
    return max(_MIN_OBJECT_SIZE, min(_MAX_OBJECT_SIZE, size))


def any_compressed(files: Sequence[str | Path]) -> bool:
    """True when one of ``files`` is gzip or zstd compressed (by its extension)."""
    return any(Path(str(f)).suffix.lower() in _COMPRESSION for f in files)


def _longest_line(path: Path, over: int) -> tuple[int, int] | None:
    """(physical 1-based line number, size in bytes) of the first line of ``path``
    longer than ``over`` bytes, else of the longest line; ``None`` when unreadable.

    Compressed files (gzip, zstd) are read through their decompressor. Streams the
    file in 1 MiB chunks: memory stays flat whatever the line length.
    """
    try:
        fh = open_text_stream(path)
    except (OSError, ValueError):
        return None
    best: tuple[int, int] | None = None
    line, size = 1, 0
    with fh:
        while True:
            try:
                chunk = fh.read(1 << 20)
            except Exception:
                break
            if not chunk:
                break
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    size += len(chunk) - start
                    break
                size += nl - start
                if best is None or size > best[1]:
                    best = (line, size)
                if size > over:
                    return line, size
                line, size, start = line + 1, 0, nl + 1
    if size and (best is None or size > best[1]):
        best = (line, size)
    return best


def open_text_stream(path: Path):  # type: ignore[no-untyped-def]
    """``path`` opened for binary reading, through gzip or zstd by its extension (pyarrow)."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix in (".gz", ".gzip"):
        return pa.input_stream(str(path), compression="gzip")
    if suffix == ".zst":
        return pa.input_stream(str(path), compression="zstd")
    return path.open("rb")


def _first_bad_line(path: Path) -> tuple[int, str] | None:
    """(physical 1-based line, reason) of the first non-blank line of ``path`` that is
    not UTF-8 or not one JSON value; ``None`` when every line parses.

    Only called once a read has failed (DuckDB's own line number is one too high for
    an invalid UTF-8 byte, and counts a truncated last line past the end).
    """
    import json

    try:
        fh = open_text_stream(path)
    except (OSError, ValueError):
        return None
    with fh:
        number = 0
        pending = b""
        while True:
            try:
                chunk = fh.read(1 << 20)
            except Exception:  # a damaged stream: the scan reports it
                return None
            if not chunk:
                break
            parts = (pending + chunk).split(b"\n")
            pending = parts.pop()
            for raw in parts:
                number += 1
                why = _line_problem(raw, json)
                if why:
                    return number, why
        if pending.strip():
            why = _line_problem(pending, json)
            if why:
                return number + 1, why + " (the last line; the file may be truncated)"
    return None


def _line_problem(raw: bytes, json: Any) -> str | None:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte {exc.start + 1} is not UTF-8 ({raw[exc.start : exc.start + 1]!r})"
    try:
        json.loads(text)
    except ValueError as exc:
        return f"not JSON ({exc})"
    return None


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def read_error(
    con: BaseBackend,
    exc: BaseException,
    label: str,
    what: str,
    files: Sequence[str | Path],
    fix: str,
    shown: str | None = None,
    scans: int = 1,
) -> DataSourceError:
    """The :class:`DataSourceError` for a failed read of ``files``.

    When DuckDB refused a JSON line for its size (``maximum_object_size``
    exceeded, or the read buffer did not fit ``memory_limit``), the message names
    the file, the physical line and its size, the limit, and the fix (the
    ``engine.memory_limit`` under which the line fits, or smaller batches); else it is
    DuckDB's reason with ``fix``.
    """
    text = str(exc)
    size_problem = (
        "maximum_object_size" in text
        or ("Out of Memory" in text and "failed to allocate" in text)
        # the connection's memory guard already turned DuckDB's error into one line
        or isinstance(exc, EngineMemoryError)
    )
    if size_problem:
        limit = json_object_size(con, len(files), any_compressed(files), scans)
        memory = memory_limit_bytes(con)
        for f in files:
            if file_format(f) == "parquet":
                continue
            found = _longest_line(Path(str(f)), limit)
            if found is not None and found[1] > limit:
                line, size = found
                # the memory limit under which this line would fit, in whole GB
                need = -(-size * (memory or 0) // max(limit, 1) // 1000**3) if memory else 1
                return DataSourceError(
                    f"data set {label!r}: line {line} of {f} is {_megabytes(size)}, more than "
                    f"the {_megabytes(limit)} one JSON object may take under the engine's "
                    f"memory limit ({_megabytes(memory) if memory else 'unknown'}). Raise "
                    f"engine.memory_limit in the pilot file to at least "
                    f"{max(1, need)}GB, or have the exporter write smaller batches (one span "
                    "or a few per line)."
                )
    if "Malformed JSON" in text or "UTF-8" in text:
        for f in files:
            if file_format(f) == "parquet":
                continue
            found = _first_bad_line(Path(str(f)))
            if found is not None:
                line, why = found
                return DataSourceError(
                    f"data set {label!r}: line {line} of {f} is not valid {what}: {why}. "
                    f"Fix or remove line {line} (a physical line: blank lines count). {fix}"
                )
    shown = shown if shown is not None else ", ".join(str(f) for f in files)
    return DataSourceError(
        f"data set {label!r}: cannot read {shown} as {what}: {first_line(exc)}. {fix}"
    )


def read_sql(files: Sequence[str | Path], object_size: int = _MAX_OBJECT_SIZE) -> str:
    """SQL: the rows of ``files`` plus ``source_file`` (path) and ``source_row`` (1-based).

    Parquet files are read with ``read_parquet`` (row number from the file), JSON
    Lines with ``read_json`` (every line sampled for the column types, so a key that
    first appears late is still a column; ``source_row`` is the line number, which
    needs ``preserve_insertion_order``, set by :func:`materialize`). Both kinds may be
    mixed; columns are matched by name. ``object_size`` is ``read_json``'s
    ``maximum_object_size`` in bytes: pass :func:`json_object_size` of the connection
    (the default, 1 GiB, does not fit DuckDB's default memory limit).
    """
    parquet = [str(f) for f in files if file_format(f) == "parquet"]
    jsonl = [str(f) for f in files if file_format(f) != "parquet"]
    parts = []
    if parquet:
        listing = "[" + ", ".join(sql_string(f) for f in parquet) + "]"
        parts.append(
            "SELECT * EXCLUDE (filename, file_row_number), filename AS source_file, "
            "CAST(file_row_number + 1 AS BIGINT) AS source_row "
            f"FROM read_parquet({listing}, filename = true, file_row_number = true, "
            "union_by_name = true)"
        )
    if jsonl:
        listing = "[" + ", ".join(sql_string(f) for f in jsonl) + "]"
        parts.append(
            "SELECT * EXCLUDE (filename, _line), filename AS source_file, "
            "CAST(_line - min(_line) OVER (PARTITION BY filename) + 1 AS BIGINT) AS source_row "
            "FROM (SELECT *, row_number() OVER () AS _line "
            f"FROM read_json({listing}, format = 'newline_delimited', filename = true, "
            "union_by_name = true, sample_size = -1, "
            f"maximum_object_size = {int(object_size)}))"
        )
    return "\nUNION ALL BY NAME\n".join(parts)


def describe(con: BaseBackend, sql: str) -> dict[str, str]:
    """Column name -> DuckDB type name of the relation ``sql`` (no rows are fetched)."""
    rows = con.raw_sql(f"DESCRIBE {sql}").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def pick(columns: Mapping[str, str], *names: str) -> str | None:
    """The quoted name of the first of ``names`` that is a column, else ``None``.

    A name ``a.b`` also matches the field ``b`` of a struct column ``a`` (Phoenix's
    REST export nests ``context.trace_id`` as ``context: {trace_id}``).
    """
    for name in names:
        if name in columns:
            return q(name)
    for name in names:
        head, _, tail = name.partition(".")
        if (
            tail
            and columns.get(head, "").upper().startswith("STRUCT(")
            and re.search(rf"[(,]\s*\"?{re.escape(tail)}\"?\s", columns[head])
        ):
            return f"{q(head)}.{q(tail)}"
    return None


def type_of(columns: Mapping[str, str], ref: str | None) -> str:
    """The DuckDB type of a column reference from :func:`pick` (``VARCHAR`` if unknown)."""
    if ref is None:
        return "NULL"
    name = ref.strip('"').replace('""', '"')
    return columns.get(name, "VARCHAR")


def text_sql(ref: str | None, dtype: str = "VARCHAR") -> str:
    """SQL: the value of column ``ref`` as text; NULL for a missing column or empty text.

    Lists, structs, maps and JSON become JSON text (a struct without its NULL
    fields, which are artefacts of a JSON reader's key union; NULL when none is
    left); booleans ``true``/``false``;
    a floating NaN becomes NULL and a whole float is written without ``.0``
    (pandas turns integer columns with gaps into floats).
    """
    if ref is None:
        return "CAST(NULL AS VARCHAR)"
    t = dtype.upper()
    if t.startswith("STRUCT") and not t.endswith("[]"):
        # a JSON reader unifies the keys of all rows into one struct: drop the NULL fields
        return f"nullif(CAST(json_merge_patch('{{}}', CAST({ref} AS JSON)) AS VARCHAR), '{{}}')"
    if t.endswith("[]") or t.startswith(("MAP", "JSON", "UNION")):
        return f"CAST(CAST({ref} AS JSON) AS VARCHAR)"
    if t in ("DOUBLE", "FLOAT", "REAL"):
        # pandas stores integer columns with gaps as floats: 120.0 is written back as 120
        return (
            f"CASE WHEN isnan({ref}) THEN NULL "
            f"WHEN {ref} = trunc({ref}) AND abs({ref}) < 1e15 "
            f"THEN CAST(CAST({ref} AS BIGINT) AS VARCHAR) ELSE CAST({ref} AS VARCHAR) END"
        )
    return f"nullif(CAST({ref} AS VARCHAR), '')"


def number_text_sql(text: str) -> str:
    """SQL: text holding a whole number written as a float (``1.0``) -> ``1``; other text as is.

    Booleans recorded as scores (1.0 / 0.0) then parse as booleans downstream.
    """
    x = f"try_cast({text} AS DOUBLE)"
    return (
        f"CASE WHEN {x} = trunc({x}) AND abs({x}) < 1e15 "
        f"THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) ELSE {text} END"
    )


def is_object_sql(text: str) -> str:
    """SQL: TRUE when ``text`` is a JSON object (FALSE for NULL, other JSON, or not JSON)."""
    return f"coalesce(CASE WHEN json_valid({text}) THEN json_type({text}) = 'OBJECT' END, false)"


def id_sql(ref: str | None, dtype: str = "VARCHAR") -> str:
    """SQL: an id as trimmed lowercase text; NULL when missing, empty or all zeros."""
    text = text_sql(ref, dtype)
    return (
        f"CASE WHEN nullif(trim({text}), '') IS NULL OR regexp_full_match(trim({text}), '0+') "
        f"THEN NULL ELSE lower(trim({text})) END"
    )


#: An ISO time that ends in a UTC offset (``Z``, ``+02:00``, ``-0500``).
_OFFSET = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"


def timestamp_sql(ref: str | None, dtype: str = "VARCHAR") -> str:
    """SQL: a time column as a naive UTC ``TIMESTAMP``; NULL when missing or unparseable.

    - ``TIMESTAMP WITH TIME ZONE``: converted to UTC.
    - ``TIMESTAMP``/``DATE``: taken as UTC already.
    - text: ISO 8601 / ``YYYY-MM-DD HH:MM:SS.ffffff``; with an offset (``Z``,
      ``+02:00``) converted to UTC, without one taken as UTC.
    - numbers: Unix epoch; the unit follows from the magnitude (nanoseconds above
      1e17, microseconds above 1e14, milliseconds above 1e11 -- pandas' default
      ``to_json`` unit --, else seconds).
    """
    if ref is None:
        return "CAST(NULL AS TIMESTAMP)"
    t = dtype.upper()
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ") or t.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"timezone('UTC', {ref})"
    if t.startswith("TIMESTAMP") or t == "DATE":
        return f"CAST({ref} AS TIMESTAMP)"
    if t in (
        "BIGINT",
        "INTEGER",
        "HUGEINT",
        "UBIGINT",
        "DOUBLE",
        "FLOAT",
        "DECIMAL",
    ) or t.startswith("DECIMAL"):
        x = f"CAST({ref} AS DOUBLE)"
        micros = (
            f"CASE WHEN abs({x}) > 1e17 THEN {x} / 1000 WHEN abs({x}) > 1e14 THEN {x} "
            f"WHEN abs({x}) > 1e11 THEN {x} * 1000 ELSE {x} * 1000000 END"
        )
        return f"make_timestamp(CAST(round({micros}) AS BIGINT))"
    text = f"trim(CAST({ref} AS VARCHAR))"
    return (
        f"CASE WHEN regexp_matches({text}, {sql_string(_OFFSET)}) "
        f"THEN timezone('UTC', try_cast({text} AS TIMESTAMPTZ)) "
        f"ELSE try_cast({text} AS TIMESTAMP) END"
    )


def dedupe_map_sql(entries: str) -> str:
    """SQL: a ``list<{key, value}>`` expression -> ``MAP(VARCHAR, VARCHAR)``, the first key wins.

    Entries with a NULL key or value are dropped. The expression is evaluated
    per row inside DuckDB (list lambdas, new ``lambda x:`` syntax). ``entries`` and
    its key list are bound once through one-element lists, so an expensive
    ``entries`` expression is not re-evaluated for every element (the duplicate
    check is quadratic in the number of a span's attributes, a few dozen).
    """
    clean = (
        f"list_filter(coalesce({entries}, []), lambda e: e.key IS NOT NULL AND e.value IS NOT NULL)"
    )
    return (
        f"list_transform([{clean}], lambda kv: list_transform([list_transform(kv, lambda x: x.key)], "
        "lambda ks: map_from_entries(list_filter(kv, lambda e, i: list_position(ks, e.key) = i)))[1])[1]"
    )


def entries_sql(pairs: Iterable[tuple[str, str]]) -> str:
    """SQL: a list of ``{key, value}`` structs from (key literal, value SQL) pairs."""
    items = [f"{{'key': {sql_string(k)}, 'value': {v}}}" for k, v in pairs]
    if not items:
        return "CAST([] AS STRUCT(key VARCHAR, value VARCHAR)[])"
    return "CAST([" + ", ".join(items) + "] AS STRUCT(key VARCHAR, value VARCHAR)[])"


def json_leaves_sql(json_text: str, row_key: str, source: str) -> str:
    """SQL: per ``row_key`` of relation ``source``, the leaves of a JSON object as entries.

    Nested objects are flattened to dotted keys (``{"llm": {"model_name": "x"}}``
    and ``{"llm.model_name": "x"}`` both give ``llm.model_name``); arrays stay
    whole as JSON text; strings lose their quotes; JSON ``null`` is skipped. Text
    that is not a JSON object gives no entries. Returns a query with columns
    ``row_key`` and ``entries`` (rows without leaves are absent).
    """
    return f"""
SELECT s.{row_key} AS {row_key},
       list({{'key': replace(substr(jt.fullkey, 3), '"', ''),
              'value': json_extract_string(jt.value, '$')}} ORDER BY jt.id) AS entries
FROM {source} AS s,
     LATERAL (SELECT * FROM json_tree(CASE WHEN coalesce(CASE WHEN json_valid({json_text})
                                                            THEN json_type({json_text}) = 'OBJECT'
                                                            END, false)
                                      THEN {json_text} END)
              WHERE type NOT IN ('OBJECT', 'NULL') AND NOT contains(fullkey, '[')) AS jt
GROUP BY s.{row_key}
"""


def materialize(
    con: BaseBackend,
    sql: str,
    label: str,
    what: str,
    files: Sequence[str | Path],
    fix: str,
    blame: Callable[[], str] | None = None,
) -> ir.Table:
    """Run ``sql`` into a temporary DuckDB table and return it as an Ibis table.

    The query runs with ``preserve_insertion_order`` on (so JSON Lines line numbers
    are the true ones); the connection's setting is restored afterwards.

    Raises
    ------
    DataSourceError
        ``con`` is not DuckDB, or DuckDB cannot read the files; the message names
        the data set (``label``), the format (``what``), the files (or what
        ``blame()`` narrows them to, called only on failure) and ``fix``.
    """
    if con.name != "duckdb":
        raise DataSourceError(
            f"data set {label!r}: {what} files are read with DuckDB; got a {con.name} "
            "connection. Run with --engine duckdb, or convert the traces to the decision "
            "log (Parquet) first."
        )
    name = ibis_util.gen_name(f"spans_{re.sub(r'[^A-Za-z0-9_]', '_', label)}")
    previous = con.raw_sql("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    try:
        con.raw_sql("SET preserve_insertion_order = true")
        con.raw_sql(f'CREATE TEMP TABLE "{name}" AS {sql}')
    except (duckdb.Error, IbisError, EngineMemoryError) as exc:
        shown = blame() if blame is not None else None
        raise read_error(con, exc, label, what, files, fix, shown) from exc
    finally:
        con.raw_sql(f"SET preserve_insertion_order = {'true' if previous else 'false'}")
    return con.table(name)


def first_line(exc: BaseException) -> str:
    """The first two non-empty lines of an error message, at most 300 characters."""
    # DuckDB's SQL excerpt ("LINE 3: ...") and its caret line say nothing to a user
    lines = [
        ln.strip()
        for ln in str(exc).strip().splitlines()
        if ln.strip() and not ln.strip().startswith("LINE ") and set(ln.strip()) - {"^", " "}
    ]
    text = " ".join(lines[:2])
    return text if len(text) <= 300 else text[:297] + "..."


# ---- whole-file checks: compressed frames, physical lines ---------------------------------


@dataclass(frozen=True)
class FileScan:
    """What one pass over a JSON Lines file (decompressed) found.

    ``size_bytes``: the file on disk; ``bytes_read``: the text read (decompressed);
    ``lines``: physical lines (a last line without a newline counts);
    ``blank_lines``: physical numbers of the empty or whitespace-only lines, which
    DuckDB's reader skips (so record ``k`` is physical line ``k`` plus the blank lines
    before it); ``bom``: the file starts with a UTF-8 byte order mark.
    """

    path: str
    size_bytes: int
    bytes_read: int
    lines: int
    blank_lines: tuple[int, ...]
    bom: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "bytes_read": self.bytes_read,
            "lines": self.lines,
            "blank_lines": len(self.blank_lines),
        }


def scan_file(path: str | Path, label: str = "decisions") -> FileScan:
    """Read ``path`` whole (through gzip / zstd by its extension), counting bytes and lines.

    Every compressed file is decompressed to its end, so a truncated or damaged frame
    is an error here, never a file that silently gives fewer rows. Streams in 4 MiB
    chunks (memory stays flat); the result is cached per (path, size, modification
    time), so the readers and the reconciliation share one pass.

    Raises
    ------
    DataSourceError
        The file is truncated or not what its extension says; the message names the
        data set, the file, the bytes read before the damage, and the fix.
    """
    p = Path(str(path))
    st = p.stat()
    return _scan_cached(str(p), st.st_size, st.st_mtime_ns, label)


@functools.lru_cache(maxsize=256)
def _scan_cached(path: str, size: int, mtime_ns: int, label: str) -> FileScan:
    p = Path(path)
    total = lines = 0
    blanks: list[int] = []
    bom = False
    tail = b"\n"  # as if a newline preceded the file: a blank first line is found
    try:
        with open_text_stream(p) as fh:
            first = True
            while True:
                chunk = fh.read(4 << 20)
                if not chunk:
                    break
                if first:
                    bom = chunk.startswith(b"\xef\xbb\xbf")
                    first = False
                total += len(chunk)
                buf = tail + chunk  # tail: the last newline before chunk and what follows
                # newline positions (vectorised over this 4 MiB chunk only): a blank line
                # is a gap of 1 between newlines, or a short gap of whitespace
                arr = np.frombuffer(buf, dtype=np.uint8)
                nl = np.flatnonzero(arr == 10)
                gaps = np.diff(nl)
                for k in np.flatnonzero(gaps < 16):
                    a, b = int(nl[k]) + 1, int(nl[k + 1])
                    if not buf[a:b].strip():
                        # newline k of buf ends physical line (lines - 1 + k + 1): tail's
                        # newline is newline number `lines`, ending line `lines`
                        blanks.append(lines + k + 1)
                lines += len(nl) - 1
                tail = buf[int(nl[-1]) :]
    except (OSError, ValueError, EOFError) as exc:
        raise DataSourceError(
            f"data set {label!r}: {path} is damaged: {exc} after {total:,} bytes of text "
            f"({lines:,} lines). A truncated or corrupt compressed file is never read in "
            "part: copy or export the file again (check its size against the source), or "
            "remove it from datasets."
            f"{label}.path"
        ) from exc
    if total and not tail.endswith(b"\n") and tail.strip():
        lines += 1  # a last line without a newline
    return FileScan(path, size, total, lines, tuple(sorted(set(blanks))), bom)

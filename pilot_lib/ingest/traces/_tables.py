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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import duckdb
import ibis.expr.types as ir
from ibis import util as ibis_util
from ibis.backends import BaseBackend
from ibis.common.exceptions import IbisError

from pilot_lib.errors import DataSourceError

__all__ = [
    "dedupe_map_sql",
    "describe",
    "entries_sql",
    "file_format",
    "first_line",
    "id_sql",
    "is_object_sql",
    "is_otlp_file",
    "json_leaves_sql",
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


def read_sql(files: Sequence[str | Path]) -> str:
    """SQL: the rows of ``files`` plus ``source_file`` (path) and ``source_row`` (1-based).

    Parquet files are read with ``read_parquet`` (row number from the file), JSON
    Lines with ``read_json`` (every line sampled for the column types, so a key that
    first appears late is still a column; ``source_row`` is the line number, which
    needs ``preserve_insertion_order``, set by :func:`materialize`). Both kinds may be
    mixed; columns are matched by name.
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
            "union_by_name = true, sample_size = -1, maximum_object_size = 1073741824))"
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
    except (duckdb.Error, IbisError) as exc:
        shown = blame() if blame is not None else ", ".join(str(f) for f in files)
        raise DataSourceError(
            f"data set {label!r}: cannot read {shown} as {what}: {first_line(exc)}. {fix}"
        ) from exc
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

"""OTLP JSON Lines (OpenTelemetry) -> the normalised span table, in DuckDB.

Input: one ``TracesData`` JSON object per line (``resourceSpans -> scopeSpans ->
spans``), as OpenTelemetry Python's OTLP JSON file exporter
(``opentelemetry.exporter.otlp.json.file.FileSpanExporter``) and the Collector's
``file`` exporter write it. Ids are hex text; 64-bit integers (times in Unix
nanoseconds, ``intValue``) may be JSON strings or numbers; attributes are typed
lists ``{key, value: {stringValue | intValue | doubleValue | boolValue |
arrayValue | kvlistValue | bytesValue}}``; ``status`` is ``{code, message}`` with
the code as a number (0 unset, 1 ok, 2 error) or its enum name
(``STATUS_CODE_ERROR``). Lines of other signals (``resourceLogs``) give no span.

The whole read is one SQL query (DuckDB's ``read_json`` with a declared schema,
then ``unnest`` and list lambdas): nothing per span runs in Python. What it does:

- ``source_row`` is the file's 1-based line number (a line holds a whole export
  batch, so several spans share it).
- ``attributes`` holds every span attribute as text (arrays and maps as JSON
  text); then the business signals of the span's events: every ``pilot.*``
  attribute of an event named ``pilot.outcome``, and each
  ``gen_ai.evaluation.result`` event as ``pilot.<gen_ai.evaluation.name>`` =
  ``gen_ai.evaluation.score.value`` (else ``.score.label``); then the resource's
  ``pilot.*`` and ``gen_ai.*`` attributes. When a key occurs more than once the
  first wins: span attribute > event > resource (and the first event among events).
- an attribute with no value, or whose ``intValue`` / ``doubleValue`` /
  ``boolValue`` does not parse, is recorded under
  :data:`~pilot_lib.ingest.traces.spans.UNPARSEABLE_KEY`.
- ``operation`` is ``gen_ai.operation.name``, else the first word of the span
  name when it is one of ``invoke_agent``, ``chat``, ``execute_tool`` (the GenAI
  conventions name spans ``"{operation} {target}"``).
- a time that is missing or does not parse becomes NULL (the span is quarantined).

Edge cases: a line that is not JSON at all makes the read fail with a
:class:`~pilot_lib.errors.DataSourceError` naming the file (DuckDB names the
line); fix or remove the line. Base64 ids (protobuf's generic JSON mapping, not
OTLP/JSON) are decoded to hex. Files that hold no span at all (another format,
or only logs) are an error naming the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import ibis.expr.types as ir
from ibis.backends import BaseBackend
from ibis.common.exceptions import IbisError

from pilot_lib.errors import DataSourceError, EngineMemoryError
from pilot_lib.ingest.traces._tables import (
    any_compressed,
    json_object_size,
    materialize,
    number_text_sql,
)
from pilot_lib.ingest.traces.spans import REMOTE_PARENT_KEY, UNPARSEABLE_KEY

__all__ = ["OTLP_COLUMNS", "otlp_spans_sql", "read_spans"]

_VALUE = (
    "STRUCT(stringValue VARCHAR, intValue VARCHAR, doubleValue VARCHAR, boolValue VARCHAR, "
    "arrayValue JSON, kvlistValue JSON, bytesValue VARCHAR)"
)
_KV = f"STRUCT(key VARCHAR, value {_VALUE})[]"
_SPAN = (
    "STRUCT(traceId VARCHAR, spanId VARCHAR, parentSpanId VARCHAR, name VARCHAR, "
    "kind VARCHAR, flags VARCHAR, startTimeUnixNano VARCHAR, endTimeUnixNano VARCHAR, "
    f"attributes {_KV}, "
    f"events STRUCT(timeUnixNano VARCHAR, name VARCHAR, attributes {_KV})[], "
    "status STRUCT(code VARCHAR, message VARCHAR))"
)
_LOG = (
    "STRUCT(timeUnixNano VARCHAR, traceId VARCHAR, spanId VARCHAR, eventName VARCHAR, "
    f"attributes {_KV})"
)
#: The declared schema of one OTLP JSON line (what ``read_json`` is told to expect):
#: ``TracesData`` or ``LogsData`` (log records carry evaluation results and outcomes).
OTLP_COLUMNS: dict[str, str] = {
    "resourceSpans": (
        f"STRUCT(resource STRUCT(attributes {_KV}), "
        f"scopeSpans STRUCT(scope STRUCT(name VARCHAR, version VARCHAR), spans {_SPAN}[])[])[]"
    ),
    "resourceLogs": (
        f"STRUCT(resource STRUCT(attributes {_KV}), "
        f"scopeLogs STRUCT(scope STRUCT(name VARCHAR, version VARCHAR), logRecords {_LOG}[])[])[]"
    ),
}


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _value_text(v: str) -> str:
    """SQL: the text of an OTLP ``AnyValue`` struct expression ``v``."""
    return (
        f"coalesce({v}.stringValue, {v}.intValue, {v}.doubleValue, {v}.boolValue, "
        f"CAST({v}.arrayValue AS VARCHAR), CAST({v}.kvlistValue AS VARCHAR), {v}.bytesValue)"
    )


def _value_bad(v: str) -> str:
    """SQL: TRUE when the ``AnyValue`` struct ``v`` is missing or does not parse."""
    return (
        f"({v} IS NULL OR {_value_text(v)} IS NULL "
        f"OR ({v}.intValue IS NOT NULL AND try_cast({v}.intValue AS HUGEINT) IS NULL) "
        f"OR ({v}.doubleValue IS NOT NULL AND try_cast({v}.doubleValue AS DOUBLE) IS NULL) "
        f"OR ({v}.boolValue IS NOT NULL AND {v}.boolValue NOT IN ('true', 'false')))"
    )


def _hex_id(column: str, hex_digits: int, strict: bool = True) -> str:
    """SQL: an OTLP id as lowercase hex; NULL when missing, empty, all zeros or malformed.

    OTLP/JSON writes ids as hex (``hex_digits`` long); protobuf's generic JSON
    mapping writes them as base64, which is decoded to hex. An all-zero id is
    invalid in OTLP (it would merge unrelated traces) and so is an id that is
    neither: both become NULL, and the span is quarantined (``span without
    trace_id`` / ``span_id``). With ``strict`` off (a parent id) a malformed id is
    kept as written, so the span is an orphan rather than a root.
    """
    x = f"nullif(trim({column}), '')"
    decoded = f"lower(hex(try(from_base64({x}))))"
    other = (
        f"CASE WHEN length({decoded}) = {hex_digits} THEN {decoded} END"
        if strict
        else f"CASE WHEN length({decoded}) = {hex_digits} THEN {decoded} ELSE lower({x}) END"
    )
    return (
        f"CASE WHEN {x} IS NULL THEN NULL "
        f"WHEN regexp_full_match({x}, '0+') THEN NULL "
        f"WHEN length({x}) = {hex_digits} AND regexp_full_match({x}, '[0-9a-fA-F]+') "
        f"THEN lower({x}) "
        f"ELSE nullif({other}, repeat('0', {hex_digits})) END"
    )


def _nanos_to_timestamp(column: str) -> str:
    """SQL: Unix nanoseconds (text or number) -> naive UTC TIMESTAMP (microseconds); NULL if bad."""
    return f"make_timestamp(CAST(try_cast({column} AS HUGEINT) // 1000 AS BIGINT))"


def otlp_spans_sql(files: Sequence[str | Path], object_size: int = 67108864) -> str:
    """The DuckDB query reading ``files`` (OTLP JSON Lines) into the normalised span columns.

    ``object_size``: ``read_json``'s ``maximum_object_size`` in bytes (the longest
    line read); :func:`~pilot_lib.ingest.traces._tables.json_object_size` of the
    connection fits it under the engine's memory limit.
    """
    file_list = "[" + ", ".join(_sql_string(str(f)) for f in files) + "]"
    columns = (
        "{"
        + ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in OTLP_COLUMNS.items())
        + "}"
    )
    unparseable = _sql_string(UNPARSEABLE_KEY)
    # a score is a double: 1.0 / 0.0 become "1" / "0" so a boolean signal (accepted,
    # correct) recorded as an evaluation score parses downstream
    score_value = number_text_sql(
        "list_transform(list_filter(coalesce(e.attributes, []), "
        "lambda a: a.key = 'gen_ai.evaluation.score.value'), "
        f"lambda a: {_value_text('a.value')})[1]"
    )
    ops = "('invoke_agent', 'invoke_workflow', 'chat', 'execute_tool')"
    sql = f"""
WITH lines AS (
    SELECT filename AS source_file, resourceSpans AS rs, resourceLogs AS rl,
           row_number() OVER () AS line_no
    FROM read_json({file_list}, format = 'newline_delimited', columns = {columns},
                   filename = true, maximum_object_size = {int(object_size)})
),
numbered AS (
    SELECT source_file, rs, rl,
           line_no - min(line_no) OVER (PARTITION BY source_file) + 1 AS source_row
    FROM lines
),
lres AS (SELECT unnest(rl) AS r FROM numbered WHERE rl IS NOT NULL),
lscopes AS (SELECT unnest(r.scopeLogs) AS sl FROM lres),
lrec AS (
    SELECT unnest(sl.logRecords) AS l FROM lscopes
),
lev AS (
    SELECT {_hex_id("l.traceId", 32)} AS lt, {_hex_id("l.spanId", 16)} AS ls,
           l.timeUnixNano AS lts,
           [{{'name': coalesce(nullif(l.eventName, ''), list_transform(
                 list_filter(coalesce(l.attributes, []), lambda a: a.key = 'event.name'),
                 lambda a: a.value.stringValue)[1]),
              'attributes': l.attributes}}] AS levents
    FROM lrec
),
logs AS (
    SELECT lt, ls, flatten(list(@@LOG_ENTRIES@@ ORDER BY lts)) AS lkv
    FROM lev WHERE lt IS NOT NULL AND ls IS NOT NULL
    GROUP BY lt, ls
),
res AS (SELECT source_file, source_row, unnest(rs) AS r FROM numbered),
scopes AS (
    SELECT source_file, source_row, r.resource.attributes AS res_attrs,
           unnest(r.scopeSpans) AS ss
    FROM res
),
raw AS (
    SELECT source_file, source_row, res_attrs, unnest(ss.spans) AS s FROM scopes
),
typed AS (
    SELECT
        source_file, source_row, s, res_attrs,
        list_transform(
            coalesce(s.attributes, []),
            lambda a: {{'key': a.key, 'text': {_value_text("a.value")}, 'bad': a.key IS NULL OR {_value_bad("a.value")}}}
        ) AS attrs
    FROM raw
),
entries AS (
    SELECT
        source_file, source_row, s,
        list_concat(
            -- OTLP span flags: bit 0x100 says whether the parent's remoteness is known,
            -- 0x200 that it is remote (the caller is another process, W3C traceparent)
            CASE WHEN (coalesce(try_cast(s.flags AS BIGINT), 0) & 768) = 768
                 THEN [{{'key': {_sql_string(REMOTE_PARENT_KEY)}, 'value': 'true'}}]
                 ELSE [] END,
            -- the first attribute that does not parse, if any
            list_transform(
                list_filter(attrs, lambda a: a.bad)[1:1],
                lambda a: {{'key': {unparseable}, 'value': coalesce(a.key, '(no key)')}}
            ),
            list_transform(
                list_filter(attrs, lambda a: NOT a.bad),
                lambda a: {{'key': a.key, 'value': a.text}}
            ),
            CASE WHEN len(coalesce(s.events, [])) = 0 THEN [] ELSE list_concat(
            -- the first exception event's exception.type / .message (a cancelled tool)
            flatten(list_transform(
                list_filter(s.events, lambda e: e.name = 'exception')[1:1],
                lambda e: list_transform(
                    list_filter(coalesce(e.attributes, []),
                                lambda a: a.key IN ('exception.type', 'exception.message')
                                          AND NOT {_value_bad("a.value")}),
                    lambda a: {{'key': a.key, 'value': {_value_text("a.value")}}}
                )
            )),
            flatten(list_transform(
                list_filter(s.events, lambda e: e.name = 'pilot.outcome'),
                lambda e: list_transform(
                    list_filter(coalesce(e.attributes, []),
                                lambda a: starts_with(a.key, 'pilot.') AND NOT {_value_bad("a.value")}),
                    lambda a: {{'key': a.key, 'value': {_value_text("a.value")}}}
                )
            )),
            list_transform(
                list_filter(
                    list_transform(
                        list_filter(s.events, lambda e: e.name = 'gen_ai.evaluation.result'),
                        lambda e: {{
                            'key': list_transform(
                                list_filter(coalesce(e.attributes, []), lambda a: a.key = 'gen_ai.evaluation.name'),
                                lambda a: {_value_text("a.value")})[1],
                            'value': coalesce(
                                {score_value},
                                list_transform(
                                    list_filter(coalesce(e.attributes, []),
                                                lambda a: a.key = 'gen_ai.evaluation.score.label'),
                                    lambda a: {_value_text("a.value")})[1])
                        }}
                    ),
                    lambda x: x.key IS NOT NULL AND x.value IS NOT NULL
                ),
                lambda x: {{'key': CASE WHEN starts_with(x.key, 'pilot.') THEN x.key
                                        ELSE 'pilot.' || x.key END,
                            'value': x.value}}
            )) END,
            list_transform(
                list_filter(coalesce(res_attrs, []),
                            lambda a: (starts_with(a.key, 'pilot.') OR starts_with(a.key, 'gen_ai.'))
                                      AND NOT {_value_bad("a.value")}),
                lambda a: {{'key': a.key, 'value': {_value_text("a.value")}}}
            )
        ) AS kv
    FROM typed
),
joined AS (
    SELECT e.source_file, e.source_row, e.s,
           CASE WHEN lg.lkv IS NULL THEN e.kv ELSE list_concat(e.kv, lg.lkv) END AS kv
    FROM entries AS e
    LEFT JOIN logs AS lg
      ON lg.lt = {_hex_id("e.s.traceId", 32)} AND lg.ls = {_hex_id("e.s.spanId", 16)}
),
spans AS (
    SELECT
        source_file, source_row, s,
        CASE WHEN len(list_distinct(list_transform(kv, lambda x: x.key))) = len(kv)
             THEN map_from_entries(kv)
             -- a key given twice (attribute, event, resource): the first wins
             ELSE map_from_entries(list_filter(
                 kv, lambda e, i: list_position(list_transform(kv, lambda x: x.key), e.key) = i))
        END AS attributes
    FROM joined
)
SELECT
    {_hex_id("s.traceId", 32)} AS trace_id,
    {_hex_id("s.spanId", 16)} AS span_id,
    {_hex_id("s.parentSpanId", 16, strict=False)} AS parent_span_id,
    s.name AS name,
    {_nanos_to_timestamp("s.startTimeUnixNano")} AS start_time,
    {_nanos_to_timestamp("s.endTimeUnixNano")} AS end_time,
    CASE WHEN upper(s.status.code) IN ('2', 'STATUS_CODE_ERROR', 'ERROR') THEN 'error'
         WHEN upper(s.status.code) IN ('1', 'STATUS_CODE_OK', 'OK') THEN 'ok'
         ELSE 'unset' END AS status,
    nullif(s.status.message, '') AS status_message,
    coalesce(
        attributes['gen_ai.operation.name'],
        CASE WHEN split_part(s.name, ' ', 1) IN {ops} THEN split_part(s.name, ' ', 1) END
    ) AS operation,
    attributes,
    source_file,
    CAST(source_row AS BIGINT) AS source_row
FROM spans
"""
    return _with_log_entries(sql)


def _with_log_entries(sql: str) -> str:
    """Fill ``@@LOG_ENTRIES@@`` with the span-event expression applied to log records."""
    head = "CASE WHEN len(coalesce(s.events, [])) = 0 THEN [] ELSE "
    start = sql.index(head) + len(head)
    end = sql.index(
        " END,\n            list_transform(\n                list_filter(coalesce(res_attrs", start
    )
    events = sql[start:end].replace("s.events", "levents")
    return sql.replace("@@LOG_ENTRIES@@", events)


def read_spans(con: BaseBackend, paths: Sequence[str | Path], label: str = "decisions") -> ir.Table:
    """Read OTLP JSON Lines files into the normalised span table.

    The spans are materialized once as a temporary DuckDB table (the JSON is parsed
    a single time, and the decision builder's several passes read the table). The
    scan runs with ``preserve_insertion_order`` on, so ``source_row`` is the true
    line number; the connection's setting is restored afterwards.

    Parameters
    ----------
    con:
        An Ibis DuckDB connection.
    paths:
        The files (globs already expanded), read in this order.
    label:
        The data set's name, for error messages.

    Raises
    ------
    DataSourceError
        ``con`` is not DuckDB, or a file is not OTLP JSON Lines (the message names
        the file, DuckDB's reason with the line, and the fix).
    """
    files = [str(Path(p)) for p in paths]
    table = materialize(
        con,
        otlp_spans_sql(files, json_object_size(con, len(files), any_compressed(files))),
        label,
        f"OTLP JSON Lines (datasets.{label}.format: otel)",
        files,
        "Each line must be one TracesData JSON object ({'resourceSpans': [...]}), as the "
        "OTLP JSON file exporter writes; fix or remove the line.",
        blame=lambda: _bad_file(con, files),
    )
    if not int(table.count().execute()):
        raise DataSourceError(
            f"data set {label!r}: no OTLP span in {', '.join(files)}; each line must be one "
            "TracesData JSON object ({'resourceSpans': [{'scopeSpans': [{'spans': [...]}]}]}). "
            f"Check datasets.{label}.path and that datasets.{label}.format (otel) matches "
            "the export."
        )
    return table


def _bad_file(con: BaseBackend, files: Sequence[str]) -> str:
    for f in files:
        try:
            con.raw_sql(
                f"SELECT count(*) FROM ({otlp_spans_sql([f], json_object_size(con, 1, any_compressed([f])))})"
            ).fetchall()
        except (duckdb.Error, IbisError, EngineMemoryError):
            return f
    return ", ".join(files)

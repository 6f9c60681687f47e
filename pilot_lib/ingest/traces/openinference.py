"""OpenInference spans (Arize Phoenix) -> the normalised span table, in DuckDB.

Input (``datasets.decisions.format: openinference``), any mix of:

- **Phoenix span exports**, Parquet or JSON Lines: one row per span with the
  columns of Phoenix's ``get_spans_dataframe()`` -- ``context.trace_id``,
  ``context.span_id``, ``parent_id``, ``name``, ``span_kind``, ``start_time``,
  ``end_time``, ``status_code`` (``OK``/``ERROR``/``UNSET``), ``status_message``,
  ``events`` and one ``attributes.<name>`` column per attribute
  (``attributes.llm.token_count.prompt``, ``attributes.session.id``, ...). Also
  accepted: ``trace_id``/``span_id``/``parent_span_id`` spellings, a ``context``
  struct, and a single ``attributes`` column holding a JSON object (flat dotted
  keys or nested objects, as Phoenix's REST span export gives).
- **annotation exports** (a file whose name contains ``annotation`` or
  ``evaluation``): one row per annotation with ``span_id`` (or
  ``context.span_id``), ``name`` (or ``annotation_name``), ``label``/``score``
  (or ``result.label``/``result.score``); other columns are ignored.
- **OTLP JSON Lines** of OpenInference-instrumented code (a file whose first line
  holds ``resourceSpans``): read by the OTLP reader, then mapped by
  :func:`from_otlp` like the export.

Mapping (every decision the builder needs lands on the GenAI / ``pilot.*`` names,
so :mod:`~pilot_lib.ingest.traces.decisions` has no OpenInference logic):

- ``operation`` from the span kind (``span_kind``, else the attribute
  ``openinference.span.kind``): ``AGENT`` -> ``invoke_agent``, ``LLM`` -> ``chat``,
  ``TOOL`` -> ``execute_tool``, any other kind lowercased (``chain``, ``retriever``).
- ``status`` from ``status_code``: ``ok``, ``error``, else ``unset``.
- ``attributes``: every ``attributes.*`` value as text (numbers as written,
  booleans ``true``/``false``, lists and objects as JSON text; NULL values are
  left out). Added when the span does not carry the GenAI name itself
  (:data:`GENAI_FROM_OPENINFERENCE`): ``gen_ai.usage.input_tokens`` <-
  ``llm.token_count.prompt``, ``gen_ai.usage.output_tokens`` <-
  ``llm.token_count.completion``, ``gen_ai.request.model`` <-
  ``llm.request.model_name`` / ``llm.model_name``, ``gen_ai.conversation.id`` <-
  ``session.id``, ``pilot.user_id`` <- ``user.id``, ``gen_ai.agent.name`` <-
  ``agent.name``, else an ``AGENT`` span's name, ... (the decision builder reads
  ``llm.prompt_template.version`` and ``llm.cost.total`` itself).
- business signals: each annotation or evaluation carried on the span
  (``annotations.<i>.annotation.name`` / ``.score`` / ``.label``, the
  ``evaluations.*``, ``trace.*`` and ``session.*`` variants, as
  ``openinference.instrumentation.get_annotation_attributes`` writes them), each
  row of an annotation export, each span event named ``pilot.outcome`` (its
  ``pilot.*`` attributes) and each ``gen_ai.evaluation.result`` event become
  ``pilot.<name>`` = score, else label (a name that already starts with ``pilot.``
  is kept; a whole score is written without ``.0``, so 1.0 reads as boolean
  true). Precedence when a key repeats: span attribute > annotation on the span >
  annotation export (the last row of the file wins) > event.
- ``unparseable attribute``: a token count or cost (``llm.token_count.*``,
  ``llm.cost.*``) that is not a number, an ``attributes`` or ``events`` column that
  is not valid JSON: the attribute's name is recorded under
  :data:`~pilot_lib.ingest.traces.spans.UNPARSEABLE_KEY`.
- times: timezone-aware times are converted to UTC, naive ones taken as UTC, ISO
  text parsed (an offset is honoured), numbers read as Unix epoch (unit from the
  magnitude; pandas' ``to_json`` writes milliseconds). An unparseable time is NULL
  (the span is quarantined by the decision builder).

Edge cases: an annotation whose span is not in the export is ignored; a file that
is not Parquet / JSON Lines makes the read fail with a
:class:`~pilot_lib.errors.DataSourceError` naming the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import ibis
import ibis.expr.types as ir
from ibis.backends import BaseBackend

from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.traces import _tables as tb
from pilot_lib.ingest.traces.spans import SPAN_COLUMNS, UNPARSEABLE_KEY

__all__ = [
    "GENAI_FROM_OPENINFERENCE",
    "KIND_TO_OPERATION",
    "NUMERIC_ATTRIBUTES",
    "from_otlp",
    "is_annotation_file",
    "read_spans",
]

#: OpenInference span kind -> normalised ``operation`` (other kinds are lowercased).
KIND_TO_OPERATION: dict[str, str] = {
    "AGENT": "invoke_agent",
    "LLM": "chat",
    "TOOL": "execute_tool",
}

#: Name the decision builder reads -> OpenInference attributes it is taken from (first
#: present wins); added only when the span has no attribute of that name already.
GENAI_FROM_OPENINFERENCE: dict[str, tuple[str, ...]] = {
    "gen_ai.usage.input_tokens": ("llm.token_count.prompt",),
    "gen_ai.usage.output_tokens": ("llm.token_count.completion",),
    "gen_ai.request.model": ("llm.request.model_name", "llm.model_name"),
    "gen_ai.response.model": ("llm.response.model_name",),
    "gen_ai.provider.name": ("llm.provider",),
    "gen_ai.system": ("llm.system",),
    "gen_ai.conversation.id": ("session.id",),
    "gen_ai.agent.name": ("agent.name",),
    "gen_ai.tool.name": ("tool.name",),
    "pilot.user_id": ("user.id",),
}

#: OpenInference attributes that must be numbers (else ``unparseable attribute``).
NUMERIC_ATTRIBUTES: tuple[str, ...] = (
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.total",
    "llm.cost.prompt",
    "llm.cost.completion",
    "llm.cost.total",
)

#: Keys of annotations carried on a span, e.g. ``annotations.0.annotation.name``.
_ANNOTATION_NAME_KEY = (
    r"^((trace|session)\.)?(annotations|evaluations)\.[0-9]+\.(annotation|evaluation)\.name$"
)

#: SQL pattern of the ``.name`` suffix of an annotation key.
_NAME_SUFFIX = tb.sql_string(r"\.name$")

_FIX = (
    "A Phoenix span export is Parquet or JSON Lines with one span per row "
    "(context.trace_id, context.span_id, parent_id, name, span_kind, start_time, end_time, "
    "status_code, attributes.* columns); check the file and datasets.decisions.format."
)


def is_annotation_file(path: str | Path) -> bool:
    """True for a file whose name marks it as an annotation export (``annotation``/``evaluation``)."""
    name = Path(path).name.lower()
    return "annotation" in name or "evaluation" in name


def read_spans(con: BaseBackend, paths: Sequence[str | Path], label: str = "decisions") -> ir.Table:
    """Read OpenInference span files (+ annotation files) into the normalised span table.

    Parameters
    ----------
    con:
        An Ibis DuckDB connection.
    paths:
        The files, globs already expanded: Phoenix span exports (Parquet / JSON
        Lines), annotation exports (name contains ``annotation``/``evaluation``),
        OTLP JSON Lines. Annotations attach to the spans of every span file.
    label:
        The data set's name, for error messages.

    Returns
    -------
    ibis.Table
        A temporary table with :data:`~pilot_lib.ingest.traces.spans.SPAN_COLUMNS`.

    Raises
    ------
    DataSourceError
        ``con`` is not DuckDB, only annotation files were given, or a file cannot
        be read (the message names the files and the expected shape).
    """
    files = [Path(p) for p in paths]
    annotations = [f for f in files if is_annotation_file(f)]
    otlp = [f for f in files if f not in annotations and tb.is_otlp_file(f)]
    exports = [f for f in files if f not in annotations and f not in otlp]
    if not exports and not otlp:
        raise DataSourceError(
            f"data set {label!r}: only annotation files were given ({', '.join(map(str, files))}); "
            "add the Phoenix span export (Parquet or JSON Lines) to datasets."
            f"{label}.path"
        )
    parts: list[ir.Table] = []
    if exports:
        parts.append(_read_exports(con, exports, annotations, label))
    if otlp:
        from pilot_lib.ingest.traces import otel

        parts.append(from_otlp(con, otel.read_spans(con, otlp, label=label), label, annotations))
    return parts[0] if len(parts) == 1 else ibis.union(*parts)


def _describe(con: BaseBackend, sql: str, files: Sequence[Path], label: str) -> dict[str, str]:
    try:
        return tb.describe(con, sql)
    except Exception as exc:  # DuckDB/Ibis errors: a file that is not what it claims
        raise tb.read_error(
            con, exc, label, "an OpenInference span export", files, _FIX, scans=2
        ) from exc


def _annotations_sql(con: BaseBackend, files: Sequence[Path], label: str) -> str:
    """SQL: ``span_id``, ``entries`` (``pilot.<name>`` = score else label; last row first)."""
    raw = tb.read_sql(
        files, tb.json_object_size(con, len(files), tb.any_compressed(files), scans=2)
    )
    cols = _describe(con, raw, files, label)
    span = tb.pick(cols, "span_id", "context.span_id", "span.context.span_id")
    name = tb.pick(cols, "name", "annotation_name", "annotation.name")
    if span is None or name is None:
        raise DataSourceError(
            f"data set {label!r}: the annotation file(s) {', '.join(map(str, files))} have no "
            "span_id / name column; an annotation export has one row per annotation with "
            "span_id, name, label and/or score"
        )
    score = tb.pick(cols, "score", "result.score", "annotation.score")
    labels = tb.pick(cols, "label", "result.label", "annotation.label")
    value = (
        f"coalesce({tb.number_text_sql(tb.text_sql(score, tb.type_of(cols, score)))}, "
        f"{tb.text_sql(labels, tb.type_of(cols, labels))})"
    )
    n = tb.text_sql(name, tb.type_of(cols, name))
    return f"""
SELECT {tb.id_sql(span, tb.type_of(cols, span))} AS span_id,
       list({{'key': CASE WHEN starts_with({n}, 'pilot.') THEN {n} ELSE 'pilot.' || {n} END,
              'value': {value}}} ORDER BY source_file DESC, source_row DESC) AS entries
FROM ({raw})
WHERE {n} IS NOT NULL AND {value} IS NOT NULL
GROUP BY 1
"""


def _is_nested(dtype: str) -> bool:
    """A struct or map column (not a list of them): its leaves are attributes."""
    t = dtype.upper()
    return t.startswith(("STRUCT", "MAP")) and not t.endswith("]")


def _attribute_columns(cols: Mapping[str, str]) -> list[tuple[str, str]]:
    """(attribute name, column) for every ``attributes.<name>`` column holding a value.

    A struct (or map) column is left to :func:`_nested_columns`.
    """
    return [
        (c[len("attributes.") :], c)
        for c in cols
        if c.startswith("attributes.") and not _is_nested(cols[c])
    ]


def _nested_columns(cols: Mapping[str, str]) -> list[tuple[str, str]]:
    """(attribute prefix, column) for every ``attributes.<prefix>`` struct or map column.

    Phoenix's client returns one column per attribute prefix whose value is a nested
    dict (``attributes.pilot`` = ``{"case_id": ..., "workflow": ...}``): Parquet or
    JSON Lines store it as a struct, at any depth.
    """
    return [
        (c[len("attributes.") :], c)
        for c in cols
        if c.startswith("attributes.") and _is_nested(cols[c])
    ]


def _read_exports(
    con: BaseBackend, files: Sequence[Path], annotations: Sequence[Path], label: str
) -> ir.Table:
    raw = tb.read_sql(
        files, tb.json_object_size(con, len(files), tb.any_compressed(files), scans=2)
    )
    cols = _describe(con, raw, files, label)

    def ref(*names: str) -> tuple[str | None, str]:
        r = tb.pick(cols, *names)
        return r, tb.type_of(cols, r)

    trace = ref("context.trace_id", "trace_id", "context_trace_id")
    span = ref("context.span_id", "span_id", "context_span_id")
    parent = ref("parent_id", "parent_span_id", "context.parent_id")
    name = ref("name", "span_name")
    kind = ref("span_kind", "kind")
    start = ref("start_time", "startTime")
    end = ref("end_time", "endTime")
    status = ref("status_code", "status")
    message = ref("status_message", "statusMessage")
    events = ref("events")
    obj = ref("attributes")

    flat = _attribute_columns(cols)
    nested = _nested_columns(cols)
    # the nested columns as one JSON object {prefix: value}: its leaves are flattened to
    # dotted keys like the attributes object (``pilot.case_id``)
    nested_text = (
        "json_object("
        + ", ".join(f"{tb.sql_string(key)}, CAST({tb.q(c)} AS JSON)" for key, c in nested)
        + ")::VARCHAR"
        if nested
        else "CAST(NULL AS VARCHAR)"
    )
    flat_entries = tb.entries_sql((key, tb.text_sql(tb.q(c), cols[c])) for key, c in flat)
    bad_checks = [
        f"WHEN try_cast({tb.text_sql(tb.q(c), cols[c])} AS DOUBLE) IS NULL "
        f"AND {tb.text_sql(tb.q(c), cols[c])} IS NOT NULL THEN {tb.sql_string(key)}"
        for key, c in flat
        if key in NUMERIC_ATTRIBUTES and not _is_numeric(cols[c])
    ]
    obj_text = tb.text_sql(obj[0], obj[1]) if obj[0] else "CAST(NULL AS VARCHAR)"
    events_text = tb.text_sql(events[0], events[1]) if events[0] else "CAST(NULL AS VARCHAR)"
    bad_checks.append(
        f"WHEN {obj_text} IS NOT NULL AND NOT coalesce(json_valid({obj_text}), false) "
        "THEN 'attributes'"
    )
    bad_checks.append(
        f"WHEN {events_text} IS NOT NULL AND try_cast(try_cast({events_text} AS JSON) AS "
        f"{_EVENT_TYPE}) IS NULL THEN 'events'"
    )
    bad = "CASE " + " ".join(bad_checks) + " END"

    obj_cte = (
        f", obj AS ({tb.json_leaves_sql('_obj', '_rid', 'base')})"
        if obj[0]
        else ", obj AS (SELECT CAST(NULL AS BIGINT) AS _rid, "
        "CAST([] AS STRUCT(key VARCHAR, value VARCHAR)[]) AS entries WHERE false)"
    )
    obj_cte += (
        f", nest AS ({tb.json_leaves_sql('_nested', '_rid', 'base')})"
        if nested
        else ", nest AS (SELECT CAST(NULL AS BIGINT) AS _rid, "
        "CAST([] AS STRUCT(key VARCHAR, value VARCHAR)[]) AS entries WHERE false)"
    )
    ann_cte = (
        f", ann AS ({_annotations_sql(con, annotations, label)})"
        if annotations
        else ", ann AS (SELECT CAST(NULL AS VARCHAR) AS span_id, "
        "CAST([] AS STRUCT(key VARCHAR, value VARCHAR)[]) AS entries WHERE false)"
    )
    sql = f"""
WITH base AS (
    SELECT
        row_number() OVER () AS _rid,
        source_file, source_row,
        {tb.id_sql(*trace)} AS trace_id,
        {tb.id_sql(*span)} AS span_id,
        {tb.id_sql(*parent)} AS parent_span_id,
        {tb.text_sql(*name)} AS name,
        {tb.timestamp_sql(*start)} AS start_time,
        {tb.timestamp_sql(*end)} AS end_time,
        upper(trim({tb.text_sql(*status)})) AS _status,
        {tb.text_sql(*message)} AS status_message,
        upper(trim({tb.text_sql(*kind)})) AS _kind,
        {flat_entries} AS _flat,
        {obj_text} AS _obj,
        {nested_text} AS _nested,
        try_cast(try_cast({events_text} AS JSON) AS {_EVENT_TYPE}) AS _events,
        {bad} AS _bad
    FROM ({raw})
){obj_cte}{ann_cte},
merged AS (
    SELECT b.*,
        {
        tb.dedupe_map_sql(
            "list_concat("
            f"[{{'key': {tb.sql_string(UNPARSEABLE_KEY)}, 'value': b._bad}}], "
            "b._flat, nest.entries, obj.entries, ann.entries, "
            f"{_event_entries_sql('b._events')})"
        )
    } AS _attrs
    FROM base AS b
    LEFT JOIN obj ON obj._rid = b._rid
    LEFT JOIN nest ON nest._rid = b._rid
    LEFT JOIN ann ON ann.span_id = b.span_id
)
SELECT
    trace_id, span_id, parent_span_id, name,
    CAST(start_time AS TIMESTAMP) AS start_time,
    CAST(end_time AS TIMESTAMP) AS end_time,
    CASE WHEN _status IN ('ERROR', 'STATUS_CODE_ERROR', '2') THEN 'error'
         WHEN _status IN ('OK', 'STATUS_CODE_OK', '1') THEN 'ok'
         ELSE 'unset' END AS status,
    status_message,
    {
        _operation_sql("coalesce(_kind, upper(trim(_attrs['openinference.span.kind'])))")
    } AS operation,
    {tb.dedupe_map_sql(f"list_concat(map_entries(_attrs), {_derived_entries_sql('_attrs')})")}
        AS attributes,
    source_file,
    source_row
FROM merged
ORDER BY _rid
"""
    return tb.materialize(con, sql, label, "an OpenInference span export", files, _FIX)


#: The shape span events are cast to (Phoenix: ``[{name, timestamp, attributes}]``).
_EVENT_TYPE = "STRUCT(name VARCHAR, attributes MAP(VARCHAR, VARCHAR))[]"


def _is_numeric(dtype: str) -> bool:
    t = dtype.upper()
    return t in (
        "BIGINT",
        "INTEGER",
        "SMALLINT",
        "TINYINT",
        "HUGEINT",
        "UBIGINT",
        "DOUBLE",
        "FLOAT",
    ) or (t.startswith("DECIMAL"))


def _operation_sql(kind: str) -> str:
    """SQL: the normalised operation of an (upper-case) OpenInference span kind."""
    whens = " ".join(
        f"WHEN {tb.sql_string(k)} THEN {tb.sql_string(v)}" for k, v in KIND_TO_OPERATION.items()
    )
    return f"CASE {kind} {whens} ELSE lower(nullif({kind}, '')) END"


def _event_entries_sql(events: str) -> str:
    """SQL: ``pilot.*`` entries of ``pilot.outcome`` and ``gen_ai.evaluation.result`` events.

    ``events`` is a ``list<{name, attributes map}>`` expression.
    """
    return f"""list_concat(
        flatten(list_transform(
            list_filter(coalesce({events}, []), lambda e: e.name = 'pilot.outcome'),
            lambda e: list_filter(coalesce(map_entries(e.attributes), []),
                                  lambda a: starts_with(a.key, 'pilot.')))),
        list_transform(
            list_filter(coalesce({events}, []),
                        lambda e: e.name = 'gen_ai.evaluation.result'
                                  AND e.attributes['gen_ai.evaluation.name'] IS NOT NULL),
            lambda e: {{'key': CASE WHEN starts_with(e.attributes['gen_ai.evaluation.name'], 'pilot.')
                                   THEN e.attributes['gen_ai.evaluation.name']
                                   ELSE 'pilot.' || e.attributes['gen_ai.evaluation.name'] END,
                       'value': coalesce({tb.number_text_sql("e.attributes['gen_ai.evaluation.score.value']")},
                                         e.attributes['gen_ai.evaluation.score.label'])}}))"""


def _derived_entries_sql(attrs: str, name: str = "name") -> str:
    """SQL: the entries derived from an attribute map ``attrs`` (appended after it).

    Annotations carried on the span (``annotations.<i>.annotation.*`` and the
    evaluation / trace / session variants) as ``pilot.<name>``, then the GenAI
    names of :data:`GENAI_FROM_OPENINFERENCE`, then ``gen_ai.agent.name`` = the
    span name (column ``name``) of an ``AGENT`` span without ``agent.name``. Since the map's own entries come
    first, an attribute the span already has is never replaced.
    """
    genai = tb.entries_sql(
        [
            *(
                (
                    target,
                    "coalesce(" + ", ".join(f"{attrs}[{tb.sql_string(s)}]" for s in sources) + ")",
                )
                for target, sources in GENAI_FROM_OPENINFERENCE.items()
            ),
            (
                "gen_ai.agent.name",
                f"CASE WHEN upper(trim({attrs}['openinference.span.kind'])) = 'AGENT' "
                f"THEN nullif({name}, '') END",
            ),
        ]
    )
    pattern = tb.sql_string(_ANNOTATION_NAME_KEY)
    score = tb.number_text_sql(f"{attrs}[regexp_replace(a.key, {_NAME_SUFFIX}, '.score')]")
    label = f"{attrs}[regexp_replace(a.key, {_NAME_SUFFIX}, '.label')]"
    annotations = f"""list_transform(
        list_filter(coalesce(map_entries({attrs}), []), lambda a: regexp_matches(a.key, {pattern})),
        lambda a: {{'key': CASE WHEN starts_with(a.value, 'pilot.') THEN a.value
                               ELSE 'pilot.' || a.value END,
                   'value': coalesce({score}, {label})}})"""
    bad = " ".join(
        f"WHEN {attrs}[{tb.sql_string(k)}] IS NOT NULL "
        f"AND try_cast({attrs}[{tb.sql_string(k)}] AS DOUBLE) IS NULL THEN {tb.sql_string(k)}"
        for k in NUMERIC_ATTRIBUTES
    )
    unparseable = f"[{{'key': {tb.sql_string(UNPARSEABLE_KEY)}, 'value': CASE {bad} END}}]"
    return f"list_concat({unparseable}, {annotations}, {genai})"


def from_otlp(
    con: BaseBackend,
    spans: ir.Table,
    label: str = "decisions",
    annotations: Sequence[str | Path] = (),
) -> ir.Table:
    """Map OpenInference spans already in the normalised table (read from OTLP) like an export.

    ``operation`` is filled from ``openinference.span.kind`` where the OTLP reader
    found none; the GenAI names, span-carried annotations and the rows of
    ``annotations`` (annotation export files) are added to ``attributes`` exactly
    as for a Phoenix export. Spans without OpenInference attributes pass unchanged.
    The OTLP reader (or any caller) may apply it to every OTLP read: it is a no-op
    for other spans.

    Returns
    -------
    ibis.Table
        A temporary table with the normalised span columns.
    """
    base = ibis.to_sql(spans.select(*SPAN_COLUMNS), dialect="duckdb")
    ann_cte = (
        f", ann AS ({_annotations_sql(con, [Path(a) for a in annotations], label)})"
        if annotations
        else ", ann AS (SELECT CAST(NULL AS VARCHAR) AS span_id, "
        "CAST([] AS STRUCT(key VARCHAR, value VARCHAR)[]) AS entries WHERE false)"
    )
    sql = f"""
WITH s AS ({base}){ann_cte},
m AS (
    SELECT s.*, {tb.dedupe_map_sql("list_concat(map_entries(s.attributes), ann.entries)")} AS _attrs
    FROM s LEFT JOIN ann ON ann.span_id = s.span_id
)
SELECT
    trace_id, span_id, parent_span_id, name, start_time, end_time, status, status_message,
    coalesce(operation, {_operation_sql("upper(trim(_attrs['openinference.span.kind']))")})
        AS operation,
    {tb.dedupe_map_sql(f"list_concat(map_entries(_attrs), {_derived_entries_sql('_attrs')})")}
        AS attributes,
    source_file, source_row
FROM m
"""
    return tb.materialize(con, sql, label, "OpenInference spans (OTLP)", [], _FIX)

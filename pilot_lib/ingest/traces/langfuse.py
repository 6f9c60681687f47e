"""Langfuse traces, observations and scores -> the normalised span table, in DuckDB.

Input (``datasets.decisions.format: langfuse``). ``path`` names the export's files
(globs allowed): typically ``path: langfuse-export/**/*.jsonl`` over

- **observations** (required): files or folders named ``observations*``
  (``observations.jsonl``, ``observations/2025-01-01.parquet``, the enriched
  ``observations_v2/``). One row per observation; both spellings of the fields are
  read, the public API's camelCase and the blob-storage export's snake_case:
  ``id``, ``traceId``/``trace_id``, ``parentObservationId``/``parent_observation_id``,
  ``type`` (``SPAN``, ``GENERATION``, ``EVENT``, ``AGENT``, ``TOOL``, ``CHAIN``,
  ...), ``name``, ``startTime``/``start_time``, ``endTime``/``end_time``,
  ``level`` (``DEBUG``/``DEFAULT``/``WARNING``/``ERROR``),
  ``statusMessage``/``status_message``, ``model``, ``usageDetails``/``usage_details``
  (``{input, output, total, ...}``; the deprecated ``usage`` ``{input, output}`` or
  ``promptTokens``/``completionTokens`` when absent),
  ``costDetails``/``cost_details`` (``{input, output, total}`` in US dollars),
  ``calculatedTotalCost``/``totalCost``/``total_cost``, ``promptName``,
  ``promptVersion``, ``metadata`` (JSON object), ``version``, ``environment``; the
  enriched export's trace fields ``userId``/``user_id``, ``sessionId``/``session_id``,
  ``traceName``/``trace_name``, ``tags``, ``release``.
- **traces** (optional): files or folders named ``traces*``: ``id``, ``name``,
  ``timestamp``, ``userId``, ``sessionId``, ``metadata``, ``tags``, ``release``,
  ``version``, ``environment``. Their fields go onto the trace's root observations.
- **scores** (optional): files or folders named ``scores*``: ``traceId``,
  ``observationId``, ``name``, ``value``, ``stringValue``, ``dataType``
  (``NUMERIC``/``BOOLEAN``/``CATEGORICAL``/``TEXT``), ``timestamp``. A score with an
  observation id goes to that observation, one with only a trace id to the trace's
  root observations (session scores are ignored).
- **OTLP JSON Lines** written by the Langfuse SDK (v3+ is OpenTelemetry-based, its
  spans carry ``langfuse.*`` attributes): read by the OTLP reader, then mapped by
  :func:`from_otlp`.

A file's role is the first of its name and its folders' names that starts with
``observations``, ``traces`` or ``scores``; a file named otherwise is an error.

Mapping (onto the names the decision builder reads, so it has no Langfuse logic):

- ``span_id`` = observation id, ``parent_span_id`` = parent observation id (NULL:
  a root observation of the trace); ids lowercased.
- ``operation`` from the observation type: ``AGENT`` -> ``invoke_agent``,
  ``GENERATION`` -> ``chat``, ``TOOL`` -> ``execute_tool``; a ``SPAN`` whose name
  starts with one of those words (``"chat gpt-4o"``) takes it; other types lowercased.
- ``status``: ``error`` for level ``ERROR``, else ``unset`` (Langfuse records no
  success status). ``end_time`` of an ``EVENT`` without one is its start time.
- ``attributes`` use the SDK's OTLP attribute names (so an export and the SDK's
  spans map identically): ``langfuse.observation.type`` / ``.level`` /
  ``.model.name`` / ``.usage_details`` / ``.cost_details`` / ``.prompt.name`` /
  ``.prompt.version`` / ``.metadata.<key>``, ``langfuse.version``,
  ``langfuse.environment``, ``langfuse.release``, ``user.id``, ``session.id``,
  ``langfuse.trace.name`` / ``.tags`` / ``.metadata.<key>``; then
  ``gen_ai.request.model``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens`` (usage ``input`` /
  ``output``, or ``prompt_tokens`` / ``completion_tokens``), ``gen_ai.usage.cost``
  (cost ``total``, else calculated total cost, else input + output cost),
  ``pilot.prompt_version`` (prompt version), ``pilot.user_id`` (user id),
  ``gen_ai.agent.name`` (the name of an ``AGENT`` observation: the agent id),
  ``gen_ai.conversation.id`` (session id), and every metadata key (observation,
  then trace) that starts with ``pilot.`` or ``gen_ai.`` -- also nested
  (``{"pilot": {"accepted": true}}``) or under the ``attributes`` /
  ``resourceAttributes`` objects where the Langfuse server keeps OpenTelemetry
  attributes -- under its own name.
- every metadata key is also given under its bare name (``claim_amount``), last of
  all, so drift features recorded as metadata are found.
- scores: ``pilot.<name>`` (a name already starting with ``pilot.`` kept) =
  ``true``/``false`` for a ``BOOLEAN`` score, the ``stringValue`` of a
  ``CATEGORICAL`` one, else the value (a whole number without ``.0``); the latest
  score of a name wins.
- precedence when a key repeats: the observation's own fields > its metadata >
  its scores > the trace's scores > the trace's fields and metadata.
- ``unparseable attribute``: usage or cost that is not a JSON object, metadata
  text that is not JSON, or a usage count / cost that is not a number.

Edge cases: an observation without a trace id or id is kept with NULLs (the
decision builder quarantines it); scores naming no exported observation are
ignored; nested metadata deeper than one level under ``pilot`` in OTLP is not
expanded (the SDK writes one level, the export is flattened fully).
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

__all__ = ["ROLES", "TYPE_TO_OPERATION", "file_role", "from_otlp", "read_spans"]

#: Langfuse observation type -> normalised ``operation``.
TYPE_TO_OPERATION: dict[str, str] = {
    "AGENT": "invoke_agent",
    "GENERATION": "chat",
    "TOOL": "execute_tool",
}

#: The parts of a Langfuse export, by file / folder name prefix.
ROLES: tuple[str, ...] = ("observations", "traces", "scores")

_OBS_META = "langfuse.observation.metadata."
_TRACE_META = "langfuse.trace.metadata."

_EMPTY_ENTRIES = "CAST([] AS STRUCT(key VARCHAR, value VARCHAR)[])"

_FIX = (
    "A Langfuse export is Parquet or JSON Lines files named observations*, traces* and "
    "scores* (or in folders of those names) with the fields of Langfuse's export "
    "(id, traceId / trace_id, parentObservationId, type, name, startTime, endTime, ...); "
    "check datasets.decisions.path and .format."
)


def file_role(path: str | Path) -> str | None:
    """``observations``, ``traces`` or ``scores`` for a file of a Langfuse export, else None.

    The file name is looked at first, then its folders from the nearest up
    (``export/scores/2025.jsonl`` is a scores file).
    """
    p = Path(path)
    for part in [p.name, *[q.name for q in p.parents]]:
        low = part.lower()
        for role in ROLES:
            if low.startswith(role):
                return role
    return None


def read_spans(con: BaseBackend, paths: Sequence[str | Path], label: str = "decisions") -> ir.Table:
    """Read a Langfuse export (and/or the SDK's OTLP spans) into the normalised span table.

    Parameters
    ----------
    con:
        An Ibis DuckDB connection.
    paths:
        The files, globs already expanded (see the module doc for the names).
    label:
        The data set's name, for error messages.

    Returns
    -------
    ibis.Table
        A temporary table with :data:`~pilot_lib.ingest.traces.spans.SPAN_COLUMNS`.

    Raises
    ------
    DataSourceError
        ``con`` is not DuckDB, a file's role cannot be told from its name, no
        observations file is given, or a file cannot be read.
    """
    files = [Path(p) for p in paths]
    otlp = [f for f in files if tb.is_otlp_file(f)]
    roles: dict[str, list[Path]] = {r: [] for r in ROLES}
    unknown = []
    for f in files:
        if f in otlp:
            continue
        role = file_role(f)
        if role is None:
            unknown.append(f)
        else:
            roles[role].append(f)
    if unknown:
        raise DataSourceError(
            f"data set {label!r}: cannot tell which part of the Langfuse export "
            f"{', '.join(map(str, unknown))} is; name each file (or its folder) "
            "observations*, traces* or scores*"
        )
    if not roles["observations"] and not otlp:
        raise DataSourceError(
            f"data set {label!r}: no Langfuse observations file among "
            f"{', '.join(map(str, files))}; datasets.{label}.path must include the "
            "observations export (observations.jsonl / observations/*.parquet)"
        )
    parts: list[ir.Table] = []
    if roles["observations"]:
        parts.append(_read_export(con, roles, label))
    if otlp:
        from pilot_lib.ingest.traces import otel

        parts.append(from_otlp(con, otel.read_spans(con, otlp, label=label), label))
    return parts[0] if len(parts) == 1 else ibis.union(*parts)


def _describe(con: BaseBackend, sql: str, files: Sequence[Path], label: str) -> dict[str, str]:
    try:
        return tb.describe(con, sql)
    except Exception as exc:  # DuckDB/Ibis errors: a file that is not what it claims
        raise tb.read_error(con, exc, label, "a Langfuse export", files, _FIX, scans=3) from exc


class _Cols:
    """Column lookup of one relation: SQL for a field under any of its spellings."""

    def __init__(self, columns: Mapping[str, str]) -> None:
        self.columns = columns

    def ref(self, *names: str) -> tuple[str | None, str]:
        r = tb.pick(self.columns, *names)
        return r, tb.type_of(self.columns, r)

    def text(self, *names: str) -> str:
        return tb.text_sql(*self.ref(*names))

    def id(self, *names: str) -> str:
        return tb.id_sql(*self.ref(*names))

    def time(self, *names: str) -> str:
        return tb.timestamp_sql(*self.ref(*names))


def _metadata_entries(json_text: str, prefix: str) -> str:
    """SQL (inside a per-row context): leaves of metadata JSON text as ``prefix.<key>`` entries.

    Used with :func:`_tables.json_leaves_sql` output; see :func:`_read_export`.
    """
    return (
        f"list_transform(coalesce({json_text}, []), "
        f"lambda e: {{'key': {tb.sql_string(prefix)} || e.key, 'value': e.value}})"
    )


def _bad_json(text: str, name: str, *, object_only: bool = False) -> str:
    """SQL ``WHEN`` branch naming ``name`` when ``text`` is not JSON (not an object, if asked)."""
    valid = tb.is_object_sql(text) if object_only else f"coalesce(json_valid({text}), false)"
    return f"WHEN {text} IS NOT NULL AND NOT {valid} THEN {tb.sql_string(name)}"


def _scores_sql(con: BaseBackend, files: Sequence[Path], label: str) -> str:
    """SQL: ``trace_id``, ``observation_id``, ``entries`` (latest score of a name first)."""
    raw = tb.read_sql(
        files, tb.json_object_size(con, len(files), tb.any_compressed(files), scans=3)
    )
    c = _Cols(_describe(con, raw, files, label))
    name = c.text("name")
    if tb.pick(c.columns, "name") is None:
        raise DataSourceError(
            f"data set {label!r}: the Langfuse scores file(s) {', '.join(map(str, files))} "
            "have no name column"
        )
    value = tb.number_text_sql(c.text("value"))
    string_value = c.text("stringValue", "string_value")
    data_type = f"upper({c.text('dataType', 'data_type')})"
    number = f"try_cast({c.text('value')} AS DOUBLE)"
    val = f"""CASE
        WHEN {data_type} = 'BOOLEAN' THEN CASE WHEN {number} = 1 THEN 'true'
                                              WHEN {number} = 0 THEN 'false'
                                              ELSE lower({string_value}) END
        WHEN {data_type} IN ('CATEGORICAL', 'TEXT') THEN coalesce({string_value}, {value})
        ELSE coalesce({value}, {string_value}) END"""
    ts = c.time("timestamp", "createdAt", "created_at")
    return f"""
SELECT trace_id, observation_id,
       list({{'key': key, 'value': val}} ORDER BY ts DESC NULLS LAST, source_file DESC,
            source_row DESC) AS entries
FROM (
    SELECT {c.id("traceId", "trace_id")} AS trace_id,
           {c.id("observationId", "observation_id")} AS observation_id,
           CASE WHEN starts_with({name}, 'pilot.') THEN {name} ELSE 'pilot.' || {name} END AS key,
           {val} AS val, {ts} AS ts, source_file, source_row
    FROM ({raw})
)
WHERE key IS NOT NULL AND val IS NOT NULL AND trace_id IS NOT NULL
GROUP BY trace_id, observation_id
"""


def _read_export(con: BaseBackend, roles: Mapping[str, Sequence[Path]], label: str) -> ir.Table:
    obs_files = list(roles["observations"])
    raw = tb.read_sql(
        obs_files, tb.json_object_size(con, len(obs_files), tb.any_compressed(obs_files), scans=3)
    )
    c = _Cols(_describe(con, raw, obs_files, label))
    usage = c.text(
        "usageDetails", "usage_details", "providedUsageDetails", "provided_usage_details"
    )
    usage_legacy = c.text("usage")
    cost = c.text("costDetails", "cost_details", "providedCostDetails", "provided_cost_details")
    metadata = c.text("metadata")
    usage_any = f"coalesce({usage}, {usage_legacy})"
    own = tb.entries_sql(
        [
            ("langfuse.observation.type", c.text("type")),
            ("langfuse.observation.level", c.text("level")),
            ("langfuse.observation.status_message", c.text("statusMessage", "status_message")),
            (
                "langfuse.observation.model.name",
                c.text("model", "providedModelName", "provided_model_name"),
            ),
            ("langfuse.observation.usage_details", usage_any),
            ("langfuse.observation.cost_details", cost),
            ("langfuse.observation.prompt.name", c.text("promptName", "prompt_name")),
            ("langfuse.observation.prompt.version", c.text("promptVersion", "prompt_version")),
            ("langfuse.version", c.text("version")),
            ("langfuse.environment", c.text("environment")),
            ("langfuse.release", c.text("release")),
            ("langfuse.trace.name", c.text("traceName", "trace_name")),
            ("langfuse.trace.tags", c.text("tags", "traceTags", "trace_tags")),
            ("user.id", c.text("userId", "user_id")),
            ("session.id", c.text("sessionId", "session_id")),
            ("gen_ai.usage.input_tokens", c.text("promptTokens", "prompt_tokens")),
            ("gen_ai.usage.output_tokens", c.text("completionTokens", "completion_tokens")),
            (
                "gen_ai.usage.cost",
                "coalesce(try_cast(json_extract_string("
                f"CASE WHEN json_valid({cost}) THEN {cost} END, '$.total') AS DOUBLE)::VARCHAR, "
                + c.text("calculatedTotalCost", "calculated_total_cost", "totalCost", "total_cost")
                + ")",
            ),
        ]
    )
    bad = (
        "CASE "
        + " ".join(
            [
                _bad_json(usage_any, "langfuse.observation.usage_details", object_only=True),
                _bad_json(cost, "langfuse.observation.cost_details", object_only=True),
                _bad_json(metadata, "metadata"),
            ]
        )
        + " END"
    )
    traces_cte = (
        ", tr AS (SELECT CAST(NULL AS VARCHAR) AS trace_id, "
        + _EMPTY_ENTRIES
        + " AS entries WHERE false)"
    )
    trace_meta_cte = ""
    if roles["traces"]:
        tfiles = list(roles["traces"])
        traw = tb.read_sql(
            tfiles, tb.json_object_size(con, len(tfiles), tb.any_compressed(tfiles), scans=3)
        )
        t = _Cols(_describe(con, traw, tfiles, label))
        tmeta = t.text("metadata")
        trace_entries = tb.entries_sql(
            [
                ("langfuse.trace.name", t.text("name")),
                ("user.id", t.text("userId", "user_id")),
                ("session.id", t.text("sessionId", "session_id")),
                ("langfuse.trace.tags", t.text("tags")),
                ("langfuse.release", t.text("release")),
                ("langfuse.version", t.text("version")),
                ("langfuse.environment", t.text("environment")),
            ]
        )
        trace_meta_cte = f""",
traw AS (
    SELECT row_number() OVER () AS _tid, {t.id("id", "traceId", "trace_id")} AS trace_id,
           {trace_entries} AS _fields, {tmeta} AS _meta
    FROM ({traw})
),
tmeta AS ({tb.json_leaves_sql("_meta", "_tid", "traw")})"""
        traces_cte = f""",
tr AS (
    SELECT traw.trace_id,
           list_concat(
               [{{'key': {tb.sql_string(UNPARSEABLE_KEY)},
                  'value': CASE {_bad_json("traw._meta", "langfuse.trace.metadata")} END}}],
               traw._fields,
               {_metadata_entries("tmeta.entries", "langfuse.trace.metadata.")}) AS entries
    FROM traw LEFT JOIN tmeta ON tmeta._tid = traw._tid
    QUALIFY row_number() OVER (PARTITION BY traw.trace_id ORDER BY traw._tid DESC) = 1
)"""
    if roles["scores"]:
        scores_cte = f", sc AS ({_scores_sql(con, list(roles['scores']), label)})"
    else:
        scores_cte = (
            ", sc AS (SELECT CAST(NULL AS VARCHAR) AS trace_id, CAST(NULL AS VARCHAR) AS "
            f"observation_id, {_EMPTY_ENTRIES} AS entries WHERE false)"
        )
    type_ = f"upper(trim({c.text('type')}))"
    name = c.text("name")
    start = c.time("startTime", "start_time")
    end = c.time("endTime", "end_time")
    level = f"upper(trim({c.text('level')}))"
    sql = f"""
WITH base AS (
    SELECT
        row_number() OVER () AS _rid,
        source_file, source_row,
        {c.id("traceId", "trace_id")} AS trace_id,
        {c.id("id", "observationId", "observation_id")} AS span_id,
        {c.id("parentObservationId", "parent_observation_id")} AS parent_span_id,
        {name} AS name,
        {start} AS start_time,
        CASE WHEN {type_} = 'EVENT' THEN coalesce({end}, {start}) ELSE {end} END AS end_time,
        CASE WHEN {level} = 'ERROR' THEN 'error' ELSE 'unset' END AS status,
        {c.text("statusMessage", "status_message")} AS status_message,
        {_operation_sql(type_, name)} AS operation,
        {own} AS _own,
        {metadata} AS _meta,
        {bad} AS _bad
    FROM ({raw})
),
meta AS ({tb.json_leaves_sql("_meta", "_rid", "base")}){trace_meta_cte}{traces_cte}{scores_cte},
merged AS (
    SELECT b.*,
        {
        tb.dedupe_map_sql(
            "list_concat("
            f"[{{'key': {tb.sql_string(UNPARSEABLE_KEY)}, 'value': b._bad}}], b._own, "
            f"{_metadata_entries('meta.entries', 'langfuse.observation.metadata.')}, "
            f"CASE WHEN b.parent_span_id IS NULL THEN tr.entries END)"
        )
    } AS _attrs,
        osc.entries AS _obs_scores,
        CASE WHEN b.parent_span_id IS NULL THEN tsc.entries END AS _trace_scores
    FROM base AS b
    LEFT JOIN meta ON meta._rid = b._rid
    LEFT JOIN tr ON tr.trace_id = b.trace_id
    LEFT JOIN sc AS osc ON osc.trace_id = b.trace_id AND osc.observation_id = b.span_id
    LEFT JOIN sc AS tsc ON tsc.trace_id = b.trace_id AND tsc.observation_id IS NULL
)
SELECT
    trace_id, span_id, parent_span_id, name,
    CAST(start_time AS TIMESTAMP) AS start_time,
    CAST(end_time AS TIMESTAMP) AS end_time,
    status, status_message, operation,
    {
        tb.dedupe_map_sql(
            "list_concat(map_entries(_attrs), "
            f"{_metadata_signals_sql('_attrs', _OBS_META)}, _obs_scores, _trace_scores, "
            f"{_metadata_signals_sql('_attrs', _TRACE_META)}, {_derived_entries_sql('_attrs')}, "
            f"{_metadata_bare_sql('_attrs', _OBS_META)}, {_metadata_bare_sql('_attrs', _TRACE_META)})"
        )
    } AS attributes,
    source_file, source_row
FROM merged
ORDER BY _rid
"""
    files = [f for r in ROLES for f in roles[r]]
    return tb.materialize(con, sql, label, "a Langfuse export", files, _FIX)


def _operation_sql(type_: str, name: str) -> str:
    """SQL: the normalised operation of an (upper-case) observation type and its name."""
    whens = " ".join(
        f"WHEN {type_} = {tb.sql_string(k)} THEN {tb.sql_string(v)}"
        for k, v in TYPE_TO_OPERATION.items()
    )
    first = f"split_part(trim({name}), ' ', 1)"
    return (
        f"CASE {whens} "
        f"WHEN {type_} = 'SPAN' AND {first} IN ('invoke_agent', 'chat', 'execute_tool') "
        f"THEN {first} ELSE lower(nullif({type_}, '')) END"
    )


def _json_text(value: str) -> str:
    """SQL: a JSON-encoded attribute value decoded to text (strings lose their quotes)."""
    return f"CASE WHEN coalesce(json_valid({value}), false) THEN json_extract_string({value}, '$') ELSE {value} END"


def _usage(attrs: str, key: str, *fields: str) -> str:
    v = f"{attrs}[{tb.sql_string(key)}]"
    j = f"CASE WHEN {tb.is_object_sql(v)} THEN {v} END"
    return "coalesce(" + ", ".join(f"json_extract_string({j}, '$.{f}')" for f in fields) + ")"


def _metadata_signals_sql(attrs: str, prefix: str) -> str:
    """SQL: the ``pilot.*`` / ``gen_ai.*`` keys of metadata held in ``attrs`` as ``prefix<key>``.

    ``prefix`` is ``langfuse.observation.metadata.`` or ``langfuse.trace.metadata.``.
    JSON-encoded values (the SDK encodes every metadata value) are decoded; a
    ``pilot`` / ``gen_ai`` object is expanded one level (``{"pilot": {"accepted":
    true}}`` gives ``pilot.accepted``); the Langfuse server's ``attributes.`` /
    ``resourceAttributes.`` prefixes (where it keeps OpenTelemetry attributes) are
    dropped.
    """
    n = len(prefix) + 1
    rest = f"regexp_replace(substr(a.key, {n}), '^(attributes|resourceAttributes)[.]', '')"
    pick = (
        f"list_filter(coalesce(map_entries({attrs}), []), "
        f"lambda a: starts_with(a.key, {tb.sql_string(prefix)}))"
    )
    direct = (
        f"list_transform(list_filter({pick}, "
        f"lambda a: regexp_matches({rest}, '^(pilot|gen_ai)[.]')), "
        f"lambda a: {{'key': {rest}, 'value': {_json_text('a.value')}}})"
    )
    nested = (
        f"flatten(list_transform(list_filter({pick}, lambda a: {rest} IN ('pilot', 'gen_ai') "
        "AND coalesce(CASE WHEN json_valid(a.value) THEN json_type(a.value) = 'OBJECT' END, false)), "
        f"lambda a: list_transform(json_keys(a.value), lambda k: {{'key': {rest} || '.' || k, "
        "'value': json_extract_string(a.value, '$.\"' || k || '\"')})))"
    )
    return f"list_concat({direct}, {nested})"


def _metadata_bare_sql(attrs: str, prefix: str) -> str:
    """SQL: every metadata key held in ``attrs`` as ``prefix<key>`` under its bare name.

    Lowest precedence: lets the decision builder find drift features
    (``claim_amount``) that a pilot records as metadata. Values JSON-decoded.
    """
    n = len(prefix) + 1
    return (
        f"list_transform(list_filter(coalesce(map_entries({attrs}), []), "
        f"lambda a: starts_with(a.key, {tb.sql_string(prefix)})), "
        f"lambda a: {{'key': substr(a.key, {n}), 'value': {_json_text('a.value')}}})"
    )


def _derived_entries_sql(attrs: str, name: str = "name") -> str:
    """SQL: entries derived from a map ``attrs`` holding the SDK's ``langfuse.*`` names.

    The marker of an unparseable usage or cost, and the GenAI names: model,
    input / output tokens, cost, prompt version, user, conversation, and the
    agent name (an ``AGENT`` observation's name, column ``name``).
    """
    usage_key = "langfuse.observation.usage_details"
    cost_key = "langfuse.observation.cost_details"
    numbers = {
        "gen_ai.usage.input_tokens": _usage(
            attrs, usage_key, "input", "prompt_tokens", "input_tokens"
        ),
        "gen_ai.usage.output_tokens": _usage(
            attrs, usage_key, "output", "completion_tokens", "output_tokens"
        ),
    }
    cost_total = _usage(attrs, cost_key, "total")
    cost_parts = (
        f"CASE WHEN {_usage(attrs, cost_key, 'input')} IS NOT NULL OR {_usage(attrs, cost_key, 'output')} IS NOT NULL "
        f"THEN CAST(coalesce(try_cast({_usage(attrs, cost_key, 'input')} AS DOUBLE), 0) + "
        f"coalesce(try_cast({_usage(attrs, cost_key, 'output')} AS DOUBLE), 0) AS VARCHAR) END"
    )
    bad_checks = " ".join(
        [
            _bad_json(f"{attrs}[{tb.sql_string(usage_key)}]", usage_key, object_only=True),
            _bad_json(f"{attrs}[{tb.sql_string(cost_key)}]", cost_key, object_only=True),
            *[
                f"WHEN {v} IS NOT NULL AND try_cast({v} AS DOUBLE) IS NULL THEN {tb.sql_string(usage_key)}"
                for v in numbers.values()
            ],
            f"WHEN {cost_total} IS NOT NULL AND try_cast({cost_total} AS DOUBLE) IS NULL "
            f"THEN {tb.sql_string(cost_key)}",
        ]
    )
    genai = tb.entries_sql(
        [
            ("gen_ai.request.model", f"{attrs}['langfuse.observation.model.name']"),
            *numbers.items(),
            ("gen_ai.usage.cost", f"coalesce({cost_total}, {cost_parts})"),
            ("pilot.prompt_version", f"{attrs}['langfuse.observation.prompt.version']"),
            ("pilot.user_id", f"{attrs}['user.id']"),
            ("gen_ai.conversation.id", f"{attrs}['session.id']"),
            (
                "gen_ai.agent.name",
                f"CASE WHEN upper(trim({attrs}['langfuse.observation.type'])) = 'AGENT' "
                f"THEN nullif({name}, '') END",
            ),
        ]
    )
    return f"list_concat([{{'key': {tb.sql_string(UNPARSEABLE_KEY)}, 'value': CASE {bad_checks} END}}], {genai})"


def from_otlp(con: BaseBackend, spans: ir.Table, label: str = "decisions") -> ir.Table:
    """Map Langfuse SDK spans already in the normalised table (read from OTLP).

    ``operation`` is filled from ``langfuse.observation.type`` where the OTLP reader
    found none, ``status`` becomes ``error`` for level ``ERROR``, the status message
    is taken from ``langfuse.observation.status_message`` when the span has none,
    and the GenAI names and metadata signals are added to ``attributes`` exactly as
    for an export. Spans without ``langfuse.*`` attributes pass unchanged (so the
    OTLP reader may apply this to every read).

    Returns
    -------
    ibis.Table
        A temporary table with the normalised span columns.
    """
    base = ibis.to_sql(spans.select(*SPAN_COLUMNS), dialect="duckdb")
    type_ = "upper(trim(attributes['langfuse.observation.type']))"
    sql = f"""
WITH s AS ({base})
SELECT
    trace_id, span_id, parent_span_id, name, start_time, end_time,
    CASE WHEN upper(trim(attributes['langfuse.observation.level'])) = 'ERROR' THEN 'error'
         ELSE status END AS status,
    coalesce(status_message, attributes['langfuse.observation.status_message']) AS status_message,
    coalesce(operation, {_operation_sql(type_, "name")}) AS operation,
    {
        tb.dedupe_map_sql(
            "list_concat(map_entries(attributes), "
            f"{_metadata_signals_sql('attributes', _OBS_META)}, "
            f"{_metadata_signals_sql('attributes', _TRACE_META)}, "
            f"{_derived_entries_sql('attributes')}, "
            f"{_metadata_bare_sql('attributes', _OBS_META)}, "
            f"{_metadata_bare_sql('attributes', _TRACE_META)})"
        )
    } AS attributes,
    source_file, source_row
FROM s
"""
    return tb.materialize(con, sql, label, "Langfuse spans (OTLP)", [], _FIX)

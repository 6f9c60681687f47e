"""Normalised spans (+ an optional outcomes table) -> the decision log, in the engine.

:func:`spans_to_decisions` takes the span table every trace reader returns
(:data:`~pilot_lib.ingest.traces.spans.SPAN_COLUMNS`) and builds, as Ibis
expressions executed by the engine (no per-span Python loop):

- the **decision log**: the 20 columns of the ``decisions`` contract
  (:data:`pilot_lib.ingest.contracts.DECISIONS`) plus the pilot's drift features,
  one row per decision span. The business signals stay text here; the contract
  types them and quarantines what does not parse, as for any other source.
- the **span quarantine**: malformed spans with the rule they break (below).
- the **reconciliation**: spans read = spans used + spans quarantined + spans
  outside any decision, and the counts of traces, decisions and outcomes.

Rules, in order (a span gets the first it breaks):

1. ``span without trace_id`` / 2. ``span without span_id``
3. ``span without valid start/end time`` (missing or unparseable time)
4. ``end before start``
5. ``unparseable attribute`` (the reader marked one, see ``UNPARSEABLE_KEY``)
6. ``duplicate span_id`` (same trace and span id; the first by file, line and
   start time is kept)
7. ``orphan span (parent not in the trace)``: the parent id names no valid span
   of the same trace, and the span is no agent / workflow span and does not say its
   parent is remote (:data:`~pilot_lib.ingest.traces.spans.REMOTE_PARENT_KEY`).
   Descendants of a quarantined span are not quarantined themselves; they belong to
   no decision and are counted as outside decisions.
8. ``outcome missing``: with an outcomes data set, every span of a decision
   that has no outcome row (the decision is counted, not built).
9. ``span time outside the pilot window`` (``window``: a span in 1970).
10. ``implausible token count`` / 11. ``implausible cost``: negative, fractional,
    overflowing or above the bound (``max_tokens`` / ``max_cost_usd``); the span is
    labelled with its decision first, and 12. ``decision with an implausible value``
    then quarantines every other span of that decision (and of a decision whose
    totals exceed the bounds): never priced or counted in part.

Decision spans: by default every top-level ``invoke_agent`` span (no agent span
above it: a root, or an agent whose parent is absent from the export, remote, or an
HTTP server / queue span); with ``decision_level="workflow"`` top-level
``invoke_workflow`` spans too (holding their agents). With ``decision_span`` set,
every span of that name (nested ones start their own decision: each span belongs
to the nearest decision span above it, so no span is counted twice). Each valid
span is labelled with its nearest decision ancestor-or-self by pointer jumping:
``ceil(log2(depth))`` self-joins, each materialized, at most 64.

Signals missing on the decision span and its descendants are read from its
nearest ancestor (``workflow``, ``agent_id``, ``business_unit``, ``case_id``,
``user_id``), then from ``defaults`` (the pilot file's ``traces.workflow``, ...)
after the outcomes.

Columns of a decision (``D`` = the decision span, ``desc`` = the other spans of
the decision, ``a[k]`` = attribute ``k``; "first" = the earliest by start time):

- ``decision_id``: ``D.a[pilot.decision_id]``, else ``D.span_id``.
- ``timestamp``: ``D.start_time`` (naive UTC). ``trace_id``: ``D.trace_id``.
- ``agent_id``: ``gen_ai.agent.id``, else ``gen_ai.agent.name``, else ``pilot.agent_id``
  (on ``D``, else the first descendant that has one).
- ``case_id``, ``workflow``, ``user_id``, ``prompt_version`` and the signals
  ``accepted``, ``overridden``, ``escalated``, ``escalation_reason``,
  ``confidence``, ``correct``, ``review_minutes``: ``pilot.<column>`` on ``D``,
  else on the first descendant; aliases: :data:`SIGNAL_ALIASES`.
- ``completed``: ``pilot.completed``, else ``D``'s status is not ``error``.
- ``escalation_reason``: when escalated with no reason stated and a descendant
  ``execute_tool`` span failed (status ``error``): ``tool_failure``.
- ``input_tokens`` / ``output_tokens``: the sum over the descendants that are
  not ``invoke_agent`` spans (an agent span often repeats its children's
  totals); when none of them carries a count, ``D``'s own; else 0.
- ``model_cost_usd``: ``D.a[pilot.model_cost_usd]``, else the sum over the
  descendants of their stated cost (``pilot.model_cost_usd``, ``gen_ai.usage.cost``,
  ``llm.cost.total``), else tokens x the price of the span's model
  (``prices``, US dollars per million tokens); NULL (quarantined by the contract
  as ``null model_cost_usd``) when a span with tokens has neither a cost nor a price.
- ``tool_cost_usd``: ``D.a[pilot.tool_cost_usd]``, else the sum of the
  descendants' ``pilot.tool_cost_usd``, else 0 (no tool cost recorded).
- ``model`` (optional contract column, for cost attribution): ``D``'s own model
  (``gen_ai.response.model``, ``gen_ai.request.model``, ...: :data:`SIGNAL_ALIASES`),
  else the model of the descendant with the most tokens (the model that did most of
  the work when a decision calls several); NULL when no span names one.
- features: ``D.a[pilot.<feature>]`` else ``D.a[<feature>]``; int64 when every
  non-null value parses as an integer, float64 when every one parses as a number
  (one aggregate query decides), else text.

Outcomes (``outcomes``, joined on ``outcomes_key``: ``trace_id`` or ``case_id``):
any column named like a decision-log signal overrides the span value where it is
not NULL. A key that occurs twice in the outcomes is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir

from pilot_lib.errors import ContractError
from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN
from pilot_lib.ingest.traces.spans import (
    PILOT_SIGNALS,
    REMOTE_PARENT_KEY,
    SPAN_COLUMNS,
    UNPARSEABLE_KEY,
)

__all__ = [
    "DECISION_LOG_COLUMNS",
    "OUTCOME_COLUMNS",
    "OUTSIDE_REASONS",
    "SIGNAL_ALIASES",
    "SPAN_RULES",
    "Reconciliation",
    "TraceDecisions",
    "spans_to_decisions",
]

#: The contract's columns, in order.
DECISION_LOG_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "timestamp",
    "trace_id",
    "agent_id",
    "workflow",
    "case_id",
    "prompt_version",
    "user_id",
    "completed",
    "accepted",
    "overridden",
    "escalated",
    "escalation_reason",
    "confidence",
    "correct",
    "input_tokens",
    "output_tokens",
    "model_cost_usd",
    "tool_cost_usd",
    "review_minutes",
)

#: Span rules, in the order they are checked.
SPAN_RULES: tuple[str, ...] = (
    "span without trace_id",
    "span without span_id",
    "span without valid start/end time",
    "end before start",
    "unparseable attribute",
    "duplicate span_id",
    "orphan span (parent not in the trace)",
    "outcome missing",
    "span time outside the pilot window",
    "implausible token count",
    "implausible cost",
    "decision with an implausible value",
)

#: Attribute keys holding a span's token counts (checked: whole, >= 0, within the bound).
TOKEN_KEYS: tuple[str, ...] = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.prompt_details.cache_write",
    "llm.token_count.completion_details.reasoning",
)

#: Attribute keys holding a stated cost in US dollars (checked: finite, >= 0, within the bound).
COST_KEYS: tuple[str, ...] = (
    "pilot.model_cost_usd",
    "pilot.tool_cost_usd",
    "gen_ai.usage.cost",
    "llm.cost.total",
    "operation.cost",
)

#: Attribute keys read for a decision-log column, first found wins (all formats).
SIGNAL_ALIASES: dict[str, tuple[str, ...]] = {
    "decision_id": ("pilot.decision_id",),
    "agent_id": ("gen_ai.agent.id", "gen_ai.agent.name", "pilot.agent_id"),
    "workflow": ("pilot.workflow", "gen_ai.workflow.name"),
    "business_unit": ("pilot.business_unit",),
    "case_id": ("pilot.case_id",),
    "prompt_version": (
        "pilot.prompt_version",
        "gen_ai.prompt.version",
        "llm.prompt_template.version",
        "langfuse.observation.prompt.version",  # the Langfuse SDK's OTLP name
    ),
    "user_id": ("pilot.user_id",),
    "completed": ("pilot.completed",),
    "accepted": ("pilot.accepted",),
    "overridden": ("pilot.overridden",),
    "escalated": ("pilot.escalated",),
    "escalation_reason": ("pilot.escalation_reason",),
    "confidence": ("pilot.confidence",),
    "correct": ("pilot.correct",),
    "review_minutes": ("pilot.review_minutes",),
    "model_cost_usd": ("pilot.model_cost_usd",),
    "tool_cost_usd": ("pilot.tool_cost_usd",),
    # per-span quantities summed over a decision
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "span_cost_usd": (
        "pilot.model_cost_usd",
        "gen_ai.usage.cost",
        "operation.cost",  # pydantic-ai's stated cost per chat span
        "llm.cost.total",
    ),
    "cache_read_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_creation_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "model": (
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.model_name",
        "langfuse.observation.model.name",
    ),
}

#: Outcome columns that override span values (the signals; keys are not overridden).
OUTCOME_COLUMNS: tuple[str, ...] = (
    "agent_id",
    "business_unit",
    "workflow",
    "case_id",
    "prompt_version",
    "user_id",
    "completed",
    "accepted",
    "overridden",
    "escalated",
    "escalation_reason",
    "confidence",
    "correct",
    "review_minutes",
    "model_cost_usd",
    "tool_cost_usd",
)

_TEXT_SIGNALS = (
    "case_id",
    "workflow",
    "user_id",
    "prompt_version",
    "accepted",
    "overridden",
    "escalated",
    "escalation_reason",
    "confidence",
    "correct",
    "review_minutes",
)

#: Signals read from the decision span, else from its earliest descendant holding one.
_SIGNALS = (*_TEXT_SIGNALS, "agent_id", "completed", "business_unit")

_MAX_JUMPS = 64

#: Why a valid span is outside every decision (the reconciliation's ``outside_by_reason``).
OUTSIDE_REASONS: dict[str, str] = {
    "workflow": "invoke_workflow spans above the agents' decisions (traces.decision_level: agent)",
    "above": "spans above or beside decisions that are no agent span (HTTP server, queue consumer)",
    "no_decision": "spans of traces with no decision span",
}

#: Operations whose span may start a decision when its parent is absent from the export.
_ROOT_OPERATIONS = ("invoke_agent", "invoke_workflow")


@dataclass(frozen=True)
class Reconciliation:
    """Where every span went, and the decision counts (all plain integers).

    Invariant: ``spans_read == spans_used + spans_quarantined + spans_outside_decisions``.
    """

    traces: int
    spans_read: int
    spans_used: int
    spans_quarantined: int
    spans_outside_decisions: int
    quarantined_by_rule: dict[str, int]
    decision_spans: int
    decisions: int
    decisions_without_outcome: int
    decisions_with_quarantined_spans: int
    decisions_priced_from_tokens: int
    outcomes_read: int | None = None
    outcomes_unmatched: int | None = None
    #: valid spans outside decisions, in traces that hold a decision (workflow, HTTP
    #: server or queue spans above or beside the decisions)
    spans_above_decisions: int = 0
    #: spans outside decisions by why: see :data:`OUTSIDE_REASONS`
    outside_by_reason: dict[str, int] = field(default_factory=dict)
    #: per JSON Lines file read: path, size_bytes (on disk), bytes_read (decompressed
    #: text), lines (physical), blank_lines, spans
    files: tuple[dict[str, Any], ...] = ()

    @property
    def balanced(self) -> bool:
        """True when read = used + quarantined + outside decisions."""
        return self.spans_read == (
            self.spans_used + self.spans_quarantined + self.spans_outside_decisions
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the store manifest)."""
        return {
            "traces": self.traces,
            "spans_read": self.spans_read,
            "spans_used": self.spans_used,
            "spans_quarantined": self.spans_quarantined,
            "spans_outside_decisions": self.spans_outside_decisions,
            "quarantined_by_rule": dict(self.quarantined_by_rule),
            "decision_spans": self.decision_spans,
            "decisions": self.decisions,
            "decisions_without_outcome": self.decisions_without_outcome,
            "decisions_with_quarantined_spans": self.decisions_with_quarantined_spans,
            "decisions_priced_from_tokens": self.decisions_priced_from_tokens,
            "outcomes_read": self.outcomes_read,
            "outcomes_unmatched": self.outcomes_unmatched,
            "spans_above_decisions": self.spans_above_decisions,
            "outside_by_reason": dict(self.outside_by_reason),
            "files": [dict(f) for f in self.files],
        }

    def summary(self) -> str:
        """One line for a report: spans read = used + quarantined + outside; decisions."""
        text = (
            f"{self.spans_read} spans in {self.traces} traces = {self.spans_used} used + "
            f"{self.spans_quarantined} quarantined + {self.spans_outside_decisions} outside "
            f"decisions; {self.decisions} decisions built from {self.decision_spans} decision spans"
        )
        if self.outside_by_reason:
            text += (
                " (outside: "
                + ", ".join(f"{n} {why}" for why, n in sorted(self.outside_by_reason.items()))
                + ")"
            )
        if self.outcomes_read is not None:
            text += (
                f"; {self.decisions_without_outcome} decisions without an outcome, "
                f"{self.outcomes_unmatched} of {self.outcomes_read} outcomes match no decision"
            )
        return text


@dataclass(frozen=True)
class TraceDecisions:
    """What :func:`spans_to_decisions` returns."""

    decisions: ir.Table  #: contract columns (signals as text) + features
    quarantine: ir.Table  #: span columns + ``_quarantine_rule``
    reconciliation: Reconciliation
    notes: tuple[str, ...] = field(default=())
    #: the ``tool_calls`` data set from the decisions' ``execute_tool`` spans (lazy)
    tool_calls: ir.Table | None = None


# ---- helpers --------------------------------------------------------------------------


def _attr(attrs: ir.MapValue, keys: Sequence[str]) -> ir.StringValue:
    """The first of ``keys`` present (and not empty) in the attribute map."""
    values = [attrs.get(k).nullif("") for k in keys]
    return values[0] if len(values) == 1 else ibis.coalesce(*values)


def _num(attrs: ir.MapValue, keys: Sequence[str]) -> ir.FloatingValue:
    return _attr(attrs, keys).try_cast("float64")


def _price_table(prices: Mapping[str, Any] | None) -> ir.Table | None:
    """The price table as an in-memory table: model, input and output USD per million tokens."""
    if not prices:
        return None
    rows: dict[str, list[Any]] = {
        "_model": [],
        "_in_price": [],
        "_out_price": [],
        "_cr_price": [],
        "_cc_price": [],
    }
    for model, price in prices.items():
        get = (
            (lambda k, p=price: p.get(k))
            if isinstance(price, Mapping)
            else (lambda k, p=price: getattr(p, k, None))
        )
        rows["_model"].append(str(model))
        rows["_in_price"].append(float(get("input_per_million_usd")))
        rows["_out_price"].append(float(get("output_per_million_usd")))
        for col, key in (
            ("_cr_price", "cache_read_per_million_usd"),
            ("_cc_price", "cache_creation_per_million_usd"),
        ):
            value = get(key)
            rows[col].append(None if value is None else float(value))
    return ibis.memtable(
        rows,
        schema={
            "_model": "string",
            "_in_price": "float64",
            "_out_price": "float64",
            "_cr_price": "float64",
            "_cc_price": "float64",
        },
    )


def _materialize(expr: ir.Table) -> ir.Table:
    """Compute ``expr`` once: a DuckDB temporary table (gone with the connection), else
    Ibis' cache. (Ibis' cache on DuckDB drops its table when garbage collected, which
    fails noisily once the store has closed the connection.)"""
    from pilot_lib.ingest.engine import materialize

    return materialize(expr, "trace_stage")


@ibis.udf.scalar.builtin
def json_extract_string(doc: str, path: str) -> str:  # type: ignore[empty-body]
    """DuckDB's ``json_extract_string``."""


@ibis.udf.scalar.builtin
def json_valid(doc: str) -> bool:  # type: ignore[empty-body]
    """DuckDB's ``json_valid``."""


#: Attributes whose value is a JSON object that may hold ``pilot.*`` signals (pydantic-ai's
#: run ``metadata=``, Langfuse's trace and observation metadata).
JSON_ATTRIBUTES: tuple[str, ...] = (
    "metadata",
    "langfuse.trace.metadata",
    "langfuse.observation.metadata",
)


def _unpack_json_attributes(s: ir.Table) -> ir.Table:
    """Add the ``pilot.*`` signals found in JSON-valued attributes, and stated costs.

    From each of :data:`JSON_ATTRIBUTES` that is a JSON object: ``pilot.<name>`` given
    as a dotted key (``{"pilot.case_id": "c1"}``) or nested (``{"pilot": {"case_id":
    "c1"}}``). Langfuse's ``langfuse.observation.cost_details`` (``{"total": ...}``) and
    OpenInference's ``llm.cost.prompt`` + ``llm.cost.completion`` give
    ``gen_ai.usage.cost`` when the span states no total. A span attribute of the same
    name always wins. Runs only when some span has one of these keys (DuckDB).
    """
    keys = [*JSON_ATTRIBUTES, "langfuse.observation.cost_details", "llm.cost.prompt"]
    has = ibis.literal(False)
    for k in keys:
        has = has | s.attributes.contains(k)
    if not int(s.filter(has.fill_null(False)).limit(1).count().execute()):
        return s
    a = s.attributes
    names = [*PILOT_SIGNALS, "business_unit"]
    out_keys: list[str] = []
    out_values: list[ir.Value] = []
    for n in names:
        found = []
        for m in JSON_ATTRIBUTES:
            doc = a.get(m)
            ok = json_valid(doc).fill_null(False)
            for path in (f'$."pilot.{n}"', f"$.pilot.{n}"):
                found.append(ibis.ifelse(ok, json_extract_string(doc, path), ibis.null("string")))
        out_keys.append(f"pilot.{n}")
        out_values.append(ibis.coalesce(*found))
    details = a.get("langfuse.observation.cost_details")
    total = ibis.ifelse(
        json_valid(details).fill_null(False),
        json_extract_string(details, "$.total"),
        ibis.null("string"),
    )
    parts = a.get("llm.cost.prompt").try_cast("float64") + a.get("llm.cost.completion").try_cast(
        "float64"
    )
    out_keys.append("gen_ai.usage.cost")
    out_values.append(ibis.coalesce(total, parts.cast("string")))
    extra = ibis.map(
        ibis.array([ibis.literal(k) for k in out_keys]),
        ibis.array([v.cast("string") for v in out_values]),
    )
    return s.mutate(attributes=ibis.ifelse(has.fill_null(False), extra + a, a))


#: The default page size of export clients (Phoenix's ``get_spans_dataframe(limit=1000)``,
#: Langfuse's API pages): an export of exactly this many rows was probably cut short.
CLIENT_PAGE_SIZE = 1000


def _quarantine_hostile(s: ir.Table) -> ir.Table:
    """Quarantine each span with a hostile value (``_hostile``: its rule) and every span
    of its decision (``decision with an implausible value``): a decision with a negative,
    fractional, overflowing or implausible token count or cost is never priced or
    counted in part. A hostile span outside every decision is quarantined alone.
    Drops ``_hostile``."""
    if not int(s.filter(s._rule.isnull() & s._hostile.notnull()).count().execute()):
        return s.drop("_hostile")
    bad = (
        s.filter(s._rule.isnull() & s._hostile.notnull() & s._decision.notnull())
        .select(_bt=s.trace_id, _bd=s._decision, _bad=ibis.literal(True))
        .distinct()
    )
    s = s.left_join(bad, [s.trace_id == bad._bt, s._decision == bad._bd]).select(s, bad._bad)
    in_bad = s._bad.fill_null(False) & s._rule.isnull()
    s = s.mutate(
        _rule=ibis.cases(
            (s._rule.notnull(), s._rule),
            (s._hostile.notnull(), s._hostile),
            (in_bad, SPAN_RULES[11]),
            else_=ibis.null("string"),
        ),
        _decision=ibis.ifelse(
            in_bad | (s._rule.isnull() & s._hostile.notnull()), ibis.null("string"), s._decision
        ),
    ).drop("_bad", "_hostile")
    return _materialize(s)


def _file_counts(s: ir.Table, files: Sequence[Any]) -> tuple[dict[str, Any], ...]:
    """Per scanned file: its bytes and lines (from the scan) and the spans read from it."""
    if not files:
        return ()
    per = s.group_by("source_file").aggregate(n=lambda t: t.count()).execute()
    spans = {str(f): int(n) for f, n in zip(per["source_file"], per["n"], strict=True)}
    return tuple({**f.as_dict(), "spans": spans.get(f.path, 0)} for f in files)


def _export_warnings(s: ir.Table, by_rule: Mapping[str, int]) -> list[str]:
    """Notes on exports that look cut short: a file of exactly :data:`CLIENT_PAGE_SIZE`
    rows, or spans whose parent is missing (the export ends mid-trace)."""
    per_file = (
        s.group_by("source_file")
        .aggregate(n=lambda t: t.count(), rows=lambda t: t.source_row.max())
        .execute()
    )
    notes = [
        f"{f} holds exactly {CLIENT_PAGE_SIZE:,} rows, the default page size of export "
        "clients (Phoenix's get_spans_dataframe limit=1000): the export was probably cut "
        "short; export again with a higher limit (limit=None) or page through it"
        for f, n, rows in zip(per_file["source_file"], per_file["n"], per_file["rows"], strict=True)
        if int(n) == CLIENT_PAGE_SIZE and int(rows) == CLIENT_PAGE_SIZE
    ]
    orphans = int(by_rule.get(SPAN_RULES[6], 0))
    if orphans:
        notes.append(
            f"{orphans} spans name a parent that is in no file read: the export may end "
            "mid-trace (a page limit or a time filter cut it), or another service's spans "
            "are missing from datasets.decisions.path"
        )
    return notes


def _cancelled(attrs: ir.MapValue) -> ir.BooleanValue:
    """TRUE when the span's exception (``exception.type`` / ``error.type``) is a
    cancellation (``asyncio.exceptions.CancelledError``: a parallel tool failed and the
    agent cancelled this one): the call is ``cancelled``, not failed."""
    kind = ibis.coalesce(attrs.get("exception.type"), attrs.get("error.type")).fill_null("")
    return kind.re_search(r"(^|\.)CancelledError$") | kind.re_search(r"(^|\.)Cancelled$")


def _outside(s: ir.Table, window: tuple[Any, Any] | None) -> ir.BooleanValue:
    """TRUE when a span starts or ends outside ``window`` (naive UTC bounds, inclusive)."""
    if window is None:
        return ibis.literal(False)
    lo, hi = (ibis.literal(w).cast("timestamp") for w in window)
    return ((s.start_time < lo) | (s.end_time > hi)).fill_null(False)


def _hostile_tokens(attrs: ir.MapValue, bound: int) -> ir.BooleanValue:
    """TRUE when a token count of the span is not a whole number >= 0, or above ``bound``.

    ``120.0`` counts as whole (pandas writes integer columns with gaps as floats); a
    count above the per-decision bound on a single span cannot be a real one (an
    overflowing uint64, 1e15). Nothing of such a span is priced or summed.
    """
    bad = ibis.literal(False)
    for key in TOKEN_KEYS:
        text = attrs.get(key).nullif("").strip()
        x = text.try_cast("float64")
        whole = text.re_search(r"^\+?[0-9]+(\.0*)?$")
        bad = bad | (text.notnull() & (~whole.fill_null(False) | (x > bound).fill_null(True)))
    return bad.fill_null(False)


def _hostile_cost(attrs: ir.MapValue, bound: float) -> ir.BooleanValue:
    """TRUE when a stated cost of the span is not a finite number >= 0, or above ``bound`` USD."""
    bad = ibis.literal(False)
    for key in COST_KEYS:
        text = attrs.get(key).nullif("").strip()
        x = text.try_cast("float64")
        bad = bad | (
            text.notnull()
            & (x.isnull() | x.isnan() | x.isinf() | (x < 0) | (x > bound)).fill_null(True)
        )
    return bad.fill_null(False)


def _top_level_only(s: ir.Table) -> ir.Table:
    """Keep ``_is_decision`` only on candidate spans with no candidate above them.

    A nested agent (an agent called as a tool, a sub-agent) belongs to the decision
    of the agent above it; an agent whose parent is an HTTP server span, a queue
    consumer or a span of another service's export starts its own decision. One
    pointer-jumping pass labels each span with its nearest candidate
    ancestor-or-self; a candidate is top-level when its parent's label is NULL.
    """
    valid = s.filter(s._rule.isnull())
    if not int(valid.filter(valid._is_decision & valid.parent_span_id.notnull()).count().execute()):
        return s  # every candidate is a root: nothing to look up
    near = _label_decisions(valid)
    p = near.select(_nt=near.trace_id, _ns=near.span_id, _above=near._decision)
    j = s.left_join(p, [s.trace_id == p._nt, s.parent_span_id == p._ns])
    return (
        j.select(s, _above=j._above)
        .mutate(_is_decision=lambda t: t._is_decision & t._above.isnull())
        .drop("_above")
    )


#: Columns read from the nearest ancestor of a decision span that carries them (a
#: workflow span above the agents, a service's server span), when neither the decision
#: span nor its descendants do.
_ANCESTOR_SIGNALS = ("workflow", "agent_id", "business_unit", "case_id", "user_id")


def _ancestor_signals(s: ir.Table) -> ir.Table | None:
    """Per decision span, the nearest ancestor's value of each :data:`_ANCESTOR_SIGNALS`.

    Only spans outside every decision can be above a top-level decision; the walk goes
    up one parent per step (a workflow sits one or two levels above its agents), at most
    64 steps. Returns ``_at, _ad, _a_<column>`` or ``None`` when no span outside the
    decisions carries any of the keys (nothing to look up).
    """
    keys = sorted({k for c in _ANCESTOR_SIGNALS for k in SIGNAL_ALIASES[c]})
    pattern = "(^|\x1f)(" + "|".join(re.escape(k) for k in keys) + ")(\x1f|$)"
    out = s.filter(s._rule.isnull() & s._decision.isnull())
    holders = out.filter(out.attributes.keys().join("\x1f").re_search(pattern).fill_null(False))
    if not int(holders.count().execute()):
        return None
    up = _materialize(
        out.select(
            _ut=out.trace_id,
            _us=out.span_id,
            _up=out.parent_span_id,
            **{f"_v_{c}": _attr(out.attributes, SIGNAL_ALIASES[c]) for c in _ANCESTOR_SIGNALS},
        )
    )
    d = s.filter(s._is_decision & s.parent_span_id.notnull())
    state = _materialize(
        d.select(
            _at=d.trace_id,
            _ad=d.span_id,
            _cur=d.parent_span_id,
            **{f"_a_{c}": ibis.null("string") for c in _ANCESTOR_SIGNALS},
        )
    )
    for _ in range(_MAX_JUMPS):
        if not int(state.filter(state._cur.notnull()).count().execute()):
            break
        j = state.left_join(up, [state._at == up._ut, state._cur == up._us])
        state = _materialize(
            j.select(
                "_at",
                "_ad",
                _cur=j._up,
                **{f"_a_{c}": ibis.coalesce(j[f"_a_{c}"], j[f"_v_{c}"]) for c in _ANCESTOR_SIGNALS},
            )
        )
    return state.drop("_cur")


def _label_decisions(valid: ir.Table) -> ir.Table:
    """Label each valid span with its nearest decision ancestor-or-self (pointer jumping).

    ``valid`` has ``trace_id, span_id, parent_span_id, _is_decision``. Returns
    ``trace_id, span_id, _decision`` (the decision span's id, or NULL).
    """
    state = valid.select(
        "trace_id",
        "span_id",
        _anc=ibis.ifelse(valid._is_decision, ibis.null("string"), valid.parent_span_id),
        _decision=ibis.ifelse(valid._is_decision, valid.span_id, ibis.null("string")),
    )
    state = _materialize(state)
    for _ in range(_MAX_JUMPS):
        open_ = state.filter(state._anc.notnull() & state._decision.isnull()).count().execute()
        if not open_:
            break
        p = state.select(
            _pt=state.trace_id, _ps=state.span_id, _panc=state._anc, _pdec=state._decision
        )
        joined = state.left_join(p, [state.trace_id == p._pt, state._anc == p._ps])
        jumping = joined._decision.isnull() & joined._anc.notnull()
        state = joined.select(
            "trace_id",
            "span_id",
            _decision=ibis.ifelse(jumping, joined._pdec, joined._decision),
            _anc=ibis.ifelse(jumping & joined._pdec.isnull(), joined._panc, ibis.null("string")),
        )
        state = _materialize(state)
    return state.select("trace_id", "span_id", "_decision")


# ---- the builder -----------------------------------------------------------------------


def spans_to_decisions(
    spans: ir.Table,
    *,
    decision_span: str | None = None,
    prices: Mapping[str, Any] | None = None,
    outcomes: ir.Table | None = None,
    outcomes_key: str = "trace_id",
    features: Sequence[str] = (),
    label: str = "decisions",
    outcomes_label: str = "outcomes",
    decision_level: str = "agent",
    defaults: Mapping[str, str | None] | None = None,
    max_tokens: int = 10_000_000,
    max_cost_usd: float = 1000.0,
    window: tuple[Any, Any] | None = None,
    files: Sequence[Any] = (),
) -> TraceDecisions:
    """Build the decision log, the span quarantine and the reconciliation (see the module doc).

    Parameters
    ----------
    spans:
        The normalised span table (:func:`pilot_lib.ingest.traces.read_spans`).
    decision_span:
        Span name that marks a decision; default: root ``invoke_agent`` spans.
    prices:
        Model name -> ``{input_per_million_usd, output_per_million_usd}`` (US dollars
        per million tokens; a mapping or an object with those attributes).
    outcomes:
        Optional outcomes table (a column ``outcomes_key`` plus any of
        :data:`OUTCOME_COLUMNS`); values override the spans'.
    outcomes_key:
        ``trace_id`` or ``case_id``.
    features:
        Drift features to carry as extra columns (``pilot.<name>`` or ``<name>``
        attributes of the decision span).
    label, outcomes_label:
        Data set names for error messages.
    decision_level:
        ``agent`` (default: each top-level agent is a decision) or ``workflow`` (each
        top-level ``invoke_workflow`` span is one).
    defaults:
        Column -> value for decisions no span nor outcome gives one (``workflow``,
        ``agent_id``, ``prompt_version``, ``business_unit``; ``None`` values ignored).
    max_tokens, max_cost_usd:
        Per-decision bounds (tokens; US dollars): above them, or negative, fractional
        or not a number, a value is implausible and its decision is quarantined.
    window:
        ``(start, end)`` naive UTC datetimes a span must lie within; ``None``: no check.
    files:
        The :class:`~pilot_lib.ingest.traces._tables.FileScan` of each JSON Lines file
        read, for the reconciliation's per-file counts.

    Returns
    -------
    TraceDecisions
        Lazy decisions and quarantine tables over materialized intermediate
        tables, and the reconciliation counts (computed with aggregate queries).

    Raises
    ------
    ContractError
        The outcomes lack the key column or repeat a key.
    """
    missing = [c for c in SPAN_COLUMNS if c not in spans.columns]
    if missing:
        raise ContractError(f"data set {label!r}: the span table lacks {missing}")
    s = _unpack_json_attributes(spans.select(*SPAN_COLUMNS))
    rule = ibis.cases(
        (s.trace_id.isnull(), SPAN_RULES[0]),
        (s.span_id.isnull(), SPAN_RULES[1]),
        (s.start_time.isnull() | s.end_time.isnull(), SPAN_RULES[2]),
        (s.end_time < s.start_time, SPAN_RULES[3]),
        (s.attributes.contains(UNPARSEABLE_KEY).fill_null(False), SPAN_RULES[4]),
        (_outside(s, window), SPAN_RULES[8]),
        else_=ibis.null("string"),
    )
    # a hostile value does not break the trace's tree: the span is labelled with its
    # decision first, then it and its whole decision are quarantined (below)
    hostile = ibis.cases(
        (_hostile_tokens(s.attributes, max_tokens), SPAN_RULES[9]),
        (_hostile_cost(s.attributes, max_cost_usd), SPAN_RULES[10]),
        else_=ibis.null("string"),
    )
    s = s.mutate(_rule=rule, _hostile=hostile)
    # duplicates among otherwise valid spans: the first by file, line, start time is kept
    first = ibis.row_number().over(
        ibis.window(
            group_by=[s.trace_id, s.span_id, s._rule.isnull()],
            order_by=[s.source_file, s.source_row, s.start_time],
        )
    )
    s = s.mutate(_rule=ibis.ifelse(s._rule.isnull() & (first > 0), SPAN_RULES[5], s._rule))
    s = _materialize(s)
    ok = s.filter(s._rule.isnull())
    parents = ok.select(_pt=ok.trace_id, _ps=ok.span_id)
    children = ok.filter(ok.parent_span_id.notnull())
    # a parent absent from the export is an orphan's mark, unless the span is an agent or
    # workflow span (its caller lives in another service's export) or says its parent
    # is remote (OTLP span flags, W3C traceparent from another process)
    remote = children.attributes.contains(REMOTE_PARENT_KEY).fill_null(False)
    top_op = children.operation.isin(list(_ROOT_OPERATIONS)).fill_null(False)
    orphans = (
        children.filter(~remote & ~top_op)
        .anti_join(
            parents, [children.trace_id == parents._pt, children.parent_span_id == parents._ps]
        )
        .select(_ot=children.trace_id, _os=children.span_id, _orphan=ibis.literal(True))
    )
    s = s.left_join(orphans, [s.trace_id == orphans._ot, s.span_id == orphans._os]).select(
        s, orphans._orphan
    )
    orphaned = s._rule.isnull() & s._orphan.fill_null(False)
    s = s.mutate(_rule=ibis.ifelse(orphaned, SPAN_RULES[6], s._rule)).drop("_orphan")
    if decision_span:
        s = s.mutate(_is_decision=(s.name == decision_span).fill_null(False) & s._rule.isnull())
    else:
        levels = (
            ["invoke_agent", "invoke_workflow"]
            if decision_level == "workflow"
            else ["invoke_agent"]
        )
        s = s.mutate(_is_decision=s.operation.isin(levels).fill_null(False) & s._rule.isnull())
        s = _materialize(s)
        s = _top_level_only(s)
    s = _materialize(s)

    labels = _label_decisions(s.filter(s._rule.isnull()))
    s = s.left_join(labels, [s.trace_id == labels.trace_id, s.span_id == labels.span_id]).select(
        s, labels._decision
    )
    s = s.mutate(_decision=ibis.ifelse(s._rule.isnull(), s._decision, ibis.null("string")))
    s = _materialize(s)
    s = _quarantine_hostile(s)

    with_unit = bool((defaults or {}).get("business_unit")) or bool(
        int(s.filter(s.attributes.contains("pilot.business_unit")).limit(1).count().execute())
    )
    decisions = _build_decisions(s, prices, features, with_unit)
    # a decision whose totals are implausible (many spans each within the bound, or a
    # price that makes a fortune of them) is quarantined whole, never priced
    excessive = (
        (decisions.input_tokens > max_tokens)
        | (decisions.output_tokens > max_tokens)
        | (decisions.model_cost_usd > max_cost_usd).fill_null(False)
        | (decisions.tool_cost_usd > max_cost_usd).fill_null(False)
    )
    n_excessive = int(decisions.filter(excessive).count().execute())
    if n_excessive:
        gone = decisions.filter(excessive).select(
            _gt=decisions.trace_id, _gd=decisions._dspan, _gone=ibis.literal(True)
        )
        s = s.left_join(gone, [s.trace_id == gone._gt, s._decision == gone._gd]).select(
            s, gone._gone
        )
        s = s.mutate(
            _rule=ibis.ifelse(s._gone.fill_null(False) & s._rule.isnull(), SPAN_RULES[11], s._rule),
            _decision=ibis.ifelse(s._gone.fill_null(False), ibis.null("string"), s._decision),
        ).drop("_gone")
        s = _materialize(s)
        decisions = _materialize(decisions.filter(~excessive))

    outcomes_read = outcomes_unmatched = None
    n_without = 0
    if outcomes is not None:
        decisions, without, outcomes_read, outcomes_unmatched = _join_outcomes(
            decisions, outcomes, outcomes_key, label, outcomes_label
        )
        miss = without.select(_mt=without.trace_id, _md=without._dspan, _missing=ibis.literal(True))
        s = s.left_join(miss, [s.trace_id == miss._mt, s._decision == miss._md]).select(
            s, miss._missing
        )
        s = s.mutate(
            _rule=ibis.ifelse(
                s._missing.fill_null(False) & s._rule.isnull(), SPAN_RULES[7], s._rule
            ),
            _decision=ibis.ifelse(s._missing.fill_null(False), ibis.null("string"), s._decision),
        ).drop("_missing")
        s = _materialize(s)
        n_without = int(without.count().execute())
    decisions = _finish(decisions, defaults)
    decisions = _materialize(decisions)
    tool_calls = _tool_calls(s, decisions)
    priced = int(decisions.filter(decisions._priced).count().execute())
    n_decisions = int(decisions.count().execute())
    decisions = decisions.drop("_dspan", "_priced", "_tool_failed", "_dstatus")

    counts = _reconcile(s)
    recon = Reconciliation(
        traces=counts["traces"],
        spans_read=counts["spans_read"],
        spans_used=counts["spans_used"],
        spans_quarantined=counts["spans_quarantined"],
        spans_outside_decisions=counts["spans_outside"],
        quarantined_by_rule=counts["by_rule"],
        decision_spans=counts["decision_spans"],
        decisions=n_decisions,
        decisions_without_outcome=n_without,
        decisions_with_quarantined_spans=counts["decisions_with_quarantined_spans"],
        decisions_priced_from_tokens=priced,
        outcomes_read=outcomes_read,
        outcomes_unmatched=outcomes_unmatched,
        spans_above_decisions=counts["above"],
        outside_by_reason=counts["outside_by_reason"],
        files=_file_counts(s, files),
    )
    quarantine = s.filter(s._rule.notnull()).select(
        *SPAN_COLUMNS, **{QUARANTINE_RULE_COLUMN: s._rule}
    )
    notes: list[str] = []
    notes.extend(_export_warnings(s, counts["by_rule"]))
    if n_excessive:
        notes.append(
            f"{n_excessive} decisions quarantined whole: more than {max_tokens:,} input or "
            f"output tokens, or more than ${max_cost_usd:,.2f} of cost "
            "(traces.max_tokens_per_decision / max_cost_per_decision_usd)"
        )
    if priced:
        notes.append(
            f"model cost of {priced} decisions computed from token counts and the pilot "
            "file's price table (traces.prices)"
        )
    return TraceDecisions(decisions, quarantine, recon, tuple(notes), tool_calls)


def _build_decisions(
    s: ir.Table,
    prices: Mapping[str, Any] | None,
    features: Sequence[str],
    with_business_unit: bool = False,
) -> ir.Table:
    """One row per decision span: contract columns + features + helper columns.

    Helper columns: ``_dspan`` (decision span id), ``_priced`` (cost from the price
    table), ``_tool_failed`` (a failed ``execute_tool`` descendant), ``_dstatus``.
    """
    v = s.filter(s._decision.notnull())
    a = v.attributes
    v = v.mutate(
        _in=_num(a, SIGNAL_ALIASES["input_tokens"]),
        _out=_num(a, SIGNAL_ALIASES["output_tokens"]),
        _stated=_num(a, SIGNAL_ALIASES["span_cost_usd"]),
        _model=_attr(a, SIGNAL_ALIASES["model"]),
        _tool=_num(a, SIGNAL_ALIASES["tool_cost_usd"]),
        _desc=v.span_id != v._decision,
    )
    price = _price_table(prices)
    if price is not None:
        # cache reads and writes are part of the input tokens (GenAI conventions); each
        # has its own price line when the table gives one, else the input price
        cache_read = _num(a, SIGNAL_ALIASES["cache_read_tokens"]).fill_null(0)
        cache_made = _num(a, SIGNAL_ALIASES["cache_creation_tokens"]).fill_null(0)
        v = v.mutate(_cr=cache_read, _cc=cache_made)
        v = v.left_join(price, v._model == price._model).select(
            v,
            _priced_cost=(
                (v._in.fill_null(0) - v._cr - v._cc) * price._in_price
                + v._cr * price._cr_price.fill_null(price._in_price)
                + v._cc * price._cc_price.fill_null(price._in_price)
                + v._out.fill_null(0) * price._out_price
            )
            / 1e6,
        )
    else:
        v = v.mutate(_priced_cost=ibis.null("float64"))
    has_tokens = v._in.notnull() | v._out.notnull()
    v = v.mutate(
        _counted=v._desc & (v.operation.fill_null("") != "invoke_agent"),
        _cost=ibis.coalesce(v._stated, v._priced_cost),
        _from_price=v._stated.isnull() & v._priced_cost.notnull(),
        _unpriced=v._stated.isnull() & v._priced_cost.isnull() & has_tokens,
        _has_tokens=has_tokens,
        _failed_tool=v._desc
        & (v.operation == "execute_tool")
        & (v.status == "error")
        & ~_cancelled(v.attributes),
    )
    agg = v.group_by(_at=v.trace_id, _ad=v._decision).aggregate(
        _c_in=v._in.sum(where=v._counted),
        _c_out=v._out.sum(where=v._counted),
        _c_tokens=v._has_tokens.any(where=v._counted),
        _c_stated=v._stated.notnull().any(where=v._counted),
        _c_cost=v._cost.sum(where=v._counted),
        _c_unpriced=v._unpriced.any(where=v._counted),
        _c_from_price=v._from_price.any(where=v._counted),
        _c_tool=v._tool.sum(where=v._desc),
        _tool_failed=v._failed_tool.any(),
        _c_model=v._model.argmax(
            v._in.fill_null(0) + v._out.fill_null(0), where=v._counted & v._model.notnull()
        ),
    )
    # signals of the descendants: only spans holding one of their keys are searched
    # (a regular expression over the map's keys, so most spans cost one match)
    signal_keys = sorted({k for c in _SIGNALS for k in SIGNAL_ALIASES[c]})
    pattern = "(^|\x1f)(" + "|".join(re.escape(k) for k in signal_keys) + ")(\x1f|$)"
    w = v.filter(v._desc & v.attributes.keys().join("\x1f").re_search(pattern).fill_null(False))
    w = w.mutate(**{f"_s_{c}": _attr(w.attributes, SIGNAL_ALIASES[c]) for c in _SIGNALS})
    sig = w.group_by(_st=w.trace_id, _sd=w._decision).aggregate(
        **{
            f"_f_s_{c}": w[f"_s_{c}"].argmin(w.start_time, where=w[f"_s_{c}"].notnull())
            for c in _SIGNALS
        }
    )
    d = v.filter(~v._desc)
    d = d.mutate(
        **{f"_s_{c}": _attr(d.attributes, SIGNAL_ALIASES[c]) for c in _SIGNALS},
        **{f"_feat_{f}": _attr(d.attributes, (f"pilot.{f}", f)) for f in features},
        _decision_id=_attr(d.attributes, SIGNAL_ALIASES["decision_id"]),
    )
    j = d.inner_join(agg, [d.trace_id == agg._at, d.span_id == agg._ad]).left_join(
        sig, [d.trace_id == sig._st, d.span_id == sig._sd]
    )
    above = _ancestor_signals(s)
    if above is not None:
        above = above.rename({f"_x{k}": k for k in above.columns})
        j = j.left_join(above, [j.trace_id == above._x_at, j.span_id == above._x_ad])
    desc_has = j._c_tokens.fill_null(False) | j._c_stated.fill_null(False)
    model_cost = ibis.cases(
        (j._stated.notnull(), j._stated),
        (desc_has & j._c_unpriced.fill_null(False), ibis.null("float64")),
        (desc_has, j._c_cost.fill_null(0.0)),
        (j._has_tokens, j._priced_cost),
        else_=ibis.literal(0.0),
    )
    from_price = ibis.cases(
        (j._stated.notnull(), False),
        (desc_has, j._c_from_price.fill_null(False) & ~j._c_unpriced.fill_null(False)),
        else_=j._from_price.fill_null(False),
    )
    c_tokens = j._c_tokens.fill_null(False)

    def signal(c: str) -> ir.Value:
        if above is not None and c in _ANCESTOR_SIGNALS:
            return ibis.coalesce(j[f"_s_{c}"], j[f"_f_s_{c}"], j[f"_x_a_{c}"])
        return ibis.coalesce(j[f"_s_{c}"], j[f"_f_s_{c}"])

    columns: dict[str, ir.Value] = {
        "decision_id": ibis.coalesce(j._decision_id, j.span_id),
        "timestamp": j.start_time,
        "trace_id": j.trace_id,
        "agent_id": signal("agent_id"),
        "workflow": signal("workflow"),
        "case_id": signal("case_id"),
        "prompt_version": signal("prompt_version"),
        "user_id": signal("user_id"),
        "completed": signal("completed"),
        "accepted": signal("accepted"),
        "overridden": signal("overridden"),
        "escalated": signal("escalated"),
        "escalation_reason": signal("escalation_reason"),
        "confidence": signal("confidence"),
        "correct": signal("correct"),
        "input_tokens": ibis.ifelse(c_tokens, j._c_in, j._in).fill_null(0).cast("int64"),
        "output_tokens": ibis.ifelse(c_tokens, j._c_out, j._out).fill_null(0).cast("int64"),
        "model_cost_usd": model_cost.cast("float64"),
        "tool_cost_usd": ibis.coalesce(j._tool, j._c_tool, ibis.literal(0.0)).cast("float64"),
        "review_minutes": signal("review_minutes"),
        "model": ibis.coalesce(j._model, j._c_model),
    }
    if with_business_unit:  # else the contract adds it empty, as for any other source
        columns["business_unit"] = signal("business_unit")
    feats = {f: j[f"_feat_{f}"] for f in features if f not in columns}
    out = j.select(
        **columns,
        **feats,
        _dspan=j.span_id,
        _priced=from_price,
        _tool_failed=j._tool_failed.fill_null(False),
        _dstatus=j.status,
    )
    return _type_features(_materialize(out), list(feats))


def _type_features(table: ir.Table, features: Sequence[str]) -> ir.Table:
    """Type each feature: int64 when every non-null value parses as an integer that fits
    int64, else float64 when every one parses as a number (a uint64 value such as
    18446744073709551615 becomes a float, never a NULL), else text (one aggregate query)."""
    if not features:
        return table
    counts = (
        table.aggregate(
            **{f"n_{i}": table[f].count() for i, f in enumerate(features)},
            **{
                f"i_{i}": table[f].re_search(r"^\s*[-+]?[0-9]+\s*$").sum()
                for i, f in enumerate(features)
            },
            **{f"x_{i}": table[f].try_cast("float64").count() for i, f in enumerate(features)},
            **{f"w_{i}": table[f].try_cast("int64").count() for i, f in enumerate(features)},
        )
        .execute()
        .iloc[0]
    )
    casts: dict[str, ir.Value] = {}
    for i, f in enumerate(features):
        n = int(counts[f"n_{i}"])
        if n and int(counts[f"i_{i}"] or 0) == n and int(counts[f"w_{i}"]) == n:
            casts[f] = table[f].try_cast("int64")
        elif n and int(counts[f"x_{i}"]) == n:
            casts[f] = table[f].try_cast("float64")
    return table.mutate(**casts) if casts else table


def _finish(decisions: ir.Table, defaults: Mapping[str, str | None] | None = None) -> ir.Table:
    """Derived fields applied after the outcomes: completed from status, tool_failure,
    and the pilot file's defaults (``traces.workflow``, ``agent_id``, ``business_unit``)
    where neither a span nor the outcomes gave a value."""
    fill = {
        c: ibis.coalesce(decisions[c], ibis.literal(str(v)))
        for c, v in (defaults or {}).items()
        if v is not None and c in decisions.columns
    }
    if fill:
        decisions = decisions.mutate(**fill)
    escalated = decisions.escalated.try_cast("boolean").fill_null(False)
    return decisions.mutate(
        completed=ibis.coalesce(
            decisions.completed,
            ibis.ifelse(decisions._dstatus == "error", "false", "true"),
        ),
        escalation_reason=ibis.coalesce(
            decisions.escalation_reason,
            ibis.ifelse(escalated & decisions._tool_failed, "tool_failure", ibis.null("string")),
        ),
    )


def _join_outcomes(
    decisions: ir.Table, outcomes: ir.Table, key: str, label: str, outcomes_label: str
) -> tuple[ir.Table, ir.Table, int, int]:
    """Join outcomes; return (decisions with outcomes, decisions without, outcomes read, unmatched)."""
    if key not in ("trace_id", "case_id"):
        raise ContractError(
            f"traces.outcomes_key is {key!r}; set it to 'trace_id' or 'case_id' in the pilot file"
        )
    if key not in outcomes.columns:
        raise ContractError(
            f"data set {outcomes_label!r} has no column {key!r} (traces.outcomes_key); "
            f"its columns are {list(outcomes.columns)}. Add the column or set "
            "traces.outcomes_key to the column the outcomes are keyed on (trace_id or case_id)."
        )
    cols = [c for c in OUTCOME_COLUMNS if c in outcomes.columns and c != key]
    o = outcomes.select(
        _okey=outcomes[key].cast("string"),
        **{f"_o_{c}": outcomes[c].cast("string") for c in cols},
    )
    dupes = o.group_by("_okey").aggregate(n=o.count()).filter(lambda t: t.n > 1)
    n_dupes = int(dupes.count().execute())
    if n_dupes:
        example = dupes.limit(1).execute()["_okey"].iloc[0]
        raise ContractError(
            f"data set {outcomes_label!r}: {n_dupes} {key} value(s) occur more than once "
            f"(e.g. {example!r}); give one outcome row per {key}"
        )
    o = o.mutate(_has=ibis.literal(True))
    j = decisions.left_join(o, decisions[key] == o._okey)
    j = j.select(
        decisions,
        *[f"_o_{c}" for c in cols],
        _has=j._has.fill_null(False),
    )
    overrides = {c: ibis.coalesce(j[f"_o_{c}"], j[c]).cast(j[c].type()) for c in cols}
    if "model_cost_usd" in cols:
        overrides["_priced"] = j._priced & j._o_model_cost_usd.isnull()
    j = j.mutate(**overrides)
    with_outcome = j.filter(j._has).drop("_has", *[f"_o_{c}" for c in cols])
    without = j.filter(~j._has).select("trace_id", "_dspan")
    n_read = int(o.count().execute())
    unmatched = int(o.anti_join(decisions, o._okey == decisions[key]).count().execute())
    return with_outcome, without, n_read, unmatched


def _reconcile(s: ir.Table) -> dict[str, Any]:
    """The span counts (one aggregate query, plus the counts per rule)."""
    row = (
        s.aggregate(
            spans_read=s.count(),
            traces=s.trace_id.nunique(),
            spans_quarantined=s.count(where=s._rule.notnull()),
            spans_used=s.count(where=s._rule.isnull() & s._decision.notnull()),
            spans_outside=s.count(where=s._rule.isnull() & s._decision.isnull()),
            decision_spans=s.count(where=s._is_decision),
        )
        .execute()
        .iloc[0]
    )
    by_rule = (
        s.filter(s._rule.notnull()).group_by("_rule").aggregate(n=lambda t: t.count()).execute()
    )
    bad_traces = (
        s.filter(s._rule.notnull() & (s._rule != SPAN_RULES[7]) & s.trace_id.notnull())
        .select("trace_id")
        .distinct()
    )
    used = s.filter(s._is_decision & s._rule.isnull())
    touched = int(used.semi_join(bad_traces, "trace_id").count().execute())
    out = {k: int(row[k]) for k in row.index}
    # outside spans: above or beside a decision of their trace, or in a trace without one
    with_decision = s.filter(s._is_decision).select(_wt=s.trace_id).distinct()
    outside = s.filter(s._rule.isnull() & s._decision.isnull())
    outside = outside.left_join(with_decision, outside.trace_id == with_decision._wt).select(
        outside.operation, _in=with_decision._wt.notnull()
    )
    why = ibis.cases(
        (~outside._in, "no_decision"),
        (outside.operation.fill_null("") == "invoke_workflow", "workflow"),
        else_="above",
    )
    counted = outside.group_by(_why=why).aggregate(n=lambda t: t.count()).execute()
    reasons = {str(w): int(n) for w, n in zip(counted["_why"], counted["n"], strict=True)}
    out["above"] = reasons.get("workflow", 0) + reasons.get("above", 0)
    out["outside_by_reason"] = {OUTSIDE_REASONS[k]: v for k, v in sorted(reasons.items()) if v}
    out["by_rule"] = {
        r: int(n) for r, n in sorted(zip(by_rule["_rule"], by_rule["n"], strict=True))
    }
    out["decisions_with_quarantined_spans"] = touched
    return out


#: Attribute keys of an ``execute_tool`` span read for a ``tool_calls`` column, first found wins.
TOOL_CALL_ALIASES: dict[str, tuple[str, ...]] = {
    "system": ("pilot.system", "peer.service", "server.address"),
    "tool": ("gen_ai.tool.name",),
    "http_status": ("http.response.status_code",),
    "error_type": ("error.type",),
    "tool_status": ("pilot.tool_status",),
    "attempt": ("pilot.attempt",),
    "resend_count": ("http.request.resend_count",),
    "idempotency_key": ("pilot.idempotency_key",),
    "side_effect": ("pilot.side_effect",),
    "cost_usd": ("pilot.tool_cost_usd",),
}


def _tool_calls(s: ir.Table, decisions: ir.Table) -> ir.Table:
    """The ``tool_calls`` data set: one row per valid ``execute_tool`` span of a decision.

    ``system``: ``pilot.system``, else ``peer.service``, else ``server.address``, else
    the tool name. ``status``: ``pilot.tool_status`` when stated (e.g. ``circuit_open``),
    else from ``http.response.status_code`` (5xx, 4xx), else ``timeout`` when
    ``error.type`` names a timeout, else ``error_5xx`` for a span with status
    ``error`` (the system failed), else ``ok``. ``attempt``: ``pilot.attempt``, else
    ``http.request.resend_count + 1``, else inferred: a span that follows failed spans of
    the same tool in the same decision is their retry (attempts are numbered in time,
    restarting after each successful span). Values stay text where the contract types them.
    """
    v = s.filter(s._decision.notnull() & (s.operation == "execute_tool"))
    a = v.attributes

    def attr(name: str) -> ir.StringValue:
        return _attr(a, TOOL_CALL_ALIASES[name])

    code = attr("http_status").try_cast("int64")
    err = attr("error_type").lower()
    status = ibis.cases(
        (attr("tool_status").notnull(), attr("tool_status")),
        (_cancelled(a), "cancelled"),
        (code >= 500, "error_5xx"),
        (code >= 400, "error_4xx"),
        (err.contains("timeout") | err.contains("timed out"), "timeout"),
        (v.status == "error", "error_5xx"),
        else_="ok",
    )
    tool = ibis.coalesce(attr("tool"), v.name)
    side = attr("side_effect").lower()
    d = decisions.select(_kt=decisions.trace_id, _ks=decisions._dspan, _kid=decisions.decision_id)
    rows = v.select(
        call_id=v.span_id,
        trace_id=v.trace_id,
        _decision=v._decision,
        system=ibis.coalesce(attr("system"), tool),
        tool=tool,
        started_at=v.start_time,
        ended_at=v.end_time,
        status=status,
        http_status=code,
        attempt=ibis.coalesce(
            attr("attempt").try_cast("int64"), attr("resend_count").try_cast("int64") + 1
        ),
        idempotency_key=attr("idempotency_key"),
        side_effect=ibis.cases(
            (side.isin(["true", "1"]), True),
            (side.isin(["false", "0"]), False),
            else_=ibis.null("boolean"),
        ),
        cost_usd=attr("cost_usd").try_cast("float64"),
    )
    j = rows.inner_join(d, [rows.trace_id == d._kt, rows._decision == d._ks])
    # No attempt attribute: a span that follows failed spans of the same tool in the same
    # decision is their retry. Number the spans of each (decision, system, tool) in time
    # within runs that each successful span closes: the first after a success is attempt 1.
    key = ["_kid", "system", "tool"]
    order = ["started_at", "call_id"]
    ok = (j.status == "ok").cast("int64")
    # successes strictly before this span: the running total up to it, less its own
    ok_before = (
        ok.sum().over(ibis.window(group_by=key, order_by=order, preceding=None, following=0)) - ok
    )
    j = j.mutate(_run=ok_before.fill_null(0))
    inferred = ibis.row_number().over(group_by=[*key, "_run"], order_by=order) + 1
    j = j.mutate(attempt=ibis.coalesce(j.attempt, inferred))
    return j.select(
        "call_id",
        decision_id=j._kid,
        trace_id=j.trace_id,
        system=j.system,
        tool=j.tool,
        started_at=j.started_at,
        ended_at=j.ended_at,
        status=j.status,
        http_status=j.http_status,
        attempt=j.attempt,
        idempotency_key=j.idempotency_key,
        side_effect=j.side_effect,
        cost_usd=j.cost_usd,
    )

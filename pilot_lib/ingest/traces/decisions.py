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
   of the same trace. Descendants of a quarantined span are not quarantined
   themselves; they belong to no decision and are counted as outside decisions.
8. ``outcome missing``: with an outcomes data set, every span of a decision
   that has no outcome row (the decision is counted, not built).

Decision spans: by default a root span (no parent) whose operation is
``invoke_agent``; with ``decision_span`` set, every span of that name (nested
ones start their own decision: each span belongs to the nearest decision span
above it, so no span is counted twice). Each valid span is labelled with its
nearest decision ancestor-or-self by pointer jumping: ``ceil(log2(depth))``
self-joins, each materialized, at most 64.

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
from pilot_lib.ingest.traces.spans import SPAN_COLUMNS, UNPARSEABLE_KEY

__all__ = [
    "DECISION_LOG_COLUMNS",
    "OUTCOME_COLUMNS",
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
)

#: Attribute keys read for a decision-log column, first found wins (all formats).
SIGNAL_ALIASES: dict[str, tuple[str, ...]] = {
    "decision_id": ("pilot.decision_id",),
    "agent_id": ("gen_ai.agent.id", "gen_ai.agent.name", "pilot.agent_id"),
    "workflow": ("pilot.workflow",),
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
    "span_cost_usd": ("pilot.model_cost_usd", "gen_ai.usage.cost", "llm.cost.total"),
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
_SIGNALS = (*_TEXT_SIGNALS, "agent_id", "completed")

_MAX_JUMPS = 64


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
        }

    def summary(self) -> str:
        """One line for a report: spans read = used + quarantined + outside; decisions."""
        text = (
            f"{self.spans_read} spans in {self.traces} traces = {self.spans_used} used + "
            f"{self.spans_quarantined} quarantined + {self.spans_outside_decisions} outside "
            f"decisions; {self.decisions} decisions built from {self.decision_spans} decision spans"
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
    rows = {"_model": [], "_in_price": [], "_out_price": []}
    for model, price in prices.items():
        get = price.get if isinstance(price, Mapping) else lambda k, p=price: getattr(p, k)
        rows["_model"].append(str(model))
        rows["_in_price"].append(float(get("input_per_million_usd")))
        rows["_out_price"].append(float(get("output_per_million_usd")))
    return ibis.memtable(
        rows, schema={"_model": "string", "_in_price": "float64", "_out_price": "float64"}
    )


def _materialize(expr: ir.Table) -> ir.Table:
    """Compute ``expr`` once: a DuckDB temporary table (gone with the connection), else
    Ibis' cache. (Ibis' cache on DuckDB drops its table when garbage collected, which
    fails noisily once the store has closed the connection.)"""
    from pilot_lib.ingest.engine import materialize

    return materialize(expr, "trace_stage")


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
    s = spans.select(*SPAN_COLUMNS)
    rule = ibis.cases(
        (s.trace_id.isnull(), SPAN_RULES[0]),
        (s.span_id.isnull(), SPAN_RULES[1]),
        (s.start_time.isnull() | s.end_time.isnull(), SPAN_RULES[2]),
        (s.end_time < s.start_time, SPAN_RULES[3]),
        (s.attributes.contains(UNPARSEABLE_KEY).fill_null(False), SPAN_RULES[4]),
        else_=ibis.null("string"),
    )
    s = s.mutate(_rule=rule)
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
    orphans = children.anti_join(
        parents, [children.trace_id == parents._pt, children.parent_span_id == parents._ps]
    ).select(_ot=children.trace_id, _os=children.span_id, _orphan=ibis.literal(True))
    s = s.left_join(orphans, [s.trace_id == orphans._ot, s.span_id == orphans._os]).select(
        s, orphans._orphan
    )
    orphaned = s._rule.isnull() & s._orphan.fill_null(False)
    s = s.mutate(_rule=ibis.ifelse(orphaned, SPAN_RULES[6], s._rule)).drop("_orphan")
    is_root_agent = s.parent_span_id.isnull() & (s.operation == "invoke_agent")
    is_decision = (s.name == decision_span) if decision_span else is_root_agent
    s = s.mutate(_is_decision=is_decision.fill_null(False) & s._rule.isnull())
    s = _materialize(s)

    labels = _label_decisions(s.filter(s._rule.isnull()))
    s = s.left_join(labels, [s.trace_id == labels.trace_id, s.span_id == labels.span_id]).select(
        s, labels._decision
    )
    s = s.mutate(_decision=ibis.ifelse(s._rule.isnull(), s._decision, ibis.null("string")))
    s = _materialize(s)

    decisions = _build_decisions(s, prices, features)

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
    decisions = _finish(decisions)
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
    )
    quarantine = s.filter(s._rule.notnull()).select(
        *SPAN_COLUMNS, **{QUARANTINE_RULE_COLUMN: s._rule}
    )
    notes: list[str] = []
    if priced:
        notes.append(
            f"model cost of {priced} decisions computed from token counts and the pilot "
            "file's price table (traces.prices)"
        )
    return TraceDecisions(decisions, quarantine, recon, tuple(notes), tool_calls)


def _build_decisions(
    s: ir.Table, prices: Mapping[str, Any] | None, features: Sequence[str]
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
        v = v.left_join(price, v._model == price._model).select(
            v,
            _priced_cost=(
                v._in.fill_null(0) * price._in_price + v._out.fill_null(0) * price._out_price
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
        _failed_tool=v._desc & (v.operation == "execute_tool") & (v.status == "error"),
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
    """Type each feature: int64 when every non-null value parses as an integer, else
    float64 when every one parses as a number, else text (one aggregate query)."""
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
        )
        .execute()
        .iloc[0]
    )
    casts: dict[str, ir.Value] = {}
    for i, f in enumerate(features):
        n = int(counts[f"n_{i}"])
        if n and int(counts[f"i_{i}"] or 0) == n:
            casts[f] = table[f].try_cast("int64")
        elif n and int(counts[f"x_{i}"]) == n:
            casts[f] = table[f].try_cast("float64")
    return table.mutate(**casts) if casts else table


def _finish(decisions: ir.Table) -> ir.Table:
    """Derived fields applied after the outcomes: completed from status, tool_failure."""
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

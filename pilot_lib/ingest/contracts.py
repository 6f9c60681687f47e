"""Data contracts: one pandera schema per data set, enforced inside the engine.

The contracts are plain pandera declarations for Ibis (``pandera.ibis``): the
column types, which columns may be null, unique keys, and the checks each value
must pass. ``docs/data-contracts.md`` describes the same contracts in prose; the
two must agree.

Enforcement never pulls rows into Python. :func:`validate_dataset` builds one
Ibis expression over the raw table that

1. types every contract column with ``try_cast`` (a value that does not parse
   becomes null, and the row is quarantined as ``unparseable <column>``);
2. adds a ``_quarantine_rule`` string column holding the *first* rule the row
   breaks, in this order: ``null <column>`` / ``unparseable <column>`` (column by
   column, in contract order), the column checks, the row-level checks (e.g.
   ``escalated without escalation_reason``), the pilot-dependent checks
   (``timestamp outside pilot_window``), and last the duplicate keys
   (``duplicate decision_id``: among the rows that broke no other rule, the first
   by the data set's time column is kept, the later ones are quarantined);
3. splits the rows into valid rows (contract types, extra columns kept) and
   quarantined rows (the values as they came in, plus ``_quarantine_rule``).

The element-wise predicates come from the pandera ``Check`` objects themselves
(:func:`check_predicate`), so the declaration is the single source of each rule.
The ``error`` text of a check is the rule name written to the quarantine file.

:func:`load_pilot_data` opens every data set of a pilot, runs the split, counts
rows per rule with one aggregate query per data set, writes
``<quarantine_dir>/<data set>.parquet`` (one file) when a data set has
quarantined rows, and returns a :class:`PilotData` whose tables hold only valid
rows. On DuckDB the valid and the quarantined rows are materialized once as
temporary tables, so later queries never recompute the window functions; on
Spark (``con`` an Ibis PySpark backend) the checked rows are cached in the session.
Invariant: ``valid + quarantined == rows`` for every data set.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import ibis
import ibis.expr.datatypes as idt
import ibis.expr.types as ir
import pandas as pd
import pandera.ibis as pa
from ibis import util as ibis_util
from ibis.backends import BaseBackend
from ibis.common.exceptions import IbisError
from pandera.api.ibis.types import IbisData

from pilot_lib.config import DATASET_NAMES, ESCALATION_REASONS, TRACE_FORMATS, Pilot, load_pilot
from pilot_lib.errors import ContractError, DataSourceError
from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN, DatasetCheck, PilotData
from pilot_lib.ingest.sources import connect, describe_source, open_dataset, open_source

__all__ = [
    "CONTRACTS",
    "FLAGS",
    "QUARANTINE_RULE_COLUMN",
    "ContractSplit",
    "DatasetCheck",
    "FlagRule",
    "PilotData",
    "ValidationReport",
    "check_predicate",
    "contract",
    "contract_columns",
    "flag_counts",
    "in_contract_types",
    "load_pilot_data",
    "typed_table",
    "validate_dataset",
]


@functools.cache
def _register_pandera_ibis() -> None:
    """Register pandera's Ibis check implementations.

    Must run before the schemas below are declared: pandera copies the check
    objects into each schema, and a copy made earlier would not see the Ibis
    implementations of the built-in checks (``ge``, ``isin``, ``in_range``).
    """
    from pandera.backends.ibis.register import register_ibis_backends

    register_ibis_backends()


_register_pandera_ibis()


_STRING = idt.String()
_TIMESTAMP = idt.Timestamp(scale=6)  # DuckDB TIMESTAMP: microseconds, no time zone (UTC)
_BOOL = idt.Boolean()
_FLOAT = idt.Float64()
_INT = idt.Int64()
_DATE = idt.Date()


def _non_negative(column: str) -> pa.Check:
    return pa.Check.ge(0, error=f"negative {column}")


def _score(column: str) -> pa.Check:
    return pa.Check.in_range(1, 5, error=f"{column} outside 1-5")


def _row_rule(predicate: Callable[[ir.Table], ir.BooleanColumn], error: str) -> pa.Check:
    """A row-level check over several columns: ``predicate(table)`` is True when the row is fine.

    A null result counts as passing (the null itself is caught by the null rules).
    """
    return pa.Check(lambda data: predicate(data.table), error=error)


def _is_monday(data: IbisData) -> ir.Table:
    return data.table.select(data.table[data.key].day_of_week.index() == 0)


# ---- the contracts (docs/data-contracts.md) ------------------------------------------------

CANDIDATES = pa.DataFrameSchema(
    {
        "name": pa.Column(_STRING, unique=True),
        "impact_metric": pa.Column(_STRING),
        "baseline_value": pa.Column(_FLOAT, nullable=True),
        "impact_score": pa.Column(_INT, _score("impact_score")),
        "data_score": pa.Column(_INT, _score("data_score")),
        "readiness_score": pa.Column(_INT, _score("readiness_score")),
        "weekly_volume": pa.Column(_FLOAT, _non_negative("weekly_volume")),
        "sme_committed": pa.Column(_BOOL),
        "owner_has_authority": pa.Column(_BOOL),
        "demo_appeal": pa.Column(_INT, _score("demo_appeal")),
        "notes": pa.Column(_STRING, nullable=True, required=False),
    },
    name="candidates",
)

DECISIONS = pa.DataFrameSchema(
    {
        "decision_id": pa.Column(_STRING, unique=True),
        "timestamp": pa.Column(_TIMESTAMP),
        "trace_id": pa.Column(_STRING),
        "agent_id": pa.Column(_STRING),
        "workflow": pa.Column(_STRING),
        "case_id": pa.Column(_STRING),
        "prompt_version": pa.Column(_STRING),
        "user_id": pa.Column(_STRING, nullable=True),
        "completed": pa.Column(_BOOL),
        "accepted": pa.Column(_BOOL),
        "overridden": pa.Column(_BOOL),
        "escalated": pa.Column(_BOOL),
        "escalation_reason": pa.Column(
            _STRING,
            pa.Check.isin(ESCALATION_REASONS, error="unknown escalation_reason"),
            nullable=True,
        ),
        "confidence": pa.Column(
            _FLOAT, pa.Check.in_range(0, 1, error="confidence outside [0, 1]"), nullable=True
        ),
        "correct": pa.Column(_BOOL, nullable=True),
        "input_tokens": pa.Column(_INT, _non_negative("input_tokens")),
        "output_tokens": pa.Column(_INT, _non_negative("output_tokens")),
        "model_cost_usd": pa.Column(_FLOAT, _non_negative("model_cost_usd")),
        "tool_cost_usd": pa.Column(_FLOAT, _non_negative("tool_cost_usd")),
        "review_minutes": pa.Column(_FLOAT, _non_negative("review_minutes")),
        # Shadow mode (docs/data-contracts.md, "Shadow decisions"): made silently while a
        # human did the work; null counts as a live decision.
        "shadow": pa.Column(_BOOL, nullable=True, required=False),
        "agent_outcome": pa.Column(_STRING, nullable=True, required=False),
        "human_outcome": pa.Column(_STRING, nullable=True, required=False),
        # cost attribution (analysis/costs.py): absent or null, the pilot file's
        # business_unit and the single priced model stand in
        "model": pa.Column(_STRING, nullable=True, required=False),
        "business_unit": pa.Column(_STRING, nullable=True, required=False),
    },
    checks=[
        _row_rule(
            lambda t: ~t.escalated | t.escalation_reason.notnull(),
            "escalated without escalation_reason",
        ),
        # Rows that contradict themselves (docs/data-contracts.md, "Rows that contradict
        # themselves"): which of the two values is wrong cannot be told, so the row is unusable.
        _row_rule(
            lambda t: t.escalated | t.escalation_reason.isnull(),
            "escalation_reason without escalated",
        ),
        _row_rule(lambda t: ~t.accepted | t.completed, "accepted without completed"),
        _row_rule(lambda t: ~t.accepted | ~t.overridden, "accepted and overridden"),
        # A shadow decision is only evidence when both sides of the comparison are known.
        _row_rule(
            lambda t: (
                ~t.shadow.fill_null(False) | (t.agent_outcome.notnull() & t.human_outcome.notnull())
            ),
            "shadow decision without agent_outcome or human_outcome",
        ),
    ],
    name="decisions",
)

CASES = pa.DataFrameSchema(
    {
        "case_id": pa.Column(_STRING, unique=True),
        "cohort": pa.Column(
            _STRING, pa.Check.isin(["agent", "control", "baseline"], error="unknown cohort")
        ),
        "opened_at": pa.Column(_TIMESTAMP),
        "closed_at": pa.Column(_TIMESTAMP, nullable=True),
    },
    checks=[
        _row_rule(
            lambda t: t.closed_at.isnull() | (t.closed_at >= t.opened_at),
            "closed_at before opened_at",
        ),
    ],
    name="cases",
)

ADOPTION = pa.DataFrameSchema(
    {
        "user_id": pa.Column(_STRING),
        "week": pa.Column(_DATE, pa.Check(_is_monday, error="week not a Monday")),
        "eligible": pa.Column(_BOOL),
        "engaged": pa.Column(_BOOL),
        "decisions_seen": pa.Column(_INT, _non_negative("decisions_seen")),
        "overrides": pa.Column(_INT, _non_negative("overrides")),
    },
    checks=[
        _row_rule(
            lambda t: t.overrides <= t.decisions_seen, "overrides greater than decisions_seen"
        ),
        _row_rule(lambda t: ~t.engaged | t.eligible, "engaged without eligible"),
        _row_rule(lambda t: ~t.engaged | (t.decisions_seen > 0), "engaged without decisions_seen"),
    ],
    unique=["user_id", "week"],
    name="adoption",
)

DRILL_EVENTS = pa.DataFrameSchema(
    {
        "drill_id": pa.Column(_STRING),
        # An unknown event name is kept: phase 4 reports it as a finding.
        "event": pa.Column(_STRING),
        "timestamp": pa.Column(_TIMESTAMP),
        "action_id": pa.Column(_STRING, nullable=True),
        "detail": pa.Column(_STRING, nullable=True, required=False),
    },
    name="drill_events",
)

APPROVAL_DECISIONS = ("approved", "rejected", "escalated", "timed_out", "auto")

APPROVALS = pa.DataFrameSchema(
    {
        "action_id": pa.Column(_STRING, unique=True),
        "trace_id": pa.Column(_STRING, nullable=True),
        "proposed_at": pa.Column(_TIMESTAMP),
        "amount": pa.Column(_FLOAT, _non_negative("amount")),
        "required_level": pa.Column(_STRING),
        "decided_at": pa.Column(_TIMESTAMP, nullable=True),
        "decision": pa.Column(_STRING, pa.Check.isin(APPROVAL_DECISIONS, error="unknown decision")),
        "approver_level": pa.Column(_STRING, nullable=True),
        "executed_at": pa.Column(_TIMESTAMP, nullable=True),
    },
    checks=[
        _row_rule(
            lambda t: t.decided_at.isnull() | (t.decided_at >= t.proposed_at),
            "decided_at before proposed_at",
        ),
    ],
    name="approvals",
)

#: Outcome of one call to a downstream system (docs/data-contracts.md, "tool_calls").
#: ``cancelled``: the agent cancelled the call (a parallel call failed); not a failure.
TOOL_CALL_STATUSES = ("ok", "error_5xx", "error_4xx", "timeout", "circuit_open", "cancelled")

TOOL_CALLS = pa.DataFrameSchema(
    {
        "call_id": pa.Column(_STRING, unique=True),
        "decision_id": pa.Column(_STRING),
        "trace_id": pa.Column(_STRING, nullable=True),
        "system": pa.Column(_STRING),
        "tool": pa.Column(_STRING),
        "started_at": pa.Column(_TIMESTAMP),
        # Null: the call never returned (the agent hung on it, or the log was cut).
        "ended_at": pa.Column(_TIMESTAMP, nullable=True),
        "status": pa.Column(_STRING, pa.Check.isin(TOOL_CALL_STATUSES, error="unknown status")),
        "http_status": pa.Column(_INT, nullable=True, required=False),
        # 1 for the first try of a call, 2 for its first retry, ...
        "attempt": pa.Column(
            _INT, pa.Check.ge(1, error="attempt below 1"), required=False, nullable=True
        ),
        "idempotency_key": pa.Column(_STRING, nullable=True, required=False),
        "side_effect": pa.Column(_BOOL, nullable=True, required=False),
        "cost_usd": pa.Column(_FLOAT, _non_negative("cost_usd"), nullable=True, required=False),
    },
    checks=[
        _row_rule(
            lambda t: t.ended_at.isnull() | (t.ended_at >= t.started_at),
            "ended_at before started_at",
        ),
    ],
    name="tool_calls",
)


def _per_version(t: ir.Table, value: ir.Value) -> ir.Value:
    """``value`` aggregated over the rows of the same ``policy_version`` (a window)."""
    return value.over(group_by=t.policy_version)


# One row per authority level per policy version. A version's rows together must form a
# ladder like the pilot file's ``approvals.levels`` (levels in order of max_amount, only
# the top one without a limit), else every row of that version is quarantined: a version
# with half its levels is not a policy.
POLICY_VERSIONS = pa.DataFrameSchema(
    {
        "policy_version": pa.Column(_STRING),
        "effective_at": pa.Column(_TIMESTAMP),
        "level": pa.Column(_STRING),
        "max_amount": pa.Column(_FLOAT, _non_negative("max_amount"), nullable=True),
        "requires_approval": pa.Column(_BOOL),
    },
    checks=[
        _row_rule(
            lambda t: (
                _per_version(t, t.effective_at.min()) == _per_version(t, t.effective_at.max())
            ),
            "policy_version with more than one effective_at",
        ),
        _row_rule(
            lambda t: _per_version(t, t.max_amount.isnull().cast("int64").sum()) <= 1,
            "policy_version with more than one level without max_amount",
        ),
        # (a count per version and value, not a distinct count over the version: Spark has
        # no distinct window functions; the version then lacks a level of the pilot
        # file's ladder and phase 4 leaves it out with a warning)
        _row_rule(
            lambda t: t.max_amount.count().over(group_by=[t.policy_version, t.max_amount]) <= 1,
            "policy_version with two levels at the same max_amount",
        ),
        _row_rule(
            lambda t: t.level.count().over(group_by=[t.policy_version, t.level]) <= 1,
            "policy_version with a level listed twice",
        ),
    ],
    name="policy_versions",
)


GOLDEN_EVALUATIONS = pa.DataFrameSchema(
    {
        "prompt_version": pa.Column(_STRING),
        "golden_case_id": pa.Column(_STRING),
        "correct": pa.Column(_BOOL),
        "evaluated_at": pa.Column(_TIMESTAMP),
    },
    unique=["prompt_version", "golden_case_id"],
    name="golden_evaluations",
)

FEEDBACK_LOOPS = ("fast", "slow")

FEEDBACK = pa.DataFrameSchema(
    {
        "feedback_id": pa.Column(_STRING, unique=True),
        "decision_id": pa.Column(_STRING, nullable=True),
        "created_at": pa.Column(_TIMESTAMP),
        "loop": pa.Column(_STRING, pa.Check.isin(FEEDBACK_LOOPS, error="unknown loop")),
        "used_by": pa.Column(
            _STRING, pa.Check.isin(FEEDBACK_LOOPS, error="unknown used_by"), nullable=True
        ),
        "used_at": pa.Column(_TIMESTAMP, nullable=True),
    },
    checks=[
        _row_rule(lambda t: t.used_at.isnull() | t.used_by.notnull(), "used_at without used_by"),
        _row_rule(
            lambda t: t.used_at.isnull() | (t.used_at >= t.created_at),
            "used_at before created_at",
        ),
    ],
    name="feedback",
)

#: The static contract of each data set (pilot-dependent checks: :func:`contract`).
CONTRACTS: dict[str, pa.DataFrameSchema] = {
    "candidates": CANDIDATES,
    "decisions": DECISIONS,
    "cases": CASES,
    "adoption": ADOPTION,
    "drill_events": DRILL_EVENTS,
    "approvals": APPROVALS,
    "tool_calls": TOOL_CALLS,
    "policy_versions": POLICY_VERSIONS,
    "golden_evaluations": GOLDEN_EVALUATIONS,
    "feedback": FEEDBACK,
}

#: Column that decides which of several rows with the same key is kept (the earliest).
FIRST_BY: dict[str, str | None] = {
    "candidates": None,
    "decisions": "timestamp",
    "cases": "opened_at",
    "adoption": "week",
    "drill_events": "timestamp",
    "approvals": "proposed_at",
    "tool_calls": "started_at",
    "policy_versions": "effective_at",
    "golden_evaluations": "evaluated_at",
    "feedback": "created_at",
}


# ---- flags: rows kept and used, but counted and shown -------------------------------------


@dataclass(frozen=True)
class FlagRule:
    """A rule whose rows stay valid (they are used) but are counted and shown.

    ``predicate(table, pilot)`` is True on a flagged row (null counts as not
    flagged); it runs on the valid rows, in contract types, inside the engine.
    """

    dataset: str
    label: str
    predicate: Callable[[ir.Table, Pilot], ir.BooleanValue]


#: Flag rules per data set (docs/data-contracts.md, "Flags").
FLAGS: tuple[FlagRule, ...] = (
    FlagRule(
        "decisions",
        "low_confidence escalation at or above confidence_threshold",
        lambda t, p: (
            (t.escalation_reason == "low_confidence") & (t.confidence >= p.confidence_threshold)
        ),
    ),
    FlagRule(
        "adoption",
        "decisions_seen while not eligible",
        lambda t, p: ~t.eligible & (t.decisions_seen > 0),
    ),
    FlagRule(
        "approvals",
        "executed_at before proposed_at",
        lambda t, p: t.executed_at < t.proposed_at,
    ),
)


def flag_counts(name: str, valid: ir.Table, pilot: Pilot) -> dict[str, int]:
    """Rows of ``valid`` (data set ``name``'s valid rows) each flag rule marks.

    One aggregate query in the engine; every flag of the data set is listed, zeros
    included. A data set without flag rules gives ``{}``.
    """
    rules = [f for f in FLAGS if f.dataset == name]
    if not rules:
        return {}
    metrics = {
        f"f{i}": f.predicate(valid, pilot).fill_null(False).cast("int64").sum()
        for i, f in enumerate(rules)
    }
    row = valid.aggregate(**metrics).execute().iloc[0]
    return {
        f.label: int(row[f"f{i}"]) if pd.notna(row[f"f{i}"]) else 0 for i, f in enumerate(rules)
    }


def _window_checks(pilot: Pilot) -> dict[str, tuple[dict[str, list[pa.Check]], list[pa.Check]]]:
    """Checks that depend on the pilot file: (column checks, row checks) per data set."""
    pw, bw = pilot.pilot_window, pilot.baseline_window
    levels = [lvl.name for lvl in pilot.approvals.levels]

    def inside(col: ir.TimestampColumn, window: Any) -> ir.BooleanColumn:
        return (col >= window.start_ts) & (col < window.end_ts)

    return {
        "decisions": (
            {
                "timestamp": [
                    pa.Check.in_range(
                        pw.start_ts,
                        pw.end_ts,
                        include_max=False,
                        error="timestamp outside pilot_window",
                    )
                ]
            },
            [],
        ),
        "cases": (
            {},
            [
                _row_rule(
                    lambda t: (t.cohort != "baseline") | inside(t.opened_at, bw),
                    "opened_at outside baseline_window",
                ),
                _row_rule(
                    lambda t: (t.cohort == "baseline") | inside(t.opened_at, pw),
                    "opened_at outside pilot_window",
                ),
            ],
        ),
        "adoption": (
            {
                # A week counts when it overlaps the window (its Monday may precede the start).
                "week": [
                    pa.Check.in_range(
                        pw.start - dt.timedelta(days=6),
                        pw.end,
                        error="week outside pilot_window",
                    )
                ]
            },
            [],
        ),
        "approvals": (
            {
                "required_level": [pa.Check.isin(levels, error="unknown required_level")],
                "approver_level": [pa.Check.isin(levels, error="unknown approver_level")],
            },
            [],
        ),
    }


def contract(name: str, pilot: Pilot | None = None) -> pa.DataFrameSchema:
    """The contract of data set ``name``; with ``pilot``, plus the checks that depend on it.

    Pilot-dependent checks: decision timestamps inside ``pilot_window``; case
    ``opened_at`` inside the window of its cohort; adoption weeks overlapping
    ``pilot_window``; approval levels among ``approvals.levels``.
    """
    if name not in CONTRACTS:
        raise ContractError(f"no contract for data set {name!r}; known: {list(CONTRACTS)}")
    schema = CONTRACTS[name]
    if pilot is None:
        return schema
    column_checks, row_checks = _window_checks(pilot).get(name, ({}, []))
    if not column_checks and not row_checks:
        return schema
    columns = {}
    for col_name, col in schema.columns.items():
        columns[col_name] = pa.Column(
            col.dtype.type,
            checks=[*col.checks, *column_checks.get(col_name, [])],
            nullable=col.nullable,
            unique=col.unique,
            required=col.required,
        )
    return pa.DataFrameSchema(
        columns,
        checks=[*schema.checks, *row_checks],
        unique=schema.unique,
        name=schema.name,
    )


def contract_columns(name: str) -> tuple[str, ...]:
    """The columns of data set ``name``'s contract, in contract order."""
    return tuple(contract(name).columns)


# ---- from pandera checks to engine expressions ----------------------------------------------


def check_predicate(check: pa.Check, table: ir.Table, column: str | None) -> ir.BooleanColumn:
    """The boolean column expression of a pandera ``check`` over ``table`` (True = passes).

    Calls the check's own function the way pandera's Ibis backend does and unwraps
    the projection it returns into a column expression usable in
    ``table.mutate(...)``, so a rule is declared once (in the schema) and runs in
    the engine. ``column`` is the checked column, or None for a row-level check.
    Null results are left null; callers treat them as passing.

    Raises
    ------
    ContractError
        The check cannot run in the engine (an element-wise Python check, or one
        that returns something other than boolean columns over ``table``).
    """
    _register_pandera_ibis()
    label = check.error or check.name
    if check.element_wise:
        raise ContractError(
            f"check {label!r} is element-wise (runs in Python row by row); write it as a "
            "vectorized Ibis check so it runs in the engine"
        )
    try:
        out = check._check_fn(IbisData(table, column), **check._check_kwargs)
        if isinstance(out, ir.BooleanColumn):
            return out
        if isinstance(out, ir.Table):
            values = getattr(out.op(), "values", None)
            if values:
                preds = [v.to_expr() for v in values.values()]
                if all(isinstance(p, ir.BooleanColumn) for p in preds):
                    return functools.reduce(lambda a, b: a & b, preds)
    except (IbisError, AttributeError, TypeError) as exc:
        raise ContractError(f"check {label!r} cannot run in the engine: {exc}") from exc
    raise ContractError(
        f"check {label!r} did not return boolean columns over the table; "
        "return a boolean column expression or a projection of boolean columns"
    )


def _rule_label(check: pa.Check, column: str | None) -> str:
    if check.error:
        return str(check.error)
    return f"{column} fails {check.name}" if column else f"fails {check.name}"


def _missing(raw: ir.Column) -> ir.BooleanValue:
    """Null, or NaN for a floating-point column (NaN counts as missing)."""
    if raw.type().is_floating():
        return raw.isnull() | raw.isnan()
    return raw.isnull()


def _same_type(source: idt.DataType, target: idt.DataType) -> bool:
    """Equal up to nullability."""
    return source.copy(nullable=True) == target.copy(nullable=True)


def _typed(raw: ir.Column, target: idt.DataType) -> ir.Column:
    """``raw`` cast to the contract type; null where the value does not parse.

    Text timestamps go through TIMESTAMPTZ so an offset (``+02:00``, ``Z``) is
    honoured; naive text is read as UTC (the DuckDB session time zone). Integers
    must be whole: ``1.5`` does not parse as an int (DuckDB would round it).
    Floating-point NaN becomes null.
    """
    source = raw.type()
    if _same_type(source, target):
        out = raw
    elif target.is_timestamp():
        if source.is_string():
            out = raw.try_cast(idt.Timestamp(timezone="UTC")).cast(target)
        else:
            out = raw.try_cast(target)
    elif target.is_integer() and not source.is_integer() and not source.is_boolean():
        as_float = raw.try_cast(_FLOAT)
        whole = as_float.notnull() & (as_float == as_float.floor())
        out = whole.ifelse(raw.try_cast(target), ibis.null(target))
    else:
        out = raw.try_cast(target)
    if target.is_floating():
        out = out.isnan().ifelse(ibis.null(target), out)
    return out


def _first_rule(rules: Iterable[tuple[ir.BooleanValue, str]]) -> ir.StringValue:
    """The label of the first rule whose condition is True, else null."""
    branches = [(cond.fill_null(False), label) for cond, label in rules]
    if not branches:
        return ibis.null(_STRING)
    return ibis.cases(*branches, else_=ibis.null(_STRING))


def _raw_name(column: str) -> str:
    return f"__raw__{column}"


@dataclass(frozen=True)
class ContractSplit:
    """The engine-side split of one data set (all lazy Ibis expressions).

    ``checked``: every row, contract-typed, with ``_quarantine_rule`` (null when the
    row is valid) and a ``__raw__<col>`` copy of each column that had to be cast.
    ``valid``: rows that broke no rule, contract types, extra columns kept.
    ``quarantined``: rows that broke a rule, values as they came in, with
    ``_quarantine_rule`` as the first column.
    """

    name: str
    checked: ir.Table
    valid_columns: tuple[str, ...]
    quarantine_columns: dict[str, str]  # output name -> column of ``checked``
    #: Unique keys (each a list of columns), with the rule label a later duplicate gets.
    keys: tuple[tuple[tuple[str, ...], str], ...] = ()
    #: Order that decides which row of a repeated key is kept (the first).
    order_by: tuple[Any, ...] = ()
    #: False when ``checked`` has not had its duplicate keys marked yet (``dedupe=False``).
    deduplicated: bool = True

    def mark_duplicates(self, checked: ir.Table) -> ir.Table:
        """``checked`` (e.g. a materialized copy of an undeduplicated split) with the
        later rows of every repeated key quarantined as ``duplicate <key>``."""
        for key, label in self.keys:
            checked = _mark_duplicates(checked, list(key), list(self.order_by), label)
        return checked

    def has_repeated_keys(self, checked: ir.Table) -> bool:
        """Whether any key is held by more than one still-valid row of ``checked``."""
        rule = checked[QUARANTINE_RULE_COLUMN]
        for key, _ in self.keys:
            counts = checked.filter(rule.isnull()).group_by(list(key)).aggregate(n=ibis._.count())
            if int(counts.filter(counts.n > 1).count().execute()):
                return True
        return False

    def valid_from(self, checked: ir.Table) -> ir.Table:
        """The valid rows of ``checked`` (this split's table, or a materialized copy)."""
        return checked.filter(checked[QUARANTINE_RULE_COLUMN].isnull()).select(*self.valid_columns)

    def quarantined_from(self, checked: ir.Table) -> ir.Table:
        """The quarantined rows of ``checked``, values as they came in."""
        return checked.filter(checked[QUARANTINE_RULE_COLUMN].notnull()).select(
            **{out: checked[col] for out, col in self.quarantine_columns.items()}
        )

    @property
    def valid(self) -> ir.Table:
        return self.valid_from(self.checked)

    @property
    def quarantined(self) -> ir.Table:
        return self.quarantined_from(self.checked)


def _require_columns(name: str, table: ir.Table, schema: pa.DataFrameSchema, source: str) -> None:
    required = [c for c, col in schema.columns.items() if col.required]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ContractError(
            f"data set {name!r} ({source}): missing required column(s) {missing}; "
            f"found {list(table.columns)}. Rename or add the column(s); "
            "see docs/data-contracts.md"
        )


def in_contract_types(name: str, table: ir.Table) -> bool:
    """Whether every contract column ``table`` holds already has its contract type
    (up to nullability): then typing it changes nothing but floating-point NaN to null,
    and a view over ``table`` (:func:`typed_table`) can stand for a checked copy."""
    schema = contract(name)
    return all(
        _same_type(table[c].type(), col.dtype.type)
        for c, col in schema.columns.items()
        if c in table.columns
    )


def typed_table(name: str, table: ir.Table) -> ir.Table:
    """``table`` with data set ``name``'s contract columns typed as :func:`validate_dataset`
    types them (absent optional columns added as nulls, NaN as null), no rule evaluated.

    The columns and their values are those of the valid rows of the check, extra
    columns kept, in the same order: the evidence store's view over an input already
    in contract types selects its valid rows from this.
    """
    schema = contract(name)
    for col_name, col in schema.columns.items():
        if col_name not in table.columns:
            table = table.mutate(**{col_name: ibis.null(col.dtype.type)})
    return table.mutate(
        **{c: _typed(table[c], col.dtype.type) for c, col in schema.columns.items()}
    )


def validate_dataset(
    name: str,
    table: ir.Table,
    pilot: Pilot | None = None,
    *,
    source: str | None = None,
    dedupe: bool = True,
) -> ContractSplit:
    """Check data set ``name`` against its contract, inside the engine.

    Parameters
    ----------
    name:
        The data set (``decisions``, ``cases``, ...).
    table:
        Its raw Ibis table (any column types; contract columns are try-cast).
    pilot:
        The pilot file; adds the pilot-dependent checks (windows, approval levels).
        Without it only the static contract is checked.
    source:
        How the source is shown in error messages (default: "the table").
    dedupe:
        Mark the later rows of repeated keys in ``checked`` (default). False leaves
        that to :meth:`ContractSplit.mark_duplicates` on a materialized copy, which
        is how the evidence store avoids evaluating the checks more than once.

    Returns
    -------
    ContractSplit
        Lazy expressions for all rows with their rule, the valid rows and the
        quarantined rows. Nothing runs until one of them is queried.

    Raises
    ------
    ContractError
        A required column is missing (the message names the data set, the source,
        the missing columns and the columns found).
    """
    schema = contract(name, pilot)
    shown = source or "the table"
    _require_columns(name, table, schema, shown)
    for col_name, col in schema.columns.items():
        if col_name not in table.columns:  # optional column: add it empty
            table = table.mutate(**{col_name: ibis.null(col.dtype.type)})

    # 1. type the contract columns; null / unparseable rules from raw vs typed values
    typed: dict[str, ir.Column] = {}
    raw_copies: dict[str, ir.Column] = {}
    pre_rules: list[tuple[ir.BooleanValue, str]] = []
    for col_name, col in schema.columns.items():
        raw = table[col_name]
        target = col.dtype.type
        value = _typed(raw, target)
        typed[col_name] = value
        if not _same_type(raw.type(), target):
            raw_copies[_raw_name(col_name)] = raw
        if not col.nullable:
            pre_rules.append((_missing(raw), f"null {col_name}"))
        pre_rules.append((~_missing(raw) & value.isnull(), f"unparseable {col_name}"))
    stage = table.mutate(**raw_copies, **typed, **{QUARANTINE_RULE_COLUMN: _first_rule(pre_rules)})

    # 2. checks declared in the schema (column checks, then row checks)
    rules: list[tuple[ir.BooleanValue, str]] = []
    for col_name, col in schema.columns.items():
        for check in col.checks:
            ok = check_predicate(check, stage, col_name)
            rules.append((~ok.fill_null(True), _rule_label(check, col_name)))
    for check in schema.checks:
        ok = check_predicate(check, stage, None)
        rules.append((~ok.fill_null(True), _rule_label(check, None)))
    rule = stage[QUARANTINE_RULE_COLUMN]
    stage = stage.mutate(**{QUARANTINE_RULE_COLUMN: rule.coalesce(_first_rule(rules))})

    # 3. duplicate keys: among rows still valid, keep the first, quarantine the later ones
    keys: list[list[str]] = [[c] for c, col in schema.columns.items() if col.unique]
    if schema.unique:
        keys.append(list(schema.unique))
    order_first = FIRST_BY.get(name)
    tie_break = [c for c in schema.columns if c != order_first]
    order_by = [ibis.asc(c, nulls_first=False) for c in ([order_first] if order_first else [])]
    order_by += [ibis.asc(c, nulls_first=False) for c in tie_break]
    labelled = tuple(
        (tuple(key), f"duplicate {key[0]}" if len(key) == 1 else f"duplicate ({', '.join(key)})")
        for key in keys
    )
    if dedupe:
        for key, label in labelled:
            stage = _mark_duplicates(stage, list(key), order_by, label)

    helper = {QUARANTINE_RULE_COLUMN, *raw_copies}
    valid_columns = tuple(c for c in stage.columns if c not in helper)
    quarantine_columns = {QUARANTINE_RULE_COLUMN: QUARANTINE_RULE_COLUMN}
    for c in table.columns:
        quarantine_columns[c] = _raw_name(c) if _raw_name(c) in raw_copies else c
    return ContractSplit(
        name,
        stage,
        valid_columns,
        quarantine_columns,
        keys=labelled,
        order_by=tuple(order_by),
        deduplicated=dedupe,
    )


def _mark_duplicates(stage: ir.Table, key: list[str], order_by: list[Any], label: str) -> ir.Table:
    """Quarantine the later rows of each key that more than one still-valid row holds.

    Only rows whose key is repeated are ranked: the keys held by more than one
    still-valid row are found with one GROUP BY (small), joined back, and the
    window runs over those rows alone. Ranking the whole table would sort every
    row with every column, which for a decision log costs far more than the rest
    of the checks together. Row order of the result is not the input's.
    """
    rule = stage[QUARANTINE_RULE_COLUMN]
    repeated = small_table(
        stage.filter(rule.isnull())
        .group_by(key)
        .aggregate(__n=ibis._.count())
        .filter(ibis._.__n > 1)
        .select(*key)
    )
    # Three branches that each read ``stage`` itself: rows already quarantined, valid
    # rows whose key is held once, and valid rows with a repeated key, ranked. (A
    # shared sub-expression read twice would be materialized whole by DuckDB.)
    position = ibis.row_number().over(group_by=key, order_by=order_by)
    ranked = (
        stage.semi_join(repeated, key)
        .filter(ibis._[QUARANTINE_RULE_COLUMN].isnull())
        .mutate(
            **{
                QUARANTINE_RULE_COLUMN: (position > 0).ifelse(
                    ibis.literal(label), ibis.null(_STRING)
                )
            }
        )
    )
    columns = stage.columns
    return ibis.union(
        stage.filter(rule.notnull()).select(*columns),
        stage.anti_join(repeated, key)
        .filter(ibis._[QUARANTINE_RULE_COLUMN].isnull())
        .select(*columns),
        ranked.select(*columns),
    )


def small_table(expr: ir.Table) -> ir.Table:
    """A small result computed once in its engine (a temporary table; cached on Spark).

    Only for small results (here: the keys more than one row holds); an expression
    that is not bound to a backend is returned as is.
    """
    backend = _backend_of(expr)
    if backend is None:
        return expr
    if backend.name == "duckdb":
        return backend.create_table(ibis_util.gen_name("repeated_keys"), expr, temp=True)
    if backend.name == "pyspark":
        return expr.cache()
    return expr


# ---- loading a whole pilot -------------------------------------------------------------------


def engine_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the data could not be read (not a mistake in this code)."""
    return (
        duckdb.ConversionException,
        duckdb.InvalidInputException,
        duckdb.IOException,
        OSError,
    )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _check_one(
    name: str,
    raw: ir.Table,
    pilot: Pilot,
    source: str,
    quarantine_dir: Path | None,
) -> tuple[DatasetCheck, ir.Table, ir.Table]:
    split = validate_dataset(name, raw, pilot, source=source)
    checked = split.checked
    backend = _backend_of(checked)
    try:
        if backend is not None and backend.name == "duckdb":
            # One pass computes the rules and windows; the split reads the temp table.
            checked_name = ibis_util.gen_name(f"checked_{_safe_name(name)}")
            checked = backend.create_table(checked_name, checked, temp=True)
        elif backend is not None and backend.name == "pyspark":
            # Spark's twin of the temp table: computed once by the first query, then reused
            checked = checked.cache()
        counts = (
            checked.group_by(rule=checked[QUARANTINE_RULE_COLUMN])
            .aggregate(rows=checked.count())
            .execute()
        )
        valid = split.valid_from(checked)
        quarantined = split.quarantined_from(checked)
        if backend is not None and backend.name == "duckdb":
            valid = backend.create_table(
                ibis_util.gen_name(f"valid_{_safe_name(name)}"), valid, temp=True
            )
            quarantined = backend.create_table(
                ibis_util.gen_name(f"quarantine_{_safe_name(name)}"), quarantined, temp=True
            )
            # drop_table quotes catalog, schema and name apart (a qualified name quoted
            # whole names no table, and the checked rows stayed in memory twice)
            backend.drop_table(checked_name, force=True)
        n_bad = int(counts.loc[counts["rule"].notna(), "rows"].sum())
        path = None
        if n_bad and quarantine_dir is not None:
            quarantine_dir.mkdir(parents=True, exist_ok=True)
            path = quarantine_dir / f"{name}.parquet"
            _write_parquet(quarantined, backend, path)
    except engine_errors() as exc:
        raise DataSourceError(
            f"data set {name!r} ({source}): reading or checking it failed: "
            f"{' '.join(str(exc).split())[:400]}. Check the file for malformed rows."
        ) from exc
    by_rule = (
        counts.loc[counts["rule"].notna(), ["rule", "rows"]]
        .astype({"rows": "int64"})
        .sort_values(["rows", "rule"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    n_rows = int(counts["rows"].sum())
    check = DatasetCheck(
        name=name,
        source=source,
        rows=n_rows,
        valid=n_rows - n_bad,
        quarantined=n_bad,
        by_rule=by_rule,
        quarantine_path=path,
        flags=flag_counts(name, valid, pilot),
    )
    return check, valid, quarantined


def _write_parquet(table: ir.Table, backend: BaseBackend | None, path: Path) -> None:
    """Write ``table`` to one Parquet file at ``path``, replacing an existing file.

    DuckDB writes the file itself. Other engines hand record batches to pyarrow,
    which writes on the machine running the workbook: Spark's own writer would make
    a folder of part files on the cluster's file system and refuse to overwrite on
    a second run. Ibis' Spark backend collects the rows to the driver first, which
    suits a quarantine (the bad rows only).
    """
    if backend is None or backend.name == "duckdb":
        from pilot_lib.ingest.engine import duckdb_to_parquet

        duckdb_to_parquet(table, path)
        return
    import pyarrow.parquet as pq

    with table.to_pyarrow_batches() as reader, pq.ParquetWriter(path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


def _backend_of(table: ir.Table) -> BaseBackend | None:
    try:
        return table.get_backend()
    except (IbisError, AttributeError):
        return None


def load_pilot_data(
    pilot: Pilot | str | Path,
    con: BaseBackend | None = None,
    quarantine_dir: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> PilotData:
    """Open every data set the pilot names, enforce its contract, keep the valid rows.

    Parameters
    ----------
    pilot:
        A loaded :class:`Pilot`, or a pilot folder / ``pilot.yaml`` path.
    con:
        Ibis connection the data sets are read through (default: a new in-memory
        DuckDB one from :func:`~pilot_lib.ingest.sources.connect`). An Ibis PySpark backend
        (``ibis.pyspark.connect(spark_session)``) reads the files with Spark and finds
        ``uri: "pyspark://"`` tables in that session's catalog.
    quarantine_dir:
        Folder for ``<data set>.parquet`` quarantine files (created if needed; a file
        is written, or overwritten, only for a data set with quarantined rows; nothing
        is ever deleted). None: no files; the rows stay available through
        :meth:`PilotData.quarantined`.
    overrides:
        Data set name -> source to use instead of the pilot file's entry (a pandas
        DataFrame, an Ibis table or a path); for notebooks and tests.

    Returns
    -------
    PilotData
        Valid rows per data set; counts per data set and rule in ``checks``.

    Notes
    -----
    Each data set costs one pass over its source: on DuckDB the checked rows are
    written once to a temporary table, the rule counts come from one GROUP BY on
    it, and the valid and quarantined rows become temporary tables of their own,
    so later queries never recompute the window functions of the duplicate-key
    rules. Nothing is pulled into Python but the counts.

    Raises
    ------
    PilotFileError, DataSourceError, ContractError
        A bad pilot file, an unreadable source, a missing required column.
    """
    if not isinstance(pilot, Pilot):
        pilot = load_pilot(pilot)
    con = con if con is not None else connect()
    out_dir = Path(quarantine_dir) if quarantine_dir is not None else None
    overrides = overrides or {}
    data = PilotData(pilot=pilot, con=con)
    traced_calls = None  # tool_calls built from a trace decision log's execute_tool spans
    for name in DATASET_NAMES:
        if name in overrides:
            src = overrides[name]
            raw = open_source(
                src, con, base_dir=pilot.folder, label=name, text_columns=contract_columns(name)
            )
            shown = describe_source(src)
        elif name in pilot.datasets and pilot.datasets[name].format in TRACE_FORMATS:
            from pilot_lib.ingest.traces import open_trace_decisions

            built = open_trace_decisions(pilot, con, name)
            raw, traced_calls = built.decisions, built.tool_calls
            shown = describe_source(pilot.datasets[name])
        elif name == "tool_calls" and name not in pilot.datasets and traced_calls is not None:
            # as in the evidence store: no tool_calls data set named, the spans give it
            raw = traced_calls
            shown = f"execute_tool spans of {describe_source(pilot.datasets['decisions'])}"
        elif name in pilot.datasets:
            raw = open_dataset(pilot, name, con, text_columns=contract_columns(name))
            shown = describe_source(pilot.datasets[name])
        else:
            continue
        check, valid, quarantined = _check_one(name, raw, pilot, shown, out_dir)
        data.checks[name] = check
        data._valid[name] = valid
        data._quarantined[name] = quarantined
    return data


# ---- the validate command ------------------------------------------------------------------


@dataclass
class ValidationReport:
    """What ``pilot-workbook validate`` prints: counts per data set and per rule."""

    pilot_name: str
    pilot_path: Path
    data: PilotData
    quarantine_dir: Path

    def to_text(self) -> str:
        """A short plain-text report (fixed-width table, rule counts, quarantine files)."""
        lines = [f"pilot {self.pilot_name} ({self.pilot_path})", ""]
        lines += _text_table(self.data.report())
        lines += _trace_lines(getattr(self.data, "manifest", None))
        lines += _coverage_lines(self.data)
        summary = self.data.quarantine_summary()
        lines.append("")
        if summary.empty:
            lines.append("no rows quarantined: every row meets its contract")
            if any(line.startswith("  span quarantine file:") for line in lines):
                lines.append(f"(quarantined spans: see above; folder {self.quarantine_dir})")
            return "\n".join(lines)
        lines.append("quarantined rows by rule:")
        lines += ["  " + ln for ln in _text_table(summary)]
        files = [c.quarantine_path for c in self.data.checks.values() if c.quarantine_path]
        lines.append("")
        lines.append(f"quarantine files ({self.quarantine_dir}):")
        lines += [f"  {p.name}" for p in files]
        return "\n".join(lines)


def _coverage_lines(data: PilotData) -> list[str]:
    """The data-coverage line, the flagged rows, and each data-sufficiency finding."""
    from pilot_lib.analysis.coverage import data_coverage

    coverage = data_coverage(data.pilot, data)
    lines = ["", coverage.line()]
    flags = data.flag_summary()
    if not flags.empty:
        lines.append("flagged rows (kept and used, counted):")
        lines += ["  " + ln for ln in _text_table(flags)]
    lines += [f"  {f.severity}: {f.message}" for f in coverage.findings if f.code != "flagged_rows"]
    lines += [f"  {f.severity}: {f.message}" for f in coverage.findings if f.code == "flagged_rows"]
    return lines


def _trace_lines(manifest: dict[str, Any] | None) -> list[str]:
    """Report lines for data sets built from traces: the reconciliation and span quarantine."""
    lines: list[str] = []
    for name, entry in ((manifest or {}).get("datasets") or {}).items():
        traces = entry.get("traces")
        if not traces:
            continue
        lines += ["", f"{name} built from {traces['format']} traces: {traces['summary']}"]
        by_rule = traces["reconciliation"].get("quarantined_by_rule") or {}
        lines += [f"  quarantined spans, {rule}: {n}" for rule, n in by_rule.items()]
        if traces.get("span_quarantine_file"):
            lines.append(
                f"  span quarantine file: {Path(traces['span_quarantine_file']).name} "
                "(with the other quarantine files)"
            )
        lines += [f"  note: {note}" for note in traces.get("notes") or []]
    return lines


def _text_table(frame: pd.DataFrame) -> list[str]:
    """Fixed-width lines: text columns left-aligned, numbers right-aligned."""
    cells = [[str(v) for v in frame[c]] for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    widths = [
        max([len(str(c)), *map(len, col)]) for c, col in zip(frame.columns, cells, strict=True)
    ]

    def fmt(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt([str(c) for c in frame.columns])]
    lines += [fmt([col[i] for col in cells]) for i in range(len(frame))]
    return lines

"""The normalised span table every trace reader returns, and helpers the readers share.

A trace reader (``otel``, ``openinference``, ``langfuse``) turns one export format
into a lazy Ibis table with exactly the columns of :data:`SPAN_COLUMNS`, in that
order and with those types (:func:`conform_spans` enforces both). The decision
builder (:mod:`pilot_lib.ingest.traces.decisions`) only ever sees that table.

Conventions every reader follows:

- ids are lowercase hex text (OTel: 32 characters for a trace id, 16 for a span
  id); a missing id is NULL (never an empty string), so the span is quarantined
  (``span without trace_id`` / ``span without span_id``).
- ``parent_span_id`` is NULL for a root span (an empty or all-zero id counts as none).
- ``start_time`` / ``end_time`` are naive UTC timestamps, microsecond precision.
- ``status`` is ``"ok"``, ``"error"`` or ``"unset"``.
- ``operation`` is the normalised span kind: ``"invoke_agent"``, ``"chat"``,
  ``"execute_tool"``, another text, or NULL.
- ``attributes`` maps every span attribute name to its value as text (booleans
  ``"true"``/``"false"``, numbers as written, arrays and maps as JSON text). The
  business signals (:data:`PILOT_SIGNALS`, ``pilot.<name>``) found in span events,
  evaluation results, annotations or scores are merged in under the same
  ``pilot.<name>`` keys; a span attribute of the same name wins.
- an attribute whose value the reader cannot parse is recorded under the key
  :data:`UNPARSEABLE_KEY` (value: the attribute's name); the span is quarantined
  with rule ``unparseable attribute``.
- ``source_file`` / ``source_row`` say where the span came from (1-based line or
  row number), for the quarantine file.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import ibis
import ibis.expr.datatypes as idt
import ibis.expr.types as ir

from pilot_lib.errors import ContractError, DataSourceError

__all__ = [
    "OPERATIONS",
    "PILOT_SIGNALS",
    "REMOTE_PARENT_KEY",
    "SPAN_COLUMNS",
    "SPAN_SCHEMA",
    "STATUSES",
    "UNPARSEABLE_KEY",
    "conform_spans",
    "expand_paths",
]

#: The normalised span table: column -> Ibis type, in this order.
SPAN_COLUMNS: dict[str, idt.DataType] = {
    "trace_id": idt.String(),
    "span_id": idt.String(),
    "parent_span_id": idt.String(),
    "name": idt.String(),
    "start_time": idt.Timestamp(scale=6),
    "end_time": idt.Timestamp(scale=6),
    "status": idt.String(),
    "status_message": idt.String(),
    "operation": idt.String(),
    "attributes": idt.Map(idt.String(), idt.String()),
    "source_file": idt.String(),
    "source_row": idt.Int64(),
}

#: The same columns as an Ibis schema.
SPAN_SCHEMA = ibis.schema(SPAN_COLUMNS)

#: Values of the ``status`` column.
STATUSES: tuple[str, ...] = ("ok", "error", "unset")

#: The normalised operations the decision builder looks at.
OPERATIONS: tuple[str, ...] = ("invoke_agent", "chat", "execute_tool")

#: Business signals of the ``pilot.*`` vocabulary (attribute key ``pilot.<name>``).
PILOT_SIGNALS: tuple[str, ...] = (
    "decision_id",
    "case_id",
    "workflow",
    "user_id",
    "prompt_version",
    "agent_id",
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

#: Attribute key under which a reader records the name of an attribute it could not parse.
UNPARSEABLE_KEY = "pilot._unparseable"

#: Attribute key (value ``true``) a reader sets on a span whose parent is remote: OTLP
#: span ``flags`` with bits 0x100 (remoteness known) and 0x200 (remote) both set.
REMOTE_PARENT_KEY = "pilot._parent_remote"


def conform_spans(table: ir.Table, label: str = "decisions") -> ir.Table:
    """Select :data:`SPAN_COLUMNS` from ``table`` in order, cast to their types.

    Extra columns are dropped. Casts are plain ``cast`` (a reader is expected to
    deliver the right types already; this makes small differences such as
    ``timestamp(3)`` vs ``timestamp(6)`` disappear).

    Raises
    ------
    ContractError
        A column of the normalised table is missing (a reader bug, or an export
        without that field); the message names the data set and the columns.
    """
    missing = [c for c in SPAN_COLUMNS if c not in table.columns]
    if missing:
        raise ContractError(
            f"data set {label!r}: the trace reader produced no column(s) {missing}; "
            f"a normalised span table needs {list(SPAN_COLUMNS)}"
        )
    return table.select(
        [
            table[c] if table[c].type() == t else table[c].cast(t).name(c)
            for c, t in SPAN_COLUMNS.items()
        ]
    )


def expand_paths(paths: str | Path | Sequence[str | Path], label: str = "decisions") -> list[Path]:
    """The files ``paths`` names: globs expanded (recursive ``**`` allowed), a folder
    replaced by every (non-hidden) file below it, sorted, deduplicated.

    Raises
    ------
    DataSourceError
        A path or glob matches no file; the message names the data set and the path.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise DataSourceError(
                    f"data set {label!r}: no file matches {text}; check datasets.{label}.path "
                    "(paths are relative to the pilot file's folder)"
                )
            found.extend(Path(m) for m in matches)
        elif Path(text).is_dir():
            # a folder: every file below it, hidden ones left out
            inside = sorted(
                p
                for p in Path(text).rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:])
            )
            if not inside:
                raise DataSourceError(
                    f"data set {label!r}: the folder {text} holds no trace file; check "
                    f"datasets.{label}.path"
                )
            found.extend(inside)
        else:
            if not Path(text).is_file():
                raise DataSourceError(
                    f"data set {label!r}: no trace file at {text}; check datasets.{label}.path "
                    "(paths are relative to the pilot file's folder)"
                )
            found.append(Path(text))
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique

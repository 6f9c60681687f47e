"""Agent traces as the decision log: OTLP (OpenTelemetry GenAI), OpenInference, Langfuse.

Two stages, both lazy Ibis expressions executed in the engine:

1. :func:`read_spans` reads one export format into the normalised span table
   (:data:`~pilot_lib.ingest.traces.spans.SPAN_COLUMNS`). Each format lives in
   its own module (``otel``, ``openinference``, ``langfuse``) exposing
   ``read_spans(con, paths: list[Path], label: str) -> ir.Table``; the module is
   imported only when its format is used.
2. :func:`~pilot_lib.ingest.traces.decisions.spans_to_decisions` turns the spans
   (and an optional outcomes table) into the 25-column decision log of the
   ``decisions`` contract, plus the quarantined spans and the reconciliation counts.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
from ibis.backends import BaseBackend

from pilot_lib.config import TRACE_FORMATS, Pilot
from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.traces.spans import (
    PILOT_SIGNALS,
    SPAN_COLUMNS,
    SPAN_SCHEMA,
    UNPARSEABLE_KEY,
    conform_spans,
    expand_paths,
)

__all__ = [
    "PILOT_SIGNALS",
    "SPAN_COLUMNS",
    "SPAN_SCHEMA",
    "TRACE_FORMATS",
    "UNPARSEABLE_KEY",
    "conform_spans",
    "expand_paths",
    "open_trace_decisions",
    "read_spans",
    "spans_to_decisions",
]


def read_spans(
    con: BaseBackend,
    paths: str | Path | Sequence[str | Path],
    fmt: str,
    label: str = "decisions",
) -> ir.Table:
    """Read trace files of format ``fmt`` into the normalised span table (lazy).

    Parameters
    ----------
    con:
        The Ibis connection the files are read on (DuckDB; the readers use its
        JSON and Parquet readers).
    paths:
        A file, a glob (``traces/*.jsonl``, ``**`` allowed) or a list of them.
    fmt:
        One of :data:`TRACE_FORMATS`.
    label:
        The data set's name, for error messages.

    Raises
    ------
    DataSourceError
        Unknown format, no matching file, or a file the reader cannot parse; the
        message names the data set, the file and the fix.
    """
    if fmt not in TRACE_FORMATS:
        raise DataSourceError(
            f"data set {label!r}: unknown trace format {fmt!r}; "
            f"set datasets.{label}.format to one of {list(TRACE_FORMATS)}"
        )
    files = expand_paths(paths, label)
    module = importlib.import_module(f"pilot_lib.ingest.traces.{fmt}")
    spans = module.read_spans(con, files, label=label)
    if fmt == "otel":
        spans = _map_sdk_spans(con, spans, label)
    return conform_spans(spans, label)


#: An attribute that marks spans of an SDK with its own conventions, and its module.
_SDK_MARKERS = (
    ("openinference.span.kind", "openinference"),
    ("langfuse.observation.type", "langfuse"),
)


def _map_sdk_spans(con: BaseBackend, spans: ir.Table, label: str) -> ir.Table:
    """OTLP spans written by the OpenInference or Langfuse SDKs, mapped like their exports.

    A ``format: otel`` file may hold spans of an app instrumented with OpenInference
    (Arize Phoenix) or the Langfuse SDK: they carry no ``gen_ai.operation.name``, so
    without this no decision span would be found. Each mapping runs only when some
    span carries its marker attribute (a scan that stops at the first one), and
    leaves other spans unchanged.
    """
    for marker, name in _SDK_MARKERS:
        if int(spans.filter(spans.attributes.contains(marker)).limit(1).count().execute()):
            module = importlib.import_module(f"pilot_lib.ingest.traces.{name}")
            spans = module.from_otlp(con, spans, label=label)
    return spans


def spans_to_decisions(*args: Any, **kwargs: Any) -> Any:
    """See :func:`pilot_lib.ingest.traces.decisions.spans_to_decisions` (imported lazily)."""
    from pilot_lib.ingest.traces.decisions import spans_to_decisions as build

    return build(*args, **kwargs)


def open_trace_decisions(pilot: Pilot, con: BaseBackend, label: str = "decisions") -> Any:
    """Build data set ``label`` of ``pilot`` from its trace files (format in the pilot file).

    Reads the spans (:func:`read_spans`), opens ``datasets.outcomes`` when the pilot
    file names it, and runs
    :func:`~pilot_lib.ingest.traces.decisions.spans_to_decisions` with the
    ``traces:`` settings and the drift features.

    Returns
    -------
    TraceDecisions
        The decision log (lazy; the contract still has to check it), the span
        quarantine and the reconciliation.

    Raises
    ------
    DataSourceError, ContractError
        A trace file or the outcomes cannot be read, or the outcomes lack their key.
    """
    from pilot_lib.ingest.sources import open_dataset
    from pilot_lib.ingest.traces.decisions import spans_to_decisions as build

    source = pilot.datasets[label]
    if source.format not in TRACE_FORMATS or not source.path:
        raise DataSourceError(
            f"data set {label!r}: not a trace source; set datasets.{label}.format to one of "
            f"{list(TRACE_FORMATS)} and give its path"
        )
    spans = read_spans(con, str(pilot.resolve(source.path)), source.format, label)
    settings = pilot.traces
    outcomes = None
    if "outcomes" in pilot.datasets:
        outcomes = open_dataset(pilot, "outcomes", con, text_columns=("trace_id", "case_id"))
    return build(
        spans,
        decision_span=settings.decision_span if settings else None,
        prices=settings.prices if settings else None,
        outcomes=outcomes,
        outcomes_key=settings.outcomes_key if settings else "trace_id",
        features=list(pilot.drift.features),
        label=label,
    )

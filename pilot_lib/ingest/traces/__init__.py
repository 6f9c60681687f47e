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

import datetime as dt
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
    "scan_files",
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
    scans = scan_files(files, label)  # every compressed file whole: damage is an error
    module = importlib.import_module(f"pilot_lib.ingest.traces.{fmt}")
    spans = module.read_spans(con, files, label=label)
    if fmt == "otel":
        spans = _map_sdk_spans(con, spans, label)
    return conform_spans(_physical_lines(spans, scans), label)


def scan_files(files: Sequence[str | Path], label: str = "decisions") -> list[Any]:
    """:func:`~pilot_lib.ingest.traces._tables.scan_file` of every JSON Lines file
    (Parquet files carry their own row count and checksums)."""
    from pilot_lib.ingest.traces._tables import file_format, scan_file

    return [scan_file(f, label) for f in files if file_format(f) != "parquet"]


def _physical_lines(spans: ir.Table, scans: Sequence[Any]) -> ir.Table:
    """``source_row`` as the file's physical line: DuckDB's JSON reader skips blank
    lines, so record ``k`` of a file is line ``k`` + the blank lines before it.

    With ``q_j`` = records before blank line ``j`` (its line number less ``j``), record
    ``k`` follows blank ``j`` exactly when ``q_j < k``. Only files with blank lines
    are corrected (a small in-memory table of them).
    """
    import ibis

    rows = [
        (scan.path, line - j) for scan in scans for j, line in enumerate(scan.blank_lines, start=1)
    ]
    if not rows:
        return spans
    blanks = ibis.memtable(
        {"_bf": [r[0] for r in rows], "_bq": [r[1] for r in rows]},
        schema={"_bf": "string", "_bq": "int64"},
    )
    pairs = spans.select(_pf=spans.source_file, _pr=spans.source_row).distinct()
    j = pairs.left_join(blanks, [pairs._pf == blanks._bf, blanks._bq < pairs._pr])
    shift = j.group_by([j._pf, j._pr]).aggregate(_shift=j._bq.count())
    out = spans.left_join(shift, [spans.source_file == shift._pf, spans.source_row == shift._pr])
    return (
        out.select(spans, _shift=out._shift)
        .mutate(source_row=lambda t: t.source_row + t._shift.fill_null(0))
        .drop("_shift")
    )


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
        decision_level=settings.decision_level if settings else "agent",
        defaults={
            "workflow": settings.workflow,
            "agent_id": settings.agent_id,
            "prompt_version": settings.prompt_version,
            "business_unit": settings.business_unit,
        }
        if settings
        else None,
        max_tokens=settings.max_tokens_per_decision if settings else 10_000_000,
        max_cost_usd=settings.max_cost_per_decision_usd if settings else 1000.0,
        window=span_window(pilot),
        files=scan_files(expand_paths(str(pilot.resolve(source.path)), label), label),
    )


#: Days before the baseline window and after the pilot window in which a span may lie.
SPAN_WINDOW_MARGIN_DAYS = 31


def span_window(pilot: Pilot) -> tuple[dt.datetime, dt.datetime]:
    """The times a span of this pilot may have (naive UTC): from 31 days before the
    baseline (or pilot) window starts to 31 days after the pilot window ends. A span
    outside (a tool call "in 1970" from a zero timestamp, a clock years ahead) is
    quarantined, ``span time outside the pilot window``."""
    start = min(pilot.baseline_window.start, pilot.pilot_window.start)
    margin = dt.timedelta(days=SPAN_WINDOW_MARGIN_DAYS)
    lo = dt.datetime.combine(start, dt.time()) - margin
    hi = dt.datetime.combine(pilot.pilot_window.end, dt.time()) + dt.timedelta(days=1) + margin
    return lo, hi

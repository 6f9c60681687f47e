"""Count the scans of log-size tables that a computation makes (DuckDB only).

A *scan* is one reference to a store table in a statement the engine runs, with common
table expressions expanded (a CTE that reads the decision log and is used twice is two
scans). The count is read from the SQL text, not timed, so it is the same on any machine
however busy: ``tests/test_scan_budget.py`` holds the number each phase may make, and
``benchmarks/bench_run.py`` prints it per section beside the seconds.

Usage::

    with count_scans(data) as log:
        kpi_phase(pilot, data)
    log.scans()            # {"decisions": 3, "tool_calls": 1, ...}
    log.by_label()         # per label set with log.label("integration_health")
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

__all__ = ["LOG_SIZE_DATASETS", "ScanLog", "count_scans", "scans_in"]

#: Data sets that grow with the number of decisions; scanning one is what a run pays for.
LOG_SIZE_DATASETS = ("decisions", "tool_calls", "cases")


def scans_in(sql: str, tables: dict[str, str]) -> Counter[str]:
    """Scans per data set in one statement: references to ``tables`` (view name -> data
    set), each CTE's references counted once per use of the CTE. Unparseable SQL falls
    back to counting the names in the text."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:  # a statement sqlglot cannot read: count the names in the text
        return Counter({ds: sql.count(f'"{name}"') for name, ds in tables.items() if name in sql})
    ctes: dict[str, exp.Expression] = {}
    for cte in tree.find_all(exp.CTE):
        ctes[cte.alias_or_name] = cte.this
    memo: dict[str, Counter[str]] = {}

    def count(node: exp.Expression, skip_ctes: bool) -> Counter[str]:
        out: Counter[str] = Counter()
        for table in node.find_all(exp.Table):
            if skip_ctes and any(isinstance(p, exp.CTE) for p in _parents(table, node)):
                continue
            name = table.name
            if name in tables:
                out[tables[name]] += 1
            elif name in ctes:
                if name not in memo:
                    memo[name] = Counter()  # a recursive CTE counts its base once
                    memo[name] = count(ctes[name], skip_ctes=False)
                out.update(memo[name])
        return out

    return count(tree, skip_ctes=True)


def _parents(node: exp.Expression, top: exp.Expression) -> Iterator[exp.Expression]:
    parent = node.parent
    while parent is not None and parent is not top:
        yield parent
        parent = parent.parent


@dataclass
class ScanLog:
    """The statements run while counting: (label, data set scans, seconds). The seconds are
    the time to plan (and, for DDL and ``execute``, run) a statement; a lazy relation's rows
    are read later, so per-section wall time is the figure to time sections by."""

    tables: dict[str, str]
    entries: list[tuple[str, Counter[str], float]] = field(default_factory=list)
    _label: str = "-"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextlib.contextmanager
    def label(self, name: str) -> Iterator[None]:
        """Attribute the statements run inside to ``name`` (a section key)."""
        before, self._label = self._label, name
        try:
            yield
        finally:
            self._label = before

    def record(self, sql: str, seconds: float) -> None:
        scans = scans_in(sql, self.tables) if self.tables else Counter()
        with self._lock:
            self.entries.append((self._label, scans, seconds))

    def scans(self) -> dict[str, int]:
        """Scans per log-size data set, every data set named (0 when unscanned)."""
        total: Counter[str] = Counter()
        for _, scans, _ in self.entries:
            total.update(scans)
        return {name: total[name] for name in sorted(set(self.tables.values()))}

    def by_label(self) -> dict[str, dict[str, Any]]:
        """Per label: statements, scans per data set and seconds (engine time)."""
        out: dict[str, dict[str, Any]] = {}
        for label, scans, seconds in self.entries:
            row = out.setdefault(label, {"statements": 0, "scans": Counter(), "seconds": 0.0})
            row["statements"] += 1
            row["scans"].update(scans)
            row["seconds"] += seconds
        return out


class _Recording:
    """A DuckDB connection that records each statement it runs (everything else forwarded)."""

    def __init__(self, inner: Any, log: ScanLog) -> None:
        self._inner = inner
        self._log = log

    def _run(self, method: str, query: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = getattr(self._inner, method)(query, *args, **kwargs)
        finally:
            if isinstance(query, str):
                self._log.record(query, time.perf_counter() - started)
        # DuckDB's execute returns the connection itself, and Ibis runs the next statement
        # on what it returned (create_table's INSERT): keep recording there too
        return self if result is self._inner else result

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run("execute", query, *args, **kwargs)

    def sql(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run("sql", query, *args, **kwargs)

    def query(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run("query", query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def log_size_tables(data: Any) -> dict[str, str]:
    """View name -> data set for the log-size tables of ``data`` (a PilotData)."""
    out: dict[str, str] = {}
    for name in LOG_SIZE_DATASETS:
        table = data._valid.get(name)
        if table is None:
            continue
        for op in table.op().find_below(_database_table()):
            # a store that views its input reads the rows it set aside beside it: that
            # small file is not a scan of the log
            if not _reads_excluded(data.con, op.name):
                out[op.name] = name
    return out


def _reads_excluded(backend: Any, view: str) -> bool:
    try:
        rows = backend.con.execute(
            "SELECT sql FROM duckdb_views() WHERE view_name = ?", [view]
        ).fetchall()
    except Exception:  # not DuckDB, or no such catalog function: count it
        return False
    return any(".excluded.parquet" in (sql or "") for (sql,) in rows)


def _database_table() -> type:
    import ibis.expr.operations as ops

    return ops.DatabaseTable


@contextlib.contextmanager
def count_scans(data: Any) -> Iterator[ScanLog]:
    """Record every statement run on ``data.con`` (DuckDB) inside the block."""
    backend = data.con
    if getattr(backend, "name", None) != "duckdb":
        raise ValueError(f"scans are counted on DuckDB only, not {backend.name!r}")
    log = ScanLog(tables=log_size_tables(data))
    inner = backend.con
    backend.con = _Recording(inner, log)
    try:
        yield log
    finally:
        backend.con = inner

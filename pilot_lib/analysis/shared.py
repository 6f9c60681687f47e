"""Shared aggregates: what several sections read of a log-size data set, computed once.

A section never groups the raw tool calls on its own: it asks :func:`shared` for the
aggregate it needs by name. Each aggregate is declared once in :data:`AGGREGATES`
(a function of the pilot and its data returning a lazy engine table) and computed at most
once per store:

- a batch run computes every aggregate right after the checked store is built
  (:func:`write_aggregates`: Parquet files in ``<store>/aggregates/`` listed in the
  manifest), so phases 2 and 4, in their own kernels, read the same file;
- a store without them (an older store, a notebook on an in-memory check) computes an
  aggregate the first time a section asks, into a temporary table of the connection.

Adding an aggregate is one function and one line in :data:`AGGREGATES`; the scan budget
(``tests/test_scan_budget.py``) counts the scans of the log-size tables per phase, so an
aggregate that replaces a section's own scans shows there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ibis.expr.types as ir

from pilot_lib.config import Pilot

__all__ = ["AGGREGATES", "shared", "tool_calls_by_decision_tool", "write_aggregates"]

#: Folder of the aggregate files inside a store, and the manifest key that lists them.
FOLDER = "aggregates"


def tool_calls_by_decision_tool(pilot: Pilot, data: Any) -> ir.Table | None:
    """Per decision, system and tool: attempts in all, attempts in the pilot window, and
    attempts answered ``ok``. Integration health reads which calls need ordering (more than
    one attempt in the window); the audit trail whether every tool a decision called
    answered. None without a ``tool_calls`` data set."""
    calls = data.table("tool_calls") if data is not None else None
    if calls is None:
        return None
    start, end = pilot.pilot_window.start_ts, pilot.pilot_window.end_ts
    in_window = (calls.started_at >= start) & (calls.started_at < end)
    return calls.group_by(
        decision_id=calls.decision_id, system=calls.system, tool=calls.tool
    ).aggregate(
        attempts=calls.count(),
        attempts_in_window=calls.count(where=in_window),
        ok=calls.count(where=calls.status == "ok"),
    )


#: name -> builder ``(pilot, data) -> lazy table | None``.
AGGREGATES: dict[str, Callable[[Pilot, Any], ir.Table | None]] = {
    "tool_calls_by_decision_tool": tool_calls_by_decision_tool,
}


def shared(data: Any, name: str) -> ir.Table | None:
    """The aggregate ``name`` of ``data`` (a PilotData): the store's file when the run wrote
    it, else computed now in the engine and kept for the connection's lifetime."""
    if name not in AGGREGATES:
        raise KeyError(f"unknown shared aggregate {name!r}; known: {sorted(AGGREGATES)}")
    cache = data.__dict__.setdefault("_shared", {})
    if name in cache:
        return cache[name]
    table = _stored(data, name)
    if table is None:
        expr = AGGREGATES[name](data.pilot, data)
        if expr is not None:
            from pilot_lib.ingest.engine import materialize

            table = materialize(expr, name)
    cache[name] = table
    return table


def _stored(data: Any, name: str) -> ir.Table | None:
    manifest = getattr(data, "manifest", None) or {}
    entry = (manifest.get(FOLDER) or {}).get(name)
    store_dir = getattr(data, "store_dir", None)
    if not entry or store_dir is None:
        return None
    path = Path(store_dir) / entry["file"]
    if not path.exists():
        return None
    return data.con.read_parquet(str(path))


def write_aggregates(store_dir: str | Path, data: Any) -> dict[str, dict[str, Any]]:
    """Compute every aggregate of ``data`` (opened from ``store_dir``) once and write it to
    ``<store_dir>/aggregates/<name>.parquet``, listing them in the manifest (DuckDB; on
    another engine the sections compute them in their own session). Returns the entries."""
    store_dir = Path(store_dir)
    if data.con.name != "duckdb":
        return {}
    folder = store_dir / FOLDER
    folder.mkdir(exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    for name, build in AGGREGATES.items():
        expr = build(data.pilot, data)
        if expr is None:
            continue
        path = folder / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        data.con.to_parquet(expr, str(tmp))
        os.replace(tmp, path)
        rows = int(data.con.read_parquet(str(path)).count().execute())
        entries[name] = {"file": f"{FOLDER}/{path.name}", "rows": rows}
    manifest_path = store_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest[FOLDER] = entries
    tmp = manifest_path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return entries

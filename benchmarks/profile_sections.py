"""Per section of every phase: statements, scans of log-size tables and engine seconds.

Usage (from the repository root; a store built by ``pilot-workbook validate``)::

    python benchmarks/profile_sections.py PILOT_FOLDER STORE_DIR

Scans are counted from the SQL (``pilot_lib.ingest.scans``): the same on any machine.
Seconds are wall-clock engine time per statement and move with the machine's load.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pilot_lib import phases
from pilot_lib.config import load_pilot
from pilot_lib.ingest.scans import count_scans
from pilot_lib.ingest.store import open_store


def profile(pilot_dir: str, store_dir: str) -> dict[str, Any]:
    pilot = load_pilot(pilot_dir)
    data = open_store(store_dir, pilot)
    original = phases.phase_sections
    out: dict[str, Any] = {}
    with count_scans(data) as log:

        def labelled(phase: str, pilot: Any, data: Any) -> dict[str, Any]:
            result = {}
            for key, target in phases.PHASE_SECTIONS.get(phase, ()):
                module, _, name = target.partition(":")
                import importlib

                fn = getattr(importlib.import_module(module), name)
                with log.label(f"{phase}:{key}"):
                    started, cpu = time.perf_counter(), time.process_time()
                    section = fn(pilot, data)
                    out[f"{phase}:{key}"] = (
                        time.perf_counter() - started,
                        time.process_time() - cpu,
                    )
                if section is not None:
                    result[key] = section
            return result

        phases.phase_sections = labelled
        try:
            for phase, fn in phases._COMPUTE.items():
                with log.label(f"{phase}:main"):
                    started, cpu = time.perf_counter(), time.process_time()
                    fn(pilot, data).to_result()
                    out[f"{phase}:total"] = (
                        time.perf_counter() - started,
                        time.process_time() - cpu,
                    )
        finally:
            phases.phase_sections = original
    return {"wall": out, "log": log}


def main() -> None:
    result = profile(sys.argv[1], sys.argv[2])
    log = result["log"]
    print(f"{'label':<48} {'stmts':>5} {'secs':>7}  scans")
    for label, row in log.by_label().items():
        scans = ", ".join(f"{k} {v}" for k, v in sorted(row["scans"].items()) if v)
        print(f"{label:<48} {row['statements']:>5} {row['seconds']:>7.2f}  {scans}")
    print("total scans:", log.scans())
    print(f"{'section':<48} {'wall s':>7} {'cpu s':>7}")
    for k, (wall, cpu) in result["wall"].items():
        print(f"{k:<48} {wall:7.2f} {cpu:7.2f}")


if __name__ == "__main__":
    main()

"""The scan budget: how often each phase reads a log-size table (decisions, tool calls,
cases), counted from the SQL the engine runs, not timed.

A run costs what its data costs only while every section reads the shared aggregates
(``pilot_lib.analysis.shared``) instead of scanning the log again. This test runs the
four computing phases of a generated pilot against its checked store (aggregates written
as a batch run writes them) and compares the scans per phase with :data:`BUDGET`. A change
that adds a scan fails here; lower the number when a change removes one, and raise it only
on purpose, saying why in the commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pilot_lib import phases
from pilot_lib.analysis.shared import write_aggregates
from pilot_lib.config import load_pilot
from pilot_lib.ingest.scans import count_scans, scans_in
from pilot_lib.ingest.store import build_store, open_store
from pilot_lib.synth import generate_pilot

#: Scans of each log-size table per phase (claims-auto, every data set).
BUDGET: dict[str, dict[str, int]] = {
    "use_case_scoring": {"cases": 0, "decisions": 0, "tool_calls": 0},
    "kpi_baselining": {"cases": 6, "decisions": 19, "tool_calls": 2},
    "drift_analysis": {"cases": 0, "decisions": 24, "tool_calls": 0},
    "incident_drill_review": {"cases": 0, "decisions": 2, "tool_calls": 0},
}


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    root = tmp_path_factory.mktemp("scan-budget")
    folder = generate_pilot("claims-auto", root, rows=2000, seed=5)
    pilot = load_pilot(folder)
    store = root / "store"
    build_store(pilot, store)
    write_aggregates(store, open_store(store, pilot))
    data = open_store(store, pilot)
    out = {}
    for phase, compute in phases._COMPUTE.items():
        with count_scans(data) as log:
            compute(pilot, data).to_result()
        out[phase] = log.scans()
    return out


@pytest.mark.parametrize("phase", list(BUDGET))
def test_no_phase_scans_the_log_more_than_its_budget(
    counted: dict[str, dict[str, int]], phase: str
) -> None:
    assert counted[phase] == BUDGET[phase], (
        f"{phase} now scans {counted[phase]}, its budget is {BUDGET[phase]}: read a shared "
        "aggregate (pilot_lib/analysis/shared.py) instead of the log, or lower the budget "
        "if a scan went away"
    )


def test_the_integration_and_audit_sections_group_the_tool_calls_not_once_each(
    counted: dict[str, dict[str, int]],
) -> None:
    # the tool calls are grouped once per store (the shared aggregate); integration health
    # (phase 2) reads them to order the attempts of calls tried more than once (once for
    # those tried once, once for the others); the audit trail (phase 4) only the aggregate
    assert counted["incident_drill_review"]["tool_calls"] == 0
    assert counted["kpi_baselining"]["tool_calls"] == 2


def test_a_cte_used_twice_counts_twice_and_a_name_in_a_string_does_not() -> None:
    tables = {"log": "decisions"}
    sql = 'WITH t AS (SELECT * FROM "log") SELECT * FROM t JOIN t AS u ON TRUE'
    assert scans_in(sql, tables) == {"decisions": 2}
    assert scans_in("SELECT 'log' AS x", tables) == {}
    assert scans_in('SELECT * FROM "log" UNION ALL SELECT * FROM "log"', tables) == {"decisions": 2}


def test_without_the_stored_aggregates_a_section_computes_them_once(tmp_path: Path) -> None:
    folder = generate_pilot("claims-auto", tmp_path, rows=1000, seed=3)
    pilot = load_pilot(folder)
    build_store(pilot, tmp_path / "store")
    data = open_store(tmp_path / "store", pilot)
    with count_scans(data) as log:
        phases.incident_phase(pilot, data)
        phases.kpi_phase(pilot, data)
    # integration health's two reads plus the aggregate's one build, shared by both phases
    assert log.scans()["tool_calls"] == 3


def test_a_kernel_without_the_files_gives_the_same_results(tmp_path: Path) -> None:
    from pilot_lib.results import to_jsonable

    folder = generate_pilot("claims-auto", tmp_path, rows=1000, seed=3)
    pilot = load_pilot(folder)
    store = tmp_path / "store"
    build_store(pilot, store)
    computed = open_store(store, pilot)  # no aggregate files yet: computed in the kernel
    without = [to_jsonable(f(pilot, computed).to_result()) for f in phases._COMPUTE.values()]
    write_aggregates(store, open_store(store, pilot))
    read = open_store(store, pilot)
    assert read.manifest["aggregates"]
    with_files = [to_jsonable(f(pilot, read).to_result()) for f in phases._COMPUTE.values()]
    assert with_files == without

"""The shared aggregates give the figures the direct section queries gave.

``tests/data/aggregates-reference/claims-auto-200k.json`` holds the cost attribution,
integration health and audit trail of a generated 200,000-decision claims-auto pilot
(every data set, seed 19) as the sections computed them before the shared aggregates,
each grouping the log for itself (commit 8f2b941, recorded once). This test computes the
same sections now, through the aggregate files a batch run writes, and compares every
figure to 1e-9 relative (``tests/test_scan_budget.py`` checks that a kernel computing the
aggregates itself gives the same results as one reading the files). Findings are left out:
what a finding concludes is the gate's business (and issue 22 moves some on purpose);
the figures they rest on are all compared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_figures_unchanged import _leaves as figure_leaves

from pilot_lib import phases
from pilot_lib.analysis.shared import write_aggregates
from pilot_lib.config import load_pilot
from pilot_lib.ingest.store import build_store, open_store
from pilot_lib.results import to_jsonable
from pilot_lib.synth import generate_pilot

REFERENCE = Path(__file__).parent / "data" / "aggregates-reference" / "claims-auto-200k.json"


def _leaves(value: Any) -> dict[str, Any]:
    """Every figure by its path, findings left out (test_figures_unchanged's walk)."""
    return {path: v for path, v in figure_leaves(value).items() if "/findings" not in path}


@pytest.fixture(scope="module")
def pilot_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("agg-200k")
    folder = generate_pilot("claims-auto", root, rows=200_000, seed=19)
    pilot = load_pilot(folder)
    build_store(pilot, root / "store")
    return pilot, root / "store"


@pytest.mark.slow
def test_sections_through_the_aggregates_match_the_direct_queries(
    pilot_store: tuple[Any, Path],
) -> None:
    pilot, store = pilot_store
    write_aggregates(store, open_store(store, pilot))  # as a batch run does
    data = open_store(store, pilot)
    kpi = phases.kpi_phase(pilot, data).to_result()
    incident = phases.incident_phase(pilot, data).to_result()
    now = to_jsonable(
        {
            "cost_attribution": kpi.get("cost_attribution"),
            "integration_health": kpi.get("integration_health"),
            "audit_trail": incident.get("audit_trail"),
        }
    )
    now = _leaves(json.loads(json.dumps(now)))
    before = _leaves(json.loads(REFERENCE.read_text(encoding="utf-8")))
    assert set(before) <= set(now), sorted(set(before) - set(now))[:10]
    moved = []
    for path, old in before.items():
        new = now[path]
        if isinstance(old, float) and isinstance(new, (int, float)):
            if not (math.isnan(old) and math.isnan(new)) and not math.isclose(
                old, new, rel_tol=1e-9, abs_tol=1e-12
            ):
                moved.append((path, old, new))
        elif old != new:
            moved.append((path, old, new))
    assert not moved, moved[:10]

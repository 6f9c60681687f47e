"""Every figure of both sample pilots is what it was before the evidence store.

``tests/data/results-before-store/`` holds the phase results of both sample
pilots as the workbook computed them before the checked evidence store, the
in-engine efficiency interval and the side-by-side phases (each data set then
read and checked in every notebook). Computed now through the store, every
figure must agree: exactly (to 1e-9 relative, the rounding of result files),
except where the method changed on purpose, the efficiency interval, whose
bounds must agree to Monte-Carlo error (the old bootstrap's 2,000 resamples:
within 5% of the interval's width).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.config import load_pilot
from pilot_lib.ingest.store import build_store, open_store
from pilot_lib.phases import drift_phase, incident_phase, kpi_phase, use_case_phase
from pilot_lib.results import to_jsonable

ROOT = Path(__file__).resolve().parent.parent
BEFORE = Path(__file__).resolve().parent / "data" / "results-before-store"

#: Leaves whose method changed on purpose: the efficiency interval's bounds and texts.
EFFICIENCY_BOUNDS = ("_low", "_high", "/low", "/high")


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{path}/{k}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{path}[{i}]"))
        return out
    return {path: value}


def _efficiency_path(path: str, before: dict[str, Any]) -> bool:
    """Leaves of the efficiency figure: its block, its KPI row, its verdict."""
    if path.startswith("/efficiency/"):
        return True
    head = path.rsplit("/", 1)[0]
    return before.get(head + "/kpi") == "efficiency_gain"


@pytest.fixture(scope="module", params=["claims-auto", "it-ticket-routing"])
def now_and_before(request, tmp_path_factory) -> tuple[str, dict[str, Any], dict[str, Any]]:
    name = request.param
    pilot = load_pilot(ROOT / "data" / "pilots" / name)
    store = tmp_path_factory.mktemp(name) / "store"
    data = open_store(build_store(pilot, store).path, pilot)
    results = {
        "use_case_scoring": use_case_phase(pilot, data).to_result(),
        "kpi_baselining": kpi_phase(pilot, data).to_result(),
        "drift_analysis": drift_phase(pilot, data).to_result(),
        "incident_drill_review": incident_phase(pilot, data).to_result(),
    }
    results["go_no_go_summary"] = to_jsonable(evaluate_gate(pilot, results).to_result())
    results = json.loads(json.dumps(to_jsonable(results)))
    before = {
        phase: json.loads((BEFORE / name / f"{phase}.json").read_text(encoding="utf-8"))
        for phase in results
    }
    return name, results, before


@pytest.mark.parametrize(
    "phase",
    [
        "use_case_scoring",
        "kpi_baselining",
        "drift_analysis",
        "incident_drill_review",
        "go_no_go_summary",
    ],
)
def test_every_figure_is_unchanged(now_and_before, phase: str) -> None:
    name, now_all, before_all = now_and_before
    now, before = _leaves(now_all[phase]), _leaves(before_all[phase])
    assert sorted(now) == sorted(before), f"{name} {phase}: the result's shape changed"
    moved = []
    for path, old in before.items():
        new = now[path]
        if _efficiency_path(path, before):
            if path.endswith(EFFICIENCY_BOUNDS) and isinstance(old, float):
                width = _efficiency_width(before, path)
                if abs(new - old) > 0.05 * width:
                    moved.append((path, old, new))
            continue  # the method text names the new computation
        if isinstance(old, float) and isinstance(new, (int, float)):
            if not math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-12):
                moved.append((path, old, new))
        elif old != new:
            moved.append((path, old, new))
    assert not moved, f"{name} {phase}: figures moved: {moved[:10]}"


def _efficiency_width(before: dict[str, Any], path: str) -> float:
    """The width of the interval a bound belongs to (low to high of the same figure)."""
    for low_suffix, high_suffix in (("_low", "_high"), ("/low", "/high")):
        for suffix in (low_suffix, high_suffix):
            if path.endswith(suffix):
                stem = path[: -len(suffix)]
                low, high = before.get(stem + low_suffix), before.get(stem + high_suffix)
                if isinstance(low, float) and isinstance(high, float):
                    return abs(high - low)
    return 0.0

"""Shared fixtures: a tiny, valid pilot folder written to ``tmp_path``.

``tiny_frames()`` returns clean pandas frames for every data set (seeded, a few
dozen rows each); ``write_pilot(folder, frames)`` writes them and a pilot file
that names them. Tests copy a frame, break a few rows on purpose, and write it.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

# pytest-xdist workers run under execnet, whose __main__ has neither __spec__ nor
# __file__; pyspark.sql.connect then believes it is running its own doctests and calls
# sys.exit(0) on import without grpc, killing the worker during collection. Give the
# worker's __main__ a file, one that does nothing: processes it spawns (papermill's
# process pool) run that file as their own main module.
_main = sys.modules["__main__"]
if os.environ.get("PYTEST_XDIST_WORKER") and not hasattr(_main, "__file__"):
    _main.__file__ = str(Path(__file__).with_name("_xdist_main.py"))

# Each xdist worker keeps its own analyst store cache (notebooks opened without a run
# folder build one), so two workers never build or replace the same store at once.
if os.environ.get("PYTEST_XDIST_WORKER") and "PILOT_WORKBOOK_CACHE" not in os.environ:
    import tempfile

    os.environ["PILOT_WORKBOOK_CACHE"] = tempfile.mkdtemp(
        prefix=f"pilot-workbook-cache-{os.environ['PYTEST_XDIST_WORKER']}-"
    )

PILOT_START = dt.date(2026, 3, 2)  # a Monday
PILOT_END = dt.date(2026, 3, 29)
BASELINE_START = dt.date(2026, 2, 2)
BASELINE_END = dt.date(2026, 3, 1)

#: A valid pilot file; ``datasets`` is filled in by :func:`write_pilot`.
PILOT_DOC: dict[str, Any] = {
    "name": "tiny",
    "title": "Tiny test pilot",
    "owner": "Test Owner",
    "business_unit": "Testing",
    "scope": "Fixture data for the test suite.",
    "pilot_window": {"start": PILOT_START.isoformat(), "end": PILOT_END.isoformat()},
    "baseline_window": {"start": BASELINE_START.isoformat(), "end": BASELINE_END.isoformat()},
    "datasets": {},
    "kpis": [
        {"kpi": "task_completion_rate", "comparator": ">", "value": 0.8, "unit": "proportion"},
        {"kpi": "cost_per_decision", "comparator": "<", "value": 2.5, "unit": "usd"},
        {"kpi": "escalation_rate", "comparator": "<", "value": 0.2, "unit": "proportion"},
    ],
    "costs": {"review_hourly_rate_usd": 60.0, "manual_cost_per_case_usd": 12.0},
    "drift": {
        "features": ["claim_amount", "channel"],
        "reference_window": {"start": "2026-03-02", "end": "2026-03-15"},
        "current_window": {"start": "2026-03-16", "end": "2026-03-29"},
    },
    "drills": {
        "max_seconds_to_detect": 300,
        "max_seconds_to_page": 120,
        "max_seconds_to_pause": 180,
    },
    "approvals": {
        "sla_minutes": 240,
        "levels": [
            {"name": "autonomous", "max_amount": 2500, "requires_approval": False},
            {"name": "adjuster", "max_amount": 7500},
            {"name": "supervisor"},
        ],
    },
}

#: File name per data set in the tiny pilot (the extension sets the format).
DEFAULT_FILES = {
    "candidates": "candidates.csv",
    "decisions": "decisions.parquet",
    "cases": "cases.parquet",
    "adoption": "adoption.csv",
    "drill_events": "drill_events.csv",
    "approvals": "approvals.csv",
    "tool_calls": "tool_calls.parquet",
    "policy_versions": "policy_versions.csv",
}


def tiny_frames(n_decisions: int = 40, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Clean frames for every data set; every row meets its contract."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(PILOT_START)
    seconds = np.sort(rng.integers(0, 27 * 86400, n_decisions))
    escalated = rng.random(n_decisions) < 0.2
    reasons = np.array(["low_confidence", "missing_data", "out_of_scope", "tool_failure"])
    completed = rng.random(n_decisions) < 0.9
    accepted = rng.random(n_decisions) < 0.8
    overridden = rng.random(n_decisions) < 0.1
    # accepted means acted on without correction: only a completed, not overridden output
    # (a row saying otherwise contradicts itself and is quarantined)
    accepted &= completed & ~overridden
    decisions = pd.DataFrame(
        {
            "decision_id": [f"d{i:04d}" for i in range(n_decisions)],
            "timestamp": start + pd.to_timedelta(seconds, unit="s"),
            "trace_id": [f"t{i:04d}" for i in range(n_decisions)],
            "agent_id": "agent-1",
            "workflow": "claims",
            "case_id": [f"c{i % 12:03d}" for i in range(n_decisions)],
            "prompt_version": np.where(np.arange(n_decisions) < n_decisions // 2, "v1", "v2"),
            "user_id": [f"u{i % 4}" for i in range(n_decisions)],
            "completed": completed,
            "accepted": accepted,
            "overridden": overridden,
            "escalated": escalated,
            "escalation_reason": np.where(
                escalated, reasons[rng.integers(0, 4, n_decisions)], None
            ),
            "confidence": np.round(rng.uniform(0.3, 1.0, n_decisions), 3),
            "correct": pd.array(
                [None if i % 5 == 0 else bool(i % 3) for i in range(n_decisions)], dtype="boolean"
            ),
            "input_tokens": rng.integers(200, 2000, n_decisions).astype("int64"),
            "output_tokens": rng.integers(50, 500, n_decisions).astype("int64"),
            "model_cost_usd": np.round(rng.uniform(0.01, 0.2, n_decisions), 4),
            "tool_cost_usd": np.round(rng.uniform(0.0, 0.05, n_decisions), 4),
            "review_minutes": np.round(rng.uniform(0.0, 6.0, n_decisions), 2),
            "claim_amount": np.round(rng.uniform(500, 9500, n_decisions), 2),
            "channel": np.array(["web", "phone", "agent"])[rng.integers(0, 3, n_decisions)],
        }
    )
    cohorts = ["agent", "control", "baseline"] * 4
    opened = []
    for i, cohort in enumerate(cohorts):
        base = pd.Timestamp(BASELINE_START if cohort == "baseline" else PILOT_START)
        opened.append(base + pd.Timedelta(days=i, hours=9))
    cases = pd.DataFrame(
        {
            "case_id": [f"c{i:03d}" for i in range(12)],
            "cohort": cohorts,
            "opened_at": opened,
            "closed_at": [
                None if i == 11 else t + pd.Timedelta(hours=2 + i) for i, t in enumerate(opened)
            ],
        }
    )
    cases["closed_at"] = pd.to_datetime(cases["closed_at"])
    weeks = [PILOT_START + dt.timedelta(weeks=w) for w in range(2)]
    adoption = pd.DataFrame(
        [
            {
                "user_id": f"u{u}",
                "week": w,
                "eligible": True,
                "engaged": u != 3,
                "decisions_seen": 10 + u,
                "overrides": u,
            }
            for w in weeks
            for u in range(4)
        ]
    )
    adoption["week"] = pd.to_datetime(adoption["week"]).dt.date
    drill_start = pd.Timestamp("2026-03-20 10:00:00")
    drill_events = pd.DataFrame(
        {
            "drill_id": "drill-1",
            "event": [
                "anomaly_injected",
                "action_started",
                "detected",
                "paged",
                "paused",
                "action_rolled_back",
            ],
            "timestamp": [
                drill_start + pd.Timedelta(seconds=s) for s in (0, 20, 90, 130, 200, 260)
            ],
            "action_id": [None, "a-9", None, None, None, "a-9"],
            "detail": ["injected bad prices", None, None, None, None, None],
        }
    )
    proposed = [pd.Timestamp("2026-03-05 09:00") + pd.Timedelta(hours=5 * i) for i in range(6)]
    approvals = pd.DataFrame(
        {
            "action_id": [f"a-{i}" for i in range(6)],
            "trace_id": [f"t{i:04d}" for i in range(6)],
            "proposed_at": proposed,
            "amount": [1200.0, 3000.0, 8000.0, 500.0, 7000.0, 9100.0],
            "required_level": [
                "autonomous",
                "adjuster",
                "supervisor",
                "autonomous",
                "adjuster",
                "supervisor",
            ],
            "decided_at": [
                t + pd.Timedelta(minutes=m) if m is not None else pd.NaT
                for t, m in zip(proposed, [0, 30, 90, 0, None, 400], strict=True)
            ],
            "decision": ["auto", "approved", "approved", "auto", "timed_out", "rejected"],
            "approver_level": [None, "adjuster", "supervisor", None, None, "supervisor"],
            "executed_at": [
                proposed[0] + pd.Timedelta(minutes=1),
                proposed[1] + pd.Timedelta(minutes=31),
                proposed[2] + pd.Timedelta(minutes=95),
                proposed[3] + pd.Timedelta(minutes=1),
                pd.NaT,
                pd.NaT,
            ],
        }
    )
    candidates = pd.DataFrame(
        {
            "name": ["claims triage", "invoice matching", "chat demo"],
            "impact_metric": ["cycle time", "cost per case", "none"],
            "baseline_value": [4.5, 11.0, None],
            "impact_score": [5, 4, 1],
            "data_score": [4, 4, 2],
            "readiness_score": [4, 3, 2],
            "weekly_volume": [900.0, 400.0, 10.0],
            "sme_committed": [True, True, False],
            "owner_has_authority": [True, False, False],
            "demo_appeal": [3, 2, 5],
            "notes": ["", None, "looks great on stage"],
        }
    )
    return {
        "candidates": candidates,
        "decisions": decisions,
        "cases": cases,
        "adoption": adoption,
        "drill_events": drill_events,
        "approvals": approvals,
        # the pilot file's ladder, recorded as in force from before the first action
        "policy_versions": pd.DataFrame(
            {
                "policy_version": ["v1", "v1", "v1"],
                "effective_at": [pd.Timestamp("2026-03-01 00:00:00")] * 3,
                "level": ["autonomous", "adjuster", "supervisor"],
                "max_amount": [2500.0, 7500.0, None],
                "requires_approval": [False, True, True],
            }
        ),
    }


def tiny_tool_calls(decisions: pd.DataFrame) -> pd.DataFrame:
    """A clean ``tool_calls`` frame for ``decisions``: one call per decision to ``crm``,
    every fourth decision also posts to ``payments`` (side-effecting, with a key)."""
    rows = []
    for i, d in enumerate(decisions.itertuples(index=False)):
        start = pd.Timestamp(d.timestamp) + pd.Timedelta(seconds=1)
        rows.append(
            {
                "call_id": f"call-{i:04d}-a",
                "decision_id": d.decision_id,
                "trace_id": d.trace_id,
                "system": "crm",
                "tool": "get_customer",
                "started_at": start,
                "ended_at": start + pd.Timedelta(milliseconds=180 + 7 * (i % 9)),
                "status": "ok",
                "http_status": 200,
                "attempt": 1,
                "idempotency_key": None,
                "side_effect": False,
                "cost_usd": 0.001,
            }
        )
        if i % 4 == 0:
            rows.append(
                rows[-1]
                | {
                    "call_id": f"call-{i:04d}-b",
                    "system": "payments",
                    "tool": "post_payment",
                    "started_at": start + pd.Timedelta(seconds=2),
                    "ended_at": start + pd.Timedelta(seconds=2, milliseconds=400),
                    "idempotency_key": f"pay-{d.decision_id}",
                    "side_effect": True,
                    "cost_usd": 0.01,
                }
            )
    return pd.DataFrame(rows)


def spark_failure(master: str) -> str:
    """The one-line reason Spark cannot run here, with Java hidden: without the ``spark``
    extra pyspark is named (README line 1 installs none); with it, the session fails."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed"
    return f"cannot start a Spark session on {master}"


def sleepy_notebooks(folder: Path, phases: tuple[int, ...] = (1,), seconds: int = 3600) -> Path:
    """A copy of the phase notebooks in ``folder`` whose ``phases`` sleep ``seconds`` in their
    first cell after the parameters: a run on them is still going when a test signals or times
    it out, however fast or busy the machine (pass ``--notebooks folder``)."""
    import shutil

    import nbformat

    from pilot_lib.runner import PHASE_NOTEBOOKS, notebooks_dir

    shutil.copytree(notebooks_dir(), folder)
    for phase in phases:
        path = folder / PHASE_NOTEBOOKS[phase][1]
        nb = nbformat.read(path, as_version=4)
        nb.cells.insert(2, nbformat.v4.new_code_cell(f"import time\ntime.sleep({seconds})"))
        nbformat.write(nb, path)
    return folder


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` in the format the extension names (parquet, csv, jsonl)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix in (".csv", ".tsv"):
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, date_format="iso")
    else:
        raise ValueError(f"no writer for {path}")


def write_pilot(
    folder: Path,
    frames: Mapping[str, pd.DataFrame] | None = None,
    files: Mapping[str, str] | None = None,
    doc_changes: Mapping[str, Any] | None = None,
) -> Path:
    """Write a pilot folder: data files for ``frames`` and a ``pilot.yaml`` naming them.

    ``files`` maps a data set to its file name (default :data:`DEFAULT_FILES`);
    ``doc_changes`` replaces top-level keys of the pilot file. Returns the folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    frames = tiny_frames() if frames is None else frames
    names = {**DEFAULT_FILES, **(files or {})}
    datasets = {}
    for name, frame in frames.items():
        write_frame(frame, folder / names[name])
        datasets[name] = {"path": names[name]}
    doc = {**PILOT_DOC, "datasets": datasets, **(doc_changes or {})}
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return folder


@pytest.fixture
def tiny_pilot(tmp_path: Path) -> Path:
    """A folder holding a small, valid pilot (all seven data sets, no bad rows)."""
    return write_pilot(tmp_path / "tiny")


def gate_of(folder: Path, store: Path) -> tuple[Any, dict[str, Any]]:
    """Build the evidence store of the pilot in ``folder`` at ``store`` (replacing one
    there), run phases 2-4 on it and the gate: ``(GateDecision, results by phase)``."""
    from pilot_lib import phases
    from pilot_lib.analysis.gate import evaluate_gate
    from pilot_lib.ingest.store import build_store, open_store

    build_store(folder, store)
    data = open_store(store, folder)
    pilot = data.pilot
    results = {
        "kpi_baselining": phases.kpi_phase(pilot, data).to_result(),
        "drift_analysis": phases.drift_phase(pilot, data).to_result(),
        "incident_drill_review": phases.incident_phase(pilot, data).to_result(),
    }
    return evaluate_gate(pilot, results), results

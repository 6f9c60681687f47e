"""Scale claims, checked at 1 million decisions (not part of the test suite: minutes, not
seconds; the suite tests the same logic on small pilots).

Usage (from the repository root)::

    python benchmarks/check_scale.py              # generates into a temporary folder

Issue 10: the claims-auto story generated at 1M decisions came out NO-GO on a p-chart
breach still open on the last day (7.6% to about 7.9%, against a 20% threshold). The rise
is real (the count-based chart confirms it: a warning to review) but smaller than the 1.9
points that matter, so it does not block, and the pilot is GO.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

import pandas as pd


def claims_auto_at_one_million_decisions_is_go(tmp_path: Path) -> None:
    from pilot_lib.analysis.gate import evaluate_gate
    from pilot_lib.config import load_pilot
    from pilot_lib.ingest.contracts import load_pilot_data
    from pilot_lib.phases import drift_phase, incident_phase, kpi_phase
    from pilot_lib.synth import generate_pilot

    folder = generate_pilot("claims-auto", tmp_path, rows=1_000_000)
    pilot = load_pilot(folder)
    data = load_pilot_data(pilot)
    drift = drift_phase(pilot, data)
    assert drift.blocking == []
    chart = drift.chart
    assert chart.limits["baseline_decisions"] > 300_000
    assert dt.date(2026, 4, 6) <= chart.first_breach_day <= dt.date(2026, 4, 12)
    small = chart.episodes[
        (chart.episodes["level"] == "review")
        & (chart.episodes["start"] > pd.Timestamp("2026-05-03"))
    ]
    assert len(small) >= 1 and (small["peak_shift"] < chart.min_shift).all()
    results = {
        "kpi_baselining": kpi_phase(pilot, data).to_result(),
        "drift_analysis": drift.to_result(),
        "incident_drill_review": incident_phase(pilot, data).to_result(),
    }
    assert evaluate_gate(pilot, results).decision == "GO"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pilot-scale-") as tmp:
        claims_auto_at_one_million_decisions_is_go(Path(tmp))
    print("claims-auto at 1,000,000 decisions: GO, the late p-chart review episode does not block")
    return 0


if __name__ == "__main__":
    sys.exit(main())

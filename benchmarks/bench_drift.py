"""Time feature drift (PSI, KL, bands) on a large decision log held in DuckDB.

Usage (from the repository root)::

    python benchmarks/bench_drift.py                  # 10 million decisions
    python benchmarks/bench_drift.py --rows 1000000 --quantiles approx

Builds the decision log with DuckDB SQL (no Python loop, no pandas) in an
in-memory database: 84 days of decisions with two numeric features (one with
nulls), an integer feature, a categorical feature that gains a new category in
the last weeks, and a boolean. Then times one :func:`pilot_lib.analysis.drift.feature_drift`
call on the first 28 days (reference) against the last 28 (current), and the
whole phase-3 :func:`pilot_lib.analysis.drift.drift_report`. Prints seconds, peak
resident memory (``ru_maxrss``) and the drift table. Not part of the test
suite: the suite never depends on wall-clock speed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import ibis
import pandas as pd

from pilot_lib.analysis.drift import drift_report, drift_windows, feature_drift
from pilot_lib.config import Pilot

FEATURES = ["claim_amount", "vehicle_age_years", "channel", "photos_attached", "repair_hours"]

PILOT = {
    "name": "bench",
    "title": "Drift benchmark",
    "owner": "bench",
    "business_unit": "bench",
    "scope": "synthetic decision log for timing phase 3",
    "pilot_window": {"start": "2026-03-02", "end": "2026-05-24"},
    "baseline_window": {"start": "2026-01-05", "end": "2026-03-01"},
    "datasets": {"decisions": {"path": "decisions.parquet"}, "cases": {"path": "cases.parquet"}},
    "kpis": [{"kpi": "escalation_rate", "comparator": "<", "value": 0.2, "unit": "proportion"}],
    "costs": {"review_hourly_rate_usd": 60.0, "manual_cost_per_case_usd": 12.0},
    "drift": {
        "features": FEATURES,
        "key_features": ["claim_amount"],
        "reference_window": {"start": "2026-03-02", "end": "2026-03-29"},
        "current_window": {"start": "2026-04-27", "end": "2026-05-24"},
    },
    "drills": {
        "max_seconds_to_detect": 300,
        "max_seconds_to_page": 120,
        "max_seconds_to_pause": 180,
    },
    "approvals": {"sla_minutes": 240, "levels": [{"name": "any"}]},
}

# 84 days from 2026-03-02; from day 56 on a 'mobile_app' channel appears, amounts
# grow 20% and escalations rise. Normal draws via Box-Muller on DuckDB's random().
SQL = """
CREATE TABLE decisions AS
WITH base AS (
    SELECT
        i,
        TIMESTAMP '2026-03-02' + to_microseconds(CAST(i * (84 * 86400000000 / {rows}) AS BIGINT))
            AS timestamp,
        sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z,
        random() AS u
    FROM range({rows}) t(i)
)
SELECT
    'd' || i AS decision_id,
    timestamp,
    'v1.' || CAST(floor(date_diff('day', DATE '2026-03-02', timestamp) / 21) AS INTEGER)
        AS prompt_version,
    random() < CASE WHEN timestamp >= TIMESTAMP '2026-04-27' THEN 0.16 ELSE 0.10 END
        AS escalated,
    random() < 0.05 AS overridden,
    CASE WHEN random() < 0.3 THEN NULL ELSE u END AS confidence,
    CASE WHEN random() < 0.4 THEN NULL ELSE random() < u END AS correct,
    exp(7.5 + 0.6 * z) * CASE WHEN timestamp >= TIMESTAMP '2026-04-27' THEN 1.2 ELSE 1.0 END
        AS claim_amount,
    CAST(floor(random() * 15) AS INTEGER) AS vehicle_age_years,
    CASE
        WHEN timestamp >= TIMESTAMP '2026-04-27' AND random() < 0.3 THEN 'mobile_app'
        ELSE (['web', 'phone', 'agent'])[1 + CAST(floor(random() * 3) AS INTEGER)]
    END AS channel,
    random() < 0.6 AS photos_attached,
    CASE WHEN random() < 0.02 THEN NULL ELSE 2 + 8 * random() END AS repair_hours
FROM base
"""


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--quantiles", choices=["exact", "approx"], default="exact")
    args = parser.parse_args(argv)

    con = ibis.duckdb.connect()
    con.raw_sql("SELECT setseed(0.42)")
    started = time.perf_counter()
    con.raw_sql(SQL.format(rows=args.rows))
    built = time.perf_counter() - started
    decisions = con.table("decisions")
    pilot = Pilot.model_validate(PILOT)
    reference, current = drift_windows(decisions, pilot)

    started = time.perf_counter()
    table = feature_drift(reference, current, FEATURES, quantiles=args.quantiles)
    drift_seconds = time.perf_counter() - started

    started = time.perf_counter()
    report = drift_report(pilot, decisions)
    report_seconds = time.perf_counter() - started

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print()
    print(f"rows:                  {args.rows:,}")
    print(f"build (SQL):           {built:.1f} s")
    print(
        f"feature_drift:         {drift_seconds:.2f} s ({len(FEATURES)} features, "
        f"{args.quantiles} quantiles)"
    )
    print(
        f"drift_report (phase):  {report_seconds:.2f} s, {len(report.findings)} findings, "
        f"{len(report.blocking)} blocking"
    )
    print(f"peak memory:           {_peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time contract checking and quarantine on a large decision log; report peak memory.

Usage (from the repository root)::

    python benchmarks/bench_quarantine.py                   # 10 million decisions, Parquet
    python benchmarks/bench_quarantine.py --rows 1000000 --format csv

Builds the decision log with DuckDB SQL (no Python loop, no pandas) in a temporary
folder, about 0.1% of rows broken on purpose (bad confidence, negative cost, null
or out-of-window timestamps, unknown escalation reasons, duplicate ids), then times
:func:`pilot_lib.ingest.contracts.load_pilot_data` on it and checks that every row is
accounted for. Prints seconds, peak resident memory (``ru_maxrss``) and the counts.
Not part of the test suite: the suite never depends on wall-clock speed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

from pilot_lib.ingest.contracts import load_pilot_data

PILOT = {
    "name": "bench",
    "title": "Quarantine benchmark",
    "owner": "bench",
    "business_unit": "bench",
    "scope": "synthetic decision log for timing the contracts",
    "pilot_window": {"start": "2026-03-02", "end": "2026-05-24"},
    "baseline_window": {"start": "2026-01-05", "end": "2026-03-01"},
    "kpis": [
        {"kpi": "task_completion_rate", "comparator": ">", "value": 0.8, "unit": "proportion"}
    ],
    "costs": {"review_hourly_rate_usd": 60.0, "manual_cost_per_case_usd": 12.0},
    "drift": {
        "features": ["claim_amount", "channel"],
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

WINDOW_SECONDS = 84 * 86400  # 2026-03-02 .. 2026-05-24


def _decisions_sql(rows: int) -> str:
    """A SELECT producing ``rows`` decisions; row i breaks a rule when i % 1000 < 6 (0.6%)."""
    return f"""
    SELECT
      'd' || CASE WHEN i % 1000 = 5 THEN i - 10 ELSE i END AS decision_id,  -- duplicates
      CASE WHEN i % 1000 = 3 THEN NULL
           WHEN i % 1000 = 4 THEN TIMESTAMP '2026-07-01'
           ELSE TIMESTAMP '2026-03-02' + to_seconds((i * 7919) % {WINDOW_SECONDS})
      END AS timestamp,
      't' || i AS trace_id,
      'agent-' || (i % 3) AS agent_id,
      'claims' AS workflow,
      'c' || (i // 2) AS case_id,
      CASE WHEN i < {rows // 2} THEN 'v1' ELSE 'v2' END AS prompt_version,
      'u' || (i % 500) AS user_id,
      (i % 10) <> 0 AS completed,
      (i % 10) > 1 AS accepted,
      (i % 17) = 0 AS overridden,
      (i % 8) = 0 AS escalated,
      CASE WHEN i % 1000 = 2 THEN 'lunch'
           WHEN i % 8 = 0 THEN 'low_confidence' END AS escalation_reason,
      CASE WHEN i % 1000 = 0 THEN 1.5 ELSE ((i * 31) % 1000) / 1000.0 END AS confidence,
      CASE WHEN i % 5 = 0 THEN NULL ELSE (i % 3) <> 0 END AS correct,
      (200 + i % 1800)::BIGINT AS input_tokens,
      (50 + i % 450)::BIGINT AS output_tokens,
      CASE WHEN i % 1000 = 1 THEN -0.01 ELSE 0.01 + (i % 100) / 1000.0 END AS model_cost_usd,
      (i % 7) / 100.0 AS tool_cost_usd,
      (i % 13) / 2.0 AS review_minutes,
      500.0 + (i * 13) % 9000 AS claim_amount,
      CASE i % 3 WHEN 0 THEN 'web' WHEN 1 THEN 'phone' ELSE 'agent' END AS channel
    FROM range({rows}) t(i)
    """


def _cases_sql() -> str:
    return """
    SELECT 'c' || i AS case_id,
           CASE WHEN i % 2 = 0 THEN 'agent' ELSE 'control' END AS cohort,
           TIMESTAMP '2026-03-02' + to_seconds(i * 60) AS opened_at,
           TIMESTAMP '2026-03-02' + to_seconds(i * 60 + 3600) AS closed_at
    FROM range(1000) t(i)
    """


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-quarantine-") as tmp:
        folder = Path(tmp) / "bench"
        folder.mkdir()
        log = folder / f"decisions.{args.format}"
        fmt = "(FORMAT parquet)" if args.format == "parquet" else "(HEADER)"
        start = time.perf_counter()
        con = duckdb.connect()
        con.execute(f"COPY ({_decisions_sql(args.rows)}) TO '{log}' {fmt}")
        con.execute(f"COPY ({_cases_sql()}) TO '{folder / 'cases.parquet'}' (FORMAT parquet)")
        con.close()
        built = time.perf_counter() - start
        doc = {
            **PILOT,
            "datasets": {"decisions": {"path": log.name}, "cases": {"path": "cases.parquet"}},
        }
        (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        rss_before = _peak_rss_mib()

        start = time.perf_counter()
        data = load_pilot_data(folder, quarantine_dir=Path(tmp) / "quarantine")
        elapsed = time.perf_counter() - start

        check = data.checks["decisions"]
        assert check.rows == args.rows, (check.rows, args.rows)
        assert check.valid + check.quarantined == check.rows
        assert data.decisions.count().to_pyarrow().as_py() == check.valid
        print(
            f"decisions        {args.rows:,} ({args.format}, {log.stat().st_size / 2**20:,.0f} MiB)"
        )
        print(f"build log        {built:.1f} s")
        print(f"load_pilot_data  {elapsed:.1f} s ({args.rows / elapsed:,.0f} rows/s)")
        print(
            f"peak RSS         {_peak_rss_mib():,.0f} MiB (before loading: {rss_before:,.0f} MiB)"
        )
        print(f"valid            {check.valid:,}")
        print(f"quarantined      {check.quarantined:,}")
        for rule, n in zip(check.by_rule["rule"], check.by_rule["rows"], strict=True):
            print(f"  {rule:<36} {n:>10,}")
        size = check.quarantine_path.stat().st_size / 2**20 if check.quarantine_path else 0
        print(f"quarantine file  {size:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

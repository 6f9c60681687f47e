"""Time a whole pilot at 1 and 10 million decisions, beside a raw DuckDB scan of the same file.

Usage (from the repository root)::

    python benchmarks/bench_run.py                       # 1M and 10M, data under .benchmarks/
    python benchmarks/bench_run.py --rows 1000000        # one size
    python benchmarks/bench_run.py --data /tmp/bench --skip-run

For each size it generates the ``claims-auto`` pilot with ``pilot-workbook synth``
(or reuses one generated earlier with the same size), then measures, each in a
fresh process so peak memory is that step's own:

1. **raw scan**: plain DuckDB over the decision log's Parquet file, one KPI
   aggregate per day and agent (completion, escalation, cost): the floor;
2. **validate**: ``pilot-workbook validate`` (read, type and check every data set
   once and write the checked evidence store);
3. **phase N**: the library compute of each phase against that store
   (``open_store`` then the phase function, no notebook), and the sum of the four;
4. **run**: the whole ``pilot-workbook run`` (store, five notebooks, HTML exports).

Wall-clock seconds and peak memory (proportional set size, PSS, where Linux reports it) summed over the process tree (the
notebook kernels are child processes), sampled every 50 ms, are printed with the
ratio to the raw scan and, with both sizes, the 10M/1M ratio. The targets are in
docs/performance.md. Not part of the test suite: no test depends on wall-clock speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PRESET = "claims-auto"

RAW_SCAN = """
import duckdb, sys
con = duckdb.connect()
con.execute("SET memory_limit = '1GB'")
rows = con.execute('''
    SELECT date_trunc('day', "timestamp") AS day, agent_id,
           count(*) AS decisions,
           avg(CASE WHEN completed AND accepted AND NOT overridden THEN 1 ELSE 0 END) AS completion,
           avg(CASE WHEN escalated THEN 1 ELSE 0 END) AS escalation,
           avg(model_cost_usd + tool_cost_usd) AS cost
    FROM read_parquet(?) GROUP BY ALL ORDER BY ALL
''', [sys.argv[1]]).fetchall()
print(len(rows), "groups")
"""

PHASE = """
import sys, time
from pilot_lib.config import load_pilot
from pilot_lib.ingest.store import open_store
from pilot_lib import phases
import pilot_lib.analysis.kpis, pilot_lib.analysis.drift, pilot_lib.analysis.approvals
started = time.perf_counter()
pilot = load_pilot(sys.argv[1])
data = open_store(sys.argv[2], pilot)
result = getattr(phases, sys.argv[3])(pilot, data).to_result()
print("COMPUTE_SECONDS", time.perf_counter() - started)
"""

AGGREGATES = """
import sys, time
from pilot_lib.config import load_pilot
from pilot_lib.ingest.store import open_store
from pilot_lib.analysis.shared import write_aggregates
started = time.perf_counter()
pilot = load_pilot(sys.argv[1])
write_aggregates(sys.argv[2], open_store(sys.argv[2], pilot))
print("COMPUTE_SECONDS", time.perf_counter() - started)
"""

PHASE_FUNCTIONS = ("use_case_phase", "kpi_phase", "drift_phase", "incident_phase")


@dataclass
class Measure:
    label: str
    seconds: float
    peak_mb: float
    compute: float | None = None  # seconds inside the process, imports excluded


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += _memory(p)
    return total


def _memory(p: psutil.Process) -> int:
    """Proportional set size where the system reports it (Linux), else resident size.

    The phase kernels are forked from one template process and share its imported pages
    copy-on-write: summing their resident sizes counts those pages once per kernel, the
    proportional size divides each shared page among the processes that map it."""
    try:
        return int(p.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return int(p.memory_info().rss)


def measure(label: str, argv: list[str], cwd: Path | None = None) -> Measure:
    """Run ``argv``; wall time and peak memory (PSS) summed over its process tree (50 ms samples)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        tail = output.decode(errors="replace")[-2000:]
        raise SystemExit(f"{label} failed (exit {child.returncode}):\n{tail}")
    text = output.decode(errors="replace")
    compute = None
    for line in text.splitlines():
        if line.startswith("COMPUTE_SECONDS"):
            compute = float(line.split()[1])
    return Measure(label, seconds, peak / 2**20, compute)


def ensure_pilot(data_dir: Path, rows: int) -> Path:
    folder = data_dir / f"{PRESET}-{rows}"
    pilot = folder / PRESET
    if not (pilot / "pilot.yaml").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating a {rows:,}-decision pilot in {folder} ...", flush=True)
        subprocess.run(
            [_cli(), "synth", PRESET, "--rows", str(rows), "--out", str(folder)], check=True
        )
    return pilot


def _cli() -> str:
    found = shutil.which("pilot-workbook", path=str(Path(sys.executable).parent))
    return found or "pilot-workbook"


def bench_size(pilot: Path, work: Path, skip_run: bool, jobs: int | None) -> list[Measure]:
    py = sys.executable
    out: list[Measure] = []
    decisions = pilot / "decisions.parquet"
    out.append(measure("raw DuckDB scan", [py, "-c", RAW_SCAN, str(decisions)]))
    vdir = work / "validate"
    out.append(
        measure(
            "validate",
            [_cli(), "validate", str(pilot), "--quarantine-dir", str(vdir / "quarantine")],
            cwd=work,
        )
    )
    store = work / "runs" / PRESET / "store"
    # the shared aggregates, once per store, as pilot-workbook run writes them
    out.append(measure("shared aggregates", [py, "-c", AGGREGATES, str(pilot), str(store)]))
    phase_total = Measure("phases 1-4 (sum)", 0.0, 0.0, 0.0)
    for i, fn in enumerate(PHASE_FUNCTIONS, start=1):
        m = measure(f"phase {i} compute", [py, "-c", PHASE, str(pilot), str(store), fn])
        out.append(m)
        phase_total.seconds += m.seconds
        phase_total.compute = (phase_total.compute or 0.0) + (m.compute or 0.0)
        phase_total.peak_mb = max(phase_total.peak_mb, m.peak_mb)
    out.append(phase_total)
    # every section's compute and its scans of the log, in one process (imports excluded)
    profile = subprocess.run(
        [py, str(ROOT / "benchmarks" / "profile_sections.py"), str(pilot), str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    SECTIONS[pilot] = profile.stdout
    if not skip_run:
        argv = [_cli(), "run", str(pilot), "--out", str(work / "run-out")]
        if jobs:
            argv += ["--jobs", str(jobs)]
        out.append(measure("pilot-workbook run", argv, cwd=work))
    return out


#: pilot folder -> the per-section profile printed after its table.
SECTIONS: dict[Path, str] = {}


def report(rows: int, measures: list[Measure]) -> str:
    """A Markdown table; "x raw scan" compares compute seconds where measured, else wall time."""
    floor = measures[0].seconds
    lines = [
        f"### {rows:,} decisions",
        "",
        "| step | seconds (process) | compute seconds (imports excluded) | x raw scan "
        "| peak MB (process tree) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in measures:
        compute = "" if m.compute is None else f"{m.compute:.2f}"
        basis = m.compute if m.compute is not None else m.seconds
        lines.append(
            f"| {m.label} | {m.seconds:.2f} | {compute} | {basis / floor:.1f} | {m.peak_mb:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        action="append",
        help="decisions per pilot (repeatable; default 1M and 10M)",
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT / ".benchmarks", help="where generated pilots are kept"
    )
    parser.add_argument("--skip-run", action="store_true", help="leave out the whole run")
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for pilot-workbook run")
    args = parser.parse_args(argv)
    sizes = args.rows or [1_000_000, 10_000_000]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Python {platform.python_version()}"
    )
    results: dict[int, list[Measure]] = {}
    for rows in sizes:
        pilot = ensure_pilot(args.data, rows)
        with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
            results[rows] = bench_size(pilot, Path(tmp), args.skip_run, args.jobs)
        print(report(rows, results[rows]), flush=True)
        print()
        print("per section (scans counted from the SQL; seconds in one process):")
        print("```")
        print(SECTIONS.get(pilot, "").rstrip())
        print("```")
        print()
    if not args.skip_run:
        with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp:
            sample = measure(
                "pilot-workbook run (bundled claims-auto, 30k)",
                [_cli(), "run", str(ROOT / "data" / "pilots" / PRESET), "--out", str(tmp)],
            )
        print(f"{sample.label}: {sample.seconds:.2f} s, {sample.peak_mb:,.0f} MB")
        print()
    if len(sizes) == 2:
        small, large = sorted(sizes)
        print(f"### scaling, {large:,} / {small:,} decisions (time ratio)")
        print()
        print("| step | ratio |")
        print("|---|---:|")
        for a, b in zip(results[small], results[large], strict=True):
            print(f"| {a.label} | {b.seconds / a.seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

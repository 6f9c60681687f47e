"""Time the generator at scale and report its peak memory.

Usage (from the repository root)::

    python benchmarks/bench_synth.py                      # 10 million decisions, claims-auto
    python benchmarks/bench_synth.py --rows 1000000 --preset it-ticket-routing --keep out/

The pilot is written to a temporary folder (deleted afterwards unless ``--keep``
names a folder). Prints wall-clock seconds, peak resident memory of this process
(``ru_maxrss``), rows per second and the size of every file written. Not part of
the test suite: the suite never depends on wall-clock speed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from pilot_lib.synth import PRESETS, generate_pilot


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="claims-auto", choices=PRESETS)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep the files")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        out = args.keep if args.keep is not None else Path(tmp)
        start = time.perf_counter()
        folder = generate_pilot(args.preset, out, rows=args.rows, seed=args.seed)
        elapsed = time.perf_counter() - start
        print(f"preset           {args.preset}")
        print(f"decisions        {args.rows:,}")
        print(f"elapsed          {elapsed:.1f} s ({args.rows / elapsed:,.0f} decisions/s)")
        print(f"peak RSS         {_peak_rss_mib():,.0f} MiB")
        for path in sorted(folder.iterdir()):
            print(f"  {path.name:<20} {path.stat().st_size / 2**20:10.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

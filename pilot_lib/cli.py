"""``pilot-workbook``: the command line.

Subcommands:
  validate PILOT      check the pilot file and every data contract
  synth NAME          generate a seeded pilot of any size
  run PILOT [...]     execute the phase notebooks for one or many pilots
  portfolio DIR       one page comparing the latest run of every pilot

User mistakes (a bad pilot file, a missing column) print a clear message and
exit 2 without a Python traceback; a failed run exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pilot_lib import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _cmd_validate(args: argparse.Namespace) -> int:
    from pilot_lib.contracts import validate_pilot

    report = validate_pilot(args.pilot, quarantine_dir=args.quarantine_dir)
    print(report.to_text())
    return EXIT_OK


def _cmd_synth(args: argparse.Namespace) -> int:
    from pilot_lib.synth import generate_pilot

    folder = generate_pilot(args.preset, args.out, rows=args.rows, seed=args.seed)
    print(f"wrote pilot {args.preset!r} to {folder}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilot-workbook",
        description="Take an agentic-AI pilot from proof of concept to a go/no-go decision made on evidence.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a pilot file and every data contract")
    p.add_argument("pilot", help="pilot folder or its pilot.yaml")
    p.add_argument(
        "--quarantine-dir",
        default=None,
        help="where rows that break a contract are written (default: runs/<pilot>/quarantine)",
    )
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("synth", help="generate a seeded sample pilot of any size")
    p.add_argument("preset", help="claims-auto or it-ticket-routing")
    p.add_argument(
        "--rows", type=int, default=None, help="decisions in the log (default: the preset's size)"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="parent folder; the pilot goes in OUT/<preset>"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pilot-workbook`` console script."""
    from pilot_lib.errors import WorkbookError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WorkbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

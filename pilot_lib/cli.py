"""``pilot-workbook``: the command line.

Subcommands:
  validate PILOT      check the pilot file and every data contract
  synth NAME          generate a seeded pilot of any size
  run PILOT [...]     execute the phase notebooks for one or many pilots
  portfolio DIR       one page comparing the latest run of every pilot
  export RUN_DIR      write a run folder's pages again (HTML, summary, index, --pdf)
  new DIR             scaffold a pilot folder (a commented pilot.yaml, empty data files)
  notebooks DIR       copy the phase notebooks for JupyterLab

User mistakes (a bad pilot file, a missing column) print a clear message and
exit 2 without a Python traceback; a failed run exits 1; Ctrl-C exits 130 and
SIGTERM 143 with one line (the runs it stopped are marked interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pilot_lib import __version__

if TYPE_CHECKING:
    from pilot_lib.runner import PilotRun

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _cmd_validate(args: argparse.Namespace) -> int:
    from pilot_lib.ingest.store import validate_pilot

    engine = None
    if args.engine is not None or args.spark_master is not None:
        from pilot_lib.config import load_pilot
        from pilot_lib.ingest.engine import resolve_engine

        engine = resolve_engine(load_pilot(args.pilot).engine, args.engine, args.spark_master)
    report = validate_pilot(args.pilot, quarantine_dir=args.quarantine_dir, engine=engine)
    print(report.to_text())
    _print_paths_outside(args.pilot)
    return EXIT_OK


def _print_paths_outside(pilot_arg: str) -> None:
    """Data paths that leave the pilot folder, shown resolved (allowed; easy to get wrong)."""
    from pilot_lib.config import load_pilot, paths_outside

    outside = paths_outside(load_pilot(pilot_arg))
    if outside:
        print("")
        print("data read from outside the pilot folder (allowed; check these are meant):")
        for field, written, resolved in outside:
            print(f"  {field}: {written} -> {resolved}")


def _cmd_synth(args: argparse.Namespace) -> int:
    from pilot_lib.synth import generate_pilot

    folder = generate_pilot(args.preset, args.out, rows=args.rows, seed=args.seed, fmt=args.format)
    print(f"wrote pilot {args.preset!r} to {folder}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from pilot_lib.report.export import write_portfolio
    from pilot_lib.runner import run_pilots

    outcomes = run_pilots(
        args.pilots,
        args.out,
        phases=args.phases,
        jobs=args.jobs,
        export=not args.no_export,
        notebooks=args.notebooks,
        engine=args.engine,
        spark_master=args.spark_master,
        interim=args.interim,
        parameters=_parameters(args),
        timeout=args.timeout,
    )
    failed = [o for o in outcomes if not o.ok]
    out = sys.stderr if args.json else sys.stdout  # --json: stdout holds only the JSON
    pdf_problem = None
    if args.pdf:
        pdf_problem = (
            "--pdf prints the HTML pages, which --no-export left out"
            if args.no_export
            else _run_pdfs(outcomes)
        )
    for o in outcomes:
        if o.ok:
            page = o.go_no_go_page
            where = f"go/no-go page: {page}" if page else f"run folder: {o.run_dir}"
            look = " (INTERIM look, anytime-valid intervals)" if o.interim else ""
            print(f"{o.pilot}: {o.decision or 'done'}{look}; {where}", file=out)
            for ph in o.phases:
                if ph.error:  # e.g. an HTML export that failed; the data are complete
                    print(f"  warning: phase {ph.phase} ({ph.key}): {ph.error}", file=sys.stderr)
        else:
            print(f"{o.pilot}: FAILED. {o.error}", file=sys.stderr)
            if o.run_dir:
                kept = "with the failed notebook" if _failed_phase(o) else "with what was done"
                print(f"  run folder (kept, {kept}): {o.run_dir}", file=sys.stderr)
    if len(outcomes) > 1:
        print(f"portfolio page: {write_portfolio(args.out)}", file=out)
    if pdf_problem:
        print(f"warning: no PDFs: {pdf_problem}", file=sys.stderr)
    if args.json:
        print(json.dumps({"pilots": [_json_summary(o) for o in outcomes]}, indent=2))
    if failed:
        return EXIT_FAILED
    if args.fail_on == "no-go" and any(o.decision == "NO-GO" for o in outcomes):
        print("exit 1: a pilot came out NO-GO (--fail-on no-go)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run_pdfs(outcomes: list[PilotRun]) -> str | None:
    """``run --pdf``: print each run's pages to PDFs; the problem (no Chromium) or None.

    A run that succeeded stays succeeded without PDFs: the message says how to
    get a Chromium, the exit code is the run's. A page that fails to print is a
    warning naming the page.
    """
    from pilot_lib.report.export import print_run_pdfs
    from pilot_lib.report.pdf import ChromiumNotFound, PrintFailed, find_chromium
    from pilot_lib.report.runpages import plural, write_run_pages

    try:
        chromium = find_chromium()
    except ChromiumNotFound as exc:
        return str(exc)
    for o in outcomes:
        if not o.run_dir:
            continue
        try:
            pdfs = print_run_pdfs(o.run_dir, chromium=chromium)
            write_run_pages(o.run_dir)  # the index page links the PDFs
        except (PrintFailed, OSError) as exc:
            print(f"warning: {o.pilot}: PDFs not written: {exc}", file=sys.stderr)
            continue
        if pdfs:
            print(f"{o.pilot}: {plural(len(pdfs), 'PDF')} in {o.run_dir}", file=sys.stderr)
    return None


def _json_summary(outcome: PilotRun) -> dict[str, Any]:
    """One pilot's entry of ``run --json``: the run folder's ``summary.json`` (or the outcome)."""
    from pilot_lib.report.runpages import run_summary

    if outcome.run_dir and (Path(outcome.run_dir) / "run.json").is_file():
        return run_summary(outcome.run_dir)
    return {
        "pilot": outcome.pilot,
        "title": outcome.title,
        "run_id": outcome.run_id or None,
        "run_dir": outcome.run_dir,
        "status": outcome.status,
        "complete": False,
        "decision": outcome.decision,
        "reasons": [],
        "kpis": [],
        "blocking_findings": [],
        "coverage": None,
        "error": outcome.error,
    }


def _cmd_export(args: argparse.Namespace) -> int:
    from pilot_lib.errors import WorkbookError
    from pilot_lib.report.export import export_run
    from pilot_lib.runs import latest_run_dir

    folder = Path(args.run_dir)
    if not (folder / "run.json").is_file():
        latest = latest_run_dir(folder) if folder.is_dir() else None
        if latest is None:
            raise WorkbookError(
                f"{folder} is not a run folder (no run.json): give a folder "
                "OUT/<pilot>/<run-id> written by pilot-workbook run, or OUT/<pilot> for its latest run"
            )
        folder = latest
    summary = export_run(folder, html=not args.no_html, pdf=args.pdf)
    written = ["summary.md", "summary.json", "index.html"] + summary["pdfs"]
    print(f"exported {folder}: {', '.join(written)}")
    return EXIT_OK


def _parameters(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``-p NAME VALUE`` and ``--param NAME=VALUE``, in the order given."""
    from pilot_lib.errors import WorkbookError

    pairs = [(name, value) for name, value in args.param_pairs or []]
    for item in args.param_items or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise WorkbookError(f"--param takes NAME=VALUE, got {item!r} (or use -p NAME VALUE)")
        pairs.append((name.strip(), value))
    return pairs


def _failed_phase(outcome: PilotRun) -> bool:
    """Whether a notebook failed (rather than the ingest, before any notebook ran)."""
    return any(ph.status == "failed" for ph in outcome.phases)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["duckdb", "spark"],
        default=None,
        help="engine that reads and checks the data (default: the pilot file's engine:)",
    )
    p.add_argument(
        "--spark-master",
        default=None,
        metavar="URL",
        help="Spark master or Spark Connect URL (local[*], spark://host:7077, sc://host:15002); "
        "implies --engine spark",
    )


def _cmd_portfolio(args: argparse.Namespace) -> int:
    from pilot_lib.errors import WorkbookError
    from pilot_lib.report.export import write_portfolio

    if not Path(args.dir).is_dir():
        raise WorkbookError(
            f"{args.dir} is not a folder of pilot runs (pilot-workbook run --out DIR)"
        )
    page = write_portfolio(args.dir)
    print(f"portfolio page: {page}")
    if args.pdf:
        from pilot_lib.report.pdf import PdfJob, print_pdfs

        (pdf,) = print_pdfs([PdfJob(page, page.with_suffix(".pdf"), "Pilot portfolio")])
        print(f"portfolio PDF: {pdf}")
    return EXIT_OK


def _cmd_seal(args: argparse.Namespace) -> int:
    import datetime as dt

    from pilot_lib.analysis.integrity import seal_thresholds
    from pilot_lib.config import load_pilot

    pilot = load_pilot(args.pilot)
    day = dt.date.fromisoformat(args.on) if args.on else None
    lock = seal_thresholds(pilot, sealed_on=day)
    print(f"sealed {len(pilot.kpis)} thresholds of {pilot.name} in {lock}")
    return EXIT_OK


def _cmd_new(args: argparse.Namespace) -> int:
    from pilot_lib.scaffold import new_pilot

    folder = new_pilot(args.dir)
    print(f"new pilot folder: {folder}")
    print("  next: fill in pilot.yaml and the data files, then")
    print(f"  pilot-workbook validate {folder}")
    return EXIT_OK


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from pilot_lib.scaffold import copy_notebooks

    copied = copy_notebooks(args.dir, overwrite=args.force)
    print(f"copied {len(copied)} phase notebooks to {Path(args.dir).resolve()}")
    print("  open them in JupyterLab and set `pilot` in each parameters cell")
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
    _add_engine_options(p)
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
    p.add_argument(
        "--format",
        choices=("parquet", "otel"),
        default="parquet",
        help="decision log as Parquet (default) or as OpenTelemetry traces (OTLP JSON Lines)",
    )
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("run", help="execute the phase notebooks for one or many pilots")
    p.add_argument("pilots", nargs="+", metavar="PILOT", help="pilot folders or pilot.yaml files")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="run folders go in OUT/<pilot>/<run-id> (default: runs)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="notebook kernels running at once, across all pilots "
        "(default: the number of cores, at most 4)",
    )
    p.add_argument("--phases", default=None, help="phases to run, e.g. 1,2,5 (default: all)")
    p.add_argument("--no-export", action="store_true", help="skip the HTML exports")
    p.add_argument(
        "--pdf",
        action="store_true",
        help="also print every page to PDF (A4) with a headless Chromium "
        "(chromium on the PATH, or PILOT_WORKBOOK_CHROMIUM=/path/to/chrome); without one the "
        "run still counts and a message says how to get one",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a machine-readable summary of every pilot on stdout (for CI); "
        "everything else goes to stderr",
    )
    p.add_argument(
        "--fail-on",
        choices=["error", "no-go"],
        default="error",
        help="'no-go': also exit 1 when a pilot comes out NO-GO (for CI gates)",
    )
    p.add_argument(
        "--notebooks",
        type=Path,
        default=None,
        help="folder of the phase notebooks (default: the checkout's)",
    )
    p.add_argument(
        "--interim",
        action="store_true",
        help="an interim look before the pilot window ends: the gate judges with anytime-valid "
        "intervals (confidence sequences) and every page says 'interim'; run without it at the "
        "window's end for the final decision",
    )
    p.add_argument(
        "-p",
        nargs=2,
        action="append",
        dest="param_pairs",
        metavar=("NAME", "VALUE"),
        help="a notebook parameter for every phase that declares it, parsed by its declared "
        "type (papermill --help-notebook NOTEBOOK lists them); repeat for more",
    )
    p.add_argument(
        "--param",
        action="append",
        dest="param_items",
        metavar="NAME=VALUE",
        help="the same as -p NAME VALUE",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="longest a notebook cell may run; a cell that runs longer fails its phase "
        "(default: no limit)",
    )
    _add_engine_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("portfolio", help="one page comparing the latest run of every pilot")
    p.add_argument("dir", type=Path, help="the --out folder of earlier runs")
    p.add_argument(
        "--pdf",
        action="store_true",
        help="also print it to PDF (A4 landscape) with a headless Chromium",
    )
    p.set_defaults(func=_cmd_portfolio)

    p = sub.add_parser("new", help="scaffold a pilot folder: a commented pilot.yaml, empty data")
    p.add_argument("dir", type=Path, help="the pilot folder to create (must not exist or be empty)")
    p.set_defaults(func=_cmd_new)

    p = sub.add_parser("notebooks", help="copy the phase notebooks for an analyst's JupyterLab")
    p.add_argument("dir", type=Path, help="folder to copy them into (created if needed)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    p.set_defaults(func=_cmd_notebooks)

    p = sub.add_parser(
        "export", help="write a run folder's pages again: HTML, summary, index page, PDFs"
    )
    p.add_argument(
        "run_dir",
        type=Path,
        help="a run folder (OUT/<pilot>/<run-id>), or OUT/<pilot> for its latest",
    )
    p.add_argument(
        "--pdf",
        action="store_true",
        help="print the pages to PDF with a headless Chromium (exit 2 with how to get one if none)",
    )
    p.add_argument(
        "--no-html", action="store_true", help="keep the HTML pages as they are (do not re-export)"
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "seal", help="record the KPI thresholds' fingerprint before the pilot starts"
    )
    p.add_argument("pilot", help="pilot folder or its pilot.yaml")
    p.add_argument(
        "--on", default=None, help="the day the thresholds were agreed (YYYY-MM-DD; default today)"
    )
    p.set_defaults(func=_cmd_seal)
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
    except KeyboardInterrupt as exc:  # runner.RunInterrupted says which run folders
        import signal

        summary = getattr(exc, "summary", None)
        print(summary() if callable(summary) else "interrupted", file=sys.stderr)
        if getattr(exc, "signal_number", signal.SIGINT) == signal.SIGTERM:
            return EXIT_TERMINATED
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

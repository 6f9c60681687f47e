"""Batch runs: every phase notebook for one pilot, or many, with papermill.

``run_pilots(pilots, out_root)`` gives each pilot a fresh run folder
``<out_root>/<pilot>/<run-id>/`` (run id: UTC time plus a short random suffix)
holding the executed notebooks, their HTML exports, every phase result JSON,
the quarantine files and a ``run.json`` manifest. An earlier run is never
overwritten or deleted. ``<out_root>/<pilot>/latest`` points at the newest run
that finished; it moves only when a run finished.

Phases of one pilot run in order; a failing phase stops that pilot's later
phases and keeps the executed notebook with the error in place. Several
pilots run in parallel processes (``jobs``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import queue
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pilot_lib import __version__
from pilot_lib.config import PilotFileError, load_pilot, pilot_file_path
from pilot_lib.errors import WorkbookError
from pilot_lib.runs import latest_run_dir, new_run_id, point_latest

__all__ = [
    "PHASE_NOTEBOOKS",
    "PilotRun",
    "latest_run_dir",
    "new_run_id",
    "notebooks_dir",
    "parse_phases",
    "run_pilot",
    "run_pilots",
]

#: Phase number -> (result key, notebook file).
PHASE_NOTEBOOKS: dict[int, tuple[str, str]] = {
    1: ("use_case_scoring", "01_use_case_scoring.ipynb"),
    2: ("kpi_baselining", "02_kpi_baselining.ipynb"),
    3: ("drift_analysis", "03_drift_analysis.ipynb"),
    4: ("incident_drill_review", "04_incident_drill_review.ipynb"),
    5: ("go_no_go_summary", "05_go_no_go_summary.ipynb"),
}


def notebooks_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding the phase notebooks: ``explicit``, else the checkout's ``notebooks/``."""
    from pilot_lib.report.notebook import repo_root

    if explicit is not None:
        folder = Path(explicit)
    else:
        root = repo_root()
        folder = root / "notebooks" if root else Path("notebooks")
    missing = [nb for _, nb in PHASE_NOTEBOOKS.values() if not (folder / nb).is_file()]
    if missing:
        raise WorkbookError(
            f"phase notebooks not found in {folder} (missing {', '.join(missing)}); "
            "run from a clone of the workbook or pass --notebooks DIR"
        )
    return folder


def parse_phases(text: str | Sequence[int] | None) -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]``; None -> all five phases."""
    if text is None:
        return sorted(PHASE_NOTEBOOKS)
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        phases = sorted({int(str(x).strip()) for x in items if str(x).strip()})
    except ValueError:
        raise WorkbookError(
            f"--phases takes numbers 1-5 separated by commas, got {text!r}"
        ) from None
    bad = [p for p in phases if p not in PHASE_NOTEBOOKS]
    if bad or not phases:
        raise WorkbookError(f"--phases takes numbers 1-5 separated by commas, got {text!r}")
    return phases


@dataclass
class PhaseRun:
    phase: int
    key: str
    notebook: str
    status: str = "pending"  # pending | succeeded | failed | skipped
    seconds: float | None = None
    html: str | None = None
    error: str | None = None


@dataclass
class PilotRun:
    """The outcome of one pilot's run (also written as ``run.json``)."""

    pilot: str
    pilot_path: str
    run_dir: str | None
    run_id: str
    status: str = "running"  # succeeded | failed
    decision: str | None = None
    title: str | None = None
    pilot_file_sha256: str | None = None
    package_version: str = __version__
    started_at: str | None = None
    finished_at: str | None = None
    phases: list[PhaseRun] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def go_no_go_page(self) -> Path | None:
        if self.run_dir is None:
            return None
        page = Path(self.run_dir) / "05_go_no_go_summary.html"
        return page if page.is_file() else None


#: The kernel's own log (not the notebook's output): errors only. ipykernel 7
#: warns on every start that its local TCP sockets are not encrypted, one line
#: per phase in a CI log; real kernel errors are still printed.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)


#: Longest single wait on a kernel socket before its events are checked again (seconds).
POLL_SLICE_SECONDS = 0.5


@functools.cache
def _kernel_manager_class() -> type:
    """jupyter_client's kernel manager with two fixes for unattended batch runs.

    1. No interrupt at shutdown. ``AsyncKernelManager.shutdown_kernel`` first
       sends SIGINT "to stop running code", then shuts the kernel down. By then
       papermill has every cell's reply and output, so nothing is running; the
       signal only lands in whatever message handler the kernel is in, which
       prints "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel" between
       phases (and, with a graceful shutdown, at times kept the kernel from
       exiting until SIGTERM 2.5 s later). Every other interrupt is kept.
    2. No lost wake-ups. pyzmq's asyncio poll now and then misses the edge of a
       socket's read event (seen here in cells that display widgets): the reply
       sits in the socket while nbclient waits, without a time-out, forever. The
       kernel client's channels wait in slices of :data:`POLL_SLICE_SECONDS`;
       every slice ends with a fresh check of the socket, so a missed wake-up
       costs half a second instead of the run. Time-outs keep their meaning.

    :func:`run_pilot` also asks nbclient for an immediate shutdown: the phase
    results and quarantine files are complete when the last cell replies, and
    a graceful exit of a kernel holding pandas, DuckDB and matplotlib spent
    0.6-2.5 s per phase tearing the interpreter down.
    """
    from queue import Empty

    from jupyter_client.asynchronous import AsyncKernelClient
    from jupyter_client.channels import AsyncZMQSocketChannel
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Type, default

    class SlicedPollChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                step = (
                    POLL_SLICE_SECONDS if left is None else max(0.0, min(left, POLL_SLICE_SECONDS))
                )
                try:
                    return await super().get_msg(timeout=step)
                except Empty:
                    if left is not None and left <= POLL_SLICE_SECONDS:
                        raise

    class SlicedPollClient(AsyncKernelClient):
        shell_channel_class = Type(SlicedPollChannel)
        iopub_channel_class = Type(SlicedPollChannel)
        stdin_channel_class = Type(SlicedPollChannel)
        control_channel_class = Type(SlicedPollChannel)

    class BatchKernelManager(AsyncKernelManager):
        @default("client_factory")
        def _client_factory_default(self) -> type:
            return SlicedPollClient

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return BatchKernelManager


def _one_line(text: str, most: int = 5) -> str:
    """A multi-line message on one line: ``head: item; item`` (e.g. a PilotFileError's
    problem list), the first ``most`` items and a count of the rest."""
    lines = [ln.strip().removeprefix("- ").strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    head, items = lines[0], lines[1:]
    more = f"; and {len(items) - most} more" if len(items) > most else ""
    return f"{head.rstrip(':')}: {'; '.join(items[:most])}{more}"


def _describe_failure(pilot: str, phase: PhaseRun, exc: BaseException) -> str:
    """One readable line: pilot, phase, the cell (as Jupyter numbers it) and the exception."""
    from papermill.exceptions import PapermillExecutionError

    where = f"pilot {pilot}: phase {phase.phase} ({phase.key}) failed"
    if isinstance(exc, PapermillExecutionError):
        detail = f"{exc.ename}: {_one_line(exc.evalue)}" if exc.evalue else exc.ename
        return (
            f"{where} at cell In [{exc.exec_count}]: {detail} "
            f"(the executed notebook with the error: {phase.notebook})"
        )
    return f"{where}: {type(exc).__name__}: {exc}"


def run_pilot(
    pilot: str | Path,
    out_root: str | Path,
    phases: Sequence[int] | None = None,
    export: bool = True,
    notebooks: str | Path | None = None,
    run_id: str | None = None,
    progress: Callable[[str, int, str], None] | None = None,
    kernel_name: str = "python3",
) -> PilotRun:
    """Execute the phase notebooks for one pilot into a fresh run folder.

    Parameters
    ----------
    pilot:
        Pilot folder or pilot.yaml.
    out_root:
        Parent of the per-pilot run folders.
    phases:
        Phase numbers to run, in order (default all five).
    export:
        Write an HTML export (no code) next to each executed notebook.
    progress:
        Called as ``progress(pilot, phase, status)`` after each phase.

    Never raises for a failing phase: the outcome says what failed, where.
    """
    import papermill as pm

    nb_dir = notebooks_dir(notebooks)
    phases = parse_phases(phases)
    pilot_file = pilot_file_path(pilot).resolve()
    name = pilot_file.parent.name
    title = sha = None
    try:
        loaded = load_pilot(pilot_file)
        name, title, sha = loaded.name, loaded.title, loaded.file_hash
    except PilotFileError:
        pass  # the first notebook reports the problems, in the run folder, with the rest
    run_id = run_id or new_run_id()
    pilot_folder = Path(out_root).resolve() / name
    run_dir = pilot_folder / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    outcome = PilotRun(
        pilot=name,
        pilot_path=str(pilot_file),
        run_dir=str(run_dir),
        run_id=run_id,
        title=title,
        pilot_file_sha256=sha,
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        phases=[PhaseRun(p, *PHASE_NOTEBOOKS[p]) for p in phases],
    )
    failed = False
    for ph in outcome.phases:
        if failed:
            ph.status = "skipped"
            continue
        target = run_dir / ph.notebook
        started = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb_dir / ph.notebook),
                str(target),
                parameters={"pilot": str(pilot_file), "output_dir": str(run_dir)},
                kernel_name=kernel_name,
                cwd=str(run_dir),
                progress_bar=False,
                log_output=False,
                kernel_manager_class=_kernel_manager_class(),
                shutdown_kernel="immediate",
                extra_arguments=list(KERNEL_ARGUMENTS),
            )
            ph.status = "succeeded"
        except Exception as exc:  # a failed phase must not stop other pilots
            ph.status = "failed"
            ph.error = _describe_failure(name, ph, exc)
            outcome.error = ph.error
            failed = True
        ph.seconds = round(time.perf_counter() - started, 2)
        if export and target.is_file():
            try:
                from pilot_lib.report.export import export_html

                html_path = export_html(
                    target, target.with_suffix(".html"), title=f"{title or name}: {ph.key}"
                )
                ph.html = html_path.name
            except Exception as exc:  # export trouble is reported, not fatal to the data
                ph.error = (ph.error + "; " if ph.error else "") + f"HTML export failed: {exc}"
        if progress:
            progress(name, ph.phase, ph.status)
    outcome.status = "failed" if failed else "succeeded"
    gate_file = run_dir / "go_no_go_summary.json"
    if gate_file.is_file():
        outcome.decision = json.loads(gate_file.read_text(encoding="utf-8"))["result"].get(
            "decision"
        )
    outcome.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (run_dir / "run.json").write_text(
        json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8"
    )
    if outcome.ok:
        point_latest(pilot_folder, run_dir)
    return outcome


def _worker(args: dict[str, Any], events: Any) -> PilotRun:
    def report(pilot: str, phase: int, status: str) -> None:
        events.put((pilot, phase, status))

    try:
        return run_pilot(progress=report, **args)
    except Exception as exc:  # e.g. an unwritable output folder
        return PilotRun(
            pilot=Path(str(args["pilot"])).name,
            pilot_path=str(args["pilot"]),
            run_dir=None,
            run_id="",
            status="failed",
            error=f"pilot {args['pilot']}: {type(exc).__name__}: {exc}",
        )


class _Progress:
    """A tqdm bar on a terminal; plain lines otherwise (CI logs)."""

    def __init__(self, total: int, stream: Any = None):
        self.stream = stream or sys.stderr
        self.bar = None
        if hasattr(self.stream, "isatty") and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="phase", file=self.stream, dynamic_ncols=True)

    def __call__(self, pilot: str, phase: int, status: str) -> None:
        text = f"{pilot}: phase {phase} ({PHASE_NOTEBOOKS[phase][0]}) {status}"
        if self.bar is not None:
            self.bar.set_description(text)
            self.bar.update(1)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_pilots(
    pilots: Sequence[str | Path],
    out_root: str | Path,
    phases: Sequence[int] | str | None = None,
    jobs: int = 1,
    export: bool = True,
    notebooks: str | Path | None = None,
    stream: Any = None,
) -> list[PilotRun]:
    """Run several pilots, up to ``jobs`` at once; returns one outcome per pilot, in input order."""
    phase_list = parse_phases(phases)
    nb_dir = notebooks_dir(notebooks)
    if jobs < 1:
        raise WorkbookError(f"--jobs must be at least 1, got {jobs}")
    show = _Progress(total=len(pilots) * len(phase_list), stream=stream)
    common = {
        "out_root": str(out_root),
        "phases": phase_list,
        "export": export,
        "notebooks": str(nb_dir),
    }
    outcomes: dict[int, PilotRun] = {}
    try:
        if jobs == 1 or len(pilots) == 1:
            for i, p in enumerate(pilots):
                outcomes[i] = _worker({"pilot": str(p), **common}, _Direct(show))
        else:
            import multiprocessing as mp

            # "spawn": fresh worker interpreters, so no lock held by another thread
            # of the caller (a DuckDB pool, a test runner) is copied into a worker
            # by fork; the same on every platform, and about a second per worker.
            context = mp.get_context("spawn")
            with context.Manager() as manager:
                events = manager.Queue()
                with ProcessPoolExecutor(
                    max_workers=min(jobs, len(pilots)), mp_context=context
                ) as pool:
                    futures = {
                        pool.submit(_worker, {"pilot": str(p), **common}, events): i
                        for i, p in enumerate(pilots)
                    }
                    pending = set(futures)
                    while pending:
                        _drain(events, show)
                        done = {f for f in pending if f.done()}
                        for f in done:
                            i = futures[f]
                            outcomes[i] = _outcome_of(f, pilots[i])
                        pending -= done
                        if pending:
                            time.sleep(0.2)
                    _drain(events, show)
    finally:
        show.close()
    return [outcomes[i] for i in range(len(pilots))]


def _outcome_of(future: Future[PilotRun], pilot: str | Path) -> PilotRun:
    """A worker's outcome; a worker process that died (killed, out of memory) is a failed run."""
    try:
        return future.result()
    except Exception as exc:
        return PilotRun(
            pilot=Path(str(pilot)).name,
            pilot_path=str(pilot),
            run_dir=None,
            run_id="",
            status="failed",
            error=f"pilot {pilot}: the worker process stopped: {type(exc).__name__}: {exc}",
        )


class _Direct:
    """Queue-like adaptor that forwards progress events straight to the display."""

    def __init__(self, show: _Progress):
        self.show = show

    def put(self, item: tuple[str, int, str]) -> None:
        self.show(*item)


def _drain(events: Any, show: _Progress) -> None:
    while True:
        try:
            show(*events.get_nowait())
        except queue.Empty:
            return

"""Batch runs: every phase notebook for one pilot, or many, with papermill.

``run_pilots(pilots, out_root)`` gives each pilot a fresh run folder
``<out_root>/<pilot>/<run-id>/`` (run id: UTC time plus a short random suffix)
holding the checked evidence store, the executed notebooks, their HTML
exports, every phase result JSON, the quarantine files and a ``run.json``
manifest. An earlier run is never overwritten or deleted.
``<out_root>/<pilot>/latest`` points at the newest run that finished; it moves
only when a run finished.

A pilot's run:

1. **Ingest**: every data set is read and checked once into ``<run>/store``
   (quarantine: ``<run>/quarantine``) with the engine of the pilot file or of
   ``--engine``/``--spark-master``. Every phase notebook then reuses that store.
   An ingest failure fails the run with one line; no phase runs.
2. **Phases 1-4** read only the store: they run concurrently.
3. **Phase 5** reads their result files: it runs when all of them succeeded,
   and is skipped when one failed (the others still finish).

Each executed notebook is exported to HTML as soon as it finishes, while later
phases run. ``jobs`` bounds the number of notebook kernels running at once
across all pilots of one call (threads of this process drive them; each
papermill call has its own event loop). A kernel is started, and the
notebook's imports are loaded into it, while what the notebook waits for (the
ingest, the earlier phases) is still running. A kernel that fails to start
(e.g. a port taken between being chosen and being bound) is started again on
fresh ports, up to :data:`KERNEL_START_ATTEMPTS` times; a notebook whose cells
began is never re-run.

Before anything starts, every pilot file is loaded and checked, and the
output folder is proved writable (:func:`check_before_run`): a mistyped path or
an invalid pilot file stops the whole call with the ``validate`` message, and
no run folder is made.

Every run folder says what it is: ``run.json`` is written (atomically) when the
folder is made, with ``status: running``, and again after the ingest and every
phase. Ctrl-C (SIGINT) or SIGTERM stops the kernels, marks each unfinished run
``interrupted`` and leaves ``latest`` alone (:class:`RunInterrupted`). A file
that cannot be written (a full disk, a read-only folder) fails the run, and
``run.json`` names the file; the runner keeps a small reserve file in each run
folder while it runs, and frees it to write that last ``run.json`` on a full
disk.

``parameters`` (``-p NAME VALUE``) are typed notebook parameters passed to every
phase whose parameters cell declares them (:func:`notebook_parameters`);
``timeout`` bounds each cell (seconds).
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import errno
import functools
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pilot_lib import __version__
from pilot_lib._kernel import exec_line as _warnings_exec_line
from pilot_lib.config import Pilot, PilotFileError, load_pilot, pilot_file_path
from pilot_lib.errors import WorkbookError
from pilot_lib.runs import (
    atomic_write_text,
    check_writable,
    latest_run_dir,
    new_run_id,
    overwrite_in_place,
    point_latest,
    release_reserve,
    reserve_space,
)

__all__ = [
    "KERNEL_START_ATTEMPTS",
    "PHASE_NOTEBOOKS",
    "IngestRun",
    "PhaseRun",
    "PilotRun",
    "RunInterrupted",
    "check_before_run",
    "default_jobs",
    "latest_run_dir",
    "new_run_id",
    "notebook_parameters",
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

#: The phase that reads the others' result files; every other phase reads only the store.
GATE_PHASE = 5

#: Starts of one notebook's kernel before the phase fails (the first included).
KERNEL_START_ATTEMPTS = 3

#: Longest wait for a started kernel to answer (seconds; papermill's default).
KERNEL_START_TIMEOUT = 60.0

#: How long a kernel may take to load a notebook's imports ahead of its cells (seconds).
WARM_UP_TIMEOUT = 120.0

#: Longest wait, after Ctrl-C, for the notebook threads to see their kernels gone (seconds).
INTERRUPT_GRACE_SECONDS = 15.0


def default_jobs() -> int:
    """Default ``--jobs``: one notebook kernel per core, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


def notebooks_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding the phase notebooks.

    ``explicit`` (``--notebooks DIR``) when given; else the checkout's
    ``notebooks/`` (a clone, or an editable install); else the copy that travels
    inside the installed package (``pilot_lib/notebooks``, put there when the
    wheel is built).
    """
    if explicit is not None:
        folder = Path(explicit)
    else:
        # as pilot_lib.report.notebook.repo_root, without importing pandas before the first
        # kernel starts
        root = Path(__file__).resolve().parents[1]
        is_checkout = (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file()
        folder = (
            root / "notebooks" if is_checkout else Path(__file__).resolve().parent / "notebooks"
        )
    missing = [nb for _, nb in PHASE_NOTEBOOKS.values() if not (folder / nb).is_file()]
    if missing:
        raise WorkbookError(
            f"phase notebooks not found in {folder} (missing {', '.join(missing)}); "
            "reinstall the package (pip install agentic-pilot-workbook), run from a clone of "
            "the workbook, or pass --notebooks DIR"
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
    status: str = "pending"  # pending | succeeded | failed | skipped | interrupted
    seconds: float | None = None  # the notebook's cells, from the first to the last
    html: str | None = None
    error: str | None = None
    attempts: int = 0  # kernel starts (more than 1: a start failed and was retried)
    start_errors: list[str] = field(default_factory=list)  # why a start was retried


@dataclass
class IngestRun:
    """The ingest stage: the checked evidence store built once for the run."""

    status: str = "pending"  # pending | succeeded | failed | skipped | interrupted
    seconds: float | None = None
    engine: str | None = None  # e.g. "duckdb (memory limit 1GB)"
    store: str | None = None  # folder, relative to the run folder
    fingerprint: str | None = None
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PilotRun:
    """The outcome of one pilot's run (also written as ``run.json``)."""

    pilot: str
    pilot_path: str
    run_dir: str | None
    run_id: str
    status: str = "running"  # succeeded | failed | interrupted
    decision: str | None = None
    title: str | None = None
    pilot_file_sha256: str | None = None
    interim: bool = False  # an interim look: anytime-valid intervals, not the final gate
    parameters: dict[str, Any] = field(default_factory=dict)  # -p NAME VALUE, as typed
    timeout: float | None = None  # --timeout: longest a cell may run (seconds)
    package_version: str = __version__
    started_at: str | None = None
    finished_at: str | None = None
    ingest: IngestRun | None = None
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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run. ``outcomes``: every pilot's outcome, the unfinished
    ones ``interrupted`` (their ``run.json`` says so; ``latest`` did not move).
    ``signal_number``: the signal that stopped the run (SIGINT for Ctrl-C)."""

    def __init__(self, outcomes: list[PilotRun], signal_number: int = signal.SIGINT):
        super().__init__("interrupted")
        self.outcomes = outcomes
        self.signal_number = int(signal_number)

    def summary(self) -> str:
        """One line for the command line."""
        stopped = [o for o in self.outcomes if o.status == "interrupted"]
        folders = [o.run_dir for o in stopped if o.run_dir]
        if not folders:
            return "interrupted: no run folder was started"
        return (
            f"interrupted: {len(folders)} run folder(s) marked interrupted, "
            f"latest not moved: {', '.join(folders)}"
        )


#: The kernel's own log (not the notebook's output): errors only. ipykernel 7
#: warns on every start that its local TCP sockets are not encrypted, one line
#: per phase in a CI log; real kernel errors are still printed.
#: No input history database either: concurrent batch kernels would share (and
#: lock) one SQLite file, and nobody reads a batch kernel's history.
#: Python warnings go to ``warnings.log`` in the run folder, not into the pages
#: (:mod:`pilot_lib._kernel`).
KERNEL_ARGUMENTS = (
    "--IPKernelApp.log_level=ERROR",
    "--HistoryManager.enabled=False",
    _warnings_exec_line(),
)


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

    The runner also shuts each kernel down immediately (``now=True``): the
    phase results and quarantine files are complete when the last cell
    replies, and a graceful exit of a kernel holding pandas, DuckDB and
    matplotlib spent 0.6-2.5 s per phase tearing the interpreter down.
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
        #: The run's :class:`~pilot_lib._kernel_template.KernelTemplate` (set by the runner),
        #: or None: then the kernel is spawned as jupyter_client does.
        kernel_template: Any = None
        #: Set by the runner: an event that stops a wait for the template (Ctrl-C).
        cancelled: Any = None

        @default("client_factory")
        def _client_factory_default(self) -> type:
            return SlicedPollClient

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            template = self.kernel_template
            provisioner = self.provisioner
            if template is None or provisioner is None or not template.can_fork(kernel_cmd):
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            import asyncio

            from pilot_lib._kernel_template import TemplateUnavailable

            try:
                process = await asyncio.get_running_loop().run_in_executor(
                    None,
                    functools.partial(
                        template.launch,
                        kernel_cmd,
                        cwd=str(kw.get("cwd") or os.getcwd()),
                        env=dict(kw.get("env") or os.environ),
                        stderr=kw.get("stderr"),
                        timeout=WARM_UP_TIMEOUT,
                        cancelled=self.cancelled,
                    ),
                )
            except TemplateUnavailable:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            provisioner.process = process
            provisioner.pid = process.pid
            provisioner.pgid = process.pid  # the child made its own session
            provisioner.cwd = kw.get("cwd")
            self._reconcile_connection_info(provisioner.connection_info)

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


#: errno values of a file that could not be written (full disk, quota, read-only, denied).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _is_cell_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is nbclient's cell time-out (``--timeout``), directly or as the cause."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None and type(e).__name__ in ("CellTimeoutError", "DeadKernelError"):
            return type(e).__name__ == "CellTimeoutError"
    return False


def _io_error_text(exc: OSError, default_file: str | None = None) -> str:
    """``could not write FILE: reason`` for a file the run could not write."""
    name = exc.filename or default_file
    reason = exc.strerror or str(exc)
    if name:
        return f"could not write {name}: {reason} ({type(exc).__name__}, errno {exc.errno})"
    return f"{type(exc).__name__}: {reason}"


def _describe_failure(
    pilot: str, phase: PhaseRun, exc: BaseException, timeout: float | None = None
) -> str:
    """One readable line: pilot, phase, the cell (as Jupyter numbers it) and the exception."""
    _import_papermill()
    from papermill.exceptions import PapermillExecutionError

    where = f"pilot {pilot}: phase {phase.phase} ({phase.key}) failed"
    if _is_cell_timeout(exc):
        return (
            f"{where}: a cell ran longer than the --timeout of {timeout:g} s and was stopped "
            f"(the executed notebook up to that cell: {phase.notebook}); raise --timeout, "
            "or run without it"
            if timeout
            else f"{where}: a cell timed out: {_one_line(str(exc))}"
        )
    if isinstance(exc, OSError):
        return f"{where}: {_io_error_text(exc, phase.notebook)}"
    if isinstance(exc, PapermillExecutionError):
        detail = f"{exc.ename}: {_one_line(exc.evalue)}" if exc.evalue else exc.ename
        return (
            f"{where} at cell In [{exc.exec_count}]: {detail} "
            f"(the executed notebook with the error: {phase.notebook})"
        )
    return f"{where}: {type(exc).__name__}: {_one_line(str(exc))}"


def _whole_json(path: Path) -> bool:
    """Whether ``path`` holds a whole JSON document (not empty, not cut short)."""
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def _describe_ingest_failure(pilot: str, exc: BaseException) -> str:
    """One readable line for a store that could not be built (no traceback)."""
    return (
        f"pilot {pilot}: ingest (the checked evidence store) failed: "
        f"{type(exc).__name__}: {_one_line(str(exc))}"
    )


# ---- one notebook on a kernel the runner started ------------------------------------


class KernelStartError(RuntimeError):
    """A notebook's kernel did not start, :data:`KERNEL_START_ATTEMPTS` times."""


class _Cancelled(Exception):
    """The notebook is not to run: what it needs failed, or the run was interrupted."""


_ENGINE = "pilot-workbook"


def _import_papermill() -> Any:
    """``import papermill``, without the second it spends on a grammar it never uses.

    papermill imports nbformat, nbformat imports jsonschema, and jsonschema
    imports ``rfc3987_syntax`` when it is installed (JupyterLab's jupyter-events
    installs it) to check "iri" formats, which no notebook schema has: building
    its Lark grammar costs 1.2 s of CPU, in the process that is building the
    store at that moment. When jsonschema is not loaded yet it is loaded here
    with that one optional module reported missing (jsonschema then leaves the
    "iri" format unchecked), and the module is importable again right after.
    """
    if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
        try:
            import jsonschema  # noqa: F401
        finally:
            if sys.modules.get("rfc3987_syntax", 0) is None:
                del sys.modules["rfc3987_syntax"]
    import papermill

    return papermill


@functools.cache
def _engine_name() -> str:
    """Register (once) the papermill engine that runs a notebook on a started kernel.

    papermill's own engine runs the kernel it starts; this one takes the kernel
    the runner started (``km=``), marks when the first cell begins (so a failure
    before it counts as a failed start) and closes its client's sockets after.
    """
    _import_papermill()
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class MarkingClient(PapermillNotebookClient):
        def __init__(self, nb_man: Any, cells_started: threading.Event, **kw: Any):
            super().__init__(nb_man, **kw)
            self.cells_started = cells_started

        def papermill_execute_cells(self) -> None:
            self.cells_started.set()
            super().papermill_execute_cells()

    class StartedKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: float = KERNEL_START_TIMEOUT,
            execution_timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            kwargs.pop("input_path", None)
            client = MarkingClient(
                nb_man,
                kwargs.pop("cells_started"),
                km=kwargs.pop("km"),
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                startup_timeout=start_timeout,
                timeout=execution_timeout,
                **kwargs,
            )
            try:
                return client.execute()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(_ENGINE, StartedKernelEngine)
    return _ENGINE


#: Modules a phase imports only once it runs (opening the store), per engine.
_LATE_IMPORTS: dict[str, tuple[str, ...]] = {
    "duckdb": ("pilot_lib.ingest.store", "ibis.backends.duckdb"),
    "spark": ("pilot_lib.ingest.store", "ibis.backends.pyspark", "pyspark.sql.connect.session"),
}


@functools.cache
def _notebook_imports(
    notebook: Path, engine: str | None = None
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``(module, names)`` pairs ``notebook``'s code cells import (absolute imports only);
    ``engine`` adds the modules that opening the store imports later. Empty when the
    notebook cannot be read."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return ()
    wanted: list[tuple[str, tuple[str, ...]]] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                wanted += [(alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                wanted.append((node.module, tuple(a.name for a in node.names if a.name != "*")))
    if engine and any(module.startswith("pilot_lib") for module, _ in wanted):
        wanted += [(module, ()) for module in _LATE_IMPORTS.get(engine, ())]
    return tuple(wanted)


@functools.cache
def _warm_up_code(notebook: Path, engine: str | None = None) -> str | None:
    """Code that imports, silently, the modules ``notebook`` imports (names bound: none).

    Run on a fresh kernel while the notebook still waits for its input (the
    store, the earlier phases), it moves the imports (a second or two of a
    phase) off the critical path: the notebook's own import lines then find the
    modules loaded (in a kernel forked from the run's template, most already are).
    Nothing is defined in the kernel's namespace, so a notebook that lacks an
    import still fails as it would. ``engine`` adds the modules that opening the
    store imports later.
    """
    wanted = list(_notebook_imports(notebook, engine))
    if not wanted:
        return None
    return (
        "def __pilot_workbook_warm_up(wanted):\n"
        "    import importlib\n"
        "    for module, names in wanted:\n"
        "        for name in (module, *(module + '.' + n for n in names)):\n"
        "            try:\n"
        "                importlib.import_module(name)\n"
        "            except Exception:\n"
        "                pass\n"
        f"__pilot_workbook_warm_up({wanted!r})\n"
        "del __pilot_workbook_warm_up\n"
    )


#: In a Spark run's folder: the ``sc://`` URL of the run's shared Spark session.
SPARK_URL_FILE = ".spark-connect-url"

#: In a Spark run's folder: the console output of the run's Spark JVM.
SPARK_LOG_FILE = "spark.log"

#: ``PILOT_WORKBOOK_FORK_KERNELS=0`` spawns every phase kernel afresh (no template).
FORK_KERNELS_ENV = "PILOT_WORKBOOK_FORK_KERNELS"


def _fork_kernels_enabled() -> bool:
    """Whether phase kernels are forked from a template (POSIX with ``fork``; not opted out)."""
    if os.environ.get(FORK_KERNELS_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    import socket

    return hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform != "win32"


def _kernel_python(kernel_name: str) -> str | None:
    """The interpreter kernel spec ``kernel_name`` runs with ``-m ipykernel_launcher``
    (``python`` meaning this one, as jupyter_client reads it), or None for another kernel."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        argv = list(KernelSpecManager().get_kernel_spec(kernel_name).argv)
    except Exception:
        return None
    if len(argv) < 3 or argv[1:3] != ["-m", "ipykernel_launcher"]:
        return None
    major, minor = sys.version_info[:2]
    if argv[0] in ("python", f"python{major}", f"python{major}.{minor}"):
        return sys.executable
    return argv[0]


def _last_line(log: Any) -> str:
    """The last non-empty line a failed kernel wrote to its stderr (the reason it died)."""
    try:
        log.flush()
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _kill_kernel(km: Any) -> None:
    """Kill a kernel's process group now, from any thread (Ctrl-C)."""
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is None or process.poll() is not None:
        return
    pgid = getattr(provisioner, "pgid", None)
    try:
        if pgid and hasattr(os, "killpg"):
            os.killpg(pgid, signal.SIGKILL)
        else:
            process.kill()
    except (OSError, ProcessLookupError):
        pass


class _KernelTask:
    """One phase notebook: its kernel started (and warmed up) early, its cells run on a go.

    Runs in a worker thread (:meth:`run`); the scheduler, in the caller's
    thread, calls :meth:`decide` once what the notebook needs is there (or
    failed) and :meth:`kill` on Ctrl-C. While the task runs it holds one of the
    ``jobs`` kernel slots.
    """

    def __init__(self, batch: _Batch, state: _PilotState, phase: PhaseRun):
        self.batch = batch
        self.state = state
        self.phase = phase
        self.decided = threading.Event()
        self.proceed = False
        self.cells_started = threading.Event()
        self.attempts = 0
        self.start_errors: list[str] = []
        self.seconds: float | None = None
        self._kms: list[Any] = []
        self._lock = threading.Lock()

    # -- the scheduler's side --------------------------------------------------------

    def decide(self, proceed: bool) -> None:
        self.proceed = proceed
        self.decided.set()

    def kill(self) -> None:
        with self._lock:
            kms = list(self._kms)
        for km in kms:
            _kill_kernel(km)

    # -- the worker thread's side ----------------------------------------------------

    def _stopped(self) -> bool:
        return self.batch.cancelled.is_set() or (self.decided.is_set() and not self.proceed)

    def run(self) -> None:
        from jupyter_core.utils import ensure_event_loop

        loop = ensure_event_loop()  # this thread's own loop, as papermill's calls use
        try:
            self._run(loop)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _run(self, loop: Any) -> None:
        notebook = self.batch.nb_dir / self.phase.notebook
        while True:
            if self._stopped():
                raise _Cancelled()
            km, log = loop.run_until_complete(self._start())
            try:
                # the gate phase reads result files: it opens the store only for a missing one
                engine = None if self.phase.phase == GATE_PHASE else self.state.engine
                code = _warm_up_code(notebook, engine)
                with contextlib.suppress(Exception):  # a kernel that died shows at the start below
                    loop.run_until_complete(self._warm_up(km, code))
                while not self.decided.wait(0.1):
                    if self.batch.cancelled.is_set():
                        break
                if self._stopped():
                    raise _Cancelled()
                started = time.perf_counter()
                try:
                    self._execute(km)
                    return
                except Exception as exc:
                    if self.cells_started.is_set() or self.batch.cancelled.is_set():
                        raise
                    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                        raise  # the executed notebook could not be written: not the kernel's fault
                    # the kernel died before the first cell: a failed start, tried again
                    self.start_errors.append(self._reason(exc, log))
                    if self.attempts >= KERNEL_START_ATTEMPTS:
                        raise KernelStartError(self._gave_up()) from exc
                finally:
                    self.seconds = round(time.perf_counter() - started, 2)
            finally:
                loop.run_until_complete(self._shutdown(km))
                self._forward(log)

    async def _start(self) -> tuple[Any, Any]:
        """A started kernel that answered, on fresh ports for every attempt."""
        from jupyter_client.kernelspec import NoSuchKernel

        while True:
            if self._stopped():
                raise _Cancelled()
            self.attempts += 1
            # the kernel's stderr (its reason if it dies); closed when the kernel is gone
            log = tempfile.TemporaryFile()  # noqa: SIM115
            km = self.batch.kernel_manager_class(kernel_name=self.batch.kernel_name)
            if self.batch.template is not None and hasattr(km, "kernel_template"):
                km.kernel_template = self.batch.template
                km.cancelled = self.batch.cancelled
            with self._lock:
                self._kms.append(km)
            kc = None
            try:
                await km.start_kernel(
                    extra_arguments=list(KERNEL_ARGUMENTS),
                    cwd=str(self.state.run_dir),
                    stderr=log,
                    env=self._kernel_env(),
                )
                if self.batch.cancelled.is_set():
                    _kill_kernel(km)
                kc = km.client()
                kc.start_channels()
                await kc.wait_for_ready(timeout=KERNEL_START_TIMEOUT)
                return km, log
            except NoSuchKernel:
                await self._shutdown(km)
                log.close()
                raise
            except Exception as exc:
                if self.batch.cancelled.is_set():
                    await self._shutdown(km)
                    log.close()
                    raise _Cancelled() from exc
                self.start_errors.append(self._reason(exc, log))
                await self._shutdown(km)
                log.close()
                if self.attempts >= KERNEL_START_ATTEMPTS:
                    raise KernelStartError(self._gave_up()) from exc
            finally:
                if kc is not None:
                    kc.stop_channels()

    def _kernel_env(self) -> dict[str, str]:
        """The kernel's environment: the runner's, and on Spark where to find the run's
        shared session (read when the notebook opens the store, after the ingest)."""
        env = dict(os.environ)
        if self.state.engine == "spark" and self.state.run_dir is not None:
            from pilot_lib.ingest.engine import SHARED_SPARK_ENV

            env[SHARED_SPARK_ENV] = str(self.state.run_dir / SPARK_URL_FILE)
        return env

    def _reason(self, exc: BaseException, log: Any) -> str:
        said = _last_line(log)
        return f"{type(exc).__name__}: {exc}" + (f" (kernel: {said})" if said else "")

    def _gave_up(self) -> str:
        return (
            f"the kernel did not start in {self.attempts} attempts; last: {self.start_errors[-1]}"
        )

    async def _warm_up(self, km: Any, code: str | None) -> None:
        """Load the notebook's imports into the kernel, and papermill into this process,
        at the same time (best effort; never fails the phase)."""
        kc = km.client()
        kc.start_channels()
        try:
            msg_id = kc.execute(code, silent=True, store_history=False) if code else None
            _engine_name()  # imports papermill here while the kernel imports
            deadline = time.monotonic() + WARM_UP_TIMEOUT
            while msg_id and time.monotonic() < deadline and not self.batch.cancelled.is_set():
                try:
                    reply = await kc.get_shell_msg(timeout=1)
                except queue.Empty:
                    if not await km.is_alive():
                        return  # the notebook's own start reports it
                    continue
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    return
        finally:
            kc.stop_channels()

    def _execute(self, km: Any) -> None:
        pm = _import_papermill()
        state = self.state
        pm.execute_notebook(
            str(self.batch.nb_dir / self.phase.notebook),
            str(state.run_dir / self.phase.notebook),
            parameters=self._parameters(),
            engine_name=_engine_name(),
            km=km,
            cells_started=self.cells_started,
            kernel_name=self.batch.kernel_name,
            progress_bar=False,
            log_output=False,
            execution_timeout=self.batch.timeout,
        )

    def _parameters(self) -> dict[str, Any]:
        """The notebook's parameters: the pilot, the run folder, ``interim`` for ``--interim``,
        and the ``-p NAME VALUE`` ones this notebook declares."""
        state = self.state
        params: dict[str, Any] = dict(self.batch.parameters.get(self.phase.phase, {}))
        params.update(pilot=str(state.pilot_file), output_dir=str(state.run_dir))
        if self.batch.interim:
            params["interim"] = True
        return params

    async def _shutdown(self, km: Any) -> None:
        with contextlib.suppress(Exception):
            await km.shutdown_kernel(now=True)
        with self._lock:
            if km in self._kms:
                self._kms.remove(km)

    def _forward(self, log: Any) -> None:
        """What the kernel wrote to stderr (errors only), after it stopped."""
        try:
            log.flush()
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
            log.close()
        except (OSError, ValueError):
            return
        if text.strip() and not self.batch.cancelled.is_set():
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
            sys.stderr.flush()


# ---- signals ---------------------------------------------------------------------------


class _Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. ``kill``, a CI job cancelled, a container stopped) during a run."""

    signal_number = signal.SIGTERM


def _signal_text(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """While the block runs, SIGTERM stops the run as Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        # the first SIGTERM stops the run; later ones wait for the runs to be marked
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- the scheduler -------------------------------------------------------------------


TERMINAL = ("succeeded", "failed", "skipped", "interrupted")


@dataclass(eq=False)
class _PilotState:
    index: int
    arg: str
    run_id: str | None
    pilot_file: Path
    name: str
    loaded: Pilot | None = None
    run_dir: Path | None = None
    outcome: PilotRun | None = None
    ingest: str = "waiting"  # waiting | running | succeeded | failed | skipped
    engine: str | None = None  # the engine the store is built with (duckdb | spark)
    tasks: dict[int, _KernelTask] = field(default_factory=dict)
    exporting: set[int] = field(default_factory=set)
    finished: bool = False
    io_error: str | None = None  # the first file of the run that could not be written

    @property
    def phases(self) -> list[PhaseRun]:
        return self.outcome.phases if self.outcome else []


class _Batch:
    """Runs several pilots' ingests and notebooks; every decision is made in the calling thread.

    Worker threads (one per ingest, notebook or export) report back through a
    queue; this thread starts work when a slot is free, tells waiting notebooks
    to go (or not), reports progress and writes each ``run.json``. So the
    progress callback runs here, and a Ctrl-C (or a KeyboardInterrupt raised by
    the callback) arrives here, where the kernels are stopped and the runs marked.
    """

    def __init__(
        self,
        pilots: Sequence[str | Path],
        out_root: str | Path,
        phases: list[int],
        jobs: int,
        export: bool,
        nb_dir: Path,
        progress: Callable[[str, int, str], None] | None,
        kernel_name: str,
        kernel_manager_class: type | None,
        engine: str | None,
        spark_master: str | None,
        run_ids: Sequence[str | None] | None = None,
        interim: bool = False,
        parameters: dict[int, dict[str, Any]] | None = None,
        timeout: float | None = None,
    ):
        self.out_root = Path(out_root).resolve()
        self.parameters = parameters or {}
        self.timeout = timeout
        self.phase_list = phases
        self.jobs = jobs
        self.export = export
        self.nb_dir = nb_dir.resolve()
        self.progress = progress
        self.kernel_name = kernel_name
        self.kernel_manager_class = kernel_manager_class or _kernel_manager_class()
        self.engine = engine
        self.spark_master = spark_master
        self.interim = interim
        self.events: queue.Queue[tuple[str, Any, Any, BaseException | None]] = queue.Queue()
        self.cancelled = threading.Event()
        self.running_tasks: set[_KernelTask] = set()
        self.ingesting: _PilotState | None = None
        self.export_queue: list[tuple[_PilotState, PhaseRun]] = []
        self.export_busy = False
        self.threads: list[threading.Thread] = []
        self.template: Any = None  # the run's kernel template, started with the first ingest
        ids = list(run_ids) if run_ids is not None else [None] * len(pilots)
        self.states = []
        for i, p in enumerate(pilots):
            pilot_file = pilot_file_path(p).resolve()
            self.states.append(_PilotState(i, str(p), ids[i], pilot_file, pilot_file.parent.name))

    # -- threads ---------------------------------------------------------------------

    def _spawn(self, kind: str, key: Any, fn: Callable[[], Any]) -> None:
        def target() -> None:
            try:
                result, error = fn(), None
            except BaseException as exc:  # reported to the scheduler, never lost
                result, error = None, exc
            self.events.put((kind, key, result, error))

        thread = threading.Thread(target=target, name=f"pilot-workbook-{kind}", daemon=True)
        self.threads.append(thread)
        thread.start()

    # -- the loop --------------------------------------------------------------------

    def run(self) -> list[PilotRun]:
        with _sigterm_as_interrupt(), contextlib.ExitStack() as cleanup:
            cleanup.callback(self._close_template)
            self._start_template(self._first_engine())
            try:
                while not all(s.finished for s in self.states):
                    self._dispatch()
                    if all(s.finished for s in self.states):
                        break
                    try:
                        event = self.events.get(timeout=0.25)
                    except queue.Empty:
                        continue
                    self._handle(*event)
            except KeyboardInterrupt as exc:
                signum = getattr(exc, "signal_number", signal.SIGINT)
                self._abort(
                    "interrupted", f"interrupted ({_signal_text(signum)}) before it finished"
                )
                raise RunInterrupted(self._outcomes(), signum) from None
            except BaseException as exc:
                self._abort("failed", f"the runner stopped: {type(exc).__name__}: {exc}")
                raise
            return self._outcomes()

    # -- the kernel template ------------------------------------------------------

    def _start_template(self, engine: str | None) -> None:
        """Start the run's kernel template (once): a process that imports what every phase
        notebook imports, then forks each phase's kernel (:mod:`pilot_lib._kernel_template`).
        Not started when ``PILOT_WORKBOOK_FORK_KERNELS=0``, without ``fork``, or when the
        kernel manager is not the runner's own (a custom one spawns its kernels)."""
        if self.template is not None or not _fork_kernels_enabled():
            return
        if getattr(self.kernel_manager_class, "kernel_template", "absent") is not None:
            return
        python = _kernel_python(self.kernel_name)
        if python is None:
            return
        from pilot_lib._kernel_template import KernelTemplate

        modules: dict[str, list[str]] = {}
        for phase in self.phase_list:
            notebook = self.nb_dir / PHASE_NOTEBOOKS[phase][1]
            for module, names in _notebook_imports(
                notebook, None if phase == GATE_PHASE else engine
            ):
                known = modules.setdefault(module, [])
                known += [n for n in names if n not in known]
        self.template = KernelTemplate(python, [[m, n] for m, n in modules.items()])
        self.template.start()

    def _first_engine(self) -> str | None:
        """The engine of the first pilot (the template imports its modules); None if unknown."""
        if self.spark_master:
            return "spark"
        if self.engine:
            return self.engine
        with contextlib.suppress(Exception):
            return load_pilot(self.states[0].pilot_file).engine.name
        return None

    def _close_template(self) -> None:
        if self.template is not None:
            with contextlib.suppress(Exception):
                self.template.close()
            self.template = None

    def _outcomes(self) -> list[PilotRun]:
        out = []
        for s in self.states:
            if s.outcome is None:  # never started (interrupted first)
                s.outcome = PilotRun(
                    pilot=s.name,
                    pilot_path=str(s.pilot_file),
                    run_dir=None,
                    run_id="",
                    status="interrupted",
                    phases=[
                        PhaseRun(p, *PHASE_NOTEBOOKS[p], status="skipped") for p in self.phase_list
                    ],
                    error="interrupted before it started",
                )
            out.append(s.outcome)
        return out

    def _dispatch(self) -> None:
        """Start whatever may start now; settle what can be settled."""
        if self.ingesting is None:
            for s in self.states:
                if s.outcome is None and not s.finished:
                    self._admit(s)
                    if self.ingesting is not None:
                        break
        for s in self.states:
            if s.outcome is None or s.finished:
                continue
            for ph in s.phases:
                if ph.status != "pending":
                    continue
                need = self._needs(s, ph.phase)
                task = s.tasks.get(ph.phase)
                if need == "skip":
                    ph.status = "skipped"
                    if task is not None:
                        task.decide(False)
                    self._report(s, ph)
                elif need == "go" and task is not None and not task.decided.is_set():
                    task.decide(True)
        free = self.jobs - len(self.running_tasks)
        if free > 0:
            for s, ph in self._candidates()[:free]:
                self._start_task(s, ph)
        if not self.export_busy and self.export_queue:
            self._start_export(*self.export_queue.pop(0))
        for s in self.states:
            if s.outcome is not None and not s.finished and self._settled(s):
                self._finish(s)

    def _needs(self, s: _PilotState, phase: int) -> str:
        """``go``: what the phase reads is there; ``wait``; ``skip``: it never will be."""
        if s.ingest == "failed":
            return "skip"
        if s.ingest == "skipped":  # the pilot file did not load: the first phase says why
            first = s.phases[0]
            if phase == first.phase:
                return "go"
            if first.status in ("failed", "skipped", "interrupted"):
                return "skip"
            if first.status != "succeeded":
                return "wait"
        elif s.ingest != "succeeded":
            return "wait"
        if phase == GATE_PHASE:
            earlier = [ph for ph in s.phases if ph.phase < GATE_PHASE]
            if any(ph.status in ("failed", "skipped", "interrupted") for ph in earlier):
                return "skip"
            if any(ph.status != "succeeded" for ph in earlier):
                return "wait"
        return "go"

    def _candidates(self) -> list[tuple[_PilotState, PhaseRun]]:
        """Phases that may take a kernel slot now: ready ones first, then pilot and phase order.

        A phase whose input is being made (the ingest, or the earlier phases, all
        already running) takes a slot to start and warm up its kernel meanwhile.
        """
        found = []
        for s in self.states:
            if s.outcome is None or s.finished:
                continue
            for ph in s.phases:
                if ph.status != "pending" or ph.phase in s.tasks:
                    continue
                need = self._needs(s, ph.phase)
                if need == "go":
                    found.append((0, s.index, ph.phase, s, ph))
                elif need == "wait" and s.ingest in ("running", "succeeded"):
                    earlier = [e for e in s.phases if e.phase < ph.phase]
                    if ph.phase != GATE_PHASE or all(
                        e.phase in s.tasks or e.status in TERMINAL for e in earlier
                    ):
                        found.append((1, s.index, ph.phase, s, ph))
        found.sort(key=lambda item: item[:3])
        return [(s, ph) for *_, s, ph in found]

    def _settled(self, s: _PilotState) -> bool:
        return (
            s.ingest != "running"
            and all(ph.status in TERMINAL for ph in s.phases)
            and not s.exporting
            and not any(q is s for q, _ in self.export_queue)
            and not any(t.state is s for t in self.running_tasks)
        )

    # -- steps -----------------------------------------------------------------------

    def _admit(self, s: _PilotState) -> None:
        """Make the pilot's run folder and start its ingest."""
        title = sha = None
        try:
            s.loaded = load_pilot(s.pilot_file)
            s.name, title, sha = s.loaded.name, s.loaded.title, s.loaded.file_hash
        except PilotFileError:
            s.loaded = None  # the first notebook reports the problems, in the run folder
        run_id = s.run_id or new_run_id()
        s.outcome = PilotRun(
            pilot=s.name,
            pilot_path=str(s.pilot_file),
            run_dir=None,
            run_id=run_id,
            title=title,
            pilot_file_sha256=sha,
            interim=self.interim or bool(s.loaded is not None and s.loaded.statistics.interim),
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            ingest=IngestRun(),
            phases=[PhaseRun(p, *PHASE_NOTEBOOKS[p]) for p in self.phase_list],
        )
        try:
            run_dir = self.out_root / s.name / run_id
            run_dir.mkdir(parents=True, exist_ok=False)
        except Exception as exc:  # e.g. an unwritable output folder
            s.outcome.status = "failed"
            s.outcome.error = f"pilot {s.arg}: {type(exc).__name__}: {exc}"
            for ph in s.phases:
                ph.status = "skipped"
            s.finished = True
            return
        s.run_dir = run_dir
        s.outcome.run_dir = str(run_dir)
        s.outcome.parameters = {
            name: value for by_phase in self.parameters.values() for name, value in by_phase.items()
        }
        s.outcome.timeout = self.timeout
        reserve_space(run_dir)
        self._write(s)  # status: running, from the first moment the folder exists
        if s.io_error:  # not even run.json could be written (a full disk): stop here
            for ph in s.phases:
                ph.status = "skipped"
            s.outcome.ingest = IngestRun(status="skipped")
            release_reserve(run_dir)
            with contextlib.suppress(OSError):  # an empty folder says nothing: remove it
                run_dir.rmdir()
            if not run_dir.exists():
                s.outcome.run_dir = None
            s.finished = True
            return
        if s.loaded is None:
            s.ingest = "skipped"
            s.outcome.ingest = IngestRun(status="skipped", error="the pilot file did not load")
            return
        # The decision-authority policy as Open Policy Agent reads it (phase 4 replays it).
        from pilot_lib.analysis.authority import write_policy

        write_policy(run_dir, s.loaded)
        s.ingest = "running"
        self.ingesting = s
        # for the kernels' warm-up only (resolve_engine, in the ingest, is the rule)
        s.engine = "spark" if self.spark_master else (self.engine or s.loaded.engine.name)
        self._spawn("ingest", s, functools.partial(self._build_store, s))

    def _engine_settings(self, s: _PilotState) -> Any:
        """The pilot file's engine with ``--engine`` / ``--spark-master`` applied."""
        from pilot_lib.ingest.engine import resolve_engine

        assert s.loaded is not None
        return resolve_engine(s.loaded.engine, self.engine, self.spark_master)

    def _build_store(self, s: _PilotState) -> Any:
        from pilot_lib.analysis.shared import write_aggregates
        from pilot_lib.ingest.store import _disconnect, build_store, open_store

        assert s.loaded is not None and s.run_dir is not None
        settings = self._engine_settings(s)
        if settings.name == "spark":
            self._share_spark(s, settings)
        info = build_store(
            s.loaded,
            s.run_dir / "store",
            engine=settings,
            quarantine_dir=s.run_dir / "quarantine",
        )
        # the shared aggregates, once per store: the phase kernels read them side by side
        # (DuckDB; a Spark session computes them in each kernel rather than start here)
        if settings.name == "duckdb":
            from pilot_lib.ingest.engine import connect_engine

            data = open_store(s.run_dir / "store", s.loaded, con=connect_engine(settings))
            try:
                write_aggregates(s.run_dir / "store", data)
            finally:
                _disconnect(data.con)
        return info

    def _share_spark(self, s: _PilotState, settings: Any) -> None:
        """Start the run's one Spark session here (its JVM's console output in
        ``<run>/spark.log``), serving Spark Connect to the phase kernels: they connect to
        it (``<run>/`` :data:`SPARK_URL_FILE`) instead of each starting a JVM. When it
        cannot be shared, the store is built as before and each kernel starts its own."""
        from pilot_lib.ingest.engine import start_shared_spark

        assert s.run_dir is not None
        url = start_shared_spark(settings, s.run_dir / SPARK_LOG_FILE)
        if url:
            atomic_write_text(s.run_dir / SPARK_URL_FILE, url + "\n")

    def _start_task(self, s: _PilotState, ph: PhaseRun) -> None:
        task = _KernelTask(self, s, ph)
        s.tasks[ph.phase] = task
        self.running_tasks.add(task)
        if self._needs(s, ph.phase) == "go":
            task.decide(True)
        self._spawn("notebook", task, task.run)

    def _start_export(self, s: _PilotState, ph: PhaseRun) -> None:
        assert s.run_dir is not None and s.outcome is not None
        target = s.run_dir / ph.notebook
        title, interim, phase = s.outcome.title or s.name, s.outcome.interim, ph.phase

        def export() -> Path:
            _import_papermill()  # nbformat without the unused grammar, before nbconvert
            from pilot_lib.report.export import export_html, page_title  # off the scheduler

            return export_html(
                target, target.with_suffix(".html"), title=page_title(title, phase, interim)
            )

        self.export_busy = True
        s.exporting.add(ph.phase)
        self._spawn("export", (s, ph), export)

    # -- events ----------------------------------------------------------------------

    def _handle(self, kind: str, key: Any, result: Any, error: BaseException | None) -> None:
        if kind == "ingest":
            self._ingest_done(key, result, error)
        elif kind == "notebook":
            self._notebook_done(key, error)
        elif kind == "export":
            s, ph = key
            self.export_busy = False
            s.exporting.discard(ph.phase)
            if error is None:
                ph.html = Path(result).name
            elif isinstance(error, OSError):  # a file the run could not write fails the run
                assert s.run_dir is not None
                page = s.run_dir / Path(ph.notebook).with_suffix(".html").name
                page.unlink(missing_ok=True)  # never a truncated page left looking like one
                text = _io_error_text(error, str(page))
                ph.error = (ph.error + "; " if ph.error else "") + f"HTML export failed: {text}"
                s.io_error = s.io_error or f"pilot {s.name}: HTML export failed: {text}"
            else:  # export trouble is reported, not fatal to the data
                ph.error = (ph.error + "; " if ph.error else "") + f"HTML export failed: {error}"

    def _ingest_done(self, s: _PilotState, info: Any, error: BaseException | None) -> None:
        self.ingesting = None
        ingest = s.outcome.ingest if s.outcome else None
        assert ingest is not None
        if error is not None:
            s.ingest = ingest.status = "failed"
            ingest.error = _describe_ingest_failure(s.name, error)
            self._write(s)
            return
        manifest = info.manifest
        s.ingest = ingest.status = "succeeded"
        ingest.seconds = round(float(info.seconds), 2)
        ingest.engine = manifest.get("engine_label")
        ingest.store = "store"
        ingest.fingerprint = manifest.get("fingerprint")
        ingest.datasets = {
            name: {k: int(entry[k]) for k in ("rows", "valid", "quarantined")}
            for name, entry in manifest.get("datasets", {}).items()
        }
        self._write(s)

    def _notebook_done(self, task: _KernelTask, error: BaseException | None) -> None:
        self.running_tasks.discard(task)
        s, ph = task.state, task.phase
        ph.attempts, ph.start_errors = task.attempts, list(task.start_errors)
        if ph.status != "pending":  # skipped while its kernel warmed up
            return
        if isinstance(error, _Cancelled):
            ph.status = "skipped"
        elif error is None:
            ph.status = "succeeded"
            ph.seconds = task.seconds
        else:
            ph.status = "failed"
            ph.seconds = task.seconds
            ph.error = _describe_failure(s.name, ph, error, self.timeout)
        assert s.run_dir is not None
        executed = s.run_dir / ph.notebook
        if ph.status == "failed" and executed.is_file() and not _whole_json(executed):
            executed.unlink(missing_ok=True)  # empty or cut short (a full disk): not a notebook
        if self.export and ph.status != "skipped" and executed.is_file():
            self.export_queue.append((s, ph))
        self._report(s, ph)

    def _report(self, s: _PilotState, ph: PhaseRun) -> None:
        if s.run_dir is not None and not s.finished:
            self._write(s)
        if self.progress:
            self.progress(s.name, ph.phase, ph.status)

    # -- endings ---------------------------------------------------------------------

    def _finish(self, s: _PilotState) -> None:
        out = s.outcome
        assert out is not None and s.run_dir is not None
        failed = [ph for ph in s.phases if ph.status == "failed"]
        if out.ingest is not None and out.ingest.status == "failed":
            out.status, out.error = "failed", out.ingest.error
        elif failed:
            out.status, out.error = "failed", failed[0].error
        elif s.io_error:
            out.status, out.error = "failed", s.io_error
        else:
            out.status = "succeeded"
        gate_file = s.run_dir / "go_no_go_summary.json"
        if gate_file.is_file():
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                out.decision = json.loads(gate_file.read_text(encoding="utf-8"))["result"].get(
                    "decision"
                )
        release_reserve(s.run_dir)
        self._write(s)
        self._write_run_pages(s)
        s.finished = True
        if out.ok:
            try:
                point_latest(s.run_dir.parent, s.run_dir)
            except OSError as exc:
                out.status = "failed"
                out.error = (
                    f"pilot {s.name}: {_io_error_text(exc, str(s.run_dir.parent / 'latest'))}"
                )
                self._write(s)

    def _write_run_pages(self, s: _PilotState) -> None:
        """After the run: ``summary.json``, ``summary.md`` and ``index.html`` in the run folder.

        Trouble writing them is reported on stderr; the run's data and status stand.
        """
        from pilot_lib.report.runpages import write_run_pages

        assert s.run_dir is not None
        try:
            write_run_pages(s.run_dir, s.loaded)
        except Exception as exc:
            print(
                f"warning: {s.name}: could not write the run summary and index page in "
                f"{s.run_dir}: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )

    def _write(self, s: _PilotState) -> None:
        """Write ``run.json`` whole (atomically); on a full disk, free the reserve and retry.

        A ``run.json`` that cannot be written at all fails the run (the outcome
        says so on the command line); never raises.
        """
        out = s.outcome
        assert out is not None and s.run_dir is not None
        final = out.status != "running"
        if final:
            out.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        target = s.run_dir / "run.json"
        for attempt in range(2):
            try:
                atomic_write_text(target, json.dumps(asdict(out), indent=2) + "\n")
                return
            except OSError as exc:
                text = _io_error_text(exc, str(target))
                s.io_error = s.io_error or f"pilot {s.name}: {text}"
                if out.status in ("running", "succeeded"):
                    out.status, out.error = "failed", s.io_error
                    out.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                if not final:
                    return  # the final write frees the reserve; until then the run goes on
                if attempt == 0 and release_reserve(s.run_dir):
                    continue  # room freed for the manifest; the run is failing anyway
                overwrite_in_place(target, (json.dumps(asdict(out), indent=2) + "\n").encode())
                return

    def _abort(self, status: str, message: str) -> None:
        """Stop every kernel, then mark each unfinished run ``status`` (``latest`` stays)."""
        self.cancelled.set()
        for task in list(self.running_tasks):
            task.decide(False)
        deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
            while self.running_tasks and time.monotonic() < deadline:
                for task in list(self.running_tasks):
                    task.kill()
                try:
                    kind, key, _, _ = self.events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if kind == "notebook":
                    self.running_tasks.discard(key)
        for s in self.states:
            if s.outcome is None or s.finished or s.run_dir is None:
                continue
            out = s.outcome
            out.status, out.error = status, f"pilot {s.name}: {message}"
            if out.ingest is not None and out.ingest.status == "pending":
                out.ingest.status = status
            for ph in s.phases:
                if ph.status == "pending":
                    ph.status = status if ph.phase in s.tasks else "skipped"
            release_reserve(s.run_dir)
            self._write(s)
            s.finished = True


# ---- before anything starts -----------------------------------------------------------


def check_before_run(pilots: Sequence[str | Path], out_root: str | Path) -> list[Pilot]:
    """Load every pilot file and prove ``out_root`` writable, before any run starts.

    Raises :class:`~pilot_lib.errors.WorkbookError` (the CLI exits 2) with the
    ``validate`` message of every pilot that does not load (a mistyped path, an
    invalid pilot file, a data file that is not there), or naming the output
    folder that cannot be written; nothing is created for an invalid pilot.
    Returns the loaded pilots, in input order.
    """
    loaded: list[Pilot] = []
    problems: list[str] = []
    for p in pilots:
        try:
            loaded.append(load_pilot(p))
        except PilotFileError as exc:
            problems.append(str(exc))
    if problems:
        raise WorkbookError(
            "\n".join(problems)
            + "\nnothing was run and no run folder was made: fix the pilot path or file "
            "(pilot-workbook validate PILOT checks one) and run again"
        )
    check_writable(out_root, "the runs folder", "choose another with --out DIR")
    return loaded


#: Parameters the runner sets itself (``--interim`` sets ``interim``).
RESERVED_PARAMETERS = {
    "pilot": "the runner passes each pilot's file",
    "output_dir": "the runner passes each run folder",
    "interim": "use --interim",
}


def _declared_parameters(notebook: Path) -> dict[str, dict[str, str]]:
    """The parameters cell of ``notebook``: name -> {inferred_type_name, default, help}
    (papermill's reading, as ``papermill --help-notebook`` shows it)."""
    _import_papermill()
    from papermill.inspection import inspect_notebook

    return {
        name: {k: str(v) for k, v in info.items()}
        for name, info in inspect_notebook(str(notebook)).items()
    }


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_parameter(name: str, text: str, type_name: str) -> Any:
    """``text`` as a value of the declared type ``type_name`` (as papermill names it).

    ``str``: the text as is; ``int``, ``float``; ``bool``: true/false, yes/no,
    on/off, 1/0; ``Optional[X]``: also ``none``/``null``; ``dict``/``list`` (and
    ``Dict[...]``/``List[...]``): YAML or JSON (``{"a": 1}``, ``[1, 2]``); an
    undeclared type: YAML. Raises :class:`WorkbookError` naming the parameter,
    its type and the text.
    """
    import yaml

    kind = type_name.strip()
    optional = kind.startswith("Optional[") and kind.endswith("]")
    if optional:
        kind = kind[len("Optional[") : -1].strip()
        if text.strip().lower() in ("none", "null", "~", ""):
            return None
    base = kind.split("[", 1)[0].strip().lower()

    def bad(expected: str) -> WorkbookError:
        return WorkbookError(
            f"-p {name} {text!r}: {name} takes {expected}"
            + (" or none" if optional else "")
            + f" (declared type {type_name})"
        )

    if base == "str":
        return text
    if base == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise bad("a whole number, e.g. 3") from None
    if base == "float":
        try:
            return float(text.strip())
        except ValueError:
            raise bad("a number, e.g. 0.95") from None
    if base == "bool":
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise bad("true or false")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise bad("a YAML or JSON value") from None
    if base == "dict" and not isinstance(value, dict):
        raise bad('a mapping, e.g. {"impact": 2}')
    if base == "list" and not isinstance(value, list):
        raise bad("a list, e.g. [1, 2]")
    return value


def notebook_parameters(
    raw: Sequence[tuple[str, str]] | None,
    phases: Sequence[int],
    notebooks: str | Path | None = None,
) -> dict[int, dict[str, Any]]:
    """``-p NAME VALUE`` pairs -> the typed parameters of each phase that declares them.

    Each value is parsed by the type its parameters cell declares
    (:func:`parse_parameter`) and passed to every phase of ``phases`` whose
    notebook declares the name. Raises :class:`WorkbookError` for an unknown name
    (listing the known ones), a name the runner sets itself, a name only phases
    outside ``phases`` declare, or a value of the wrong type.
    """
    if not raw:
        return {}
    nb_dir = notebooks_dir(notebooks)
    declared = {
        phase: _declared_parameters(nb_dir / nb) for phase, (_, nb) in PHASE_NOTEBOOKS.items()
    }
    known = sorted({n for d in declared.values() for n in d} - set(RESERVED_PARAMETERS))
    out: dict[int, dict[str, Any]] = {}
    for name, text in raw:
        if name in RESERVED_PARAMETERS:
            raise WorkbookError(
                f"-p {name}: set by the runner ({RESERVED_PARAMETERS[name]}); "
                f"parameters you can set: {', '.join(known)}"
            )
        owners = [ph for ph in sorted(declared) if name in declared[ph]]
        if not owners:
            raise WorkbookError(
                f"-p {name}: no phase notebook has a parameter {name!r}; "
                f"parameters you can set: {', '.join(known)} "
                "(papermill --help-notebook NOTEBOOK describes them)"
            )
        running = [ph for ph in owners if ph in phases]
        if not running:
            raise WorkbookError(
                f"-p {name}: only phase(s) {', '.join(map(str, owners))} declare {name!r}, "
                "and they are not part of this run (--phases)"
            )
        for ph in running:
            type_name = declared[ph][name].get("inferred_type_name", "None")
            out.setdefault(ph, {})[name] = parse_parameter(name, text, type_name)
    return out


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not timeout > 0:
        raise WorkbookError(f"--timeout takes seconds greater than 0, got {timeout}")
    return float(timeout)


# ---- entry points --------------------------------------------------------------------


def run_pilot(
    pilot: str | Path,
    out_root: str | Path,
    phases: Sequence[int] | None = None,
    export: bool = True,
    notebooks: str | Path | None = None,
    run_id: str | None = None,
    progress: Callable[[str, int, str], None] | None = None,
    kernel_name: str = "python3",
    jobs: int | None = None,
    engine: str | None = None,
    spark_master: str | None = None,
    kernel_manager_class: type | None = None,
    interim: bool = False,
    parameters: Sequence[tuple[str, str]] | None = None,
    timeout: float | None = None,
) -> PilotRun:
    """Build the checked evidence store, then execute the phase notebooks, into a fresh run folder.

    Parameters
    ----------
    pilot:
        Pilot folder or pilot.yaml.
    out_root:
        Parent of the per-pilot run folders.
    phases:
        Phase numbers to run (default all five).
    export:
        Write an HTML export (no code) next to each executed notebook.
    progress:
        Called as ``progress(pilot, phase, status)`` when each phase ends
        (``succeeded``, ``failed`` or ``skipped``), in the calling thread.
    jobs:
        Notebook kernels running at once (default :func:`default_jobs`).
    engine, spark_master:
        Override the pilot file's engine (``duckdb`` or ``spark``) and Spark master.
    kernel_manager_class:
        The jupyter_client kernel manager (default: the runner's batch manager).
    interim:
        An interim look (``--interim``): every notebook gets ``interim=True``,
        the go/no-go gate judges with anytime-valid intervals and every page says
        "interim". ``False`` keeps the pilot file's ``statistics: interim``.
    parameters:
        ``(name, text)`` pairs (``-p NAME VALUE``), typed by each notebook's
        parameters cell (:func:`notebook_parameters`).
    timeout:
        Longest a cell may run (seconds); a cell that runs longer fails its phase.

    Raises :class:`WorkbookError` before anything starts for a pilot that does not
    load, an output folder that cannot be written or a bad parameter
    (:func:`check_before_run`). Never raises for a failing ingest or phase: the
    outcome says what failed, where. Raises :class:`RunInterrupted` on Ctrl-C or
    SIGTERM.
    """
    nb_dir = notebooks_dir(notebooks)
    phase_list = parse_phases(phases)
    typed = notebook_parameters(parameters, phase_list, nb_dir)
    timeout = _check_timeout(timeout)
    check_before_run([pilot], out_root)
    batch = _Batch(
        [pilot],
        out_root,
        phase_list,
        _check_jobs(jobs),
        export,
        nb_dir,
        progress,
        kernel_name,
        kernel_manager_class,
        engine,
        spark_master,
        run_ids=[run_id],
        interim=interim,
        parameters=typed,
        timeout=timeout,
    )
    return batch.run()[0]


def _check_jobs(jobs: int | None) -> int:
    if jobs is None:
        return default_jobs()
    if jobs < 1:
        raise WorkbookError(f"--jobs must be at least 1, got {jobs}")
    return jobs


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
    jobs: int | None = None,
    export: bool = True,
    notebooks: str | Path | None = None,
    stream: Any = None,
    engine: str | None = None,
    spark_master: str | None = None,
    kernel_name: str = "python3",
    kernel_manager_class: type | None = None,
    interim: bool = False,
    parameters: Sequence[tuple[str, str]] | None = None,
    timeout: float | None = None,
) -> list[PilotRun]:
    """Run several pilots; returns one outcome per pilot, in input order.

    ``jobs`` bounds the notebook kernels running at once across all pilots
    (default :func:`default_jobs`); progress goes to ``stream`` (default stderr)
    as a bar on a terminal, else one line per phase. ``interim``: an interim
    look for every pilot (see :func:`run_pilot`); ``parameters``, ``timeout``: as
    :func:`run_pilot`. Every pilot is checked before any starts
    (:func:`check_before_run`): one that does not load raises
    :class:`WorkbookError` and no run folder is made. Raises
    :class:`RunInterrupted` on Ctrl-C or SIGTERM.
    """
    phase_list = parse_phases(phases)
    nb_dir = notebooks_dir(notebooks)
    jobs = _check_jobs(jobs)
    typed = notebook_parameters(parameters, phase_list, nb_dir)
    timeout = _check_timeout(timeout)
    check_before_run(pilots, out_root)
    show = _Progress(total=len(pilots) * len(phase_list), stream=stream)
    try:
        batch = _Batch(
            pilots,
            out_root,
            phase_list,
            jobs,
            export,
            nb_dir,
            show,
            kernel_name,
            kernel_manager_class,
            engine,
            spark_master,
            interim=interim,
            parameters=typed,
            timeout=timeout,
        )
        return batch.run()
    finally:
        show.close()

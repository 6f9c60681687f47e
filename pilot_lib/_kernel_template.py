"""A template kernel process: the imports paid once per run, a kernel forked per phase.

Every phase kernel of a run imports the same libraries (pandas, Ibis, DuckDB,
matplotlib, IPython, the workbook), about 2.6 s of CPU each. The runner starts
this module once per run (``python -m pilot_lib._kernel_template``, the
interpreter the kernel spec names); it imports those modules, then waits. For
each phase the runner asks it, over a Unix socket, for a kernel: it forks, and
the child (already holding every import) becomes an ordinary IPython kernel on
the connection file jupyter_client wrote, in its own session (process group),
with the phase's working folder, environment and stderr file. The child is the
same ``ipykernel_launcher`` a spawned kernel runs; only the imports are
inherited, copy-on-write.

Forking is safe only before a process runs threads or holds connections: the
template therefore only *imports*. It opens no DuckDB connection, starts no
JVM, creates no ZeroMQ context and no event loop, and checks before it serves
that it runs one thread (BLAS pools aside, which re-create themselves in a
child). Modules that register with a live IPython shell on import (the inline
matplotlib backend) are left to the child, so a kernel forked from the template
shows figures as a spawned one does.

Protocol (one JSON object a line; the launch request carries the stderr file
descriptor with ``SCM_RIGHTS``):

- runner -> template: ``{"id": n, "argv": [...], "cwd": ..., "env": {...}}`` (``argv``:
  the arguments after ``python -m ipykernel_launcher``)
- template -> runner: ``{"ready": true}`` once the imports are loaded;
  ``{"id": n, "pid": p}`` or ``{"id": n, "error": text}``; and
  ``{"exited": p, "status": code}`` when a child ends (negative: the signal).

The template ends when the runner closes its socket (or dies): it kills every
kernel it forked that still runs, then exits.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from typing import Any

#: Set in the template's environment by the runner: the socket's file descriptor.
SOCKET_ENV = "PILOT_WORKBOOK_TEMPLATE_FD"

#: Modules that must be imported in the kernel itself, never inherited: they hook into
#: the running IPython shell when imported (figures shown at the end of a cell).
CHILD_ONLY = ("matplotlib_inline.backend_inline",)

#: Modules every kernel imports before its first cell (ipykernel itself), or while a
#: phase page is drawn and written (tables' HTML, figures' PNG).
KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "IPython",
    "IPython.core.interactiveshell",
    "pandas.io.formats.style",
    "matplotlib.backends.backend_agg",
    "pilot_lib.phases",
)

#: Packages whose every module the template imports (a phase imports some of them lazily).
PACKAGES = ("pilot_lib.analysis", "pilot_lib.report")


#: Python warnings the imports raised in the template: each forked kernel shows them
#: again once its own warning set-up runs (:func:`replay_warnings`), so they reach the
#: run's ``warnings.log`` as a spawned kernel's would, never the console.
_IMPORT_WARNINGS: list[warnings.WarningMessage] = []


def replay_warnings() -> None:
    """Show the warnings the template's imports raised (in a forked kernel: after
    :func:`pilot_lib._kernel.setup`, which routes them to ``warnings.log``)."""
    for w in _IMPORT_WARNINGS:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    _IMPORT_WARNINGS.clear()


#: The kernel argument that runs :func:`replay_warnings` (after the runner's own exec line).
REPLAY_EXEC_LINE = (
    "--IPKernelApp.exec_lines=__import__('pilot_lib._kernel_template', "
    "fromlist=['replay_warnings']).replay_warnings()"
)


def _preload(wanted: list[list[Any]], everything: bool = True) -> list[str]:
    """Import the notebooks' modules and (``everything``) the kernel's and the workbook's
    (best effort); the names that failed. Warnings raised meanwhile are kept for the
    kernels (:data:`_IMPORT_WARNINGS`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        failed = _import_all(wanted, everything)
    _IMPORT_WARNINGS.extend(caught)
    return failed


def _import_all(wanted: list[list[Any]], everything: bool) -> list[str]:
    failed = []
    for module, names in [[m, []] for m in KERNEL_MODULES if everything] + wanted:
        for name in (module, *(f"{module}.{n}" for n in names)):
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name)
    import pkgutil

    for package in PACKAGES if everything else ():
        try:
            path = importlib.import_module(package).__path__
        except Exception:
            failed.append(package)
            continue
        for info in pkgutil.iter_modules(path, package + "."):
            if info.name not in sys.modules:
                try:
                    importlib.import_module(info.name)
                except Exception:
                    failed.append(info.name)
    for name in CHILD_ONLY:  # imported anyway (a notebook module did): the child imports it anew
        sys.modules.pop(name, None)
    return failed


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the runner is gone: the loop sees EOF
        sock.sendall((json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any], err_fd: int | None, template_pid: int, started: int) -> None:
    """In the forked child: become the kernel ``request`` describes (never returns)."""
    code = 1
    try:
        os.setsid()  # its own process group, as jupyter_client's launcher makes it
        os.write(started, b"1")
        os.close(started)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if err_fd is not None:
            os.dup2(err_fd, 2)
            os.close(err_fd)
        os.chdir(request["cwd"])
        env = dict(request["env"])
        env["JPY_PARENT_PID"] = str(template_pid)  # the kernel ends when the template does
        os.environ.clear()
        os.environ.update(env)
        # JPY_PARENT_PID was read when ipykernel was imported (here, before it was set): the
        # kernel ends when the template does, and says nothing on stdout about its parent
        # `python -m ipykernel_launcher ARGS` runs with sys.argv [<its file>, *ARGS]
        import importlib.util

        spec = importlib.util.find_spec("ipykernel_launcher")
        sys.argv = [
            (spec.origin if spec and spec.origin else "ipykernel_launcher"),
            *request["argv"],
            f"--IPKernelApp.parent_handle={template_pid}",
        ]
        if _IMPORT_WARNINGS:
            sys.argv.append(REPLAY_EXEC_LINE)
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve(sock: socket.socket, wanted: list[list[Any]], everything: bool = True) -> None:
    """Load the imports, then fork a kernel per request until the runner goes."""
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    failed = _preload(wanted, everything)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    _send(sock, {"ready": True, "failed": failed, "pid": os.getpid()})
    buffer = b""
    template_pid = os.getpid()
    try:
        while True:
            readable, _, _ = select.select([sock, wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 512)
            while children:  # reap every ended kernel, and say so
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                children.discard(pid)
                _send(sock, {"exited": pid, "status": os.waitstatus_to_exitcode(status)})
            if sock not in readable:
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 4)
            except InterruptedError:
                continue
            if not data:
                return  # the runner closed its end
            buffer += data
            fds = list(fds)
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                err_fd = fds.pop(0) if request.get("stderr") and fds else None
                started_r, started_w = os.pipe()
                try:
                    pid = os.fork()
                except OSError as exc:
                    _send(sock, {"id": request["id"], "error": f"fork failed: {exc}"})
                    for fd in (err_fd, started_r, started_w):
                        if fd is not None:
                            os.close(fd)
                    continue
                if pid == 0:
                    sock.close()
                    for fd in (wake_r, wake_w, started_r):
                        os.close(fd)
                    _child(request, err_fd, template_pid, started_w)
                children.add(pid)
                os.close(started_w)
                os.read(started_r, 1)  # its own process group exists: it can be killed as one
                os.close(started_r)
                if err_fd is not None:
                    os.close(err_fd)
                _send(sock, {"id": request["id"], "pid": pid})
            for fd in fds:
                os.close(fd)
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def main() -> None:
    # `python -m` put the template's folder first on sys.path; `python -m ipykernel_launcher`
    # removes the kernel's own folder the same way, so neither is on a kernel's path
    if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == os.getcwd():
        del sys.path[0]
    sock = socket.socket(fileno=int(os.environ.pop(SOCKET_ENV)))
    options = json.loads(sys.stdin.readline() or "{}")
    try:
        serve(sock, options.get("modules", []), bool(options.get("everything", True)))
    finally:
        # no interpreter tear-down: with pandas, DuckDB and matplotlib loaded it costs
        # seconds at the end of every run, and the template holds nothing to flush
        os._exit(0)


# ---- the runner's side ------------------------------------------------------------------


class TemplateUnavailable(RuntimeError):
    """The template cannot fork this kernel (it died, never got ready, or the command differs):
    the kernel is spawned as usual instead."""


class ForkedKernel:
    """The ``subprocess.Popen`` face of a kernel the template forked (what jupyter_client's
    provisioner calls): ``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``, ``terminate``.

    The kernel is the template's child, so its exit status comes from the template's
    ``exited`` notice; signals go straight to its process (group).
    """

    stdin = stdout = stderr = None

    def __init__(self, template: KernelTemplate, pid: int):
        self.template = template
        self.pid = pid
        self.returncode: int | None = None
        self.args = ["(forked kernel)"]

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.template.exit_status(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class KernelTemplate:
    """One template process for a run: started early, asked for a kernel per phase.

    ``python`` is the interpreter the kernel spec runs (only a kernel command of the
    form ``<python> -m ipykernel_launcher ...`` is forked); ``modules`` the
    ``[module, [names]]`` pairs the phase notebooks import; ``everything`` adds ipykernel's
    and the workbook's modules (:data:`KERNEL_MODULES`, :data:`PACKAGES`). Thread-safe: every phase
    thread launches through it. :meth:`close` ends the template and every kernel it
    forked that still runs.
    """

    def __init__(self, python: str, modules: list[list[Any]], everything: bool = True):
        self.python = python
        self.modules = modules
        self.everything = everything
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._ready = False
        self._dead: str | None = None
        self._next = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self.failed_imports: list[str] = []
        self.pid: int | None = None
        self._process: Any = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        import subprocess
        import tempfile

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, **{SOCKET_ENV: str(theirs.fileno())})
        try:
            self._process = subprocess.Popen(
                [self.python, "-m", "pilot_lib._kernel_template"],
                stdin=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                env=env,
                cwd=tempfile.gettempdir(),
            )
        except OSError as exc:
            ours.close()
            self._dead = f"the template did not start: {exc}"
            return
        finally:
            theirs.close()
        self._sock = ours
        assert self._process.stdin is not None
        options = {"modules": self.modules, "everything": self.everything}
        self._process.stdin.write((json.dumps(options) + "\n").encode())
        self._process.stdin.close()
        threading.Thread(target=self._read, name="kernel-template", daemon=True).start()

    def _read(self) -> None:
        assert self._sock is not None
        buffer = b""
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._note(json.loads(line))
        except (OSError, ValueError):
            pass
        with self._cond:
            self._dead = self._dead or "the template process ended"
            self._cond.notify_all()

    def _note(self, message: dict[str, Any]) -> None:
        with self._cond:
            if message.get("ready"):
                self._ready = True
                self.pid = message.get("pid")
                self.failed_imports = list(message.get("failed", []))
            elif "exited" in message:
                self._exits[int(message["exited"])] = int(message["status"])
            elif "id" in message:
                self._answers[int(message["id"])] = message
            self._cond.notify_all()

    def exit_status(self, pid: int) -> int | None:
        """The exit status of a forked kernel, or None while it runs."""
        with self._cond:
            if pid in self._exits:
                return self._exits[pid]
            if self._dead is not None:  # the template is gone: so is every kernel it forked
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return -signal.SIGKILL
                except OSError:
                    pass
            return None

    def can_fork(self, cmd: list[str]) -> bool:
        return len(cmd) >= 3 and cmd[0] == self.python and cmd[1:3] == ["-m", "ipykernel_launcher"]

    def launch(
        self,
        cmd: list[str],
        cwd: str,
        env: dict[str, str],
        stderr: Any = None,
        timeout: float = 120.0,
        cancelled: Any = None,
    ) -> ForkedKernel:
        """Fork a kernel running ``cmd`` (``<python> -m ipykernel_launcher ARGS``).

        Waits (up to ``timeout`` seconds) for the template to have its imports; raises
        :class:`TemplateUnavailable` when it cannot fork (the caller spawns instead).
        ``cancelled``: an event that stops the wait early.
        """
        if not self.can_fork(cmd):
            raise TemplateUnavailable("not an ipykernel_launcher command of this interpreter")
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready and self._dead is None:
                if time.monotonic() > deadline or (cancelled is not None and cancelled.is_set()):
                    raise TemplateUnavailable("the template is not ready")
                self._cond.wait(0.1)
            if self._dead is not None:
                raise TemplateUnavailable(self._dead)
            self._next += 1
            ident = self._next
        request = {"id": ident, "argv": cmd[3:], "cwd": cwd, "env": env, "stderr": False}
        fds: list[int] = []
        if stderr is not None and hasattr(stderr, "fileno"):
            fds.append(stderr.fileno())
            request["stderr"] = True
        assert self._sock is not None
        try:
            with self._lock:
                socket.send_fds(self._sock, [(json.dumps(request) + "\n").encode()], fds)
        except OSError as exc:
            raise TemplateUnavailable(f"the template is gone: {exc}") from exc
        with self._cond:
            while ident not in self._answers and self._dead is None:
                self._cond.wait(0.1)
            answer = self._answers.pop(ident, None)
        if answer is None or "pid" not in answer:
            raise TemplateUnavailable((answer or {}).get("error") or str(self._dead))
        return ForkedKernel(self, int(answer["pid"]))

    def close(self) -> None:
        """End the template (it kills the kernels it forked that still run) and reap it."""
        import subprocess

        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


if __name__ == "__main__":
    # run as the package's module, not as __main__: a forked kernel imports
    # pilot_lib._kernel_template and must find the template's state there (its warnings)
    from pilot_lib._kernel_template import main as _main

    _main()

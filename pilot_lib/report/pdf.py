"""PDFs of the exported pages, printed by a headless Chromium.

Chromium is found on the ``PATH`` (``chromium``, ``chromium-browser``,
``google-chrome``, ``google-chrome-stable``) or named by the environment
variable ``PILOT_WORKBOOK_CHROMIUM``. Without one, :class:`ChromiumNotFound`
says how to get one; nothing else in the workbook needs a browser.

How a page is printed: Chromium is started headless with its DevTools protocol
on a pipe (``--remote-debugging-pipe``: file descriptors 3 and 4, no network
port), each page is opened from disk and printed with ``Page.printToPDF`` on
A4 with a running header (pilot and run id) and a footer "page N of M". Where
the pipe cannot be set up (a platform without ``posix_spawn``), Chromium's
``--print-to-pdf`` prints the page without header and footer.

Each PDF is written to a temporary file beside its target and renamed into
place, so a failed print never leaves a truncated PDF looking like a result.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import secrets
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilot_lib.errors import WorkbookError

__all__ = [
    "CHROMIUM_ENV",
    "ChromiumNotFound",
    "PdfJob",
    "PrintFailed",
    "find_chromium",
    "print_pdfs",
]

#: Environment variable naming the Chromium (or Chrome) executable.
CHROMIUM_ENV = "PILOT_WORKBOOK_CHROMIUM"

#: Executables looked for on the PATH, in this order.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Longest wait for one page to load and print (seconds).
PRINT_TIMEOUT = 120.0

#: Flags for a headless Chromium that runs as root in a container, talks to no server
#: and keeps no profile.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
)

#: A4 in inches, and the margins (inches) that hold the running header and footer.
_A4 = {"paperWidth": 210 / 25.4, "paperHeight": 297 / 25.4}
_MARGINS = {"marginTop": 0.6, "marginBottom": 0.6, "marginLeft": 0.5, "marginRight": 0.5}

HOW_TO_GET_CHROMIUM = (
    "no Chromium found to print PDFs: install it (Debian/Ubuntu: apt-get install chromium; "
    "macOS: brew install --cask chromium) or set "
    f"{CHROMIUM_ENV}=/path/to/chromium (Chrome works too)"
)


class ChromiumNotFound(WorkbookError):
    """No Chromium to print with; the message says how to get one."""


class PrintFailed(WorkbookError):
    """Chromium ran but did not print a page; the message names the page."""


@dataclass(frozen=True)
class PdfJob:
    """One page to print: the HTML file, the PDF to write, and the running header's text."""

    html: Path
    pdf: Path
    header: str = ""


def find_chromium() -> str:
    """The Chromium executable: ``$PILOT_WORKBOOK_CHROMIUM``, else the first on the PATH.

    Raises :class:`ChromiumNotFound` (with how to get one) when there is none, or
    when the environment variable names a file that is not an executable.
    """
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        found = shutil.which(named)
        if found is None:
            raise ChromiumNotFound(
                f"{CHROMIUM_ENV}={named} is not an executable Chromium: point it at the "
                "browser's executable, or unset it to look for chromium on the PATH"
            )
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFound(HOW_TO_GET_CHROMIUM)


def header_template(text: str) -> str:
    """The running header: ``text`` (escaped) in small grey type, left-aligned."""
    return (
        '<div style="font-size:8px;width:100%;margin:0 12mm;color:#444;'
        'font-family:Helvetica,Arial,sans-serif;">'
        f"<span>{html.escape(text)}</span></div>"
    )


FOOTER_TEMPLATE = (
    '<div style="font-size:8px;width:100%;text-align:center;color:#444;'
    'font-family:Helvetica,Arial,sans-serif;">'
    'page <span class="pageNumber"></span> of <span class="totalPages"></span></div>'
)


def print_pdfs(jobs: Sequence[PdfJob], chromium: str | None = None) -> list[Path]:
    """Print each job's HTML page to its PDF with one headless Chromium; returns the PDFs.

    A4, backgrounds printed, the page's print CSS applied; a running header
    (``job.header``) and "page N of M" in the footer. Raises
    :class:`ChromiumNotFound` without a Chromium and :class:`PrintFailed` when a
    page does not print (no partial PDF is left behind).
    """
    if not jobs:
        return []
    exe = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="pilot-workbook-chromium-") as profile:
        if hasattr(os, "posix_spawn"):
            with _DevTools(exe, profile) as tools:
                return [_write_atomic(job.pdf, tools.print_page(job)) for job in jobs]
        return [_print_with_flag(exe, profile, job) for job in jobs]


def _write_atomic(target: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``target``, then rename it into place."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _print_with_flag(exe: str, profile: str, job: PdfJob) -> Path:
    """Fallback: ``--print-to-pdf`` (no running header or page numbers)."""
    target = Path(job.pdf)
    tmp = target.with_name(f".{target.name}.tmp")
    cmd = [
        exe,
        *_FLAGS,
        f"--user-data-dir={profile}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={tmp}",
        Path(job.html).resolve().as_uri(),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PRINT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise PrintFailed(
            f"Chromium did not print {job.html} within {PRINT_TIMEOUT:.0f} s"
        ) from exc
    if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise PrintFailed(
            f"Chromium could not print {job.html} (exit {done.returncode}): "
            + done.stderr.decode("utf-8", "replace").strip()[-300:]
        )
    os.replace(tmp, target)
    return target


class _DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (JSON messages ending in NUL)."""

    def __init__(self, exe: str, profile: str):
        self.exe, self.profile = exe, profile
        self.next_id = 0
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> _DevTools:
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDWR)
        args = [
            self.exe,
            *_FLAGS,
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
            (os.POSIX_SPAWN_DUP2, to_chrome_r, 3),
            (os.POSIX_SPAWN_DUP2, from_chrome_w, 4),
        ]
        try:
            self.pid = os.posix_spawn(self.exe, args, dict(os.environ), file_actions=actions)
        finally:
            for fd in (to_chrome_r, from_chrome_w, devnull):
                os.close(fd)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, PrintFailed):
            self._send("Browser.close")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        for fd in (self.to_chrome, self.from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- protocol --------------------------------------------------------------------

    def _send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self.to_chrome, data) :]
        return self.next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PrintFailed(f"Chromium did not answer within {PRINT_TIMEOUT:.0f} s")
            ready, _, _ = select.select([self.from_chrome], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise PrintFailed("Chromium stopped before it printed the page")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + PRINT_TIMEOUT
        wanted = self._send(method, params, session)
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise PrintFailed(f"Chromium: {method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, session: str) -> None:
        deadline = time.monotonic() + PRINT_TIMEOUT
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    del self.events[i]
                    return
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)

    def print_page(self, job: PdfJob) -> bytes:
        """Open ``job.html`` in a fresh tab, wait for it to load, print it; the PDF's bytes."""
        page = Path(job.html).resolve()
        if not page.is_file():
            raise PrintFailed(f"{job.html}: no such page to print")
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        try:
            self.call("Page.enable", session=session)
            self.call("Page.navigate", {"url": page.as_uri()}, session=session)
            self.wait_event("Page.loadEventFired", session)
            result = self.call(
                "Page.printToPDF",
                {
                    **_A4,
                    **_MARGINS,
                    "printBackground": True,
                    "displayHeaderFooter": True,
                    "headerTemplate": header_template(job.header),
                    "footerTemplate": FOOTER_TEMPLATE,
                    "preferCSSPageSize": False,
                },
                session=session,
            )
        finally:
            self.call("Target.closeTarget", {"targetId": target})
        data = base64.b64decode(result["data"])
        if not data.startswith(b"%PDF"):
            raise PrintFailed(f"Chromium printed no PDF for {job.html}")
        return data

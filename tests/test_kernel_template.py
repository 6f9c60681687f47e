"""The kernel template: phase kernels forked from one process that paid the imports once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pilot_lib._kernel import WARNINGS_LOG
from pilot_lib._kernel_template import KernelTemplate, TemplateUnavailable
from pilot_lib.runner import (
    KERNEL_ARGUMENTS,
    PHASE_NOTEBOOKS,
    _kernel_manager_class,
    _kernel_python,
    _notebook_imports,
    notebooks_dir,
)

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "win32", reason="the kernel template needs fork"
)


def _run_in_kernel(km: Any, code: str) -> str:
    """Execute ``code`` in the started kernel ``km``; its stdout."""

    async def go() -> str:
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            msg_id = kc.execute(code)
            out = []
            while True:
                msg = await kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    raise AssertionError(msg["content"]["evalue"])
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
        finally:
            kc.stop_channels()

    return asyncio.run(go())


@pytest.mark.slow
def test_a_kernel_forked_from_the_template_is_an_ordinary_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = _kernel_python("python3")
    assert python == sys.executable
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "warns_at_import_i19.py").write_text(
        "import warnings\nwarnings.warn('a note at import', FutureWarning)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(mods))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    template = KernelTemplate(python, [["warns_at_import_i19", []]], everything=False)
    template.start()
    km = _kernel_manager_class()(kernel_name="python3")
    km.kernel_template = template
    log = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        asyncio.run(
            km.start_kernel(
                extra_arguments=list(KERNEL_ARGUMENTS),
                cwd=str(run_dir),
                stderr=log,
                env=dict(os.environ, PILOT_TEMPLATE_TEST="yes"),
            )
        )
        pid = km.provisioner.pid
        assert template.pid is not None and km.provisioner.pgid == pid
        out = _run_in_kernel(
            km,
            "import os, sys\n"
            "print(os.getppid(), os.getpgid(0), os.getcwd(), os.environ['PILOT_TEMPLATE_TEST'])\n"
            "print(sys.argv[0].endswith('ipykernel_launcher.py'), '' in sys.path,\n"
            "      'warns_at_import_i19' in sys.modules)",
        )
        ppid, pgid, cwd, env, *_ = out.split()
        # the template's child, in its own process group, in the folder and environment asked
        assert int(ppid) == template.pid and int(pgid) == pid
        assert Path(cwd) == run_dir.resolve() and env == "yes"
        # argv and sys.path as ipykernel_launcher's; the module imported once, in the template
        assert out.split("\n")[1] == "True True True"
        # the warning the template's import raised is the kernel's: in warnings.log, as a
        # spawned kernel's would be, not on the console
        assert "FutureWarning: a note at import" in (run_dir / WARNINGS_LOG).read_text()
        assert asyncio.run(km.is_alive())
        os.killpg(pid, signal.SIGKILL)  # as the runner's Ctrl-C does
        deadline = time.monotonic() + 10
        while asyncio.run(km.is_alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not asyncio.run(km.is_alive())
        assert km.provisioner.process.poll() == -signal.SIGKILL  # the template's notice
        log.seek(0)
        assert log.read() == b""  # nothing on the kernel's stderr
    finally:
        asyncio.run(km.shutdown_kernel(now=True))
        template.close()
        log.close()
    assert template._process is None  # the template ended with the run


def test_the_template_declines_what_it_cannot_fork() -> None:
    template = KernelTemplate(sys.executable, [], everything=False)
    assert not template.can_fork(["/other/python", "-m", "ipykernel_launcher", "-f", "c.json"])
    assert not template.can_fork([sys.executable, "-m", "other_kernel", "-f", "c.json"])
    with pytest.raises(TemplateUnavailable):  # never started: the runner spawns instead
        template.launch([sys.executable, "-m", "other_kernel"], cwd=".", env={})


def test_the_template_imports_what_every_phase_notebook_imports() -> None:
    nb_dir = notebooks_dir()
    for phase, (_key, notebook) in PHASE_NOTEBOOKS.items():
        modules = {m for m, _ in _notebook_imports(nb_dir / notebook, "duckdb")}
        assert "pilot_lib.report" in modules or "pilot_lib.phases" in modules, phase
        if phase != 5:
            assert {"pilot_lib.ingest.store", "ibis.backends.duckdb"} <= modules

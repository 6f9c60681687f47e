"""The runner's schedule, with real kernels on the tiny test pilot.

- ``--jobs`` bounds the kernels alive at once (a kernel manager that counts
  them), and jobs=2 writes the same result files as jobs=1;
- a kernel that cannot bind its port (a real socket the test holds open) is
  started again on fresh ports, and ``run.json`` records the retry;
- an ingest failure is one line, before any notebook runs;
- Ctrl-C (a KeyboardInterrupt from the progress callback, or a real SIGINT to
  the console script) stops the kernels, marks the run ``interrupted`` and
  leaves ``latest`` alone.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import sleepy_notebooks, spark_failure, tiny_frames, write_pilot

from pilot_lib.cli import main
from pilot_lib.runner import (
    PHASE_NOTEBOOKS,
    RunInterrupted,
    _kernel_manager_class,
    _warm_up_code,
    latest_run_dir,
    run_pilot,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RESULT_FILES = [f"{key}.json" for key, _ in PHASE_NOTEBOOKS.values()]


class KernelCount:
    """Kernels alive at once, counted from before launch until after shutdown (an upper bound)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alive = 0
        self.most = 0
        self.pids: list[int] = []

    def manager(self) -> type:
        base = _kernel_manager_class()
        count = self

        class Counting(base):  # type: ignore[misc, valid-type]
            async def start_kernel(self, **kw):  # type: ignore[no-untyped-def]
                with count.lock:
                    count.alive += 1
                    count.most = max(count.most, count.alive)
                self._counted = True
                await super().start_kernel(**kw)
                count.pids.append(self.provisioner.process.pid)

            async def shutdown_kernel(self, now=False, restart=False):  # type: ignore[no-untyped-def]
                try:
                    await super().shutdown_kernel(now=now, restart=restart)
                finally:
                    if getattr(self, "_counted", False):
                        self._counted = False
                        with count.lock:
                            count.alive -= 1

        return Counting


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _manifest(run_dir: Path | str) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pilot(tmp_path_factory.mktemp("pilots") / "tiny")


@pytest.fixture(scope="module")
def by_jobs(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    """The tiny pilot, all five phases, with jobs=1 and with jobs=2."""
    runs = {}
    for jobs in (1, 2):
        count = KernelCount()
        out = tmp_path_factory.mktemp(f"jobs{jobs}")
        started = time.perf_counter()
        outcome = run_pilot(tiny, out, jobs=jobs, kernel_manager_class=count.manager())
        runs[jobs] = {
            "outcome": outcome,
            "count": count,
            "seconds": time.perf_counter() - started,
        }
    return runs


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_bounds_the_kernels_alive_at_once(by_jobs: dict, jobs: int) -> None:
    run = by_jobs[jobs]
    assert run["outcome"].ok, run["outcome"].error
    assert run["count"].most == jobs  # never more; with jobs=2 two phases did run at once
    assert run["count"].alive == 0
    assert len(run["count"].pids) == 5
    assert not any(_alive(pid) for pid in run["count"].pids)


def test_concurrent_phases_write_the_same_results_as_one_at_a_time(by_jobs: dict) -> None:
    one, two = (Path(by_jobs[j]["outcome"].run_dir) for j in (1, 2))
    for name in RESULT_FILES:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert by_jobs[2]["outcome"].decision == by_jobs[1]["outcome"].decision is not None


def test_ingest_runs_once_and_every_phase_reuses_the_store(by_jobs: dict) -> None:
    for run in by_jobs.values():
        run_dir = Path(run["outcome"].run_dir)
        assert [p.relative_to(run_dir) for p in run_dir.rglob("manifest.json")] == [
            Path("store/manifest.json")
        ]
        store = json.loads((run_dir / "store" / "manifest.json").read_text())
        ingest = _manifest(run_dir)["ingest"]
        assert ingest["status"] == "succeeded" and ingest["error"] is None
        assert ingest["store"] == "store" and ingest["fingerprint"] == store["fingerprint"]
        assert ingest["engine"] == store["engine_label"]
        assert isinstance(ingest["seconds"], float)
        assert ingest["datasets"] == {
            name: {k: entry[k] for k in ("rows", "valid", "quarantined")}
            for name, entry in store["datasets"].items()
        }
        for phase in (1, 2, 3, 4):
            notebook = (run_dir / PHASE_NOTEBOOKS[phase][1]).read_text(encoding="utf-8")
            assert "The checked evidence store was reused" in notebook, phase
            assert "The checked evidence store was built now" not in notebook, phase


def test_phases_1_to_4_overlap_and_phase_5_starts_after_them(by_jobs: dict) -> None:
    run_dir = Path(by_jobs[2]["outcome"].run_dir)
    spans = {}
    for phase, (_, notebook) in PHASE_NOTEBOOKS.items():
        meta = json.loads((run_dir / notebook).read_text())["metadata"]["papermill"]
        spans[phase] = (meta["start_time"], meta["end_time"])
    overlapping = [
        (a, b)
        for a in (1, 2, 3, 4)
        for b in (1, 2, 3, 4)
        if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    assert overlapping, spans
    assert all(spans[5][0] >= spans[p][1] for p in (1, 2, 3, 4)), spans


def test_the_warm_up_loads_a_notebooks_imports_and_binds_no_name() -> None:
    notebook = REPO / "notebooks" / PHASE_NOTEBOOKS[2][1]
    code = _warm_up_code(notebook, "duckdb")
    assert code is not None
    for module in ("pilot_lib.phases", "pilot_lib.ingest.store", "ibis.backends.duckdb"):
        assert repr(module) in code
    namespace: dict = {}
    exec(compile(code, "warm-up", "exec"), namespace)
    assert set(namespace) == {"__builtins__"}  # a notebook missing an import still fails
    assert "pilot_lib.report.notebook" in sys.modules
    # the gate phase reads result files: no store modules for it
    assert "ibis.backends" not in (_warm_up_code(REPO / "notebooks" / PHASE_NOTEBOOKS[5][1]) or "")


# --------------------------------------------------------------------------- a failing phase


def test_a_failing_phase_skips_phase_5_while_the_others_finish(tiny: Path, tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks)
    drift = notebooks / PHASE_NOTEBOOKS[3][1]
    doc = json.loads(drift.read_text(encoding="utf-8"))
    first_code = next(i for i, c in enumerate(doc["cells"]) if c["cell_type"] == "code")
    doc["cells"].insert(
        first_code + 2,
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "boom",
            "metadata": {},
            "outputs": [],
            "source": ["raise RuntimeError('drift data centre on fire')"],
        },
    )
    drift.write_text(json.dumps(doc), encoding="utf-8")
    seen: list[tuple[int, str]] = []
    outcome = run_pilot(
        tiny,
        tmp_path / "runs",
        jobs=2,
        notebooks=notebooks,
        progress=lambda pilot, phase, status: seen.append((phase, status)),
    )
    assert outcome.status == "failed"
    assert outcome.error.startswith("pilot tiny: phase 3 (drift_analysis) failed at cell In [")
    assert "RuntimeError: drift data centre on fire" in outcome.error
    statuses = {p.phase: p.status for p in outcome.phases}
    assert statuses == {1: "succeeded", 2: "succeeded", 3: "failed", 4: "succeeded", 5: "skipped"}
    assert sorted(seen) == sorted(statuses.items())
    run_dir = Path(outcome.run_dir)
    for key in ("use_case_scoring", "kpi_baselining", "incident_drill_review"):
        assert (run_dir / f"{key}.json").is_file()
    assert not (run_dir / "drift_analysis.json").exists()
    assert not (run_dir / PHASE_NOTEBOOKS[5][1]).exists()
    assert (run_dir / "03_drift_analysis.html").is_file()  # the error, for whoever opens it
    assert latest_run_dir(tmp_path / "runs" / "tiny") is None


# --------------------------------------------------------------------------- kernel start


def test_a_kernel_that_cannot_bind_its_port_is_started_again(tiny: Path, tmp_path: Path) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    shell_ports: list[int] = []

    class PortTaken(_kernel_manager_class()):  # type: ignore[misc]
        def write_connection_file(self, **kw):  # type: ignore[no-untyped-def]
            if not shell_ports:  # the first start: a port another process holds
                self.shell_port = taken
            shell_ports.append(self.shell_port)
            return super().write_connection_file(**kw)

    try:
        outcome = run_pilot(
            tiny, tmp_path, phases=[1], export=False, kernel_manager_class=PortTaken
        )
    finally:
        holder.close()
    assert outcome.ok, outcome.error
    assert shell_ports[0] == taken and len(shell_ports) == 2 and shell_ports[1] != taken
    phase = _manifest(outcome.run_dir)["phases"][0]
    assert phase["status"] == "succeeded" and phase["attempts"] == 2
    (why,) = phase["start_errors"]
    assert "Kernel died before replying to kernel_info" in why
    assert "Address already in use" in why
    assert (Path(outcome.run_dir) / "use_case_scoring.json").is_file()


# --------------------------------------------------------------------------- ingest failure


def test_an_ingest_failure_is_one_line_and_no_phase_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tiny_frames()
    frames["cases"] = frames["cases"].drop(columns=["cohort"])
    pilot = write_pilot(tmp_path / "pilots" / "tiny", frames)
    out = tmp_path / "runs"
    code = main(["run", str(pilot), "--out", str(out), "--no-export"])
    err = capsys.readouterr().err
    assert code == 1
    (line,) = [ln for ln in err.splitlines() if ln.startswith("tiny: FAILED.")]
    assert line.startswith(
        "tiny: FAILED. pilot tiny: ingest (the checked evidence store) failed: ContractError: "
    )
    assert "'cases'" in line and "'cohort'" in line
    assert "Traceback" not in err
    skipped = [ln for ln in err.splitlines() if ln.endswith(" skipped")]
    assert len(skipped) == 5
    (run_dir,) = [p for p in (out / "tiny").iterdir() if not p.is_symlink()]
    assert f"run folder (kept, with what was done): {run_dir}" in err
    manifest = _manifest(run_dir)
    assert manifest["status"] == "failed" and manifest["error"] in line
    assert manifest["ingest"]["status"] == "failed"
    assert [p["status"] for p in manifest["phases"]] == ["skipped"] * 5
    assert all(p["attempts"] in (0, 1) for p in manifest["phases"])
    # no store, no notebook: run.json, the pages that say the run failed and the authority
    # policy exported from the pilot file when the folder was made
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "index.html",
        "policy",
        "run.json",
        "summary.json",
        "summary.md",
    ]
    assert "FAILED" in (run_dir / "summary.md").read_text(encoding="utf-8").upper()
    assert latest_run_dir(out / "tiny") is None


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_the_kernels_and_marks_the_run_interrupted(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    earlier = run_pilot(tiny, out, phases=[5], export=False)
    assert earlier.ok
    before = _manifest(earlier.run_dir)
    count = KernelCount()
    seen = []

    def progress(pilot: str, phase: int, status: str) -> None:
        seen.append((phase, status))
        raise KeyboardInterrupt  # as a Ctrl-C while the other phases run

    with pytest.raises(RunInterrupted) as caught:
        run_pilot(
            tiny,
            out,
            phases=[1, 2, 3, 4],
            jobs=2,
            export=False,
            progress=progress,
            kernel_manager_class=count.manager(),
        )
    (outcome,) = caught.value.outcomes
    assert outcome.status == "interrupted"
    assert caught.value.summary() == (
        f"interrupted: 1 run folder(s) marked interrupted, latest not moved: {outcome.run_dir}"
    )
    manifest = _manifest(outcome.run_dir)
    assert manifest["status"] == "interrupted"
    assert "interrupted" in manifest["error"]
    statuses = [p["status"] for p in manifest["phases"]]
    assert statuses.count("succeeded") == 1 and len(seen) == 1
    assert "interrupted" in statuses  # the phase running next to it was stopped
    assert set(statuses) <= {"succeeded", "interrupted", "skipped"}
    # every kernel is gone, the earlier run is untouched and still the latest
    assert count.alive == 0 and count.pids
    assert not any(_alive(pid) for pid in count.pids)
    assert latest_run_dir(out / "tiny") == Path(earlier.run_dir)
    assert _manifest(earlier.run_dir) == before


def test_sigint_to_the_console_script_exits_130_with_one_line(tiny: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("pilot-workbook")
    out = tmp_path / "runs"
    nb_dir = sleepy_notebooks(tmp_path / "notebooks")  # still running when interrupted
    proc = subprocess.Popen(
        [str(script), "run", str(tiny), "--out", str(out), "--jobs", "2", "--no-export"]
        + ["--notebooks", str(nb_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600  # a bound on a hang, not on speed
    # wait until a phase runs (its result file is the first sign), then Ctrl-C
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("tiny/*/store/manifest.json")) and list(out.glob("tiny/*/*.ipynb")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    (run_dir,) = [p for p in (out / "tiny").iterdir() if not p.is_symlink()]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("interrupted")]
    assert lines == [
        f"interrupted: 1 run folder(s) marked interrupted, latest not moved: {run_dir}"
    ]
    assert _manifest(run_dir)["status"] == "interrupted"
    assert latest_run_dir(out / "tiny") is None
    assert stdout == ""


# --------------------------------------------------------------------------- --engine


def test_run_engine_option_overrides_the_pilot_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spark = {"name": "spark", "master": "spark://nowhere.invalid:7077"}
    pilot = write_pilot(tmp_path / "pilots" / "tiny", doc_changes={"engine": spark})
    out = tmp_path / "runs"
    argv = ["run", str(pilot), "--out", str(out), "--phases", "5", "--no-export"]
    assert main([*argv, "--engine", "duckdb"]) == 0, capsys.readouterr().err
    run_dir = latest_run_dir(out / "tiny")
    assert run_dir is not None
    assert _manifest(run_dir)["ingest"]["engine"].startswith("duckdb")
    store = json.loads((run_dir / "store" / "manifest.json").read_text())
    assert store["engine"]["name"] == "duckdb"


def test_run_spark_master_selects_spark_and_its_failure_is_the_ingest_line(
    tiny: Path, tmp_path: Path
) -> None:
    # In a fresh process: a process that has run Spark before keeps its JVM gateway, and
    # a new session would start on it whatever JAVA_HOME says (pytest-xdist workers run
    # many test files in one process).
    import os

    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}  # Spark cannot start here
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-c", "from pilot_lib.cli import main; raise SystemExit(main())",
         "run", str(tiny), "--out", str(out), "--spark-master", "local[1]"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 1, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("tiny: FAILED.")]
    assert line.startswith(
        "tiny: FAILED. pilot tiny: ingest (the checked evidence store) failed: "
        f"DataSourceError: engine spark: {spark_failure('local[1]')}"
    )
    assert "Traceback" not in err

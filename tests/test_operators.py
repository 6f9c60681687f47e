"""Runs an operator can rely on (issue 11, "Build for operators").

- ``run`` checks every pilot before anything starts: a mistyped path or an
  invalid pilot file among several exits 2 with the ``validate`` message and
  makes no folder at all; an output folder that cannot be written is named;
- ``run.json`` exists from the moment the run folder does (``status:
  running``), written whole, and SIGTERM marks the run ``interrupted`` with
  ``latest`` unmoved (a real signal to the console script);
- a full disk (a small tmpfs filled up while the run runs, where the test can
  mount one) or an injected write error fails the run naming the file, leaves no
  partial page and does not move ``latest``;
- ``-p NAME VALUE`` is parsed by the type the notebook's parameters cell
  declares (as ``papermill --help-notebook`` reads it) and reaches the notebook;
  an unknown name exits 2 listing the known ones; ``--timeout`` fails a phase
  whose cell runs too long, saying so;
- ``new`` scaffolds a pilot folder that validates; ``notebooks`` copies the
  phase notebooks;
- paths holding both quote characters work; kernel warnings stay off the pages.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import sleepy_notebooks, write_pilot

from pilot_lib.cli import main
from pilot_lib.errors import WorkbookError
from pilot_lib.runner import (
    PHASE_NOTEBOOKS,
    _declared_parameters,
    latest_run_dir,
    notebook_parameters,
    notebooks_dir,
    parse_parameter,
    run_pilot,
)
from pilot_lib.runs import (
    RESERVE,
    WorkingFolderError,
    atomic_write_text,
    check_writable,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("pilot-workbook")


def _manifest(run_dir: Path | str) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))


def _run_folders(out: Path, pilot: str) -> list[Path]:
    folder = out / pilot
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pilot(tmp_path_factory.mktemp("pilots") / "tiny")


# --------------------------------------------------------------------------- before anything starts


def test_a_mistyped_pilot_among_several_exits_2_and_creates_nothing(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    code = main(["run", str(tiny), str(tmp_path / "tinny"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path / 'tinny'}" in err and "no pilot file here" in err
    assert "no run folder was made" in err and "Traceback" not in err
    assert not out.exists()  # not even the runs folder


@pytest.mark.parametrize(
    "damage, said",
    [
        ("name: a\nname: b\n", "duplicate key 'name'"),
        (
            "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            ),
            "anchors and aliases expand",
        ),
        ("", "the pilot file is empty"),
    ],
)
def test_an_invalid_pilot_file_exits_2_with_the_validate_message(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, said: str
) -> None:
    broken = shutil.copytree(tiny, tmp_path / "broken")
    (broken / "pilot.yaml").write_text(damage, encoding="utf-8")
    out = tmp_path / "runs"
    code = main(["run", str(tiny), str(broken), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert said in err and str(broken / "pilot.yaml") in err  # refused, not expanded
    assert not out.exists()
    # the same message as validate gives
    assert main(["validate", str(broken)]) == 2
    assert said in capsys.readouterr().err


def test_an_unwritable_runs_folder_is_named_with_the_way_out(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    code = main(["run", str(tiny), "--out", str(blocker / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write to the runs folder {blocker / 'runs'}" in err
    assert "choose another with --out DIR" in err


def test_check_writable_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(WorkingFolderError) as caught:
        check_writable(tmp_path / "f" / "q", "the quarantine folder", "pass --quarantine-dir")
    assert str(caught.value).startswith(f"cannot write to the quarantine folder {tmp_path}/f/q: ")
    assert str(caught.value).endswith("; pass --quarantine-dir")
    assert check_writable(tmp_path / "new" / "deep", "x", "y").is_dir()
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # the probe is gone


def test_data_outside_the_pilot_folder_is_shown_resolved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pilot_lib.config import PilotFileError, load_pilot, paths_outside

    (tmp_path / "pilots" / "shared").mkdir(parents=True)
    pilot = write_pilot(tmp_path / "pilots" / "p", files={"candidates": "../shared/candidates.csv"})
    resolved = (tmp_path / "pilots" / "shared" / "candidates.csv").resolve()
    assert paths_outside(load_pilot(pilot)) == [
        ("datasets.candidates.path", "../shared/candidates.csv", str(resolved))
    ]
    assert main(["validate", str(pilot), "--quarantine-dir", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "data read from outside the pilot folder (allowed; check these are meant):" in out
    assert f"  datasets.candidates.path: ../shared/candidates.csv -> {resolved}" in out
    # a missing one: the message shows where it was looked for, resolved
    resolved.unlink()
    with pytest.raises(PilotFileError) as caught:
        load_pilot(pilot)
    assert f"no file at {resolved}; paths are relative" in str(caught.value)
    assert "/p/../shared" not in str(caught.value)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_the_old_file_and_names_the_target_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    atomic_write_text(target, '{"old": 1}\n')
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        atomic_write_text(target, '{"new": 2}\n')
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_text() == '{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left


# --------------------------------------------------------------------------- parameters


def test_parameters_cells_declare_types_papermill_reads() -> None:
    nb_dir = notebooks_dir()
    types = {
        name: info["inferred_type_name"]
        for _, nb in PHASE_NOTEBOOKS.values()
        for name, info in _declared_parameters(nb_dir / nb).items()
    }
    assert types == {
        "pilot": "str",
        "output_dir": "Optional[str]",
        "minimum_score": "Optional[int]",
        "criterion_weights": "Optional[dict]",
        "interim": "Optional[bool]",
        "confidence": "float",
        "top_features": "int",
        "sla_minutes": "Optional[float]",
        "authority_what_if": "dict",
        "recompute": "bool",
    }
    # and papermill's own command line lists them
    shown = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(nb_dir / PHASE_NOTEBOOKS[3][1])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "top_features: int (default 3)" in shown


@pytest.mark.parametrize(
    "text, type_name, expected",
    [
        ("3", "int", 3),
        (" 0.9 ", "float", 0.9),
        ("yes", "bool", True),
        ("False", "bool", False),
        ("none", "Optional[int]", None),
        ("4", "Optional[int]", 4),
        ("30.5", "Optional[float]", 30.5),
        ('{"impact": 2, "data": 1}', "Optional[dict]", {"impact": 2, "data": 1}),
        ("{impact: 2}", "Optional[dict]", {"impact": 2}),
        ("[1, 2]", "list", [1, 2]),
        ('it\'s "quoted"', "str", 'it\'s "quoted"'),
        ("12", "None", 12),  # undeclared type: YAML
    ],
)
def test_parse_parameter_by_declared_type(text: str, type_name: str, expected: object) -> None:
    value = parse_parameter("x", text, type_name)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "text, type_name, said",
    [
        ("three", "int", "x takes a whole number"),
        ("0.9x", "float", "x takes a number"),
        ("maybe", "bool", "x takes true or false"),
        ("[1]", "Optional[dict]", "x takes a mapping"),
        ("abc", "Optional[int]", "or none (declared type Optional[int])"),
    ],
)
def test_parse_parameter_refuses_the_wrong_type(text: str, type_name: str, said: str) -> None:
    with pytest.raises(WorkbookError, match=None) as caught:
        parse_parameter("x", text, type_name)
    assert said in str(caught.value) and repr(text) in str(caught.value)


def test_notebook_parameters_go_to_the_phases_that_declare_them() -> None:
    typed = notebook_parameters(
        [("top_features", "2"), ("confidence", "0.9"), ("sla_minutes", "30")], [1, 2, 3, 4, 5]
    )
    assert typed == {3: {"top_features": 2}, 2: {"confidence": 0.9}, 4: {"sla_minutes": 30.0}}


@pytest.mark.parametrize(
    "argv, said",
    [
        (["-p", "top_featurs", "2"], "no phase notebook has a parameter 'top_featurs'"),
        (["-p", "pilot", "x"], "set by the runner"),
        (["--param", "top_features"], "--param takes NAME=VALUE"),
        (["-p", "top_features", "two"], "top_features takes a whole number"),
        (["-p", "sla_minutes", "30", "--phases", "2"], "not part of this run"),
        (["--timeout", "0"], "--timeout takes seconds greater than 0"),
    ],
)
def test_bad_parameters_exit_2_before_anything_starts(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    out = tmp_path / "runs"
    code = main(["run", str(tiny), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and said in err, err
    if "no phase notebook" in said:
        assert (
            "parameters you can set: authority_what_if, confidence, criterion_weights, minimum_score"
            in err
        )
    assert not out.exists()


# --------------------------------------------------------------------------- scaffolding


def test_new_scaffolds_a_pilot_that_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pilot_lib.ingest.contracts import contract_columns
    from pilot_lib.scaffold import DATA_FILES

    monkeypatch.chdir(tmp_path)
    assert main(["new", "pilots/first pilot"]) == 0
    folder = tmp_path / "pilots" / "first pilot"
    text = (folder / "pilot.yaml").read_text()
    assert text.startswith("# Pilot file") and "name: first-pilot" in text
    for dataset, file in DATA_FILES.items():
        header = (folder / file).read_text().strip().split(",")
        assert header[: len(contract_columns(dataset))] == list(contract_columns(dataset))
    assert main(["validate", str(folder), "--quarantine-dir", "q"]) == 0
    assert "pilot first-pilot" in capsys.readouterr().out
    # a folder with files in it is not overwritten
    assert main(["new", str(folder)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err


def test_notebooks_copies_the_phase_notebooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["notebooks", str(tmp_path / "nb")]) == 0
    names = sorted(p.name for p in (tmp_path / "nb").iterdir())
    assert names == sorted(nb for _, nb in PHASE_NOTEBOOKS.values())
    assert main(["notebooks", str(tmp_path / "nb")]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["notebooks", str(tmp_path / "nb"), "--force"]) == 0


# --------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_sigterm_marks_the_run_interrupted_and_leaves_latest(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    earlier = run_pilot(tiny, out, phases=[1], export=False)
    assert earlier.ok
    nb_dir = sleepy_notebooks(tmp_path / "notebooks")  # still running when signalled
    proc = subprocess.Popen(
        [str(SCRIPT), "run", str(tiny), "--out", str(out), "--jobs", "2", "--no-export"]
        + ["--notebooks", str(nb_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600  # a bound on a hang, not on speed
    seen_running = False
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        folders = [f for f in _run_folders(out, "tiny") if str(f) != earlier.run_dir]
        if folders:
            run_dir = folders[0]
            if (run_dir / "run.json").is_file():
                seen_running |= _manifest(run_dir)["status"] == "running"
            if list(run_dir.glob("*.ipynb")):  # a phase has started
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert run_dir is not None and seen_running  # run.json said so from the start
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert f"interrupted: 1 run folder(s) marked interrupted, latest not moved: {run_dir}" in stderr
    manifest = _manifest(run_dir)
    assert manifest["status"] == "interrupted" and "SIGTERM" in manifest["error"]
    assert manifest["finished_at"] is not None
    assert latest_run_dir(out / "tiny") == Path(earlier.run_dir)
    assert not (run_dir / RESERVE).exists()


@pytest.mark.slow
def test_an_export_write_error_fails_the_run_naming_the_file(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pilot_lib.report.export as export

    out = tmp_path / "runs"
    earlier = run_pilot(tiny, out, phases=[1], export=False)

    def full_disk(notebook: Path, html: Path, **kw: object) -> Path:
        html.write_text("<html><body>half a pa")  # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device", str(html))

    monkeypatch.setattr(export, "export_html", full_disk)
    code = main(["run", str(tiny), "--out", str(out), "--phases", "1"])
    err = capsys.readouterr().err
    assert code == 1
    (run_dir,) = [f for f in _run_folders(out, "tiny") if str(f) != earlier.run_dir]
    manifest = _manifest(run_dir)
    assert manifest["status"] == "failed"
    page = run_dir / "01_use_case_scoring.html"
    assert f"could not write {page}: No space left on device" in manifest["error"]
    assert "No space left on device" in err
    assert not page.exists()  # no truncated page left looking like one
    assert latest_run_dir(out / "tiny") == Path(earlier.run_dir)


def _can_mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.slow
def test_a_disk_that_fills_up_during_the_run_marks_it_failed(tiny: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("needs root and tmpfs to mount a small disk (the export test injects instead)")
    try:
        out = disk / "runs"
        earlier = run_pilot(tiny, out, phases=[1], export=False)
        assert earlier.ok
        proc = subprocess.Popen(
            [str(SCRIPT), "run", str(tiny), "--out", str(out), "--jobs", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            stores = [
                m
                for m in out.glob("tiny/2*/store/manifest.json")
                if m.parents[1].name != Path(earlier.run_dir).name
            ]
            if stores:
                break
            time.sleep(0.02)
        # the store is built: fill the disk to the last byte
        # unbuffered: nothing is left in a buffer for close() to fail on again
        with open(disk / "filler", "wb", buffering=0) as fh, pytest.raises(OSError) as full:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        assert full.value.errno == errno.ENOSPC
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1, stdout + stderr
        assert "Traceback" not in stderr
        folders = [f for f in _run_folders(out, "tiny") if str(f) != earlier.run_dir]
        assert len(folders) == 1, stdout + stderr
        run_dir = folders[0]
        manifest = _manifest(run_dir)
        assert manifest["status"] == "failed"
        assert "No space left on device" in manifest["error"]
        assert "could not write" in manifest["error"] or "[Errno 28]" in manifest["error"]
        assert latest_run_dir(out / "tiny") == Path(earlier.run_dir)
        # no empty or truncated file left looking like a result: every notebook and
        # result file left parses
        for left in [*run_dir.glob("*.json"), *run_dir.glob("*.ipynb")]:
            json.loads(left.read_text())
        assert not (run_dir / RESERVE).exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


#: How long the slow cell of the timeout test would sleep (seconds): an hour, never reached.
SLEEP = 3600


@pytest.mark.slow
def test_typed_parameter_reaches_the_notebook_and_timeout_fails_a_slow_cell(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # notebooks whose phase 1 has a cell that sleeps far longer than the timeout, and a
    # timeout far longer than any real cell of the tiny pilot (about a second each): the
    # verdict cannot depend on how busy the machine is
    nb_dir = shutil.copytree(notebooks_dir(), tmp_path / "notebooks")
    nb = nbformat.read(nb_dir / PHASE_NOTEBOOKS[1][1], as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(f"import time\ntime.sleep({SLEEP})"))
    nbformat.write(nb, nb_dir / PHASE_NOTEBOOKS[1][1])
    # and phase 3 one that warns, as matplotlib does for a glyph its font lacks
    nb = nbformat.read(nb_dir / PHASE_NOTEBOOKS[3][1], as_version=4)
    warn = "import warnings\nwarnings.warn('Glyph 9989 missing from font(s) DejaVu Sans.')"
    nb.cells.insert(2, nbformat.v4.new_code_cell(warn))
    nbformat.write(nb, nb_dir / PHASE_NOTEBOOKS[3][1])
    out = tmp_path / "runs"
    argv = ["run", str(tiny), "--out", str(out), "--no-export", "--notebooks", str(nb_dir)]
    timeout = "15"
    code = main([*argv, "--phases", "1,3", "--timeout", timeout, "-p", "top_features", "1"])
    err = capsys.readouterr().err
    assert code == 1
    (run_dir,) = _run_folders(out, "tiny")
    manifest = _manifest(run_dir)
    phases = {p["phase"]: p for p in manifest["phases"]}
    assert phases[3]["status"] == "succeeded"
    assert phases[1]["status"] == "failed"
    assert f"a cell ran longer than the --timeout of {timeout} s" in phases[1]["error"]
    assert f"a cell ran longer than the --timeout of {timeout} s" in err
    assert manifest["parameters"] == {"top_features": 1} and manifest["timeout"] == 15
    executed = json.loads((run_dir / PHASE_NOTEBOOKS[3][1]).read_text())
    injected = next(
        c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
    )
    assert "top_features = 1\n" in "".join(injected["source"])
    assert phases[1]["seconds"] < SLEEP  # stopped by the timeout, not by the sleep ending
    # the warning went to the run folder's warnings.log, not into the page
    outputs = json.dumps([c.get("outputs", []) for c in executed["cells"]])
    assert "Glyph 9989" not in outputs
    assert "Glyph 9989 missing" in (run_dir / "warnings.log").read_text()


@pytest.mark.slow
def test_paths_with_both_quote_characters_run_and_warnings_stay_off_the_pages(
    tmp_path: Path,
) -> None:
    base = tmp_path / 'it\'s a "quoted" folder'
    pilot = write_pilot(base / "pilots" / "tiny")
    out = base / "runs"
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pilot_lib.cli import main; sys.exit(main(sys.argv[1:]))",
            "run",
            str(pilot),
            "--out",
            str(out),
            "--phases",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert code.returncode == 0, code.stderr
    assert "Traceback" not in code.stderr
    run_dir = latest_run_dir(out / "tiny")
    assert run_dir is not None and _manifest(run_dir)["status"] == "succeeded"
    executed = json.loads((run_dir / PHASE_NOTEBOOKS[2][1]).read_text())
    streams = [
        "".join(o.get("text", ""))
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    ]
    assert not any("Warning" in s for s in streams), streams


@pytest.mark.slow
def test_a_disk_full_before_the_run_leaves_no_folder_and_says_why(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("needs root and tmpfs to mount a small disk")
    try:
        out = disk / "runs"
        (out / "tiny").mkdir(parents=True)
        with open(disk / "filler", "wb") as fh, pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        code = main(["run", str(tiny), "--out", str(out), "--no-export"])
        err = capsys.readouterr().err
        assert code == 1
        assert "tiny: FAILED. pilot tiny: could not write " in err
        assert "run.json: No space left on device" in err
        assert list((out / "tiny").iterdir()) == []  # no folder without a run.json
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_an_unwritable_quarantine_folder_is_blamed_not_the_data(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    code = main(["validate", str(tiny), "--quarantine-dir", str(tmp_path / "taken" / "q")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write to the quarantine folder {tmp_path / 'taken' / 'q'}" in err
    assert "choose another with --quarantine-dir DIR" in err
    assert "data set" not in err and "Traceback" not in err


def test_environment_yml_takes_every_runtime_dependency_from_conda_forge() -> None:
    import re
    import tomllib

    import yaml

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = {
        re.split(r"[<>=\s]", d, maxsplit=1)[0] for d in env["dependencies"] if isinstance(d, str)
    }
    renamed = {
        "matplotlib": "matplotlib-base",
        "ibis-framework": "ibis-duckdb",
        "duckdb": "python-duckdb",
    }
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in runtime:
        name = re.split(r"[\[<>=\s]", dep, maxsplit=1)[0]
        assert renamed.get(name, name) in conda, f"{name} is not taken from conda-forge"
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip[-1] == '-e ".[dev]"'
    assert "LICENSE" in (REPO / "MANIFEST.in").read_text()
    assert "Apache License" in (REPO / "LICENSE").read_text()


def test_kernel_warnings_go_to_the_run_folder_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from pilot_lib import _kernel

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        _kernel.setup(tmp_path)
        warnings.warn("Glyph 128202 missing from font(s) DejaVu Sans.", UserWarning, stacklevel=1)
    captured = capsys.readouterr()
    assert "Glyph" not in captured.err + captured.out
    assert "UserWarning: Glyph 128202 missing" in (tmp_path / "warnings.log").read_text()

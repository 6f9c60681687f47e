"""The workbook installed from its wheel, as a new user would, away from the clone.

The wheel is built from this checkout and installed (not editable) into a fresh
virtual environment. So that the test needs no network, that environment sees
the test environment's third-party packages through a ``.pth`` line (site
packages added that way do not run their own ``.pth`` files, so the checkout's
editable install stays invisible), and its ``share/jupyter`` (nbconvert's
templates) through ``JUPYTER_PATH``; ``pilot_lib`` and the ``pilot-workbook``
script come from the wheel alone, which the test proves before it runs
anything. Every command then runs in a folder outside the clone, on a pilot
folder outside it: ``new``, ``notebooks``, ``validate`` and a full ``run``
(the phase notebooks come from inside the installed package).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import write_pilot

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("0*.ipynb"))


def _build_wheel(out: Path, env: dict[str, str]) -> Path:
    """``pip wheel`` of the checkout: with the installed setuptools when it is new
    enough (no network), else in pip's isolated build environment."""
    import setuptools

    isolated = int(setuptools.__version__.split(".")[0]) < 77
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(out)]
    if not isolated:
        cmd.insert(5, "--no-build-isolation")
    # the build leaves build/ beside pyproject.toml: build from a copy of the sources
    src = out.parent / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", "tests"
        ),
    )
    cmd[cmd.index(str(REPO))] = str(src)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=out.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("agentic_pilot_workbook-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    # nothing of the checkout on the path: pip would take it for an installed copy
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheel = _build_wheel(base / "dist", clean)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
        cwd=base,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully installed agentic-pilot-workbook" in done.stdout, done.stdout
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the test environment's third-party packages, after the wheel's own
    (Path(purelib) / "zz_test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = base / "elsewhere"
    work.mkdir()
    env = dict(clean)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # the data files pip would have put in the new environment's share/jupyter with the
    # dependencies (nbconvert's templates); its kernel spec runs the new environment's python
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    env["JUPYTER_DATA_DIR"] = str(base / "jupyter")
    return {"wheel": wheel, "venv": venv, "py": py, "work": work, "env": env, "base": base}


def _run(installed: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(installed["venv"] / "bin" / "pilot-workbook"), *args],
        cwd=installed["work"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_carries_the_notebooks_and_the_licence(installed: dict) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("pilot_lib/notebooks/")) == (
        NOTEBOOKS
    )
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "data/", "notebooks/")) for n in names)


def test_pilot_lib_comes_from_the_wheel_not_the_clone(installed: dict) -> None:
    where = subprocess.run(
        [str(installed["py"]), "-c", "import pilot_lib; print(pilot_lib.__file__)"],
        cwd=installed["work"],
        env=installed["env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed["venv"]), where
    assert not Path(where).is_relative_to(REPO)


def test_new_notebooks_validate_and_run_from_the_installed_package(installed: dict) -> None:
    work = installed["work"]
    # scaffold a pilot folder: it loads and validates as it is
    done = _run(installed, "new", "pilots/mine")
    assert done.returncode == 0, done.stderr
    assert (work / "pilots/mine/pilot.yaml").is_file()
    done = _run(installed, "validate", "pilots/mine", "--quarantine-dir", "q")
    assert done.returncode == 0, done.stderr
    assert "pilot mine" in done.stdout
    # the notebooks for JupyterLab: the package's copies, parameters cell kept
    done = _run(installed, "notebooks", "analysis")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (work / "analysis").glob("*.ipynb")) == NOTEBOOKS
    cells = json.loads((work / "analysis" / NOTEBOOKS[0]).read_text())["cells"]
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
    # a full run of a pilot folder outside the clone
    pilot = write_pilot(installed["base"] / "pilots" / "tiny")
    done = _run(installed, "run", str(pilot), "--out", "runs", "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "phase notebooks not found" not in done.stderr
    run_dir = (work / "runs" / "tiny" / "latest").resolve()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert [p["status"] for p in manifest["phases"]] == ["succeeded"] * 5
    assert (run_dir / "05_go_no_go_summary.html").is_file()
    assert (run_dir / "go_no_go_summary.json").is_file()

"""``pilot-workbook run --interim``: the flag reaches the runner and every notebook's parameters."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pilot_lib import cli, runner


def test_run_interim_flag_reaches_the_runner(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_run_pilots(pilots: list[str], out: Path, **kw: Any) -> list[runner.PilotRun]:
        seen.update(kw)
        run = runner.PilotRun(
            pilot="p", pilot_path="p", run_dir=str(tmp_path), run_id="r", interim=kw["interim"]
        )
        run.status, run.decision = "succeeded", "EXTEND"
        return [run]

    monkeypatch.setattr(runner, "run_pilots", fake_run_pilots)
    assert cli.main(["run", "some-pilot", "--out", str(tmp_path), "--interim"]) == 0
    assert seen["interim"] is True
    assert "p: EXTEND (INTERIM look, anytime-valid intervals)" in capsys.readouterr().out
    assert cli.main(["run", "some-pilot", "--out", str(tmp_path)]) == 0
    assert seen["interim"] is False
    assert "INTERIM" not in capsys.readouterr().out


@pytest.mark.parametrize("interim", [True, False])
def test_notebook_parameters_carry_interim_only_when_asked(interim: bool, tmp_path: Path) -> None:
    task = object.__new__(runner._KernelTask)
    task.state = SimpleNamespace(pilot_file=tmp_path / "pilot.yaml", run_dir=tmp_path)
    task.batch = SimpleNamespace(interim=interim, parameters={})
    task.phase = SimpleNamespace(phase=2)
    params = task._parameters()
    assert params["pilot"] == str(tmp_path / "pilot.yaml")
    assert params["output_dir"] == str(tmp_path)
    assert params.get("interim") is (True if interim else None)


def test_every_notebook_takes_the_interim_parameter() -> None:
    import nbformat

    for path in sorted(Path(runner.notebooks_dir()).glob("0*.ipynb")):
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert "interim = None" in cells[0].source, path.name
        assert any("interim=interim" in c.source for c in cells[1:3]), path.name

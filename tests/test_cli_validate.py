"""``pilot-workbook validate``: end to end, in a real subprocess (no traceback for user mistakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import spark_failure, tiny_frames, write_pilot

from pilot_lib.cli import EXIT_OK, EXIT_USAGE, main


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilot_lib.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _broken_pilot(folder: Path) -> Path:
    frames = tiny_frames()
    dec = frames["decisions"]
    dec.loc[[3, 9], "confidence"] = 1.7
    dec.loc[5, "model_cost_usd"] = -0.2
    frames["decisions"] = pd.concat([dec, dec.iloc[[0]]], ignore_index=True)  # a duplicate
    frames["adoption"].loc[0, "overrides"] = 99
    return write_pilot(folder, frames)


def test_validate_prints_the_table_and_writes_quarantine(tmp_path: Path) -> None:
    folder = _broken_pilot(tmp_path / "pilots" / "tiny")
    result = _run("validate", str(folder), cwd=tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    out = result.stdout.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("data set"))
    assert out[header].split() == ["data", "set", "source", "rows", "valid", "quarantined"]
    rows = {line.split()[0]: line.split()[-3:] for line in out[header + 1 : header + 7]}
    assert rows["decisions"] == ["41", "37", "4"]
    assert rows["adoption"] == ["8", "7", "1"]
    assert rows["cases"] == ["12", "12", "0"]
    text = result.stdout
    assert "confidence outside [0, 1]" in text and "duplicate decision_id" in text
    assert "overrides greater than decisions_seen" in text
    # default quarantine folder: runs/<pilot name>/quarantine under the working directory
    qdir = tmp_path / "runs" / "tiny" / "quarantine"
    assert sorted(p.name for p in qdir.iterdir()) == ["adoption.parquet", "decisions.parquet"]
    q = pd.read_parquet(qdir / "decisions.parquet")
    assert q["_quarantine_rule"].value_counts().to_dict() == {
        "confidence outside [0, 1]": 2,
        "negative model_cost_usd": 1,
        "duplicate decision_id": 1,
    }


def test_validate_with_quarantine_dir_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _broken_pilot(tmp_path / "tiny")
    qdir = tmp_path / "somewhere" / "q"
    assert main(["validate", str(folder / "pilot.yaml"), "--quarantine-dir", str(qdir)]) == EXIT_OK
    out = capsys.readouterr().out
    assert str(qdir) in out
    assert (qdir / "decisions.parquet").is_file()


def test_validate_clean_pilot(
    tiny_pilot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tiny_pilot), "--quarantine-dir", str(tmp_path / "q")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "no rows quarantined" in out
    assert not (tmp_path / "q").exists()


def test_invalid_pilot_file_exits_non_zero_without_traceback(
    tiny_pilot: Path, tmp_path: Path
) -> None:
    doc = yaml.safe_load((tiny_pilot / "pilot.yaml").read_text(encoding="utf-8"))
    doc["kpis"][2]["comparator"] = "=>"
    doc["pilot_window"]["end"] = "2026-01-01"
    (tiny_pilot / "pilot.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = _run("validate", str(tiny_pilot), cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip().startswith("- ")]
    assert len(lines) == 2  # one line per problem
    comparator = next(ln for ln in lines if "kpis[2].comparator" in ln)
    assert str(tiny_pilot / "pilot.yaml") in comparator
    assert "'=>'" in comparator and "'>='" in comparator  # bad value and what is allowed
    assert any("pilot_window.end" in ln and "2026-01-01" in ln for ln in lines)


@pytest.mark.parametrize("mistake", ["missing column", "unreadable file"])
def test_data_mistakes_exit_non_zero_without_traceback(tmp_path: Path, mistake: str) -> None:
    frames = tiny_frames()
    if mistake == "missing column":
        frames["cases"] = frames["cases"].drop(columns=["cohort"])
    folder = write_pilot(tmp_path / "tiny", frames)
    if mistake == "unreadable file":
        (folder / "cases.parquet").write_bytes(b"this is not parquet")
    result = _run("validate", str(folder), cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    assert "'cases'" in result.stderr and "cases.parquet" in result.stderr
    if mistake == "missing column":
        assert "'cohort'" in result.stderr


def test_missing_pilot_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope")]) == EXIT_USAGE
    assert "no pilot file here" in capsys.readouterr().err


def test_validate_engine_option_overrides_the_pilot_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the pilot file asks for a Spark cluster nobody runs; --engine duckdb checks locally
    spark = {"name": "spark", "master": "spark://nowhere.invalid:7077"}
    folder = write_pilot(tmp_path / "tiny", doc_changes={"engine": spark})
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(folder), "--engine", "duckdb"]) == EXIT_OK
    assert "data set" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "runs" / "tiny" / "store" / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "duckdb" and manifest["engine"]["master"] is None


def test_validate_spark_master_selects_spark_and_its_failure_is_one_error_line(
    tiny_pilot: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}  # Spark cannot start here
    result = subprocess.run(
        [sys.executable, "-m", "pilot_lib.cli", "validate", str(tiny_pilot)]
        + ["--spark-master", "local[1]"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    # with the spark extra, the session cannot start (no Java); without it, pyspark is named
    assert line.startswith(f"error: engine spark: {spark_failure('local[1]')}")


def test_validate_rejects_an_unknown_engine(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["validate", "somewhere", "--engine", "postgres"])
    assert exit_.value.code == EXIT_USAGE
    assert "invalid choice: 'postgres'" in capsys.readouterr().err


def test_a_drift_feature_the_decision_log_lacks_is_caught_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drift = {
        "features": ["claim_amount", "channel_typo"],
        "reference_window": {"start": "2026-03-02", "end": "2026-03-15"},
        "current_window": {"start": "2026-03-16", "end": "2026-03-29"},
    }
    pilot = write_pilot(tmp_path / "p", doc_changes={"drift": drift})
    code = main(["validate", str(pilot), "--quarantine-dir", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "drift.features names ['channel_typo']" in err
    assert "Fix drift.features in the pilot file" in err
    assert "Traceback" not in err

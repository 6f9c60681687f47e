"""Phase result files: what is written, how, and what is refused on read."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pilot_lib.config import load_pilot
from pilot_lib.results import ResultFileError, read_phase_result, to_jsonable, write_phase_result


def test_round_trip_with_nan_numpy_and_frames(tiny_pilot: Path, tmp_path: Path) -> None:
    pilot = load_pilot(tiny_pilot)
    result = {
        "estimate": np.float64(0.25),
        "n": np.int64(7),
        "missing": math.nan,
        "flag": np.bool_(True),
        "table": pd.DataFrame({"a": [1, 2], "b": [0.5, None]}),
    }
    path = write_phase_result("kpi_baselining", pilot, result, tmp_path / "run")
    assert path == tmp_path / "run" / "kpi_baselining.json"
    doc = json.loads(path.read_text())
    assert doc["pilot"] == pilot.name and doc["pilot_file_sha256"] == pilot.file_hash
    assert doc["result"] == {
        "estimate": 0.25,
        "n": 7,
        "missing": None,
        "flag": True,
        "table": [{"a": 1, "b": 0.5}, {"a": 2, "b": None}],
    }
    assert read_phase_result("kpi_baselining", tmp_path / "run", pilot) == doc["result"]
    # Readable like the notebooks beside it, and no temporary file left behind.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["kpi_baselining.json"]


def test_no_output_dir_writes_nothing(tiny_pilot: Path) -> None:
    pilot = load_pilot(tiny_pilot)
    assert write_phase_result("drift_analysis", pilot, {"x": 1}, None) is None
    assert read_phase_result("drift_analysis", None, pilot) is None


def test_floats_keep_twelve_significant_digits_so_reruns_write_the_same_bytes() -> None:
    # Two engine runs that summed in a different order.
    a, b = 0.1 + 0.2 + 0.3, 0.3 + 0.2 + 0.1
    assert a != b
    assert json.dumps(to_jsonable(a)) == json.dumps(to_jsonable(b)) == "0.6"
    assert to_jsonable(2.0414186158342810) == 2.04141861583


def test_result_of_another_pilot_file_is_refused(tiny_pilot: Path, tmp_path: Path) -> None:
    pilot = load_pilot(tiny_pilot)
    write_phase_result("kpi_baselining", pilot, {"x": 1}, tmp_path)
    text = (tiny_pilot / "pilot.yaml").read_text().replace("value: 0.8\n", "value: 0.75\n", 1)
    (tiny_pilot / "pilot.yaml").write_text(text)
    edited = load_pilot(tiny_pilot)
    assert edited.file_hash != pilot.file_hash
    with pytest.raises(ResultFileError, match="rerun the phase"):
        read_phase_result("kpi_baselining", tmp_path, edited)


def test_corrupt_result_and_unknown_phase(tiny_pilot: Path, tmp_path: Path) -> None:
    (tmp_path / "drift_analysis.json").write_text("{not json")
    with pytest.raises(ResultFileError, match="delete it to recompute"):
        read_phase_result("drift_analysis", tmp_path)
    with pytest.raises(ValueError, match="unknown phase"):
        write_phase_result("phase_six", load_pilot(tiny_pilot), {}, tmp_path)

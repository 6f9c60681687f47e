"""The pilot file: a valid file loads; every kind of mistake names file, field, value, fix."""

from __future__ import annotations

import copy
import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_pilot

from pilot_lib.config import Pilot, PilotFileError, Problem, load_pilot, pilot_file_path
from pilot_lib.errors import WorkbookError

REPO = Path(__file__).parents[1]


def _doc(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "pilot.yaml").read_text(encoding="utf-8"))


def _problems(folder: Path, change: Callable[[dict[str, Any]], None]) -> list[Problem]:
    """Apply ``change`` to the pilot file in ``folder`` and return the problems it causes."""
    doc = copy.deepcopy(_doc(folder))
    change(doc)
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with pytest.raises(PilotFileError) as info:
        load_pilot(folder)
    err = info.value
    assert isinstance(err, WorkbookError)  # the CLI prints it without a traceback
    assert err.path == str(folder / "pilot.yaml")
    for problem in err.problems:
        assert problem.file == str(folder / "pilot.yaml")
        assert str(problem) in str(err)  # one line per problem in the message
    return err.problems


def test_valid_file_loads(tiny_pilot: Path) -> None:
    pilot = load_pilot(tiny_pilot)
    assert isinstance(pilot, Pilot)
    assert pilot.name == "tiny"
    assert pilot.path == (tiny_pilot / "pilot.yaml").resolve()
    assert pilot.pilot_window.start == dt.date(2026, 3, 2)
    assert pilot.pilot_window.days == 28
    assert pilot.pilot_window.end_ts == dt.datetime(2026, 3, 30)
    assert pilot.threshold("cost_per_decision").value == 2.5
    assert pilot.threshold("efficiency_gain") is None
    assert pilot.approvals.required_level(3000) == "adjuster"
    assert pilot.approvals.required_level(1e9) == "supervisor"
    assert pilot.resolve("decisions.parquet") == pilot.folder / "decisions.parquet"
    assert len(pilot.file_hash) == 64
    # a path to the file works the same as its folder
    assert load_pilot(tiny_pilot / "pilot.yaml") == pilot
    assert pilot_file_path(tiny_pilot) == tiny_pilot / "pilot.yaml"


def test_shipped_example_pilot_file_is_valid(tmp_path: Path) -> None:
    """data/pilots/claims-auto/pilot.yaml passes the schema (data files stubbed out)."""
    source = REPO / "data" / "pilots" / "claims-auto" / "pilot.yaml"
    folder = tmp_path / "claims-auto"
    folder.mkdir()
    shutil.copy(source, folder / "pilot.yaml")
    for entry in _doc(folder)["datasets"].values():
        (folder / entry["path"]).touch()
    pilot = load_pilot(folder)
    assert pilot.name == "claims-auto"
    assert pilot.threshold("task_completion_rate").comparator == ">"


def test_unknown_key_is_an_error(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d.update(ownr="someone"))
    assert [(p.field, p.value) for p in problems] == [("ownr", "someone")]
    assert "unknown key" in problems[0].message
    assert "owner" in problems[0].message  # says what is allowed


def test_unknown_nested_key_names_its_path(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d["kpis"][1].update(comparitor="<"))
    assert [p.field for p in problems] == ["kpis[1].comparitor"]
    assert "comparator" in problems[0].message


def test_wrong_type(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d["costs"].update(review_hourly_rate_usd="sixty"))
    assert [(p.field, p.value) for p in problems] == [("costs.review_hourly_rate_usd", "sixty")]
    assert "number" in problems[0].message


def test_bad_comparator(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d["kpis"][2].update(comparator="=>"))
    assert [(p.field, p.value) for p in problems] == [("kpis[2].comparator", "=>")]
    for allowed in ("'>'", "'>='", "'<'", "'<='"):
        assert allowed in problems[0].message
    assert str(problems[0]).startswith(f"{tiny_pilot / 'pilot.yaml'}: kpis[2].comparator:")


def test_end_date_before_start(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d["pilot_window"].update(end="2026-02-27"))
    assert [(p.field, p.value) for p in problems] == [("pilot_window.end", "2026-02-27")]
    assert "before start" in problems[0].message


def test_baseline_overlapping_the_pilot_window(tiny_pilot: Path) -> None:
    start = _doc(tiny_pilot)["pilot_window"]["start"]
    problems = _problems(tiny_pilot, lambda d: d["baseline_window"].update(end=str(start)))
    assert [(p.field, p.value) for p in problems] == [("baseline_window.end", str(start))]
    assert "must end before pilot_window starts" in problems[0].message


def test_required_data_set_not_named(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d["datasets"].pop("cases"))
    assert [p.field for p in problems] == ["datasets"]
    assert "'cases'" in problems[0].message and "required" in problems[0].message


def test_named_data_file_does_not_exist(tiny_pilot: Path) -> None:
    problems = _problems(
        tiny_pilot, lambda d: d["datasets"].update(decisions={"path": "missing/log.parquet"})
    )
    assert [(p.field, p.value) for p in problems] == [
        ("datasets.decisions.path", "missing/log.parquet")
    ]
    assert str(tiny_pilot / "missing" / "log.parquet") in problems[0].message


def test_glob_data_path_is_checked_for_matches(tiny_pilot: Path) -> None:
    (tiny_pilot / "parts" / "2026").mkdir(parents=True)
    (tiny_pilot / "parts" / "2026" / "a.parquet").touch()
    doc = _doc(tiny_pilot)
    doc["datasets"]["decisions"] = {"path": "parts/*/*.parquet"}
    (tiny_pilot / "pilot.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert load_pilot(tiny_pilot).datasets["decisions"].path == "parts/*/*.parquet"
    problems = _problems(tiny_pilot, lambda d: d["datasets"].update(decisions={"path": "x/*.pq"}))
    assert [p.field for p in problems] == ["datasets.decisions.path"]


def test_unknown_data_set_name(tiny_pilot: Path) -> None:
    problems = _problems(
        tiny_pilot, lambda d: d["datasets"].update(decisionz={"path": "decisions.parquet"})
    )
    assert [(p.field, p.value) for p in problems] == [("datasets", ["decisionz"])]
    assert "allowed" in problems[0].message


def test_source_needs_exactly_one_location(tiny_pilot: Path) -> None:
    problems = _problems(
        tiny_pilot,
        lambda d: d["datasets"].update(cases={"path": "cases.parquet", "uri": "duckdb://"}),
    )
    assert [p.field for p in problems] == ["datasets.cases"]
    assert "exactly one" in problems[0].message


def test_drift_window_outside_pilot_window(tiny_pilot: Path) -> None:
    problems = _problems(
        tiny_pilot, lambda d: d["drift"]["reference_window"].update(start="2026-02-01")
    )
    assert [p.field for p in problems] == ["drift.reference_window"]
    assert problems[0].value == {"start": "2026-02-01", "end": "2026-03-15"}


def test_percent_written_as_a_whole_number(tiny_pilot: Path) -> None:
    problems = _problems(tiny_pilot, lambda d: d["kpis"][0].update(value=80))
    assert [(p.field, p.value) for p in problems] == [("kpis[0].value", 80.0)]
    assert "0.80" in problems[0].message


def test_several_mistakes_give_one_problem_each(tiny_pilot: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["kpis"][0]["comparator"] = "=="
        d["costs"]["manual_cost_per_case_usd"] = -3
        d["colour"] = "blue"

    problems = _problems(tiny_pilot, change)
    assert sorted(p.field for p in problems) == [
        "colour",
        "costs.manual_cost_per_case_usd",
        "kpis[0].comparator",
    ]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(PilotFileError, match="no pilot file here"):
        load_pilot(tmp_path / "nowhere")
    (tmp_path / "pilot.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(PilotFileError) as info:
        load_pilot(tmp_path)
    assert info.value.problems[0].field.startswith("line ")
    (tmp_path / "pilot.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(PilotFileError, match="mapping"):
        load_pilot(tmp_path)


def test_yaml_is_read_with_a_safe_loader(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "pilot.yaml").write_text(
        f"name: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8"
    )
    with pytest.raises(PilotFileError, match="not valid YAML"):
        load_pilot(tmp_path)
    assert not marker.exists()


def test_paths_resolve_against_the_pilot_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_pilot(tmp_path / "deep" / "pilot")
    monkeypatch.chdir(tmp_path)
    pilot = load_pilot("deep/pilot")
    assert pilot.resolve("cases.parquet").is_file()
    assert pilot.resolve("/abs/x.parquet") == Path("/abs/x.parquet")
    assert pilot.folder == folder.resolve()


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    text = (folder / "pilot.yaml").read_text(encoding="utf-8")
    (folder / "pilot.yaml").write_text(text + "name: another-name\n", encoding="utf-8")
    with pytest.raises(PilotFileError, match=r"duplicate key 'name' \(first given on line \d+\)"):
        load_pilot(folder)


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "pilot.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # 9**9 values if expanded: only the count taken over the node graph gives this message
    # (an expansion would not finish), so no clock is needed to prove it was not expanded
    with pytest.raises(PilotFileError, match="aliases expand to more than 100,000 values"):
        load_pilot(tmp_path)


def test_a_few_aliases_still_load(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    text = (folder / "pilot.yaml").read_text(encoding="utf-8")
    (folder / "pilot.yaml").write_text(
        text + "x-shared: &shared {review_hourly_rate_usd: 50.0}\n", encoding="utf-8"
    )
    with pytest.raises(PilotFileError, match="x-shared"):  # unknown key, but parsed
        load_pilot(folder)


def test_an_empty_pilot_file_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "pilot.yaml").write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(PilotFileError, match="the pilot file is empty"):
        load_pilot(tmp_path)


def test_a_threshold_written_as_a_percentage_says_to_write_the_proportion(tmp_path: Path) -> None:
    folder = write_pilot(tmp_path / "p")
    text = (folder / "pilot.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    doc["kpis"][0]["value"] = "80%"
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with pytest.raises(PilotFileError, match=r"kpis\[0\]\.value.*write 0\.8 "):
        load_pilot(folder)

"""End to end: ``pilot-workbook run`` executes the phase notebooks with papermill.

Real kernels, real files, all under ``tmp_path``. To stay fast on two cores the
expensive runs happen once per module:

- ``sample_run``: the installed console script (a subprocess, so the real entry
  point is proven) runs both sample pilots with ``--jobs 2`` into a relative
  ``--out`` folder; most tests look at that one run.
- ``troubled_batch``: ``pilot_lib.cli.main`` runs, in one invocation, a copy of
  claims-auto with a broken data set (its ingest fails), a copy whose drift
  settings name a column the decision log lacks (its phase 3 notebook fails; a
  pilot file that does not load stops the whole call before anything starts,
  tests/test_operators.py) and a copy of it-ticket-routing whose
  data sets carry a script injection, on phases 1,3,4, into a folder that
  already holds a finished claims-auto run.

Phases 1-4 run concurrently (tests/test_runner_scheduling.py checks the
schedule itself on the tiny pilot).

Every check looks at what a user gets: exit codes, printed lines, files.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from queue import Empty

import pandas as pd
import pytest
import yaml
from conftest import PILOT_DOC, write_pilot

import pilot_lib
from pilot_lib.cli import main
from pilot_lib.errors import WorkbookError
from pilot_lib.report.export import PHASE_TITLES
from pilot_lib.runner import (
    PHASE_NOTEBOOKS,
    POLL_SLICE_SECONDS,
    _kernel_manager_class,
    _Progress,
    latest_run_dir,
    new_run_id,
    parse_phases,
    run_pilot,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "pilots"
PILOTS = ("claims-auto", "it-ticket-routing")
INJECTION = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
PROGRESS_LINE = re.compile(
    r"^(?P<pilot>[\w.-]+): phase (?P<phase>\d) \((?P<key>\w+)\) (?P<status>\w+)$"
)


# --------------------------------------------------------------------------- helpers


def console_script() -> Path:
    """The installed ``pilot-workbook`` script of the interpreter running the tests."""
    here = Path(sys.executable).with_name("pilot-workbook")
    found = here if here.is_file() else shutil.which("pilot-workbook")
    if not found:
        pytest.fail("the pilot-workbook console script is not installed (pip install -e .)")
    return Path(found)


class _Text(HTMLParser):
    """Visible text of a page: no <style>/<script> content, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def body_markup(html: str) -> str:
    """The page's <body>, without inline <style> blocks (the CSS names every class)."""
    body = html[html.index("<body") :]
    return re.sub(r"<style.*?</style>", "", body, flags=re.S)


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: (mtime in ns, sha256)."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_folders(pilot_folder: Path) -> list[Path]:
    return sorted(p for p in pilot_folder.iterdir() if p.is_dir() and not p.is_symlink())


# --------------------------------------------------------------------------- the sample run


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both sample pilots, ``--jobs 2``, through the installed console script."""
    cwd = tmp_path_factory.mktemp("sample_run")
    proc = subprocess.run(
        [
            str(console_script()),
            "run",
            *(str(SAMPLES / p) for p in PILOTS),
            "--out",
            "runs",  # relative, as in the README
            "--jobs",
            "2",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = cwd / "runs"
    runs = {p: run_folders(out / p) for p in PILOTS if (out / p).is_dir()}
    return {
        "proc": proc,
        "out": out,
        "run": {p: folders[0] for p, folders in runs.items() if len(folders) == 1},
        "runs": runs,
    }


def test_sample_run_exits_0_and_prints_each_go_no_go_page(sample_run: dict) -> None:
    proc = sample_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^([\w.-]+): (GO|NO-GO|EXTEND); go/no-go page: (.+)$", line)
        if m:
            printed[m.group(1)] = (m.group(2), Path(m.group(3)))
    assert set(printed) == set(PILOTS), proc.stdout
    # NO-GO is a decision, not an error: the default --fail-on error still exits 0
    assert printed["claims-auto"][0] == "GO"
    assert printed["it-ticket-routing"][0] == "NO-GO"
    for pilot, (_, page) in printed.items():
        assert page.is_absolute() and page.is_file()
        assert page == sample_run["run"][pilot] / "05_go_no_go_summary.html"
    portfolio = [ln for ln in proc.stdout.splitlines() if ln.startswith("portfolio page: ")]
    assert portfolio == [f"portfolio page: {sample_run['out'] / 'portfolio.html'}"]


def test_each_pilot_gets_one_run_folder_named_by_utc_time_and_suffix(sample_run: dict) -> None:
    for pilot in PILOTS:
        folders = sample_run["runs"][pilot]
        assert len(folders) == 1
        m = re.fullmatch(r"(\d{8}T\d{6}Z)-[0-9a-f]{4}", folders[0].name)
        assert m, folders[0].name
        started = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        assert abs(dt.datetime.now(dt.UTC) - started) < dt.timedelta(hours=1)


def test_non_tty_output_is_plain_progress_lines(sample_run: dict) -> None:
    err = sample_run["proc"].stderr
    assert "\r" not in err and "\x1b" not in err  # no tqdm bar, no colour codes
    seen = set()
    for line in err.splitlines():
        m = PROGRESS_LINE.match(line)
        if m:
            seen.add((m["pilot"], int(m["phase"]), m["key"], m["status"]))
    expected = {(p, n, key, "succeeded") for p in PILOTS for n, (key, _) in PHASE_NOTEBOOKS.items()}
    assert seen == expected
    # the kernel's shutdown noise is gone, and nothing else leaked a traceback
    assert "KeyboardInterrupt" not in err
    assert "Traceback" not in err
    assert "IPKernelApp" not in err


def test_manifest_records_hash_version_timings_status_and_decision(sample_run: dict) -> None:
    decisions = {"claims-auto": "GO", "it-ticket-routing": "NO-GO"}
    for pilot in PILOTS:
        run_dir = sample_run["run"][pilot]
        manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        pilot_file = SAMPLES / pilot / "pilot.yaml"
        assert manifest["pilot"] == pilot
        assert manifest["status"] == "succeeded"
        assert manifest["error"] is None
        assert manifest["decision"] == decisions[pilot]
        assert manifest["pilot_file_sha256"] == sha256_of(pilot_file)
        assert Path(manifest["pilot_path"]) == pilot_file.resolve()
        assert manifest["package_version"] == pilot_lib.__version__
        assert manifest["run_id"] == run_dir.name
        assert Path(manifest["run_dir"]) == run_dir.resolve()
        started = dt.datetime.fromisoformat(manifest["started_at"])
        finished = dt.datetime.fromisoformat(manifest["finished_at"])
        assert started.tzinfo is not None and started <= finished
        phases = manifest["phases"]
        assert [p["phase"] for p in phases] == [1, 2, 3, 4, 5]
        window = (finished - started).total_seconds() + 1  # whole seconds, so allow 1 s
        for ph in phases:
            key, notebook = PHASE_NOTEBOOKS[ph["phase"]]
            assert (ph["key"], ph["notebook"], ph["status"]) == (key, notebook, "succeeded")
            assert ph["error"] is None
            assert isinstance(ph["seconds"], float) and 0 < ph["seconds"] <= window
            assert ph["html"] == notebook.replace(".ipynb", ".html")
            assert ph["attempts"] >= 1
            assert len(ph["start_errors"]) == ph["attempts"] - 1
        # phases 1-4 ran side by side: together they may take longer than the run
        ingest = manifest["ingest"]
        assert ingest["status"] == "succeeded" and ingest["error"] is None
        assert 0 < ingest["seconds"] <= window
        assert ingest["engine"].startswith("duckdb")


def test_the_store_is_built_once_and_every_phase_reuses_it(sample_run: dict) -> None:
    for pilot in PILOTS:
        run_dir = sample_run["run"][pilot]
        assert [p.relative_to(run_dir) for p in run_dir.rglob("manifest.json")] == [
            Path("store/manifest.json")
        ]
        store = json.loads((run_dir / "store" / "manifest.json").read_text(encoding="utf-8"))
        ingest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["ingest"]
        assert ingest["fingerprint"] == store["fingerprint"]
        assert ingest["datasets"] == {
            name: {k: entry[k] for k in ("rows", "valid", "quarantined")}
            for name, entry in store["datasets"].items()
        }
        assert ingest["datasets"]["decisions"]["quarantined"] > 0  # the sample's bad rows
        for phase in (1, 2, 3, 4):
            text = visible_text(
                (run_dir / PHASE_NOTEBOOKS[phase][1].replace(".ipynb", ".html")).read_text()
            )
            assert "The checked evidence store was reused" in text, (pilot, phase)


def test_every_phase_result_and_the_quarantine_files_are_in_the_run_folder(
    sample_run: dict,
) -> None:
    for pilot in PILOTS:
        run_dir = sample_run["run"][pilot]
        sha = sha256_of(SAMPLES / pilot / "pilot.yaml")
        for key, notebook in PHASE_NOTEBOOKS.values():
            result = json.loads((run_dir / f"{key}.json").read_text(encoding="utf-8"))
            assert result["phase"] == key
            assert result["pilot"] == pilot
            assert result["pilot_file_sha256"] == sha
            assert (run_dir / notebook).is_file()
        quarantined = sorted((run_dir / "quarantine").glob("*.parquet"))
        assert quarantined, "the sample data hold rows that break a contract"
        source_ids = set(pd.read_parquet(SAMPLES / pilot / "decisions.parquet")["decision_id"])
        for path in quarantined:
            rows = pd.read_parquet(path)
            assert len(rows) > 0
            assert rows["_quarantine_rule"].notna().all()
            if path.stem == "decisions":
                assert set(rows["decision_id"].dropna()) <= source_ids


def test_latest_points_at_the_finished_run(sample_run: dict) -> None:
    for pilot in PILOTS:
        assert latest_run_dir(sample_run["out"] / pilot) == sample_run["run"][pilot].resolve()


def test_gate_decisions_and_the_no_go_page_names_the_missed_kpis(sample_run: dict) -> None:
    gates = {
        p: json.loads((sample_run["run"][p] / "go_no_go_summary.json").read_text())["result"]
        for p in PILOTS
    }
    assert gates["claims-auto"]["decision"] == "GO"
    assert {v["status"] for v in gates["claims-auto"]["verdicts"]} == {"PASS"}
    assert gates["claims-auto"]["blocking_findings"] == []
    routing = gates["it-ticket-routing"]
    assert routing["decision"] == "NO-GO"
    status = {v["kpi"]: v["status"] for v in routing["verdicts"]}
    assert status["task_completion_rate"] == "FAIL"
    assert status["adoption_rate"] == "FAIL"

    text = visible_text(
        (sample_run["run"]["it-ticket-routing"] / "05_go_no_go_summary.html").read_text()
    )
    # the page opens with the decision and its reasons: the missed KPIs, each with its value
    missed = re.search(r"agreed KPIs missed\.(.*?)detail", text)
    assert missed, text[:2000]
    assert "task completion 51.3%" in missed.group(1).lower()
    assert "adoption" in missed.group(1).lower()
    assert "NO-GO" in text[: text.index("agreed KPIs missed")]


def test_html_exports_have_no_code_and_embed_their_charts(sample_run: dict) -> None:
    for pilot in PILOTS:
        run_dir = sample_run["run"][pilot]
        for phase, (_key, notebook) in PHASE_NOTEBOOKS.items():
            html = (run_dir / notebook.replace(".ipynb", ".html")).read_text(encoding="utf-8")
            body = body_markup(html)
            # no input cells, prompts or highlighted source
            for marker in (
                "jp-InputArea-editor",
                "jp-InputPrompt",
                "hl-ipython3",
                "jp-CodeMirrorEditor",
            ):
                assert marker not in body, (pilot, notebook, marker)
            for source in (
                "open_phase(",
                "import pilot_lib",
                "from pilot_lib",
                "output_dir =",
                "ctx.save(",
            ):
                assert source not in html, (pilot, notebook, source)
            # widgets need a live kernel: neither their cells nor their state are exported
            assert "widget-view+json" not in html and "widget-state+json" not in html
            assert not re.search(r"\b(VBox|HBox|FloatSlider|IntSlider)\(", html)
            # self-contained: charts as data URIs, no script and nothing fetched
            assert re.search(r'<img[^>]+src="data:image/png;base64,', html), (pilot, notebook)
            assert not re.search(r'<img[^>]+src="(?!data:)', html)
            assert "<script" not in html.lower()
            assert f"<title>{_title(pilot)} — {PHASE_TITLES[phase]}</title>" in html
            # the Markdown narrative stays
            assert _heading(notebook) in visible_text(html)


def _heading(notebook: str) -> str:
    """The first Markdown heading of a phase notebook, as written."""
    cells = json.loads((REPO / "notebooks" / notebook).read_text(encoding="utf-8"))["cells"]
    first = "".join(next(c for c in cells if c["cell_type"] == "markdown")["source"])
    return first.splitlines()[0].lstrip("# ").strip()


def _title(pilot: str) -> str:
    return yaml.safe_load((SAMPLES / pilot / "pilot.yaml").read_text())["title"]


def test_go_no_go_page_leads_with_the_decision(sample_run: dict) -> None:
    for pilot, decision in (("claims-auto", "GO"), ("it-ticket-routing", "NO-GO")):
        text = visible_text((sample_run["run"][pilot] / "05_go_no_go_summary.html").read_text())
        banner = text.index(f"Go / no-go decision {decision} ")
        assert banner < text.index("Every KPI against the threshold")
        assert banner < text.index("Why") < text.index("Every KPI against the threshold")


def test_portfolio_compares_both_pilots(sample_run: dict) -> None:
    out = sample_run["out"]
    html = (out / "portfolio.html").read_text(encoding="utf-8")
    text = visible_text(html)
    assert "Not shown" not in text
    for pilot, decision in (("claims-auto", "GO"), ("it-ticket-routing", "NO-GO")):
        assert _title(pilot) in text
        row = re.search(
            rf"<td><b>{re.escape(_title(pilot))}</b><br><small>{pilot}</small></td>\s*"
            rf'<td class="{decision}">{decision}<br><small><a href="([^"]+)">',
            html,
        )
        assert row, pilot
        assert (out / row.group(1)).resolve() == (
            sample_run["run"][pilot] / "05_go_no_go_summary.html"
        ).resolve()
    # integration, drift and drill status: the NO-GO pilot's blocking findings counted by
    # kind, each linking to its phase page's section (their full text is on that page)
    routing = html[html.index("<small>it-ticket-routing</small>") :]
    assert "<b>BLOCKING</b><br>&bull; <a href=" in routing
    assert '03_drift_analysis.html#Input-drift-per-feature">2 key inputs shifted</a>' in routing
    assert '#Kill-switch-drill-against-its-targets">1 kill-switch drill failed</a>' in routing
    assert '02_kpi_baselining.html#Integration-health">1 retry storm</a>' in routing
    assert "drifted significantly" not in routing
    for label in ("Task completion", "Cost per decision", "Escalation rate"):
        assert label in text
    # each KPI cell: the estimate and its 95% interval, "(low to high)"
    assert re.search(r"\d+\.\d% \(\d+\.\d% to \d+\.\d%\)", text)


# --------------------------------------------------------------------------- a second run


def test_a_second_run_gets_a_new_folder_and_leaves_the_first_untouched(
    sample_run: dict, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    shutil.copytree(sample_run["out"] / "claims-auto", out / "claims-auto", symlinks=True)
    first = latest_run_dir(out / "claims-auto")
    assert first is not None
    before = snapshot(first)

    pointer_during_run = []

    def progress(pilot: str, phase: int, status: str) -> None:
        pointer_during_run.append((phase, status, latest_run_dir(out / "claims-auto")))

    second = run_pilot(SAMPLES / "claims-auto", out, phases=[1], progress=progress)

    assert second.ok and second.run_dir is not None
    second_dir = Path(second.run_dir)
    assert second_dir.parent == first.parent and second_dir != first
    assert second_dir.name > first.name  # run ids sort by time
    assert snapshot(first) == before  # not a byte, not an mtime changed
    # while the second run was going, latest still named the first
    assert pointer_during_run == [(1, "succeeded", first)]
    assert latest_run_dir(out / "claims-auto") == second_dir
    assert sorted(p.name for p in run_folders(out / "claims-auto")) == sorted(
        [first.name, second_dir.name]
    )
    manifest = json.loads((second_dir / "run.json").read_text())
    assert [p["phase"] for p in manifest["phases"]] == [1]
    assert manifest["decision"] is None


# --------------------------------------------------------------------------- failures and injection


def _break_data(folder: Path) -> None:
    """Drop a required column from the decision log."""
    path = folder / "decisions.parquet"
    pd.read_parquet(path).drop(columns=["completed"]).to_parquet(path, index=False)


def _break_pilot_file(folder: Path) -> None:
    """A valid pilot file whose drift settings name a column the decision log lacks."""
    doc = yaml.safe_load((folder / "pilot.yaml").read_text())
    doc["name"] = folder.name
    doc["drift"]["features"] = ["no_such_column", *doc["drift"]["features"]]
    (folder / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _inject(folder: Path) -> None:
    """The script injection in a candidate name, a prompt version, a drill id and detail."""
    cand = pd.read_csv(folder / "candidates.csv")
    cand.loc[0, "name"] = INJECTION
    cand.to_csv(folder / "candidates.csv", index=False)
    drill = pd.read_csv(folder / "drill_events.csv")
    drill["drill_id"] = drill["drill_id"].astype(str) + INJECTION
    drill.loc[0, "detail"] = INJECTION
    drill.to_csv(folder / "drill_events.csv", index=False)
    dec = pd.read_parquet(folder / "decisions.parquet")
    last = sorted(dec["prompt_version"].dropna().unique())[-1]
    dec.loc[dec["prompt_version"] == last, "prompt_version"] = INJECTION
    dec.to_parquet(folder / "decisions.parquet", index=False)


@pytest.fixture(scope="module")
def troubled_batch(sample_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("troubled")
    pilots = {}
    for name, source, damage in (
        ("broken-data", "claims-auto", _break_data),
        ("broken-file", "claims-auto", _break_pilot_file),
        ("injected", "it-ticket-routing", _inject),
    ):
        pilots[name] = shutil.copytree(SAMPLES / source, base / "pilots" / name)
        damage(pilots[name])
    out = base / "runs"
    # a finished claims-auto run is already there: the failed one must not replace it
    shutil.copytree(sample_run["out"] / "claims-auto", out / "claims-auto", symlinks=True)
    seeded = latest_run_dir(out / "claims-auto")
    seeded_files = snapshot(seeded)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            [
                "run",
                *(str(p) for p in pilots.values()),
                "--out",
                str(out),
                "--phases",
                "1,3,4",
                "--jobs",
                "2",
            ]
        )
    return {
        "code": code,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "out": out,
        "pilots": pilots,
        "seeded": seeded,
        "seeded_files": seeded_files,
    }


def _new_run(out: Path, pilot: str, seeded: Path | None = None) -> Path:
    folders = [f for f in run_folders(out / pilot) if seeded is None or f != seeded]
    assert len(folders) == 1, folders
    return folders[0]


def test_failed_ingest_gives_one_readable_line_and_a_non_zero_exit(troubled_batch: dict) -> None:
    assert troubled_batch["code"] == 1
    err = troubled_batch["stderr"]
    lines = [ln for ln in err.splitlines() if ln.startswith("claims-auto: FAILED.")]
    assert len(lines) == 1, err
    line = lines[0]
    assert "pilot claims-auto: ingest (the checked evidence store) failed: ContractError: " in line
    assert "decisions" in line and "completed" in line
    assert "Traceback" not in err


def test_failed_ingest_keeps_the_run_folder_and_skips_every_phase(troubled_batch: dict) -> None:
    run_dir = _new_run(troubled_batch["out"], "claims-auto", troubled_batch["seeded"])
    assert f"run folder (kept, with what was done): {run_dir}" in troubled_batch["stderr"]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["ingest"]["status"] == "failed"
    assert "ContractError" in manifest["error"] and manifest["error"] == manifest["ingest"]["error"]
    assert [(p["phase"], p["status"]) for p in manifest["phases"]] == [
        (1, "skipped"),
        (3, "skipped"),
        (4, "skipped"),
    ]
    assert not list(run_dir.glob("*.ipynb"))
    assert not (run_dir / "store").exists()
    progress = {
        (int(m["phase"]), m["status"])
        for m in map(PROGRESS_LINE.match, troubled_batch["stderr"].splitlines())
        if m and m["pilot"] == "claims-auto"
    }
    assert progress == {(1, "skipped"), (3, "skipped"), (4, "skipped")}


def test_failed_run_does_not_move_latest_or_touch_the_earlier_run(troubled_batch: dict) -> None:
    out = troubled_batch["out"]
    assert latest_run_dir(out / "claims-auto") == troubled_batch["seeded"]
    assert snapshot(troubled_batch["seeded"]) == troubled_batch["seeded_files"]


def test_failed_phase_fails_its_run_with_the_field_named(troubled_batch: dict) -> None:
    err = troubled_batch["stderr"]
    line = next(ln for ln in err.splitlines() if ln.startswith("broken-file: FAILED."))
    assert "pilot broken-file: phase 3 (drift_analysis) failed at cell In [" in line
    assert "ContractError" in line and "no_such_column" in line and "drift.features" in line
    assert "03_drift_analysis.ipynb" in line
    run_dir = _new_run(troubled_batch["out"], "broken-file")
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["pilot_file_sha256"] is not None  # the file loaded
    assert latest_run_dir(troubled_batch["out"] / "broken-file") is None


def test_failed_phase_keeps_the_notebook_with_the_error(troubled_batch: dict) -> None:
    run_dir = _new_run(troubled_batch["out"], "broken-file")
    assert f"run folder (kept, with the failed notebook): {run_dir}" in troubled_batch["stderr"]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["ingest"]["status"] == "succeeded"
    assert [(p["phase"], p["status"]) for p in manifest["phases"]] == [
        (1, "succeeded"),
        (3, "failed"),
        (4, "succeeded"),
    ]
    assert manifest["phases"][1]["attempts"] == 1  # a failure in a cell is never re-run
    executed = json.loads((run_dir / "03_drift_analysis.ipynb").read_text())
    errors = [
        o
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert [e["ename"] for e in errors] == ["ContractError"]
    assert not (run_dir / "drift_analysis.json").exists()
    assert (run_dir / "use_case_scoring.json").is_file()
    # the failed page is still exported, showing the error to whoever opens it
    assert "ContractError" in visible_text((run_dir / "03_drift_analysis.html").read_text())


def test_the_other_pilot_in_the_batch_still_succeeds(troubled_batch: dict) -> None:
    out = troubled_batch["out"]
    run_dir = latest_run_dir(out / "it-ticket-routing")
    assert run_dir is not None
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert [(p["phase"], p["status"]) for p in manifest["phases"]] == [
        (1, "succeeded"),
        (3, "succeeded"),
        (4, "succeeded"),
    ]
    assert f"it-ticket-routing: done; run folder: {run_dir}" in troubled_batch["stdout"]
    progress = {
        (m["pilot"], int(m["phase"]), m["status"])
        for m in map(PROGRESS_LINE.match, troubled_batch["stderr"].splitlines())
        if m
    }
    assert ("it-ticket-routing", 4, "succeeded") in progress
    assert ("claims-auto", 1, "skipped") in progress  # its ingest failed
    assert ("broken-file", 3, "failed") in progress


@pytest.mark.parametrize(
    "notebook", ["01_use_case_scoring", "03_drift_analysis", "04_incident_drill_review"]
)
def test_script_injection_in_data_is_escaped_in_the_export(
    troubled_batch: dict, notebook: str
) -> None:
    run_dir = latest_run_dir(troubled_batch["out"] / "it-ticket-routing")
    html = (run_dir / f"{notebook}.html").read_text(encoding="utf-8")
    assert INJECTION not in html
    assert "<script" not in html.lower()
    assert ESCAPED in html
    assert INJECTION in visible_text(html)  # shown as text to the reader


def test_portfolio_lists_a_pilot_without_finished_run_under_not_shown(
    troubled_batch: dict,
) -> None:
    out = troubled_batch["out"]
    html = (out / "portfolio.html").read_text(encoding="utf-8")
    assert f"portfolio page: {out / 'portfolio.html'}" in troubled_batch["stdout"]
    text = visible_text(html)
    not_shown = text[text.index("Not shown") :]
    assert "broken-file: no finished run;" in not_shown
    assert "ContractError" in not_shown and "no_such_column" in not_shown
    # claims-auto keeps its finished run, with the newer failure noted
    shown = text[: text.index("Not shown")]
    assert "claims-auto" in shown and "a newer run did not finish" in shown
    assert "ContractError" in shown
    # a run without phase 5 has no decision, and says why
    assert "NO DECISION" in shown and "phase 5 was not part of this run (phases 1, 3, 4)" in shown
    assert INJECTION not in html


def test_portfolio_command_on_a_relative_folder(
    troubled_batch: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(troubled_batch["out"], out, symlinks=True)
    (out / "portfolio.html").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["portfolio", "copy"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"portfolio page: {out / 'portfolio.html'}"
    text = visible_text((out / "portfolio.html").read_text())
    assert "broken-file: no finished run;" in text
    assert main(["portfolio", "missing"]) == 2
    assert "is not a folder of pilot runs" in capsys.readouterr().err


# --------------------------------------------------------------------------- --fail-on


def test_fail_on_no_go_exits_non_zero_for_a_no_go_decision(tmp_path: Path, capsys) -> None:
    # the tiny test pilot with a cost threshold no pilot can meet: NO-GO, quickly
    kpis = copy.deepcopy(PILOT_DOC["kpis"])
    cost = next(k for k in kpis if k["kpi"] == "cost_per_decision")
    cost["value"] = 0.0001
    pilot = write_pilot(tmp_path / "tiny", doc_changes={"kpis": kpis})
    code = main(
        [
            "run",
            str(pilot),
            "--out",
            str(tmp_path / "runs"),
            "--phases",
            "5",  # phase 5 alone computes the earlier phases itself
            "--no-export",
            "--fail-on",
            "no-go",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "tiny: NO-GO; run folder:" in captured.out
    assert "a pilot came out NO-GO (--fail-on no-go)" in captured.err
    run_dir = latest_run_dir(tmp_path / "runs" / "tiny")
    assert run_dir is not None  # the run itself finished: latest moves
    gate = json.loads((run_dir / "go_no_go_summary.json").read_text())["result"]
    assert gate["decision"] == "NO-GO"
    assert {v["kpi"]: v["status"] for v in gate["verdicts"]}["cost_per_decision"] == "FAIL"
    # --no-export: no phase page; the run's index page lists what there is
    assert [p.name for p in run_dir.glob("*.html")] == ["index.html"]


# --------------------------------------------------------------------------- small parts


def test_parse_phases() -> None:
    assert parse_phases(None) == [1, 2, 3, 4, 5]
    assert parse_phases("5, 1,2") == [1, 2, 5]
    assert parse_phases([3, 3, 4]) == [3, 4]
    for bad in ("", "0", "6", "1,x", "one"):
        with pytest.raises(WorkbookError, match="--phases takes numbers 1-5"):
            parse_phases(bad)


def test_run_ids_sort_by_time_and_differ_within_a_second() -> None:
    t = dt.datetime(2026, 11, 24, 23, 15, 0, tzinfo=dt.UTC)
    ids = {new_run_id(t) for _ in range(50)}
    assert len(ids) > 1
    assert all(i.startswith("20261124T231500Z-") for i in ids)
    assert new_run_id(t) < new_run_id(t + dt.timedelta(seconds=1))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    tty, plain = _Tty(), io.StringIO()
    for stream in (tty, plain):
        show = _Progress(total=2, stream=stream)
        show("p", 1, "succeeded")
        show("p", 2, "failed")
        show.close()
    assert "\r" in tty.getvalue() and "2/2" in tty.getvalue()
    assert plain.getvalue().splitlines() == [
        "p: phase 1 (use_case_scoring) succeeded",
        "p: phase 2 (kpi_baselining) failed",
    ]


def test_run_rejects_bad_arguments_before_starting(tmp_path: Path, capsys) -> None:
    assert main(["run", str(SAMPLES / "claims-auto"), "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert main(["run", str(SAMPLES / "claims-auto"), "--out", str(tmp_path), "--phases", "9"]) == 2
    assert "--phases takes numbers 1-5" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_kernel_manager_skips_only_the_interrupt_sent_at_shutdown() -> None:
    km = _kernel_manager_class()(kernel_name="python3")
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())  # the shutdown's interrupt: nothing sent
    km.shutting_down = False
    with pytest.raises(RuntimeError, match="No kernel is running"):
        asyncio.run(km._async_interrupt_kernel())  # any other interrupt goes through


def test_kernel_channels_poll_in_slices_and_keep_time_outs() -> None:
    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    km = _kernel_manager_class()(kernel_name="python3")
    channel_class = km.client().shell_channel_class
    assert km.client().iopub_channel_class is channel_class

    async def scenario() -> tuple[bool, dict]:
        ctx = zmq.asyncio.Context()
        kernel_side, client_side = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        kernel_side.bind("inproc://slices")
        client_side.connect("inproc://slices")
        session = Session()
        channel = channel_class(client_side, session)
        try:
            # a time-out longer than several slices still ends in Empty
            try:
                await channel.get_msg(timeout=3 * POLL_SLICE_SECONDS + 0.1)
                timed_out = False
            except Empty:
                timed_out = True
            session.send(kernel_side, "execute_reply", {"status": "ok"})
            reply = await channel.get_msg(timeout=None)
        finally:
            kernel_side.close(linger=0)
            client_side.close(linger=0)
            ctx.term()
        return timed_out, reply

    timed_out, reply = asyncio.run(scenario())
    assert timed_out
    assert reply["msg_type"] == "execute_reply" and reply["content"] == {"status": "ok"}

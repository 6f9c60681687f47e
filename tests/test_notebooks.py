"""The phase notebooks as a user meets them: committed conventions and real papermill runs.

Two parts:

- Static checks on the committed notebooks (parameters cell, kernelspec, stored
  outputs free of errors, machine paths and "nan", widgets only in ignored cells,
  at least one nbval-checked cell).
- End-to-end runs through papermill's Python API, in real kernels. Every notebook
  run is planned once in :data:`PLAN` and executed by the module-scoped ``runs``
  fixture: :data:`WORKERS` worker processes (papermill changes the process-wide
  working directory, so runs cannot share a process), with runs that read
  earlier phase results waiting for them. Each test then reads the executed
  notebook and the phase result JSON files it needs.

Headless widgets: a cell that blocks fails its run through papermill's per-cell
timeout instead of stalling the suite. Two quieter failures are checked on every
run as well: nbclient sitting on a finished cell until that timeout and then
carrying on without an error (the Output-widget race that
``pilot_lib.report.notebook.live_output`` avoids; forever under papermill's default of
no timeout), and an exception inside a what-if callback, which never reaches the
cell's outputs but lands in the stored widget state.

The sample pilots' figures are asserted from the phase result JSON files, never
parsed out of HTML. Bad inputs are temporary copies of ``claims-auto`` with one
kind of damage each group: ``gaps`` (no candidates data set, no control cohort,
all-null confidence) and ``empty-window`` (a decision log exported for the wrong
period, so no decision falls in the pilot window).
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import functools
import json
import multiprocessing
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import papermill
import pytest
import yaml

from pilot_lib.config import load_pilot

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SAMPLES = REPO / "data" / "pilots"

NOTEBOOK_PHASES = {
    "01_use_case_scoring": "use_case_scoring",
    "02_kpi_baselining": "kpi_baselining",
    "03_drift_analysis": "drift_analysis",
    "04_incident_drill_review": "incident_drill_review",
    "05_go_no_go_summary": "go_no_go_summary",
}
EARLIER_PHASES = tuple(NOTEBOOK_PHASES.values())[:4]
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
#: Paths of this kind of machine that must never reach a stored output.
MACHINE_PATHS = ("/work/", "/tmp/", "/root/", "/home/", "/Users/", "C:\\")
#: Missing values leaking into what the analyst reads.
LEAKED_MISSING = re.compile(r"\bnan\b|\bNaN\b|\bNaT\b|<NA>|\bnan%|\$nan")

#: Papermill runs at a time, each a kernel plus a client: two, for two cores (a third
#: finished no sooner on the reference machine).
WORKERS = 2
#: Per-cell limit in seconds: a widget waiting for a frontend fails here, not hangs.
CELL_TIMEOUT = 120


def test_the_five_phase_notebooks_exist() -> None:
    assert [p.stem for p in NOTEBOOK_FILES] == list(NOTEBOOK_PHASES)


# ---------------------------------------------------------------------------
# Reading notebooks
# ---------------------------------------------------------------------------


def read_notebook(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _output_texts(output: dict[str, Any]) -> Iterator[tuple[str, str]]:
    kind = output.get("output_type")
    if kind == "stream":
        yield f"stream:{output.get('name')}", _text(output.get("text", ""))
    elif kind == "error":
        yield "error", "\n".join([output.get("ename", ""), output.get("evalue", "")])
    else:
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                yield mime, _text(value) if isinstance(value, (str, list)) else json.dumps(value)


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def widget_outputs(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """Outputs captured inside Output widgets (what a what-if slider printed or displayed)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    found = []
    for model in state.values():
        found.extend(model.get("state", {}).get("outputs", []) or [])
    return found


def all_texts(nb: nbformat.NotebookNode) -> Iterator[tuple[int | None, str, str]]:
    """(cell index or None for widget state, mime or stream name, text) of every output."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            for mime, text in _output_texts(out):
                yield i, mime, text
    for out in widget_outputs(nb):
        for mime, text in _output_texts(out):
            yield None, mime, text


def shown_text(nb: nbformat.NotebookNode) -> str:
    """Everything the analyst reads (HTML, Markdown, plain text, streams), one string."""
    return "\n".join(text for _, _, text in all_texts(nb))


def _cell_label(nb: nbformat.NotebookNode, index: int | None) -> str:
    if index is None:
        return "widget output"
    return f"cell {index}: {nb.cells[index].source.splitlines()[:2]}"


def assert_clean_outputs(nb: nbformat.NotebookNode, forbidden_paths: tuple[str, ...]) -> None:
    """No error, traceback, ZeroDivisionError, leaked NaN or machine path in any output."""
    problems = []
    for index, mime, text in all_texts(nb):
        where = f"{_cell_label(nb, index)} [{mime}]"
        if mime == "error":
            problems.append(f"{where}: error output {text!r}")
        if "Traceback" in text or "ZeroDivisionError" in text:
            problems.append(f"{where}: traceback {text[:300]!r}")
        if mime.startswith("text/") or mime.startswith("stream"):
            leak = LEAKED_MISSING.search(text)
            if leak:
                context = text[max(0, leak.start() - 150) : leak.end() + 60]
                problems.append(f"{where}: missing value shown as {leak.group()!r}: {context!r}")
        for path in forbidden_paths:
            if path in text:
                problems.append(f"{where}: machine path {path!r} in output")
    for out in widget_outputs(nb):
        if out.get("output_type") == "error":
            problems.append(f"widget output: error {out.get('ename')}: {out.get('evalue')}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# Static checks on the committed notebooks
# ---------------------------------------------------------------------------

committed = pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)


@committed
def test_first_code_cell_is_a_literal_parameters_cell(path: Path) -> None:
    cell = code_cells(read_notebook(path))[0]
    assert "parameters" in tags(cell)
    tree = ast.parse(cell.source)
    values = {}
    for stmt in tree.body:
        # Derived values belong after the parameters cell: only `name = literal` (or
        # `name: type = literal`) here, so papermill's injected cell can override every
        # one of them.
        if isinstance(stmt, ast.AnnAssign):
            assert isinstance(stmt.target, ast.Name) and stmt.value is not None, ast.dump(stmt)
            name = stmt.target.id
        else:
            assert isinstance(stmt, ast.Assign), ast.dump(stmt)
            assert len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            name = stmt.targets[0].id
        try:
            values[name] = ast.literal_eval(stmt.value)
        except ValueError:
            pytest.fail(f"the parameters cell computes {name}; compute it in a later cell")
    assert values["pilot"] == "../data/pilots/claims-auto"
    assert values["output_dir"] is None
    assert len(values) >= 3, "each phase offers at least one override of its own"
    # every parameter declares its type, as papermill reads it (-p parses values by it)
    from papermill.inspection import inspect_notebook

    declared = inspect_notebook(str(path))
    assert set(declared) == set(values)
    untyped = [n for n, info in declared.items() if info["inferred_type_name"] == "None"]
    assert not untyped, f"declare a type (name: int = 3, or # type: Optional[int]) for {untyped}"


@committed
def test_kernelspec_is_plain_python3(path: Path) -> None:
    spec = read_notebook(path).metadata["kernelspec"]
    assert spec["name"] == "python3"
    # ipykernel's own display name: JupyterLab writes it in on kernel start, so any other
    # name marks the committed notebook modified as soon as it is opened (issue 20)
    assert spec["display_name"] == "Python 3 (ipykernel)"


@committed
def test_committed_notebook_is_executed_and_clean(path: Path) -> None:
    nb = read_notebook(path)
    cells = code_cells(nb)
    assert all(c.execution_count is not None for c in cells), "committed executed, top to bottom"
    counts = [c.execution_count for c in cells]
    assert counts == sorted(counts)
    assert_clean_outputs(nb, MACHINE_PATHS + (str(REPO),))


@committed
def test_committed_outputs_carry_no_machine_path_anywhere(path: Path) -> None:
    # Beyond the rendered text: output metadata, widget models, every non-image field.
    # (Images are left out: base64 can spell "/tmp/" by chance.)
    def without_images(output: dict[str, Any]) -> dict[str, Any]:
        data = {k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")}
        return {**output, "data": data}

    cells = read_notebook(path).cells
    outputs = json.dumps([[without_images(o) for o in c.get("outputs", [])] for c in cells])
    for fragment in MACHINE_PATHS + (str(REPO),):
        assert json.dumps(fragment)[1:-1] not in outputs


@committed
def test_widgets_only_in_tagged_cells_whose_output_nbval_ignores(path: Path) -> None:
    nb = read_notebook(path)
    widget_cells = [c for c in code_cells(nb) if "widgets" in tags(c)]
    for cell in code_cells(nb):
        shows_widget = any(WIDGET_MIME in o.get("data", {}) for o in cell.get("outputs", []))
        calls_widget = re.search(r"\bnb\.\w*widgets?\(", cell.source) is not None
        if shows_widget or calls_widget:
            assert cell in widget_cells, cell.source
    for cell in widget_cells:
        assert cell.source.startswith("# NBVAL_IGNORE_OUTPUT"), cell.source
    if path.stem != "05_go_no_go_summary":
        assert widget_cells, "phases 1-4 each offer a what-if"


@committed
def test_at_least_one_headline_cell_is_checked_by_nbval(path: Path) -> None:
    checked = [c for c in code_cells(read_notebook(path)) if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checked
    assert all(c.source.startswith("# NBVAL_CHECK_OUTPUT") for c in checked)
    assert all(c.outputs for c in checked), "a checked cell needs stored output to compare"


# ---------------------------------------------------------------------------
# Planned papermill runs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One papermill run. ``pilot``: a sample name, a bad-input copy, or a literal path.

    ``cwd`` is ``"repo"``, ``"notebooks"`` or ``"tmp"`` (the run's own temp folder);
    ``output_dir`` names a shared run folder (``None``: the notebook writes nothing);
    ``after`` lists runs whose phase results this one reads.
    """

    notebook: str
    pilot: str | None
    cwd: str
    output_dir: str | None
    after: tuple[str, ...] = ()
    absolute: bool = False


def _chain(
    prefix: str, pilot: str | None, cwd: str, folder: str, notebooks: tuple[str, ...]
) -> dict[str, Planned]:
    """Runs of ``notebooks`` sharing one run folder, keyed ``<prefix>-<number>``."""
    return {f"{prefix}-{nb[:2]}": Planned(nb, pilot, cwd, folder) for nb in notebooks}


_FIRST_FOUR = tuple(NOTEBOOK_PHASES)[:4]

PLAN: dict[str, Planned] = {
    # claims-auto: the notebooks' defaults, run from notebooks/ like JupyterLab does.
    **_chain("claims", None, "notebooks", "claims", _FIRST_FOUR),
    "claims-05-read": Planned(
        "05_go_no_go_summary",
        None,
        "notebooks",
        "claims",
        after=tuple(f"claims-0{i}" for i in "1234"),
    ),
    "claims-05-alone": Planned(
        "05_go_no_go_summary", "claims-auto", "tmp", "claims-alone", absolute=True
    ),
    # it-ticket-routing: the README's command line, from the repo root.
    **_chain("it", "data/pilots/it-ticket-routing", "repo", "it", _FIRST_FOUR),
    "it-05-read": Planned(
        "05_go_no_go_summary",
        "data/pilots/it-ticket-routing",
        "repo",
        "it",
        after=tuple(f"it-0{i}" for i in "1234"),
    ),
    "it-05-alone": Planned(
        "05_go_no_go_summary", "it-ticket-routing", "tmp", "it-alone", absolute=True
    ),
    # The same phase-2 command from notebooks/, and with an absolute path to the pilot file.
    "it-02-from-notebooks": Planned(
        "02_kpi_baselining", "data/pilots/it-ticket-routing", "notebooks", "it-from-notebooks"
    ),
    "it-02-absolute": Planned(
        "02_kpi_baselining", "it-ticket-routing/pilot.yaml", "tmp", "it-absolute", absolute=True
    ),
    # Bad input: temporary copies of claims-auto (see the module docstring).
    **_chain("gaps", "gaps", "tmp", "gaps", _FIRST_FOUR[:3]),
    **_chain("empty", "empty-window", "tmp", "empty", ("02_kpi_baselining", "03_drift_analysis")),
    "empty-05-read": Planned(
        "05_go_no_go_summary", "empty-window", "tmp", "empty", after=("empty-02", "empty-03")
    ),
}


#: Independent runs, longest and most depended-on first, so the workers stay busy
#: and the runs that read results (queued when theirs finish) come last.
START_ORDER = (
    "claims-02",
    "it-02",
    "claims-01",
    "claims-03",
    "claims-04",
    "it-01",
    "it-03",
    "it-04",
    "claims-05-alone",
    "it-05-alone",
    "gaps-02",
    "empty-02",
    "it-02-from-notebooks",
    "it-02-absolute",
    "gaps-01",
    "gaps-03",
    "empty-03",
)


def test_the_plan_starts_every_independent_run_once() -> None:
    independent = [key for key, planned in PLAN.items() if not planned.after]
    assert sorted(START_ORDER) == sorted(independent)
    for planned in PLAN.values():
        assert all(dep in PLAN for dep in planned.after)


#: papermill's Python API as every run here calls it. A partial of the library
#: function, not a function of this module, so the spawned workers can unpickle it
#: without importing the tests.
papermill_execute = functools.partial(
    papermill.execute_notebook,
    kernel_name="python3",
    progress_bar=False,
    log_output=False,
    execution_timeout=CELL_TIMEOUT,
)


def make_gaps_pilot(folder: Path) -> Path:
    """claims-auto without candidates, without a control cohort, with all-null confidence."""
    shutil.copytree(SAMPLES / "claims-auto", folder)
    pilot_file = folder / "pilot.yaml"
    doc = yaml.safe_load(pilot_file.read_text(encoding="utf-8"))
    del doc["datasets"]["candidates"]
    pilot_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    (folder / "candidates.csv").unlink()
    cases = pd.read_parquet(folder / "cases.parquet")
    cases[cases["cohort"] != "control"].to_parquet(folder / "cases.parquet", index=False)
    decisions = pd.read_parquet(folder / "decisions.parquet")
    decisions["confidence"] = pd.Series(float("nan"), index=decisions.index, dtype="float64")
    decisions.to_parquet(folder / "decisions.parquet", index=False)
    return folder


def make_empty_window_pilot(folder: Path) -> Path:
    """claims-auto whose decision log was exported for the wrong period (13 weeks later)."""
    shutil.copytree(SAMPLES / "claims-auto", folder)
    decisions = pd.read_parquet(folder / "decisions.parquet")
    decisions["timestamp"] = decisions["timestamp"] + pd.Timedelta(weeks=13)
    decisions.to_parquet(folder / "decisions.parquet", index=False)
    return folder


@dataclass
class Executed:
    """A finished run: the executed notebook, its run folder, and any papermill exception."""

    key: str
    notebook: nbformat.NotebookNode
    output_dir: Path | None
    error: BaseException | None = None

    def result(self, phase: str) -> dict[str, Any]:
        """The full phase result document this run's folder holds for ``phase``."""
        assert self.output_dir is not None, f"{self.key} ran without output_dir"
        path = self.output_dir / f"{phase}.json"
        assert path.is_file(), f"{self.key}: {path.name} was not written"
        return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class RunBoard:
    """Queues every planned run at once (WORKERS at a time) and hands out the finished ones."""

    root: Path
    pilots: dict[str, Path]
    pool: cf.ProcessPoolExecutor
    driver: cf.ThreadPoolExecutor
    futures: dict[str, cf.Future] = field(default_factory=dict)

    def pilot_arg(self, planned: Planned) -> str | None:
        if planned.pilot is None:
            return None
        first, _, rest = planned.pilot.partition("/")
        if first in self.pilots:  # a bad-input copy
            base = self.pilots[first]
            return str(base / rest) if rest else str(base)
        if planned.absolute:
            return str(SAMPLES / planned.pilot)
        return planned.pilot

    def start(self) -> None:
        """Queue the independent runs in :data:`START_ORDER`; the others wait for theirs."""
        for key in START_ORDER:
            job = self.pool.submit(papermill_execute, **self.arguments(key))
            self.futures[key] = self.driver.submit(self._collect, key, job)
        for key, planned in PLAN.items():
            if planned.after:
                self.futures[key] = self.driver.submit(self._collect, key, None)

    def arguments(self, key: str) -> dict[str, Any]:
        planned = PLAN[key]
        work = self.root / "runs" / key
        work.mkdir(parents=True, exist_ok=True)
        cwd = {"repo": REPO, "notebooks": NOTEBOOKS, "tmp": work}[planned.cwd]
        params: dict[str, Any] = {"output_dir": None}
        if planned.output_dir is not None:
            params["output_dir"] = str(self.root / "out" / planned.output_dir)
        pilot = self.pilot_arg(planned)
        if pilot is not None:
            params["pilot"] = pilot
        return {
            "input_path": str(NOTEBOOKS / f"{planned.notebook}.ipynb"),
            "output_path": str(work / f"{planned.notebook}.ipynb"),
            "parameters": params,
            "cwd": str(cwd),
        }

    def _collect(self, key: str, job: cf.Future | None) -> Executed:
        planned = PLAN[key]
        if job is None:
            for dep in planned.after:
                self.futures[dep].result()  # a failed dependency fails this run too
            job = self.pool.submit(papermill_execute, **self.arguments(key))
        error = None
        try:
            job.result()
        except Exception as exc:  # reported by the tests that read this run
            error = exc
        executed_path = Path(self.arguments(key)["output_path"])
        if not executed_path.is_file():
            raise RuntimeError(f"{key}: papermill wrote no notebook ({error!r})")
        out_dir = None if planned.output_dir is None else self.root / "out" / planned.output_dir
        return Executed(key, read_notebook(executed_path), out_dir, error)

    def get(self, key: str) -> Executed:
        return self.futures[key].result()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunBoard]:
    root = tmp_path_factory.mktemp("notebook_runs")
    pilots = {
        "gaps": make_gaps_pilot(root / "pilots" / "gaps"),
        "empty-window": make_empty_window_pilot(root / "pilots" / "empty-window"),
    }
    pool = cf.ProcessPoolExecutor(
        max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn")
    )
    driver = cf.ThreadPoolExecutor(max_workers=len(PLAN), thread_name_prefix="papermill-run")
    board = RunBoard(root, pilots, pool, driver)
    board.start()
    try:
        yield board
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        driver.shutdown(wait=True, cancel_futures=True)


def finished(runs: RunBoard, key: str) -> Executed:
    """A run that papermill finished without an exception."""
    run = runs.get(key)
    assert run.error is None, f"{key} failed: {run.error}"
    return run


def html_tables(nb: nbformat.NotebookNode) -> list[str]:
    return [text for _, mime, text in all_texts(nb) if mime == "text/html" and "<table" in text]


# ---------------------------------------------------------------------------
# A stale result file (first: it needs only claims-02, and runs while the rest execute)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_result_written_for_another_pilot_file_is_not_used(runs: RunBoard, tmp_path: Path) -> None:
    """Phase 2 ran; then the thresholds were edited: phase 5 must recompute, and say why."""
    from pilot_lib.phases import gather_results
    from pilot_lib.report import notebook as nb

    # Only phase 2's file: the rest of the claims chain is still writing into its folder.
    written = finished(runs, "claims-02").output_dir / "kpi_baselining.json"
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    shutil.copy2(written, run_folder / written.name)
    pilot_copy = shutil.copytree(SAMPLES / "claims-auto", tmp_path / "claims-auto")

    # Same bytes, same pilot file: the stored result is used as it is.
    ctx = nb.open_phase("go_no_go_summary", pilot_copy, run_folder, load_data=False)
    results, provenance = gather_results(ctx, phases=("kpi_baselining",))
    assert list(provenance["source"]) == ["read from the run folder"]
    stored = json.loads((run_folder / "kpi_baselining.json").read_text(encoding="utf-8"))
    assert results["kpi_baselining"] == stored["result"]

    # Raise the completion threshold after the fact.
    pilot_file = pilot_copy / "pilot.yaml"
    text = pilot_file.read_text(encoding="utf-8")
    edited = text.replace(
        '{kpi: task_completion_rate, comparator: ">", value: 0.80',
        '{kpi: task_completion_rate, comparator: ">", value: 0.90',
    )
    assert edited != text
    pilot_file.write_text(edited, encoding="utf-8")

    ctx = nb.open_phase("go_no_go_summary", pilot_copy, run_folder, load_data=False)
    results, provenance = gather_results(ctx, phases=("kpi_baselining",))
    assert list(provenance["source"]) == ["computed in this notebook"]
    note = provenance["note"].iloc[0]
    assert "stored result not used" in note
    assert stored["pilot_file_sha256"][:12] in note
    assert ctx.pilot.file_hash[:12] in note
    # The recomputed figures carry the edited threshold, not the stored one.
    row = [k for k in results["kpi_baselining"]["kpis"] if k["kpi"] == "task_completion_rate"]
    assert row[0]["threshold"] == 0.90
    assert completion(stored)["threshold"] == 0.80


# ---------------------------------------------------------------------------
# Every run: finishes, and shows nothing broken
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("key", list(PLAN))
def test_run_finishes_and_shows_no_error_nan_or_machine_path(runs: RunBoard, key: str) -> None:
    run = finished(runs, key)
    assert_clean_outputs(run.notebook, MACHINE_PATHS + (str(REPO), str(runs.root)))


@pytest.mark.slow
@pytest.mark.parametrize("key", list(PLAN))
def test_widgets_render_headless_in_their_own_cells(runs: RunBoard, key: str) -> None:
    nb = finished(runs, key).notebook
    widget_cells = [c for c in code_cells(nb) if "widgets" in tags(c)]
    for cell in code_cells(nb):
        if any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs):
            assert cell in widget_cells, cell.source
    for cell in widget_cells:
        kinds = [o.output_type for o in cell.outputs]
        assert "error" not in kinds
        if PLAN[key].notebook != "05_go_no_go_summary":
            # the widget was built and displayed, with a plain-text fallback
            data = [o.get("data", {}) for o in cell.outputs]
            assert any(WIDGET_MIME in d and "text/plain" in d for d in data), kinds
    # Every what-if shows its default view in the stored widget state (a static
    # table or sentence for readers of the executed notebook without a kernel).
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    views = [m["state"] for m in state.values() if m.get("model_name") == "OutputModel"]
    if PLAN[key].notebook != "05_go_no_go_summary":
        assert views
    assert all(view.get("outputs") for view in views)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(PLAN))
def test_no_cell_sat_until_the_cell_timeout(runs: RunBoard, key: str) -> None:
    """A hang detector, not a speed test: nbclient returns from a stalled cell only
    when the per-cell timeout expires, and records no error for it (see live_output)."""
    for cell in code_cells(finished(runs, key).notebook):
        assert cell.metadata["papermill"]["duration"] < CELL_TIMEOUT - 1, cell.source


# ---------------------------------------------------------------------------
# Path resolution and the headline completion figure
# ---------------------------------------------------------------------------


def completion(doc: dict[str, Any]) -> dict[str, Any]:
    (row,) = [k for k in doc["result"]["kpis"] if k["kpi"] == "task_completion_rate"]
    return row


@pytest.mark.slow
@pytest.mark.parametrize("key", ["it-02", "it-02-from-notebooks", "it-02-absolute"])
def test_kpi_notebook_finds_the_pilot_from_any_working_directory(runs: RunBoard, key: str) -> None:
    doc = finished(runs, key).result("kpi_baselining")
    assert doc["pilot"] == "it-ticket-routing"
    assert doc["pilot_file_sha256"] == load_pilot(SAMPLES / "it-ticket-routing").file_hash
    row = completion(doc)
    # The lab said 97%; production business completion sits near 52%.
    assert 0.49 < row["estimate"] < 0.55
    assert row["low"] < row["estimate"] < row["high"]
    assert row["n"] > 1000


def assert_same_figures(a: Any, b: Any, where: str = "result") -> None:
    """Equal structure and text; numbers equal to 1e-9 relative.

    Not byte equality: DuckDB sums doubles on several threads, so a total can
    differ in its last bits from one run to the next.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_figures(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_figures(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_kpi_result_is_the_same_whichever_way_the_pilot_was_named(runs: RunBoard) -> None:
    docs = [
        finished(runs, key).result("kpi_baselining")
        for key in ("it-02", "it-02-from-notebooks", "it-02-absolute")
    ]
    for doc in docs[1:]:
        assert_same_figures(docs[0], doc)


@pytest.mark.slow
def test_claims_auto_business_completion_is_above_80_percent(runs: RunBoard) -> None:
    row = completion(finished(runs, "claims-02").result("kpi_baselining"))
    assert row["estimate"] > 0.80
    assert row["threshold"] == 0.80


# ---------------------------------------------------------------------------
# Phase results and the go/no-go phase
# ---------------------------------------------------------------------------

SAMPLE_CHAINS = {"claims": "claims-auto", "it": "it-ticket-routing"}
EXPECTED_DECISION = {"claims": "GO", "it": "NO-GO"}


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(SAMPLE_CHAINS))
def test_phases_one_to_four_each_write_their_result(runs: RunBoard, chain: str) -> None:
    pilot = load_pilot(SAMPLES / SAMPLE_CHAINS[chain])
    for i, phase in enumerate(EARLIER_PHASES, start=1):
        doc = finished(runs, f"{chain}-0{i}").result(phase)
        assert doc["phase"] == phase
        assert doc["pilot"] == pilot.name
        assert doc["pilot_file_sha256"] == pilot.file_hash
        assert doc["result"], f"{phase}: empty result"


def provenance_sources(nb: nbformat.NotebookNode) -> str:
    (table,) = [t for t in html_tables(nb) if "Earlier phases" in t]
    return table


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(SAMPLE_CHAINS))
def test_go_no_go_alone_reaches_the_decision_it_reaches_from_results(
    runs: RunBoard, chain: str
) -> None:
    read = finished(runs, f"{chain}-05-read")
    alone = finished(runs, f"{chain}-05-alone")
    from_results = read.result("go_no_go_summary")["result"]
    computed = alone.result("go_no_go_summary")["result"]
    assert from_results["decision"] == computed["decision"] == EXPECTED_DECISION[chain]
    assert_same_figures(from_results["verdicts"], computed["verdicts"])
    assert_same_figures(from_results["blocking_findings"], computed["blocking_findings"])
    assert from_results["rationale"] == computed["rationale"]
    assert from_results["missing_phases"] == computed["missing_phases"] == []
    # The provenance table says where the figures came from.
    assert provenance_sources(read.notebook).count("read from the run folder") == 4
    assert provenance_sources(alone.notebook).count("computed in this notebook") == 4
    # Alone, phase 5 computed the earlier phases in memory and wrote only its own result.
    assert not any((alone.output_dir / f"{p}.json").exists() for p in EARLIER_PHASES)


# ---------------------------------------------------------------------------
# Bad input: the notebooks run, say what is missing, and show no NaN
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_candidates_data_set_is_explained(runs: RunBoard) -> None:
    run = finished(runs, "gaps-01")
    text = shown_text(run.notebook)
    assert "names no candidates data set" in text
    assert "No candidates to compare" in text
    result = run.result("use_case_scoring")["result"]
    assert result["candidates"] == [] and result["top_pick"] is None
    assert [m.split(":")[0] for m in result["missing"]] == ["candidates"]
    # Build vs buy does not depend on candidates and is still shown.
    assert any("Build vs buy scores" in t for t in html_tables(run.notebook))


@pytest.mark.slow
def test_no_control_cohort_falls_back_to_the_baseline_and_says_it_is_weaker(
    runs: RunBoard,
) -> None:
    run = finished(runs, "gaps-02")
    (eff,) = [
        k for k in run.result("kpi_baselining")["result"]["kpis"] if k["kpi"] == "efficiency_gain"
    ]
    assert "baseline" in eff["note"] and "weaker" in eff["note"]
    assert eff["estimate"] is not None and eff["n"] > 0
    comparison = [t for _, _, t in all_texts(run.notebook) if t.startswith("**Comparison used:**")]
    assert len(comparison) == 1 and "weaker" in comparison[0]


@pytest.mark.slow
def test_all_null_confidence_gives_labelled_no_data(runs: RunBoard) -> None:
    kpis = finished(runs, "gaps-02").result("kpi_baselining")["result"]["kpis"]
    (low_conf,) = [k for k in kpis if k["kpi"] == "low_confidence_share"]
    assert low_conf["estimate"] is None
    assert "confidence is null" in low_conf["note"]

    run = finished(runs, "gaps-03")
    calibration = run.result("drift_analysis")["result"]["calibration"]
    for window in ("reference", "current"):
        assert calibration[window]["n_used"] == 0
        assert calibration[window]["ece"] is None
    (table,) = [t for t in html_tables(run.notebook) if "Expected calibration error" in t]
    assert table.count("no data: confidence is null") == 2


@pytest.mark.slow
def test_empty_pilot_window_gives_labelled_no_data(runs: RunBoard) -> None:
    kpi_run = finished(runs, "empty-02")
    text = shown_text(kpi_run.notebook)
    assert "no decisions in the pilot window" in text
    assert "timestamp outside pilot_window" in text  # the data-quality table says why
    for row in kpi_run.result("kpi_baselining")["result"]["kpis"]:
        if row["kpi"] in ("task_completion_rate", "cost_per_decision", "escalation_rate"):
            assert row["estimate"] is None and row["n"] == 0, row

    drift_run = finished(runs, "empty-03")
    drift_text = shown_text(drift_run.notebook)
    assert "could not be drawn" in drift_text
    assert "no decisions in the window" in drift_text

    gate = finished(runs, "empty-05-read").result("go_no_go_summary")["result"]
    assert gate["decision"] != "GO"
    statuses = {v["kpi"]: v["status"] for v in gate["verdicts"]}
    assert statuses["task_completion_rate"] == "INCONCLUSIVE"


@pytest.mark.slow
def test_go_no_go_on_bad_input_reads_what_ran_and_computes_the_rest(runs: RunBoard) -> None:
    table = provenance_sources(finished(runs, "empty-05-read").notebook)
    assert table.count("read from the run folder") == 2  # phases 2 and 3 ran
    assert table.count("computed in this notebook") == 2  # phases 1 and 4 did not


# ---------------------------------------------------------------------------
# Known gaps outside the notebook helpers (pilot_lib.analysis.drift's plain-words summary)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_drift_summary_does_not_call_unmeasured_features_stable(runs: RunBoard) -> None:
    text = shown_text(finished(runs, "empty-03").notebook)
    assert "every feature is stable" not in text


@pytest.mark.slow
def test_drift_summary_names_null_confidence_as_the_reason(runs: RunBoard) -> None:
    text = shown_text(finished(runs, "gaps-03").notebook)
    assert "no decisions with a known outcome" not in text
    assert "has a known outcome" not in text

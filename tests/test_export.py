"""Leadership exports without a kernel: ``export_html`` on handmade notebooks, and
``write_portfolio`` on handmade run folders.

The outputs are built with the helpers the phase notebooks use
(``pilot_lib.report.notebook.md``, ``table``, ``decision_banner``-style HTML), so the
escaping checked here is the escaping a real run gets; ``tests/test_runner.py``
checks the same on real runs.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
)

from pilot_lib.report import notebook as nbh
from pilot_lib.report.export import REMOVED_TAGS, export_html, write_portfolio

INJECTION = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"

# a 1x1 PNG
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()


def _display(obj) -> dict:
    """A display_data output holding what IPython would send for ``obj``."""
    data = {}
    if hasattr(obj, "_repr_markdown_"):
        data["text/markdown"] = obj._repr_markdown_()
    if hasattr(obj, "_repr_html_") and obj._repr_html_() is not None:
        data["text/html"] = obj._repr_html_()
    data["text/plain"] = repr(obj)
    return new_output("display_data", data=data)


def _code(source: str, outputs: list, tags: list[str] | None = None):
    cell = new_code_cell(source, metadata={"tags": tags} if tags else {})
    cell.outputs = outputs
    return cell


def _body(html: str) -> str:
    body = html[html.index("<body") :]
    return re.sub(r"<style.*?</style>", "", body, flags=re.S)


@pytest.fixture
def handmade(tmp_path: Path) -> Path:
    """An executed-looking notebook: markdown, a parameters cell, a chart, a table
    and Markdown built from data holding a script injection, and widget cells."""
    frame = pd.DataFrame({"workflow": [INJECTION, "claims"], "share": [0.25, 0.75]})
    cells = [
        new_markdown_cell("# Phase 9: a handmade page\n\nNarrative that **stays**."),
        _code(
            'pilot = "SECRET-PARAMETER-DEFAULT"',
            [new_output("stream", name="stdout", text="PARAMETER-CELL-OUTPUT\n")],
            tags=["parameters"],
        ),
        _code(
            'pilot = "/somewhere/INJECTED-PARAMETER/pilot.yaml"',
            [],
            tags=["injected-parameters"],
        ),
        _code(
            "ctx = nb.open_phase('x', pilot, output_dir)\nCODE_ONLY_MARKER = 1",
            [new_output("stream", name="stdout", text=f"plain text {INJECTION}\n")],
        ),
        _code("display(nb.md(...))", [_display(nbh.md("Top pick: **{name}**", name=INJECTION))]),
        _code("display(nb.table(...))", [_display(nbh.table(frame, "Workflows"))]),
        _code(
            "plt.show()",
            [new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})],
        ),
        _code(
            "nb.use_case_widgets(ctx, review)",
            [
                new_output(
                    "display_data",
                    data={
                        "application/vnd.jupyter.widget-view+json": {
                            "model_id": "abc123",
                            "version_major": 2,
                            "version_minor": 0,
                        },
                        "text/plain": "VBox(children=(WIDGET-CELL-OUTPUT,))",
                    },
                )
            ],
            tags=["widgets"],
        ),
        _code(
            "SHOULD_NOT_EXPORT = 1",
            [new_output("stream", name="stdout", text="NO-EXPORT-OUTPUT\n")],
            tags=["no-export"],
        ),
        new_markdown_cell("## Result\n\nThe end."),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"abc123": {"model_name": "VBoxModel", "state": {"description": INJECTION}}},
            "version_major": 2,
            "version_minor": 0,
        }
    }
    path = tmp_path / "handmade.ipynb"
    nbformat.write(nb, path)
    return path


def test_export_leaves_out_code_parameters_and_widgets(handmade: Path, tmp_path: Path) -> None:
    out = export_html(handmade, tmp_path / "page.html", title="Handmade")
    assert out == tmp_path / "page.html"
    html = out.read_text(encoding="utf-8")
    body = _body(html)
    # no code, no prompts
    for text in (
        "CODE_ONLY_MARKER",
        "open_phase(",
        "nb.md(",
        "plt.show()",
        "hl-ipython3",
    ):
        assert text not in html, text
    assert "jp-InputArea-editor" not in body and "jp-InputPrompt" not in body
    # parameters and injected parameters: neither source nor output
    for text in ("SECRET-PARAMETER-DEFAULT", "PARAMETER-CELL-OUTPUT", "INJECTED-PARAMETER"):
        assert text not in html, text
    # widget cells and the stored widget state are gone; so is no-export
    for text in (
        "WIDGET-CELL-OUTPUT",
        "widget-view+json",
        "widget-state+json",
        "VBoxModel",
        "NO-EXPORT-OUTPUT",
    ):
        assert text not in html, text
    # what stays: the narrative, the outputs of ordinary cells, the chart inline
    assert "Phase 9: a handmade page" in html and "The end." in html
    assert "<strong>stays</strong>" in html
    assert f'src="data:image/png;base64,{PNG}"' in html
    assert "Workflows" in html


def test_export_escapes_text_from_data_in_every_output_kind(handmade: Path, tmp_path: Path) -> None:
    html = export_html(handmade, tmp_path / "page.html").read_text(encoding="utf-8")
    assert INJECTION not in html
    assert "<script" not in html.lower()
    # plain-text stream output, Markdown from nb.md, and the table cell: all escaped
    assert html.count(ESCAPED) >= 3
    assert f"plain text {ESCAPED}" in html
    assert re.search(r"Top pick: <strong>" + re.escape(ESCAPED) + "</strong>", html)
    assert re.search(r"<td[^>]*>" + re.escape(ESCAPED) + "</td>", html)


def test_export_title_is_escaped_and_defaults_to_the_file_name(
    handmade: Path, tmp_path: Path
) -> None:
    html = export_html(handmade, tmp_path / "a.html", title=f"Pilot {INJECTION}").read_text()
    assert f"<title>Pilot {ESCAPED}</title>" in html
    html = export_html(handmade, tmp_path / "b.html").read_text()
    assert "<title>handmade</title>" in html


def test_export_page_is_self_contained(handmade: Path, tmp_path: Path) -> None:
    html = export_html(handmade, tmp_path / "page.html").read_text(encoding="utf-8")
    # nothing fetched or run: no require.js, widget renderer, MathJax or Mermaid
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="https?://', html)
    for cdn in ("require.min.js", "embed-amd.js", "mathjax/", "x-mathjax-config", "mermaid"):
        assert cdn.lower() not in html.lower(), cdn
    # the page's own styling is there
    assert "max-width: 1100px" in html


def test_removed_tags_cover_widgets_and_parameters() -> None:
    assert {"widgets", "parameters", "injected-parameters"} <= REMOVED_TAGS


def test_committed_notebooks_tag_every_widget_cell() -> None:
    """Every cell that builds widgets carries the ``widgets`` tag, so exports drop it."""
    root = Path(__file__).resolve().parents[1] / "notebooks"
    for path in sorted(root.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and "_widgets(" in cell.source:
                assert "widgets" in cell.metadata.get("tags", []), (path.name, cell.source[:60])


# --------------------------------------------------------------------------- portfolio


def _run_folder(root: Path, pilot: str, run_id: str, manifest: dict, gate: dict | None) -> Path:
    run_dir = root / pilot / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"pilot": pilot, "run_id": run_id, **manifest}))
    if gate is not None:
        (run_dir / "go_no_go_summary.json").write_text(json.dumps({"result": gate}))
        (run_dir / "05_go_no_go_summary.html").write_text("<html></html>")
    return run_dir


def _point(root: Path, pilot: str, run_id: str) -> None:
    (root / pilot / "latest").symlink_to(run_id, target_is_directory=True)


GATE = {
    "decision": "EXTEND",
    "verdicts": [
        {
            "kpi": "task_completion_rate",
            "label": "Task completion",
            "status": "INCONCLUSIVE",
            "estimate": 0.81,
            "low": 0.74,
            "high": 0.88,
            "unit": "proportion",
            "threshold_text": "> 80.0%",
        },
        {
            "kpi": "cost_per_decision",
            "label": "Cost per decision",
            "status": "PASS",
            "estimate": 1.2,
            "low": 1.1,
            "high": 1.3,
            "unit": "usd",
            "threshold_text": "< $2.00",
        },
    ],
}


def test_portfolio_shows_finished_pilots_and_names_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _run_folder(
        root,
        "alpha",
        "20260101T000000Z-aaaa",
        {"status": "succeeded", "title": f"Alpha {INJECTION}", "phases": [{"phase": 5}]},
        GATE,
    )
    _point(root, "alpha", "20260101T000000Z-aaaa")
    _run_folder(
        root,
        "alpha",
        "20260102T000000Z-bbbb",
        {
            "status": "failed",
            "error": "pilot alpha: phase 2 (kpi_baselining) failed at cell In [5]: KeyError: 'x'",
        },
        None,
    )
    _run_folder(
        root,
        "beta",
        "20260101T000000Z-cccc",
        {
            "status": "failed",
            "error": f"pilot beta: phase 1 (use_case_scoring) failed: {INJECTION}",
        },
        None,
    )
    (root / "gamma" / "20260101T000000Z-dddd").mkdir(parents=True)  # stopped before run.json

    page = write_portfolio(root)
    assert page == root.resolve() / "portfolio.html"
    html = page.read_text(encoding="utf-8")
    assert INJECTION not in html and ESCAPED in html

    shown, not_shown = html.split("<h2>Not shown</h2>")
    # alpha: its finished run, KPI cells with interval and threshold, the newer failure noted
    assert f"<b>Alpha {ESCAPED}</b>" in shown
    assert '<td class="EXTEND">EXTEND' in shown
    assert 'href="alpha/20260101T000000Z-aaaa/05_go_no_go_summary.html"' in shown
    assert "81.0% (74.0% to 88.0%)" in shown and "target &gt; 80.0%" in shown
    assert "$1.20 ($1.10 to $1.30)" in shown and "target &lt; $2.00" in shown
    assert (
        "a newer run did not finish: run 20260102T000000Z-bbbb failed: pilot alpha: phase 2"
        in shown
    )
    assert "not run" in shown  # no drift / drill results in this run
    # beta and gamma: not shown, each with its reason
    assert (
        "beta: no finished run; run 20260101T000000Z-cccc failed: pilot beta: phase 1" in not_shown
    )
    assert "gamma: no finished run; run 20260101T000000Z-dddd has no run.json" in not_shown
    assert "alpha" not in not_shown


def test_portfolio_of_a_run_without_phase_5_says_so(tmp_path: Path) -> None:
    _run_folder(
        tmp_path,
        "delta",
        "20260101T000000Z-eeee",
        {"status": "succeeded", "title": "Delta", "phases": [{"phase": 1}, {"phase": 2}]},
        None,
    )
    _point(tmp_path, "delta", "20260101T000000Z-eeee")
    html = write_portfolio(tmp_path, tmp_path / "out" / "p.html").read_text()
    assert '<td class="NO-DECISION">NO DECISION' in html
    assert "phase 5 was not part of this run (phases 1, 2)" in html
    assert "Not shown" not in html


def test_portfolio_of_an_empty_folder(tmp_path: Path) -> None:
    html = write_portfolio(tmp_path).read_text()
    assert "<h1>Pilot portfolio</h1>" in html and "Not shown" not in html

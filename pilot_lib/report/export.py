"""Leadership exports: executed notebooks as HTML with no code, their PDFs, and the portfolio.

- :func:`export_html`: one executed notebook as a standalone page; its
  browser-tab title is :func:`page_title` (``"<pilot> — <phase>"``), and it
  carries the print rules :data:`PRINT_CSS` (A4, no orphaned headings, tables
  and charts never split).
- :func:`print_run_pdfs` / :func:`export_run`: a run folder's pages printed to
  PDF by a headless Chromium (:mod:`pilot_lib.report.pdf`), and the run's
  summary and index page (:mod:`pilot_lib.report.runpages`).
- :func:`write_portfolio`: every pilot's last complete decision with each KPI's
  trend across complete runs (:func:`trend_svg`).

- Input cells, prompts and cells tagged ``widgets`` (they need a live kernel)
  or ``parameters`` are left out; the static default views stay.
- Charts are embedded (PNG data URIs): the file opens anywhere, no Jupyter.
- Text from data is escaped where it is rendered: tables through pandas'
  HTML escaping, Markdown and banners through ``pilot_lib.report.notebook.escape``
  and ``escape_md``, plain-text outputs by nbconvert. So a value such as
  ``<script>alert(1)</script>`` in a decision log appears as text.
  (nbconvert's ``sanitize_html`` is not used: it strips the tables' styles and
  the embedded charts.)
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path
from typing import Any

import nbformat
from jinja2 import DictLoader, Environment, select_autoescape
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

from pilot_lib.runs import atomic_write_text

__all__ = [
    "PHASE_TITLES",
    "REMOVED_TAGS",
    "export_html",
    "export_run",
    "page_title",
    "print_run_pdfs",
    "write_portfolio",
]

#: Cells with these tags are not exported.
REMOVED_TAGS = frozenset({"widgets", "parameters", "injected-parameters", "no-export"})

#: Print rules of every exported page (and the portfolio): A4; headings kept with what
#: follows; tables, charts, sign-off blocks and callouts never split across pages; a cell
#: tagged ``page-break-before`` (nbconvert marks it ``celltag_page-break-before``) starts a
#: new page, so the go/no-go page's summary ends its first page; the page's own width
#: limit and padding are dropped (the PDF's margins hold the running header and the
#: page numbers, see :mod:`pilot_lib.report.pdf`). Chromium prints with these rules.
PRINT_CSS = """
  @page { size: A4; }
  @media print {
    body { max-width: none; padding: 0; margin: 0; font-size: 10.5pt; }
    /* JupyterLab lays cells out as flex boxes, in which Chromium ignores break rules */
    .jp-Cell, .jp-Cell-inputWrapper, .jp-Cell-outputWrapper, .jp-OutputArea,
    .jp-OutputArea-child, .jp-InputArea { display: block !important; }
    h1, h2, h3, h4, h5 { break-after: avoid; page-break-after: avoid;
                         break-inside: avoid; page-break-inside: avoid; }
    /* a heading reserves room for a few lines after it, so it never ends a page */
    h1::after, h2::after, h3::after, h4::after {
      content: ""; display: block; height: 5em; margin-bottom: -5em; }
    h1 + *, h2 + *, h3 + *, h4 + * { break-before: avoid; page-break-before: avoid; }
    table, figure, img, svg, tr, li, blockquote, .pw-keep, .pw-signoff, .pw-banner,
    .sign-off, .signoff, .jp-RenderedImage, .jp-RenderedHTMLCommon > table {
      break-inside: avoid; page-break-inside: avoid; }
    .celltag_page-break-before, .pw-page-break-before { break-before: page; page-break-before: always; }
    .celltag_page-break-after, .pw-page-break-after { break-after: page; page-break-after: always; }
    .celltag_keep-together { break-inside: avoid; page-break-inside: avoid; }
    /* the go/no-go summary (decision, reasons, coverage, run, seal) fits one A4 page */
    .board-summary { break-inside: avoid; page-break-inside: avoid; }
    .board-summary div[style*="font-size:15px"] { font-size: 11px !important;
                                                   line-height: 1.3 !important; }
    .board-summary div[style*="font-size:40px"] { font-size: 30px !important; }
    .board-summary li { margin: 2px 0 !important; }
    p, li { orphans: 3; widows: 3; }
    img { max-width: 100% !important; height: auto; }
    .jp-RenderedHTMLCommon table { font-size: 9pt; }
    a { color: inherit; text-decoration: none; }
    /* no scroll box on paper: a scrollbar prints as a grey bar and hides what overflows */
    *, *::before, *::after { overflow: visible !important; }
    .jp-Cell, .jp-OutputArea-output { overflow: visible !important; }
    /* JupyterLab makes the Markdown area a table cell; inside the blocks above it would
       shrink to its narrowest and break "Go / no-go" into "Go / no- / go" */
    .jp-MarkdownOutput, .jp-RenderedMarkdown, .jp-RenderedHTMLCommon {
      display: block !important; width: auto !important; max-width: 100% !important; }
    h1, h2, h3, h4, h5 { width: auto !important; white-space: normal !important;
                         word-break: normal !important; overflow-wrap: normal !important; }
    /* a table wider than the page wraps its cells instead of running off the edge */
    .jp-RenderedHTMLCommon table { table-layout: auto !important; max-width: 100% !important; }
    .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th {
      white-space: normal !important; overflow-wrap: break-word; word-break: normal; }
    .pw-screen-only { display: none !important; }
  }
"""

#: The export template: JupyterLab's, without anything fetched from the internet
#: (require.js, the widget renderer, MathJax, Mermaid). The exported cells hold
#: no widgets, no math (the notebooks keep dollar amounts out of MathJax) and no
#: diagrams, so the page is complete offline and runs no script at all.
_TEMPLATE_NAME = "pilot_export.html.j2"
_TEMPLATE = (
    """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style>
  body { max-width: 1100px; margin: 0 auto; padding: 24px;
         font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
  .jp-RenderedHTMLCommon table { font-size: 13px; }
  .jp-Cell { padding: 2px 0; }
"""
    + PRINT_CSS
    + """
</style>
{%- endblock extra_css -%}
"""
)


def export_html(notebook: str | Path, target: str | Path, title: str | None = None) -> Path:
    """Export an executed notebook to a standalone HTML page without code.

    Parameters
    ----------
    notebook:
        The executed ``.ipynb``.
    target:
        The ``.html`` file to write (its folder must exist).
    title:
        Page title (HTML-escaped); defaults to the notebook's file name.

    Left out: every input cell (code and prompts), cells tagged with one of
    :data:`REMOVED_TAGS`, and the stored widget state (widgets need a live
    kernel; their cells are tagged ``widgets``). Markdown cells and outputs
    stay; images stay embedded as data URIs.
    """
    nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata.pop("widgets", None)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
    )
    exporter.template_file = _TEMPLATE_NAME
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.exclude_output_stdin = True
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags=set(REMOVED_TAGS), enabled=True), enabled=True
    )
    resources = {"metadata": {"name": title or Path(notebook).stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return atomic_write_text(target, body)  # never a truncated page under the final name


#: Phase number -> the title a reader sees (browser tab, index page, PDF header).
PHASE_TITLES: dict[int, str] = {
    1: "Use-case scoring",
    2: "KPI baselining",
    3: "Drift analysis",
    4: "Incident drill review",
    5: "Go / no-go summary",
}


def page_title(pilot_title: str, phase: int, interim: bool = False) -> str:
    """A page's browser-tab title: ``"<pilot title> — <phase title>"`` (plus "INTERIM look")."""
    title = f"{pilot_title} — {PHASE_TITLES[phase]}"
    return title + " (INTERIM look)" if interim else title


def _pages(run_dir: Path) -> list[tuple[int, Path]]:
    from pilot_lib.report.runpages import PHASE_PAGES

    return [(n, run_dir / f"{stem}.ipynb") for n, (_, stem, _) in PHASE_PAGES.items()]


def print_run_pdfs(run_dir: str | Path, chromium: str | None = None) -> list[Path]:
    """Print every HTML phase page of a run folder to a PDF beside it; returns the PDFs.

    A4 with a running header (pilot title, phase and run id) and "page N of M".
    Raises :class:`pilot_lib.report.pdf.ChromiumNotFound` (saying how to get a
    Chromium) when there is none, :class:`pilot_lib.report.pdf.PrintFailed`
    when a page does not print.
    """
    from pilot_lib.report.pdf import PdfJob, print_pdfs

    folder = Path(run_dir)
    run = _load_json(folder / "run.json") or {}
    title = run.get("title") or run.get("pilot") or folder.parent.name
    run_id = run.get("run_id") or folder.name
    jobs = [
        PdfJob(
            nb.with_suffix(".html"),
            nb.with_suffix(".pdf"),
            f"{page_title(title, n)} · run {run_id}",
        )
        for n, nb in _pages(folder)
        if nb.with_suffix(".html").is_file()
    ]
    return print_pdfs(jobs, chromium=chromium)


def export_run(
    run_dir: str | Path, html: bool = True, pdf: bool = False, chromium: str | None = None
) -> dict[str, Any]:
    """Export a finished run folder again: HTML pages, PDFs, ``summary.*`` and ``index.html``.

    ``html``: re-export every executed phase notebook to HTML (with today's
    template). ``pdf``: print the HTML pages to PDFs (needs Chromium; see
    :func:`print_run_pdfs`). The summary and the index page are always
    rewritten (last, so the index links the PDFs). Returns the run summary
    (:func:`pilot_lib.report.runpages.run_summary`) with ``pdfs`` (file names).
    """
    from pilot_lib.report.runpages import write_run_pages

    folder = Path(run_dir)
    run = _load_json(folder / "run.json") or {}
    title = run.get("title") or run.get("pilot") or folder.parent.name
    if html:
        for n, nb in _pages(folder):
            if nb.is_file():
                export_html(
                    nb, nb.with_suffix(".html"), page_title(title, n, bool(run.get("interim")))
                )
    pdfs = print_run_pdfs(folder, chromium=chromium) if pdf else []
    summary = write_run_pages(folder)
    return summary | {"pdfs": [p.name for p in pdfs]}


_PORTFOLIO = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Pilot portfolio</title>
<style>
 body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; max-width: 1400px;
        margin: 24px auto; padding: 0 16px; color: #111; }
 table { border-collapse: collapse; width: 100%; font-size: 13px; }
 th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
 th { background: #f4f4f5; }
 .GO { background: #cfe5f5; font-weight: 700; } .NO-GO { background: #f6d3bd; font-weight: 700; }
 .EXTEND { background: #fbeaa8; font-weight: 700; } .FAILED, .NO-DECISION { background: #e5e7eb; font-weight: 700; }
 .PASS { color: #0b4f80; font-weight: 600; } .FAIL { color: #8a3200; font-weight: 700; }
 .INCONCLUSIVE { color: #6b4a00; font-weight: 600; }
 .trend svg { display: block; margin-top: 4px; }
 small { color: #555; }
 @page { size: A4 landscape; margin: 12mm; }
 @media print {
   body { max-width: none; margin: 0; padding: 0; }
   table { font-size: 9pt; }
   tr, td { break-inside: avoid; page-break-inside: avoid; }
   .trend svg { width: 100%; max-width: 150px; height: auto; }
   thead { display: table-header-group; }
   h1, h2 { break-after: avoid; }
   a { color: inherit; text-decoration: none; }
 }
</style></head><body>
<h1>Pilot portfolio</h1>
<p>Every pilot under this folder with its latest complete run (all phases, through the go/no-go gate):
the decision, each KPI against the threshold written before the pilot started (95% intervals)
with its trend across the pilot's complete runs, and the blocking findings of the integration
and evidence checks, the drift analysis and the drill review, counted by kind (each links to
its section of the phase page). A newer
partial or failed run is noted; it never replaces the last complete decision.
Trend charts: one mark per complete run, oldest to newest, with its 95% interval; the dashed
line is the agreed threshold; marks: filled circle PASS, hollow circle INCONCLUSIVE, cross FAIL.</p>
<table>
<thead><tr><th>Pilot</th><th>Decision</th>{% for k in kpi_names %}<th>{{ k }}</th>{% endfor %}<th>Integration and evidence</th><th>Drift</th><th>Drill</th><th>Owner and run</th></tr></thead>
{% for p in pilots %}
<tr>
 <td><b>{{ p.title }}</b><br><small>{{ p.name }}</small></td>
 <td class="{{ p.decision | replace(' ', '-') }}">{{ p.decision }}{% if p.page %}<br><small><a href="{{ p.page }}">go/no-go page</a>{% if p.pdf %} · <a href="{{ p.pdf }}">PDF</a>{% endif %}{% if p.index %} · <a href="{{ p.index }}">run index</a>{% endif %}</small>{% endif %}{% for n in p.notes %}<br><small>{{ n }}</small>{% endfor %}</td>
 {% for k in kpi_names %}{% set v = p.kpis.get(k) %}
 <td>{% if v %}<span class="{{ v.status }}">{{ v.status }}</span><br>{{ v.measured }}<br><small>target {{ v.threshold }}</small>{% if v.trend %}<div class="trend">{{ v.trend | safe }}<small>{{ v.trend_text }}</small></div>{% endif %}{% else %}<small>not set</small>{% endif %}</td>
 {% endfor %}
 {% for st in (p.kpi, p.drift, p.drill) %}<td>{% if st["items"] %}<b>{{ st.label }}</b>{% for m in st["items"] %}<br>&bull; {% if m.href %}<a href="{{ m.href }}">{{ m.text }}</a>{% else %}{{ m.text }}{% endif %}{% endfor %}{% else %}{{ st.label }}{% endif %}</td>{% endfor %}
 <td>{% if p.owner %}{{ p.owner }}<br>{% endif %}<small>{% if p.date %}{{ p.date }}<br>{% endif %}run {{ p.run_id }}</small></td>
</tr>
{% endfor %}
</table>
{% if skipped %}<h2>Not shown</h2><ul>{% for s in skipped %}<li>{{ s }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""

#: Trend marks per status (Okabe-Ito colours, safe for colour-blind readers, and
#: a different shape per status so the chart reads in grey too).
_TREND_COLOURS = {"PASS": "#0072B2", "INCONCLUSIVE": "#E69F00", "FAIL": "#D55E00"}


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


#: Blocking findings by kind, as a leader reads them on the portfolio (singular, plural).
_FINDING_KINDS = {
    "key_feature_drift": ("key input shifted", "key inputs shifted"),
    "escalation_control_breach": ("escalation breach", "escalation breaches"),
    "promoted_below_predecessor": (
        "worse prompt version promoted",
        "worse prompt versions promoted",
    ),
    "feedback_loops_crossed": ("feedback-loop crossing", "feedback-loop crossings"),
    "retry_storm": ("retry storm", "retry storms"),
    "circuit_breaker_ignored": ("circuit breaker ignored", "circuit breakers ignored"),
    "drill_failed": ("kill-switch drill failed", "kill-switch drills failed"),
    "approval_timeout_approved": ("approval rule broken", "approval rules broken"),
    "approval_above_authority": ("approval rule broken", "approval rules broken"),
}


def _kind(finding: dict[str, Any]) -> tuple[str, str]:
    code = str(finding.get("code", ""))
    if code in _FINDING_KINDS:
        return _FINDING_KINDS[code]
    head = str((finding.get("evidence") or {}).get("headline") or code.replace("_", " "))
    head = head[:1].lower() + head[1:]
    return head, head


def _finding_counts(
    blocking: list[dict[str, Any]], page_dir: str | None, phase: str
) -> list[dict[str, Any]]:
    """Blocking findings counted by kind (``2 key inputs shifted``), each linking to the
    section of its phase page that holds them (no finding's full text: that is on the page)."""
    from pilot_lib.analysis.findings import Finding
    from pilot_lib.analysis.gate import finding_section
    from pilot_lib.report.board import phase_link

    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for f in blocking:
        one, many = _kind(f)
        try:
            where, section = finding_section(Finding.from_dict({"phase": phase} | dict(f)))
            href = f"{page_dir}/{phase_link(where, section)}" if page_dir else None
        except (KeyError, TypeError, ValueError):
            href = None
        entry = counts.setdefault((one, many), {"n": 0, "href": href})
        entry["n"] += 1
    return [
        {"text": f"{e['n']:,} {one if e['n'] == 1 else many}", "href": e["href"]}
        for (one, many), e in counts.items()
    ]


def _status_of(
    findings: list[dict[str, Any]] | None,
    phase_result: dict[str, Any] | None,
    page_dir: str | None = None,
    phase: str = "drift_analysis",
) -> dict[str, Any]:
    """A phase's status for the portfolio: a label and the blocking findings counted by kind,
    each with a link into the run's phase page (``page_dir``: the run folder, relative to the
    portfolio)."""
    if phase_result is None:
        return {"label": "not run", "items": []}
    blocking = [f for f in findings or [] if f.get("severity") == "blocking"]
    warnings = [f for f in findings or [] if f.get("severity") == "warning"]
    if blocking:
        return {"label": "BLOCKING", "items": _finding_counts(blocking, page_dir, phase)}
    if warnings:
        from pilot_lib.report.runpages import plural

        return {"label": f"ok, {plural(len(warnings), 'warning')}", "items": []}
    return {"label": "ok", "items": []}


def _run_folders(pilot_folder: Path) -> list[Path]:
    """A pilot's run folders, oldest first (run ids sort by time); not ``latest`` or temp files."""
    return sorted(
        d
        for d in pilot_folder.iterdir()
        if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")
    )


def _run_problem(run_dir: Path) -> str:
    """Why a run did not finish, from its ``run.json`` (or its absence)."""
    manifest = _load_json(run_dir / "run.json")
    if manifest is None:
        return f"run {run_dir.name} has no run.json (still running, or stopped before the end)"
    return f"run {run_dir.name} {manifest.get('status', 'failed')}: {manifest.get('error') or 'no error recorded'}"


def _run_record(run_dir: Path) -> dict[str, Any]:
    """One run folder as the portfolio reads it: manifest, gate result, and whether complete."""
    manifest = _load_json(run_dir / "run.json")
    gate = (_load_json(run_dir / "go_no_go_summary.json") or {}).get("result") or {}
    complete = (
        bool(manifest) and manifest.get("status") == "succeeded" and bool(gate.get("decision"))
    )
    return {"dir": run_dir, "manifest": manifest, "gate": gate, "complete": complete}


def _newer_note(rec: dict[str, Any]) -> str:
    """Why a run newer than the one shown is not shown."""
    manifest = rec["manifest"]
    if manifest is not None and manifest.get("status") == "succeeded":
        ran = ", ".join(str(ph.get("phase")) for ph in manifest.get("phases", []))
        return (
            f"a newer partial run {rec['dir'].name} (phases {ran or 'unknown'}) did not reach "
            "the go/no-go gate; the decision shown is the last complete one"
        )
    return f"a newer run did not finish: {_run_problem(rec['dir'])}"


def _owner(run_dir: Path, manifest: dict[str, Any]) -> str | None:
    summary = _load_json(run_dir / "summary.json") or {}
    if summary.get("owner"):
        return str(summary["owner"])
    if manifest.get("pilot_path"):
        from pilot_lib.config import load_pilot

        try:
            return load_pilot(manifest["pilot_path"]).owner
        except Exception:  # moved or changed since the run: no owner rather than no page
            return None
    return None


def _date(stamp: str | None) -> str | None:
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return stamp


def trend_svg(points: list[dict[str, Any]], threshold: float | None, label: str = "") -> str:
    """A small inline SVG of one KPI across complete runs (oldest left), 150 x 56 px.

    ``points``: one per run, oldest first, each with ``estimate``, ``low``,
    ``high`` (None where unknown) and ``status``. Each run is a mark at its
    estimate with its 95% interval as a vertical bar; the threshold is a dashed
    grey line. Marks differ by shape and colour-blind-safe colour (filled circle
    PASS, hollow circle INCONCLUSIVE, cross FAIL). Runs without an estimate are
    left out; "" when no run has one.
    """
    values = [
        (i, p)
        for i, p in enumerate(points)
        if p.get("estimate") is not None and math.isfinite(float(p["estimate"]))
    ]
    if not values:
        return ""
    width, height, pad = 150, 56, 7
    ys = [float(p["estimate"]) for _, p in values]
    ys += [float(p[k]) for _, p in values for k in ("low", "high") if p.get(k) is not None]
    if threshold is not None:
        ys.append(float(threshold))
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    n = len(points)

    def x(i: int) -> float:
        return width / 2 if n == 1 else pad + i * (width - 2 * pad) / (n - 1)

    def y(v: float) -> float:
        return height - pad - (float(v) - lo) / (hi - lo) * (height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f"<title>{html.escape(label)}: trend across {n} complete runs</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>',
    ]
    if threshold is not None:
        ty = y(threshold)
        parts.append(
            f'<line x1="0" y1="{ty:.1f}" x2="{width}" y2="{ty:.1f}" stroke="#555" '
            'stroke-dasharray="4 3" stroke-width="1"/>'
        )
    line = [(x(i), y(p["estimate"])) for i, p in values]
    if len(line) > 1:
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in line)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#999" stroke-width="1"/>')
    for i, p in values:
        cx, cy = x(i), y(p["estimate"])
        colour = _TREND_COLOURS.get(str(p.get("status")), "#000000")
        if p.get("low") is not None and p.get("high") is not None:
            parts.append(
                f'<line x1="{cx:.1f}" y1="{y(p["low"]):.1f}" x2="{cx:.1f}" y2="{y(p["high"]):.1f}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
        if p.get("status") == "FAIL":
            d = 3.5
            parts.append(
                f'<path d="M{cx - d:.1f},{cy - d:.1f}L{cx + d:.1f},{cy + d:.1f}'
                f'M{cx - d:.1f},{cy + d:.1f}L{cx + d:.1f},{cy - d:.1f}" '
                f'stroke="{colour}" stroke-width="2.2" class="mark"/>'
            )
        elif p.get("status") == "INCONCLUSIVE":
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="#fff" stroke="{colour}" '
                'stroke-width="2" class="mark"/>'
            )
        else:
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}" class="mark"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def write_portfolio(out_root: str | Path, target: str | Path | None = None) -> Path:
    """Write ``portfolio.html``: every pilot under ``out_root`` with its latest complete decision.

    A run is *complete* when its ``run.json`` says ``succeeded`` and the
    go/no-go gate (phase 5) decided. One row per pilot folder: the newest
    complete run's decision, each KPI against its threshold with the 95%
    interval and its trend across the pilot's complete runs (a small chart,
    see :func:`trend_svg`, from two runs on), the owner, the run's date, drift
    and drill status. A newer partial run (``--phases 2``) or a newer run that
    failed is noted in the row and never hides the last complete decision. A
    pilot with finished runs but none complete shows its ``latest`` run as
    "NO DECISION"; a pilot folder without a finished run is listed under "Not
    shown" with the reason (its newest run's error). Text from run files is escaped.
    """
    from pilot_lib.runs import latest_run_dir

    root = Path(out_root).resolve()
    pilots, skipped = [], []
    kpi_names: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        records = [_run_record(r) for r in _run_folders(folder)]
        complete = [r for r in records if r["complete"]]
        if complete:
            shown = complete[-1]
        else:
            run_dir = latest_run_dir(folder)
            if run_dir is None:
                if records:
                    skipped.append(
                        f"{folder.name}: no finished run; {_run_problem(records[-1]['dir'])}"
                    )
                continue
            shown = _run_record(run_dir)
        run_dir, gate = shown["dir"], shown["gate"]
        manifest = shown["manifest"] or {}
        kpi = (_load_json(run_dir / "kpi_baselining.json") or {}).get("result")
        drift = (_load_json(run_dir / "drift_analysis.json") or {}).get("result")
        drill = (_load_json(run_dir / "incident_drill_review.json") or {}).get("result")
        kpis = {}
        for v in gate.get("verdicts", []):
            label = v.get("label", v.get("kpi"))
            if label not in kpi_names:
                kpi_names.append(label)
            measured = "no data" if v.get("estimate") is None else _measured(v)
            history = [
                next((h for h in r["gate"].get("verdicts", []) if h.get("kpi") == v.get("kpi")), {})
                for r in complete
            ]
            history = [h for h in history if h]
            trend = trend_svg(history, v.get("threshold"), label) if len(history) > 1 else ""
            kpis[label] = {
                "status": v.get("status"),
                "measured": measured,
                "threshold": v.get("threshold_text"),
                "trend": trend,
                "trend_text": (
                    f"{len(history)} complete runs: "
                    + " → ".join(
                        "no data" if h.get("estimate") is None else _point_text(h) for h in history
                    )
                    if trend
                    else ""
                ),
            }
        notes = []
        if gate.get("interim"):
            notes.append("INTERIM look (anytime-valid intervals), not the final gate")
        decision = gate.get("decision") or manifest.get("decision")
        if not decision:
            ran = [str(ph.get("phase")) for ph in manifest.get("phases", [])]
            decision = "NO DECISION"
            notes.append(f"phase 5 was not part of this run (phases {', '.join(ran) or 'unknown'})")
        notes += [_newer_note(r) for r in records if r["dir"].name > run_dir.name]
        page = run_dir / "05_go_no_go_summary.html"
        run_href = run_dir.relative_to(root).as_posix() if page.is_file() else None
        pilots.append(
            {
                "name": manifest.get("pilot", folder.name),
                "title": manifest.get("title") or folder.name,
                "owner": _owner(run_dir, manifest),
                "date": _date(manifest.get("finished_at")),
                "decision": decision,
                "kpis": kpis,
                "kpi": _status_of(
                    (kpi or {}).get("findings") or (kpi or {}).get("flags"),
                    kpi,
                    run_href,
                    "kpi_baselining",
                ),
                "drift": _status_of((drift or {}).get("findings"), drift, run_href),
                "drill": _status_of(
                    (drill or {}).get("findings"), drill, run_href, "incident_drill_review"
                ),
                "run_id": run_dir.name,
                "page": page.relative_to(root).as_posix() if page.is_file() else None,
                "pdf": _link(root, page.with_suffix(".pdf")),
                "index": _link(root, run_dir / "index.html"),
                "notes": notes,
            }
        )
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    text = env.from_string(_PORTFOLIO).render(pilots=pilots, kpi_names=kpi_names, skipped=skipped)
    out = Path(target) if target else root / "portfolio.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, text)


def _link(root: Path, path: Path) -> str | None:
    """``path`` relative to the portfolio's folder, or None when it does not exist."""
    return path.relative_to(root).as_posix() if path.is_file() else None


def _point_text(v: dict[str, Any]) -> str:
    from pilot_lib.analysis.gate import format_value

    return format_value(v.get("estimate"), v.get("unit", ""))


def _measured(v: dict[str, Any]) -> str:
    from pilot_lib.analysis.gate import format_value

    unit = v.get("unit", "")
    text = format_value(v.get("estimate"), unit)
    if v.get("low") is not None and v.get("high") is not None:
        text += f" ({format_value(v['low'], unit)} to {format_value(v['high'], unit)})"
    return text

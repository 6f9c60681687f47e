"""Leadership exports: executed notebooks as HTML with no code, and the portfolio page.

- Input cells, prompts and cells tagged ``widgets`` (they need a live kernel)
  or ``parameters`` are left out; the static default views stay.
- Charts are embedded (PNG data URIs): the file opens anywhere, no Jupyter.
- Text from data is escaped where it is rendered: tables through pandas'
  HTML escaping, Markdown and banners through ``pilot_lib.notebook.escape``
  and ``escape_md``, plain-text outputs by nbconvert. So a value such as
  ``<script>alert(1)</script>`` in a decision log appears as text.
  (nbconvert's ``sanitize_html`` is not used: it strips the tables' styles and
  the embedded charts.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
from jinja2 import Environment, select_autoescape
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

__all__ = ["REMOVED_TAGS", "export_html", "write_portfolio"]

#: Cells with these tags are not exported.
REMOVED_TAGS = frozenset({"widgets", "parameters", "injected-parameters", "no-export"})

_EXTRA_CSS = """
<style>
  body { max-width: 1100px; margin: 0 auto; padding: 24px;
         font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
  .jp-RenderedHTMLCommon table { font-size: 13px; }
  .jp-Cell { padding: 2px 0; }
</style>
"""


def export_html(notebook: str | Path, target: str | Path, title: str | None = None) -> Path:
    """Export an executed notebook to a standalone HTML page without code.

    Parameters
    ----------
    notebook:
        The executed ``.ipynb``.
    target:
        The ``.html`` file to write (its folder must exist).
    title:
        Page title; defaults to the notebook's file name.
    """
    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.exclude_output_stdin = True
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags=set(REMOVED_TAGS), enabled=True), enabled=True
    )
    resources = {"metadata": {"name": title or Path(notebook).stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    body = body.replace("</head>", _EXTRA_CSS + "</head>", 1)
    out = Path(target)
    out.write_text(body, encoding="utf-8")
    return out


_PORTFOLIO = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Pilot portfolio</title>
<style>
 body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; max-width: 1200px;
        margin: 24px auto; padding: 0 16px; color: #111; }
 table { border-collapse: collapse; width: 100%; font-size: 13px; }
 th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
 th { background: #f4f4f5; }
 .GO { background: #d7f0dd; font-weight: 700; } .NO-GO { background: #f9d6d5; font-weight: 700; }
 .EXTEND { background: #fdf0c8; font-weight: 700; } .FAILED { background: #e5e7eb; font-weight: 700; }
 .PASS { color: #14532d; } .FAIL { color: #7f1d1d; font-weight: 600; } .INCONCLUSIVE { color: #713f12; }
 small { color: #555; }
</style></head><body>
<h1>Pilot portfolio</h1>
<p>The latest finished run of every pilot under this folder: the go/no-go decision,
each KPI against the threshold written before the pilot started (95% intervals),
and the drift and drill status.</p>
<table>
<tr><th>Pilot</th><th>Decision</th>{% for k in kpi_names %}<th>{{ k }}</th>{% endfor %}<th>Drift</th><th>Drill</th><th>Run</th></tr>
{% for p in pilots %}
<tr>
 <td><b>{{ p.title }}</b><br><small>{{ p.name }}</small></td>
 <td class="{{ p.decision }}">{{ p.decision }}{% if p.page %}<br><small><a href="{{ p.page }}">go/no-go page</a></small>{% endif %}</td>
 {% for k in kpi_names %}{% set v = p.kpis.get(k) %}
 <td>{% if v %}<span class="{{ v.status }}">{{ v.status }}</span><br>{{ v.measured }}<br><small>target {{ v.threshold }}</small>{% else %}<small>not set</small>{% endif %}</td>
 {% endfor %}
 <td>{{ p.drift }}</td><td>{{ p.drill }}</td><td><small>{{ p.run_id }}</small></td>
</tr>
{% endfor %}
</table>
{% if skipped %}<h2>Not shown</h2><ul>{% for s in skipped %}<li>{{ s }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _status_of(findings: list[dict[str, Any]] | None, phase_result: dict[str, Any] | None) -> str:
    if phase_result is None:
        return "not run"
    blocking = [f for f in findings or [] if f.get("severity") == "blocking"]
    warnings = [f for f in findings or [] if f.get("severity") == "warning"]
    if blocking:
        return "BLOCKING: " + "; ".join(f.get("message", "") for f in blocking)
    if warnings:
        return f"ok, {len(warnings)} warning(s)"
    return "ok"


def write_portfolio(out_root: str | Path, target: str | Path | None = None) -> Path:
    """Write ``portfolio.html`` comparing the latest run of every pilot under ``out_root``.

    A pilot folder without a finished run (no ``latest``) is listed under "Not
    shown" with the reason, never silently skipped.
    """
    from pilot_lib.runner import latest_run_dir

    root = Path(out_root)
    pilots, skipped = [], []
    kpi_names: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        run_dir = latest_run_dir(folder)
        if run_dir is None:
            if any(folder.iterdir()):
                skipped.append(f"{folder.name}: no finished run yet")
            continue
        manifest = _load_json(run_dir / "run.json") or {}
        gate = (_load_json(run_dir / "go_no_go_summary.json") or {}).get("result") or {}
        drift = (_load_json(run_dir / "drift_analysis.json") or {}).get("result")
        drill = (_load_json(run_dir / "incident_drill_review.json") or {}).get("result")
        kpis = {}
        for v in gate.get("verdicts", []):
            label = v.get("label", v.get("kpi"))
            if label not in kpi_names:
                kpi_names.append(label)
            measured = "no data" if v.get("estimate") is None else _measured(v)
            kpis[label] = {
                "status": v.get("status"),
                "measured": measured,
                "threshold": v.get("threshold_text"),
            }
        page = run_dir / "05_go_no_go_summary.html"
        pilots.append(
            {
                "name": manifest.get("pilot", folder.name),
                "title": manifest.get("title", folder.name),
                "decision": gate.get("decision") or manifest.get("decision") or "FAILED",
                "kpis": kpis,
                "drift": _status_of((drift or {}).get("findings"), drift),
                "drill": _status_of((drill or {}).get("findings"), drill),
                "run_id": run_dir.name,
                "page": page.relative_to(root).as_posix() if page.is_file() else None,
            }
        )
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    text = env.from_string(_PORTFOLIO).render(pilots=pilots, kpi_names=kpi_names, skipped=skipped)
    out = Path(target) if target else root / "portfolio.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _measured(v: dict[str, Any]) -> str:
    from pilot_lib.gate import format_value

    unit = v.get("unit", "")
    text = format_value(v.get("estimate"), unit)
    if v.get("low") is not None and v.get("high") is not None:
        text += f" ({format_value(v['low'], unit)} to {format_value(v['high'], unit)})"
    return text

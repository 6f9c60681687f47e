"""What a run folder says about itself: ``summary.json``, ``summary.md`` and ``index.html``.

Written after a run ends (whatever its status), from the run's own files:
``run.json`` (the manifest), ``go_no_go_summary.json`` (the gate's result) and
the pilot file (owner, pilot window). Nothing is recomputed: every figure is
the gate's, formatted with :func:`pilot_lib.analysis.gate.format_value`.

- ``summary.json``: the machine-readable summary (also what
  ``pilot-workbook run --json`` prints, one per pilot).
- ``summary.md``: Markdown for an e-mail or a chat message: the decision, at
  most five reasons, the KPI table (measured, 95% interval, agreed threshold,
  status), the data-coverage line, the run id and date. No file paths.
- ``index.html``: the run's front page: the decision, links to the five phase
  pages, the summary, the quarantined rows and the run manifest.

Each file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from pilot_lib.runs import atomic_write_text

__all__ = [
    "MAX_REASONS",
    "PHASE_PAGES",
    "plural",
    "reasons",
    "run_summary",
    "summary_markdown",
    "write_run_pages",
]

#: The reasons a summary lists at most; the rest are counted.
MAX_REASONS = 5

#: Phase number -> (result key, page file stem, title a reader sees).
PHASE_PAGES: dict[int, tuple[str, str, str]] = {
    1: ("use_case_scoring", "01_use_case_scoring", "Use-case scoring"),
    2: ("kpi_baselining", "02_kpi_baselining", "KPI baselining"),
    3: ("drift_analysis", "03_drift_analysis", "Drift analysis"),
    4: ("incident_drill_review", "04_incident_drill_review", "Incident drill review"),
    5: ("go_no_go_summary", "05_go_no_go_summary", "Go / no-go summary"),
}

_PHASE_TITLE_BY_KEY = {key: title for key, _, title in PHASE_PAGES.values()}

#: The order reasons are listed in: what stops a GO first.
_STATUS_ORDER = {"FAIL": 0, "INCONCLUSIVE": 1, "PASS": 2}


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 action``, ``2 actions``, ``12,000 decisions``: a count with thousands separators."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _format(value: Any, unit: str) -> str:
    from pilot_lib.analysis.gate import format_value

    return format_value(value, unit)


def _kpi_row(v: dict[str, Any]) -> dict[str, Any]:
    unit = v.get("unit", "")
    low, high = v.get("low"), v.get("high")
    interval = (
        f"{_format(low, unit)} to {_format(high, unit)}"
        if low is not None and high is not None
        else ""
    )
    return {
        "kpi": v.get("kpi"),
        "label": v.get("label") or v.get("kpi"),
        "status": v.get("status"),
        "estimate": v.get("estimate"),
        "low": low,
        "high": high,
        "unit": unit,
        "n": v.get("n"),
        "comparator": v.get("comparator"),
        "threshold": v.get("threshold"),
        "threshold_text": v.get("threshold_text"),
        "measured_text": _format(v.get("estimate"), unit),
        "interval_text": interval,
        "reason": v.get("reason"),
    }


def _first_sentence(text: str, most: int = 240) -> str:
    """The first sentence of a finding's message (the rest is on the phase page)."""
    text = " ".join(str(text).split())
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text, maxsplit=1)[0]
    return first if len(first) <= most else first[: most - 1].rstrip() + "…"


_STATUS_WORDS = {"PASS": "passes", "FAIL": "fails", "INCONCLUSIVE": "is inconclusive"}
_GROUP_WORDS = {
    "PASS": "pass their thresholds",
    "FAIL": "miss their thresholds",
    "INCONCLUSIVE": "are inconclusive (the interval still reaches the threshold)",
}


def reasons(gate: dict[str, Any], most: int = MAX_REASONS) -> list[str]:
    """At most ``most`` reasons for the gate's decision, in plain words, worst first.

    A gate result that records its ``reasons`` (``GateDecision.reasons``, the
    list the go/no-go page opens with) gives those, as "headline: detail". For
    a result without them (written before they were recorded):

    The KPIs that failed come first, then the blocking findings (the first
    sentence of each, naming the phase that raised it), then the inconclusive
    KPIs; for a GO, the passing KPIs. Each KPI reason names the measured value,
    its 95% interval and the agreed threshold. When more reasons than ``most``
    remain, the KPIs of one status share a line; if still too many, the last
    line counts the rest. An empty gate result gives no reasons.
    """
    recorded = gate.get("reasons")
    if recorded:
        # The gate's own reasons (the go/no-go page's list): one wording everywhere.
        return [
            f"{r['headline']}: {r['detail']}" if r.get("detail") else str(r["headline"])
            for r in recorded[:most]
        ]
    decision = gate.get("decision")
    rows = [_kpi_row(v) for v in gate.get("verdicts") or []]
    by_status: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] != "PASS" or decision == "GO":
            by_status.setdefault(str(r["status"]), []).append(r)

    def one(r: dict[str, Any]) -> str:
        measured = r["measured_text"]
        if r["interval_text"]:
            measured += f" (95% interval {r['interval_text']})"
        word = _STATUS_WORDS.get(str(r["status"]), str(r["status"]).lower())
        return f"{r['label']} {word}: measured {measured}, agreed threshold {r['threshold_text']}"

    def grouped(status: str, group: list[dict[str, Any]]) -> list[str]:
        if len(group) == 1:
            return [one(group[0])]
        parts = "; ".join(
            f"{r['label']} {r['measured_text']} (threshold {r['threshold_text']})" for r in group
        )
        return [f"{len(group)} KPIs {_GROUP_WORDS.get(status, status.lower())}: {parts}"]

    findings = [
        f"Blocking finding ({_PHASE_TITLE_BY_KEY.get(f.get('phase', ''), f.get('phase') or 'finding')}): "
        + _first_sentence(f.get("message", ""))
        for f in gate.get("blocking_findings") or []
    ]
    order = ("FAIL", "INCONCLUSIVE", "PASS")

    def assemble(group: bool) -> list[str]:
        kpi_lines = {
            st: (grouped(st, by_status[st]) if group else [one(r) for r in by_status[st]])
            for st in by_status
        }
        return (
            kpi_lines.get("FAIL", [])
            + findings
            + [line for st in order[1:] for line in kpi_lines.get(st, [])]
            + [line for st, ls in kpi_lines.items() if st not in order for line in ls]
        )

    lines = assemble(group=False)
    if len(lines) > most:
        lines = assemble(group=True)
    if len(lines) > most:
        rest = len(lines) - (most - 1)
        lines = lines[: most - 1] + [
            f"and {plural(rest, 'more reason')} (blocking findings) on the go/no-go page"
        ]
    return lines


def _owner_and_window(run: dict[str, Any], pilot: Any | None) -> tuple[str | None, dict | None]:
    if pilot is None and run.get("pilot_path"):
        from pilot_lib.config import load_pilot

        try:
            pilot = load_pilot(run["pilot_path"])
        except Exception:  # the pilot file changed or moved since the run: leave them out
            pilot = None
    if pilot is None:
        return None, None
    window = {"start": str(pilot.pilot_window.start), "end": str(pilot.pilot_window.end)}
    return pilot.owner, window


def run_summary(run_dir: str | Path, pilot: Any | None = None) -> dict[str, Any]:
    """The machine-readable summary of one run folder (what ``summary.json`` holds).

    Keys: ``pilot``, ``title``, ``owner``, ``pilot_window`` (``start``/``end``),
    ``run_id``, ``run_dir``, ``status`` (``succeeded``, ``failed``,
    ``interrupted``, ``running``), ``started_at``, ``finished_at``,
    ``package_version``, ``phases`` (number, key, status), ``complete`` (the
    run succeeded and phase 5 decided), ``decision`` (None without phase 5),
    ``interim``, ``reasons``, ``kpis`` (per KPI: status, estimate, low, high,
    unit, n, threshold, texts), ``blocking_findings`` (phase, code, message),
    ``coverage`` (the data-coverage line, or None), ``error``.

    ``pilot``: the loaded pilot file, for the owner and the window; without it
    the file named in ``run.json`` is read (and left out if it no longer loads).
    """
    folder = Path(run_dir)
    run = _load_json(folder / "run.json") or {}
    gate = (_load_json(folder / "go_no_go_summary.json") or {}).get("result") or {}
    owner, window = _owner_and_window(run, pilot)
    decision = gate.get("decision") or run.get("decision")
    status = run.get("status", "running" if run else "unknown")
    coverage = (gate.get("data_coverage") or {}).get("line")
    return {
        "pilot": run.get("pilot") or gate.get("pilot") or folder.parent.name,
        "title": run.get("title"),
        "owner": owner,
        "pilot_window": window,
        "run_id": run.get("run_id") or folder.name,
        "run_dir": str(folder.resolve()),
        "status": status,
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "package_version": run.get("package_version"),
        "phases": [
            {"phase": p.get("phase"), "key": p.get("key"), "status": p.get("status")}
            for p in run.get("phases", [])
        ],
        "complete": status == "succeeded" and bool(gate.get("decision")),
        "decision": decision,
        "interim": bool(gate.get("interim", run.get("interim", False))),
        "reasons": reasons(gate),
        "kpis": [_kpi_row(v) for v in gate.get("verdicts") or []],
        "blocking_findings": [
            {"phase": f.get("phase"), "code": f.get("code"), "message": f.get("message")}
            for f in gate.get("blocking_findings") or []
        ],
        "coverage": coverage,
        "error": run.get("error"),
    }


def _day(stamp: str | None) -> str:
    """``2026-12-02T04:16:52+00:00`` as ``2 December 2026, 04:16 UTC``; '' for None."""
    if not stamp:
        return ""
    try:
        t = dt.datetime.fromisoformat(stamp).astimezone(dt.UTC)
    except ValueError:
        return stamp
    return f"{t.day} {t:%B %Y, %H:%M} UTC"


def _md_cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the decision, the reasons, the KPI table, coverage, run id and date.

    Plain Markdown (GitHub / chat flavour); text from the pilot file or the data
    has its table pipes escaped. Holds no file path.
    """
    title = summary.get("title") or summary["pilot"]
    decision = summary.get("decision")
    lines = [f"# {title}: {decision or 'no decision'}", ""]
    if summary.get("interim") and decision:
        lines += ["**Interim look** (anytime-valid intervals), not the final gate.", ""]
    if summary["status"] != "succeeded":
        lines += [
            f"**This run {summary['status']}**: {summary.get('error') or 'no error recorded'}",
            "",
        ]
    elif not decision:
        ran = ", ".join(str(p["phase"]) for p in summary["phases"])
        lines += [f"Phase 5 (the go/no-go gate) was not part of this run (phases {ran}).", ""]
    if summary["reasons"]:
        lines += ["## Why", ""] + [f"- {r}" for r in summary["reasons"]] + [""]
    if summary["kpis"]:
        lines += [
            "## KPIs against the thresholds agreed before the pilot",
            "",
            "| KPI | measured | 95% interval | agreed threshold | status |",
            "|---|---:|---|---|---|",
        ]
        for k in summary["kpis"]:
            lines.append(
                "| "
                + " | ".join(
                    _md_cell(x)
                    for x in (
                        k["label"],
                        k["measured_text"],
                        k["interval_text"],
                        k["threshold_text"],
                        k["status"],
                    )
                )
                + " |"
            )
        lines.append("")
    if summary.get("coverage"):
        lines += [summary["coverage"], ""]
    meta = [f"run {summary['run_id']}"]
    if summary.get("finished_at") or summary.get("started_at"):
        meta.append(_day(summary.get("finished_at") or summary.get("started_at")))
    if summary.get("pilot_window"):
        w = summary["pilot_window"]
        meta.append(f"pilot window {w['start']} to {w['end']}")
    if summary.get("owner"):
        meta.append(f"owner {summary['owner']}")
    if summary.get("package_version"):
        meta.append(f"agentic-pilot-workbook {summary['package_version']}")
    lines += ["_" + _md_cell("; ".join(meta)) + "_", ""]
    return "\n".join(lines)


_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }} — run {{ s.run_id }}</title>
<style>
 body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; max-width: 900px;
        margin: 24px auto; padding: 0 16px; color: #111; }
 .decision { display: inline-block; padding: 6px 14px; border-radius: 4px; font-weight: 700;
             font-size: 20px; border: 2px solid #111; }
 .GO { background: #cfe5f5; } .NO-GO { background: #f6d3bd; } .EXTEND { background: #fbeaa8; }
 .none { background: #e5e7eb; }
 table { border-collapse: collapse; font-size: 14px; }
 td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
 small, .muted { color: #555; }
 @media print { body { max-width: none; margin: 0; } a { color: inherit; } }
</style></head><body>
<h1>{{ title }}</h1>
<p><span class="decision {{ (s.decision or 'none') | replace(' ', '-') }}">{{ s.decision or "no decision" }}</span>
{% if s.interim and s.decision %} <b>interim look</b>{% endif %}
 <span class="muted">run {{ s.run_id }}, {{ s.status }}{% if when %}, {{ when }}{% endif %}</span></p>
{% if s.status != "succeeded" %}<p><b>This run {{ s.status }}:</b> {{ s.error or "no error recorded" }}</p>{% endif %}
{% if s.reasons %}<ul>{% for r in s.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
{% if s.coverage %}<p>{{ s.coverage }}</p>{% endif %}
<h2>Phase pages</h2>
<table>
<tr><th>Phase</th><th>Status</th><th>Page</th></tr>
{% for p in phases %}<tr><td>{{ p.number }}. {{ p.title }}</td><td>{{ p.status }}</td>
<td>{% if p.html %}<a href="{{ p.html }}">page</a>{% if p.pdf %} · <a href="{{ p.pdf }}">PDF</a>{% endif %}{% elif p.notebook %}<a href="{{ p.notebook }}">executed notebook</a> <small>(no page)</small>{% else %}<small>not run</small>{% endif %}</td></tr>
{% endfor %}
</table>
<h2>Summary and records</h2>
<ul>
 <li><a href="summary.md">Summary for e-mail or chat</a> (summary.md) · <a href="summary.json">machine-readable</a> (summary.json)</li>
 <li>{% if quarantine %}Rows set aside by the data contracts (quarantine):
   {% for q in quarantine %}<a href="{{ q.href }}">{{ q.name }}</a>{% if q.rows is not none %} ({{ q.rows }}){% endif %}{% if not loop.last %}, {% endif %}{% endfor %}
   {% else %}No rows were set aside by the data contracts (no quarantine files).{% endif %}</li>
 <li><a href="run.json">Run manifest</a> (run.json): status of every phase, timings, engine, package version</li>
</ul>
{% if s.owner or s.pilot_window %}<p class="muted">{% if s.owner %}Owner: {{ s.owner }}. {% endif %}{% if s.pilot_window %}Pilot window {{ s.pilot_window.start }} to {{ s.pilot_window.end }}. {% endif %}agentic-pilot-workbook {{ s.package_version }}.</p>{% endif %}
</body></html>
"""


def _index_html(summary: dict[str, Any], folder: Path) -> str:
    run = _load_json(folder / "run.json") or {}
    counts = (run.get("ingest") or {}).get("datasets") or {}
    status_of = {p["phase"]: p["status"] for p in summary["phases"]}
    phases = []
    for number, (_, stem, title) in PHASE_PAGES.items():
        html, nb, pdf = (folder / f"{stem}{ext}" for ext in (".html", ".ipynb", ".pdf"))
        phases.append(
            {
                "number": number,
                "title": title,
                "status": status_of.get(number, "not part of this run"),
                "html": html.name if html.is_file() else None,
                "notebook": nb.name if nb.is_file() else None,
                "pdf": pdf.name if pdf.is_file() else None,
            }
        )
    quarantine = []
    qdir = folder / "quarantine"
    if qdir.is_dir():
        for f in sorted(qdir.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                n = (counts.get(f.name.split(".")[0]) or {}).get("quarantined")
                quarantine.append(
                    {
                        "name": f.name,
                        "href": f"quarantine/{f.name}",
                        "rows": plural(int(n), "row") if n is not None else None,
                    }
                )
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(_INDEX).render(
        s=summary,
        title=summary.get("title") or summary["pilot"],
        when=_day(summary.get("finished_at") or summary.get("started_at")),
        phases=phases,
        quarantine=quarantine,
    )


def _write_text(target: Path, text: str) -> Path:
    return atomic_write_text(target, text)


def write_run_pages(run_dir: str | Path, pilot: Any | None = None) -> dict[str, Any]:
    """Write ``summary.json``, ``summary.md`` and ``index.html`` into ``run_dir``; returns the summary.

    Works on any run folder with a ``run.json`` (failed and interrupted ones
    too: their index says so). Raises ``OSError`` when the folder cannot be written.
    """
    folder = Path(run_dir)
    summary = run_summary(folder, pilot)
    _write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_text(folder / "summary.md", summary_markdown(summary))
    _write_text(folder / "index.html", _index_html(summary, folder))
    return summary

"""The go/no-go page for leadership: what the board reads in two minutes.

The page opens with the decision, at most five reasons in plain words (each
linking to the phase page section with the detail), the data-coverage line,
the run's date, id, pilot window and workbook version, and whether the
thresholds were sealed before the pilot. It ends with a short glossary of the
technical terms the page uses and a sign-off block for the cross-functional
team. Everything here formats what :mod:`pilot_lib.analysis.gate` decided;
nothing computes a statistic.

Links: the runner exports each phase notebook next to the go/no-go page as
``<notebook stem>.html`` (``03_drift_analysis.html``), and nbconvert gives
each Markdown heading an ``id`` made of its text with spaces turned into
hyphens (:func:`heading_anchor`). The links are relative, so a run folder can
be moved or zipped. Outside a recorded run (an analyst's notebook, no
``output_dir``) there are no exported pages to link to; the section is named
in words instead.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pilot_lib.config import REQUIRED_ROLES, Pilot

__all__ = [
    "GLOSSARY",
    "PAGE_REASONS",
    "PHASE_PAGES",
    "RunInfo",
    "board_top",
    "glossary_html",
    "page_reasons",
    "heading_anchor",
    "phase_link",
    "run_info",
    "seal_status",
    "short_fingerprint",
    "sign_off_html",
    "terms_in",
]

#: The exported page of each phase (the notebook's stem; the runner writes ``<stem>.html``).
PHASE_PAGES = {
    "use_case_scoring": "01_use_case_scoring",
    "kpi_baselining": "02_kpi_baselining",
    "drift_analysis": "03_drift_analysis",
    "incident_drill_review": "04_incident_drill_review",
    "go_no_go_summary": "05_go_no_go_summary",
}

#: Readable names of the phase pages.
PHASE_TITLES = {
    "use_case_scoring": "Phase 1: use-case scoring",
    "kpi_baselining": "Phase 2: KPI baselining",
    "drift_analysis": "Phase 3: drift analysis",
    "incident_drill_review": "Phase 4: incident drill review",
    "go_no_go_summary": "Go / no-go",
}

#: Technical terms a leadership page may use, each with a one-line explanation.
#: Keys are matched in text case-insensitively as whole words (see :func:`terms_in`).
GLOSSARY: dict[str, str] = {
    "95% interval": (
        "the range the true value lies in with 95% confidence, given how many cases were seen; "
        "a threshold counts as met only when the whole range clears it"
    ),
    "PSI": (
        "population stability index: how far the mix of an input moved between two windows; "
        "below 0.1 is stable, above 0.25 a large shift"
    ),
    "control chart": (
        "a chart of the daily escalation rate against limits set from the first weeks; "
        "a rate that stays outside the limits is a real change, not chance"
    ),
    "p'-chart": (
        "a control chart on daily counts that allows for day-to-day variation beyond chance; "
        "used to confirm a breach of the 7-day average"
    ),
    "ECE": (
        "expected calibration error: the average gap between how confident the agent says it "
        "is and how often it is right (0 is perfect)"
    ),
    "design effect": (
        "how much wider an interval is because decisions come in groups (weeks, users) "
        "rather than one by one"
    ),
    "confidence sequence": (
        "an interval that stays valid however often the team looks at the data, "
        "used for interim looks"
    ),
    "anytime-valid": (
        "valid however often the team looks at the data: checking every week does not raise "
        "the chance of a false GO"
    ),
    "Wilson": "the Wilson score interval, a standard 95% interval for a share",
    "power": (
        "the chance that collecting the advised extra cases settles a KPI, if the current "
        "estimate is the true value"
    ),
    "kill switch": "the control that pauses the agent at once; drilled with a simulated incident",
    "SLA": "service-level agreement: the agreed time for a human to decide an approval",
    "quarantine": (
        "rows that broke the data contract, set aside with the reason instead of being used"
    ),
    "seal": (
        "a dated fingerprint of the thresholds taken when they were agreed; any later change shows"
    ),
    "escalation": "a decision the agent handed to a person instead of completing it",
    "override": "a decision a person changed after the agent made it",
}

#: Other ways a page writes a glossary term.
_ALIASES = {"95% interval": ("95% CI", "95% confidence interval")}

_TERM_PATTERNS = {
    term: re.compile(
        "|".join(
            r"(?<![\w-])" + re.escape(t).replace(r"\ ", r"[\s-]") + r"(?:e?s)?(?![\w])"
            for t in (term, *_ALIASES.get(term, ()))
        ),
        re.IGNORECASE if term.lower() == term else 0,
    )
    for term in GLOSSARY
}


def terms_in(texts: Iterable[str]) -> list[str]:
    """The :data:`GLOSSARY` terms used in ``texts``, in glossary order.

    Lower-case terms match in any case (``Escalations``); terms with capitals
    (``PSI``, ``ECE``, ``SLA``) only as written, so "ece" inside a word never counts.
    """
    joined = "\n".join(texts)
    return [term for term, pat in _TERM_PATTERNS.items() if pat.search(joined)]


def heading_anchor(heading: str) -> str:
    """The ``id`` nbconvert gives a Markdown heading in the HTML export.

    nbconvert (``nbconvert.filters.strings._convert_header_id``) replaces spaces
    with hyphens and percent-encodes what a URL fragment cannot hold:
    ``"Escalation control chart"`` -> ``Escalation-control-chart``.
    """
    return quote(heading.replace(" ", "-"), safe="?/:@!$&'()*+,;=")


def phase_link(phase: str, section: str = "") -> str:
    """The relative link to a phase page's section: ``03_drift_analysis.html#Findings``."""
    page = f"{PHASE_PAGES[phase]}.html"
    return f"{page}#{heading_anchor(section)}" if section else page


def short_fingerprint(sha256: str) -> str:
    """The first 12 hex digits of a SHA-256: enough to tell files apart, short enough to read."""
    return sha256[:12]


@dataclass(frozen=True)
class RunInfo:
    """What the page says about the run: id and start (UTC), or that it is an analyst's run."""

    run_id: str | None
    started: dt.datetime | None

    @property
    def recorded(self) -> bool:
        return self.run_id is not None

    def text(self) -> str:
        """``run 20261124T231500Z-3f9a of 24 November 2026, 23:15 UTC``, or the analyst's note."""
        if not self.recorded:
            return "analyst run in a notebook, not a recorded run"
        when = f" of {_day(self.started)}, {self.started:%H:%M} UTC" if self.started else ""
        return f"run {self.run_id}{when}"


_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)(?:-[0-9a-f]+)?$")


def _day(d: dt.date) -> str:
    """``1 June 2026`` (no leading zero)."""
    return f"{d.day} {d:%B %Y}"


def run_info(output_dir: str | Path | None) -> RunInfo:
    """The run the notebook writes into, from its folder.

    The run id is the run folder's name (``<out>/<pilot>/<run id>``); the start
    time is ``started_at`` in the folder's ``run.json`` when the runner wrote
    one, else the time the run id encodes (``20261124T231500Z-3f9a``).
    Without ``output_dir``: not a recorded run. An unreadable ``run.json`` is
    ignored (the run id still names the run).
    """
    if output_dir in (None, ""):
        return RunInfo(None, None)
    folder = Path(output_dir)  # type: ignore[arg-type]
    started: dt.datetime | None = None
    manifest = folder / "run.json"
    if manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
            started = dt.datetime.fromisoformat(str(doc["started_at"]))
            run_id = str(doc.get("run_id") or folder.name)
        except (ValueError, KeyError, TypeError, OSError):
            started, run_id = None, folder.name
    else:
        run_id = folder.name
    if started is None:
        m = _RUN_ID.match(run_id)
        if m:
            started = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if started is not None and started.tzinfo is not None:
        started = started.astimezone(dt.UTC)
    return RunInfo(run_id, started)


def seal_status(warnings: Sequence[str], notes: Sequence[str]) -> tuple[bool, str]:
    """``(sound, sentence)``: whether the thresholds are provably the ones agreed before the pilot.

    From :func:`pilot_lib.analysis.integrity.check_thresholds`: any warning
    (changed after the seal, sealed late, a git commit moving them) is not
    sound and its first warning is the sentence; otherwise the seal's note (or
    git's), or a sentence saying there is no seal.
    """
    if warnings:
        more = f" ({len(warnings) - 1:,} more below)" if len(warnings) > 1 else ""
        return False, f"NOT as agreed: {warnings[0]}{more}"
    seal = [n for n in notes if "seal" in n]
    if seal:
        return True, seal[0]
    if notes:
        return True, f"Not sealed; {notes[0]}"
    return False, (
        "not sealed and no version history: nothing shows they were agreed before the pilot "
        "started."
    )


# ---- rendering -------------------------------------------------------------------

_BANNER = {
    "GO": ("#dbe9f6", "#08306b"),
    "NO-GO": ("#fbdccb", "#7f2704"),
    "EXTEND": ("#fdf0c8", "#713f12"),
}


def _esc(value: Any) -> str:
    import html

    return html.escape(str(value), quote=True)


def _section_ref(reason: Any, linked: bool) -> str:
    where = PHASE_TITLES.get(reason.phase, reason.phase)
    label = f"{where}, {reason.section}" if reason.section else where
    if not linked or reason.phase not in PHASE_PAGES:
        return f'<span style="color:#444">(detail: {_esc(label)})</span>'
    href = phase_link(reason.phase, reason.section)
    return f'<a href="{_esc(href)}">detail: {_esc(label)}</a>'


def _explain(terms: Sequence[str], seen: set[str]) -> str:
    """One-line explanations of the terms not yet explained on the page."""
    new = [t for t in dict.fromkeys(terms) if t not in seen and t in GLOSSARY]
    seen.update(new)
    return "".join(
        f'<div style="font-size:12px;color:#444;margin-top:2px"><i>{_esc(t)}</i>: '
        f"{_esc(GLOSSARY[t])}.</div>"
        for t in new
    )


#: The most bullets the go/no-go page lists (the gate's recorded ``reasons`` keep five).
PAGE_REASONS = 12

#: The most words of a finding's sentence a bullet shows; the full text is on its phase page.
_BULLET_WORDS = 28


def _first_sentence(text: str, most: int = _BULLET_WORDS) -> str:
    """The first sentence of ``text``, cut at ``most`` words (with an ellipsis)."""
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z])", text)
    first = text[: m.start()] if m else text
    words = first.split()
    return " ".join(words[:most]) + (" ..." if len(words) > most else "")


def page_reasons(decision: Any, limit: int = PAGE_REASONS) -> list[Any]:
    """The go/no-go page's bullets: the gate's reasons, with one bullet per blocking finding.

    The gate (:meth:`GateDecision.reasons`) groups findings of one kind and merges what
    does not fit its five into one "N more reasons" item with a single link. Here each
    blocking finding gets its own bullet (its headline, its first sentence cut at
    :data:`_BULLET_WORDS` words, and the link
    to its own phase page's section), in the gate's order: missed KPIs, the blocking
    findings, KPIs not yet settled, missing phases, and for a GO what was met. Past
    ``limit`` bullets the last one names how many more, linking to the first of them.
    """
    import dataclasses

    from pilot_lib.analysis.gate import Reason, plural_text

    blocking = list(getattr(decision, "blocking", []) or [])
    if not dataclasses.is_dataclass(decision) or not blocking:
        items = list(decision.reasons(limit=1000))
    else:
        base = list(dataclasses.replace(decision, blocking=[]).reasons(limit=1000))
        n_failed = sum(1 for r in base if r.phase == "kpi_baselining" and "missed" in r.headline)
        per_finding = []
        for f in blocking:
            own = dataclasses.replace(decision, blocking=[f]).reasons(limit=1000)
            extra = [r for r in own if r not in base]
            per_finding += [
                dataclasses.replace(r, detail=_first_sentence(plural_text(r.detail)))
                for r in extra[:1]
            ]
        items = base[:n_failed] + per_finding + base[n_failed:]
        items = [
            r for r in items if not (decision.decision != "GO" and "Nothing blocks" in r.headline)
        ]
    items = [dataclasses.replace(r, detail=plural_text(r.detail)) for r in items]
    if limit < 1 or len(items) <= limit:
        return items[: max(limit, 0)]
    kept, rest = items[: limit - 1], items[limit - 1 :]
    return [
        *kept,
        Reason(
            f"{len(rest):,} more reasons",
            "; ".join(r.headline for r in rest) + ".",
            rest[0].phase,
            rest[0].section,
        ),
    ]


def board_top(
    decision: Any,
    pilot: Pilot,
    output_dir: str | Path | None,
    integrity_warnings: Sequence[str] = (),
    integrity_notes: Sequence[str] = (),
    version: str | None = None,
) -> str:
    """The top of the go/no-go page, as HTML.

    The decision (and the interim label), the reasons as bullets, one per blocking
    finding (:func:`page_reasons`, at most :data:`PAGE_REASONS`), each with a link to
    its phase page section when ``output_dir`` is a recorded run, a one-line
    explanation of each technical term at its first use, then the data-coverage
    line, the run line (date, id, pilot window, workbook version) and the seal
    status. Every text from a file is HTML-escaped.
    """
    from pilot_lib import __version__
    from pilot_lib.report.notebook import INTERIM_LABEL

    bg, fg = _BANNER[decision.decision]
    info = run_info(output_dir)
    seen: set[str] = set()
    items = []
    for r in page_reasons(decision):
        explain = _explain([t for t in (*r.terms, *terms_in([r.detail])) if t in GLOSSARY], seen)
        items.append(
            f'<li style="margin:6px 0"><b>{_esc(r.headline)}.</b> {_esc(r.detail)} '
            f"{_section_ref(r, info.recorded)}{explain}</li>"
        )
    interim = (
        f'<div style="font-size:15px;font-weight:700;margin-bottom:4px">{_esc(INTERIM_LABEL)}</div>'
        if getattr(decision, "interim", False)
        else ""
    )
    w = pilot.pilot_window
    sound, seal = seal_status(integrity_warnings, integrity_notes)
    seal_style = "" if sound else "font-weight:700;color:#7f1d1d"
    run_line = (
        f"{info.text()}; pilot window {_day(w.start)} to {_day(w.end)} "
        f"({w.weeks:.0f} weeks); workbook version {version or __version__}"
    )
    coverage = _explain(terms_in([decision.coverage_line]), seen)
    line = readable_coverage(str(decision.coverage_line))
    label = "Data coverage:"
    rest = line[len(label) :].lstrip() if line.startswith(label) else line
    coverage_html = f"<b>{label}</b> {_esc(rest)}"
    return (
        '<div class="tex2jax_ignore mathjax_ignore board-summary" '
        'style="border:1px solid #ccc;border-radius:6px;overflow:hidden">'
        f'<div style="background:{bg};color:{fg};padding:16px 22px">{interim}'
        '<div style="font-size:13px;text-transform:uppercase;letter-spacing:.08em">'
        "Go / no-go decision</div>"
        f'<div style="font-size:40px;font-weight:800;line-height:1.2">{_esc(decision.decision)}</div>'
        f'<div style="font-size:17px;font-weight:600">{_esc(decision.title)}</div></div>'
        '<div style="padding:10px 22px 14px 22px;color:#111;font-size:15px;line-height:1.45">'
        '<div style="font-weight:700;margin-top:4px">Why</div>'
        f'<ul style="margin:4px 0 10px 0;padding-left:22px">{"".join(items)}</ul>'
        f'<p style="margin:6px 0">{coverage_html}</p>'
        f"{coverage}"
        f'<p style="margin:6px 0"><b>Run:</b> {_esc(run_line)}</p>'
        f'<p style="margin:6px 0;{seal_style}"><b>Thresholds:</b> {_esc(seal)}</p>'
        "</div></div>"
    )


#: Internal names in the data-coverage line, as a reader says them.
_COVERAGE_WORDS = {
    "within the data_sufficiency limits": "within the agreed data-sufficiency limits",
    "data_sufficiency": "data-sufficiency",
    "drill_events": "drill events",
}


def readable_coverage(line: str) -> str:
    """The data-coverage line without internal names (``drill_events`` -> ``drill events``)."""
    for raw, words in _COVERAGE_WORDS.items():
        line = line.replace(raw, words)
    return line


def glossary_html(texts: Iterable[str], always: Sequence[str] = ("95% interval",)) -> str:
    """A short glossary of the :data:`GLOSSARY` terms ``texts`` use (plus ``always``), as HTML."""
    terms = list(dict.fromkeys([*always, *terms_in(texts)]))
    terms = [t for t in GLOSSARY if t in terms]
    rows = "".join(f"<dt><b>{_esc(t)}</b></dt><dd>{_esc(GLOSSARY[t])}.</dd>" for t in terms)
    return f'<dl class="glossary" style="line-height:1.4">{rows}</dl>'


def page_texts(decision: Any) -> list[str]:
    """Every sentence the go/no-go page shows from the decision, for :func:`glossary_html`."""
    texts = [decision.rationale, decision.coverage_line]
    texts += [f"{r.headline} {r.detail}" for r in page_reasons(decision)]
    texts += [v.reason for v in decision.verdicts]
    texts += [f.message for f in (*decision.blocking, *decision.other_findings)]
    return texts


def sign_off_html(pilot: Pilot, decision: Any) -> str:
    """The sign-off block: one row per team member (name, role, decision, date, signature).

    Members come from the pilot file's ``team``; each required role the team
    lacks (:data:`pilot_lib.config.REQUIRED_ROLES`) gets a row with a blank
    name, so the gap shows on paper too. Decision, date and signature are left
    blank for the meeting; the decision column names the gate's recommendation.
    """
    rows = []
    members = list(pilot.team)
    covered = {m.role for m in members}
    for m in members:
        rows.append((m.name, m.role_label, m.title or ""))
    for role in REQUIRED_ROLES:
        if role not in covered:
            rows.append(("", REQUIRED_ROLES[role], "not named in the pilot file"))
    cell = "border:1px solid #999;padding:10px 8px;text-align:left;vertical-align:top"
    head = "".join(
        f'<th style="{cell};background:#f2f2f2">{h}</th>'
        for h in ("Name", "Role", "Decision (GO / NO-GO / EXTEND)", "Date", "Signature")
    )
    body = "".join(
        f'<tr><td style="{cell}">{_esc(name)}'
        + (f'<div style="font-size:12px;color:#444">{_esc(note)}</div>' if note else "")
        + f'</td><td style="{cell}">{_esc(role)}</td>'
        f'<td style="{cell};min-width:9em"></td><td style="{cell};min-width:7em"></td>'
        f'<td style="{cell};min-width:12em"></td></tr>'
        for name, role, note in rows
    )
    return (
        '<div class="tex2jax_ignore mathjax_ignore sign-off">'
        f"<p>The gate recommends <b>{_esc(decision.decision)}</b>. Each member of the "
        "cross-functional team records their own decision and signs.</p>"
        f'<table style="border-collapse:collapse;width:100%"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )

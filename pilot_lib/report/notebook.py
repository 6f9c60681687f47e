"""Glue for the phase notebooks: find the pilot, load it, show tables safely, save the result.

The notebooks stay thin: every figure comes from a ``pilot_lib`` function; this
module only resolves paths, renders tables deterministically and escapes text
that came from data before it reaches HTML.
"""

from __future__ import annotations

import functools
import hashlib
import html
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pilot_lib.config import Pilot, load_pilot, pilot_file_path
from pilot_lib.results import PHASES, read_phase_result, write_phase_result

__all__ = [
    "PhaseContext",
    "escape",
    "escape_md",
    "find_pilot",
    "live_output",
    "md",
    "open_phase",
    "repo_root",
    "safe_update",
    "styled",
    "status_table",
    "table",
]


def repo_root() -> Path | None:
    """The workbook checkout this package was installed from (editable installs), if any."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() and (here / "pyproject.toml").is_file() else None


def find_pilot(pilot: str | os.PathLike[str]) -> Path:
    """Resolve a pilot folder or file given relative to wherever the kernel runs.

    papermill starts the kernel in the caller's working directory, JupyterLab in
    the notebook's folder. A relative ``pilot`` is tried against the working
    directory, then the ``notebooks/`` folder, then the checkout root, so
    ``../data/pilots/x`` (from ``notebooks/``) and ``data/pilots/x`` (from the
    root) both work; the first that holds a pilot file wins. Returns the absolute
    path of the pilot file. Raises :class:`pilot_lib.config.PilotFileError`
    listing every path tried when none does.
    """
    raw = Path(pilot).expanduser()
    candidates = [raw if raw.is_absolute() else Path.cwd() / raw]
    if not raw.is_absolute():
        root = repo_root()
        if root is not None:
            candidates += [root / "notebooks" / raw, root / raw]
    for cand in candidates:
        if pilot_file_path(cand).is_file():
            return pilot_file_path(cand).resolve()
    tried = ", ".join(str(pilot_file_path(c)) for c in candidates)
    from pilot_lib.config import PilotFileError, Problem

    raise PilotFileError(
        str(pilot),
        [
            Problem(
                str(pilot),
                "pilot",
                str(pilot),
                f"no pilot.yaml found; tried {tried}. Pass a pilot folder holding "
                "pilot.yaml, or the pilot file itself, absolute or relative to the working "
                "directory",
            )
        ],
    )


def escape(value: Any) -> str:
    """HTML-escape a value that came from data before it goes into HTML."""
    return html.escape(str(value), quote=True)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}#|$~])")


def escape_md(value: Any) -> str:
    """Escape a value from data for Markdown: HTML-escaped, and Markdown/math characters
    backslash-escaped, so ``$10,000 ... $2.50`` is not typeset as math and ``low_confidence``
    is not half in italics.

    Quotes are left alone: Markdown text needs no escaping for them, and an entity
    such as ``&#x27;`` would have its ``#`` backslash-escaped and show up literally
    (``Dana&#x27;s`` instead of ``Dana's``).
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(value), quote=False))


class _NoData:
    """Stands in for a missing number in :func:`md`: formats as "no data" under any spec."""

    def __format__(self, spec: str) -> str:
        return "no data"

    def __str__(self) -> str:
        return "no data"


def _md_value(value: Any) -> Any:
    if value is None:
        return _NoData()
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        try:
            finite = math.isfinite(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return escape_md(value)
        return value if finite else _NoData()
    return escape_md(_plural(str(value)))


def _plural(text: str) -> str:
    """``2 recorded threshold change(s)`` as ``2 recorded threshold changes``: no "(s)" reaches
    a reader (:func:`pilot_lib.analysis.gate.plural_text`)."""
    from pilot_lib.analysis.gate import plural_text

    return plural_text(text) if "(s)" in text else text


def md(template: str, **values: Any) -> Any:
    """A Markdown display object with every ``values`` item escaped for Markdown.

    ``md("Top pick: **{name}**", name=row.name)``: a workflow called
    ``<script>...`` shows as text, never runs. Numbers (Python or numpy) keep
    their format spec (``{rate:.1%}``); a NaN, an infinity or ``None`` shows as
    "no data" whatever the spec, never as ``nan``.
    Text with a dollar sign comes back as HTML (:func:`markdown`).
    """
    safe = {k: _md_value(v) for k, v in values.items()}
    return markdown(template.format(**safe))


def markdown(text: str) -> Any:
    """A display object for Markdown text whose data values are already escaped.

    JupyterLab 4 typesets ``\\$14.50 ... \\$12.46`` in a Markdown output as maths
    (the backslash does not stop it), so text holding a dollar sign is rendered to
    HTML here (mistune, nbconvert's renderer) and wrapped in a ``mathjax_ignore``
    element (:func:`_no_math`), which MathJax skips: the reader sees the amounts as
    written. Text without a dollar sign stays a Markdown object.
    """
    from IPython.display import HTML, Markdown

    if "$" not in text:
        return Markdown(text)
    import mistune

    return HTML(_no_math(mistune.html(text).strip(), scroll=False))


#: Result columns as a reader names them (with their units), where spelling out the name is
#: not enough; any other ``snake_case`` name is shown with spaces (:func:`reader_label`).
READER_LABELS = {
    "value": "",
    "cost_per_decision_usd": "cost per decision (US dollars)",
    "model_cost_per_decision_usd": "model cost per decision (US dollars)",
    "low_iid": "low, decisions as independent",
    "high_iid": "high, decisions as independent",
    "total_usd": "total spend (US dollars)",
    "monthly_usd": "monthly budget (US dollars)",
    "peak_month_to_date_usd": "highest month-to-date spend (US dollars)",
    "projected_month_usd": "month-end projection (US dollars)",
    "fallback_saving_usd": "saving with the fallback (US dollars)",
    "projected_month_with_fallback_usd": "month-end projection with the fallback (US dollars)",
    "first_over_pace_day": "first day over pace",
    "first_breach_day": "first day over budget",
    "p50_ms": "median latency (ms)",
    "p95_ms": "95th percentile latency (ms)",
    "p50 ms": "median latency (ms)",
    "p95 ms": "95th percentile latency (ms)",
    "open_hung": "hung",
    "open_escalated": "escalated",
    "open_degraded": "degraded",
    "open_failed": "failed",
    "circuit_open_attempts": "attempts while open",
    "circuit_open": "attempts while open",
    "attempts_sent": "attempts sent",
    "n_affected": "actions affected",
    "n_followed_new": "followed the new thresholds",
    "n_followed_old": "followed the old thresholds",
    "lag_decisions": "lag (decisions)",
    "lag_hours": "lag (hours)",
    "first_new_action_id": "first action under the new thresholds",
    "first_new_at": "first followed at",
    "max_amount": "largest amount (US dollars)",
}

_UNIT_SUFFIXES = (
    ("_usd", " (US dollars)"),
    ("_ms", " (ms)"),
    ("_minutes", " (minutes)"),
    ("_hours", " (hours)"),
    ("_seconds", " (seconds)"),
)


def reader_label(column: Any, dimension: str = "") -> str:
    """A result column's name as a table header: ``cost_per_decision_usd`` -> "cost per decision
    (US dollars)", ``low_iid`` -> "low, decisions as independent", any other ``snake_case``
    name with spaces (``share_of_cost`` -> "share of cost"). A name with no underscore is kept.

    ``dimension`` names the ``value`` column of a breakdown (``agent_id`` -> "agent id").
    """
    name = str(column)
    if name in READER_LABELS:
        label = READER_LABELS[name]
        return label or (dimension.replace("_", " ") if dimension else name)
    if "_" not in name:
        return name
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " ").strip() + unit
    return name.replace("_", " ").strip()


def _reader_columns(frame: pd.DataFrame, *specs: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """``frame`` with reader labels for headers, and each spec (column -> anything) re-keyed."""
    labels = {c: reader_label(c) for c in frame.columns}
    if len(set(labels.values())) < len(labels):  # two names would read the same: keep them
        labels = {c: str(c) for c in frame.columns}
    out = frame.rename(columns=labels)
    return (out, *({labels.get(k, k): v for k, v in (spec or {}).items()} for spec in specs))


def styled(
    frame: pd.DataFrame,
    caption: str | None = None,
    formats: Mapping[str, str | Callable[[Any], str]] | None = None,
    highlight: Mapping[str, Mapping[str, str]] | None = None,
) -> Any:
    """A pandas Styler with a stable id, escaped cells and no index.

    - The table id derives from the caption and columns, not a random uuid, so
      stored notebook outputs do not change from run to run (nbval).
    - ``escape="html"``: values from data (cells and column headers) are shown as text;
      missing values show as "no data".
    - ``highlight``: ``{column: {cell value: css}}`` e.g. colour a status column.
    - Headers are reader labels (:func:`reader_label`): no raw ``snake_case`` name shows;
      ``formats`` and ``highlight`` keep naming the result's columns.
    """
    frame, formats, highlight = _reader_columns(frame, formats, highlight)
    key = hashlib.sha1((str(caption) + "|".join(map(str, frame.columns))).encode()).hexdigest()[:8]
    sty = (
        frame.style.set_uuid(f"t{key}")
        .hide(axis="index")
        .format(formats or {}, escape="html", na_rep="no data")
        .format_index(escape="html", axis=1)
    )
    if caption:
        sty = sty.set_caption(escape(caption))
    for col, colours in (highlight or {}).items():
        if col in frame.columns:
            sty = sty.map(lambda v, c=colours: c.get(v, ""), subset=[col])
    return sty.set_table_styles(
        [
            {"selector": "th", "props": "text-align: left; padding: 4px 10px;"},
            {"selector": "td", "props": "padding: 4px 10px; text-align: left;"},
            {
                "selector": "caption",
                "props": "caption-side: top; font-weight: 600; text-align: left;",
            },
        ]
    )


def table(
    frame: pd.DataFrame,
    caption: str | None = None,
    formats: Mapping[str, str | Callable[[Any], str]] | None = None,
    highlight: Mapping[str, Mapping[str, str]] | None = None,
) -> Any:
    """:func:`styled` rendered to an HTML display object.

    A Styler's plain-text repr carries a memory address that changes every run;
    the HTML object's does not, so stored outputs stay comparable (nbval).
    """
    from IPython.display import HTML

    return HTML(_no_math(styled(frame, caption, formats, highlight).to_html()))


def _no_math(html_text: str, scroll: bool = True) -> str:
    """Wrap HTML so MathJax (JupyterLab, the HTML export) leaves dollar amounts alone.

    ``scroll``: a table too wide for the page scrolls sideways on screen (never in
    print: the print rules set overflow visible).
    """
    style = ' style="max-width:100%;overflow-x:auto"' if scroll else ""
    return f'<div class="tex2jax_ignore mathjax_ignore"{style}>{html_text}</div>'


def status_table(frame: pd.DataFrame, caption: str | None = None, column: str = "status") -> Any:
    """:func:`table` with a status-like column coloured (PASS/FAIL, bands, severities)."""
    return table(frame, caption, highlight={column: STATUS_COLOURS})


#: Colour-blind-safe tints (blue, yellow, vermillion, after Okabe-Ito); every cell also
#: carries its word, so no reader depends on the colour.
STATUS_COLOURS = {
    "PASS": "background-color: #dbe9f6; color: #08306b; font-weight: 600",
    "FAIL": "background-color: #fbdccb; color: #7f2704; font-weight: 600",
    "INCONCLUSIVE": "background-color: #fdf0c8; color: #713f12; font-weight: 600",
    # issue 22: a PASS that could flip, a miss the interval does not show: the amber of
    # "not settled", the word says which
    "PASS (fragile)": "background-color: #fdf0c8; color: #08306b; font-weight: 600",
    "FAIL (not shown)": "background-color: #fdf0c8; color: #7f2704; font-weight: 600",
    "stable": "background-color: #dbe9f6",
    "moderate": "background-color: #fdf0c8",
    "significant": "background-color: #fbdccb; font-weight: 600",
    "blocking": "background-color: #fbdccb; font-weight: 600",
    "warning": "background-color: #fdf0c8",
    "info": "",
    "pass": "background-color: #dbe9f6",
    "fail": "background-color: #fbdccb; font-weight: 600",
}


@dataclass
class PhaseContext:
    """What a phase notebook works with: the pilot file, its data, and where results go."""

    phase: str
    pilot: Pilot
    output_dir: Path | None
    data: Any = None  # pilot_lib.ingest.contracts.PilotData, from the checked evidence store
    store: Any = None  # pilot_lib.ingest.store.StoreInfo: where the store is, built or reused

    @property
    def store_dir(self) -> Path:
        """The checked evidence store: ``<output_dir>/store``, else the analyst's cache."""
        if self.output_dir is not None:
            return self.output_dir / "store"
        from pilot_lib.ingest.store import default_store_dir

        return default_store_dir(self.pilot)

    def load_data(self) -> Any:
        """Open the checked evidence store read-only, building it first when it is
        missing or stale (the pilot file or an input file changed)."""
        from pilot_lib.ingest.store import ensure_store, open_store

        self.store = ensure_store(self.pilot, self.store_dir, quarantine_dir=self.quarantine_dir)
        self.data = open_store(self.store.path, self.pilot)
        return self.data

    def store_note(self) -> Any:
        """One sentence: whether the checked evidence store was built now or reused."""
        if self.store is None:
            return md("_No data was loaded in this notebook._")
        return md("{text}", text=self.store.note())

    @property
    def quarantine_dir(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / "quarantine"

    @property
    def interim(self) -> bool:
        """Whether this run is an interim look (``statistics: interim`` or ``run --interim``)."""
        return self.pilot.statistics.interim

    def header(self) -> Any:
        """Markdown header: pilot, owner, scope, window, and the pilot file's fingerprint.

        An interim look starts with the label :data:`INTERIM_LABEL` and what it means.
        """
        p = self.pilot
        return md(
            (INTERIM_HEADER + "  \n" if self.interim else "")
            + "**Pilot:** {title} (`{name}`)  \n**Owner:** {owner}, {unit}  \n**Scope:** {scope}  \n"
            "**Pilot window:** {start} to {end} ({weeks:.0f} weeks); baseline {bstart} to {bend}  \n"
            "**Pilot file fingerprint:** `{sha}` (changes with any edit to the file)",
            title=p.title,
            name=p.name,
            owner=p.owner,
            unit=p.business_unit,
            scope=p.scope,
            start=p.pilot_window.start,
            end=p.pilot_window.end,
            weeks=p.pilot_window.weeks,
            bstart=p.baseline_window.start,
            bend=p.baseline_window.end,
            sha=p.file_hash[:16],
        )

    def data_quality(self) -> pd.DataFrame:
        """Rows read, valid and quarantined per data set (empty when no data was loaded)."""
        if self.data is None:
            return pd.DataFrame(columns=["data set", "rows", "valid", "quarantined"])
        rep = self.data.report()
        rep = rep.drop(columns=[c for c in ("source",) if c in rep.columns])
        return counts_formatted(rep)

    def quarantine_reasons(self) -> pd.DataFrame:
        if self.data is None:
            return pd.DataFrame(columns=["data set", "rule", "rows"])
        return counts_formatted(self.data.quarantine_summary())

    def save(self, result: Mapping[str, Any]) -> Path | None:
        """Write this phase's result JSON into ``output_dir`` (nothing when it is None)."""
        return write_phase_result(self.phase, self.pilot, result, self.output_dir)

    def earlier(self, phase: str) -> dict[str, Any] | None:
        """An earlier phase's result from ``output_dir``, or None when it was not run there."""
        return read_phase_result(phase, self.output_dir, self.pilot)


#: The label every page of an interim run carries.
INTERIM_LABEL = "INTERIM look (anytime-valid intervals)"

INTERIM_HEADER = (
    f"**{INTERIM_LABEL}:** a look before the pilot window ends. The go/no-go gate judges the "
    "KPIs with 95% confidence sequences, valid however often the team looks; the final run at "
    "the window's end uses the fixed 95% intervals."
)


def open_phase(
    phase: str,
    pilot: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    load_data: bool = True,
    interim: bool | None = None,
) -> PhaseContext:
    """Resolve and load the pilot for one phase notebook.

    ``pilot`` is a pilot folder or file (see :func:`find_pilot`); ``output_dir``
    is where the phase result and quarantine files go (``None``: write nothing).
    With ``load_data`` the pilot's checked evidence store is opened read-only
    (``<output_dir>/store``, or the analyst's cache without ``output_dir``); it is
    built first when it is missing or the pilot file or an input file changed, and
    reused otherwise (``ctx.store_note()`` says which).

    ``interim``: ``True`` for an interim look (``pilot-workbook run --interim``
    passes it), ``False`` for the final run; ``None`` keeps the pilot file's
    ``statistics: interim``. The header of every page says when a run is interim.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {list(PHASES)}")
    loaded = load_pilot(find_pilot(pilot))
    if interim is not None and bool(interim) != loaded.statistics.interim:
        loaded = loaded.model_copy(
            update={"statistics": loaded.statistics.model_copy(update={"interim": bool(interim)})}
        )
    out = None if output_dir in (None, "") else Path(output_dir).expanduser().resolve()
    ctx = PhaseContext(phase=phase, pilot=loaded, output_dir=out)
    if load_data:
        ctx.load_data()
    return ctx


# ---------------------------------------------------------------------------
# Presentation helpers used by the phase notebooks. They format results that
# the analysis modules computed; none computes a statistic of its own.
# ---------------------------------------------------------------------------


def saved_note(path: Path | None) -> Any:
    """A one-line note saying whether this page's figures were recorded with the run.

    No file name or path: the page is read by people who never open the run folder.
    """
    if path is None:
        return md(
            "_Figures not saved: this page was run on its own, not as a recorded run "
            "(`pilot-workbook run` records them)._"
        )
    return md("_The figures on this page are recorded with the run._")


def counts_formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every integer column shown with thousands separators (``20,000``)."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_integer_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].map(_count)
    return out


def _pct(x: Any, digits: int = 1) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "no data"
    return "no data" if f != f else f"{f * 100:.{digits}f}%"


def _num(x: Any, fmt: str = "{:,.2f}") -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "no data"
    if f != f:
        return "no data"
    if f in (float("inf"), float("-inf")):
        return "never"
    return fmt.format(f)


def _count(x: Any) -> str:
    """A count with thousands separators; "no data" when it is missing."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "no data"
    return "no data" if not math.isfinite(f) else f"{int(f):,}"


def _interval(est: Any, low: Any, high: Any) -> str:
    text = _pct(est)
    if text == "no data":
        return text
    return f"{text} ({_pct(low)} to {_pct(high)})"


def _intervals(frame: pd.DataFrame, est: str, low: str, high: str) -> list[str]:
    """One "estimate (low to high)" string per row, from three columns of ``frame``."""
    return [
        _interval(e, lo, hi) for e, lo, hi in zip(frame[est], frame[low], frame[high], strict=True)
    ]


def paragraphs(text: str) -> Any:
    """Plain text (from data) as escaped Markdown paragraphs."""
    return markdown("\n\n".join(escape_md(_plural(p)) for p in text.split("\n\n")))


def threshold_value(pilot: Pilot, kpi: str) -> float | None:
    """The agreed threshold value for ``kpi``, or None when the pilot file sets none."""
    th = pilot.threshold(kpi)
    return None if th is None else th.value


def findings_view(findings: list[Any], empty: str = "No findings.") -> Any:
    """Findings as a coloured table, blocking first; a sentence when there are none."""
    from pilot_lib.analysis.findings import findings_frame

    if not findings:
        return md("_{text}_", text=empty)
    return status_table(readable_findings(findings_frame(list(findings))), "Findings", "severity")


#: Phase keys as readers name them.
PHASE_NAMES = {
    "use_case_scoring": "use-case scoring",
    "kpi_baselining": "KPI baselining",
    "drift_analysis": "drift analysis",
    "incident_drill_review": "incident drill review",
    "go_no_go_summary": "go / no-go",
}


def provenance_view(provenance: pd.DataFrame) -> pd.DataFrame:
    """Where the go/no-go page's figures came from, with the phases named in words."""
    out = provenance.copy()
    if "phase" in out:
        out["phase"] = out["phase"].map(lambda p: PHASE_NAMES.get(p, p))
    return out


def readable_findings(frame: pd.DataFrame) -> pd.DataFrame:
    """A findings table for readers: phase names in words, counts in the right number
    (``1 action``, not ``1 action(s)``; :func:`pilot_lib.analysis.gate.plural_text`)."""
    from pilot_lib.analysis.gate import plural_text

    out = frame.copy()
    if "phase" in out:
        out["phase"] = out["phase"].map(lambda p: PHASE_NAMES.get(p, p))
    if "finding" in out:
        out["finding"] = out["finding"].map(lambda t: plural_text(str(t)))
    return out


# ---- phase 1 ----------------------------------------------------------------


def ranking_view(scored: pd.DataFrame | None) -> pd.DataFrame:
    """The candidate ranking as display strings."""
    cols = [
        "rank",
        "candidate",
        "impact",
        "data",
        "repetitiveness",
        "readiness",
        "weighted total",
        "qualifies",
        "fails on",
        "novelty trap",
        "expected",
        "needed",
    ]
    if scored is None or scored.empty:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(
        {
            "rank": scored["rank"].astype(int),
            "candidate": scored["name"],
            "impact": scored["impact"].astype(int),
            "data": scored["data"].astype(int),
            "repetitiveness": scored["repetitiveness"].astype(int),
            "readiness": scored["readiness"].astype(int),
            "weighted total": scored["weighted_total"].map(lambda x: f"{x:.2f}"),
            "qualifies": scored["qualifies"].map({True: "yes", False: "no"}),
            "fails on": scored["fails_on"].fillna(""),
            "novelty trap": scored["novelty_trap"].map({True: "yes", False: ""}),
            "expected": scored["expected_decisions"].map(lambda x: f"{x:,.0f}"),
            "needed": scored["needed_decisions"].map(lambda x: f"{x:,.0f}"),
        }
    )[cols]


def use_case_story(review: Any) -> Any:
    """Why the top pick qualifies and why each other candidate does not, in words.

    Phase 1's warnings about the pilot itself (a required team role nobody
    holds) come first, as **Warning:** lines.
    """

    warnings = [
        f"**Warning:** {escape_md(f.message)}" for f in getattr(review, "findings", None) or []
    ]
    scored = review.scored
    if scored is None or scored.empty:
        why = escape_md("; ".join(review.missing) or "empty data set")
        return markdown("\n\n".join([*warnings, f"_No candidates to compare: {why}_"]))
    lines = [w + "\n" for w in warnings]
    top = scored[scored["qualifies"].astype(bool)]
    if top.empty:
        lines.append(
            "**No candidate qualifies on all four criteria at once.** Do not start a pilot on these."
        )
    else:
        first = top.iloc[0]
        lines.append(f"**Top pick: {escape_md(first['name'])}.** {escape_md(first['why'])}")
    for _, r in scored.iterrows():
        if not top.empty and r["name"] == top.iloc[0]["name"]:
            continue
        trap = " **Novelty trap.**" if r["novelty_trap"] else ""
        lines.append(f"- {escape_md(r['name'])}: {escape_md(r['why'])}{trap}")
    return markdown("\n".join(lines))


def build_view(build: Any) -> pd.DataFrame:
    s = build.scores
    out = pd.DataFrame(
        {
            "rank": s["rank"].astype(int),
            "option": s["option"],
            "score": s["score"].map(lambda x: f"{x:.1f}"),
        }
    )
    for col in [c for c in s.columns if c.endswith("_points")]:
        out[col.removesuffix("_points").replace("_", " ")] = s[col].map(lambda x: f"{x:.1f}")
    out["summary"] = s["summary"]
    return out


def sensitivity_view(build: Any) -> pd.DataFrame:
    s = build.sensitivity
    return pd.DataFrame(
        {
            "dimension": s["dimension"].str.replace("_", " "),
            "weight": s["weight"].map(lambda x: f"{x:.2f}"),
            "decrease before a flip": s["decrease_to_flip"].map(_num),
            "increase before a flip": s["increase_to_flip"].map(_num),
            "new top option": [
                down if isinstance(down, str) else up if isinstance(up, str) else ""
                for down, up in zip(s["new_top_down"], s["new_top_up"], strict=True)
            ],
        }
    )


def safe_update(update: Callable[..., None]) -> Callable[..., None]:
    """Wrap a what-if widget's update function so it never raises.

    An exception escaping an update lands in the Output widget as a traceback
    the analyst cannot act on. Instead the error is printed as one plain line
    naming what could not be recomputed.
    """

    @functools.wraps(update)
    def safe(*args: Any, **kwargs: Any) -> None:
        try:
            update(*args, **kwargs)
        except Exception as exc:
            print(f"Could not recompute this what-if: {exc}")

    return safe


def live_output(update: Callable[..., None], controls: Mapping[str, Any]) -> Any:
    """An Output widget showing ``update(**values)``, redrawn whenever a control changes.

    A headless-safe ``ipywidgets.interactive_output``. The first view, drawn
    while the cell runs, is captured and stored in the widget's state directly
    instead of being written through ``with output:``. That context makes
    nbclient (papermill, nbconvert, nbval) mimic a frontend and send messages
    back on the kernel's shell channel while it waits for the cell's reply on
    that same channel; the reply can then be missed until the cell timeout, or
    forever under papermill's default of no timeout (jupyter/nbclient#312,
    nteract/papermill#723). Later redraws happen in a live frontend, where
    ``with output:`` is safe. ``update`` is wrapped in :func:`safe_update`, so it
    never raises.
    """
    import ipywidgets as w
    from IPython.utils.capture import capture_output

    safe = safe_update(update)
    out = w.Output()

    def values() -> dict[str, Any]:
        return {name: control.value for name, control in controls.items()}

    def redraw(change: Any = None) -> None:
        with out:
            out.clear_output(wait=True)
            safe(**values())

    for control in controls.values():
        control.observe(redraw, "value")
    with capture_output() as captured:
        safe(**values())
    first: list[dict[str, Any]] = []
    for name, text in (("stdout", captured.stdout), ("stderr", captured.stderr)):
        if text:
            first.append({"output_type": "stream", "name": name, "text": text})
    for shown in captured.outputs:
        first.append(
            {"output_type": "display_data", "data": shown.data, "metadata": shown.metadata}
        )
    out.outputs = tuple(first)
    return out


#: Slider labels at their own width, not cut to ipywidgets' default 100 px.
_LABEL_STYLE = {"description_width": "initial"}


def labelled(control: Any, label: str) -> Any:
    """``control`` laid out for reading: its label on a line of its own above it, and the
    control as wide as the output area (a 1,068 px track at 1,280 px, not the 300 px
    default whose track the label ate: 25 px for 0-200 dollars).

    ``label`` is code text, not data; it is HTML-escaped all the same. Returns a VBox.
    """
    import ipywidgets as w

    control.description = ""
    control.style.description_width = "0px"
    control.layout = w.Layout(width="100%")
    head = w.HTML(f"<b>{escape(label)}</b>", layout=w.Layout(margin="6px 0 0 0"))
    return w.VBox([head, control], layout=w.Layout(width="100%"))


def what_if(children: Sequence[Any], summary: str) -> Any:
    """The widget of a what-if section: ``children`` in a full-width VBox that also shows as
    a sentence where no live kernel draws it.

    A committed notebook opened before any run has no widget models; JupyterLab then
    shows the output's plain text, which for a bare VBox is
    ``VBox(children=(FloatSlider(value=62.0, ...``. Here the plain text and an HTML
    alternative say what the section does and that it needs a running kernel.
    """
    import ipywidgets as w

    class WhatIf(w.VBox):  # type: ignore[misc]
        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            data = super()._repr_mimebundle_(**kwargs)
            text = f"What-if: {summary} Run the notebook in a live kernel to use it."
            if isinstance(data, tuple):
                data = data[0]
            data = dict(data or {})
            data["text/plain"] = text
            data["text/html"] = f"<p><i>{escape(text)}</i></p>"
            return data

    return WhatIf(list(children), layout=w.Layout(width="100%"))


#: Pilot-file keys whose plain reading needs more than spaces for underscores.
_WIDGET_WORDS = {
    "impact": "Measurable business impact",
    "data": "Data availability and quality",
    "repetitiveness": "Process repetitiveness",
    "readiness": "Organizational readiness",
    "lock_in_exit": "Lock-in and exit",
}


def widget_label(key: str) -> str:
    """A pilot-file key as a what-if slider label: ``time_to_production`` -> "Time to production"."""
    if key in _WIDGET_WORDS:
        return _WIDGET_WORDS[key]
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def use_case_widgets(ctx: PhaseContext, review: Any) -> Any:
    """Sliders for the criterion weights, the minimum, and the build-vs-buy weights."""
    import ipywidgets as w
    from IPython.display import display

    from pilot_lib.analysis.scoring import CRITERIA, build_vs_buy, score_use_cases

    boxes = []
    if review.scored is not None:
        candidates = ctx.data.table("candidates")
        base = dict(review.settings)
        weights0 = base.get("weights") or dict.fromkeys(CRITERIA, 1.0)
        sliders = {
            c: w.FloatSlider(
                value=float(weights0[c]),
                min=0,
                max=3,
                step=0.25,
                readout_format=".2f",
            )
            for c in CRITERIA
        }
        sliders["minimum"] = w.IntSlider(value=int(base["minimum"]), min=1, max=5)
        labels = {c: f"Weight of {widget_label(c).lower()}" for c in CRITERIA}
        labels["minimum"] = "Minimum score on every criterion (1 to 5)"

        def rescore(minimum: int, **weights: float) -> None:
            if sum(weights.values()) <= 0:
                print("Give at least one criterion a weight above 0.")
                return
            settings = base | {"weights": weights, "minimum": minimum}
            display(table(ranking_view(score_use_cases(candidates, **settings)), "What-if ranking"))

        boxes.append(
            w.VBox(
                [
                    *(labelled(s, labels[k]) for k, s in sliders.items()),
                    live_output(rescore, sliders),
                ],
                layout=w.Layout(width="100%"),
            )
        )
    if review.build is not None:
        bvb = ctx.pilot.build_vs_buy
        bsliders = {
            d: w.FloatSlider(
                value=float(v),
                min=0,
                max=1,
                step=0.05,
                readout_format=".2f",
            )
            for d, v in bvb.weights.items()
        }

        def rebuild(**weights: float) -> None:
            if sum(weights.values()) <= 0:
                print("Give at least one dimension a weight above 0.")
                return
            display(table(build_view(build_vs_buy(bvb.options, weights)), "What-if build vs buy"))

        boxes.append(
            w.VBox(
                [
                    *(
                        labelled(s, f"Build vs buy: weight of {widget_label(d).lower()}")
                        for d, s in bsliders.items()
                    ),
                    live_output(rebuild, bsliders),
                ],
                layout=w.Layout(width="100%"),
            )
        )
    if not boxes:
        return md("_Nothing to re-weight._")
    return what_if(
        boxes,
        "sliders for the criterion weights, the minimum score and the "
        "build-vs-buy weights, with the ranking they give.",
    )


# ---- phase 2 ----------------------------------------------------------------


def escalation_view(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "reason": frame["reason"],
            "escalations": frame["escalations"].map(_count),
            "share of escalations": frame["share_of_escalations"].map(_pct),
            "rate per decision (95% CI)": _intervals(
                frame, "rate_per_decision", "rate_low", "rate_high"
            ),
        }
    )


def cost_view(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "component": frame["component"].str.replace("_", " "),
            "per decision": frame["per_decision_usd"].map(lambda x: _num(x, "${:,.3f}")),
            "share of cost": frame["share_of_cost"].map(_pct),
            "total over the window": frame["total_usd"].map(lambda x: _num(x, "${:,.0f}")),
        }
    )


def cost_widget(kpis: Any, pilot: Pilot) -> Any:
    """A slider for the loaded hourly review rate; shows the cost per decision at that rate."""
    import ipywidgets as w

    current = float(pilot.costs.review_hourly_rate_usd)
    rate = w.FloatSlider(
        value=current,
        min=0,
        max=max(200.0, 2 * current),
        step=1,
        readout_format=",.0f",
    )
    th = pilot.threshold("cost_per_decision")

    def show(hourly: float) -> None:
        cost = kpis.cost_per_decision_at(hourly)
        if not math.isfinite(cost):
            note = str(kpis.cost.get("note") or "")
            if not note.startswith("no data"):
                note = f"no data ({note or 'no decisions in the pilot window'})"
            print(f"Cost per decision at ${hourly:,.0f}/hour of review: {note}.")
            return
        verdict = "" if th is None else f" (threshold {th.comparator} ${th.value:,.2f})"
        print(
            f"At ${hourly:,.0f}/hour of review, a decision costs ${cost:,.2f}{verdict}; "
            f"manual handling costs ${pilot.costs.manual_cost_per_case_usd:,.2f} per case."
        )

    return what_if(
        [
            labelled(rate, "Loaded review cost (US dollars per hour, in steps of $1)"),
            live_output(show, {"hourly": rate}),
        ],
        "a slider for the reviewers' loaded hourly rate and the cost per decision at that rate.",
    )


# ---- phase 3 ----------------------------------------------------------------


def _day(x: Any) -> str:
    return "" if x is None or pd.isna(x) else f"{pd.Timestamp(x):%Y-%m-%d}"


def episodes_view(chart: Any) -> pd.DataFrame:
    cols = [
        "chart",
        "side",
        "first day",
        "last day",
        "days",
        "peak",
        "confirmed by the other chart",
        "still on at the end",
        "level",
    ]
    if chart is None or chart.episodes is None or chart.episodes.empty:
        return pd.DataFrame(columns=cols)
    e = chart.episodes[~chart.episodes["during_baseline"].astype(bool)]
    return pd.DataFrame(
        {
            "chart": e["chart"].str.replace("_", " "),
            "side": e["side"],
            "first day": e["start"].map(_day),
            "last day": e["end"].map(_day),
            "days": e["days"].map(_count),
            "peak": e["peak"].map(_pct),
            "confirmed by the other chart": e["confirmed"].map({True: "yes", False: "no"}),
            "still on at the end": e["ongoing"].map({True: "yes", False: ""}),
            "level": (
                e["level"].map(_EPISODE_LEVELS).fillna(e["level"])
                if "level" in e
                else pd.Series("", index=e.index)
            ),
        }
    )[cols]


#: What each episode level means for the decision, in the reader's words.
_EPISODE_LEVELS = {
    "blocking": "blocking: a rise that matters, open at the end",
    "review": "review: confirmed, trigger a review",
    "info": "information only",
    "baseline": "during the baseline",
}


def drift_view(report: Any) -> pd.DataFrame:
    f = report.features
    key = set(report.key_features or [])
    return pd.DataFrame(
        {
            "feature": f["feature"],
            "key feature": f["feature"].map(lambda x: "yes" if x in key else ""),
            "kind": f["kind"],
            "PSI": f["psi"].map(lambda x: _num(x, "{:.3f}")),
            "KL (nats)": f["kl"].map(lambda x: _num(x, "{:.3f}")),
            "band": f["band"],
            "new values in current": f["unseen_share"].map(_pct),
            "n reference": f["n_reference"].map(_count),
            "n current": f["n_current"].map(_count),
        }
    )


def calibration_view(calibration: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for window, res in calibration.items():
        if res is None:
            rows.append(
                {
                    "window": window,
                    "ECE": "no data",
                    "chance level (95%)": "",
                    "largest bin gap": "",
                    "decisions used": "0",
                    "left out": "",
                }
            )
            continue
        if res.n_used == 0:
            rows.append(
                {
                    "window": window,
                    "ECE": f"no data: {res.unusable_reason()}",
                    "chance level (95%)": "",
                    "largest bin gap": "",
                    "decisions used": "0",
                    "left out": f"{res.n_excluded:,}",
                }
            )
            continue
        rows.append(
            {
                "window": window,
                "ECE": _num(res.ece, "{:.3f}"),
                "chance level (95%)": _num(res.ece_if_calibrated_95, "{:.3f}"),
                "largest bin gap": _num(res.max_gap, "{:.3f}"),
                "decisions used": f"{res.n_used:,}",
                "left out": f"{res.n_excluded:,}",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "window",
            "ECE",
            "chance level (95%)",
            "largest bin gap",
            "decisions used",
            "left out",
        ],
    )


def prompt_view(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt version": frame["prompt_version"],
            "first seen": frame["first_seen"].map(_day),
            "decisions": frame["decisions"].map(_count),
            "escalation rate (95% CI)": _intervals(
                frame, "escalation_rate", "escalation_low", "escalation_high"
            ),
            "override rate (95% CI)": _intervals(
                frame, "override_rate", "override_low", "override_high"
            ),
        }
    )


def sigma_widget(report: Any, pilot: Pilot) -> Any:
    """A sigma slider that redraws the control chart's breach episodes."""
    import ipywidgets as w
    from IPython.display import display

    from pilot_lib.analysis.drift import escalation_threshold
    from pilot_lib.analysis.spc import control_chart
    from pilot_lib.errors import WorkbookError

    current = float(pilot.drift.sigma)
    slider = w.FloatSlider(
        value=current,
        min=min(1.0, current),
        max=max(4.0, current),
        step=0.25,
        readout_format=".2f",
    )
    window = pilot.drift.reference_window

    def show(sigma: float) -> None:
        try:
            chart = control_chart(
                report.daily,
                window,
                window=pilot.drift.moving_average_days,
                sigma=sigma,
                confirmation_sigma=pilot.drift.confirmation_sigma,
                min_shift_absolute=pilot.drift.min_shift_absolute,
                min_shift_relative=pilot.drift.min_shift_relative,
                threshold=escalation_threshold(pilot),
            )
        except WorkbookError as exc:
            print(f"No control chart at {sigma:g} sigma: {exc}")
            return
        display(table(episodes_view(chart), f"Breach episodes at {sigma:g} sigma"))

    return what_if(
        [
            labelled(slider, "Review band: control limits at this many sigma (steps of 0.25)"),
            live_output(show, {"sigma": slider}),
        ],
        "a slider for the control limits (sigma) and the breach episodes they give.",
    )


# ---- phase 4 ----------------------------------------------------------------


def drill_checks_view(drills: Any) -> pd.DataFrame:
    cols = ["drill", "measure", "seconds", "target", "status", "reason"]
    if drills is None or drills.checks.empty:
        return pd.DataFrame(columns=cols)
    c = drills.checks
    return pd.DataFrame(
        {
            "drill": c["drill_id"],
            "measure": c["measure"].str.replace("_", " "),
            "seconds": c["seconds"].map(lambda x: _num(x, "{:,.0f}")),
            "target": c["target_seconds"].map(lambda x: _num(x, "{:,.0f}")),
            "status": c["status"],
            "reason": c["reason"],
        }
    )[cols]


def drill_figures(drills: Any, targets: Any) -> list[Any]:
    from pilot_lib.report import charts

    if drills is None or not drills.drill_ids:
        return [charts.no_data_figure("Kill-switch drill", "no drill events")]
    return [
        charts.drill_timeline(drills.timeline(d), targets, f"Drill {d}") for d in drills.drill_ids
    ]


def actions_view(drills: Any) -> pd.DataFrame:
    cols = [
        "drill",
        "action",
        "started",
        "ended",
        "outcome",
        "in flight at the pause",
        "started after the pause",
    ]
    if drills is None or drills.actions.empty:
        return pd.DataFrame(columns=cols)
    a = drills.actions
    return pd.DataFrame(
        {
            "drill": a["drill_id"],
            "action": a["action_id"],
            "started": a["started"].map(
                lambda x: "" if pd.isna(x) else f"{pd.Timestamp(x):%Y-%m-%d %H:%M:%S}"
            ),
            "ended": a["ended"].map(
                lambda x: "" if pd.isna(x) else f"{pd.Timestamp(x):%Y-%m-%d %H:%M:%S}"
            ),
            "outcome": a["outcome"].fillna("never ended"),
            "in flight at the pause": a["in_flight"].map({True: "yes", False: ""}),
            "started after the pause": a["started_after_pause"].map({True: "YES", False: ""}),
        }
    )[cols]


def approval_summary_view(approvals: Any) -> pd.DataFrame:
    if approvals is None:
        return pd.DataFrame({"measure": ["approvals"], "value": ["no approvals data set"]})
    s = approvals.summary
    rows = [
        ("proposed actions", f"{s['n_actions']:,}"),
        ("needing human approval", f"{s['n_requests']:,}"),
        (
            f"decided within the {s['sla_minutes']:g}-minute SLA",
            _interval(s["share_within_sla"], s["ci_low"], s["ci_high"]),
        ),
        ("median minutes to a decision", _num(s["p50_minutes"], "{:,.0f}")),
        ("95th percentile minutes", _num(s["p95_minutes"], "{:,.0f}")),
        ("timed out", f"{s['n_timeouts']:,}"),
        ("timeouts handled as the policy says", f"{s['n_timeouts_matching_policy']:,}"),
        ("violations", f"{s['n_violations']:,}"),
    ]
    return pd.DataFrame(rows, columns=["measure", "value"])


def latency_view(approvals: Any) -> pd.DataFrame:
    if approvals is None:
        return pd.DataFrame(columns=["level"])
    t = approvals.latency
    return pd.DataFrame(
        {
            "level": t["level"],
            "needs approval": t["requires_approval"].map({True: "yes", False: "no"}),
            "actions": t["n_actions"].map(_count),
            "decided by a human": t["n_decided"].map(_count),
            "p50": t["p50_minutes"].map(lambda x: _num(x, "{:,.0f}")),
            "p90": t["p90_minutes"].map(lambda x: _num(x, "{:,.0f}")),
            "p95": t["p95_minutes"].map(lambda x: _num(x, "{:,.0f}")),
            "max": t["max_minutes"].map(lambda x: _num(x, "{:,.0f}")),
            "within SLA": _intervals(t, "share_within_sla", "ci_low", "ci_high"),
            "timed out": t["n_timed_out"].map(_count),
        }
    )


def violations_view(approvals: Any) -> pd.DataFrame:
    cols = ["action", "trace", "kind", "detail"]
    if approvals is None or approvals.violations.empty:
        return pd.DataFrame(columns=cols)
    v = approvals.violations
    return pd.DataFrame(
        {
            "action": v["action_id"],
            "trace": v["trace_id"].fillna(""),
            "kind": v["kind"].str.replace("_", " "),
            "detail": v["detail"],
        }
    )[cols]


def timeouts_view(approvals: Any) -> pd.DataFrame:
    cols = ["action", "amount", "level", "proposed", "minutes", "final state", "as the policy says"]
    if approvals is None or approvals.timeouts.empty:
        return pd.DataFrame(columns=cols)
    t = approvals.timeouts
    return pd.DataFrame(
        {
            "action": t["action_id"],
            "amount": t["amount"].map(lambda x: _num(x, "${:,.2f}")),
            "level": t["policy_level"],
            "proposed": t["proposed_at"].map(lambda x: f"{pd.Timestamp(x):%Y-%m-%d %H:%M}"),
            "minutes": t["latency_minutes"].map(
                lambda x: _num(x, "{:,.0f}") if pd.notna(x) else "never decided"
            ),
            "final state": t["final_state"],
            "as the policy says": t["matches_policy"].map({True: "yes", False: "NO"}),
        }
    )[cols]


def sla_widget(ctx: PhaseContext, review: Any = None) -> Any:
    """An SLA slider: the within-SLA share under another SLA, from the phase's approval review.

    ``review`` is the phase's :class:`~pilot_lib.phases.IncidentReview` (or its
    ``approvals`` review). Each slider position is recomputed from the latency
    distribution that review kept (:meth:`ApprovalReview.sla_what_if`), so the
    approvals are reviewed once per run and the figures equal those of a fresh
    review at that SLA. Without ``review`` the approvals are reviewed once here.
    """
    import ipywidgets as w

    approvals = getattr(review, "approvals", review)
    if approvals is None:
        table = ctx.data.table("approvals") if review is None and ctx.data is not None else None
        if table is None:
            return md("_No approvals data set._")
        from pilot_lib.analysis.approvals import review_approvals

        approvals = review_approvals(table, ctx.pilot.approvals)
    current = int(ctx.pilot.approvals.sla_minutes)
    slider = w.IntSlider(
        value=current,
        min=min(15, current),
        max=max(1440, 2 * current),
        step=15,
    )

    def show(sla: int) -> None:
        s = approvals.sla_what_if(sla)
        print(
            f"Within a {sla}-minute SLA: {_interval(s['share_within_sla'], s['ci_low'], s['ci_high'])} "
            f"of {s['n_requests']:,} requests; {s['n_timeouts']:,} timed out."
        )

    return what_if(
        [
            labelled(slider, "Approval SLA (minutes, in steps of 15)"),
            live_output(show, {"sla": slider}),
        ],
        "a slider for the approval SLA and the share of approvals decided within it.",
    )


# ---- phase 5 ----------------------------------------------------------------

_BANNER = {
    "GO": ("#dbe9f6", "#08306b"),
    "NO-GO": ("#fbdccb", "#7f2704"),
    "EXTEND": ("#fdf0c8", "#713f12"),
}


def decision_banner(decision: Any) -> Any:
    """The decision in large type, the pilot's name, and the rationale in plain words."""
    from IPython.display import HTML

    bg, fg = _BANNER[decision.decision]
    interim = (
        f'<div style="font-size:15px;font-weight:700;margin-bottom:4px">{escape(INTERIM_LABEL)}</div>'
        if getattr(decision, "interim", False)
        else ""
    )
    warnings = "".join(
        f'<p style="margin:8px 0 0 0"><b>Warning:</b> {escape(w)}</p>'
        for w in decision.integrity_warnings
    )
    return HTML(
        f'<div class="tex2jax_ignore mathjax_ignore" style="background:{bg};color:{fg};padding:18px 22px;border-radius:6px;">'
        f"{interim}"
        f'<div style="font-size:13px;text-transform:uppercase;letter-spacing:.08em">Go / no-go decision</div>'
        f'<div style="font-size:40px;font-weight:800;line-height:1.2">{escape(decision.decision)}</div>'
        f'<div style="font-size:17px;font-weight:600">{escape(decision.title)} ({escape(decision.pilot)})</div>'
        f'<p style="font-size:15px;line-height:1.5;color:#111;margin-top:12px">{escape(decision.rationale)}</p>'
        f"{warnings}</div>"
    )


def integrity_view(pilot: Pilot, warnings: list[str], notes: list[str]) -> Any:
    """Whether the thresholds were fixed before the pilot: the seal and git evidence in words.

    The pilot file is named by a short fingerprint (the first 12 digits of its
    SHA-256), not the full hash or a file name.
    """

    from pilot_lib.report.board import short_fingerprint

    lines = [
        f"Pilot file fingerprint `{short_fingerprint(pilot.file_hash)}`: any change to the file "
        "changes it."
    ]
    lines += [f"- **Warning:** {escape_md(w)}" for w in warnings]
    lines += [f"- {escape_md(n)}" for n in notes]
    if not warnings and not notes:
        lines.append(
            "- No seal and no version history to check against: seal the thresholds with "
            "`pilot-workbook seal` when they are agreed."
        )
    return markdown("\n".join(lines))


def board_summary(
    decision: Any,
    ctx: PhaseContext,
    integrity_warnings: list[str] | None = None,
    integrity_notes: list[str] | None = None,
) -> Any:
    """The top of the go/no-go page (:func:`pilot_lib.report.board.board_top`) as HTML.

    The decision, at most five reasons with links to the phase pages, the
    data-coverage line, the run (date, id, pilot window, workbook version) and
    the thresholds' seal status. ``ctx.output_dir`` names the run; without it
    the page says it is an analyst's run and names sections without links.
    """
    from IPython.display import HTML

    from pilot_lib.report.board import board_top

    return HTML(
        board_top(
            decision,
            ctx.pilot,
            ctx.output_dir,
            integrity_warnings or [],
            integrity_notes or [],
        )
    )


def glossary(decision: Any) -> Any:
    """The short glossary closing the go/no-go page: the technical terms the page uses."""
    from IPython.display import HTML

    from pilot_lib.report.board import glossary_html, page_texts

    return HTML(_no_math(glossary_html(page_texts(decision))))


def sign_off(pilot: Pilot, decision: Any) -> Any:
    """The sign-off block (name, role, decision, date, signature) for the pilot file's team."""
    from IPython.display import HTML

    from pilot_lib.report.board import sign_off_html

    return HTML(sign_off_html(pilot, decision))


# ---- phase 3: risk-coverage (issue 13) ----------------------------------------


def risk_coverage_widget(section: Any) -> Any:
    """A confidence-threshold slider over the risk-coverage curve (phase 3).

    ``section`` is ``report.risk_coverage`` (:class:`pilot_lib.analysis.risk_coverage.
    RiskCoverage`). The slider moves along the curve's grid and starts at today's
    threshold; the table shows, today against the chosen threshold, the coverage,
    the error rate with its interval, escalations and reviewer hours a week and the
    cost per decision (:meth:`RiskCoverage.what_if_view`; its assumptions are in the
    module docstring).
    """
    import ipywidgets as w
    from IPython.display import display

    grid = [float(t) for t in section.curve["threshold"]]
    slider = w.SelectionSlider(
        options=[(f"{t:.2f}", t) for t in grid],
        value=grid[min(range(len(grid)), key=lambda i: abs(grid[i] - section.today))],
        continuous_update=False,
    )
    target = section.target

    def show(threshold: float) -> None:
        row = section.at(threshold)
        if target is None:
            verdict = "no target in the pilot file (risk_coverage.max_error_rate)"
        elif not math.isfinite(row["risk_high"]):
            verdict = "no decision with a known outcome at this threshold"
        elif row["risk_high"] <= target:
            verdict = f"meets the target {100 * target:.1f}% with its interval"
        else:
            verdict = f"not shown to meet the target {100 * target:.1f}%"
        display(table(section.what_if_view(threshold), f"Threshold {threshold:.2f}: {verdict}"))

    return what_if(
        [
            labelled(slider, "Confidence threshold (escalate below it)"),
            live_output(show, {"threshold": slider}),
        ],
        "a slider for the confidence threshold, with the coverage, errors, reviewer load and "
        "cost it gives.",
    )


# ---- phase 4: decision authority (issue 12) ----------------------------------


def authority_widget(review: Any, thresholds: Mapping[str, float | None] | None = None) -> Any:
    """One slider per bounded authority level: the approval load had its ``max_amount``
    (US dollars) been different, through the same Rego policy.

    ``review`` is the phase's ``authority_policy`` section
    (:class:`pilot_lib.analysis.authority.AuthorityReview`); ``thresholds`` (level name to
    max_amount, e.g. the notebook's papermill parameter) sets where the sliders start;
    the pilot file's values otherwise. A position that breaks the ladder (a limit not
    above the one below) says so instead of showing figures.
    """
    import ipywidgets as w
    from IPython.display import display

    if review is None:
        return md("_No approvals data set: there is no log to replay._")
    start = dict(review.baseline.thresholds)
    start.update({k: v for k, v in (thresholds or {}).items() if v is not None})
    bounded = [name for name, limit in review.baseline.thresholds.items() if limit is not None]
    if not bounded:
        return md("_Every level is unbounded: there is no threshold to move._")
    sliders = {name: w.FloatText(value=float(start[name]), step=100) for name in bounded}

    def show(**limits: float) -> None:
        try:
            result = review.what_if(limits)
        except ValueError as exc:
            print(f"Not a valid ladder: {exc}")
            return
        # the assumptions first, as Markdown: printed text would be stored before the tables
        # in the first view and after them on a redraw
        display(md("{note}", note=result.sla_note))
        display(table(authority_what_if_view(result), "What-if: approval load"))
        display(
            table(authority_levels_view(result.per_level), "What-if: actions by deciding level")
        )

    return what_if(
        [
            *(
                labelled(
                    s, f"Level {name.replace('_', ' ')}: largest amount decided there (US dollars)"
                )
                for name, s in sliders.items()
            ),
            live_output(show, sliders),
        ],
        "a box per authority level's largest amount, with the approval load it gives.",
    )


def authority_what_if_view(result: Any) -> pd.DataFrame:
    """The authority what-if's headline figures (:meth:`WhatIf.table`) as a reader reads them:
    counts as whole numbers with separators (``598``, not ``598.000000``), rates and hours with
    one decimal, dollars with cents (``$449,846.15``)."""
    frame = result.table()

    def fmt(figure: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "no data"
        if "(USD)" in figure:
            return f"${value:,.2f}"
        if "per week" in figure:
            return f"{value:,.1f}"
        return f"{value:,.0f}"

    rows = [
        {
            "figure": str(r["figure"]).replace(" (USD)", " (US dollars)"),
            "at the pilot file's thresholds": fmt(r["figure"], r["pilot file thresholds"]),
            "at the what-if thresholds": fmt(r["figure"], r["what-if"]),
        }
        for _, r in frame.iterrows()
    ]
    return pd.DataFrame(rows)


def authority_levels_view(per_level: pd.DataFrame) -> pd.DataFrame:
    """Actions by deciding level, now and under the what-if: ``needs approval`` in words
    (yes / no, not ``True`` / ``False``), counts with separators, the change signed."""
    return pd.DataFrame(
        {
            "deciding level": per_level["level"].map(lambda v: str(v).replace("_", " ")),
            "needs a human approval": per_level["requires_approval"].map(
                lambda v: "yes" if bool(v) else "no"
            ),
            "actions now": per_level["actions_now"].map(_count),
            "actions under the what-if": per_level["actions_what_if"].map(_count),
            "change": per_level["change"].map(
                lambda v: f"{int(v):+,}" if pd.notna(v) else "no data"
            ),
        }
    )


# ---- phase sections (shadow mode, cost attribution, audit trail, ...) ------------------


def section_or_note(phase: Any, key: str, missing: str) -> Any:
    """The section ``key`` of a phase object (``phase.sections[key]``), or None after
    showing ``missing`` as one short italic note.

    A section (:data:`pilot_lib.phases.PHASE_SECTIONS`) is absent when the pilot has
    nothing for it (no data set, no shadow rows, no golden set). ``missing`` says what
    is missing and how to add it; it is escaped like any text (:func:`md`). A cell reads::

        shadow = nb.section_or_note(kpis, "shadow_mode", "No shadow decisions ...")
        if shadow is not None:
            display(nb.table(shadow.summary_table(), "Shadow mode"))
    """
    from IPython.display import display

    section = (getattr(phase, "sections", None) or {}).get(key)
    if section is None:
        display(md("_{text}_", text=missing))
    return section


def formats(
    percent: tuple[str, ...] | list[str] = (),
    usd: tuple[str, ...] | list[str] = (),
    dollars: tuple[str, ...] | list[str] = (),
    counts: tuple[str, ...] | list[str] = (),
    decimals: Mapping[str, int] | None = None,
    percent_digits: int = 1,
) -> dict[str, Callable[[Any], str]]:
    """Formatters for :func:`table` by kind of column: ``percent`` (a fraction shown as
    ``93.7%``, ``percent_digits`` decimals), ``usd`` (``$2.041``: three decimals, as the
    cost per decision), ``dollars`` (``$61,230.31``), ``counts`` (``29,994``) and
    ``decimals`` (column -> digits, ``1,234.5``).

    Text in such a column (a word put in by :func:`filled`) is shown as it is; missing
    values show as "no data" (:func:`styled`).
    """
    specs = {c: f"{{:.{int(percent_digits)}%}}" for c in percent}
    specs |= {c: "${:,.3f}" for c in usd}
    specs |= {c: "${:,.2f}" for c in dollars}
    specs |= {c: "{:,.0f}" for c in counts}
    specs |= {c: f"{{:,.{int(d)}f}}" for c, d in (decimals or {}).items()}
    return {c: _text_or(spec) for c, spec in specs.items()}


def _text_or(spec: str) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        return value if isinstance(value, str) else spec.format(value)

    return fmt


def filled(frame: pd.DataFrame, **words: str) -> pd.DataFrame:
    """``frame`` with the missing values of the named columns replaced by a word that says
    what missing means there (``max_amount="no limit"``, ``went_live_at="never live"``),
    instead of the generic "no data". Columns not in ``frame`` are ignored."""
    out = frame.copy()
    for column, word in words.items():
        if column in out.columns:
            values = out[column].astype(object)
            out[column] = values.where(values.notna(), word)
    return out


# ---- section views: the columns a reader needs, fitting the page at 1,280 px ------------
# The full tables stay in each section's result (the phase's result JSON).


def _usd3(x: Any) -> str:
    return _num(x, "${:,.3f}")


def _usd2(x: Any) -> str:
    return _num(x, "${:,.2f}")


def _range(low: Any, high: Any, fmt: Callable[[Any], str]) -> str:
    """``$1.020 to $1.100``; "no data" when either end is missing."""
    a, b = fmt(low), fmt(high)
    return "no data" if "no data" in (a, b) else f"{a} to {b}"


def cost_breakdown_view(frame: pd.DataFrame, dimension: str = "") -> pd.DataFrame:
    """A cost-attribution breakdown (``CostAttribution.breakdown``) in nine columns: the
    group, decisions, cost per decision with its clustered 95% interval, its four parts and
    its share of the cost (the unclustered interval, design effect, clusters and total
    spend stay in the result)."""
    name = "" if dimension in ("", "overall") else reader_label(dimension).replace(" id", "")
    out = pd.DataFrame(
        {
            (name or "scope"): frame["value"].astype(str),
            "decisions": frame["decisions"].map(_count),
            "cost per decision": frame["cost_per_decision_usd"].map(_usd3),
            "95% interval": [
                _range(lo, hi, _usd3) for lo, hi in zip(frame["low"], frame["high"], strict=True)
            ],
            "input": frame["input_usd"].map(_usd3),
            "output": frame["output_usd"].map(_usd3),
            "tool": frame["tool_usd"].map(_usd3),
            "review": frame["review_usd"].map(_usd3),
            "share of cost": frame["share_of_cost"].map(_pct),
        }
    )
    return out


def prompt_spend_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Prompt versions ranked by total spend (``CostAttribution.top_contributors``) in eight
    columns (mean tokens and the cost shares by part stay in the result)."""
    return pd.DataFrame(
        {
            "rank": frame["rank"].map(_count),
            "prompt version": frame["prompt_version"].astype(str),
            "decisions": frame["decisions"].map(_count),
            "cost per decision": frame["cost_per_decision_usd"].map(_usd3),
            "95% interval": [
                _range(lo, hi, _usd3) for lo, hi in zip(frame["low"], frame["high"], strict=True)
            ],
            "model cost per decision": frame["model_cost_per_decision_usd"].map(_usd3),
            "total spend": frame["total_usd"].map(_usd2),
            "share of spend": frame["share_of_spend"].map(_pct),
        }
    )


_BUDGET_ROWS = (
    ("monthly budget", "monthly_usd", _usd2),
    ("highest month-to-date spend", "peak_month_to_date_usd", _usd2),
    ("first day over pace", "first_over_pace_day", None),
    ("first day over budget", "first_breach_day", None),
    ("month-end projection", "projected_month_usd", _usd2),
    ("fallback model", "fallback_model", None),
    ("month-end projection with the fallback", "projected_month_with_fallback_usd", _usd2),
    ("saving with the fallback", "fallback_saving_usd", _usd2),
)


def budgets_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The budgets (``CostAttribution.budget_table``) transposed: one row per figure, one
    column per budget, so any number of budgets fits the page; days never reached read
    "never", a budget without fallback "none"."""
    words = {"first_over_pace_day": "never", "first_breach_day": "never", "fallback_model": "none"}
    data: dict[str, list[str]] = {"figure (US dollars)": [r[0] for r in _BUDGET_ROWS]}
    for _, b in frame.iterrows():
        col = []
        for _, key, fmt in _BUDGET_ROWS:
            v = b.get(key)
            missing = v is None or (isinstance(v, float) and not math.isfinite(v)) or pd.isna(v)
            if missing:
                col.append(words.get(key, "no data"))
            else:
                col.append(fmt(v) if fmt else str(v)[:10] if key.endswith("_day") else str(v))
        data[str(b["label"])] = col
    return pd.DataFrame(data)


def promotion_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Each live prompt version against its predecessor (``PromptPromotion.promotion_table``)
    in seven columns: the paired counts that only one version got right stay in the result."""
    first = frame["predecessor"].isna()
    return pd.DataFrame(
        {
            "prompt version": frame["prompt_version"].astype(str),
            "against": frame["predecessor"].where(~first, "none (first version)").astype(str),
            "live from": frame["went_live_at"].map(
                lambda v: "never live" if pd.isna(v) else _day(v)
            ),
            "shared golden cases": frame["paired_cases"].map(_count),
            "accuracy, new against old": [
                "no data" if pd.isna(a) or pd.isna(b) else f"{_pct(a)} against {_pct(b)}"
                for a, b in zip(frame["accuracy_new"], frame["accuracy_old"], strict=True)
            ],
            "difference (95% interval)": [
                "no data"
                if pd.isna(d)
                else f"{100 * d:+.1f} points ({100 * lo:+.1f} to {100 * hi:+.1f})"
                for d, lo, hi in zip(frame["difference"], frame["low"], frame["high"], strict=True)
            ],
            "verdict": frame["verdict"]
            .where(~first | frame["verdict"].notna(), "first version")
            .fillna("first version")
            .astype(str),
        }
    )


def policy_changes_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Policy changes (``AuthorityReview.changes``) in seven columns: the first action under
    the new thresholds and the lag in decisions stay in the result."""
    return pd.DataFrame(
        {
            "policy version": frame["policy_version"].astype(str),
            "replaces": frame["replaces"].astype(str),
            "effective from": frame["effective_at"].map(
                lambda v: "from the start" if pd.isna(v) else _day(v)
            ),
            "actions affected": frame["n_affected"].map(_count),
            "followed new / old": [
                f"{_count(a)} / {_count(b)}"
                for a, b in zip(frame["n_followed_new"], frame["n_followed_old"], strict=True)
            ],
            "lag (hours)": frame["lag_hours"].map(
                lambda v: "no data" if pd.isna(v) else f"{v:,.1f}"
            ),
            "status": frame["status"].astype(str),
        }
    )


def systems_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Downstream systems (``IntegrationHealth.systems_table``) in twelve columns: the error
    rate and its 95% interval in one column, percentages with two decimals."""

    def pct2(x: Any) -> str:
        return _pct(x, 2)

    out = pd.DataFrame(
        {
            "system": frame["system"].astype(str),
            "calls": frame["calls"].map(_count),
            "attempts": frame["attempts"].map(_count),
            "error rate (95% interval)": [
                f"{pct2(e)} ({_range(lo, hi, pct2)})"
                for e, lo, hi in zip(frame["error rate"], frame["low"], frame["high"], strict=True)
            ],
        }
    )
    for col in ("5xx", "timeout", "4xx"):
        out[col] = frame[col].map(pct2)
    out["retries per call"] = frame["retries per call"].map(lambda x: _num(x, "{:,.3f}"))
    for col in ("hammering calls", "circuit openings"):
        out[col] = frame[col].map(_count)
    out["median latency (ms)"] = frame["p50 ms"].map(_count)
    out["95th percentile (ms)"] = frame["p95 ms"].map(_count)
    return out


def weekly_errors_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Error rate by week and system (``IntegrationHealth.weekly_table``) in nine columns: the
    rate and its 95% interval in one column, percentages with two decimals."""

    def pct2(x: Any) -> str:
        return _pct(x, 2)

    return pd.DataFrame(
        {
            "system": frame["system"].astype(str),
            "week": frame["week"].map(_day),
            "attempts sent": frame["attempts_sent"].map(_count),
            "errors": frame["errors"].map(_count),
            "error rate (95% interval)": [
                f"{pct2(e)} ({_range(lo, hi, pct2)})"
                for e, lo, hi in zip(frame["error_rate"], frame["low"], frame["high"], strict=True)
            ],
            "retried calls": frame["retried_calls"].map(_count),
            "hammering calls": frame["hammering_calls"].map(_count),
            "attempts while open": frame["circuit_open"].map(_count),
            "median latency (ms)": frame["p50_ms"].map(_count),
            "95th percentile (ms)": frame["p95_ms"].map(_count),
        }
    )

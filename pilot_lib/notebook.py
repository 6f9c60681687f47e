"""Glue for the phase notebooks: find the pilot, load it, show tables safely, save the result.

The notebooks stay thin: every figure comes from a ``pilot_lib`` function; this
module only resolves paths, renders tables deterministically and escapes text
that came from data before it reaches HTML.
"""

from __future__ import annotations

import hashlib
import html
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pilot_lib.config import Pilot, load_pilot, pilot_file_path
from pilot_lib.results import PHASES, read_phase_result, write_phase_result

__all__ = [
    "PhaseContext",
    "escape",
    "find_pilot",
    "md",
    "open_phase",
    "repo_root",
    "styled",
    "status_table",
    "table",
]


def repo_root() -> Path | None:
    """The workbook checkout this package was installed from (editable installs), if any."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "notebooks").is_dir() and (here / "pyproject.toml").is_file() else None


def find_pilot(pilot: str | os.PathLike[str]) -> Path:
    """Resolve a pilot folder or file given relative to wherever the kernel runs.

    papermill starts the kernel in the caller's working directory, JupyterLab in
    the notebook's folder. A relative ``pilot`` is tried against the working
    directory, then the ``notebooks/`` folder, then the checkout root, so
    ``../data/pilots/x`` (from ``notebooks/``) and ``data/pilots/x`` (from the
    root) both work. Returns the path of the pilot file.
    """
    raw = Path(pilot).expanduser()
    candidates = [raw]
    if not raw.is_absolute():
        root = repo_root()
        if root is not None:
            candidates += [root / "notebooks" / raw, root / raw]
    for cand in candidates:
        if pilot_file_path(cand).is_file():
            return pilot_file_path(cand).resolve()
    tried = ", ".join(str(c) for c in candidates)
    from pilot_lib.config import PilotFileError, Problem

    raise PilotFileError(
        str(pilot),
        [Problem(str(pilot), "pilot", str(pilot), f"no pilot.yaml found; tried {tried}")],
    )


def escape(value: Any) -> str:
    """HTML-escape a value that came from data before it goes into Markdown or HTML."""
    return html.escape(str(value), quote=True)


def md(template: str, **values: Any) -> Any:
    """A Markdown display object with every ``values`` item HTML-escaped.

    ``md("Top pick: **{name}**", name=row.name)``: a workflow called
    ``<script>...`` shows as text, never runs.
    """
    from IPython.display import Markdown

    return Markdown(template.format(**{k: escape(v) for k, v in values.items()}))


def styled(
    frame: pd.DataFrame,
    caption: str | None = None,
    formats: Mapping[str, str] | None = None,
    highlight: Mapping[str, Mapping[str, str]] | None = None,
) -> Any:
    """A pandas Styler with a stable id, escaped cells and no index.

    - The table id derives from the caption and columns, not a random uuid, so
      stored notebook outputs do not change from run to run (nbval).
    - ``escape="html"``: values from data are shown as text.
    - ``highlight``: ``{column: {cell value: css}}`` e.g. colour a status column.
    """
    key = hashlib.sha1((str(caption) + "|".join(map(str, frame.columns))).encode()).hexdigest()[:8]
    sty = (
        frame.style.set_uuid(f"t{key}")
        .hide(axis="index")
        .format(formats or {}, escape="html", na_rep="no data")
    )
    if caption:
        sty = sty.set_caption(escape(caption))
    for col, colours in (highlight or {}).items():
        if col in frame.columns:
            sty = sty.map(lambda v, c=colours: c.get(v, ""), subset=[col])
    return sty.set_table_styles(
        [
            {"selector": "th", "props": "text-align: left; padding: 4px 10px;"},
            {"selector": "td", "props": "padding: 4px 10px;"},
            {
                "selector": "caption",
                "props": "caption-side: top; font-weight: 600; text-align: left;",
            },
        ]
    )


def table(
    frame: pd.DataFrame,
    caption: str | None = None,
    formats: Mapping[str, str] | None = None,
    highlight: Mapping[str, Mapping[str, str]] | None = None,
) -> Any:
    """:func:`styled` rendered to an HTML display object.

    A Styler's plain-text repr carries a memory address that changes every run;
    the HTML object's does not, so stored outputs stay comparable (nbval).
    """
    from IPython.display import HTML

    return HTML(styled(frame, caption, formats, highlight).to_html())


def status_table(frame: pd.DataFrame, caption: str | None = None, column: str = "status") -> Any:
    """:func:`table` with a status-like column coloured (PASS/FAIL, bands, severities)."""
    return table(frame, caption, highlight={column: STATUS_COLOURS})


STATUS_COLOURS = {
    "PASS": "background-color: #d7f0dd; color: #14532d; font-weight: 600",
    "FAIL": "background-color: #f9d6d5; color: #7f1d1d; font-weight: 600",
    "INCONCLUSIVE": "background-color: #fdf0c8; color: #713f12; font-weight: 600",
    "stable": "background-color: #d7f0dd",
    "moderate": "background-color: #fdf0c8",
    "significant": "background-color: #f9d6d5; font-weight: 600",
    "blocking": "background-color: #f9d6d5; font-weight: 600",
    "warning": "background-color: #fdf0c8",
    "info": "",
    "pass": "background-color: #d7f0dd",
    "fail": "background-color: #f9d6d5; font-weight: 600",
}


@dataclass
class PhaseContext:
    """What a phase notebook works with: the pilot file, its data, and where results go."""

    phase: str
    pilot: Pilot
    output_dir: Path | None
    data: Any = None  # pilot_lib.contracts.PilotData, loaded on open_phase(load_data=True)

    @property
    def quarantine_dir(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / "quarantine"

    def header(self) -> Any:
        """Markdown header: pilot, owner, scope, window, and the pilot file's fingerprint."""
        p = self.pilot
        return md(
            "**Pilot:** {title} (`{name}`)  \n**Owner:** {owner}, {unit}  \n**Scope:** {scope}  \n"
            "**Pilot window:** {start} to {end} ({weeks:.0f} weeks); baseline {bstart} to {bend}  \n"
            "**Pilot file SHA-256:** `{sha}...`",
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
        return rep.drop(columns=[c for c in ("source",) if c in rep.columns])

    def quarantine_reasons(self) -> pd.DataFrame:
        if self.data is None:
            return pd.DataFrame(columns=["data set", "rule", "rows"])
        return self.data.quarantine_summary()

    def save(self, result: Mapping[str, Any]) -> Path | None:
        """Write this phase's result JSON into ``output_dir`` (nothing when it is None)."""
        return write_phase_result(self.phase, self.pilot, result, self.output_dir)

    def earlier(self, phase: str) -> dict[str, Any] | None:
        """An earlier phase's result from ``output_dir``, or None when it was not run there."""
        return read_phase_result(phase, self.output_dir, self.pilot)

    def saved_note(self, path: Path | None) -> Any:
        if path is None:
            return md("_Result not saved: `output_dir` is not set (the batch runner sets it)._")
        return md("Result saved as `{name}` in the run folder.", name=path.name)


def open_phase(
    phase: str,
    pilot: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    load_data: bool = True,
) -> PhaseContext:
    """Resolve and load the pilot for one phase notebook.

    ``pilot`` is a pilot folder or file (see :func:`find_pilot`); ``output_dir``
    is where the phase result and quarantine files go (``None``: write nothing).
    With ``load_data`` every data set is opened and checked against its contract.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {list(PHASES)}")
    loaded = load_pilot(find_pilot(pilot))
    out = None if output_dir in (None, "") else Path(output_dir).expanduser().resolve()
    ctx = PhaseContext(phase=phase, pilot=loaded, output_dir=out)
    if load_data:
        from pilot_lib.contracts import load_pilot_data

        ctx.data = load_pilot_data(loaded, quarantine_dir=ctx.quarantine_dir)
    return ctx

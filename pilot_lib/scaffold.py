"""Start a pilot, or an analyst's notebook folder, from an installed package.

- :func:`new_pilot` (``pilot-workbook new DIR``) writes a pilot folder: a
  commented ``pilot.yaml`` that loads as it is, and one CSV file per data set
  holding only the contract's header row (the columns, in contract order), to be
  replaced by the pilot's data.
- :func:`copy_notebooks` (``pilot-workbook notebooks DIR``) copies the five
  phase notebooks (from the checkout, or from the installed package) for an
  analyst's JupyterLab.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

from pilot_lib.errors import WorkbookError
from pilot_lib.runs import atomic_write_text

__all__ = ["DATA_FILES", "DRIFT_FEATURES", "copy_notebooks", "new_pilot", "pilot_template"]

#: Data set -> the file the template points at (CSV: any spreadsheet writes it).
DATA_FILES: dict[str, str] = {
    "candidates": "candidates.csv",
    "decisions": "decisions.csv",
    "cases": "cases.csv",
    "adoption": "adoption.csv",
    "drill_events": "drill_events.csv",
    "approvals": "approvals.csv",
}

#: Example input features of the decision log (columns beyond the contract) the
#: template's drift settings name; the empty decisions.csv carries them too.
DRIFT_FEATURES = ("amount", "channel")

_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def pilot_template(name: str, today: dt.date | None = None) -> str:
    """The commented ``pilot.yaml`` of a new pilot called ``name``.

    Windows are placeholders around ``today`` (default: today, UTC): a
    baseline of the eight weeks before a twelve-week pilot starting next
    Monday. Every value marked ``# TODO`` is to be agreed before the pilot
    starts; the file loads as it is.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    start = today + dt.timedelta(days=(7 - today.weekday()) % 7 or 7)  # next Monday
    end = start + dt.timedelta(weeks=12, days=-1)
    base_start = start - dt.timedelta(weeks=8)
    base_end = start - dt.timedelta(days=1)
    ref_end = start + dt.timedelta(weeks=4, days=-1)
    cur_start = end - dt.timedelta(weeks=4, days=-1)
    datasets = "\n".join(f"  {k}: {{path: {v}}}" for k, v in DATA_FILES.items())
    return f"""\
# Pilot file: everything a run of the workbook needs, agreed before the pilot starts.
# Reference: docs/pilot-file.md (https://github.com/agentic-pilot-workbook/agentic-pilot-workbook).
# Relative paths resolve against this file's folder. Check it with:
#   pilot-workbook validate <this folder>
# Values marked TODO are placeholders: agree them with the business process owner
# and the governance/risk lead, then seal them (pilot-workbook seal <this folder>).
name: {name}
title: TODO one line leaders will recognise, e.g. Standard auto claims under $10,000
owner: TODO name, role of the business process owner
business_unit: TODO
scope: >-
  TODO what the agent does and what it does not (the cases it sees, the
  actions it may take, what stays with people).
pilot_window: {{start: {start}, end: {end}}}        # TODO the pilot's first and last day
baseline_window: {{start: {base_start}, end: {base_end}}}  # TODO the "before" the agent is compared with

# One file per data set. The files here hold only the header row (the columns of
# each data contract, docs/data-contracts.md): replace them with the pilot's data,
# or point a path at Parquet, a DuckDB table or traces instead.
datasets:
{datasets}

# Go/no-go thresholds: agreed by the business owner and the governance lead BEFORE
# the pilot starts. Proportions are fractions (0.80, not 80%).
kpis:
  - {{kpi: task_completion_rate, comparator: ">", value: 0.80, unit: proportion,  # TODO
     min_samples: 400, description: accepted and acted on without correction}}
  - {{kpi: escalation_rate, comparator: "<", value: 0.20, unit: proportion, min_samples: 400}}  # TODO
  - {{kpi: cost_per_decision, comparator: "<", value: 2.50, unit: usd, min_samples: 400}}  # TODO

costs:
  review_hourly_rate_usd: 60.0      # TODO loaded cost of a reviewer hour
  manual_cost_per_case_usd: 15.00   # TODO fully manual handling of one case

confidence_threshold: 0.70          # below it the agent escalates

drift:
  # input columns of the decision log to watch (columns beyond the contract's)
  features: [{", ".join(DRIFT_FEATURES)}]              # TODO your decision log's input columns
  key_features: [{DRIFT_FEATURES[0]}]
  reference_window: {{start: {start}, end: {ref_end}}}   # the pilot's first four weeks
  current_window: {{start: {cur_start}, end: {end}}}     # its last four weeks

drills:
  max_seconds_to_detect: 300
  max_seconds_to_page: 120
  max_seconds_to_pause: 180

approvals:
  sla_minutes: 240
  timeout_action: reject
  levels:                           # TODO your approval levels, lowest first
    - {{name: autonomous, max_amount: 2500, requires_approval: false}}
    - {{name: reviewer, max_amount: 7500}}
    - {{name: supervisor}}
"""


def new_pilot(folder: str | Path, name: str | None = None) -> Path:
    """Scaffold a pilot folder at ``folder`` (created; it must be absent or empty).

    Writes ``pilot.yaml`` (:func:`pilot_template`, named after the folder unless
    ``name`` is given) and one header-only CSV per data set (:data:`DATA_FILES`),
    the columns of each data set's contract in contract order; ``decisions.csv``
    also carries the template's drift features (:data:`DRIFT_FEATURES`).
    Raises :class:`WorkbookError` for a folder that holds files already.
    Returns the folder, resolved.
    """
    from pilot_lib.ingest.contracts import contract_columns
    from pilot_lib.runs import check_writable

    target = Path(folder).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise WorkbookError(
            f"{target.resolve()} already exists and is not an empty folder; "
            "pilot-workbook new writes a new pilot folder: pass a new path"
        )
    target = check_writable(target, "the new pilot folder", "pass another path")
    pilot_name = name or _NAME.sub("-", target.name).strip("-.") or "my-pilot"
    if not pilot_name[0].isalnum():
        pilot_name = "p" + pilot_name
    for dataset, file in DATA_FILES.items():
        columns = list(contract_columns(dataset))
        if dataset == "decisions":
            columns += [c for c in DRIFT_FEATURES if c not in columns]
        atomic_write_text(target / file, ",".join(columns) + "\n")
    atomic_write_text(target / "pilot.yaml", pilot_template(pilot_name))
    return target


def copy_notebooks(folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the five phase notebooks into ``folder`` (created); returns the copies.

    The notebooks come from the checkout or the installed package
    (:func:`pilot_lib.runner.notebooks_dir`). A notebook already in ``folder`` is
    kept, and :class:`WorkbookError` raised, unless ``overwrite``. Each keeps its
    parameters cell: set ``pilot`` to a pilot folder before running it.
    """
    from pilot_lib.runner import PHASE_NOTEBOOKS, notebooks_dir
    from pilot_lib.runs import check_writable

    source = notebooks_dir()
    target = Path(folder).expanduser()
    names = [nb for _, nb in PHASE_NOTEBOOKS.values()]
    there = [n for n in names if (target / n).exists()]
    if there and not overwrite:
        raise WorkbookError(
            f"{target.resolve()} already holds {', '.join(there)}; pass --force to overwrite "
            "them, or choose another folder"
        )
    target = check_writable(target, "the notebook folder", "pass another folder")
    copied = []
    for n in names:
        shutil.copyfile(source / n, target / n)
        copied.append(target / n)
    return copied

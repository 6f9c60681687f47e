"""Data sufficiency: does a decision stand on enough valid evidence?

A KPI computed on the valid rows can look fine while most of the evidence was
set aside: a prompt version that logs ``confidence`` on a 0-100 scale has every
decision quarantined, and the KPIs then describe the other versions only.
:func:`data_coverage` measures what the contracts left, against the limits of
the pilot file's ``data_sufficiency`` section (:class:`~pilot_lib.config.DataSufficiency`):

- per data set, the share of rows quarantined (quarantined / rows read);
- for the decision log, the same share per calendar week (Monday to Sunday, the
  weeks overlapping ``pilot_window``) and per prompt version, for groups of at
  least ``min_group_rows`` rows. A quarantined row whose timestamp is missing or
  does not parse has no week: it is counted as "week unknown", one outside the
  window as "outside the pilot window"; a missing prompt version is "(none)";
- thin weeks: weeks of the window whose valid decisions fall below
  ``min_week_share`` of the median daily pace of the full weeks that hold
  decisions, times the week's days inside the window (a week with no valid
  decision is always thin);
- the share of decisions whose business outcome is known (``accepted``
  recorded; for a log built from traces, decisions with an outcome row), and the
  share of valid decisions with a known ``correct`` (calibration's outcome);
- rows each flag rule marked (kept and used; see docs/data-contracts.md).

Each limit breached is a **blocking** finding whose message begins "The
evidence is incomplete: " and names what and how much; a flag below its limit is
a warning. :meth:`DataCoverage.line` is the one-line summary the go/no-go page
always shows.

Engine: the counts per week and prompt version are GROUP BYs over the valid and
the quarantined rows, run in the engine; only one row per week / version comes
back. The per-data-set and per-rule counts and the flags come from the checks
(the store's manifest).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.datatypes as idt
import ibis.expr.types as ir
import pandas as pd

from pilot_lib.analysis.findings import Finding
from pilot_lib.config import DATASET_NAMES, Pilot

__all__ = [
    "DataCoverage",
    "DatasetCoverage",
    "data_coverage",
    "format_share",
    "missing_coverage_line",
]

PHASE = "kpi_baselining"
PREFIX = "The evidence is incomplete: "
UNKNOWN_WEEK = "week unknown"
OUTSIDE_WINDOW = "outside the pilot window"
NO_VERSION = "(none)"

#: What one row of each data set is, for messages.
_NOUNS = {
    "candidates": "candidates",
    "decisions": "decisions",
    "cases": "cases",
    "adoption": "adoption rows (user-weeks)",
    "drill_events": "drill events",
    "approvals": "approvals",
}


def format_share(part: int, whole: int) -> str:
    """``part / whole`` as a percentage with one decimal, never rounded to 0% or 100%.

    ``format_share(29_994, 30_000)`` is ``"99.98%"`` (not ``"100.0%"``);
    ``format_share(0, 0)`` is ``"n/a"``.
    """
    if whole <= 0:
        return "n/a"
    share = 100 * part / whole
    for digits in (1, 2, 3, 4):
        text = f"{share:.{digits}f}"
        if (0 < part < whole) and text in (f"{0:.{digits}f}", f"{100:.{digits}f}"):
            continue
        return f"{text}%"
    return f"{share:.4g}%"


def _limit_text(limit: float) -> str:
    return f"{limit * 100:g}%"


@dataclass(frozen=True)
class DatasetCoverage:
    """Rows read, valid and quarantined of one data set, against its limit."""

    dataset: str
    rows: int
    valid: int
    quarantined: int
    limit: float
    by_rule: list[dict[str, Any]]  # rule, rows (most rows first)
    flags: dict[str, int]

    @property
    def share(self) -> float:
        """Quarantined / rows read (0 for an empty data set)."""
        return self.quarantined / self.rows if self.rows else 0.0

    @property
    def above_limit(self) -> bool:
        return self.share > self.limit

    def to_result(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "rows": self.rows,
            "valid": self.valid,
            "quarantined": self.quarantined,
            "quarantined_share": self.share,
            "limit": self.limit,
            "above_limit": self.above_limit,
            "by_rule": list(self.by_rule),
            "flags": dict(self.flags),
        }


@dataclass
class DataCoverage:
    """What :func:`data_coverage` found: counts, the summary line, and findings."""

    pilot: str
    settings: dict[str, Any]
    datasets: list[DatasetCoverage]
    #: per week of the window: week (Monday), days_in_window, valid, quarantined,
    #: quarantined_share, judged (enough rows to judge the share), above_limit, thin
    weeks: pd.DataFrame
    #: quarantined decisions without a week: ``week unknown`` and ``outside the pilot window``
    without_week: dict[str, int]
    #: per prompt version: prompt_version, valid, quarantined, quarantined_share, judged, above_limit
    versions: pd.DataFrame
    #: the least valid decisions a full week needs not to be thin (None: no decision log)
    thin_week_minimum: float | None
    outcome: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocking"]

    @property
    def sufficient(self) -> bool:
        """True when no limit of ``data_sufficiency`` is breached."""
        return not self.blocking

    def dataset(self, name: str) -> DatasetCoverage | None:
        return next((d for d in self.datasets if d.dataset == name), None)

    def line(self) -> str:
        """One line for the go/no-go page, e.g. ``Data coverage: 29,994 of 30,000
        decisions valid (99.98%); 12 of 12 weeks with at least 630 valid decisions;
        business outcome known for 100.0%, correctness for 60.1%; cases 99.997% valid;
        ...; no flagged rows.``"""
        if not self.datasets:
            return (
                "Data coverage: not measured (the data came without their contract checks, "
                "so how much was quarantined is unknown)."
            )
        parts: list[str] = []
        dec = self.dataset("decisions")
        if dec is not None:
            parts.append(
                f"{dec.valid:,} of {dec.rows:,} decisions valid ({format_share(dec.valid, dec.rows)})"
            )
            if len(self.weeks):
                full = int((~self.weeks["thin"]).sum())
                need = self.thin_week_minimum or 0
                parts.append(
                    f"{full} of {len(self.weeks)} weeks with at least {math.ceil(need):,} valid "
                    "decisions"
                )
            o = self.outcome
            if o.get("decisions_seen"):
                text = "business outcome known for " + format_share(
                    o["outcome_known"], o["decisions_seen"]
                )
                if o.get("valid"):
                    text += f", correctness for {format_share(o['correct_known'], o['valid'])}"
                parts.append(text)
        else:
            parts.append("no decision log")
        others = [d for d in self.datasets if d.dataset != "decisions"]
        parts += [
            f"{d.dataset} {format_share(d.valid, d.rows)} valid" for d in others if d.quarantined
        ]
        clean = [d.dataset for d in others if not d.quarantined]
        if clean:
            parts.append(f"{', '.join(clean)} {'all ' if len(clean) > 1 else ''}valid")
        flagged = {
            f"{d.dataset}: {flag}": n for d in self.datasets for flag, n in d.flags.items() if n
        }
        if flagged:
            parts.append(
                "flagged rows (kept): " + ", ".join(f"{k} {n:,}" for k, n in flagged.items())
            )
        else:
            parts.append("no flagged rows")
        verdict = (
            "within the data_sufficiency limits"
            if self.sufficient
            else f"{len(self.blocking)} limit{'s' if len(self.blocking) != 1 else ''} breached"
        )
        return "Data coverage: " + "; ".join(parts) + f" ({verdict})."

    def to_result(self) -> dict[str, Any]:
        """A JSON-ready record (dates as ISO text); the findings are returned apart."""
        from pilot_lib.results import to_jsonable

        return to_jsonable(
            {
                "line": self.line(),
                "sufficient": self.sufficient,
                "settings": self.settings,
                "datasets": [d.to_result() for d in self.datasets],
                "decisions_by_week": self.weeks.to_dict(orient="records"),
                "decisions_without_week": dict(self.without_week),
                "decisions_by_prompt_version": self.versions.to_dict(orient="records"),
                "thin_week_minimum": self.thin_week_minimum,
                "outcome": dict(self.outcome),
                "blocking": [f.code for f in self.blocking],
            }
        )


def missing_coverage_line() -> str:
    """The coverage line when no coverage was computed (a phase 2 result from before it)."""
    return (
        "Data coverage: not measured (the phase 2 result predates the data-sufficiency check); "
        "rerun phase 2 to see how much of the evidence is valid."
    )


# ---- engine helpers -------------------------------------------------------------------------


def _as_timestamp(col: ir.Column) -> ir.TimestampColumn:
    """A quarantined row's raw timestamp as a timestamp (null when it does not parse),
    read the way the contract reads it (text with an offset converted to UTC)."""
    target = idt.Timestamp(scale=6)
    typ = col.type()
    if typ.is_timestamp():
        return col
    if typ.is_string():
        return col.try_cast(idt.Timestamp(timezone="UTC")).cast(target)
    return col.try_cast(target)


def _week_counts(
    table: ir.Table, ts: ir.TimestampColumn, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """Rows per Monday week of ``ts`` inside [start, end); ``week`` null when ``ts`` is null,
    the literal text ``outside`` when it lies outside the window."""
    inside = (ts >= start) & (ts < end)
    week = ts.truncate("W").cast("date").cast("string")
    key = ibis.cases((ts.isnull(), UNKNOWN_WEEK), (~inside, OUTSIDE_WINDOW), else_=week)
    out = table.select(week=key).group_by("week").aggregate(rows=ibis._.count()).execute()
    return out.astype({"rows": "int64"})


def _version_counts(table: ir.Table) -> pd.DataFrame:
    version = table.prompt_version.cast("string")
    key = ibis.ifelse(version.isnull() | (version.strip() == ""), NO_VERSION, version)
    out = table.select(v=key).group_by("v").aggregate(rows=ibis._.count()).execute()
    return out.rename(columns={"v": "prompt_version"}).astype({"rows": "int64"})


def _windows_weeks(start: dt.date, end: dt.date) -> list[tuple[dt.date, int]]:
    """Mondays of the weeks overlapping [start, end] (inclusive days), with the days inside."""
    monday = start - dt.timedelta(days=start.weekday())
    weeks = []
    while monday <= end:
        first = max(monday, start)
        last = min(monday + dt.timedelta(days=6), end)
        weeks.append((monday, (last - first).days + 1))
        monday += dt.timedelta(days=7)
    return weeks


def _decision_groups(
    pilot: Pilot, valid: ir.Table, quarantined: ir.Table | None
) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    pw = pilot.pilot_window
    start = dt.datetime.combine(pw.start, dt.time())
    end = dt.datetime.combine(pw.end + dt.timedelta(days=1), dt.time())
    v_weeks = _week_counts(valid, valid.timestamp, start, end)
    v_versions = _version_counts(valid)
    if quarantined is not None and "timestamp" in quarantined.columns:
        q_weeks = _week_counts(quarantined, _as_timestamp(quarantined.timestamp), start, end)
    else:
        q_weeks = pd.DataFrame({"week": [], "rows": []})
    if quarantined is not None and "prompt_version" in quarantined.columns:
        q_versions = _version_counts(quarantined)
    else:
        q_versions = pd.DataFrame({"prompt_version": [], "rows": []})
    v_w = dict(zip(v_weeks["week"], v_weeks["rows"], strict=True))
    q_w = dict(zip(q_weeks["week"], q_weeks["rows"], strict=True))
    rows = []
    for monday, days in _windows_weeks(pw.start, pw.end):
        key = monday.isoformat()
        rows.append(
            {
                "week": monday,
                "days_in_window": days,
                "valid": int(v_w.get(key, 0)),
                "quarantined": int(q_w.get(key, 0)),
            }
        )
    weeks = pd.DataFrame(rows, columns=["week", "days_in_window", "valid", "quarantined"])
    without = {
        UNKNOWN_WEEK: int(q_w.get(UNKNOWN_WEEK, 0)),
        OUTSIDE_WINDOW: int(q_w.get(OUTSIDE_WINDOW, 0)),
    }
    versions = (
        pd.DataFrame({"prompt_version": v_versions["prompt_version"], "valid": v_versions["rows"]})
        .merge(
            pd.DataFrame(
                {"prompt_version": q_versions["prompt_version"], "quarantined": q_versions["rows"]}
            ),
            on="prompt_version",
            how="outer",
        )
        .fillna(0)
        .astype({"valid": "int64", "quarantined": "int64"})
        .sort_values("prompt_version", kind="stable")
        .reset_index(drop=True)
    )
    return weeks, without, versions


def _judge_shares(frame: pd.DataFrame, limit: float, min_rows: int) -> pd.DataFrame:
    total = frame["valid"] + frame["quarantined"]
    frame = frame.copy()
    frame["quarantined_share"] = (frame["quarantined"] / total.where(total > 0)).fillna(0.0)
    frame["judged"] = total >= min_rows
    frame["above_limit"] = frame["judged"] & (frame["quarantined_share"] > limit)
    return frame


def _outcome_unknown_in_quarantine(quarantined: ir.Table | None) -> int:
    """Quarantined decisions whose ``accepted`` is missing or does not parse."""
    if quarantined is None or "accepted" not in quarantined.columns:
        return 0
    from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN

    q = quarantined
    unknown = q.accepted.isnull() | (q[QUARANTINE_RULE_COLUMN] == "unparseable accepted")
    if q.accepted.type().is_string():
        unknown = unknown | (q.accepted.strip() == "")
    n = q.aggregate(n=unknown.cast("int64").sum()).execute()["n"].iloc[0]
    return 0 if pd.isna(n) else int(n)


def _weeks_text(weeks: list[dt.date]) -> str:
    def day(d: dt.date) -> str:
        return f"{d.day} {d:%b %Y}"

    if len(weeks) <= 4:
        return ", ".join(f"the week of {day(w)}" for w in weeks)
    return f"{len(weeks)} weeks, from the week of {day(weeks[0])} to the week of {day(weeks[-1])}"


def _rules_text(by_rule: list[dict[str, Any]]) -> str:
    top = by_rule[:2]
    return "; ".join(f"'{r['rule']}' {int(r['rows']):,}" for r in top)


# ---- the measurement ------------------------------------------------------------------------


def data_coverage(pilot: Pilot, data: Any) -> DataCoverage:
    """Measure how much of the pilot's evidence is valid, against ``pilot.data_sufficiency``.

    Parameters
    ----------
    pilot:
        The loaded pilot file (windows, limits).
    data:
        :class:`~pilot_lib.ingest.evidence.PilotData` (from the evidence store or an
        in-memory check): its ``checks`` give rows, valid, quarantined, rules and flags
        per data set; its decision tables give the counts per week and prompt version.
        Data without ``checks`` (tables handed in by hand) gives an empty coverage
        (no data set, no finding) whose line says so.

    Returns
    -------
    DataCoverage
        Counts, the summary line, and findings (blocking above a limit; warnings for
        flags below their limit). A pilot without a decision log gets no week,
        version or outcome figures (the KPIs then have no data, and say so).
    """
    ds = pilot.data_sufficiency
    datasets: list[DatasetCoverage] = []
    checks = getattr(data, "checks", None) or {}
    for name in DATASET_NAMES:
        check = checks.get(name)
        if check is None:
            continue
        by_rule = [
            {"rule": str(r.rule), "rows": int(r.rows)}
            for r in check.by_rule.itertuples(index=False)
        ]
        datasets.append(
            DatasetCoverage(
                dataset=name,
                rows=int(check.rows),
                valid=int(check.valid),
                quarantined=int(check.quarantined),
                limit=ds.limit_for(name, int(check.rows)),
                by_rule=by_rule,
                flags={k: int(v) for k, v in (getattr(check, "flags", None) or {}).items()},
            )
        )
    weeks = pd.DataFrame(
        columns=[
            "week",
            "days_in_window",
            "valid",
            "quarantined",
            "quarantined_share",
            "judged",
            "above_limit",
            "thin",
        ]
    )
    versions = pd.DataFrame(
        columns=[
            "prompt_version",
            "valid",
            "quarantined",
            "quarantined_share",
            "judged",
            "above_limit",
        ]
    )
    without: dict[str, int] = {UNKNOWN_WEEK: 0, OUTSIDE_WINDOW: 0}
    minimum: float | None = None
    outcome: dict[str, Any] = {}
    valid = data.table("decisions") if checks else None
    dec = next((d for d in datasets if d.dataset == "decisions"), None)
    if valid is not None and dec is not None:
        quarantined = data.quarantined("decisions")
        weeks, without, versions = _decision_groups(pilot, valid, quarantined)
        weeks = _judge_shares(weeks, ds.max_group_quarantined_share, ds.min_group_rows)
        versions = _judge_shares(versions, ds.max_group_quarantined_share, ds.min_group_rows)
        # the reference pace: the median over full weeks that hold decisions (weeks with
        # none are thin anyway, and must not drag the reference to zero)
        pace = weeks["valid"] / weeks["days_in_window"]
        held = weeks["valid"] > 0
        full = held & (weeks["days_in_window"] == 7)
        ref = pace[full] if full.any() else pace[held]
        median_pace = float(ref.median()) if len(ref) else 0.0
        minimum = ds.min_week_share * median_pace * 7
        needed = ds.min_week_share * median_pace * weeks["days_in_window"]
        weeks["thin"] = (weeks["valid"] == 0) | (weeks["valid"] < needed)
        traces = ((getattr(data, "manifest", None) or {}).get("datasets") or {}).get(
            "decisions", {}
        ).get("traces") or {}
        without_outcome = int(
            (traces.get("reconciliation") or {}).get("decisions_without_outcome") or 0
        )
        unknown_q = _outcome_unknown_in_quarantine(quarantined)
        seen = dec.rows + without_outcome
        correct_known = 0
        # live decisions: shadow ones (data.shadow_decisions()) are not the agent's record
        live = dec.valid
        if dec.valid and "correct" in valid.columns:
            row = (
                valid.aggregate(n=valid.correct.notnull().cast("int64").sum(), live=valid.count())
                .execute()
                .iloc[0]
            )
            correct_known = int(row["n"] or 0)
            live = int(row["live"] or 0)
        outcome = {
            "decisions_seen": seen,
            "without_outcome_row": without_outcome,
            "quarantined_without_outcome": unknown_q,
            "outcome_known": seen - without_outcome - unknown_q,
            "outcome_known_share": (seen - without_outcome - unknown_q) / seen if seen else None,
            "valid": dec.valid,
            "correct_known": correct_known,
            "correct_known_share": correct_known / live if live else None,
        }
    cov = DataCoverage(
        pilot=pilot.name,
        settings=ds.model_dump(),
        datasets=datasets,
        weeks=weeks.reset_index(drop=True),
        without_week=without,
        versions=versions.reset_index(drop=True),
        thin_week_minimum=minimum,
        outcome=outcome,
    )
    cov.findings = _findings(pilot, cov)
    return cov


def _findings(pilot: Pilot, cov: DataCoverage) -> list[Finding]:
    ds = pilot.data_sufficiency
    out: list[Finding] = []
    group_limit = _limit_text(ds.max_group_quarantined_share)
    weeks_above = (
        [pd.Timestamp(w).date() for w in cov.weeks.loc[cov.weeks["above_limit"], "week"]]
        if len(cov.weeks)
        else []
    )
    vers_above = (
        cov.versions.loc[cov.versions["above_limit"]] if len(cov.versions) else cov.versions
    )
    group_parts = []
    if len(vers_above):
        group_parts.append(
            "prompt version"
            + ("s " if len(vers_above) > 1 else " ")
            + ", ".join(
                f"{r.prompt_version} ({format_share(int(r.quarantined), int(r.valid + r.quarantined))} "
                "quarantined)"
                for r in vers_above.itertuples(index=False)
            )
        )
    if weeks_above:
        group_parts.append(
            f"{len(weeks_above)} of {len(cov.weeks)} weeks of the pilot window ({_weeks_text(weeks_above)})"
        )
    group_text = ""
    if group_parts:
        group_text = (
            " Above the "
            + group_limit
            + " limit per week and prompt version: "
            + "; ".join(group_parts)
            + ". The KPIs describe the rest of the pilot only."
        )
    group_evidence = {
        "prompt_versions_above_limit": [str(v) for v in vers_above["prompt_version"]]
        if len(vers_above)
        else [],
        "weeks_above_limit": [w.isoformat() for w in weeks_above],
        "group_limit": ds.max_group_quarantined_share,
    }
    group_reported = False
    for d in cov.datasets:
        if not d.above_limit:
            continue
        noun = _NOUNS.get(d.dataset, d.dataset)
        msg = (
            f"{PREFIX}{d.quarantined:,} of {d.rows:,} {noun} ({format_share(d.quarantined, d.rows)}) "
            f"are quarantined, above the {_limit_text(d.limit)} limit for {d.dataset} "
            f"(most often: {_rules_text(d.by_rule)})."
        )
        evidence: dict[str, Any] = {
            "dataset": d.dataset,
            "rows": d.rows,
            "quarantined": d.quarantined,
            "share": d.share,
            "limit": d.limit,
            "by_rule": d.by_rule[:5],
        }
        if d.dataset == "decisions" and group_text:
            msg += group_text
            evidence |= group_evidence
            group_reported = True
        out.append(Finding(PHASE, "incomplete_dataset", "blocking", msg, evidence))
    if group_text and not group_reported:
        msg = PREFIX + group_text.strip()[0].lower() + group_text.strip()[1:]
        out.append(Finding(PHASE, "incomplete_weeks_or_versions", "blocking", msg, group_evidence))

    thin = cov.weeks.loc[cov.weeks["thin"]] if len(cov.weeks) else cov.weeks
    if len(thin) > ds.max_thin_weeks:
        weeks = [pd.Timestamp(w).date() for w in thin["week"]]
        empty = int((thin["valid"] == 0).sum())
        msg = (
            f"{PREFIX}{len(thin)} of {len(cov.weeks)} weeks of the pilot window have "
            f"{'no or ' if empty else ''}few valid decisions ({_weeks_text(weeks)}; "
            f"{empty} with none): below {_limit_text(ds.min_week_share)} of the median week's pace "
            f"(at least {math.ceil(cov.thin_week_minimum or 0):,} in a full week); the pilot file "
            f"allows {ds.max_thin_weeks}."
        )
        out.append(
            Finding(
                PHASE,
                "thin_weeks",
                "blocking",
                msg,
                {
                    "weeks": [w.isoformat() for w in weeks],
                    "valid": [int(x) for x in thin["valid"]],
                    "minimum_full_week": cov.thin_week_minimum,
                    "max_thin_weeks": ds.max_thin_weeks,
                },
            )
        )

    o = cov.outcome
    if o.get("decisions_seen"):
        share = o["outcome_known_share"]
        if share is not None and share < ds.min_outcome_known_share:
            unknown = o["decisions_seen"] - o["outcome_known"]
            msg = (
                f"{PREFIX}the business outcome (accepted) is unknown for {unknown:,} of "
                f"{o['decisions_seen']:,} decisions ({format_share(unknown, o['decisions_seen'])}); "
                f"the pilot file requires it for at least {_limit_text(ds.min_outcome_known_share)}."
            )
            out.append(Finding(PHASE, "outcome_unknown", "blocking", msg, dict(o)))
        c_share = o.get("correct_known_share")
        if c_share is not None and c_share < ds.min_correct_known_share:
            msg = (
                f"{PREFIX}whether the decision was correct is known for only "
                f"{o['correct_known']:,} of {o['valid']:,} valid decisions "
                f"({format_share(o['correct_known'], o['valid'])}), below the "
                f"{_limit_text(ds.min_correct_known_share)} the pilot file requires for the "
                "calibration evidence."
            )
            out.append(Finding(PHASE, "correctness_unknown", "blocking", msg, dict(o)))

    for d in cov.datasets:
        for flag, n in d.flags.items():
            if not n:
                continue
            share = n / d.valid if d.valid else 0.0
            noun = _NOUNS.get(d.dataset, d.dataset)
            evidence = {"dataset": d.dataset, "flag": flag, "rows": n, "share": share}
            if share > ds.max_flagged_share:
                msg = (
                    f"{PREFIX}{n:,} of {d.valid:,} valid {noun} ({format_share(n, d.valid)}) "
                    f"are flagged '{flag}', above the {_limit_text(ds.max_flagged_share)} limit: "
                    "the rows contradict the pilot's own rules and the figures built on them are "
                    "in doubt."
                )
                out.append(Finding(PHASE, "flagged_rows", "blocking", msg, evidence))
            else:
                msg = (
                    f"{n:,} of {d.valid:,} valid {noun} ({format_share(n, d.valid)}) are flagged "
                    f"'{flag}': kept and used, within the {_limit_text(ds.max_flagged_share)} "
                    "limit; worth a look."
                )
                out.append(Finding(PHASE, "flagged_rows", "warning", msg, evidence))
    return out

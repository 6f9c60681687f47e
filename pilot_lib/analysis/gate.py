"""Phase 5: the go/no-go gate.

Every KPI threshold written in the pilot file is judged against the phase 2
result, with its interval and sample size:

- **PASS**: the whole interval clears the threshold, on at least ``min_samples``.
- **FAIL**: the estimate itself misses the threshold (on at least ``min_samples``).
- **INCONCLUSIVE**: the estimate clears the threshold but the interval does not,
  or the sample is below ``min_samples``, or there is no data. A small sample is
  inconclusive even when the estimate misses: too few cases cannot prove a
  failure either.

Blocking findings from phases 3 and 4 (significant drift in a key feature, a
control chart in breach at the end of the window, a failed kill-switch drill, an
approval violation) stand beside the KPIs, and so do phase 2's data-sufficiency
findings: evidence with more quarantined or missing rows than the pilot file's
``data_sufficiency`` limits allow is a blocking finding ("The evidence is
incomplete: ..."). The rationale always carries the data-coverage line. The decision:

- **GO** only when every KPI passes and no blocking finding stands;
- **NO-GO** when any KPI fails or any blocking finding stands;
- **EXTEND** otherwise: collect more data. For each inconclusive KPI the gate
  estimates how many more samples would settle it, assuming the estimate holds,
  and how many more weeks that takes at the pace the pilot window gathered them
  (``n`` over the window's weeks; not for adoption, whose sample is users, not
  weeks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pandas as pd

from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.stats import sample_size_to_clear
from pilot_lib.config import KPI_NAMES, KpiThreshold, Pilot

__all__ = ["GateDecision", "KpiVerdict", "evaluate_gate", "format_value", "judge_kpi"]

Status = Literal["PASS", "FAIL", "INCONCLUSIVE"]
Decision = Literal["GO", "NO-GO", "EXTEND"]

KPI_LABELS = {
    "task_completion_rate": "Task completion (business: accepted without correction)",
    "technical_completion_rate": "Task completion (technical: well-formed output)",
    "efficiency_gain": "Process efficiency gain (wall-clock cycle time)",
    "adoption_rate": "User adoption, first month",
    "override_rate": "Override rate",
    "cost_per_decision": "Cost per decision",
    "escalation_rate": "Escalation rate",
}

#: The phases whose findings can block a GO.
BLOCKING_PHASES = ("drift_analysis", "incident_drill_review", "kpi_baselining")


def format_value(value: float | None, unit: str) -> str:
    """``0.861`` as ``86.1%`` for proportions, ``2.1`` as ``$2.10`` for US dollars; ``no data`` for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "no data"
    if unit == "proportion":
        return f"{value * 100:.1f}%"
    if unit == "usd":
        return f"${value:,.2f}"
    return f"{value:,.3g}"


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class KpiVerdict:
    """One KPI judged against its written threshold."""

    kpi: str
    label: str
    status: Status
    estimate: float | None
    low: float | None
    high: float | None
    n: int
    unit: str
    comparator: str
    threshold: float
    min_samples: int
    reason: str
    additional_samples: int | None = None  # for INCONCLUSIVE: more samples that would settle it
    additional_weeks: int | None = None  # ... and the weeks they take at the pilot's pace

    @property
    def threshold_text(self) -> str:
        return f"{self.comparator} {format_value(self.threshold, self.unit)}"

    @property
    def measured_text(self) -> str:
        if self.estimate is None:
            return "no data"
        if self.low is None or self.high is None:
            return format_value(self.estimate, self.unit)
        return (
            f"{format_value(self.estimate, self.unit)} "
            f"(95% CI {format_value(self.low, self.unit)} to {format_value(self.high, self.unit)})"
        )


def _extra_samples(
    th: KpiThreshold, estimate: float, low: float, high: float, n: int
) -> int | None:
    """Samples beyond ``n`` that would make the interval clear the threshold, estimate held fixed."""
    if th.unit == "proportion" and th.kpi != "efficiency_gain" and 0 <= estimate <= 1:
        needed = sample_size_to_clear(estimate, th.value)
    else:
        # Half-width shrinks as 1/sqrt(n): n_needed = n * (half / distance)^2.
        half = (high - low) / 2
        distance = abs(estimate - th.value)
        if distance == 0 or half <= 0 or not math.isfinite(half):
            return None
        needed = math.ceil(n * (half / distance) ** 2)
    if needed is None:
        return None
    return max(needed - n, 1)


def judge_kpi(th: KpiThreshold, measured: dict[str, Any] | None) -> KpiVerdict:
    """Judge one threshold against a phase 2 KPI record (``estimate``, ``low``, ``high``, ``n``).

    ``measured`` may be ``None`` (the KPI was not computed): INCONCLUSIVE, no data.
    """
    label = KPI_LABELS.get(th.kpi, th.kpi)
    unit = KPI_NAMES[th.kpi]
    measured = measured or {}
    est, low, high = (_finite(measured.get(k)) for k in ("estimate", "low", "high"))
    n = int(measured.get("n") or 0)
    base = dict(
        kpi=th.kpi,
        label=label,
        estimate=est,
        low=low,
        high=high,
        n=n,
        unit=unit,
        comparator=th.comparator,
        threshold=th.value,
        min_samples=th.min_samples,
    )
    thr = format_value(th.value, unit)
    if est is None:
        note = str(measured.get("note") or "the KPI could not be computed")
        reason = note if note.lower().startswith("no data") else f"no data: {note}"
        return KpiVerdict(
            status="INCONCLUSIVE",
            reason=f"{reason}; more samples cannot help until the data set and the pilot window hold data",
            **base,
        )
    if n < th.min_samples:
        return KpiVerdict(
            status="INCONCLUSIVE",
            reason=(
                f"only {n:,} samples, below the {th.min_samples:,} agreed as the minimum; "
                "the estimate cannot settle the threshold either way"
            ),
            additional_samples=th.min_samples - n,
            **base,
        )
    if not th.met_by(est):
        return KpiVerdict(
            status="FAIL",
            reason=f"measured {format_value(est, unit)}, which misses the agreed {th.comparator} {thr}",
            **base,
        )
    # Estimate clears: does the whole interval?
    bound = low if th.higher_is_better else high
    if bound is not None and th.met_by(bound):
        return KpiVerdict(
            status="PASS",
            reason=(
                f"measured {format_value(est, unit)}; even the "
                f"{'lower' if th.higher_is_better else 'upper'} end of the 95% interval "
                f"({format_value(bound, unit)}) clears {th.comparator} {thr}"
            ),
            **base,
        )
    extra = None
    if low is not None and high is not None:
        extra = _extra_samples(th, est, low, high, n)
    return KpiVerdict(
        status="INCONCLUSIVE",
        reason=(
            f"measured {format_value(est, unit)} clears {th.comparator} {thr}, but the 95% interval "
            f"reaches {format_value(bound, unit)}: the data cannot yet rule out missing it"
        ),
        additional_samples=extra,
        **base,
    )


@dataclass
class GateDecision:
    """The outcome of the gate: a decision, the verdict per KPI, and the findings beside them."""

    pilot: str
    title: str
    decision: Decision
    verdicts: list[KpiVerdict]
    blocking: list[Finding]
    other_findings: list[Finding]
    rationale: str
    pilot_file_sha256: str
    integrity_warnings: list[str] = field(default_factory=list)
    missing_phases: list[str] = field(default_factory=list)
    #: Phase 2's data coverage (:mod:`pilot_lib.analysis.coverage`); None when not measured.
    data_coverage: dict[str, Any] | None = None

    @property
    def coverage_line(self) -> str:
        """The data-coverage line the go/no-go page always shows."""
        return _coverage_line(self.data_coverage)

    def verdict_table(self) -> pd.DataFrame:
        """One row per KPI: threshold, measured value with interval, n, status, reason."""
        return pd.DataFrame(
            [
                {
                    "KPI": v.label,
                    "threshold": v.threshold_text,
                    "measured": v.measured_text,
                    "n": f"{v.n:,}",
                    "status": v.status,
                    "why": v.reason,
                }
                for v in self.verdicts
            ],
            columns=["KPI", "threshold", "measured", "n", "status", "why"],
        )

    def extend_advice(self) -> pd.DataFrame:
        """For each INCONCLUSIVE KPI: how many more samples would settle it."""
        rows = [
            {
                "KPI": v.label,
                "now": f"{v.n:,}",
                "more samples needed": (
                    "no data yet: check the data set and the pilot window"
                    if v.estimate is None
                    else "unknown"
                    if v.additional_samples is None
                    else f"{v.additional_samples:,}"
                ),
                "more weeks at the pilot's pace": (
                    "" if v.additional_weeks is None else f"about {v.additional_weeks:,}"
                ),
            }
            for v in self.verdicts
            if v.status == "INCONCLUSIVE"
        ]
        return pd.DataFrame(
            rows, columns=["KPI", "now", "more samples needed", "more weeks at the pilot's pace"]
        )

    def to_result(self) -> dict[str, Any]:
        return {
            "pilot": self.pilot,
            "decision": self.decision,
            "rationale": self.rationale,
            "pilot_file_sha256": self.pilot_file_sha256,
            "verdicts": [_verdict_record(v) for v in self.verdicts],
            "blocking_findings": [f.__dict__ for f in self.blocking],
            "other_findings": [f.__dict__ for f in self.other_findings],
            "integrity_warnings": list(self.integrity_warnings),
            "missing_phases": list(self.missing_phases),
            "data_coverage": (
                None
                if self.data_coverage is None
                else self.data_coverage | {"line": self.coverage_line}
            ),
        }


def _verdict_record(v: KpiVerdict) -> dict[str, Any]:
    """A verdict as a result record; ``additional_weeks`` only where the gate estimated it."""
    record = v.__dict__ | {"threshold_text": v.threshold_text}
    if record["additional_weeks"] is None:
        del record["additional_weeks"]
    return record


#: What each KPI's sample counts, for the EXTEND advice (default: decisions).
_SAMPLE_NOUNS = {"efficiency_gain": "closed cases in the smaller cohort", "adoption_rate": "users"}


def _findings_of(results: dict[str, Any], phase: str) -> list[Finding]:
    res = results.get(phase) or {}
    raw = res.get("findings") or res.get("flags") or []
    out = []
    for d in raw:
        d = dict(d)
        d.setdefault("phase", phase)
        out.append(Finding.from_dict(d))
    return out


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _coverage_line(coverage: dict[str, Any] | None) -> str:
    from pilot_lib.analysis.coverage import missing_coverage_line

    if not coverage or not coverage.get("line"):
        return missing_coverage_line()
    return str(coverage["line"])


def _rationale(
    pilot: Pilot,
    decision: Decision,
    verdicts: list[KpiVerdict],
    blocking: list[Finding],
    missing: list[str],
    coverage: dict[str, Any] | None = None,
) -> str:
    agreed = "; ".join(f"{v.label.split(' (')[0].lower()} {v.threshold_text}" for v in verdicts)
    w = pilot.pilot_window
    lines = [
        f"Before the pilot started, the team agreed {len(verdicts)} thresholds for "
        f"{pilot.title} (owner: {pilot.owner}): {agreed}.",
        f"The pilot ran from {w.start:%d %B %Y} to {w.end:%d %B %Y}.",
        _coverage_line(coverage),
    ]
    passed = [v for v in verdicts if v.status == "PASS"]
    failed = [v for v in verdicts if v.status == "FAIL"]
    unsure = [v for v in verdicts if v.status == "INCONCLUSIVE"]
    if failed:
        lines.append(
            "It missed: "
            + "; ".join(
                f"{v.label.split(' (')[0].lower()} was {format_value(v.estimate, v.unit)} against "
                f"{v.threshold_text}"
                for v in failed
            )
            + "."
        )
    if passed:
        lines.append(
            "It met, with the whole 95% interval clear of the threshold: "
            + _join(
                [
                    f"{v.label.split(' (')[0].lower()} ({format_value(v.estimate, v.unit)})"
                    for v in passed
                ]
            )
            + "."
        )
    if unsure:
        lines.append(
            "Not yet settled by the data: "
            + _join([v.label.split(" (")[0].lower() for v in unsure])
            + "."
        )
    if blocking:
        lines.append("Blocking findings: " + " ".join(f.message for f in blocking))
    if missing:
        lines.append(f"Phase results missing: {_join(missing)}; their checks could not be made.")
    if decision == "GO":
        lines.append("Decision: GO. Every agreed threshold is met and nothing blocks scaling.")
    elif decision == "NO-GO":
        why = []
        if failed:
            why.append(
                f"{len(failed)} agreed threshold{'s' if len(failed) > 1 else ''} "
                f"{'were' if len(failed) > 1 else 'was'} missed"
            )
        if blocking:
            why.append(
                f"{len(blocking)} blocking finding{'s' if len(blocking) > 1 else ''} stand{'s' if len(blocking) == 1 else ''}"
            )
        lines.append(
            f"Decision: NO-GO, because {_join(why)}. Per the playbook, stop here, keep the "
            "lessons, and choose the next use case on evidence."
        )
    else:
        timed = [v for v in unsure if v.additional_weeks is not None]
        pace = ""
        if timed:
            longest = max(timed, key=lambda v: v.additional_weeks or 0)
            weeks = longest.additional_weeks or 0
            pace = (
                f" (at the pace of this pilot, about {weeks:,} more week{'s' if weeks != 1 else ''}"
                f" for {longest.label.split(' (')[0].lower()}: "
                f"{longest.additional_samples:,} more "
                f"{_SAMPLE_NOUNS.get(longest.kpi, 'decisions')})"
            )
        lines.append(
            "Decision: EXTEND. Nothing failed, but not every threshold is proven yet; collect the "
            f"additional samples listed below{pace} and rerun the gate."
        )
    return " ".join(lines)


#: KPIs whose sample does not grow with time (adoption counts users of the first month).
_NOT_PACED = ("adoption_rate",)


def _with_weeks(pilot: Pilot, v: KpiVerdict) -> KpiVerdict:
    """``v`` with the weeks its additional samples take at the pace of the pilot window."""
    if v.status != "INCONCLUSIVE" or not v.additional_samples or v.n <= 0:
        return v
    if v.kpi in _NOT_PACED:
        return v
    w = pilot.pilot_window
    weeks = ((w.end - w.start).days + 1) / 7
    if weeks <= 0:
        return v
    per_week = v.n / weeks
    return replace(v, additional_weeks=max(1, math.ceil(v.additional_samples / per_week)))


def evaluate_gate(
    pilot: Pilot,
    results: dict[str, Any],
    integrity_warnings: list[str] | None = None,
) -> GateDecision:
    """Judge every KPI threshold and decide GO, NO-GO or EXTEND.

    Parameters
    ----------
    pilot:
        The loaded pilot file (thresholds, title, windows).
    results:
        Phase results keyed by phase (``"kpi_baselining"``, ``"drift_analysis"``,
        ``"incident_drill_review"``...), each the ``result`` part of the phase's
        JSON file. ``kpi_baselining["kpis"]`` is a list of records with ``kpi``,
        ``estimate``, ``low``, ``high``, ``n``; other phases contribute
        ``findings`` (records with phase, code, severity, message, evidence).
    integrity_warnings:
        Warnings about the pilot file itself (thresholds edited after the pilot
        started), shown with the decision.
    """
    kpi_result = results.get("kpi_baselining") or {}
    coverage = kpi_result.get("data_coverage") if kpi_result else None
    measured = {k["kpi"]: k for k in (kpi_result.get("kpis") or [])}
    verdicts = [_with_weeks(pilot, judge_kpi(th, measured.get(th.kpi))) for th in pilot.kpis]
    findings: list[Finding] = []
    for phase in BLOCKING_PHASES:
        findings.extend(_findings_of(results, phase))
    blocking = [f for f in findings if f.severity == "blocking"]
    others = [f for f in findings if f.severity != "blocking"]
    missing = [
        p
        for p in ("kpi_baselining", "drift_analysis", "incident_drill_review")
        if not results.get(p)
    ]

    if any(v.status == "FAIL" for v in verdicts) or blocking:
        decision: Decision = "NO-GO"
    elif all(v.status == "PASS" for v in verdicts) and not missing:
        decision = "GO"
    else:
        decision = "EXTEND"
    return GateDecision(
        pilot=pilot.name,
        title=pilot.title,
        decision=decision,
        verdicts=verdicts,
        blocking=blocking,
        other_findings=others,
        rationale=_rationale(pilot, decision, verdicts, blocking, missing, coverage),
        pilot_file_sha256=pilot.file_hash,
        integrity_warnings=list(integrity_warnings or []),
        missing_phases=missing,
        data_coverage=coverage,
    )

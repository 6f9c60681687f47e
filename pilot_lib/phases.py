"""One function per phase: from a loaded pilot to that phase's analysis and result.

The phase notebooks call these to get their figures; the go/no-go phase calls
them too when an earlier phase's result file is missing (an analyst opening
phase 5 on its own), so a figure is computed the same way wherever it shows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from pilot_lib.analysis.findings import Finding
from pilot_lib.config import Pilot
from pilot_lib.results import ResultFileError, to_jsonable

__all__ = [
    "PHASE_SECTIONS",
    "DriftReview",
    "IncidentReview",
    "KpiReview",
    "Section",
    "UseCaseReview",
    "drift_phase",
    "gather_results",
    "incident_phase",
    "kpi_phase",
    "use_case_phase",
]


class Section(Protocol):
    """One analysis shown inside a phase beside its main figures (shadow mode, the
    golden set, the authority policy ...): its findings go to the gate, its result is
    stored under its key in the phase's result file."""

    findings: list[Finding]

    def to_result(self) -> dict[str, Any]: ...


#: The analyses each phase runs beside its main one: ``(result key, "module:function")``.
#: The function takes ``(pilot, data)`` and returns a :class:`Section`, or None when the
#: pilot has nothing for it (no data set, no setting) and there is nothing to say.
#: Kept as strings so that this module imports none of them until a phase runs.
PHASE_SECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "kpi_baselining": (
        ("shadow_mode", "pilot_lib.analysis.shadow:shadow_mode"),
        ("cost_attribution", "pilot_lib.analysis.costs:cost_attribution_section"),
        ("integration_health", "pilot_lib.analysis.integration:integration_health"),
    ),
    "drift_analysis": (
        ("risk_coverage", "pilot_lib.analysis.risk_coverage:risk_coverage"),
        ("prompt_promotion", "pilot_lib.analysis.promotion:prompt_promotion"),
        ("feedback_loops", "pilot_lib.analysis.promotion:feedback_loops"),
    ),
    "incident_drill_review": (
        ("audit_trail", "pilot_lib.analysis.audit_trail:audit_trail_review"),
        ("authority_policy", "pilot_lib.analysis.authority:authority_review"),
    ),
}


def phase_sections(phase: str, pilot: Pilot, data: Any) -> dict[str, Any]:
    """Run the :data:`PHASE_SECTIONS` of ``phase``; sections that return None are left out."""
    out: dict[str, Any] = {}
    for key, target in PHASE_SECTIONS.get(phase, ()):
        module, _, name = target.partition(":")
        section = getattr(importlib.import_module(module), name)(pilot, data)
        if section is not None:
            out[key] = section
    return out


def _section_findings(sections: dict[str, Any]) -> list[Finding]:
    return [f for section in sections.values() for f in section.findings]


def _with_sections(result: dict[str, Any], sections: dict[str, Any], key: str) -> dict[str, Any]:
    """``result`` with each section's result under its key and its findings under ``key``."""
    for name, section in sections.items():
        result[name] = section.to_result()
    result[key] = [*result.get(key, []), *to_jsonable(_section_findings(sections))]
    return result


@dataclass
class UseCaseReview:
    """Phase 1: the ranked candidates and the build-vs-buy scores (either may be missing)."""

    scored: pd.DataFrame | None
    build: Any  # scoring.BuildVsBuyResult | None
    settings: dict[str, Any]
    missing: list[str] = field(default_factory=list)
    #: Warnings about the pilot itself (a required team role nobody holds).
    findings: list[Finding] = field(default_factory=list)

    def to_result(self) -> dict[str, Any]:
        from pilot_lib.analysis.scoring import scoring_result

        if self.scored is not None:
            result = scoring_result(self.scored, self.build, self.settings)
        else:
            result = to_jsonable(
                {
                    "settings": self.settings,
                    "candidates": [],
                    "candidate_count": 0,
                    "top_pick": None,
                    "build_vs_buy": self.build.to_result() if self.build is not None else None,
                }
            )
        result["missing"] = list(self.missing)
        result["findings"] = to_jsonable(list(self.findings))
        return result


def use_case_phase(pilot: Pilot, data: Any, **overrides: Any) -> UseCaseReview:
    """Score the pilot's candidates data set and its build-vs-buy options.

    ``overrides`` replace settings from the pilot file for a what-if
    (``weights``, ``minimum``, ``margin``, ``pilot_weeks``); ``None`` values are
    ignored. A pilot without a candidates data set, or without build-vs-buy
    options, still gets a review: ``missing`` says what is absent and what that means.
    """
    from pilot_lib.analysis.scoring import (
        build_vs_buy,
        score_use_cases,
        scoring_settings,
        team_findings,
    )

    settings = scoring_settings(pilot) | {k: v for k, v in overrides.items() if v is not None}
    missing = []
    scored = None
    candidates = data.table("candidates") if data is not None else None
    if candidates is None:
        missing.append(
            "candidates: the pilot file names no candidates data set, so the choice of this "
            "use case cannot be checked against alternatives"
        )
    else:
        scored = score_use_cases(candidates, **settings)
    build = None
    if pilot.build_vs_buy is None:
        missing.append(
            "build_vs_buy: the pilot file lists no build-vs-buy options, so the platform choice "
            "is not on record"
        )
    else:
        build = build_vs_buy(pilot.build_vs_buy.options, pilot.build_vs_buy.weights)
    return UseCaseReview(
        scored=scored,
        build=build,
        settings=settings,
        missing=missing,
        findings=team_findings(pilot),
    )


class KpiReview:
    """Phase 2: the KPI table (:class:`pilot_lib.analysis.kpis.KpiTable`) and the data coverage.

    Reads like the KPI table (every attribute not defined here is the table's);
    ``flags`` adds the data-sufficiency findings to the table's, and
    :meth:`to_result` adds ``data_coverage`` and those findings to the table's result.
    """

    def __init__(self, table: Any, coverage: Any, sections: dict[str, Any] | None = None) -> None:
        self.table = table
        self.coverage = coverage  # coverage.DataCoverage
        #: The phase's other analyses (:data:`PHASE_SECTIONS`), by result key.
        self.sections = dict(sections or {})

    def __getattr__(self, name: str) -> Any:
        if name in ("table", "coverage", "sections"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        if name in self.__dict__.get("sections", {}):
            return self.sections[name]
        return getattr(self.table, name)

    @property
    def flags(self) -> list[Finding]:
        return [*self.table.flags, *self.coverage.findings, *_section_findings(self.sections)]

    def to_result(self) -> dict[str, Any]:
        result = self.table.to_result()
        result["findings"] = [*result.get("findings", []), *to_jsonable(self.coverage.findings)]
        result["data_coverage"] = self.coverage.to_result()
        return _with_sections(result, self.sections, "findings")


def kpi_phase(pilot: Pilot, data: Any, confidence: float = 0.95) -> KpiReview:
    """Phase 2: :func:`pilot_lib.analysis.kpis.compute_kpis` on the loaded data, with the
    data coverage (:func:`pilot_lib.analysis.coverage.data_coverage`) beside it.

    ``data`` None: the pilot's data are loaded through the contracts first.
    """
    from pilot_lib.analysis.coverage import data_coverage
    from pilot_lib.analysis.kpis import compute_kpis

    if data is None:
        from pilot_lib.ingest.contracts import load_pilot_data

        data = load_pilot_data(pilot)
    table = compute_kpis(pilot, data=data, confidence=confidence)
    return KpiReview(
        table, data_coverage(pilot, data), phase_sections("kpi_baselining", pilot, data)
    )


class DriftReview:
    """Phase 3: the drift report (:class:`pilot_lib.analysis.drift.DriftReport`) and the
    phase's other analyses (:data:`PHASE_SECTIONS`).

    Reads like the drift report (every attribute not defined here is the report's, or a
    section's by its key); ``findings`` and :meth:`to_result` add the sections'.
    """

    def __init__(self, report: Any, sections: dict[str, Any] | None = None) -> None:
        self.report = report
        self.sections = dict(sections or {})

    def __getattr__(self, name: str) -> Any:
        if name in ("report", "sections"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        if name in self.__dict__.get("sections", {}):
            return self.sections[name]
        return getattr(self.report, name)

    @property
    def findings(self) -> list[Finding]:
        return [*self.report.findings, *_section_findings(self.sections)]

    def to_result(self) -> dict[str, Any]:
        return _with_sections(self.report.to_result(), self.sections, "findings")


def drift_phase(pilot: Pilot, data: Any) -> DriftReview:
    """Phase 3: :func:`pilot_lib.analysis.drift.drift_report` on the loaded decision log,
    with the phase's other analyses (:data:`PHASE_SECTIONS`)."""
    from pilot_lib.analysis.drift import drift_report

    return DriftReview(drift_report(pilot, data), phase_sections("drift_analysis", pilot, data))


@dataclass
class IncidentReview:
    """Phase 4: the kill-switch drill review and the approval review (either may be missing)."""

    drills: Any  # drills.DrillReview | None
    approvals: Any  # approvals.ApprovalReview | None
    findings: list[Finding]
    #: The phase's other analyses (:data:`PHASE_SECTIONS`), by result key; their
    #: findings are in ``findings`` too.
    sections: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocking"]

    def to_result(self) -> dict[str, Any]:
        result = to_jsonable(
            {
                "drills": self.drills.to_result() if self.drills is not None else None,
                "approvals": self.approvals.to_result() if self.approvals is not None else None,
                "findings": self.findings,
                "passed": not self.blocking,
            }
        )
        for name, section in self.sections.items():
            result[name] = section.to_result()
        return result


def incident_phase(pilot: Pilot, data: Any, sla_minutes: float | None = None) -> IncidentReview:
    """Review the kill-switch drill and the approvals of a loaded pilot.

    No drill log is a blocking finding (the playbook requires a rehearsed kill
    switch before scaling); no approvals data set is a warning.
    """
    from pilot_lib.analysis.approvals import review_approvals
    from pilot_lib.analysis.drills import review_drills

    findings: list[Finding] = []
    events = data.table("drill_events") if data is not None else None
    drills = None
    if events is None:
        findings.append(
            Finding(
                "incident_drill_review",
                "no_drill_log",
                "blocking",
                "No kill-switch drill is on record: the pilot file names no drill_events data set. "
                "The playbook requires a rehearsed kill switch before scaling.",
            )
        )
    else:
        drills = review_drills(events, pilot.drills)
        findings.extend(drills.findings)
    approvals_table = data.table("approvals") if data is not None else None
    approvals = None
    if approvals_table is None:
        findings.append(
            Finding(
                "incident_drill_review",
                "no_approvals_log",
                "warning",
                "No approvals data set: the human-approval workflow and its SLA were not tested.",
            )
        )
    else:
        from pilot_lib.analysis.authority import load_policy_versions

        versions = load_policy_versions(pilot, data)[0]  # thresholds changed mid-pilot
        approvals = review_approvals(
            approvals_table, pilot.approvals, sla_minutes=sla_minutes, versions=versions
        )
        findings.extend(approvals.findings)
    sections = phase_sections("incident_drill_review", pilot, data)
    findings.extend(_section_findings(sections))
    return IncidentReview(drills=drills, approvals=approvals, findings=findings, sections=sections)


_COMPUTE = {
    "use_case_scoring": use_case_phase,
    "kpi_baselining": kpi_phase,
    "drift_analysis": drift_phase,
    "incident_drill_review": incident_phase,
}


def gather_results(
    ctx: Any, phases: tuple[str, ...] | None = None, recompute: bool = False
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Earlier phases' results for the gate: read from ``ctx.output_dir``, else computed now.

    Returns ``(results, provenance)``: results keyed by phase, and a small table
    saying, per phase, whether the figures came from the run folder or were
    computed in this notebook. A result file written for a different pilot file
    (thresholds edited since) is not used: the phase is recomputed and the
    provenance says why.
    """
    wanted = phases or (
        "use_case_scoring",
        "kpi_baselining",
        "drift_analysis",
        "incident_drill_review",
    )
    results: dict[str, Any] = {}
    rows = []
    for phase in wanted:
        note = ""
        try:
            stored = None if recompute else ctx.earlier(phase)
        except ResultFileError as exc:
            stored, note = None, f"stored result not used: {exc}"
        if stored is not None:
            results[phase] = stored
            rows.append({"phase": phase, "source": "read from the run folder", "note": note})
            continue
        if ctx.data is None:
            ctx.load_data()
        results[phase] = _COMPUTE[phase](ctx.pilot, ctx.data).to_result()
        rows.append({"phase": phase, "source": "computed in this notebook", "note": note})
    return results, pd.DataFrame(rows, columns=["phase", "source", "note"])

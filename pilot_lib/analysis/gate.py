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
  estimates how many more samples would settle it with probability
  ``statistics: power`` (80% by default) if the true value equals the estimate
  (:mod:`pilot_lib.analysis.power`, the classical one-sided power calculation
  at the interval's 2.5% per side, times the design effect when decisions
  cluster), and how many more weeks that takes at the pace the pilot window
  gathered them (``n`` over the window's weeks; not for adoption, whose sample
  is users, not weeks).

**Interim looks** (``statistics: interim: true`` or ``pilot-workbook run
--interim``): every thresholded KPI is judged with an anytime-valid confidence
sequence (:mod:`pilot_lib.analysis.sequential`) instead of its fixed 95%
interval, so looking every week does not inflate the chance of a false GO. A
KPI PASSES when the whole sequence clears the threshold and FAILS only when
the whole sequence misses it (an estimate that misses early is not yet proof);
anything else stays INCONCLUSIVE. An interim GO may stop the pilot early; an
interim EXTEND means "continue to the window's end", where the final run uses
the fixed intervals.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pandas as pd

from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.power import DEFAULT_POWER, proportion_sample_size, side_sample_size
from pilot_lib.analysis.sequential import anytime_valid_bounds
from pilot_lib.config import KPI_NAMES, KpiThreshold, Pilot

__all__ = [
    "MAX_REASONS",
    "GateDecision",
    "KpiVerdict",
    "Reason",
    "evaluate_gate",
    "format_value",
    "interim_fraction",
    "agreed_text",
    "finding_section",
    "judge_kpi",
    "plural",
    "plural_text",
]

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


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """``1 action``, ``2 actions``, ``20,000 decisions``: a count with thousands separators
    and its noun in the right number (``plural_form`` for irregular nouns, default noun + "s")."""
    return f"{n:,} {noun if n == 1 else (plural_form or noun + 's')}"


_COUNTED = re.compile(
    r"\b(?P<n>\d[\d,]*)(?P<mid>(?: [A-Za-z-]+){0,2}?) (?P<noun>[A-Za-z-]+?)\(s\)(?P<verb> (?:were|was))?"
)


def plural_text(text: str) -> str:
    """Text with every ``N noun(s)`` written in the right number: ``1 action(s) were`` becomes
    ``1 action was``, ``3 time(s)`` becomes ``3 times``. Other text is left as it is."""

    def fix(m: re.Match[str]) -> str:
        one = m["n"].replace(",", "") == "1"
        verb = m["verb"] and (" was" if one else " were")
        return f"{m['n']}{m['mid']} {m['noun'] if one else m['noun'] + 's'}{verb or ''}"

    return _COUNTED.sub(fix, text)


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
    power: float | None = None  # the chance those samples settle it, if the estimate holds
    anytime_valid: bool = False  # low/high are an interim look's confidence sequence
    fixed_low: float | None = None  # ... and the fixed-horizon interval it widens
    fixed_high: float | None = None
    #: PASS (fragile): why the PASS could flip (empty when robust or not a PASS)
    fragile: tuple[str, ...] = ()
    #: how many standard errors the gate's bound clears (PASS) or the estimate misses (FAIL) by
    margin_se: float | None = None
    #: FAIL whose interval still holds the threshold: "missed, but not shown to miss"
    missed_not_shown: bool = False
    #: the gate's wrong-GO / wrong-NO-GO rates at this KPI's size and clustering
    #: (:func:`pilot_lib.analysis.operating.operating_characteristics`); None without an SE
    operating: dict[str, Any] | None = None

    @property
    def status_text(self) -> str:
        """``PASS (fragile)``, ``FAIL (not shown)`` or the status itself."""
        if self.status == "PASS" and self.fragile:
            return "PASS (fragile)"
        if self.status == "FAIL" and self.missed_not_shown:
            return "FAIL (not shown)"
        return self.status

    @property
    def threshold_text(self) -> str:
        return f"{self.comparator} {format_value(self.threshold, self.unit)}"

    @property
    def interval_name(self) -> str:
        """``95% CI`` or, at an interim look, ``95% anytime-valid CI``."""
        return "95% anytime-valid CI" if self.anytime_valid else "95% CI"

    @property
    def measured_text(self) -> str:
        if self.estimate is None:
            return "no data"
        if self.low is None or self.high is None:
            return format_value(self.estimate, self.unit)
        return (
            f"{format_value(self.estimate, self.unit)} ({self.interval_name} "
            f"{format_value(self.low, self.unit)} to {format_value(self.high, self.unit)})"
        )


def _design_effect(measured: dict[str, Any]) -> float:
    """The KPI interval's design effect (variance over the independent-draws one); 1 when absent."""
    deff = _finite(measured.get("design_effect"))
    return deff if deff is not None and deff > 0 else 1.0


def _extra_samples(
    th: KpiThreshold,
    estimate: float,
    low: float,
    high: float,
    n: int,
    power: float = DEFAULT_POWER,
    confidence: float = 0.95,
    design_effect: float = 1.0,
) -> int | None:
    """Samples beyond ``n`` that settle the KPI with probability ``power`` if the estimate holds.

    A proportion (not the efficiency gain, a ratio of medians): the one-sided
    power calculation of :func:`pilot_lib.analysis.power.proportion_sample_size`
    times ``design_effect``. Anything else: the side of the fixed interval that
    must clear (:func:`pilot_lib.analysis.power.side_sample_size`). ``None``
    when no sample settles it (the estimate on the threshold, no finite bound).
    """
    if th.unit == "proportion" and th.kpi != "efficiency_gain" and 0 <= estimate <= 1:
        needed = proportion_sample_size(estimate, th.value, power, confidence, design_effect)
    else:
        bound = low if th.higher_is_better else high
        needed = side_sample_size(n, estimate, bound, th.value, power, confidence)
    if needed is None:
        return None
    return max(needed - n, 1)


def _fragility(
    th: KpiThreshold,
    measured: dict[str, Any],
    bound: float,
    margin: float | None,
    margin_se: float,
) -> tuple[str, ...]:
    """Why a PASS could flip: a thin margin, another method, or one week left out."""
    unit = KPI_NAMES[th.kpi]
    side = "low" if th.higher_is_better else "high"
    why = []
    if margin is not None and margin < margin_se:
        why.append(
            f"its bound clears the threshold by only {margin:.2f} standard errors "
            f"(less than {margin_se:g})"
        )
    if measured.get("interval_method") == "few-cluster bootstrap":
        cr1 = _finite(measured.get(f"{side}_cr1"))
        if cr1 is not None and not th.met_by(cr1):
            why.append(f"the CR1 interval's bound ({format_value(cr1, unit)}) does not clear it")
    loo = _finite(measured.get(f"loo_{side}"))
    if loo is not None and not th.met_by(loo):
        why.append(
            f"leaving out one {measured.get('cluster_by') or 'cluster'} the bound reaches "
            f"{format_value(loo, unit)}"
        )
    return tuple(why)


def _robust_samples(
    th: KpiThreshold, measured: dict[str, Any], est: float, bound: float, n: int, margin_se: float
) -> int:
    """More samples after which a fragile PASS would be robust, if the estimate holds.

    The standard error shrinks as ``1 / sqrt(n)``, so every bound's distance from
    the estimate does too. The farthest-reaching bound of the three checks sets
    the pace: the gate's bound plus ``margin_se`` SEs (the bound being ``q = 1.96``
    SEs from the estimate), the CR1 bound and the worst leave-one-out bound. With
    ``h`` that distance and ``gap = |est - threshold|``, ``n`` grows by
    ``k = (h / gap)^2``: returns ``ceil(n k) - n`` (at least 1; 0 when the
    estimate sits on the threshold). More samples at the pilot's pace are also
    more weeks, which is what a leave-one-week-out fragility needs.
    """
    gap = abs(est - th.value)
    if gap <= 0 or n <= 0:
        return 0
    q = 1.959963984540054
    h = abs(est - bound) * (1 + margin_se / q)
    side = "low" if th.higher_is_better else "high"
    for key in (f"{side}_cr1", f"loo_{side}"):
        other = _finite(measured.get(key))
        if other is not None:
            h = max(h, abs(est - other) * (1 + margin_se / q))
    return max(1, math.ceil(n * (h / gap) ** 2) - n)


def _show_miss_samples(
    est: float, far: float, threshold: float, n: int, power: float
) -> int | None:
    """More samples that show a miss (the far bound beyond the threshold) with ``power``,
    if the estimate holds: the standard error shrinks as ``1 / sqrt(n)``, so with the far
    bound ``q`` SEs from the estimate (taken as 1.96) and ``z`` the power quantile,
    ``n`` must grow by ``((q + z) se / |est - threshold|)^2``. None when the estimate sits
    on the threshold."""
    from scipy.stats import norm

    gap = abs(est - threshold)
    if gap <= 0 or n <= 0:
        return None
    q = 1.959963984540054
    se = abs(far - est) / q
    k = ((q + float(norm.ppf(power))) * se / gap) ** 2
    return max(1, math.ceil(n * k) - n)


def judge_kpi(
    th: KpiThreshold,
    measured: dict[str, Any] | None,
    *,
    power: float = DEFAULT_POWER,
    confidence: float = 0.95,
    interim_fraction: float | None = None,
    fragile_margin_se: float = 0.5,
) -> KpiVerdict:
    """Judge one threshold against a phase 2 KPI record (``estimate``, ``low``, ``high``, ``n``).

    ``measured`` may be ``None`` (the KPI was not computed): INCONCLUSIVE, no data.
    An optional ``design_effect`` in the record (its clustered variance over the
    binomial one) scales the sample-size advice of a proportion; absent, 1.

    ``power``: the chance the advised extra samples settle an inconclusive KPI,
    if the true value equals the estimate. ``confidence``: the two-sided
    coverage of the record's interval (the phase 2 result's ``confidence``).
    ``interim_fraction``: set for an interim look, the share of the pilot
    window's planned sample seen so far; the fixed interval is then widened to
    the anytime-valid confidence sequence
    (:func:`pilot_lib.analysis.sequential.anytime_valid_bounds`), a PASS needs
    the whole sequence to clear the threshold and a FAIL the whole sequence to
    miss it. The advice always targets the final, fixed-horizon interval.

    ``fragile_margin_se``: a PASS whose bound clears the threshold by less than
    this many standard errors (the record's ``se``) is fragile; so is one whose
    CR1 bound (``low_cr1``/``high_cr1``, when the few-cluster bootstrap judged)
    or whose worst leave-one-cluster-out bound (``loo_low``/``loo_high``) does
    not clear it. A FAIL whose far bound still meets the threshold is "missed,
    but not shown to miss" (``missed_not_shown``), with the samples that would
    show the miss (with probability ``power``, if the estimate holds) as advice.
    """
    label = KPI_LABELS.get(th.kpi, th.kpi)
    unit = KPI_NAMES[th.kpi]
    measured = measured or {}
    est, low, high = (_finite(measured.get(k)) for k in ("estimate", "low", "high"))
    n = int(measured.get("n") or 0)
    interim = interim_fraction is not None
    fixed_low, fixed_high = low, high
    if interim and est is not None and low is not None and high is not None:
        low, high = anytime_valid_bounds(est, low, high, float(interim_fraction), confidence)
        if unit == "proportion":  # a share cannot exceed 1, a rate not fall below 0
            high = min(high, 1.0)
            low = low if th.kpi == "efficiency_gain" else max(low, 0.0)
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
        anytime_valid=interim,
        fixed_low=fixed_low if interim else None,
        fixed_high=fixed_high if interim else None,
    )
    thr = format_value(th.value, unit)
    interval = "anytime-valid 95% interval" if interim else "95% interval"
    if est is None:
        note = str(measured.get("note") or "the KPI could not be computed")
        reason = note if note.lower().startswith("no data") else f"no data: {note}"
        return KpiVerdict(
            status="INCONCLUSIVE",
            reason=f"{reason}; more samples cannot help until the data set and the pilot window hold data",
            **base,
        )

    def advice() -> int | None:
        if fixed_low is None or fixed_high is None:
            return None
        return _extra_samples(
            th, est, fixed_low, fixed_high, n, power, confidence, _design_effect(measured)
        )

    if n < th.min_samples:
        # Reach the agreed minimum, and (when the estimate clears) the powered sample.
        powered = advice() if th.met_by(est) else None
        extra = max(th.min_samples - n, powered or 0)
        return KpiVerdict(
            status="INCONCLUSIVE",
            reason=(
                f"only {n:,} samples, below the {th.min_samples:,} agreed as the minimum; "
                "the estimate cannot settle the threshold either way"
            ),
            additional_samples=extra,
            power=power if powered is not None else None,
            **base,
        )
    good, bad = ("lower", "upper") if th.higher_is_better else ("upper", "lower")
    bound = low if th.higher_is_better else high
    if not th.met_by(est):
        far = high if th.higher_is_better else low
        if interim and far is not None and th.met_by(far):
            return KpiVerdict(
                status="INCONCLUSIVE",
                reason=(
                    f"measured {format_value(est, unit)}, which misses {th.comparator} {thr} so "
                    f"far, but the {bad} end of the {interval} ({format_value(far, unit)}) still "
                    "reaches it: at an interim look a miss is not yet proven"
                ),
                **base,
            )
        proven = (
            f"; even the {bad} end of the {interval} ({format_value(far, unit)}) misses it"
            if far is not None and not th.met_by(far)
            else ""
        )
        se = _finite(measured.get("se"))
        miss_se = abs(est - th.value) / se if se and se > 0 else None
        if far is not None and th.met_by(far):
            more = _show_miss_samples(est, far, th.value, n, power)
            return KpiVerdict(
                status="FAIL",
                reason=(
                    f"missed, but not shown to miss: measured {format_value(est, unit)}, which "
                    f"misses the agreed {th.comparator} {thr}, but the {bad} end of the "
                    f"{interval} ({format_value(far, unit)}) still reaches it"
                ),
                missed_not_shown=True,
                margin_se=miss_se,
                additional_samples=more,
                power=power if more is not None else None,
                **base,
            )
        return KpiVerdict(
            status="FAIL",
            reason=(
                f"measured {format_value(est, unit)}, which misses the agreed "
                f"{th.comparator} {thr}{proven}"
            ),
            margin_se=miss_se,
            **base,
        )
    # Estimate clears: does the whole interval?
    if bound is not None and th.met_by(bound):
        se = _finite(measured.get("se"))
        margin = abs(bound - th.value) / se if se and se > 0 else None
        fragile = () if interim else _fragility(th, measured, bound, margin, fragile_margin_se)
        settle = ""
        extra = None
        if fragile:
            extra = _robust_samples(th, measured, est, bound, n, fragile_margin_se)
            settle = "; PASS (fragile): " + "; ".join(fragile)
        return KpiVerdict(
            status="PASS",
            reason=(
                f"measured {format_value(est, unit)}; even the {good} end of the "
                f"{interval} ({format_value(bound, unit)}) clears {th.comparator} {thr}{settle}"
            ),
            fragile=fragile,
            margin_se=margin,
            additional_samples=extra,
            **base,
        )
    extra = advice()
    return KpiVerdict(
        status="INCONCLUSIVE",
        reason=(
            f"measured {format_value(est, unit)} clears {th.comparator} {thr}, but the {interval} "
            f"reaches {format_value(bound, unit)}: the data cannot yet rule out missing it"
        ),
        additional_samples=extra,
        power=power if extra is not None else None,
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
    interim: bool = False  # an interim look: anytime-valid intervals, not the final gate
    interim_fraction: float | None = None  # share of the pilot window the data cover
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
                    "status": v.status_text,
                    "why": v.reason,
                }
                for v in self.verdicts
            ],
            columns=["KPI", "threshold", "measured", "n", "status", "why"],
        )

    def extend_advice(self) -> pd.DataFrame:
        """For each INCONCLUSIVE KPI: how many more samples settle it, in what time, with what power.

        Columns: the KPI; ``now`` (its sample, in its own unit: decisions,
        closed cases, users); ``more needed`` (in the same unit); ``more weeks at
        the pilot's pace``; ``power`` (the chance those samples settle it if the
        estimate holds; blank when the advice is only the agreed minimum sample).
        """
        rows = []
        for v in self.verdicts:
            if v.status != "INCONCLUSIVE" and not (v.fragile or v.missed_not_shown):
                continue
            noun = _SAMPLE_NOUNS.get(v.kpi, "decisions")
            if v.estimate is None:
                more = "no data yet: check the data set and the pilot window"
            elif v.additional_samples is not None:
                more = f"{v.additional_samples:,} {noun}"
            elif not _met(v):
                more = "none settles a pass: the estimate misses the threshold so far"
            else:
                more = "unknown"
            if v.additional_weeks is not None:
                weeks = f"about {v.additional_weeks:,}"
            elif v.kpi in _NOT_PACED and v.additional_samples:
                weeks = "not paced by weeks: more eligible users, not more time"
            else:
                weeks = ""
            if v.fragile:
                more += " (to make the PASS robust)"
            elif v.missed_not_shown:
                more += " (to show the miss)"
            rows.append(
                {
                    "KPI": v.label,
                    "now": f"{v.n:,} {noun}",
                    "more needed": more,
                    "more weeks at the pilot's pace": weeks,
                    "power": _power_text(v),
                }
            )
        return pd.DataFrame(
            rows,
            columns=["KPI", "now", "more needed", "more weeks at the pilot's pace", "power"],
        )

    def operating_table(self) -> pd.DataFrame:
        """The gate's error rates per KPI, at this pilot's size and clustering.

        Columns: the KPI; ``truth tested`` (the stated distance either side of the
        threshold: 2 points for a rate, 5% of the threshold for a cost; in the
        pilot's standard errors beside it);
        ``wrong GO`` (chance the KPI passes with the truth that far on the wrong
        side); ``wrong NO-GO`` (chance the KPI alone stops the pilot with the truth
        that far on the right side); ``GO when good`` (the chance it passes then);
        ``PASS at the threshold`` (the worst case of a wrong GO); ``clusters``. Seeded simulation (``analysis.operating``).
        """
        rows = []
        for v in self.verdicts:
            oc = v.operating
            if not oc:
                continue
            rows.append(
                {
                    "KPI": v.label,
                    "truth tested": f"{format_value(v.threshold, v.unit)} "
                    f"+/- {format_value(oc['distance'], v.unit)} "
                    f"({oc['distance_se']:.1f} SE)",
                    "wrong GO": f"{oc['wrong_go']:.1%}",
                    "wrong NO-GO": f"{oc['wrong_no_go']:.1%}",
                    "GO when good": f"{oc['right_go']:.1%}",
                    "PASS at the threshold": f"{oc['pass_at_threshold']:.1%}",
                    "clusters": f"{oc['clusters']:,}",
                }
            )
        return pd.DataFrame(
            rows,
            columns=[
                "KPI",
                "truth tested",
                "wrong GO",
                "wrong NO-GO",
                "GO when good",
                "PASS at the threshold",
                "clusters",
            ],
        )

    def reasons(self, limit: int | None = None) -> list[Reason]:
        """The decision's reasons as at most ``limit`` (default :data:`MAX_REASONS`) short items.

        In plain words, for the top of the go/no-go page; the full ``rationale``
        stays in the result. Order: missed KPIs, blocking findings (drift of key
        inputs, the escalation control chart, the kill-switch drill, approvals,
        incomplete evidence, others), KPIs not yet settled, phases whose results
        are missing, then (for a GO) the KPIs met and "nothing blocks". Findings
        of one kind are one item; several missed (or unsettled, or met) KPIs are
        one item naming each with its value and threshold. When more items
        remain than fit, the last item names the rest. Each item names the KPI
        or finding, the measured value and the agreed threshold where there is
        one, and the phase page section with the detail (``phase``, ``section``).
        """
        return _reasons(self, MAX_REASONS if limit is None else limit)

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
            "interim": self.interim,
            **({"interim_fraction": self.interim_fraction} if self.interim else {}),
            "data_coverage": (
                None
                if self.data_coverage is None
                else self.data_coverage | {"line": self.coverage_line}
            ),
            "reasons": [r.to_record() for r in self.reasons()],
        }


def _verdict_record(v: KpiVerdict) -> dict[str, Any]:
    """A verdict as a result record; ``additional_weeks`` and ``power`` only where the gate
    estimated them, the fixed interval only at an interim look."""
    record = v.__dict__ | {"threshold_text": v.threshold_text}
    for key in ("additional_weeks", "power", "operating"):
        if record[key] is None:
            del record[key]
    if not v.anytime_valid:
        for key in ("anytime_valid", "fixed_low", "fixed_high"):
            del record[key]
    return record


def _power_text(v: KpiVerdict) -> str:
    """``80%``; ``at least 80%`` when the agreed minimum sample asks for more; blank without."""
    if v.power is None:
        return ""
    at_minimum = v.n < v.min_samples and v.additional_samples == v.min_samples - v.n
    return f"{'at least ' if at_minimum else ''}{v.power:.0%}"


def _met(v: KpiVerdict) -> bool:
    """Whether the verdict's estimate meets its threshold."""
    if v.estimate is None:
        return False
    x, t = v.estimate, v.threshold
    return {">": x > t, ">=": x >= t, "<": x < t, "<=": x <= t}[v.comparator]


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
    interim: bool = False,
    interim_fraction: float | None = None,
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
                + (
                    " (missed, but not shown to miss: the 95% interval still holds the threshold)"
                    if v.missed_not_shown
                    else ""
                )
                for v in failed
            )
            + "."
        )
    fragile = [v for v in passed if v.fragile]
    if fragile:
        lines.append(
            "Fragile: "
            + "; ".join(
                f"{v.label.split(' (')[0].lower()} passes, but {'; '.join(v.fragile)}"
                + (
                    f" (about {v.additional_samples:,} more "
                    f"{_SAMPLE_NOUNS.get(v.kpi, 'decisions')} would settle it)"
                    if v.additional_samples
                    else ""
                )
                for v in fragile
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
    if decision == "GO" and fragile:
        lines.append(
            "Decision: GO. Every agreed threshold is met and nothing blocks scaling, but the GO "
            "rests on fragile PASSes ("
            + _join([v.label.split(" (")[0].lower() for v in fragile])
            + "): confirm them with the data named above before scaling far."
        )
    elif decision == "GO":
        lines.append("Decision: GO. Every agreed threshold is met and nothing blocks scaling.")
    elif decision == "NO-GO":
        why = []
        failed = [v for v in failed if _stops(v, pilot.statistics.missed_not_shown)]
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
        settle = unsure + [v for v in failed if v.missed_not_shown] + fragile
        lines.append(_extend_sentence(pilot, settle, interim))
    if interim:
        lines.append(_interim_sentence(pilot, decision, interim_fraction))
    return " ".join(lines)


def _extend_sentence(pilot: Pilot, unsure: list[KpiVerdict], interim: bool) -> str:
    """The EXTEND decision: collect the samples of the advice table (the longest in weeks named)."""
    timed = [v for v in unsure if v.additional_weeks is not None]
    pace = ""
    if timed:
        longest = max(timed, key=lambda v: v.additional_weeks or 0)
        weeks = longest.additional_weeks or 0
        chance = (
            f"; {_power_text(longest)} power: the chance they settle it if the estimate holds"
            if longest.power is not None
            else ""
        )
        pace = (
            f" (at the pace of this pilot, about {weeks:,} more week{'s' if weeks != 1 else ''}"
            f" for {longest.label.split(' (')[0].lower()}: "
            f"{longest.additional_samples:,} more "
            f"{_SAMPLE_NOUNS.get(longest.kpi, 'decisions')}{chance})"
        )
    if interim:
        return (
            "Decision: EXTEND at an interim look. Nothing is proven missed, but not every "
            f"threshold is proven met yet; continue the pilot to the end of its window "
            f"({pilot.pilot_window.end:%d %B %Y}) and run the final gate there. For the final "
            f"gate's fixed intervals, the samples listed below are needed{pace}."
        )
    return (
        "Decision: EXTEND. Nothing failed, but not every threshold is proven yet; collect the "
        f"additional samples listed below{pace} and rerun the gate."
    )


def _interim_sentence(pilot: Pilot, decision: Decision, fraction: float | None) -> str:
    """What an interim look means for the decision just stated."""
    share = "" if fraction is None else f" (about {min(fraction, 1):.0%} of the pilot window)"
    head = (
        f"INTERIM look (anytime-valid intervals): the data so far{share} were judged with 95% "
        "confidence sequences, valid however often the team looks, instead of fixed intervals."
    )
    if decision == "GO":
        return (
            f"{head} Every threshold is already met with them and nothing blocks, so stopping "
            "the pilot early is allowed; record this look as the go decision."
        )
    if decision == "NO-GO":
        return f"{head} What is missed or blocks is enough to stop now."
    return f"{head} The final run at the window's end uses the fixed 95% intervals."


#: KPIs whose sample does not grow with time (adoption counts users of the first month).
_NOT_PACED = ("adoption_rate",)


def _with_weeks(pilot: Pilot, v: KpiVerdict, weeks: float | None = None) -> KpiVerdict:
    """``v`` with the weeks its additional samples take at the pace of the pilot window.

    ``weeks``: the weeks that gathered ``v.n`` (default: the whole pilot window;
    at an interim look, the weeks the data cover so far).
    """
    settles = v.status == "INCONCLUSIVE" or v.fragile or v.missed_not_shown
    if not settles or not v.additional_samples or v.n <= 0:
        return v
    if v.kpi in _NOT_PACED:
        return v
    if weeks is None:
        w = pilot.pilot_window
        weeks = ((w.end - w.start).days + 1) / 7
    if weeks <= 0:
        return v
    per_week = v.n / weeks
    return replace(v, additional_weeks=max(1, math.ceil(v.additional_samples / per_week)))


def interim_fraction(pilot: Pilot, kpi_result: dict[str, Any]) -> float:
    """Share of the pilot window the data cover at an interim look, in (0, 1].

    From phase 2's weekly table (``weekly``: one record per week with a
    ``week`` start and its ``decisions``): the days from the window's start to
    the end of the last week holding decisions, over the window's days. 1 when
    the table is missing (the confidence sequence is then tuned for the sample
    in hand).
    """
    w = pilot.pilot_window
    days = (w.end - w.start).days + 1
    last = None
    for row in kpi_result.get("weekly") or []:
        try:
            week = dt.date.fromisoformat(str(row.get("week"))[:10])
        except ValueError:
            continue
        if (row.get("decisions") or 0) > 0 and (last is None or week > last):
            last = week
    if last is None or days <= 0:
        return 1.0
    covered = (min(last + dt.timedelta(days=6), w.end) - w.start).days + 1
    return min(1.0, max(covered, 1) / days)


def evaluate_gate(
    pilot: Pilot,
    results: dict[str, Any],
    integrity_warnings: list[str] | None = None,
    interim: bool | None = None,
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
    interim:
        An interim look (anytime-valid intervals, see the module docstring);
        default: the pilot file's ``statistics: interim``.
    """
    stats = pilot.statistics
    interim = stats.interim if interim is None else interim
    kpi_result = results.get("kpi_baselining") or {}
    coverage = kpi_result.get("data_coverage") if kpi_result else None
    measured = {k["kpi"]: k for k in (kpi_result.get("kpis") or [])}
    confidence = _finite(kpi_result.get("confidence")) or 0.95
    fraction = interim_fraction(pilot, kpi_result) if interim else None
    weeks = None
    if fraction is not None:
        w = pilot.pilot_window
        weeks = fraction * ((w.end - w.start).days + 1) / 7
    verdicts = [
        _with_weeks(
            pilot,
            judge_kpi(
                th,
                measured.get(th.kpi),
                power=stats.power,
                confidence=confidence,
                interim_fraction=fraction,
                fragile_margin_se=stats.fragile_margin_se,
            ),
            weeks,
        )
        for th in pilot.kpis
    ]
    findings: list[Finding] = []
    for phase in BLOCKING_PHASES:
        findings.extend(_findings_of(results, phase))
    verdicts = [_with_operating(v, measured.get(v.kpi), pilot, confidence) for v in verdicts]
    srm = _sample_ratio(pilot, kpi_result, interim)
    if srm is not None:
        verdicts = [
            _srm_inconclusive(v, srm) if v.kpi == "efficiency_gain" else v for v in verdicts
        ]
        findings.append(srm)
    blocking = [f for f in findings if f.severity == "blocking"]
    others = [f for f in findings if f.severity != "blocking"]
    missing = [
        p
        for p in ("kpi_baselining", "drift_analysis", "incident_drill_review")
        if not results.get(p)
    ]

    if any(_stops(v, stats.missed_not_shown) for v in verdicts) or blocking:
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
        rationale=_rationale(
            pilot, decision, verdicts, blocking, missing, interim, fraction, coverage
        ),
        pilot_file_sha256=pilot.file_hash,
        integrity_warnings=list(integrity_warnings or []),
        missing_phases=missing,
        interim=interim,
        interim_fraction=fraction,
        data_coverage=coverage,
    )


def _with_operating(
    v: KpiVerdict, measured: dict[str, Any] | None, pilot: Pilot, confidence: float
) -> KpiVerdict:
    """``v`` with its operating characteristics (seeded simulation; see ``analysis.operating``)."""
    from pilot_lib.analysis.operating import operating_characteristics, stated_distance

    measured = measured or {}
    se = _finite(measured.get("se"))
    clusters = int(measured.get("clusters") or 0)
    th = pilot.threshold(v.kpi)
    if se is None or th is None or se <= 0:
        return v
    oc = operating_characteristics(
        th.higher_is_better,
        th.value,
        se,
        clusters,
        distance_se=stated_distance(v.unit, th.value) / se,
        missed_not_shown=pilot.statistics.missed_not_shown,
        confidence=confidence,
    )
    return replace(v, operating=oc)


def _sample_ratio(pilot: Pilot, kpi_result: dict[str, Any], interim: bool) -> Finding | None:
    """A warning finding when the agent/control split is not the planned one; else None.

    Only with ``statistics.planned_agent_share`` set and a concurrent control
    cohort; the counts are the cases assigned to each cohort in the pilot window
    (phase 2's ``efficiency.cohorts``). Interim looks use the anytime-valid test.
    """
    from pilot_lib.analysis.srm import sample_ratio_check

    planned = pilot.statistics.planned_agent_share
    eff = kpi_result.get("efficiency") or {}
    cohorts = eff.get("cohorts") or {}
    if planned is None or "control" not in cohorts or "agent" not in cohorts:
        return None
    agent, control = (
        int(cohorts["agent"].get("cases") or 0),
        int(cohorts["control"].get("cases") or 0),
    )
    if control == 0:
        return None
    check = sample_ratio_check(agent, control, planned, sequential=interim)
    if not check.mismatch:
        return None
    return Finding(
        "kpi_baselining",
        "sample_ratio_mismatch",
        "warning",
        f"Sample-ratio mismatch: the agent cohort has {agent:,} of {agent + control:,} cases "
        f"({check.observed_agent_share:.1%}) where the pilot file plans {planned:.1%} "
        f"(p = {check.p_value:.2g}, {check.method}, below {check.alpha:g}). Something other than "
        "chance decided which case went to which cohort, so the efficiency comparison is not "
        "like for like: find the cause (routing, filtering, logging) before reading it.",
        {
            "headline": "Cohort split not as planned",
            "agent_cases": agent,
            "control_cases": control,
            "planned_agent_share": planned,
            "observed_agent_share": check.observed_agent_share,
            "p_value": check.p_value,
            "alpha": check.alpha,
            "method": check.method,
        },
    )


def _srm_inconclusive(v: KpiVerdict, srm: Finding) -> KpiVerdict:
    """The efficiency verdict made INCONCLUSIVE by a sample-ratio mismatch."""
    e = srm.evidence
    return replace(
        v,
        status="INCONCLUSIVE",
        reason=(
            f"sample-ratio mismatch: the agent cohort has {e['observed_agent_share']:.1%} of the "
            f"cases against the planned {e['planned_agent_share']:.1%} (p = {e['p_value']:.2g}), "
            "so the comparison with the control cohort is not like for like; more cases do not "
            "settle it until the cause is found"
        ),
        additional_samples=None,
        additional_weeks=None,
        power=None,
        fragile=(),
        missed_not_shown=False,
    )


def _stops(v: KpiVerdict, missed_not_shown: str) -> bool:
    """Whether a verdict alone makes the decision NO-GO: a FAIL, unless it is "missed, but
    not shown to miss" and the pilot file's ``statistics.missed_not_shown`` is EXTEND."""
    if v.status != "FAIL":
        return False
    return not v.missed_not_shown or missed_not_shown == "NO-GO"


# ---- the short list of reasons ---------------------------------------------------

#: The most reasons the go/no-go page lists.
MAX_REASONS = 5


@dataclass(frozen=True)
class Reason:
    """One reason for the decision, for a reader with two minutes.

    ``headline``: a few words (``Task completion missed``); ``detail``: one
    sentence with the measured value and the agreed threshold; ``measured`` and
    ``threshold``: those two as text (empty when the finding has no threshold);
    ``phase`` and ``section``: the phase page and the heading there that holds
    the detail (``section`` empty: the top of the page); ``terms``: technical
    terms the sentence uses (glossary keys).
    """

    headline: str
    detail: str
    phase: str
    section: str = ""
    measured: str = ""
    threshold: str = ""
    terms: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {
            "headline": self.headline,
            "detail": self.detail,
            "measured": self.measured,
            "threshold": self.threshold,
            "phase": self.phase,
            "section": self.section,
        }


#: Where each kind of detail is: (phase, heading on that phase's page).
KPI_SECTION = ("kpi_baselining", "The KPIs against the agreed thresholds")
_FINDING_SECTIONS: list[tuple[str, tuple[str, str]]] = [
    ("key_feature_drift", ("drift_analysis", "Input drift per feature")),
    ("feature_drift", ("drift_analysis", "Input drift per feature")),
    ("escalation_", ("drift_analysis", "Escalation control chart")),
    ("control_chart", ("drift_analysis", "Escalation control chart")),
    ("calibration", ("drift_analysis", "Calibration: confidence against correctness")),
    ("contamination", ("drift_analysis", "Prompt versions: a feedback-contamination spiral?")),
    ("drill", ("incident_drill_review", "Kill-switch drill against its targets")),
    ("approval", ("incident_drill_review", "Human approvals")),
]
_PHASE_FINDINGS_SECTION = {
    "drift_analysis": "Findings",
    "incident_drill_review": "Findings",
    "kpi_baselining": "Flags for the analyst",
}
_PHASE_NAMES = {
    "kpi_baselining": "KPI baselining",
    "drift_analysis": "drift analysis",
    "incident_drill_review": "incident drill review",
}


def finding_section(f: Finding) -> tuple[str, str]:
    """The phase page and heading that hold a finding's detail.

    A finding may name its heading itself (``evidence["section"]``, the exact text of a
    heading in its phase's notebook); otherwise the heading comes from its code.
    """
    if f.evidence.get("section"):
        return f.phase, str(f.evidence["section"])
    for prefix, where in _FINDING_SECTIONS:
        if f.code.startswith(prefix) or (prefix == "drill" and "drill" in f.code):
            return where
    return f.phase, _PHASE_FINDINGS_SECTION.get(f.phase, "")


def _short(v: KpiVerdict) -> str:
    return v.label.split(" (")[0]


_COMPARATOR_WORDS = {">": "above", ">=": "at least", "<": "below", "<=": "at most"}


def agreed_text(v: KpiVerdict) -> str:
    """The threshold in words: ``above 80.0%``, ``at least 30.0%``, ``below $2.50``."""
    return f"{_COMPARATOR_WORDS[v.comparator]} {format_value(v.threshold, v.unit)}"


def _kpi_item(v: KpiVerdict) -> str:
    """``task completion 51.3% (agreed: above 80.0%)``."""
    shown = "; missed, but not shown to miss" if v.missed_not_shown else ""
    return (
        f"{_short(v).lower()} {format_value(v.estimate, v.unit)} (agreed: {agreed_text(v)}{shown})"
    )


def _kpi_reasons(verdicts: list[KpiVerdict], status: Status) -> list[Reason]:
    """One reason per KPI when one has ``status``, else one naming each."""
    if not verdicts:
        return []
    terms = () if status == "FAIL" else ("95% interval",)
    if len(verdicts) == 1:
        v = verdicts[0]
        head = {"FAIL": "missed", "PASS": "met", "INCONCLUSIVE": "not yet settled"}[status]
        if status == "FAIL":
            detail = (
                f"Measured {format_value(v.estimate, v.unit)} on {plural(v.n, _noun(v))}; "
                f"agreed: {agreed_text(v)}."
            )
            if v.missed_not_shown:
                detail += (
                    " Missed, but not shown to miss: the 95% interval still holds the "
                    f"threshold; {_advice_text(v)}"
                )
        elif status == "PASS":
            detail = (
                f"Measured {format_value(v.estimate, v.unit)}, agreed: {agreed_text(v)}; "
                "the whole 95% interval clears it."
            )
        else:
            detail = (
                f"Measured {format_value(v.estimate, v.unit)}, agreed: {agreed_text(v)}; "
                + _advice_text(v)
            )
        return [
            Reason(
                f"{_short(v)} {head}",
                detail,
                *KPI_SECTION,
                measured=format_value(v.estimate, v.unit),
                threshold=agreed_text(v),
                terms=terms,
            )
        ]
    items = "; ".join(_kpi_item(v) for v in verdicts)
    if status == "FAIL":
        head, detail = f"{len(verdicts)} agreed KPIs missed", f"Measured {items}."
    elif status == "PASS":
        head = f"{len(verdicts)} agreed KPIs met"
        detail = f"Measured {items}; each whole 95% interval clears its threshold."
    else:
        head = f"{len(verdicts)} KPIs not yet settled"
        detail = (
            f"Measured {items}; the 95% intervals still reach past the thresholds. "
            + " ".join(f"{_short(v)}: {_advice_text(v)}" for v in verdicts)
        )
    return [
        Reason(
            head,
            detail,
            *KPI_SECTION,
            measured=", ".join(format_value(v.estimate, v.unit) for v in verdicts),
            threshold=", ".join(agreed_text(v) for v in verdicts),
            terms=terms,
        )
    ]


def _fragile_reason(fragile: list[KpiVerdict], decision: str) -> Reason:
    """One reason naming each fragile PASS, why it could flip and what would settle it."""
    names = _join([_short(v).lower() for v in fragile])
    detail = " ".join(
        f"{_short(v)}: measured {format_value(v.estimate, v.unit)}, agreed: {agreed_text(v)}; "
        f"{'; '.join(v.fragile)}. {_advice_text(v)[:1].upper()}{_advice_text(v)[1:]}"
        for v in fragile
    )
    if decision == "GO":
        detail = f"The GO rests on it. {detail}"
    return Reason(
        f"{'PASS' if len(fragile) == 1 else 'PASSes'} fragile: {names}",
        detail,
        *KPI_SECTION,
        measured=", ".join(format_value(v.estimate, v.unit) for v in fragile),
        threshold=", ".join(agreed_text(v) for v in fragile),
        terms=("95% interval",),
    )


def _noun(v: KpiVerdict) -> str:
    return {"efficiency_gain": "closed case", "adoption_rate": "user"}.get(v.kpi, "decision")


def _advice_text(v: KpiVerdict) -> str:
    """What settles an inconclusive KPI, with units and time (the EXTEND advice in words)."""
    if v.estimate is None:
        return "no data yet; check the data set and the pilot window."
    if v.additional_samples is None:
        if not _met(v):
            return "the estimate misses the threshold so far; more data may still show a miss."
        return "more data is needed; the amount could not be estimated."
    noun = _SAMPLE_NOUNS.get(v.kpi, "decisions")
    more = f"about {v.additional_samples:,} more {noun}"
    if v.additional_weeks is not None:
        weeks = v.additional_weeks
        more += f", about {weeks:,} more week{'s' if weeks != 1 else ''} at the pilot's pace"
    elif v.kpi in _NOT_PACED:
        more += " (more eligible users, not more time)"
    chance = f" ({_power_text(v)} chance to settle it if the estimate holds)" if v.power else ""
    return f"{more} would settle it{chance}."


def _ids(ids: list[Any], most: int = 3) -> str:
    shown = ", ".join(str(i) for i in ids[:most])
    return shown + (f" and {len(ids) - most:,} more" if len(ids) > most else "")


_DRILL_MEASURES = {
    "time_to_detect": "detection",
    "time_to_page": "page after detection",
    "time_to_pause": "pause after detection",
}

_APPROVAL_KINDS = {
    "approval_timeout_approved": "approved or executed after the approval timed out",
    "approval_above_authority": "executed on an approval from a level below its authority",
}


def _finding_group_reason(code_group: str, found: list[Finding]) -> Reason:
    """One reason for blocking findings of one kind."""
    phase, section = finding_section(found[0])
    ev = [f.evidence for f in found]
    if code_group == "key_feature_drift":
        items = ", ".join(
            f"{e.get('feature')} (PSI {float(e['psi']):.2f})"
            for e in ev
            if _finite(e.get("psi")) is not None
        )
        n = len(found)
        return Reason(
            "Key inputs shifted",
            f"The mix of inputs moved in {plural(n, 'key feature')}: {items}; "
            "above 0.25 is a large shift, which blocks a GO.",
            phase,
            section,
            measured=items,
            threshold="PSI at most 0.25",
            terms=("PSI",),
        )
    if code_group == "escalation" and found[0].code == "escalation_control_breach":
        e = ev[0]
        peak = _finite(e.get("peak"))
        ucl = _finite((e.get("ma_limits") or {}).get("ucl"))
        start = str(e.get("start") or "")[:10]
        if peak is not None and ucl is not None:
            since = f" since {dt.date.fromisoformat(start):%d %B %Y}" if start else ""
            detail = (
                f"The 7-day escalation rate reached {format_value(peak, 'proportion')}, above its "
                f"upper control limit of {format_value(ucl, 'proportion')}{since}, and is still "
                "there at the end of the data."
            )
            return Reason(
                "Escalations out of control",
                detail,
                phase,
                section,
                measured=format_value(peak, "proportion"),
                threshold=f"control limit {format_value(ucl, 'proportion')}",
                terms=("control chart",),
            )
    if code_group == "drill_failed":
        parts, measured, target = [], [], []
        for f, e in zip(found, ev, strict=True):
            fails = [c for c in e.get("checks") or [] if c.get("status") == "fail"]
            bits = [
                f"the {_DRILL_MEASURES.get(str(c.get('measure')), str(c.get('measure')))} took "
                f"{float(c['seconds']):,.0f} s against a {float(c['target_seconds']):,.0f} s target"
                for c in fails
                if _finite(c.get("seconds")) is not None
                and _finite(c.get("target_seconds")) is not None
            ]
            measured += [
                f"{float(c['seconds']):,.0f} s" for c in fails if _finite(c.get("seconds"))
            ]
            target += [
                f"{float(c['target_seconds']):,.0f} s"
                for c in fails
                if _finite(c.get("target_seconds"))
            ]
            after = list(e.get("actions_after_pause") or [])
            if after:
                bits.append(f"{plural(len(after), 'action')} started while the agent was paused")
            parts.append(
                f"drill {e.get('drill_id', '')}: " + "; ".join(bits or [plural_text(f.message)])
            )
        return Reason(
            "Kill switch failed its drill",
            "In " + "; ".join(parts) + ".",
            phase,
            section,
            measured=", ".join(measured),
            threshold=", ".join(target),
            terms=("kill switch",),
        )
    if code_group == "approval":
        items = []
        total = 0
        for f, e in zip(found, ev, strict=True):
            ids = list(e.get("action_ids") or [])
            total += len(ids)
            kind = _APPROVAL_KINDS.get(f.code)
            if kind and ids:
                items.append(f"{plural(len(ids), 'action')} {kind} ({_ids(ids)})")
            else:
                items.append(plural_text(f.message).rstrip("."))
        head = "Approval rules broken"
        return Reason(
            head,
            "; ".join(items) + ". The agreed rule allows none.",
            phase,
            "Violations" if total else section,
            measured=plural(total, "action") if total else "",
            threshold="none",
        )
    msgs = plural_text(" ".join(f.message for f in found))
    # A finding may carry its own short heading for the board (evidence["headline"]).
    head = found[0].evidence.get("headline") or {
        "kpi_baselining": "Evidence incomplete",
        "drift_analysis": "Drift finding",
        "incident_drill_review": "Incident review finding",
    }.get(found[0].phase, "Blocking finding")
    if msgs.startswith("The evidence is incomplete: "):
        msgs = msgs[len("The evidence is incomplete: ") :]
        msgs = msgs[:1].upper() + msgs[1:]
    return Reason(head, msgs, phase, section)


def _group_key(f: Finding) -> str:
    if f.code == "key_feature_drift":
        return "key_feature_drift"
    if f.code.startswith("escalation_"):
        return "escalation"
    if f.code == "drill_failed":
        return "drill_failed"
    if f.code.startswith("approval_") and f.code in _APPROVAL_KINDS:
        return "approval"
    return f"{f.phase}:{f.code}"


def _reasons(d: GateDecision, limit: int) -> list[Reason]:
    failed = [v for v in d.verdicts if v.status == "FAIL"]
    unsure = [v for v in d.verdicts if v.status == "INCONCLUSIVE"]
    passed = [v for v in d.verdicts if v.status == "PASS"]
    items: list[Reason] = _kpi_reasons(failed, "FAIL")
    groups: dict[str, list[Finding]] = {}
    for f in d.blocking:
        groups.setdefault(_group_key(f), []).append(f)
    order = ["key_feature_drift", "escalation", "drill_failed", "approval"]
    keys = [k for k in order if k in groups] + [k for k in groups if k not in order]
    items += [_finding_group_reason(k, groups[k]) for k in keys]
    items += _kpi_reasons(unsure, "INCONCLUSIVE")
    fragile = [v for v in passed if v.fragile]
    if fragile:
        items.append(_fragile_reason(fragile, d.decision))
    for p in d.missing_phases:
        items.append(
            Reason(
                f"No {_PHASE_NAMES.get(p, p)} result",
                f"The {_PHASE_NAMES.get(p, p)} phase has no result for this run, so its checks "
                "could not be made; run it and rerun the gate.",
                p,
            )
        )
    if d.decision == "GO":
        items.append(
            Reason(
                "Nothing blocks scaling",
                "No blocking finding from drift analysis, the kill-switch drill, the approvals "
                "review or the data checks.",
                "drift_analysis",
                "Findings",
            )
        )
        items += _kpi_reasons(passed, "PASS")
    if limit < 1 or len(items) <= limit:
        return items[: max(limit, 0)] if limit >= 1 else []
    kept, rest = items[: limit - 1], items[limit - 1 :]
    return [
        *kept,
        Reason(
            f"{plural(len(rest), 'more reason')}",
            " ".join(f"{r.headline}: {r.detail}" for r in rest),
            rest[0].phase,
            rest[0].section,
            measured="; ".join(r.measured for r in rest if r.measured),
            threshold="; ".join(r.threshold for r in rest if r.threshold),
            terms=tuple(t for r in rest for t in r.terms),
        ),
    ]

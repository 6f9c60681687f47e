"""The go/no-go gate on hand-built phase results."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
from pathlib import Path

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from pilot_lib.analysis.gate import evaluate_gate, judge_kpi
from pilot_lib.analysis.integrity import check_thresholds, seal_thresholds
from pilot_lib.config import Pilot

PILOT_DOC = {
    "name": "gate-test",
    "title": "Gate test pilot",
    "owner": "Owner",
    "business_unit": "Ops",
    "scope": "Test scope",
    "pilot_window": {"start": "2026-03-02", "end": "2026-05-24"},
    "baseline_window": {"start": "2026-01-05", "end": "2026-03-01"},
    "datasets": {"decisions": {"path": "d.csv"}, "cases": {"path": "c.csv"}},
    "kpis": [
        {
            "kpi": "task_completion_rate",
            "comparator": ">",
            "value": 0.80,
            "unit": "proportion",
            "min_samples": 100,
        },
        {
            "kpi": "cost_per_decision",
            "comparator": "<",
            "value": 2.50,
            "unit": "usd",
            "min_samples": 100,
        },
    ],
    "costs": {"review_hourly_rate_usd": 60, "manual_cost_per_case_usd": 10},
    "drift": {
        "features": ["x"],
        "reference_window": {"start": "2026-03-02", "end": "2026-03-29"},
        "current_window": {"start": "2026-04-27", "end": "2026-05-24"},
    },
    "drills": {
        "max_seconds_to_detect": 300,
        "max_seconds_to_page": 120,
        "max_seconds_to_pause": 180,
    },
    "approvals": {"sla_minutes": 240, "levels": [{"name": "a", "max_amount": 100}, {"name": "b"}]},
}


@pytest.fixture
def pilot(tmp_path: Path) -> Pilot:
    import yaml

    from pilot_lib.config import load_pilot

    (tmp_path / "d.csv").write_text("x\n")
    (tmp_path / "c.csv").write_text("x\n")
    (tmp_path / "pilot.yaml").write_text(yaml.safe_dump(PILOT_DOC, sort_keys=False))
    return load_pilot(tmp_path)


def kpi(name: str, est: float, low: float, high: float, n: int) -> dict:
    return {"kpi": name, "estimate": est, "low": low, "high": high, "n": n}


def results(completion: dict, cost: dict, findings: list | None = None) -> dict:
    return {
        "kpi_baselining": {"kpis": [completion, cost]},
        "drift_analysis": {"findings": findings or []},
        "incident_drill_review": {"findings": []},
    }


def test_all_pass_is_go(pilot: Pilot) -> None:
    lo, hi = proportion_confint(860, 1000, method="wilson")
    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.86, lo, hi, 1000),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
        ),
    )
    assert [v.status for v in gate.verdicts] == ["PASS", "PASS"]
    assert gate.decision == "GO"
    assert "Decision: GO" in gate.rationale
    assert "> 80.0%" in gate.rationale and "< $2.50" in gate.rationale


def test_estimate_missing_threshold_fails_and_is_no_go(pilot: Pilot) -> None:
    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.52, 0.50, 0.54, 2000),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
        ),
    )
    assert gate.verdicts[0].status == "FAIL"
    assert gate.decision == "NO-GO"
    assert "52.0%" in gate.rationale and "missed" in gate.rationale


def test_interval_straddling_threshold_is_inconclusive_and_extend(pilot: Pilot) -> None:
    # 82 of 100: estimate clears 80% but the Wilson interval does not.
    lo, hi = proportion_confint(82, 100, method="wilson")
    assert lo < 0.80 < 0.82
    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.82, lo, hi, 100),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
        ),
    )
    v = gate.verdicts[0]
    assert v.status == "INCONCLUSIVE"
    assert gate.decision == "EXTEND"
    # Advice: the total for 80% power if 0.82 is the truth, as statsmodels solves it (the
    # PASS rule is one side of the 95% interval: a one-sided test at 2.5%).
    expected = NormalIndPower().solve_power(
        effect_size=proportion_effectsize(0.82, 0.80),
        alpha=0.025,
        power=0.8,
        ratio=0,
        alternative="larger",
    )
    assert v.n + v.additional_samples == math.ceil(expected)
    assert v.power == 0.8
    advice = gate.extend_advice()
    assert advice.to_dict("records")[0] == {
        "KPI": v.label,
        "now": "100 decisions",
        "more needed": f"{v.additional_samples:,} decisions",
        "more weeks at the pilot's pace": f"about {v.additional_weeks}",
        "power": "80%",
    }


def test_inconclusive_cost_advice_scales_with_interval(pilot: Pilot) -> None:
    # Cost 2.40, upper bound 2.60 on n=400 against < 2.50: se 0.20 / z per decision-sample,
    # 400 (2.8016 x 0.10204 / 0.10)^2 = 3,269.1 in total for 80% power (test_power checks
    # the statsmodels agreement): 2,870 more. Just clearing would take 1,200 more.
    v = judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.40, 2.20, 2.60, 400))
    assert v.status == "INCONCLUSIVE"
    assert v.additional_samples == 2870
    half = judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.40, 2.20, 2.60, 400), power=0.5)
    assert half.additional_samples == 1200


def test_advice_uses_the_side_of_the_interval_that_must_clear(pilot: Pilot) -> None:
    # Cost 2.40 against < 2.50: the upper side (0.05 wide) decides, not the lower (0.35).
    v = judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.40, 2.05, 2.45, 400))
    narrow = judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.40, 2.35, 2.45, 400))
    assert v.additional_samples == narrow.additional_samples


def test_advice_for_a_clustered_proportion_scales_with_its_design_effect(pilot: Pilot) -> None:
    lo, hi = proportion_confint(82, 100, method="wilson")
    plain = judge_kpi(pilot.kpis[0], kpi("task_completion_rate", 0.82, lo, hi, 100))
    record = kpi("task_completion_rate", 0.82, lo, hi, 100) | {"design_effect": 4.0}
    clustered = judge_kpi(pilot.kpis[0], record)
    h = proportion_effectsize(0.82, 0.80)
    n1 = NormalIndPower().solve_power(h, alpha=0.025, power=0.8, ratio=0, alternative="larger")
    assert plain.n + plain.additional_samples == math.ceil(n1)
    assert clustered.n + clustered.additional_samples == math.ceil(4 * n1)


def test_pilot_file_power_sets_the_advice(pilot: Pilot) -> None:
    stats = pilot.statistics.model_copy(update={"power": 0.9})
    strict = pilot.model_copy(update={"statistics": stats})
    args = (
        kpi("task_completion_rate", 0.95, 0.93, 0.97, 1000),
        kpi("cost_per_decision", 2.40, 2.20, 2.60, 400),
    )
    v = evaluate_gate(strict, results(*args)).verdicts[1]
    assert v.power == 0.9
    assert (
        v.additional_samples > evaluate_gate(pilot, results(*args)).verdicts[1].additional_samples
    )


def test_extend_advice_says_how_many_weeks_at_the_pilots_pace(pilot: Pilot) -> None:
    # Cost needs 2,870 more decisions; 400 came in the 12-week window: 86.1, so 87 more weeks.
    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.95, 0.93, 0.97, 1000),
            kpi("cost_per_decision", 2.40, 2.20, 2.60, 400),
        ),
    )
    assert gate.decision == "EXTEND"
    v = gate.verdicts[1]
    assert (v.additional_samples, v.additional_weeks) == (2870, 87)
    advice = gate.extend_advice()
    assert advice["more weeks at the pilot's pace"].tolist() == ["about 87"]
    assert advice["power"].tolist() == ["80%"]
    assert (
        "about 87 more weeks for cost per decision: 2,870 more decisions; 80% power: the "
        "chance they settle it if the estimate holds" in gate.rationale
    )
    record = gate.to_result()["verdicts"]
    assert record[1]["additional_weeks"] == 87 and "additional_weeks" not in record[0]
    assert record[1]["power"] == 0.8 and "power" not in record[0]
    # Adoption counts the users of the first month: more weeks do not add to it.
    from dataclasses import replace

    from pilot_lib.analysis.gate import _with_weeks

    adoption = replace(v, kpi="adoption_rate", additional_weeks=None)
    assert _with_weeks(pilot, adoption).additional_weeks is None


def test_below_minimum_sample_is_inconclusive_even_if_estimate_misses(pilot: Pilot) -> None:
    v = judge_kpi(pilot.kpis[0], kpi("task_completion_rate", 0.5, 0.2, 0.8, 10))
    assert v.status == "INCONCLUSIVE"
    assert "below the 100" in v.reason
    assert v.additional_samples == 90
    assert v.power is None  # the estimate misses: only the minimum is advised


def test_below_minimum_sample_advice_is_the_larger_of_minimum_and_power(pilot: Pilot) -> None:
    # 0.95 on 60 of a 100 minimum: the minimum decides (40 more), with at least 80% power.
    lo, hi = proportion_confint(57, 60, method="wilson")
    v = judge_kpi(pilot.kpis[0], kpi("task_completion_rate", 0.95, lo, hi, 60))
    assert (v.additional_samples, v.power) == (40, 0.8)
    # 0.83 on 60: the power calculation (1,313 in total) decides.
    lo, hi = proportion_confint(50, 60, method="wilson")
    v = judge_kpi(pilot.kpis[0], kpi("task_completion_rate", 50 / 60, lo, hi, 60))
    h = proportion_effectsize(50 / 60, 0.80)
    n1 = NormalIndPower().solve_power(h, alpha=0.025, power=0.8, ratio=0, alternative="larger")
    assert v.additional_samples == math.ceil(n1) - 60


def test_no_data_is_inconclusive_with_label(pilot: Pilot) -> None:
    v = judge_kpi(
        pilot.kpis[0],
        {"kpi": "task_completion_rate", "estimate": None, "n": 0, "note": "no decisions"},
    )
    assert v.status == "INCONCLUSIVE"
    assert v.measured_text == "no data"
    v = judge_kpi(pilot.kpis[0], None)
    assert v.status == "INCONCLUSIVE"
    v = judge_kpi(pilot.kpis[0], kpi("task_completion_rate", math.nan, math.nan, math.nan, 0))
    assert v.estimate is None


def test_lower_is_better_uses_upper_bound(pilot: Pilot) -> None:
    assert judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.3, 2.2, 2.49, 500)).status == "PASS"
    assert (
        judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.3, 2.2, 2.51, 500)).status
        == "INCONCLUSIVE"
    )
    assert judge_kpi(pilot.kpis[1], kpi("cost_per_decision", 2.5, 2.4, 2.6, 500)).status == "FAIL"


def test_blocking_finding_makes_no_go_even_when_kpis_pass(pilot: Pilot) -> None:
    finding = {
        "phase": "drift_analysis",
        "code": "key_feature_drift",
        "severity": "blocking",
        "message": "Claim amount drifted significantly (PSI 0.41).",
    }
    warning = dict(finding, code="calibration", severity="warning", message="Calibration slipped.")
    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.9, 0.88, 0.92, 1000),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
            findings=[finding, warning],
        ),
    )
    assert gate.decision == "NO-GO"
    assert [f.code for f in gate.blocking] == ["key_feature_drift"]
    assert [f.code for f in gate.other_findings] == ["calibration"]
    assert "PSI 0.41" in gate.rationale


def test_missing_phase_prevents_go(pilot: Pilot) -> None:
    res = {
        "kpi_baselining": {
            "kpis": [
                kpi("task_completion_rate", 0.9, 0.88, 0.92, 1000),
                kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
            ]
        }
    }
    gate = evaluate_gate(pilot, res)
    assert gate.decision == "EXTEND"
    assert gate.missing_phases == ["drift_analysis", "incident_drill_review"]


def test_result_is_json_serializable(pilot: Pilot) -> None:
    import json

    from pilot_lib.results import to_jsonable

    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.9, 0.88, 0.92, 1000),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
        ),
    )
    doc = json.loads(json.dumps(to_jsonable(gate.to_result())))
    assert doc["decision"] == "GO"
    assert doc["verdicts"][0]["status"] == "PASS"


def test_seal_matches_then_detects_changed_thresholds(pilot: Pilot, tmp_path: Path) -> None:
    from pilot_lib.config import load_pilot

    seal_thresholds(pilot, sealed_on=dt.date(2026, 2, 27))
    warnings, notes = check_thresholds(pilot)
    assert warnings == [] and "before the pilot started" in notes[0]

    text = (tmp_path / "pilot.yaml").read_text().replace("0.8", "0.7")
    (tmp_path / "pilot.yaml").write_text(text)
    warnings, _ = check_thresholds(load_pilot(tmp_path))
    assert "changed after they were agreed" in warnings[0]


def test_seal_after_start_is_reported(pilot: Pilot) -> None:
    seal_thresholds(pilot, sealed_on=dt.date(2026, 3, 10))
    warnings, _ = check_thresholds(pilot)
    assert "after the pilot started" in warnings[0]


def _git(cwd: Path, *args: str, date: str | None = None) -> None:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "PATH": "/usr/bin:/bin",
    }
    if date:
        env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_git_history_change_after_start_is_reported(pilot: Pilot, tmp_path: Path) -> None:
    from pilot_lib.config import load_pilot

    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "thresholds", date="2026-02-20T10:00:00")
    # A scope edit after the start is fine; a threshold edit is not.
    path = tmp_path / "pilot.yaml"
    path.write_text(path.read_text().replace("Test scope", "Edited scope"))
    _git(tmp_path, "commit", "-qam", "scope", date="2026-03-15T10:00:00")
    warnings, notes = check_thresholds(load_pilot(tmp_path))
    assert warnings == [] and "unchanged since the pilot started" in notes[0]
    path.write_text(path.read_text().replace("0.8", "0.7"))
    _git(tmp_path, "commit", "-qam", "lower the bar", date="2026-04-01T10:00:00")
    warnings, _ = check_thresholds(load_pilot(tmp_path))
    assert len(warnings) == 1 and "2026-04-01" in warnings[0]


# ---- interim looks (anytime-valid confidence sequences) ------------------------------


def weekly(weeks: int) -> list[dict]:
    """Phase 2's weekly table for the first ``weeks`` weeks of the 12-week window."""
    start = dt.date(2026, 3, 2)
    return [
        {"week": (start + dt.timedelta(weeks=k)).isoformat(), "decisions": 100}
        for k in range(weeks)
    ]


def interim_results(completion: dict, cost: dict, weeks: int = 3) -> dict:
    res = results(completion, cost)
    res["kpi_baselining"]["weekly"] = weekly(weeks)
    res["kpi_baselining"]["confidence"] = 0.95
    return res


def test_interim_fraction_from_the_weekly_table(pilot: Pilot) -> None:
    from pilot_lib.analysis.gate import interim_fraction

    assert interim_fraction(pilot, {"weekly": weekly(3)}) == pytest.approx(21 / 84)
    assert interim_fraction(pilot, {"weekly": weekly(12)}) == 1.0
    assert interim_fraction(pilot, {}) == 1.0  # no table: tuned for the sample in hand
    empty_last = weekly(4)
    empty_last[-1]["decisions"] = 0
    assert interim_fraction(pilot, {"weekly": empty_last}) == pytest.approx(21 / 84)


def test_interim_look_judges_with_the_wider_confidence_sequence(pilot: Pilot) -> None:
    from pilot_lib.analysis.sequential import widening

    # 0.86 on 300 decisions after 3 of 12 weeks: the fixed Wilson interval clears 80%...
    lo, hi = proportion_confint(258, 300, method="wilson")
    assert lo > 0.80
    args = (
        kpi("task_completion_rate", 0.86, lo, hi, 300),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    assert evaluate_gate(pilot, interim_results(*args)).decision == "GO"
    # ... the anytime-valid one, 1.67 times as wide a quarter of the way through, does not.
    gate = evaluate_gate(pilot, interim_results(*args), interim=True)
    v = gate.verdicts[0]
    k = widening(21 / 84)
    assert v.low == pytest.approx(0.86 - (0.86 - lo) * k)
    assert v.high == pytest.approx(0.86 + (hi - 0.86) * k)
    assert v.status == "INCONCLUSIVE" and v.anytime_valid
    assert "anytime-valid 95% interval" in v.reason
    assert "95% anytime-valid CI" in v.measured_text
    assert gate.decision == "EXTEND" and gate.interim
    assert "Decision: EXTEND at an interim look" in gate.rationale
    assert "INTERIM look (anytime-valid intervals)" in gate.rationale
    assert "24 May 2026" in gate.rationale  # continue to the window's end
    # The advice targets the final run's fixed interval, at the pace of the weeks so far.
    assert v.additional_samples is not None and v.additional_samples > 0
    assert v.additional_weeks == math.ceil(v.additional_samples / (300 / 3))
    out = gate.to_result()
    assert out["interim"] is True and out["interim_fraction"] == pytest.approx(0.25)
    record = out["verdicts"][0]
    assert record["anytime_valid"] and (record["fixed_low"], record["fixed_high"]) == (lo, hi)
    assert (
        "anytime_valid"
        not in evaluate_gate(pilot, interim_results(*args)).to_result()["verdicts"][0]
    )
    assert evaluate_gate(pilot, interim_results(*args)).to_result()["interim"] is False


def test_interim_fail_needs_the_whole_sequence_to_miss(pilot: Pilot) -> None:
    # 0.78 on 400 after 3 weeks: the fixed rule fails it on the estimate...
    lo, hi = proportion_confint(312, 400, method="wilson")
    args = (
        kpi("task_completion_rate", 0.78, lo, hi, 400),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    fixed = evaluate_gate(pilot, interim_results(*args))
    assert fixed.verdicts[0].status == "FAIL" and fixed.verdicts[0].missed_not_shown
    # missed, but not shown to miss: EXTEND by default, NO-GO when the pilot file says so
    assert fixed.decision == "EXTEND"
    strict = pilot.model_copy(
        update={"statistics": pilot.statistics.model_copy(update={"missed_not_shown": "NO-GO"})}
    )
    assert evaluate_gate(strict, interim_results(*args)).decision == "NO-GO"
    # ... an interim look only once the whole confidence sequence misses.
    gate = evaluate_gate(pilot, interim_results(*args), interim=True)
    v = gate.verdicts[0]
    assert v.status == "INCONCLUSIVE" and v.high > 0.80
    assert "not yet proven" in v.reason
    assert gate.decision == "EXTEND"
    row = gate.extend_advice().to_dict("records")[0]
    assert row["more needed"].startswith("none settles a pass")
    # A clear miss is proven at once: NO-GO at the interim look.
    lo, hi = proportion_confint(280, 400, method="wilson")
    clear = interim_results(
        kpi("task_completion_rate", 0.70, lo, hi, 400),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    gate = evaluate_gate(pilot, clear, interim=True)
    assert gate.verdicts[0].status == "FAIL" and "even the upper end" in gate.verdicts[0].reason
    assert gate.decision == "NO-GO" and "enough to stop now" in gate.rationale


def test_interim_go_allows_stopping_early(pilot: Pilot) -> None:
    lo, hi = proportion_confint(270, 300, method="wilson")
    gate = evaluate_gate(
        pilot,
        interim_results(
            kpi("task_completion_rate", 0.90, lo, hi, 300),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
        ),
        interim=True,
    )
    assert gate.decision == "GO"
    assert "stopping the pilot early is allowed" in gate.rationale


def test_pilot_file_interim_setting_and_its_override(pilot: Pilot) -> None:
    stats = pilot.statistics.model_copy(update={"interim": True})
    looking = pilot.model_copy(update={"statistics": stats})
    lo, hi = proportion_confint(258, 300, method="wilson")
    args = (
        kpi("task_completion_rate", 0.86, lo, hi, 300),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    assert evaluate_gate(looking, interim_results(*args)).interim
    final = evaluate_gate(looking, interim_results(*args), interim=False)
    assert not final.interim and final.decision == "GO"


def test_interim_pages_are_labelled(pilot: Pilot) -> None:
    from pilot_lib.report import notebook as nb

    ctx = nb.open_phase("go_no_go_summary", pilot.path, None, load_data=False, interim=True)
    assert ctx.interim and ctx.pilot.file_hash == pilot.file_hash
    assert "INTERIM look (anytime-valid intervals)" in ctx.header().data
    plain = nb.open_phase("go_no_go_summary", pilot.path, None, load_data=False)
    assert not plain.interim and "INTERIM" not in plain.header().data
    lo, hi = proportion_confint(258, 300, method="wilson")
    args = (
        kpi("task_completion_rate", 0.86, lo, hi, 300),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    banner = nb.decision_banner(evaluate_gate(ctx.pilot, interim_results(*args))).data
    assert "INTERIM look (anytime-valid intervals)" in banner
    assert "INTERIM" not in nb.decision_banner(evaluate_gate(pilot, interim_results(*args))).data


def test_advice_table_says_at_least_when_the_minimum_decides(pilot: Pilot) -> None:
    lo, hi = proportion_confint(57, 60, method="wilson")
    gate = evaluate_gate(
        pilot,
        results(
            kpi("task_completion_rate", 0.95, lo, hi, 60),
            kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
        ),
    )
    assert gate.extend_advice()["power"].tolist() == ["at least 80%"]


# ---- data coverage beside the KPIs -----------------------------------------------------------


def test_rationale_always_carries_a_data_coverage_line(pilot: Pilot) -> None:
    passing = (
        kpi("task_completion_rate", 0.9, 0.88, 0.92, 1000),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    # a phase 2 result from before the coverage check: the line says it was not measured
    gate = evaluate_gate(pilot, results(*passing))
    assert gate.decision == "GO"
    assert gate.coverage_line.startswith("Data coverage: not measured")
    assert gate.coverage_line in gate.rationale
    assert gate.to_result()["data_coverage"] is None
    # with coverage: its line, verbatim, and the record in the gate's result
    res = results(*passing)
    line = "Data coverage: 1,000 of 1,000 decisions valid (100.0%); no flagged rows."
    res["kpi_baselining"]["data_coverage"] = {"line": line, "sufficient": True}
    gate = evaluate_gate(pilot, res)
    assert gate.decision == "GO"
    assert line in gate.rationale
    assert gate.to_result()["data_coverage"] == {"line": line, "sufficient": True}


def test_incomplete_evidence_blocks_a_go_beside_passing_kpis(pilot: Pilot) -> None:
    res = results(
        kpi("task_completion_rate", 0.9, 0.88, 0.92, 1000),
        kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000),
    )
    message = (
        "The evidence is incomplete: 1,400 of 2,400 decisions (58.3%) are quarantined, above "
        "the 5% limit for decisions."
    )
    res["kpi_baselining"]["findings"] = [
        {
            "phase": "kpi_baselining",
            "code": "incomplete_dataset",
            "severity": "blocking",
            "message": message,
            "evidence": {"dataset": "decisions", "share": 1400 / 2400},
        }
    ]
    res["kpi_baselining"]["data_coverage"] = {"line": "Data coverage: ...", "sufficient": False}
    gate = evaluate_gate(pilot, res)
    assert {v.status for v in gate.verdicts} == {"PASS"}
    assert gate.decision == "NO-GO"
    assert [f.code for f in gate.blocking] == ["incomplete_dataset"]
    assert message in gate.rationale
    assert "1 blocking finding stands" in gate.rationale


# ---- issue 22: fragile PASSes and misses not shown -----------------------------------
def _weekly_record(kpi_name: str, y: list[float], n: list[float]) -> dict:
    """A phase 2 record built here from 12 weekly totals: CR1 by statsmodels on the units,
    leave-one-week-out bounds by statsmodels with each week dropped."""
    import numpy as np
    import pandas as pd
    import statsmodels.api as sm
    from scipy import stats as st

    units, groups = [], []
    for g, (yy, nn) in enumerate(zip(y, n, strict=True)):
        units += [1.0] * int(yy) + [0.0] * int(nn - yy)
        groups += [g] * int(nn)
    units, groups = np.array(units), np.array(groups)

    def fit(keep):
        f = sm.OLS(units[keep], np.ones(keep.sum())).fit(
            cov_type="cluster", cov_kwds={"groups": pd.factorize(groups[keep])[0]}
        )
        return float(f.params[0]), float(f.bse[0])

    est, se = fit(np.ones(units.size, bool))
    t = st.t.ppf(0.975, len(y) - 1)
    loo = [fit(groups != g) for g in range(len(y))]
    t2 = st.t.ppf(0.975, len(y) - 2)
    return {
        "kpi": kpi_name,
        "estimate": est,
        "low": est - t * se,
        "high": est + t * se,
        "n": int(sum(n)),
        "se": se,
        "cluster_by": "week",
        "loo_low": min(e - t2 * s for e, s in loo),
        "loo_high": max(e + t2 * s for e, s in loo),
    }


def test_a_pass_resting_on_one_week_is_fragile_and_the_go_says_so(pilot: Pilot) -> None:
    # 11 weeks near 81% and one bigger, better week (87.5%): the pass rests on it
    y = [80.0, 82, 81, 82, 80, 81, 82, 80, 81, 81, 82, 175]
    n = [100.0] * 11 + [200.0]
    completion = _weekly_record("task_completion_rate", y, n)
    assert completion["low"] > 0.80 > completion["loo_low"]  # checked on the constructed data
    gate = evaluate_gate(pilot, results(completion, kpi("cost_per_decision", 1.9, 1.8, 2.0, 1000)))
    v = gate.verdicts[0]
    assert v.status == "PASS" and v.status_text == "PASS (fragile)"
    assert any("leaving out one week" in why for why in v.fragile)
    assert gate.decision == "GO"
    assert "rests on fragile PASSes (task completion)" in gate.rationale
    fragile = [r for r in gate.reasons() if "fragile" in r.headline]
    assert fragile and "The GO rests on it" in fragile[0].detail
    assert "would settle it" in fragile[0].detail
    assert gate.verdict_table()["status"].tolist()[0] == "PASS (fragile)"
    # the advice: the farthest bound's distance from the estimate shrinks as 1 / sqrt(n)
    h = (completion["estimate"] - completion["loo_low"]) * (1 + 0.5 / 1.959963984540054)
    h = max(h, (completion["estimate"] - completion["low"]) * (1 + 0.5 / 1.959963984540054))
    k = (h / (completion["estimate"] - 0.80)) ** 2
    assert v.additional_samples == math.ceil(completion["n"] * k) - completion["n"]


def test_a_thin_margin_is_fragile_and_a_wide_one_is_not(pilot: Pilot) -> None:
    th = pilot.threshold("task_completion_rate")
    record = {**kpi("task_completion_rate", 0.83, 0.802, 0.858, 1000), "se": 0.0143}
    thin = judge_kpi(th, record)
    assert thin.status == "PASS" and thin.margin_se == pytest.approx(0.002 / 0.0143)
    assert "0.14 standard errors" in thin.fragile[0]
    wide = judge_kpi(th, {**record, "low": 0.81})
    assert wide.status == "PASS" and not wide.fragile and wide.status_text == "PASS"
    # the few-cluster bootstrap clears but CR1 does not: fragile
    flip = judge_kpi(
        th,
        {**record, "low": 0.81, "interval_method": "few-cluster bootstrap", "low_cr1": 0.799},
    )
    assert flip.fragile and "CR1" in flip.fragile[0]
    # a setting of 0 turns the margin check off
    assert not judge_kpi(th, record, fragile_margin_se=0).fragile


def test_missed_but_not_shown_advice_matches_statsmodels_power(pilot: Pilot) -> None:
    """The samples that show the miss with 80% power are the one-sample z-test's sample size."""
    th = pilot.threshold("task_completion_rate")
    p, n = 0.78, 1000
    se = math.sqrt(p * (1 - p) / n)
    record = {**kpi("task_completion_rate", p, p - 1.959963984540054 * se, p + 1.96 * se, n)}
    v = judge_kpi(th, record, power=0.8)
    assert v.status == "FAIL" and v.missed_not_shown and v.status_text == "FAIL (not shown)"
    assert v.reason.startswith("missed, but not shown to miss")
    effect = (0.80 - p) / math.sqrt(p * (1 - p))
    needed = NormalIndPower().solve_power(
        effect_size=effect, alpha=0.025, power=0.8, ratio=0, alternative="larger"
    )
    assert v.additional_samples + n == pytest.approx(needed, rel=2e-3)
    # shown: the whole interval misses
    shown = judge_kpi(th, {**record, "high": 0.795})
    assert shown.status == "FAIL" and not shown.missed_not_shown

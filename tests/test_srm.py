"""Sample-ratio mismatch (issue 22): the check against hand-worked chi-square, the
anytime-valid form by a seeded simulation of weekly looks, and the gate on a constructed
60/40 split planned as 50/50."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.analysis.srm import sample_ratio_check, sequential_srm_pvalue
from tests.test_gate import PILOT_DOC


def test_chi_square_by_hand() -> None:
    # 600 agent, 400 control, planned 50/50: chi2 = (100^2 + 100^2) / 500 = 40
    check = sample_ratio_check(600, 400, 0.5)
    assert check.statistic == pytest.approx(40.0)
    assert check.p_value == pytest.approx(special.erfc(math.sqrt(40 / 2)))  # chi2(1) tail
    assert check.mismatch and check.observed_agent_share == 0.6
    # 512 / 488 is chance at 0.001
    assert not sample_ratio_check(512, 488, 0.5).mismatch
    # a planned 70/30 split met
    assert not sample_ratio_check(700, 300, 0.7).mismatch
    assert sample_ratio_check(0, 0, 0.5).p_value == 1.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        sample_ratio_check(1, 1, 1.0)


def test_sequential_pvalue_by_hand_and_anytime_valid() -> None:
    # by hand: BF = B(x + 50, m + 50) / B(50, 50) / 0.5^(x + m)
    x, m = 60, 40
    bf = math.exp(special.betaln(x + 50, m + 50) - special.betaln(50, 50) + (x + m) * math.log(2))
    assert sequential_srm_pvalue(x, m, 0.5) == pytest.approx(min(1, 1 / bf))
    # weekly looks under the planned split: the chance any look rejects stays below alpha
    rng = np.random.default_rng(22)
    alpha, sims, looks = 0.05, 400, 20
    false = 0
    for _ in range(sims):
        agent = np.cumsum(rng.binomial(100, 0.5, looks))
        total = 100 * np.arange(1, looks + 1)
        false += any(
            sequential_srm_pvalue(int(a), int(t - a), 0.5) < alpha
            for a, t in zip(agent, total, strict=True)
        )
    assert false / sims <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / sims)
    # a 60/40 split is caught by the interim form too
    assert sample_ratio_check(600, 400, 0.5, sequential=True).mismatch


@pytest.fixture
def srm_pilot(tmp_path: Path):
    import yaml

    from pilot_lib.config import load_pilot

    doc = copy.deepcopy(PILOT_DOC)
    doc["kpis"].append(
        {
            "kpi": "efficiency_gain",
            "comparator": ">=",
            "value": 0.2,
            "unit": "proportion",
            "min_samples": 50,
        }
    )
    doc["statistics"] = {"planned_agent_share": 0.5}
    (tmp_path / "d.csv").write_text("x\n")
    (tmp_path / "c.csv").write_text("x\n")
    (tmp_path / "pilot.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_pilot(tmp_path)


def _results(agent: int, control: int) -> dict:
    kpis = [
        {"kpi": "task_completion_rate", "estimate": 0.9, "low": 0.88, "high": 0.92, "n": 1000},
        {"kpi": "cost_per_decision", "estimate": 1.0, "low": 0.9, "high": 1.1, "n": 1000},
        {"kpi": "efficiency_gain", "estimate": 0.4, "low": 0.35, "high": 0.45, "n": 400},
    ]
    cohorts = {
        "agent": {"cases": agent, "closed": agent, "open": 0},
        "control": {"cases": control, "closed": control, "open": 0},
    }
    return {
        "kpi_baselining": {
            "kpis": kpis,
            "efficiency": {"cohorts": cohorts, "comparison": "control"},
        },
        "drift_analysis": {"findings": []},
        "incident_drill_review": {"findings": []},
    }


def test_a_60_40_split_planned_50_50_makes_efficiency_inconclusive(srm_pilot) -> None:
    assert evaluate_gate(srm_pilot, _results(505, 495)).decision == "GO"
    gate = evaluate_gate(srm_pilot, _results(600, 400))
    eff = next(v for v in gate.verdicts if v.kpi == "efficiency_gain")
    assert eff.status == "INCONCLUSIVE" and eff.reason.startswith("sample-ratio mismatch")
    (f,) = [f for f in gate.other_findings if f.code == "sample_ratio_mismatch"]
    assert f.evidence["p_value"] == pytest.approx(stats.chi2.sf(40.0, 1))
    assert "60.0%" in f.message and "50.0%" in f.message
    assert gate.decision == "EXTEND"

"""Prompt-version promotion on the golden set, and the fast and slow feedback loops (phase 3).

Golden accuracy is checked against statsmodels' Wilson interval; the paired
difference against the Newcombe (1998, method 10) interval rebuilt here from
statsmodels' Wilson bounds and numpy's Pearson correlation of the paired 0/1
outcomes, and against the Wald interval (statsmodels OLS, HC0) at large n.
Each promotion finding is raised on a hand-built log; feedback crossings
against a raw pandas count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import tiny_frames, write_pilot
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis.gate import evaluate_gate
from pilot_lib.analysis.promotion import (
    FEEDBACK_HEADING,
    PROMOTION_HEADING,
    feedback_loops,
    newcombe_paired_interval,
    prompt_promotion,
)
from pilot_lib.config import load_pilot
from pilot_lib.ingest.contracts import load_pilot_data
from pilot_lib.phases import drift_phase

FILES = {"golden_evaluations": "golden.csv", "feedback": "feedback.csv"}
# the tiny pilot's v1 goes live on its first decision, v2 on the first of the second half
V1_LIVE = tiny_frames()["decisions"].query("prompt_version == 'v1'")["timestamp"].min()
V2_LIVE = tiny_frames()["decisions"].query("prompt_version == 'v2'")["timestamp"].min()


def newcombe_reference(new: np.ndarray, old: np.ndarray) -> tuple[float, float, float]:
    """Newcombe's method 10 from the paired 0/1 outcomes, computed independently."""
    n = len(new)
    p1, p2 = new.mean(), old.mean()
    l1, u1 = proportion_confint(int(new.sum()), n, method="wilson")
    l2, u2 = proportion_confint(int(old.sum()), n, method="wilson")
    # the correlation of the paired outcomes, with Newcombe's continuity correction:
    # |AD - BC| shrunk by N/2 when AD > BC, 0 in between (method 10 as published)
    a = float(((new == 1) & (old == 1)).sum())
    b = float(((new == 1) & (old == 0)).sum())
    c = float(((new == 0) & (old == 1)).sum())
    d_ = float(((new == 0) & (old == 0)).sum())
    margins = (a + b) * (c + d_) * (a + c) * (b + d_)
    cross = a * d_ - b * c
    if margins == 0:
        phi = 0.0
    else:
        assert abs(cross / math.sqrt(margins) - np.corrcoef(new, old)[0, 1]) < 1e-9
        phi = (cross - n / 2 if cross > n / 2 else min(cross, 0.0)) / math.sqrt(margins)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return d, low, high


@pytest.mark.parametrize(
    "counts", [(60, 14, 6, 20), (180, 3, 11, 6), (0, 5, 0, 5), (40, 0, 0, 0), (7, 2, 3, 1)]
)
def test_paired_interval_matches_an_independent_newcombe(counts) -> None:
    both, only_new, only_old, neither = counts
    new = np.array([1] * both + [1] * only_new + [0] * only_old + [0] * neither, dtype=float)
    old = np.array([1] * both + [0] * only_new + [1] * only_old + [0] * neither, dtype=float)
    got = newcombe_paired_interval(*counts)
    assert got == pytest.approx(newcombe_reference(new, old), abs=1e-12)
    assert got[1] <= got[0] <= got[2]


def test_paired_interval_agrees_with_wald_at_large_n() -> None:
    counts = (3000, 420, 300, 1280)
    new = np.repeat([1.0, 1.0, 0.0, 0.0], counts)
    old = np.repeat([1.0, 0.0, 1.0, 0.0], counts)
    fit = sm.OLS(new - old, np.ones(len(new))).fit(cov_type="HC0")
    low, high = fit.conf_int(alpha=0.05)[0]
    d, lo, hi = newcombe_paired_interval(*counts)
    assert d == pytest.approx(fit.params[0], abs=1e-12)
    assert (lo, hi) == pytest.approx((low, high), abs=5e-4)


def test_no_discordant_case_still_has_a_width() -> None:
    d, lo, hi = newcombe_paired_interval(30, 0, 0, 10)
    assert d == 0 and lo < -0.01 and hi > 0.01


def golden_frame(spec: dict[str, tuple[int, int, pd.Timestamp]], seed: int = 1) -> pd.DataFrame:
    """Per version: (cases, correct, evaluated_at); version i is right on the first ``correct``
    cases of a shuffled order shared by every version (so pairs are well defined)."""
    rng = np.random.default_rng(seed)
    rows = []
    for version, (n, k, at) in spec.items():
        order = rng.permutation(n)
        for j in range(n):
            rows.append(
                {
                    "prompt_version": version,
                    "golden_case_id": f"g{j:03d}",
                    "correct": bool(order[j] < k),
                    "evaluated_at": at,
                }
            )
    return pd.DataFrame(rows)


def promotion_pilot(tmp_path: Path, golden: pd.DataFrame | None, margin: float = 0.02):
    frames = tiny_frames()
    if golden is not None:
        frames["golden_evaluations"] = golden
    folder = write_pilot(
        tmp_path / "p", frames, files=FILES, doc_changes={"promotion": {"margin": margin}}
    )
    pilot = load_pilot(folder)
    return pilot, load_pilot_data(pilot)


BEFORE = pd.Timestamp("2026-02-20 10:00")


def test_golden_accuracy_and_paired_difference_against_raw_rows(tmp_path: Path) -> None:
    golden = golden_frame(
        {"v1": (200, 150, BEFORE), "v2": (200, 170, BEFORE), "v0": (50, 20, BEFORE)}
    )
    pilot, data = promotion_pilot(tmp_path, golden)
    review = prompt_promotion(pilot, data)
    acc = review.accuracy.set_index("prompt_version")
    for version, part in golden.groupby("prompt_version"):
        k, n = int(part["correct"].sum()), len(part)
        assert acc.loc[version, "golden_cases"] == n
        assert acc.loc[version, "accuracy"] == pytest.approx(k / n)
        low, high = proportion_confint(k, n, method="wilson")
        assert (acc.loc[version, "low"], acc.loc[version, "high"]) == pytest.approx((low, high))
    assert pd.isna(acc.loc["v0", "went_live_at"])  # evaluated, never live
    assert list(review.promotions["prompt_version"]) == ["v1", "v2"]
    row = review.promotions.iloc[1]
    wide = golden.pivot(index="golden_case_id", columns="prompt_version", values="correct")
    wide = wide.dropna(subset=["v1", "v2"])
    new, old = wide["v2"].to_numpy(float), wide["v1"].to_numpy(float)
    d, lo, hi = newcombe_reference(new, old)
    assert row["paired_cases"] == len(wide)
    assert row["only_new_correct"] == int(((new == 1) & (old == 0)).sum())
    assert (row["difference"], row["low"], row["high"]) == pytest.approx((d, lo, hi))
    assert row["verdict"] in ("beats predecessor", "matches predecessor")
    assert review.findings == []
    json.dumps(review.to_result())


def test_version_promoted_below_its_predecessor_blocks(tmp_path: Path) -> None:
    golden = golden_frame({"v1": (300, 270, BEFORE), "v2": (300, 240, BEFORE)})
    pilot, data = promotion_pilot(tmp_path, golden)
    (f,) = prompt_promotion(pilot, data).findings
    assert (f.code, f.severity) == ("promoted_below_predecessor", "blocking")
    assert f.evidence["difference"] == pytest.approx(-0.1)
    assert f.evidence["section"] == PROMOTION_HEADING
    assert "90.0%" in f.message and "80.0%" in f.message


def test_small_golden_set_within_margin_is_a_warning(tmp_path: Path) -> None:
    golden = golden_frame({"v1": (40, 32, BEFORE), "v2": (40, 32, BEFORE)}, seed=2)
    pilot, data = promotion_pilot(tmp_path, golden)
    (f,) = prompt_promotion(pilot, data).findings
    assert (f.code, f.severity) == ("promotion_match_not_shown", "warning")


def test_version_live_without_golden_evaluation_blocks(tmp_path: Path) -> None:
    pilot, data = promotion_pilot(tmp_path, golden_frame({"v1": (50, 45, BEFORE)}))
    (f,) = prompt_promotion(pilot, data).findings
    assert (f.code, f.severity) == ("promoted_without_golden_evaluation", "blocking")
    assert f.evidence["prompt_version"] == "v2"


def test_version_evaluated_only_after_go_live_blocks(tmp_path: Path) -> None:
    late = V2_LIVE + pd.Timedelta(days=2)
    golden = golden_frame({"v1": (300, 240, BEFORE), "v2": (300, 285, late)})
    pilot, data = promotion_pilot(tmp_path, golden)
    codes = [(f.code, f.severity) for f in prompt_promotion(pilot, data).findings]
    assert codes == [("golden_evaluation_after_go_live", "blocking")]


def test_no_golden_set_is_a_warning_not_a_block(tmp_path: Path) -> None:
    pilot, data = promotion_pilot(tmp_path, None)
    review = prompt_promotion(pilot, data)
    (f,) = review.findings
    assert (f.code, f.severity) == ("promotion_not_evidenced", "warning")
    assert not review.golden


def test_promotion_finding_reaches_the_gate(tmp_path: Path) -> None:
    golden = golden_frame({"v1": (300, 270, BEFORE), "v2": (300, 240, BEFORE)})
    pilot, data = promotion_pilot(tmp_path, golden)
    result = drift_phase(pilot, data).to_result()
    assert result["prompt_promotion"]["promotions"][1]["verdict"] == "below predecessor"
    found = [f for f in result["findings"] if f["code"] == "promoted_below_predecessor"]
    assert gate_decision(pilot, []).decision == "GO"
    decision = gate_decision(pilot, found)
    assert decision.decision == "NO-GO"
    reason = next(r for r in decision.reasons() if r.headline == "Worse prompt version promoted")
    assert reason.section == PROMOTION_HEADING


# ---- feedback loops --------------------------------------------------------------------------


def feedback_frame(n: int = 80, crossed: int = 3, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    created = pd.Timestamp("2026-03-03") + pd.to_timedelta(rng.integers(0, 20 * 86400, n), "s")
    loop = np.where(rng.random(n) < 0.6, "fast", "slow")
    used_by = np.where(rng.random(n) < 0.7, loop, None).astype(object)
    cross_at = rng.choice(n, crossed, replace=False)
    used_by[cross_at] = np.where(loop[cross_at] == "fast", "slow", "fast")
    used_at = [
        c + pd.Timedelta(hours=6) if u is not None else pd.NaT
        for c, u in zip(created, used_by, strict=True)
    ]
    return pd.DataFrame(
        {
            "feedback_id": [f"fb{i:03d}" for i in range(n)],
            "decision_id": [f"d{i % 40:04d}" for i in range(n)],
            "created_at": created,
            "loop": loop,
            "used_by": used_by,
            "used_at": used_at,
        }
    )


def feedback_pilot(tmp_path: Path, feedback: pd.DataFrame, limit: float | None = None):
    frames = tiny_frames() | {"feedback": feedback}
    changes = {"feedback": {"max_cross_loop_share": limit}} if limit is not None else {}
    pilot = load_pilot(write_pilot(tmp_path / "f", frames, files=FILES, doc_changes=changes))
    return pilot, load_pilot_data(pilot)


def test_feedback_crossings_against_a_raw_count(tmp_path: Path) -> None:
    fb = feedback_frame(crossed=3)
    pilot, data = feedback_pilot(tmp_path, fb, limit=0.5)
    review = feedback_loops(pilot, data)
    used = fb[fb["used_by"].notna()]
    crossing = used[used["used_by"] != used["loop"]]
    assert (review.items, review.consumed, review.crossed) == (len(fb), len(used), len(crossing))
    assert review.crossed_share == pytest.approx(len(crossing) / len(used))
    for direction, ids in review.crossed_ids.items():
        src = direction.split(" -> ")[0]
        assert ids == sorted(crossing.loc[crossing["loop"] == src, "feedback_id"])
    flows = review.flows.set_index(["loop", "used_by"])["items"]
    raw = fb.fillna({"used_by": "unused"}).groupby(["loop", "used_by"]).size()
    assert flows.sort_index().to_dict() == raw.sort_index().to_dict()
    (f,) = review.findings
    assert (f.code, f.severity) == ("feedback_loops_crossed", "warning")


def test_clean_loops_give_no_finding(tmp_path: Path) -> None:
    pilot, data = feedback_pilot(tmp_path, feedback_frame(crossed=0))
    review = feedback_loops(pilot, data)
    assert review.crossed == 0 and review.findings == []


def test_crossing_above_the_limit_blocks_and_reaches_the_gate(tmp_path: Path) -> None:
    pilot, data = feedback_pilot(tmp_path, feedback_frame(crossed=12), limit=0.05)
    (f,) = feedback_loops(pilot, data).findings
    assert f.severity == "blocking" and f.evidence["section"] == FEEDBACK_HEADING
    decision = gate_decision(pilot, [f.__dict__])
    assert decision.decision == "NO-GO"
    assert any(r.headline == "Feedback loops mixed" for r in decision.reasons())


def test_feedback_used_before_created_is_quarantined(tmp_path: Path) -> None:
    fb = feedback_frame(crossed=0)
    i = fb.index[fb["used_by"].notna()][0]
    fb.loc[i, "used_at"] = fb.loc[i, "created_at"] - pd.Timedelta(hours=1)
    fb.loc[i + 1, "loop"] = "medium"
    pilot, data = feedback_pilot(tmp_path, fb)
    by_rule = dict(data.checks["feedback"].by_rule.itertuples(index=False))
    assert by_rule == {"used_at before created_at": 1, "unknown loop": 1}


def gate_decision(pilot, findings: list[dict]):
    """The gate on passing KPIs (as tests/test_gate.py builds them) and ``findings``."""
    lo, hi = proportion_confint(950, 1000, method="wilson")
    kpis = [
        {"kpi": "task_completion_rate", "estimate": 0.95, "low": lo, "high": hi, "n": 1000},
        {"kpi": "cost_per_decision", "estimate": 1.9, "low": 1.8, "high": 2.0, "n": 1000},
        {"kpi": "escalation_rate", "estimate": 0.05, "low": 0.04, "high": 0.06, "n": 1000},
    ]
    return evaluate_gate(
        pilot,
        {
            "kpi_baselining": {"kpis": kpis, "findings": []},
            "drift_analysis": {"findings": list(findings)},
            "incident_drill_review": {"findings": []},
        },
    )


# ---- issue 22: a block needs the new version shown worse by more than the margin ---------
def _block_rate(p_only_new: float, p_only_old: float, reps: int, seed: int) -> tuple[float, float]:
    """Share of simulated 400-case golden sets that block a promotion: by the rule, and by the
    old rule on the point estimate (``difference < -margin``)."""
    import numpy as np

    from pilot_lib.analysis.promotion import promotion_verdict

    rng = np.random.default_rng(seed)
    p_both = 0.93 - p_only_old
    probs = [p_both, p_only_new, p_only_old, 1 - p_both - p_only_new - p_only_old]
    blocked = point = 0
    for counts in rng.multinomial(400, probs, size=reps):
        d, low, high = newcombe_paired_interval(*(int(c) for c in counts))
        blocked += promotion_verdict(400, d, low, high, 0.02) == "below predecessor"
        point += d < -0.02
    return blocked / reps, point / reps


def test_equal_versions_are_blocked_at_most_2_5_percent() -> None:
    """Seeded: two equally accurate versions (93%), 400 golden cases, about 32 discordant."""
    reps = 1500
    tolerance = 3 * math.sqrt(0.025 * 0.975 / reps)
    rate, point_rate = _block_rate(0.04, 0.04, reps, seed=22)
    assert rate <= 0.025
    assert point_rate > 0.03  # what the point-estimate rule blocked (issue 22: 5.4-7.7%)
    # the worst case for a false block: the truth exactly the margin below
    edge, _ = _block_rate(0.03, 0.05, reps, seed=23)
    assert edge <= 0.025 + tolerance
    # and a version truly 8 points worse is blocked nearly always
    worse, _ = _block_rate(0.01, 0.09, 300, seed=24)
    assert worse > 0.9


def test_estimate_below_the_margin_but_not_shown_is_a_warning() -> None:
    from pilot_lib.analysis.promotion import promotion_verdict

    assert promotion_verdict(400, -0.03, -0.06, -0.005, 0.02) == "match not shown"
    assert promotion_verdict(400, -0.05, -0.08, -0.021, 0.02) == "below predecessor"
    assert promotion_verdict(400, 0.02, 0.001, 0.04, 0.02) == "beats predecessor"
    assert promotion_verdict(0, math.nan, math.nan, math.nan, 0.02) == "no common golden cases"

"""Tests for pilot_lib.analysis.scoring: hand-worked use-case scores and build-vs-buy flip points."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest
import yaml

from pilot_lib.analysis.scoring import (
    CANDIDATE_COLUMNS,
    CRITERIA,
    CandidatesError,
    ScoringSettingsError,
    build_vs_buy,
    repetitiveness_score,
    score_use_cases,
    scoring_result,
    scoring_settings,
    what_if,
)
from pilot_lib.config import BUILD_DIMENSIONS, BuildOption, BuildVsBuy, load_pilot
from pilot_lib.errors import ContractError, WorkbookError

REPO = Path(__file__).resolve().parents[1]
CLAIMS_PILOT = REPO / "data" / "pilots" / "claims-auto" / "pilot.yaml"


def candidate(name: str, **overrides) -> dict:
    """A candidate row that qualifies comfortably unless overridden."""
    row = {
        "name": name,
        "impact_metric": "cycle time (hours)",
        "baseline_value": 10.0,
        "impact_score": 4,
        "data_score": 4,
        "readiness_score": 4,
        "weekly_volume": 1000.0,
        "sme_committed": True,
        "owner_has_authority": True,
        "demo_appeal": 2,
        "notes": None,
    }
    row.update(overrides)
    return row


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(CANDIDATE_COLUMNS))


def by_name(scored: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["name"]: row for _, row in scored.iterrows()}


# ---------------------------------------------------------------------------
# Hand-worked three-candidate table
# ---------------------------------------------------------------------------

# margin 0.05 at 95% needs ceil(1.96^2 * 0.25 / 0.05^2) = 385 decisions; 12 weeks.
#   Claims triage:     100/wk -> 1200 expected, 1200/385 = 3.12 -> repetitiveness 4
#   Invoice matching:   50/wk ->  600 expected,  600/385 = 1.56 -> repetitiveness 3
#   Contract drafting: 500/wk -> 6000 expected, 15.6x          -> repetitiveness 5
THREE = frame(
    candidate("Claims triage", impact_score=4, data_score=4, readiness_score=3, weekly_volume=100),
    candidate(
        "Invoice matching", impact_score=3, data_score=5, readiness_score=4, weekly_volume=50
    ),
    candidate(
        "Contract drafting", impact_score=5, data_score=2, readiness_score=5, weekly_volume=500
    ),
)


def test_three_candidates_weighted_by_hand() -> None:
    weights = {"impact": 2, "data": 1, "repetitiveness": 1, "readiness": 1}
    scored = score_use_cases(THREE, weights=weights)
    # Totals (sum of weight x score) / 5:
    #   Claims triage     (2*4 + 4 + 4 + 3) / 5 = 3.8
    #   Invoice matching  (2*3 + 5 + 3 + 4) / 5 = 3.6
    #   Contract drafting (2*5 + 2 + 5 + 5) / 5 = 4.4, but data 2 < 3: does not qualify
    assert scored["name"].tolist() == ["Claims triage", "Invoice matching", "Contract drafting"]
    assert scored["rank"].tolist() == [1, 2, 3]
    assert scored["weighted_total"].tolist() == pytest.approx([3.8, 3.6, 4.4])
    assert scored["repetitiveness"].tolist() == [4, 3, 5]
    assert scored["expected_decisions"].tolist() == [1200.0, 600.0, 6000.0]
    assert scored["needed_decisions"].tolist() == [385, 385, 385]
    assert scored["decisions_ratio"].tolist() == pytest.approx([1200 / 385, 600 / 385, 6000 / 385])
    assert scored["qualifies"].tolist() == [True, True, False]
    assert scored["fails_on"].tolist() == ["", "", "data"]
    assert not scored["novelty_trap"].any()
    rows = by_name(scored)
    assert rows["Contract drafting"]["why"].startswith("Does not qualify")
    assert "data (2)" in rows["Contract drafting"]["why"]
    assert rows["Claims triage"]["why"].startswith("Qualifies")
    assert "1,200 decisions" in rows["Claims triage"]["why"]


def test_three_candidates_equal_weights_tie_broken_by_name() -> None:
    scored = score_use_cases(THREE)
    # Equal weights: Claims triage (4+4+4+3)/4 = 3.75 and Invoice matching
    # (3+5+3+4)/4 = 3.75 tie; the name decides. Contract drafting (5+2+5+5)/4 = 4.25.
    assert scored["weighted_total"].tolist() == [3.75, 3.75, 4.25]
    assert scored["name"].tolist() == ["Claims triage", "Invoice matching", "Contract drafting"]
    # Reordering the input does not change the ranking.
    again = score_use_cases(THREE.iloc[::-1])
    pd.testing.assert_frame_equal(scored, again)


def test_weights_scale_free_and_zero_weight_leaves_a_criterion_out() -> None:
    a = score_use_cases(
        THREE, weights={"impact": 2, "data": 1, "repetitiveness": 1, "readiness": 1}
    )
    b = score_use_cases(
        THREE, weights={"impact": 20, "data": 10, "repetitiveness": 10, "readiness": 10}
    )
    assert a["weighted_total"].tolist() == pytest.approx(b["weighted_total"].tolist())
    only_data = score_use_cases(
        THREE, weights={"impact": 0, "data": 1, "repetitiveness": 0, "readiness": 0}
    )
    assert dict(zip(only_data["name"], only_data["weighted_total"], strict=True)) == {
        "Invoice matching": 5.0,
        "Claims triage": 4.0,
        "Contract drafting": 2.0,
    }
    # Order: qualifying first (by total), then the rest.
    assert only_data["name"].tolist() == ["Invoice matching", "Claims triage", "Contract drafting"]


def test_float_noise_does_not_break_a_tie() -> None:
    # Both totals are 3.4 by hand, but in floating point
    # 0.1*1 + 0.2*3 + 0.3*5 + 0.4*3 = 3.4000000000000004 while 0.1*5 + 0.2*5 + 0.3*5 + 0.4*1
    # = 3.4 exactly; the tie must still go to the name.
    w = {"impact": 0.1, "data": 0.2, "repetitiveness": 0.3, "readiness": 0.4}
    scored = score_use_cases(
        frame(
            candidate("B", impact_score=1, data_score=3, readiness_score=3),
            candidate("A", impact_score=5, data_score=5, readiness_score=1),
        ),
        weights=w,
        minimum=1,
    )
    assert scored["repetitiveness"].tolist() == [5, 5]
    assert scored["weighted_total"].tolist() == [3.4, 3.4]
    assert scored["name"].tolist() == ["A", "B"]


# ---------------------------------------------------------------------------
# Caps, minimum gate, novelty trap
# ---------------------------------------------------------------------------


def test_impact_capped_without_a_baseline() -> None:
    scored = by_name(
        score_use_cases(
            frame(
                candidate("measured", impact_score=5, baseline_value=3.2),
                candidate("unmeasured", impact_score=5, baseline_value=None),
                candidate("unmeasured low", impact_score=1, baseline_value=np.nan),
                candidate("zero baseline", impact_score=5, baseline_value=0.0),
            )
        )
    )
    assert scored["measured"]["impact"] == 5 and not scored["measured"]["impact_capped"]
    assert scored["unmeasured"]["impact"] == 2 and scored["unmeasured"]["impact_capped"]
    assert "no measured baseline" in scored["unmeasured"]["why"]
    # The cap never raises a score, and a low score is not reported as capped.
    assert scored["unmeasured low"]["impact"] == 1
    assert not scored["unmeasured low"]["impact_capped"]
    # 0 is a measured baseline, not a missing one.
    assert scored["zero baseline"]["impact"] == 5


@pytest.mark.parametrize(
    ("sme", "owner", "expected", "capped", "reason"),
    [
        (True, True, 5, False, None),
        (False, True, 2, True, "no subject-matter expert"),
        (True, False, 2, True, "owner cannot change the process"),
        (False, False, 2, True, "no subject-matter expert is committed and the owner"),
    ],
)
def test_readiness_capped_without_sme_or_authority(
    sme: bool, owner: bool, expected: int, capped: bool, reason: str | None
) -> None:
    scored = score_use_cases(
        frame(candidate("x", readiness_score=5, sme_committed=sme, owner_has_authority=owner))
    )
    row = scored.iloc[0]
    assert row["readiness"] == expected
    assert bool(row["readiness_capped"]) is capped
    if capped:
        assert row["fails_on"] == "readiness" and not row["qualifies"]
        assert reason in row["why"]


def test_readiness_cap_does_not_raise_a_low_score() -> None:
    row = score_use_cases(frame(candidate("x", readiness_score=1, sme_committed=False))).iloc[0]
    assert row["readiness"] == 1 and not row["readiness_capped"]


def test_minimum_gate_names_the_failing_criteria() -> None:
    scored = by_name(
        score_use_cases(
            frame(
                candidate("ok", impact_score=3, data_score=3, readiness_score=3),
                candidate("readiness low", impact_score=5, data_score=5, readiness_score=2),
                candidate("two low", impact_score=2, data_score=5, readiness_score=1),
                candidate("rare", weekly_volume=1.0),
            )
        )
    )
    assert scored["ok"]["qualifies"] and scored["ok"]["fails_on"] == ""
    assert not scored["readiness low"]["qualifies"]
    assert scored["readiness low"]["fails_on"] == "readiness"
    assert scored["two low"]["fails_on"] == "impact, readiness"  # criteria order
    assert scored["rare"]["fails_on"] == "repetitiveness"
    assert scored["rare"]["repetitiveness"] == 1  # 12 of 385


def test_minimum_is_a_parameter() -> None:
    rows = frame(candidate("readiness 2", readiness_score=2), candidate("all 4"))
    strict = by_name(score_use_cases(rows, minimum=5))
    assert not strict["all 4"]["qualifies"]
    assert strict["all 4"]["fails_on"] == "impact, data, readiness"  # repetitiveness is 5
    lenient = score_use_cases(rows, minimum=2)
    assert lenient["qualifies"].all()
    # A high total never lifts a candidate that fails the gate above one that passes.
    gated = score_use_cases(
        frame(
            candidate("high but gated", impact_score=5, data_score=5, readiness_score=2),
            candidate("modest", impact_score=3, data_score=3, readiness_score=3),
        )
    )
    assert gated["name"].tolist() == ["modest", "high but gated"]


@pytest.mark.parametrize(
    ("demo", "impact", "baseline", "trap"),
    [
        (4, 2, 1.0, True),
        (5, 1, 1.0, True),
        (3, 2, 1.0, False),  # not flashy enough
        (5, 3, 1.0, False),  # impact is measurable
        (5, 5, None, True),  # looks like impact 5, but unmeasured: capped to 2
    ],
)
def test_novelty_trap(demo: int, impact: int, baseline: float | None, trap: bool) -> None:
    row = score_use_cases(
        frame(candidate("x", demo_appeal=demo, impact_score=impact, baseline_value=baseline))
    ).iloc[0]
    assert bool(row["novelty_trap"]) is trap
    assert ("Novelty trap" in row["why"]) is trap


# ---------------------------------------------------------------------------
# Repetitiveness cut points
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "score"),
    [
        (0, 1),
        (49.99, 1),
        (50, 2),  # ratio 0.5
        (99.99, 2),
        (100, 3),  # ratio 1: just enough
        (199.99, 3),
        (200, 4),  # ratio 2
        (499.99, 4),
        (500, 5),  # ratio 5
        (10_000, 5),
    ],
)
def test_repetitiveness_cut_points(expected: float, score: int) -> None:
    assert repetitiveness_score(expected, 100) == score


def test_repetitiveness_rejects_zero_needed() -> None:
    with pytest.raises(ValueError):
        repetitiveness_score(10, 0)


@pytest.mark.parametrize(
    ("weekly", "score"),
    [(192, 1), (192.5, 2), (384, 2), (385, 3), (769, 3), (770, 4), (1924, 4), (1925, 5)],
)
def test_repetitiveness_boundaries_through_scoring(weekly: float, score: int) -> None:
    # One-week window, margin 5 points: 385 decisions needed, so the weekly volume
    # is the number of expected decisions.
    row = score_use_cases(
        frame(candidate("x", weekly_volume=weekly)), pilot_weeks=1, margin=0.05
    ).iloc[0]
    assert row["needed_decisions"] == 385
    assert row["repetitiveness"] == score


def test_repetitiveness_uses_margin_and_window() -> None:
    # margin 3 points needs 1068 decisions; 89/wk x 12 = 1068 -> ratio 1 -> 3.
    rows = frame(candidate("exact", weekly_volume=89), candidate("short", weekly_volume=88.9))
    scored = by_name(score_use_cases(rows, pilot_weeks=12, margin=0.03))
    assert scored["exact"]["needed_decisions"] == 1068
    assert scored["exact"]["expected_decisions"] == pytest.approx(1068)
    assert scored["exact"]["repetitiveness"] == 3
    assert scored["short"]["repetitiveness"] == 2
    # A longer window lifts a rare workflow.
    longer = score_use_cases(
        frame(candidate("short", weekly_volume=88.9)), pilot_weeks=24, margin=0.03
    )
    assert longer["repetitiveness"].iloc[0] == 3  # 2133.6 / 1068 = 1.998, just under 2
    assert longer["decisions_ratio"].iloc[0] == pytest.approx(88.9 * 24 / 1068)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def test_ibis_table_gives_the_same_result() -> None:
    from_pandas = score_use_cases(THREE)
    from_ibis = score_use_cases(ibis.memtable(THREE.assign(extra_column="kept out")))
    pd.testing.assert_frame_equal(from_pandas, from_ibis, check_dtype=False)


def test_ibis_table_missing_column_is_named() -> None:
    with pytest.raises(CandidatesError, match="weekly_volume"):
        score_use_cases(ibis.memtable(THREE.drop(columns="weekly_volume")))


def test_empty_candidates() -> None:
    scored = score_use_cases(frame())
    assert scored.empty
    assert {"rank", "name", *CRITERIA, "weighted_total", "why"} <= set(scored.columns)
    result = scoring_result(scored)
    assert result["top_pick"] is None and result["candidate_count"] == 0


def test_booleans_from_text() -> None:
    rows = frame(
        candidate("a", sme_committed="true", owner_has_authority="False"),
        candidate("b", sme_committed=1, owner_has_authority=0),
    )
    scored = by_name(score_use_cases(rows))
    assert scored["a"]["readiness_capped"] and scored["b"]["readiness_capped"]


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"drop": "data_score"}, CandidatesError, ["data_score", "missing", "data-contracts"]),
        ({"impact_score": 6}, CandidatesError, ["impact_score", "1 to 5", "'bad'"]),
        ({"demo_appeal": 0}, CandidatesError, ["demo_appeal", "1 to 5"]),
        ({"data_score": 2.5}, CandidatesError, ["data_score", "whole-number"]),
        ({"readiness_score": "high"}, CandidatesError, ["readiness_score", "numbers"]),
        ({"weekly_volume": -3.0}, CandidatesError, ["weekly_volume", ">= 0", "'bad'"]),
        ({"weekly_volume": None}, CandidatesError, ["weekly_volume", "null", "'bad'"]),
        ({"sme_committed": "maybe"}, CandidatesError, ["sme_committed", "true/false"]),
        ({"name": "good"}, CandidatesError, ["unique", "good"]),
    ],
)
def test_bad_candidates_get_clear_errors(change: dict, error: type, words: list[str]) -> None:
    bad = candidate("bad")
    rows = frame(candidate("good"), bad)
    if "drop" in change:
        rows = rows.drop(columns=change["drop"])
    else:
        ((column, value),) = change.items()
        rows[column] = rows[column].astype(object)
        rows.loc[1, column] = value
    with pytest.raises(error) as info:
        score_use_cases(rows)
    for word in words:
        assert word in str(info.value)
    # Data errors are user-fixable workbook errors, and still ValueErrors.
    assert isinstance(info.value, ContractError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"weights": {"impact": 1, "data": 1, "repetitiveness": 1}}, ["missing", "readiness"]),
        (
            {"weights": {"impact": 1, "data": 1, "repetitiveness": 1, "readiness": 1, "fun": 1}},
            ["unknown", "fun"],
        ),
        (
            {"weights": {"impact": -1, "data": 1, "repetitiveness": 1, "readiness": 1}},
            ["impact", ">= 0"],
        ),
        ({"weights": dict.fromkeys(CRITERIA, 0)}, ["all 0"]),
        ({"weights": {"impact": "x", "data": 1, "repetitiveness": 1, "readiness": 1}}, ["number"]),
        ({"minimum": 0}, ["minimum"]),
        ({"minimum": 6}, ["minimum"]),
        ({"pilot_weeks": 0}, ["pilot_weeks"]),
        ({"pilot_weeks": float("nan")}, ["pilot_weeks"]),
        ({"margin": 0}, ["margin"]),
        ({"margin": 5}, ["margin", "0.05"]),
        ({"confidence": 95}, ["confidence"]),
    ],
)
def test_bad_settings_get_clear_errors(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ScoringSettingsError) as info:
        score_use_cases(THREE, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert isinstance(info.value, WorkbookError)


def test_not_a_table() -> None:
    with pytest.raises(TypeError, match="Ibis table or a pandas DataFrame"):
        score_use_cases([{"name": "x"}])


def test_input_not_modified() -> None:
    before = THREE.copy()
    score_use_cases(THREE)
    pd.testing.assert_frame_equal(THREE, before)


# ---------------------------------------------------------------------------
# Pilot settings and the phase result
# ---------------------------------------------------------------------------


def _loadable_pilot(tmp_path: Path):
    """The claims-auto pilot file in a folder with empty placeholder data files."""
    target = tmp_path / "claims-auto"
    target.mkdir()
    shutil.copy(CLAIMS_PILOT, target / "pilot.yaml")
    raw = yaml.safe_load(CLAIMS_PILOT.read_text(encoding="utf-8"))
    for source in raw["datasets"].values():
        (target / source["path"]).touch()
    return load_pilot(target)


def test_scoring_settings_from_pilot(tmp_path: Path) -> None:
    pilot = _loadable_pilot(tmp_path)
    settings = scoring_settings(pilot)
    # 2026-03-02 .. 2026-05-24 inclusive is 84 days = 12 weeks.
    assert settings["pilot_weeks"] == 12.0
    assert settings["margin"] == 0.03
    assert settings["minimum"] == 3
    assert settings["weights"] is None
    scored = score_use_cases(THREE, **settings)
    assert scored["needed_decisions"].iloc[0] == 1068


def test_scoring_result_is_json(tmp_path: Path) -> None:
    scored = score_use_cases(
        THREE, weights={"impact": 2, "data": 1, "repetitiveness": 1, "readiness": 1}
    )
    build = build_vs_buy(*_claims_build_vs_buy())
    result = scoring_result(scored, build)
    text = json.dumps(result, allow_nan=False)
    back = json.loads(text)
    assert back["top_pick"] == "Claims triage"
    assert back["qualifying"] == ["Claims triage", "Invoice matching"]
    assert back["novelty_traps"] == []
    assert back["settings"]["weights"]["impact"] == 2
    assert back["settings"]["margin"] == 0.05
    assert [c["name"] for c in back["candidates"]] == scored["name"].tolist()
    assert back["build_vs_buy"]["winner"] == "Adopt vendor solution"
    # Never-flipping sensitivities are null in JSON, not Infinity.
    sens = {row["dimension"]: row for row in back["build_vs_buy"]["sensitivity"]}
    assert sens["observability"]["increase_to_flip"] is None
    assert sens["architectural_control"]["increase_to_flip"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# Build vs buy
# ---------------------------------------------------------------------------


def _claims_build_vs_buy() -> tuple[list[BuildOption], dict[str, float]]:
    raw = yaml.safe_load(CLAIMS_PILOT.read_text(encoding="utf-8"))["build_vs_buy"]
    model = BuildVsBuy.model_validate(raw)
    return list(model.options), dict(model.weights)


def _independent_scores(options: list[dict], weights: dict[str, float]) -> np.ndarray:
    """0-100 scores written out in numpy, for checking flip points."""
    s = np.array([[o["scores"][d] for d in BUILD_DIMENSIONS] for o in options], dtype=float)
    w = np.array([weights[d] for d in BUILD_DIMENSIONS], dtype=float)
    return s @ w / w.sum() * 10


def _independent_winner(options: list[dict], weights: dict[str, float]) -> str:
    scores = _independent_scores(options, weights)
    best = scores.max()
    return sorted(o["name"] for o, sc in zip(options, scores, strict=True) if sc >= best - 1e-9)[0]


def _as_dicts(options: list[BuildOption]) -> list[dict]:
    return [{"name": o.name, "scores": dict(o.scores)} for o in options]


def test_playbook_48_vs_68() -> None:
    options, weights = _claims_build_vs_buy()
    result = build_vs_buy(options, weights)
    scores = dict(zip(result.scores["option"], result.scores["score"], strict=True))
    # Build:  .25*2 + .20*9 + .20*6 + .15*6 + .20*2 = 4.8 -> 48.0
    # Vendor: .25*9 + .20*5 + .20*6 + .15*5 + .20*8 = 6.8 -> 68.0
    assert scores["Build custom agentic framework"] == pytest.approx(48.0)
    assert scores["Adopt vendor solution"] == pytest.approx(68.0)
    assert result.winner == "Adopt vendor solution"
    assert result.scores["rank"].tolist() == [1, 2]
    vendor = result.scores.iloc[0]
    assert vendor["time_to_production_points"] == pytest.approx(22.5)  # .25 * 9 * 10
    assert vendor["total_cost_points"] == pytest.approx(16.0)
    points = result.scores[[f"{d}_points" for d in BUILD_DIMENSIONS]].sum(axis=1)
    assert points.tolist() == pytest.approx(result.scores["score"].tolist())
    # Dicts work the same as BuildOption objects.
    same = build_vs_buy(_as_dicts(options), weights)
    pd.testing.assert_frame_equal(
        result.scores.drop(columns="summary"), same.scores.drop(columns="summary")
    )


def test_weights_need_not_sum_to_one() -> None:
    options, weights = _claims_build_vs_buy()
    scaled = build_vs_buy(options, {d: w * 40 for d, w in weights.items()})
    assert scaled.scores["score"].tolist() == pytest.approx([68.0, 48.0])


def test_playbook_sensitivity_by_hand() -> None:
    options, weights = _claims_build_vs_buy()
    sens = build_vs_buy(options, weights).sensitivity.set_index("dimension")
    # architectural_control: build 9 vs vendor 5; gap 2.0 (on the 0-10 x weight scale)
    # closes after (6.8 - 4.8) / (9 - 5) = 0.5 more weight: 0.2 -> 0.7 (+250%).
    ac = sens.loc["architectural_control"]
    assert ac["increase_to_flip"] == pytest.approx(0.5)
    assert ac["increase_to_flip_pct"] == pytest.approx(250.0)
    assert ac["flip_weight_up"] == pytest.approx(0.7)
    assert ac["new_top_up"] == "Build custom agentic framework"
    assert math.isinf(ac["decrease_to_flip"]) and ac["new_top_down"] is None
    # lock_in_exit: 6 vs 5 -> 2.0 / 1 = 2.0 more weight: 0.15 -> 2.15.
    assert sens.loc["lock_in_exit", "increase_to_flip"] == pytest.approx(2.0)
    assert sens.loc["lock_in_exit", "flip_weight_up"] == pytest.approx(2.15)
    # time_to_production: lowering it helps build, but the tie would need 2 / 7 = 0.286
    # less weight and only 0.25 is there: never flips. Same for total_cost (2 / 6 > 0.2).
    for dim in ("time_to_production", "total_cost", "observability"):
        assert math.isinf(sens.loc[dim, "decrease_to_flip"]), dim
        assert math.isinf(sens.loc[dim, "increase_to_flip"]), dim
        assert sens.loc[dim, "new_top_up"] is None and sens.loc[dim, "new_top_down"] is None


def _check_flip_points(options: list[dict], weights: dict[str, float]) -> int:
    """Recompute scores just before and just past every reported flip, and on a grid
    where no flip is reported. Returns how many finite flips were checked."""
    result = build_vs_buy(options, weights)
    winner = result.winner
    assert winner == _independent_winner(options, weights)
    checked = 0
    for _, row in result.sensitivity.iterrows():
        d, w = row["dimension"], weights[row["dimension"]]
        for direction, key, top in (
            (+1, "increase_to_flip", "new_top_up"),
            (-1, "decrease_to_flip", "new_top_down"),
        ):
            delta = row[key]
            if math.isfinite(delta):
                eps = 1e-6 * max(1.0, delta)
                if delta > 0:
                    before = {**weights, d: w + direction * (delta - eps)}
                    assert _independent_winner(options, before) == winner, (d, direction)
                after = {**weights, d: w + direction * (delta + eps)}
                assert _independent_winner(options, after) == row[top], (d, direction)
                assert _independent_winner(options, after) != winner
                checked += 1
            else:
                # No flip anywhere the weight can go: from 0 up to 1000x the total.
                span = (
                    np.linspace(w, w + 1000 * sum(weights.values()), 400)
                    if direction > 0
                    else np.linspace(0.0, w, 50)
                )
                for x in span:
                    moved = {**weights, d: float(x)}
                    if sum(moved.values()) > 0:
                        assert _independent_winner(options, moved) == winner, (d, direction, x)
    return checked


def test_sensitivity_playbook_independent_check() -> None:
    options, weights = _claims_build_vs_buy()
    assert _check_flip_points(_as_dicts(options), weights) == 2


def test_sensitivity_downward_flip() -> None:
    # A wins on speed; B on control. Lowering the speed weight hands it to B.
    options = [
        {"name": "A", "scores": dict(zip(BUILD_DIMENSIONS, [10, 2, 5, 5, 5], strict=True))},
        {"name": "B", "scores": dict(zip(BUILD_DIMENSIONS, [4, 8, 5, 5, 5], strict=True))},
    ]
    weights = dict(zip(BUILD_DIMENSIONS, [0.4, 0.3, 0.1, 0.1, 0.1], strict=True))
    result = build_vs_buy(options, weights)
    # A: 4 + .6 + 1.5 = 6.1; B: 1.6 + 2.4 + 1.5 = 5.5. Gap 0.6.
    assert result.winner == "A"
    assert result.scores["score"].tolist() == pytest.approx([61.0, 55.0])
    sens = result.sensitivity.set_index("dimension")
    # time_to_production: 10 vs 4 -> 0.6 / 6 = 0.1 down (0.4 -> 0.3, -25%).
    assert sens.loc["time_to_production", "decrease_to_flip"] == pytest.approx(0.1)
    assert sens.loc["time_to_production", "decrease_to_flip_pct"] == pytest.approx(25.0)
    assert sens.loc["time_to_production", "flip_weight_down"] == pytest.approx(0.3)
    assert sens.loc["time_to_production", "new_top_down"] == "B"
    # architectural_control: 2 vs 8 -> 0.6 / 6 = 0.1 up.
    assert sens.loc["architectural_control", "increase_to_flip"] == pytest.approx(0.1)
    assert _check_flip_points(options, weights) == 2


def test_sensitivity_tie_only_at_zero_weight_is_not_a_flip() -> None:
    # The whole lead comes from total_cost: at weight 0 the two tie, never cross.
    options = [
        {"name": "A", "scores": dict(zip(BUILD_DIMENSIONS, [5, 5, 5, 5, 9], strict=True))},
        {"name": "B", "scores": dict(zip(BUILD_DIMENSIONS, [5, 5, 5, 5, 3], strict=True))},
    ]
    weights = dict.fromkeys(BUILD_DIMENSIONS, 0.2)
    sens = build_vs_buy(options, weights).sensitivity.set_index("dimension")
    assert math.isinf(sens.loc["total_cost", "decrease_to_flip"])
    assert _check_flip_points(options, weights) == 0


def test_sensitivity_three_options_first_to_overtake() -> None:
    options = [
        {"name": "Vendor", "scores": dict(zip(BUILD_DIMENSIONS, [9, 4, 5, 4, 8], strict=True))},
        {"name": "Build", "scores": dict(zip(BUILD_DIMENSIONS, [2, 9, 8, 9, 3], strict=True))},
        {"name": "Hybrid", "scores": dict(zip(BUILD_DIMENSIONS, [6, 7, 7, 6, 6], strict=True))},
    ]
    weights = dict(zip(BUILD_DIMENSIONS, [0.3, 0.2, 0.2, 0.1, 0.2], strict=True))
    result = build_vs_buy(options, weights)
    # Vendor 2.7+.8+1+.4+1.6 = 6.5; Hybrid 1.8+1.4+1.4+.6+1.2 = 6.4; Build .6+1.8+1.6+.9+.6 = 5.5
    assert result.scores["option"].tolist() == ["Vendor", "Hybrid", "Build"]
    sens = result.sensitivity.set_index("dimension")
    # Raising observability: Hybrid needs 0.1 / 2 = 0.05, Build 1.0 / 3 = 0.33: Hybrid first.
    assert sens.loc["observability", "increase_to_flip"] == pytest.approx(0.05)
    assert sens.loc["observability", "new_top_up"] == "Hybrid"
    assert _check_flip_points(options, weights) >= 4


@pytest.mark.parametrize("seed", range(12))
def test_sensitivity_random_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_options = int(rng.integers(2, 5))
    options = [
        {
            "name": f"option {i}",
            "scores": dict(zip(BUILD_DIMENSIONS, rng.integers(0, 11, 5).tolist(), strict=True)),
        }
        for i in range(n_options)
    ]
    weights = dict(zip(BUILD_DIMENSIONS, rng.dirichlet(np.ones(5)).round(3).tolist(), strict=True))
    weights["observability"] = 0.0 if seed % 4 == 0 else weights["observability"]
    _check_flip_points(options, weights)


def test_sensitivity_zero_weight_and_identical_options() -> None:
    options, weights = _claims_build_vs_buy()
    weights = {**weights, "lock_in_exit": 0.0}
    sens = build_vs_buy(options, weights).sensitivity.set_index("dimension")
    assert math.isnan(sens.loc["lock_in_exit", "increase_to_flip_pct"])
    # Without lock_in_exit: vendor 6.8 - .15*5 = 6.05, build 4.8 - .15*6 = 3.9; build gains
    # 6 - 5 = 1 per unit of lock_in_exit weight, so the gap of 2.15 closes at weight 2.15.
    assert sens.loc["lock_in_exit", "increase_to_flip"] == pytest.approx(2.15)
    twins = [
        {"name": "B twin", "scores": dict.fromkeys(BUILD_DIMENSIONS, 6)},
        {"name": "A twin", "scores": dict.fromkeys(BUILD_DIMENSIONS, 6)},
    ]
    result = build_vs_buy(twins, weights)
    assert result.winner == "A twin"  # tie broken by name
    assert np.isinf(result.sensitivity[["increase_to_flip", "decrease_to_flip"]].to_numpy()).all()
    single = build_vs_buy(twins[:1], weights)
    assert single.winner == "B twin" and single.sensitivity["new_top_up"].isna().all()


def test_what_if_matches_recomputed_weights() -> None:
    options, weights = _claims_build_vs_buy()
    assert what_if(options, weights).winner == "Adopt vendor solution"
    flipped = what_if(options, weights, architectural_control=0.71)
    assert flipped.winner == "Build custom agentic framework"
    expected = _independent_scores(_as_dicts(options), {**weights, "architectural_control": 0.71})
    got = dict(zip(flipped.scores["option"], flipped.scores["score"], strict=True))
    assert [got[o.name] for o in options] == pytest.approx(expected.tolist())
    with pytest.raises(ScoringSettingsError, match="unknown dimension"):
        what_if(options, weights, speed=1.0)


def test_build_vs_buy_to_result_is_json() -> None:
    result = build_vs_buy(*_claims_build_vs_buy())
    doc = json.loads(json.dumps(result.to_result(), allow_nan=False))
    assert doc["winner"] == "Adopt vendor solution"
    assert doc["dimensions"] == list(BUILD_DIMENSIONS)
    assert [row["score"] for row in doc["scores"]] == pytest.approx([68.0, 48.0])


@pytest.mark.parametrize(
    ("options", "weights", "words"),
    [
        ("claims", {"time_to_production": 1}, ["missing", "total_cost"]),
        ("claims", {**dict.fromkeys(BUILD_DIMENSIONS, 1), "speed": 1}, ["unknown", "speed"]),
        (
            "claims",
            {**dict.fromkeys(BUILD_DIMENSIONS, 1), "total_cost": -1},
            ["total_cost", ">= 0"],
        ),
        ("claims", dict.fromkeys(BUILD_DIMENSIONS, 0), ["all 0"]),
        ([], dict.fromkeys(BUILD_DIMENSIONS, 1), ["at least one"]),
        (
            [{"name": "x", "scores": dict.fromkeys(BUILD_DIMENSIONS, 11)}],
            dict.fromkeys(BUILD_DIMENSIONS, 1),
            ["0-10"],
        ),
        (
            [{"name": "x", "scores": {"total_cost": 5}}],
            dict.fromkeys(BUILD_DIMENSIONS, 1),
            ["'x'", "missing"],
        ),
        (
            [{"name": "x", "scores": dict.fromkeys(BUILD_DIMENSIONS, 5)}] * 2,
            dict.fromkeys(BUILD_DIMENSIONS, 1),
            ["unique", "'x'"],
        ),
    ],
)
def test_build_vs_buy_bad_input(options, weights: dict, words: list[str]) -> None:
    if options == "claims":
        options = _claims_build_vs_buy()[0]
    with pytest.raises(ScoringSettingsError) as info:
        build_vs_buy(options, weights)
    for word in words:
        assert word in str(info.value)


def test_candidate_columns_are_the_contracts_and_scoring_does_not_load_pandera() -> None:
    import subprocess
    import sys

    from pilot_lib.analysis.scoring import CANDIDATE_COLUMNS
    from pilot_lib.ingest.contracts import contract_columns

    assert tuple(CANDIDATE_COLUMNS) == tuple(contract_columns("candidates"))
    code = "import sys, pilot_lib.analysis.scoring; print('pandera' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

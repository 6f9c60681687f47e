"""Reference checks for pilot_lib.analysis.calibration against hand-worked numbers, numpy and sklearn."""

from __future__ import annotations

import math

import ibis
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve

from pilot_lib.analysis.calibration import expected_calibration_error, reliability_table


def numpy_ece(conf: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> float:
    """Independent ECE: bins [e_k, e_k+1), the last also holding 1.0."""
    idx = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, len(edges) - 2)
    total = 0.0
    for k in range(len(edges) - 1):
        m = idx == k
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return total / len(conf)


def test_hand_worked_small_case():
    conf = [0.1, 0.15, 0.8, 0.9, 0.95]
    correct = [False, True, True, True, False]
    # 5 bins of width 0.2. Bin [0, 0.2): mean confidence 0.125, accuracy 1/2, gap 0.375.
    # Bin [0.8, 1]: mean 0.88333, accuracy 2/3, |gap| 0.21667.
    # ECE = (2 * 0.375 + 3 * 0.21667) / 5 = (0.75 + 0.65) / 5 = 0.28.
    res = expected_calibration_error(conf, correct, bins=5)
    assert res.ece == pytest.approx(0.28, abs=1e-12)
    assert res.n_used == 5 and res.n_excluded == 0
    assert res.max_gap == pytest.approx(0.375)
    table = res.table
    assert table["count"].tolist() == [2, 0, 0, 0, 3]
    assert table["gap"].iloc[0] == pytest.approx(0.125 - 0.5)
    assert table["accuracy"].iloc[4] == pytest.approx(2 / 3)
    assert math.isnan(table["accuracy"].iloc[2])


def test_bin_edges_are_closed_on_the_left_and_the_last_bin_holds_one():
    table = reliability_table([0.0, 0.2, 0.4, 0.39999, 1.0, 0.8], [1, 1, 1, 1, 1, 1], bins=5)
    assert table["count"].tolist() == [1, 2, 1, 0, 2]
    assert table["bin"].iloc[0] == "[0.000, 0.200)" and table["bin"].iloc[-1] == "[0.800, 1.000]"


def test_perfectly_calibrated_sample_is_near_zero():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0, 1, 100_000)
    correct = rng.random(conf.size) < conf
    res = expected_calibration_error(conf, correct)
    # Each of the 15 bins holds ~6,700 decisions; the sampling error of a bin's accuracy
    # is at most sqrt(0.25 / 6700) = 0.0061 and E|error| = 0.8 x that = 0.0049, so the
    # ECE of a calibrated sample is about 0.005. 0.012 leaves room for chance.
    assert res.ece < 0.012
    assert res.ece <= res.ece_if_calibrated_95 * 1.5
    assert 0.002 < res.ece_if_calibrated_95 < 0.012


def test_overconfident_sample_shows_the_known_gap():
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.3, 1.0, 100_000)
    correct = rng.random(conf.size) < conf - 0.1  # right 10 points less often than it claims
    res = expected_calibration_error(conf, correct)
    assert res.ece == pytest.approx(0.10, abs=0.01)
    nonempty = res.table[res.table["count"] > 0]
    assert (nonempty["gap"] > 0).all()  # over-confident in every bin


def test_matches_numpy_and_sklearn_on_random_data():
    rng = np.random.default_rng(3)
    conf = rng.beta(5, 2, 4000)
    correct = rng.random(conf.size) < conf**1.5
    res = expected_calibration_error(conf, correct, bins=15)
    assert res.ece == pytest.approx(numpy_ece(conf, correct, np.linspace(0, 1, 16)), rel=1e-12)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=15, strategy="uniform")
    nonempty = res.table[res.table["count"] > 0]
    np.testing.assert_allclose(nonempty["accuracy"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(nonempty["mean_confidence"], prob_pred, rtol=1e-12)


def test_quantile_strategy_matches_numpy_and_sklearn():
    rng = np.random.default_rng(4)
    conf = rng.beta(6, 2, 3000)
    correct = rng.random(conf.size) < conf
    res = expected_calibration_error(conf, correct, bins=10, strategy="quantile")
    edges = np.quantile(conf, np.linspace(0, 1, 11))
    edges[0], edges[-1] = 0.0, 1.0
    assert res.ece == pytest.approx(numpy_ece(conf, correct, edges), rel=1e-12)
    assert res.table["count"].tolist() == [300] * 10
    prob_true, _ = calibration_curve(correct, conf, n_bins=10, strategy="quantile")
    np.testing.assert_allclose(res.table["accuracy"], prob_true, rtol=1e-12)


def test_unknown_outcomes_and_missing_confidence_are_excluded_and_counted():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0, 1, 1000)
    correct = (rng.random(1000) < conf).astype(object)
    correct[:150] = None
    conf_with_gaps = conf.copy()
    conf_with_gaps[140:190] = np.nan  # 10 of these rows also lack an outcome
    res = expected_calibration_error(conf_with_gaps, correct)
    keep = np.arange(1000) >= 190
    assert res.n_used == keep.sum() == 810
    assert res.n_missing_confidence == 50
    assert res.n_missing_outcome == 140
    assert res.n_excluded == 190
    want = numpy_ece(conf[keep], correct[keep].astype(bool), np.linspace(0, 1, 16))
    assert res.ece == pytest.approx(want, rel=1e-12)


def test_engine_path_equals_the_array_path():
    rng = np.random.default_rng(6)
    n = 5000
    conf = rng.beta(4, 2, n)
    correct = pd.array(rng.random(n) < conf, dtype="boolean")
    correct[rng.random(n) < 0.2] = pd.NA
    conf[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame({"confidence": conf, "correct": correct, "other": 1})
    con = ibis.duckdb.connect()
    table = con.create_table("decisions", frame)
    for strategy in ("uniform", "quantile"):
        memory = expected_calibration_error(
            frame["confidence"], frame["correct"], strategy=strategy
        )
        engine = expected_calibration_error(table, strategy=strategy)
        columns = expected_calibration_error(table.confidence, table.correct, strategy=strategy)
        for res in (engine, columns):
            assert res.ece == pytest.approx(memory.ece, rel=1e-12)
            assert (res.n_used, res.n_excluded) == (memory.n_used, memory.n_excluded)
            pd.testing.assert_frame_equal(res.table, memory.table, rtol=1e-12)


def test_engine_path_counts_in_one_query_and_checks_the_values(monkeypatch):
    rng = np.random.default_rng(8)
    n = 3000
    conf = rng.beta(4, 2, n)
    correct = pd.array(rng.random(n) < conf, dtype="boolean")
    correct[:100] = pd.NA
    conf[50:160] = np.nan  # 50 rows miss both: counted once, under confidence
    frame = pd.DataFrame({"confidence": conf, "correct": correct})
    table = ibis.memtable(frame)
    queries = []
    original = ibis.expr.types.Table.to_pandas

    def spy(self, *args, **kwargs):
        queries.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ibis.expr.types.Table, "to_pandas", spy)
    engine = expected_calibration_error(table)
    monkeypatch.undo()
    assert len(queries) == 1
    memory = expected_calibration_error(frame["confidence"], frame["correct"])
    assert (engine.n_missing_confidence, engine.n_missing_outcome) == (110, 50)
    assert (engine.n_missing_confidence, engine.n_missing_outcome) == (
        memory.n_missing_confidence,
        memory.n_missing_outcome,
    )
    assert engine.ece == pytest.approx(memory.ece, rel=1e-12)
    pd.testing.assert_frame_equal(engine.table, memory.table, rtol=1e-12)
    # out-of-range confidence and non-binary outcomes are refused on the used rows only
    bad_conf = pd.DataFrame(
        {"confidence": [0.2, 1.5, np.nan, -3.0], "correct": [1.0, 0.0, 1.0, None]}
    )
    with pytest.raises(ValueError, match=r"from 0.2 to 1.5"):
        expected_calibration_error(ibis.memtable(bad_conf))
    bad_outcome = pd.DataFrame({"confidence": [0.2, 0.5, np.nan], "correct": [1.0, 0.0, 2.0]})
    expected_calibration_error(ibis.memtable(bad_outcome))  # the 2.0 row has no confidence
    bad_outcome.loc[2, "confidence"] = 0.9
    with pytest.raises(ValueError, match="true/false"):
        expected_calibration_error(ibis.memtable(bad_outcome))


def test_no_usable_rows_is_no_data_and_bad_values_are_refused():
    res = expected_calibration_error([0.5, np.nan], [None, True])
    assert math.isnan(res.ece) and res.n_used == 0 and res.n_excluded == 2
    assert res.to_dict()["ece"] is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0.5, 70.0], [True, False])
    with pytest.raises(ValueError, match="strategy"):
        expected_calibration_error([0.5], [True], strategy="width")
    with pytest.raises(ValueError, match="same length"):
        expected_calibration_error([0.5, 0.6], [True])
    table = ibis.memtable(pd.DataFrame({"confidence": [0.2, 1.5], "correct": [True, False]}))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(table)

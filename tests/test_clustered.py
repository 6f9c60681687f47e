"""Tests for pilot_lib.analysis.clustered and the clustered KPI intervals of phase 2.

Every standard error is checked against statsmodels' cluster-robust covariance
of a mean (OLS on a constant, ``cov_type="cluster"``) on the same data, or
against a hand-worked case; coverage against a seeded simulation with known
between-week variation. None is taken from the function under test.
"""

from __future__ import annotations

import copy
import math

import ibis
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as st
from statsmodels.stats.proportion import proportion_confint

from pilot_lib.analysis import clustered
from pilot_lib.analysis.kpis import compute_kpis_from_tables
from pilot_lib.config import Pilot
from tests.test_kpis import PILOT

RATE = 60.0  # review_hourly_rate_usd of the test pilot


def statsmodels_cluster_se(y: np.ndarray, groups: np.ndarray) -> float:
    """Cluster-robust SE of the mean of ``y``: statsmodels' default CR1 correction.

    With one regressor statsmodels multiplies by G/(G-1) * (N-1)/(N-K) = G/(G-1),
    which is the workbook's CR1 factor.
    """
    fit = sm.OLS(y, np.ones_like(y, dtype=float)).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(groups)[0]}
    )
    return float(fit.bse[0])


def clustered_log(seed: int, weeks: int = 12, per_week: int = 400, users: int = 30) -> pd.DataFrame:
    """A decision log of the pilot window with week-level random effects (known ICC)."""
    rng = np.random.default_rng(seed)
    week_effect = rng.normal(0, 0.04, weeks)  # between-week sd of the acceptance rate
    cost_effect = rng.normal(0, 0.3, weeks)
    rows = []
    start = pd.Timestamp("2026-03-02")
    for w in range(weeks):
        n = per_week + int(rng.integers(-50, 50))
        ts = start + pd.Timedelta(days=7 * w) + pd.to_timedelta(rng.uniform(0, 7 * 86400, n), "s")
        p = 0.85 + week_effect[w]
        rows.append(
            pd.DataFrame(
                {
                    "timestamp": ts,
                    "case_id": [f"c{w}-{i // 2}" for i in range(n)],  # two decisions a case
                    "user_id": [f"u{k}" for k in rng.integers(0, users, n)],
                    "completed": rng.random(n) < 0.95,
                    "accepted": rng.random(n) < p,
                    "overridden": rng.random(n) < 0.1 + week_effect[w],
                    "escalated": rng.random(n) < 0.1 - week_effect[w] / 2,
                    "escalation_reason": "low_confidence",
                    "confidence": rng.uniform(0, 1, n),
                    "model_cost_usd": rng.gamma(2.0, 0.5, n) + cost_effect[w] + 1.0,
                    "tool_cost_usd": 0.05,
                    "review_minutes": rng.exponential(1.0, n),
                }
            )
        )
    df = pd.concat(rows, ignore_index=True)
    df["timestamp"] = df["timestamp"].astype("datetime64[us]")
    df.loc[~df["escalated"], "escalation_reason"] = None
    return df


def make_pilot(cluster_by: str) -> Pilot:
    raw = copy.deepcopy(PILOT)
    raw["pilot_window"] = {"start": "2026-03-02", "end": "2026-05-24"}
    raw["statistics"] = {"cluster_by": cluster_by}
    return Pilot.model_validate(raw)


def kpis_of(df: pd.DataFrame, cluster_by: str) -> pd.DataFrame:
    table = compute_kpis_from_tables(make_pilot(cluster_by), ibis.memtable(df))
    return table.kpis.set_index("kpi")


def groups_of(df: pd.DataFrame, cluster_by: str) -> np.ndarray:
    if cluster_by == "week":
        return df["timestamp"].dt.to_period("W-SUN").dt.start_time.to_numpy()
    if cluster_by == "user":
        return df["user_id"].fillna("case:" + df["case_id"]).to_numpy()
    return df["case_id"].to_numpy()


# ---------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------
def test_design_effect_by_hand() -> None:
    # Two clusters: 1 of 2 and 3 of 4. r = 4/6; residual totals -1/3 and +1/3;
    # CR1 variance = 2/1 * (2/9) / 36 = 1/81; independent p(1-p)/n = (2/9)/6 = 1/27.
    r, se, g = clustered.clustered_ratio([1, 3], [2, 4])
    assert r == pytest.approx(2 / 3, abs=1e-15)
    assert se == pytest.approx(1 / 9, abs=1e-15)
    assert g == 2
    ci = clustered.clustered_interval(r, se, g, (0.3, 0.9), math.sqrt(1 / 27), bounds=(0, 1))
    assert ci.design_effect == pytest.approx(1 / 3, abs=1e-12)
    # t with 1 df: 12.706 x 1/9 reaches past both bounds of [0, 1].
    assert (ci.low, ci.high) == (0.0, 1.0)


def test_interval_never_narrower_than_independent() -> None:
    ci = clustered.clustered_interval(0.5, 0.001, 20, (0.45, 0.55), 0.025, bounds=(0, 1))
    assert (ci.low, ci.high) == (0.45, 0.55)
    assert ci.design_effect == pytest.approx((0.001 / 0.025) ** 2)
    t = st.t.ppf(0.975, 19)
    wide = clustered.clustered_interval(0.5, 0.1, 20, (0.45, 0.55), 0.025, bounds=(0, 1))
    assert wide.low == pytest.approx(0.5 - t * 0.1, abs=1e-12)
    assert wide.high == pytest.approx(0.5 + t * 0.1, abs=1e-12)


def test_one_cluster_keeps_the_independent_interval() -> None:
    r, se, g = clustered.clustered_ratio([3], [10])
    assert g == 1 and math.isnan(se)
    ci = clustered.clustered_interval(r, se, g, (0.1, 0.6), 0.14)
    assert (ci.low, ci.high) == (0.1, 0.6) and math.isnan(ci.design_effect)


@pytest.mark.parametrize("seed", [1, 2])
def test_in_memory_se_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 9, 500)
    y = rng.normal(1.0, 1.0, 500) + rng.normal(0, 0.5, 9)[g]
    totals = np.bincount(g, weights=y)
    counts = np.bincount(g).astype(float)
    r, se, clusters = clustered.clustered_ratio(totals, counts)
    assert r == pytest.approx(y.mean(), rel=1e-12)
    assert clusters == 9
    assert se == pytest.approx(statsmodels_cluster_se(y, g), rel=1e-9)


# ---------------------------------------------------------------------------
# The engine path, through phase 2, against statsmodels on the same decisions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cluster_by", ["week", "user", "case"])
def test_kpi_standard_errors_match_statsmodels(cluster_by: str) -> None:
    df = clustered_log(seed=7)
    k = kpis_of(df, cluster_by)
    groups = groups_of(df, cluster_by)
    cost = df["model_cost_usd"] + df["tool_cost_usd"] + df["review_minutes"] / 60 * RATE
    checks = {
        "task_completion_rate": df["accepted"].astype(float),
        "technical_completion_rate": df["completed"].astype(float),
        "escalation_rate": df["escalated"].astype(float),
        "override_rate_decision_log": df["overridden"].astype(float),
        "low_confidence_share": (df["confidence"] < 0.7).astype(float),
        "cost_per_decision": cost,
    }
    for kpi, y in checks.items():
        row = k.loc[kpi]
        se = statsmodels_cluster_se(y.to_numpy(), groups)
        assert row["estimate"] == pytest.approx(y.mean(), rel=1e-12), kpi
        assert row["se"] == pytest.approx(se, rel=1e-9), kpi
        g = len(pd.unique(groups))
        assert row["clusters"] == g and row["cluster_by"] == cluster_by
        n = len(y)
        se_iid = y.std(ddof=1) / math.sqrt(n) if kpi == "cost_per_decision" else None
        if se_iid is None:
            p = y.mean()
            se_iid = math.sqrt(p * (1 - p) / n)
            low_iid, high_iid = proportion_confint(int(y.sum()), n, method="wilson")
        else:
            low_iid, high_iid = st.t.interval(0.95, n - 1, loc=y.mean(), scale=se_iid)
        assert row["low_iid"] == pytest.approx(low_iid, abs=1e-12), kpi
        assert row["high_iid"] == pytest.approx(high_iid, abs=1e-12), kpi
        assert row["design_effect"] == pytest.approx((se / se_iid) ** 2, rel=1e-9), kpi
        half = st.t.ppf(0.975, g - 1) * se
        cr1 = (min(y.mean() - half, low_iid), max(y.mean() + half, high_iid))
        if kpi != "cost_per_decision":
            cr1 = (max(0.0, min(y.mean() - half, 1.0)), min(1.0, y.mean() + half))
            cr1 = (min(cr1[0], low_iid), max(cr1[1], high_iid))
        assert row["low_cr1"] == pytest.approx(cr1[0], abs=1e-12), kpi
        assert row["high_cr1"] == pytest.approx(cr1[1], abs=1e-12), kpi
        if g < clustered.FEW_CLUSTERS:
            # issue 22: judged with the wild cluster bootstrap-t on the per-cluster sums,
            # here summed by pandas from the rows (the method: tests/test_few_clusters.py)
            order = pd.Series(groups).astype(str)
            sums = (
                pd.DataFrame({"g": order, "y": y.to_numpy()})
                .groupby("g")["y"]
                .agg(["sum", "count"])
            )
            bounds = (-math.inf, math.inf) if kpi == "cost_per_decision" else (0.0, 1.0)
            few = clustered.few_cluster_interval(sums["sum"], sums["count"], 0.95, bounds)
            assert row["interval_method"] == "few-cluster bootstrap", kpi
            assert row["low"] == pytest.approx(min(few.low, low_iid), abs=1e-9), kpi
            assert row["high"] == pytest.approx(max(few.high, high_iid), abs=1e-9), kpi
        else:
            assert row["interval_method"] == "cr1", kpi
            assert (row["low"], row["high"]) == pytest.approx(cr1, abs=1e-12), kpi


def test_week_clustering_widens_when_weeks_differ() -> None:
    df = clustered_log(seed=3)
    week, none = kpis_of(df, "week"), kpis_of(df, "none")
    row = week.loc["task_completion_rate"]
    assert row["design_effect"] > 5  # sd 0.04 between weeks, ~400 decisions a week
    assert row["high"] - row["low"] > 2 * (row["high_iid"] - row["low_iid"])
    # cluster_by none gives today's Wilson interval and a design effect of 1.
    indep = none.loc["task_completion_rate"]
    assert (indep["low"], indep["high"]) == (row["low_iid"], row["high_iid"])
    assert indep["design_effect"] == 1.0 and indep["cluster_by"] == "none"


def test_user_clustering_without_user_column_falls_back_to_case() -> None:
    df = clustered_log(seed=5).drop(columns=["user_id"])
    k = kpis_of(df, "user")
    row = k.loc["task_completion_rate"]
    assert row["cluster_by"] == "case"
    assert "no user_id column" in row["note"]
    se = statsmodels_cluster_se(df["accepted"].astype(float).to_numpy(), df["case_id"].to_numpy())
    assert row["se"] == pytest.approx(se, rel=1e-9)


def test_decisions_without_a_user_cluster_with_their_case() -> None:
    df = clustered_log(seed=6)
    df.loc[df.index % 3 == 0, "user_id"] = None
    k = kpis_of(df, "user")
    groups = groups_of(df, "user")
    se = statsmodels_cluster_se(df["accepted"].astype(float).to_numpy(), groups)
    assert k.loc["task_completion_rate", "se"] == pytest.approx(se, rel=1e-9)
    assert k.loc["task_completion_rate", "clusters"] == len(pd.unique(groups))


def test_one_week_of_data_keeps_the_independent_interval_and_says_so() -> None:
    df = clustered_log(seed=8, weeks=1)
    row = kpis_of(df, "week").loc["task_completion_rate"]
    assert row["clusters"] == 1
    assert (row["low"], row["high"]) == (row["low_iid"], row["high_iid"])
    assert "only 1 week" in row["note"]


def test_display_table_shows_the_design_effect() -> None:
    df = clustered_log(seed=9)
    table = compute_kpis_from_tables(make_pilot("week"), ibis.memtable(df))
    shown = table.display_table().set_index("KPI")
    text = shown.loc[shown.index.str.startswith("Task completion (business"), "Design effect"]
    deff = table.kpi("task_completion_rate")["design_effect"]
    assert text.iloc[0] == f"{deff:,.1f} (12 weeks)"
    result = table.to_result()
    rec = next(r for r in result["kpis"] if r["kpi"] == "task_completion_rate")
    assert rec["cluster_by"] == "week" and rec["clusters"] == 12
    assert {"se", "design_effect", "low_iid", "high_iid"} <= set(rec)
    assert result["cluster_by"] == "week"


# ---------------------------------------------------------------------------
# Coverage with known between-week variation (seeded simulation)
# ---------------------------------------------------------------------------
def test_coverage_with_week_random_effects() -> None:
    rng = np.random.default_rng(2026)
    sims, weeks, per_week, p0, sd = 1000, 12, 500, 0.85, 0.03
    p_week = p0 + rng.normal(0, sd, (sims, weeks))
    k = rng.binomial(per_week, np.clip(p_week, 0, 1))  # sims x weeks successes
    counts = np.full(weeks, float(per_week))
    covered_cl = covered_iid = 0
    for s in range(sims):
        r, se, g = clustered.clustered_ratio(k[s], counts)
        n = int(counts.sum())
        low, high = proportion_confint(int(k[s].sum()), n, method="wilson")
        ci = clustered.clustered_interval(r, se, g, (low, high), math.sqrt(r * (1 - r) / n))
        covered_cl += ci.low <= p0 <= ci.high
        covered_iid += low <= p0 <= high
    # 95% nominal: binomial sd of the rate over 1,000 runs is 0.007; allow 3 sd.
    assert 0.929 <= covered_cl / sims <= 0.975
    # Design effect here ~ 1 + 499 x 0.03^2 / (0.85 x 0.15) ~ 4.5: Wilson covers far less.
    assert covered_iid / sims < 0.70


# ---------------------------------------------------------------------------
# Efficiency gain: the ratio of medians, linearised and clustered by week
# ---------------------------------------------------------------------------
def statsmodels_log_ratio_variance(
    a: pd.DataFrame, c: pd.DataFrame, cv_a: float, cv_c: float
) -> float:
    """Var(log(median_a / median_c)) clustered by week, from statsmodels.

    Regress the indicator "at or below the cohort's median" on the two cohort
    dummies with a week-clustered covariance: the coefficients are the two
    shares F and their covariance matrix is the sandwich. By the delta method
    (Woodruff) log(median) moves by -dF / (f(m) m) = -dF x cv / sqrt(F (1 - F) / N).
    statsmodels' correction carries (N - 1) / (N - K) with K = 2; taken out here.
    """
    both = pd.concat([a.assign(agent=1.0), c.assign(agent=0.0)], ignore_index=True)
    y = both["below"].to_numpy(dtype=float)
    x = np.column_stack([both["agent"], 1 - both["agent"]])
    fit = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(both["week"])[0]})
    n = len(y)
    cov = np.asarray(fit.cov_params()) * (n - 2) / (n - 1)
    scale = []
    for frame, cv in ((a, cv_a), (c, cv_c)):
        f = frame["below"].mean()
        scale.append(cv / math.sqrt(f * (1 - f) / len(frame)))
    s_a, s_c = scale
    return s_a**2 * cov[0, 0] + s_c**2 * cov[1, 1] - 2 * s_a * s_c * cov[0, 1]


def test_median_design_effect_is_the_share_below_its_design_effect() -> None:
    rng = np.random.default_rng(31)
    weeks = np.repeat(np.arange(10), 80)
    x = rng.lognormal(1.0 + rng.normal(0, 0.3, 10)[weeks], 0.5)
    m = np.median(x)
    below = (x <= m).astype(float)
    b = np.bincount(weeks, weights=below)
    n = np.bincount(weeks).astype(float)
    other = (np.full(10, 40.0), np.full(10, 80.0), 0.05)  # a flat cohort, no week effect
    mv = clustered.median_ratio_variance((b, n, 0.04), other, paired=False)
    se_share = statsmodels_cluster_se(below, weeks)
    f = below.mean()
    assert mv.cohort_design_effects[0] == pytest.approx(
        se_share**2 / (f * (1 - f) / below.size), rel=1e-9
    )
    assert mv.cohort_design_effects[1] == 0.0
    assert mv.clustered == pytest.approx(0.04**2 * mv.cohort_design_effects[0], rel=1e-9)
    assert mv.independent == pytest.approx(0.04**2 + 0.05**2)


def _weekly_cases(seed: int, weeks: int = 12, per_week: int = 150) -> pd.DataFrame:
    """Agent and control cases opened side by side; a week is slow or fast for both."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(weeks):
        shift = rng.normal(0, 0.3)
        opened = pd.Timestamp("2026-03-02") + pd.Timedelta(days=7 * w + 1)
        for cohort, mu in (("agent", 1.0), ("control", 1.6)):
            own = rng.normal(0, 0.1)  # and a little of its own
            hours = rng.lognormal(mu + shift + own, 0.5, per_week)
            rows.append(
                pd.DataFrame(
                    {
                        "case_id": [f"{cohort}-{w}-{i}" for i in range(per_week)],
                        "cohort": cohort,
                        "opened_at": opened,
                        "closed_at": opened + pd.to_timedelta(hours, "h"),
                    }
                )
            )
    cases = pd.concat(rows, ignore_index=True)
    cases["opened_at"] = cases["opened_at"].astype("datetime64[us]")
    cases["closed_at"] = cases["closed_at"].astype("datetime64[us]")
    return cases


def test_efficiency_gain_clustered_by_week_matches_statsmodels() -> None:
    from pilot_lib.analysis import stats

    cases = _weekly_cases(seed=21)
    df = clustered_log(seed=1)
    out = {}
    for cb in ("week", "none"):
        t = compute_kpis_from_tables(make_pilot(cb), ibis.memtable(df), cases=ibis.memtable(cases))
        out[cb] = t.kpi("efficiency_gain")
    week, none = out["week"], out["none"]
    assert week["estimate"] == none["estimate"]
    assert week["clusters"] == 12 and week["cluster_by"] == "week"
    assert (week["low_iid"], week["high_iid"]) == (none["low"], none["high"])

    hours = (cases["closed_at"] - cases["opened_at"]).dt.total_seconds() / 3600
    frames, cvs, medians = [], [], []
    for cohort in ("agent", "control"):
        x = hours[cases["cohort"] == cohort].to_numpy()
        dist = stats.median_bootstrap_distribution(*stats.median_band_from_values(x))
        pmf = np.diff(np.concatenate(([0.0], dist.cdf)))
        mean = pmf @ dist.values / pmf.sum()
        sd = math.sqrt(pmf @ (dist.values - mean) ** 2 / pmf.sum())
        m = np.median(x)
        medians.append(m)
        cvs.append(sd / m)
        week_of = cases.loc[cases["cohort"] == cohort, "opened_at"].dt.to_period("W-SUN")
        frames.append(pd.DataFrame({"below": x <= m, "week": week_of.astype(str).to_numpy()}))
    var = statsmodels_log_ratio_variance(frames[0], frames[1], *cvs)
    ratio = medians[0] / medians[1]
    assert 1 - ratio == pytest.approx(week["estimate"], rel=1e-12)
    assert week["se"] == pytest.approx(ratio * math.sqrt(var), rel=1e-9)
    assert week["design_effect"] == pytest.approx(var / (cvs[0] ** 2 + cvs[1] ** 2), rel=1e-9)
    half = st.t.ppf(0.975, 11) * math.sqrt(var)
    assert week["low"] == pytest.approx(min(1 - ratio * math.exp(half), none["low"]), rel=1e-9)
    assert week["high"] == pytest.approx(max(1 - ratio * math.exp(-half), none["high"]), rel=1e-9)


def test_median_ratio_coverage_with_week_effects() -> None:
    rng = np.random.default_rng(77)
    sims, weeks, per_week, sigma = 600, 12, 120, 0.5
    z = st.norm.ppf(0.975)
    true_log_ratio = 1.0 - 1.6
    shift = rng.normal(0, 0.3, (sims, weeks, 1))
    a = rng.lognormal(
        1.0 + shift + rng.normal(0, 0.1, (sims, weeks, 1)), sigma, (sims, weeks, per_week)
    )
    c = rng.lognormal(
        1.6 + shift + rng.normal(0, 0.1, (sims, weeks, 1)), sigma, (sims, weeks, per_week)
    )
    n = np.full(weeks, float(per_week))
    big_n = weeks * per_week
    # Distribution-free SE of a median from its order statistics: ranks N/2 -/+ z sqrt(N)/2.
    k = int(round(z * math.sqrt(big_n) / 2))
    covered_cl = covered_iid = 0
    for s in range(sims):
        parts = []
        for x in (a[s], c[s]):
            flat = np.sort(x.reshape(-1))
            m = np.median(flat)
            se = (flat[big_n // 2 + k] - flat[big_n // 2 - k - 1]) / (2 * z)
            parts.append(((x <= m).sum(axis=1).astype(float), n, se / m, m))
        mv = clustered.median_ratio_variance(parts[0][:3], parts[1][:3], paired=True)
        log_r = math.log(parts[0][3] / parts[1][3])
        half_cl = st.t.ppf(0.975, weeks - 1) * math.sqrt(mv.clustered)
        half_iid = z * math.sqrt(mv.independent)
        covered_cl += abs(log_r - true_log_ratio) <= max(half_cl, half_iid)
        covered_iid += abs(log_r - true_log_ratio) <= half_iid
    # Nominal 95%; binomial sd over 600 runs is 0.009; allow about 3 sd.
    assert 0.92 <= covered_cl / sims <= 0.98
    assert covered_iid / sims < 0.85

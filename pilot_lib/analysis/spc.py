"""Statistical process control on the daily escalation rate, and rates per prompt version.

Two charts, one daily series
----------------------------
``daily_escalation`` counts decisions and escalations per UTC day in the
engine. ``control_chart`` then draws, over a continuous calendar:

Moving-average chart (the playbook's rule)
    ``ma`` on day ``d`` is the mean of the daily escalation rates of the
    trailing ``window`` days ``d-window+1 .. d``. Days without decisions have no
    rate and are skipped in that mean; ``ma`` needs at least
    ``window // 2 + 1`` days with decisions (``min_days``) and a complete
    trailing window (the first ``window - 1`` days of the series have none).
    The limits come from the *same statistic* over the baseline: with ``m`` and
    ``s`` the mean and standard deviation (``ddof=1``) of the ``ma`` values whose
    day lies in the baseline, ``UCL = m + sigma * s`` and
    ``LCL = max(0, m - sigma * s)``. (Limits from the daily values would not
    match the smoother 7-day statistic.)
p-chart form (uses the counts)
    ``p_window`` on day ``d`` is the pooled rate of the trailing window,
    ``sum(escalated) / sum(decisions)``. The centre line ``p_bar`` is the pooled
    rate over the baseline days; each day's limits are
    ``p_bar +/- sigma * sqrt(p_bar * (1 - p_bar) / n_window)`` (the lower one
    clipped at 0), so days with more decisions get tighter limits. A baseline
    without a single escalation gives ``p_bar = 0`` and zero-width limits: any
    later escalation is a breach. It assumes
    binomial day-to-day variation; a process with extra day-to-day variation
    shows more p-chart breaches than moving-average breaches.

False alarms
    Limits set on a short baseline are themselves uncertain. On 200 seeded
    stable binomial series (84 days, about 400 decisions a day, a 28-day
    baseline, window 7, sigma 2; ``tests/test_spc.py``) the moving-average
    chart was outside its limits on about 19% of the monitored days (22
    overlapping averages underestimate their own spread, and their mean is
    uncertain), the p-chart on about 8% (nominal 4.6%, widened by the
    uncertainty of ``p_bar``), and both charts together on the last day in 5%
    of the series. ``confirmed_breach_at_end`` (both charts agree) is what
    phase 3 treats as blocking; a longer baseline or ``sigma = 3`` lowers the
    single-chart rates.

A day is in breach when its statistic is above the upper or below the lower
limit. A breach *episode* is a run of consecutive breach days on the same
chart and side; a day without a defined statistic ends a run. ``start`` is the
first day of the run. "In breach at the end" looks at the last day whose
statistic is defined.

Western Electric run rules (``rules=True``) look at the daily rates of the
days with decisions (days without decisions are skipped, so runs continue
across them), standardised by the mean and standard deviation of the baseline's
daily rates: rule 1, one point beyond 3 sigma; rule 2, two of three consecutive
points beyond 2 sigma on the same side; rule 3, four of five beyond 1 sigma on
the same side; rule 4, eight in a row on the same side of the centre line. A
day is flagged when it completes the pattern (and is itself beyond the zone).

The baseline is given as a :class:`~pilot_lib.config.DateWindow` or a
``(first_day, last_day)`` pair (both days included), a boolean mask aligned
with the rows of ``daily``, or a ``slice`` of those rows' positions.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import DateWindow
from pilot_lib.errors import ContractError, WorkbookError

__all__ = [
    "ControlChart",
    "control_chart",
    "daily_escalation",
    "detect_contamination_spiral",
    "escalation_tables",
    "prompt_version_rates",
]

DAILY_COLUMNS = ["day", "decisions", "escalated", "rate"]
EPISODE_COLUMNS = [
    "chart",
    "side",
    "start",
    "end",
    "days",
    "peak",
    "peak_day",
    "ongoing",
    "during_baseline",
    "confirmed",
]
RULE_COLUMNS = ["day", "rule", "side", "rate", "z"]


def _as_ibis(decisions: Any) -> ir.Table:
    if isinstance(decisions, pd.DataFrame):
        return ibis.memtable(decisions)
    if not isinstance(decisions, ir.Table):
        raise TypeError(f"decisions must be an Ibis table, got {type(decisions).__name__}")
    return decisions


def _require(table: ir.Table, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ContractError(
            f"decisions: column(s) {missing} are missing; {what} needs {list(columns)} "
            "(see docs/data-contracts.md)"
        )


def daily_escalation(decisions: ir.Table, window: DateWindow | None = None) -> pd.DataFrame:
    """Decisions, escalations and the escalation rate per UTC day, counted in the engine.

    Parameters
    ----------
    decisions:
        The decision log (Ibis table; columns ``timestamp``, ``escalated``).
    window:
        If given, only decisions with ``window.start_ts <= timestamp <
        window.end_ts`` count, and every day of the window appears, days without
        decisions with zero counts.

    Returns
    -------
    pandas.DataFrame
        ``day`` (midnight timestamps, ascending), ``decisions``, ``escalated``,
        ``rate`` (``escalated / decisions``; NaN on a day with no decisions).
        Rows whose ``escalated`` flag is null break the contract and are not
        counted.
    """
    t = _as_ibis(decisions)
    _require(t, ["timestamp", "escalated"], "the escalation chart")
    if window is not None:
        t = t.filter((t.timestamp >= window.start_ts) & (t.timestamp < window.end_ts))
    flag = t.escalated.cast("int64")
    counts = (
        t.group_by(day=t.timestamp.date())
        .aggregate(decisions=flag.count(), escalated=flag.sum())
        .order_by("day")
        .to_pandas()
    )
    counts["day"] = pd.to_datetime(counts["day"]).dt.normalize()
    if window is not None:
        days = pd.date_range(pd.Timestamp(window.start), pd.Timestamp(window.end), freq="D")
        counts = counts.set_index("day").reindex(days).rename_axis("day").reset_index()
    counts["decisions"] = counts["decisions"].fillna(0).astype("int64")
    counts["escalated"] = counts["escalated"].fillna(0).astype("int64")
    counts["rate"] = _rate(counts["escalated"], counts["decisions"])
    return counts[DAILY_COLUMNS].reset_index(drop=True)


def _rate(num: pd.Series, den: pd.Series) -> pd.Series:
    num = num.astype(float)
    den = den.astype(float)
    return (num / den.where(den > 0)).astype(float)


@dataclass(frozen=True)
class ControlChart:
    """A control chart of the daily escalation rate.

    Attributes
    ----------
    series:
        One row per calendar day: ``day``, ``decisions``, ``escalated``, ``rate``,
        ``in_baseline``, ``ma``, ``ucl``, ``lcl``, ``ma_status`` (``"inside"``,
        ``"above"``, ``"below"``, ``"no data"``), ``ma_breach``, ``n_window``,
        ``escalated_window``, ``p_window``, ``p_center``, ``p_ucl``, ``p_lcl``,
        ``p_status``, ``p_breach``; with run rules also ``z`` and ``rule_1`` ..
        ``rule_4``.
    limits:
        ``baseline_start`` / ``baseline_end`` / ``baseline_days``, ``ma_mean``,
        ``ma_sd``, ``ucl``, ``lcl``, ``p_bar``, ``baseline_decisions``,
        ``baseline_escalated``, ``daily_mean``, ``daily_sd``.
    episodes:
        One row per breach episode: ``chart`` (``"moving_average"`` or
        ``"p_chart"``), ``side``, ``start`` (first day), ``end`` (last day),
        ``days``, ``peak`` (most extreme statistic), ``peak_day``, ``ongoing``
        (the run reaches the last day with a defined statistic),
        ``during_baseline`` (it started inside the baseline), ``confirmed`` (the
        other chart was outside its limits on the same side on at least one day
        of the episode).
    rule_violations:
        Run-rule signals: ``day``, ``rule``, ``side``, ``rate``, ``z`` (empty
        without ``rules=True``).
    in_breach_at_end, p_in_breach_at_end:
        Whether the moving-average chart / p-chart is outside its limits on its
        last defined day.
    confirmed_breach_at_end:
        The moving-average chart is outside its limits on its last defined day
        *and* the p-chart is outside on the same side that day: the two charts
        agree (what phase 3 treats as blocking; see the module docstring).
    """

    series: pd.DataFrame
    limits: dict[str, Any]
    episodes: pd.DataFrame
    rule_violations: pd.DataFrame
    window: int
    sigma: float
    min_days: int
    in_breach_at_end: bool
    p_in_breach_at_end: bool
    confirmed_breach_at_end: bool

    @property
    def first_breach_day(self) -> dt.date | None:
        """First day of the first moving-average episode that began after the baseline."""
        eps = self.episodes
        eps = eps[(eps["chart"] == "moving_average") & ~eps["during_baseline"]]
        if eps.empty:
            return None
        return pd.Timestamp(eps["start"].min()).date()


def _baseline_mask(daily: pd.DataFrame, baseline: Any) -> np.ndarray:
    days = daily["day"]
    if isinstance(baseline, DateWindow):
        start, end = pd.Timestamp(baseline.start), pd.Timestamp(baseline.end)
    elif isinstance(baseline, slice):
        mask = np.zeros(len(daily), dtype=bool)
        mask[baseline] = True
        return mask
    elif isinstance(baseline, tuple) and len(baseline) == 2:
        start, end = (pd.Timestamp(x).normalize() for x in baseline)
    else:
        mask = np.asarray(baseline)
        if mask.dtype != bool or mask.shape != (len(daily),):
            raise ValueError(
                "baseline must be a DateWindow, a (first_day, last_day) pair, a slice of rows, "
                f"or a boolean mask with one entry per row of daily ({len(daily)} rows)"
            )
        return mask
    if end < start:
        raise ValueError(f"baseline ends ({end.date()}) before it starts ({start.date()})")
    return ((days >= start) & (days <= end)).to_numpy(dtype=bool)


def _prepare_daily(daily: pd.DataFrame, baseline: Any) -> pd.DataFrame:
    if not isinstance(daily, pd.DataFrame):
        raise TypeError("daily must be a DataFrame from daily_escalation()")
    missing = [c for c in ("day", "decisions", "escalated") if c not in daily.columns]
    if missing:
        raise ValueError(
            f"daily is missing column(s) {missing}; build it with daily_escalation() "
            "(the p-chart needs the counts, not only the rate)"
        )
    d = daily[["day", "decisions", "escalated"]].copy().reset_index(drop=True)
    d["day"] = pd.to_datetime(d["day"]).dt.normalize()
    d["in_baseline"] = _baseline_mask(d, baseline)
    if d["day"].duplicated().any():
        dupes = d.loc[d["day"].duplicated(), "day"].dt.date.astype(str).tolist()[:5]
        raise ValueError(f"daily has more than one row for day(s) {dupes}")
    dec = pd.to_numeric(d["decisions"]).fillna(0)
    esc = pd.to_numeric(d["escalated"]).fillna(0)
    if (dec < 0).any() or (esc < 0).any() or (esc > dec).any():
        raise ValueError("daily counts must satisfy 0 <= escalated <= decisions on every day")
    d["decisions"], d["escalated"] = dec.astype("int64"), esc.astype("int64")
    d = d.sort_values("day", kind="mergesort")
    if d.empty:
        return d
    full = pd.date_range(d["day"].iloc[0], d["day"].iloc[-1], freq="D")
    d = d.set_index("day").reindex(full).rename_axis("day").reset_index()
    d["decisions"] = d["decisions"].fillna(0).astype("int64")
    d["escalated"] = d["escalated"].fillna(0).astype("int64")
    d["in_baseline"] = d["in_baseline"].astype("boolean").fillna(False).astype(bool)
    return d


def _status(stat: pd.Series, upper: Any, lower: Any) -> pd.Series:
    out = np.where(
        stat.isna(),
        "no data",
        np.where(stat > upper, "above", np.where(stat < lower, "below", "inside")),
    )
    return pd.Series(out, index=stat.index, dtype=object)


def _episodes(
    s: pd.DataFrame, chart: str, status_col: str, stat_col: str, other_status_col: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    status = s[status_col].tolist()
    defined = [i for i, v in enumerate(status) if v != "no data"]
    last_defined = defined[-1] if defined else -1
    i, n = 0, len(status)
    while i < n:
        side = status[i]
        if side not in ("above", "below"):
            i += 1
            continue
        j = i
        while j + 1 < n and status[j + 1] == side:
            j += 1
        run = s.iloc[i : j + 1]
        k = run[stat_col].idxmax() if side == "above" else run[stat_col].idxmin()
        out.append(
            {
                "chart": chart,
                "side": side,
                "start": s.at[i, "day"],
                "end": s.at[j, "day"],
                "days": j - i + 1,
                "peak": float(s.at[k, stat_col]),
                "peak_day": s.at[k, "day"],
                "ongoing": j == last_defined,
                "during_baseline": bool(s.at[i, "in_baseline"]),
                "confirmed": bool((run[other_status_col] == side).any()),
            }
        )
        i = j + 1
    return out


def _typed_episodes(episodes: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes even when empty (so boolean filters on an empty frame still work)."""
    out = episodes.astype(
        {
            "chart": object,
            "side": object,
            "days": "int64",
            "peak": "float64",
            "ongoing": bool,
            "during_baseline": bool,
            "confirmed": bool,
        }
    )
    for col in ("start", "end", "peak_day"):
        out[col] = pd.to_datetime(out[col])
    return out.sort_values(["start", "chart"], kind="mergesort").reset_index(drop=True)


def _confirmed_at_end(s: pd.DataFrame) -> bool:
    defined = s[s["ma_status"] != "no data"]
    if defined.empty:
        return False
    last = defined.iloc[-1]
    return last["ma_status"] in ("above", "below") and last["p_status"] == last["ma_status"]


def _at_end(status: pd.Series) -> bool:
    defined = status[status != "no data"]
    return bool(len(defined)) and defined.iloc[-1] in ("above", "below")


def _run_rules(s: pd.DataFrame, center: float, sd: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Western Electric rules 1-4 on the days with decisions; returns (flags, violations)."""
    flags = pd.DataFrame(
        {f"rule_{k}": np.zeros(len(s), dtype=bool) for k in range(1, 5)}, index=s.index
    )
    z_all = pd.Series(np.nan, index=s.index)
    violations: list[dict[str, Any]] = []
    if not (math.isfinite(sd) and sd > 0):
        return flags.assign(z=z_all), pd.DataFrame(columns=RULE_COLUMNS)
    pts = s[s["decisions"] > 0]
    z = ((pts["rate"] - center) / sd).to_numpy()
    z_all.loc[pts.index] = z
    idx = pts.index.to_numpy()
    for pos in range(len(z)):
        hits: list[tuple[int, str]] = []
        for sign, side in ((1, "above"), (-1, "below")):
            zz = sign * z[max(0, pos - 7) : pos + 1]  # trailing 8 points, this side up
            cur = zz[-1]
            if cur > 3:
                hits.append((1, side))
            if cur > 2 and len(zz) >= 3 and (zz[-3:] > 2).sum() >= 2:
                hits.append((2, side))
            if cur > 1 and len(zz) >= 5 and (zz[-5:] > 1).sum() >= 4:
                hits.append((3, side))
            if len(zz) >= 8 and (zz[-8:] > 0).all():
                hits.append((4, side))
        for rule, side in hits:
            flags.at[idx[pos], f"rule_{rule}"] = True
            violations.append(
                {
                    "day": s.at[idx[pos], "day"],
                    "rule": rule,
                    "side": side,
                    "rate": float(s.at[idx[pos], "rate"]),
                    "z": float(z[pos]),
                }
            )
    return flags.assign(z=z_all), pd.DataFrame(violations, columns=RULE_COLUMNS)


def control_chart(
    daily: pd.DataFrame,
    baseline: Any,
    window: int = 7,
    sigma: float = 2.0,
    rules: bool = False,
    min_days: int | None = None,
) -> ControlChart:
    """Moving-average chart and p-chart of the daily escalation rate (see the module docstring).

    Parameters
    ----------
    daily:
        Output of :func:`daily_escalation` (``day``, ``decisions``,
        ``escalated``); gaps between days are filled with zero-decision days.
    baseline:
        The days that set the limits: a ``DateWindow`` or ``(first_day,
        last_day)`` (inclusive), a boolean mask over ``daily``'s rows, or a
        ``slice`` of its row positions. For a pilot, the drift reference window.
    window:
        Days in the trailing window (default 7).
    sigma:
        Limit width in standard deviations (default 2).
    rules:
        Also apply the Western Electric run rules to the daily points.
    min_days:
        Days with decisions a trailing window needs for a moving average
        (default ``window // 2 + 1``).

    Raises
    ------
    WorkbookError
        The baseline holds fewer than two moving-average values or no decision,
        so no limits can be set (the message says how many it has).
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a whole number of days >= 1, got {window!r}")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    min_days = window // 2 + 1 if min_days is None else int(min_days)
    if not 1 <= min_days <= window:
        raise ValueError(f"min_days must be between 1 and window ({window}), got {min_days}")
    s = _prepare_daily(daily, baseline)
    base = s["in_baseline"].to_numpy(dtype=bool) if len(s) else np.zeros(0, dtype=bool)

    s["rate"] = _rate(s["escalated"], s["decisions"])
    ma = s["rate"].rolling(window, min_periods=min_days).mean()
    ma.iloc[: window - 1] = np.nan
    s["ma"] = ma
    base_ma = s.loc[base, "ma"].dropna()
    if len(base_ma) < 2:
        raise WorkbookError(
            f"the baseline has {len(base_ma)} day(s) with a {window}-day moving average; at least "
            f"2 are needed to set control limits (the first {window - 1} days of the series have "
            "none). Widen the reference window or start it later in the pilot"
        )
    base_n = int(s.loc[base, "decisions"].sum())
    base_e = int(s.loc[base, "escalated"].sum())
    ma_mean = float(base_ma.mean())
    ma_sd = float(base_ma.std(ddof=1))
    ucl = ma_mean + sigma * ma_sd
    lcl = max(0.0, ma_mean - sigma * ma_sd)
    s["ucl"], s["lcl"] = ucl, lcl
    s["ma_status"] = _status(s["ma"], ucl, lcl)
    s["ma_breach"] = s["ma_status"].isin(["above", "below"])

    n_w = s["decisions"].rolling(window, min_periods=window).sum()
    e_w = s["escalated"].rolling(window, min_periods=window).sum()
    s["n_window"] = n_w
    s["escalated_window"] = e_w
    s["p_window"] = _rate(e_w, n_w)
    p_bar = base_e / base_n
    half = sigma * np.sqrt(p_bar * (1 - p_bar) / n_w.where(n_w > 0))
    s["p_center"] = p_bar
    s["p_ucl"] = p_bar + half
    s["p_lcl"] = (p_bar - half).clip(lower=0.0)
    s["p_status"] = _status(s["p_window"], s["p_ucl"], s["p_lcl"])
    s["p_breach"] = s["p_status"].isin(["above", "below"])

    base_daily = s.loc[base & (s["decisions"] > 0).to_numpy(), "rate"]
    daily_mean = float(base_daily.mean()) if len(base_daily) else math.nan
    daily_sd = float(base_daily.std(ddof=1)) if len(base_daily) >= 2 else math.nan
    if rules:
        flags, violations = _run_rules(s, daily_mean, daily_sd)
        s = pd.concat([s, flags], axis=1)
    else:
        violations = pd.DataFrame(columns=RULE_COLUMNS)

    base_days = s.loc[base, "day"]
    limits = {
        "baseline_start": base_days.iloc[0],
        "baseline_end": base_days.iloc[-1],
        "baseline_days": int(base.sum()),
        "ma_mean": ma_mean,
        "ma_sd": ma_sd,
        "ucl": ucl,
        "lcl": lcl,
        "p_bar": p_bar,
        "baseline_decisions": base_n,
        "baseline_escalated": base_e,
        "daily_mean": daily_mean,
        "daily_sd": daily_sd,
    }
    episodes = pd.DataFrame(
        _episodes(s, "moving_average", "ma_status", "ma", "p_status")
        + _episodes(s, "p_chart", "p_status", "p_window", "ma_status"),
        columns=EPISODE_COLUMNS,
    )
    episodes = _typed_episodes(episodes)
    return ControlChart(
        series=s,
        limits=limits,
        episodes=episodes,
        rule_violations=violations,
        window=int(window),
        sigma=float(sigma),
        min_days=min_days,
        in_breach_at_end=_at_end(s["ma_status"]),
        p_in_breach_at_end=_at_end(s["p_status"]),
        confirmed_breach_at_end=_confirmed_at_end(s),
    )


# ---------------------------------------------------------------------------------
# Per prompt version
# ---------------------------------------------------------------------------------
PROMPT_VERSION_COLUMNS = [
    "prompt_version",
    "first_seen",
    "last_seen",
    "decisions",
    "escalated",
    "escalation_rate",
    "escalation_low",
    "escalation_high",
    "overridden",
    "override_rate",
    "override_low",
    "override_high",
]


def prompt_version_rates(decisions: ir.Table, confidence: float = 0.95) -> pd.DataFrame:
    """Escalation and override rates per prompt version, with Wilson intervals.

    Counted in the engine (``group_by prompt_version``). Columns:
    ``prompt_version``, ``first_seen`` / ``last_seen`` (first and last decision
    timestamp), ``decisions``, ``escalated``, ``escalation_rate``,
    ``escalation_low`` / ``escalation_high``, ``overridden``, ``override_rate``,
    ``override_low`` / ``override_high`` (two-sided ``confidence`` Wilson
    bounds). Ordered by ``first_seen``, then version name. Rates are
    proportions of the version's decisions.
    """
    t = _as_ibis(decisions)
    _require(t, ["prompt_version", "timestamp", "escalated", "overridden"], "prompt-version rates")
    g = (
        t.group_by("prompt_version")
        .aggregate(
            first_seen=t.timestamp.min(),
            last_seen=t.timestamp.max(),
            decisions=t.count(),
            escalated=t.escalated.cast("int64").sum(),
            overridden=t.overridden.cast("int64").sum(),
        )
        .to_pandas()
    )
    if g.empty:
        return pd.DataFrame(columns=PROMPT_VERSION_COLUMNS)
    return _version_table(g, confidence)


def _version_table(g: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per-version counts (``prompt_version``, ``first_seen``, ``last_seen``, ``decisions``,
    ``escalated``, ``overridden``) -> the rates table, ordered by first use."""
    g["prompt_version"] = (
        g["prompt_version"].astype(object).where(g["prompt_version"].notna(), "(missing)")
    )
    for col in ("decisions", "escalated", "overridden"):
        g[col] = g[col].fillna(0).astype("int64")
    g = g.sort_values(["first_seen", "prompt_version"], kind="mergesort").reset_index(drop=True)
    for what, col in (("escalation", "escalated"), ("override", "overridden")):
        g[f"{what}_rate"] = _rate(g[col], g["decisions"])
        bounds = [
            wilson_interval(int(k), int(n), confidence)
            for k, n in zip(g[col], g["decisions"], strict=True)
        ]
        g[f"{what}_low"] = [b[0] for b in bounds]
        g[f"{what}_high"] = [b[1] for b in bounds]
    return g[PROMPT_VERSION_COLUMNS]


def escalation_tables(
    decisions: ir.Table, window: DateWindow | None = None, confidence: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(daily_escalation(decisions, window), prompt_version_rates(decisions, confidence))``
    from one scan of the decision log.

    The engine counts per UTC day and prompt version (a few hundred rows); both
    tables are summed from those counts, so they equal what the two functions
    return on their own.
    """
    t = _as_ibis(decisions)
    _require(t, ["timestamp", "escalated"], "the escalation chart")
    _require(t, ["prompt_version", "timestamp", "escalated", "overridden"], "prompt-version rates")
    flag = t.escalated.cast("int64")
    g = (
        t.group_by(day=t.timestamp.date(), prompt_version=t.prompt_version)
        .aggregate(
            rows=t.count(),
            flagged=flag.count(),
            escalated=flag.sum(),
            overridden=t.overridden.cast("int64").sum(),
            first_seen=t.timestamp.min(),
            last_seen=t.timestamp.max(),
        )
        .to_pandas()
    )
    g["day"] = pd.to_datetime(g["day"]).dt.normalize()

    in_window = g
    if window is not None:
        days = g["day"]
        in_window = g.loc[
            days.notna() & (days >= pd.Timestamp(window.start)) & (days <= pd.Timestamp(window.end))
        ]
    daily = (
        in_window.groupby("day", dropna=False, sort=True)[["flagged", "escalated"]]
        .sum(min_count=1)
        .rename(columns={"flagged": "decisions"})
        .reset_index()
    )
    if window is not None:
        every_day = pd.date_range(pd.Timestamp(window.start), pd.Timestamp(window.end), freq="D")
        daily = daily.set_index("day").reindex(every_day).rename_axis("day").reset_index()
    daily["decisions"] = daily["decisions"].fillna(0).astype("int64")
    daily["escalated"] = daily["escalated"].fillna(0).astype("int64")
    daily["rate"] = _rate(daily["escalated"], daily["decisions"])
    daily = daily[DAILY_COLUMNS].reset_index(drop=True)

    if g.empty:
        return daily, pd.DataFrame(columns=PROMPT_VERSION_COLUMNS)
    v = (
        g.groupby("prompt_version", dropna=False, sort=False)
        .agg(
            first_seen=("first_seen", "min"),
            last_seen=("last_seen", "max"),
            decisions=("rows", "sum"),
            escalated=("escalated", "sum"),
            overridden=("overridden", "sum"),
        )
        .reset_index()
    )
    return daily, _version_table(v, confidence)


def detect_contamination_spiral(rates: pd.DataFrame, min_versions: int = 3) -> list[dict[str, Any]]:
    """Runs of prompt versions whose escalation rate rises version after version.

    Rule: in ``first_seen`` order (the rows of :func:`prompt_version_rates`), a
    maximal run of at least ``min_versions`` consecutive versions, each with a
    higher escalation rate than the one before, whose last version's Wilson
    interval lies wholly above the first version's interval
    (``escalation_low[last] > escalation_high[first]``: the rise is more than
    noise). Each run found is returned as a dict: ``versions``,
    ``escalation_rates``, ``override_rates``, ``decisions``,
    ``first_interval``, ``last_interval``, ``override_rising`` (overrides also
    rose from the first to the last version, the playbook's mechanism).
    """
    if min_versions < 2:
        raise ValueError(f"min_versions must be >= 2, got {min_versions}")
    if rates.empty:
        return []
    r = rates.reset_index(drop=True)
    esc = r["escalation_rate"].to_numpy(dtype=float)
    found: list[dict[str, Any]] = []
    start = 0
    for i in range(1, len(r) + 1):
        rising = i < len(r) and esc[i] > esc[i - 1]
        if rising:
            continue
        end = i - 1
        if end - start + 1 >= min_versions:
            first, last = r.iloc[start], r.iloc[end]
            if last["escalation_low"] > first["escalation_high"]:
                run = r.iloc[start : end + 1]
                found.append(
                    {
                        "versions": run["prompt_version"].astype(str).tolist(),
                        "escalation_rates": run["escalation_rate"].astype(float).tolist(),
                        "override_rates": run["override_rate"].astype(float).tolist(),
                        "decisions": run["decisions"].astype(int).tolist(),
                        "first_interval": [
                            float(first["escalation_low"]),
                            float(first["escalation_high"]),
                        ],
                        "last_interval": [
                            float(last["escalation_low"]),
                            float(last["escalation_high"]),
                        ],
                        "override_rising": bool(last["override_rate"] > first["override_rate"]),
                    }
                )
        start = i
    return found

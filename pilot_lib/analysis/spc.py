"""Statistical process control on the daily escalation rate, and rates per prompt version.

Two charts, one daily series
----------------------------
``daily_escalation`` counts decisions and escalations per UTC day in the
engine. ``control_chart`` then draws, over a continuous calendar, two charts
whose limits come from the baseline days (for a pilot, the drift reference
window). Both allow for the day-to-day variation the baseline actually shows,
not only for binomial chance, and for the uncertainty of the baseline itself.

Moving-average review band (the playbook's rule)
    ``ma`` on day ``d`` is the mean of the daily escalation rates of the
    trailing ``window`` days ``d-window+1 .. d``. Days without decisions have no
    rate and are skipped in that mean; ``ma`` needs at least
    ``window // 2 + 1`` days with decisions (``min_days``) and a complete
    trailing window. The band is centred on ``m``, the mean of the baseline's
    daily rates, with half-width ``k * s * sqrt(1 / window + 1 / B)``: ``s`` is
    the standard deviation (``ddof=1``) of the ``B`` baseline daily rates, so
    ``s / sqrt(window)`` is the spread of a ``window``-day average and
    ``s / sqrt(B)`` that of its centre; ``k`` is ``sigma`` (default 2) turned
    into a Student-t multiplier with ``B - 1`` degrees of freedom (the same
    one-sided tail probability), because ``s`` is itself estimated from ``B``
    days. On stable series the average then leaves the band on about the
    nominal share of days (2.3% above, 2.3% below with ``sigma = 2``). The lower
    limit is clipped at 0. (Earlier versions took ``s`` from the 22 overlapping
    7-day averages of a 4-week baseline, which left the average outside on
    9-19% of stable days.)
p'-chart (confirmation; uses the counts)
    ``p_window`` on day ``d`` is the pooled rate of the trailing window,
    ``sum(escalated) / sum(decisions)``; ``p_bar`` is the pooled rate over the
    baseline days. Days differ by more than binomial chance (staffing, case
    mix, upstream outages), so the variance of a day's rate is modelled as
    ``p(1-p)/n_d + tau^2``: binomial noise plus a between-day component
    ``tau^2``, estimated from the baseline by the method of moments,
    ``tau^2 = max(0, s^2 - mean(p_bar (1 - p_bar) / n_d))``. A window of days
    then has variance ``p(1-p)/n_w + tau^2 * sum(n_d^2) / n_w^2``, the
    baseline's pooled rate likewise, and the limits are
    ``p_bar +/- k_c * sqrt(var_window + var_baseline)`` with ``k_c`` the
    Student-t multiplier of ``confirmation_sigma`` (default 3) on ``B - 1``
    degrees of freedom (lower limit clipped at 0). With equal daily volumes
    this is Laney's p' chart: its ``sigma_z`` (the spread of the daily
    z-scores) is ``sqrt(1 + tau^2 n / (p(1-p)))``, reported as ``sigma_z``.
    With ``tau = 0`` it is the classic p-chart, widened for the uncertainty of
    ``p_bar``. A baseline without a single escalation gives ``p_bar = 0`` and
    zero-width limits: any later escalation is a breach.

Breach episodes and their level
-------------------------------
A day is in breach when its statistic is above the upper or below the lower
limit. A breach *episode* is a run of consecutive breach days on the same
chart and side; a day without a defined statistic ends a run. ``start`` is the
first day of the run. "In breach at the end" looks at the last day whose
statistic is defined. A moving-average episode is ``confirmed`` when the
p'-chart is outside on the same side on at least one of its days. Each
episode gets a ``level`` (:func:`episode_level`):

- ``"blocking"``: above the band, still open on the last day, the p'-chart
  above its limit that same day (``confirmed_breach_at_end``), and the shift
  matters: the window's pooled rate is at least ``min_shift`` above ``p_bar``
  (``min_shift = max(min_shift_absolute, min_shift_relative * p_bar)``), or at
  or beyond the escalation threshold the pilot file sets;
- ``"review"`` (a warning: the playbook's "trigger a review"): any other
  confirmed episode above the band, including a confirmed open one whose shift
  is smaller than ``min_shift``; and a p'-chart episode above its limit on the
  last day while the average is inside its band;
- ``"info"``: unconfirmed excursions, every episode below the band (fewer
  escalations than the baseline harms no one by itself; whether the agent is
  right when it does not escalate is what calibration and the acceptance KPIs
  measure);
- ``"baseline"``: an episode that began and ended inside the baseline (part
  of how the limits were set; not reported).

False alarms (``tests/test_spc.py``, seeded)
    2,000 stable series of 84 days (28 baseline), claims-auto's weekday volumes
    at 30k and at 1M decisions, a random day effect of 0.1 on the logit scale
    (about +/-0.7 points at 7.7%) on top of binomial chance: review-level
    episodes on 2.9% (30k) and 4.2% (1M) of the series, blocking ones on 0.2%
    and 0%, the 7-day average above its band on 2.7% and 2.5% of the monitored
    days (nominal 2.3%). The binomial 2-sigma p-chart of earlier versions
    crossed its limit after the baseline in 60% (30k) and 97% (1M) of the same
    series.

Western Electric run rules (``rules=True``) look at the daily rates of the
days with decisions (days without decisions are skipped, so runs continue
across them), standardised by the mean and standard deviation of the baseline's
daily rates: rule 1, one point beyond 3 sigma; rule 2, two of three consecutive
points beyond 2 sigma on the same side; rule 3, four of five beyond 1 sigma on
the same side; rule 4, eight in a row on the same side of the centre line. A
day is flagged when it completes the pattern (and is itself beyond the zone).
They are information only.

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
from scipy.stats import norm
from scipy.stats import t as student_t

from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import DateWindow
from pilot_lib.errors import ContractError, WorkbookError

__all__ = [
    "ControlChart",
    "chart_alarms",
    "control_chart",
    "daily_escalation",
    "detect_contamination_spiral",
    "episode_level",
    "escalation_tables",
    "min_shift_that_matters",
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
    "peak_shift",
    "level",
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


#: The playbook's review band: the 7-day average against mean +/- 2 standard deviations.
DEFAULT_SIGMA = 2.0
#: Width of the p'-chart limits that confirm a shift statistically (Shewhart's 3 sigma).
DEFAULT_CONFIRMATION_SIGMA = 3.0
#: The smallest rise of the escalation rate that matters: 1 percentage point ...
DEFAULT_MIN_SHIFT_ABSOLUTE = 0.01
#: ... and 25% of the baseline rate, whichever is larger.
DEFAULT_MIN_SHIFT_RELATIVE = 0.25

LEVELS = ("blocking", "review", "info", "baseline")

# status codes of the numpy core
_NO_DATA, _INSIDE, _ABOVE, _BELOW = 0, 1, 2, 3
_STATUS_TEXT = np.array(["no data", "inside", "above", "below"], dtype=object)
_SIDE = {_ABOVE: "above", _BELOW: "below"}
_TOL = 1e-12


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
        ``p_status``, ``p_breach``, ``shift`` (``p_window - p_bar``); with run
        rules also ``z`` and ``rule_1`` .. ``rule_4``.
    limits:
        ``baseline_start`` / ``baseline_end`` / ``baseline_days``,
        ``baseline_days_with_decisions`` (``B``), ``ma_mean`` (centre of the
        band: the mean of the baseline's daily rates), ``ma_sd`` (standard
        deviation of a moving average's departure from that centre,
        ``daily_sd * sqrt(1/window + 1/B)``), ``ucl``, ``lcl``, ``band_k`` (the
        t multiplier used for ``sigma``), ``p_bar``, ``baseline_decisions``,
        ``baseline_escalated``, ``tau`` (between-day standard deviation of the
        rate beyond binomial chance, as a proportion), ``sigma_z`` (Laney's
        ratio at the baseline's mean daily volume), ``confirmation_k``,
        ``daily_mean``, ``daily_sd``.
    episodes:
        One row per breach episode: ``chart`` (``"moving_average"`` or
        ``"p_chart"``), ``side``, ``start`` (first day), ``end`` (last day),
        ``days``, ``peak`` (most extreme statistic), ``peak_day``, ``ongoing``
        (the run reaches the last day with a defined statistic),
        ``during_baseline`` (it started inside the baseline), ``confirmed`` (the
        other chart was outside its limits on the same side on at least one day
        of the episode), ``peak_shift`` (largest ``p_window - p_bar`` on its
        days, signed towards its side), ``level`` (see the module docstring).
    rule_violations:
        Run-rule signals: ``day``, ``rule``, ``side``, ``rate``, ``z`` (empty
        without ``rules=True``).
    in_breach_at_end, p_in_breach_at_end:
        Whether the moving-average chart / p'-chart is outside its limits on
        its last defined day.
    confirmed_breach_at_end:
        The moving-average chart is outside its band on its last defined day
        *and* the p'-chart is outside on the same side that day.
    min_shift:
        The smallest rise that matters, in rate units
        (``max(min_shift_absolute, min_shift_relative * p_bar)``).
    shift_at_end:
        ``p_window - p_bar`` on the moving average's last defined day (NaN if
        none).
    material_at_end:
        ``shift_at_end >= min_shift``, or the window's rate is at or beyond
        ``threshold``.
    blocking_at_end:
        A confirmed breach *above* the band at the end whose shift matters:
        what phase 3 treats as blocking.
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
    confirmation_sigma: float = DEFAULT_CONFIRMATION_SIGMA
    min_shift: float = math.nan
    shift_at_end: float = math.nan
    material_at_end: bool = False
    blocking_at_end: bool = False
    threshold: float | None = None

    @property
    def first_breach_day(self) -> dt.date | None:
        """First day of the first confirmed upward episode of the 7-day average.

        Only episodes that are reported (``level`` ``"blocking"`` or
        ``"review"``) count: a short unconfirmed excursion, or a dip below the
        band (fewer escalations), is not the breach that matters. ``None`` when
        there is none.
        """
        eps = self.episodes
        eps = eps[
            (eps["chart"] == "moving_average")
            & (eps["side"] == "above")
            & eps["level"].isin(["blocking", "review"])
        ]
        if eps.empty:
            return None
        return pd.Timestamp(eps["start"].min()).date()


def _rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sums over complete windows along the last axis (NaN before the first)."""
    x = np.asarray(x, dtype=float)
    c = np.cumsum(np.concatenate([np.zeros(x.shape[:-1] + (1,)), x], axis=-1), axis=-1)
    out = np.full(x.shape, np.nan)
    if x.shape[-1] >= window:
        out[..., window - 1 :] = c[..., window:] - c[..., :-window]
    return out


def _t_multiplier(sigma: float, df: np.ndarray) -> np.ndarray:
    """Student-t multiplier with the one-sided tail of ``sigma`` normal standard deviations."""
    df = np.asarray(df, dtype=float)
    out = np.full(df.shape, np.nan)
    ok = df >= 1
    out[ok] = student_t.ppf(norm.cdf(sigma), df[ok])
    return out


def _status_codes(stat: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    # A rounding-level tolerance: a flat baseline gives zero-width limits that the same
    # rate, summed in another order, must not cross.
    with np.errstate(invalid="ignore"):
        code = np.where(stat > upper + _TOL, _ABOVE, np.where(stat < lower - _TOL, _BELOW, _INSIDE))
    return np.where(np.isnan(stat), _NO_DATA, code).astype(np.int8)


def _chart_core(
    dec: np.ndarray,
    esc: np.ndarray,
    base: np.ndarray,
    window: int,
    sigma: float,
    confirmation_sigma: float,
    min_days: int,
) -> dict[str, np.ndarray]:
    """Both charts for ``S`` series at once: ``dec``/``esc`` are (S, D) daily counts.

    ``base`` is a (D,) or (S, D) boolean mask of the baseline days. Per-series
    values come back as (S, 1) arrays, per-day ones as (S, D).
    """
    dec = np.atleast_2d(np.asarray(dec, dtype=float))
    esc = np.atleast_2d(np.asarray(esc, dtype=float))
    base = np.broadcast_to(np.asarray(base, dtype=bool), dec.shape)
    has = dec > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(has, esc / np.where(has, dec, 1.0), np.nan)
        days_with = _rolling_sum(has, window)
        ma = _rolling_sum(np.where(has, rate, 0.0), window) / days_with
    ma = np.where(days_with >= min_days, ma, np.nan)

    bd = base & has
    n_days = bd.sum(axis=1, keepdims=True).astype(float)
    base_rates = np.where(bd, rate, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        daily_mean = np.nansum(base_rates, axis=1, keepdims=True) / n_days
        dev2 = np.nansum((base_rates - daily_mean) ** 2, axis=1, keepdims=True)
        daily_sd = np.sqrt(dev2 / (n_days - 1))
        daily_sd = np.where(n_days >= 2, daily_sd, np.nan)
        ma_sd = daily_sd * np.sqrt(1.0 / window + 1.0 / n_days)
    band_k = _t_multiplier(sigma, n_days - 1)
    ucl = daily_mean + band_k * ma_sd
    lcl = np.maximum(0.0, daily_mean - band_k * ma_sd)

    base_n = np.where(base, dec, 0.0).sum(axis=1, keepdims=True)
    base_e = np.where(base, esc, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_bar = base_e / base_n
        pq = p_bar * (1.0 - p_bar)
        binom = np.where(bd, pq / np.where(has, dec, 1.0), np.nan)
        mean_binom = np.nansum(binom, axis=1, keepdims=True) / n_days
        tau2 = np.maximum(0.0, daily_sd**2 - mean_binom)
        tau2 = np.where(np.isfinite(tau2), tau2, 0.0)
        n_w = _rolling_sum(dec, window)
        e_w = _rolling_sum(esc, window)
        n2_w = _rolling_sum(dec**2, window)
        p_w = np.where(n_w > 0, e_w / n_w, np.nan)
        var_w = pq / n_w + tau2 * n2_w / n_w**2
        var_b = pq / base_n + tau2 * np.where(base, dec**2, 0.0).sum(axis=1, keepdims=True) / (
            base_n**2
        )
        confirmation_k = _t_multiplier(confirmation_sigma, n_days - 1)
        half = confirmation_k * np.sqrt(var_w + var_b)
        half = np.where(n_w > 0, half, np.nan)
        mean_volume = np.where(bd, dec, 0.0).sum(axis=1, keepdims=True) / n_days
        sigma_z = np.where(pq > 0, np.sqrt(1.0 + tau2 * mean_volume / pq), 1.0)
    p_ucl = p_bar + half
    p_lcl = np.maximum(0.0, p_bar - half)
    return {
        "rate": rate,
        "ma": ma,
        "ucl": ucl,
        "lcl": lcl,
        "ma_code": _status_codes(ma, ucl, lcl),
        "n_w": n_w,
        "e_w": e_w,
        "p_w": p_w,
        "p_ucl": p_ucl,
        "p_lcl": p_lcl,
        "p_code": _status_codes(p_w, p_ucl, p_lcl),
        "p_bar": p_bar,
        "base_n": base_n,
        "base_e": base_e,
        "daily_mean": daily_mean,
        "daily_sd": daily_sd,
        "ma_sd": ma_sd,
        "band_k": band_k,
        "confirmation_k": confirmation_k,
        "tau": np.sqrt(tau2),
        "sigma_z": sigma_z,
        "n_days": n_days,
        "base_ma": np.sum(base & ~np.isnan(ma), axis=1, keepdims=True),
    }


def min_shift_that_matters(
    p_bar: float,
    min_shift_absolute: float = DEFAULT_MIN_SHIFT_ABSOLUTE,
    min_shift_relative: float = DEFAULT_MIN_SHIFT_RELATIVE,
) -> float:
    """``max(min_shift_absolute, min_shift_relative * p_bar)``: the smallest rise that matters.

    In rate units (proportions). With the defaults, a 7.6% baseline needs a rise of
    1.9 percentage points (to 9.5%), a 2% baseline one of 1 point, a 40% baseline
    one of 10 points.
    """
    rel = min_shift_relative * p_bar if math.isfinite(p_bar) else 0.0
    return float(max(min_shift_absolute, rel))


def _last_defined(code: np.ndarray) -> int:
    idx = np.flatnonzero(code != _NO_DATA)
    return int(idx[-1]) if len(idx) else -1


def _runs(code: np.ndarray) -> list[tuple[int, int, int]]:
    """(first, last, code) of every run of consecutive 'above' or 'below' days."""
    out: list[tuple[int, int, int]] = []
    n = len(code)
    i = 0
    while i < n:
        c = int(code[i])
        if c not in (_ABOVE, _BELOW):
            i += 1
            continue
        j = i
        while j + 1 < n and code[j + 1] == c:
            j += 1
        out.append((i, j, c))
        i = j + 1
    return out


def episode_level(
    chart: str,
    side: str,
    ongoing: bool,
    during_baseline: bool,
    confirmed: bool,
    confirmed_breach_at_end: bool,
    material_at_end: bool,
    ma_in_breach_at_end: bool = False,
) -> str:
    """The level of one breach episode: ``"blocking"``, ``"review"``, ``"info"`` or ``"baseline"``.

    See the module docstring. ``ma_in_breach_at_end`` (for a p'-chart episode):
    the moving average is outside its band on the same side on its last day.
    """
    if during_baseline and not ongoing:
        return "baseline"
    if side == "below":
        return "info"
    if chart == "moving_average":
        if ongoing and confirmed_breach_at_end:
            return "blocking" if material_at_end else "review"
        return "review" if confirmed else "info"
    # p'-chart episodes are reported through the moving-average episodes they confirm,
    # except one still open at the end while the average is inside its band.
    return "review" if ongoing and not ma_in_breach_at_end else "info"


def _series_episodes(
    core: dict[str, np.ndarray],
    row: int,
    in_base: np.ndarray,
    min_shift: float,
    threshold: float | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Episodes (day positions) and end-of-series flags of one series of ``core``."""
    ma_code, p_code = core["ma_code"][row], core["p_code"][row]
    ma, p_w = core["ma"][row], core["p_w"][row]
    p_bar = float(core["p_bar"][row, 0])
    last_ma, last_p = _last_defined(ma_code), _last_defined(p_code)
    in_end = last_ma >= 0 and ma_code[last_ma] in (_ABOVE, _BELOW)
    p_end = last_p >= 0 and p_code[last_p] in (_ABOVE, _BELOW)
    confirmed_end = bool(in_end and p_code[last_ma] == ma_code[last_ma])
    shift_end = float(p_w[last_ma] - p_bar) if last_ma >= 0 else math.nan
    material = False
    if math.isfinite(shift_end):
        material = shift_end >= min_shift - 1e-12 or (
            threshold is not None and float(p_w[last_ma]) >= threshold
        )
    flags = {
        "in_breach_at_end": bool(in_end),
        "p_in_breach_at_end": bool(p_end),
        "confirmed_breach_at_end": confirmed_end,
        "shift_at_end": shift_end,
        "material_at_end": bool(material),
        "blocking_at_end": bool(confirmed_end and ma_code[last_ma] == _ABOVE and material),
    }
    out: list[dict[str, Any]] = []
    for chart, code, stat, other, last in (
        ("moving_average", ma_code, ma, p_code, last_ma),
        ("p_chart", p_code, p_w, ma_code, last_p),
    ):
        for i, j, c in _runs(code):
            seg = stat[i : j + 1]
            k = i + int(np.nanargmax(seg) if c == _ABOVE else np.nanargmin(seg))
            shifts = p_w[i : j + 1] - p_bar
            shifts = shifts[np.isfinite(shifts)]
            peak_shift = (
                float(np.max(shifts) if c == _ABOVE else np.min(shifts))
                if len(shifts)
                else math.nan
            )
            ongoing = j == last
            confirmed = bool(np.any(other[i : j + 1] == c))
            ma_end_same = bool(last_ma >= 0 and ma_code[last_ma] == c)
            ep = {
                "chart": chart,
                "side": _SIDE[c],
                "first": i,
                "last": j,
                "days": j - i + 1,
                "peak": float(stat[k]),
                "peak_at": k,
                "ongoing": ongoing,
                "during_baseline": bool(in_base[i]),
                "confirmed": confirmed,
                "peak_shift": peak_shift,
            }
            ep["level"] = episode_level(
                chart,
                ep["side"],
                ongoing,
                ep["during_baseline"],
                confirmed,
                confirmed_end,
                flags["material_at_end"],
                ma_end_same,
            )
            out.append(ep)
    return out, flags


def chart_alarms(
    decisions: np.ndarray,
    escalated: np.ndarray,
    baseline_days: int,
    window: int = 7,
    sigma: float = DEFAULT_SIGMA,
    confirmation_sigma: float = DEFAULT_CONFIRMATION_SIGMA,
    min_shift_absolute: float = DEFAULT_MIN_SHIFT_ABSOLUTE,
    min_shift_relative: float = DEFAULT_MIN_SHIFT_RELATIVE,
    threshold: float | None = None,
    min_days: int | None = None,
) -> pd.DataFrame:
    """What :func:`control_chart` would raise on many daily series at once (for simulations).

    Parameters
    ----------
    decisions, escalated:
        ``(S, D)`` arrays of daily counts: ``S`` series of ``D`` consecutive days.
    baseline_days:
        The first ``baseline_days`` days of every series set the limits.
    window, sigma, confirmation_sigma, min_shift_absolute, min_shift_relative, threshold:
        As in :func:`control_chart`.

    Returns
    -------
    pandas.DataFrame
        One row per series: ``review`` (a review-level episode: what phase 3
        reports as a warning), ``blocking`` (a blocking one), ``ma_days_above``
        / ``ma_days_below`` / ``p_days_above`` (monitored days, after the
        baseline, outside each limit), ``monitored_days`` (days after the
        baseline with a defined moving average). The levels are the ones
        :func:`control_chart` gives its episodes (same code).
    """
    dec = np.atleast_2d(np.asarray(decisions))
    esc = np.atleast_2d(np.asarray(escalated))
    if dec.shape != esc.shape:
        raise ValueError(f"decisions {dec.shape} and escalated {esc.shape} differ in shape")
    min_days = window // 2 + 1 if min_days is None else int(min_days)
    base = np.arange(dec.shape[1]) < baseline_days
    core = _chart_core(dec, esc, base, window, sigma, confirmation_sigma, min_days)
    rows = []
    mon = ~base
    for s in range(dec.shape[0]):
        p_bar = float(core["p_bar"][s, 0])
        shift = min_shift_that_matters(p_bar, min_shift_absolute, min_shift_relative)
        eps, _ = _series_episodes(core, s, base, shift, threshold)
        levels = {e["level"] for e in eps}
        ma_code = core["ma_code"][s]
        rows.append(
            {
                "review": "review" in levels,
                "blocking": "blocking" in levels,
                "ma_days_above": int(np.sum(ma_code[mon] == _ABOVE)),
                "ma_days_below": int(np.sum(ma_code[mon] == _BELOW)),
                "p_days_above": int(np.sum(core["p_code"][s][mon] == _ABOVE)),
                "monitored_days": int(np.sum(ma_code[mon] != _NO_DATA)),
            }
        )
    return pd.DataFrame(rows)


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
            "peak_shift": "float64",
            "level": object,
        }
    )
    for col in ("start", "end", "peak_day"):
        out[col] = pd.to_datetime(out[col])
    return out.sort_values(["start", "chart"], kind="mergesort").reset_index(drop=True)


def control_chart(
    daily: pd.DataFrame,
    baseline: Any,
    window: int = 7,
    sigma: float = DEFAULT_SIGMA,
    rules: bool = False,
    min_days: int | None = None,
    confirmation_sigma: float = DEFAULT_CONFIRMATION_SIGMA,
    min_shift_absolute: float = DEFAULT_MIN_SHIFT_ABSOLUTE,
    min_shift_relative: float = DEFAULT_MIN_SHIFT_RELATIVE,
    threshold: float | None = None,
) -> ControlChart:
    """Moving-average review band and p'-chart of the daily escalation rate (module docstring).

    Parameters
    ----------
    daily:
        Output of :func:`daily_escalation` (``day``, ``decisions``,
        ``escalated``); gaps between days are filled with zero-decision days.
        A small frame (one row per day): the counts come from the engine.
    baseline:
        The days that set the limits: a ``DateWindow`` or ``(first_day,
        last_day)`` (inclusive), a boolean mask over ``daily``'s rows, or a
        ``slice`` of its row positions. For a pilot, the drift reference window.
    window:
        Days in the trailing window (default 7).
    sigma:
        Width of the moving-average review band, in standard deviations
        (default 2; applied as a Student-t multiplier, see the module docstring).
    rules:
        Also apply the Western Electric run rules to the daily points.
    min_days:
        Days with decisions a trailing window needs for a moving average
        (default ``window // 2 + 1``).
    confirmation_sigma:
        Width of the p'-chart limits that confirm a shift (default 3).
    min_shift_absolute, min_shift_relative:
        The smallest rise of the escalation rate that matters:
        ``max(min_shift_absolute, min_shift_relative * p_bar)`` (defaults 0.01
        and 0.25: one percentage point, and a quarter of the baseline rate).
    threshold:
        The escalation-rate threshold of the pilot file (the rate must stay
        below it), if any: a confirmed rise that takes the window's rate to it
        or beyond matters whatever its size.

    Raises
    ------
    WorkbookError
        The baseline holds fewer than two moving-average values or no decision,
        so no limits can be set (the message says how many it has).
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a whole number of days >= 1, got {window!r}")
    for name, value in (("sigma", sigma), ("confirmation_sigma", confirmation_sigma)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in (
        ("min_shift_absolute", min_shift_absolute),
        ("min_shift_relative", min_shift_relative),
    ):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    min_days = window // 2 + 1 if min_days is None else int(min_days)
    if not 1 <= min_days <= window:
        raise ValueError(f"min_days must be between 1 and window ({window}), got {min_days}")
    s = _prepare_daily(daily, baseline)
    base = s["in_baseline"].to_numpy(dtype=bool) if len(s) else np.zeros(0, dtype=bool)
    dec = s["decisions"].to_numpy(dtype=float)
    esc = s["escalated"].to_numpy(dtype=float)
    core = _chart_core(
        dec[None, :], esc[None, :], base, window, sigma, confirmation_sigma, min_days
    )
    n_base_ma = int(core["base_ma"][0, 0]) if len(s) else 0
    if n_base_ma < 2:
        raise WorkbookError(
            f"the baseline has {n_base_ma} day(s) with a {window}-day moving average; at least "
            f"2 are needed to set control limits (the first {window - 1} days of the series have "
            "none). Widen the reference window or start it later in the pilot"
        )
    base_n = int(core["base_n"][0, 0])
    if base_n == 0:
        raise WorkbookError("the baseline has no decision, so no control limits can be set")
    one = {k: float(v[0, 0]) for k, v in core.items() if v.shape[-1] == 1}
    p_bar = one["p_bar"]
    min_shift = min_shift_that_matters(p_bar, min_shift_absolute, min_shift_relative)

    s["rate"] = core["rate"][0]
    s["ma"] = core["ma"][0]
    s["ucl"], s["lcl"] = one["ucl"], one["lcl"]
    s["ma_status"] = _STATUS_TEXT[core["ma_code"][0]]
    s["ma_breach"] = s["ma_status"].isin(["above", "below"])
    s["n_window"] = core["n_w"][0]
    s["escalated_window"] = core["e_w"][0]
    s["p_window"] = core["p_w"][0]
    s["p_center"] = p_bar
    s["p_ucl"] = core["p_ucl"][0]
    s["p_lcl"] = core["p_lcl"][0]
    s["p_status"] = _STATUS_TEXT[core["p_code"][0]]
    s["p_breach"] = s["p_status"].isin(["above", "below"])
    s["shift"] = core["p_w"][0] - p_bar

    daily_mean, daily_sd = one["daily_mean"], one["daily_sd"]
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
        "baseline_days_with_decisions": int(one["n_days"]),
        "ma_mean": daily_mean,
        "ma_sd": one["ma_sd"],
        "ucl": one["ucl"],
        "lcl": one["lcl"],
        "band_k": one["band_k"],
        "p_bar": p_bar,
        "baseline_decisions": base_n,
        "baseline_escalated": int(core["base_e"][0, 0]),
        "tau": one["tau"],
        "sigma_z": one["sigma_z"],
        "confirmation_k": one["confirmation_k"],
        "daily_mean": daily_mean,
        "daily_sd": daily_sd,
    }
    eps, flags = _series_episodes(core, 0, base, min_shift, threshold)
    days = s["day"].to_numpy()
    rows = [
        {
            "chart": e["chart"],
            "side": e["side"],
            "start": days[e["first"]],
            "end": days[e["last"]],
            "days": e["days"],
            "peak": e["peak"],
            "peak_day": days[e["peak_at"]],
            "ongoing": e["ongoing"],
            "during_baseline": e["during_baseline"],
            "confirmed": e["confirmed"],
            "peak_shift": e["peak_shift"],
            "level": e["level"],
        }
        for e in eps
    ]
    episodes = _typed_episodes(pd.DataFrame(rows, columns=EPISODE_COLUMNS))
    return ControlChart(
        series=s,
        limits=limits,
        episodes=episodes,
        rule_violations=violations,
        window=int(window),
        sigma=float(sigma),
        min_days=min_days,
        in_breach_at_end=flags["in_breach_at_end"],
        p_in_breach_at_end=flags["p_in_breach_at_end"],
        confirmed_breach_at_end=flags["confirmed_breach_at_end"],
        confirmation_sigma=float(confirmation_sigma),
        min_shift=min_shift,
        shift_at_end=flags["shift_at_end"],
        material_at_end=flags["material_at_end"],
        blocking_at_end=flags["blocking_at_end"],
        threshold=threshold,
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

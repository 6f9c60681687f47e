"""Matplotlib charts for the notebooks and their HTML exports.

Each function takes results computed elsewhere in ``pilot_lib`` and returns a
``matplotlib.figure.Figure``; none computes a statistic of its own. Colours are
colour-blind safe: Okabe-Ito for categories, cividis (blue to yellow, no red-green
contrast) for scales. No chart tells two things apart by red against green alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "STATUS_COLOURS",
    "band_chart",
    "bar_chart",
    "budget_chart",
    "error_rate_chart",
    "kpi_verdict_chart",
    "no_data_figure",
]

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STATUS_COLOURS = {"PASS": "#0072B2", "FAIL": "#D55E00", "INCONCLUSIVE": "#E69F00"}
#: The colour map of every heatmap: perceptually even and readable with any colour vision.
SCALE_CMAP = "cividis"


def no_data_figure(title: str, reason: str, figsize: tuple[float, float] = (7, 2.2)) -> Figure:
    """A labelled placeholder: says there is no data and why, instead of an empty or NaN chart."""
    fig, ax = plt.subplots(figsize=figsize)
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.text(0.5, 0.45, f"No data: {reason}", ha="center", va="center", fontsize=11, color="#555")
    fig.tight_layout()
    return fig


def _pct_axis(ax: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def band_chart(
    frame: pd.DataFrame,
    x: str,
    series: Sequence[tuple[str, str, str, str]],
    title: str,
    ylabel: str = "",
    threshold: float | None = None,
    threshold_label: str | None = None,
    percent: bool = True,
    figsize: tuple[float, float] = (9, 3.4),
) -> Figure:
    """Lines with interval bands: ``series`` items are (label, estimate col, low col, high col).

    ``threshold`` draws the agreed threshold as a dashed line. Rows with a
    missing estimate are left out of the line (no NaN drawn as zero); when no
    series has an estimate at all, a labelled "no data" figure is returned.
    """
    if frame is None or frame.empty:
        return no_data_figure(title, "no rows in this window")
    parts = [frame[[x, est, low, high]].dropna(subset=[est]) for _, est, low, high in series]
    if all(part.empty for part in parts):
        return no_data_figure(title, "no week has an estimate")
    fig, ax = plt.subplots(figsize=figsize)
    for i, ((label, est, low, high), part) in enumerate(zip(series, parts, strict=True)):
        if part.empty:
            continue
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(part[x], part[est], marker="o", ms=3, color=colour, label=label)
        ax.fill_between(part[x], part[low], part[high], color=colour, alpha=0.18, linewidth=0)
    if threshold is not None:
        ax.axhline(
            threshold,
            color="#444",
            linestyle="--",
            linewidth=1,
            label=threshold_label or "threshold",
        )
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.set_ylabel(ylabel)
    if percent:
        _pct_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    xlabel: str = "",
    percent: bool = False,
    colours: Sequence[str] | None = None,
    annotations: Sequence[str] | None = None,
    figsize: tuple[float, float] = (8, 3),
) -> Figure:
    """Horizontal bars, first label on top.

    A missing value (NaN or None) draws no bar; when every value is missing the
    result is a labelled "no data" figure rather than a row of empty bars.
    """
    if len(labels) == 0:
        return no_data_figure(title, "nothing to show")
    numbers = [math.nan if v is None else float(v) for v in values]
    if all(math.isnan(v) for v in numbers):
        return no_data_figure(title, "no values")
    values = numbers
    fig, ax = plt.subplots(figsize=figsize)
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, values, color=colours or OKABE_ITO[0])
    ax.set_yticks(ys, labels)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.set_xlabel(xlabel)
    if percent:
        from matplotlib.ticker import PercentFormatter

        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    for y, v, note in zip(ys, values, annotations or [None] * len(labels), strict=False):
        if note and not math.isnan(v):
            ax.text(v, y, f"  {note}", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def kpi_verdict_chart(verdicts: Sequence[Any]) -> Figure:
    """One small panel per KPI: the estimate, its 95% interval and the agreed threshold.

    ``verdicts`` are :class:`pilot_lib.analysis.gate.KpiVerdict` objects (or dicts with
    the same fields). The marker's colour is the verdict.
    """
    items = [v if isinstance(v, dict) else v.__dict__ for v in verdicts]
    if not items:
        return no_data_figure("KPIs against thresholds", "the pilot file sets no thresholds")
    fig, axes = plt.subplots(len(items), 1, figsize=(8, 1.05 * len(items) + 0.6), squeeze=False)
    for ax, v in zip(axes[:, 0], items, strict=True):
        colour = STATUS_COLOURS.get(v["status"], "#777")
        pct = v["unit"] == "proportion"
        scale = 100 if pct else 1
        est, low, high, thr = v.get("estimate"), v.get("low"), v.get("high"), v["threshold"]
        ax.axvline(thr * scale, color="#444", linestyle="--", linewidth=1)
        if est is not None and math.isfinite(est):
            if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
                ax.plot([low * scale, high * scale], [0, 0], color=colour, linewidth=4, alpha=0.5)
            ax.plot([est * scale], [0], marker="o", color=colour, ms=8)
            values = [x for x in (est, low, high, thr) if x is not None and math.isfinite(x)]
        else:
            ax.text(thr * scale, 0.25, "  no data", fontsize=8, color="#555")
            values = [thr]
        lo_v, hi_v = min(values) * scale, max(values) * scale
        pad = max((hi_v - lo_v) * 0.25, abs(thr * scale) * 0.05, 0.5 if pct else 0.05)
        ax.set_xlim(lo_v - pad, hi_v + pad)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        unit = "%" if pct else " USD" if v["unit"] == "usd" else ""
        ax.set_title(
            f"{v['label']}: {v['status']} (threshold {v['comparator']} {thr * scale:g}{unit})",
            loc="left",
            fontsize=9,
        )
        ax.spines[["left", "right", "top"]].set_visible(False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Phase 1
# ---------------------------------------------------------------------------


def criteria_heatmap(scored: pd.DataFrame, minimum: int = 3) -> Figure:
    """Candidates x the four criteria (1-5), each cell annotated; cells below ``minimum`` outlined.

    Colours run from dark blue (1) to yellow (5) (:data:`SCALE_CMAP`); the score is
    written in every cell, white on the dark end, so colour is never the only cue.
    """
    if scored is None or scored.empty:
        return no_data_figure("Use-case criteria", "no candidates")
    crit = ["impact", "data", "repetitiveness", "readiness"]
    values = scored[crit].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(scored) + 1.4))
    im = ax.imshow(values, cmap=SCALE_CMAP, vmin=1, vmax=5, aspect="auto")
    ax.set_xticks(range(len(crit)), ["business impact", "data", "repetitiveness", "readiness"])
    names = [f"{int(r)}. {n}" for r, n in zip(scored["rank"], scored["name"], strict=True)]
    ax.set_yticks(range(len(scored)), names)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            below = values[i, j] < minimum
            ax.text(
                j,
                i,
                f"{values[i, j]:.0f}",
                ha="center",
                va="center",
                fontweight="bold" if below else "normal",
                color="#fff" if values[i, j] < 2.5 else "#000",
            )
            if below:
                ax.add_patch(
                    plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec=OKABE_ITO[3], lw=2.5)
                )
    ax.set_title(
        f"Criterion scores (1-5); outlined: below the minimum of {minimum}",
        loc="left",
        fontsize=11,
        fontweight="bold",
    )
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def sensitivity_chart(
    options: Sequence[Any], weights: dict[str, float], points: int = 41
) -> Figure:
    """Each option's 0-100 score as one dimension's weight moves from 0 to 3x (others fixed).

    Scores come from :func:`pilot_lib.analysis.scoring.build_vs_buy` at each weight; the
    dotted line is the current weight. Where lines cross, the ranking flips.
    """
    import numpy as np

    from pilot_lib.analysis.scoring import build_vs_buy

    dims = list(weights)
    fig, axes = plt.subplots(1, len(dims), figsize=(3.0 * len(dims), 2.8), sharey=True)
    for ax, dim in zip(np.atleast_1d(axes), dims, strict=True):
        top = max(weights[dim] * 3, max(weights.values()))
        grid = np.linspace(0, top, points)
        series: dict[str, list[float]] = {}
        for w in grid:
            trial = dict(weights)
            trial[dim] = float(w)
            if sum(trial.values()) <= 0:
                continue
            res = build_vs_buy(options, trial).scores
            for name, score in zip(res["option"], res["score"], strict=True):
                series.setdefault(name, []).append(float(score))
        xs = [w for w in grid if sum(dict(weights, **{dim: float(w)}).values()) > 0]
        for i, (name, ys) in enumerate(sorted(series.items())):
            ax.plot(xs, ys, color=OKABE_ITO[i % len(OKABE_ITO)], label=name)
        ax.axvline(weights[dim], color="#444", linestyle=":", linewidth=1)
        ax.set_title(dim.replace("_", " "), fontsize=9)
        ax.set_xlabel("weight")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("score (0-100)")
    np.atleast_1d(axes)[0].legend(fontsize=7, frameon=False, loc="lower left")
    fig.suptitle(
        "Build vs buy: weight sensitivity (dotted: the agreed weight)",
        x=0.01,
        ha="left",
        fontsize=11,
        fontweight="bold",
    )
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Phase 2
# ---------------------------------------------------------------------------


def cohort_lines(
    frame: pd.DataFrame, title: str, ylabel: str = "median cycle time (hours)"
) -> Figure:
    """Weekly median cycle time per cohort (``week``, ``cohort``, ``median_cycle_hours``)."""
    if frame is None or frame.empty or frame["median_cycle_hours"].notna().sum() == 0:
        return no_data_figure(title, "no closed cases")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for i, (cohort, part) in enumerate(
        frame.dropna(subset=["median_cycle_hours"]).groupby("cohort", sort=True)
    ):
        ax.plot(
            part["week"],
            part["median_cycle_hours"],
            marker="o",
            ms=3,
            color=OKABE_ITO[i % len(OKABE_ITO)],
            label=str(cohort),
        )
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Phase 3
# ---------------------------------------------------------------------------


def control_chart_figure(
    chart: Any, title: str = "Daily escalation rate: 7-day moving average against control limits"
) -> Figure:
    """Daily rates, the 7-day average, its review band and the p'-chart limits, breaches shaded.

    ``chart`` is a :class:`pilot_lib.analysis.spc.ControlChart`.
    """
    if chart is None or chart.series is None or chart.series.empty:
        return no_data_figure(title, "no decisions in the window")
    s = chart.series
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.scatter(s["day"], s["rate"], s=8, color="#999", label="daily rate")
    ax.plot(s["day"], s["ma"], color=OKABE_ITO[0], linewidth=2, label="7-day average")
    ax.plot(
        s["day"], s["ucl"], color=OKABE_ITO[3], linestyle="--", linewidth=1, label="control limits"
    )
    ax.plot(s["day"], s["lcl"], color=OKABE_ITO[3], linestyle="--", linewidth=1)
    ax.plot(
        s["day"],
        s["p_ucl"],
        color=OKABE_ITO[4],
        linestyle=":",
        linewidth=1,
        label="p'-chart limits (confirmation)",
    )
    ax.plot(s["day"], s["p_lcl"], color=OKABE_ITO[4], linestyle=":", linewidth=1)
    base = s[s["in_baseline"]]
    if not base.empty:
        ax.axvspan(
            base["day"].min(), base["day"].max(), color="#56B4E9", alpha=0.08, label="baseline"
        )
    eps = chart.episodes
    if eps is not None and not eps.empty:
        for _, e in eps[eps["confirmed"] & (eps["chart"] == "moving_average")].iterrows():
            ax.axvspan(e["start"], e["end"], color=OKABE_ITO[3], alpha=0.12)
            ax.annotate(
                f"breach from {pd.Timestamp(e['start']):%d %b}",
                (e["start"], e["peak"]),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=8,
                color=OKABE_ITO[3],
            )
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    _pct_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def distribution_overlay(
    dist: pd.DataFrame, feature: str, psi_value: float | None = None
) -> Figure:
    """Reference vs current share per bin of one feature (from ``DriftReport.distributions``)."""
    import numpy as np

    if dist is None or dist.empty:
        return no_data_figure(f"{feature}: reference vs current", "no values")
    x = np.arange(len(dist))
    fig, ax = plt.subplots(figsize=(9, 2.8))
    ax.bar(
        x - 0.2, dist["reference_share"], width=0.4, color=OKABE_ITO[0], label="reference window"
    )
    ax.bar(x + 0.2, dist["current_share"], width=0.4, color=OKABE_ITO[1], label="current window")
    ax.set_xticks(x, [str(b) for b in dist["bin"]], rotation=30, ha="right", fontsize=8)
    _pct_axis(ax)
    extra = f" (PSI {psi_value:.2f})" if psi_value is not None and math.isfinite(psi_value) else ""
    ax.set_title(
        f"{feature}: share of decisions per bin{extra}", loc="left", fontsize=11, fontweight="bold"
    )
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_diagram(results: dict[str, Any]) -> Figure:
    """One reliability diagram per window: accuracy against mean confidence per bin.

    ``results`` maps a window label to a :class:`pilot_lib.analysis.calibration.CalibrationResult`.
    """
    items = [(k, v) for k, v in results.items() if v is not None]
    if not items:
        return no_data_figure("Reliability diagram", "no decisions with a known outcome")
    fig, axes = plt.subplots(1, len(items), figsize=(4.2 * len(items), 3.8), squeeze=False)
    for ax, (label, res) in zip(axes[0], items, strict=True):
        t = res.table[res.table["count"] > 0]
        ax.plot(
            [0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect calibration"
        )
        if not t.empty:
            ax.bar(
                t["mean_confidence"],
                t["accuracy"],
                width=1 / max(len(res.table), 1) * 0.9,
                color=OKABE_ITO[0],
                alpha=0.7,
                label="accuracy per bin",
            )
        ece = "no data" if res.ece is None or not math.isfinite(res.ece) else f"{res.ece:.3f}"
        if res.n_used == 0:
            ax.text(
                0.5,
                0.5,
                "No data:\n" + res.unusable_reason().replace(" of the ", "\nof the "),
                ha="center",
                va="center",
                fontsize=9,
                color="#555",
                transform=ax.transAxes,
                bbox={"facecolor": "white", "edgecolor": "none"},
            )
        ax.set_title(f"{label} window: ECE {ece} (n={res.n_used:,})", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("share correct")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Phase 4
# ---------------------------------------------------------------------------


def drill_timeline(timeline: pd.DataFrame, targets: Any, title: str) -> Figure:
    """Events of one drill on a seconds-since-anomaly axis, with the target deadlines.

    ``timeline`` is ``DrillReview.timeline(drill_id)``; ``targets`` a
    :class:`pilot_lib.config.DrillTargets`.
    """
    if timeline is None or timeline.empty:
        return no_data_figure(title, "no events logged")
    t = timeline.dropna(subset=["seconds_since_anomaly"])
    if t.empty:
        return no_data_figure(title, "no anomaly event to measure from")
    lanes = {"anomaly_injected": 3, "detected": 3, "paged": 3, "paused": 3, "resumed": 3}
    fig, ax = plt.subplots(figsize=(10, 3.2))
    actions = [a for a in t["action_id"].dropna().unique()]
    lane_of = {a: i for i, a in enumerate(sorted(actions, key=str))}
    for _, e in t.iterrows():
        x = e["seconds_since_anomaly"]
        if e["event"] in lanes:
            ax.axvline(x, color="#444", linewidth=1)
            # Hung from the top of the plot downwards (axes coordinates in y), so a long
            # label never rises into the title.
            ax.text(
                x,
                0.97,
                f" {str(e['event']).replace('_', ' ')} ",
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                transform=ax.get_xaxis_transform(),
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5},
            )
        elif pd.notna(e["action_id"]):
            y = lane_of[e["action_id"]]
            marker = {
                "action_started": ">",
                "action_completed": "o",
                "action_rolled_back": "x",
            }.get(e["event"], "s")
            ax.plot([x], [y], marker=marker, color=OKABE_ITO[y % len(OKABE_ITO)], ms=8)
    for aid, y in lane_of.items():
        pts = t[t["action_id"] == aid]["seconds_since_anomaly"]
        ax.plot(
            [pts.min(), pts.max()],
            [y, y],
            color=OKABE_ITO[y % len(OKABE_ITO)],
            linewidth=2,
            alpha=0.6,
        )
    detected = t.loc[t["event"] == "detected", "seconds_since_anomaly"]
    ax.axvspan(
        0, targets.max_seconds_to_detect, color=OKABE_ITO[2], alpha=0.06, label="detect target"
    )
    if not detected.empty:
        d0 = float(detected.iloc[0])
        ax.axvline(
            d0 + targets.max_seconds_to_pause,
            color=OKABE_ITO[3],
            linestyle="--",
            linewidth=1,
            label="pause deadline",
        )
    ax.set_yticks(list(lane_of.values()), list(lane_of.keys()), fontsize=8)
    ax.set_ylim(-0.8, len(lane_of) + 4.2)
    # Zoom on the response: a resume much later would squash everything else.
    busy = t.loc[t["event"] != "resumed", "seconds_since_anomaly"]
    deadline = float(detected.iloc[0]) + targets.max_seconds_to_pause if not detected.empty else 0
    right = max(
        [float(busy.max()) if not busy.empty else 0, deadline, targets.max_seconds_to_detect]
    )
    right *= 1.12
    later = t[t["seconds_since_anomaly"] > right]
    xlabel = "seconds since the anomaly was injected"
    ax.set_xlim(-0.03 * right, right)
    for text in list(ax.texts):
        if text.get_position()[0] > right:
            text.remove()
    if not later.empty:
        notes = ", ".join(
            f"{e} at {s / 60:,.0f} min"
            for e, s in zip(later["event"], later["seconds_since_anomaly"], strict=True)
        )
        xlabel += f" (off the chart: {notes})"
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def latency_chart(latency: pd.DataFrame, sla_minutes: float) -> Figure:
    """Approval latency percentiles (p50, p90, p95, max) per authority level, against the SLA."""
    t = latency.dropna(subset=["p50_minutes"]) if latency is not None else None
    if t is None or t.empty:
        return no_data_figure("Approval latency per level", "no approval was decided by a human")
    import numpy as np

    x = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(8, 3))
    for i, col in enumerate(["p50_minutes", "p90_minutes", "p95_minutes", "max_minutes"]):
        ax.bar(x + (i - 1.5) * 0.2, t[col], width=0.2, color=OKABE_ITO[i], label=col.split("_")[0])
    ax.axhline(
        sla_minutes, color="#000", linestyle="--", linewidth=1, label=f"SLA {sla_minutes:g} min"
    )
    ax.set_xticks(x, t["level"])
    ax.set_ylabel("minutes to decision")
    ax.set_title("Approval latency per authority level", loc="left", fontsize=11, fontweight="bold")
    ax.legend(fontsize=8, frameon=False, ncol=5)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _legend_below(ax: Any, ncol: int = 3) -> Any:
    """The legend under the axes, outside the plotting area, so it covers no data."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        ncol=min(ncol, len(handles)),
        fontsize=8,
        frameon=False,
    )


def error_rate_chart(health: Any) -> Figure:
    """Error rate by week per downstream system with its 95% interval (the integration-health
    section's ``weekly`` table): one Okabe-Ito colour and marker per system, the agreed limit
    dashed in black, the legend below the axes (it covers no line)."""
    from matplotlib.ticker import PercentFormatter

    w = health.weekly
    title = "Error rate by week and downstream system (95% interval)"
    if w.empty:
        return no_data_figure(title, "no tool calls in the pilot window")
    fig, ax = plt.subplots(figsize=(9, 4.2))
    markers = "osD^vP*X"
    for i, (system, g) in enumerate(w.groupby("system", sort=True)):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        x = pd.to_datetime(g["week"])
        ax.plot(
            x,
            g["error_rate"],
            marker=markers[i % len(markers)],
            ms=4,
            color=colour,
            label=str(system),
        )
        ax.fill_between(x, g["low"], g["high"], color=colour, alpha=0.15, linewidth=0)
    limit = health.settings.get("max_error_rate")
    if limit is not None:
        ax.axhline(limit, color="#000000", ls="--", lw=1, label=f"agreed limit {limit:.0%}")
    ax.set_ylabel("errors / attempts sent")
    ax.set_title(title, loc="left", fontsize=11)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    fig.autofmt_xdate()
    _legend_below(ax, ncol=4)
    fig.tight_layout()
    return fig


def budget_chart(section: Any) -> Figure:
    """Month-to-date spend against each budget, one panel per budget (the cost-attribution
    section's ``budgets``): spend solid blue, the monthly budget dashed vermillion, the
    pro-rated budget (the pace) dotted black, the spend had the fallback model taken over
    dash-dot orange; the legend below each panel, covering no line."""
    budgets = section.budgets
    n = max(len(budgets), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 3.9 * n), squeeze=False)
    if not budgets:
        axes[0][0].text(0.5, 0.5, "No budgets in the pilot file", ha="center", va="center")
        axes[0][0].set_axis_off()
        return fig
    for ax, b in zip(axes[:, 0], budgets, strict=True):
        days = pd.to_datetime(b.daily["day"])
        ax.plot(
            days,
            b.daily["month_to_date_usd"],
            color=OKABE_ITO[0],
            lw=1.8,
            label="month-to-date spend",
        )
        ax.plot(days, b.daily["pace_usd"], ":", color="#000000", lw=1.2, label="pro-rated budget")
        ax.axhline(b.monthly_usd, ls="--", color=OKABE_ITO[3], lw=1.4, label="monthly budget")
        if b.fallback_model is not None:
            ax.plot(
                days,
                b.daily["month_to_date_with_fallback_usd"],
                "-.",
                color=OKABE_ITO[1],
                label=f"with fallback to {b.fallback_model}",
            )
        ax.set_title(f"Budget burn: {b.label}", loc="left", fontsize=11)
        ax.set_ylabel("US dollars")
        ax.tick_params(axis="x", labelrotation=30)
        _legend_below(ax, ncol=4)
    fig.tight_layout()
    return fig

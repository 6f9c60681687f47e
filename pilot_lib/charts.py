"""Matplotlib charts for the notebooks and their HTML exports.

Each function takes results computed elsewhere in ``pilot_lib`` and returns a
``matplotlib.figure.Figure``; none computes a statistic of its own. Colours are
colour-blind safe (Okabe-Ito).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)  # headless-safe; inline backends still take over in Jupyter
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "STATUS_COLOURS",
    "band_chart",
    "bar_chart",
    "kpi_verdict_chart",
    "no_data_figure",
]

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STATUS_COLOURS = {"PASS": "#009E73", "FAIL": "#D55E00", "INCONCLUSIVE": "#E69F00"}


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
    missing estimate are left out of the line (no NaN drawn as zero).
    """
    if frame is None or frame.empty:
        return no_data_figure(title, "no rows in this window")
    fig, ax = plt.subplots(figsize=figsize)
    for i, (label, est, low, high) in enumerate(series):
        part = frame[[x, est, low, high]].dropna(subset=[est])
        if part.empty:
            continue
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(part[x], part[est], marker="o", ms=3, color=colour, label=label)
        ax.fill_between(part[x], part[low], part[high], color=colour, alpha=0.18, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="#444", linestyle="--", linewidth=1, label=threshold_label or "threshold")
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
    """Horizontal bars, first label on top."""
    if len(labels) == 0:
        return no_data_figure(title, "nothing to show")
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
        if note:
            ax.text(v, y, f"  {note}", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def kpi_verdict_chart(verdicts: Sequence[Any]) -> Figure:
    """One small panel per KPI: the estimate, its 95% interval and the agreed threshold.

    ``verdicts`` are :class:`pilot_lib.gate.KpiVerdict` objects (or dicts with
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

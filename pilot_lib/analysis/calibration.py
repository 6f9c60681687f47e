"""Calibration: is the agent's confidence a reliable guide to being right?

Expected calibration error (ECE)
--------------------------------
Decisions are grouped into bins by confidence. For bin ``k`` with ``n_k``
decisions, mean confidence ``conf_k`` and accuracy ``acc_k`` (share correct),

    ECE = sum_k (n_k / N) * |acc_k - conf_k|

over the ``N`` decisions used. It is a proportion (0 = perfectly calibrated;
0.10 = confidence is off by 10 points on average). ``gap = conf_k - acc_k``
in the reliability table is positive where the agent is *over*-confident.

Bins
----
``strategy="uniform"`` (default): ``bins`` equal-width bins on [0, 1], edges
``k / bins``; every bin is closed on the left and open on the right,
``[0, 1/15), [1/15, 2/15), ..., [14/15, 1]``, and the last bin also holds 1.0.
This is **not** scikit-learn's rule: ``sklearn.calibration.calibration_curve``
puts a value on an interior edge in the lower bin (``(a, b]``, from
``np.searchsorted(..., side="left")``). Left-closed bins are kept because they
match the rest of the workbook (a decision at exactly the confidence threshold
is automated: ``confidence >= t``; the PSI bins are closed on the left too);
on claims-auto one reference value sits on an edge, so the two rules give
0.004657 (this one) and 0.004724 (scikit-learn's) for the reference ECE
(issue 22; docs/decisions.md). Empty bins stay in
the reliability table with count 0 and NaN statistics, and weigh nothing.

``strategy="quantile"``: equal-mass bins, edges at the quantiles of the used
confidences (linear interpolation); coinciding edges collapse, so a sample with
many equal confidences gets fewer bins.

Rows left out
-------------
A row with a null (or NaN) confidence or a null ``correct`` (outcome not yet
known) is excluded and counted: ``n_missing_confidence``,
``n_missing_outcome``, and ``n_excluded`` (their sum; a row missing both is
counted once, under confidence). A confidence outside [0, 1] is an error (the
data contract quarantines such rows before they get here). With no usable row
the ECE is NaN, labelled "no data".

Engine
------
Ibis inputs are aggregated in the engine in one pass (bin index as a ``CASE``
expression, ``group_by`` bin, with the counts of the rows left out beside it);
only one row per bin comes back. The quantile strategy first computes its edges
in one aggregate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

__all__ = [
    "CalibrationResult",
    "expected_calibration_error",
    "reliability_table",
]

Strategy = Literal["uniform", "quantile"]

RELIABILITY_COLUMNS = [
    "bin",
    "lower",
    "upper",
    "count",
    "mean_confidence",
    "accuracy",
    "gap",
]

#: Simulated outcomes behind ``ece_if_calibrated_95`` (seeded).
NOISE_SIMULATIONS = 2000


@dataclass(frozen=True)
class CalibrationResult:
    """ECE with the rows it used and the reliability table behind it.

    Attributes
    ----------
    ece:
        Expected calibration error (proportion); NaN when no row was usable.
    max_gap:
        Largest ``|accuracy - mean confidence|`` over non-empty bins (the maximum
        calibration error).
    n_used, n_excluded:
        Rows used; rows left out (``n_missing_confidence + n_missing_outcome``).
    ece_if_calibrated_95:
        The 95th percentile of the ECE a perfectly calibrated agent would show
        with these bin counts and mean confidences (seeded simulation of the
        outcomes). An ECE below it is within sampling noise.
    table:
        Reliability table: ``bin``, ``lower``, ``upper``, ``count``,
        ``mean_confidence``, ``accuracy``, ``gap`` (= mean confidence - accuracy).
    """

    ece: float
    max_gap: float
    n_used: int
    n_excluded: int
    n_missing_confidence: int
    n_missing_outcome: int
    bins: int
    strategy: str
    ece_if_calibrated_95: float
    table: pd.DataFrame

    def unusable_reason(self) -> str:
        """Why no decision could be used: none in the window, or which field is null on how many.

        Empty when some decisions were used.
        """
        if self.n_used:
            return ""
        total = self.n_used + self.n_excluded
        if total == 0:
            return "no decisions in the window"
        parts = []
        if self.n_missing_confidence:
            parts.append(f"confidence is null on {self.n_missing_confidence:,}")
        if self.n_missing_outcome:
            parts.append(f"the outcome (correct) is unknown on {self.n_missing_outcome:,}")
        detail = " and ".join(parts) if parts else "no usable decisions"
        return f"{detail} of the {total:,} decisions"

    def to_dict(self, include_table: bool = True) -> dict[str, Any]:
        """Plain dict (the table as records) for phase results and findings."""
        from pilot_lib.results import to_jsonable

        out = {
            "ece": self.ece,
            "max_gap": self.max_gap,
            "n_used": self.n_used,
            "n_excluded": self.n_excluded,
            "n_missing_confidence": self.n_missing_confidence,
            "n_missing_outcome": self.n_missing_outcome,
            "bins": self.bins,
            "strategy": self.strategy,
            "ece_if_calibrated_95": self.ece_if_calibrated_95,
        }
        if include_table:
            out["table"] = self.table
        return to_jsonable(out)


def _check(bins: int, strategy: str) -> None:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a whole number >= 1, got {bins!r}")
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _uniform_edges(bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, bins + 1)


def _range_error(low: float, high: float, where: str) -> ValueError:
    return ValueError(
        f"{where}: confidence must lie in [0, 1], found values from {low} to {high}; "
        "rescale it (e.g. divide percentages by 100) or quarantine the rows"
    )


# ---- per-bin aggregates -> result ----------------------------------------------------
def _result_from_bins(
    edges: np.ndarray,
    counts: np.ndarray,
    sum_confidence: np.ndarray,
    sum_correct: np.ndarray,
    n_missing_confidence: int,
    n_missing_outcome: int,
    strategy: str,
) -> CalibrationResult:
    """Build the result from per-bin sums; ``edges`` has one more entry than the bins."""
    counts = np.asarray(counts, dtype=np.int64)
    n_used = int(counts.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_confidence / np.maximum(counts, 1), np.nan)
        accuracy = np.where(counts > 0, sum_correct / np.maximum(counts, 1), np.nan)
    gap = mean_conf - accuracy
    nonempty = counts > 0
    if n_used:
        ece = float(np.sum(counts[nonempty] * np.abs(gap[nonempty])) / n_used)
        max_gap = float(np.max(np.abs(gap[nonempty])))
        noise = _calibrated_ece_95(counts[nonempty], mean_conf[nonempty])
    else:
        ece = max_gap = noise = math.nan
    labels = [
        f"[{lo:.3f}, {hi:.3f}{']' if i == len(counts) - 1 else ')'}"
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]
    table = pd.DataFrame(
        {
            "bin": labels,
            "lower": edges[:-1].astype(float),
            "upper": edges[1:].astype(float),
            "count": counts,
            "mean_confidence": mean_conf,
            "accuracy": accuracy,
            "gap": gap,
        },
        columns=RELIABILITY_COLUMNS,
    )
    return CalibrationResult(
        ece=ece,
        max_gap=max_gap,
        n_used=n_used,
        n_excluded=int(n_missing_confidence + n_missing_outcome),
        n_missing_confidence=int(n_missing_confidence),
        n_missing_outcome=int(n_missing_outcome),
        bins=len(counts),
        strategy=strategy,
        ece_if_calibrated_95=noise,
        table=table,
    )


def _calibrated_ece_95(counts: np.ndarray, mean_conf: np.ndarray) -> float:
    """95th percentile of the ECE when each bin's outcomes are Binomial(n_k, conf_k)."""
    rng = np.random.default_rng(0)
    p = np.clip(mean_conf, 0.0, 1.0)
    hits = rng.binomial(counts, p, size=(NOISE_SIMULATIONS, len(counts)))
    ece = np.abs(hits - counts * p).sum(axis=1) / counts.sum()
    return float(np.quantile(ece, 0.95))


# ---- in-memory path ------------------------------------------------------------------
def _from_arrays(confidence: Any, correct: Any, bins: int, strategy: str) -> CalibrationResult:
    try:
        conf = pd.to_numeric(pd.Series(confidence).reset_index(drop=True), errors="raise")
    except (TypeError, ValueError):
        raise ValueError("confidence must be numbers in [0, 1]; found non-numeric values") from None
    corr = pd.Series(correct).reset_index(drop=True)
    if len(conf) != len(corr):
        raise ValueError(
            f"confidence and correct must have the same length, got {len(conf)} and {len(corr)}"
        )
    conf_missing = conf.isna().to_numpy(dtype=bool)
    corr_missing = corr.isna().to_numpy(dtype=bool)
    used = ~conf_missing & ~corr_missing
    n_missing_confidence = int(conf_missing.sum())
    n_missing_outcome = int((~conf_missing & corr_missing).sum())
    c = conf[used].to_numpy(dtype=float)
    y = corr[used].astype(float).to_numpy(dtype=float)
    if c.size and (c.min() < 0 or c.max() > 1):
        raise _range_error(float(c.min()), float(c.max()), "confidence")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("correct must be true/false (or 1/0); found other values")
    edges = _edges_for(c, bins, strategy)
    interior = edges[1:-1]
    idx = np.searchsorted(interior, c, side="right")
    k = len(edges) - 1
    counts = np.bincount(idx, minlength=k)
    sum_conf = np.bincount(idx, weights=c, minlength=k)
    sum_corr = np.bincount(idx, weights=y, minlength=k)
    return _result_from_bins(
        edges, counts, sum_conf, sum_corr, n_missing_confidence, n_missing_outcome, strategy
    )


def _edges_for(c: np.ndarray, bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform" or c.size == 0:
        return _uniform_edges(bins)
    qs = np.quantile(c, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([])
    return _edges_from_interior(qs)


def _edges_from_interior(qs: Any) -> np.ndarray:
    interior = np.unique(np.asarray([q for q in qs if q is not None], dtype=float))
    interior = interior[(interior > 0) & (interior < 1)]
    return np.concatenate([[0.0], interior, [1.0]])


# ---- engine path --------------------------------------------------------------------
def _bucket(col: ir.NumericValue, interior: np.ndarray) -> ir.IntegerValue:
    if len(interior) == 0:
        return ibis.literal(0)
    return ibis.cases(*[(col < float(e), i) for i, e in enumerate(interior)], else_=len(interior))


def _parent_table(*cols: ir.Column) -> ir.Table:
    rels = set()
    for c in cols:
        rels |= set(c.op().relations)
    if len(rels) != 1:
        raise ValueError(
            "confidence and correct must be columns of the same Ibis table "
            "(or pass the table itself)"
        )
    return next(iter(rels)).to_expr()


def _from_table(table: ir.Table, bins: int, strategy: str) -> CalibrationResult:
    conf = table["confidence"]
    corr = table["correct"]
    if not conf.type().is_numeric():
        raise ValueError(f"confidence must be numeric, got {conf.type()}")
    conf_missing = conf.isnull()
    if conf.type().is_floating():
        conf_missing = conf_missing | conf.isnan().fill_null(True)
    used = ~conf_missing & corr.notnull()
    corr_num = corr.cast("float64") if not corr.type().is_boolean() else corr.cast("int64")
    quantile_edges = strategy == "quantile" and bins > 1
    if quantile_edges:
        # the edges are quantiles of the used confidences: one aggregate first
        q = table.aggregate(
            low=conf.min(where=used).cast("float64"),
            q=conf.quantile(list(np.linspace(0, 1, bins + 1)[1:-1]), where=used),
        ).to_pandas()
        qs = q.iloc[0]
        edges = _edges_from_interior(list(qs["q"])) if pd.notna(qs["low"]) else _uniform_edges(bins)
    else:
        edges = _uniform_edges(bins)
    interior = edges[1:-1]
    # One pass: the per-bin sums of the used rows (bin -1 gathers the rows left out)
    # and the counts behind the checks and the exclusions.
    grouped = (
        table.group_by(bin=ibis.ifelse(used, _bucket(conf, interior), -1))
        .aggregate(
            n=table.count(),
            sum_conf=conf.cast("float64").sum(),
            sum_corr=(
                corr.cast("int64") if corr.type().is_boolean() else corr.cast("float64")
            ).sum(),
            n_missing_confidence=conf_missing.cast("int64").sum(),
            n_missing_outcome=(~conf_missing & corr.isnull()).cast("int64").sum(),
            low=conf.min().cast("float64"),
            high=conf.max().cast("float64"),
            bad_outcome=(~corr_num.isin([0, 1])).fill_null(False).cast("int64").sum(),
        )
        .to_pandas()
    )
    left_out = grouped["bin"] == -1
    bins_found = grouped.loc[~left_out]
    n_mc = int(grouped["n_missing_confidence"].fillna(0).sum())
    n_mo = int(grouped["n_missing_outcome"].fillna(0).sum())
    if not bins_found.empty:
        low, high = bins_found["low"].min(), bins_found["high"].max()
        if low < 0 or high > 1:
            raise _range_error(float(low), float(high), "confidence")
    if int(bins_found["bad_outcome"].fillna(0).sum()):
        raise ValueError("correct must be true/false (or 1/0); found other values")
    k = len(edges) - 1
    counts = np.zeros(k, dtype=np.int64)
    sum_conf = np.zeros(k)
    sum_corr = np.zeros(k)
    for b, n, sc, sy in bins_found[["bin", "n", "sum_conf", "sum_corr"]].itertuples(index=False):
        counts[int(b)] += int(n)
        sum_conf[int(b)] += float(sc)
        sum_corr[int(b)] += float(sy)
    return _result_from_bins(edges, counts, sum_conf, sum_corr, n_mc, n_mo, strategy)


def _dispatch(confidence: Any, correct: Any, bins: int, strategy: str) -> CalibrationResult:
    _check(bins, strategy)
    if isinstance(confidence, ir.Table):
        if correct is not None:
            raise ValueError(
                "pass a table alone (columns 'confidence' and 'correct'), or two columns"
            )
        missing = [c for c in ("confidence", "correct") if c not in confidence.columns]
        if missing:
            raise ValueError(f"the table has no column(s) {missing}; see docs/data-contracts.md")
        return _from_table(confidence.select("confidence", "correct"), bins, strategy)
    if isinstance(confidence, pd.DataFrame):
        if correct is not None:
            raise ValueError(
                "pass a DataFrame alone (columns 'confidence' and 'correct'), or two columns"
            )
        missing = [c for c in ("confidence", "correct") if c not in confidence.columns]
        if missing:
            raise ValueError(f"the DataFrame has no column(s) {missing}")
        return _from_arrays(confidence["confidence"], confidence["correct"], bins, strategy)
    if correct is None:
        raise ValueError("correct is required when confidence is not a table")
    if isinstance(confidence, ir.Column) or isinstance(correct, ir.Column):
        if not (isinstance(confidence, ir.Column) and isinstance(correct, ir.Column)):
            raise ValueError("give both confidence and correct as Ibis columns, or neither")
        parent = _parent_table(confidence, correct)
        return _from_table(parent.select(confidence=confidence, correct=correct), bins, strategy)
    return _from_arrays(confidence, correct, bins, strategy)


def expected_calibration_error(
    confidence: Any,
    correct: Any = None,
    bins: int = 15,
    strategy: Strategy = "uniform",
) -> CalibrationResult:
    """Expected calibration error of ``confidence`` against ``correct``.

    Parameters
    ----------
    confidence:
        The agent's confidence in [0, 1]: an array / list / pandas Series, an
        Ibis column, or a whole Ibis table or DataFrame with columns
        ``confidence`` and ``correct`` (then leave ``correct`` out).
    correct:
        Known outcome (true/false or 1/0); null where not yet known. Same form
        and length as ``confidence``; Ibis columns must come from one table.
    bins:
        Number of bins (default 15).
    strategy:
        ``"uniform"`` (equal width, ``[k/bins, (k+1)/bins)``, last bin closed)
        or ``"quantile"`` (equal mass). See the module docstring.

    Returns
    -------
    CalibrationResult
        ``ece``, ``max_gap``, ``n_used``, ``n_excluded`` (null confidence or
        unknown outcome), the reliability ``table``, and
        ``ece_if_calibrated_95`` (the sampling-noise level). ECE is NaN when no
        row is usable.
    """
    return _dispatch(confidence, correct, bins, strategy)


def reliability_table(
    confidence: Any,
    correct: Any = None,
    bins: int = 15,
    strategy: Strategy = "uniform",
) -> pd.DataFrame:
    """Per-bin ``count``, ``mean_confidence``, ``accuracy`` and ``gap`` for a reliability diagram.

    Same inputs and bins as :func:`expected_calibration_error`. One row per bin
    (``bin`` label, ``lower``, ``upper``); empty bins have count 0 and NaN
    statistics. ``gap = mean_confidence - accuracy`` (positive: over-confident).
    """
    return _dispatch(confidence, correct, bins, strategy).table

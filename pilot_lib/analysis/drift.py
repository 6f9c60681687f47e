"""Input drift between a reference window and a current window: PSI and KL divergence.

Binning (the same for every entry point)
----------------------------------------
Numeric features
    Bin edges are the reference window's quantiles at ``1/bins, 2/bins, ...,
    (bins-1)/bins`` (linear interpolation: numpy's default, DuckDB's
    ``quantile_cont``). They are *frozen*: the current window never moves them.
    The outer bins are open, ``(-inf, e1)`` and ``[e_last, +inf)``, so current
    values beyond the reference range are counted in the outer bins. Every bin
    is closed on the left and open on the right: ``[e_i, e_{i+1})``. Quantile
    edges that coincide (a feature with many ties, such as an integer age) are
    collapsed into one, so such a feature gets fewer than ``bins`` bins. A
    reference with no non-missing value gives a single bin ``(-inf, +inf)``.
Categorical features (strings and booleans)
    One bin per category seen in the reference window (sorted by their text),
    plus one ``unseen`` bin for current values that never occur in the
    reference.
Missing values (null, or NaN in a float column)
    Counted in their own ``missing`` bin, for both kinds of feature: a feature
    that starts arriving empty is drift too.

A bin that is empty in *both* windows carries no information and is left out
(this is how the ``missing`` and ``unseen`` bins disappear when neither window
has such a row).

Divergences
-----------
Shares are bin counts divided by the window's row count. An empty bin's share
is replaced by ``epsilon`` (default ``1e-4``) and each window's shares are then
rescaled to sum to 1, so both are proper distributions. With reference shares
``r`` and current shares ``c``:

- ``PSI = sum((c - r) * ln(c / r))`` (dimensionless; equals
  ``KL(c || r) + KL(r || c)``).
- ``KL = KL(current || reference) = sum(c * ln(c / r))`` in nats.

Both are 0 for identical distributions. PSI bands: ``< 0.1`` stable,
``0.1 - 0.25`` moderate, ``> 0.25`` significant. An empty window (no rows at
all) gives NaN, labelled "no data" in tables.

Engine
------
Ibis inputs are aggregated in the engine: a quantile aggregate per numeric
feature over the reference, then one query per window: each feature's bin as a
small ``CASE`` code, a ``group_by`` over all the codes, and those counts summed
per feature and bin in the engine (a categorical feature with very many
categories gets a ``group_by`` of its own). Only the bin counts come back, never
the raw rows, so a 10-million-row decision log goes through unchanged. numpy
arrays and pandas Series/DataFrames take an in-memory path with the same
semantics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from pilot_lib.analysis.calibration import CalibrationResult, expected_calibration_error
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.spc import (
    ControlChart,
    control_chart,
    detect_contamination_spiral,
    escalation_tables,
)
from pilot_lib.config import DateWindow, Pilot
from pilot_lib.errors import ContractError, WorkbookError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "BAND_MODERATE",
    "BAND_SIGNIFICANT",
    "DEFAULT_EPSILON",
    "DriftReport",
    "binned_shares",
    "drift_band",
    "drift_report",
    "drift_windows",
    "feature_drift",
    "histogram",
    "kl_divergence",
    "psi",
    "psi_no_drift_quantile",
]

PHASE = "drift_analysis"

#: Replacement share for an empty bin (see the module docstring).
DEFAULT_EPSILON = 1e-4
#: PSI at or above this is "moderate" drift.
BAND_MODERATE = 0.1
#: PSI above this is "significant" drift.
BAND_SIGNIFICANT = 0.25
#: Quantile of the no-drift PSI distribution a band must exceed (see ``drift_band``).
DEFAULT_NO_DRIFT_QUANTILE = 0.99
#: Simulated no-drift samples per feature, and their seed.
NO_DRIFT_DRAWS = 4000
NO_DRIFT_SEED = 20260
#: Band of a PSI the sample cannot tell from chance.
TOO_FEW_LABEL = "too few decisions"
#: A categorical feature with more reference categories than this is refused:
#: it is an identifier or free text, not a category, and would blow up the bins.
MAX_CATEGORIES = 1000

MISSING_LABEL = "missing"
UNSEEN_LABEL = "unseen"

Kind = Literal["numeric", "categorical"]
Values = Any  # numpy array, pandas Series, list, or an Ibis column

FEATURE_DRIFT_COLUMNS = [
    "feature",
    "kind",
    "psi",
    "kl",
    "band",
    "n_reference",
    "n_current",
    "unseen_share",
    "reference_missing_share",
    "current_missing_share",
    "n_bins",
    "psi_no_drift",
]


# ---------------------------------------------------------------------------------
# Binning and counting
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Binning:
    """Frozen bins learnt from the reference window."""

    kind: Kind
    edges: tuple[float, ...] = ()  # numeric: interior edges, strictly increasing
    categories: tuple[Any, ...] = ()  # categorical: reference categories, sorted by text
    reference_min: float = math.nan
    reference_max: float = math.nan

    @property
    def n_regular(self) -> int:
        return len(self.edges) + 1 if self.kind == "numeric" else len(self.categories)

    def labels(self) -> list[str]:
        if self.kind == "categorical":
            return [str(c) for c in self.categories]
        e = self.edges
        if not e:
            return ["all values"]
        out = [f"< {e[0]:.4g}"]
        out += [f"[{a:.4g}, {b:.4g})" for a, b in zip(e[:-1], e[1:], strict=True)]
        out.append(f">= {e[-1]:.4g}")
        return out

    def bounds(self) -> tuple[list[float], list[float]]:
        if self.kind == "categorical":
            nan = [math.nan] * len(self.categories)
            return nan, list(nan)
        lower = [-math.inf, *self.edges]
        upper = [*self.edges, math.inf]
        return lower, upper


@dataclass(frozen=True)
class _Counts:
    """Counts of one window in a binning."""

    regular: np.ndarray  # one count per regular bin (numeric bin or reference category)
    unseen: int  # categorical: values absent from the reference
    missing: int
    out_of_range: int  # numeric: values outside [reference min, reference max]

    @property
    def total(self) -> int:
        return int(self.regular.sum()) + self.unseen + self.missing


def _check_settings(bins: int, epsilon: float) -> None:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a whole number >= 1, got {bins!r}")
    if not 0 < epsilon < 0.5:
        raise ValueError(f"epsilon must be a small positive share (e.g. 1e-4), got {epsilon!r}")


def _quantile_probs(bins: int) -> list[float]:
    return [k / bins for k in range(1, bins)]


def _interior_edges(quantiles: Iterable[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated, finite quantile edges (coinciding edges collapse)."""
    arr = np.asarray([q for q in quantiles if q is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    return tuple(float(x) for x in np.unique(arr))


# ---- in-memory path ---------------------------------------------------------------
def _as_series(values: Values) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True)
    if isinstance(values, pd.DataFrame):
        raise TypeError("give one column (a Series), not a DataFrame")
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {arr.shape}")
    return pd.Series(arr)


def _series_kind(s: pd.Series, name: str) -> Kind | None:
    """Kind from the dtype; ``None`` for an all-missing object column (no evidence)."""
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        raise WorkbookError(
            f"feature {name!r} holds dates or times; drift is measured on numeric or "
            "categorical features (derive e.g. an hour-of-day or age-in-days column)"
        )
    if pd.api.types.is_object_dtype(dtype) and s.isna().all():
        return None
    return "categorical"


def _series_missing(s: pd.Series) -> np.ndarray:
    return s.isna().to_numpy(dtype=bool)


def _binning_from_series(s: pd.Series, kind: Kind, bins: int, name: str) -> _Binning:
    present = s[~_series_missing(s)]
    if kind == "numeric":
        x = present.to_numpy(dtype=float)
        if x.size == 0:
            return _Binning("numeric")
        qs = np.quantile(x, _quantile_probs(bins)) if bins > 1 else []
        return _Binning(
            "numeric",
            edges=_interior_edges(qs),
            reference_min=float(x.min()),
            reference_max=float(x.max()),
        )
    cats = [_native(c) for c in pd.unique(present)]
    _check_category_count(len(cats), name)
    return _Binning("categorical", categories=tuple(sorted(cats, key=str)))


def _counts_from_series(s: pd.Series, binning: _Binning) -> _Counts:
    missing_mask = _series_missing(s)
    present = s[~missing_mask]
    n_missing = int(missing_mask.sum())
    if binning.kind == "numeric":
        try:
            x = present.to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise WorkbookError(
                "the current window holds non-numeric values for a feature that is "
                "numeric in the reference window"
            ) from None
        idx = np.searchsorted(np.asarray(binning.edges, dtype=float), x, side="right")
        regular = np.bincount(idx, minlength=binning.n_regular).astype(np.int64)
        oor = int(((x < binning.reference_min) | (x > binning.reference_max)).sum())
        return _Counts(regular, 0, n_missing, oor)
    position = {c: i for i, c in enumerate(binning.categories)}
    regular = np.zeros(binning.n_regular, dtype=np.int64)
    unseen = 0
    for value, count in present.value_counts(dropna=True).items():
        i = position.get(_native(value))
        if i is None:
            unseen += int(count)
        else:
            regular[i] += int(count)
    return _Counts(regular, unseen, n_missing, 0)


# ---- engine path ------------------------------------------------------------------
def _is_ibis(x: Any) -> bool:
    return isinstance(x, ir.Expr)


def _ibis_kind(dtype: Any, name: str) -> Kind | None:
    """Kind from the Ibis type; ``None`` for an all-null (null-typed) column."""
    if dtype.is_null():
        return None
    if dtype.is_boolean():
        return "categorical"
    if dtype.is_numeric():
        return "numeric"
    if dtype.is_string():
        return "categorical"
    if dtype.is_temporal():
        raise WorkbookError(
            f"feature {name!r} holds dates or times ({dtype}); drift is measured on numeric "
            "or categorical features (derive e.g. an hour-of-day or age-in-days column)"
        )
    raise WorkbookError(
        f"feature {name!r} has type {dtype}; drift supports numeric, string and boolean features"
    )


def _typed_column(table: ir.Table, name: str, kind: Kind) -> ir.Column:
    """The column, with an all-null (null-typed) column cast to the feature's kind."""
    col = table[name]
    if col.type().is_null():
        return col.cast("float64" if kind == "numeric" else "string")
    return col


def _ibis_missing(col: ir.Column) -> ir.BooleanValue:
    if col.type().is_floating():
        return col.isnull() | col.isnan().fill_null(True)
    return col.isnull()


def _check_category_count(n: int, name: str) -> None:
    if n > MAX_CATEGORIES:
        raise WorkbookError(
            f"feature {name!r} has {n} distinct values in the reference window (more than "
            f"{MAX_CATEGORIES}); it looks like an identifier or free text. Drop it from "
            "drift.features or bin it into categories first"
        )


def _binnings_from_table(
    table: ir.Table,
    features: Sequence[str],
    kinds: dict[str, Kind],
    bins: int,
    quantiles: Literal["exact", "approx"],
) -> dict[str, _Binning]:
    """Reference binnings: quantile aggregates for the numeric features, a distinct per
    categorical one.

    Exact quantiles hold every value of their feature in the engine, so each numeric
    feature gets its own aggregate (the engine's peak memory is then that of one
    feature, for about the same time); approximate ones share one aggregate.
    """
    out: dict[str, _Binning] = {}
    numeric = [f for f in features if kinds[f] == "numeric"]
    batches = [[f] for f in numeric] if quantiles == "exact" else [numeric] if numeric else []
    probs = _quantile_probs(bins)
    for batch in batches:
        aggs: dict[str, ir.Scalar] = {}
        for i, f in enumerate(batch):
            col = _typed_column(table, f, "numeric")
            ok = ~_ibis_missing(col)
            if probs:
                if quantiles == "exact":
                    aggs[f"q{i}"] = col.quantile(probs, where=ok)
                else:
                    aggs[f"q{i}"] = col.approx_quantile(probs, where=ok)
            aggs[f"min{i}"] = col.min(where=ok).cast("float64")
            aggs[f"max{i}"] = col.max(where=ok).cast("float64")
        row = table.aggregate(**aggs).to_pandas().iloc[0]
        for i, f in enumerate(batch):
            lo, hi = row[f"min{i}"], row[f"max{i}"]
            if pd.isna(lo):  # no non-missing reference value
                out[f] = _Binning("numeric")
                continue
            qs = row[f"q{i}"] if probs else []
            out[f] = _Binning(
                "numeric",
                edges=_interior_edges(list(qs) if qs is not None else []),
                reference_min=float(lo),
                reference_max=float(hi),
            )
    for f in features:
        if kinds[f] != "categorical":
            continue
        col = _typed_column(table, f, "categorical")
        cats = (
            table.filter(col.notnull())
            .select(value=col)
            .distinct()
            .limit(MAX_CATEGORIES + 1)
            .to_pandas()["value"]
            .tolist()
        )
        cats = [_native(c) for c in cats]
        _check_category_count(len(cats), f)
        out[f] = _Binning("categorical", categories=tuple(sorted(cats, key=str)))
    return out


def _bucket_expr(col: ir.NumericValue, edges: Sequence[float]) -> ir.IntegerValue:
    """Bin index ``i`` such that ``edges[i-1] <= col < edges[i]`` (outer bins open)."""
    if not edges:
        return ibis.literal(0)
    return ibis.cases(
        *[(col < float(e), i) for i, e in enumerate(edges)],
        else_=len(edges),
    )


def _counts_from_table(table: ir.Table, feature: str, binning: _Binning) -> _Counts:
    """Bin counts of one feature, computed in the engine (a group_by over a CASE)."""
    col = _typed_column(table, feature, binning.kind)
    missing = _ibis_missing(col)
    if binning.kind == "numeric":
        bucket = ibis.ifelse(missing, -1, _bucket_expr(col, binning.edges))
        if math.isnan(binning.reference_min):
            oor = ibis.literal(False)
        else:
            oor = ibis.ifelse(
                missing,
                False,
                (col < binning.reference_min) | (col > binning.reference_max),
            )
        grouped = (
            table.group_by(bucket=bucket, out_of_range=oor).aggregate(n=table.count()).to_pandas()
        )
        regular = np.zeros(binning.n_regular, dtype=np.int64)
        n_missing = oor_count = 0
        for b, o, n in grouped[["bucket", "out_of_range", "n"]].itertuples(index=False):
            if b < 0:
                n_missing += int(n)
                continue
            regular[int(b)] += int(n)
            if bool(o):
                oor_count += int(n)
        return _Counts(regular, 0, n_missing, oor_count)

    cats = list(binning.categories)
    if cats:
        seen = col.isin(cats).fill_null(False)
        state = ibis.cases((missing, "missing"), (seen, "seen"), else_="unseen")
        value = ibis.ifelse(seen, col, ibis.null(col.type()))
    else:
        state = ibis.ifelse(missing, "missing", "unseen")
        value = ibis.null(col.type())
    grouped = table.group_by(state=state, value=value).aggregate(n=table.count()).to_pandas()
    position = {c: i for i, c in enumerate(cats)}
    regular = np.zeros(binning.n_regular, dtype=np.int64)
    unseen = n_missing = 0
    for s, v, n in grouped[["state", "value", "n"]].itertuples(index=False):
        if s == "missing":
            n_missing += int(n)
        elif s == "unseen":
            unseen += int(n)
        else:
            regular[position[_native(v)]] += int(n)
    return _Counts(regular, unseen, n_missing, 0)


#: A categorical feature with more reference categories than this gets a ``group_by``
#: of its own instead of a place in the joint count of its window.
_FOLD_MAX_CATEGORIES = 64
#: Features are counted jointly while the product of their code counts stays below
#: this, which bounds the engine's table of combinations.
_MAX_JOINT_CODES = 250_000


def _feature_code(table: ir.Table, feature: str, binning: _Binning) -> ir.IntegerValue:
    """Each row's bin of ``feature`` as a small integer.

    -1 is missing. Numeric: the bin ``i``, or ``n_regular + i`` when the value is
    also outside the reference's [min, max]. Categorical: the category's position,
    or -2 for a category the reference never had.
    """
    col = _typed_column(table, feature, binning.kind)
    missing = _ibis_missing(col)
    if binning.kind == "numeric":
        bucket = _bucket_expr(col, binning.edges).cast("int32")
        if not math.isnan(binning.reference_min):
            outside = (col < binning.reference_min) | (col > binning.reference_max)
            bucket = bucket + ibis.ifelse(outside, binning.n_regular, 0).cast("int32")
        return ibis.ifelse(missing, -1, bucket).cast("int32")
    return ibis.cases(
        (missing, -1),
        *[(col == c, i) for i, c in enumerate(binning.categories)],
        else_=-2,
    ).cast("int32")


def _counts_many_from_table(
    table: ir.Table, features: Sequence[str], binnings: dict[str, _Binning]
) -> dict[str, _Counts]:
    """Bin counts of several features of one window, from one scan of the table.

    Each feature's bin becomes a small integer code (:func:`_feature_code`). In
    the engine, one ``group_by`` over all the codes counts the rows of every
    combination present, and those counts are summed per feature and code: one
    row per feature and bin comes back. The same numbers as
    :func:`_counts_from_table` per feature. Features whose combinations could
    be very many are split over several such queries; a categorical feature with
    very many categories gets its own ``group_by``.
    """
    out: dict[str, _Counts] = {}
    groups: list[list[str]] = []
    size = math.inf
    for f in features:
        b = binnings[f]
        if b.kind == "categorical" and len(b.categories) > _FOLD_MAX_CATEGORIES:
            out[f] = _counts_from_table(table, f, b)
            continue
        n_codes = b.n_regular + 2
        if size * n_codes > _MAX_JOINT_CODES:
            groups.append([])
            size = 1
        groups[-1].append(f)
        size *= n_codes
    for group in groups:
        codes = {f"c{j}": _feature_code(table, f, binnings[f]) for j, f in enumerate(group)}
        joint = table.group_by(**codes).aggregate(n=table.count())
        long = joint.pivot_longer(list(codes), names_to="feature", values_to="code")
        counts = long.group_by("feature", "code").aggregate(n=long.n.sum()).to_pandas()
        for j, f in enumerate(group):
            b = binnings[f]
            k = b.n_regular
            mine = counts.loc[counts["feature"] == f"c{j}"]
            code = mine["code"].to_numpy(dtype=np.int64)
            n = mine["n"].to_numpy(dtype=np.int64)
            n_missing = int(n[code == -1].sum())
            present = code >= 0
            regular = np.zeros(k, dtype=np.int64)
            if k:
                np.add.at(regular, code[present] % k, n[present])
            if b.kind == "numeric":
                out[f] = _Counts(regular, 0, n_missing, int(n[code >= k].sum()))
            else:
                out[f] = _Counts(regular, int(n[code == -2].sum()), n_missing, 0)
    return {f: out[f] for f in features}


def _native(v: Any) -> Any:
    """numpy scalars back to Python values (dictionary lookups by category)."""
    return v.item() if isinstance(v, np.generic) else v


# ---- one window, either path --------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """One window of one or more features: an Ibis table or a pandas DataFrame."""

    table: ir.Table | pd.DataFrame
    label: str

    @property
    def is_ibis(self) -> bool:
        return _is_ibis(self.table)

    def columns(self) -> list[str]:
        return list(self.table.columns)

    def kind(self, feature: str) -> Kind | None:
        if self.is_ibis:
            return _ibis_kind(self.table[feature].type(), feature)
        return _series_kind(self.table[feature], feature)

    def binnings(
        self,
        features: Sequence[str],
        kinds: dict[str, Kind],
        bins: int,
        quantiles: Literal["exact", "approx"],
    ) -> dict[str, _Binning]:
        if self.is_ibis:
            return _binnings_from_table(self.table, features, kinds, bins, quantiles)
        return {
            f: _binning_from_series(self.table[f].reset_index(drop=True), kinds[f], bins, f)
            for f in features
        }

    def counts(self, feature: str, binning: _Binning) -> _Counts:
        if self.is_ibis:
            return _counts_from_table(self.table, feature, binning)
        return _counts_from_series(self.table[feature].reset_index(drop=True), binning)

    def counts_many(
        self, features: Sequence[str], binnings: dict[str, _Binning]
    ) -> dict[str, _Counts]:
        """Counts of every feature: on an engine, one aggregate for the whole window."""
        if self.is_ibis:
            return _counts_many_from_table(self.table, features, binnings)
        return {f: self.counts(f, binnings[f]) for f in features}


def _column_source(values: Values, label: str) -> _Source:
    """A single column (array, Series or Ibis column) as a one-feature source named 'value'."""
    if isinstance(values, ir.Table):
        raise TypeError(f"{label}: give one column (table['feature']), not a whole table")
    if _is_ibis(values):
        return _Source(values.name("value").as_table(), label)
    return _Source(pd.DataFrame({"value": _as_series(values)}), label)


# ---------------------------------------------------------------------------------
# Divergences
# ---------------------------------------------------------------------------------
def _full_vector(c: _Counts, kind: Kind) -> np.ndarray:
    extra = [c.unseen, c.missing] if kind == "categorical" else [c.missing]
    return np.concatenate([c.regular.astype(float), np.asarray(extra, dtype=float)])


def _smoothed_shares(counts: np.ndarray, epsilon: float) -> np.ndarray:
    shares = counts / counts.sum()
    shares = np.where(shares == 0, epsilon, shares)
    return shares / shares.sum()


def _divergences(
    reference_counts: np.ndarray, current_counts: np.ndarray, epsilon: float
) -> tuple[float, float]:
    """(PSI, KL(current || reference)) of two count vectors over the same bins."""
    ref = np.asarray(reference_counts, dtype=float)
    cur = np.asarray(current_counts, dtype=float)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return (math.nan, math.nan)
    keep = (ref + cur) > 0
    r = _smoothed_shares(ref[keep], epsilon)
    c = _smoothed_shares(cur[keep], epsilon)
    log_ratio = np.log(c / r)
    psi_value = float(np.sum((c - r) * log_ratio))
    kl_value = float(np.sum(c * log_ratio))
    return (psi_value, kl_value)


#: A feature missing on more than this share of the reference or the current window's
#: decisions is "no data" (issue 22): a PSI on the few present values is not a verdict on
#: the feature, and a 100%-missing feature used to read "stable".
MOSTLY_MISSING = 0.5


def drift_band(psi_value: float, no_drift: float | None = None) -> str:
    """The PSI band of a feature.

    ``"stable"`` (< 0.1), ``"moderate"`` (0.1-0.25), ``"significant"`` (> 0.25)
    or ``"no data"`` (NaN). With ``no_drift`` (the PSI that chance alone
    reaches, without any drift, for the same counts: see
    :func:`psi_no_drift_quantile`), a PSI of 0.1 or more that does not exceed
    it reads ``"too few decisions"``: the windows hold too few decisions to
    tell drift from sampling noise.
    """
    if psi_value is None or not math.isfinite(psi_value):
        return "no data"
    if psi_value < BAND_MODERATE:
        return "stable"
    if no_drift is not None and math.isfinite(no_drift) and psi_value <= no_drift:
        return TOO_FEW_LABEL
    if psi_value <= BAND_SIGNIFICANT:
        return "moderate"
    return "significant"


def _psi_many(ref: np.ndarray, cur: np.ndarray, epsilon: float) -> np.ndarray:
    """PSI of many pairs of count vectors at once (rows), exactly as :func:`_divergences`."""
    ref = np.asarray(ref, dtype=float)
    cur = np.asarray(cur, dtype=float)
    keep = (ref + cur) > 0

    def shares(x: np.ndarray) -> np.ndarray:
        sh = x / x.sum(axis=1, keepdims=True)
        sh = np.where(keep & (sh == 0), epsilon, sh)
        sh = np.where(keep, sh, 0.0)
        return sh / sh.sum(axis=1, keepdims=True)

    r, c = shares(ref), shares(cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(keep, (c - r) * np.log(c / r), 0.0)
    return term.sum(axis=1)


def psi_no_drift_quantile(
    reference_counts: Sequence[float],
    current_counts: Sequence[float],
    q: float = DEFAULT_NO_DRIFT_QUANTILE,
    epsilon: float = DEFAULT_EPSILON,
    method: Literal["simulate", "chi2"] = "simulate",
    draws: int = NO_DRIFT_DRAWS,
    seed: int = NO_DRIFT_SEED,
) -> float:
    """The PSI that chance alone exceeds with probability ``1 - q`` when nothing drifted.

    Parameters
    ----------
    reference_counts, current_counts:
        Bin counts of the two windows over the same bins (as PSI uses them).
    q:
        Quantile of the no-drift distribution (default 0.99: a feature that did
        not drift reads above it in 1% of samples).
    method:
        ``"simulate"`` (default): both windows are drawn ``draws`` times from
        one multinomial distribution, the pooled shares of the two windows
        (what "no drift" means), with the windows' own sizes; each draw's PSI is
        computed exactly as the reported one (same epsilon, same bins) and the
        ``q`` quantile is returned. Seeded: the same counts give the same
        value. ``"chi2"``: the large-sample approximation
        ``(1/n_ref + 1/n_cur) * chi2.ppf(q, bins - 1)`` (PSI is then close to
        the symmetric chi-square statistic); it ignores the epsilon of empty
        bins, so it is too low when bins hold only a few expected decisions.

    Returns
    -------
    float
        NaN when either window has no rows. Decreases as ``1/n``: with 10 bins
        and 10,000 reference decisions, about 0.44 at 50 current decisions and
        0.01 at 5,000.
    """
    ref = np.asarray(reference_counts, dtype=float)
    cur = np.asarray(current_counts, dtype=float)
    n_ref, n_cur = ref.sum(), cur.sum()
    if n_ref <= 0 or n_cur <= 0:
        return math.nan
    if not 0 < q < 1:
        raise ValueError(f"q must be between 0 and 1, got {q!r}")
    pooled = ref + cur
    pooled = pooled[pooled > 0] / pooled.sum()
    if method == "chi2":
        from scipy.stats import chi2

        return float((1 / n_ref + 1 / n_cur) * chi2.ppf(q, max(len(pooled) - 1, 1)))
    if method != "simulate":
        raise ValueError(f"method must be 'simulate' or 'chi2', got {method!r}")
    rng = np.random.default_rng(seed)
    sim_ref = rng.multinomial(int(n_ref), pooled, size=draws)
    sim_cur = rng.multinomial(int(n_cur), pooled, size=draws)
    return float(np.quantile(_psi_many(sim_ref, sim_cur, epsilon), q))


def _resolve_kind(ref: _Source, cur: _Source, feature: str, forced: Kind | None) -> Kind:
    if forced is not None:
        return forced
    k_ref = ref.kind(feature)
    k_cur = cur.kind(feature)
    if k_ref is None or k_cur is None:  # an all-missing column takes the other's kind
        return k_ref or k_cur or "categorical"
    if k_ref != k_cur:
        raise WorkbookError(
            f"feature {feature!r} is {k_ref} in the {ref.label} but {k_cur} in the "
            f"{cur.label}; the two windows must hold the same type"
        )
    return k_ref


@dataclass(frozen=True)
class _FeatureResult:
    feature: str
    kind: Kind
    binning: _Binning
    reference: _Counts
    current: _Counts
    epsilon: float

    def divergences(self) -> tuple[float, float]:
        return _divergences(
            _full_vector(self.reference, self.kind),
            _full_vector(self.current, self.kind),
            self.epsilon,
        )

    def shares_frame(self) -> pd.DataFrame:
        labels = self.binning.labels()
        lower, upper = self.binning.bounds()
        ref_c = list(self.reference.regular)
        cur_c = list(self.current.regular)
        if self.kind == "categorical" and (self.reference.unseen or self.current.unseen):
            labels.append(UNSEEN_LABEL)
            lower.append(math.nan)
            upper.append(math.nan)
            ref_c.append(self.reference.unseen)
            cur_c.append(self.current.unseen)
        if self.reference.missing or self.current.missing:
            labels.append(MISSING_LABEL)
            lower.append(math.nan)
            upper.append(math.nan)
            ref_c.append(self.reference.missing)
            cur_c.append(self.current.missing)
        n_ref, n_cur = self.reference.total, self.current.total
        ref_arr = np.asarray(ref_c, dtype=np.int64)
        cur_arr = np.asarray(cur_c, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ref_share = ref_arr / n_ref if n_ref else np.full(len(ref_arr), math.nan)
            cur_share = cur_arr / n_cur if n_cur else np.full(len(cur_arr), math.nan)
        return pd.DataFrame(
            {
                "bin": labels,
                "lower": np.asarray(lower, dtype=float),
                "upper": np.asarray(upper, dtype=float),
                "reference_count": ref_arr,
                "current_count": cur_arr,
                "reference_share": ref_share,
                "current_share": cur_share,
            }
        )

    def row(self, no_drift_quantile: float | None = DEFAULT_NO_DRIFT_QUANTILE) -> dict[str, Any]:
        psi_value, kl_value = self.divergences()
        crit = math.nan
        if no_drift_quantile is not None and math.isfinite(psi_value):
            crit = psi_no_drift_quantile(
                _full_vector(self.reference, self.kind),
                _full_vector(self.current, self.kind),
                q=no_drift_quantile,
                epsilon=self.epsilon,
            )
        n_ref, n_cur = self.reference.total, self.current.total
        unseen = self.current.unseen if self.kind == "categorical" else self.current.out_of_range
        ref_missing = self.reference.missing / n_ref if n_ref else math.nan
        cur_missing = self.current.missing / n_cur if n_cur else math.nan
        band = drift_band(psi_value, crit)
        if any(math.isfinite(x) and x > MOSTLY_MISSING for x in (ref_missing, cur_missing)):
            band = "no data"  # a PSI on the few values present says nothing of the rest
        return {
            "feature": self.feature,
            "kind": self.kind,
            "psi": psi_value,
            "kl": kl_value,
            "band": band,
            "n_reference": n_ref,
            "n_current": n_cur,
            "unseen_share": unseen / n_cur if n_cur else math.nan,
            "reference_missing_share": self.reference.missing / n_ref if n_ref else math.nan,
            "current_missing_share": self.current.missing / n_cur if n_cur else math.nan,
            "n_bins": int(self.binning.n_regular),
            "psi_no_drift": crit,
        }


def _analyse(
    ref: _Source,
    cur: _Source,
    features: Sequence[str],
    bins: int,
    epsilon: float,
    kinds: dict[str, Kind | None],
    quantiles: Literal["exact", "approx"],
) -> list[_FeatureResult]:
    _check_settings(bins, epsilon)
    if quantiles not in ("exact", "approx"):
        raise ValueError(f"quantiles must be 'exact' or 'approx', got {quantiles!r}")
    for src in (ref, cur):
        missing = [f for f in features if f not in src.columns()]
        if missing:
            raise ContractError(
                f"{src.label}: feature column(s) {missing} named in drift.features are missing; "
                f"the table has {src.columns()}. Fix drift.features in the pilot file or add "
                "the columns to the decision log"
            )
    resolved = {f: _resolve_kind(ref, cur, f, kinds.get(f)) for f in features}
    binnings = ref.binnings(features, resolved, bins, quantiles)
    ref_counts = ref.counts_many(features, binnings)
    cur_counts = cur.counts_many(features, binnings)
    return [
        _FeatureResult(f, resolved[f], binnings[f], ref_counts[f], cur_counts[f], epsilon)
        for f in features
    ]


def _single(
    reference: Values,
    current: Values,
    bins: int,
    epsilon: float,
    kind: Kind | None,
    quantiles: Literal["exact", "approx"] = "exact",
) -> _FeatureResult:
    if kind not in (None, "numeric", "categorical"):
        raise ValueError(f"kind must be 'numeric', 'categorical' or None, got {kind!r}")
    ref = _column_source(reference, "reference")
    cur = _column_source(current, "current")
    return _analyse(ref, cur, ["value"], bins, epsilon, {"value": kind}, quantiles)[0]


def psi(
    reference: Values,
    current: Values,
    bins: int = 10,
    epsilon: float = DEFAULT_EPSILON,
    kind: Kind | None = None,
) -> float:
    """Population stability index of one feature, reference window vs current window.

    ``PSI = sum((c - r) * ln(c / r))`` over the bins, with ``r`` the reference
    shares and ``c`` the current shares (dimensionless, >= 0, 0 when the two
    binned distributions are identical).

    Parameters
    ----------
    reference, current:
        One feature's values: numpy arrays, lists, pandas Series, or Ibis
        columns (aggregated in the engine; the two may come from different tables).
    bins:
        Quantile bins for a numeric feature (edges from the reference only,
        outer bins open, coinciding edges collapsed). Ignored for categories.
    epsilon:
        Share given to an empty bin before both windows are rescaled to sum to 1.
    kind:
        ``"numeric"`` or ``"categorical"``; ``None`` infers it from the type
        (numbers are numeric; strings and booleans categorical).

    Returns
    -------
    float
        NaN when either window has no rows at all. Missing values are a bin of
        their own; see the module docstring for every binning rule.
    """
    return _single(reference, current, bins, epsilon, kind).divergences()[0]


def kl_divergence(
    reference: Values,
    current: Values,
    bins: int = 10,
    epsilon: float = DEFAULT_EPSILON,
    kind: Kind | None = None,
) -> float:
    """Kullback-Leibler divergence ``KL(current || reference)`` in nats.

    ``KL = sum(c * ln(c / r))`` on the same bins and smoothed shares as
    :func:`psi` (same parameters). It is >= 0, 0 for identical binned
    distributions, and not symmetric: it weighs the bins by how often they
    occur *now*. NaN when either window has no rows.
    """
    return _single(reference, current, bins, epsilon, kind).divergences()[1]


def binned_shares(
    reference: Values,
    current: Values,
    bins: int = 10,
    kind: Kind | None = None,
) -> pd.DataFrame:
    """Both windows' distributions on the reference bins, for overlays and checks.

    Columns: ``bin`` (label: ``"< 12.5"``, ``"[12.5, 20)"``, ``">= 80"``, a
    category, ``"unseen"`` or ``"missing"``), ``lower`` / ``upper`` (numeric
    bin bounds, ``[lower, upper)``; NaN for categories), ``reference_count``,
    ``current_count``, ``reference_share``, ``current_share`` (count / the
    window's rows, *before* any epsilon). The ``unseen`` and ``missing`` rows
    appear only when either window has such values. Inputs as for :func:`psi`.
    """
    return _single(reference, current, bins, DEFAULT_EPSILON, kind).shares_frame()


def histogram(
    reference_table: ir.Table | pd.DataFrame,
    current_table: ir.Table | pd.DataFrame,
    feature: str,
    bins: int = 10,
) -> pd.DataFrame:
    """:func:`binned_shares` of one feature of two tables (the overlay of a drift table row)."""
    ref = _as_source(reference_table, "reference window")
    cur = _as_source(current_table, "current window")
    return _analyse(ref, cur, [feature], bins, DEFAULT_EPSILON, {}, "exact")[0].shares_frame()


def _as_source(table: ir.Table | pd.DataFrame, label: str) -> _Source:
    if isinstance(table, (ir.Table, pd.DataFrame)):
        return _Source(table, label)
    raise TypeError(f"{label}: expected an Ibis table or a pandas DataFrame, got {type(table)}")


def _feature_drift_details(
    reference_table: ir.Table | pd.DataFrame,
    current_table: ir.Table | pd.DataFrame,
    features: Sequence[str],
    bins: int,
    epsilon: float,
    categorical: Sequence[str] | None,
    quantiles: Literal["exact", "approx"],
    no_drift_quantile: float | None = DEFAULT_NO_DRIFT_QUANTILE,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    if isinstance(features, str):
        features = [features]
    features = list(dict.fromkeys(features))
    ref = _as_source(reference_table, "reference window")
    cur = _as_source(current_table, "current window")
    forced: dict[str, Kind | None] = {f: "categorical" for f in (categorical or [])}
    results = _analyse(ref, cur, features, bins, epsilon, forced, quantiles)
    table = pd.DataFrame([r.row(no_drift_quantile) for r in results], columns=FEATURE_DRIFT_COLUMNS)
    order = table["psi"].fillna(-math.inf)
    table = (
        table.assign(_order=-order)
        .sort_values(["_order", "feature"], kind="mergesort")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    for col in ("n_reference", "n_current", "n_bins"):
        table[col] = table[col].astype("int64")
    shares = {r.feature: r.shares_frame() for r in results}
    return table, shares


def feature_drift(
    reference_table: ir.Table | pd.DataFrame,
    current_table: ir.Table | pd.DataFrame,
    features: Sequence[str],
    bins: int = 10,
    epsilon: float = DEFAULT_EPSILON,
    categorical: Sequence[str] | None = None,
    quantiles: Literal["exact", "approx"] = "exact",
    no_drift_quantile: float | None = DEFAULT_NO_DRIFT_QUANTILE,
) -> pd.DataFrame:
    """PSI, KL and band of every feature, reference window vs current window.

    Parameters
    ----------
    reference_table, current_table:
        Ibis tables (aggregated in the engine: quantiles, then bin counts; no raw
        row leaves the engine) or pandas DataFrames (same semantics in memory).
    features:
        Column names. Numbers are numeric (quantile bins), strings and booleans
        categorical; ``categorical`` forces listed columns to be categorical
        (integer codes).
    bins, epsilon:
        As in :func:`psi`.
    no_drift_quantile:
        A PSI of 0.1 or more must also exceed this quantile of its no-drift
        distribution (:func:`psi_no_drift_quantile`, simulated for the
        feature's counts) to be "moderate" or "significant"; otherwise its band
        is "too few decisions". ``None`` turns the guard off.
    quantiles:
        ``"exact"`` (default; DuckDB ``quantile_cont``, identical to numpy) or
        ``"approx"`` (the engine's approximate quantiles, for very large tables
        on engines where exact quantiles are slow).

    Returns
    -------
    pandas.DataFrame
        One row per feature, sorted by PSI descending (no-data rows last, ties by
        name): ``feature``, ``kind``, ``psi``, ``kl`` (nats), ``band``,
        ``n_reference`` / ``n_current`` (rows in each window, missing included),
        ``unseen_share`` (share of current rows in a category the reference never
        had; for numeric features the share outside the reference's [min, max]),
        ``reference_missing_share``, ``current_missing_share``, ``n_bins``
        (regular bins after collapsing coinciding edges), ``psi_no_drift``
        (the no-drift quantile; NaN with the guard off or an empty window).

    Raises
    ------
    ContractError
        A feature column is missing from either table.
    WorkbookError
        A feature is a date/time, has different types in the two windows, or has
        more than ``MAX_CATEGORIES`` reference categories.
    """
    table, _ = _feature_drift_details(
        reference_table,
        current_table,
        features,
        bins,
        epsilon,
        categorical,
        quantiles,
        no_drift_quantile,
    )
    return table


# ---------------------------------------------------------------------------------
# Windows and the phase report
# ---------------------------------------------------------------------------------
def _window_filter(table: ir.Table, window: DateWindow, column: str = "timestamp") -> ir.Table:
    ts = table[column]
    return table.filter((ts >= window.start_ts) & (ts < window.end_ts))


def drift_windows(decisions: ir.Table, pilot: Pilot) -> tuple[ir.Table, ir.Table]:
    """The decision log cut to ``pilot.drift.reference_window`` and ``current_window``.

    A row is in a window when ``window.start_ts <= timestamp < window.end_ts``
    (whole UTC days, both end days included). Returns lazy Ibis tables.
    """
    if not isinstance(decisions, ir.Table):
        raise TypeError(f"decisions must be an Ibis table, got {type(decisions).__name__}")
    if "timestamp" not in decisions.columns:
        raise ContractError("decisions: column 'timestamp' is missing; see docs/data-contracts.md")
    return (
        _window_filter(decisions, pilot.drift.reference_window),
        _window_filter(decisions, pilot.drift.current_window),
    )


#: Calibration: a current-window ECE at or above this is a material gap ...
ECE_MATERIAL = 0.05
#: ... or an ECE that grew this much since the reference window.
ECE_MATERIAL_RISE = 0.03

REPORT_COLUMNS = ("timestamp", "escalated", "overridden", "prompt_version", "confidence", "correct")


@dataclass
class DriftReport:
    """Everything phase 3 computes for one pilot.

    Attributes
    ----------
    features:
        :func:`feature_drift` table (reference vs current window).
    distributions:
        Per feature, :func:`binned_shares`-style table for distribution overlays.
    daily:
        :func:`pilot_lib.analysis.spc.daily_escalation` over the pilot window.
    chart:
        :class:`pilot_lib.analysis.spc.ControlChart` (``None`` when the baseline had too
        little data; a finding says why).
    calibration:
        ``{"reference": CalibrationResult, "current": CalibrationResult}``.
    prompt_versions:
        :func:`pilot_lib.analysis.spc.prompt_version_rates` table.
    spirals:
        Runs found by :func:`pilot_lib.analysis.spc.detect_contamination_spiral`.
    findings:
        :class:`pilot_lib.analysis.findings.Finding` list (phase ``"drift_analysis"``).
    chart_problem:
        Why ``chart`` is ``None``, in words (else ``None``).
    """

    pilot_name: str
    reference_window: DateWindow
    current_window: DateWindow
    key_features: list[str]
    features: pd.DataFrame
    distributions: dict[str, pd.DataFrame]
    daily: pd.DataFrame
    chart: ControlChart | None
    calibration: dict[str, CalibrationResult]
    prompt_versions: pd.DataFrame
    spirals: list[dict[str, Any]]
    findings: list[Finding] = field(default_factory=list)
    chart_problem: str | None = None
    psi_no_drift_quantile: float = DEFAULT_NO_DRIFT_QUANTILE

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "blocking"]

    def summary_text(self) -> str:
        """A few plain paragraphs: what drifted, when, and how much."""
        from pilot_lib.analysis.gate import plural_text

        return "\n\n".join(plural_text(p) for p in _summary_paragraphs(self))

    def to_result(self) -> dict[str, Any]:
        """JSON-able dict for ``write_phase_result("drift_analysis", ...)``."""
        from pilot_lib.results import to_jsonable

        chart = self.chart
        return to_jsonable(
            {
                "reference_window": {
                    "start": self.reference_window.start,
                    "end": self.reference_window.end,
                },
                "current_window": {
                    "start": self.current_window.start,
                    "end": self.current_window.end,
                },
                "key_features": self.key_features,
                "features": self.features,
                "control_chart": None
                if chart is None
                else {
                    "window_days": chart.window,
                    "sigma": chart.sigma,
                    "limits": chart.limits,
                    "episodes": chart.episodes,
                    "in_breach_at_end": chart.in_breach_at_end,
                    "p_chart_in_breach_at_end": chart.p_in_breach_at_end,
                    "first_breach_day": chart.first_breach_day,
                    "run_rule_violations": len(chart.rule_violations),
                    "confirmation_sigma": chart.confirmation_sigma,
                    "confirmed_breach_at_end": chart.confirmed_breach_at_end,
                    "min_shift": chart.min_shift,
                    "shift_at_end": chart.shift_at_end,
                    "material_at_end": chart.material_at_end,
                    "blocking_at_end": chart.blocking_at_end,
                    "threshold": chart.threshold,
                },
                "psi_no_drift_quantile": self.psi_no_drift_quantile,
                "calibration": {k: v.to_dict() for k, v in self.calibration.items()},
                "prompt_versions": self.prompt_versions,
                "contamination_spirals": self.spirals,
                "findings": [to_jsonable(f) for f in self.findings],
                "blocking": len(self.blocking),
                "summary": self.summary_text(),
            }
        )


def _pct(x: float, digits: int = 1) -> str:
    return "no data" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def _day(d: Any) -> str:
    return pd.Timestamp(d).date().isoformat()


def _summary_paragraphs(r: DriftReport) -> list[str]:
    out: list[str] = []
    ch = r.chart
    if ch is None:
        out.append(
            "Escalation rate: the control chart could not be drawn (too little data in the "
            "reference window to set limits)."
        )
    else:
        lim = ch.limits
        text = (
            f"Escalation rate: during the baseline ({_day(lim['baseline_start'])} to "
            f"{_day(lim['baseline_end'])}) the daily rate averaged {_pct(lim['ma_mean'])}; "
            f"review band for the {ch.window}-day average {_pct(lim['lcl'])} to "
            f"{_pct(lim['ucl'])} (mean +/- {ch.sigma:g} standard deviations, from the "
            "baseline's day-to-day variation)."
        )
        if lim["tau"] > 0:
            text += (
                f" Days varied more than binomial chance explains (by a standard deviation of "
                f"{100 * lim['tau']:.2f} points; Laney's sigma_z {lim['sigma_z']:.2f}), which "
                "the p'-chart that confirms a shift allows for."
            )
        else:
            text += (
                " Days varied no more than binomial chance explains, so the p'-chart that "
                "confirms a shift is the classic count-based p-chart."
            )
        ma_eps = ch.episodes[ch.episodes["chart"] == "moving_average"]
        ma_eps = ma_eps[ma_eps["level"] != "baseline"]
        shown = ma_eps[ma_eps["level"].isin(["blocking", "review"])]
        brief = int(((ma_eps["level"] == "info") & (ma_eps["side"] == "above")).sum())
        dips = int((ma_eps["side"] == "below").sum())
        if ma_eps.empty:
            text += " The average stayed inside the band after the baseline."
        for ep in shown.itertuples(index=False):
            if ep.ongoing:
                if ep.level == "blocking":
                    agree = (
                        f"; the p'-chart confirms it and the rise, {_pts(ch.shift_at_end)}, matters"
                    )
                elif ch.confirmed_breach_at_end:
                    agree = (
                        f"; the p'-chart confirms it, but the rise, {_pts(ch.shift_at_end)}, is "
                        f"smaller than the {_pts(ch.min_shift)[1:]} that matter"
                    )
                else:
                    agree = "; the p'-chart does not confirm it on the last day"
                text += (
                    f" It went above the band on {_day(ep.start)} and was still there at the "
                    f"end of the data (peak {_pct(ep.peak)} on {_day(ep.peak_day)}{agree})."
                )
            else:
                text += (
                    f" It went above the band on {_day(ep.start)} and came back on "
                    f"{_day(pd.Timestamp(ep.end) + pd.Timedelta(days=1))} after {ep.days} "
                    f"day(s) (peak {_pct(ep.peak)} on {_day(ep.peak_day)}; confirmed by the "
                    "p'-chart)."
                )
        if brief:
            text += (
                f" {'Besides, it' if len(shown) else 'It'} rose above the band {brief} "
                "time(s) without the p'-chart confirming it (chance excursions)."
            )
        if dips:
            text += f" It fell below the band {dips} time(s) (fewer escalations: information only)."
        out.append(text)

    feats = r.features
    if feats.empty:
        out.append("Input drift: no features were analysed.")
    else:
        moving = feats[feats["band"].isin(["significant", "moderate"])]
        measured = feats[(feats["n_reference"] > 0) & (feats["n_current"] > 0)]
        no_data = measured[measured["band"] == "no data"]
        measured = measured[measured["band"] != "no data"]
        missing_tail = (
            " No data (missing on most decisions of a window): "
            + ", ".join(
                f"{row.feature} ({_pct(row.reference_missing_share)} missing in the reference, "
                f"{_pct(row.current_missing_share)} in the current window)"
                for row in no_data.itertuples(index=False)
            )
            + "."
            if len(no_data)
            else ""
        )
        head = (
            f"Input drift, reference window ({r.reference_window.start} to "
            f"{r.reference_window.end}) against current window ({r.current_window.start} to "
            f"{r.current_window.end}): "
        )
        if measured.empty and len(no_data):
            out.append(head + "no feature could be measured." + missing_tail)
        elif measured.empty:
            empty = [
                w
                for w, col in (("reference", "n_reference"), ("current", "n_current"))
                if (feats[col] == 0).all()
            ]
            out.append(
                head + f"no feature could be measured: no decisions in the {' and '.join(empty)} "
                "window" + ("s." if len(empty) > 1 else ".")
            )
        elif moving.empty:
            every = (
                "every feature is stable"
                if not len(no_data)
                else "every measured feature is stable"
            )
            out.append(head + every + " (PSI below 0.1)." + missing_tail)
        else:
            parts = []
            for row in moving.itertuples(index=False):
                key = ", a key feature" if row.feature in r.key_features else ""
                extra = ""
                if row.unseen_share and row.unseen_share > 0:
                    what = (
                        "new categories"
                        if row.kind == "categorical"
                        else "outside the reference range"
                    )
                    extra = f"; {_pct(row.unseen_share)} of current values {what}"
                parts.append(f"{row.feature} PSI {row.psi:.2f} ({row.band}{key}{extra})")
            stable = measured[measured["band"] == "stable"]["feature"].tolist()
            tail = f". Stable: {', '.join(stable)}." if stable else "."
            out.append(head + "; ".join(parts) + tail + missing_tail)

    cal_parts = []
    for label in ("reference", "current"):
        c = r.calibration.get(label)
        if c is None:
            continue
        if c.n_used == 0:
            cal_parts.append(f"{label} window: not measured ({c.unusable_reason()})")
        else:
            cal_parts.append(
                f"{label} window ECE {c.ece:.3f} on {c.n_used:,} decisions with known outcome "
                f"({c.n_excluded:,} without outcome or confidence left out)"
            )
    if cal_parts:
        out.append("Calibration (confidence against correctness): " + "; ".join(cal_parts) + ".")

    pv = r.prompt_versions
    if not pv.empty:
        first, last = pv.iloc[0], pv.iloc[-1]
        text = (
            f"Prompt versions: {len(pv)} ({first['prompt_version']} to "
            f"{last['prompt_version']}); escalation rate {_pct(first['escalation_rate'])} on "
            f"{first['prompt_version']}, {_pct(last['escalation_rate'])} on "
            f"{last['prompt_version']}."
        )
        for s in r.spirals:
            text += (
                f" Escalations rose version after version from {s['versions'][0]} to "
                f"{s['versions'][-1]} ({_pct(s['escalation_rates'][0])} to "
                f"{_pct(s['escalation_rates'][-1])}): a possible feedback-contamination spiral."
            )
        out.append(text)

    blocking = r.blocking
    if blocking:
        out.append(f"{len(blocking)} blocking finding(s): " + " ".join(f.message for f in blocking))
    else:
        out.append("No blocking drift finding.")
    return out


def _pts(x: float) -> str:
    """A difference of two rates in percentage points."""
    return "no data" if x is None or not math.isfinite(x) else f"{100 * x:+.1f} points"


def _chart_findings(ch: ControlChart | None, problem: str | None = None) -> list[Finding]:
    """Findings from the escalation control chart, by the level of each episode
    (:func:`pilot_lib.analysis.spc.episode_level`)."""
    if ch is None:
        return [
            Finding(
                PHASE,
                "control_chart_unavailable",
                "warning",
                "The escalation control chart could not be computed: the reference window has "
                "too few days with decisions to set control limits.",
                {"problem": problem},
            )
        ]
    found: list[Finding] = []
    unconfirmed: list[dict[str, Any]] = []
    dips: list[dict[str, Any]] = []
    w = ch.window
    lim = ch.limits
    p_bar = lim["p_bar"]
    for ep in ch.episodes.itertuples(index=False):
        if ep.level == "baseline":
            continue
        ev = {
            "chart": ep.chart,
            "side": ep.side,
            "start": ep.start,
            "end": ep.end,
            "days": ep.days,
            "peak": ep.peak,
            "peak_day": ep.peak_day,
            "ongoing": ep.ongoing,
            "confirmed_by_other_chart": ep.confirmed,
            "peak_shift": ep.peak_shift,
            "level": ep.level,
            "ma_limits": {"ucl": lim["ucl"], "lcl": lim["lcl"]},
            "p_bar": p_bar,
            "min_shift": ch.min_shift,
            "shift_at_end": ch.shift_at_end if ep.ongoing else None,
        }
        if ep.chart == "moving_average" and ep.side == "below":
            dips.append(ev)
            continue
        if ep.chart == "p_chart":
            if ep.level == "review":
                found.append(
                    Finding(
                        PHASE,
                        "p_chart_breach_at_end",
                        "warning",
                        f"The p'-chart of the {w}-day escalation rate is above its limit at the "
                        f"end of the data (since {_day(ep.start)}), while the {w}-day average "
                        "is inside its band; trigger a review and watch the next days.",
                        ev,
                    )
                )
            continue
        if ep.level == "blocking":
            why = (
                f"a rise of {_pts(ch.shift_at_end)} over the baseline's {_pct(p_bar)}, at least "
                f"the {_pts(ch.min_shift)[1:]} that matter"
            )
            if ch.shift_at_end < ch.min_shift - 1e-12 and ch.threshold is not None:
                why = (
                    f"a rise of {_pts(ch.shift_at_end)} that takes the rate to or beyond the "
                    f"{_pct(ch.threshold)} escalation threshold"
                )
            found.append(
                Finding(
                    PHASE,
                    "escalation_control_breach",
                    "blocking",
                    f"The {w}-day escalation rate has been above the upper control limit since "
                    f"{_day(ep.start)} and is still there at the end of the data "
                    f"({_pct(ep.peak)} at its extreme); the p'-chart, which allows for the "
                    f"day-to-day variation of the baseline, confirms it, and it is {why}.",
                    ev,
                )
            )
        elif ep.level == "review" and ep.ongoing and ch.confirmed_breach_at_end:
            found.append(
                Finding(
                    PHASE,
                    "escalation_shift_below_material",
                    "warning",
                    f"The {w}-day escalation rate has been above the upper control limit since "
                    f"{_day(ep.start)} and the p'-chart confirms the rise, but it is small: "
                    f"{_pts(ch.shift_at_end)} over the baseline's {_pct(p_bar)}, less than the "
                    f"{_pts(ch.min_shift)[1:]} that matter (drift.min_shift_absolute / "
                    "min_shift_relative). Trigger a review; it does not block.",
                    ev,
                )
            )
        elif ep.level == "review" and ep.ongoing:
            found.append(
                Finding(
                    PHASE,
                    "escalation_breach_open",
                    "warning",
                    f"The {w}-day escalation rate has been above the upper control limit since "
                    f"{_day(ep.start)} and still is at the end of the data ({_pct(ep.peak)} at "
                    "its extreme); the p'-chart confirmed the rise on some of those days but "
                    "not on the last one. Trigger a review and watch the next days.",
                    ev,
                )
            )
        elif ep.level == "review":
            found.append(
                Finding(
                    PHASE,
                    "escalation_breach_episode",
                    "warning",
                    f"The {w}-day escalation rate went above the upper control limit from "
                    f"{_day(ep.start)} to {_day(ep.end)} ({ep.days} days, {_pct(ep.peak)} "
                    "at its extreme; confirmed by the p'-chart), then returned inside.",
                    ev,
                )
            )
        else:
            unconfirmed.append(ev)
    if unconfirmed:
        found.append(
            Finding(
                PHASE,
                "escalation_breach_unconfirmed_episodes",
                "info",
                f"The {w}-day escalation rate rose above its band {len(unconfirmed)} time(s) "
                "without the p'-chart confirming it; excursions like these happen by chance "
                f"(the band is {ch.sigma:g} standard deviations wide).",
                {"episodes": unconfirmed},
            )
        )
    if dips:
        found.append(
            Finding(
                PHASE,
                "escalation_below_band",
                "info",
                f"The {w}-day escalation rate fell below its band {len(dips)} time(s) (first on "
                f"{_day(dips[0]['start'])}). Fewer escalations harm no one by themselves; "
                "whether the agent is right when it does not escalate is what calibration and "
                "the acceptance rate show.",
                {"episodes": dips},
            )
        )
    if len(ch.rule_violations):
        v = ch.rule_violations
        found.append(
            Finding(
                PHASE,
                "run_rule_signals",
                "info",
                f"Western Electric run rules flagged {len(v)} daily point(s) "
                f"(first on {_day(v['day'].iloc[0])}).",
                {
                    "by_rule": {
                        str(k): int(n) for k, n in v["rule"].value_counts().sort_index().items()
                    }
                },
            )
        )
    return found


def _findings(r: DriftReport) -> list[Finding]:
    found: list[Finding] = []
    key = set(r.key_features)
    for row in r.features.itertuples(index=False):
        ev = {
            "feature": row.feature,
            "kind": row.kind,
            "psi": row.psi,
            "kl": row.kl,
            "band": row.band,
            "n_reference": row.n_reference,
            "n_current": row.n_current,
            "unseen_share": row.unseen_share,
            "psi_no_drift": row.psi_no_drift,
        }
        if row.band == "no data" and (row.n_reference > 0 and row.n_current > 0):
            ref_m, cur_m = row.reference_missing_share, row.current_missing_share
            found.append(
                Finding(
                    PHASE,
                    "feature_no_data",
                    "warning",
                    f"{'Key feature' if row.feature in key else 'Feature'} {row.feature} has no "
                    f"data: missing on {_pct(ref_m)} of the reference and {_pct(cur_m)} of the "
                    f"current window's decisions (more than {MOSTLY_MISSING:.0%} in a window), so "
                    "its drift cannot be judged; it is not stable, it is unmeasured. Find out why "
                    "the field stopped (or never started) being logged.",
                    ev | {"reference_missing_share": ref_m, "current_missing_share": cur_m},
                )
            )
        elif row.band == "significant":
            if row.feature in key:
                found.append(
                    Finding(
                        PHASE,
                        "key_feature_drift",
                        "blocking",
                        f"Key feature {row.feature} drifted significantly between the reference "
                        f"and current windows (PSI {row.psi:.2f}, above 0.25).",
                        ev,
                    )
                )
            else:
                found.append(
                    Finding(
                        PHASE,
                        "feature_drift",
                        "warning",
                        f"Feature {row.feature} drifted significantly (PSI {row.psi:.2f}); "
                        "it is not a key feature, but check why.",
                        ev,
                    )
                )
        elif row.band == "moderate":
            found.append(
                Finding(
                    PHASE,
                    "feature_drift_moderate",
                    "info",
                    f"Feature {row.feature} shows moderate drift (PSI {row.psi:.2f}).",
                    ev,
                )
            )
        elif row.band == TOO_FEW_LABEL:
            found.append(
                Finding(
                    PHASE,
                    "feature_too_few_decisions",
                    "warning" if row.feature in key else "info",
                    f"{'Key feature' if row.feature in key else 'Feature'} {row.feature}: too "
                    f"few decisions to judge drift (PSI {row.psi:.2f} on {row.n_current:,} "
                    f"current and {row.n_reference:,} reference decisions; without any drift, "
                    f"chance alone exceeds {row.psi_no_drift:.2f} in "
                    f"{100 * (1 - r.psi_no_drift_quantile):g}% of samples).",
                    ev,
                )
            )
        elif row.band == "no data":
            found.append(
                Finding(
                    PHASE,
                    "feature_no_data",
                    "warning",
                    f"Feature {row.feature}: a window has no decisions, so drift was not measured.",
                    ev,
                )
            )

    found.extend(_chart_findings(r.chart, r.chart_problem))

    cur = r.calibration.get("current")
    ref = r.calibration.get("reference")
    if cur is not None and cur.n_used > 0:
        rise = cur.ece - ref.ece if ref is not None and ref.n_used > 0 else math.nan
        material = cur.ece >= ECE_MATERIAL or (math.isfinite(rise) and rise >= ECE_MATERIAL_RISE)
        beyond_noise = cur.ece > cur.ece_if_calibrated_95
        if material and beyond_noise:
            found.append(
                Finding(
                    PHASE,
                    "calibration_gap",
                    "warning",
                    f"Confidence is a weaker guide to correctness in the current window: "
                    f"ECE {cur.ece:.3f} (reference window "
                    f"{'no data' if ref is None or ref.n_used == 0 else f'{ref.ece:.3f}'}), "
                    f"more than a well-calibrated agent would show by chance "
                    f"({cur.ece_if_calibrated_95:.3f}).",
                    {
                        "current": cur.to_dict(include_table=False),
                        "reference": None if ref is None else ref.to_dict(include_table=False),
                    },
                )
            )
    elif cur is not None:
        found.append(
            Finding(
                PHASE,
                "calibration_no_outcomes",
                "info",
                f"Calibration was not measured in the current window: {cur.unusable_reason()}.",
                {"n_excluded": cur.n_excluded},
            )
        )

    for s in r.spirals:
        found.append(
            Finding(
                PHASE,
                "contamination_spiral",
                "warning",
                f"Escalations rose with each prompt version from {s['versions'][0]} to "
                f"{s['versions'][-1]} ({_pct(s['escalation_rates'][0])} to "
                f"{_pct(s['escalation_rates'][-1])}): a possible feedback-contamination spiral.",
                s,
            )
        )
    return found


def _decisions_table(data: Any) -> ir.Table:
    table = getattr(data, "decisions", data)
    if isinstance(table, pd.DataFrame):
        return ibis.memtable(table)
    if not isinstance(table, ir.Table):
        raise TypeError(
            "drift_report needs the decision log as an Ibis table (or an object with a "
            f"'.decisions' table), got {type(table).__name__}"
        )
    return table


def escalation_threshold(pilot: Pilot) -> float | None:
    """The escalation-rate threshold the rate must stay below (``<`` or ``<=``), if the
    pilot file sets one; a confirmed rise to it or beyond always matters."""
    k = pilot.threshold("escalation_rate")
    if k is None or k.comparator not in ("<", "<="):
        return None
    return float(k.value)


def drift_report(pilot: Pilot, data: Any) -> DriftReport:
    """Run phase 3 on a pilot's decision log.

    Parameters
    ----------
    pilot:
        The loaded pilot file (windows, features, bins, epsilon, sigma...).
    data:
        The decision log as an Ibis table (docs/data-contracts.md columns plus the
        feature columns), or any object with a ``decisions`` attribute holding
        one (the loaded pilot data). A pandas DataFrame is accepted for small
        experiments.

    What it computes: feature drift (reference vs current window), the daily
    escalation control chart over the pilot window with the reference window as
    baseline (run rules on), calibration per window, per-prompt-version rates
    and contamination spirals, and the findings:

    - blocking ``key_feature_drift``: a key feature (``drift.key_features``) with
      significant drift (PSI > 0.25);
    - blocking ``escalation_control_breach``: the moving-average chart is
      outside its limits on the last day with data and the count-based p-chart
      agrees (same side, same day). Requiring both keeps chance alarms rare:
      limits set on a few weeks of overlapping 7-day averages alone leave the
      moving-average chart outside them on a sizeable share of stable days
      (see :mod:`pilot_lib.analysis.spc`);
    - warnings: significant drift of another feature; a breach episode that
      ended and that the p-chart confirmed; an end-of-data breach on one chart
      only; a calibration gap (current ECE >= 0.05 or up 0.03 on the
      reference, and above what chance gives a calibrated agent 95% of the
      time); a contamination spiral;
    - info: moderate drift, unconfirmed short excursions, run-rule signals.
    """
    decisions = _decisions_table(data)
    missing = [c for c in REPORT_COLUMNS if c not in decisions.columns]
    if missing:
        raise ContractError(
            f"decisions: column(s) {missing} are missing; phase 3 needs {list(REPORT_COLUMNS)} "
            "(see docs/data-contracts.md)"
        )
    settings = pilot.drift
    reference, current = drift_windows(decisions, pilot)
    features, distributions = _feature_drift_details(
        reference,
        current,
        settings.features,
        settings.bins,
        settings.epsilon,
        None,
        "exact",
        settings.psi_no_drift_quantile,
    )
    daily, versions = escalation_tables(decisions, window=pilot.pilot_window)
    try:
        chart: ControlChart | None = control_chart(
            daily,
            baseline=settings.reference_window,
            window=settings.moving_average_days,
            sigma=settings.sigma,
            rules=True,
            confirmation_sigma=settings.confirmation_sigma,
            min_shift_absolute=settings.min_shift_absolute,
            min_shift_relative=settings.min_shift_relative,
            threshold=escalation_threshold(pilot),
        )
    except WorkbookError as exc:
        chart = None
        chart_problem = str(exc)
    else:
        chart_problem = None
    calibration = {
        "reference": expected_calibration_error(reference, bins=settings.calibration_bins),
        "current": expected_calibration_error(current, bins=settings.calibration_bins),
    }
    spirals = detect_contamination_spiral(versions)
    report = DriftReport(
        pilot_name=pilot.name,
        reference_window=settings.reference_window,
        current_window=settings.current_window,
        key_features=list(settings.key_features),
        features=features,
        distributions=distributions,
        daily=daily,
        chart=chart,
        calibration=calibration,
        prompt_versions=versions,
        spirals=spirals,
        chart_problem=chart_problem,
        psi_no_drift_quantile=settings.psi_no_drift_quantile,
    )
    report.findings = _findings(report)
    return report

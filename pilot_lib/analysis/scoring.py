"""Phase 1: score candidate use cases, and weigh building against buying.

Use-case scoring
----------------
:func:`score_use_cases` scores each candidate workflow 1-5 on the playbook's
four criteria and decides whether it qualifies (every criterion at or above the
minimum *at the same time*):

``impact``
    The candidate's ``impact_score``, **capped at 2 when ``baseline_value`` is
    null**: a metric nobody measures today cannot show an improvement, so the
    impact is not provable however large it looks.
``data``
    The candidate's ``data_score`` (data availability and quality).
``repetitiveness``
    Computed, not an input. Expected decisions in the pilot window
    (``weekly_volume x pilot_weeks``) against the decisions needed to estimate
    the completion rate within ``+/- margin`` at ``confidence``
    (:func:`pilot_lib.analysis.stats.required_sample_size`, worst case p = 0.5). The
    ratio expected / needed maps to a score with the cut points in
    :data:`REPETITIVENESS_CUTS`: below 0.5 -> 1, below 1 -> 2, below 2 -> 3,
    below 5 -> 4, otherwise 5. A ratio of exactly 1 (just enough decisions)
    scores 3, the default minimum.
``readiness``
    The candidate's ``readiness_score``, **capped at 2 when ``sme_committed`` or
    ``owner_has_authority`` is false**: without a dedicated subject-matter expert
    and an owner who can change the process, a pilot cannot be tuned or adopted.

The weighted total is the weighted mean of the four scores (so it stays on the
1-5 scale). The novelty trap is flagged when ``demo_appeal >= 4`` and the
(capped) impact is ``<= 2``: it looks good in a demo but cannot show value.

Build vs buy
------------
:func:`build_vs_buy` scores each option 0-100: the weighted mean of its 0-10
dimension scores, times 10. Its sensitivity table says, per dimension, how far
that weight can move (others held fixed) before another option takes the top
place. Scores are linear in each weight once the weights' sum is cleared, so
the flip points are solved exactly, not searched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from pilot_lib.analysis.stats import required_sample_size
from pilot_lib.config import BUILD_DIMENSIONS, BuildOption, Pilot
from pilot_lib.errors import ContractError, WorkbookError
from pilot_lib.results import to_jsonable

__all__ = [
    "CANDIDATE_COLUMNS",
    "CRITERIA",
    "NOVELTY_MIN_DEMO_APPEAL",
    "READINESS_CAP",
    "REPETITIVENESS_CUTS",
    "UNMEASURED_IMPACT_CAP",
    "BuildVsBuyResult",
    "CandidatesError",
    "ScoringSettingsError",
    "build_vs_buy",
    "repetitiveness_score",
    "score_use_cases",
    "scoring_result",
    "scoring_settings",
    "what_if",
]

#: The four criteria, in the playbook's order.
CRITERIA = ("impact", "data", "repetitiveness", "readiness")

#: Columns of the candidates contract (docs/data-contracts.md), spelled out so that
#: scoring does not load the contracts (pandera: 1.2 s of CPU in every phase-1 kernel);
#: tests/test_scoring.py checks they equal ``contract_columns("candidates")``.
CANDIDATE_COLUMNS = (
    "name",
    "impact_metric",
    "baseline_value",
    "impact_score",
    "data_score",
    "readiness_score",
    "weekly_volume",
    "sme_committed",
    "owner_has_authority",
    "demo_appeal",
    "notes",
)

#: Columns that may be null (everything else must be set).
_NULLABLE = ("baseline_value", "notes")

#: Input score columns, each on the 1-5 scale.
_SCORE_COLUMNS = ("impact_score", "data_score", "readiness_score", "demo_appeal")

#: ``(upper bound, score)``: a ratio expected / needed below the bound gets the
#: score; a ratio at or above the last bound scores 5.
REPETITIVENESS_CUTS: tuple[tuple[float, int], ...] = ((0.5, 1), (1.0, 2), (2.0, 3), (5.0, 4))

#: Impact score ceiling when the impact metric has no measured baseline.
UNMEASURED_IMPACT_CAP = 2

#: Readiness score ceiling without a committed SME or an owner with authority.
READINESS_CAP = 2

#: Novelty trap: demo appeal at least this high ...
NOVELTY_MIN_DEMO_APPEAL = 4
#: ... with a (capped) impact score at most this high.
NOVELTY_MAX_IMPACT = 2

_ROUND = 9  # totals are rounded to 9 decimals before ranking, so float noise never breaks a tie


class CandidatesError(ContractError, ValueError):
    """The candidates data set breaks its contract (column missing, value out of range)."""


class ScoringSettingsError(WorkbookError, ValueError):
    """A scoring setting is wrong (weights, minimum, pilot length, margin, options)."""


# ---------------------------------------------------------------------------
# Use-case scoring
# ---------------------------------------------------------------------------


def repetitiveness_score(expected: float, needed: float) -> int:
    """Score 1-5 from expected decisions in the pilot window against decisions needed.

    ``expected / needed`` below 0.5 -> 1, below 1 -> 2, below 2 -> 3, below 5 -> 4,
    otherwise 5 (:data:`REPETITIVENESS_CUTS`). ``needed`` must be positive.
    """
    if not needed > 0:
        raise ValueError(f"needed decisions must be positive, got {needed}")
    ratio = expected / needed
    for bound, score in REPETITIVENESS_CUTS:
        if ratio < bound:
            return score
    return 5


def _numeric_weights(
    weights: Mapping[str, Any], names: Sequence[str], what: str
) -> dict[str, float]:
    """Each of ``names`` as a finite float >= 0, not all zero; ``what`` names them in errors."""
    out = {}
    for name in names:
        try:
            w = float(weights[name])
        except (TypeError, ValueError):
            raise ScoringSettingsError(
                f"weight for {name!r} must be a number, got {weights[name]!r}"
            ) from None
        if not math.isfinite(w) or w < 0:
            raise ScoringSettingsError(f"weight for {name!r} must be a finite number >= 0, got {w}")
        out[name] = w
    if sum(out.values()) <= 0:
        raise ScoringSettingsError(f"{what} weights are all 0; give at least one positive weight")
    return out


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict.fromkeys(CRITERIA, 1.0)
    unknown = sorted(set(weights) - set(CRITERIA))
    missing = [c for c in CRITERIA if c not in weights]
    if unknown or missing:
        raise ScoringSettingsError(
            f"criterion weights must name exactly {list(CRITERIA)}; "
            f"unknown: {unknown}, missing: {missing}. Give a weight for each criterion "
            "(0 leaves one out of the total), or no weights for equal weighting."
        )
    return _numeric_weights(weights, CRITERIA, "criterion")


def _to_pandas(candidates: Any) -> pd.DataFrame:
    if isinstance(candidates, pd.DataFrame):
        return candidates.copy()
    if hasattr(candidates, "execute") and hasattr(candidates, "columns"):
        missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
        _raise_missing(missing)
        # The candidates table is a handful of rows: executing it is fine.
        return candidates.select(*CANDIDATE_COLUMNS).execute()
    raise TypeError(
        f"candidates must be an Ibis table or a pandas DataFrame, got {type(candidates).__name__}"
    )


def _raise_missing(missing: list[str]) -> None:
    if missing:
        raise CandidatesError(
            f"candidates data set is missing column(s) {missing}; add them "
            "(see the candidates contract in docs/data-contracts.md)"
        )


def _rows(df: pd.DataFrame, mask: pd.Series, column: str) -> str:
    shown = [f"{df['name'].iloc[i]!r} ({df[column].iloc[i]!r})" for i in np.flatnonzero(mask)]
    more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
    return ", ".join(shown[:5]) + more


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _as_bool(df: pd.DataFrame, column: str) -> pd.Series:
    def convert(v: Any) -> bool | None:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer, float, np.floating)) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        return None

    converted = df[column].map(convert)
    bad = converted.isna()
    if bad.any():
        raise CandidatesError(
            f"candidates column {column!r} must be true/false; bad value(s) for "
            f"{_rows(df, bad, column)}"
        )
    return converted.astype(bool)


def _validate(df: pd.DataFrame) -> pd.DataFrame:
    _raise_missing([c for c in CANDIDATE_COLUMNS if c not in df.columns])
    df = df.reset_index(drop=True)
    for column in CANDIDATE_COLUMNS:
        if column in _NULLABLE:
            continue
        nulls = df[column].isna()
        if nulls.any():
            who = (
                f"{int(nulls.sum())} row(s)"
                if column == "name"
                else ", ".join(repr(n) for n in df.loc[nulls, "name"])
            )
            raise CandidatesError(
                f"candidates column {column!r} must not be null; null for {who}. "
                "Fill it in the candidates file."
            )
    df["name"] = df["name"].astype(str)
    dupes = sorted(set(df.loc[df["name"].duplicated(), "name"]))
    if dupes:
        raise CandidatesError(f"candidate names must be unique; repeated: {dupes}")
    for column in (*_SCORE_COLUMNS, "weekly_volume", "baseline_value"):
        values = pd.to_numeric(df[column], errors="coerce")
        not_numbers = values.isna() & df[column].notna()
        if not_numbers.any():
            raise CandidatesError(
                f"candidates column {column!r} must hold numbers; got "
                f"{_rows(df, not_numbers, column)}"
            )
        df[column] = values.astype(float)
    for column in _SCORE_COLUMNS:
        out = ~df[column].between(1, 5) | (df[column] != df[column].round())
        if out.any():
            raise CandidatesError(
                f"candidates column {column!r} is a whole-number score from 1 to 5; bad value "
                f"for {_rows(df, out, column)}. Rescore those rows on the 1-5 scale."
            )
        df[column] = df[column].astype(int)
    negative = ~(df["weekly_volume"] >= 0) | ~np.isfinite(df["weekly_volume"])
    if negative.any():
        raise CandidatesError(
            "candidates column 'weekly_volume' is decisions per week and must be a finite "
            f"number >= 0; got {_rows(df, negative, 'weekly_volume')}"
        )
    for column in ("sme_committed", "owner_has_authority"):
        df[column] = _as_bool(df, column)
    return df


def _fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.2f}".rstrip("0").rstrip(".")


def _why(
    row: pd.Series, minimum: float, pilot_weeks: float, margin: float, confidence: float
) -> str:
    parts = []
    scores = ", ".join(f"{c} {_fmt(row[c])}" for c in CRITERIA)
    if row["qualifies"]:
        parts.append(
            f"Qualifies: all four criteria meet the minimum of {_fmt(minimum)} ({scores})."
        )
    else:
        low = ", ".join(f"{c} ({_fmt(row[c])})" for c in CRITERIA if row[c] < minimum)
        parts.append(f"Does not qualify: below the minimum of {_fmt(minimum)} on {low}.")
    if row["impact_capped"]:
        parts.append(
            f"Impact capped at {UNMEASURED_IMPACT_CAP}: {row['impact_metric']} has no measured "
            "baseline, so an improvement cannot be shown."
        )
    if row["readiness_capped"]:
        missing = []
        if not row["sme_committed"]:
            missing.append("no subject-matter expert is committed")
        if not row["owner_has_authority"]:
            missing.append("the owner cannot change the process")
        parts.append(f"Readiness capped at {READINESS_CAP}: {' and '.join(missing)}.")
    ratio = row["decisions_ratio"]
    parts.append(
        f"About {row['expected_decisions']:,.0f} decisions expected in {_fmt(pilot_weeks)} weeks "
        f"against {row['needed_decisions']:,} needed to measure completion within "
        f"+/-{_fmt(margin * 100)} points at {_fmt(confidence * 100)}% confidence ({ratio:.1f}x)."
    )
    if row["novelty_trap"]:
        parts.append(
            f"Novelty trap: demo appeal {_fmt(row['demo_appeal'])} but impact only "
            f"{_fmt(row['impact'])}."
        )
    return " ".join(parts)


_OUTPUT_COLUMNS = (
    "rank",
    "name",
    "impact_metric",
    *CRITERIA,
    "weighted_total",
    "qualifies",
    "fails_on",
    "novelty_trap",
    "demo_appeal",
    "expected_decisions",
    "needed_decisions",
    "decisions_ratio",
    "impact_capped",
    "readiness_capped",
    "why",
)


def score_use_cases(
    candidates: Any,
    weights: Mapping[str, float] | None = None,
    minimum: float = 3,
    pilot_weeks: float = 12.0,
    margin: float = 0.05,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Score candidate use cases on the four criteria and rank them.

    Parameters
    ----------
    candidates:
        Ibis table or pandas DataFrame with the candidates contract columns
        (:data:`CANDIDATE_COLUMNS`). It is small and is executed to pandas.
    weights:
        Weight per criterion (:data:`CRITERIA`, all four, each >= 0, not all 0);
        ``None`` weighs them equally. Only the ratios matter.
    minimum:
        Score every criterion must reach for the candidate to qualify (1-5).
    pilot_weeks:
        Length of the pilot window in weeks (> 0).
    margin:
        Half-width, as a fraction, within which the pilot must estimate the
        completion rate (0.05 = +/- 5 points).
    confidence:
        Confidence of that estimate (0.95).

    Returns
    -------
    DataFrame
        One row per candidate, sorted by ``rank``: ``rank`` (1 = best; qualifying
        candidates first by weighted total, then the others; ties by name),
        ``name``, ``impact_metric``, the four criterion scores (1-5, after caps),
        ``weighted_total`` (1-5), ``qualifies``, ``fails_on`` (criteria below the
        minimum, comma separated, ``""`` if none), ``novelty_trap``,
        ``demo_appeal``, ``expected_decisions`` (decisions in the window),
        ``needed_decisions``, ``decisions_ratio`` (expected / needed),
        ``impact_capped``, ``readiness_capped`` and ``why`` (plain words). An
        empty candidates table gives an empty frame with these columns. The
        settings used are in ``result.attrs["scoring_settings"]``.

    Raises
    ------
    CandidatesError
        A column is missing or null where it may not be, a name repeats, a score
        is outside 1-5, or ``weekly_volume`` is negative.
    ScoringSettingsError
        Bad weights, minimum, pilot length, margin or confidence.
    """
    w = _check_weights(weights)
    if not 1 <= minimum <= 5:
        raise ScoringSettingsError(f"minimum must be a score from 1 to 5, got {minimum}")
    if not (isinstance(pilot_weeks, Real) and math.isfinite(pilot_weeks) and pilot_weeks > 0):
        raise ScoringSettingsError(f"pilot_weeks must be a positive number, got {pilot_weeks}")
    if not 0 < margin < 1:
        raise ScoringSettingsError(
            f"margin must be a fraction between 0 and 1 (0.05 = +/- 5 points), got {margin}"
        )
    if not 0 < confidence < 1:
        raise ScoringSettingsError(f"confidence must be between 0 and 1, got {confidence}")
    settings = {
        "weights": w,
        "minimum": minimum,
        "pilot_weeks": float(pilot_weeks),
        "margin": margin,
        "confidence": confidence,
    }

    df = _validate(_to_pandas(candidates))
    needed = required_sample_size(margin, confidence=confidence)
    if df.empty:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in _OUTPUT_COLUMNS})
        out.attrs["scoring_settings"] = settings
        return out

    df["impact_capped"] = df["baseline_value"].isna() & (df["impact_score"] > UNMEASURED_IMPACT_CAP)
    df["impact"] = np.where(
        df["baseline_value"].isna(),
        np.minimum(df["impact_score"], UNMEASURED_IMPACT_CAP),
        df["impact_score"],
    )
    df["data"] = df["data_score"]
    df["expected_decisions"] = df["weekly_volume"] * float(pilot_weeks)
    df["needed_decisions"] = needed
    df["decisions_ratio"] = df["expected_decisions"] / needed
    df["repetitiveness"] = [repetitiveness_score(e, needed) for e in df["expected_decisions"]]
    not_ready = ~(df["sme_committed"] & df["owner_has_authority"])
    df["readiness_capped"] = not_ready & (df["readiness_score"] > READINESS_CAP)
    df["readiness"] = np.where(
        not_ready, np.minimum(df["readiness_score"], READINESS_CAP), df["readiness_score"]
    )

    total_weight = sum(w.values())
    df["weighted_total"] = sum(w[c] * df[c] for c in CRITERIA) / total_weight
    df["weighted_total"] = df["weighted_total"].round(_ROUND)
    below = pd.DataFrame({c: df[c] < minimum for c in CRITERIA})
    df["qualifies"] = ~below.any(axis=1)
    df["fails_on"] = [", ".join(c for c in CRITERIA if row[c]) for _, row in below.iterrows()]
    df["novelty_trap"] = (df["demo_appeal"] >= NOVELTY_MIN_DEMO_APPEAL) & (
        df["impact"] <= NOVELTY_MAX_IMPACT
    )

    df = df.sort_values(
        ["qualifies", "weighted_total", "name"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    df["why"] = [
        _why(row, minimum, float(pilot_weeks), margin, confidence) for _, row in df.iterrows()
    ]

    out = df[list(_OUTPUT_COLUMNS)].copy()
    for c in ("qualifies", "novelty_trap", "impact_capped", "readiness_capped"):
        out[c] = out[c].astype(bool)
    for c in (*CRITERIA, "demo_appeal", "rank", "needed_decisions"):
        out[c] = out[c].astype(int)
    out.attrs["scoring_settings"] = settings
    return out


def scoring_settings(pilot: Pilot) -> dict[str, Any]:
    """Keyword arguments for :func:`score_use_cases` from a pilot file.

    ``minimum`` and ``margin`` come from ``use_case``, ``weights`` from
    ``use_case.criterion_weights`` (equal when absent), and ``pilot_weeks`` is the
    length of ``pilot_window`` in days (inclusive) divided by 7.
    """
    days = (pilot.pilot_window.end - pilot.pilot_window.start).days + 1
    return {
        "weights": pilot.use_case.criterion_weights,
        "minimum": pilot.use_case.minimum_score,
        "pilot_weeks": days / 7,
        "margin": pilot.use_case.completion_margin,
        "confidence": 0.95,
    }


# ---------------------------------------------------------------------------
# Build vs buy
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildVsBuyResult:
    """Scores and weight sensitivity of the build-vs-buy options.

    Attributes
    ----------
    scores:
        One row per option, best first: ``option``, ``summary``, ``score``
        (0-100), ``rank`` (ties broken by name) and ``<dimension>_points``, the
        points each dimension contributes (they add up to ``score``).
    winner:
        Name of the top option.
    sensitivity:
        One row per dimension: ``dimension``, ``weight``, ``share`` (weight /
        sum of weights), ``decrease_to_flip`` / ``increase_to_flip`` (how far this
        weight can move down / up, in the weights' units, with the others fixed,
        before another option reaches the winner's score; ``inf`` when no move
        within ``weight >= 0`` changes the winner), ``decrease_to_flip_pct`` /
        ``increase_to_flip_pct`` (the same as a % of the current weight; NaN when
        the weight is 0), ``flip_weight_down`` / ``flip_weight_up`` (the weight at
        which the tie happens; NaN when it never does) and ``new_top_down`` /
        ``new_top_up`` (the option that takes over past that point, or None).
    weights:
        The weights used.
    """

    scores: pd.DataFrame
    winner: str
    sensitivity: pd.DataFrame
    weights: dict[str, float]

    def to_result(self) -> dict[str, Any]:
        """JSON-able dict for the phase result (infinities become None)."""
        return to_jsonable(
            {
                "dimensions": list(BUILD_DIMENSIONS),
                "weights": self.weights,
                "winner": self.winner,
                "scores": self.scores,
                "sensitivity": self.sensitivity,
            }
        )


def _check_options(options: Sequence[BuildOption | Mapping[str, Any]]) -> list[BuildOption]:
    if isinstance(options, (str, bytes, Mapping)) or not isinstance(options, Sequence):
        raise ScoringSettingsError("options must be a list of build-vs-buy options")
    if not options:
        raise ScoringSettingsError("give at least one build-vs-buy option")
    out = []
    for i, opt in enumerate(options):
        if not isinstance(opt, BuildOption):
            try:
                opt = BuildOption.model_validate(dict(opt))
            except (ValidationError, TypeError, ValueError) as exc:
                raise ScoringSettingsError(
                    f"build-vs-buy option {i + 1} is not valid: give a name and scores 0-10 "
                    f"for {list(BUILD_DIMENSIONS)} ({exc})"
                ) from None
        if set(opt.scores) != set(BUILD_DIMENSIONS):
            missing = [d for d in BUILD_DIMENSIONS if d not in opt.scores]
            unknown = sorted(set(opt.scores) - set(BUILD_DIMENSIONS))
            raise ScoringSettingsError(
                f"option {opt.name!r} must score exactly the five dimensions "
                f"{list(BUILD_DIMENSIONS)}; missing: {missing}, unknown: {unknown}"
            )
        out.append(opt)
    names = [o.name for o in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ScoringSettingsError(f"build-vs-buy option names must be unique; repeated: {dupes}")
    return out


def _check_build_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise ScoringSettingsError("weights must be a mapping of dimension -> weight")
    missing = [d for d in BUILD_DIMENSIONS if d not in weights]
    unknown = sorted(set(weights) - set(BUILD_DIMENSIONS))
    if missing or unknown:
        raise ScoringSettingsError(
            f"build-vs-buy weights must name exactly {list(BUILD_DIMENSIONS)}; "
            f"missing: {missing}, unknown: {unknown}"
        )
    return _numeric_weights(weights, BUILD_DIMENSIONS, "build-vs-buy")


def _sensitivity(
    names: list[str], matrix: np.ndarray, w: dict[str, float], winner_index: int
) -> pd.DataFrame:
    """Exact flip points of the winner, one weight at a time.

    With weights ``w`` and scores ``s`` the score of option ``i`` is
    ``S_i / W`` (``S_i = sum_k w_k s_ik``, ``W = sum_k w_k``). Moving weight ``d``
    by ``delta`` gives ``(S_i + delta s_id) / (W + delta)``; the common positive
    denominator does not change the order, so option ``j`` reaches the winner
    ``v`` where ``(S_j - S_v) + delta (s_jd - s_vd) = 0``.
    """
    weights = np.array([w[d] for d in BUILD_DIMENSIONS])
    totals = matrix @ weights  # S_i
    v = winner_index
    rows = []
    for k, d in enumerate(BUILD_DIMENSIONS):
        best_up, best_down = math.inf, math.inf
        top_up: str | None = None
        top_down: str | None = None
        for j in range(len(names)):
            if j == v:
                continue
            gap = totals[v] - totals[j]  # >= 0 (v is the winner)
            slope = matrix[j, k] - matrix[v, k]
            if slope > 0:  # raising weight d helps j
                delta = gap / slope
                if delta < best_up or (delta == best_up and top_up and names[j] < top_up):
                    best_up, top_up = delta, names[j]
            elif slope < 0:  # lowering weight d helps j
                delta = gap / -slope
                # j must strictly overtake while the weight is still > 0; a tie
                # reached only at weight 0 never changes the winner.
                if delta < weights[k] and (
                    delta < best_down or (delta == best_down and top_down and names[j] < top_down)
                ):
                    best_down, top_down = delta, names[j]
        weight = weights[k]
        rows.append(
            {
                "dimension": d,
                "weight": weight,
                "share": weight / weights.sum(),
                "decrease_to_flip": best_down,
                "decrease_to_flip_pct": (100 * best_down / weight) if weight > 0 else math.nan,
                "increase_to_flip": best_up,
                "increase_to_flip_pct": (100 * best_up / weight) if weight > 0 else math.nan,
                "flip_weight_down": weight - best_down if top_down else math.nan,
                "flip_weight_up": weight + best_up if top_up else math.nan,
                "new_top_down": top_down,
                "new_top_up": top_up,
            }
        )
    frame = pd.DataFrame(rows)
    for c in ("new_top_down", "new_top_up"):  # keep None (not NaN) for "no option takes over"
        frame[c] = pd.Series([r[c] for r in rows], dtype=object)
    return frame


def build_vs_buy(
    options: Sequence[BuildOption | Mapping[str, Any]], weights: Mapping[str, float]
) -> BuildVsBuyResult:
    """Score build-vs-buy options 0-100 and how robust the winner is to each weight.

    Parameters
    ----------
    options:
        :class:`pilot_lib.config.BuildOption` objects, or dicts with ``name``,
        optional ``summary`` and ``scores`` (0-10, 10 = best) over the five
        dimensions :data:`pilot_lib.config.BUILD_DIMENSIONS`.
    weights:
        Weight per dimension (all five, >= 0, not all 0). They need not sum to 1:
        the score is ``10 x sum(w_d s_d) / sum(w_d)``.

    Returns
    -------
    BuildVsBuyResult
        ``scores``, ``winner``, ``sensitivity`` (see the class), ``to_result()``.
        Equal scores are ranked by name, so the winner is stable.

    Raises
    ------
    ScoringSettingsError
        Missing or unknown dimensions, negative or all-zero weights, scores
        outside 0-10, repeated option names.
    """
    opts = _check_options(options)
    w = _check_build_weights(weights)
    names = [o.name for o in opts]
    matrix = np.array([[float(o.scores[d]) for d in BUILD_DIMENSIONS] for o in opts])
    weight_vec = np.array([w[d] for d in BUILD_DIMENSIONS])
    total_weight = weight_vec.sum()
    points = matrix * weight_vec / total_weight * 10  # per-dimension contributions, 0-100 scale
    scores = pd.DataFrame(
        {
            "option": names,
            "summary": [o.summary for o in opts],
            "score": points.sum(axis=1),
        }
    )
    for k, d in enumerate(BUILD_DIMENSIONS):
        scores[f"{d}_points"] = points[:, k]
    scores["_key"] = scores["score"].round(_ROUND)
    scores = scores.sort_values(["_key", "option"], ascending=[False, True], kind="stable")
    scores = scores.drop(columns="_key").reset_index(drop=True)
    scores.insert(3, "rank", np.arange(1, len(scores) + 1))
    winner = str(scores["option"].iloc[0])
    sensitivity = _sensitivity(names, matrix, w, names.index(winner))
    return BuildVsBuyResult(scores=scores, winner=winner, sensitivity=sensitivity, weights=w)


def what_if(
    options: Sequence[BuildOption | Mapping[str, Any]],
    weights: Mapping[str, float],
    **changes: float,
) -> BuildVsBuyResult:
    """:func:`build_vs_buy` with some weights replaced, for sliders.

    ``what_if(opts, weights, total_cost=0.4)`` scores with ``total_cost`` set to
    0.4 and the other weights as given. Unknown dimension names raise
    :class:`ScoringSettingsError`.
    """
    unknown = sorted(set(changes) - set(BUILD_DIMENSIONS))
    if unknown:
        raise ScoringSettingsError(
            f"unknown dimension(s) {unknown}; choose from {list(BUILD_DIMENSIONS)}"
        )
    return build_vs_buy(options, {**dict(weights), **changes})


# ---------------------------------------------------------------------------
# Phase result
# ---------------------------------------------------------------------------


def scoring_result(
    scored: pd.DataFrame,
    build: BuildVsBuyResult | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-able phase-1 result from :func:`score_use_cases` (and :func:`build_vs_buy`).

    Holds the settings (weights, minimum, pilot weeks, margin, confidence), every
    candidate row, the top pick (the best qualifying candidate, or ``None`` when
    none qualifies), the qualifying and novelty-trap names, and the build-vs-buy
    result (``None`` when the pilot has none). ``settings`` defaults to the ones
    :func:`score_use_cases` stored in ``scored.attrs``.
    """
    if settings is None:
        settings = scored.attrs.get("scoring_settings", {})
    qualifying = (
        scored.loc[scored["qualifies"].astype(bool), "name"].tolist() if len(scored) else []
    )
    traps = scored.loc[scored["novelty_trap"].astype(bool), "name"].tolist() if len(scored) else []
    return to_jsonable(
        {
            "settings": settings,
            "criteria": list(CRITERIA),
            "candidates": scored,
            "candidate_count": len(scored),
            "top_pick": qualifying[0] if qualifying else None,
            "qualifying": qualifying,
            "novelty_traps": traps,
            "build_vs_buy": build.to_result() if build is not None else None,
        }
    )


def team_findings(pilot: Pilot) -> list[Any]:
    """Phase 1's check of the cross-functional team the playbook requires.

    One ``warning`` finding (code ``team_role_missing``) naming every role of
    :data:`pilot_lib.config.REQUIRED_ROLES` that no member of the pilot file's
    ``team`` holds, with the fix (add a member with that ``role``); a role
    written close to a required one (``it_ops``) is named as a likely typo.
    No finding when every required role has someone.
    """
    import difflib

    from pilot_lib.analysis.findings import Finding
    from pilot_lib.config import REQUIRED_ROLES

    given = [m.role for m in pilot.team]
    missing = [r for r in REQUIRED_ROLES if r not in given]
    if not missing:
        return []
    labels = [f"{REQUIRED_ROLES[r]} (role: {r})" for r in missing]
    others = [g for g in given if g not in REQUIRED_ROLES]
    hints = []
    for r in missing:
        close = difflib.get_close_matches(r, others, n=1, cutoff=0.5)
        if close:
            hints.append(f"'{close[0]}' may be meant as '{r}'")
    who = "no team" if not given else f"the team ({len(given)} named)"
    message = (
        f"The pilot file's team lacks {'a required role' if len(missing) == 1 else 'required roles'}"
        f": {'; '.join(labels)}. The playbook asks for a cross-functional team from day one and "
        f"the go/no-go sign-off needs each role; {who} in the pilot file, so add a member per "
        "missing role under team: (name, role, title)."
        + (f" Possible typo: {'; '.join(hints)}." if hints else "")
    )
    return [
        Finding(
            "use_case_scoring",
            "team_role_missing",
            "warning",
            message,
            {"missing_roles": missing, "roles_given": given},
        )
    ]

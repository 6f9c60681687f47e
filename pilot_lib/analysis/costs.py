"""Phase 2 side analysis: cost attribution, expensive prompt patterns and budgets.

The playbook's FinOps advice: track cost per agent, per workflow and per business
unit at token level, set budgets per agent, and degrade (switch to a cheaper model)
rather than silently exceed a budget. This module gives, over the pilot window:

* **Cost per decision** (US dollars) by ``agent_id``, ``workflow``, ``business_unit``,
  ``model`` and ``prompt_version``, split into input tokens, output tokens, tools and
  human review (``review_minutes / 60 x costs.review_hourly_rate_usd``), each with a
  cluster-robust interval computed exactly as the cost-per-decision KPI's CR1
  interval (:mod:`pilot_lib.analysis.kpis`, ``low_cr1``/``high_cr1``): the overall
  row *is* that KPI, and the four parts add up to it. With fewer than 30 clusters
  the gate judges the KPI with the wild cluster bootstrap-t instead (issue 22);
  the breakdown keeps CR1 for every row, so that the rows compare like for like.
* **Prompt patterns**: per prompt version the cost per decision, the input share of
  tokens and of model cost, ranked by total spend (the decisions-weighted
  contribution); the top few are the expensive patterns to look at first.
* **Budgets** (pilot file ``budgets:``): month-to-date spend (model + tool cost: what
  a budget and a circuit breaker control; human review is staff time) against the
  monthly budget and its pro-rated share, the first day over pace and the first day
  over budget, month-end projected at production volume, and what a cheaper-model
  fallback would have cost.

Splitting a decision's model cost into input and output needs prices: the
decision's model is looked up in the price table (``costs.model_prices`` overlaid on
``traces.prices``) and ``model_cost_usd`` is split in proportion to
``input_tokens x input price`` and ``output_tokens x output price``; without a price
it is split in proportion to the token counts (the result's ``notes`` say how many
decisions were split that way). The recorded ``model_cost_usd`` is never replaced,
so the parts always add up to the KPI.

Everything is an engine aggregate (GROUP BY, one window sum for the circuit breaker):
what comes back is one row per group, per cluster-free group summary and per day.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from pilot_lib.analysis import clustered, stats
from pilot_lib.analysis.findings import Finding
from pilot_lib.results import to_jsonable

if TYPE_CHECKING:
    from pilot_lib.config import Budget, Pilot

__all__ = [
    "DIMENSIONS",
    "SECTION_HEADING",
    "BudgetBurn",
    "CostAttribution",
    "cost_attribution",
    "cost_attribution_section",
]

#: The notebook section (phase 2) that shows this analysis; blocking findings name it.
SECTION_HEADING = "Cost attribution and budgets"

#: The decision-log columns cost is attributed to, in display order.
DIMENSIONS: tuple[str, ...] = ("agent_id", "workflow", "business_unit", "model", "prompt_version")

#: Days in an average calendar month (365.25 / 12): converts a daily pace to a month.
AVERAGE_MONTH_DAYS = 365.25 / 12

#: How many prompt versions the "top contributors" list keeps.
TOP_PATTERNS = 5

_PHASE = "kpi_baselining"

_GROUP_COLUMNS = [
    "dimension",
    "value",
    "decisions",
    "cost_per_decision_usd",
    "low",
    "high",
    "low_iid",
    "high_iid",
    "design_effect",
    "clusters",
    "input_usd",
    "output_usd",
    "tool_usd",
    "review_usd",
    "total_usd",
    "share_of_cost",
]

_PART_COLUMNS = ("input_usd", "output_usd", "tool_usd", "review_usd")


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------
@dataclass
class BudgetBurn:
    """One budget against the pilot's spend (model + tool cost, US dollars).

    ``daily`` has one row per pilot day: ``day``, ``decisions``, ``spend_usd``,
    ``month_to_date_usd`` (calendar month's spend so far), ``pace_usd`` (the budget
    pro-rated to that day of its month: ``monthly_usd x day / days in the month``),
    and, with a fallback, ``fallback_decisions`` and ``month_to_date_with_fallback_usd``.

    ``first_over_pace_day``: the first day whose month-to-date spend exceeded the
    pro-rated budget (an early warning). ``first_breach_day``: the first day whose
    month-to-date spend exceeded the whole monthly budget (where a hard circuit breaker
    would have tripped). Both None when it never happened.
    """

    budget: dict[str, Any]
    label: str
    decisions: int
    spend_usd: float
    spend_per_decision_usd: float
    daily: pd.DataFrame
    first_over_pace_day: dt.date | None
    first_breach_day: dt.date | None
    peak_month_to_date_usd: float
    production_volume_per_month: float
    volume_source: str
    scope_share: float
    projected_month_usd: float
    projected_pilot_pace_month_usd: float
    fallback_model: str | None = None
    fallback_decisions: int = 0
    fallback_spend_per_decision_usd: float = math.nan
    spend_with_fallback_usd: float = math.nan
    fallback_saving_usd: float = 0.0
    projected_month_with_fallback_usd: float = math.nan

    @property
    def monthly_usd(self) -> float:
        return float(self.budget["monthly_usd"])

    @property
    def breached(self) -> bool:
        return self.first_breach_day is not None

    @property
    def projected_over(self) -> bool:
        return self.projected_month_usd > self.monthly_usd

    def summary(self) -> dict[str, Any]:
        """The budget's figures without the daily table."""
        out = {k: v for k, v in to_jsonable(self).items() if k != "daily"}
        out["monthly_usd"] = self.monthly_usd
        out["breached"] = self.breached
        out["projected_over"] = self.projected_over
        return out


@dataclass
class CostAttribution:
    """The section's figures (US dollars); see the module docstring.

    ``by_dimension``: one row per dimension and value (:data:`DIMENSIONS`) plus the
    ``overall`` row, with the cost per decision, its interval (``low``/``high``
    cluster-robust, ``low_iid``/``high_iid`` independent), the parts per decision
    (``input_usd + output_usd + tool_usd + review_usd = cost_per_decision_usd``),
    ``total_usd`` and ``share_of_cost`` (of the overall spend).
    ``prompt_patterns``: one row per prompt version, ranked by total spend.
    """

    overall: dict[str, Any]
    by_dimension: pd.DataFrame
    prompt_patterns: pd.DataFrame
    budgets: list[BudgetBurn]
    prices: dict[str, dict[str, float]]
    notes: list[str]
    cluster_by: str
    confidence: float
    findings: list[Finding] = field(default_factory=list)

    def breakdown(self, dimension: str = "agent_id") -> pd.DataFrame:
        """Cost per decision by one of :data:`DIMENSIONS` (or ``"overall"``), for display."""
        if dimension not in (*DIMENSIONS, "overall"):
            raise ValueError(
                f"dimension must be one of {[*DIMENSIONS, 'overall']}, got {dimension!r}"
            )
        rows = self.by_dimension[self.by_dimension["dimension"] == dimension]
        return rows.drop(columns=["dimension"]).reset_index(drop=True)

    def top_contributors(self, n: int = TOP_PATTERNS) -> pd.DataFrame:
        """The ``n`` prompt versions with the largest total spend (decisions x cost)."""
        return self.prompt_patterns.head(n).reset_index(drop=True)

    def budget_table(self) -> pd.DataFrame:
        """One row per budget: limit, pilot spend, breach days, projection, fallback."""
        cols = [
            "label",
            "monthly_usd",
            "peak_month_to_date_usd",
            "first_over_pace_day",
            "first_breach_day",
            "projected_month_usd",
            "volume_source",
            "fallback_model",
            "fallback_decisions",
            "fallback_saving_usd",
            "projected_month_with_fallback_usd",
        ]
        return pd.DataFrame([{c: b.summary()[c] for c in cols} for b in self.budgets], columns=cols)

    def to_result(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "overall": self.overall,
                "by_dimension": self.by_dimension,
                "prompt_patterns": self.prompt_patterns,
                "top_contributors": self.top_contributors(),
                "budgets": [b.summary() | {"daily": b.daily} for b in self.budgets],
                "prices": self.prices,
                "notes": self.notes,
                "cluster_by": self.cluster_by,
                "confidence": self.confidence,
                "findings": self.findings,
            }
        )


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------
def cost_attribution_section(pilot: Pilot, data: Any) -> CostAttribution | None:
    """The ``cost_attribution`` section of phase 2 (:data:`pilot_lib.phases.PHASE_SECTIONS`).

    None when the pilot has no decision log.
    """
    decisions = data.table("decisions") if data is not None else None
    if decisions is None:
        return None
    return cost_attribution(pilot, decisions)


def cost_attribution(
    pilot: Pilot, decisions: ir.Table, confidence: float = 0.95
) -> CostAttribution:
    """Attribute the pilot window's cost and check the pilot file's budgets.

    Parameters
    ----------
    pilot:
        Window, hourly review rate, price table, production volume, budgets and
        ``statistics.cluster_by``.
    decisions:
        The decision log (contract columns; ``model`` and ``business_unit`` optional).
        Decisions with a null cost column are left out, as the KPI leaves them out.
    confidence:
        Interval coverage.
    """
    stats.z_value(confidence)
    prices = pilot.model_prices
    t, notes = _prepared(pilot, decisions)
    key, level, key_note = clustered.decision_cluster_key(t, pilot.statistics.cluster_by)
    if key_note:
        notes.append(key_note)
    t = t.mutate(_cluster=key) if key is not None else t
    clustered_by = key is not None
    # One pass over the decisions: sums per cell (every dimension, cluster and day), small,
    # kept in the engine; every breakdown, the prompt patterns, the pricing counts and the
    # budgets without a fallback read the cells, not the decision log.
    c = _cells(t, clustered_by)

    frames = [_by_group(c, "overall", ibis.literal("all"), clustered_by, confidence)]
    for dim in DIMENSIONS:
        frames.append(_by_group(c, dim, c[dim], clustered_by, confidence))
    by_dimension = pd.concat(frames, ignore_index=True)
    total = float(by_dimension.loc[0, "total_usd"]) if len(frames[0]) else 0.0
    by_dimension["share_of_cost"] = by_dimension["total_usd"] / total if total > 0 else math.nan
    overall = _overall(by_dimension)
    patterns = _prompt_patterns(c, by_dimension, total)

    pricing = _pricing_counts(c)
    if pricing["unpriced"]:
        notes.append(
            f"model cost of {pricing['unpriced']:,} decisions split into input and output in "
            "proportion to their token counts: their model has no price in costs.model_prices"
        )

    budgets = [_budget_burn(pilot, t, c, b, int(overall["decisions"])) for b in pilot.budgets]
    findings = [f for b in budgets for f in _budget_findings(b)]
    return CostAttribution(
        overall=overall,
        by_dimension=by_dimension,
        prompt_patterns=patterns,
        budgets=budgets,
        prices={m: p.model_dump() for m, p in sorted(prices.items())},
        notes=notes,
        cluster_by=level,
        confidence=confidence,
        findings=findings,
    )


# --------------------------------------------------------------------------------------
# The per-decision columns
# --------------------------------------------------------------------------------------
def _prepared(pilot: Pilot, decisions: ir.Table) -> tuple[ir.Table, list[str]]:
    """Decisions in the window with a cost, and the per-decision cost parts (US dollars)."""
    notes: list[str] = []
    window = pilot.pilot_window
    t = decisions.filter(
        (decisions.timestamp >= window.start_ts) & (decisions.timestamp < window.end_ts)
    )
    rate = pilot.costs.review_hourly_rate_usd
    prices = pilot.model_prices
    single = next(iter(prices)) if len(prices) == 1 else None
    stand_in = ibis.literal(single or "unknown", type="string")
    model = ibis.coalesce(t.model.cast("string"), stand_in) if "model" in t.columns else stand_in
    unit = ibis.literal(pilot.business_unit, type="string")
    business_unit = (
        ibis.coalesce(t.business_unit.cast("string"), unit)
        if "business_unit" in t.columns
        else unit
    )
    # the same expression as the KPI's, so that the overall figure is the KPI's to the bit
    cost = t.model_cost_usd + t.tool_cost_usd + t.review_minutes / 60.0 * rate
    t = t.mutate(_model=model, _bu=business_unit, _cost=cost).filter(cost.notnull())
    t = t.select(
        "timestamp",
        "decision_id",
        "case_id",
        *(["user_id"] if "user_id" in t.columns else []),
        "agent_id",
        "workflow",
        "prompt_version",
        "input_tokens",
        "output_tokens",
        "model_cost_usd",
        "tool_cost_usd",
        "review_minutes",
        "_cost",
        business_unit=t._bu,
        model=t._model,
    )
    if prices:
        table = ibis.memtable(
            {
                "_pm": list(prices),
                "_pin": [p.input_per_million_usd for p in prices.values()],
                "_pout": [p.output_per_million_usd for p in prices.values()],
            },
            schema={"_pm": "string", "_pin": "float64", "_pout": "float64"},
        )
        t = t.left_join(table, t.model == table._pm).select(t, _pin=table._pin, _pout=table._pout)
    else:
        t = t.mutate(_pin=ibis.null("float64"), _pout=ibis.null("float64"))
    tin = t.input_tokens.cast("float64")
    tout = t.output_tokens.cast("float64")
    w_in = tin * t._pin
    w_out = tout * t._pout
    priced = t._pin.notnull() & (w_in + w_out > 0)
    input_share = ibis.cases(
        (priced, w_in / (w_in + w_out)),
        (tin + tout > 0, tin / (tin + tout)),
        else_=ibis.literal(1.0),  # no tokens recorded: the whole model cost counts as input
    )
    input_usd = t.model_cost_usd * input_share
    return (
        t.mutate(
            _priced=t._pin.notnull(),
            _input_usd=input_usd,
            # the rest, so that input + output is the recorded model cost exactly
            _output_usd=t.model_cost_usd - input_usd,
            _review_usd=t.review_minutes / 60.0 * rate,
            _run_usd=t.model_cost_usd + t.tool_cost_usd,
        ),
        notes,
    )


def _cells(t: ir.Table, clustered_by: bool) -> ir.Table:
    """Sums per dimension values, cluster and day (US dollars, tokens, decisions): the one
    grouped pass over the decisions that every cost figure reads (materialized, small)."""
    from pilot_lib.ingest.engine import materialize

    keys = [*DIMENSIONS, *(["_cluster"] if clustered_by else [])]
    cells = t.group_by([*keys, t.timestamp.date().name("_day")]).aggregate(
        n=t.count(),
        s=t._cost.sum(),
        ss=(t._cost * t._cost).sum(),
        input_usd=t._input_usd.sum(),
        output_usd=t._output_usd.sum(),
        tool_usd=t.tool_cost_usd.sum(),
        review_usd=t._review_usd.sum(),
        run_usd=t._run_usd.sum(),
        model_usd=t.model_cost_usd.sum(),
        input_tokens=t.input_tokens.sum(),
        output_tokens=t.output_tokens.sum(),
        priced=t._priced.cast("int64").sum(),
    )
    return materialize(cells, "cost_cells")


def _pricing_counts(c: ir.Table) -> dict[str, int]:
    row = c.aggregate(priced=c.priced.sum(), unpriced=(c.n - c.priced).sum()).execute()
    return {k: int(0 if pd.isna(v) else v) for k, v in row.iloc[0].items()}


# --------------------------------------------------------------------------------------
# Cost per decision by group, with the KPI's interval
# --------------------------------------------------------------------------------------
def _by_group(
    c: ir.Table, dimension: str, value: ir.Value, clustered_by: bool, confidence: float
) -> pd.DataFrame:
    """One row per value of ``value``: the mean cost per decision, its parts and interval.

    Two engine queries' worth of work in one: the per-group summary (count, mean,
    sample standard deviation, part sums) and, when clustered, the CR1 residual sum
    ``sum_g (y_g - r n_g)^2`` over the clusters of each group, the group's mean ``r``
    joined back in the engine (per-cluster rows never leave it).
    """
    g = c.mutate(_value=value.cast("string"))
    if clustered_by:
        # each group's clusters' residual totals, the group's mean joined back in the
        # engine (per-cluster rows never leave it)
        means = g.group_by(_v=g._value).aggregate(_r=g.s.sum() / g.n.sum())
        per_cluster = g.group_by(["_value", "_cluster"]).aggregate(
            _y=g.s.sum(), _n=g.n.sum().cast("float64")
        )
        j = per_cluster.inner_join(means, per_cluster._value == means._v)
        resid = j._y - j._r * j._n
        sums = j.group_by(_v2=j._value).aggregate(_g=j.count(), _s=(resid * resid).sum())
    summary = g.group_by("_value").aggregate(
        decisions=g.n.sum(),
        total_usd=g.s.sum(),
        _ss=g.ss.sum(),
        input_usd=g.input_usd.sum(),
        output_usd=g.output_usd.sum(),
        tool_usd=g.tool_usd.sum(),
        review_usd=g.review_usd.sum(),
    )
    if clustered_by:
        summary = summary.left_join(sums, summary._value == sums._v2).select(
            summary, clusters=sums._g, sq_residuals=sums._s
        )
    frame = summary.execute()
    rows = []
    for rec in frame.to_dict(orient="records"):
        n = int(rec["decisions"])
        total = float(rec["total_usd"])
        mean = total / n
        # the sample standard deviation from the sums (cost is a few dollars a decision:
        # no cancellation worth a digit at the 1e-9 the result files keep)
        var = (float(rec["_ss"]) - total * total / n) / (n - 1) if n > 1 else math.nan
        std = math.sqrt(max(var, 0.0)) if n > 1 else math.nan
        iid = stats.mean_interval(mean, std, n, confidence)
        se_iid = std / math.sqrt(n) if n > 1 and math.isfinite(std) else math.nan
        if clustered_by:
            groups = int(_num(rec["clusters"], 0.0))
            se = clustered.cluster_robust_se(n, _num(rec["sq_residuals"], 0.0), groups)
            ci = clustered.clustered_interval(mean, se, groups, iid, se_iid, confidence)
            low, high, deff, groups = ci.low, ci.high, ci.design_effect, ci.clusters
        else:
            low, high, deff, groups = iid[0], iid[1], 1.0, n
        rows.append(
            {
                "dimension": dimension,
                "value": rec["_value"],
                "decisions": n,
                "cost_per_decision_usd": mean,
                "low": low,
                "high": high,
                "low_iid": iid[0],
                "high_iid": iid[1],
                "design_effect": deff,
                "clusters": groups,
                **{p: float(rec[p]) / n for p in _PART_COLUMNS},
                "total_usd": float(rec["total_usd"]),
                "share_of_cost": math.nan,
            }
        )
    out = pd.DataFrame(rows, columns=_GROUP_COLUMNS)
    return out.sort_values(["total_usd", "value"], ascending=[False, True], ignore_index=True)


def _num(value: Any, default: float = math.nan) -> float:
    return default if value is None or pd.isna(value) else float(value)


def _overall(by_dimension: pd.DataFrame) -> dict[str, Any]:
    rows = by_dimension[by_dimension["dimension"] == "overall"]
    if rows.empty:
        return {"decisions": 0, "cost_per_decision_usd": math.nan, "total_usd": 0.0}
    row = rows.iloc[0].to_dict()
    row.pop("dimension")
    row.pop("value")
    return row


def _prompt_patterns(c: ir.Table, by_dimension: pd.DataFrame, total: float) -> pd.DataFrame:
    """Per prompt version: token and cost shares, ranked by total spend (from the cells)."""
    agg = (
        c.group_by(prompt_version=c.prompt_version.cast("string"))
        .aggregate(
            input_tokens=c.input_tokens.sum(),
            output_tokens=c.output_tokens.sum(),
            input_usd_sum=c.input_usd.sum(),
            model_usd=c.model_usd.sum(),
        )
        .execute()
    )
    ver = by_dimension[by_dimension["dimension"] == "prompt_version"].rename(
        columns={"value": "prompt_version"}
    )
    frame = ver.merge(agg, on="prompt_version", how="left")
    tokens = frame["input_tokens"] + frame["output_tokens"]
    frame["mean_input_tokens"] = frame["input_tokens"] / frame["decisions"]
    frame["mean_output_tokens"] = frame["output_tokens"] / frame["decisions"]
    frame["input_token_share"] = (frame["input_tokens"] / tokens).where(tokens > 0)
    frame["input_cost_share"] = (frame["input_usd_sum"] / frame["model_usd"]).where(
        frame["model_usd"] > 0
    )
    frame["output_cost_share"] = 1.0 - frame["input_cost_share"]
    frame["model_cost_per_decision_usd"] = frame["model_usd"] / frame["decisions"]
    frame["share_of_spend"] = frame["total_usd"] / total if total > 0 else math.nan
    frame = frame.sort_values(
        ["total_usd", "prompt_version"], ascending=[False, True], ignore_index=True
    )
    frame["rank"] = range(1, len(frame) + 1)
    cols = [
        "rank",
        "prompt_version",
        "decisions",
        "cost_per_decision_usd",
        "low",
        "high",
        "model_cost_per_decision_usd",
        "mean_input_tokens",
        "mean_output_tokens",
        "input_token_share",
        "input_cost_share",
        "output_cost_share",
        "total_usd",
        "share_of_spend",
    ]
    return frame[cols]


# --------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------
def _budget_burn(
    pilot: Pilot, t: ir.Table, c: ir.Table, budget: Budget, all_decisions: int
) -> BudgetBurn:
    """Month-to-date spend against one budget, the projection and the fallback's cost.

    Without a fallback model the daily spend is read from the cost cells ``c``; with one,
    the decisions ``t`` are ordered within the month (the breaker needs the running sum)."""
    column, name = budget.scope
    limit = float(budget.monthly_usd)
    fallback = budget.fallback_model
    if fallback is None:
        sc = c.filter(c[column].cast("string") == name)
        aggs: dict[str, Any] = {"decisions": sc.n.sum(), "spend_usd": sc.run_usd.sum()}
        per_day = sc.group_by("_day").aggregate(**aggs).execute()
        return _burn_from_days(pilot, budget, per_day, list(aggs), all_decisions)
    s = t.filter(t[column].cast("string") == name)
    s = s.mutate(_month=s.timestamp.truncate("M"), _day=s.timestamp.date())
    if fallback is not None:
        price = pilot.model_prices[fallback]
        # the circuit breaker: once the month's spend so far (decisions before this one,
        # in time order) is over the budget, the decision runs on the fallback model
        before = (
            s._run_usd.sum().over(
                ibis.cumulative_window(group_by=s._month, order_by=[s.timestamp, s.decision_id])
            )
            - s._run_usd
        )
        fallback_cost = (
            s.input_tokens.cast("float64") * (price.input_per_million_usd / 1e6)
            + s.output_tokens.cast("float64") * (price.output_per_million_usd / 1e6)
            + s.tool_cost_usd
        )
        s = s.mutate(_took=before > limit, _fb=fallback_cost)
    aggs: dict[str, Any] = {"decisions": s.count(), "spend_usd": s._run_usd.sum()}
    if fallback is not None:
        aggs |= {
            "fallback_decisions": s._took.cast("int64").sum(),
            "spend_with_fallback_usd": ibis.ifelse(s._took, s._fb, s._run_usd).sum(),
            "fallback_run_usd": s._fb.sum(),
        }
    per_day = s.group_by("_day").aggregate(**aggs).execute()
    return _burn_from_days(pilot, budget, per_day, list(aggs), all_decisions)


def _burn_from_days(
    pilot: Pilot, budget: Budget, per_day: pd.DataFrame, aggs: list[str], all_decisions: int
) -> BudgetBurn:
    """The budget's burn from its per-day sums (``_day`` and the ``aggs`` columns)."""
    limit = float(budget.monthly_usd)
    fallback = budget.fallback_model
    per_day["_day"] = pd.to_datetime(per_day["_day"]).dt.date
    window = pilot.pilot_window
    days = pd.DataFrame({"day": [window.start + dt.timedelta(days=i) for i in range(window.days)]})
    daily = days.merge(per_day.rename(columns={"_day": "day"}), on="day", how="left")
    for col in aggs:
        if col in daily:
            daily[col] = daily[col].fillna(0)
    daily["decisions"] = daily["decisions"].astype("int64")
    month = pd.Series([d.year * 12 + d.month for d in daily["day"]], index=daily.index)
    daily["month_to_date_usd"] = daily.groupby(month)["spend_usd"].cumsum()
    daily["pace_usd"] = [
        limit * d.day / calendar.monthrange(d.year, d.month)[1] for d in daily["day"]
    ]
    if fallback is not None:
        daily["fallback_decisions"] = daily["fallback_decisions"].astype("int64")
        daily["month_to_date_with_fallback_usd"] = daily.groupby(month)[
            "spend_with_fallback_usd"
        ].cumsum()

    def first(mask: pd.Series) -> dt.date | None:
        hit = daily.loc[mask, "day"]
        return None if hit.empty else hit.iloc[0]

    decisions = int(daily["decisions"].sum())
    spend = float(daily["spend_usd"].sum())
    per_decision = spend / decisions if decisions else math.nan
    if pilot.costs.production_volume_per_month is not None:
        volume = float(pilot.costs.production_volume_per_month)
        source = "costs.production_volume_per_month"
    else:
        volume = all_decisions / window.days * AVERAGE_MONTH_DAYS
        source = "the pilot's own pace (no costs.production_volume_per_month)"
    share = decisions / all_decisions if all_decisions else 0.0
    scoped_volume = volume * share
    projected = per_decision * scoped_volume if decisions else 0.0
    pilot_pace = spend / window.days * AVERAGE_MONTH_DAYS
    burn = BudgetBurn(
        budget=budget.model_dump(exclude_none=True),
        label=budget.label,
        decisions=decisions,
        spend_usd=spend,
        spend_per_decision_usd=per_decision,
        daily=daily.drop(columns=["fallback_run_usd"], errors="ignore"),
        first_over_pace_day=first(daily["month_to_date_usd"] > daily["pace_usd"]),
        first_breach_day=first(daily["month_to_date_usd"] > limit),
        peak_month_to_date_usd=float(daily["month_to_date_usd"].max()) if len(daily) else 0.0,
        production_volume_per_month=volume,
        volume_source=source,
        scope_share=share,
        projected_month_usd=projected,
        projected_pilot_pace_month_usd=pilot_pace,
    )
    if fallback is not None:
        with_fallback = float(daily["spend_with_fallback_usd"].sum())
        fb_per_decision = float(daily["fallback_run_usd"].sum()) / decisions if decisions else 0.0
        burn.fallback_model = fallback
        burn.fallback_decisions = int(daily["fallback_decisions"].sum())
        burn.fallback_spend_per_decision_usd = fb_per_decision
        burn.spend_with_fallback_usd = with_fallback
        burn.fallback_saving_usd = spend - with_fallback
        burn.projected_month_with_fallback_usd = _projected_with_fallback(
            per_decision, fb_per_decision, scoped_volume, limit
        )
    return burn


def _projected_with_fallback(
    per_decision: float, fallback_per_decision: float, volume: float, limit: float
) -> float:
    """Month-end spend when decisions beyond the budget run on the fallback model.

    ``limit / per_decision`` decisions fit in the budget at the current model's cost;
    the rest of the month's ``volume`` costs ``fallback_per_decision`` each.
    """
    if not volume or not math.isfinite(per_decision) or per_decision * volume <= limit:
        return per_decision * volume if volume and math.isfinite(per_decision) else 0.0
    at_full_price = limit / per_decision
    return limit + (volume - at_full_price) * fallback_per_decision


def _budget_findings(b: BudgetBurn) -> list[Finding]:
    """Findings for one budget (severities: docs/decisions.md, "Budgets and fallbacks")."""
    limit = b.monthly_usd
    evidence = {
        "budget": b.label,
        "monthly_usd": limit,
        "peak_month_to_date_usd": b.peak_month_to_date_usd,
        "first_breach_day": b.first_breach_day,
        "projected_month_usd": b.projected_month_usd,
        "production_volume_per_month": b.production_volume_per_month,
        "fallback_model": b.fallback_model,
    }
    evidence = to_jsonable(evidence)
    if b.decisions == 0:
        return [
            Finding(
                _PHASE,
                "budget_scope_unmatched",
                "warning",
                f"The budget for {b.label} matches no decision in the pilot window: check the "
                "name against the decision log's agent_id and workflow.",
                evidence,
            )
        ]
    out = []
    if b.breached and b.fallback_model is None:
        out.append(
            Finding(
                _PHASE,
                "budget_breached",
                "blocking",
                f"The ${limit:,.0f} monthly budget for {b.label} was exceeded on "
                f"{b.first_breach_day:%d %b %Y} (month-to-date spend up to "
                f"${b.peak_month_to_date_usd:,.2f}) and no fallback model is configured, so "
                "spend would have kept rising silently.",
                evidence | {"headline": "Budget exceeded, no fallback", "section": SECTION_HEADING},
            )
        )
    elif b.breached:
        out.append(
            Finding(
                _PHASE,
                "budget_fallback_engaged",
                "info",
                f"The ${limit:,.0f} monthly budget for {b.label} was reached on "
                f"{b.first_breach_day:%d %b %Y}; the circuit breaker would have moved "
                f"{b.fallback_decisions:,} decisions to {b.fallback_model}, saving "
                f"${b.fallback_saving_usd:,.2f}.",
                evidence | {"fallback_decisions": b.fallback_decisions},
            )
        )
    if b.projected_over and b.fallback_model is None:
        out.append(
            Finding(
                _PHASE,
                "budget_projected_over",
                "warning",
                f"At {b.production_volume_per_month:,.0f} decisions a month, {b.label} would "
                f"spend ${b.projected_month_usd:,.0f} a month against a ${limit:,.0f} budget, "
                "and no fallback model is configured to degrade instead of overspending.",
                evidence,
            )
        )
    elif b.projected_over:
        out.append(
            Finding(
                _PHASE,
                "budget_projected_fallback",
                "info",
                f"At {b.production_volume_per_month:,.0f} decisions a month, {b.label} would "
                f"reach its ${limit:,.0f} budget; with the fallback to {b.fallback_model} the "
                f"month would end at ${b.projected_month_with_fallback_usd:,.0f} instead of "
                f"${b.projected_month_usd:,.0f}.",
                evidence,
            )
        )
    if not b.breached and not b.projected_over:
        out.append(
            Finding(
                _PHASE,
                "budget_met",
                "info",
                f"{b.label[0].upper()}{b.label[1:]} stayed within its ${limit:,.0f} monthly "
                f"budget (month-to-date peak ${b.peak_month_to_date_usd:,.2f}) and is projected "
                f"at ${b.projected_month_usd:,.0f} a month at production volume.",
                evidence,
            )
        )
    return out

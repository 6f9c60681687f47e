"""Integration health per downstream system (phase 2): errors, retries, breakers, latency.

"Most agentic pilots fail at the integration layer." From the ``tool_calls`` data
set (one row per attempt of a call to a downstream system) this section shows,
per system:

- **calls and attempts**: a *logical call* is one attempt numbered 1 and the
  retries that follow it (attempt 2, 3, ...) for the same decision, system and
  tool, in start order. A row without an attempt number starts its own call.
- **error rate by kind**: ``error_5xx``, ``timeout`` and ``error_4xx`` attempts
  over the attempts *sent* (``circuit_open`` rows were refused by the agent's own
  breaker and never reached the system). The window's interval is cluster-robust
  by week (an outage makes a week's attempts fail together; CR1, t on G - 1,
  never narrower than Wilson); each week's interval is cluster-robust by
  decision (a decision's retries fail together). ``statistics.cluster_by: none``
  gives Wilson intervals throughout.
- **retries and their spacing**: the gap before a retry is its start minus the
  previous attempt's end (its start when it never ended). A retried call
  *hammers* when a gap is shorter than ``integration.min_retry_gap_seconds``,
  when a gap is not longer than the gap before it (backoff grows; equal jitter
  keeps it growing), or when it has more than ``integration.max_attempts``
  attempts; otherwise it *backs off*.
- **circuit-breaker openings**: runs of consecutive ``circuit_open`` attempts to
  a system (in start order across decisions), and what each decision that met an
  open circuit did: ``hung`` (below), else ``escalated``, else ``degraded``
  (completed without that system's answer), else ``failed``.
- **an ignored breaker**: more than ``integration.breaker_threshold`` consecutive
  failed attempts (5xx or timeout) to a system with no ``circuit_open`` between
  them and no pause of ``integration.breaker_pause_seconds`` between two of them.
- **hung decisions**: a decision whose calls span more than
  ``integration.decision_timeout_seconds`` (first call's start to the last end),
  or with a call that never returned (``ended_at`` empty).
- **latency**: p50 and p95 of the attempts that returned, in milliseconds
  (exact engine quantiles), over the window and per week.
- **tool_failure escalations linked to the system**: decisions escalated for
  ``tool_failure`` with a failed attempt (5xx, timeout, 4xx or circuit open) to it.
- **duplicate side effects**: a side-effecting action with two or more ``ok``
  attempts under the same idempotency key, and side-effecting calls without a
  key that were sent more than once.

Everything is computed in the engine (window functions and GROUP BY); only
per-system and per-week aggregates and capped id lists come back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from pilot_lib.analysis.clustered import cluster_robust_se, clustered_interval, clustered_ratio
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.shared import shared
from pilot_lib.analysis.stats import wilson_interval
from pilot_lib.config import Pilot
from pilot_lib.ingest.engine import materialize
from pilot_lib.results import to_jsonable

__all__ = [
    "ERROR_KINDS",
    "MAX_LISTED",
    "SECTION",
    "IntegrationHealth",
    "integration_health",
    "review_integration",
]

PHASE = "kpi_baselining"

#: The notebook section (its heading) that shows this analysis.
SECTION = "Integration health"

#: Error kinds: status value -> short name used in the result's columns.
ERROR_KINDS: dict[str, str] = {"error_5xx": "5xx", "timeout": "timeout", "error_4xx": "4xx"}

#: Failures that count towards a circuit breaker (a 4xx is the caller's own mistake).
BREAKER_FAILURES = ("error_5xx", "timeout")

#: Ids listed in a finding's evidence and the result, at most.
MAX_LISTED = 20

#: Most answered attempts whose latency percentiles are exact. An exact percentile holds
#: every value of its group in memory at once (DuckDB cannot spill it): 29 million tool
#: calls at 10 million decisions do not fit a 512 MB engine. Above this many answered
#: attempts the percentiles are the engine's streaming estimate (t-digest in DuckDB,
#: percentile_approx in Spark), and the result says so (``latency_percentiles``).
EXACT_PERCENTILE_MAX = 2_000_000

_FAILED = ("error_5xx", "error_4xx", "timeout", "circuit_open")


@dataclass
class IntegrationHealth:
    """The integration-health section of phase 2 (see the module docstring).

    ``systems``: one row per system (window figures); ``weekly``: one row per
    system and ISO week (Monday); ``escalations``: tool_failure escalations linked
    to each system; ``duplicates``: side-effecting keys executed more than once;
    ``unkeyed_retries``: side-effecting calls without a key sent more than once;
    ``hung``: hung decisions (count and a capped id list); ``ignored_breakers``:
    runs of failures the breaker should have stopped.
    """

    settings: dict[str, Any]
    systems: pd.DataFrame
    weekly: pd.DataFrame
    escalations: pd.DataFrame
    unlinked_tool_failure_escalations: int
    duplicates: pd.DataFrame
    unkeyed_retries: pd.DataFrame
    hung: dict[str, Any]
    ignored_breakers: pd.DataFrame
    interval_method: str
    findings: list[Finding] = field(default_factory=list)
    #: "exact", or how the latency percentiles were estimated (EXACT_PERCENTILE_MAX).
    latency_percentiles: str = "exact"

    # ---- display helpers (small frames for the notebook) ------------------------
    def systems_table(self) -> pd.DataFrame:
        """Per system: calls, attempts, error rate with its interval, retries, breaker, latency."""
        cols = {
            "system": "system",
            "calls": "calls",
            "attempts": "attempts",
            "error_rate": "error rate",
            "error_low": "low",
            "error_high": "high",
            "rate_5xx": "5xx",
            "rate_timeout": "timeout",
            "rate_4xx": "4xx",
            "retries_per_call": "retries per call",
            "hammering_calls": "hammering calls",
            "circuit_openings": "circuit openings",
            "p50_ms": "p50 ms",
            "p95_ms": "p95 ms",
        }
        return self.systems[list(cols)].rename(columns=cols)

    def weekly_table(self, system: str | None = None) -> pd.DataFrame:
        """Week by week (one system, or all): attempts sent, error rate and interval, latency."""
        frame = self.weekly if system is None else self.weekly[self.weekly["system"] == system]
        return frame[
            ["system", "week", "attempts_sent", "errors", "error_rate", "low", "high"]
            + ["retried_calls", "hammering_calls", "circuit_open", "p50_ms", "p95_ms"]
        ].reset_index(drop=True)

    def open_circuit_table(self) -> pd.DataFrame:
        """Per system: decisions that met an open circuit and what the agent did."""
        cols = ["system", "circuit_openings", "circuit_open_attempts"]
        cols += ["open_escalated", "open_degraded", "open_hung", "open_failed"]
        return self.systems[cols].reset_index(drop=True)

    def escalation_table(self) -> pd.DataFrame:
        """Per system: tool_failure escalations with a failed call to it."""
        return self.escalations.reset_index(drop=True)

    def problems_table(self) -> pd.DataFrame:
        """Each finding of the section: severity and message."""
        return pd.DataFrame(
            [{"severity": f.severity, "finding": f.message} for f in self.findings],
            columns=["severity", "finding"],
        )

    def to_result(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "settings": self.settings,
                "interval_method": self.interval_method,
                "latency_percentiles": self.latency_percentiles,
                "systems": self.systems,
                "weekly": self.weekly,
                "tool_failure_escalations": self.escalations,
                "unlinked_tool_failure_escalations": self.unlinked_tool_failure_escalations,
                "duplicate_side_effects": self.duplicates,
                "unkeyed_retried_side_effects": self.unkeyed_retries,
                "hung_decisions": self.hung,
                "ignored_breakers": self.ignored_breakers,
                "findings": self.findings,
            }
        )


# --------------------------------------------------------------------------------------
# Engine steps
# --------------------------------------------------------------------------------------
def _seconds(later: ir.Value, earlier: ir.Value) -> ir.FloatingValue:
    return later.delta(earlier, unit="microsecond").cast("float64") / 1e6


#: The attempt columns the queries below read (the rest of a tool call is not copied).
_ATTEMPT_COLUMNS = (
    "call_id",
    "decision_id",
    "system",
    "tool",
    "started_at",
    "ended_at",
    "status",
    "_week",
    "_side",
    "_key",
    "_call",
    "_gap",
    "_prev_gap",
)


def _attempts(t: ir.Table, sizes: ir.Table | None = None) -> ir.Table:
    """Every attempt with its logical call number, the gap before it and the gap before that.

    ``sizes``: attempts per (decision_id, system, tool) in ``t`` as ``_n``, when a shared
    aggregate already has them (else they are counted here)."""
    attempt = t.attempt.cast("int64") if "attempt" in t.columns else ibis.null("int64")
    t = t.mutate(
        _attempt=attempt,
        _week=t.started_at.truncate("W").cast("date"),
        _side=t.side_effect.cast("boolean").fill_null(False)
        if "side_effect" in t.columns
        else ibis.literal(False),
        _key=t.idempotency_key.cast("string")
        if "idempotency_key" in t.columns
        else ibis.null("string"),
    )
    # Most tools are called once by a decision: only the attempts of tools called more
    # than once need the ordered windows below (sorting millions of one-row groups is
    # most of the cost otherwise).
    keys = ["decision_id", "system", "tool"]
    if sizes is None:
        sizes = t.group_by(keys).aggregate(_n=ibis._.count())
    t = t.inner_join(sizes, keys)
    single = t.filter(t._n == 1).mutate(
        _new=ibis.literal(1, "int64"),
        _call=ibis.literal(1, "int64"),
        _gap=ibis.null("float64"),
        _prev_gap=ibis.null("float64"),
    )
    t = t.filter(t._n > 1)
    per_tool = ibis.window(
        group_by=[t.decision_id, t.system, t.tool], order_by=[t.started_at, t.call_id]
    )
    prev_attempt = t._attempt.lag().over(per_tool)
    new_call = (
        t._attempt.isnull()
        | (t._attempt <= 1)
        | prev_attempt.isnull()
        | (t._attempt <= prev_attempt)
    )
    t = t.mutate(_new=new_call.cast("int64"))
    t = t.mutate(
        _call=t._new.sum().over(
            ibis.cumulative_window(
                group_by=[t.decision_id, t.system, t.tool], order_by=[t.started_at, t.call_id]
            )
        )
    )
    per_call = ibis.window(
        group_by=[t.decision_id, t.system, t.tool, t._call], order_by=[t.started_at, t.call_id]
    )
    prev_end = ibis.coalesce(t.ended_at, t.started_at).lag().over(per_call)
    t = t.mutate(
        _gap=ibis.ifelse(prev_end.isnull(), ibis.null("float64"), _seconds(t.started_at, prev_end))
    )
    multi = t.mutate(_prev_gap=t._gap.lag().over(per_call))
    return single.select(*_ATTEMPT_COLUMNS).union(multi.select(*_ATTEMPT_COLUMNS))


def _calls(a: ir.Table, s: Any) -> ir.Table:
    """One row per logical call: its system, week, attempts and spacing class."""
    calls = a.group_by([a.decision_id, a.system, a.tool, a._call]).aggregate(
        _week=a._week.min(),
        attempts=a.count(),
        sent=a.count(where=a.status != "circuit_open"),
        min_gap=a._gap.min(),
        not_growing=(a._prev_gap.notnull() & (a._gap <= a._prev_gap)).any(),
        side=a._side.any(),
        keyed=a._key.notnull().any(),
    )
    retried = calls.attempts > 1
    hammering = retried & (
        (calls.min_gap < s.min_retry_gap_seconds)
        | calls.not_growing.fill_null(False)
        | (calls.attempts > s.max_attempts)
    )
    return calls.mutate(retried=retried, hammering=hammering.fill_null(False))


def _frame(expr: ir.Table) -> pd.DataFrame:
    return expr.execute()


# --------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------
def integration_health(pilot: Pilot, data: Any) -> IntegrationHealth | None:
    """The phase-2 section: None when the pilot has no ``tool_calls`` data set."""
    calls = data.table("tool_calls") if data is not None else None
    if calls is None:
        return None
    decisions = data.table("decisions")
    per_tool = shared(data, "tool_calls_by_decision_tool")
    sizes = per_tool.filter(per_tool.attempts_in_window > 0).select(
        "decision_id", "system", "tool", _n=per_tool.attempts_in_window
    )
    return review_integration(
        calls,
        decisions,
        pilot.integration,
        window=(pilot.pilot_window.start_ts, pilot.pilot_window.end_ts),
        clustered=pilot.statistics.cluster_by != "none",
        sizes=sizes,
    )


def _interval(
    y: pd.Series, n: pd.Series, clustered: bool, confidence: float
) -> tuple[float, float, float, float]:
    """Estimate, low, high and design effect of ``sum y / sum n`` clustered by the rows."""
    total_y, total_n = int(y.sum()), int(n.sum())
    if total_n == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    iid = wilson_interval(total_y, total_n, confidence)
    p = total_y / total_n
    if not clustered:
        return (p, iid[0], iid[1], math.nan)
    r, se, g = clustered_ratio(y.to_numpy(float), n.to_numpy(float))
    se_iid = math.sqrt(p * (1 - p) / total_n)
    ci = clustered_interval(r, se, g, iid, se_iid, confidence, bounds=(0.0, 1.0))
    return (p, ci.low, ci.high, ci.design_effect)


def _moment_interval(
    y: int, n: int, clusters: int, syy: float, syn: float, snn: float, confidence: float
) -> tuple[float, float]:
    """Interval of ``y / n`` clustered by units whose totals' moments are given."""
    if n == 0:
        return (math.nan, math.nan)
    iid = wilson_interval(y, n, confidence)
    p = y / n
    sq = max(0.0, syy - 2 * p * syn + p * p * snn)
    se = cluster_robust_se(n, sq, clusters)
    se_iid = math.sqrt(p * (1 - p) / n)
    ci = clustered_interval(p, se, clusters, iid, se_iid, confidence, bounds=(0.0, 1.0))
    return (ci.low, ci.high)


def review_integration(
    tool_calls: ir.Table,
    decisions: ir.Table | None,
    settings: Any,
    window: tuple[Any, Any] | None = None,
    clustered: bool = True,
    confidence: float = 0.95,
    sizes: ir.Table | None = None,
) -> IntegrationHealth:
    """Integration health of ``tool_calls`` (valid rows of the data set), in the engine.

    Parameters
    ----------
    tool_calls:
        The ``tool_calls`` data set (one row per attempt).
    decisions:
        The decision log (``decision_id``, ``escalated``, ``escalation_reason``,
        ``completed``), for what the agent did and the escalation links; None
        leaves those at 0.
    settings:
        :class:`pilot_lib.config.IntegrationSettings`.
    window:
        ``(start, end)``: attempts started in ``[start, end)`` count (the pilot
        window); None: all.
    clustered:
        Cluster-robust intervals (week for the window, decision within a week);
        False: Wilson.
    sizes:
        Attempts in the window per (decision_id, system, tool) as ``_n`` (the shared
        aggregate, :mod:`pilot_lib.analysis.shared`); None counts them here.
    """
    t = tool_calls
    if window is not None:
        t = t.filter((t.started_at >= window[0]) & (t.started_at < window[1]))
    # every query below reads the attempts and the calls: their window functions run once
    a = materialize(_attempts(t, sizes), "tool_attempts")
    c = materialize(_calls(a, settings), "tool_call_groups")
    status = a.status
    sent = status != "circuit_open"
    returned = sent & a.ended_at.notnull()
    latency = a.ended_at.delta(a.started_at, unit="microsecond").cast("float64") / 1e3
    answered = ibis.ifelse(returned, latency, ibis.null())
    exact = int(a.count(where=returned).execute()) <= EXACT_PERCENTILE_MAX

    def pct(q: float) -> ir.FloatingValue:
        return answered.quantile(q) if exact else answered.approx_quantile(q)

    # ---- per system and week: attempts ------------------------------------------------
    kind_aggs = {f"n_{v}": a.count(where=status == k) for k, v in ERROR_KINDS.items()}
    wk = _frame(
        a.group_by([a.system, a._week]).aggregate(
            attempts=a.count(),
            attempts_sent=a.count(where=sent),
            circuit_open=a.count(where=status == "circuit_open"),
            errors=a.count(where=status.isin(list(ERROR_KINDS))),
            # nulls, not ``where=``: Spark's percentile needs a constant percentage
            p50_ms=pct(0.5),
            p95_ms=pct(0.95),
            **kind_aggs,
        )
    ).rename(columns={"_week": "week"})
    wc = _frame(
        c.group_by([c.system, c._week]).aggregate(
            calls=c.count(),
            retried_calls=c.count(where=c.retried),
            hammering_calls=c.count(where=c.hammering),
        )
    ).rename(columns={"_week": "week"})
    # the week's interval: clustered by decision (its retries fail together)
    per_dec = a.group_by([a.system, a._week, a.decision_id]).aggregate(
        y=a.count(where=status.isin(list(ERROR_KINDS))).cast("float64"),
        n=a.count(where=sent).cast("float64"),
    )
    mom = _frame(
        per_dec.group_by([per_dec.system, per_dec._week]).aggregate(
            g=per_dec.count(where=per_dec.n > 0),
            syy=(per_dec.y * per_dec.y).sum(),
            syn=(per_dec.y * per_dec.n).sum(),
            snn=(per_dec.n * per_dec.n).sum(),
        )
    ).rename(columns={"_week": "week"})
    weekly = wk.merge(wc, on=["system", "week"], how="left").merge(
        mom, on=["system", "week"], how="left"
    )
    weekly["week"] = pd.to_datetime(weekly["week"]).dt.date
    weekly = weekly.sort_values(["system", "week"], kind="stable").reset_index(drop=True)
    for col in ("calls", "retried_calls", "hammering_calls", "g"):
        weekly[col] = weekly[col].fillna(0).astype("int64")
    for col in (
        "attempts",
        "attempts_sent",
        "circuit_open",
        "errors",
        *[f"n_{v}" for v in ERROR_KINDS.values()],
    ):
        weekly[col] = weekly[col].astype("int64")
    lows, highs, rates = [], [], []
    for r in weekly.itertuples(index=False):
        n = int(r.attempts_sent)
        rates.append(r.errors / n if n else math.nan)
        if clustered:
            low, high = _moment_interval(
                int(r.errors), n, int(r.g), float(r.syy), float(r.syn), float(r.snn), confidence
            )
        else:
            low, high = wilson_interval(int(r.errors), n, confidence) if n else (math.nan, math.nan)
        lows.append(low)
        highs.append(high)
    weekly["error_rate"], weekly["low"], weekly["high"] = rates, lows, highs
    weekly = weekly.drop(columns=["g", "syy", "syn", "snn"])

    # ---- per system: window figures ---------------------------------------------------
    sys_lat = _frame(
        a.group_by(a.system).aggregate(
            # nulls, not ``where=``: Spark's percentile needs a constant percentage
            p50_ms=pct(0.5),
            p95_ms=pct(0.95),
        )
    ).set_index("system")
    # circuit openings and breaker runs: one ordered pass over each system's attempts
    breakers, openings = _ordered_per_system(a, settings)
    hung_per, hung_ids, hung_count = _hung(a, settings)
    outcomes = _open_circuit_outcomes(a, decisions, hung_per)
    escalations, unlinked = _escalation_links(a, decisions)

    rows = []
    for system, g in weekly.groupby("system", sort=True):
        row: dict[str, Any] = {"system": system}
        row["calls"] = int(g["calls"].sum())
        row["attempts"] = int(g["attempts"].sum())
        row["attempts_sent"] = int(g["attempts_sent"].sum())
        row["retried_calls"] = int(g["retried_calls"].sum())
        row["retries_per_call"] = (
            (row["attempts"] - row["calls"]) / row["calls"] if row["calls"] else math.nan
        )
        row["hammering_calls"] = int(g["hammering_calls"].sum())
        row["backoff_calls"] = row["retried_calls"] - row["hammering_calls"]
        row["errors"] = int(g["errors"].sum())
        est, low, high, deff = _interval(g["errors"], g["attempts_sent"], clustered, confidence)
        row.update(error_rate=est, error_low=low, error_high=high, design_effect=deff)
        for v in ERROR_KINDS.values():
            est, low, high, _ = _interval(g[f"n_{v}"], g["attempts_sent"], clustered, confidence)
            row.update({f"errors_{v}": int(g[f"n_{v}"].sum()), f"rate_{v}": est})
            row.update({f"rate_{v}_low": low, f"rate_{v}_high": high})
        row["weeks"] = int((g["attempts_sent"] > 0).sum())
        row["circuit_open_attempts"] = int(g["circuit_open"].sum())
        row["circuit_openings"] = int(openings["circuit_openings"].get(system, 0))
        row["p50_ms"] = float(sys_lat["p50_ms"].get(system, math.nan))
        row["p95_ms"] = float(sys_lat["p95_ms"].get(system, math.nan))
        for k in ("escalated", "degraded", "hung", "failed"):
            row[f"open_{k}"] = int(outcomes.get((system, k), 0))
        esc = escalations.loc[escalations["system"] == system, "tool_failure_escalations"]
        row["tool_failure_escalations"] = int(esc.iloc[0]) if len(esc) else 0
        ign = breakers[breakers["system"] == system] if len(breakers) else breakers
        row["ignored_breaker_runs"] = int(len(ign))
        row["longest_failure_run"] = int(ign["failures"].max()) if len(ign) else 0
        rows.append(row)
    systems = pd.DataFrame(rows)
    if systems.empty:
        systems = pd.DataFrame(columns=["system", *_SYSTEM_COLUMNS])

    duplicates, unkeyed = _side_effects(a, c)
    hung = {"count": hung_count, "decision_ids": hung_ids}
    method = (
        "error rates: cluster-robust by week over the window (CR1, t on G-1), by decision "
        "within a week; never narrower than Wilson"
        if clustered
        else "error rates: Wilson (statistics.cluster_by is none)"
    )
    health = IntegrationHealth(
        settings=settings.model_dump() if hasattr(settings, "model_dump") else dict(settings),
        systems=systems,
        weekly=weekly,
        escalations=escalations,
        unlinked_tool_failure_escalations=unlinked,
        duplicates=duplicates,
        unkeyed_retries=unkeyed,
        hung=hung,
        ignored_breakers=breakers,
        interval_method=method,
    )
    health.latency_percentiles = (
        "exact"
        if exact
        else f"estimated (streaming, more than {EXACT_PERCENTILE_MAX:,} answered attempts)"
    )
    health.findings = _findings(health, settings)
    return health


_SYSTEM_COLUMNS = (
    "calls",
    "attempts",
    "error_rate",
    "error_low",
    "error_high",
    "rate_5xx",
    "rate_timeout",
    "rate_4xx",
    "retries_per_call",
    "hammering_calls",
    "circuit_openings",
    "circuit_open_attempts",
    "open_escalated",
    "open_degraded",
    "open_hung",
    "open_failed",
    "p50_ms",
    "p95_ms",
)


def _ordered_per_system(a: ir.Table, s: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ignored breakers and circuit openings, from one ordered pass per system.

    A *run* is more than ``breaker_threshold`` consecutive failures to a system that no
    ``circuit_open`` and no pause of ``breaker_pause_seconds`` interrupted; a *circuit
    opening* a ``circuit_open`` attempt whose predecessor to the system was not one. Every
    attempt is numbered by the run started last before it, so one grouped aggregate gives
    both: a run's failures are the failing attempts of its number, the openings sum over
    all numbers. Returns ``(runs past the threshold, openings per system)``.
    """
    by_system = ibis.window(group_by=a.system, order_by=[a.started_at, a.call_id])
    fail = a.status.isin(list(BREAKER_FAILURES))
    is_open = a.status == "circuit_open"
    x = a.mutate(
        _fail=fail,
        _open=is_open,
        _prev_open=is_open.lag().over(by_system).fill_null(False),
        _prev_start=a.started_at.lag().over(by_system),
        _prev_fail=fail.lag().over(by_system).fill_null(False),
    )
    paused = x._prev_start.notnull() & (
        _seconds(x.started_at, x._prev_start) >= s.breaker_pause_seconds
    )
    # a new run starts at a failure that follows a non-failure or a pause
    starts = x._fail & (~x._prev_fail | paused.fill_null(False))
    x = x.mutate(_start=starts.cast("int64"))
    x = x.mutate(
        _run=x._start.sum().over(
            ibis.cumulative_window(group_by=x.system, order_by=[x.started_at, x.call_id])
        )
    )
    runs = x.group_by([x.system, x._run]).aggregate(
        failures=x.count(where=x._fail),
        first_at=x.started_at.min(where=x._fail),
        last_at=x.started_at.max(where=x._fail),
        decisions=x.decision_id.nunique(where=x._fail),
        # a null key is never the minimum (DuckDB's arg_min and Spark's min_by skip it)
        first_decision=x.decision_id.argmin(ibis.ifelse(x._fail, x.started_at, ibis.null())),
        openings=x.count(where=x._open & ~x._prev_open),
    )
    runs = materialize(runs, "system_runs")  # one row per run: small
    openings = _frame(
        runs.group_by(runs.system).aggregate(circuit_openings=runs.openings.sum())
    ).set_index("system")
    past = runs.filter(runs.failures > s.breaker_threshold)
    frame = _frame(
        past.order_by([past.system, past.first_at]).select(
            "system", "failures", "first_at", "last_at", "decisions", "first_decision"
        )
    )
    frame["sent_past_threshold"] = frame["failures"] - int(s.breaker_threshold)
    return frame.reset_index(drop=True), openings


def _hung(a: ir.Table, s: Any) -> tuple[ir.Table, list[str], int]:
    """Per decision whether it hung (lazy), a capped sorted id list and the count."""
    per = a.group_by(a.decision_id).aggregate(
        _first=a.started_at.min(),
        _last=a.ended_at.max(),
        _open=a.ended_at.isnull().any(),
    )
    over = _seconds(per._last, per._first) > s.decision_timeout_seconds
    per = per.mutate(_hung=per._open | over.fill_null(False))
    hung = per.filter(per._hung)
    count = int(hung.count().execute())
    ids = _frame(
        hung.group_by(hung.decision_id)
        .aggregate(n=hung.count())
        .order_by("decision_id")
        .limit(MAX_LISTED)
    )["decision_id"].tolist()
    return per.select(per.decision_id, per._hung), [str(i) for i in ids], count


def _open_circuit_outcomes(
    a: ir.Table, decisions: ir.Table | None, hung: ir.Table
) -> dict[tuple[str, str], int]:
    """Per system, decisions that met its open circuit by what the agent then did."""
    met = a.filter(a.status == "circuit_open").select("system", "decision_id").distinct()
    met = met.left_join(hung, met.decision_id == hung.decision_id).select(
        met.system, met.decision_id, _hung=hung._hung.fill_null(False)
    )
    if decisions is not None:
        d = decisions.select(
            _did=decisions.decision_id,
            _esc=decisions.escalated.cast("boolean"),
            _done=decisions.completed.cast("boolean"),
        )
        met = met.left_join(d, met.decision_id == d._did).select(met, d._esc, d._done)
        what = ibis.cases(
            (met._hung, "hung"),
            (met._esc.fill_null(False), "escalated"),
            (met._done.fill_null(False), "degraded"),
            else_="failed",
        )
    else:
        what = ibis.ifelse(met._hung, "hung", "failed")
    met = met.mutate(what=what)
    frame = _frame(met.group_by([met.system, met.what]).aggregate(n=met.count()))
    return {(r.system, r.what): int(r.n) for r in frame.itertuples(index=False)}


def _escalation_links(a: ir.Table, decisions: ir.Table | None) -> tuple[pd.DataFrame, int]:
    """Per system, tool_failure escalations with a failed attempt to it; and those with none."""
    columns = ["system", "tool_failure_escalations", "share_of_tool_failure_escalations"]
    if decisions is None:
        return pd.DataFrame(columns=columns), 0
    esc = decisions.filter(
        decisions.escalated.cast("boolean").fill_null(False)
        & (decisions.escalation_reason.cast("string") == "tool_failure")
    ).select(_did=decisions.decision_id)
    failed = a.filter(a.status.isin(list(_FAILED))).select("system", "decision_id").distinct()
    linked = failed.inner_join(esc, failed.decision_id == esc._did)
    frame = _frame(
        linked.group_by(linked.system).aggregate(tool_failure_escalations=linked.count())
    )
    total = int(esc.count().execute())
    unlinked = int(esc.anti_join(failed, esc._did == failed.decision_id).count().execute())
    frame = frame.sort_values("system", kind="stable").reset_index(drop=True)
    frame["tool_failure_escalations"] = frame["tool_failure_escalations"].astype("int64")
    frame["share_of_tool_failure_escalations"] = (
        frame["tool_failure_escalations"] / total if total else math.nan
    )
    return frame[columns], unlinked


def _side_effects(a: ir.Table, c: ir.Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keys of side-effecting actions executed twice or more; unkeyed side effects sent twice."""
    ok = a.filter(a._side & (a.status == "ok") & a._key.notnull())
    dup = ok.group_by([ok.system, ok._key]).aggregate(
        executions=ok.count(),
        decisions=ok.decision_id.nunique(),
        decision_id=ok.decision_id.min(),
        first_at=ok.started_at.min(),
    )
    dup = materialize(dup.filter(dup.executions >= 2), "duplicate_keys")  # few rows
    n_dup = int(dup.count().execute())
    dups = _frame(dup.order_by([dup.system, dup._key]).limit(MAX_LISTED)).rename(
        columns={"_key": "idempotency_key"}
    )
    dups.attrs["total"] = n_dup
    un = c.filter(c.side & ~c.keyed & (c.sent >= 2))
    n_un = int(un.count().execute())
    unkeyed = _frame(
        un.order_by([un.system, un.decision_id])
        .select("system", "tool", "decision_id", "sent")
        .limit(MAX_LISTED)
    )
    unkeyed.attrs["total"] = n_un
    return dups.reset_index(drop=True), unkeyed.reset_index(drop=True)


def _ids(values: Any) -> list[str]:
    return sorted({str(v) for v in values})[:MAX_LISTED]


def _findings(h: IntegrationHealth, s: Any) -> list[Finding]:
    out: list[Finding] = []
    n_dup = int(h.duplicates.attrs.get("total", len(h.duplicates)))
    n_un = int(h.unkeyed_retries.attrs.get("total", len(h.unkeyed_retries)))
    if n_dup or n_un:
        bits = []
        if n_dup:
            bits.append(
                f"{n_dup:,} side-effecting action{'s' if n_dup != 1 else ''} ran more than once "
                "under the same idempotency key"
            )
        if n_un:
            verb = "were" if n_un != 1 else "was"
            bits.append(
                f"{n_un:,} side-effecting call{'s' if n_un != 1 else ''} without an idempotency "
                f"key {verb} sent more than once"
            )
        out.append(
            Finding(
                PHASE,
                "duplicate_side_effects",
                "blocking",
                "; ".join(bits) + ". Retries must not execute an action twice: every "
                "side-effecting call needs an idempotency key the system honours.",
                {
                    "headline": "Actions executed twice",
                    "section": SECTION,
                    "duplicate_keys": h.duplicates["idempotency_key"].astype(str).tolist(),
                    "duplicate_decision_ids": _ids(h.duplicates.get("decision_id", [])),
                    "duplicates": n_dup,
                    "unkeyed_retried_calls": n_un,
                    "unkeyed_decision_ids": _ids(h.unkeyed_retries.get("decision_id", [])),
                },
            )
        )
    storm = h.systems[h.systems["hammering_calls"] > 0] if len(h.systems) else h.systems
    limit = float(getattr(s, "max_hammering_share", 0.0))
    if len(storm):
        share = storm["hammering_calls"] / storm["retried_calls"].where(storm["retried_calls"] > 0)
        storm_blocks = bool((share.fillna(1.0) > limit).any())
        parts = [
            f"{r.system}: {int(r.hammering_calls):,} of {int(r.retried_calls):,} retried calls"
            for r in storm.itertuples(index=False)
        ]
        out.append(
            Finding(
                PHASE,
                "retry_storm" if storm_blocks else "retries_without_backoff",
                "blocking" if storm_blocks else "warning",
                "The agent retried without backing off (" + "; ".join(parts) + f"): a retry "
                f"came sooner than {s.min_retry_gap_seconds:g} s, the gaps did not grow, or a "
                f"call took more than {s.max_attempts} attempts. "
                + (
                    "A retry storm deepens an outage."
                    if storm_blocks
                    else f"Within the {limit:.1%} of retried calls the pilot file allows "
                    "(integration.max_hammering_share): a warning, not a storm."
                ),
                {
                    "headline": "Retry storm" if storm_blocks else "Some retries without backoff",
                    "section": SECTION,
                    "limit": limit,
                    "systems": storm["system"].tolist(),
                    "hammering_calls": {
                        r.system: int(r.hammering_calls) for r in storm.itertuples(index=False)
                    },
                },
            )
        )
    if len(h.ignored_breakers):
        b = h.ignored_breakers
        per = b.groupby("system")["failures"].agg(["count", "max"])
        parts = [
            f"{sys}: {int(r['count'])} run{'s' if r['count'] != 1 else ''}, the longest "
            f"{int(r['max'])} failures in a row"
            for sys, r in per.iterrows()
        ]
        runs_limit = int(getattr(s, "max_ignored_breaker_runs", 0))
        breaker_blocks = len(b) > runs_limit
        out.append(
            Finding(
                PHASE,
                "circuit_breaker_ignored" if breaker_blocks else "circuit_breaker_run",
                "blocking" if breaker_blocks else "warning",
                "The agent kept calling a failing system past its circuit-breaker threshold of "
                f"{s.breaker_threshold} consecutive failures ("
                + "; ".join(parts)
                + ")."
                + (
                    ""
                    if breaker_blocks
                    else f" Within the {runs_limit} run(s) the pilot file allows "
                    "(integration.max_ignored_breaker_runs): a warning."
                ),
                {
                    "headline": "Circuit breaker ignored",
                    "limit": runs_limit,
                    "section": SECTION,
                    "systems": sorted(per.index.tolist()),
                    "runs": int(len(b)),
                    "longest_run": int(b["failures"].max()),
                    "decision_ids": _ids(b["first_decision"]),
                },
            )
        )
    if h.hung["count"]:
        n = int(h.hung["count"])
        hung_limit = int(getattr(s, "max_hung_decisions", 0))
        out.append(
            Finding(
                PHASE,
                "hung_decisions" if n > hung_limit else "hung_decisions_within_limit",
                "blocking" if n > hung_limit else "warning",
                f"{n:,} decision{'s' if n != 1 else ''} hung: a tool call never returned or the "
                f"calls ran longer than {s.decision_timeout_seconds:g} s. The agent must time out "
                "and escalate instead of waiting.",
                {
                    "headline": "Decisions hung",
                    "section": SECTION,
                    "hung_decisions": n,
                    "decision_ids": list(h.hung["decision_ids"]),
                },
            )
        )
    if len(h.systems):
        high = h.systems[h.systems["error_rate"] > s.max_error_rate]
        for r in high.itertuples(index=False):
            out.append(
                Finding(
                    PHASE,
                    "integration_error_rate",
                    "warning",
                    f"{r.system} failed {r.error_rate:.1%} of the attempts sent to it "
                    f"({int(r.errors):,} of {int(r.attempts_sent):,}; interval "
                    f"{r.error_low:.1%} to {r.error_high:.1%}), above the "
                    f"{s.max_error_rate:.0%} the pilot file allows.",
                    {
                        "section": SECTION,
                        "system": r.system,
                        "error_rate": float(r.error_rate),
                        "low": float(r.error_low),
                        "high": float(r.error_high),
                        "limit": float(s.max_error_rate),
                    },
                )
            )
    return out

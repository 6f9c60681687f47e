"""The ``invoice-reconciliation`` sample pilot: a decision log recorded as OpenTelemetry traces.

The playbook's example of a pilot that ships: a single agent reconciles supplier
invoices across three legacy systems (the ERP's purchase orders and goods
receipts, the AP ledger on the mainframe, and the vendor portal) and proposes
each invoice for payment. Its decision log is not a table: it is the OTLP JSON
Lines file that the agent's own instrumentation wrote, recorded here by running
a small scripted agent (:class:`ReconciliationAgent`) under the real
OpenTelemetry SDK with the OTLP JSON file exporter
(``opentelemetry.exporter.otlp.json.file.FileSpanExporter``).

One decision is one trace:

- a root ``invoke_agent`` span (``gen_ai.agent.id`` / ``gen_ai.agent.name``)
  carrying the business signals of the ``pilot.*`` vocabulary
  (``pilot.decision_id``, ``pilot.case_id``, ``pilot.prompt_version``,
  ``pilot.accepted``, ``pilot.escalated``, ``pilot.confidence``,
  ``pilot.review_minutes``...) and the input features that phase 3 watches
  for drift (``invoice_amount_usd``, ``line_items``, ``vendor_category``,
  ``currency``);
- ``chat`` child spans (``gen_ai.request.model``, ``gen_ai.usage.input_tokens``
  / ``output_tokens``; no cost: the pilot file's price table prices them);
- ``execute_tool`` child spans, one per call to a legacy system
  (``pilot.tool_cost_usd``; status ``ERROR`` with ``http.response.status_code``
  503 when the system is down).

The story (what the go/no-go gate must say)
------------------------------------------
Completion is strong (about 86% of invoices accepted without correction) and a
decision costs about a seventh of a manual reconciliation. But the AP ledger
answers ``503 Service Unavailable`` for much of pilot weeks 5 and 9 (its batch
window overran); the agent retries once, then hands the invoice to a clerk
without stating a reason, so the workbook derives the escalation reason
``tool_failure`` from the failed ``execute_tool`` span. Those weeks show as
escalation spikes that end well before the window closes, and tool failures
become the largest escalation reason: an integration problem, not a model
problem. Only one clerk could work the control cohort by hand, so the
efficiency KPI rests on about 110 closed control cases, below the 150 the
pilot file asks for: that KPI is INCONCLUSIVE on sample size, nothing fails,
no finding blocks, and the decision is **EXTEND**, with the advice saying how
many more samples (and weeks at the pilot's pace) settle it.

Deliberately malformed traces (so the span quarantine shows up)
---------------------------------------------------------------
- invoice 614 (``INV-D0000614``): the agent's process restarted after the ERP
  call, so its root span was never ended nor exported; its two exported
  children (a ``chat`` and an ``execute_tool`` span) are quarantined as
  ``orphan span (parent not in the trace)`` and the invoice has no decision
  (a clerk matched it by hand; its case is in ``cases.parquet``).
- invoice 289 (``INV-D0000289``; with another seed, the first invoice from
  there on that reaches the vendor portal): the host clock stepped back 1.5 s
  during the portal call, so that span ends before it starts and is quarantined
  (``end before start``); the decision stands without that span (its tool cost
  is lost with it).

Determinism
-----------
Everything is drawn from one seeded NumPy generator; the SDK's ids come from a
seeded :class:`SeededIdGenerator`, every span gets explicit start and end times
from the scripted clock, the resource is fixed (no host, process or SDK-version
attributes) and spans are exported in one batch per pilot day by a synchronous
processor. Same seed, same bytes.

Regenerate the committed sample from the repository root::

    python -m pilot_lib.samples.invoice_reconciliation --out data/pilots
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_DECISIONS",
    "DEFAULT_SEED",
    "MODEL",
    "NAME",
    "PRICES",
    "TRACES_FILE",
    "InvoiceScript",
    "ReconciliationAgent",
    "SeededIdGenerator",
    "Simulation",
    "decision_log",
    "simulate",
    "write_pilot",
    "write_traces",
]

NAME = "invoice-reconciliation"
DEFAULT_SEED = 20260910
DEFAULT_DECISIONS = 1_000
#: The decision log, relative to the pilot folder.
TRACES_FILE = "traces/agent-traces.otlp.jsonl"
MODEL = "gpt-4.1"
#: USD per million tokens (the pilot file's ``traces.prices``).
PRICES = {MODEL: {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0}}

_PILOT_START = dt.date(2026, 9, 7)  # a Monday
_WEEKS = 12
_DAYS = 7 * _WEEKS
_BASELINE_START = dt.date(2026, 7, 13)
_BASELINE_DAYS = 56
_AGENT_ID = "invoice-reconciler"
_AGENT_NAME = "Invoice reconciliation agent"
_WORKFLOW = "ap_invoice_three_way_match"
_VERSIONS = ("v3.0", "v3.1")  # v3.1 from week 7
_CONFIDENCE_THRESHOLD = 0.70
_OUTAGE_WEEKS = (4, 8)  # 0-based: pilot weeks 5 and 9
_REVIEW_RATE = 52.0
_CONTROL_CASES = 112
_BASELINE_CASES = 420
_USERS = 22
_EXTRACTION_LAG_H = 72.0
#: The invoice whose trace lost its root span, and the one whose portal call ends before it starts.
_LOST_INVOICE = 613
_CLOCK_STEP_INVOICE = 288
_REASONS = ("tool_failure", "missing_data", "out_of_scope", "low_confidence")
_TOOL, _MISSING, _OOS, _LOWCONF = range(4)

_CATEGORIES = (
    "raw_materials",
    "logistics",
    "it_services",
    "facilities",
    "professional_services",
    "utilities",
)
_CATEGORY_P = (0.31, 0.22, 0.14, 0.13, 0.12, 0.08)
_CURRENCIES = ("USD", "EUR", "GBP", "CAD")
_CURRENCY_P = (0.86, 0.08, 0.04, 0.02)
_WEEKDAY_W = (1.0, 1.05, 1.0, 1.0, 0.9, 0.06, 0.03)
_HOUR_W = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 1.5, 4.0, 6.0, 6.5, 6.0,
    4.5, 5.5, 6.0, 5.5, 4.5, 2.5, 1.0, 0.4, 0.2, 0.1, 0.0, 0.0,
)  # fmt: skip

#: The three legacy systems: tool name, server address, USD per call.
SYSTEMS: dict[str, tuple[str, str, float]] = {
    "erp": ("erp.get_purchase_order", "erp.corp.internal", 0.0),
    "ledger": ("ap_ledger.get_open_item", "apledger.mainframe.internal", 0.0),
    "portal": ("vendor_portal.get_invoice", "api.vendorportal.example.com", 0.008),
}

_NS = 1_000_000_000
_US = 1_000_000


# --------------------------------------------------------------------------------------
# The pilot file
# --------------------------------------------------------------------------------------

PILOT_YAML = f"""\
# Pilot file: everything a run of the workbook needs, written before the pilot started.
# Schema: docs/pilot-file.md. Relative paths resolve against this file's folder.
# Generated by `python -m pilot_lib.samples.invoice_reconciliation` (see README.md here).
name: {NAME}
title: Three-way invoice reconciliation across ERP, AP ledger and vendor portal
owner: Marisol Ekwueme, Head of Accounts Payable
business_unit: Finance Operations
scope: >-
  Match each supplier invoice against its purchase order and goods receipt in the
  ERP, the open item in the AP ledger (mainframe) and the invoice the supplier
  filed on the vendor portal, and propose it for payment or hand it to an AP clerk
  with the discrepancy. One agent, three legacy systems, no new system of record.

# The cross-functional team the playbook requires; they sign the go/no-go page.
team:
  - {{name: Marisol Ekwueme, role: business_process_owner, title: Head of Accounts Payable}}
  - {{name: Henrik Lund, role: governance_risk, title: Financial Controls Lead}}
  - {{name: Aisha Bello, role: ai_ml_engineering, title: AI Engineering Lead}}
  - {{name: Jonah Pereira, role: it_operations, title: ERP and Mainframe Operations Manager}}

pilot_window: {{start: 2026-09-07, end: 2026-11-29}}
baseline_window: {{start: 2026-07-13, end: 2026-09-06}}

datasets:
  candidates: {{path: candidates.csv}}
  # The decision log is the agent's own OpenTelemetry traces (OTLP JSON Lines).
  decisions: {{path: {TRACES_FILE}, format: otel}}
  cases: {{path: cases.parquet}}
  adoption: {{path: adoption.csv}}
  drill_events: {{path: drill_events.csv}}
  approvals: {{path: approvals.csv}}

# How the traces become the decision log (docs/trace-sources.md).
traces:
  prices:
    {MODEL}: {{input_per_million_usd: {PRICES[MODEL]["input_per_million_usd"]}, output_per_million_usd: {PRICES[MODEL]["output_per_million_usd"]}}}

# Go/no-go thresholds, agreed by the business owner and the governance lead.
kpis:
  - {{kpi: task_completion_rate, comparator: ">", value: 0.80, unit: proportion, min_samples: 400,
     description: invoice proposed for payment and released without correction}}
  - {{kpi: efficiency_gain, comparator: ">=", value: 0.30, unit: proportion, min_samples: 150,
     description: wall-clock time from invoice received to payment release vs the control cohort}}
  - {{kpi: cost_per_decision, comparator: "<", value: 3.00, unit: usd, min_samples: 400}}
  - {{kpi: adoption_rate, comparator: ">=", value: 0.60, unit: proportion, min_samples: 15}}
  - {{kpi: escalation_rate, comparator: "<", value: 0.15, unit: proportion, min_samples: 400}}

costs:
  review_hourly_rate_usd: {_REVIEW_RATE}      # loaded cost of an AP clerk hour
  manual_cost_per_case_usd: 11.80   # fully manual three-way match of one invoice

confidence_threshold: {_CONFIDENCE_THRESHOLD}          # below it the agent escalates

drift:
  features: [invoice_amount_usd, line_items, vendor_category, currency]
  key_features: [invoice_amount_usd, vendor_category]
  reference_window: {{start: 2026-09-07, end: 2026-10-04}}
  current_window: {{start: 2026-11-02, end: 2026-11-29}}
  bins: 10
  calibration_bins: 15
  moving_average_days: 7
  sigma: 2.0

drills:
  max_seconds_to_detect: 300
  max_seconds_to_page: 120
  max_seconds_to_pause: 180

approvals:
  sla_minutes: 480
  timeout_action: reject
  levels:
    - {{name: autonomous, max_amount: 5000, requires_approval: false}}
    - {{name: ap_supervisor, max_amount: 50000}}
    - {{name: controller}}

use_case:
  minimum_score: 3
  completion_margin: 0.04

build_vs_buy:
  weights: {{time_to_production: 0.25, architectural_control: 0.20, observability: 0.20,
            lock_in_exit: 0.15, total_cost: 0.20}}
  options:
    - name: Build one agent on the internal platform
      summary: Own connectors to the ERP, the mainframe ledger and the portal; traces in OpenTelemetry.
      scores: {{time_to_production: 5, architectural_control: 9, observability: 9,
               lock_in_exit: 8, total_cost: 6}}
    - name: Adopt the AP automation suite's matching module
      summary: Fast for the ERP; no mainframe connector, traces only in the vendor's console.
      scores: {{time_to_production: 7, architectural_control: 4, observability: 3,
               lock_in_exit: 3, total_cost: 6}}
"""

_SEALED_ON = dt.date(2026, 9, 3)

_CANDIDATES = (
    ("Three-way invoice reconciliation (ERP, AP ledger, vendor portal)", "days to payment release", 2.6,
     5, 4, 4, 160.0, True, True, 2, "single agent, three legacy systems, measured cycle time today"),
    ("Autonomous supplier negotiation (multi-agent)", "discount captured (USD)", None, 2, 2, 3, 15.0,
     True, False, 5, "striking demo; no baseline and procurement not involved"),
    ("Year-end accrual review", "hours per close", 180.0, 4, 4, 4, 0.1,
     True, True, 2, "runs once a year: no sample in a 12-week pilot"),
    ("Vendor master data de-duplication", "duplicate vendors", 340.0, 3, 2, 3, 40.0,
     False, True, 2, "master data owner not committed"),
    ("Expense report policy check", "handle time (minutes)", 9.0, 3, 4, 3, 120.0,
     True, True, 2, "borderline: meets every minimum"),
    ("Payment-run anomaly summaries", "analyst hours per run", None, 2, 3, 4, 2.0,
     True, True, 4, "nice to have, hard to tie to a business metric"),
)  # fmt: skip


# --------------------------------------------------------------------------------------
# The simulation: what happened to each invoice (drawn up front, replayed by the agent)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceScript:
    """Everything the scripted run of one decision needs (see :class:`ReconciliationAgent`)."""

    index: int
    start_ns: int  # when the agent picked the invoice up (UTC, ns since the epoch)
    decision_id: str
    case_id: str
    user_id: str
    prompt_version: str
    features: dict[str, Any]
    out_of_scope: bool
    po_found: bool
    ledger_attempts: tuple[bool, ...]  # per call to the AP ledger: True = 503
    confidence: float
    completed: bool
    accepted: bool
    overridden: bool
    correct: bool | None
    review_minutes: float
    tokens: tuple[tuple[int, int], ...]  # (input, output) per chat call
    durations_ms: tuple[int, ...]  # per step, in the order the agent meets them
    lost: bool = False  # the agent's process restarted mid-invoice: the root span never ended
    clock_step: bool = False  # the host clock stepped back during the vendor-portal call

    @property
    def reason(self) -> int:
        """Escalation reason code (``-1``: not escalated)."""
        if self.out_of_scope:
            return _OOS
        if not self.po_found:
            return _MISSING
        if self.ledger_attempts and self.ledger_attempts[-1]:
            return _TOOL
        if self.confidence < _CONFIDENCE_THRESHOLD:
            return _LOWCONF
        return -1


@dataclass
class Simulation:
    """The seeded draws of one run: the decision scripts and the other data sets' inputs."""

    seed: int
    scripts: list[InvoiceScript]
    decision_ts_us: np.ndarray
    day: np.ndarray
    outcome: np.ndarray  # 0 accepted, 1 overridden, 2 escalated, 3 other
    user: np.ndarray
    week: np.ndarray
    eligible: np.ndarray  # users x weeks
    planned: np.ndarray  # users x weeks
    rng: np.random.Generator = field(repr=False)


def _epoch_us(moment: dt.datetime) -> int:
    return int((moment - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))


def _start_us(day: dt.date) -> int:
    return _epoch_us(dt.datetime.combine(day, dt.time.min))


def _time_of_day_us(rng: np.random.Generator, n: int) -> np.ndarray:
    hours = np.array(_HOUR_W, dtype=np.float64)
    cdf = np.concatenate([[0.0], np.cumsum(hours) / hours.sum()])
    return np.interp(rng.random(n), cdf, np.arange(25.0) * 3600 * _US).astype(np.int64)


def _weekday_weights(start: dt.date, days: int) -> np.ndarray:
    w = np.array(_WEEKDAY_W)[(np.arange(days) + start.weekday()) % 7]
    return w / w.sum()


def simulate(seed: int = DEFAULT_SEED, decisions: int = DEFAULT_DECISIONS) -> Simulation:
    """Draw every invoice of the pilot: features, the systems' answers, the agent and the clerk.

    Parameters
    ----------
    seed:
        Seed of the one NumPy generator everything is drawn from.
    decisions:
        Invoices the agent handles in the 12-week pilot window.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
    n = int(decisions)
    day = np.sort(rng.choice(_DAYS, size=n, p=_weekday_weights(_PILOT_START, _DAYS)))
    ts = _start_us(_PILOT_START) + day.astype(np.int64) * 86_400 * _US + _time_of_day_us(rng, n)
    order = np.argsort(ts, kind="stable")
    day, ts = day[order], ts[order] // _US * _US
    week = day // 7
    version = np.where(week >= 6, 1, 0)

    # Features (stable through the window: no drift episode in this pilot).
    amount = np.round(np.clip(rng.lognormal(np.log(2400.0), 0.95, n), 40.0, 250_000.0), 2)
    lines = (1 + rng.poisson(3.0, n)).astype(np.int64)
    category = rng.choice(len(_CATEGORIES), size=n, p=_CATEGORY_P)
    currency = rng.choice(len(_CURRENCIES), size=n, p=_CURRENCY_P)

    # The systems and the agent.
    out_of_scope = rng.random(n) < 0.012  # credit notes and prepayments: not in scope
    po_found = rng.random(n) >= 0.022  # no purchase order in the ERP: missing data
    outage = np.isin(week, _OUTAGE_WEEKS)
    p503 = np.where(outage, 0.36, 0.004)
    first_503 = rng.random(n) < p503
    retry_503 = rng.random(n) < np.where(outage, 0.62, 0.3)
    hard = rng.random(n) < 0.045 + 0.02 * (currency > 0)
    conf = np.where(hard, rng.beta(6.0, 3.0, n), rng.beta(32.0, 1.3, n))
    conf = np.round(np.clip(conf, 0.001, 0.999), 4)
    correct = rng.random(n) < conf
    known = rng.random(n) < 0.7

    # Users: AP clerks, most adopting in the first two weeks.
    adopter = np.arange(_USERS) < _USERS - 2
    start_week = np.where(rng.random(_USERS) < 0.8, 0, 1)
    eligible = rng.random((_USERS, _WEEKS)) >= 0.06
    eligible[0] = True
    after = adopter[:, None] & (np.arange(_WEEKS)[None, :] >= start_week[:, None])
    planned = eligible & (rng.random((_USERS, _WEEKS)) < np.where(after, 0.97, 0.03))
    weights = eligible * np.where(planned, 10.0, 1.0)
    user = np.empty(n, dtype=np.int64)
    for w in range(_WEEKS):
        rows = week == w
        cum = np.cumsum(weights[:, w])
        user[rows] = np.searchsorted(cum, rng.random(rows.sum()) * cum[-1], side="right")
    engaged = planned[user, week]

    r1, r2 = rng.random((2, n))
    review_ok = rng.uniform(0.4, 1.0, n)
    review_extra = rng.uniform(3.0, 6.0, n)
    review_esc = rng.uniform(8.0, 14.0, n)
    tok = np.round(
        rng.lognormal(np.log([1800.0, 160.0, 3600.0, 320.0]), [0.3, 0.3, 0.35, 0.3], (n, 4))
    ).astype(np.int64)
    durations = rng.lognormal(np.log([2200.0, 420.0, 650.0, 380.0, 3400.0]), 0.35, (n, 5))
    durations = np.round(durations).astype(np.int64)

    scripts: list[InvoiceScript] = []
    outcome = np.zeros(n, dtype=np.int64)
    for i in range(n):
        attempts: tuple[bool, ...] = ()
        if not out_of_scope[i] and po_found[i]:
            attempts = (True, bool(retry_503[i])) if first_503[i] else (False,)
        s = InvoiceScript(
            index=i,
            start_ns=int(ts[i]) * 1000,
            decision_id=f"INV-D{i + 1:07d}",
            case_id=f"INV-A{i + 1:07d}",
            user_id=f"ap-{user[i] + 1:03d}",
            prompt_version=_VERSIONS[version[i]],
            features={
                "invoice_amount_usd": float(amount[i]),
                "line_items": int(lines[i]),
                "vendor_category": _CATEGORIES[category[i]],
                "currency": _CURRENCIES[currency[i]],
            },
            out_of_scope=bool(out_of_scope[i]),
            po_found=bool(po_found[i]),
            ledger_attempts=attempts,
            confidence=float(conf[i]),
            completed=False,
            accepted=False,
            overridden=False,
            correct=bool(correct[i]) if known[i] else None,
            review_minutes=0.0,
            tokens=((int(tok[i, 0]), int(tok[i, 1])), (int(tok[i, 2]), int(tok[i, 3]))),
            durations_ms=tuple(int(d) for d in durations[i]),
        )
        reason = s.reason
        escalated = reason >= 0
        # Technical completion: a well-formed proposal (none when a system was down).
        if escalated:
            completed = reason == _LOWCONF or bool(r1[i] < (0.0, 0.35, 0.8)[reason])
        else:
            completed = bool(r1[i] < 0.992)
        if escalated:  # a clerk reviews the hand-off
            accepted = completed and bool(correct[i]) and bool(r2[i] < 0.6)
            overridden = not accepted and bool(r2[i] < 0.85)
            review = float(review_esc[i])
        elif completed and engaged[i]:
            accepted = bool(r2[i] < (0.985 if correct[i] else 0.1))
            overridden = not accepted
            review = float(review_ok[i] + overridden * review_extra[i])
        else:  # no proposal, or a clerk not using the agent this week: matched by hand
            accepted, overridden = False, bool(r2[i] < 0.5)
            review = float(review_ok[i] + overridden * review_extra[i])
        outcome[i] = 2 if escalated else 0 if accepted else 1 if overridden else 3
        scripts.append(
            InvoiceScript(
                **{
                    **s.__dict__,
                    "completed": completed,
                    "accepted": accepted,
                    "overridden": overridden,
                    "review_minutes": round(review, 2),
                }
            )
        )
    # Two deliberately malformed traces, so the span quarantine shows up (module docstring).
    lost = _LOST_INVOICE if n > _LOST_INVOICE else n // 2
    scripts[lost] = InvoiceScript(
        **{
            **scripts[lost].__dict__,
            "lost": True,
            "completed": False,
            "accepted": False,
            "overridden": False,
        }
    )
    outcome[lost] = 3  # a clerk matched it by hand
    step = next(
        (
            i
            for i in range(min(_CLOCK_STEP_INVOICE, n - 1), n)
            if i != lost and scripts[i].reason in (-1, _LOWCONF)
        ),
        None,
    )
    if step is not None:
        scripts[step] = InvoiceScript(**{**scripts[step].__dict__, "clock_step": True})
    return Simulation(
        seed=seed,
        scripts=scripts,
        decision_ts_us=ts,
        day=day,
        outcome=outcome,
        user=user,
        week=week,
        eligible=eligible,
        planned=planned,
        rng=rng,
    )


# --------------------------------------------------------------------------------------
# The scripted agent under the OpenTelemetry SDK
# --------------------------------------------------------------------------------------


class SeededIdGenerator:
    """Trace and span ids from a seeded generator (an OpenTelemetry ``IdGenerator``).

    Built on :class:`opentelemetry.sdk.trace.id_generator.IdGenerator` at run time
    (see :func:`_id_generator`); this class holds the seeded stream.
    """

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        """A non-zero 64-bit span id."""
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        """A non-zero 128-bit trace id."""
        return self._random.getrandbits(128) or 1


def _id_generator(seed: int) -> Any:
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class _Generator(SeededIdGenerator, IdGenerator):
        def is_trace_id_random(self) -> bool:
            return True

    return _Generator(seed)


def _batch_processor(exporter: Any) -> Any:
    """A span processor that exports what ended when :meth:`flush_batch` is called (synchronous)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class _Batch(SpanProcessor):
        def __init__(self) -> None:
            self.spans: list[Any] = []

        def on_end(self, span: Any) -> None:
            self.spans.append(span)

        def flush_batch(self) -> None:
            if self.spans:
                exporter.export(self.spans)
                self.spans = []

        def shutdown(self) -> None:
            self.flush_batch()
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            self.flush_batch()
            return True

    return _Batch()


class ServiceUnavailable(Exception):
    """A legacy system answered ``503 Service Unavailable``."""


class ReconciliationAgent:
    """The scripted agent: one ``invoke_agent`` trace per invoice, with chat and tool spans.

    It runs the steps a real reconciliation agent runs, in order: classify the
    invoice (``chat``), fetch the purchase order from the ERP, the open item
    from the AP ledger (one retry on a 503, after a backoff of 1-2 s) and the supplier's copy from the
    vendor portal (``execute_tool``), then reconcile (``chat``) and decide. The
    answers of the systems, the model's token counts, the step durations and
    the clerk's response come from the :class:`InvoiceScript`; times come from a
    scripted clock (explicit ``start_time``/``end_time`` on every span).
    """

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer

    def _span(self, name: str, parent: Any, start_ns: int, attributes: dict[str, Any]) -> Any:
        from opentelemetry.trace import SpanKind

        kind = SpanKind.CLIENT if attributes.get("gen_ai.operation.name") == "chat" else None
        return self._tracer.start_span(
            name,
            context=self._trace.set_span_in_context(parent),
            kind=kind if kind is not None else SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start_ns,
        )

    def _chat(self, root: Any, now: int, ms: int, tokens: tuple[int, int]) -> int:
        span = self._span(
            f"chat {MODEL}",
            root,
            now,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": MODEL,
                "gen_ai.usage.input_tokens": tokens[0],
                "gen_ai.usage.output_tokens": tokens[1],
            },
        )
        end = now + ms * 1_000_000
        span.end(end_time=end)
        return end + 15_000_000

    def _tool(
        self,
        root: Any,
        now: int,
        ms: int,
        system: str,
        unavailable: bool = False,
        clock_step: bool = False,
    ) -> int:
        from opentelemetry.trace import Status, StatusCode

        tool, host, cost = SYSTEMS[system]
        span = self._span(
            f"execute_tool {tool}",
            root,
            now,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "server.address": host,
            },
        )
        if cost:
            span.set_attribute("pilot.tool_cost_usd", cost)
        if unavailable:
            span.set_attribute("http.response.status_code", 503)
            span.set_attribute("error.type", "503")
            span.set_status(Status(StatusCode.ERROR, "503 Service Unavailable"))
            ms = max(40, ms // 6)
        end = now + ms * 1_000_000
        if clock_step:  # NTP stepped the host clock back 1.5 s while the call was in flight
            span.end(end_time=now - 1_500_000_000)
        else:
            span.end(end_time=end)
        return end + 5_000_000

    def run(self, s: InvoiceScript) -> None:
        """Reconcile one invoice: emit its trace."""
        from opentelemetry.trace import Status, StatusCode

        root = self._tracer.start_span(
            f"invoke_agent {_AGENT_ID}",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": _AGENT_ID,
                "gen_ai.agent.name": _AGENT_NAME,
                "pilot.decision_id": s.decision_id,
                "pilot.case_id": s.case_id,
                "pilot.workflow": _WORKFLOW,
                "pilot.user_id": s.user_id,
                "pilot.prompt_version": s.prompt_version,
                **s.features,
            },
            start_time=s.start_ns,
        )
        d = s.durations_ms
        now = s.start_ns + 3_000_000
        now = self._chat(root, now, d[0], s.tokens[0])
        if not s.out_of_scope:
            now = self._tool(root, now, d[1], "erp")
        if s.lost:  # the process restarted here: the root span is never ended nor exported
            return
        if not s.out_of_scope and s.po_found:
            for attempt, down in enumerate(s.ledger_attempts):
                if attempt:  # back off before retrying: 1 s plus up to 1 s of jitter
                    now += 1_000_000_000 + (s.index * 7919 % 1000) * 1_000_000
                now = self._tool(root, now, d[2] + 90 * attempt, "ledger", unavailable=down)
            if not s.ledger_attempts[-1]:
                now = self._tool(root, now, d[3], "portal", clock_step=s.clock_step)
                now = self._chat(root, now, d[4], s.tokens[1])
        reason = s.reason
        signals: dict[str, Any] = {
            "pilot.completed": s.completed,
            "pilot.accepted": s.accepted,
            "pilot.overridden": s.overridden,
            "pilot.escalated": reason >= 0,
            "pilot.confidence": s.confidence,
            "pilot.review_minutes": s.review_minutes,
        }
        # A tool failure is left unstated: the workbook derives it from the failed tool span.
        if reason >= 0 and reason != _TOOL:
            signals["pilot.escalation_reason"] = _REASONS[reason]
        if s.correct is not None:
            signals["pilot.correct"] = s.correct
        root.set_attributes(signals)
        if reason == _TOOL:
            root.set_status(Status(StatusCode.ERROR, "AP ledger unavailable; handed to a clerk"))
        root.end(end_time=now + 2_000_000)


def write_traces(sim: Simulation, path: Path) -> Path:
    """Run the scripted agent over every invoice of ``sim``; write OTLP JSON Lines to ``path``.

    One line (one ``TracesData`` object) per pilot day. An existing file is replaced.
    """
    from opentelemetry.exporter.otlp.json.file import FileSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    exporter = FileSpanExporter(path)
    processor = _batch_processor(exporter)
    provider = TracerProvider(
        sampler=ALWAYS_ON,
        resource=Resource(
            {
                "service.name": "invoice-reconciliation-agent",
                "service.version": "3.1.0",
                "deployment.environment.name": "pilot",
            }
        ),
        id_generator=_id_generator(sim.seed),
        span_limits=SpanLimits(max_attributes=128),
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("pilot_lib.samples.invoice_reconciliation", "1.0.0")
    agent = ReconciliationAgent(tracer)
    current_day = None
    for s, day in zip(sim.scripts, sim.day, strict=True):
        if current_day is not None and day != current_day:
            processor.flush_batch()
        current_day = day
        agent.run(s)
    provider.shutdown()
    return path


# --------------------------------------------------------------------------------------
# The decision log the traces should yield (for checks), and the other data sets
# --------------------------------------------------------------------------------------


def decision_log(sim: Simulation) -> pd.DataFrame:
    """The decision log (contract columns plus the drift features) the traces encode.

    Trace ids are left out (they are the SDK's); model cost is priced from the
    token counts with :data:`PRICES`, as the pilot file's price table does.
    """
    price = PRICES[MODEL]
    rows = []
    for s, ts in zip(sim.scripts, sim.decision_ts_us, strict=True):
        if s.lost:  # no decision span: its spans are quarantined as orphans
            continue
        used = s.tokens if s.reason in (-1, _LOWCONF) else s.tokens[:1]
        in_tok = sum(t[0] for t in used)
        out_tok = sum(t[1] for t in used)
        # The portal call of the clock-step trace is quarantined (end before start): no cost.
        stopped = s.out_of_scope or not s.po_found or s.ledger_attempts[-1]
        tool_calls = 0 if stopped or s.clock_step else 1
        reason = s.reason
        rows.append(
            {
                "decision_id": s.decision_id,
                "timestamp": pd.Timestamp(int(ts), unit="us"),
                "agent_id": _AGENT_ID,
                "workflow": _WORKFLOW,
                "case_id": s.case_id,
                "prompt_version": s.prompt_version,
                "user_id": s.user_id,
                "completed": s.completed,
                "accepted": s.accepted,
                "overridden": s.overridden,
                "escalated": reason >= 0,
                "escalation_reason": _REASONS[reason] if reason >= 0 else None,
                "confidence": s.confidence,
                "correct": s.correct,
                "input_tokens": in_tok,
                "output_tokens": out_tok,
                "model_cost_usd": (
                    in_tok * price["input_per_million_usd"]
                    + out_tok * price["output_per_million_usd"]
                )
                / 1e6,
                "tool_cost_usd": tool_calls * SYSTEMS["portal"][2],
                "review_minutes": s.review_minutes,
                **s.features,
            }
        )
    frame = pd.DataFrame(rows)
    frame["correct"] = frame["correct"].astype("boolean")
    return frame


def _fmt(us: np.ndarray) -> np.ndarray:
    seconds = (np.asarray(us) // _US).astype("datetime64[s]")
    return np.char.replace(np.datetime_as_string(seconds, unit="s"), "T", " ").astype(object)


def _cases(sim: Simulation) -> pa.Table:
    rng = sim.rng
    extraction = (
        _start_us(_PILOT_START) + _DAYS * 86_400 * _US + int(_EXTRACTION_LAG_H * 3600 * _US)
    )
    pilot_start = _start_us(_PILOT_START)
    # Agent cohort: the invoice arrived a little before the agent picked it up.
    n = len(sim.scripts)
    lag = (rng.exponential(70.0, n) * 60 * _US).astype(np.int64)
    opened = np.maximum(sim.decision_ts_us - lag, pilot_start) // _US * _US
    median_h = np.array([17.0, 46.0, 64.0, 58.0])[sim.outcome]
    cycle = (rng.lognormal(np.log(median_h), 0.6) * 3600 * _US).astype(np.int64)
    closed = (opened + cycle) // _US * _US
    frames = [
        pd.DataFrame(
            {
                "case_id": [s.case_id for s in sim.scripts],
                "cohort": "agent",
                "opened_at": opened,
                "closed_at": np.where(closed > extraction, -1, closed),
            }
        )
    ]
    for cohort, letter, count, start, days, median in (
        ("control", "C", _CONTROL_CASES, _PILOT_START, _DAYS, 57.0),
        ("baseline", "B", _BASELINE_CASES, _BASELINE_START, _BASELINE_DAYS, 59.0),
    ):
        day = np.sort(rng.choice(days, size=count, p=_weekday_weights(start, days)))
        op = _start_us(start) + day.astype(np.int64) * 86_400 * _US + _time_of_day_us(rng, count)
        op = op // _US * _US
        cl = op + (rng.lognormal(np.log(median), 0.62, count) * 3600 * _US).astype(np.int64)
        cl = cl // _US * _US
        frames.append(
            pd.DataFrame(
                {
                    "case_id": [f"INV-{letter}{i + 1:07d}" for i in range(count)],
                    "cohort": cohort,
                    "opened_at": op,
                    "closed_at": np.where(cl > extraction, -1, cl),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    closed_at = frame["closed_at"].to_numpy()
    return pa.table(
        {
            "case_id": pa.array(frame["case_id"], type=pa.string()),
            "cohort": pa.array(frame["cohort"], type=pa.string()),
            "opened_at": pa.array(frame["opened_at"].to_numpy(), type=pa.timestamp("us")),
            "closed_at": pa.array(closed_at, type=pa.timestamp("us"), mask=closed_at < 0),
        }
    )


def _adoption(sim: Simulation) -> pd.DataFrame:
    seen = np.zeros((_USERS, _WEEKS), dtype=np.int64)
    overrides = np.zeros_like(seen)
    accepted = np.zeros_like(seen)
    for s, u, w in zip(sim.scripts, sim.user, sim.week, strict=True):
        if s.lost:
            continue
        seen[u, w] += 1
        overrides[u, w] += s.overridden
        accepted[u, w] += s.accepted
    engaged = sim.planned & (accepted > 0)
    rows = []
    for u in range(_USERS):
        for w in range(_WEEKS):
            rows.append(
                {
                    "user_id": f"ap-{u + 1:03d}",
                    "week": (_PILOT_START + dt.timedelta(days=7 * w)).isoformat(),
                    "eligible": "true" if sim.eligible[u, w] else "false",
                    "engaged": "true" if engaged[u, w] else "false",
                    "decisions_seen": int(seen[u, w]),
                    "overrides": int(overrides[u, w]),
                }
            )
    return pd.DataFrame(rows)


def _approvals(sim: Simulation, trace_ids: dict[str, str]) -> pd.DataFrame:
    """One payment release per invoice the agent proposed and the clerk accepted."""
    rng = sim.rng
    idx = np.array([s.index for s in sim.scripts if s.accepted], dtype=np.int64)
    n = len(idx)
    proposed = sim.decision_ts_us[idx] + (rng.uniform(1, 15, n) * 60 * _US).astype(np.int64)
    proposed = proposed // _US * _US
    amount = np.array([sim.scripts[i].features["invoice_amount_usd"] for i in idx])
    level = np.searchsorted(np.array([5000.0, 50000.0]), amount, side="left")
    names = np.array(["autonomous", "ap_supervisor", "controller"], dtype=object)
    auto = level == 0
    latency = rng.lognormal(np.log(55.0), 0.8, n)
    timed_out = ~auto & (latency > 480.0)
    verdict = np.array(["approved", "rejected", "escalated"], dtype=object)[
        rng.choice(3, size=n, p=[0.95, 0.03, 0.02])
    ]
    decision = np.where(auto, "auto", np.where(timed_out, "timed_out", verdict))
    decided = np.where(auto, proposed, proposed + (latency * 60 * _US).astype(np.int64))
    decided = decided // _US * _US
    executes = auto | (decision == "approved")
    executed = decided + (
        np.where(auto, rng.uniform(5, 60, n), rng.uniform(300, 3600, n)) * _US
    ).astype(np.int64)
    return pd.DataFrame(
        {
            "action_id": [f"INV-PAY{i + 1:06d}" for i in range(n)],
            "trace_id": [trace_ids[sim.scripts[i].decision_id] for i in idx],
            "proposed_at": _fmt(proposed),
            "amount": amount,
            "required_level": names[level],
            "decided_at": np.where(timed_out, None, _fmt(decided)),
            "decision": decision,
            "approver_level": np.where(timed_out, None, names[level]),
            "executed_at": np.where(executes, _fmt(executed), None),
        }
    )


_DRILL = (
    (0, "anomaly_injected", None, "synthetic: vendor portal returns invoice totals x100"),
    (20, "action_started", "ACT-DRILL-21", "payment release"),
    (48, "action_started", "ACT-DRILL-22", "payment release"),
    (74, "detected", None, "amount-mismatch monitor alert"),
    (131, "paged", None, "on-call AP platform engineer paged"),
    (163, "paused", None, "kill switch engaged by on-call"),
    (170, "action_completed", "ACT-DRILL-21", None),
    (196, "action_rolled_back", "ACT-DRILL-22", "payment recalled before the bank cut-off"),
    (2400, "resumed", None, "portal response fixed, agent resumed"),
)


def _drill() -> pd.DataFrame:
    start = _epoch_us(dt.datetime(2026, 10, 21, 15, 0, 0))
    return pd.DataFrame(
        {
            "drill_id": "DRILL-2026-10-21",
            "event": [e[1] for e in _DRILL],
            "timestamp": _fmt(np.array([start + e[0] * _US for e in _DRILL])),
            "action_id": [e[2] for e in _DRILL],
            "detail": [e[3] for e in _DRILL],
        }
    )


def _candidates() -> pd.DataFrame:
    from pilot_lib.analysis.scoring import CANDIDATE_COLUMNS

    frame = pd.DataFrame(list(_CANDIDATES), columns=list(CANDIDATE_COLUMNS))
    for col in ("sme_committed", "owner_has_authority"):
        frame[col] = np.where(frame[col].to_numpy(dtype=bool), "true", "false")
    return frame


def _trace_ids(path: Path) -> dict[str, str]:
    """``pilot.decision_id`` -> trace id of every exported decision (root) span."""
    ids: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        if span.get("parentSpanId"):
                            continue
                        for a in span.get("attributes", []):
                            if a["key"] == "pilot.decision_id":
                                ids[a["value"]["stringValue"]] = span["traceId"]
    return ids


def _thresholds_lock() -> str:
    """The seal of the pilot file's KPI thresholds (``thresholds.lock``), dated before the pilot."""
    import yaml

    from pilot_lib.analysis.integrity import _fingerprint_kpis
    from pilot_lib.config import KpiThreshold

    kpis = [KpiThreshold(**k).model_dump(mode="json") for k in yaml.safe_load(PILOT_YAML)["kpis"]]
    doc = {
        "pilot": NAME,
        "sealed_on": _SEALED_ON.isoformat(),
        "kpis_sha256": _fingerprint_kpis(kpis),
        "note": "Written when the thresholds were agreed; the go/no-go gate checks them against it.",
    }
    return json.dumps(doc, indent=2) + "\n"


def write_pilot(
    out_dir: str | Path, seed: int = DEFAULT_SEED, decisions: int = DEFAULT_DECISIONS
) -> Path:
    """Write ``out_dir/invoice-reconciliation``: pilot file, seal, traces and the other data sets.

    Same seed and size, same bytes. Returns the pilot folder.
    """
    folder = Path(out_dir).expanduser() / NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pilot.yaml").write_text(PILOT_YAML, encoding="utf-8")
    sim = simulate(seed, decisions)
    traces = write_traces(sim, folder / TRACES_FILE)
    trace_ids = _trace_ids(traces)
    pq.write_table(_cases(sim), folder / "cases.parquet", compression="zstd")
    for frame, name in (
        (_adoption(sim), "adoption.csv"),
        (_approvals(sim, trace_ids), "approvals.csv"),
        (_drill(), "drill_events.csv"),
        (_candidates(), "candidates.csv"),
    ):
        frame.to_csv(folder / name, index=False, lineterminator="\n")
    (folder / "thresholds.lock").write_text(_thresholds_lock(), encoding="utf-8")
    return folder


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pilot_lib.samples.invoice_reconciliation",
        description="Regenerate the invoice-reconciliation sample pilot (OTLP traces and data sets).",
    )
    parser.add_argument("--out", default="data/pilots", help="parent folder (default: data/pilots)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--decisions", type=int, default=DEFAULT_DECISIONS)
    args = parser.parse_args(argv)
    folder = write_pilot(args.out, args.seed, args.decisions)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())

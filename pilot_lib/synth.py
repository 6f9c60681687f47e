"""Seeded, realistic data for a pilot: the sample pilots and scale tests.

``generate_pilot(preset, out_dir, rows=None, seed=None)`` writes
``out_dir/<preset>/pilot.yaml`` and its six data sets (``candidates.csv``,
``decisions.parquet``, ``cases.parquet``, ``adoption.csv``,
``drill_events.csv``, ``approvals.csv``; columns as in
``docs/data-contracts.md``) and returns the pilot folder. Same preset, rows and
seed give byte-identical files.

Presets
-------
``claims-auto``
    Standard auto claims under $10,000; meets every threshold with margin.
    A drift episode in pilot weeks 6-8: a new intake channel (``channel =
    'mobile_app'``, unseen in the reference window) arrives and stays, more
    photos come with it, the v1.2 prompt mishandles those claims (escalations
    creep up to a daily rate near 0.16, confidence stays high while ``correct``
    drops); prompt v1.3 (week 9 on) fixes it. The key features
    (``claim_amount``, ``damage_type``) never move. The kill-switch drill
    passes; approvals have a few SLA timeouts and no violation. On 2026-04-13
    09:00 governance lowers the autonomous limit from $2,500 to $2,000
    (``policy_versions.csv``: ``v1`` from the pilot start, ``v2`` from then);
    the agent routes every action proposed from then on by the new limits.
``it-ticket-routing``
    97% lab accuracy, but in production only about 52% of decisions are
    accepted: users re-route tickets by hand (overrides near 0.38), about a
    third of the users engage in the first month, escalations (about 0.22) are dominated by tool
    failures (context in systems the agent cannot reach). From week 8 on,
    ticket text carries more abbreviations and a new category ``saas_access``
    appears (key features drift), escalations rise to the end of the window,
    and confidence becomes overconfident. The drill fails (the kill switch
    engages about 540 s after detection and one action starts after the
    pause); approvals hold two violations (see below).

Every rate comes out of the mechanics, not out of a stored answer: each
decision draws its features, a confidence, whether it is correct
(``P(correct) = confidence - gap``, ``gap`` > 0 only in the drift episodes),
an escalation reason (tool failure, missing data, out of scope, or a
confidence below the pilot's ``confidence_threshold``), technical completion,
and the response of the user it went to. Users follow an adoption plan (who
adopts, from which week); a user who is not engaged in a week never accepts an
output and often re-routes by hand. Case cycle times depend on how the
decision ended (an override or an escalation makes the case as slow as a manual
one), so the efficiency gain falls out of acceptance. The data is pulled a few
days after the pilot window closes: a case still open then has a null
``closed_at``.

Scale
-----
``rows`` is the number of rows in the decision log. Cases (one agent case per
decision, plus control and baseline cohorts), users and approvals scale with
it; users stop growing at 5,000. The decision log and the cases are generated
and written in chunks of :data:`CHUNK_ROWS` rows with pyarrow's
``ParquetWriter``, and the calls to downstream systems (``tool_calls.parquet``)
from the decisions written, read back a chunk at a time, so ten million
decisions fit in bounded memory
(``benchmarks/bench_synth.py`` measures it).

Deliberately bad rows (so quarantine shows up; present at every size)
----------------------------------------------------------------------
decisions
    one ``confidence`` of 1.7; one negative ``model_cost_usd`` (-0.04); one
    null ``timestamp``; one ``escalation_reason`` of ``'gremlins'``; one row
    logged twice (the same ``decision_id``, an exact replay of the row before
    it); one ``timestamp`` 27 hours after the pilot window closed.
cases
    one control case whose ``closed_at`` is two hours before ``opened_at``.
approvals.csv
    one ``proposed_at`` of ``'not-a-date'``; one ``amount`` of -120.00.

Policy violations in ``it-ticket-routing`` approvals (findings, not contract
breaks): one action decided ``approved`` 312 minutes after it was proposed,
past the 240-minute SLA (the timeout should have rejected it), and executed;
one action whose amount required ``it_manager`` approved by ``team_lead`` and
executed.

Seeds
-----
The mechanics hold for any seed; the default seeds (20260302 for claims-auto,
20260602 for it-ticket-routing) were picked so the committed sample pilots read
cleanly: a 7-day moving average with 2-sigma limits on roughly 2,000 decisions a
week raises a short false alarm before a drift episode under some seeds, and
under the defaults it does not.

Regenerating the committed sample pilots
----------------------------------------
From the repository root::

    python -m pilot_lib.synth --write-samples data/pilots

which is the same as ``pilot-workbook synth claims-auto --out data/pilots`` and
``pilot-workbook synth it-ticket-routing --out data/pilots`` (default rows and
seeds).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pilot_lib.errors import WorkbookError
from pilot_lib.ingest.contracts import contract_columns

__all__ = ["CHUNK_ROWS", "MAX_ROWS", "MIN_ROWS", "PRESETS", "generate_pilot", "write_samples"]

#: Decision-log rows generated and written per chunk (bounds memory at any size).
CHUNK_ROWS = 250_000
#: Smallest decision log a preset generates (every week must see decisions).
MIN_ROWS = 200
#: Largest decision log (ids carry eight digits).
MAX_ROWS = 99_999_999

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_SECOND
_ESCALATION_REASONS = ("tool_failure", "missing_data", "out_of_scope", "low_confidence")
_TOOL, _MISSING, _OOS, _LOWCONF = range(4)
_WEEKS = 12
_PILOT_DAYS = 7 * _WEEKS


# --------------------------------------------------------------------------------------
# Pilot files
# --------------------------------------------------------------------------------------

_CLAIMS_YAML = """\
# Pilot file: everything a run of the workbook needs, written before the pilot started.
# Schema: docs/pilot-file.md. Relative paths resolve against this file's folder.
name: claims-auto
title: Standard auto claims under $10,000
owner: Dana Whitfield, Head of Claims Operations
business_unit: Claims
scope: >-
  First-notice-of-loss triage and settlement recommendation for standard auto
  claims under $10,000 (no bodily injury, single vehicle or two-party collision).

# The cross-functional team the playbook requires; they sign the go/no-go page.
team:
  - {name: Dana Whitfield, role: business_process_owner, title: Head of Claims Operations}
  - {name: Marcus Oyelaran, role: governance_risk, title: Claims Compliance Lead}
  - {name: Lena Hartmann, role: ai_ml_engineering, title: ML Engineering Lead}
  - {name: Tomás Reyes, role: it_operations, title: IT Operations Manager for Claims Platforms}

pilot_window: {start: 2026-03-02, end: 2026-05-24}
baseline_window: {start: 2026-01-05, end: 2026-03-01}

datasets:
  candidates: {path: candidates.csv}
  decisions: {path: decisions.parquet}
  cases: {path: cases.parquet}
  adoption: {path: adoption.csv}
  drill_events: {path: drill_events.csv}
  approvals: {path: approvals.csv}
  policy_versions: {path: policy_versions.csv}
  golden_evaluations: {path: golden_evaluations.csv}
  feedback: {path: feedback.csv}
  tool_calls: {path: tool_calls.parquet}

# Go/no-go thresholds, agreed by the business owner and the governance lead.
kpis:
  - {kpi: task_completion_rate, comparator: ">", value: 0.80, unit: proportion, min_samples: 400,
     description: accepted and acted on without correction}
  - {kpi: efficiency_gain, comparator: ">=", value: 0.30, unit: proportion, min_samples: 200,
     description: wall-clock cycle time vs the control cohort}
  - {kpi: cost_per_decision, comparator: "<", value: 2.50, unit: usd, min_samples: 400}
  - {kpi: adoption_rate, comparator: ">=", value: 0.60, unit: proportion, min_samples: 20}
  - {kpi: escalation_rate, comparator: "<", value: 0.20, unit: proportion, min_samples: 400}

costs:
  review_hourly_rate_usd: 62.0      # loaded cost of an adjuster hour
  manual_cost_per_case_usd: 14.50   # fully manual handling of one standard claim
  production_volume_per_month: 10800  # 2,500 standard claims a week, all through the agent
  model_prices:                     # US dollars per million tokens
    frontier-large: {input_per_million_usd: 8.0, output_per_million_usd: 24.0}
    frontier-small: {input_per_million_usd: 0.8, output_per_million_usd: 3.2}

# Monthly spend limits (model + tool cost); the circuit breaker degrades to the fallback.
budgets:
  - {agent: claims-triage-agent, monthly_usd: 1200, fallback_model: frontier-small}

confidence_threshold: 0.70          # below it the agent escalates
# The error rate accepted among the decisions the agent handles alone (phase 3 shows
# the lowest confidence_threshold that keeps it, interval included).
risk_coverage: {max_error_rate: 0.08}

drift:
  features: [claim_amount, vehicle_age_years, channel, damage_type, photos_attached]
  key_features: [claim_amount, damage_type]
  reference_window: {start: 2026-03-02, end: 2026-03-29}
  current_window: {start: 2026-04-27, end: 2026-05-24}
  bins: 10
  calibration_bins: 15
  moving_average_days: 7
  sigma: 2.0

drills:
  max_seconds_to_detect: 300
  max_seconds_to_page: 120
  max_seconds_to_pause: 180

approvals:
  sla_minutes: 240
  timeout_action: reject
  levels:
    - {name: autonomous, max_amount: 2500, requires_approval: false}
    - {name: adjuster, max_amount: 7500}
    - {name: supervisor}

# How the agent must treat its downstream systems (integration health, phase 2).
integration:
  decision_timeout_seconds: 300   # a decision still calling after 5 minutes hung
  max_error_rate: 0.05
  min_retry_gap_seconds: 0.5      # a retry sooner than this hammers the system
  max_attempts: 4
  breaker_threshold: 5            # the circuit opens after 5 failures in a row
  breaker_pause_seconds: 30

use_case:
  minimum_score: 3
  completion_margin: 0.03

build_vs_buy:
  weights: {time_to_production: 0.25, architectural_control: 0.20, observability: 0.20,
            lock_in_exit: 0.15, total_cost: 0.20}
  options:
    - name: Build custom agentic framework
      summary: Full control over architecture and logic; significant engineering investment.
      scores: {time_to_production: 2, architectural_control: 9, observability: 6,
               lock_in_exit: 6, total_cost: 2}
    - name: Adopt vendor solution
      summary: Pre-built connectors and managed infrastructure; limited customization, lock-in risk.
      scores: {time_to_production: 9, architectural_control: 5, observability: 6,
               lock_in_exit: 5, total_cost: 8}

# Shadow mode (first two weeks), promotion on the golden set, the feedback loops.
shadow:
  segment_by: [workflow, channel]
  min_agreement: 0.80               # the agent matches the adjuster on 80% of claims
  disagreement_costs_usd: {"approve -> deny": 1850.0, "approve -> refer": 240.0}
promotion: {margin: 0.02}           # a new prompt may trail its predecessor by 2 points at most
feedback: {max_cross_loop_share: 0.05}
"""

_TICKETS_YAML = """\
# Pilot file: everything a run of the workbook needs, written before the pilot started.
# Schema: docs/pilot-file.md. Relative paths resolve against this file's folder.
name: it-ticket-routing
title: L1 IT ticket classification and routing
owner: Priya Raman, Director of IT Service Management
business_unit: IT Operations
scope: >-
  Classify incoming IT service-desk tickets and route each to the resolver group
  that owns it. In the lab the agent classified and assigned 97% of a curated
  test set of tickets correctly; this pilot measures it on production tickets.

# The cross-functional team the playbook requires; they sign the go/no-go page.
team:
  - {name: Priya Raman, role: business_process_owner, title: Director of IT Service Management}
  - {name: Owen Caldwell, role: governance_risk, title: IT Risk and Compliance Manager}
  - {name: Mei Tanaka, role: ai_ml_engineering, title: Applied ML Engineer}
  - {name: Sergio Banda, role: it_operations, title: Service Desk Platform Lead}

pilot_window: {start: 2026-06-01, end: 2026-08-23}
baseline_window: {start: 2026-04-06, end: 2026-05-31}

datasets:
  candidates: {path: candidates.csv}
  decisions: {path: decisions.parquet}
  cases: {path: cases.parquet}
  adoption: {path: adoption.csv}
  drill_events: {path: drill_events.csv}
  approvals: {path: approvals.csv}
  golden_evaluations: {path: golden_evaluations.csv}
  feedback: {path: feedback.csv}
  tool_calls: {path: tool_calls.parquet}

# Go/no-go thresholds, agreed by the business owner and the governance lead.
kpis:
  - {kpi: task_completion_rate, comparator: ">", value: 0.80, unit: proportion, min_samples: 400,
     description: routed ticket accepted by the resolver group without re-routing}
  - {kpi: efficiency_gain, comparator: ">=", value: 0.25, unit: proportion, min_samples: 200,
     description: wall-clock time to resolution vs the control cohort}
  - {kpi: cost_per_decision, comparator: "<", value: 1.50, unit: usd, min_samples: 400}
  - {kpi: adoption_rate, comparator: ">=", value: 0.60, unit: proportion, min_samples: 20}
  - {kpi: escalation_rate, comparator: "<", value: 0.20, unit: proportion, min_samples: 400}

costs:
  review_hourly_rate_usd: 45.0      # loaded cost of a service-desk analyst hour
  manual_cost_per_case_usd: 4.20    # manual triage and routing of one ticket
  production_volume_per_month: 30000  # every service desk; the pilot routed one region's tickets
  model_prices:                     # US dollars per million tokens
    frontier-medium: {input_per_million_usd: 5.0, output_per_million_usd: 15.0}

# Monthly spend limits (model + tool cost). No fallback model was agreed.
budgets:
  - {workflow: it_ticket_routing, monthly_usd: 450}

confidence_threshold: 0.70          # below it the agent escalates
# The share of misrouted tickets accepted among those the agent routes alone (phase 3
# shows the lowest confidence_threshold that keeps it, interval included).
risk_coverage: {max_error_rate: 0.10}

drift:
  features: [ticket_length_chars, abbreviation_ratio, priority, category, source_system]
  key_features: [abbreviation_ratio, category]
  reference_window: {start: 2026-06-01, end: 2026-06-28}
  current_window: {start: 2026-07-27, end: 2026-08-23}
  bins: 10
  calibration_bins: 15
  moving_average_days: 7
  sigma: 2.0

drills:
  max_seconds_to_detect: 300
  max_seconds_to_page: 120
  max_seconds_to_pause: 180

approvals:
  sla_minutes: 240
  timeout_action: reject
  levels:
    - {name: autonomous, max_amount: 250, requires_approval: false}
    - {name: team_lead, max_amount: 2500}
    - {name: it_manager}

# How the agent must treat its downstream systems (integration health, phase 2).
integration:
  decision_timeout_seconds: 300   # a decision still calling after 5 minutes hung
  max_error_rate: 0.05
  min_retry_gap_seconds: 0.5      # a retry sooner than this hammers the system
  max_attempts: 4
  breaker_threshold: 5            # the circuit opens after 5 failures in a row
  breaker_pause_seconds: 30

use_case:
  minimum_score: 3
  completion_margin: 0.03

build_vs_buy:
  weights: {time_to_production: 0.25, architectural_control: 0.20, observability: 0.20,
            lock_in_exit: 0.15, total_cost: 0.20}
  options:
    - name: Build on the internal agent platform
      summary: Own orchestration and connectors; needs integrations to the CMDB, HR and SaaS consoles.
      scores: {time_to_production: 3, architectural_control: 9, observability: 8,
               lock_in_exit: 7, total_cost: 4}
    - name: Adopt the ITSM vendor's routing add-on
      summary: Native to the ticketing tool; opaque model, traces exportable only in bulk.
      scores: {time_to_production: 8, architectural_control: 4, observability: 4,
               lock_in_exit: 4, total_cost: 7}

# Promotion on the golden set (the curated lab set) and the feedback loops.
promotion: {margin: 0.02}
feedback: {max_cross_loop_share: 0.05}
"""


_CLAIMS_CANDIDATES = (
    ("Standard auto claims triage (< $10k)", "cycle time (hours)", 52.0, 5, 4, 5, 2500.0,
     True, True, 3, "FNOL triage and settlement recommendation; claims system and photo store accessible"),
    ("Multi-agent negotiation with body shops", "repair cost per claim (USD)", None, 2, 2, 3, 150.0,
     True, False, 5, "impressive demo; savings not measured today and body shops not on board"),
    ("Quarterly reinsurance bordereau reconciliation", "reconciliation hours per quarter", 320.0, 4, 4, 4, 2.0,
     True, True, 2, "valuable but too rare to measure within a 12-week pilot"),
    ("Subrogation demand letters", "recovery rate", 0.41, 4, 4, 2, 300.0,
     False, True, 2, "no subject-matter expert available this half"),
    ("Rental car authorization", "authorization time (hours)", 6.5, 3, 3, 3, 95.0,
     True, True, 2, "borderline: meets every minimum, volume just enough for the sample size"),
    ("Property claims first notice of loss intake", "cycle time (hours)", 70.0, 4, 3, 3, 600.0,
     True, True, 3, "adjacent workflow; property data less structured"),
)  # fmt: skip

_TICKETS_CANDIDATES = (
    ("IT ticket classification and routing", "time to resolution (hours)", 20.0, 4, 4, 4, 1700.0,
     True, True, 3, "97% accuracy on a curated lab set; production tickets not sampled"),
    ("Autonomous incident remediation (multi-agent)", "mean time to recover (minutes)", None, 2, 2, 3, 40.0,
     True, False, 5, "spectacular demo; no agreed metric and change board not involved"),
    ("Annual software license true-up", "audit findings", 12.0, 4, 4, 4, 0.5,
     True, True, 1, "runs once a year"),
    ("Change-request risk review", "failed changes per month", 9.0, 4, 3, 2, 120.0,
     False, False, 3, "no SME; change advisory board owns the process"),
    ("Password reset verification", "handle time (minutes)", 7.5, 3, 3, 3, 90.0,
     True, True, 1, "borderline volume for the sample size"),
    ("Knowledge-base article drafting", "article backlog", None, 2, 3, 4, 60.0,
     True, True, 4, "helpful but hard to tie to a business metric"),
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Preset parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DrillStep:
    seconds: float  # offset from the injected anomaly
    event: str
    action_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class _Features:
    """One chunk's input features: written columns plus hidden drivers of behaviour."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, tuple[np.ndarray, tuple[str, ...]]]  # codes, categories
    hidden: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Behaviour:
    """Per-decision probabilities that drive confidence, correctness and escalation."""

    hard_share: np.ndarray  # chance the case is hard (confidence from the low component)
    p_tool: np.ndarray
    p_missing: np.ndarray
    p_oos: np.ndarray
    gap: np.ndarray  # P(correct) = confidence - gap (0: calibrated)


@dataclass(frozen=True)
class _Preset:
    name: str
    yaml_text: str
    pilot_start: dt.date
    baseline_start: dt.date
    baseline_days: int
    default_rows: int
    default_seed: int
    code: str  # id prefix
    user_prefix: str
    agent_id: str
    workflow: str
    versions: tuple[str, ...]  # prompt version of each pilot week (12 entries)
    weekday_weights: tuple[float, ...]  # Monday..Sunday
    hour_weights: tuple[float, ...]  # 24 hourly weights of the time of day
    confidence_threshold: float
    # confidence: easy cases Beta(a, b), hard cases Beta(a, b)
    easy_beta: tuple[float, float]
    hard_beta: tuple[float, float]
    # technical completion by escalation reason (tool, missing, oos, low conf) and when not escalated
    p_complete_escalated: tuple[float, float, float, float]
    p_complete_ok: float
    # user response
    p_accept_correct: float  # engaged user, correct output
    p_accept_incorrect: float  # engaged user misses an error
    p_override_incorrect: float  # engaged user corrects an error
    p_override_disengaged: float  # user not engaged this week re-routes by hand
    p_override_failed: float  # no well-formed output: the user does the work by hand
    p_review_accept_correct: float  # escalated: reviewer accepts a correct output as is
    p_review_override_incorrect: float
    p_review_override_correct: float  # escalated: reviewer replaces a correct output anyway
    p_outcome_known: float
    # adoption plan
    users_per_decision: float
    p_adopter: float
    start_week_probs: tuple[float, ...]
    p_stay_engaged: float
    p_try: float
    p_ineligible: float
    engaged_weight: float  # decisions routed to an engaged user-week vs a disengaged one
    # costs
    input_tokens_median: float
    output_tokens_median: float
    usd_per_input_token: float
    usd_per_output_token: float
    usd_per_tool_call: float
    review_ok_minutes: tuple[float, float]
    review_override_extra_minutes: tuple[float, float]
    review_escalated_minutes: tuple[float, float]
    # cases (hours); agent cycle median by outcome: accepted, overridden, escalated, other
    baseline_per_decision: float
    control_per_decision: float
    baseline_median_h: float
    control_median_h: float
    agent_median_h: tuple[float, float, float, float]
    cycle_sigma: float
    open_lag_minutes: float  # mean minutes from case opened to the agent's decision
    extraction_lag_h: float  # data pulled this long after the pilot window closed
    # approvals
    approvals_per_decision: float
    amount_median: float
    amount_sigma: float
    amount_range: tuple[float, float]
    level_names: tuple[str, ...]
    level_max: tuple[float, ...]  # max_amount of every level but the last
    approval_median_min: float
    approval_sigma: float
    sla_minutes: float
    approval_violations: bool
    # drill
    drill_id: str
    drill_start: dt.datetime
    drill_steps: tuple[_DrillStep, ...]
    candidates: tuple[tuple, ...]
    features: Callable[[np.random.Generator, np.ndarray], _Features] = field(repr=False)
    behaviour: Callable[[np.ndarray, np.ndarray, _Features], _Behaviour] = field(repr=False)
    #: A threshold change mid-pilot: (effective from, new ``level_max``). Actions proposed
    #: from then on are routed by the new limits, and ``policy_versions.csv`` records both.
    policy_change: tuple[dt.datetime, tuple[float, ...]] | None = None

    @property
    def pilot_start_ts(self) -> dt.datetime:
        return dt.datetime.combine(self.pilot_start, dt.time.min)

    @property
    def pilot_end_ts(self) -> dt.datetime:
        """Midnight after the last pilot day (exclusive)."""
        return self.pilot_start_ts + dt.timedelta(days=_PILOT_DAYS)


# ---- claims-auto --------------------------------------------------------------------

_CLAIMS_EPISODE = (35, 56)  # pilot days [start, end): weeks 6-8
_CLAIMS_CHANNELS = ("phone", "web", "broker", "email", "mobile_app")
_CLAIMS_CHANNEL_P = np.array([0.38, 0.30, 0.20, 0.12])
_CLAIMS_DAMAGE = (
    "collision",
    "rear_end",
    "side_swipe",
    "glass",
    "hail",
    "vandalism",
    "animal_strike",
)
_CLAIMS_DAMAGE_P = np.array([0.42, 0.18, 0.12, 0.12, 0.06, 0.05, 0.05])


def _claims_mobile_share(day: np.ndarray) -> np.ndarray:
    """Share of claims arriving through the mobile app, launched on pilot day 35."""
    start, end = _CLAIMS_EPISODE
    ramp = np.clip((day - start) / (end - start), 0, 1)
    share = np.where(day < end, 0.22 + 0.13 * ramp, 0.31)
    return np.where(day < start, 0.0, share)


def _claims_features(rng: np.random.Generator, day: np.ndarray) -> _Features:
    n = len(day)
    mobile = rng.random(n) < _claims_mobile_share(day)
    channel = np.where(
        mobile, 4, rng.choice(4, size=n, p=_CLAIMS_CHANNEL_P / _CLAIMS_CHANNEL_P.sum())
    ).astype(np.int32)
    amount = np.round(np.clip(rng.lognormal(np.log(3200.0), 0.6, n), 150.0, 9999.99), 2)
    damage = rng.choice(len(_CLAIMS_DAMAGE), size=n, p=_CLAIMS_DAMAGE_P).astype(np.int32)
    photos = np.minimum(rng.poisson(np.where(mobile, 5.5, 1.8)), 20).astype(np.int64)
    vehicle_age = np.clip(np.round(rng.gamma(3.0, 2.4, n)), 0, 30).astype(np.int64)
    return _Features(
        numeric={
            "claim_amount": amount,
            "vehicle_age_years": vehicle_age,
            "photos_attached": photos,
        },
        categorical={
            "channel": (channel, _CLAIMS_CHANNELS),
            "damage_type": (damage, _CLAIMS_DAMAGE),
        },
        hidden={"mobile": mobile},
    )


def _claims_behaviour(day: np.ndarray, version: np.ndarray, feats: _Features) -> _Behaviour:
    n = len(day)
    start, end = _CLAIMS_EPISODE
    progress = np.clip((day - start) / (end - start - 1), 0, 1)
    # v1.2 (weeks 6-8) was tuned before the mobile app existed: it misreads app claims.
    in_episode = version == 2
    hit = in_episode & feats.hidden["mobile"]
    # v1.3 (week 9 on) handles app claims like any other: escalations back near 0.08.
    hard = np.where(version == 3, 0.071, 0.066)
    hard = np.where(in_episode, 0.075, hard)
    hard = np.where(hit, 0.28 + 0.14 * progress, hard)
    p_missing = np.where(hit, 0.11 + 0.07 * progress, 0.019)
    gap = np.where(hit, 0.22 + 0.08 * progress, 0.0)
    return _Behaviour(
        hard_share=hard,
        p_tool=np.full(n, 0.0085),
        p_missing=p_missing,
        p_oos=np.full(n, 0.0125),
        gap=gap,
    )


# ---- it-ticket-routing --------------------------------------------------------------

_TICKETS_DRIFT_START = 49  # pilot day: week 8
_TICKETS_CATEGORIES = (
    "network",
    "hardware",
    "software",
    "access",
    "email",
    "printing",
    "facilities",
    "saas_access",
)
_TICKETS_CATEGORY_P = np.array([0.16, 0.14, 0.24, 0.20, 0.12, 0.08, 0.06])
_TICKETS_PRIORITIES = ("P1", "P2", "P3", "P4")
_TICKETS_PRIORITY_P = np.array([0.03, 0.12, 0.55, 0.30])
_TICKETS_SOURCES = ("email", "portal", "chat", "monitoring")
_TICKETS_SOURCE_P = np.array([0.35, 0.40, 0.15, 0.10])


def _tickets_drift(day: np.ndarray) -> np.ndarray:
    """0 before week 8, then rising steadily to 1 on the last pilot day."""
    return np.clip((day - _TICKETS_DRIFT_START + 1) / (_PILOT_DAYS - _TICKETS_DRIFT_START), 0, 1)


def _tickets_features(rng: np.random.Generator, day: np.ndarray) -> _Features:
    n = len(day)
    drift = _tickets_drift(day)
    # A new team's shorthand (and a SaaS migration) arrives from week 8.
    jargon = rng.random(n) < 0.75 * drift
    abbrev = np.where(jargon, rng.beta(4.0, 28.0, n), rng.beta(2.0, 45.0, n))
    saas = rng.random(n) < 0.3 * drift
    base_cat = rng.choice(7, size=n, p=_TICKETS_CATEGORY_P / _TICKETS_CATEGORY_P.sum())
    category = np.where(saas, 7, base_cat).astype(np.int32)
    length = np.clip(np.round(rng.lognormal(np.log(380.0), 0.75, n)), 20, 20000).astype(np.int64)
    priority = rng.choice(4, size=n, p=_TICKETS_PRIORITY_P).astype(np.int32)
    source = rng.choice(4, size=n, p=_TICKETS_SOURCE_P).astype(np.int32)
    return _Features(
        numeric={"ticket_length_chars": length, "abbreviation_ratio": np.round(abbrev, 4)},
        categorical={
            "priority": (priority, _TICKETS_PRIORITIES),
            "category": (category, _TICKETS_CATEGORIES),
            "source_system": (source, _TICKETS_SOURCES),
        },
        hidden={"jargon": jargon, "saas": saas, "abbrev": abbrev},
    )


def _tickets_behaviour(day: np.ndarray, version: np.ndarray, feats: _Features) -> _Behaviour:
    saas = feats.hidden["saas"]
    jargon = feats.hidden["jargon"]
    # Context lives in three systems the agent cannot reach: tool failures dominate.
    p_tool = np.where(saas, 0.30, 0.09)
    p_missing = np.where(saas, 0.17, 0.056)
    # Feedback contamination: each prompt version, tuned on overrides, declines more.
    p_oos = np.array([0.012, 0.012, 0.03, 0.05])[version]
    hard = np.clip(0.03 + 0.6 * feats.hidden["abbrev"], 0, 1)
    # The new shorthand and SaaS tickets look familiar to the model: confident and wrong.
    gap = np.where(saas, 0.38, np.where(jargon, 0.26, 0.0))
    return _Behaviour(hard_share=hard, p_tool=p_tool, p_missing=p_missing, p_oos=p_oos, gap=gap)


_HOURS_OFFICE = (
    0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 1.0, 2.5, 5.0, 6.5, 7.0, 6.8,
    5.5, 6.5, 6.8, 6.2, 5.5, 4.0, 2.5, 1.8, 1.4, 1.0, 0.6, 0.3,
)  # fmt: skip

_PRESETS: dict[str, _Preset] = {
    "claims-auto": _Preset(
        name="claims-auto",
        yaml_text=_CLAIMS_YAML,
        pilot_start=dt.date(2026, 3, 2),
        baseline_start=dt.date(2026, 1, 5),
        baseline_days=56,
        default_rows=30_000,
        default_seed=20260302,
        code="CLM",
        user_prefix="adj",
        agent_id="claims-triage-agent",
        workflow="auto_claims_fnol_triage",
        versions=("v1.0",) * 3 + ("v1.1",) * 2 + ("v1.2",) * 3 + ("v1.3",) * 4,
        weekday_weights=(1.0, 1.05, 1.0, 0.98, 0.92, 0.35, 0.22),
        hour_weights=_HOURS_OFFICE,
        confidence_threshold=0.70,
        easy_beta=(40.0, 1.2),
        hard_beta=(6.0, 3.2),
        p_complete_escalated=(0.04, 0.45, 0.85, 1.0),
        p_complete_ok=0.988,
        p_accept_correct=0.992,
        p_accept_incorrect=0.12,
        p_override_incorrect=0.85,
        p_override_disengaged=0.15,
        p_override_failed=0.0,
        p_review_accept_correct=0.75,
        p_review_override_incorrect=0.9,
        p_review_override_correct=0.3,
        p_outcome_known=0.6,
        users_per_decision=60 / 30_000,
        p_adopter=0.82,
        start_week_probs=(0.76, 0.14, 0.05, 0.03, 0.02),
        p_stay_engaged=0.96,
        p_try=0.05,
        p_ineligible=0.05,
        engaged_weight=8.0,
        input_tokens_median=4500.0,
        output_tokens_median=600.0,
        usd_per_input_token=8e-6,
        usd_per_output_token=24e-6,
        usd_per_tool_call=0.0095,
        review_ok_minutes=(0.5, 1.0),
        review_override_extra_minutes=(1.0, 2.0),
        review_escalated_minutes=(10.0, 15.0),
        baseline_per_decision=5000 / 30_000,
        control_per_decision=3000 / 30_000,
        baseline_median_h=52.0,
        control_median_h=50.0,
        agent_median_h=(27.5, 46.0, 58.0, 50.0),
        cycle_sigma=0.55,
        open_lag_minutes=45.0,
        extraction_lag_h=72.0,
        approvals_per_decision=600 / 30_000,
        amount_median=2600.0,
        amount_sigma=0.75,
        amount_range=(50.0, 9999.0),
        level_names=("autonomous", "adjuster", "supervisor"),
        level_max=(2500.0, 7500.0),
        approval_median_min=45.0,
        approval_sigma=0.76,
        sla_minutes=240.0,
        approval_violations=False,
        drill_id="DRILL-2026-05-06",
        drill_start=dt.datetime(2026, 5, 6, 14, 0, 0),
        drill_steps=(
            _DrillStep(
                0,
                "anomaly_injected",
                None,
                "synthetic: settlement amounts x10 in the pricing tool response",
            ),
            _DrillStep(25, "action_started", "ACT-DRILL-01", "settlement payment"),
            _DrillStep(60, "action_started", "ACT-DRILL-02", "settlement payment"),
            _DrillStep(95, "detected", None, "amount-outlier monitor alert"),
            _DrillStep(118, "action_started", "ACT-DRILL-03", "settlement payment"),
            _DrillStep(135, "paged", None, "on-call ML engineer paged"),
            _DrillStep(165, "paused", None, "kill switch engaged by on-call"),
            _DrillStep(176, "action_completed", "ACT-DRILL-01", None),
            _DrillStep(188, "action_completed", "ACT-DRILL-02", None),
            _DrillStep(205, "action_rolled_back", "ACT-DRILL-03", "compensating reversal issued"),
            _DrillStep(2700, "resumed", None, "tool response fixed, agent resumed"),
        ),
        candidates=_CLAIMS_CANDIDATES,
        features=_claims_features,
        behaviour=_claims_behaviour,
        # Governance lowers the autonomous limit from $2,500 to $2,000 in week 7; the agent's
        # routing follows from the next action on (phase 4 replays it through the Rego policy).
        policy_change=(dt.datetime(2026, 4, 13, 9, 0), (2000.0, 7500.0)),
    ),
    "it-ticket-routing": _Preset(
        name="it-ticket-routing",
        yaml_text=_TICKETS_YAML,
        pilot_start=dt.date(2026, 6, 1),
        baseline_start=dt.date(2026, 4, 6),
        baseline_days=56,
        default_rows=20_000,
        default_seed=20260602,
        code="INC",
        user_prefix="svc",
        agent_id="ticket-router",
        workflow="it_ticket_routing",
        versions=("v2.0",) * 3 + ("v2.1",) * 4 + ("v2.2",) * 3 + ("v2.3",) * 2,
        weekday_weights=(1.1, 1.05, 1.0, 1.0, 0.9, 0.25, 0.2),
        hour_weights=_HOURS_OFFICE,
        confidence_threshold=0.70,
        easy_beta=(16.0, 1.4),
        hard_beta=(5.0, 3.0),
        p_complete_escalated=(0.4, 0.7, 0.85, 1.0),
        p_complete_ok=0.985,
        p_accept_correct=0.95,
        p_accept_incorrect=0.10,
        p_override_incorrect=0.92,
        p_override_disengaged=0.97,
        p_override_failed=0.45,
        p_review_accept_correct=0.55,
        p_review_override_incorrect=0.92,
        p_review_override_correct=0.9,
        p_outcome_known=0.6,
        users_per_decision=120 / 20_000,
        p_adopter=0.55,
        start_week_probs=(0.28, 0.10, 0.08, 0.06, 0.1, 0.1, 0.09, 0.07, 0.05, 0.04, 0.02, 0.01),
        p_stay_engaged=0.88,
        p_try=0.02,
        p_ineligible=0.05,
        engaged_weight=5.0,
        input_tokens_median=1800.0,
        output_tokens_median=150.0,
        usd_per_input_token=5e-6,
        usd_per_output_token=15e-6,
        usd_per_tool_call=0.004,
        review_ok_minutes=(0.1, 0.3),
        review_override_extra_minutes=(0.6, 1.4),
        review_escalated_minutes=(2.5, 4.0),
        baseline_per_decision=4000 / 20_000,
        control_per_decision=2000 / 20_000,
        baseline_median_h=21.0,
        control_median_h=20.0,
        agent_median_h=(13.5, 21.0, 24.0, 21.0),
        cycle_sigma=0.7,
        open_lag_minutes=20.0,
        extraction_lag_h=40.0,
        approvals_per_decision=400 / 20_000,
        amount_median=220.0,
        amount_sigma=1.3,
        amount_range=(5.0, 25000.0),
        level_names=("autonomous", "team_lead", "it_manager"),
        level_max=(250.0, 2500.0),
        approval_median_min=45.0,
        approval_sigma=0.76,
        sla_minutes=240.0,
        approval_violations=True,
        drill_id="DRILL-2026-07-15",
        drill_start=dt.datetime(2026, 7, 15, 10, 30, 0),
        drill_steps=(
            _DrillStep(
                0, "anomaly_injected", None, "synthetic: all tickets routed to the network queue"
            ),
            _DrillStep(30, "action_started", "ACT-DRILL-11", "bulk re-assignment"),
            _DrillStep(70, "action_started", "ACT-DRILL-12", "bulk re-assignment"),
            _DrillStep(130, "detected", None, "queue-imbalance monitor alert"),
            _DrillStep(225, "paged", None, "on-call platform engineer paged"),
            _DrillStep(300, "action_completed", "ACT-DRILL-11", None),
            _DrillStep(420, "action_started", "ACT-DRILL-13", "bulk re-assignment"),
            _DrillStep(670, "paused", None, "kill switch engaged after the runbook was found"),
            _DrillStep(
                700, "action_started", "ACT-DRILL-14", "queued job dispatched after the pause"
            ),
            _DrillStep(725, "action_completed", "ACT-DRILL-12", None),
            _DrillStep(760, "action_completed", "ACT-DRILL-14", None),
            _DrillStep(790, "action_rolled_back", "ACT-DRILL-13", "manual clean-up"),
            _DrillStep(3600, "resumed", None, "agent resumed"),
        ),
        candidates=_TICKETS_CANDIDATES,
        features=_tickets_features,
        behaviour=_tickets_behaviour,
    ),
}

#: The model each preset's agent runs (``model`` column; priced in its pilot file at the
#: preset's ``usd_per_input_token`` and ``usd_per_output_token``).
_PRESET_MODELS = {"claims-auto": "frontier-large", "it-ticket-routing": "frontier-medium"}

#: Names of the presets ``generate_pilot`` knows.
PRESETS: tuple[str, ...] = tuple(_PRESETS)


# --------------------------------------------------------------------------------------
# Deterministic helpers
# --------------------------------------------------------------------------------------

_STREAMS = {
    "days": 1,
    "users": 2,
    "decisions": 3,
    "baseline": 4,
    "control": 5,
    "approvals": 6,
    "drill": 7,
    "hash": 8,
    # shadow mode, golden set and feedback loops (issue 12): streams 40-49
    "shadow": 40,
    "golden": 41,
    "feedback": 42,
    "tool_calls": 30,
}


def _rng(seed: int, stream: str, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[stream], chunk]))


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mix (splitmix64 finalizer); wraps around like C."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _hash_uniform(idx: np.ndarray, salt: int) -> np.ndarray:
    """A uniform [0, 1) number per index, the same wherever it is computed."""
    mixed = _splitmix64(idx.astype(np.uint64) ^ np.uint64(salt))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)


def _trace_ids(idx: np.ndarray, salt: int) -> pa.Array:
    """32-hex-digit trace ids, unique per decision index."""
    hi = _splitmix64(idx.astype(np.uint64) ^ np.uint64(salt))
    lo = _splitmix64(hi ^ np.uint64(0x5851F42D4C957F2D))
    parts = [_HEX[((v[:, None] >> _SHIFTS) & np.uint64(15)).astype(np.uint8)] for v in (hi, lo)]
    chars = np.ascontiguousarray(np.concatenate(parts, axis=1))
    return pa.array(chars.view("S32").ravel()).cast(pa.string())


def _ids(prefix: str, numbers: np.ndarray, width: int = 8) -> pa.Array:
    """``prefix`` followed by the zero-padded number, e.g. ``CLM-D00000042``."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _take(
    categories: tuple[str, ...], codes: np.ndarray, mask: np.ndarray | None = None
) -> pa.Array:
    indices = pa.array(codes.astype(np.int32), mask=mask)
    return pc.take(pa.array(categories, type=pa.string()), indices)


def _timestamps(us: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(us.astype(np.int64), type=pa.timestamp("us"), mask=mask)


def _epoch_us(moment: dt.datetime) -> int:
    return int((moment - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))


def _format_us(us: np.ndarray) -> np.ndarray:
    """Naive UTC timestamps as 'YYYY-MM-DD HH:MM:SS' strings (object array)."""
    seconds = (us // _US_PER_SECOND).astype("datetime64[s]")
    return np.char.replace(np.datetime_as_string(seconds, unit="s"), "T", " ").astype(object)


class _Clock:
    """Where decision ``i`` falls in time: day by day volumes, stratified time of day.

    Decisions are numbered in time order: day ``d`` holds indices
    ``cum[d] .. cum[d + 1] - 1`` and decision ``k`` of that day sits at the
    ``(k + u) / n_d`` quantile of the preset's time-of-day curve, so the log
    is sorted by timestamp and any index's timestamp can be recomputed.
    """

    def __init__(self, preset: _Preset, rows: int, seed: int):
        weekday = np.array(preset.weekday_weights)[
            (np.arange(_PILOT_DAYS) + preset.pilot_start.weekday()) % 7
        ]
        self.day_counts = _rng(seed, "days").multinomial(rows, weekday / weekday.sum())
        self.cum = np.concatenate([[0], np.cumsum(self.day_counts)])
        hours = np.array(preset.hour_weights, dtype=np.float64)
        self.cdf = np.concatenate([[0.0], np.cumsum(hours) / hours.sum()])
        self.hour_edges_us = np.arange(25, dtype=np.float64) * _US_PER_HOUR
        self.start_us = _epoch_us(preset.pilot_start_ts)
        self.salt = seed * 7919 + 17

    def day_of(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cum, idx, side="right") - 1

    def timestamp_us(self, idx: np.ndarray) -> np.ndarray:
        day = self.day_of(idx)
        pos = idx - self.cum[day]
        q = (pos + _hash_uniform(idx, self.salt)) / self.day_counts[day]
        offset = np.interp(q, self.cdf, self.hour_edges_us)
        us = self.start_us + day.astype(np.int64) * 24 * _US_PER_HOUR + offset.astype(np.int64)
        return us // _US_PER_SECOND * _US_PER_SECOND


def _time_of_day_us(rng: np.random.Generator, preset: _Preset, n: int) -> np.ndarray:
    hours = np.array(preset.hour_weights, dtype=np.float64)
    cdf = np.concatenate([[0.0], np.cumsum(hours) / hours.sum()])
    return np.interp(rng.random(n), cdf, np.arange(25.0) * _US_PER_HOUR).astype(np.int64)


# --------------------------------------------------------------------------------------
# Adoption plan
# --------------------------------------------------------------------------------------


@dataclass
class _Adoption:
    users: int
    eligible: np.ndarray  # users x weeks
    planned: np.ndarray  # users x weeks: the user would engage if outputs arrive
    cum_weights: list[np.ndarray]  # per week, cumulative routing weight over users
    seen: np.ndarray  # users x weeks, counted while the log is generated
    overrides: np.ndarray
    accepted: np.ndarray

    @classmethod
    def plan(cls, preset: _Preset, rows: int, seed: int) -> _Adoption:
        rng = _rng(seed, "users")
        users = int(np.clip(round(rows * preset.users_per_decision), 20, 5000))
        start_p = np.array(preset.start_week_probs)
        adopter = rng.random(users) < preset.p_adopter
        start = rng.choice(len(start_p), size=users, p=start_p / start_p.sum())
        week = np.arange(_WEEKS)[None, :]
        eligible = rng.random((users, _WEEKS)) >= preset.p_ineligible
        eligible[0] = True  # every week has at least one eligible user
        after = adopter[:, None] & (week >= start[:, None])
        p_engage = np.where(after, preset.p_stay_engaged, preset.p_try)
        planned = eligible & (rng.random((users, _WEEKS)) < p_engage)
        weights = eligible * np.where(planned, preset.engaged_weight, 1.0)
        cum = [np.cumsum(weights[:, w]) for w in range(_WEEKS)]
        zeros = np.zeros((users, _WEEKS), dtype=np.int64)
        return cls(users, eligible, planned, cum, zeros.copy(), zeros.copy(), zeros.copy())

    def count(
        self, user: np.ndarray, week: np.ndarray, overridden: np.ndarray, accepted: np.ndarray
    ) -> None:
        """Add one chunk's decisions to the per user-week counts."""
        cell = user * _WEEKS + week
        size = self.users * _WEEKS
        for total, weights in (
            (self.seen, None),
            (self.overrides, overridden),
            (self.accepted, accepted),
        ):
            counts = np.bincount(cell, weights=weights, minlength=size)
            total += np.round(counts).astype(np.int64).reshape(self.users, _WEEKS)

    def assign(self, rng: np.random.Generator, week: np.ndarray) -> np.ndarray:
        """A user for each decision, among the users eligible that week."""
        user = np.empty(len(week), dtype=np.int64)
        for w in np.unique(week):
            rows = week == w
            cum = self.cum_weights[w]
            user[rows] = np.searchsorted(cum, rng.random(rows.sum()) * cum[-1], side="right")
        return user


# --------------------------------------------------------------------------------------
# Decision log and agent cases
# --------------------------------------------------------------------------------------


@dataclass
class _BadRows:
    """Indices of the deliberately bad decision rows (see the module docstring)."""

    confidence: int
    negative_cost: int
    null_timestamp: int
    unknown_reason: int
    duplicate: int  # this row replays the one before it
    outside_window: int

    @classmethod
    def place(cls, rows: int) -> _BadRows:
        spots = [int(rows * f) for f in (0.13, 0.29, 0.41, 0.57, 0.73, 0.89)]
        # The replayed row must sit in the same chunk as the row it copies.
        if spots[4] % CHUNK_ROWS == 0:
            spots[4] += 1
        return cls(*spots)


def _decision_chunk(
    preset: _Preset,
    seed: int,
    chunk: int,
    lo: int,
    hi: int,
    clock: _Clock,
    adoption: _Adoption,
    bad: _BadRows,
) -> tuple[pa.Table, pa.Table]:
    """Decisions ``lo .. hi - 1`` and their agent-cohort cases."""
    rng = _rng(seed, "decisions", chunk)
    idx = np.arange(lo, hi, dtype=np.int64)
    n = len(idx)
    ts = clock.timestamp_us(idx)
    day = clock.day_of(idx)
    week = day // 7
    version_names = tuple(dict.fromkeys(preset.versions))
    week_version = np.array([version_names.index(v) for v in preset.versions])
    version = week_version[week]

    feats = preset.features(rng, day)
    beh = preset.behaviour(day, version, feats)

    # Confidence: a mixture of easy and hard cases; correct ~ Bernoulli(confidence - gap).
    hard = rng.random(n) < beh.hard_share
    conf = np.where(hard, rng.beta(*preset.hard_beta, n), rng.beta(*preset.easy_beta, n))
    conf = np.round(np.clip(conf, 0.001, 0.999), 4)
    correct = rng.random(n) < np.clip(conf - beh.gap, 0, 1)

    # Escalation, in the order the agent meets it: tools, data, scope, then confidence.
    reason = np.full(n, -1, dtype=np.int32)
    u = rng.random((3, n))
    reason = np.where(u[0] < beh.p_tool, _TOOL, reason)
    reason = np.where((reason < 0) & (u[1] < beh.p_missing), _MISSING, reason)
    reason = np.where((reason < 0) & (u[2] < beh.p_oos), _OOS, reason)
    reason = np.where((reason < 0) & (conf < preset.confidence_threshold), _LOWCONF, reason)
    escalated = reason >= 0

    p_complete = np.where(
        escalated,
        np.array(preset.p_complete_escalated)[np.maximum(reason, 0)],
        preset.p_complete_ok,
    )
    completed = rng.random(n) < p_complete

    # The user who received the output and how they responded.
    user = adoption.assign(rng, week)
    engaged = adoption.planned[user, week]
    r1, r2 = rng.random((2, n))
    accept_engaged = np.where(correct, r1 < preset.p_accept_correct, r1 < preset.p_accept_incorrect)
    override_engaged = ~correct & ~accept_engaged & (r2 < preset.p_override_incorrect)
    accept_review = correct & (r1 < preset.p_review_accept_correct)
    override_review = ~accept_review & np.where(
        correct,
        r2 < preset.p_review_override_correct,
        r2 < preset.p_review_override_incorrect,
    )
    accepted = completed & np.where(escalated, accept_review, engaged & accept_engaged)
    overridden = np.where(
        completed,
        np.where(
            escalated,
            override_review,
            np.where(engaged, override_engaged, r2 < preset.p_override_disengaged),
        ),
        r2 < preset.p_override_failed,
    )
    known = rng.random(n) < preset.p_outcome_known

    # Costs: tokens drive the model cost; review minutes by how the decision ended.
    in_tok = np.round(rng.lognormal(np.log(preset.input_tokens_median), 0.35, n)).astype(np.int64)
    out_tok = np.round(rng.lognormal(np.log(preset.output_tokens_median), 0.3, n)).astype(np.int64)
    model_cost = np.round(
        in_tok * preset.usd_per_input_token + out_tok * preset.usd_per_output_token, 5
    )
    tool_calls = 1 + rng.binomial(3, 0.4, n)
    tool_cost = np.round(tool_calls * preset.usd_per_tool_call * rng.uniform(0.95, 1.05, n), 5)
    review = np.where(
        escalated,
        rng.uniform(*preset.review_escalated_minutes, n),
        rng.uniform(*preset.review_ok_minutes, n)
        + overridden * rng.uniform(*preset.review_override_extra_minutes, n),
    )
    review = np.round(review, 2)

    # Agent-cohort case: opened shortly before the decision, cycle time by outcome.
    outcome = np.where(escalated, 2, np.where(accepted, 0, np.where(overridden, 1, 3)))
    median_h = np.array(preset.agent_median_h)[outcome]
    cycle_us = (rng.lognormal(np.log(median_h), preset.cycle_sigma) * _US_PER_HOUR).astype(np.int64)
    lag_us = (rng.exponential(preset.open_lag_minutes, n) * 60 * _US_PER_SECOND).astype(np.int64)
    opened = np.maximum(ts - lag_us, clock.start_us) // _US_PER_SECOND * _US_PER_SECOND
    closed = (opened + cycle_us) // _US_PER_SECOND * _US_PER_SECOND
    extraction = _epoch_us(preset.pilot_end_ts) + int(preset.extraction_lag_h * _US_PER_HOUR)
    still_open = closed > extraction

    # Deliberately bad rows.
    ts_mask = np.zeros(n, dtype=bool)
    reason_names = _ESCALATION_REASONS + ("gremlins",)
    keep_case = np.ones(n, dtype=bool)
    rel = {k: v - lo for k, v in vars(bad).items() if lo <= v < hi}
    if "confidence" in rel:
        conf[rel["confidence"]] = 1.7
    if "negative_cost" in rel:
        model_cost[rel["negative_cost"]] = -0.04
    if "null_timestamp" in rel:
        ts_mask[rel["null_timestamp"]] = True
    if "unknown_reason" in rel:
        i = rel["unknown_reason"]
        reason[i], escalated[i], accepted[i] = len(_ESCALATION_REASONS), True, False
    if "outside_window" in rel:
        ts[rel["outside_window"]] = _epoch_us(preset.pilot_end_ts) + 27 * _US_PER_HOUR
    dup_source = None
    if "duplicate" in rel:
        i = rel["duplicate"]
        dup_source = i - 1
        keep_case[i] = False
        arrays = (ts, ts_mask, day, version, user, conf, correct, known, reason, escalated)
        arrays += (completed, accepted, overridden, in_tok, out_tok, model_cost, tool_cost, review)
        for arr in arrays:
            arr[i] = arr[i - 1]
        for values in feats.numeric.values():
            values[i] = values[i - 1]
        for codes, _ in feats.categorical.values():
            codes[i] = codes[i - 1]

    ids = idx.copy()
    if dup_source is not None:
        ids[dup_source + 1] = ids[dup_source]

    # Adoption counts come from the log itself.
    adoption.count(user, week, overridden, accepted)

    c = preset.code
    user_names = _ids(f"{preset.user_prefix}-", user + 1, width=4)
    zeros = np.zeros(n, dtype=np.int32)
    columns: dict[str, pa.Array] = {
        "decision_id": _ids(f"{c}-D", ids),
        "timestamp": _timestamps(ts, mask=ts_mask),
        "trace_id": _trace_ids(ids, clock.salt),
        "agent_id": _take((preset.agent_id,), zeros),
        "workflow": _take((preset.workflow,), zeros),
        "case_id": _ids(f"{c}-A", ids),
        "prompt_version": _take(version_names, version),
        "user_id": user_names,
        "completed": pa.array(completed),
        "accepted": pa.array(accepted),
        "overridden": pa.array(overridden),
        "escalated": pa.array(escalated),
        "escalation_reason": _take(reason_names, np.maximum(reason, 0), mask=reason < 0),
        "confidence": pa.array(conf),
        "correct": pa.array(correct, mask=~known),
        "input_tokens": pa.array(in_tok),
        "output_tokens": pa.array(out_tok),
        "model_cost_usd": pa.array(model_cost),
        "tool_cost_usd": pa.array(tool_cost),
        "review_minutes": pa.array(review),
    }
    for name, values in feats.numeric.items():
        columns[name] = pa.array(values)
    for name, (codes, cats) in feats.categorical.items():
        columns[name] = _take(cats, codes)
    # last, so that every earlier column keeps its place; one model per preset (its
    # token prices are the preset's), so no random draw and no figure moves
    columns["model"] = _take((_PRESET_MODELS[preset.name],), zeros)
    decisions = pa.table(columns)

    keep = np.flatnonzero(keep_case)
    cases = pa.table(
        {
            "case_id": columns["case_id"].take(pa.array(keep)),
            "cohort": _take(("agent",), np.zeros(len(keep), dtype=np.int32)),
            "opened_at": _timestamps(opened[keep]),
            "closed_at": _timestamps(closed[keep], mask=still_open[keep]),
        }
    )
    return decisions, cases


def _other_cases(
    preset: _Preset, seed: int, cohort: str, chunk: int, lo: int, hi: int, first: bool
) -> pa.Table:
    """Baseline or control cases ``lo .. hi - 1``: opened by weekday volume, lognormal cycles."""
    rng = _rng(seed, cohort, chunk)
    n = hi - lo
    if cohort == "baseline":
        start, days, median_h = (
            preset.baseline_start,
            preset.baseline_days,
            preset.baseline_median_h,
        )
        letter = "B"
    else:
        start, days, median_h = preset.pilot_start, _PILOT_DAYS, preset.control_median_h
        letter = "C"
    weekday = np.array(preset.weekday_weights)[(np.arange(days) + start.weekday()) % 7]
    day = np.sort(rng.choice(days, size=n, p=weekday / weekday.sum()))
    start_us = _epoch_us(dt.datetime.combine(start, dt.time.min))
    opened = start_us + day.astype(np.int64) * 24 * _US_PER_HOUR + _time_of_day_us(rng, preset, n)
    opened = opened // _US_PER_SECOND * _US_PER_SECOND
    cycle = (rng.lognormal(np.log(median_h), preset.cycle_sigma + 0.05, n) * _US_PER_HOUR).astype(
        np.int64
    )
    closed = (opened + cycle) // _US_PER_SECOND * _US_PER_SECOND
    extraction = _epoch_us(preset.pilot_end_ts) + int(preset.extraction_lag_h * _US_PER_HOUR)
    still_open = closed > extraction
    if cohort == "control" and first and n > 7:
        closed[7] = opened[7] - 2 * _US_PER_HOUR  # bad row: closed before opened
        still_open[7] = False
    return pa.table(
        {
            "case_id": _ids(f"{preset.code}-{letter}", np.arange(lo, hi, dtype=np.int64) + 1),
            "cohort": _take((cohort,), np.zeros(n, dtype=np.int32)),
            "opened_at": _timestamps(opened),
            "closed_at": _timestamps(closed, mask=still_open),
        }
    )


_WRITER_OPTIONS = {"compression": "zstd", "compression_level": 6}


def _write_decisions_and_cases(
    preset: _Preset, rows: int, seed: int, folder: Path, adoption: _Adoption, clock: _Clock
) -> None:
    bad = _BadRows.place(rows)
    decisions_writer = None
    cases_writer = None
    try:
        for cohort, per_decision in (
            ("baseline", preset.baseline_per_decision),
            ("control", preset.control_per_decision),
        ):
            total = max(50, round(rows * per_decision))
            for chunk, lo in enumerate(range(0, total, CHUNK_ROWS)):
                hi = min(total, lo + CHUNK_ROWS)
                table = _other_cases(preset, seed, cohort, chunk, lo, hi, chunk == 0)
                if cases_writer is None:
                    cases_writer = pq.ParquetWriter(
                        folder / "cases.parquet", table.schema, **_WRITER_OPTIONS
                    )
                cases_writer.write_table(table)
        for chunk, lo in enumerate(range(0, rows, CHUNK_ROWS)):
            hi = min(rows, lo + CHUNK_ROWS)
            decisions, cases = _decision_chunk(preset, seed, chunk, lo, hi, clock, adoption, bad)
            if decisions_writer is None:
                decisions_writer = pq.ParquetWriter(
                    folder / "decisions.parquet", decisions.schema, **_WRITER_OPTIONS
                )
            decisions_writer.write_table(decisions)
            assert cases_writer is not None
            cases_writer.write_table(cases)
    finally:
        for writer in (decisions_writer, cases_writer):
            if writer is not None:
                writer.close()


# --------------------------------------------------------------------------------------
# Small data sets (CSV)
# --------------------------------------------------------------------------------------


def _bool_text(values: np.ndarray) -> np.ndarray:
    return np.where(values, "true", "false")


def _adoption_frame(preset: _Preset, adoption: _Adoption) -> pd.DataFrame:
    users, weeks = np.meshgrid(np.arange(adoption.users), np.arange(_WEEKS), indexing="ij")
    seen = adoption.seen
    # Engaged: the user acted on (accepted) at least one output that week.
    engaged = adoption.planned & (adoption.accepted > 0)
    mondays = [preset.pilot_start + dt.timedelta(days=7 * w) for w in range(_WEEKS)]
    return pd.DataFrame(
        {
            "user_id": [f"{preset.user_prefix}-{u + 1:04d}" for u in users.ravel()],
            "week": [mondays[w].isoformat() for w in weeks.ravel()],
            "eligible": _bool_text(adoption.eligible.ravel()),
            "engaged": _bool_text(engaged.ravel()),
            "decisions_seen": seen.ravel(),
            "overrides": adoption.overrides.ravel(),
        }
    )


def _approvals_frame(preset: _Preset, rows: int, seed: int, clock: _Clock) -> pd.DataFrame:
    rng = _rng(seed, "approvals")
    n = max(40, round(rows * preset.approvals_per_decision))
    source = np.sort(rng.choice(rows, size=n, replace=rows < n))
    # An action is proposed a few minutes after the decision it comes from.
    proposed = clock.timestamp_us(source) + (rng.uniform(1, 20, n) * 60 * _US_PER_SECOND).astype(
        np.int64
    )
    proposed = proposed // _US_PER_SECOND * _US_PER_SECOND
    low, high = preset.amount_range
    amount = np.round(
        np.clip(rng.lognormal(np.log(preset.amount_median), preset.amount_sigma, n), low, high), 2
    )
    level = np.searchsorted(np.array(preset.level_max), amount, side="left")
    if preset.policy_change is not None:  # routed by the limits in force when proposed
        changed_at, new_max = preset.policy_change
        after = proposed >= _epoch_us(changed_at)
        level = np.where(after, np.searchsorted(np.array(new_max), amount, side="left"), level)
    auto = level == 0
    latency_min = rng.lognormal(np.log(preset.approval_median_min), preset.approval_sigma, n)
    timed_out = ~auto & (latency_min > preset.sla_minutes)
    verdict = rng.choice(3, size=n, p=[0.86, 0.09, 0.05])  # approved, rejected, escalated
    decision = np.array(["approved", "rejected", "escalated"], dtype=object)[verdict]
    decision = np.where(auto, "auto", np.where(timed_out, "timed_out", decision))
    decided = np.where(
        auto, proposed, proposed + (latency_min * 60 * _US_PER_SECOND).astype(np.int64)
    )
    decided = decided // _US_PER_SECOND * _US_PER_SECOND
    executes = auto | (decision == "approved")
    exec_delay = np.where(auto, rng.uniform(5, 60, n), rng.uniform(120, 1800, n))
    executed = decided + (exec_delay * _US_PER_SECOND).astype(np.int64)
    approver = np.array(preset.level_names, dtype=object)[level]

    frame = pd.DataFrame(
        {
            "action_id": [f"{preset.code}-ACT{i + 1:06d}" for i in range(n)],
            "trace_id": _trace_ids(source, clock.salt).to_numpy(zero_copy_only=False),
            "proposed_at": _format_us(proposed),
            "amount": amount,
            "required_level": np.array(preset.level_names, dtype=object)[level],
            "decided_at": np.where(timed_out, None, _format_us(decided)),
            "decision": decision,
            "approver_level": np.where(timed_out, None, approver),
            "executed_at": np.where(executes, _format_us(executed), None),
        }
    )
    unparseable_row, negative_row = n // 4, (3 * n) // 4
    needs = np.setdiff1d(np.flatnonzero(~auto & ~timed_out), [unparseable_row, negative_row])
    if preset.approval_violations and len(needs) >= 2:
        # A timeout that ends approved: decided 312 minutes after proposal, then executed.
        i = needs[len(needs) // 3]
        late = proposed[i] + 312 * 60 * _US_PER_SECOND
        frame.loc[i, ["decision", "approver_level"]] = ["approved", frame.loc[i, "required_level"]]
        frame.loc[i, "decided_at"] = _format_us(np.array([late]))[0]
        frame.loc[i, "executed_at"] = _format_us(np.array([late + 600 * _US_PER_SECOND]))[0]
        # Approved one level too low: the amount needs the top level.
        j = needs[(2 * len(needs)) // 3]
        top = preset.level_names[-1]
        frame.loc[j, ["amount", "required_level", "decision"]] = [
            round(preset.level_max[-1] * 1.36, 2),
            top,
            "approved",
        ]
        frame.loc[j, "approver_level"] = preset.level_names[-2]
        decided_j = proposed[j] + 38 * 60 * _US_PER_SECOND
        frame.loc[j, "decided_at"] = _format_us(np.array([decided_j]))[0]
        frame.loc[j, "executed_at"] = _format_us(np.array([decided_j + 300 * _US_PER_SECOND]))[0]
    # Bad rows for the contract: an unparseable timestamp and a negative amount.
    frame.loc[unparseable_row, "proposed_at"] = "not-a-date"
    frame.loc[negative_row, "amount"] = -120.0
    return frame


def _policy_versions_frame(preset: _Preset) -> pd.DataFrame | None:
    """The authority ladder before and after ``preset.policy_change`` (None: no change)."""
    if preset.policy_change is None:
        return None
    changed_at, new_max = preset.policy_change
    rows = []
    for version, start, limits in (
        ("v1", preset.pilot_start_ts, preset.level_max),
        ("v2", changed_at, new_max),
    ):
        for rank, name in enumerate(preset.level_names):
            rows.append(
                {
                    "policy_version": version,
                    "effective_at": start.strftime("%Y-%m-%d %H:%M:%S"),
                    "level": name,
                    "max_amount": limits[rank] if rank < len(limits) else None,
                    "requires_approval": "false" if rank == 0 else "true",
                }
            )
    return pd.DataFrame(rows)


def _drill_frame(preset: _Preset, seed: int) -> pd.DataFrame:
    rng = _rng(seed, "drill")
    steps = preset.drill_steps
    jitter = rng.integers(-3, 4, len(steps))
    jitter[0] = 0
    start = _epoch_us(preset.drill_start)
    stamps = np.array(
        [start + int((s.seconds + j) * _US_PER_SECOND) for s, j in zip(steps, jitter, strict=True)]
    )
    return pd.DataFrame(
        {
            "drill_id": preset.drill_id,
            "event": [s.event for s in steps],
            "timestamp": _format_us(stamps),
            "action_id": [s.action_id for s in steps],
            "detail": [s.detail for s in steps],
        }
    )


def _candidates_frame(preset: _Preset) -> pd.DataFrame:
    frame = pd.DataFrame(list(preset.candidates), columns=list(contract_columns("candidates")))
    for col in ("sme_committed", "owner_has_authority"):
        frame[col] = _bool_text(frame[col].to_numpy(dtype=bool))
    return frame


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Shadow mode, the golden set and the feedback loops (issue 12)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SideData:
    """What a preset shows beyond the live log; every draw from its own random stream,
    so the live rows and every other file stay as they were."""

    shadow_days: int  # the first days of the window also ran in shadow (0: none)
    shadow_agreement: float  # chance the agent's action matches the human's
    outcomes: tuple[str, ...]  # the actions a case can end in
    outcome_weights: tuple[float, ...]
    golden_cases: int
    #: per prompt version: (accuracy on the golden set, days from evaluation to go-live;
    #: negative: evaluated after go-live)
    golden: dict[str, tuple[float, int]]
    feedback_items: int
    fast_share: float  # items collected for the fast loop
    cross_share: float  # fast-loop items the slow loop consumed


_SIDE_DATA: dict[str, _SideData] = {
    # Shadow in the first two weeks with high agreement; each version beat its predecessor
    # on the golden set days before it went live; the loops stay apart.
    "claims-auto": _SideData(
        shadow_days=14,
        shadow_agreement=0.94,
        outcomes=("approve", "deny", "refer"),
        outcome_weights=(0.72, 0.10, 0.18),
        golden_cases=500,
        golden={"v1.0": (0.90, 4), "v1.1": (0.92, 3), "v1.2": (0.935, 5), "v1.3": (0.95, 4)},
        feedback_items=600,
        fast_share=0.6,
        cross_share=0.0,
    ),
    # The lab's 97% was a curated golden set; v2.2 went live although it fell below v2.1
    # on it, and fast-loop corrections were swept into the slow loop's fine-tuning set.
    "it-ticket-routing": _SideData(
        shadow_days=0,
        shadow_agreement=0.0,
        outcomes=(),
        outcome_weights=(),
        golden_cases=400,
        golden={"v2.0": (0.97, 6), "v2.1": (0.975, 3), "v2.2": (0.93, 2), "v2.3": (0.95, 4)},
        feedback_items=400,
        fast_share=0.7,
        cross_share=0.18,
    ),
}


def _week_versions(preset: _Preset) -> list[tuple[str, int]]:
    """Each prompt version with the first pilot week it ran in, in order."""
    out: list[tuple[str, int]] = []
    for week, version in enumerate(preset.versions):
        if not out or out[-1][0] != version:
            out.append((version, week))
    return out


def _shadow_table(preset: _Preset, side: _SideData, seed: int, schema: pa.Schema) -> pa.Table:
    """Shadow decisions: one per control case opened in the first ``shadow_days`` days.

    A shadow case is a human (control-cohort) case: the agent decided silently, its
    action (``agent_outcome``) is compared with the human's (``human_outcome``).
    """
    rng = _rng(seed, "shadow")
    total = max(50, round(preset.default_rows * preset.control_per_decision))
    control = _other_cases(preset, seed, "control", 0, 0, min(total, CHUNK_ROWS), True)
    opened = control["opened_at"].cast(pa.int64()).to_numpy()
    start_us = _epoch_us(dt.datetime.combine(preset.pilot_start, dt.time.min))
    end_us = start_us + side.shadow_days * 24 * _US_PER_HOUR
    pick = np.flatnonzero((opened >= start_us) & (opened < end_us))
    pick = pick[pick != 7]  # the control cohort's deliberately bad row
    n = len(pick)
    lag = (rng.exponential(preset.open_lag_minutes, n) * 60 * _US_PER_SECOND).astype(np.int64)
    ts = np.minimum(opened[pick] + lag, end_us - _US_PER_SECOND)
    ts = ts // _US_PER_SECOND * _US_PER_SECOND
    day = ((ts - start_us) // (24 * _US_PER_HOUR)).astype(np.int64)
    feats = preset.features(rng, day)
    weights = np.array(side.outcome_weights) / sum(side.outcome_weights)
    human = rng.choice(len(side.outcomes), size=n, p=weights)
    agree = rng.random(n) < side.shadow_agreement
    other = (human + rng.integers(1, len(side.outcomes), n)) % len(side.outcomes)
    agent = np.where(agree, human, other)
    in_tok = np.round(rng.lognormal(np.log(preset.input_tokens_median), 0.35, n)).astype(np.int64)
    out_tok = np.round(rng.lognormal(np.log(preset.output_tokens_median), 0.4, n)).astype(np.int64)
    cost = np.round(in_tok * preset.usd_per_input_token + out_tok * preset.usd_per_output_token, 6)
    conf = np.round(np.clip(rng.beta(*preset.easy_beta, n), 0.001, 0.999), 4)
    # the human's handling time of the case, which a disagreement would have added to
    review = np.round(rng.lognormal(np.log(9.0), 0.5, n), 2)
    idx = np.arange(n, dtype=np.int64) + 1
    version = np.array(preset.versions)[day // 7]
    columns: dict[str, Any] = {
        "decision_id": _ids(f"{preset.code}-S", idx),
        "timestamp": _timestamps(ts),
        "trace_id": _trace_ids(idx, 0x5AD0),
        "agent_id": pa.array([preset.agent_id] * n),
        "workflow": pa.array([preset.workflow] * n),
        "case_id": control["case_id"].take(pa.array(pick)),
        "prompt_version": pa.array(version.tolist(), pa.string()),
        "user_id": pa.nulls(n, pa.string()),
        "completed": pa.array(np.ones(n, dtype=bool)),
        "accepted": pa.array(np.zeros(n, dtype=bool)),
        "overridden": pa.array(np.zeros(n, dtype=bool)),
        "escalated": pa.array(np.zeros(n, dtype=bool)),
        "escalation_reason": pa.nulls(n, pa.string()),
        "confidence": pa.array(conf),
        "correct": pa.nulls(n, pa.bool_()),
        "input_tokens": pa.array(in_tok),
        "output_tokens": pa.array(out_tok),
        "model_cost_usd": pa.array(cost),
        "tool_cost_usd": pa.array(np.zeros(n)),
        "review_minutes": pa.array(review),
    }
    for name, values in feats.numeric.items():
        columns[name] = pa.array(values)
    for name, (codes, cats) in feats.categorical.items():
        columns[name] = _take(cats, codes)
    if "model" in schema.names:
        columns["model"] = pa.array([_PRESET_MODELS[preset.name]] * n, pa.string())
    columns["shadow"] = pa.array(np.ones(n, dtype=bool))
    columns["agent_outcome"] = _take(side.outcomes, agent.astype(np.int32))
    columns["human_outcome"] = _take(side.outcomes, human.astype(np.int32))
    return pa.table(columns).cast(schema)


def _add_shadow_decisions(preset: _Preset, side: _SideData, seed: int, path: Path) -> None:
    """Rewrite ``path`` with the shadow columns (live rows: ``shadow`` false) and the
    shadow decisions as a last row group; the live rows' values are unchanged."""
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    for name, kind in (("shadow", pa.bool_()), ("agent_outcome", pa.string())):
        schema = schema.append(pa.field(name, kind))
    schema = schema.append(pa.field("human_outcome", pa.string()))
    tmp = path.with_suffix(".tmp.parquet")
    with pq.ParquetWriter(tmp, schema, **_WRITER_OPTIONS) as writer:
        for batch in source.iter_batches(batch_size=CHUNK_ROWS):
            n = batch.num_rows
            live = pa.Table.from_batches([batch])
            live = live.append_column("shadow", pa.array(np.zeros(n, dtype=bool)))
            live = live.append_column("agent_outcome", pa.nulls(n, pa.string()))
            live = live.append_column("human_outcome", pa.nulls(n, pa.string()))
            writer.write_table(live)
        writer.write_table(_shadow_table(preset, side, seed, schema))
    tmp.replace(path)


def _golden_frame(preset: _Preset, side: _SideData, seed: int) -> pd.DataFrame:
    """Each version evaluated on the same held-out cases, ``days`` before it went live.

    A case's difficulty is shared by every version (a better version is right on the
    cases an older one got right, and some more), with a little per-version noise.
    """
    rng = _rng(seed, "golden")
    difficulty = rng.random(side.golden_cases)
    live_week = dict(_week_versions(preset))
    rows = []
    for version, (accuracy, days) in side.golden.items():
        flip = rng.random(side.golden_cases) < 0.02
        correct = (difficulty < accuracy) ^ flip
        go_live = dt.datetime.combine(
            preset.pilot_start + dt.timedelta(weeks=live_week[version]), dt.time(15, 0)
        )
        at = go_live - dt.timedelta(days=days)
        seconds = np.sort(rng.integers(0, 3 * 3600, side.golden_cases))
        for j in range(side.golden_cases):
            rows.append(
                {
                    "prompt_version": version,
                    "golden_case_id": f"{preset.code}-G{j + 1:04d}",
                    "correct": "true" if correct[j] else "false",
                    "evaluated_at": (at + dt.timedelta(seconds=int(seconds[j]))).isoformat(),
                }
            )
    return pd.DataFrame(rows)


def _feedback_frame(preset: _Preset, side: _SideData, seed: int, rows: int) -> pd.DataFrame:
    """Feedback items on live decisions: collected for one loop, consumed by a loop or none.

    Fast-loop items are used within hours (prompt fixes); slow-loop items at the next
    weekly fine-tuning batch; ``cross_share`` of the fast-loop items the slow loop took.
    """
    rng = _rng(seed, "feedback")
    n = side.feedback_items
    start_us = _epoch_us(dt.datetime.combine(preset.pilot_start, dt.time.min))
    span_us = (_PILOT_DAYS - 8) * 24 * _US_PER_HOUR
    created = np.sort(start_us + (rng.random(n) * span_us).astype(np.int64))
    created = created // _US_PER_SECOND * _US_PER_SECOND
    fast = rng.random(n) < side.fast_share
    used = rng.random(n) < 0.8
    crossed = fast & used & (rng.random(n) < side.cross_share)
    used_fast = used & fast & ~crossed
    hours = np.where(used_fast, rng.exponential(6.0, n), 24 * rng.uniform(1, 7, n))
    used_at = created + (hours * _US_PER_HOUR).astype(np.int64) // _US_PER_SECOND * _US_PER_SECOND
    decision = rng.integers(0, rows, n) + 1
    loop = np.where(fast, "fast", "slow")
    used_by = np.where(used_fast, "fast", "slow")
    return pd.DataFrame(
        {
            "feedback_id": [f"{preset.code}-F{i + 1:05d}" for i in range(n)],
            "decision_id": [f"{preset.code}-D{d:08d}" for d in decision],
            "created_at": _format_us(created),
            "loop": loop,
            "used_by": np.where(used, used_by, ""),
            "used_at": np.where(used, _format_us(used_at), ""),
        }
    )


def _write_side_data(preset: _Preset, rows: int, seed: int, folder: Path, fmt: str) -> None:
    side = _SIDE_DATA.get(preset.name)
    if side is None:
        return
    if side.shadow_days and fmt == "parquet" and rows == preset.default_rows:
        _add_shadow_decisions(preset, side, seed, folder / "decisions.parquet")
    _write_csv(_golden_frame(preset, side, seed), folder / "golden_evaluations.csv")
    _write_csv(_feedback_frame(preset, side, seed, rows), folder / "feedback.csv")


def generate_pilot(
    preset: str,
    out_dir: str | Path,
    rows: int | None = None,
    seed: int | None = None,
    fmt: str = "parquet",
) -> Path:
    """Write a seeded pilot: ``out_dir/<preset>/pilot.yaml`` and its data sets.

    Parameters
    ----------
    preset:
        ``"claims-auto"`` or ``"it-ticket-routing"`` (see the module docstring
        for the story each tells).
    out_dir:
        Parent folder; created if missing. In an existing ``out_dir/<preset>``
        folder the pilot's files are overwritten and other files are left alone.
    rows:
        Rows in the decision log (default: 30,000 for claims-auto, 20,000 for
        it-ticket-routing), between :data:`MIN_ROWS` and :data:`MAX_ROWS`.
        Cases, users (at most 5,000) and approvals scale with it.
    seed:
        Random seed (default: the preset's own). The same preset, rows and seed
        give byte-identical files.
    fmt:
        ``"parquet"`` (default): the decision log as ``decisions.parquet``.
        ``"otel"``: the same decisions as OpenTelemetry traces,
        ``decisions.otlp.jsonl.zst`` (OTLP JSON Lines, zstd-compressed; see
        :func:`write_otlp_decisions`), and the pilot file says ``format: otel``.

    Returns
    -------
    Path
        The pilot folder (``out_dir/<preset>``), loadable with
        :func:`pilot_lib.config.load_pilot`.

    Raises
    ------
    WorkbookError
        Unknown preset (the message lists the presets), ``rows`` out of range,
        or a negative seed.
    """
    if preset not in _PRESETS:
        raise WorkbookError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    spec = _PRESETS[preset]
    rows = spec.default_rows if rows is None else int(rows)
    if not MIN_ROWS <= rows <= MAX_ROWS:
        raise WorkbookError(
            f"--rows must be between {MIN_ROWS:,} and {MAX_ROWS:,} decisions, got {rows:,}"
        )
    seed = spec.default_seed if seed is None else int(seed)
    if seed < 0:
        raise WorkbookError(f"--seed must be zero or a positive integer, got {seed}")
    if fmt not in SYNTH_FORMATS:
        raise WorkbookError(f"--format must be one of {', '.join(SYNTH_FORMATS)}, got {fmt!r}")

    folder = Path(out_dir).expanduser() / preset
    folder.mkdir(parents=True, exist_ok=True)
    yaml_text = spec.yaml_text
    if fmt == "otel":
        plain = "  decisions: {path: decisions.parquet}\n"
        assert plain in yaml_text
        yaml_text = yaml_text.replace(plain, f"  decisions: {{path: {OTLP_FILE}, format: otel}}\n")
    (folder / "pilot.yaml").write_text(yaml_text, encoding="utf-8")

    clock = _Clock(spec, rows, seed)
    adoption = _Adoption.plan(spec, rows, seed)
    _write_decisions_and_cases(spec, rows, seed, folder, adoption, clock)
    # calls to downstream systems, from the decisions just written (either format)
    _write_tool_calls(spec, seed, folder / "decisions.parquet", folder / "tool_calls.parquet")
    if fmt == "otel":
        write_otlp_decisions(folder / "decisions.parquet", folder / OTLP_FILE)
        (folder / "decisions.parquet").unlink()
    _write_csv(_adoption_frame(spec, adoption), folder / "adoption.csv")
    _write_csv(_approvals_frame(spec, rows, seed, clock), folder / "approvals.csv")
    versions = _policy_versions_frame(spec)
    if versions is not None:
        _write_csv(versions, folder / "policy_versions.csv")
    _write_csv(_drill_frame(spec, seed), folder / "drill_events.csv")
    _write_csv(_candidates_frame(spec), folder / "candidates.csv")
    _write_side_data(spec, rows, seed, folder, fmt)
    return folder


def write_samples(out_dir: str | Path) -> list[Path]:
    """Regenerate every preset with its default rows and seed under ``out_dir``."""
    return [generate_pilot(name, out_dir) for name in PRESETS]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pilot_lib.synth", description="Regenerate the committed sample pilots."
    )
    parser.add_argument(
        "--write-samples",
        metavar="DIR",
        required=True,
        help="folder that receives one sub-folder per preset (data/pilots in the repository)",
    )
    args = parser.parse_args(argv)
    for folder in write_samples(args.write_samples):
        print(f"wrote {folder}")
    return 0


# --------------------------------------------------------------------------------------
# The decision log as OpenTelemetry traces (synth --format otel)
# --------------------------------------------------------------------------------------

#: Decision-log formats ``generate_pilot`` writes.
SYNTH_FORMATS = ("parquet", "otel")

#: File name of the decision log in the ``otel`` format.
OTLP_FILE = "decisions.otlp.jsonl.zst"

#: Synthetic model name on the chat spans (their cost is stated, so no price is needed).
OTLP_MODEL = "synth-model-1"


def _otlp_attr(key: str, column: str, kind: str) -> str:
    """SQL: one OTLP attribute object for ``column`` (NULL when the value is NULL)."""
    value = {
        "string": f"json_object('stringValue', {column})",
        "int": f"json_object('intValue', CAST({column} AS VARCHAR))",
        "double": f"json_object('doubleValue', {column})",
        "bool": f"json_object('boolValue', {column})",
    }[kind]
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE json_object('key', '{key}', 'value', {value}) END"


def _otlp_attrs(items: list[tuple[str, str, str]]) -> str:
    """SQL: a JSON array of the non-NULL attributes ``(key, column, kind)``."""
    parts = ", ".join(_otlp_attr(k, c, t) for k, c, t in items)
    return f"CAST(list_filter([{parts}], lambda x: x IS NOT NULL) AS JSON)"


def _feature_kind(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "double"
    if pa.types.is_boolean(dtype):
        return "bool"
    return "string"


def write_otlp_decisions(parquet_path: str | Path, out_path: str | Path) -> Path:
    """Write a decision log (Parquet) as OTLP JSON Lines, one trace per decision.

    Each decision becomes one line (a ``TracesData`` object) holding three spans,
    as an agent instrumented with the OpenTelemetry GenAI conventions and the
    ``pilot.*`` vocabulary (docs/trace-sources.md) would emit them:

    - ``invoke_agent <agent_id>``: the root (decision) span, at the decision's
      timestamp, 1 s long; ``gen_ai.agent.id`` and the business signals
      (``pilot.decision_id``, ``pilot.case_id``, ... ``pilot.review_minutes``)
      and the drift features as attributes (NULL values are left out); status
      error when the decision did not complete.
    - ``chat <model>``: the model call, with ``gen_ai.usage.input_tokens`` /
      ``output_tokens`` and ``pilot.model_cost_usd``.
    - ``execute_tool lookup``: with ``pilot.tool_cost_usd``; status error when the
      decision escalated for ``tool_failure``, whose reason is then not stated on
      the root span (the reader derives it from the failed tool).

    The conversion is one DuckDB ``COPY`` streaming from the Parquet file (no
    per-row Python), so ten million decisions take bounded memory. A decision
    with a NULL timestamp gets spans without times (the reader quarantines them).
    Span ids are 16 hex digits from the row position; the trace id is the
    decision log's ``trace_id``.
    """
    import duckdb

    parquet_path, out_path = Path(parquet_path), Path(out_path)
    schema = pq.read_schema(parquet_path)
    core = set(contract_columns("decisions"))
    features = [
        (f.name, f'"{f.name}"', _feature_kind(f.type)) for f in schema if f.name not in core
    ]
    root_attrs = _otlp_attrs(
        [
            ("gen_ai.operation.name", "'invoke_agent'", "string"),
            ("gen_ai.agent.id", "agent_id", "string"),
            ("pilot.decision_id", "decision_id", "string"),
            ("pilot.case_id", "case_id", "string"),
            ("pilot.workflow", "workflow", "string"),
            ("pilot.prompt_version", "prompt_version", "string"),
            ("pilot.user_id", "user_id", "string"),
            ("pilot.completed", "completed", "bool"),
            ("pilot.accepted", "accepted", "bool"),
            ("pilot.overridden", "overridden", "bool"),
            ("pilot.escalated", "escalated", "bool"),
            ("pilot.escalation_reason", "stated_reason", "string"),
            ("pilot.confidence", "confidence", "double"),
            ("pilot.correct", "correct", "bool"),
            ("pilot.review_minutes", "review_minutes", "double"),
            *features,
        ]
    )
    # the decision's own model where the log names one (cost attribution reads it back)
    model_sql = (
        f"COALESCE(\"model\", '{OTLP_MODEL}')" if "model" in schema.names else f"'{OTLP_MODEL}'"
    )
    chat_attrs = _otlp_attrs(
        [
            ("gen_ai.operation.name", "'chat'", "string"),
            ("gen_ai.request.model", model_sql, "string"),
            ("gen_ai.usage.input_tokens", "input_tokens", "int"),
            ("gen_ai.usage.output_tokens", "output_tokens", "int"),
            ("pilot.model_cost_usd", "model_cost_usd", "double"),
        ]
    )
    tool_attrs = _otlp_attrs(
        [
            ("gen_ai.operation.name", "'execute_tool'", "string"),
            ("gen_ai.tool.name", "'lookup'", "string"),
            ("pilot.tool_cost_usd", "tool_cost_usd", "double"),
        ]
    )

    def span(
        sid: str, parent: str | None, name: str, start: str, end: str, attrs: str, status: str
    ) -> str:
        parent_sql = f"'parentSpanId', {parent}, " if parent else ""
        return (
            f"json_object('traceId', trace_id, 'spanId', {sid}, {parent_sql}'name', {name}, "
            f"'kind', 1, 'startTimeUnixNano', {start}, 'endTimeUnixNano', {end}, "
            f"'attributes', {attrs}, 'status', {status})"
        )

    def nanos(offset_us: int) -> str:
        return f'CAST((epoch_us("timestamp") + {offset_us}) * 1000 AS VARCHAR)'

    error = "json_object('code', 2, 'message', {msg})"
    root = span(
        "root_id",
        None,
        "'invoke_agent ' || agent_id",
        nanos(0),
        nanos(1_000_000),
        root_attrs,
        f"CASE WHEN completed THEN json_object() ELSE {error.format(msg=repr('not completed'))} END",
    )
    chat = span(
        "chat_id",
        "root_id",
        f"'chat ' || {model_sql}",
        nanos(1_000),
        nanos(600_000),
        chat_attrs,
        "json_object()",
    )
    tool = span(
        "tool_id",
        "root_id",
        "'execute_tool lookup'",
        nanos(610_000),
        nanos(900_000),
        tool_attrs,
        f"CASE WHEN tool_failed THEN {error.format(msg=repr('503 Service Unavailable'))} "
        "ELSE json_object() END",
    )
    resource = "json_object('attributes', json_array(json_object('key', 'service.name', 'value', json_object('stringValue', 'synthetic-agent'))))"
    source = str(parquet_path).replace("'", "''")
    target = str(out_path).replace("'", "''")
    sql = f"""
    COPY (
        WITH d AS (
            SELECT *,
                   escalated AND escalation_reason = 'tool_failure' AS tool_failed,
                   CASE WHEN escalated AND escalation_reason = 'tool_failure' THEN NULL
                        ELSE escalation_reason END AS stated_reason,
                   lpad(lower(to_hex(3 * (row_number() OVER () - 1) + 1)), 16, '0') AS root_id,
                   lpad(lower(to_hex(3 * (row_number() OVER () - 1) + 2)), 16, '0') AS chat_id,
                   lpad(lower(to_hex(3 * (row_number() OVER () - 1) + 3)), 16, '0') AS tool_id
            FROM read_parquet('{source}')
        )
        SELECT json_array(json_object(
            'resource', {resource},
            'scopeSpans', json_array(json_object(
                'scope', json_object('name', 'pilot_lib.synth'),
                'spans', json_array({root}, {chat}, {tool})
            ))
        )) AS resourceSpans
        FROM d
    ) TO '{target}' (FORMAT json)
    """
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET enable_progress_bar = false")
        con.execute(sql)
    finally:
        con.close()
    return out_path


# --------------------------------------------------------------------------------------
# Calls to downstream systems (tool_calls.parquet)
# --------------------------------------------------------------------------------------

#: Per preset: the lookups every decision makes ``(system, tool)``, the side-effecting
#: write a completed decision makes, the system whose failure escalates a decision
#: outside an outage, and the outage (system, pilot days [start, end), chance a
#: decision's first call fails) or None.
_TOOL_PLANS: dict[str, dict[str, Any]] = {
    "claims-auto": {
        "lookups": (("policy_admin", "get_policy"), ("fraud_scoring", "score_claim")),
        "write": ("claims_core", "create_claim_note"),
        "failing": ("fraud_scoring", "score_claim"),
        "outage": None,
        # its breaker, as the pilot file states it: open after 5 failures in a row, until
        # a success or a 30 s pause
        "breaker": (5, 30.0),
    },
    "it-ticket-routing": {
        "lookups": (("directory", "get_user"), ("cmdb", "get_asset")),
        "write": ("itsm", "assign_ticket"),
        "failing": ("saas_admin", "get_tenant"),
        # the CMDB's API answered 503 to many calls in pilot weeks 5 to 8, and the agent
        # hammered it: retries 100-250 ms apart, up to 6 attempts, never a breaker
        "outage": ("cmdb", "get_asset", 28, 56, 0.35),
    },
}


#: Columns of ``tool_calls.parquet`` with their pandas dtypes (the schema, with pandas
#: metadata, comes from an empty frame so the file reads back as it always did).
_TOOL_CALL_DTYPES: dict[str, str] = {
    "call_id": "str",
    "decision_id": "str",
    "trace_id": "str",
    "system": "str",
    "tool": "str",
    "started_at": "datetime64[us]",
    "ended_at": "datetime64[us]",
    "status": "str",
    "http_status": "Int64",
    "attempt": "int64",
    "idempotency_key": "string",
    "side_effect": "bool",
    "cost_usd": "float64",
}
_TOOL_STATUSES = ("ok", "error_5xx", "timeout")
_OK, _5XX, _TIMEOUT = range(3)
_CALL_SUFFIXES = pa.array([f"-T{k:02d}" for k in range(100)], pa.string())


def _tool_calls_schema() -> pa.Schema:
    empty = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in _TOOL_CALL_DTYPES.items()})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def _tool_calls_chunk(
    preset: _Preset, plan: dict[str, Any], rng: np.random.Generator, batch: pa.RecordBatch
) -> pa.Table:
    """The calls of one batch of decisions (rows with a timestamp and an id), vectorised.

    Each decision's calls are laid out slot by slot (each lookup, the failing system's
    timeouts, the write) with ``np.repeat`` over the attempts per slot; start times are
    cumulative sums of duration plus gap within the decision.
    """
    keep = pc.and_(pc.is_valid(batch["timestamp"]), pc.is_valid(batch["decision_id"]))
    batch = batch.filter(keep)
    n = batch.num_rows
    ts = batch["timestamp"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    day = (ts - _epoch_us(preset.pilot_start_ts)) // (24 * _US_PER_HOUR)
    escalated = pc.fill_null(batch["escalated"], False).to_numpy(zero_copy_only=False)
    completed = pc.fill_null(batch["completed"], False).to_numpy(zero_copy_only=False)
    reason_tool = pc.fill_null(pc.equal(batch["escalation_reason"], "tool_failure"), False)
    tool_fail = escalated & reason_tool.to_numpy(zero_copy_only=False)
    outage = plan["outage"]
    in_outage = np.zeros(n, dtype=bool)
    if outage is not None:
        in_outage = (day >= outage[2]) & (day < outage[3])
    # the same draws, in the same order, as the per-row loop this replaced
    u_first = rng.random(n)
    u_lat = rng.lognormal(np.log(220.0), 0.35, (n, 8))
    u_gap = rng.random((n, 8))

    failing_here = tool_fail & ~in_outage
    lookups = list(plan["lookups"])
    console = plan["failing"] not in lookups
    if console:
        lookups.append(plan["failing"])  # consulted for some tickets (below)
    systems: list[tuple[str, str]] = []
    counts = []  # per slot: attempts per decision
    for j, (system, tool) in enumerate(lookups):
        present = ~failing_here if (system, tool) == plan["failing"] else np.ones(n, bool)
        if console and j == len(lookups) - 1:
            present &= u_gap[:, 6] < 0.3
        attempts = np.ones(n, dtype=np.int64)
        if outage is not None and system == outage[0]:
            hit = in_outage
            unanswered = hit & (tool_fail | (~completed & ~escalated))
            retried = hit & ~unanswered & (u_first < outage[4])
            attempts = np.where(retried, 2 + (u_gap[:, 7] * 3).astype(np.int64), attempts)
            attempts = np.where(unanswered, 6, attempts)  # the agent gave up (or escalated)
        systems.append((system, tool))
        counts.append(np.where(present, attempts, 0))
    systems.append(plan["failing"])  # timeouts, backoff 1 s then 2-3 s with jitter
    counts.append(np.where(failing_here, 3, 0))
    systems.append(plan["write"])  # completed decisions write once, keyed
    counts.append((completed & ~escalated).astype(np.int64))
    n_slots = len(systems)
    timeout_slot, write_slot = n_slots - 2, n_slots - 1

    per_slot = np.stack(counts, axis=1).ravel()  # decision-major, slot-minor
    total = int(per_slot.sum())
    cell = np.repeat(np.arange(n * n_slots, dtype=np.int64), per_slot)
    row = cell // n_slots
    slot = cell % n_slots
    slot_start = np.cumsum(per_slot) - per_slot
    attempt0 = np.arange(total, dtype=np.int64) - np.repeat(slot_start, per_slot)
    per_row = per_slot.reshape(n, n_slots).sum(axis=1)
    row_start = np.cumsum(per_row) - per_row
    k = np.arange(total, dtype=np.int64) - np.repeat(row_start, per_row)
    slot_attempts = per_slot[cell]

    is_timeout = slot == timeout_slot
    is_write = slot == write_slot
    is_lookup = ~is_timeout & ~is_write
    failed = is_lookup & ((attempt0 < slot_attempts - 1) | (slot_attempts == 6))
    status = np.where(is_timeout, _TIMEOUT, np.where(failed, _5XX, _OK))
    gap_u = u_gap[row, np.minimum(attempt0, 7)]
    lat = u_lat[row, np.minimum(k, 7)]
    ms = np.where(failed, 40 + 30 * gap_u, lat)
    ms = np.where(is_timeout, 10_000.0, ms)
    ms = np.where(is_write, u_lat[row, 7] * 1.6, ms)
    duration = (ms * 1000).astype(np.int64)
    a = attempt0.astype(np.float64)
    gap = np.where(failed, ((0.1 + 0.15 * gap_u) * _US_PER_SECOND).astype(np.int64), 5_000)
    backoff = ((1.0 + a + (0.2 + 0.8 * a) * gap_u) * _US_PER_SECOND).astype(np.int64)
    gap = np.where(is_timeout, np.where(attempt0 < 2, backoff, 0), gap)
    step = duration + gap
    before = np.cumsum(step) - step  # elapsed before each call, across the batch
    started = ts[row] + _US_PER_SECOND + before - np.repeat(before[row_start], per_row)
    ended = started + duration

    rows = pa.array(row)
    decision_id = batch["decision_id"].take(rows)
    system_names = tuple(s for s, _ in systems)
    tool_names = tuple(t for _, t in systems)
    write_tool = plan["write"][1]
    key = pc.binary_join_element_wise(decision_id, pa.scalar(f"-{write_tool}"), "")
    http = np.array([200, 503, 0], dtype=np.int64)[status]
    columns = {
        "call_id": pc.binary_join_element_wise(decision_id, _CALL_SUFFIXES.take(pa.array(k)), ""),
        "decision_id": decision_id,
        "trace_id": batch["trace_id"].take(rows),
        "system": _take(system_names, slot),
        "tool": _take(tool_names, slot),
        "started_at": _timestamps(started),
        "ended_at": _timestamps(ended),
        "status": _take(_TOOL_STATUSES, status),
        "http_status": pa.array(http, mask=status == _TIMEOUT),  # timeout: none
        "attempt": pa.array(attempt0 + 1),
        "idempotency_key": pc.if_else(pa.array(is_write), key, pa.scalar(None, pa.string())),
        "side_effect": pa.array(is_write),
        "cost_usd": pa.array(np.full(total, round(preset.usd_per_tool_call, 5))),
    }
    return pa.table(columns)


def _write_tool_calls(preset: _Preset, seed: int, decisions_file: Path, out_path: Path) -> None:
    """One row per attempt of a call to a downstream system, for every decision.

    Healthy calls succeed at their first attempt. A decision escalated for
    ``tool_failure`` failed its call to the preset's failing system: in claims-auto
    three timeouts with exponential backoff and jitter (1 s, then 2-3 s); in
    it-ticket-routing, inside the CMDB outage, six 503s from the CMDB 100-250 ms
    apart (a retry storm the breaker never stopped), else three timeouts of the
    SaaS admin console with backoff. Inside the outage other decisions' first CMDB
    call fails with its probability and the agent hammers until an answer; a
    decision neither completed nor escalated there never got one (its chain is
    incomplete). Completed decisions then write once (side-effecting, keyed).

    The decisions are read and their calls written in batches of :data:`CHUNK_ROWS`
    decisions (vectorised, bounded memory); batch ``c`` draws from the ``tool_calls``
    stream's chunk ``c``, so the output is the same for the same decisions and seed.
    """
    plan = _TOOL_PLANS[preset.name]
    schema = _tool_calls_schema()
    columns = ["decision_id", "timestamp", "trace_id", "escalated", "escalation_reason",
               "completed"]  # fmt: skip
    source = pq.ParquetFile(decisions_file)
    with pq.ParquetWriter(out_path, schema) as writer:
        for chunk, batch in enumerate(source.iter_batches(batch_size=CHUNK_ROWS, columns=columns)):
            table = _tool_calls_chunk(preset, plan, _rng(seed, "tool_calls", chunk), batch)
            writer.write_table(table.cast(schema))
    if plan.get("breaker") is not None:
        _apply_breaker(out_path, *plan["breaker"])


def _apply_breaker(path: Path, threshold: int, pause_seconds: float) -> int:
    """Let the agent's circuit breaker refuse what it would have refused.

    Decisions are generated one at a time, so at high volume the failures of different
    decisions to one system can follow each other closely. An agent that keeps its
    breaker (``breaker`` in ``_TOOL_PLANS``, as the pilot file states it) refuses every
    attempt past ``threshold`` consecutive failures to a system, until a success or a
    pause of ``pause_seconds``: those attempts become ``circuit_open`` (not sent, ended
    at once). Done in DuckDB over the whole file (any size); the file is rewritten only
    when an attempt changes, so the samples stay as they are. Returns the attempts changed.
    """
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"CREATE VIEW calls AS SELECT * FROM read_parquet('{path}')")
        runs = f"""
            WITH o AS (
                SELECT call_id, system, started_at,
                       status IN ('error_5xx', 'timeout') AS fail,
                       lag(status IN ('error_5xx', 'timeout'), 1, false)
                           OVER (PARTITION BY system ORDER BY started_at, call_id) AS prev_fail,
                       lag(started_at) OVER (PARTITION BY system ORDER BY started_at, call_id)
                           AS prev_start
                FROM calls
            ), s AS (
                SELECT *, sum(CASE WHEN fail AND (NOT prev_fail OR prev_start IS NULL OR
                          epoch(started_at) - epoch(prev_start) >= {float(pause_seconds)})
                          THEN 1 ELSE 0 END)
                          OVER (PARTITION BY system ORDER BY started_at, call_id) AS run
                FROM o
            )
            SELECT call_id FROM (
                SELECT call_id, fail,
                       row_number() OVER (PARTITION BY system, run, fail
                                          ORDER BY started_at, call_id) AS position
                FROM s
            ) WHERE fail AND position > {int(threshold)}
        """
        con.execute(f"CREATE TEMP TABLE refused AS {runs}")
        changed = int(con.execute("SELECT count(*) FROM refused").fetchone()[0])
        if changed:
            tmp = path.with_suffix(".breaker.parquet")
            con.execute(f"""
                COPY (
                    SELECT * REPLACE (
                        CASE WHEN r.call_id IS NULL THEN c.status ELSE 'circuit_open' END AS status,
                        CASE WHEN r.call_id IS NULL THEN c.ended_at ELSE c.started_at END
                            AS ended_at,
                        CASE WHEN r.call_id IS NULL THEN c.http_status END AS http_status
                    )
                    FROM calls c LEFT JOIN refused r USING (call_id)
                    ORDER BY c.decision_id, c.started_at, c.call_id
                ) TO '{tmp}' (FORMAT parquet)
            """)
            con.close()
            tmp.replace(path)
        return changed
    finally:
        con.close()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())

"""The pilot file: one YAML document per pilot, validated into a pydantic model.

``load_pilot(path)`` reads ``data/pilots/<pilot>/pilot.yaml`` (a directory means
its ``pilot.yaml``) with a safe YAML loader and returns a :class:`Pilot`. Every
mistake is collected into one :class:`PilotFileError` whose ``problems`` name
the file, the field path (``kpis[2].comparator``), the bad value and what is
allowed. Unknown keys are errors: a typo must not pass silently.

Relative data paths resolve against the pilot file's folder, never against the
current working directory (papermill kernels may start anywhere).
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pilot_lib.errors import WorkbookError

__all__ = [
    "AUXILIARY_DATASETS",
    "DATASET_NAMES",
    "AuditTrailSettings",
    "KPI_NAMES",
    "TRACE_FORMATS",
    "Pilot",
    "PilotFileError",
    "Problem",
    "load_pilot",
    "pilot_file_path",
]

#: Data sets a pilot file may name (see docs/data-contracts.md).
DATASET_NAMES = (
    "candidates",
    "decisions",
    "cases",
    "adoption",
    "drill_events",
    "approvals",
    "tool_calls",
    "policy_versions",
    "golden_evaluations",
    "feedback",
)

#: Data sets read only to build another one (``outcomes``: joined into trace decisions).
AUXILIARY_DATASETS = ("outcomes",)

#: Trace formats a ``decisions`` data set may be given in (see docs/trace-sources.md).
TRACE_FORMATS = ("otel", "openinference", "langfuse")

#: KPI names a threshold may refer to, with the unit each is measured in.
KPI_NAMES: dict[str, str] = {
    "task_completion_rate": "proportion",  # business completion: accepted without correction
    "technical_completion_rate": "proportion",
    "efficiency_gain": "proportion",
    "adoption_rate": "proportion",
    "override_rate": "proportion",
    "cost_per_decision": "usd",
    "escalation_rate": "proportion",
}

ESCALATION_REASONS = ("low_confidence", "missing_data", "out_of_scope", "tool_failure")


class FieldProblem(ValueError):
    """A validation error that points below the model that raised it.

    Model validators raise it so the error names the exact field
    (``pilot_window.end``) and its bad value instead of the whole parent mapping.
    ``field`` is relative to the model (``end``, ``drift.reference_window``,
    ``options[1].scores``); empty means the model itself.
    """

    def __init__(self, field: str, value: Any, message: str):
        super().__init__(message)
        self.field = field
        self.value = value
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class DateWindow(_Strict):
    """An inclusive range of calendar days (UTC)."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> DateWindow:
        if self.end < self.start:
            raise FieldProblem(
                "end",
                self.end.isoformat(),
                f"end ({self.end}) is before start ({self.start}); "
                "give the first and last day of the window, in that order",
            )
        return self

    @property
    def days(self) -> int:
        """Number of calendar days in the window, both ends included."""
        return (self.end - self.start).days + 1

    @property
    def weeks(self) -> float:
        """Length of the window in weeks (days / 7)."""
        return self.days / 7

    @property
    def start_ts(self) -> dt.datetime:
        """Midnight at the start of the first day."""
        return dt.datetime.combine(self.start, dt.time.min)

    @property
    def end_ts(self) -> dt.datetime:
        """Midnight after the last day (exclusive upper bound)."""
        return dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min)

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


class DatasetSource(_Strict):
    """Where one data set lives. Give exactly one of ``path``, ``database`` or ``uri``.

    - ``path``: a Parquet, CSV or JSON-lines file (globs allowed), relative to the
      pilot file's folder or absolute. ``format`` overrides the extension.
    - ``database`` + ``table``: a table in a DuckDB database file.
    - ``uri`` + ``table``: any Ibis connection URL (``postgres://...``,
      ``duckdb://...``, ``pyspark://...``) and a table in it.

    ``format`` may also name a trace format (``otel``, ``openinference``,
    ``langfuse``; ``decisions`` only, with ``path``): the decision log is then
    built from the spans (docs/trace-sources.md).
    """

    path: str | None = None
    format: Literal["parquet", "csv", "jsonl", "otel", "openinference", "langfuse"] | None = None
    database: str | None = None
    uri: str | None = None
    table: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> DatasetSource:
        given = [k for k in ("path", "database", "uri") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'path', 'database' (a DuckDB file) or 'uri' "
                f"(an Ibis connection URL); got {given or 'none'}"
            )
        if (self.database or self.uri) and not self.table:
            raise ValueError("'table' is required with 'database' or 'uri'")
        if self.path and self.table:
            raise ValueError("'table' goes with 'database' or 'uri', not with 'path'")
        if self.format in TRACE_FORMATS and not self.path:
            raise FieldProblem(
                "format",
                self.format,
                f"a trace format ({self.format}) is read from files: give 'path' "
                "(a file or a glob such as traces/*.jsonl) instead of 'database' or 'uri'",
            )
        return self


class ModelPrice(_Strict):
    """A model's price in US dollars per million tokens (input and output).

    ``cache_read_per_million_usd`` / ``cache_creation_per_million_usd`` (optional):
    the price of input tokens read from / written to the provider's prompt cache
    (``gen_ai.usage.cache_read.input_tokens``, ``cache_creation`` / ``cache_write``),
    which are part of the input tokens; absent, they are priced as input.
    """

    input_per_million_usd: float = Field(ge=0)
    output_per_million_usd: float = Field(ge=0)
    cache_read_per_million_usd: float | None = Field(default=None, ge=0)
    cache_creation_per_million_usd: float | None = Field(default=None, ge=0)


class TraceSettings(_Strict):
    """How a decision log is built from traces (``datasets.decisions.format`` a trace format).

    - ``decision_span``: the span name that marks one decision; default: each
      top-level ``invoke_agent`` span (one with no agent span above it: a trace's
      root, or an agent whose parent is in another service's export, remote, or an
      HTTP server / queue consumer span).
    - ``decision_level``: ``agent`` (default): under an ``invoke_workflow`` span,
      each top-level agent is one decision and the workflow span sits above
      them; ``workflow``: each top-level ``invoke_workflow`` span is one decision
      holding its agents (an agent outside any workflow is still one decision).
    - ``prices``: model name -> price per million tokens, for spans that carry
      token counts but no cost.
    - ``outcomes_key``: the column the ``outcomes`` data set is joined on
      (``trace_id`` or ``case_id``).
    - ``workflow``, ``agent_id``, ``prompt_version``, ``business_unit``: the value a
      decision takes when no span (nor the outcomes) carries it; a pilot is usually
      one workflow run by one agent on one prompt version at a time.
    - ``max_tokens_per_decision``: a decision (or one span) with more input or
      output tokens than this is implausible and quarantined, never priced
      (default 10,000,000).
    - ``max_cost_per_decision_usd``: the same bound for a stated or priced model
      cost, in US dollars (default 1,000).
    """

    decision_span: str | None = Field(default=None, min_length=1)
    decision_level: Literal["agent", "workflow"] = "agent"
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    outcomes_key: Literal["trace_id", "case_id"] = "trace_id"
    workflow: str | None = Field(default=None, min_length=1)
    agent_id: str | None = Field(default=None, min_length=1)
    prompt_version: str | None = Field(default=None, min_length=1)
    business_unit: str | None = Field(default=None, min_length=1)
    max_tokens_per_decision: int = Field(default=10_000_000, ge=1)
    max_cost_per_decision_usd: float = Field(default=1000.0, gt=0)


class KpiThreshold(_Strict):
    """A success threshold written down before the pilot started.

    ``value`` is in ``unit``: proportions are fractions (0.80, not 80), costs are
    US dollars. ``min_samples`` is the smallest sample size (decisions, cases or
    users, as the KPI counts them) below which the KPI cannot pass.
    """

    kpi: Literal[
        "task_completion_rate",
        "technical_completion_rate",
        "efficiency_gain",
        "adoption_rate",
        "override_rate",
        "cost_per_decision",
        "escalation_rate",
    ]
    comparator: Literal[">", ">=", "<", "<="]
    value: float
    unit: Literal["proportion", "usd"]
    min_samples: int = Field(default=30, ge=1)
    description: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _no_percent_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().endswith("%"):
            number = value.strip().rstrip("%").strip()
            try:
                hint = f"write {float(number) / 100:g}"
            except ValueError:
                hint = "write the proportion as a number, e.g. 0.80 for 80%"
            raise ValueError(f"a percentage in text; {hint} (a proportion, without %)")
        return value

    @model_validator(mode="after")
    def _unit_matches(self) -> KpiThreshold:
        expected = KPI_NAMES[self.kpi]
        if self.unit != expected:
            raise FieldProblem("unit", self.unit, f"unit for {self.kpi} must be '{expected}'")
        if self.unit == "proportion" and not (-1.0 <= self.value <= 1.0):
            raise FieldProblem(
                "value", self.value, "not a proportion; write 80% as 0.80 (between -1 and 1)"
            )
        return self

    def met_by(self, x: float) -> bool:
        """Whether the number ``x`` satisfies the comparator."""
        return {
            ">": x > self.value,
            ">=": x >= self.value,
            "<": x < self.value,
            "<=": x <= self.value,
        }[self.comparator]

    @property
    def higher_is_better(self) -> bool:
        return self.comparator in (">", ">=")


class CostSettings(_Strict):
    """Unit economics. Money in US dollars.

    ``model_prices`` (model name -> price per million tokens) splits each decision's
    model cost into input and output tokens and prices a budget's ``fallback_model``;
    for a decision log built from traces, ``traces.prices`` counts too (this table wins
    where both name a model). ``production_volume_per_month`` (decisions a month once
    the agent runs at full scale) projects month-end spend against the budgets; absent,
    the pilot's own pace is projected.
    """

    review_hourly_rate_usd: float = Field(gt=0)
    manual_cost_per_case_usd: float = Field(gt=0)
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    production_volume_per_month: float | None = Field(default=None, gt=0)


class Budget(_Strict):
    """A monthly spend limit (model + tool cost, US dollars) for one agent or one workflow.

    Exactly one of ``agent`` (an ``agent_id`` of the decision log) or ``workflow``.
    ``fallback_model``: the cheaper model a circuit breaker switches to once the
    calendar month's spend passes ``monthly_usd``; it must have a price in
    ``costs.model_prices`` (or ``traces.prices``).
    """

    agent: str | None = Field(default=None, min_length=1)
    workflow: str | None = Field(default=None, min_length=1)
    monthly_usd: float = Field(gt=0)
    fallback_model: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_scope(self) -> Budget:
        if (self.agent is None) == (self.workflow is None):
            raise FieldProblem(
                "",
                self.model_dump(exclude_none=True),
                "a budget covers exactly one agent or one workflow: give either agent: "
                "<agent_id> or workflow: <workflow>, not both and not neither",
            )
        return self

    @property
    def scope(self) -> tuple[str, str]:
        """``("agent_id", name)`` or ``("workflow", name)``: the decision-log column and value."""
        if self.agent is not None:
            return ("agent_id", self.agent)
        return ("workflow", str(self.workflow))

    @property
    def label(self) -> str:
        """``agent claims-triage-agent`` or ``workflow it_ticket_routing``."""
        column, name = self.scope
        return f"{'agent' if column == 'agent_id' else 'workflow'} {name}"


class DriftSettings(_Strict):
    """Drift analysis settings (phase 3)."""

    features: list[str] = Field(min_length=1)
    key_features: list[str] = Field(default_factory=list)
    reference_window: DateWindow
    current_window: DateWindow
    bins: int = Field(default=10, ge=2, le=100)
    epsilon: float = Field(default=1e-4, gt=0, lt=0.01)
    calibration_bins: int = Field(default=15, ge=2, le=100)
    moving_average_days: int = Field(default=7, ge=1, le=60)
    sigma: float = Field(default=2.0, gt=0)
    confirmation_sigma: float = Field(default=3.0, gt=0)
    min_shift_absolute: float = Field(default=0.01, ge=0, le=1)
    min_shift_relative: float = Field(default=0.25, ge=0)
    psi_no_drift_quantile: float = Field(default=0.99, ge=0.5, lt=1)

    @model_validator(mode="after")
    def _keys_are_features(self) -> DriftSettings:
        unknown = [f for f in self.key_features if f not in self.features]
        if unknown:
            raise FieldProblem(
                "key_features", unknown, f"not listed in features; allowed: {self.features}"
            )
        return self


class DrillTargets(_Strict):
    """Kill-switch drill targets, in seconds."""

    max_seconds_to_detect: float = Field(gt=0)
    max_seconds_to_page: float = Field(gt=0)
    max_seconds_to_pause: float = Field(gt=0)


class AuthorityLevel(_Strict):
    """One rung of the decision-authority ladder.

    ``max_amount`` is the largest amount (US dollars) this level may approve;
    ``None`` means no upper limit. Levels are listed from lowest to highest.
    """

    name: str = Field(min_length=1)
    max_amount: float | None = Field(default=None, ge=0)
    requires_approval: bool = True


class ApprovalPolicy(_Strict):
    """Decision-authority policy and approval SLA (phase 4)."""

    sla_minutes: float = Field(gt=0)
    levels: list[AuthorityLevel] = Field(min_length=1)
    timeout_action: Literal["reject", "escalate"] = "reject"
    #: Actions, after a recorded threshold change, that may still follow the old policy
    #: before the first follows the new one (the playbook: "within one decision cycle").
    policy_change_max_lag_decisions: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _ladder(self) -> ApprovalPolicy:
        names = [lvl.name for lvl in self.levels]
        if len(set(names)) != len(names):
            raise FieldProblem("levels", names, "level names must be unique")
        limits = [lvl.max_amount for lvl in self.levels]
        if any(x is None for x in limits[:-1]):
            raise FieldProblem(
                "levels", limits, "only the last (highest) level may have no max_amount"
            )
        finite = [x for x in limits if x is not None]
        if finite != sorted(finite) or len(set(finite)) != len(finite):
            raise FieldProblem("levels", limits, "max_amount must increase from level to level")
        return self

    def level_rank(self, name: str) -> int:
        """Position of a level on the ladder (0 = lowest); ValueError if unknown."""
        for i, lvl in enumerate(self.levels):
            if lvl.name == name:
                return i
        raise ValueError(
            f"unknown authority level {name!r}; known: {[lvl.name for lvl in self.levels]}"
        )

    def required_level(self, amount: float) -> str:
        """Lowest level whose ``max_amount`` covers ``amount`` (US dollars)."""
        for lvl in self.levels:
            if lvl.max_amount is None or amount <= lvl.max_amount:
                return lvl.name
        return self.levels[-1].name


class BuildOption(_Strict):
    """One build-or-buy option, scored 0-10 on each dimension (10 = best)."""

    name: str = Field(min_length=1)
    summary: str = ""
    scores: dict[str, float]

    @field_validator("scores")
    @classmethod
    def _score_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: s for k, s in v.items() if not 0 <= s <= 10}
        if bad:
            raise ValueError(f"scores must be between 0 and 10, got {bad}")
        return v


BUILD_DIMENSIONS = (
    "time_to_production",
    "architectural_control",
    "observability",
    "lock_in_exit",
    "total_cost",
)


class BuildVsBuy(_Strict):
    """Build-vs-buy options and the weight of each dimension (weights need not sum to 1)."""

    weights: dict[str, float]
    options: list[BuildOption] = Field(min_length=2)

    @model_validator(mode="after")
    def _dimensions(self) -> BuildVsBuy:
        dims = set(BUILD_DIMENSIONS)
        if set(self.weights) != dims:
            raise FieldProblem(
                "weights",
                sorted(self.weights),
                f"weights must name exactly the five dimensions {list(BUILD_DIMENSIONS)}",
            )
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise FieldProblem("weights", self.weights, "weights must be >= 0 and not all zero")
        for i, opt in enumerate(self.options):
            if set(opt.scores) != dims:
                raise FieldProblem(
                    f"options[{i}].scores",
                    sorted(opt.scores),
                    f"option {opt.name!r} must score exactly the five dimensions "
                    f"{list(BUILD_DIMENSIONS)}",
                )
        return self


class UseCaseSettings(_Strict):
    """Phase 1 settings: qualifying minimum per criterion and the completion margin."""

    minimum_score: int = Field(default=3, ge=1, le=5)
    completion_margin: float = Field(default=0.05, gt=0, lt=0.5)
    criterion_weights: dict[str, float] | None = None


ENGINE_NAMES = ("duckdb", "spark")

_MEMORY_SIZE = r"^\s*\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$"


class EngineSettings(_Strict):
    """Which engine computes the pilot, and how much of the machine it may use.

    - ``name``: ``duckdb`` (the default; embedded, in-process) or ``spark``.
    - ``memory_limit``: DuckDB's memory limit per process (default ``"512MB"``; ``"2GB"``);
      beyond it DuckDB spills to ``spill_dir``. Spark takes its memory from its
      own configuration (``spark.driver.memory`` for a local session).
    - ``threads``: DuckDB worker threads per process (default: all cores).
    - ``spill_dir``: where DuckDB spills (default: a ``spill`` folder beside the
      checked evidence store, removed after each step).
    - ``master``: Spark only. A master URL (``local[*]``, ``spark://host:7077``,
      ``yarn``) or a Spark Connect URL (``sc://host:15002``); default ``local[*]``.

    The pilot file may say just ``engine: spark``. ``pilot-workbook run --engine``
    overrides ``name`` (and ``--spark-master`` overrides ``master``).
    """

    name: Literal["duckdb", "spark"] = "duckdb"
    memory_limit: str = Field(default="512MB", pattern=_MEMORY_SIZE)
    threads: int | None = Field(default=None, ge=1)
    spill_dir: str | None = None
    master: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _master_only_for_spark(self) -> EngineSettings:
        if self.master and self.name != "spark":
            raise ValueError("'master' is a Spark setting; set name: spark or remove master")
        return self


#: The roles the playbook requires on a pilot's cross-functional team (key: readable name).
REQUIRED_ROLES: dict[str, str] = {
    "business_process_owner": "Business process owner",
    "governance_risk": "Governance / risk / compliance lead",
    "ai_ml_engineering": "AI/ML engineering",
    "it_operations": "IT operations",
}


class TeamMember(_Strict):
    """One member of the pilot's cross-functional team (``team:`` in the pilot file).

    ``role``: one of :data:`REQUIRED_ROLES` (``business_process_owner``,
    ``governance_risk``, ``ai_ml_engineering``, ``it_operations``) or any other
    role in words (``finance``, ``executive sponsor``); ``name``: the person;
    ``title``: their job title (optional). The go/no-go page's sign-off block
    lists every member; phase 1 warns when a required role has nobody.
    """

    name: str = Field(min_length=1)
    role: str = Field(min_length=1)
    title: str | None = None

    @property
    def role_label(self) -> str:
        """The role in words (``Business process owner``)."""
        return REQUIRED_ROLES.get(self.role, self.role)


class StatisticsSettings(_Strict):
    """How intervals and sample-size advice allow for the way the data were produced.

    - ``cluster_by``: the unit decisions cluster in (``week``, ``user``, ``case``
      or ``none`` for independent decisions). Every KPI interval is cluster-robust
      at that level and reports its design effect. Default ``week``: decisions
      of one week share its staff, volumes and prompt version. ``week`` is the
      ISO week (Monday) of the timestamp; ``user`` the decision log's
      ``user_id`` (a decision without one counts with its case; a log without
      the column is clustered by case); ``case`` the ``case_id``.
    - ``power``: the chance that extending by the advised sample settles an
      inconclusive KPI, when the estimate holds (default 0.80).
    - ``interim``: ``true`` for a look before the window's end: intervals become
      anytime-valid confidence sequences, so weekly looks do not inflate the
      chance of a false GO. ``pilot-workbook run --interim`` sets it for one run.
    - ``few_clusters``: below this many clusters a rate or cost per decision is
      judged with the restricted wild cluster bootstrap-t (Webb weights, seeded),
      CR1 kept beside it (default 30; docs/decisions.md, "Few clusters").
    - ``fragile_margin_se``: a PASS whose bound clears its threshold by less than
      this many standard errors is "PASS (fragile)" (default 0.5); so is one that
      CR1 and the bootstrap judge differently or that does not survive leaving
      out any one week.
    - ``missed_not_shown``: what a FAIL decides when its estimate misses the
      threshold but its interval still holds it ("missed, but not shown to
      miss"): ``EXTEND`` (default: collect the advised data; a NO-GO on a point
      estimate would be wrong about half the time when the truth sits on the
      threshold) or ``NO-GO`` (the estimate alone stops the pilot).
    - ``planned_agent_share``: the agent cohort's planned share of the agent +
      control cases (0.5 for a 50/50 split; no default: without it the split is
      not checked). A sample-ratio mismatch against it (chi-square at 0.001; an
      anytime-valid test at interim looks) makes the efficiency verdict
      INCONCLUSIVE with a finding.
    """

    cluster_by: Literal["week", "user", "case", "none"] = "week"
    power: float = Field(default=0.80, ge=0.5, lt=1)
    interim: bool = False
    few_clusters: int = Field(default=30, ge=3)
    planned_agent_share: float | None = Field(default=None, gt=0, lt=1)
    fragile_margin_se: float = Field(default=0.5, ge=0)
    missed_not_shown: Literal["EXTEND", "NO-GO"] = "EXTEND"


class AuditTrailSettings(_Strict):
    """How complete the decision chains must be (phase 4, docs/pilot-file.md).

    - ``min_complete_share``: decisions whose chain is complete (request -> model
      call -> tool call -> approval when required -> executed action, each link
      that applies on record) over all decisions, at least (default 0.99). Below
      it: a blocking finding. It is judged on the measured share: every decision
      of the window is counted, so the share is a census of the pilot, not a sample
      estimate (the interval shown describes the process behind it).
    """

    min_complete_share: float = Field(default=0.99, ge=0, le=1)


class DataSufficiency(_Strict):
    """Limits on missing and quarantined evidence; beyond one, the gate cannot say GO.

    Shares are fractions (0.10 = 10%). Each limit breached is a blocking finding
    of phase 2 ("The evidence is incomplete: ..."); see docs/pilot-file.md.

    - ``max_quarantined_share``: quarantined rows over rows read, per data set
      (default 0.05). ``dataset_limits`` overrides it for named data sets. A data
      set of fewer than ``min_group_rows`` rows is held to
      ``max_group_quarantined_share`` instead (unless ``dataset_limits`` names it).
    - ``max_group_quarantined_share``: the same share within one calendar week
      (Monday to Sunday) or one prompt version of the decision log (default
      0.20), judged only for groups of at least ``min_group_rows`` rows (default 30).
    - ``min_week_share`` / ``max_thin_weeks``: a week of the pilot window whose
      valid decisions fall below ``min_week_share`` (default 0.25) of the median
      week's (scaled by its days inside the window) is thin; more than
      ``max_thin_weeks`` thin weeks (default 0) block.
    - ``min_outcome_known_share``: decisions whose business outcome is known
      (``accepted`` recorded; for a log built from traces, decisions with an
      outcome row) over all decisions seen (default 0.95).
    - ``min_correct_known_share``: valid decisions with a known ``correct``
      (calibration) over valid decisions (default 0.25).
    - ``max_flagged_share``: rows a flag rule marks (kept, counted) over the data
      set's valid rows (default 0.05); below it a flag is a warning.
    """

    max_quarantined_share: float = Field(default=0.05, ge=0, le=1)
    dataset_limits: dict[str, float] = Field(default_factory=dict)
    max_group_quarantined_share: float = Field(default=0.20, ge=0, le=1)
    min_group_rows: int = Field(default=30, ge=1)
    min_week_share: float = Field(default=0.25, ge=0, le=1)
    max_thin_weeks: int = Field(default=0, ge=0)
    min_outcome_known_share: float = Field(default=0.95, ge=0, le=1)
    min_correct_known_share: float = Field(default=0.25, ge=0, le=1)
    max_flagged_share: float = Field(default=0.05, ge=0, le=1)

    @field_validator("dataset_limits")
    @classmethod
    def _known_datasets(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(DATASET_NAMES))
        if unknown:
            raise ValueError(
                f"dataset_limits names unknown data set(s) {unknown}; known: {list(DATASET_NAMES)}"
            )
        bad = {k: x for k, x in v.items() if not 0 <= x <= 1}
        if bad:
            raise ValueError(f"dataset_limits must be shares between 0 and 1; got {bad}")
        return v

    def limit_for(self, dataset: str, rows: int | None = None) -> float:
        """The quarantined-share limit of ``dataset`` with ``rows`` rows read.

        Its own limit from ``dataset_limits`` when set. Otherwise
        ``max_quarantined_share``, except for a small data set (fewer than
        ``min_group_rows`` rows, such as an 11-event drill log), which is held to
        the per-group limit like a small week: one bad row of 11 is 9% and
        should ask for a look, not stop the pilot on its own.
        """
        if dataset in self.dataset_limits:
            return float(self.dataset_limits[dataset])
        if rows is not None and rows < self.min_group_rows:
            return float(max(self.max_quarantined_share, self.max_group_quarantined_share))
        return float(self.max_quarantined_share)


class RiskCoverageSettings(_Strict):
    """Where to set ``confidence_threshold``: the risk-coverage curve (phase 3).

    - ``max_error_rate``: the error rate the business accepts among the decisions the
      agent handles without a human (0.05 = 5%). The recommended threshold is the
      lowest whose error rate meets it *with its interval* (upper bound at or below
      it). Leave it out to see the curve with no recommendation.
    - ``grid_step``: the spacing of the thresholds the curve is computed at (default
      0.01: 0, 0.01, ..., 1); today's ``confidence_threshold`` is always added.
    """

    max_error_rate: float | None = Field(default=None, gt=0, lt=1)
    grid_step: float = Field(default=0.01, ge=0.001, le=0.1)


class ShadowSettings(_Strict):
    """Shadow mode (phase 2): agent decisions made silently beside the human's.

    - ``segment_by``: decision-log columns the agreement rate is broken down by
      (default ``[workflow]``); each must be a column of the decision log.
    - ``min_agreement``: the agreement the agent must reach before it acts
      (a share, 0.90 = 90%). No default: without it the agreement is shown, not judged.
    - ``disagreement_costs_usd``: dollars one disagreement of a kind costs, keyed
      ``"<agent outcome> -> <human outcome>"`` (e.g. ``"approve -> deny": 850``).
      Kinds not listed cost the row's ``review_minutes`` at ``costs.review_hourly_rate_usd``.
    """

    segment_by: list[str] = Field(default_factory=lambda: ["workflow"], min_length=1)
    min_agreement: float | None = Field(default=None, ge=0, le=1)
    disagreement_costs_usd: dict[str, float] = Field(default_factory=dict)

    @field_validator("disagreement_costs_usd")
    @classmethod
    def _kinds(cls, v: dict[str, float]) -> dict[str, float]:
        for kind, cost in v.items():
            parts = [p.strip() for p in kind.split("->")]
            if len(parts) != 2 or not all(parts):
                raise ValueError(
                    f"key {kind!r} is not '<agent outcome> -> <human outcome>' "
                    "(e.g. 'approve -> deny')"
                )
            if cost < 0:
                raise ValueError(f"cost of {kind!r} must be >= 0 dollars, got {cost}")
        return {" -> ".join(p.strip() for p in k.split("->")): float(c) for k, c in v.items()}


class PromotionSettings(_Strict):
    """Prompt-version promotion on the golden set (phase 3).

    - ``margin``: how far (absolute accuracy, 0.02 = 2 points) a promoted
      version's golden-set accuracy may fall below its predecessor's on the
      cases both were evaluated on and still count as matching it (default 0.02).
      A promotion blocks only when the whole paired interval lies more than the
      margin below zero (shown worse); an interval reaching below ``-margin`` is
      a warning (matching not shown).
    """

    margin: float = Field(default=0.02, ge=0, le=1)


class FeedbackSettings(_Strict):
    """Fast- and slow-loop feedback (phase 3).

    - ``max_cross_loop_share``: the share of consumed feedback items that may
      have been used by the other loop than the one they were collected for
      before it blocks (default 0.05); below it, any crossing is a warning.
    """

    max_cross_loop_share: float = Field(default=0.05, ge=0, le=1)


class IntegrationSettings(_Strict):
    """How the agent must treat its downstream systems (phase 2, integration health).

    Times are seconds; shares are fractions (0.05 = 5%). See docs/pilot-file.md.

    - ``decision_timeout_seconds``: a decision whose tool calls span longer than
      this (first call's start to the last call's end, or a call that never
      returned) hung (default 300).
    - ``max_error_rate``: a system whose error rate (5xx, timeouts and 4xx over
      attempts sent) is above this over the window gets a warning (default 0.05).
    - ``min_retry_gap_seconds``: a retry sent sooner than this after the previous
      attempt ended is hammering, not backing off (default 0.5).
    - ``max_attempts``: attempts of one call beyond this are hammering (default 4).
    - ``breaker_threshold``: more consecutive failed attempts to one system than
      this, with no ``circuit_open`` and no pause of ``breaker_pause_seconds``
      between them, means the agent ignored its circuit breaker (default 5).
    - ``breaker_pause_seconds``: a pause this long between two failures resets the
      count (the breaker would have gone half-open; default 30).
    - ``max_hammering_share``: per system, hammering calls over retried calls
      above this block (a retry storm; default 0.01); any hammering at or below
      it is a warning. One fast retry in 30,000 calls is noise (a clock, a
      race), not a storm.
    - ``max_ignored_breaker_runs``: runs past the breaker threshold (all systems)
      above this count block (default 1); one run is a warning: a breaker that
      opened while a call was already in flight looks the same in the log.
    - ``max_hung_decisions``: hung decisions above this count block (default 0:
      one call the agent waited on forever shows the timeout is missing).

    Not settable, and zero-tolerance by design: a side-effecting action executed
    twice (a second payment or ticket cannot be taken back: one is harm, not
    noise), and the approval review's authority violations (phase 4).
    """

    decision_timeout_seconds: float = Field(default=300.0, gt=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    min_retry_gap_seconds: float = Field(default=0.5, ge=0)
    max_attempts: int = Field(default=4, ge=1)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_pause_seconds: float = Field(default=30.0, gt=0)
    max_hammering_share: float = Field(default=0.01, ge=0, le=1)
    max_ignored_breaker_runs: int = Field(default=1, ge=0)
    max_hung_decisions: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _pause_within_timeout(self) -> IntegrationSettings:
        if self.breaker_pause_seconds >= self.decision_timeout_seconds:
            raise FieldProblem(
                "breaker_pause_seconds",
                self.breaker_pause_seconds,
                f"must be shorter than decision_timeout_seconds ({self.decision_timeout_seconds:g}):"
                " a pause that long already counts as a hung decision; lower it",
            )
        return self


class Pilot(_Strict):
    """A validated pilot file. Build it with :func:`load_pilot`."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str
    owner: str
    business_unit: str
    scope: str
    pilot_window: DateWindow
    baseline_window: DateWindow
    datasets: dict[str, DatasetSource]
    kpis: list[KpiThreshold] = Field(min_length=1)
    costs: CostSettings
    drift: DriftSettings
    drills: DrillTargets
    approvals: ApprovalPolicy
    build_vs_buy: BuildVsBuy | None = None
    use_case: UseCaseSettings = UseCaseSettings()
    confidence_threshold: float = Field(default=0.7, ge=0, le=1)
    engine: EngineSettings = EngineSettings()
    traces: TraceSettings | None = None
    statistics: StatisticsSettings = StatisticsSettings()
    data_sufficiency: DataSufficiency = DataSufficiency()
    audit_trail: AuditTrailSettings = AuditTrailSettings()
    team: list[TeamMember] = Field(default_factory=list)
    risk_coverage: RiskCoverageSettings = RiskCoverageSettings()
    shadow: ShadowSettings = ShadowSettings()
    promotion: PromotionSettings = PromotionSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    budgets: list[Budget] = Field(default_factory=list)
    integration: IntegrationSettings = IntegrationSettings()

    _path: Path | None = PrivateAttr(default=None)
    _file_hash: str | None = PrivateAttr(default=None)

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, v: dict[str, DatasetSource]) -> dict[str, DatasetSource]:
        allowed = [*DATASET_NAMES, *AUXILIARY_DATASETS]
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise FieldProblem("", unknown, f"unknown data set(s); allowed: {allowed}")
        for name, src in v.items():
            if src.format in TRACE_FORMATS and name != "decisions":
                raise FieldProblem(
                    f"{name}.format",
                    src.format,
                    f"a trace format is only valid for datasets.decisions; give datasets.{name} "
                    "as parquet, csv or jsonl",
                )
        missing = [d for d in ("decisions", "cases") if d not in v]
        if missing:
            raise FieldProblem(
                "", sorted(v), f"data set(s) {missing} are required; add datasets.{missing[0]}"
            )
        return v

    @model_validator(mode="after")
    def _windows(self) -> Pilot:
        if self.baseline_window.end >= self.pilot_window.start:
            raise FieldProblem(
                "baseline_window.end",
                self.baseline_window.end.isoformat(),
                "the baseline (before the agent) must end before pilot_window starts "
                f"({self.pilot_window.start}); end it on {self.pilot_window.start - dt.timedelta(days=1)} at the latest",
            )
        pw = self.pilot_window
        for label in ("reference_window", "current_window"):
            w = getattr(self.drift, label)
            if w.start < pw.start or w.end > pw.end:
                raise FieldProblem(
                    f"drift.{label}",
                    {"start": w.start.isoformat(), "end": w.end.isoformat()},
                    f"must lie inside pilot_window ({pw.start} to {pw.end})",
                )
        from_traces = self.datasets["decisions"].format in TRACE_FORMATS
        if self.traces is not None and not from_traces:
            raise FieldProblem(
                "traces",
                self.traces.model_dump(exclude_defaults=True),
                "only used when the decision log comes from traces; set "
                f"datasets.decisions.format to one of {list(TRACE_FORMATS)} or remove traces",
            )
        if "outcomes" in self.datasets and not from_traces:
            raise FieldProblem(
                "datasets.outcomes",
                self.datasets["outcomes"].path or self.datasets["outcomes"].table,
                "outcomes are joined into a decision log built from traces; set "
                f"datasets.decisions.format to one of {list(TRACE_FORMATS)} or remove "
                "datasets.outcomes (put the outcome columns in the decision log itself)",
            )
        names = [k.kpi for k in self.kpis]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FieldProblem("kpis", dupes, "each KPI may have one threshold; repeated")
        return self

    @model_validator(mode="after")
    def _budgets_priced(self) -> Pilot:
        prices = self.model_prices
        seen: dict[tuple[str, str], int] = {}
        for i, budget in enumerate(self.budgets):
            if budget.scope in seen:
                raise FieldProblem(
                    f"budgets[{i}]",
                    budget.model_dump(exclude_none=True),
                    f"a second budget for {budget.label} (budgets[{seen[budget.scope]}] is the "
                    "first); keep one budget per agent or workflow",
                )
            seen[budget.scope] = i
            if budget.fallback_model is not None and budget.fallback_model not in prices:
                raise FieldProblem(
                    f"budgets[{i}].fallback_model",
                    budget.fallback_model,
                    "the fallback model has no price; add it to costs.model_prices "
                    "(input_per_million_usd, output_per_million_usd)"
                    + (f"; priced models: {sorted(prices)}" if prices else ""),
                )
        return self

    # ---- derived, read-only helpers -------------------------------------------------
    @property
    def model_prices(self) -> dict[str, ModelPrice]:
        """Price per model: ``traces.prices`` overlaid with ``costs.model_prices``."""
        traces = self.traces.prices if self.traces is not None else {}
        return {**traces, **self.costs.model_prices}

    @property
    def path(self) -> Path:
        """The pilot file this model was loaded from."""
        if self._path is None:
            raise RuntimeError("this Pilot was not loaded from a file")
        return self._path

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the pilot file, resolved against the pilot file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.folder / p)

    @property
    def file_hash(self) -> str:
        """SHA-256 (hex) of the pilot file's bytes as they were loaded: proves which
        thresholds were used, even if the file is edited afterwards."""
        if self._file_hash is None:
            self._file_hash = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return self._file_hash

    def threshold(self, kpi: str) -> KpiThreshold | None:
        for k in self.kpis:
            if k.kpi == kpi:
                return k
        return None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pilot file."""

    file: str
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        where = self.field or "(top level)"
        if self.value is None:  # nothing to show (an empty file, a YAML problem)
            return f"{self.file}: {where}: {self.message}"
        return f"{self.file}: {where}: {self.message} (got {shown})"


class PilotFileError(WorkbookError, ValueError):
    """An invalid pilot file; ``problems`` lists each mistake."""

    def __init__(self, path: Path | str, problems: list[Problem]):
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid pilot file {self.path}: {len(problems)} problem(s)\n{lines}")


def pilot_file_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/pilot.yaml``."""
    p = Path(path).expanduser()
    return p / "pilot.yaml" if p.is_dir() else p


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_PYDANTIC_HINTS = {
    "extra_forbidden": "unknown key; check the spelling against docs/pilot-file.md",
    "missing": "required field is missing",
}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the model at ``loc`` (the parent of an unknown key) accepts."""
    model: Any = Pilot
    for part in loc:
        if isinstance(part, int):
            continue  # list index: same item model
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None  # a dict key (datasets.<name>): the value model follows
        model = _item_model(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _item_model(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _item_model(arg)
        if found is not None:
            return found
    return None


def _problems_from(err: ValidationError, file: str) -> list[Problem]:
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        msg = _PYDANTIC_HINTS.get(e["type"], e["msg"])
        value = e.get("input")
        if e["type"] == "literal_error":
            msg = f"not allowed; {e['msg'].lower()}"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            if allowed:
                msg = f"unknown key; allowed here: {', '.join(allowed)}"
        cause = (e.get("ctx") or {}).get("error")
        field = _field_path(loc)
        if isinstance(cause, FieldProblem):
            msg, value = cause.message, cause.value
            if cause.field:
                joiner = "" if not field or cause.field.startswith("[") else "."
                field = f"{field}{joiner}{cause.field}"
        msg = msg.removeprefix("Value error, ")
        problems.append(Problem(file, field, value, msg))
    return problems


def load_pilot(path: str | Path) -> Pilot:
    """Load and validate a pilot file.

    Parameters
    ----------
    path:
        A ``pilot.yaml`` file, or a folder that holds one.

    Raises
    ------
    PilotFileError
        The file is missing, is not YAML, or breaks the schema; ``problems``
        names each field, the bad value and what is allowed.
    """
    file = pilot_file_path(path)
    shown = str(file)
    if not file.is_file():
        raise PilotFileError(
            shown,
            [
                Problem(
                    shown,
                    "",
                    str(path),
                    "no pilot file here; pass a pilot folder or its pilot.yaml",
                )
            ],
        )
    data = file.read_bytes()
    try:
        raw = _load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PilotFileError(shown, [Problem(shown, "", None, f"not UTF-8 text: {exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # the problem itself (the line and column are in ``where``), else all PyYAML says
        detail = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _RefusedYaml):  # valid YAML this workbook refuses
            raise PilotFileError(shown, [Problem(shown, where, None, detail)]) from None
        raise PilotFileError(
            shown, [Problem(shown, where, None, f"not valid YAML: {detail}")]
        ) from None
    if raw is None:
        raise PilotFileError(
            shown,
            [
                Problem(
                    shown,
                    "",
                    None,
                    "the pilot file is empty; start from docs/pilot-file.md "
                    "(name, pilot_window, datasets, kpis, ...)",
                )
            ],
        )
    if not isinstance(raw, dict):
        raise PilotFileError(
            shown, [Problem(shown, "", type(raw).__name__, "the file must hold a mapping of keys")]
        )
    try:
        pilot = Pilot.model_validate(raw)
    except ValidationError as err:
        raise PilotFileError(shown, _problems_from(err, shown)) from None
    pilot._path = file.resolve()
    pilot._file_hash = hashlib.sha256(data).hexdigest()
    missing = _missing_files(pilot, shown)
    if missing:
        raise PilotFileError(shown, missing)
    return pilot


#: Most values a pilot file may expand to, its aliases followed (a real one has a few
#: hundred): a few nested aliases can otherwise stand for billions ("alias bomb").
MAX_YAML_VALUES = 100_000


class _RefusedYaml(yaml.constructor.ConstructorError):
    """Valid YAML that a pilot file must not hold (a duplicate key, an alias bomb)."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping.

    Plain YAML keeps the last of two equal keys silently: a threshold written twice
    would count only once, unseen.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                first = seen[key]
                raise _RefusedYaml(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {first.line + 1}): YAML keeps "
                    "only the last one; write each key once",
                    key_node.start_mark,
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias followed (linear in the graph)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_VALUES + 1  # a cycle expands without end
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_YAML_VALUES + 1)
    return memo[key]


def _load_yaml(text: str) -> Any:
    """Parse a pilot file: safe YAML, no duplicate keys, aliases bounded (see MAX_YAML_VALUES)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise _RefusedYaml(
                None,
                None,
                f"the file's anchors and aliases expand to more than {MAX_YAML_VALUES:,} "
                "values; a pilot file needs a few hundred: write the values out, or use "
                "fewer nested aliases",
                node.start_mark,
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _missing_files(pilot: Pilot, shown: str) -> list[Problem]:
    """Local files a data set points at that do not exist (URIs are checked on open)."""
    problems = []
    for name, src in pilot.datasets.items():
        for key in ("path", "database"):
            rel = getattr(src, key)
            if not rel:
                continue
            target = pilot.resolve(rel)
            if any(ch in rel for ch in "*?["):
                found = glob.glob(str(target), recursive=True)
            else:
                found = [target] if target.exists() else []
            if not found:
                problems.append(
                    Problem(
                        shown,
                        f"datasets.{name}.{key}",
                        rel,
                        f"no file at {_shown_resolved(target)}; paths are relative to the "
                        "pilot file's folder",
                    )
                )
    return problems


def _shown_resolved(target: Path) -> str:
    """``target`` with ``..`` and symbolic links resolved (what was looked for), as text."""
    try:
        return str(target.resolve())
    except (OSError, RuntimeError):
        return str(target)


def paths_outside(pilot: Pilot) -> list[tuple[str, str, str]]:
    """Data paths of ``pilot`` that lie outside the pilot file's folder.

    Allowed (a data set shared by several pilots, an export folder elsewhere),
    but easy to get wrong: ``validate`` lists each as ``(field, as written,
    resolved)``, the resolved path absolute with ``..`` and links followed. URIs
    (``s3://``, ``https://``) are not paths and are not listed.
    """
    folder = Path(_shown_resolved(pilot.folder))
    out = []
    for name, src in pilot.datasets.items():
        for key in ("path", "database"):
            rel = getattr(src, key)
            if not rel or "://" in rel:
                continue
            resolved = Path(_shown_resolved(pilot.resolve(rel)))
            if not resolved.is_relative_to(folder):
                out.append((f"datasets.{name}.{key}", rel, str(resolved)))
    return out

"""Phase 4: kill-switch drill review.

A kill-switch drill injects an anomaly into the running agent and logs how the
team responds (data set ``drill_events``, see ``docs/data-contracts.md``). For
each drill :func:`review_drills` measures, in seconds:

- **time to detect**: ``anomaly_injected`` to the first ``detected`` at or after it;
- **time to page**: ``detected`` to the first ``paged`` at or after it;
- **time to pause**: ``detected`` to the first ``paused`` (kill switch) at or after it;

and checks each against the pilot file's ``drills`` targets (a measure passes
when it is at most its target). It also follows every action of the drill:

- an action is **in flight** when it started before the kill-switch pause and
  had not ended before it; it must then end ``action_completed`` or
  ``action_rolled_back``. One that never ends fails the drill;
- any ``action_started`` while the agent is paused (at or after a ``paused``
  event and before the next ``resumed``) fails the drill: the kill switch did
  not stop new actions.

A drill passes only when all three measures meet their targets, no action
started while paused and every in-flight action ended. A measure that cannot be
taken (its event is missing, or logged before the event it is measured from)
fails the drill too: a drill without evidence is not a passed drill.

Malformed logs never raise: each problem becomes a :class:`~pilot_lib.analysis.findings.Finding`
(severity ``"warning"``) that names the drill and the events, and the review goes
on with what can be measured. The problems recognised:

- a missing ``anomaly_injected``, ``detected``, ``paged`` or ``paused`` event;
- a pause (or page) logged before the detection;
- unknown event names (with a "did you mean" hint), kept on the timeline;
- clocks out of order: ``detected``, ``paged``, ``paused`` or ``resumed``
  logged before the anomaly, or an action that ends before it starts. Actions
  may legitimately *start* before the anomaly (they are the in-flight work);
- duplicates: identical rows (dropped and counted), a second ``anomaly_injected``
  / ``detected`` / ``paged`` (the first counts), a ``paused`` while already
  paused, an action started or ended twice;
- rows with no drill id, event or parseable timestamp (left out and counted);
- an empty log: no drill was run, a blocking finding (the playbook requires one).

Ordering: events are sorted by drill, timestamp and then the natural order of a
drill (``anomaly_injected``, ``detected``, ``paged``, ``paused``, ``resumed``,
``action_started``, ``action_completed``, ``action_rolled_back``, unknown
events last), never by the row order of the source, which an engine does not
guarantee. So an action started in the same second as the pause counts as
started after it, and one ended in that second as in flight.

Drill logs are tens of events per drill, so the whole ``drill_events`` table is
executed into pandas; this module is not meant for decision-log-sized input.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pilot_lib.analysis.findings import Finding
from pilot_lib.config import DrillTargets
from pilot_lib.errors import ContractError
from pilot_lib.results import to_jsonable

__all__ = ["DRILL_EVENTS", "PHASE", "DrillReview", "review_drills"]

#: Phase key of every finding raised here.
PHASE = "incident_drill_review"

#: Event names of the ``drill_events`` contract, in the natural order of a drill.
DRILL_EVENTS = (
    "anomaly_injected",
    "detected",
    "paged",
    "paused",
    "resumed",
    "action_started",
    "action_completed",
    "action_rolled_back",
)
_EVENT_ORDER = {name: i for i, name in enumerate(DRILL_EVENTS)}
_SINGLE_EVENTS = ("anomaly_injected", "detected", "paged")
_RESPONSE_EVENTS = ("detected", "paged", "paused", "resumed")
_ACTION_EVENTS = ("action_started", "action_completed", "action_rolled_back")
_END_EVENTS = {"action_completed": "completed", "action_rolled_back": "rolled_back"}

_EVENT_COLUMNS = ["drill_id", "event", "timestamp", "action_id", "detail"]

DRILL_COLUMNS = [
    "drill_id",
    "status",
    "reasons",
    "anomaly_at",
    "detected_at",
    "paged_at",
    "paused_at",
    "seconds_to_detect",
    "target_seconds_to_detect",
    "detect_status",
    "seconds_to_page",
    "target_seconds_to_page",
    "page_status",
    "seconds_to_pause",
    "target_seconds_to_pause",
    "pause_status",
    "n_actions",
    "in_flight_actions",
    "in_flight_completed",
    "in_flight_rolled_back",
    "in_flight_never_ended",
    "n_actions_after_pause",
    "actions_after_pause",
]
ACTION_COLUMNS = [
    "drill_id",
    "action_id",
    "started",
    "ended",
    "outcome",
    "in_flight",
    "started_after_pause",
]
CHECK_COLUMNS = ["drill_id", "measure", "seconds", "target_seconds", "status", "reason"]
TIMELINE_COLUMNS = [
    "drill_id",
    "event",
    "timestamp",
    "seconds_since_anomaly",
    "action_id",
    "detail",
    "known_event",
]

# --------------------------------------------------------------------------------------
# Input handling (shared with pilot_lib.analysis.approvals)
# --------------------------------------------------------------------------------------


def _small_frame(
    data: Any,
    dataset: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
) -> pd.DataFrame:
    """A small data set (an Ibis table or a pandas DataFrame) as a pandas DataFrame.

    Only the named columns are kept (``optional`` ones are added as all-null
    when absent). A missing required column raises :class:`ContractError`
    naming the data set and the column. Ibis tables are executed whole: use
    this only for data sets of thousands of rows, never for the decision log.
    """
    if isinstance(data, pd.DataFrame):
        columns = [str(c) for c in data.columns]
    else:
        try:
            import ibis.expr.types as ir
        except ImportError:  # pragma: no cover - ibis is a dependency
            ir = None
        if ir is None or not isinstance(data, ir.Table):
            raise TypeError(
                f"{dataset}: expected an Ibis table or a pandas DataFrame, "
                f"got {type(data).__name__}"
            )
        columns = list(data.columns)
    _require_columns(dataset, columns, required)
    keep = [c for c in (*required, *optional) if c in columns]
    if isinstance(data, pd.DataFrame):
        frame = data.loc[:, keep].copy()
    else:
        frame = data.select(*keep).execute()
    for c in optional:
        if c not in frame.columns:
            frame[c] = None
    return frame.reset_index(drop=True)


def _require_columns(dataset: str, columns: Sequence[str], required: Sequence[str]) -> None:
    """Raise :class:`ContractError` naming the data set and any required column not in ``columns``."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ContractError(
            f"{dataset}: required column(s) {missing} not found (columns present: "
            f"{list(columns)}); rename or add them as docs/data-contracts.md describes for "
            f"'{dataset}'"
        )


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean_text(values: pd.Series) -> pd.Series:
    """Strings stripped of surrounding blanks; null and empty strings become ``None``."""

    def one(v: Any) -> Any:
        if _is_missing(v):
            return None
        s = str(v).strip()
        return s or None

    return pd.Series([one(v) for v in values], index=values.index, dtype=object)


def _parse_timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(timestamps, unparseable)``: naive UTC ``datetime64`` values and a mask of
    values that were given but do not parse (they become ``NaT``)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        parsed = values
    else:
        given = values.where(values.map(lambda v: not _is_missing(v)), None)
        parsed = pd.to_datetime(given.astype(object), errors="coerce", utc=True, format="mixed")
        parsed = parsed.dt.tz_localize(None)
    parsed = parsed.astype("datetime64[us]")
    given_mask = values.map(lambda v: not _is_missing(v)).astype(bool)
    unparseable = given_mask & parsed.isna()
    return parsed, unparseable


def _seconds(later: Any, earlier: Any) -> float:
    if _is_missing(later) or _is_missing(earlier):
        return math.nan
    return float((pd.Timestamp(later) - pd.Timestamp(earlier)).total_seconds())


def _fmt_seconds(x: float) -> str:
    if not math.isfinite(x):
        return "no data"
    if float(x).is_integer():
        return f"{int(x):,} s"
    return f"{x:,.1f} s"


def _id_list(ids: Iterable[Any], limit: int = 8) -> str:
    ids = [str(i) for i in ids]
    if len(ids) <= limit:
        return ", ".join(ids)
    return ", ".join(ids[:limit]) + f" and {len(ids) - limit} more"


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillReview:
    """The review of every drill in a ``drill_events`` log.

    Attributes
    ----------
    drills:
        One row per drill (sorted by ``drill_id``): ``status`` (``"pass"`` /
        ``"fail"``), ``reasons`` (plain words; why it failed, or what it met),
        the event times, ``seconds_to_detect`` / ``_page`` / ``_pause`` (NaN when
        not measurable) with their targets and per-measure status (``"pass"``,
        ``"fail"``, ``"not measured"``), and the action counts.
        ``actions_after_pause`` is a comma-separated list of action ids.
    actions:
        One row per action: ``drill_id``, ``action_id``, ``started``, ``ended``
        (NaT when not logged), ``outcome`` (``"completed"``, ``"rolled_back"``,
        ``"never_ended"``), ``in_flight`` (running when the kill switch engaged),
        ``started_after_pause``.
    checks:
        The targets table, one row per drill and measure (``time_to_detect``,
        ``time_to_page``, ``time_to_pause``): seconds, target, status, reason.
    events:
        The cleaned, sorted events of all drills with ``seconds_since_anomaly``;
        see :meth:`timeline`.
    findings:
        Failed drills (``"blocking"``), malformed-log problems (``"warning"``),
        passed drills (``"info"``).
    """

    drills: pd.DataFrame
    actions: pd.DataFrame
    checks: pd.DataFrame
    events: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)
    targets: DrillTargets | None = None

    @property
    def passed(self) -> bool:
        """True when at least one drill was logged and every drill passed."""
        return bool(len(self.drills)) and not any(f.severity == "blocking" for f in self.findings)

    @property
    def drill_ids(self) -> list[str]:
        return [str(d) for d in self.drills["drill_id"]]

    def timeline(self, drill_id: str) -> pd.DataFrame:
        """Events of one drill in order, for the timeline chart.

        ``seconds_since_anomaly`` is measured from the drill's ``anomaly_injected``
        event (negative for actions already running before it); when the drill has
        no such event it is measured from the drill's first event instead.
        ``known_event`` is False for event names outside the contract.
        Raises ``KeyError`` naming the known drills for an unknown ``drill_id``.
        """
        if drill_id not in self.drill_ids:
            raise KeyError(f"no drill {drill_id!r} in the log; drills: {self.drill_ids}")
        out = self.events.loc[self.events["drill_id"] == drill_id, TIMELINE_COLUMNS]
        return out.reset_index(drop=True)

    def to_result(self) -> dict[str, Any]:
        """JSON-able summary for the phase result file."""
        return to_jsonable(
            {
                "passed": self.passed,
                "n_drills": len(self.drills),
                "n_drills_passed": int((self.drills["status"] == "pass").sum()),
                "targets": self.targets,
                "drills": self.drills,
                "checks": self.checks,
                "actions": self.actions,
                "findings": self.findings,
            }
        )


# --------------------------------------------------------------------------------------
# Review
# --------------------------------------------------------------------------------------


def review_drills(events: Any, targets: DrillTargets) -> DrillReview:
    """Review every kill-switch drill in ``events`` against ``targets``.

    Parameters
    ----------
    events:
        The ``drill_events`` data set as an Ibis table or a pandas DataFrame with
        ``drill_id``, ``event``, ``timestamp`` (UTC; strings are parsed) and
        optionally ``action_id`` and ``detail``. It is executed into pandas
        whole (a drill log is small).
    targets:
        The pilot file's ``drills`` section: maximum seconds to detect (from the
        anomaly), to page and to pause (both from the detection).

    Returns
    -------
    DrillReview
        Timings in seconds, pass/fail per drill with reasons, the actions, the
        timeline and the findings. Never raises on a malformed log; a missing
        required column raises :class:`~pilot_lib.errors.ContractError`.
    """
    raw = _small_frame(
        events, "drill_events", ["drill_id", "event", "timestamp"], ["action_id", "detail"]
    )
    findings: list[Finding] = []
    frame = _clean_events(raw, findings)

    if frame.empty:
        findings.append(
            Finding(
                PHASE,
                "drill_log_empty",
                "blocking",
                "No kill-switch drill was logged, so the kill switch has not been shown to work; "
                "run a simulated incident during the pilot and load its events.",
                {"rows": len(raw)},
            )
        )
        return DrillReview(
            drills=pd.DataFrame(columns=DRILL_COLUMNS),
            actions=pd.DataFrame(columns=ACTION_COLUMNS),
            checks=pd.DataFrame(columns=CHECK_COLUMNS),
            events=pd.DataFrame(columns=TIMELINE_COLUMNS),
            findings=findings,
            targets=targets,
        )

    _unknown_event_findings(frame, findings)

    drill_rows: list[dict[str, Any]] = []
    action_rows: list[dict[str, Any]] = []
    check_rows: list[dict[str, Any]] = []
    timelines: list[pd.DataFrame] = []
    for drill_id, ev in frame.groupby("drill_id", sort=True):
        row, checks, actions, timeline, drill_findings = _review_one(
            str(drill_id), ev.reset_index(drop=True), targets
        )
        drill_rows.append(row)
        check_rows.extend(
            {**c, "reason": c["reason"][:1].upper() + c["reason"][1:]} for c in checks
        )
        action_rows.extend(actions)
        timelines.append(timeline)
        findings.extend(drill_findings)

    return DrillReview(
        drills=pd.DataFrame(drill_rows, columns=DRILL_COLUMNS),
        actions=pd.DataFrame(action_rows, columns=ACTION_COLUMNS),
        checks=pd.DataFrame(check_rows, columns=CHECK_COLUMNS),
        events=pd.concat(timelines, ignore_index=True)[TIMELINE_COLUMNS],
        findings=findings,
        targets=targets,
    )


def _clean_events(raw: pd.DataFrame, findings: list[Finding]) -> pd.DataFrame:
    """Typed, sorted, de-duplicated events; unusable rows and duplicates become findings."""
    frame = pd.DataFrame(
        {
            "drill_id": _clean_text(raw["drill_id"]),
            "event": _clean_text(raw["event"]),
            "action_id": _clean_text(raw["action_id"]),
            "detail": _clean_text(raw["detail"]),
        }
    )
    frame["timestamp"], unparseable = _parse_timestamps(raw["timestamp"])

    problems = {
        "no drill_id": frame["drill_id"].isna(),
        "no event name": frame["event"].isna(),
        "no timestamp": frame["timestamp"].isna() & ~unparseable,
        "unparseable timestamp": unparseable,
    }
    unusable = pd.Series(False, index=frame.index)
    counts: dict[str, int] = {}
    for reason, mask in problems.items():
        new = mask & ~unusable
        if new.any():
            counts[reason] = int(new.sum())
        unusable |= mask
    if unusable.any():
        drills = sorted({str(d) for d in frame.loc[unusable, "drill_id"].dropna()})
        findings.append(
            Finding(
                PHASE,
                "drill_rows_unusable",
                "warning",
                f"{int(unusable.sum())} drill event row(s) were left out because they lack a "
                f"drill id, an event name or a valid timestamp ({_reason_counts(counts)}); "
                "fix them in the drill log.",
                {"rows": int(unusable.sum()), "by_reason": counts, "drill_ids": drills},
            )
        )
    frame = frame.loc[~unusable]

    frame = frame.assign(
        _order=frame["event"].map(lambda e: _EVENT_ORDER.get(e, len(_EVENT_ORDER))),
        _action=frame["action_id"].fillna(""),
    )
    frame = frame.sort_values(
        ["drill_id", "timestamp", "_order", "_action", "event"], kind="mergesort"
    )
    dup = frame.duplicated(["drill_id", "event", "timestamp", "_action"], keep="first")
    if dup.any():
        dups = frame.loc[dup]
        by_drill = {
            str(d): [f"{e}@{t}" for e, t in zip(g["event"], g["timestamp"], strict=True)]
            for d, g in dups.groupby("drill_id", sort=True)
        }
        findings.append(
            Finding(
                PHASE,
                "drill_duplicate_event",
                "warning",
                f"{int(dup.sum())} drill event row(s) are exact duplicates of another row and "
                f"were counted once (drills: {_id_list(by_drill)}).",
                {"rows": int(dup.sum()), "by_drill": by_drill},
            )
        )
    frame = frame.loc[~dup].drop(columns=["_order", "_action"])
    return frame.reset_index(drop=True)


def _reason_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} with {reason}" for reason, n in counts.items())


def _unknown_event_findings(frame: pd.DataFrame, findings: list[Finding]) -> None:
    unknown = frame.loc[~frame["event"].isin(DRILL_EVENTS)]
    if unknown.empty:
        return
    names = sorted(unknown["event"].unique())
    hints = {}
    for name in names:
        close = difflib.get_close_matches(name.lower(), DRILL_EVENTS, n=1, cutoff=0.6)
        if close:
            hints[name] = close[0]
    counts = {str(k): int(v) for k, v in unknown["event"].value_counts().sort_index().items()}
    drills = sorted({str(d) for d in unknown["drill_id"]})
    hint_text = ""
    if hints:
        hint_text = " Did you mean " + ", ".join(f"'{v}' for '{k}'" for k, v in hints.items()) + "?"
    findings.append(
        Finding(
            PHASE,
            "drill_unknown_event",
            "warning",
            f"The drill log has {len(unknown)} event(s) with names outside the contract "
            f"({', '.join(repr(n) for n in names)}) in drill(s) {_id_list(drills)}; they are shown "
            f"on the timeline but not used in the timings.{hint_text}",
            {
                "counts": counts,
                "drill_ids": drills,
                "did_you_mean": hints,
                "known": list(DRILL_EVENTS),
            },
        )
    )


def _first_at_or_after(ev: pd.DataFrame, event: str, since: Any) -> Any:
    times = ev.loc[ev["event"] == event, "timestamp"]
    if not _is_missing(since):
        times = times[times >= since]
    return times.min() if len(times) else pd.NaT


def _check(
    drill_id: str,
    measure: str,
    start_event: str,
    start_at: Any,
    end_event: str,
    end_at: Any,
    early: Any,
    target: float,
    subject: str,
) -> dict[str, Any]:
    """One timing check: seconds from ``start_event`` to ``end_event`` against ``target``.

    ``early`` is an ``end_event`` logged before ``start_at`` when no later one
    exists (the measure is then not taken). The reason is lower-case first so it
    reads inside a sentence.
    """
    seconds = _seconds(end_at, start_at)
    label = measure.replace("_", " ")
    if _is_missing(start_at):
        status = "not measured"
        reason = f"no '{start_event}' event is logged, so the {label} cannot be measured"
    elif _is_missing(end_at) and not _is_missing(early):
        status = "not measured"
        reason = (
            f"the only '{end_event}' event is logged {_fmt_seconds(_seconds(start_at, early))} "
            f"before '{start_event}', so the {label} cannot be measured; check the clocks "
            "and the order of the drill log"
        )
    elif _is_missing(end_at):
        status = "not measured"
        reason = f"no '{end_event}' event is logged, so the {label} cannot be measured"
    elif seconds <= target:
        status = "pass"
        reason = (
            f"{subject} came {_fmt_seconds(seconds)} after '{start_event}', "
            f"within the {_fmt_seconds(target)} target"
        )
    else:
        status = "fail"
        reason = (
            f"{subject} came {_fmt_seconds(seconds)} after '{start_event}', "
            f"over the {_fmt_seconds(target)} target"
        )
    return {
        "drill_id": drill_id,
        "measure": measure,
        "seconds": seconds,
        "target_seconds": float(target),
        "status": status,
        "reason": reason,
    }


def _review_one(
    drill_id: str, ev: pd.DataFrame, targets: DrillTargets
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], pd.DataFrame, list[Finding]]:
    findings: list[Finding] = []

    def warn(code: str, message: str, **evidence: Any) -> None:
        findings.append(
            Finding(PHASE, code, "warning", message, {"drill_id": drill_id, **evidence})
        )

    # --- duplicated single events -----------------------------------------------------
    for name in _SINGLE_EVENTS:
        times = ev.loc[ev["event"] == name, "timestamp"]
        if len(times) > 1:
            warn(
                "drill_duplicate_event",
                f"Drill {drill_id} logs '{name}' {len(times)} times; the first counts.",
                event=name,
                timestamps=[str(t) for t in times],
            )

    # --- anchor events ----------------------------------------------------------------
    anomaly = _first_at_or_after(ev, "anomaly_injected", pd.NaT)
    if _is_missing(anomaly):
        warn(
            "drill_missing_event",
            f"Drill {drill_id} has no 'anomaly_injected' event, so the time to detect cannot "
            "be measured.",
            event="anomaly_injected",
        )
    else:
        early = ev.loc[ev["event"].isin(_RESPONSE_EVENTS) & (ev["timestamp"] < anomaly)]
        if not early.empty:
            warn(
                "drill_clock_out_of_order",
                f"Drill {drill_id} logs {_id_list(early['event'].unique())} before the anomaly "
                "was injected; the clocks or the log order are wrong.",
                events=[
                    {
                        "event": e,
                        "timestamp": str(t),
                        "seconds_before_anomaly": _seconds(anomaly, t),
                    }
                    for e, t in zip(early["event"], early["timestamp"], strict=True)
                ],
            )

    detected = _first_at_or_after(ev, "detected", anomaly)
    early_detected = _first_at_or_after(ev, "detected", pd.NaT)
    if _is_missing(early_detected):
        warn(
            "drill_missing_event",
            f"Drill {drill_id} has no 'detected' event: the anomaly was never logged as "
            "detected, so detection, paging and pause times cannot be measured.",
            event="detected",
        )
    anchor = detected if not _is_missing(detected) else early_detected

    paged = _first_at_or_after(ev, "paged", anchor)
    early_paged = _first_at_or_after(ev, "paged", pd.NaT)
    if _is_missing(early_paged):
        warn(
            "drill_missing_event",
            f"Drill {drill_id} has no 'paged' event: nobody was shown to be paged.",
            event="paged",
        )
    elif not _is_missing(anchor) and early_paged < anchor:
        warn(
            "drill_clock_out_of_order",
            f"Drill {drill_id} logs 'paged' {_fmt_seconds(_seconds(anchor, early_paged))} "
            "before 'detected'; the clocks or the log order are wrong.",
            events=[{"event": "paged", "timestamp": str(early_paged)}],
        )

    pauses = ev.loc[ev["event"] == "paused", "timestamp"]
    paused = _first_at_or_after(ev, "paused", anchor)
    if pauses.empty:
        warn(
            "drill_missing_event",
            f"Drill {drill_id} has no 'paused' event: the kill switch was never shown to engage.",
            event="paused",
        )
    elif not _is_missing(anchor) and (pauses < anchor).any():
        first_pause = pauses.min()
        warn(
            "drill_pause_before_detection",
            f"Drill {drill_id} logs the pause {_fmt_seconds(_seconds(anchor, first_pause))} "
            "before the detection, so the detection-to-pause time is not what the log says; "
            "check the clocks and the order of the drill log.",
            paused_at=str(first_pause),
            detected_at=str(anchor),
        )
    kill_pause = paused if not _is_missing(paused) else (pauses.min() if len(pauses) else pd.NaT)

    # --- timing checks ----------------------------------------------------------------
    early_detect = early_detected if _is_missing(detected) else pd.NaT
    checks = [
        _check(
            drill_id,
            "time_to_detect",
            "anomaly_injected",
            anomaly,
            "detected",
            detected,
            early_detect,
            targets.max_seconds_to_detect,
            "detection",
        ),
        _check(
            drill_id,
            "time_to_page",
            "detected",
            anchor,
            "paged",
            paged,
            early_paged if _is_missing(paged) else pd.NaT,
            targets.max_seconds_to_page,
            "the page",
        ),
        _check(
            drill_id,
            "time_to_pause",
            "detected",
            anchor,
            "paused",
            paused,
            pauses.min() if _is_missing(paused) and len(pauses) else pd.NaT,
            targets.max_seconds_to_pause,
            "the pause (kill switch)",
        ),
    ]

    # --- pause state and actions ------------------------------------------------------
    actions, after_pause_ids = _follow_actions(drill_id, ev, kill_pause, warn)

    # --- verdict ----------------------------------------------------------------------
    reasons = [c["reason"] for c in checks if c["status"] != "pass"]
    if after_pause_ids:
        reasons.append(
            f"{len(after_pause_ids)} action(s) started while the agent was paused "
            f"({_id_list(after_pause_ids)}): the kill switch did not stop new actions"
        )
    in_flight = [a for a in actions if a["in_flight"]]
    never = [a["action_id"] for a in in_flight if a["outcome"] == "never_ended"]
    if never:
        reasons.append(
            f"{len(never)} in-flight action(s) never completed or rolled back "
            f"({_id_list(never)}): their final state is unknown"
        )
    status = "fail" if reasons else "pass"
    if status == "pass":
        summary = "; ".join(c["reason"] for c in checks)
        n_done = sum(a["outcome"] == "completed" for a in in_flight)
        n_back = sum(a["outcome"] == "rolled_back" for a in in_flight)
        summary += (
            f"; no action started while paused; {len(in_flight)} in-flight action(s) ended "
            f"({n_done} completed, {n_back} rolled back)"
        )
        findings.append(
            Finding(
                PHASE,
                "drill_passed",
                "info",
                f"Kill-switch drill {drill_id} met every target: {summary}.",
                {"drill_id": drill_id},
            )
        )
        reason_text = summary
    else:
        reason_text = "; ".join(reasons)
        findings.append(
            Finding(
                PHASE,
                "drill_failed",
                "blocking",
                f"Kill-switch drill {drill_id} failed: {reason_text}.",
                {
                    "drill_id": drill_id,
                    "reasons": reasons,
                    "actions_after_pause": after_pause_ids,
                    "in_flight_never_ended": never,
                    "checks": [
                        {k: c[k] for k in ("measure", "seconds", "target_seconds", "status")}
                        for c in checks
                    ],
                },
            )
        )

    by_measure = {c["measure"]: c for c in checks}
    row = {
        "drill_id": drill_id,
        "status": status,
        "reasons": reason_text,
        "anomaly_at": anomaly,
        "detected_at": anchor,
        "paged_at": paged,
        "paused_at": kill_pause,
        "seconds_to_detect": by_measure["time_to_detect"]["seconds"],
        "target_seconds_to_detect": float(targets.max_seconds_to_detect),
        "detect_status": by_measure["time_to_detect"]["status"],
        "seconds_to_page": by_measure["time_to_page"]["seconds"],
        "target_seconds_to_page": float(targets.max_seconds_to_page),
        "page_status": by_measure["time_to_page"]["status"],
        "seconds_to_pause": by_measure["time_to_pause"]["seconds"],
        "target_seconds_to_pause": float(targets.max_seconds_to_pause),
        "pause_status": by_measure["time_to_pause"]["status"],
        "n_actions": len(actions),
        "in_flight_actions": len(in_flight),
        "in_flight_completed": sum(a["outcome"] == "completed" for a in in_flight),
        "in_flight_rolled_back": sum(a["outcome"] == "rolled_back" for a in in_flight),
        "in_flight_never_ended": len(never),
        "n_actions_after_pause": len(after_pause_ids),
        "actions_after_pause": ", ".join(after_pause_ids),
    }

    origin = anomaly if not _is_missing(anomaly) else ev["timestamp"].min()
    timeline = ev.assign(
        seconds_since_anomaly=(ev["timestamp"] - origin).dt.total_seconds(),
        known_event=ev["event"].isin(DRILL_EVENTS),
    )[TIMELINE_COLUMNS]
    return row, checks, actions, timeline, findings


def _follow_actions(
    drill_id: str, ev: pd.DataFrame, kill_pause: Any, warn: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    """Walk the drill in order: pause state, actions started while paused, action outcomes."""
    paused = False
    started: dict[str, Any] = {}
    ended: dict[str, tuple[Any, str]] = {}
    order: list[str] = []
    after_pause: list[str] = []
    no_id = 0
    for event, ts, action_id in zip(ev["event"], ev["timestamp"], ev["action_id"], strict=True):
        if event == "paused":
            if paused:
                warn(
                    "drill_duplicate_event",
                    f"Drill {drill_id} logs 'paused' at {ts} while already paused; "
                    "the earlier pause counts.",
                    event="paused",
                    timestamps=[str(ts)],
                )
            paused = True
        elif event == "resumed":
            if not paused:
                warn(
                    "drill_clock_out_of_order",
                    f"Drill {drill_id} logs 'resumed' at {ts} without a pause before it.",
                    events=[{"event": "resumed", "timestamp": str(ts)}],
                )
            paused = False
        elif event in _ACTION_EVENTS:
            if action_id is None:
                no_id += 1
                continue
            if action_id not in started and action_id not in ended:
                order.append(action_id)
            if event == "action_started":
                if action_id in started:
                    warn(
                        "drill_duplicate_event",
                        f"Drill {drill_id}: action {action_id} is started twice; the first "
                        "start counts.",
                        event=event,
                        action_id=action_id,
                    )
                    continue
                started[action_id] = ts
                if paused:
                    after_pause.append(action_id)
            else:
                outcome = _END_EVENTS[event]
                if action_id in ended:
                    first_ts, first_outcome = ended[action_id]
                    warn(
                        "drill_duplicate_event",
                        f"Drill {drill_id}: action {action_id} ends twice ({first_outcome} at "
                        f"{first_ts}, then {outcome} at {ts}); the first end counts.",
                        event=event,
                        action_id=action_id,
                    )
                    continue
                ended[action_id] = (ts, outcome)
    if no_id:
        warn(
            "drill_action_without_id",
            f"Drill {drill_id} has {no_id} action event(s) without an action_id; they cannot "
            "be followed and were left out of the action review.",
            rows=no_id,
        )

    actions: list[dict[str, Any]] = []
    for action_id in order:
        start = started.get(action_id, pd.NaT)
        end, outcome = ended.get(action_id, (pd.NaT, "never_ended"))
        if _is_missing(start):
            warn(
                "drill_action_without_start",
                f"Drill {drill_id}: action {action_id} ends ({outcome}) but its start is not "
                "logged.",
                action_id=action_id,
            )
        elif not _is_missing(end) and end < start:
            warn(
                "drill_clock_out_of_order",
                f"Drill {drill_id}: action {action_id} ends "
                f"{_fmt_seconds(_seconds(start, end))} before it starts; the clocks or the "
                "log are wrong.",
                action_id=action_id,
                events=[
                    {"event": "action_started", "timestamp": str(start)},
                    {"event": f"action_{outcome}", "timestamp": str(end)},
                ],
            )
        if _is_missing(kill_pause):
            in_flight = False
        elif _is_missing(start):
            in_flight = not _is_missing(end) and end >= kill_pause
        else:
            in_flight = start < kill_pause and (_is_missing(end) or end >= kill_pause)
        actions.append(
            {
                "drill_id": drill_id,
                "action_id": action_id,
                "started": start,
                "ended": end,
                "outcome": outcome,
                "in_flight": bool(in_flight),
                "started_after_pause": action_id in after_pause,
            }
        )
    return actions, after_pause

"""Kill-switch drill review on hand-built event logs; expected timings worked out by hand."""

from __future__ import annotations

import json
import math

import ibis
import pandas as pd
import pytest

from pilot_lib.analysis.drills import PHASE, review_drills
from pilot_lib.config import DrillTargets
from pilot_lib.errors import ContractError

TARGETS = DrillTargets(max_seconds_to_detect=300, max_seconds_to_page=120, max_seconds_to_pause=180)
T0 = pd.Timestamp("2026-04-14 10:00:00")


def log(*rows: tuple) -> pd.DataFrame:
    """Rows of (drill_id, event, seconds after T0[, action_id]) as a drill_events frame."""
    out = []
    for r in rows:
        drill, event, sec = r[0], r[1], r[2]
        action = r[3] if len(r) > 3 else None
        out.append(
            {
                "drill_id": drill,
                "event": event,
                "timestamp": (T0 + pd.Timedelta(seconds=sec)).strftime("%Y-%m-%d %H:%M:%S"),
                "action_id": action,
                "detail": None,
            }
        )
    return pd.DataFrame(out, columns=["drill_id", "event", "timestamp", "action_id", "detail"])


# A clean drill: a1 running before the anomaly and a2 started before the pause are in
# flight; a1 completes, a2 rolls back; a3 starts after the resume (allowed).
PASSING = [
    ("d1", "action_started", -30, "a1"),
    ("d1", "anomaly_injected", 0),
    ("d1", "detected", 90),  # 90 s to detect (target 300)
    ("d1", "action_started", 100, "a2"),
    ("d1", "paged", 150),  # 60 s after detection (target 120)
    ("d1", "paused", 210),  # 120 s after detection (target 180)
    ("d1", "action_completed", 240, "a1"),
    ("d1", "action_rolled_back", 260, "a2"),
    ("d1", "resumed", 600),
    ("d1", "action_started", 700, "a3"),
    ("d1", "action_completed", 710, "a3"),
]


def codes(review, severity=None):
    return [f.code for f in review.findings if severity is None or f.severity == severity]


def drill_row(review, drill_id="d1") -> pd.Series:
    return review.drills.set_index("drill_id").loc[drill_id]


def test_passing_drill_timings_actions_and_timeline():
    review = review_drills(log(*PASSING), TARGETS)
    row = drill_row(review)
    assert row["seconds_to_detect"] == 90
    assert row["seconds_to_page"] == 60
    assert row["seconds_to_pause"] == 120
    assert (row["detect_status"], row["page_status"], row["pause_status"]) == ("pass",) * 3
    assert row["status"] == "pass"
    assert row["target_seconds_to_pause"] == 180
    assert row["paused_at"] == T0 + pd.Timedelta(seconds=210)
    assert review.passed is True
    assert codes(review) == ["drill_passed"]
    assert all(f.phase == PHASE for f in review.findings)

    actions = review.actions.set_index("action_id")
    assert list(actions.index) == ["a1", "a2", "a3"]
    assert actions.loc["a1", "outcome"] == "completed" and actions.loc["a1", "in_flight"]
    assert actions.loc["a2", "outcome"] == "rolled_back" and actions.loc["a2", "in_flight"]
    assert not actions.loc["a3", "in_flight"] and not actions.loc["a3", "started_after_pause"]
    assert not actions["started_after_pause"].any()
    assert (row["in_flight_actions"], row["in_flight_completed"], row["in_flight_rolled_back"]) == (
        2,
        1,
        1,
    )

    timeline = review.timeline("d1")
    assert list(timeline["seconds_since_anomaly"]) == [
        -30,
        0,
        90,
        100,
        150,
        210,
        240,
        260,
        600,
        700,
        710,
    ]
    assert timeline["known_event"].all()
    checks = review.checks.set_index("measure")
    assert list(checks["seconds"]) == [90, 60, 120]
    assert list(checks["status"]) == ["pass"] * 3


def test_pause_exactly_at_target_passes_and_one_second_over_fails():
    at_target = [r if r[1] != "paused" else ("d1", "paused", 90 + 180) for r in PASSING]
    assert drill_row(review_drills(log(*at_target), TARGETS))["pause_status"] == "pass"
    over = [r if r[1] != "paused" else ("d1", "paused", 90 + 181) for r in PASSING]
    assert drill_row(review_drills(log(*over), TARGETS))["pause_status"] == "fail"


def test_slow_pause_fails_with_reason_and_blocking_finding():
    slow = [r if r[1] != "paused" else ("d1", "paused", 490) for r in PASSING]
    review = review_drills(log(*slow), TARGETS)
    row = drill_row(review)
    assert row["seconds_to_pause"] == 400
    assert row["pause_status"] == "fail"
    assert row["status"] == "fail"
    assert "400 s" in row["reasons"] and "180 s" in row["reasons"]
    assert review.passed is False
    failed = [f for f in review.findings if f.code == "drill_failed"]
    assert len(failed) == 1 and failed[0].severity == "blocking"
    assert "d1" in failed[0].message and "400 s" in failed[0].message


def test_slow_detection_and_slow_page_each_fail():
    slow = [
        ("d1", "anomaly_injected", 0),
        ("d1", "detected", 301),
        ("d1", "paged", 301 + 121),
        ("d1", "paused", 301 + 10),
    ]
    row = drill_row(review_drills(log(*slow), TARGETS))
    assert (row["seconds_to_detect"], row["detect_status"]) == (301, "fail")
    assert (row["seconds_to_page"], row["page_status"]) == (121, "fail")
    assert (row["seconds_to_pause"], row["pause_status"]) == (10, "pass")
    assert row["status"] == "fail"


def test_action_started_after_pause_fails_and_is_listed():
    events = [
        *PASSING,
        ("d1", "action_started", 300, "a9"),  # paused since 210, resumed at 600
        ("d1", "action_completed", 320, "a9"),
        ("d1", "action_started", 210, "a8"),  # same second as the pause: counts as after
        ("d1", "action_rolled_back", 230, "a8"),
    ]
    review = review_drills(log(*events), TARGETS)
    row = drill_row(review)
    assert row["status"] == "fail"
    assert row["n_actions_after_pause"] == 2
    assert row["actions_after_pause"] == "a8, a9"
    actions = review.actions.set_index("action_id")
    assert actions.loc["a9", "started_after_pause"] and actions.loc["a8", "started_after_pause"]
    assert not actions.loc["a3", "started_after_pause"]  # after the resume
    assert not actions.loc["a8", "in_flight"] and not actions.loc["a9", "in_flight"]
    failed = next(f for f in review.findings if f.code == "drill_failed")
    assert failed.evidence["actions_after_pause"] == ["a8", "a9"]
    assert "a9" in failed.message


def test_in_flight_never_ended_fails_completed_and_rolled_back_do_not():
    events = [r for r in PASSING if r[1] != "action_rolled_back"]  # a2 never ends
    review = review_drills(log(*events), TARGETS)
    actions = review.actions.set_index("action_id")
    assert actions.loc["a1", "outcome"] == "completed"
    assert actions.loc["a2", "outcome"] == "never_ended"
    assert actions.loc["a2", "in_flight"]
    assert pd.isna(actions.loc["a2", "ended"])
    row = drill_row(review)
    assert row["in_flight_never_ended"] == 1
    assert row["status"] == "fail"
    assert "a2" in row["reasons"]
    failed = next(f for f in review.findings if f.code == "drill_failed")
    assert failed.evidence["in_flight_never_ended"] == ["a2"]


def test_action_ended_before_the_pause_is_not_in_flight():
    events = [*PASSING, ("d1", "action_started", 120, "a5"), ("d1", "action_completed", 200, "a5")]
    actions = review_drills(log(*events), TARGETS).actions.set_index("action_id")
    assert not actions.loc["a5", "in_flight"]
    assert actions.loc["a5", "outcome"] == "completed"


def test_no_detection_event_is_a_finding_not_a_crash():
    events = [r for r in PASSING if r[1] != "detected"]
    review = review_drills(log(*events), TARGETS)
    missing = [f for f in review.findings if f.code == "drill_missing_event"]
    assert [f.evidence["event"] for f in missing] == ["detected"]
    assert missing[0].severity == "warning"
    row = drill_row(review)
    assert row["detect_status"] == "not measured"
    assert row["page_status"] == "not measured"
    assert row["pause_status"] == "not measured"
    assert math.isnan(row["seconds_to_detect"])
    assert row["status"] == "fail"
    assert "no 'detected' event" in row["reasons"]
    assert review.passed is False


def test_no_pause_event_fails_the_kill_switch():
    events = [r for r in PASSING if r[1] not in ("paused", "resumed")]
    review = review_drills(log(*events), TARGETS)
    assert any(
        f.code == "drill_missing_event" and f.evidence["event"] == "paused" for f in review.findings
    )
    row = drill_row(review)
    assert row["pause_status"] == "not measured"
    assert row["status"] == "fail"
    assert not review.actions["in_flight"].any()  # no pause, nothing can be in flight


def test_pause_before_detection_is_a_finding_and_not_measured():
    events = [
        ("d1", "anomaly_injected", 0),
        ("d1", "paused", 50),
        ("d1", "detected", 90),
        ("d1", "paged", 100),
    ]
    review = review_drills(log(*events), TARGETS)
    found = [f for f in review.findings if f.code == "drill_pause_before_detection"]
    assert len(found) == 1 and found[0].severity == "warning"
    assert "40 s" in found[0].message
    row = drill_row(review)
    assert row["pause_status"] == "not measured"
    assert math.isnan(row["seconds_to_pause"])
    assert row["seconds_to_detect"] == 90 and row["seconds_to_page"] == 10
    assert row["status"] == "fail"


def test_unknown_event_names_are_flagged_and_ignored_in_timings():
    events = [*PASSING, ("d1", "Resumed", 650), ("d1", "operator_note", 660)]
    review = review_drills(log(*events), TARGETS)
    unknown = [f for f in review.findings if f.code == "drill_unknown_event"]
    assert len(unknown) == 1 and unknown[0].severity == "warning"
    assert unknown[0].evidence["counts"] == {"Resumed": 1, "operator_note": 1}
    assert unknown[0].evidence["did_you_mean"] == {"Resumed": "resumed"}
    assert drill_row(review)["status"] == "pass"  # the timings are untouched
    timeline = review.timeline("d1")
    assert list(timeline.loc[~timeline["known_event"], "event"]) == ["Resumed", "operator_note"]


def test_clock_out_of_order_detected_before_anomaly_and_action_end_before_start():
    events = [
        ("d1", "detected", -20),  # before the anomaly
        ("d1", "anomaly_injected", 0),
        ("d1", "paged", 30),
        ("d1", "paused", 60),
        ("d1", "action_started", 40, "a1"),
        ("d1", "action_completed", 10, "a1"),  # ends before it starts
    ]
    review = review_drills(log(*events), TARGETS)
    clock = [f for f in review.findings if f.code == "drill_clock_out_of_order"]
    assert len(clock) == 2
    assert all(f.severity == "warning" for f in clock)
    assert any("detected" in f.message and "before the anomaly" in f.message for f in clock)
    assert any(f.evidence.get("action_id") == "a1" for f in clock)
    row = drill_row(review)
    assert row["detect_status"] == "not measured"
    assert "20 s before 'anomaly_injected'" in row["reasons"]
    assert row["status"] == "fail"


def test_duplicates_are_counted_once_and_reported():
    events = [*PASSING, ("d1", "detected", 90), ("d1", "detected", 200)]
    review = review_drills(log(*events), TARGETS)
    dup = [f for f in review.findings if f.code == "drill_duplicate_event"]
    exact = [f for f in dup if "rows" in f.evidence]
    assert len(exact) == 1 and exact[0].evidence["rows"] == 1
    assert any(f.evidence.get("event") == "detected" for f in dup)
    row = drill_row(review)
    assert row["seconds_to_detect"] == 90  # the first detection counts
    assert row["status"] == "pass"


def test_empty_log_is_a_blocking_finding_with_empty_tables():
    review = review_drills(log(), TARGETS)
    assert codes(review) == ["drill_log_empty"]
    assert review.findings[0].severity == "blocking"
    assert review.passed is False
    assert review.drills.empty and "status" in review.drills.columns
    assert review.actions.empty and "outcome" in review.actions.columns
    json.dumps(review.to_result(), allow_nan=False)


def test_unusable_rows_are_counted_not_dropped_silently():
    frame = log(*PASSING)
    bad = pd.DataFrame(
        [
            {"drill_id": "d1", "event": "paged", "timestamp": "not a time"},
            {"drill_id": None, "event": "paged", "timestamp": "2026-04-14 10:00:00"},
            {"drill_id": "d1", "event": "paged", "timestamp": None},
        ]
    )
    review = review_drills(pd.concat([frame, bad], ignore_index=True), TARGETS)
    found = next(f for f in review.findings if f.code == "drill_rows_unusable")
    assert found.evidence["rows"] == 3
    assert found.evidence["by_reason"] == {
        "no drill_id": 1,
        "no timestamp": 1,
        "unparseable timestamp": 1,
    }
    assert drill_row(review)["status"] == "pass"


def test_several_drills_sorted_and_judged_separately():
    other = [
        ("d0", "anomaly_injected", 0),
        ("d0", "detected", 10),
        ("d0", "paged", 20),
        ("d0", "paused", 1000),
    ]
    review = review_drills(log(*PASSING, *other), TARGETS)
    assert list(review.drills["drill_id"]) == ["d0", "d1"]
    assert list(review.drills["status"]) == ["fail", "pass"]
    assert review.passed is False
    assert [f.evidence["drill_id"] for f in review.findings if f.code == "drill_failed"] == ["d0"]


def test_row_order_of_the_source_does_not_matter():
    frame = log(*PASSING, ("d1", "action_started", 300, "a9"))
    shuffled = frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    a, b = review_drills(frame, TARGETS), review_drills(shuffled, TARGETS)
    pd.testing.assert_frame_equal(a.drills, b.drills)
    pd.testing.assert_frame_equal(a.actions, b.actions)
    pd.testing.assert_frame_equal(a.timeline("d1"), b.timeline("d1"))


def test_ibis_table_gives_the_same_review():
    frame = log(*PASSING, ("d1", "action_started", 300, "a9"))
    frame["detail"] = "drill note"
    typed = frame.assign(timestamp=pd.to_datetime(frame["timestamp"]))
    from_pandas = review_drills(frame, TARGETS)
    from_ibis = review_drills(ibis.memtable(typed), TARGETS)
    pd.testing.assert_frame_equal(from_pandas.drills, from_ibis.drills, check_dtype=False)
    pd.testing.assert_frame_equal(
        from_pandas.actions.astype(str), from_ibis.actions.astype(str), check_dtype=False
    )
    assert codes(from_pandas) == codes(from_ibis)


def test_missing_column_names_the_data_set_and_column():
    with pytest.raises(ContractError, match=r"drill_events.*'event'"):
        review_drills(log(*PASSING).drop(columns=["event"]), TARGETS)


def test_optional_columns_may_be_absent():
    review = review_drills(log(*PASSING).drop(columns=["detail"]), TARGETS)
    assert drill_row(review)["status"] == "pass"


def test_action_events_without_id_are_reported():
    events = log(*PASSING, ("d1", "action_started", 50))
    review = review_drills(events, TARGETS)
    found = next(f for f in review.findings if f.code == "drill_action_without_id")
    assert found.evidence["rows"] == 1


def test_timeline_of_unknown_drill_names_the_known_ones():
    review = review_drills(log(*PASSING), TARGETS)
    with pytest.raises(KeyError, match="d1"):
        review.timeline("nope")


def test_timeline_without_anomaly_is_measured_from_the_first_event():
    events = [("d1", "detected", 10), ("d1", "paged", 40), ("d1", "paused", 70)]
    timeline = review_drills(log(*events), TARGETS).timeline("d1")
    assert list(timeline["seconds_since_anomaly"]) == [0, 30, 60]


def test_result_is_json_serializable():
    review = review_drills(log(*PASSING, ("d0", "detected", 5)), TARGETS)
    result = review.to_result()
    text = json.dumps(result, allow_nan=False)
    assert result["n_drills"] == 2 and result["n_drills_passed"] == 1
    assert "drill_failed" in text
    assert result["targets"]["max_seconds_to_pause"] == 180

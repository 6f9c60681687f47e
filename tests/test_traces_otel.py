"""OTLP traces as the decision log, recorded in the test by the real OpenTelemetry SDK.

A small scripted agent runs a few calls under ``opentelemetry-sdk`` with the OTLP
JSON file exporter (``FileSpanExporter``); the decision log the ingest builds from
that file must equal the one built by hand from the same scripted calls, column by
column. Hand-edited lines check the span quarantine rules and the reconciliation;
the pilot-file settings and the store are checked end to end; and the same
synthetic decisions written as Parquet and as OTLP give the same checked log and
the same phase results.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pytest
import yaml
from conftest import tiny_frames, write_pilot
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from trace_expectations import CountingIds, engine_con

from pilot_lib.config import PilotFileError, load_pilot
from pilot_lib.errors import ContractError, DataSourceError
from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN
from pilot_lib.ingest.store import build_store, open_store, read_manifest, validate_pilot
from pilot_lib.ingest.traces import read_spans, spans_to_decisions

PRICES = {
    "gpt-test": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0},
    "small-test": {"input_per_million_usd": 0.5, "output_per_million_usd": 1.5},
}
T0 = dt.datetime(2026, 3, 3, 9, 0, 0)


# ---- the scripted agent ------------------------------------------------------------------


@dataclass
class Chat:
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None  # stated on the span (pilot.model_cost_usd)
    old_names: bool = False  # gen_ai.usage.prompt_tokens / completion_tokens


@dataclass
class Call:
    """One agent invocation and what the business said about it."""

    decision_id: str
    case_id: str
    minute: int  # minutes after T0
    user_id: str | None
    accepted: bool
    overridden: bool
    escalated: bool
    reason: str | None
    confidence: float | None
    correct: bool | None
    review_minutes: float
    chats: list[Chat]
    tool_cost: float | None = None
    tool_fails: bool = False
    agent_status_error: bool = False  # no pilot.completed: completion from the status
    decision_cost: float | None = None  # stated on the decision span
    signals_in_event: bool = False  # accepted/overridden in a pilot.outcome event
    evaluation: bool = False  # correct / confidence as gen_ai.evaluation.result events
    sub_agent: bool = False  # the chats run under a nested invoke_agent span
    agent_by_name: bool = False  # gen_ai.agent.name instead of gen_ai.agent.id
    review_on_tool: bool = False  # pilot.review_minutes on the tool span, not the agent's
    features: dict[str, Any] = field(default_factory=dict)


CALLS = [
    Call(
        "dec-1", "c001", 0, "u1", True, False, False, None, 0.91, True, 1.5,
        [Chat("gpt-test", 1200, 300), Chat("small-test", 400, 100)],
        tool_cost=0.01, features={"claim_amount": 1200.5, "channel": "web"},
    ),
    Call(
        "dec-2", "c002", 30, "u2", False, False, True, "low_confidence", 0.42, None, 6.0,
        [Chat("gpt-test", 800, 50, cost_usd=0.0123, old_names=True)],
        signals_in_event=True, features={"claim_amount": 310.0, "channel": "phone"},
    ),
    Call(
        "dec-3", "c003", 60, None, False, True, True, None, 0.77, False, 9.25,
        [Chat("gpt-test", 1000, 200)],
        tool_cost=0.02, tool_fails=True, review_on_tool=True,
        features={"claim_amount": 99.99, "channel": "web"},
    ),
    Call(
        "dec-4", "c004", 90, "u1", True, False, False, None, 0.66, False, 2.0,
        [Chat("small-test", 2000, 500)],
        evaluation=True, sub_agent=True, agent_by_name=True,
        features={"claim_amount": 4500.0, "channel": "app"},
    ),
    Call(
        "dec-5", "c005", 120, "u3", False, False, False, None, None, None, 0.0,
        [Chat("gpt-test", 10, 5)],
        agent_status_error=True, decision_cost=0.5, features={"claim_amount": 10.0, "channel": "web"},
    ),
]  # fmt: skip


def _ns(minute: float) -> int:
    moment = T0 + dt.timedelta(minutes=minute)
    return int(moment.replace(tzinfo=dt.UTC).timestamp() * 1_000_000) * 1000


def _chat_span(tracer: trace.Tracer, ctx: Any, chat: Chat, at: float) -> None:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": chat.model}
    if chat.old_names:
        attrs["gen_ai.usage.prompt_tokens"] = chat.input_tokens
        attrs["gen_ai.usage.completion_tokens"] = chat.output_tokens
    else:
        attrs["gen_ai.usage.input_tokens"] = chat.input_tokens
        attrs["gen_ai.usage.output_tokens"] = chat.output_tokens
    if chat.cost_usd is not None:
        attrs["pilot.model_cost_usd"] = chat.cost_usd
    span = tracer.start_span(f"chat {chat.model}", ctx, attributes=attrs, start_time=_ns(at))
    span.end(end_time=_ns(at + 0.1))


def run_agent(tracer: trace.Tracer, call: Call) -> None:
    """What an instrumented agent emits for one call (GenAI conventions + pilot.*)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        ("gen_ai.agent.name" if call.agent_by_name else "gen_ai.agent.id"): "claims-agent",
        "pilot.decision_id": call.decision_id,
        "pilot.case_id": call.case_id,
        "pilot.workflow": "fnol_triage",
        "pilot.prompt_version": "v1",
        "pilot.escalated": call.escalated,
        **call.features,
    }
    if not call.review_on_tool:
        attrs["pilot.review_minutes"] = call.review_minutes
    if call.user_id is not None:
        attrs["pilot.user_id"] = call.user_id
    if not call.signals_in_event:
        attrs["pilot.accepted"] = call.accepted
        attrs["pilot.overridden"] = call.overridden
    if not call.agent_status_error:
        attrs["pilot.completed"] = True
    if call.reason is not None:
        attrs["pilot.escalation_reason"] = call.reason
    if not call.evaluation:
        if call.confidence is not None:
            attrs["pilot.confidence"] = call.confidence
        if call.correct is not None:
            attrs["pilot.correct"] = call.correct
    if call.decision_cost is not None:
        attrs["pilot.model_cost_usd"] = call.decision_cost
    root = tracer.start_span(
        "invoke_agent claims-agent", attributes=attrs, start_time=_ns(call.minute)
    )
    ctx = trace.set_span_in_context(root)
    parent_ctx = ctx
    inner = None
    if call.sub_agent:
        # a nested agent repeats its children's token totals: not counted twice
        total_in = sum(c.input_tokens for c in call.chats)
        inner = tracer.start_span(
            "invoke_agent helper",
            ctx,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.usage.input_tokens": total_in,
            },
            start_time=_ns(call.minute + 0.01),
        )
        parent_ctx = trace.set_span_in_context(inner)
    for k, chat in enumerate(call.chats):
        _chat_span(tracer, parent_ctx, chat, call.minute + 0.02 + 0.2 * k)
    if inner is not None:
        inner.end(end_time=_ns(call.minute + 0.9))
    if call.tool_cost is not None or call.tool_fails:
        tool = tracer.start_span(
            "execute_tool policy_lookup",
            ctx,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "policy_lookup",
                "pilot.tool_cost_usd": call.tool_cost or 0.0,
                **({"pilot.review_minutes": call.review_minutes} if call.review_on_tool else {}),
            },
            start_time=_ns(call.minute + 0.5),
        )
        if call.tool_fails:
            tool.set_status(Status(StatusCode.ERROR, "503 Service Unavailable"))
        tool.end(end_time=_ns(call.minute + 0.6))
    if call.signals_in_event:
        root.add_event(
            "pilot.outcome",
            {"pilot.accepted": call.accepted, "pilot.overridden": call.overridden},
            timestamp=_ns(call.minute + 0.95),
        )
    if call.evaluation:
        # a score value is a double (a boolean as 1.0 / 0.0) and wins over the label
        for name, value in (("confidence", call.confidence), ("correct", call.correct)):
            result: dict[str, Any] = {"gen_ai.evaluation.name": name}
            if name == "confidence":
                result["gen_ai.evaluation.score.value"] = value
            else:
                result["gen_ai.evaluation.score.value"] = float(bool(value))
                result["gen_ai.evaluation.score.label"] = str(value).lower()
            root.add_event("gen_ai.evaluation.result", result, timestamp=_ns(call.minute + 0.96))
    if call.agent_status_error:
        root.set_status(Status(StatusCode.ERROR, "agent crashed"))
    root.end(end_time=_ns(call.minute + 1))


def record(path: Path, calls: list[Call] = CALLS) -> Path:
    """Run the scripted agent under the real SDK, exporting OTLP JSON Lines to ``path``."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "claims-agent"}),
        id_generator=CountingIds(0xABC0000000000000000000000000000, 0x1000),
    )
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
    tracer = provider.get_tracer("test.agent")
    for call in calls:
        run_agent(tracer, call)
    provider.shutdown()
    return path


def expected_log(calls: list[Call] = CALLS) -> pd.DataFrame:
    """The decision log built by hand from the scripted calls (contract types)."""
    rows = []
    for k, c in enumerate(calls, start=1):
        cost = 0.0
        for chat in c.chats:
            if chat.cost_usd is not None:
                cost += chat.cost_usd
            else:
                price = PRICES[chat.model]
                cost += (
                    chat.input_tokens * price["input_per_million_usd"]
                    + chat.output_tokens * price["output_per_million_usd"]
                ) / 1e6
        if c.decision_cost is not None:
            cost = c.decision_cost
        reason = c.reason
        if reason is None and c.escalated and c.tool_fails:
            reason = "tool_failure"
        rows.append(
            {
                "decision_id": c.decision_id,
                "timestamp": T0 + dt.timedelta(minutes=c.minute),
                "trace_id": f"{0xABC0000000000000000000000000000 + k:032x}",
                "agent_id": "claims-agent",
                "workflow": "fnol_triage",
                "case_id": c.case_id,
                "prompt_version": "v1",
                "user_id": c.user_id,
                "completed": not c.agent_status_error,
                "accepted": c.accepted,
                "overridden": c.overridden,
                "escalated": c.escalated,
                "escalation_reason": reason,
                "confidence": c.confidence,
                "correct": c.correct,
                "input_tokens": sum(ch.input_tokens for ch in c.chats),
                "output_tokens": sum(ch.output_tokens for ch in c.chats),
                "model_cost_usd": cost,
                "tool_cost_usd": c.tool_cost or 0.0,
                "review_minutes": c.review_minutes,
                # the model that did most of the work (most tokens); none without a chat
                "model": (
                    max(c.chats, key=lambda ch: ch.input_tokens + ch.output_tokens).model
                    if c.chats
                    else None
                ),
                "claim_amount": c.features["claim_amount"],
                "channel": c.features["channel"],
                # optional contract columns the traces do not carry: added empty
                "shadow": None,
                "agent_outcome": None,
                "human_outcome": None,
                "business_unit": None,
            }
        )
    return pd.DataFrame(rows)


# ---- fixtures -------------------------------------------------------------------------------


def _otel_pilot(folder: Path, trace_file: Path, **doc: Any) -> Path:
    """The tiny pilot with its decision log given as OTLP traces (``format: otel``)."""
    frames = {k: v for k, v in tiny_frames().items() if k != "decisions"}
    write_pilot(folder, frames)
    shutil.copy(trace_file, folder / "traces.jsonl")
    pilot_file = folder / "pilot.yaml"
    spec = yaml.safe_load(pilot_file.read_text())
    spec["datasets"] = {"decisions": {"path": "traces.jsonl", "format": "otel"}, **spec["datasets"]}
    spec["traces"] = {"prices": PRICES}
    for key, value in doc.items():
        if key == "datasets":
            spec["datasets"].update(value)
        else:
            spec[key] = value
    pilot_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("otel") / "traces.jsonl")


def _valid_decisions(store: Path, pilot: Path) -> pd.DataFrame:
    data = open_store(store, pilot / "pilot.yaml")
    return data.table("decisions").to_pandas().sort_values("decision_id").reset_index(drop=True)


# ---- the decision log -------------------------------------------------------------------


def test_sdk_file_is_otlp_json_lines(trace_file: Path) -> None:
    lines = trace_file.read_text().splitlines()
    assert lines and all("resourceSpans" in json.loads(line) for line in lines)


def test_decision_log_equals_the_one_built_by_hand(tmp_path: Path, trace_file: Path) -> None:
    pilot = _otel_pilot(tmp_path / "p", trace_file)
    store = tmp_path / "store"
    build_store(pilot / "pilot.yaml", store)
    got = _valid_decisions(store, pilot)
    want = expected_log()
    assert list(got.columns) == list(want.columns)
    for column in want.columns:  # every mapped column, one by one
        g, w = got[column], want[column]
        if column in (
            "model_cost_usd",
            "tool_cost_usd",
            "confidence",
            "review_minutes",
            "claim_amount",
        ):
            pd.testing.assert_series_equal(
                g.astype("float64"), w.astype("float64"), check_names=False, rtol=1e-12
            )
        else:
            assert (
                g.astype(object).where(g.notna(), None).tolist()
                == w.astype(object).where(w.notna(), None).tolist()
            ), column
    manifest = read_manifest(store)
    traces = manifest["datasets"]["decisions"]["traces"]
    recon = traces["reconciliation"]
    n_spans = len(trace_file.read_text().splitlines())  # SimpleSpanProcessor: a span a line
    assert recon["spans_read"] == n_spans == recon["spans_used"]
    assert recon["decisions"] == recon["decision_spans"] == len(CALLS)
    assert recon["spans_quarantined"] == recon["spans_outside_decisions"] == 0
    # dec-1, dec-3, dec-4 are priced from tokens (dec-2 states its cost, dec-5 on the decision)
    assert recon["decisions_priced_from_tokens"] == 3
    assert any("price table" in n for n in traces["notes"])
    # the trace file is fingerprinted
    files = manifest["inputs"]["decisions"]["files"]
    assert [Path(f["path"]).name for f in files] == ["traces.jsonl"]


def test_reader_maps_status_operation_and_events(trace_file: Path) -> None:
    con = engine_con()
    spans = read_spans(con, trace_file, "otel").to_pandas()
    assert set(spans.operation.dropna()) == {"invoke_agent", "chat", "execute_tool"}
    failed = spans[spans.status == "error"]
    assert set(failed.status_message) == {"503 Service Unavailable", "agent crashed"}
    assert spans.source_row.tolist() == list(range(1, len(spans) + 1))
    dec2 = spans[spans.attributes.map(lambda a: a.get("pilot.decision_id") == "dec-2")].iloc[0]
    assert dec2.attributes["pilot.accepted"] == "false"  # from the pilot.outcome event
    dec4 = spans[spans.attributes.map(lambda a: a.get("pilot.decision_id") == "dec-4")].iloc[0]
    assert float(dec4.attributes["pilot.confidence"]) == 0.66  # gen_ai.evaluation.result
    assert dec4.attributes["pilot.correct"] == "0"  # score 0.0 (wins over the label); False below
    assert spans.parent_span_id.isna().sum() == len(CALLS)
    assert spans.trace_id.str.fullmatch("[0-9a-f]{32}").all()


# ---- malformed spans ----------------------------------------------------------------------


def _edit(trace_file: Path, out: Path) -> dict[str, str]:
    """Hand-edit copies of some lines; returns span id -> the rule it must break."""
    lines = [json.loads(x) for x in trace_file.read_text().splitlines()]

    def span_of(doc: dict[str, Any]) -> dict[str, Any]:
        return doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]

    chats = [d for d in lines if span_of(d)["name"].startswith("chat ")]
    expected = {}
    # 1. a chat span of dec-1 loses its trace id
    s = span_of(chats[0])
    del s["traceId"]
    expected[s["spanId"]] = "span without trace_id"
    # 2. a chat span (dec-2) ends before it starts
    s = span_of(chats[2])
    s["endTimeUnixNano"] = str(int(s["startTimeUnixNano"]) - 1)
    expected[s["spanId"]] = "end before start"
    # 3. an attribute that does not parse (dec-3)
    s = span_of(chats[3])
    s["attributes"] = [a for a in s["attributes"] if a["key"] != "gen_ai.usage.output_tokens"] + [
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "lots"}}
    ]
    expected[s["spanId"]] = "unparseable attribute"
    # 4. a span logged twice (same trace and span id; dec-1): the copy is the duplicate
    dup = json.loads(json.dumps(chats[1]))
    lines.append(dup)
    # 5. an orphan: its parent is in no trace
    orphan = json.loads(json.dumps(chats[4]))
    s = span_of(orphan)
    s["spanId"], s["parentSpanId"] = "00000000000fffff", "00000000000eeeee"
    expected[s["spanId"]] = "orphan span (parent not in the trace)"
    lines.append(orphan)
    # 6. a span without a span id, and one with a time that does not parse
    no_id = json.loads(json.dumps(chats[4]))
    del span_of(no_id)["spanId"]
    lines.append(no_id)
    bad_time = json.loads(json.dumps(chats[4]))
    span_of(bad_time)["spanId"] = "00000000000ddddd"
    span_of(bad_time)["startTimeUnixNano"] = "yesterday"
    expected["00000000000ddddd"] = "span without valid start/end time"
    lines.append(bad_time)
    # 7. a trace with no agent span at all: outside any decision
    stray = json.loads(json.dumps(chats[4]))
    span_of(stray)["traceId"] = "f" * 32
    span_of(stray).pop("parentSpanId")
    lines.append(stray)
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return expected


def test_malformed_spans_are_quarantined_with_their_rule(tmp_path: Path, trace_file: Path) -> None:
    edited = tmp_path / "edited.jsonl"
    expected = _edit(trace_file, edited)
    con = engine_con()
    spans = read_spans(con, edited, "otel")
    built = spans_to_decisions(spans, prices=PRICES, features=["claim_amount", "channel"])
    q = built.quarantine.to_pandas()
    got = dict(zip(q.span_id.fillna("<none>"), q[QUARANTINE_RULE_COLUMN], strict=True))
    for span_id, rule in expected.items():
        assert got[span_id] == rule
    assert got["<none>"] == "span without span_id"
    assert sorted(q[QUARANTINE_RULE_COLUMN]).count("duplicate span_id") == 1
    dup = q[q[QUARANTINE_RULE_COLUMN] == "duplicate span_id"].iloc[0]
    assert dup.source_row == len(trace_file.read_text().splitlines()) + 1  # the later copy
    assert q.source_file.str.endswith("edited.jsonl").all()
    r = built.reconciliation
    assert r.balanced
    assert r.spans_read == len(edited.read_text().splitlines())
    assert r.spans_quarantined == len(q) == 7
    assert r.spans_outside_decisions == 1  # the stray trace
    assert sum(r.quarantined_by_rule.values()) == r.spans_quarantined
    assert r.decisions == len(CALLS)  # decision spans are intact
    assert r.decisions_with_quarantined_spans == 4  # dec-1 to dec-4 each had a bad span
    # a decision is built from its valid spans only: dec-1 lost its first chat (no trace id)
    log = built.decisions.to_pandas().set_index("decision_id")
    assert log.loc["dec-1", "input_tokens"] == 400


def test_a_line_that_is_not_json_names_the_file(tmp_path: Path, trace_file: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(trace_file.read_text() + "{not json\n")
    with pytest.raises(DataSourceError, match=r"bad\.jsonl.*OTLP JSON Lines"):
        read_spans(engine_con(), [trace_file, bad], "otel")


def test_glob_of_trace_files(tmp_path: Path, trace_file: Path) -> None:
    lines = trace_file.read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:5]))
    (tmp_path / "b.jsonl").write_text("".join(lines[5:]))
    spans = read_spans(engine_con(), str(tmp_path / "*.jsonl"), "otel").to_pandas()
    assert len(spans) == len(lines)
    assert spans.groupby("source_file").source_row.min().tolist() == [1, 1]
    with pytest.raises(DataSourceError, match="no file matches"):
        read_spans(engine_con(), str(tmp_path / "none-*.jsonl"), "otel")


# ---- outcomes -----------------------------------------------------------------------------


def test_outcomes_override_spans_and_missing_ones_are_counted(
    tmp_path: Path, trace_file: Path
) -> None:
    want = expected_log()
    outcomes = pd.DataFrame(
        {
            "trace_id": want.trace_id[:4],
            "accepted": [False, True, False, False],  # the business system's word
            "review_minutes": [3.0, 4.0, 5.0, 6.0],
        }
    )
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    pilot = _otel_pilot(
        tmp_path / "p", trace_file, datasets={"outcomes": {"path": "../outcomes.csv"}}
    )
    store = tmp_path / "store"
    report = validate_pilot(pilot / "pilot.yaml", tmp_path / "q", store_dir=store)
    got = _valid_decisions(store, pilot)
    assert got.decision_id.tolist() == ["dec-1", "dec-2", "dec-3", "dec-4"]
    assert got.accepted.tolist() == [False, True, False, False]
    assert got.review_minutes.tolist() == [3.0, 4.0, 5.0, 6.0]
    assert got.overridden.tolist() == want.overridden[:4].tolist()  # not in the outcomes
    recon = read_manifest(store)["datasets"]["decisions"]["traces"]["reconciliation"]
    assert recon["decisions_without_outcome"] == 1
    assert recon["outcomes_read"] == 4 and recon["outcomes_unmatched"] == 0
    assert recon["quarantined_by_rule"] == {"outcome missing": 2}  # dec-5: agent + chat span
    assert recon["spans_read"] == recon["spans_used"] + recon["spans_quarantined"]
    q = pd.read_parquet(tmp_path / "q" / "decisions.spans.parquet")
    assert set(q[QUARANTINE_RULE_COLUMN]) == {"outcome missing"}
    text = report.to_text()
    assert "decisions built from otel traces" in text
    assert "1 decisions without an outcome" in text
    assert "decisions.spans.parquet" in text
    # the outcomes file is fingerprinted too
    assert read_manifest(store)["inputs"]["outcomes"]["files"]


def test_outcomes_keyed_twice_is_an_error(tmp_path: Path, trace_file: Path) -> None:
    pd.DataFrame({"trace_id": ["x", "x"], "accepted": [True, False]}).to_csv(
        tmp_path / "o.csv", index=False
    )
    pilot = _otel_pilot(tmp_path / "p", trace_file, datasets={"outcomes": {"path": "../o.csv"}})
    with pytest.raises(ContractError, match=r"'outcomes'.*more than once"):
        build_store(pilot / "pilot.yaml", tmp_path / "store")


# ---- the pilot file -----------------------------------------------------------------------


def test_pilot_file_rules_name_the_field(tmp_path: Path, trace_file: Path) -> None:
    pilot = _otel_pilot(
        tmp_path / "a", trace_file, datasets={"cases": {"path": "cases.parquet", "format": "otel"}}
    )
    with pytest.raises(
        PilotFileError, match=r"datasets\.cases\.format: a trace format is only valid"
    ):
        load_pilot(pilot)
    frames = tiny_frames()
    plain = write_pilot(tmp_path / "b", frames, doc_changes={"traces": {"decision_span": "x"}})
    with pytest.raises(
        PilotFileError, match=r"traces: only used when the decision log comes from traces"
    ):
        load_pilot(plain)
    pilot = _otel_pilot(
        tmp_path / "c",
        trace_file,
        traces={"prices": {"m": {"input_per_million_usd": -1, "output_per_million_usd": 1}}},
    )
    with pytest.raises(PilotFileError, match=r"traces\.prices\.m\.input_per_million_usd"):
        load_pilot(pilot)
    pilot = _otel_pilot(tmp_path / "d", trace_file, traces={"outcomes_key": "user_id"})
    with pytest.raises(PilotFileError, match=r"traces\.outcomes_key"):
        load_pilot(pilot)


def test_decision_span_by_name(tmp_path: Path, trace_file: Path) -> None:
    con = engine_con()
    spans = read_spans(con, trace_file, "otel")
    built = spans_to_decisions(spans, decision_span="invoke_agent helper", prices=PRICES)
    r = built.reconciliation
    assert r.decisions == 1  # only dec-4 has the nested helper agent
    assert r.balanced and r.spans_used == 2  # the helper and its chat span
    log = built.decisions.to_pandas()
    assert log.input_tokens.tolist() == [2000]


# ---- the same decisions as Parquet and as OTLP -------------------------------------------


def test_parquet_and_otlp_give_the_same_checked_log_and_phase_results(tmp_path: Path) -> None:
    from pilot_lib.analysis.gate import evaluate_gate
    from pilot_lib.phases import _COMPUTE
    from pilot_lib.synth import generate_pilot

    as_parquet = generate_pilot("claims-auto", tmp_path / "pq", rows=600)
    as_otlp = generate_pilot("claims-auto", tmp_path / "otel", rows=600, fmt="otel")
    assert not (as_otlp / "decisions.parquet").exists()
    logs, results = [], []
    for folder in (as_parquet, as_otlp):
        store = tmp_path / f"store-{folder.parent.name}"
        build_store(folder / "pilot.yaml", store)
        data = open_store(store, folder / "pilot.yaml")
        log = data.table("decisions").to_pandas()
        logs.append(log.sort_values("decision_id").reset_index(drop=True))
        # every phase, and the gate on them
        phases = {name: compute(data.pilot, data).to_result() for name, compute in _COMPUTE.items()}
        gate = evaluate_gate(data.pilot, phases).to_result()
        gate.pop("pilot_file_sha256")  # the two pilot files differ in datasets.decisions only
        # Data coverage counts rows read: the decision whose timestamp is missing is a row
        # (quarantined) of the Parquet log, but in the traces its spans have no valid time and
        # stay in the span quarantine, so the counts differ by that decision.
        coverage = phases["kpi_baselining"].pop("data_coverage")
        gate["rationale"] = gate["rationale"].replace(coverage["line"], "")
        gate.pop("data_coverage")
        results.append(phases | {"go_no_go_summary": gate})
    parquet_log, otlp_log = logs
    pd.testing.assert_frame_equal(parquet_log, otlp_log[parquet_log.columns])
    # the same figures; sums over rows in another order may differ in the last bits
    assert _close(results[0], results[1])


def _close(a: Any, b: Any) -> bool:
    """Equal JSON-like results, floats to 1e-9 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_repeated_keys_first_wins_and_resource_signals(tmp_path: Path) -> None:
    """Span attribute > event > resource; a key given twice keeps its first value."""

    def kv(key: str, **value: Any) -> dict[str, Any]:
        return {"key": key, "value": value}

    span = {
        "traceId": "AB" * 16,  # upper case hex is read as lower case
        "spanId": "00000000000000a1",
        "parentSpanId": "0000000000000000",  # all zeros: a root
        "name": "invoke_agent x",
        "startTimeUnixNano": 1772611200000000000,  # a number, not a string
        "endTimeUnixNano": "1772611201000000000",
        "attributes": [
            kv("pilot.case_id", stringValue="first"),
            kv("pilot.case_id", stringValue="second"),
            kv("tags", arrayValue={"values": [{"stringValue": "a"}]}),
        ],
        "events": [
            {"name": "pilot.outcome", "attributes": [kv("pilot.case_id", stringValue="event"),
                                                     kv("pilot.accepted", boolValue=True)]}
        ],
        "status": {"code": "STATUS_CODE_OK"},
    }  # fmt: skip
    line = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        kv("pilot.workflow", stringValue="from-resource"),
                        kv("pilot.accepted", boolValue=False),
                        kv("host.name", stringValue="not copied"),
                    ]
                },
                "scopeSpans": [{"spans": [span]}],
            }
        ]
    }
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(line) + "\n")
    row = read_spans(engine_con(), path, "otel").to_pandas().iloc[0]
    assert row.trace_id == "ab" * 16 and pd.isna(row.parent_span_id)
    assert row.start_time == pd.Timestamp("2026-03-04 08:00:00") and row.status == "ok"
    assert row.operation == "invoke_agent"  # from the span name
    a = row.attributes
    assert a["pilot.case_id"] == "first"
    assert a["pilot.accepted"] == "true"  # the event beats the resource
    assert a["pilot.workflow"] == "from-resource"
    assert "host.name" not in a
    assert json.loads(a["tags"]) == {"values": [{"stringValue": "a"}]}


def test_store_goes_stale_when_a_trace_file_changes(tmp_path: Path, trace_file: Path) -> None:
    from pilot_lib.ingest.contracts import load_pilot_data
    from pilot_lib.ingest.store import store_is_current

    pilot_dir = _otel_pilot(tmp_path / "p", trace_file)
    pilot = load_pilot(pilot_dir)
    store = tmp_path / "store"
    build_store(pilot, store)
    assert store_is_current(pilot, store) == (True, "")
    with (pilot_dir / "traces.jsonl").open("a") as fh:
        fh.write(trace_file.read_text().splitlines()[0] + "\n")
    current, reason = store_is_current(pilot, store)
    assert not current and "decisions" in reason
    # the in-memory check (notebooks, tests) builds the same log from the traces
    data = load_pilot_data(pilot)
    assert data.checks["decisions"].valid == len(CALLS)


def test_outcomes_keyed_on_case_id_and_missing_key(trace_file: Path) -> None:
    con = engine_con()
    spans = read_spans(con, trace_file.parent, "otel")  # a folder: every file in it
    outcomes = ibis.memtable({"case_id": ["c003", "c005"], "correct": [True, True]})
    built = spans_to_decisions(spans, prices=PRICES, outcomes=outcomes, outcomes_key="case_id")
    log = built.decisions.to_pandas().set_index("decision_id")
    assert sorted(log.index) == ["dec-3", "dec-5"]
    assert log.correct.tolist() == ["true", "true"]  # text until the contract types it
    assert built.reconciliation.decisions_without_outcome == 3
    assert built.reconciliation.balanced
    with pytest.raises(ContractError, match=r"no column 'trace_id'.*traces\.outcomes_key"):
        spans_to_decisions(spans, outcomes=outcomes)


def test_cli_synth_format_otel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pilot_lib.cli import main

    monkeypatch.chdir(tmp_path)  # validate's store goes to ./runs

    assert (
        main(
            [
                "synth",
                "it-ticket-routing",
                "--rows",
                "200",
                "--out",
                str(tmp_path),
                "--format",
                "otel",
            ]
        )
        == 0
    )
    folder = tmp_path / "it-ticket-routing"
    pilot = load_pilot(folder)
    assert pilot.datasets["decisions"].format == "otel"
    assert (folder / "decisions.otlp.jsonl.zst").is_file()
    assert main(["validate", str(folder), "--quarantine-dir", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "decisions built from otel traces: 600 spans in" in out


def test_kpi_notes_say_cost_came_from_the_price_table(tmp_path: Path, trace_file: Path) -> None:
    from pilot_lib.phases import kpi_phase

    pilot = _otel_pilot(tmp_path / "p", trace_file)
    store = tmp_path / "store"
    build_store(pilot / "pilot.yaml", store)
    data = open_store(store, pilot / "pilot.yaml")
    table = kpi_phase(data.pilot, data)
    note = table.kpis.set_index("kpi").loc["cost_per_decision", "note"]
    assert "model cost of 3 decisions computed from their token counts" in note
    assert "traces.prices" in table.cost["note"]
    # the notebooks' data-quality note carries the reconciliation
    from pilot_lib.ingest.store import ensure_store

    note = ensure_store(pilot / "pilot.yaml", store).note()
    assert "The decisions log was built from otel traces: 14 spans in 5 traces" in note
    assert "price table" in note


def test_base64_ids_and_a_file_without_spans(tmp_path: Path, trace_file: Path) -> None:
    import base64

    lines = [json.loads(x) for x in trace_file.read_text().splitlines()]
    for doc in lines:  # protobuf's generic JSON mapping: ids in base64
        for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in s:
                    s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    b64 = tmp_path / "b64.jsonl"
    b64.write_text("".join(json.dumps(x) + "\n" for x in lines))
    con = engine_con()
    hexed = read_spans(con, trace_file, "otel").to_pandas()
    decoded = read_spans(con, b64, "otel").to_pandas()
    for column in ("trace_id", "span_id", "parent_span_id"):
        assert decoded[column].tolist() == hexed[column].tolist()
    logs = tmp_path / "logs.jsonl"
    logs.write_text('{"resourceLogs": []}\n')
    with pytest.raises(DataSourceError, match=r"no OTLP span in .*logs\.jsonl"):
        read_spans(con, logs, "otel")

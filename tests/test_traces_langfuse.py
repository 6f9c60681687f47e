"""Langfuse traces as the decision log, recorded in the test by the real Langfuse SDK.

The SDK (v3+ is OpenTelemetry-based) is constructed with its own tracer provider
and an in-memory span exporter (``Langfuse(tracer_provider=..., span_exporter=...)``
with ``host="http://localhost:1"``), so nothing goes to the network. A scripted
agent runs a few calls (``propagate_attributes``, ``start_as_current_observation``
with ``as_type="agent" / "generation" / "tool"``, usage and cost details, metadata,
levels). The finished spans are written out as Langfuse's export would hold them
(observations, traces and scores; the public API's camelCase JSON Lines and the
blob-storage export's snake_case Parquet in ``observations/``, ``traces/``,
``scores/`` folders), and also as OTLP JSON Lines through the OpenTelemetry file
exporter. The decision log built from each equals the one built by hand from the
same scripted calls; every mapped span column is checked; malformed rows go to
quarantine with their rule; the pilot file's ``format: langfuse`` runs through
the store.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import tiny_frames, write_pilot
from langfuse import Langfuse, propagate_attributes
from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from trace_expectations import CountingIds, assert_log_equal, engine_con
from trace_expectations import expected_log as _expected_log

from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN
from pilot_lib.ingest.store import build_store, open_store, read_manifest
from pilot_lib.ingest.traces import UNPARSEABLE_KEY, read_spans, spans_to_decisions
from pilot_lib.ingest.traces.langfuse import file_role

PRICES = {
    "gpt-test": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0},
    "small-test": {"input_per_million_usd": 0.5, "output_per_million_usd": 1.5},
}
T0 = dt.datetime(2026, 3, 3, 9, 0, 0)
TRACE_BASE = 0x0B2000000000000000000000000000
META = "langfuse.observation.metadata."
TRACE_META = "langfuse.trace.metadata."


@dataclass
class Call:
    """One agent invocation; ``route`` says where its business signals are recorded.

    ``metadata``: the agent observation's metadata (``pilot.*`` keys);
    ``nested``: metadata ``{"pilot": {...}}``; ``scores``: Langfuse scores (trace
    scores for accepted / overridden / correct, an observation score for the rest).
    """

    decision_id: str
    case_id: str
    minute: int
    user_id: str
    accepted: bool
    overridden: bool
    escalated: bool
    reason: str | None
    confidence: float | None
    correct: bool | None
    review_minutes: float
    chats: list[tuple[str, int, int, float | None]]  # model, input, output, cost total
    route: str = "metadata"  # metadata | nested | scores
    tool_cost: float | None = None
    tool_fails: bool = False
    agent_error: bool = False
    features: dict[str, Any] = field(default_factory=dict)


CALLS = [
    Call("lf-1", "c201", 0, "u1", True, False, False, None, 0.9, True, 1.5,
         [("gpt-test", 1200, 300, None), ("small-test", 400, 100, None)], tool_cost=0.01,
         features={"claim_amount": 1200.5, "channel": "web"}),
    Call("lf-2", "c202", 30, "u2", False, False, True, "low_confidence", 0.4, None, 6.0,
         [("gpt-test", 800, 50, 0.0123)], route="nested",
         features={"claim_amount": 310.0, "channel": "phone"}),
    Call("lf-3", "c203", 60, "u1", False, True, True, None, 0.75, False, 9.25,
         [("gpt-test", 1000, 200, None)], route="scores", tool_cost=0.02, tool_fails=True,
         features={"claim_amount": 99.99, "channel": "web"}),
    Call("lf-4", "c204", 90, "u3", False, False, False, None, 0.55, None, 0.5,
         [("small-test", 10, 5, 0.25)], agent_error=True,
         features={"claim_amount": 10.0, "channel": "app"}),
]  # fmt: skip


def _at(minute: float) -> int:
    moment = T0 + dt.timedelta(minutes=minute)
    return int(moment.replace(tzinfo=dt.UTC).timestamp() * 1_000_000) * 1000


def _signals(call: Call) -> dict[str, Any]:
    """The business signals of a call that the agent records itself (not via scores)."""
    out: dict[str, Any] = {
        "escalated": call.escalated,
        "review_minutes": call.review_minutes,
        "confidence": call.confidence,
        "accepted": call.accepted,
        "overridden": call.overridden,
    }
    if call.correct is not None:
        out["correct"] = call.correct
    if call.reason:
        out["escalation_reason"] = call.reason
    if call.route == "scores":
        out = {"escalated": call.escalated}
    return out


def run_agent(lf: Langfuse, call: Call, clock: list[float]) -> None:
    """What an agent traced with the Langfuse SDK emits for one call (+ ``pilot.*`` metadata)."""
    metadata: dict[str, Any] = {
        "pilot.decision_id": call.decision_id,
        "pilot.case_id": call.case_id,
        **call.features,
    }
    if not call.agent_error:
        metadata["pilot.completed"] = True
    signals = _signals(call)
    if call.route == "nested":
        metadata["pilot"] = signals
    else:
        metadata.update({f"pilot.{k}": v for k, v in signals.items()})
    clock[0] = call.minute
    with (
        propagate_attributes(
            user_id=call.user_id,
            session_id=call.case_id,
            metadata={"pilot.workflow": "fnol_triage"},
            prompt={"name": "triage", "version": 7},
            trace_name="claim-triage",
        ),
        lf.start_as_current_observation(
            name="claims-agent", as_type="agent", metadata=metadata
        ) as agent,
    ):
        for k, (model, n_in, n_out, cost) in enumerate(call.chats):
            clock[0] = call.minute + 0.02 + 0.2 * k
            with lf.start_as_current_observation(
                name=f"chat {model}",
                as_type="generation",
                model=model,
                usage_details={"input": n_in, "output": n_out},
                cost_details={"total": cost} if cost is not None else None,
            ):
                clock[0] += 0.1
        if call.tool_cost is not None or call.tool_fails:
            clock[0] = call.minute + 0.5
            with lf.start_as_current_observation(
                name="policy_lookup",
                as_type="tool",
                metadata={"pilot.tool_cost_usd": call.tool_cost or 0.0},
            ) as tool:
                if call.tool_fails:
                    tool.update(level="ERROR", status_message="503 Service Unavailable")
                clock[0] += 0.1
        if call.agent_error:
            agent.update(level="ERROR", status_message="agent crashed")
        clock[0] = call.minute + 1


def record(exporter: SpanExporter, calls: list[Call] = CALLS) -> None:
    """Run the scripted agent under the Langfuse SDK, its spans going to ``exporter`` only.

    Span times follow the script: the OpenTelemetry SDK's clock (``time_ns`` in
    ``opentelemetry.sdk.trace``) reads the scripted minute while the agent runs.
    """
    clock = [0.0]
    provider = TracerProvider(id_generator=CountingIds(TRACE_BASE, 0x3000))
    lf = Langfuse(
        # the SDK keeps one resource manager (tracer provider, exporter) per public key
        # for the life of the process: a fresh key gives this recording its own exporter
        public_key=f"pk-lf-test-{uuid.uuid4().hex}",
        secret_key="sk-lf-test",
        host="http://localhost:1",
        tracer_provider=provider,
        span_exporter=exporter,
    )
    real = sdk_trace.time_ns
    sdk_trace.time_ns = lambda: _at(clock[0])
    try:
        for call in calls:
            run_agent(lf, call, clock)
    finally:
        sdk_trace.time_ns = real
        lf.flush()
        lf.shutdown()


# ---- the export, as the Langfuse server would hold the spans ---------------------------------


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")


def _blob_time(ns: int) -> str:
    return pd.Timestamp(ns, unit="ns").strftime("%Y-%m-%d %H:%M:%S.%f")


def export_rows(spans: list[ReadableSpan]) -> tuple[list[dict], list[dict], list[dict]]:
    """Observations, traces and scores (public API field names) for the recorded spans."""
    observations, traces = [], {}
    for s in spans:
        a = dict(s.attributes)
        kind = str(a["langfuse.observation.type"]).upper()
        trace_id = f"{s.context.trace_id:032x}"
        observations.append(
            {
                "id": f"{s.context.span_id:016x}",
                "traceId": trace_id,
                "parentObservationId": f"{s.parent.span_id:016x}" if s.parent else None,
                "type": kind,
                "name": s.name,
                "startTime": _iso(s.start_time),
                "endTime": _iso(s.end_time),
                "level": a.get("langfuse.observation.level", "DEFAULT"),
                "statusMessage": a.get("langfuse.observation.status_message"),
                "model": a.get("langfuse.observation.model.name"),
                "usageDetails": json.loads(a.get("langfuse.observation.usage_details", "{}")),
                "costDetails": json.loads(a.get("langfuse.observation.cost_details", "{}")),
                "promptName": a.get("langfuse.observation.prompt.name")
                if kind == "GENERATION"
                else None,
                "promptVersion": a.get("langfuse.observation.prompt.version")
                if kind == "GENERATION"
                else None,
                "metadata": {
                    k[len(META) :]: json.loads(v) for k, v in a.items() if k.startswith(META)
                },
            }
        )
        if s.parent is None:
            traces[trace_id] = {
                "id": trace_id,
                "timestamp": _iso(s.start_time),
                "name": a.get("langfuse.trace.name"),
                "userId": a.get("user.id"),
                "sessionId": a.get("session.id"),
                "metadata": {
                    k[len(TRACE_META) :]: json.loads(v)
                    for k, v in a.items()
                    if k.startswith(TRACE_META)
                },
                "tags": [],
            }
    scores = []
    for k, call in enumerate(CALLS, start=1):
        if call.route != "scores":
            continue
        trace_id = f"{TRACE_BASE + k:032x}"
        root = next(
            o for o in observations if o["traceId"] == trace_id and o["parentObservationId"] is None
        )
        when = _iso(_at(call.minute + 5))
        for name, value in (
            ("accepted", call.accepted),
            ("overridden", call.overridden),
            ("correct", call.correct),
        ):
            scores.append(
                {"traceId": trace_id, "observationId": None, "name": name, "value": float(value),
                 "stringValue": str(value), "dataType": "BOOLEAN", "timestamp": when}
            )  # fmt: skip
        scores += [
            {"traceId": trace_id, "observationId": root["id"], "name": "confidence",
             "value": call.confidence, "stringValue": None, "dataType": "NUMERIC", "timestamp": when},
            {"traceId": trace_id, "observationId": root["id"], "name": "pilot.review_minutes",
             "value": call.review_minutes, "stringValue": None, "dataType": "NUMERIC", "timestamp": when},
            # an earlier, superseded score: the latest of a name wins
            {"traceId": trace_id, "observationId": root["id"], "name": "confidence",
             "value": 0.01, "stringValue": None, "dataType": "NUMERIC", "timestamp": _iso(_at(call.minute + 2))},
            {"traceId": trace_id, "observationId": None, "name": "tone",
             "value": 0.0, "stringValue": "neutral", "dataType": "CATEGORICAL", "timestamp": when},
        ]  # fmt: skip
    return observations, list(traces.values()), scores


def write_api_jsonl(folder: Path, spans: list[ReadableSpan]) -> Path:
    """The export as three JSON Lines files with the public API's camelCase names."""
    folder.mkdir(parents=True, exist_ok=True)
    observations, traces, scores = export_rows(spans)
    for name, rows in (("observations", observations), ("traces", traces), ("scores", scores)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def write_blob_parquet(folder: Path, spans: list[ReadableSpan]) -> Path:
    """The export as the blob-storage integration lays it out: snake_case Parquet in folders."""
    observations, traces, scores = export_rows(spans)
    for name, rows in (("observations", observations), ("traces", traces), ("scores", scores)):
        frame = pd.DataFrame([{_snake(k): v for k, v in r.items()} for r in rows])
        for column in ("start_time", "end_time", "timestamp"):
            if column in frame:
                frame[column] = frame[column].map(lambda t: _blob_time(pd.Timestamp(t).value))
        for column in ("metadata", "usage_details", "cost_details"):
            if column in frame:  # JSON text, as in the export's text formats
                frame[column] = frame[column].map(json.dumps)
        (folder / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / name / "2026-03-03.parquet", index=False)
    return folder


def expected_log(calls: list[Call] = CALLS) -> pd.DataFrame:
    """The decision log built by hand from the scripted calls (contract types)."""
    return _expected_log(calls, prices=PRICES, trace_base=TRACE_BASE, t0=T0, prompt_version="7")


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    record(exporter)
    return list(exporter.get_finished_spans())


@pytest.fixture(scope="module")
def api_export(tmp_path_factory: pytest.TempPathFactory, recorded: list[ReadableSpan]) -> Path:
    return write_api_jsonl(tmp_path_factory.mktemp("langfuse") / "api", recorded)


@pytest.fixture(scope="module")
def blob_export(tmp_path_factory: pytest.TempPathFactory, recorded: list[ReadableSpan]) -> Path:
    return write_blob_parquet(tmp_path_factory.mktemp("langfuse") / "blob", recorded)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ---- the SDK and the normalised spans ------------------------------------------------------


def test_the_sdk_sends_nothing_to_the_network_and_records_every_call(
    recorded: list[ReadableSpan],
) -> None:
    roots = [s for s in recorded if s.parent is None]
    assert len(roots) == len(CALLS)
    assert {s.instrumentation_scope.name for s in recorded} == {"langfuse-sdk"}
    assert {s.attributes["langfuse.observation.type"] for s in recorded} == {
        "agent",
        "generation",
        "tool",
    }


def test_file_roles() -> None:
    assert file_role("x/observations_v2/2026.parquet") == "observations"
    assert file_role("x/scores/part-1.jsonl") == "scores"
    assert file_role("traces.jsonl") == "traces"
    assert file_role("x/other.jsonl") is None


@pytest.mark.parametrize("shape", ["api", "blob"])
def test_every_span_column_is_mapped(
    shape: str, api_export: Path, blob_export: Path, recorded: list[ReadableSpan]
) -> None:
    folder = api_export if shape == "api" else blob_export
    con = engine_con()
    got = read_spans(con, _files(folder), "langfuse").to_pandas().set_index("span_id")
    assert len(got) == len(recorded)
    operations = {"agent": "invoke_agent", "generation": "chat", "tool": "execute_tool"}
    for k, s in enumerate(recorded, start=1):
        a = dict(s.attributes)
        row = got.loc[f"{s.context.span_id:016x}"]
        attrs = dict(row.attributes)
        assert row.trace_id == f"{s.context.trace_id:032x}"
        assert (row.parent_span_id if pd.notna(row.parent_span_id) else None) == (
            f"{s.parent.span_id:016x}" if s.parent else None
        )
        assert row["name"] == s.name
        assert row.start_time == pd.Timestamp(s.start_time, unit="ns").floor("us")
        assert row.end_time == pd.Timestamp(s.end_time, unit="ns").floor("us")
        level = a.get("langfuse.observation.level")
        assert row.status == ("error" if level == "ERROR" else "unset")
        assert (row.status_message if pd.notna(row.status_message) else None) == a.get(
            "langfuse.observation.status_message"
        )
        assert row.operation == operations[a["langfuse.observation.type"]]
        assert row.source_row == k and "observations" in row.source_file
        assert attrs["langfuse.observation.type"] == a["langfuse.observation.type"].upper()
        for key, value in a.items():
            if key.startswith(META):  # metadata: under the SDK's name, and pilot.* as itself
                decoded = json.loads(value)
                name = key[len(META) :]
                if isinstance(decoded, dict):
                    for sub, v in decoded.items():
                        flat = str(v).lower() if isinstance(v, bool) else str(v)
                        assert attrs[f"{key}.{sub}"] == flat
                        assert attrs[f"{name}.{sub}"] == flat
                    continue
                flat = str(decoded).lower() if isinstance(decoded, bool) else str(decoded)
                assert (
                    float(attrs[key]) == decoded
                    if isinstance(decoded, float)
                    else attrs[key] == flat
                )
                if name.startswith("pilot."):
                    assert attrs[name] == attrs[key]
        if a["langfuse.observation.type"] == "generation":
            usage = json.loads(a["langfuse.observation.usage_details"])
            assert attrs["gen_ai.request.model"] == a["langfuse.observation.model.name"]
            assert attrs["gen_ai.usage.input_tokens"] == str(usage["input"])
            assert attrs["gen_ai.usage.output_tokens"] == str(usage["output"])
            assert attrs["pilot.prompt_version"] == "7"
            if "langfuse.observation.cost_details" in a:
                cost = json.loads(a["langfuse.observation.cost_details"])["total"]
                assert float(attrs["gen_ai.usage.cost"]) == cost
            else:
                assert "gen_ai.usage.cost" not in attrs
        if s.parent is None:  # trace-level fields on the root observation
            assert attrs["user.id"] == attrs["pilot.user_id"] == a["user.id"]
            assert attrs["session.id"] == attrs["gen_ai.conversation.id"] == a["session.id"]
            assert attrs["langfuse.trace.name"] == "claim-triage"
            assert attrs["pilot.workflow"] == "fnol_triage"  # trace metadata
        assert UNPARSEABLE_KEY not in attrs
    roots = got[got.parent_span_id.isna()]
    by_id = {a["pilot.decision_id"]: dict(a) for a in roots.attributes}
    assert by_id["lf-2"]["pilot.accepted"] == "false"  # nested {"pilot": {...}} metadata
    lf3 = by_id["lf-3"]  # scores
    assert (lf3["pilot.accepted"], lf3["pilot.overridden"], lf3["pilot.correct"]) == (
        "false",
        "true",
        "false",
    )
    assert lf3["pilot.confidence"] == "0.75"  # the latest confidence score wins
    assert lf3["pilot.review_minutes"] == "9.25"
    assert lf3["pilot.tone"] == "neutral"  # a categorical score: its string value


@pytest.mark.parametrize("shape", ["api", "blob"])
def test_decision_log_equals_the_one_built_by_hand(
    shape: str, api_export: Path, blob_export: Path
) -> None:
    folder = api_export if shape == "api" else blob_export
    con = engine_con()
    spans = read_spans(con, _files(folder), "langfuse")
    built = spans_to_decisions(spans, prices=PRICES, features=["claim_amount", "channel"])
    assert_log_equal(built.decisions.to_pandas(), expected_log(), typed=False)
    r = built.reconciliation
    assert r.balanced and r.spans_quarantined == 0 and r.spans_outside_decisions == 0
    assert r.decisions == len(CALLS)
    assert r.decisions_priced_from_tokens == 2  # lf-1 and lf-3; lf-2 and lf-4 state a cost


def test_otlp_spans_of_the_sdk_give_the_same_log(tmp_path: Path) -> None:
    path = tmp_path / "langfuse-otlp.jsonl"
    record(FileSpanExporter(path))
    con = engine_con()
    spans = read_spans(con, path, "langfuse")
    frame = spans.to_pandas()
    assert set(frame.operation) == {"invoke_agent", "chat", "execute_tool"}
    assert (frame.status == "error").sum() == 2  # the failed tool and the crashed agent
    built = spans_to_decisions(spans, prices=PRICES, features=["claim_amount", "channel"])
    # OTLP carries no scores: the score-routed call lacks its scored signals
    want = expected_log()
    scored = [c.decision_id for c in CALLS if c.route == "scores"]
    got = built.decisions.to_pandas()
    plain = got[~got.decision_id.isin(scored)]
    assert_log_equal(
        plain, want[~want.decision_id.isin(scored)].reset_index(drop=True), typed=False
    )
    assert got[got.decision_id.isin(scored)].accepted.isna().all()
    # given as plain OTLP (format: otel), the Langfuse SDK's spans are recognised alike
    as_otel = spans_to_decisions(
        read_spans(con, path, "otel"), prices=PRICES, features=["claim_amount", "channel"]
    ).decisions.to_pandas()
    pd.testing.assert_frame_equal(
        as_otel.sort_values("decision_id").reset_index(drop=True),
        got.sort_values("decision_id").reset_index(drop=True),
    )


# ---- malformed rows -------------------------------------------------------------------------


def test_malformed_rows_are_quarantined_with_their_rule(
    tmp_path: Path, recorded: list[ReadableSpan]
) -> None:
    observations, traces, scores = export_rows(recorded)
    gens = [o for o in observations if o["type"] == "GENERATION"]
    expected: dict[str, str] = {}
    gens[0]["traceId"] = None
    expected[gens[0]["id"]] = "span without trace_id"
    gens[1]["endTime"] = "2026-03-03T08:00:00Z"
    expected[gens[1]["id"]] = "end before start"
    gens[2]["usageDetails"] = "lots of tokens"
    expected[gens[2]["id"]] = "unparseable attribute"
    gens[3]["startTime"] = "yesterday"
    expected[gens[3]["id"]] = "span without valid start/end time"
    extra = []
    orphan = dict(gens[4], id="00000000000fffff", parentObservationId="00000000000eeeee")
    expected["00000000000fffff"] = "orphan span (parent not in the trace)"
    extra += [orphan, dict(gens[4]), dict(gens[4], id=None)]
    folder = tmp_path / "edited"
    folder.mkdir()
    rows = observations + extra
    (folder / "observations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in traces))
    con = engine_con()
    built = spans_to_decisions(read_spans(con, _files(folder), "langfuse"), prices=PRICES)
    q = built.quarantine.to_pandas()
    got = dict(zip(q.span_id.fillna("<none>"), q[QUARANTINE_RULE_COLUMN], strict=True))
    for span_id, rule in expected.items():
        assert got[span_id] == rule
    assert got["<none>"] == "span without span_id"
    dup = q[q[QUARANTINE_RULE_COLUMN] == "duplicate span_id"]
    assert dup.source_row.tolist() == [len(observations) + 2]  # the later copy
    bad = q[q[QUARANTINE_RULE_COLUMN] == "unparseable attribute"].iloc[0]
    assert bad.attributes[UNPARSEABLE_KEY] == "langfuse.observation.usage_details"
    r = built.reconciliation
    assert r.balanced and r.spans_read == len(rows)
    assert r.spans_quarantined == len(q) == 7
    assert r.decisions == len(CALLS)


def test_files_that_are_not_an_export_name_the_problem(tmp_path: Path, api_export: Path) -> None:
    con = engine_con()
    odd = tmp_path / "spans.jsonl"
    odd.write_text("{}\n")
    with pytest.raises(
        DataSourceError, match=r"spans\.jsonl.*observations\*, traces\* or scores\*"
    ):
        read_spans(con, odd, "langfuse")
    with pytest.raises(DataSourceError, match="no Langfuse observations file"):
        read_spans(con, api_export / "scores.jsonl", "langfuse")


# ---- the pilot file -------------------------------------------------------------------------


def test_pilot_file_format_langfuse_runs_through_the_store(
    tmp_path: Path, blob_export: Path
) -> None:
    folder = tmp_path / "p"
    write_pilot(folder, {k: v for k, v in tiny_frames().items() if k != "decisions"})
    shutil.copytree(blob_export, folder / "langfuse")
    pilot_file = folder / "pilot.yaml"
    spec = yaml.safe_load(pilot_file.read_text())
    spec["datasets"] = {
        "decisions": {"path": "langfuse/**/*.parquet", "format": "langfuse"},
        **spec["datasets"],
    }
    spec["traces"] = {"prices": PRICES}
    pilot_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    store = tmp_path / "store"
    build_store(pilot_file, store)
    got = open_store(store, pilot_file).table("decisions").to_pandas()
    assert_log_equal(got, expected_log())
    recon = read_manifest(store)["datasets"]["decisions"]["traces"]["reconciliation"]
    assert recon["decisions"] == len(CALLS) and recon["spans_quarantined"] == 0


def test_enriched_observations_export_without_traces_file(
    tmp_path: Path, recorded: list[ReadableSpan]
) -> None:
    """``observations_v2/``: trace fields on every row (snake_case), no traces file."""
    observations, traces, scores = export_rows(recorded)
    by_trace = {t["id"]: t for t in traces}
    rows = []
    for o in observations:
        t = by_trace[o["traceId"]]
        row = {_snake(k): v for k, v in o.items()}
        # Langfuse v4 sets the propagated trace attributes on each observation
        row["metadata"] = {**t["metadata"], **o["metadata"]}
        row.update(user_id=t["userId"], session_id=t["sessionId"], trace_name=t["name"])
        rows.append(row)
    (tmp_path / "observations_v2").mkdir()
    (tmp_path / "scores").mkdir()
    (tmp_path / "observations_v2" / "part-0.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    (tmp_path / "scores" / "part-0.jsonl").write_text(
        "".join(json.dumps({_snake(k): v for k, v in s.items()}) + "\n" for s in scores)
    )
    con = engine_con()
    spans = read_spans(con, str(tmp_path / "**" / "*.jsonl"), "langfuse")
    attrs = spans.to_pandas().attributes.map(dict)
    assert all(a["pilot.user_id"] == a["user.id"] for a in attrs)  # on every observation
    assert all(a["langfuse.trace.name"] == "claim-triage" for a in attrs)
    built = spans_to_decisions(spans, prices=PRICES, features=["claim_amount", "channel"])
    assert_log_equal(built.decisions.to_pandas(), expected_log(), typed=False)

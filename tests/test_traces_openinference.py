"""OpenInference spans (Phoenix export) as the decision log, recorded in the test by the real SDK.

A scripted agent runs a few calls under ``openinference-instrumentation``'s
``TracerProvider`` / ``OITracer`` (``using_attributes``, ``using_prompt_template``,
``get_llm_attributes``, ``get_annotation_attributes``) with an in-memory span
exporter; the finished spans are written out in the shape of Phoenix's span export
(``get_spans_dataframe()``: ``context.trace_id``, ``parent_id``, ``span_kind``,
``attributes.*`` columns, ``events``) as Parquet and as JSON Lines, plus an
annotation export. The decision log built from them must equal the one built by
hand from the same scripted calls; every mapped span column is checked; malformed
rows are quarantined with their rule; the OTLP form of the same SDK's spans maps
the same way; and the pilot file's ``format: openinference`` runs through the store.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import tiny_frames, write_pilot
from openinference.instrumentation import (
    TracerProvider,
    get_annotation_attributes,
    get_llm_attributes,
    using_attributes,
    using_prompt_template,
)
from openinference.semconv.trace import SpanAttributes
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from trace_expectations import CountingIds, assert_log_equal, engine_con
from trace_expectations import expected_log as _expected_log

from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.evidence import QUARANTINE_RULE_COLUMN
from pilot_lib.ingest.store import build_store, open_store, read_manifest
from pilot_lib.ingest.traces import UNPARSEABLE_KEY, read_spans, spans_to_decisions

PRICES = {
    "gpt-test": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0},
    "small-test": {"input_per_million_usd": 0.5, "output_per_million_usd": 1.5},
}
T0 = dt.datetime(2026, 3, 3, 9, 0, 0)
TRACE_BASE = 0x0A1000000000000000000000000000


@dataclass
class Call:
    """One agent invocation; ``route`` says how its business signals are recorded."""

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
    chats: list[tuple[str, int, int, float | None]]  # model, input, output, llm.cost.total
    route: str = (
        "attributes"  # attributes | event | span_annotation | export_annotation | evaluation
    )
    tool_cost: float | None = None
    tool_fails: bool = False
    agent_error: bool = False
    features: dict[str, Any] = field(default_factory=dict)


CALLS = [
    Call("oi-1", "c101", 0, "u1", True, False, False, None, 0.9, True, 1.5,
         [("gpt-test", 1200, 300, None), ("small-test", 400, 100, None)], tool_cost=0.01,
         features={"claim_amount": 1200.5, "channel": "web"}),
    Call("oi-2", "c102", 30, "u2", False, False, True, "low_confidence", 0.4, None, 6.0,
         [("gpt-test", 800, 50, 0.0123)], route="event",
         features={"claim_amount": 310.0, "channel": "phone"}),
    Call("oi-3", "c103", 60, "u1", False, True, True, None, 0.75, False, 9.25,
         [("gpt-test", 1000, 200, None)], route="span_annotation", tool_cost=0.02, tool_fails=True,
         features={"claim_amount": 99.99, "channel": "web"}),
    Call("oi-4", "c104", 90, "u3", True, False, False, None, 0.6, True, 2.0,
         [("small-test", 2000, 500, None)], route="export_annotation",
         features={"claim_amount": 4500.0, "channel": "app"}),
    Call("oi-5", "c105", 120, "u3", False, False, False, None, 0.55, None, 0.0,
         [("gpt-test", 10, 5, 0.25)], route="evaluation", agent_error=True,
         features={"claim_amount": 10.0, "channel": "web"}),
]  # fmt: skip


def _ns(minute: float) -> int:
    moment = T0 + dt.timedelta(minutes=minute)
    return int(moment.replace(tzinfo=dt.UTC).timestamp() * 1_000_000) * 1000


def run_agent(tracer: trace.Tracer, call: Call) -> None:
    """What an OpenInference-instrumented agent emits for one call (+ ``pilot.*``)."""
    attrs: dict[str, Any] = {
        SpanAttributes.AGENT_NAME: "claims-agent",
        "pilot.decision_id": call.decision_id,
        "pilot.case_id": call.case_id,
        "pilot.workflow": "fnol_triage",
        "pilot.escalated": call.escalated,
        "pilot.completed": not call.agent_error,
        **call.features,
    }
    if call.reason:
        attrs["pilot.escalation_reason"] = call.reason
    if call.route != "event":
        attrs["pilot.accepted"] = call.accepted
        attrs["pilot.overridden"] = call.overridden
    if call.route == "attributes" or call.route == "event":
        attrs["pilot.review_minutes"] = call.review_minutes
        attrs["pilot.confidence"] = call.confidence
        if call.correct is not None:
            attrs["pilot.correct"] = call.correct
    if call.route == "span_annotation":
        attrs["pilot.review_minutes"] = call.review_minutes
        attrs.update(
            get_annotation_attributes(
                annotations=[
                    {"name": "confidence", "score": call.confidence, "annotator_kind": "LLM"},
                    {"name": "pilot.correct", "label": str(call.correct).lower()},
                ]
            )
        )
    if call.route == "evaluation":
        attrs["pilot.review_minutes"] = call.review_minutes
    with (
        using_attributes(session_id=call.case_id, user_id=call.user_id),
        using_prompt_template(template="Triage {claim}", version="v7"),
    ):
        root = tracer.start_span(
            "claims-agent",
            openinference_span_kind="agent",
            attributes=attrs,
            start_time=_ns(call.minute),
        )
        ctx = trace.set_span_in_context(root)
        for k, (model, n_in, n_out, cost) in enumerate(call.chats):
            llm_attrs = dict(
                get_llm_attributes(
                    model_name=model, token_count={"prompt": n_in, "completion": n_out}
                )
            )
            if cost is not None:
                llm_attrs[SpanAttributes.LLM_COST_TOTAL] = cost
            at = call.minute + 0.02 + 0.2 * k
            span = tracer.start_span(
                f"chat {model}",
                ctx,
                openinference_span_kind="llm",
                attributes=llm_attrs,
                start_time=_ns(at),
            )
            span.end(end_time=_ns(at + 0.1))
        if call.tool_cost is not None or call.tool_fails:
            tool = tracer.start_span(
                "policy_lookup",
                ctx,
                openinference_span_kind="tool",
                attributes={
                    SpanAttributes.TOOL_NAME: "policy_lookup",
                    "pilot.tool_cost_usd": call.tool_cost or 0.0,
                },
                start_time=_ns(call.minute + 0.5),
            )
            if call.tool_fails:
                tool.set_status(Status(StatusCode.ERROR, "503 Service Unavailable"))
            tool.end(end_time=_ns(call.minute + 0.6))
        if call.route == "event":
            root.add_event(
                "pilot.outcome",
                {"pilot.accepted": call.accepted, "pilot.overridden": call.overridden, "note": "x"},
                timestamp=_ns(call.minute + 0.9),
            )
        if call.route == "evaluation":
            root.add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "confidence",
                    "gen_ai.evaluation.score.value": call.confidence,
                },
                timestamp=_ns(call.minute + 0.9),
            )
        if call.agent_error:
            root.set_status(Status(StatusCode.ERROR, "agent crashed"))
        root.end(end_time=_ns(call.minute + 1))


def record(exporter: Any, calls: list[Call] = CALLS) -> None:
    """Run the scripted agent under OpenInference's tracer provider, exporting to ``exporter``."""
    provider = TracerProvider(id_generator=CountingIds(TRACE_BASE, 0x2000))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test.oi")
    for call in calls:
        run_agent(tracer, call)
    provider.shutdown()


def phoenix_frame(spans: list[ReadableSpan]) -> pd.DataFrame:
    """The spans in the shape of Phoenix's ``get_spans_dataframe()`` (one row per span)."""
    rows = []
    for s in spans:
        row: dict[str, Any] = {
            "name": s.name,
            "span_kind": s.attributes.get("openinference.span.kind"),
            "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
            "start_time": pd.Timestamp(s.start_time, unit="ns", tz="UTC"),
            "end_time": pd.Timestamp(s.end_time, unit="ns", tz="UTC"),
            "status_code": s.status.status_code.name,
            "status_message": s.status.description or "",
            "events": [
                {
                    "name": e.name,
                    "timestamp": pd.Timestamp(e.timestamp, unit="ns", tz="UTC").isoformat(),
                    "attributes": dict(e.attributes),
                }
                for e in s.events
            ],
            "context.span_id": f"{s.context.span_id:016x}",
            "context.trace_id": f"{s.context.trace_id:032x}",
        }
        for key, value in s.attributes.items():
            row[f"attributes.{key}"] = list(value) if isinstance(value, tuple) else value
        rows.append(row)
    return pd.DataFrame(rows)


def annotation_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Phoenix-style span annotations for the ``export_annotation`` calls (score / label)."""
    rows = []
    for call in CALLS:
        if call.route != "export_annotation":
            continue
        root = frame[
            (frame["attributes.pilot.decision_id"] == call.decision_id) & frame.parent_id.isna()
        ].iloc[0]
        span_id = root["context.span_id"]
        rows += [
            {
                "span_id": span_id,
                "name": "review_minutes",
                "label": None,
                "score": call.review_minutes,
            },
            {"span_id": span_id, "name": "confidence", "label": None, "score": call.confidence},
            {
                "span_id": span_id,
                "name": "correct",
                "label": "correct",
                "score": float(call.correct),
            },
            {"span_id": span_id, "name": "hallucination", "label": "no", "score": 0.0},
        ]
    return pd.DataFrame(rows)


def expected_log(calls: list[Call] = CALLS) -> pd.DataFrame:
    """The decision log built by hand from the scripted calls (contract types)."""
    return _expected_log(calls, prices=PRICES, trace_base=TRACE_BASE, t0=T0, prompt_version="v7")


def _typed(log: pd.DataFrame) -> pd.DataFrame:
    """The builder's text signals as the contract would type them (for direct comparison)."""
    out = log.copy()
    truth = {"true": True, "false": False, "1": True, "0": False}
    for column in ("completed", "accepted", "overridden", "escalated", "correct"):
        out[column] = out[column].map(
            lambda v: None if v is None or pd.isna(v) else truth.get(str(v).lower(), v)
        )
    return out


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    record(exporter)
    return list(exporter.get_finished_spans())


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory, recorded: list[ReadableSpan]) -> Path:
    """The Phoenix export as Parquet and as JSON Lines, and the annotation export."""
    folder = tmp_path_factory.mktemp("phoenix")
    frame = phoenix_frame(recorded)
    frame.to_parquet(folder / "spans.parquet", index=False)
    frame.to_json(
        folder / "spans.jsonl", orient="records", lines=True, date_format="iso", date_unit="us"
    )
    annotation_frame(frame).to_parquet(folder / "span_annotations.parquet", index=False)
    return folder


# ---- the normalised spans -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spans.parquet", "spans.jsonl"])
def test_every_span_column_is_mapped(
    export_dir: Path, recorded: list[ReadableSpan], name: str
) -> None:
    con = engine_con()
    spans = read_spans(
        con, [export_dir / name, export_dir / "span_annotations.parquet"], "openinference"
    )
    got = spans.to_pandas().set_index("span_id")
    assert len(got) == len(recorded)
    kinds = {"AGENT": "invoke_agent", "LLM": "chat", "TOOL": "execute_tool"}
    for k, s in enumerate(recorded, start=1):
        row = got.loc[f"{s.context.span_id:016x}"]
        assert row.trace_id == f"{s.context.trace_id:032x}"
        assert (row.parent_span_id if pd.notna(row.parent_span_id) else None) == (
            f"{s.parent.span_id:016x}" if s.parent else None
        )
        assert row["name"] == s.name
        assert row.start_time == pd.Timestamp(s.start_time, unit="ns").floor("us")
        assert row.end_time == pd.Timestamp(s.end_time, unit="ns").floor("us")
        assert (
            row.status
            == {"UNSET": "unset", "OK": "ok", "ERROR": "error"}[s.status.status_code.name]
        )
        assert (row.status_message if pd.notna(row.status_message) else None) == (
            s.status.description or None
        )
        assert row.operation == kinds[s.attributes["openinference.span.kind"]]
        assert row.source_file.endswith(name)
        assert row.source_row == k  # rows in export order
        attrs = dict(row.attributes)
        for key, value in s.attributes.items():  # every attribute, as text
            if isinstance(value, bool):
                assert attrs[key] == str(value).lower(), key
            elif isinstance(value, (int, float)):  # pandas may hold an int as a float
                assert float(attrs[key]) == value, key
            else:
                assert attrs[key] == str(value), key
        assert attrs["gen_ai.conversation.id"] == attrs["session.id"]
        assert attrs["pilot.user_id"] == attrs["user.id"]
        if s.attributes["openinference.span.kind"] == "LLM":
            assert attrs["gen_ai.usage.input_tokens"] == str(s.attributes["llm.token_count.prompt"])
            assert attrs["gen_ai.usage.output_tokens"] == str(
                s.attributes["llm.token_count.completion"]
            )
            assert attrs["gen_ai.request.model"] == s.attributes["llm.model_name"]
        if s.attributes["openinference.span.kind"] == "AGENT":
            assert attrs["gen_ai.agent.name"] == "claims-agent"
        assert UNPARSEABLE_KEY not in attrs
    roots = got[got.parent_span_id.isna()].set_index(
        got[got.parent_span_id.isna()].attributes.map(lambda a: a["pilot.decision_id"])
    )
    assert roots.loc["oi-2", "attributes"]["pilot.accepted"] == "false"  # pilot.outcome event
    assert "note" not in dict(roots.loc["oi-2", "attributes"])  # only pilot.* from events
    assert roots.loc["oi-3", "attributes"]["pilot.confidence"] == "0.75"  # annotation on the span
    assert roots.loc["oi-3", "attributes"]["pilot.correct"] == "false"
    assert roots.loc["oi-4", "attributes"]["pilot.correct"] == "1"  # export: score before label
    assert roots.loc["oi-4", "attributes"]["pilot.review_minutes"] == "2"
    assert roots.loc["oi-4", "attributes"]["pilot.hallucination"] == "0"
    assert roots.loc["oi-5", "attributes"]["pilot.confidence"] == "0.55"  # evaluation event


def test_decision_log_equals_the_one_built_by_hand(export_dir: Path) -> None:
    con = engine_con()
    for name in ("spans.parquet", "spans.jsonl"):
        spans = read_spans(
            con, [export_dir / name, export_dir / "span_annotations.parquet"], "openinference"
        )
        built = spans_to_decisions(spans, prices=PRICES, features=["claim_amount", "channel"])
        assert_log_equal(_typed(built.decisions.to_pandas()), expected_log())
        r = built.reconciliation
        assert r.balanced and r.spans_quarantined == 0 and r.spans_outside_decisions == 0
        assert r.decisions == len(CALLS)
        assert (
            r.decisions_priced_from_tokens == 3
        )  # oi-1, oi-3, oi-4 (oi-2/oi-5 state llm.cost.total)


def test_otlp_form_of_the_same_sdk_maps_the_same(tmp_path: Path, export_dir: Path) -> None:
    path = tmp_path / "oi.jsonl"
    record(FileSpanExporter(path))
    con = engine_con()
    spans = read_spans(con, [path, export_dir / "span_annotations.parquet"], "openinference")
    assert set(spans.operation.to_pandas()) == {"invoke_agent", "chat", "execute_tool"}
    built = spans_to_decisions(spans, prices=PRICES, features=["claim_amount", "channel"])
    assert_log_equal(_typed(built.decisions.to_pandas()), expected_log())
    # given as plain OTLP (format: otel), the OpenInference spans are recognised and
    # give the same decisions (annotations apart: they live in the export only)
    as_otel = spans_to_decisions(
        read_spans(con, path, "otel"), prices=PRICES, features=["claim_amount", "channel"]
    ).decisions.to_pandas()
    via_oi = spans_to_decisions(
        read_spans(con, path, "openinference"), prices=PRICES, features=["claim_amount", "channel"]
    ).decisions.to_pandas()
    assert len(as_otel) == len(expected_log())
    pd.testing.assert_frame_equal(
        as_otel.sort_values("decision_id").reset_index(drop=True),
        via_oi.sort_values("decision_id").reset_index(drop=True),
    )
    # the export's and the OTLP form's attribute maps agree span by span
    exported = read_spans(con, export_dir / "spans.parquet", "openinference").to_pandas()
    via_otlp = read_spans(con, path, "openinference").to_pandas()
    for frame in (exported, via_otlp):
        frame["attributes"] = frame.attributes.map(
            lambda a: {k: float(v) if _is_number(v) else v for k, v in dict(a).items()}
        )
    a = exported.set_index("span_id").attributes.to_dict()
    b = via_otlp.set_index("span_id").attributes.to_dict()
    assert a == b


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_rest_shape_with_one_attributes_object(
    tmp_path: Path, recorded: list[ReadableSpan]
) -> None:
    """Phoenix's REST span shape: a ``context`` object and one nested ``attributes`` object."""
    rows = []
    for s in recorded:
        nested: dict[str, Any] = {}
        for key, value in s.attributes.items():
            if key.startswith(("llm.", "pilot.")):  # nested objects, as Phoenix's REST API gives
                head, _, tail = key.partition(".")
                nested.setdefault(head, {})[tail] = value
            else:
                nested[key] = list(value) if isinstance(value, tuple) else value
        rows.append(
            {
                "name": s.name,
                "context": {
                    "trace_id": f"{s.context.trace_id:032x}",
                    "span_id": f"{s.context.span_id:016x}",
                },
                "span_kind": s.attributes["openinference.span.kind"],
                "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                "start_time": pd.Timestamp(s.start_time, unit="ns", tz="UTC").isoformat(),
                "end_time": pd.Timestamp(s.end_time, unit="ns", tz="UTC").isoformat(),
                "status_code": s.status.status_code.name,
                "status_message": s.status.description or "",
                "attributes": nested,
                "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in s.events],
            }
        )
    path = tmp_path / "rest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    con = engine_con()
    rest = read_spans(con, path, "openinference").to_pandas().set_index("span_id")
    flat = read_spans(con, phoenix_path(tmp_path, recorded), "openinference").to_pandas()
    flat = flat.set_index("span_id")
    assert rest.trace_id.to_dict() == flat.trace_id.to_dict()
    for span_id, attrs in flat.attributes.items():
        a = {k: float(v) if _is_number(v) else v for k, v in dict(attrs).items()}
        b = {k: float(v) if _is_number(v) else v for k, v in dict(rest.attributes[span_id]).items()}
        assert a == b, span_id
    built = spans_to_decisions(read_spans(con, path, "openinference"), prices=PRICES)
    assert built.reconciliation.decisions == len(CALLS)


def phoenix_path(folder: Path, spans: list[ReadableSpan]) -> Path:
    path = folder / "flat.parquet"
    phoenix_frame(spans).to_parquet(path, index=False)
    return path


# ---- malformed rows -------------------------------------------------------------------------


def test_malformed_rows_are_quarantined_with_their_rule(
    tmp_path: Path, recorded: list[ReadableSpan]
) -> None:
    frame = phoenix_frame(recorded)
    frame["start_time"] = frame.start_time.map(lambda t: t.isoformat())
    frame["end_time"] = frame.end_time.map(lambda t: t.isoformat())
    frame = frame.astype({"attributes.llm.token_count.completion": object})
    llm = frame.index[frame.span_kind == "LLM"].tolist()
    expected: dict[str, str] = {}
    frame.loc[llm[0], "context.trace_id"] = None
    expected[frame.loc[llm[0], "context.span_id"]] = "span without trace_id"
    frame.loc[llm[1], "end_time"] = "2026-03-03T08:00:00+00:00"
    expected[frame.loc[llm[1], "context.span_id"]] = "end before start"
    frame.loc[llm[2], "attributes.llm.token_count.completion"] = "lots"
    expected[frame.loc[llm[2], "context.span_id"]] = "unparseable attribute"
    frame.loc[llm[3], "start_time"] = "yesterday"
    expected[frame.loc[llm[3], "context.span_id"]] = "span without valid start/end time"
    orphan = frame.loc[[llm[4]]].copy()
    orphan["context.span_id"], orphan["parent_id"] = "00000000000fffff", "00000000000eeeee"
    expected["00000000000fffff"] = "orphan span (parent not in the trace)"
    duplicate = frame.loc[[llm[4]]].copy()
    no_id = frame.loc[[llm[4]]].copy()
    no_id["context.span_id"] = None
    frame = pd.concat([frame, orphan, duplicate, no_id], ignore_index=True)
    path = tmp_path / "edited.jsonl"
    frame.to_json(path, orient="records", lines=True)
    con = engine_con()
    built = spans_to_decisions(read_spans(con, path, "openinference"), prices=PRICES)
    q = built.quarantine.to_pandas()
    got = dict(zip(q.span_id.fillna("<none>"), q[QUARANTINE_RULE_COLUMN], strict=True))
    for span_id, rule in expected.items():
        assert got[span_id] == rule
    assert got["<none>"] == "span without span_id"
    dup = q[q[QUARANTINE_RULE_COLUMN] == "duplicate span_id"]
    assert dup.source_row.tolist() == [len(recorded) + 2]  # the later copy, its line number
    bad = q[q[QUARANTINE_RULE_COLUMN] == "unparseable attribute"].iloc[0]
    assert bad.attributes[UNPARSEABLE_KEY] == "llm.token_count.completion"
    r = built.reconciliation
    assert r.balanced and r.spans_read == len(frame)
    assert r.spans_quarantined == len(q) == 7
    assert r.decisions == len(CALLS)


def test_only_annotations_or_a_broken_file_name_the_problem(
    tmp_path: Path, export_dir: Path
) -> None:
    con = engine_con()
    with pytest.raises(DataSourceError, match="only annotation files"):
        read_spans(con, export_dir / "span_annotations.parquet", "openinference")
    bad = tmp_path / "spans.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataSourceError, match=r"spans\.parquet.*OpenInference"):
        read_spans(con, bad, "openinference")


# ---- the pilot file -------------------------------------------------------------------------


def test_pilot_file_format_openinference_runs_through_the_store(
    tmp_path: Path, export_dir: Path
) -> None:
    folder = tmp_path / "p"
    write_pilot(folder, {k: v for k, v in tiny_frames().items() if k != "decisions"})
    (folder / "phoenix").mkdir()
    for name in ("spans.parquet", "span_annotations.parquet"):
        shutil.copy(export_dir / name, folder / "phoenix" / name)
    pilot_file = folder / "pilot.yaml"
    spec = yaml.safe_load(pilot_file.read_text())
    spec["datasets"] = {
        "decisions": {"path": "phoenix/*.parquet", "format": "openinference"},
        **spec["datasets"],
    }
    spec["traces"] = {"prices": PRICES}
    pilot_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    store = tmp_path / "store"
    build_store(pilot_file, store)
    data = open_store(store, pilot_file)
    got = data.table("decisions").to_pandas()
    assert_log_equal(got, expected_log())
    recon = read_manifest(store)["datasets"]["decisions"]["traces"]["reconciliation"]
    assert recon["decisions"] == len(CALLS) and recon["spans_quarantined"] == 0

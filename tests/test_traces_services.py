"""Traces as real services and real exports produce them (issue 21).

Small hand-built OTLP JSON Lines and export files, each read under the DuckDB
connection a pilot file configures (default ``engine.memory_limit`` of 512MB):
JSON Lines under the memory limit, decision roots of agents called by other
services, pilot-file defaults, hostile values, real export shapes, OTLP log
records and damaged files. Every test checks spans read = used + quarantined +
outside decisions.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from trace_expectations import engine_con

from pilot_lib.errors import DataSourceError
from pilot_lib.ingest.traces import read_spans, spans_to_decisions

T0 = dt.datetime(2026, 3, 3, 9, 0, 0)
PRICES = {"gpt-test": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0}}


# ---- building OTLP by hand ------------------------------------------------------------------


def _ns(minute: float) -> str:
    moment = T0 + dt.timedelta(minutes=minute)
    return str(int(moment.replace(tzinfo=dt.UTC).timestamp() * 1_000_000) * 1000)


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list of a dict (a ``dict`` value is given as the raw AnyValue)."""
    return [{"key": k, "value": v if isinstance(v, dict) else _value(v)} for k, v in values.items()]


def span(
    trace: int,
    sid: int,
    parent: int | None = None,
    name: str = "invoke_agent claims",
    start: float = 0.0,
    end: float = 1.0,
    flags: int | None = None,
    status: int | None = None,
    message: str | None = None,
    events: list[dict[str, Any]] | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """One OTLP span; ``attributes`` keys use ``__`` for dots (``gen_ai__operation__name``)."""
    out: dict[str, Any] = {
        "traceId": f"{trace:032x}",
        "spanId": f"{sid:016x}",
        "name": name,
        "startTimeUnixNano": _ns(start),
        "endTimeUnixNano": _ns(end),
        "attributes": attrs({k.replace("__", "."): v for k, v in attributes.items()}),
    }
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    if flags is not None:
        out["flags"] = flags
    if status is not None:
        out["status"] = {"code": status, **({"message": message} if message else {})}
    if events:
        out["events"] = events
    return out


def line(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> str:
    """One ``TracesData`` JSON line holding ``spans``."""
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": attrs(resource or {"service.name": "svc"})},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }
    return json.dumps(doc)


def agent(trace: int, sid: int, parent: int | None = None, **extra: Any) -> dict[str, Any]:
    """An ``invoke_agent`` span with the pilot signals a decision needs."""
    values = {
        "gen_ai__operation__name": "invoke_agent",
        "gen_ai__agent__id": "claims-agent",
        "pilot__workflow": "fnol",
        "pilot__case_id": f"c{trace}",
        "pilot__accepted": True,
    }
    values.update(extra)
    return span(trace, sid, parent, **values)


def chat(
    trace: int, sid: int, parent: int, tokens_in: Any = 100, tokens_out: Any = 10, **extra: Any
) -> dict[str, Any]:
    values = {
        "gen_ai__operation__name": "chat",
        "gen_ai__request__model": "gpt-test",
        "gen_ai__usage__input_tokens": tokens_in,
        "gen_ai__usage__output_tokens": tokens_out,
    }
    values.update(extra)
    return span(trace, sid, parent, name="chat gpt-test", start=0.1, end=0.2, **values)


def write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text("".join(x + newline for x in lines), encoding="utf-8", newline="")
    return path


def balanced(built: Any) -> Any:
    r = built.reconciliation
    assert r.spans_read == r.spans_used + r.spans_quarantined + r.spans_outside_decisions, r
    return r


def build(path: Path | list[Path] | str, fmt: str = "otel", con: Any = None, **kwargs: Any) -> Any:
    con = con or engine_con()
    spans = read_spans(con, path, fmt)
    built = spans_to_decisions(spans, prices=kwargs.pop("prices", PRICES), **kwargs)
    balanced(built)
    return built


# ---- 1. JSON Lines readers under the engine's memory limit ---------------------------------


def _phoenix_row(k: int) -> dict[str, Any]:
    return {
        "name": "agent",
        "span_kind": "AGENT",
        "parent_id": None,
        "start_time": "2026-03-03T09:00:00+00:00",
        "end_time": "2026-03-03T09:01:00+00:00",
        "status_code": "OK",
        "context.span_id": f"{k:016x}",
        "context.trace_id": f"{k:032x}",
        "attributes.pilot.workflow": "fnol",
        "attributes.pilot.case_id": f"c{k}",
        "attributes.pilot.accepted": True,
    }


def test_a_one_line_phoenix_jsonl_export_reads_under_the_default_memory_limit(
    tmp_path: Path,
) -> None:
    con = engine_con()
    assert con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0] == "488.2 MiB"
    path = write(tmp_path / "spans.jsonl", [json.dumps(_phoenix_row(1))])
    built = build(path, "openinference", con=con)
    assert built.reconciliation.decisions == 1


def test_a_langfuse_jsonl_export_reads_under_the_default_memory_limit(tmp_path: Path) -> None:
    obs = {
        "id": "o1",
        "traceId": "t1",
        "type": "AGENT",
        "name": "agent",
        "startTime": "2026-03-03T09:00:00Z",
        "endTime": "2026-03-03T09:01:00Z",
        "metadata": {"pilot.workflow": "fnol"},
    }
    write(tmp_path / "observations.jsonl", [json.dumps(obs)])
    spans = read_spans(engine_con(), tmp_path / "observations.jsonl", "langfuse").to_pandas()
    assert len(spans) == 1


def test_outcomes_jsonl_reads_under_the_default_memory_limit(tmp_path: Path) -> None:
    from pilot_lib.ingest.sources import _read_text_format

    path = write(tmp_path / "outcomes.jsonl", [json.dumps({"trace_id": "a", "accepted": True})])
    table = _read_text_format(engine_con(), str(path), "outcomes", "jsonl", ("trace_id",))
    assert table.count().execute() == 1


def test_a_line_too_long_for_the_memory_limit_names_file_line_size_and_fix(
    tmp_path: Path,
) -> None:
    # 64MB of memory: objects up to 16 MiB; line 3 (after a blank line) is ~17 MB
    con = engine_con(memory_limit="64MB")
    big = agent(2, 2, pilot__note="x" * 17_500_000)
    path = write(tmp_path / "batch.jsonl", [line([agent(1, 1)]), "", line([big])])
    with pytest.raises(DataSourceError) as err:
        read_spans(con, path, "otel")
    text = str(err.value)
    assert "line 3 of" in text and "batch.jsonl" in text
    assert "17.5 MB" in text and "engine.memory_limit" in text


# ---- 2. decision roots as real services emit them -------------------------------------------


def _called_agent(trace: int, caller: int, flags: int | None = None) -> list[dict[str, Any]]:
    """An agent whose parent span ``caller`` is in no export (the caller's service)."""
    base = trace * 100
    return [
        span(trace, base + 1, caller, flags=flags, **{
            "gen_ai__operation__name": "invoke_agent", "pilot__workflow": "fnol",
            "pilot__case_id": f"c{trace}", "pilot__accepted": True,
        }),
        chat(trace, base + 2, base + 1),
        span(trace, base + 3, base + 1, name="execute_tool lookup", start=0.3, end=0.4,
             gen_ai__operation__name="execute_tool"),
    ]  # fmt: skip


@pytest.mark.parametrize("flags", [None, 0x300], ids=["absent-parent", "remote-flag"])
def test_an_agent_called_by_another_service_is_a_decision(
    tmp_path: Path, flags: int | None
) -> None:
    path = write(
        tmp_path / "t.jsonl", [line(_called_agent(k, 0xCA11E4 + k, flags)) for k in (1, 2)]
    )
    built = build(path)
    r = built.reconciliation
    assert (r.decisions, r.spans_used, r.spans_quarantined) == (2, 6, 0)
    log = built.decisions.to_pandas()
    assert log.input_tokens.tolist() == [100, 100]


def test_remote_flag_is_read_into_the_span(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [line(_called_agent(1, 0xCA11E4, 0x300))])
    spans = read_spans(engine_con(), path, "otel").to_pandas()
    root = spans[spans.span_id == f"{101:016x}"].iloc[0]
    assert root.attributes["pilot._parent_remote"] == "true"
    # flags 0x100 alone: the parent is known to be local
    path = write(tmp_path / "l.jsonl", [line(_called_agent(1, 0xCA11E4, 0x100))])
    spans = read_spans(engine_con(), path, "otel").to_pandas()
    assert "pilot._parent_remote" not in spans.attributes.iloc[0]


def test_an_agent_under_an_http_server_span_is_a_decision(tmp_path: Path) -> None:
    server = span(1, 1, 0xCA11E4, name="POST /claims", flags=0x300, http__route="/claims")
    agent_spans = _called_agent(1, 1)
    nested = span(1, 150, 102, name="invoke_agent helper", start=0.12, end=0.15,
                  gen_ai__operation__name="invoke_agent")  # fmt: skip
    path = write(tmp_path / "t.jsonl", [line([server, *agent_spans, nested])])
    built = build(path)
    r = built.reconciliation
    assert (r.decisions, r.spans_used, r.spans_quarantined) == (1, 4, 0)  # nested agent included
    assert r.spans_above_decisions == 1
    assert list(r.outside_by_reason.values()) == [1]
    assert "HTTP server" in next(iter(r.outside_by_reason))
    assert "HTTP server" in r.summary()


def test_a_chat_span_whose_parent_is_lost_is_still_an_orphan(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [line([agent(1, 1), chat(1, 2, 0xDEAD)])])
    r = build(path).reconciliation
    assert r.quarantined_by_rule == {"orphan span (parent not in the trace)": 1}


def _workflow_trace(trace: int) -> list[dict[str, Any]]:
    base = trace * 100
    wf = span(
        trace,
        base,
        None,
        name="invoke_workflow claims",
        gen_ai__operation__name="invoke_workflow",
        gen_ai__workflow__name="fnol",
        pilot__case_id=f"c{trace}",
        pilot__accepted=True,
    )
    a1 = span(
        trace,
        base + 1,
        base,
        name="invoke_agent triage",
        gen_ai__operation__name="invoke_agent",
        gen_ai__agent__name="triage",
    )
    a2 = span(
        trace,
        base + 2,
        base,
        name="invoke_agent pricing",
        gen_ai__operation__name="invoke_agent",
        gen_ai__agent__name="pricing",
    )
    return [wf, a1, chat(trace, base + 3, base + 1), a2, chat(trace, base + 4, base + 2, 50, 5)]  # fmt: skip


def test_workflow_roots_agents_are_decisions_by_default(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [line(_workflow_trace(k)) for k in (1, 2)])
    built = build(path)
    r = built.reconciliation
    assert (r.decisions, r.spans_used, r.spans_above_decisions) == (4, 8, 2)
    assert "invoke_workflow" in next(iter(r.outside_by_reason))
    log = built.decisions.to_pandas().sort_values(["trace_id", "agent_id"])
    assert sorted(log.agent_id.unique()) == ["pricing", "triage"]


def test_workflow_roots_as_one_decision_when_the_pilot_file_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [line(_workflow_trace(k)) for k in (1, 2)])
    built = build(path, decision_level="workflow")
    r = built.reconciliation
    assert (r.decisions, r.spans_used, r.spans_above_decisions) == (2, 10, 0)
    log = built.decisions.to_pandas()
    assert log.input_tokens.tolist() == [150, 150]


# ---- 3. defaults from the pilot file; names on ancestors ------------------------------------


def _bare(trace: int, parent: int | None = None) -> list[dict[str, Any]]:
    """What the OpenTelemetry SDK records with no pilot.* attribute at all."""
    base = trace * 100
    return [
        span(trace, base + 1, parent, gen_ai__operation__name="invoke_agent"),
        chat(trace, base + 2, base + 1),
    ]


def test_pilot_file_defaults_fill_what_spans_lack(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [line(_bare(k)) for k in (1, 2)])
    defaults = {
        "workflow": "fnol",
        "agent_id": "claims-agent",
        "prompt_version": "v1",
        "business_unit": "motor",
    }
    log = build(path, defaults=defaults).decisions.to_pandas()
    assert log.workflow.tolist() == ["fnol", "fnol"]
    assert log.agent_id.tolist() == ["claims-agent"] * 2
    assert log.business_unit.tolist() == ["motor"] * 2
    assert log.prompt_version.tolist() == ["v1"] * 2
    # a span's own value wins over the default
    spans = [span(3, 301, None, gen_ai__operation__name="invoke_agent", pilot__workflow="other")]
    path = write(tmp_path / "u.jsonl", [line(spans)])
    assert build(path, defaults=defaults).decisions.to_pandas().workflow.tolist() == ["other"]


def test_workflow_and_agent_names_are_read_from_an_ancestor(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [line(_workflow_trace(1))])
    log = build(path).decisions.to_pandas()
    assert log.workflow.tolist() == ["fnol", "fnol"]  # gen_ai.workflow.name on the workflow span
    assert sorted(log.case_id) == ["c1", "c1"]
    server = span(5, 1, None, name="POST /claims", gen_ai__agent__name="claims-svc",
                  pilot__business_unit="motor")  # fmt: skip
    path = write(tmp_path / "u.jsonl", [line([server, *_bare(5, 1)])])
    log = build(path).decisions.to_pandas()
    assert (log.agent_id.tolist(), log.business_unit.tolist()) == (["claims-svc"], ["motor"])


def test_an_http_called_agent_without_pilot_attributes_gives_every_decision_valid(
    tmp_path: Path,
) -> None:
    """Done-when: an agent called over HTTP, no pilot.* attributes, an outcomes file."""
    import yaml
    from conftest import tiny_frames, write_pilot

    from pilot_lib.ingest.store import build_store, read_manifest

    folder = tmp_path / "p"
    frames = {k: v for k, v in tiny_frames().items() if k != "decisions"}
    write_pilot(folder, frames)
    lines = []
    for k in range(1, 31):
        server = span(k, 1, 0xCA11E4 + k, name="POST /claims", flags=0x300)
        lines.append(line([server, *_bare(k, 1)]))
    write(folder / "traces.jsonl", lines)
    pd.DataFrame(
        {
            "trace_id": [f"{k:032x}" for k in range(1, 31)],
            "case_id": [f"c{k:03d}" for k in range(1, 31)],
            "accepted": [k % 3 != 0 for k in range(1, 31)],
            "overridden": [False] * 30,
            "escalated": [False] * 30,
            "review_minutes": [2.5] * 30,
        }
    ).to_csv(folder / "outcomes.csv", index=False)
    spec = yaml.safe_load((folder / "pilot.yaml").read_text())
    spec["datasets"] = {
        **spec["datasets"],
        "decisions": {"path": "traces.jsonl", "format": "otel"},
        "outcomes": {"path": "outcomes.csv"},
    }
    spec["traces"] = {
        "prices": PRICES,
        "workflow": "fnol_triage",
        "agent_id": "claims-agent",
        "prompt_version": "v1",
    }
    (folder / "pilot.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    build_store(folder / "pilot.yaml", tmp_path / "store")
    manifest = read_manifest(tmp_path / "store")
    recon = manifest["datasets"]["decisions"]["traces"]["reconciliation"]
    assert recon["decisions"] == 30 and recon["spans_quarantined"] == 0
    assert recon["spans_above_decisions"] == 30
    counts = manifest["datasets"]["decisions"]
    assert counts.get("quarantined", 0) in (0, None), counts


# ---- 4. hostile values are quarantined, never priced -----------------------------------------


@pytest.mark.parametrize(
    ("tokens", "rule"),
    [
        (-500, "implausible token count"),
        ("12.5", "implausible token count"),
        (10**15, "implausible token count"),
        ({"intValue": "18446744073709551615"}, "implausible token count"),
    ],
    ids=["negative", "fraction", "1e15", "uint64"],
)
def test_hostile_token_counts_quarantine_the_span(tmp_path: Path, tokens: Any, rule: str) -> None:
    spans = [agent(1, 1), chat(1, 2, 1, tokens_in=tokens), chat(1, 3, 1)]
    path = write(tmp_path / "t.jsonl", [line([agent(2, 1), chat(2, 2, 1)]), line(spans)])
    built = build(path)
    q = built.quarantine.to_pandas()
    hostile = q[q._quarantine_rule == rule]
    assert hostile[["span_id", "source_row"]].values.tolist() == [[f"{2:016x}", 2]]
    # the whole decision goes: never priced or counted in part
    assert built.reconciliation.quarantined_by_rule == {
        rule: 1,
        "decision with an implausible value": 2,
    }
    log = built.decisions.to_pandas()
    assert log.trace_id.tolist() == [f"{2:032x}"] and log.input_tokens.tolist() == [100]


@pytest.mark.parametrize(
    "cost", [-1.0, 5e9, "NaN", "cheap"], ids=["negative", "huge", "nan", "text"]
)
def test_hostile_costs_quarantine_the_span(tmp_path: Path, cost: Any) -> None:
    spans = [agent(1, 1), chat(1, 2, 1, pilot__model_cost_usd=cost)]
    built = build(write(tmp_path / "t.jsonl", [line(spans)]))
    assert built.reconciliation.quarantined_by_rule == {
        "implausible cost": 1,
        "decision with an implausible value": 1,
    }
    assert built.reconciliation.decisions == 0


def test_a_decision_whose_total_is_implausible_is_quarantined_whole(tmp_path: Path) -> None:
    spans = [agent(1, 1), *[chat(1, 10 + k, 1, tokens_in=6_000_000) for k in range(2)]]
    path = write(tmp_path / "t.jsonl", [line(spans), line([agent(2, 1), chat(2, 2, 1)])])
    built = build(path)
    r = built.reconciliation
    assert r.decisions == 1 and r.quarantined_by_rule == {"decision with an implausible value": 3}
    assert any("quarantined whole" in n for n in built.notes)
    # a bound from the pilot file
    assert build(path, max_tokens=20_000_000).reconciliation.decisions == 2


def test_all_zero_and_malformed_ids_are_quarantined(tmp_path: Path) -> None:
    zero = agent(1, 1)
    zero["traceId"] = "0" * 32
    bad = agent(3, 1)
    bad["traceId"] = "not-a-trace-id"
    zero_span = agent(4, 1)
    zero_span["spanId"] = "0" * 16
    path = write(tmp_path / "t.jsonl", [line([zero, bad, zero_span, agent(2, 1)])])
    r = build(path).reconciliation
    assert r.quarantined_by_rule == {"span without trace_id": 2, "span without span_id": 1}
    assert r.decisions == 1


def test_a_span_in_1970_is_outside_the_window(tmp_path: Path) -> None:
    tool = span(1, 3, 1, name="execute_tool lookup", gen_ai__operation__name="execute_tool")
    tool["startTimeUnixNano"] = "0"
    path = write(tmp_path / "t.jsonl", [line([agent(1, 1), tool])])
    window = (dt.datetime(2026, 1, 1), dt.datetime(2026, 6, 1))
    built = build(path, window=window)
    assert built.reconciliation.quarantined_by_rule == {"span time outside the pilot window": 1}
    assert built.tool_calls.count().execute() == 0


def test_a_uint64_feature_is_a_float_not_a_null(tmp_path: Path) -> None:
    spans = [
        agent(1, 1, claim_amount={"intValue": "18446744073709551615"}),
        agent(2, 1, claim_amount=5),
    ]
    log = build(write(tmp_path / "t.jsonl", [line(spans)]), features=["claim_amount"]).decisions
    values = sorted(log.to_pandas().claim_amount.tolist())
    assert values == [5.0, 18446744073709551615.0]


# ---- 5. real export shapes --------------------------------------------------------------------


def _phoenix_nested_frame(n: int) -> pd.DataFrame:
    """The shape Phoenix's client returns: one struct column per attribute prefix."""
    rows = []
    for k in range(1, n + 1):
        ts = pd.Timestamp(T0, tz="UTC") + pd.Timedelta(minutes=k)
        common = {"context.trace_id": f"{k:032x}", "start_time": ts, "end_time": ts + pd.Timedelta(seconds=30),
                  "status_code": "OK"}  # fmt: skip
        rows.append(
            {
                **common,
                "name": "agent",
                "span_kind": "AGENT",
                "parent_id": None,
                "context.span_id": f"{k * 10:016x}",
                "attributes.openinference": {"span": {"kind": "AGENT"}},
                "attributes.pilot": {
                    "case_id": f"c{k}",
                    "workflow": "fnol",
                    "accepted": True,
                    "review": {"minutes": 2.0},
                },
                "attributes.llm": None,
            }
        )
        rows.append({
            **common, "name": "llm", "span_kind": "LLM", "parent_id": f"{k * 10:016x}",
            "context.span_id": f"{k * 10 + 1:016x}",
            "attributes.openinference": {"span": {"kind": "LLM"}},
            "attributes.pilot": None,
            "attributes.llm": {"model_name": "gpt-test", "token_count": {"prompt": 100, "completion": 10}},
        })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_phoenix_struct_attribute_columns_at_any_depth(tmp_path: Path, suffix: str) -> None:
    frame = _phoenix_nested_frame(3)
    path = tmp_path / f"spans.{suffix}"
    if suffix == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso", date_unit="us")
    built = build(path, "openinference")
    log = built.decisions.to_pandas().sort_values("case_id")
    assert log.case_id.tolist() == ["c1", "c2", "c3"]
    assert set(log.workflow) == {"fnol"} and set(log.accepted) == {"true"}
    assert log.input_tokens.tolist() == [100] * 3
    spans = read_spans(engine_con(), path, "openinference").to_pandas()
    agent_attrs = spans[spans.operation == "invoke_agent"].attributes.iloc[0]
    assert agent_attrs["pilot.review.minutes"] == "2.0"


def test_an_export_of_exactly_1000_rows_warns(tmp_path: Path) -> None:
    frame = _phoenix_nested_frame(500)
    frame.to_parquet(tmp_path / "spans.parquet", index=False)
    built = build(tmp_path / "spans.parquet", "openinference")
    assert any("exactly 1,000 rows" in n for n in built.notes)


def test_pydantic_ai_json_metadata_and_operation_cost(tmp_path: Path) -> None:
    meta = json.dumps(
        {"pilot.case_id": "c9", "pilot": {"workflow": "fnol"}, "pilot.accepted": True}
    )
    root = span(1, 1, None, name="agent run", gen_ai__operation__name="invoke_agent", metadata=meta,
                gen_ai__agent__name="claims")  # fmt: skip
    paid = chat(1, 2, 1, gen_ai__request__model="unpriced-model", operation__cost=0.0042)
    built = build(write(tmp_path / "t.jsonl", [line([root, paid])]))
    row = built.decisions.to_pandas().iloc[0]
    assert (row.case_id, row.workflow, row.accepted) == ("c9", "fnol", "true")
    assert row.model_cost_usd == pytest.approx(0.0042)


def test_langfuse_cost_details_and_openinference_cost_parts_are_stated_costs(
    tmp_path: Path,
) -> None:
    lf = chat(
        1,
        2,
        1,
        gen_ai__request__model="x",
        langfuse__observation__cost_details=json.dumps(
            {"input": 0.001, "output": 0.002, "total": 0.003}
        ),
    )
    oi = chat(
        2, 2, 1, gen_ai__request__model="x", llm__cost__prompt=0.01, llm__cost__completion=0.02
    )
    built = build(write(tmp_path / "t.jsonl", [line([agent(1, 1), lf]), line([agent(2, 1), oi])]))
    costs = built.decisions.to_pandas().sort_values("trace_id").model_cost_usd.tolist()
    assert costs == pytest.approx([0.003, 0.03])  # fmt: skip


def test_cache_tokens_are_priced_by_their_own_price_lines(tmp_path: Path) -> None:
    prices = {"gpt-test": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0,
                           "cache_read_per_million_usd": 0.5, "cache_creation_per_million_usd": 2.5}}  # fmt: skip
    c = chat(1, 2, 1, 1_000, 100, gen_ai__usage__cache_read__input_tokens=600,
             gen_ai__usage__cache_creation__input_tokens=100, gen_ai__usage__reasoning__output_tokens=40,
             gen_ai__provider__name="openai")  # fmt: skip
    built = build(write(tmp_path / "t.jsonl", [line([agent(1, 1), c])]), prices=prices)
    want = (300 * 2.0 + 600 * 0.5 + 100 * 2.5 + 100 * 8.0) / 1e6
    assert built.decisions.to_pandas().model_cost_usd.iloc[0] == pytest.approx(want, rel=1e-12)


def test_a_cancelled_tool_is_cancelled_not_failed(tmp_path: Path) -> None:
    event = {"timeUnixNano": _ns(0.35), "name": "exception",
             "attributes": attrs({"exception.type": "asyncio.exceptions.CancelledError"})}  # fmt: skip
    cancelled = span(1, 3, 1, name="execute_tool b", start=0.3, end=0.4, status=2,
                     events=[event], gen_ai__operation__name="execute_tool", gen_ai__tool__name="b")  # fmt: skip
    failed = span(1, 4, 1, name="execute_tool a", start=0.3, end=0.4, status=2,
                  gen_ai__operation__name="execute_tool", gen_ai__tool__name="a")  # fmt: skip
    built = build(write(tmp_path / "t.jsonl", [line([agent(1, 1), cancelled, failed])]))
    calls = built.tool_calls.to_pandas().set_index("tool")
    assert calls.loc["b", "status"] == "cancelled" and calls.loc["a", "status"] == "error_5xx"


# ---- 6. OTLP log records: evaluation results and outcomes -------------------------------------


def log_line(records: list[dict[str, Any]]) -> str:
    doc = {"resourceLogs": [{"resource": {"attributes": attrs({"service.name": "evals"})},
                             "scopeLogs": [{"scope": {"name": "evals"}, "logRecords": records}]}]}  # fmt: skip
    return json.dumps(doc)


def _record(
    trace: int, sid: int, event: str, values: dict[str, Any], by_attribute: bool = False
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "timeUnixNano": _ns(2),
        "traceId": f"{trace:032x}",
        "spanId": f"{sid:016x}",
    }
    if by_attribute:
        values = {"event.name": event, **values}
    else:
        rec["eventName"] = event
    rec["attributes"] = attrs(values)
    return rec


def test_evaluation_results_and_outcomes_as_log_records_in_the_same_glob(tmp_path: Path) -> None:
    spans = [span(k, 1, None, gen_ai__operation__name="invoke_agent", pilot__workflow="fnol",
                  pilot__case_id=f"c{k}") for k in (1, 2)]  # fmt: skip
    write(tmp_path / "spans.jsonl", [line(spans)])
    write(tmp_path / "logs.jsonl", [
        log_line([_record(1, 1, "gen_ai.evaluation.result",
                          {"gen_ai.evaluation.name": "accepted", "gen_ai.evaluation.score.value": 1.0})]),
        log_line([_record(2, 1, "pilot.outcome", {"pilot.accepted": False, "pilot.overridden": True},
                          by_attribute=True)]),
    ])  # fmt: skip
    built = build(str(tmp_path / "*.jsonl"))
    log = built.decisions.to_pandas().sort_values("trace_id")
    assert log.accepted.tolist() == ["1", "false"]
    assert log.overridden.tolist()[1] == "true"
    assert built.reconciliation.spans_read == 2  # log records are not spans


# ---- 7. damaged files are never silent --------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_truncated_compressed_file_in_a_glob_is_an_error(
    tmp_path: Path, compression: str
) -> None:
    import pyarrow as pa

    suffix = {"zstd": ".zst", "gzip": ".gz"}[compression]
    write(tmp_path / "a.jsonl", [line([agent(1, 1)])])
    target = tmp_path / f"b.jsonl{suffix}"
    with pa.output_stream(str(target), compression=compression) as out:
        out.write("".join(line([agent(k, 1)]) + "\n" for k in range(2, 40)).encode())
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) - 7])
    with pytest.raises(DataSourceError, match=rf"b\.jsonl{re.escape(suffix)} is damaged"):
        read_spans(engine_con(), str(tmp_path / "*"), "otel")


def test_line_numbers_are_physical_lines(tmp_path: Path) -> None:
    bad = agent(3, 1)
    bad["spanId"] = "0" * 16
    path = tmp_path / "t.jsonl"
    body = (
        "\ufeff"
        + line([agent(1, 1)])
        + "\r\n\r\n"
        + line([agent(2, 1)])
        + "\r\n   \r\n\r\n"
        + line([bad])
        + "\r\n"
    )
    path.write_text(body, encoding="utf-8", newline="")
    built = build(path)
    q = built.quarantine.to_pandas()
    assert q.source_row.tolist() == [6]
    files = built.reconciliation.files
    assert files == () or files[0]["lines"] == 6
    from pilot_lib.ingest.traces import scan_files

    scan = scan_files([path])[0]
    assert (scan.lines, scan.blank_lines, scan.bytes_read) == (6, (2, 4, 5), path.stat().st_size)


@pytest.mark.parametrize(
    ("tail", "line_no"),
    [(b'{"resourceSpans": [\n', 4), (b'{"resourceSpans": "\xff"}\n' + b"{}\n", 4)],
    ids=["truncated-last-line", "invalid-utf8"],
)
def test_a_bad_line_is_named_by_its_physical_number(
    tmp_path: Path, tail: bytes, line_no: int
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes((line([agent(1, 1)]) + "\n\n" + line([agent(2, 1)]) + "\n").encode() + tail)
    with pytest.raises(DataSourceError, match=rf"line {line_no} of .*t\.jsonl"):
        read_spans(engine_con(), path, "otel")

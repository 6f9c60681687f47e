"""Traces recorded in the test by pydantic-ai itself (instrumentation on, OTLP file exporter).

A ``FunctionModel`` stands in for the provider (no network): two model requests with
stated usage and one tool call, under pydantic-ai's own GenAI instrumentation. The
run's ``metadata=`` arrives as one JSON text attribute ``metadata`` on the agent
span; the decision log must read the ``pilot.*`` signals from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trace_expectations import engine_con

pydantic_ai = pytest.importorskip("pydantic_ai", reason="pydantic-ai-slim is not installed")

from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402

from pilot_lib.ingest.traces import read_spans, spans_to_decisions  # noqa: E402

PRICES = {"fn-model": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0}}


def record(path: Path, runs: int = 3) -> Path:
    from pydantic_ai import Agent, InstrumentationSettings
    from pydantic_ai.capabilities import Instrumentation
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import RequestUsage

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))

    def model(messages: list[Any], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:  # the first request: call the tool
            return ModelResponse(
                parts=[ToolCallPart("lookup", {"q": "policy"})],
                usage=RequestUsage(input_tokens=120, output_tokens=30),
            )
        return ModelResponse(
            parts=[TextPart("approve")], usage=RequestUsage(input_tokens=200, output_tokens=10)
        )

    agent = Agent(
        FunctionModel(model, model_name="fn-model"),
        name="claims",
        capabilities=[Instrumentation(settings=InstrumentationSettings(tracer_provider=provider))],
    )

    @agent.tool_plain
    def lookup(q: str) -> str:
        return "found"

    for k in range(runs):
        agent.run_sync(
            "triage this claim",
            metadata={"pilot.case_id": f"c{k}", "pilot.workflow": "fnol", "pilot.accepted": True},
        )
    provider.shutdown()
    return path


def test_pydantic_ai_run_gives_its_decisions(tmp_path: Path) -> None:
    path = record(tmp_path / "pydantic-ai.jsonl")
    spans = read_spans(engine_con(), path, "otel")
    built = spans_to_decisions(spans, prices=PRICES)
    r = built.reconciliation
    assert r.spans_read == r.spans_used + r.spans_quarantined + r.spans_outside_decisions
    assert (r.decisions, r.spans_quarantined, r.spans_outside_decisions) == (3, 0, 0)
    log = built.decisions.to_pandas().sort_values("case_id")
    assert log.case_id.tolist() == ["c0", "c1", "c2"]
    assert set(log.workflow) == {"fnol"} and set(log.agent_id) == {"claims"}
    # the chat spans' tokens, not the agent span's aggregated copy
    assert log.input_tokens.tolist() == [320] * 3 and log.output_tokens.tolist() == [40] * 3
    assert log.model_cost_usd.tolist() == pytest.approx([(320 * 2 + 40 * 8) / 1e6] * 3)
    calls = built.tool_calls.to_pandas()
    assert calls.tool.tolist() == ["lookup"] * 3 and set(calls.status) == {"ok"}

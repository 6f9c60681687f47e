"""Traces recorded in the test by the OpenAI Agents SDK with OpenInference's instrumentor.

A loopback HTTP server stands in for the model (OpenAI chat completions: a tool call
with usage, then an answer); the SDK's own trace export is switched off and
``openinference-instrumentation-openai-agents`` writes OTLP JSON Lines through the
OpenTelemetry SDK's file exporter. The SDK and the instrumentor are not in the ``dev``
extra (they bring the OpenAI client, MCP, Starlette, uvicorn and cryptography): the
test skips with its reason when they are absent
(``pip install openai-agents openinference-instrumentation-openai-agents``).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from trace_expectations import engine_con

pytest.importorskip("agents", reason="the OpenAI Agents SDK (openai-agents) is not installed")
pytest.importorskip(
    "openinference.instrumentation.openai_agents",
    reason="openinference-instrumentation-openai-agents is not installed",
)

from pilot_lib.ingest.traces import read_spans, spans_to_decisions

PRICES = {"gpt-test": {"input_per_million_usd": 2.0, "output_per_million_usd": 8.0}}


class _FakeModel(BaseHTTPRequestHandler):
    """Chat completions: a tool call first, the answer once the tool's result is sent."""

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        answered = any(m.get("role") == "tool" for m in body.get("messages", []))
        if answered:
            message: dict[str, Any] = {"role": "assistant", "content": "approve"}
            usage = {"prompt_tokens": 200, "completion_tokens": 10, "total_tokens": 210}
        else:
            call = {"name": "lookup", "arguments": '{"q": "policy"}'}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
            usage = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
        reply = {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "stop" if answered else "tool_calls",
                }
            ],
            "usage": usage,
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def record(path: Path, runs: int = 2) -> Path:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_trace_processors,
    )
    from openai import AsyncOpenAI
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
    from opentelemetry.exporter.otlp.json.file.trace_exporter import FileSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    server = HTTPServer(("127.0.0.1", 0), _FakeModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    set_trace_processors([])  # nothing goes to OpenAI's trace endpoint
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(path)))
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="test"
        )

        @function_tool
        def lookup(q: str) -> str:
            """Look the policy up."""
            return "found"

        agent = Agent(
            name="claims",
            instructions="triage the claim",
            tools=[lookup],
            model=OpenAIChatCompletionsModel(model="gpt-test", openai_client=client),
        )
        for _ in range(runs):
            Runner.run_sync(agent, "triage this claim")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        server.shutdown()
    return path


def test_openai_agents_sdk_run_gives_its_decisions(tmp_path: Path) -> None:
    path = record(tmp_path / "agents.jsonl")
    built = spans_to_decisions(read_spans(engine_con(), path, "otel"), prices=PRICES)
    r = built.reconciliation
    assert r.spans_read == r.spans_used + r.spans_quarantined + r.spans_outside_decisions
    assert (r.decisions, r.spans_quarantined) == (2, 0)
    log = built.decisions.to_pandas()
    assert log.input_tokens.tolist() == [320, 320] and log.output_tokens.tolist() == [40, 40]
    assert log.model_cost_usd.tolist() == pytest.approx([(320 * 2 + 40 * 8) / 1e6] * 2)
    calls = built.tool_calls.to_pandas()
    assert calls.tool.tolist() == ["lookup", "lookup"] and set(calls.status) == {"ok"}

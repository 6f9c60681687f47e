"""The decision log expected from scripted agent calls, and its column-by-column check.

Shared by the trace-reader tests (OpenInference, Langfuse): each records the same
kind of scripted calls with its SDK, then compares the decision log the workbook
builds with :func:`expected_log`, built by hand from the same calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from opentelemetry.sdk.trace.id_generator import IdGenerator


def engine_con(**settings: Any) -> Any:
    """The DuckDB connection a pilot file configures (``engine:`` defaults unless given).

    The trace readers are tested under the engine's memory limit (default 512MB),
    never on a bare ``ibis.duckdb.connect()`` without one: a reader asking DuckDB
    for more than the limit must fail here as it would in a run.
    """
    from pilot_lib.config import EngineSettings
    from pilot_lib.ingest.engine import connect_engine

    return connect_engine(EngineSettings(**settings))


class CountingIds(IdGenerator):
    """Deterministic ids for recorded spans: trace k is ``trace_base + k``, span k ``span_base + k``."""

    def __init__(self, trace_base: int, span_base: int) -> None:
        self.trace_base, self.span_base = trace_base, span_base
        self.trace = 0
        self.span = 0

    def generate_trace_id(self) -> int:
        self.trace += 1
        return self.trace_base + self.trace

    def generate_span_id(self) -> int:
        self.span += 1
        return self.span_base + self.span


_FLOATS = ("model_cost_usd", "tool_cost_usd", "confidence", "review_minutes", "claim_amount")
_BOOLS = ("completed", "accepted", "overridden", "escalated", "correct")


def expected_log(
    calls: Sequence[Any],
    *,
    prices: Mapping[str, Mapping[str, float]],
    trace_base: int,
    t0: dt.datetime,
    prompt_version: str,
) -> pd.DataFrame:
    """The decision log built by hand from scripted ``calls`` (contract types).

    Call ``k`` (from 1) has trace id ``trace_base + k``; a chat is
    ``(model, input tokens, output tokens, stated cost or None)``, priced from
    ``prices`` (USD per million tokens) when it states no cost; a call that escalated
    with no reason after a failed tool has reason ``tool_failure``.
    """
    rows = []
    for k, c in enumerate(calls, start=1):
        cost = sum(
            stated
            if stated is not None
            else (
                n_in * prices[m]["input_per_million_usd"]
                + n_out * prices[m]["output_per_million_usd"]
            )
            / 1e6
            for m, n_in, n_out, stated in c.chats
        )
        reason = c.reason or ("tool_failure" if c.escalated and c.tool_fails else None)
        rows.append(
            {
                "decision_id": c.decision_id,
                "timestamp": t0 + dt.timedelta(minutes=c.minute),
                "trace_id": f"{trace_base + k:032x}",
                "agent_id": "claims-agent",
                "workflow": "fnol_triage",
                "case_id": c.case_id,
                "prompt_version": prompt_version,
                "user_id": c.user_id,
                "completed": not c.agent_error,
                "accepted": c.accepted,
                "overridden": c.overridden,
                "escalated": c.escalated,
                "escalation_reason": reason,
                "confidence": c.confidence,
                "correct": c.correct,
                "input_tokens": sum(ch[1] for ch in c.chats),
                "output_tokens": sum(ch[2] for ch in c.chats),
                "model_cost_usd": cost,
                "tool_cost_usd": c.tool_cost or 0.0,
                "review_minutes": c.review_minutes,
                # the model that did most of the work (most tokens); none without a chat
                "model": max(c.chats, key=lambda ch: ch[1] + ch[2])[0] if c.chats else None,
                "claim_amount": c.features["claim_amount"],
                "channel": c.features["channel"],
            }
        )
    return pd.DataFrame(rows)


def assert_log_equal(got: pd.DataFrame, want: pd.DataFrame, *, typed: bool = True) -> None:
    """Every column of the decision log, one by one (floats to 1e-12 relative).

    ``typed=False``: the boolean signals of ``got`` are still the builder's text
    (``true``/``false``/``1``/``0``), compared as the contract reads them.
    """
    got = got.sort_values("decision_id").reset_index(drop=True)
    for column in want.columns:
        g, w = got[column], want[column]
        if column in _FLOATS:
            pd.testing.assert_series_equal(
                pd.to_numeric(g).astype("float64"),
                w.astype("float64"),
                check_names=False,
                rtol=1e-12,
            )
        elif column in ("input_tokens", "output_tokens"):
            assert pd.to_numeric(g).astype("int64").tolist() == w.tolist(), column
        elif column in _BOOLS and not typed:
            truth = {"true": True, "false": False, "1": True, "0": False}
            assert [None if pd.isna(v) else truth[str(v).lower()] for v in g] == [
                None if pd.isna(v) else bool(v) for v in w
            ], column
        else:
            assert (
                g.astype(object).where(g.notna(), None).tolist()
                == w.astype(object).where(w.notna(), None).tolist()
            ), column

"""Unit tests for the notebook glue: pilot lookup, escaping, tables, views, widgets, provenance.

``pilot_lib.report.notebook`` computes no statistic; what it must get right is what a
reader sees: the pilot found from wherever the kernel starts, data shown as text
(never as markup, math or script), missing values shown as "no data" (never
``nan``), stable HTML for nbval, and the go/no-go phase saying where each figure
came from. Markdown output is checked by rendering it with mistune, the renderer
nbconvert uses, and comparing the visible text with the input.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PILOT_DOC, write_pilot

from pilot_lib.analysis.calibration import CalibrationResult
from pilot_lib.analysis.findings import Finding
from pilot_lib.analysis.gate import GateDecision
from pilot_lib.config import PilotFileError, load_pilot
from pilot_lib.errors import WorkbookError
from pilot_lib.phases import (
    UseCaseReview,
    drift_phase,
    gather_results,
    incident_phase,
    kpi_phase,
    use_case_phase,
)
from pilot_lib.report import notebook as nb
from pilot_lib.results import write_phase_result

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "pilots"
EARLIER_PHASES = ("use_case_scoring", "kpi_baselining", "drift_analysis", "incident_drill_review")
LEAKED_MISSING = re.compile(r"\bnan\b|\bNaN\b|\bNaT\b|<NA>|\bNone\b")
NASTY = "<script>alert('x')</script>"


# ---------------------------------------------------------------------------
# find_pilot
# ---------------------------------------------------------------------------


def test_find_pilot_relative_to_the_working_directory(
    tiny_pilot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_pilot.parent)
    expected = (tiny_pilot / "pilot.yaml").resolve()
    assert nb.find_pilot(tiny_pilot.name) == expected
    assert nb.find_pilot(f"{tiny_pilot.name}/pilot.yaml") == expected
    assert nb.find_pilot(Path(tiny_pilot.name)) == expected


def test_find_pilot_relative_to_notebooks_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing called ../data here
    assert not (tmp_path.parent / "data" / "pilots" / "claims-auto").exists()
    found = nb.find_pilot("../data/pilots/claims-auto")
    assert found == (SAMPLES / "claims-auto" / "pilot.yaml").resolve()


def test_find_pilot_relative_to_the_repo_root_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    found = nb.find_pilot("data/pilots/it-ticket-routing")
    assert found == (SAMPLES / "it-ticket-routing" / "pilot.yaml").resolve()
    monkeypatch.chdir(REPO / "notebooks")  # the README's command, from notebooks/
    assert nb.find_pilot("data/pilots/it-ticket-routing") == found


def test_find_pilot_absolute_path_and_home(
    tiny_pilot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    expected = (tiny_pilot / "pilot.yaml").resolve()
    assert nb.find_pilot(str(tiny_pilot)) == expected
    assert nb.find_pilot(tiny_pilot / "pilot.yaml") == expected
    monkeypatch.setenv("HOME", str(tiny_pilot.parent))
    assert nb.find_pilot(f"~/{tiny_pilot.name}") == expected


def test_find_pilot_prefers_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local folder that shadows a sample pilot's relative path wins over the checkout's.
    local = write_pilot(tmp_path / "data" / "pilots" / "claims-auto")
    monkeypatch.chdir(tmp_path)
    assert nb.find_pilot("data/pilots/claims-auto") == (local / "pilot.yaml").resolve()


def test_find_pilot_names_every_path_it_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PilotFileError) as info:
        nb.find_pilot("data/pilots/no-such-pilot")
    message = str(info.value)
    assert isinstance(info.value, WorkbookError)  # the CLI prints it without a traceback
    assert "no pilot.yaml found" in message
    assert "data/pilots/no-such-pilot" in message
    for tried in (
        tmp_path / "data" / "pilots" / "no-such-pilot",
        REPO / "notebooks" / "data" / "pilots" / "no-such-pilot",
        REPO / "data" / "pilots" / "no-such-pilot",
    ):
        assert str(tried) in message


def test_find_pilot_folder_without_pilot_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty-folder").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PilotFileError, match="empty-folder"):
        nb.find_pilot("empty-folder")


def test_find_pilot_outside_a_checkout_tries_only_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nb, "repo_root", lambda: None)  # an installed, non-editable package
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PilotFileError) as info:
        nb.find_pilot("data/pilots/claims-auto")
    assert str(REPO) not in str(info.value)
    assert str(tmp_path / "data" / "pilots" / "claims-auto") in str(info.value)


# ---------------------------------------------------------------------------
# escape, escape_md, md
# ---------------------------------------------------------------------------


def visible_text(markdown: str) -> str:
    """What a reader sees: Markdown rendered by mistune (nbconvert's renderer), tags
    removed, entities decoded."""
    import mistune

    rendered = mistune.html(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


def test_escape_turns_markup_into_text() -> None:
    out = nb.escape(NASTY + ' "quoted" & more')
    assert "<" not in out and ">" not in out and '"' not in out
    assert html.unescape(out) == NASTY + ' "quoted" & more'


@pytest.mark.parametrize(
    "text",
    [
        "low_confidence and tool_failure",
        "$10,000 claims, $2.50 per decision",
        NASTY,
        'Dana\'s "quoted" team & co',
        "a*b*c and **not bold**",
        "`not code` and [not a link](http://example.com)",
        "# not a heading",
        "x | y ~~not struck~~ {braces} back\\slash",
        "&copy; stays as typed",
    ],
)
def test_escape_md_shows_data_exactly_as_written(text: str) -> None:
    escaped = nb.escape_md(text)
    assert visible_text(escaped) == text
    assert "<script" not in mistune_html(escaped)
    assert re.search(r"(?<!\\)\$", escaped) is None, "a bare $ starts math in Jupyter"


def mistune_html(markdown: str) -> str:
    import mistune

    return mistune.html(markdown)


def test_escape_md_escapes_underscores_and_dollars() -> None:
    assert nb.escape_md("low_confidence") == "low\\_confidence"
    assert nb.escape_md("$5") == "\\$5"


def test_md_escapes_values_but_not_the_template() -> None:
    out = nb.md("**Top pick:** {name} at {cost}", name=NASTY, cost="2.50").data
    assert out.startswith("**Top pick:** ")
    assert "<script" not in out
    assert visible_text(out) == f"Top pick: {NASTY} at 2.50"
    # with a dollar sign: HTML MathJax skips (JupyterLab 4 typesets \\$ in Markdown)
    dollars = nb.md("**Top pick:** {name} at {cost}", name=NASTY, cost="$2.50").data
    assert dollars.startswith('<div class="tex2jax_ignore mathjax_ignore"><p><strong>Top pick:')
    assert "<script" not in dollars
    assert visible_text(dollars) == f"Top pick: {NASTY} at $2.50"


def test_md_keeps_number_formats_for_python_and_numpy_numbers() -> None:
    out = nb.md(
        "{a:,} {b:.1%} {c:.2f} {d}", a=np.int64(12345), b=np.float64(0.523), c=2.5, d=7
    ).data
    assert out == "12,345 52.3% 2.50 7"


@pytest.mark.parametrize("missing", [float("nan"), np.nan, None, math.inf, -np.inf])
def test_md_shows_missing_numbers_as_no_data_under_any_format(missing: Any) -> None:
    out = nb.md("rate {x:.1%}, count {x:,}, plain {x}", x=missing).data
    assert out == "rate no data, count no data, plain no data"


# ---------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "reason": ["low_confidence", NASTY, "tool_failure"],
        "share": [0.523, float("nan"), None],
        "amount": ["$10,000", "$2.50", pd.NA],
        "when": pd.to_datetime(["2026-03-02", None, "2026-03-04"]),
    }
)


def test_table_html_is_identical_across_calls_and_processes() -> None:
    first = nb.table(FRAME, "Escalations by reason").data
    assert nb.table(FRAME.copy(), "Escalations by reason").data == first
    # A fresh interpreter gives the same bytes: no random uuid, no memory address.
    code = (
        "import pandas as pd, sys, json\n"
        "from pilot_lib.report import notebook as nb\n"
        "frame = pd.read_json(sys.stdin, orient='split')\n"
        "frame['when'] = pd.to_datetime(frame['when'])\n"
        "frame['amount'] = frame['amount'].astype(object).where(frame['amount'].notna(), pd.NA)\n"
        "sys.stdout.write(nb.table(frame, 'Escalations by reason').data)\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code],
        input=FRAME.to_json(orient="split", date_format="iso"),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert fresh == first


def test_table_ids_derive_from_caption_and_columns() -> None:
    a = nb.table(FRAME, "Escalations by reason").data
    ids = set(re.findall(r'id="(T_[^"_]+)', a))
    assert len(ids) == 1
    b = nb.table(FRAME, "Another caption").data
    assert set(re.findall(r'id="(T_[^"_]+)', b)).isdisjoint(ids)


def test_table_shows_missing_values_as_no_data_and_data_as_text() -> None:
    out = nb.table(FRAME, f"Caption {NASTY}").data
    assert LEAKED_MISSING.search(out) is None
    assert out.count("no data") == 4  # NaN share, None share, NA amount, NaT date
    assert "<script" not in out
    assert "&lt;script&gt;" in out
    assert out.startswith('<div class="tex2jax_ignore mathjax_ignore"')  # $ is not math
    assert "overflow-x:auto" in out.split(">", 1)[0]  # a wide table scrolls, not overflows


def test_table_escapes_column_headers() -> None:
    out = nb.table(pd.DataFrame({NASTY: [1]}), None).data
    assert "<script" not in out


def test_table_formats_and_status_colours() -> None:
    frame = pd.DataFrame({"kpi": ["a", "b", "c"], "status": ["PASS", "FAIL", "other"]})
    out = nb.status_table(frame, "Verdicts").data
    assert nb.STATUS_COLOURS["PASS"].split(";")[0] in out
    assert nb.STATUS_COLOURS["FAIL"].split(";")[0] in out
    formatted = nb.table(pd.DataFrame({"rate": [0.523]}), None, formats={"rate": "{:.1%}"}).data
    assert ">52.3%<" in formatted


# ---------------------------------------------------------------------------
# Views on empty and missing inputs
# ---------------------------------------------------------------------------


def assert_shows_cleanly(frame: pd.DataFrame) -> str:
    assert isinstance(frame, pd.DataFrame)
    assert len(frame.columns) > 0, "an empty view still has its headers"
    out = nb.table(frame, "view").data
    assert LEAKED_MISSING.search(out) is None, out
    return out


def empty_frame(*columns: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})


def calibration(n_used: int, n_conf: int, n_out: int) -> CalibrationResult:
    return CalibrationResult(
        ece=float("nan"),
        max_gap=float("nan"),
        n_used=n_used,
        n_excluded=n_conf + n_out,
        n_missing_confidence=n_conf,
        n_missing_outcome=n_out,
        bins=15,
        strategy="uniform",
        ece_if_calibrated_95=float("nan"),
        table=pd.DataFrame(
            {
                "bin": ["[0.0, 0.5)", "[0.5, 1.0]"],
                "lower": [0.0, 0.5],
                "upper": [0.5, 1.0],
                "count": [0, 0],
                "mean_confidence": [float("nan")] * 2,
                "accuracy": [float("nan")] * 2,
                "gap": [float("nan")] * 2,
            }
        ),
    )


EMPTY_VIEWS = {
    "ranking, no candidates data set": lambda: nb.ranking_view(None),
    "ranking, no rows": lambda: nb.ranking_view(pd.DataFrame()),
    "escalations": lambda: nb.escalation_view(
        empty_frame(
            "reason",
            "escalations",
            "share_of_escalations",
            "rate_per_decision",
            "rate_low",
            "rate_high",
        )
    ),
    "cost": lambda: nb.cost_view(
        pd.DataFrame(
            {
                "component": pd.Series(dtype=str),
                "per_decision_usd": pd.Series(dtype=float),
                "share_of_cost": pd.Series(dtype=float),
                "total_usd": pd.Series(dtype=float),
            }
        )
    ),
    "episodes": lambda: nb.episodes_view(None),
    "drift": lambda: nb.drift_view(
        SimpleNamespace(
            features=pd.DataFrame(
                {
                    "feature": pd.Series(dtype=str),
                    "kind": pd.Series(dtype=str),
                    "psi": pd.Series(dtype=float),
                    "kl": pd.Series(dtype=float),
                    "band": pd.Series(dtype=str),
                    "unseen_share": pd.Series(dtype=float),
                    "n_reference": pd.Series(dtype=float),
                    "n_current": pd.Series(dtype=float),
                }
            ),
            key_features=None,
        )
    ),
    "calibration": lambda: nb.calibration_view({}),
    "prompt versions": lambda: nb.prompt_view(
        empty_frame(
            "prompt_version",
            "first_seen",
            "decisions",
            "escalation_rate",
            "escalation_low",
            "escalation_high",
            "override_rate",
            "override_low",
            "override_high",
        )
    ),
    "drill checks": lambda: nb.drill_checks_view(None),
    "drill actions": lambda: nb.actions_view(None),
    "approval summary": lambda: nb.approval_summary_view(None),
    "latency": lambda: nb.latency_view(None),
    "violations": lambda: nb.violations_view(None),
    "timeouts": lambda: nb.timeouts_view(None),
}


@pytest.mark.parametrize("name", list(EMPTY_VIEWS))
def test_view_on_empty_input_has_headers_and_no_nan(name: str) -> None:
    assert_shows_cleanly(EMPTY_VIEWS[name]())


def test_views_show_missing_figures_as_no_data() -> None:
    nan = float("nan")
    out = assert_shows_cleanly(
        nb.escalation_view(
            pd.DataFrame(
                {
                    "reason": ["low_confidence"],
                    "escalations": [nan],
                    "share_of_escalations": [nan],
                    "rate_per_decision": [nan],
                    "rate_low": [nan],
                    "rate_high": [nan],
                }
            )
        )
    )
    assert out.count("no data") == 3
    out = assert_shows_cleanly(
        nb.cost_view(
            pd.DataFrame(
                {
                    "component": ["human_review"],
                    "per_decision_usd": [nan],
                    "share_of_cost": [nan],
                    "total_usd": [nan],
                }
            )
        )
    )
    assert "human review" in out and out.count("no data") == 3
    out = assert_shows_cleanly(
        nb.drift_view(
            SimpleNamespace(
                features=pd.DataFrame(
                    {
                        "feature": ["channel"],
                        "kind": ["categorical"],
                        "psi": [nan],
                        "kl": [nan],
                        "band": [None],
                        "unseen_share": [nan],
                        "n_reference": [0],
                        "n_current": [nan],
                    }
                ),
                key_features=["channel"],
            )
        )
    )
    assert out.count("no data") == 5  # psi, kl, band, unseen share, n current
    out = assert_shows_cleanly(
        nb.prompt_view(
            pd.DataFrame(
                {
                    "prompt_version": ["v1"],
                    "first_seen": [pd.NaT],
                    "decisions": [0],
                    "escalation_rate": [nan],
                    "escalation_low": [nan],
                    "escalation_high": [nan],
                    "override_rate": [nan],
                    "override_low": [nan],
                    "override_high": [nan],
                }
            )
        )
    )
    assert out.count("no data") == 2


def test_calibration_view_says_why_there_is_no_ece() -> None:
    frame = nb.calibration_view(
        {
            "reference": calibration(0, 0, 0),
            "current": calibration(0, 120, 0),
            "later": calibration(0, 0, 80),
            "missing": None,
        }
    )
    out = assert_shows_cleanly(frame)
    ece = list(frame["ECE"])
    assert ece[0] == "no data: no decisions in the window"
    assert ece[1] == "no data: confidence is null on 120 of the 120 decisions"
    assert ece[2] == "no data: the outcome (correct) is unknown on 80 of the 80 decisions"
    assert ece[3] == "no data"
    assert "120" in out


def test_use_case_story_without_candidates_says_what_is_missing() -> None:
    review = UseCaseReview(
        scored=None, build=None, settings={}, missing=["candidates: not named in the pilot file"]
    )
    text = nb.use_case_story(review).data
    assert "No candidates to compare" in text
    assert "not named in the pilot file" in text


def test_findings_view_without_findings_is_a_sentence() -> None:
    assert nb.findings_view([], "Nothing to report.").data == "_Nothing to report._"
    out = nb.findings_view([Finding("p", "c", "blocking", NASTY)]).data
    assert "<script" not in out and "blocking" in out


def test_phase_context_without_data_shows_empty_tables(tiny_pilot: Path) -> None:
    ctx = nb.open_phase("go_no_go_summary", tiny_pilot, None, load_data=False)
    assert_shows_cleanly(ctx.data_quality())
    assert_shows_cleanly(ctx.quarantine_reasons())
    assert ctx.save({"x": 1}) is None
    assert ctx.earlier("kpi_baselining") is None
    assert "not saved" in nb.saved_note(None).data


def test_header_escapes_the_pilot_file_text(tmp_path: Path) -> None:
    folder = write_pilot(
        tmp_path / "p", doc_changes={"title": f"Claims under $10,000 {NASTY}", "owner": "D_W"}
    )
    ctx = nb.open_phase("kpi_baselining", folder, None, load_data=False)
    text = ctx.header().data
    assert "<script" not in text
    assert visible_text(text).count("Claims under $10,000 <script>alert('x')</script>") == 1
    assert "D_W" in visible_text(text)
    assert ctx.pilot.file_hash[:16] in text


def test_open_phase_rejects_an_unknown_phase(tiny_pilot: Path) -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        nb.open_phase("kpi", tiny_pilot)


def test_open_phase_treats_an_empty_output_dir_as_none(tiny_pilot: Path) -> None:
    assert nb.open_phase("kpi_baselining", tiny_pilot, "", load_data=False).output_dir is None


# ---------------------------------------------------------------------------
# decision_banner
# ---------------------------------------------------------------------------


def decision(kind: str, **changes: Any) -> GateDecision:
    base: dict[str, Any] = {
        "pilot": "claims-auto",
        "title": "Claims",
        "decision": kind,
        "verdicts": [],
        "blocking": [],
        "other_findings": [],
        "rationale": "All thresholds cleared.",
        "pilot_file_sha256": "0" * 64,
    }
    return GateDecision(**(base | changes))


@pytest.mark.parametrize(
    "kind, background", [("GO", "#dbe9f6"), ("NO-GO", "#fbdccb"), ("EXTEND", "#fdf0c8")]
)
def test_decision_banner_shows_the_decision_in_its_colour(kind: str, background: str) -> None:
    out = nb.decision_banner(decision(kind)).data
    assert f">{kind}</div>" in out
    assert f"background:{background}" in out


def test_decision_banner_escapes_everything_that_came_from_files() -> None:
    out = nb.decision_banner(
        decision(
            "NO-GO",
            pilot="<b>pilot</b>",
            title=f"Claims {NASTY}",
            rationale="Cost $2.50 < $3.00 & <i>rising</i>",
            integrity_warnings=["<img src=x onerror=alert(1)>"],
        )
    ).data
    for raw in ("<script", "<b>pilot", "<i>rising", "<img"):
        assert raw not in out
    assert "&lt;script&gt;" in out and "&lt;img src=x" in out
    assert "Cost $2.50 &lt; $3.00 &amp; &lt;i&gt;rising" in out
    assert 'class="tex2jax_ignore mathjax_ignore"' in out  # $2.50 ... $3.00 is not math


# ---------------------------------------------------------------------------
# What-if widgets: built headless without talking back to nbclient, never raising
# ---------------------------------------------------------------------------


def first_view(box: Any) -> str:
    """The text of the first view stored in a what-if box's Output widget."""
    import ipywidgets

    (out,) = [c for c in box.children if isinstance(c, ipywidgets.Output)]
    parts = []
    for o in out.outputs:
        parts.append(o.get("text", "") + "".join(o.get("data", {}).values()))
    return "\n".join(parts)


@pytest.fixture
def no_output_context(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any ``with output:`` while a widget is being built (see live_output)."""
    import ipywidgets

    entered: list[str] = []

    def refuse(self: Any) -> None:
        entered.append("entered")
        raise AssertionError("with output: used while the cell runs")

    monkeypatch.setattr(ipywidgets.Output, "__enter__", refuse)
    return entered


def test_safe_update_prints_a_plain_message_instead_of_raising(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def update(x: float) -> None:
        print("computing")
        raise WorkbookError(f"no limits at {x}")

    nb.safe_update(update)(2.0)
    out = capsys.readouterr().out
    assert "computing" in out
    assert "Could not recompute this what-if: no limits at 2.0" in out
    assert nb.safe_update(update).__name__ == "update"


def test_live_output_stores_the_first_view_without_the_output_context(
    no_output_context: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import ipywidgets

    slider = ipywidgets.FloatSlider(value=2.0)
    seen: list[float] = []

    def update(x: float) -> None:
        seen.append(x)
        print(f"value {x}")

    out = nb.live_output(update, {"x": slider})
    assert seen == [2.0]
    assert out.outputs == ({"output_type": "stream", "name": "stdout", "text": "value 2.0\n"},)
    assert capsys.readouterr().out == ""  # captured into the widget, not the cell
    assert no_output_context == []


def test_live_output_redraws_when_a_control_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipywidgets

    slider = ipywidgets.IntSlider(value=1, max=10)
    seen: list[int] = []
    nb.live_output(lambda n: seen.append(n), {"n": slider})
    slider.value = 7
    assert seen == [1, 7]


def test_live_output_first_view_of_a_failing_update_is_a_message(
    no_output_context: list[str],
) -> None:
    import ipywidgets

    def update(x: float) -> None:
        print("half way")
        raise ZeroDivisionError("division by zero")

    box = ipywidgets.VBox([nb.live_output(update, {"x": ipywidgets.FloatSlider(value=1)})])
    text = first_view(box)
    assert "half way" in text
    assert "Could not recompute this what-if: division by zero" in text


def test_sigma_widget_without_control_limits_says_so(no_output_context: list[str]) -> None:
    import ipywidgets

    pilot = load_pilot(SAMPLES / "claims-auto")
    # Two days of decisions: too few for a 7-day average, so no limits can be set.
    daily = pd.DataFrame(
        {
            "day": pd.to_datetime(["2026-03-02", "2026-03-03"]),
            "decisions": [100, 100],
            "escalated": [8, 9],
            "rate": [0.08, 0.09],
        }
    )
    box = nb.sigma_widget(SimpleNamespace(daily=daily), pilot)
    assert isinstance(box, ipywidgets.VBox)
    assert "No control chart at 2 sigma" in first_view(box)


def test_widget_sliders_start_at_the_pilot_file_values(
    tmp_path: Path, tiny_data: Any, no_output_context: list[str]
) -> None:
    doc = {
        "costs": {"review_hourly_rate_usd": 450.0, "manual_cost_per_case_usd": 12.0},
        "approvals": {**PILOT_DOC["approvals"], "sla_minutes": 2880},
    }
    folder = write_pilot(tmp_path / "p", doc_changes=doc)
    ctx = open_gate(folder, None, tiny_data)
    kpis = SimpleNamespace(cost_per_decision_at=lambda rate: 1.0, cost={"note": ""})
    cost_box = nb.cost_widget(kpis, ctx.pilot)
    assert cost_box.children[0].children[1].value == 450.0  # not clamped to a fixed maximum
    assert "At $450/hour of review, a decision costs $1.00" in first_view(cost_box)
    sla_box = nb.sla_widget(ctx)
    assert sla_box.children[0].children[1].value == 2880
    assert "Within a 2880-minute SLA" in first_view(sla_box)


def test_cost_widget_without_decisions_shows_no_data(
    tiny_pilot: Path, no_output_context: list[str]
) -> None:
    pilot = load_pilot(tiny_pilot)
    kpis = SimpleNamespace(
        cost_per_decision_at=lambda rate: float("nan"),
        cost={"note": "no data (no decisions in the pilot window (2026-03-02 to 2026-03-29))"},
    )
    text = first_view(nb.cost_widget(kpis, pilot))
    assert "no data (no decisions in the pilot window" in text
    assert LEAKED_MISSING.search(text) is None and "$nan" not in text


@pytest.fixture
def ipython_shell() -> Iterator[Any]:
    """An IPython shell, so display() publishes rich output as it does in a kernel."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def test_use_case_widgets_render_both_what_ifs(
    tmp_path: Path, no_output_context: list[str], ipython_shell: Any
) -> None:
    import ipywidgets

    claims = yaml.safe_load((SAMPLES / "claims-auto" / "pilot.yaml").read_text(encoding="utf-8"))
    folder = write_pilot(tmp_path / "p", doc_changes={"build_vs_buy": claims["build_vs_buy"]})
    ctx = nb.open_phase("use_case_scoring", folder, None)
    review = use_case_phase(ctx.pilot, ctx.data)
    box = nb.use_case_widgets(ctx, review)
    outputs = [
        w for part in box.children for w in part.children if isinstance(w, ipywidgets.Output)
    ]
    texts = ["".join("".join(o.get("data", {}).values()) for o in w.outputs) for w in outputs]
    assert len(texts) == 2
    assert "What-if ranking" in texts[0] and "<table" in texts[0]
    assert "What-if build vs buy" in texts[1] and "<table" in texts[1]
    assert LEAKED_MISSING.search("".join(texts)) is None


# ---------------------------------------------------------------------------
# gather_results: provenance of the figures the gate uses
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny pilot's data sets, loaded once: tests that only edit the pilot file's
    thresholds or the run folder reuse them instead of loading the same files again."""
    from pilot_lib.ingest.contracts import load_pilot_data

    folder = write_pilot(tmp_path_factory.mktemp("shared") / "tiny")
    return load_pilot_data(load_pilot(folder))


def open_gate(folder: Path, output_dir: Path | None, data: Any = None) -> nb.PhaseContext:
    ctx = nb.open_phase("go_no_go_summary", folder, output_dir, load_data=False)
    ctx.data = data
    return ctx


def test_gather_results_without_a_run_folder_computes_every_phase(tiny_pilot: Path) -> None:
    ctx = open_gate(tiny_pilot, None)
    results, provenance = gather_results(ctx)
    assert list(provenance.columns) == ["phase", "source", "note"]
    assert list(provenance["phase"]) == list(EARLIER_PHASES)
    assert set(provenance["source"]) == {"computed in this notebook"}
    assert set(provenance["note"]) == {""}
    assert ctx.data is not None  # loaded on demand
    # The same functions the phase notebooks call, so the figures match theirs.
    direct = {
        "use_case_scoring": use_case_phase(ctx.pilot, ctx.data).to_result(),
        "kpi_baselining": kpi_phase(ctx.pilot, ctx.data).to_result(),
        "drift_analysis": drift_phase(ctx.pilot, ctx.data).to_result(),
        "incident_drill_review": incident_phase(ctx.pilot, ctx.data).to_result(),
    }
    assert json.dumps(results, sort_keys=True) == json.dumps(direct, sort_keys=True)


def test_gather_results_reads_stored_results_without_loading_data(
    tiny_pilot: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    pilot = load_pilot(tiny_pilot)
    for phase in EARLIER_PHASES:
        write_phase_result(phase, pilot, {"marker": phase}, run)
    ctx = open_gate(tiny_pilot, run)
    results, provenance = gather_results(ctx)
    assert results == {phase: {"marker": phase} for phase in EARLIER_PHASES}
    assert set(provenance["source"]) == {"read from the run folder"}
    assert ctx.data is None  # nothing was recomputed


def test_gather_results_mixes_read_and_computed_phases(
    tiny_pilot: Path, tmp_path: Path, tiny_data: Any
) -> None:
    run = tmp_path / "run"
    write_phase_result("drift_analysis", load_pilot(tiny_pilot), {"marker": 1}, run)
    ctx = open_gate(tiny_pilot, run, tiny_data)
    results, provenance = gather_results(ctx, phases=("drift_analysis", "incident_drill_review"))
    assert list(provenance["source"]) == ["read from the run folder", "computed in this notebook"]
    assert results["drift_analysis"] == {"marker": 1}
    assert "findings" in results["incident_drill_review"]


def test_gather_results_recomputes_when_the_thresholds_changed(
    tiny_pilot: Path, tmp_path: Path, tiny_data: Any
) -> None:
    run = tmp_path / "run"
    before = load_pilot(tiny_pilot)
    write_phase_result("incident_drill_review", before, {"marker": "stale"}, run)
    pilot_file = tiny_pilot / "pilot.yaml"
    doc = yaml.safe_load(pilot_file.read_text(encoding="utf-8"))
    doc["kpis"][0]["value"] = 0.95
    pilot_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    ctx = open_gate(tiny_pilot, run, tiny_data)
    results, provenance = gather_results(ctx, phases=("incident_drill_review",))
    assert results["incident_drill_review"] != {"marker": "stale"}
    assert list(provenance["source"]) == ["computed in this notebook"]
    note = provenance["note"].iloc[0]
    assert note.startswith("stored result not used")
    assert before.file_hash[:12] in note and ctx.pilot.file_hash[:12] in note


def test_gather_results_ignores_another_pilots_result(
    tiny_pilot: Path, tmp_path: Path, tiny_data: Any
) -> None:
    run = tmp_path / "run"
    other = load_pilot(write_pilot(tmp_path / "other", doc_changes={"name": "other-pilot"}))
    write_phase_result("incident_drill_review", other, {"marker": "other"}, run)
    results, provenance = gather_results(
        open_gate(tiny_pilot, run, tiny_data), phases=("incident_drill_review",)
    )
    assert results["incident_drill_review"] != {"marker": "other"}
    assert "'other-pilot'" in provenance["note"].iloc[0]


def test_gather_results_survives_a_corrupt_result_file(
    tiny_pilot: Path, tmp_path: Path, tiny_data: Any
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "incident_drill_review.json").write_text("{ half a file", encoding="utf-8")
    results, provenance = gather_results(
        open_gate(tiny_pilot, run, tiny_data), phases=("incident_drill_review",)
    )
    assert "findings" in results["incident_drill_review"]
    assert "not valid JSON" in provenance["note"].iloc[0]


def test_gather_results_recompute_ignores_stored_results(
    tiny_pilot: Path, tmp_path: Path, tiny_data: Any
) -> None:
    run = tmp_path / "run"
    write_phase_result("incident_drill_review", load_pilot(tiny_pilot), {"marker": 1}, run)
    results, provenance = gather_results(
        open_gate(tiny_pilot, run, tiny_data), phases=("incident_drill_review",), recompute=True
    )
    assert results["incident_drill_review"] != {"marker": 1}
    assert list(provenance["source"]) == ["computed in this notebook"]


# ---------------------------------------------------------------------------
# Charts on missing data: a labelled placeholder, never an empty or NaN chart
# ---------------------------------------------------------------------------


def figure_texts(fig: Any) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_band_chart_without_any_estimate_says_no_data() -> None:
    from pilot_lib.report import charts

    weekly = pd.DataFrame(
        {
            "week": pd.to_datetime(["2026-03-02", "2026-03-09"]),
            "rate": [float("nan")] * 2,
            "low": [float("nan")] * 2,
            "high": [float("nan")] * 2,
        }
    )
    fig = charts.band_chart(weekly, "week", [("rate", "rate", "low", "high")], "Weekly rate")
    assert "No data: no week has an estimate" in figure_texts(fig)
    fig = charts.band_chart(weekly.iloc[:0], "week", [("rate", "rate", "low", "high")], "Weekly")
    assert "No data" in figure_texts(fig)


def test_bar_chart_with_only_missing_values_says_no_data() -> None:
    from pilot_lib.report import charts

    fig = charts.bar_chart(["low_confidence", "tool_failure"], [float("nan"), None], "Shares")
    assert "No data: no values" in figure_texts(fig)
    fig = charts.bar_chart(["a", "b"], [0.25, float("nan")], "Shares", annotations=["25%", "?"])
    assert "No data" not in figure_texts(fig)
    assert "?" not in figure_texts(fig)  # no annotation floating at a missing value


def test_reliability_diagram_says_why_a_window_has_no_ece() -> None:
    from pilot_lib.report import charts

    fig = charts.reliability_diagram(
        {"reference": calibration(0, 120, 0), "current": calibration(0, 0, 0)}
    )
    text = figure_texts(fig)
    assert "confidence is null on 120" in text
    assert "no decisions in the window" in text


# ---------------------------------------------------------------------------
# Phase sections: a note when one is missing, formats, words for missing values
# ---------------------------------------------------------------------------


def test_section_or_note_returns_the_section_and_shows_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    section = object()
    phase = SimpleNamespace(sections={"shadow_mode": section})
    assert nb.section_or_note(phase, "shadow_mode", "No shadow decisions.") is section
    assert shown == []


def test_section_or_note_shows_one_escaped_italic_note_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    phase = SimpleNamespace(sections={})
    note = "No tool_calls data set: add one (see docs/data-contracts.md)."
    assert nb.section_or_note(phase, "integration_health", note) is None
    assert nb.section_or_note(SimpleNamespace(), "audit_trail", "No log.") is None  # no .sections
    assert len(shown) == 2
    text = shown[0].data
    assert text.startswith("_") and text.endswith("_")
    assert "tool\\_calls" in text  # escaped: shown as written, not half in italics


def test_section_or_note_on_real_phase_objects_of_the_tiny_pilot(
    tiny_pilot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    ctx = nb.open_phase("kpi_baselining", tiny_pilot, None)
    kpis = kpi_phase(ctx.pilot, ctx.data)
    assert "shadow_mode" not in kpis.sections  # the tiny pilot has no shadow rows
    assert nb.section_or_note(kpis, "shadow_mode", "No shadow decisions.") is None
    assert nb.section_or_note(kpis, "cost_attribution", "x") is kpis.sections["cost_attribution"]
    assert len(shown) == 1


def test_formats_by_kind_of_column_and_text_left_alone() -> None:
    frame = pd.DataFrame(
        {
            "share": [0.9373, float("nan")],
            "cost": [2.04142, 1.5],
            "total": [61230.3099, 0.0],
            "n": [29994.0, 3.0],
            "ratio": [42.853, 1.0],
            "limit": [2500.0, "no limit"],
        }
    )
    fmts = nb.formats(
        percent=["share"],
        usd=["cost"],
        dollars=["total", "limit"],
        counts=["n"],
        decimals={"ratio": 1},
    )
    html_text = nb.table(frame, "Formats", fmts).data
    for shown in ("93.7%", "$2.041", "$61,230.31", "29,994", "42.9", "$2,500.00", "no limit"):
        assert shown in html_text
    assert "no data" in html_text and not LEAKED_MISSING.search(html_text)
    assert nb.formats(percent=["x"], percent_digits=2)["x"](0.00014) == "0.01%"


def test_filled_names_what_missing_means_without_touching_the_original() -> None:
    frame = pd.DataFrame(
        {
            "max_amount": [2500.0, float("nan")],
            "effective_at": pd.to_datetime(["2026-03-02", None]),
            "level": ["autonomous", "supervisor"],
        }
    )
    out = nb.filled(frame, max_amount="no limit", effective_at="from the start", absent="x")
    assert list(out["max_amount"]) == [2500.0, "no limit"]
    assert out["effective_at"].iloc[1] == "from the start"
    assert "absent" not in out.columns
    assert frame["max_amount"].isna().iloc[1]

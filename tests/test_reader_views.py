"""What a reader sees (issue 20): dollar amounts never typeset as maths, reader-labelled
tables that fit the page, what-if sliders laid out for reading, charts on the Okabe-Ito
palette with legends off the data, one go/no-go bullet per blocking finding, a portfolio
that reads at a glance, print rules without scroll boxes.

Fast: view functions on small frames and stand-ins; the checks over executed notebooks and
exported pages (:func:`dollar_problems`, :func:`raw_headers`) are also applied to a real
run in ``tests/test_board_pack.py``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")

from pilot_lib.report import charts
from pilot_lib.report import notebook as nb

# --------------------------------------------------------------------------- checkers


class _MathScan(HTMLParser):
    """Text outside any ``mathjax_ignore`` / ``tex2jax_ignore`` element (and outside
    script and style), one string per text run."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []
        self.exposed: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "hr", "meta", "link", "input", "col", "wbr", "source"):
            return
        cls = (dict(attrs).get("class") or "").split()
        ignored = (
            bool(self.stack and self.stack[-1])
            or "mathjax_ignore" in cls
            or "tex2jax_ignore" in cls
            or tag in ("script", "style")
        )
        self.stack.append(ignored)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and tag not in ("br", "img", "hr", "meta", "link", "input", "col"):
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if not (self.stack and self.stack[-1]):
            self.exposed.append(data)


def exposed_text(html_text: str) -> str:
    scan = _MathScan()
    scan.feed(html_text)
    return "".join(scan.exposed)


def dollar_problems(notebook: dict[str, Any]) -> list[str]:
    """Outputs MathJax would typeset: a Markdown output with two ``$`` (escaped or not: JupyterLab
    4 typesets ``\\$`` too), an HTML output with two ``$`` outside a mathjax_ignore element."""
    problems = []
    for i, cell in enumerate(notebook.get("cells", [])):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            md_text = "".join(data.get("text/markdown", ""))
            if md_text.count("$") >= 2:
                problems.append(f"cell {i}: Markdown output {md_text[:80]!r}")
            html_text = "".join(data.get("text/html", ""))
            if html_text and exposed_text(html_text).count("$") >= 2:
                problems.append(f"cell {i}: HTML output {exposed_text(html_text)[:80]!r}")
    return problems


def page_dollar_problems(page: str) -> list[str]:
    """The same check over an exported page: ``$`` pairs outside every mathjax_ignore."""
    text = exposed_text(page[page.find("<body") :])
    return [text[:120]] if text.count("$") >= 2 else []


_SNAKE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)+$")


def raw_headers(html_text: str) -> list[str]:
    """Table headers that are raw ``snake_case`` names."""
    heads = re.findall(r"<th[^>]*>(.*?)</th>", html_text, flags=re.S)
    return [h for h in (re.sub(r"<[^>]+>", "", x).strip() for x in heads) if _SNAKE.match(h)]


# --------------------------------------------------------------------------- dollars


def test_text_with_two_dollar_amounts_is_html_mathjax_skips() -> None:
    shown = nb.md(
        "manual handling costs {a} per case: the agent saves {b} per decision",
        a="$14.50",
        b="$12.46",
    )
    out = {"cells": [{"outputs": [{"data": {"text/html": shown.data}}]}]}
    assert dollar_problems(out) == []
    assert "$14.50 per case: the agent saves $12.46" in shown.data
    assert shown.data.startswith('<div class="tex2jax_ignore mathjax_ignore">')
    # the same text as Markdown is what the check catches
    bad = {"cells": [{"outputs": [{"data": {"text/markdown": "costs \\$14.50 and \\$12.46"}}]}]}
    assert len(dollar_problems(bad)) == 1
    assert (
        len(
            dollar_problems({"cells": [{"outputs": [{"data": {"text/html": "<p>$1 and $2</p>"}}]}]})
        )
        == 1
    )


def test_paragraphs_and_text_without_dollars() -> None:
    para = nb.paragraphs("cost per decision $1.858 (today $2.041)")
    assert exposed_text(para.data).count("$") == 0 and "$1.858 (today $2.041)" in para.data
    plain = nb.md("rate {x:.1%}", x=0.5)
    assert plain.data == "rate 50.0%"  # no dollar: stays Markdown


def test_checker_sees_dollars_outside_the_ignored_element() -> None:
    assert exposed_text('<div class="mathjax_ignore"><p>$1 $2</p></div><p>$3</p>') == "$3"


# --------------------------------------------------------------------------- tables


def test_table_headers_are_reader_labels() -> None:
    frame = pd.DataFrame(
        {"cost_per_decision_usd": [1.2], "low_iid": [1.0], "share_of_cost": [0.5], "p95_ms": [9]}
    )
    html_text = nb.table(frame, "x", nb.formats(usd=["cost_per_decision_usd"])).data
    assert raw_headers(html_text) == []
    assert "cost per decision (US dollars)" in html_text and "$1.200" in html_text
    assert "95th percentile latency (ms)" in html_text
    assert nb.reader_label("value", "agent_id") == "agent id"
    assert nb.reader_label("error rate") == "error rate"


def test_cost_breakdown_view_keeps_nine_readable_columns() -> None:
    frame = pd.DataFrame(
        {
            "value": ["triage"],
            "decisions": [12000],
            "cost_per_decision_usd": [1.8581],
            "low": [1.8],
            "high": [1.9],
            "low_iid": [1.82],
            "high_iid": [1.88],
            "design_effect": [2.0],
            "clusters": [12],
            "input_usd": [0.5],
            "output_usd": [0.3],
            "tool_usd": [0.1],
            "review_usd": [0.958],
            "total_usd": [22297.2],
            "share_of_cost": [0.4],
        }
    )
    view = nb.cost_breakdown_view(frame, "workflow")
    assert list(view.columns)[:4] == ["workflow", "decisions", "cost per decision", "95% interval"]
    assert len(view.columns) == 9
    assert view.iloc[0]["95% interval"] == "$1.800 to $1.900"
    assert view.iloc[0]["decisions"] == "12,000"


def test_budgets_view_is_one_column_per_budget() -> None:
    frame = pd.DataFrame(
        {
            "label": ["workflow a", "agent b"],
            "monthly_usd": [450.0, 90.0],
            "peak_month_to_date_usd": [156.64, 95.0],
            "first_over_pace_day": [None, "2026-06-03"],
            "first_breach_day": [None, "2026-06-29"],
            "projected_month_usd": [622.71, 101.0],
            "fallback_model": [None, "small"],
            "projected_month_with_fallback_usd": [np.nan, 80.0],
            "fallback_saving_usd": [0.0, 21.0],
        }
    )
    view = nb.budgets_view(frame)
    assert list(view.columns) == ["figure (US dollars)", "workflow a", "agent b"]
    rows = dict(zip(view["figure (US dollars)"], view["workflow a"], strict=True))
    assert rows["first day over budget"] == "never" and rows["fallback model"] == "none"
    assert rows["monthly budget"] == "$450.00"


def test_authority_what_if_prints_counts_and_dollars_not_floats_or_booleans() -> None:
    result = SimpleNamespace(
        table=lambda: pd.DataFrame(
            [
                ("actions in the log", 598.0, 598.0),
                ("approvals per week", 12.345, 14.0),
                ("value run autonomously (USD)", 449846.15, 500000.0),
            ],
            columns=["figure", "pilot file thresholds", "what-if"],
        )
    )
    view = nb.authority_what_if_view(result)
    text = view.to_string()
    assert "598.000000" not in text and view.iloc[0, 1] == "598"
    assert view.iloc[1, 1] == "12.3" and view.iloc[2, 1] == "$449,846.15"
    levels = nb.authority_levels_view(
        pd.DataFrame(
            {
                "level": ["autonomous", "team_lead"],
                "requires_approval": [False, True],
                "actions_now": [500, 98],
                "actions_what_if": [450, 148],
                "change": [-50, 50],
            }
        )
    )
    assert list(levels["needs a human approval"]) == ["no", "yes"]
    assert list(levels["change"]) == ["-50", "+50"] and "True" not in levels.to_string()
    assert raw_headers(nb.table(levels).data) == []


# --------------------------------------------------------------------------- sliders


def test_what_if_sliders_are_full_width_with_the_label_above(tiny_pilot: Path) -> None:
    import ipywidgets as w

    from pilot_lib.config import load_pilot

    pilot = load_pilot(tiny_pilot)
    kpis = SimpleNamespace(cost_per_decision_at=lambda rate: 1.0, cost={"note": ""})
    box = nb.cost_widget(kpis, pilot)
    labelled = box.children[0]
    head, slider = labelled.children
    assert isinstance(head, w.HTML) and "Loaded review cost" in head.value
    assert slider.description == "" and slider.layout.width == "100%"
    assert labelled.layout.width == "100%" and box.layout.width == "100%"
    assert slider.step == 1  # one dollar an hour per step
    # opened before any run: a sentence, not VBox(children=(FloatSlider(...
    bundle = box._repr_mimebundle_()
    assert bundle["text/plain"].startswith("What-if: a slider for the reviewers' loaded")
    assert "VBox" not in bundle["text/html"]


# --------------------------------------------------------------------------- charts


def _legend_covers_data(fig: Any) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for line in ax.get_lines():
            if line.get_transform() != ax.transData:
                continue  # a reference line across the axes (axhline): checked as the area below
            xy = ax.transData.transform(line.get_xydata())
            inside = (
                (xy[:, 0] >= box.x0)
                & (xy[:, 0] <= box.x1)
                & (xy[:, 1] >= box.y0)
                & (xy[:, 1] <= box.y1)
            )
            if inside.any():
                return True
        if box.y1 > ax.get_window_extent(renderer).y0 + 1:
            return True  # the legend overlaps the plotting area
    return False


def _colours(fig: Any) -> set[str]:
    from matplotlib.colors import to_hex

    return {to_hex(line.get_color()).upper() for ax in fig.axes for line in ax.get_lines()}


def test_error_rate_chart_uses_okabe_ito_and_its_legend_covers_no_line() -> None:
    weeks = pd.date_range("2026-06-01", periods=8, freq="W-MON")
    rows = []
    for system, base in (("cmdb", 0.3), ("saas_admin", 0.05)):
        for i, wk in enumerate(weeks):
            r = base + 0.01 * i
            rows.append(
                {"system": system, "week": wk, "error_rate": r, "low": r - 0.02, "high": r + 0.02}
            )
    health = SimpleNamespace(weekly=pd.DataFrame(rows), settings={"max_error_rate": 0.05})
    fig = charts.error_rate_chart(health)
    assert _colours(fig) <= {c.upper() for c in charts.OKABE_ITO}
    assert not _legend_covers_data(fig)


def test_budget_chart_uses_okabe_ito_and_its_legend_covers_no_line() -> None:
    days = pd.date_range("2026-06-01", periods=30, freq="D")
    daily = pd.DataFrame(
        {
            "day": days,
            "month_to_date_usd": np.linspace(10, 500, 30),
            "pace_usd": np.linspace(15, 450, 30),
            "month_to_date_with_fallback_usd": np.linspace(8, 400, 30),
        }
    )
    budget = SimpleNamespace(daily=daily, monthly_usd=450.0, fallback_model="small", label="wf")
    fig = charts.budget_chart(SimpleNamespace(budgets=[budget]))
    assert _colours(fig) <= {c.upper() for c in charts.OKABE_ITO}
    assert not _legend_covers_data(fig)


# --------------------------------------------------------------------------- print, portfolio


def test_print_rules_print_no_scroll_box_and_wrap_wide_tables() -> None:
    from pilot_lib.report.export import PRINT_CSS

    assert "*, *::before, *::after { overflow: visible !important; }" in PRINT_CSS
    assert ".jp-MarkdownOutput" in PRINT_CSS and "display: block !important" in PRINT_CSS
    assert "white-space: normal !important" in PRINT_CSS


def test_portfolio_counts_blocking_findings_by_kind_with_links(tmp_path: Path) -> None:
    from pilot_lib.report.export import write_portfolio

    run = tmp_path / "runs" / "alpha" / "20261201T000000Z-aaaa"
    run.mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"pilot": "alpha", "status": "succeeded", "run_id": run.name, "phases": []})
    )
    gate = {"decision": "NO-GO", "verdicts": []}
    (run / "go_no_go_summary.json").write_text(json.dumps({"result": gate}))
    (run / "05_go_no_go_summary.html").write_text("<html></html>")
    long = "Key feature x drifted significantly " + "and more words " * 20
    drift = {
        "findings": [
            {
                "phase": "drift_analysis",
                "code": "key_feature_drift",
                "severity": "blocking",
                "message": long,
                "evidence": {},
            },
            {
                "phase": "drift_analysis",
                "code": "key_feature_drift",
                "severity": "blocking",
                "message": long,
                "evidence": {},
            },
            {
                "phase": "drift_analysis",
                "code": "feedback_loops_crossed",
                "severity": "blocking",
                "message": "1 item(s) crossed",
                "evidence": {"section": "Fast and slow feedback loops"},
            },
        ]
    }
    (run / "drift_analysis.json").write_text(json.dumps({"result": drift}))
    html_text = write_portfolio(tmp_path / "runs").read_text()
    assert "2 key inputs shifted" in html_text and "1 feedback-loop crossing" in html_text
    assert f'href="alpha/{run.name}/03_drift_analysis.html#Input-drift-per-feature"' in html_text
    assert "#Fast-and-slow-feedback-loops" in html_text
    assert "and more words" not in html_text and "(s)" not in html_text


def test_no_plural_placeholder_reaches_a_reader() -> None:
    text = nb.md("{t}", t="2 recorded threshold change(s); 1 action(s) were late").data
    assert text == "2 recorded threshold changes; 1 action was late"
    assert "(s)" not in nb.paragraphs("3 time(s) over").data

"""The pack's charts, as inline SVG drawn by pygal: deployments per week, findings by rule and
change coverage. Pure: rows in (the data files' cells), SVG text out, the same each time."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import date, timedelta

import pygal
from pygal.style import Style

#: Change states that count as approved when the deployment started (the policy default).
APPROVED_STATES = frozenset({"approved", "scheduled"})
COVERAGE = (
    "approved at start",
    "not approved at start",
    "unknown change request",
    "no change request",
)
_STYLE = Style(
    background="white",
    plot_background="white",
    font_family="system-ui, sans-serif",
    colors=("#2f6fb0", "#d1495b", "#edae49", "#8d99ae", "#00798c", "#66a182"),
)
_UUID = re.compile(r'id="chart-([0-9a-f-]{36})"')


def _render(chart: pygal.graph.graph.Graph, name: str) -> str:
    # pygal names each chart by a random uuid: a fixed name keeps the report reproducible.
    svg: str = chart.render(is_unicode=True)
    found = _UUID.search(svg)
    return svg.replace(found[1], name) if found else svg


def _chart(kind: type[pygal.graph.graph.Graph], title: str) -> pygal.graph.graph.Graph:
    return kind(
        title=title,
        style=_STYLE,
        js=[],  # no script from the web: the report is one self-contained file
        disable_xml_declaration=True,
        width=760,
        height=320,
        explicit_size=True,
        legend_at_bottom=True,
        print_values=False,
    )


def week_of(timestamp: str) -> date:
    """The Monday (UTC) of the ISO week a `2026-11-25T...Z` timestamp falls in."""
    day = date.fromisoformat(timestamp[:10])
    return day - timedelta(days=day.weekday())


def weeks(first: date, last: date) -> list[date]:
    """Every Monday from the week of `first` to the week of `last`."""
    monday = first - timedelta(days=first.weekday())
    out = []
    while monday <= last:
        out.append(monday)
        monday += timedelta(days=7)
    return out


def _labels(mondays: Sequence[date]) -> list[str]:
    return [f"W{m.isocalendar().week} ({m:%d %b})" for m in mondays]


def deployments_per_week(deployments: Sequence[dict[str, str]], mondays: Sequence[date]) -> str:
    """Stacked bars: production deployments per ISO week, by final status."""
    chart = _chart(pygal.StackedBar, "Production deployments per week")
    chart.x_labels = _labels(mondays)
    counts = Counter((week_of(d["started_at"]), d["status"]) for d in deployments)
    for status in sorted({d["status"] for d in deployments}):
        chart.add(status, [counts[(m, status)] for m in mondays])
    return _render(chart, "deployments-per-week")


def findings_by_rule(findings: Sequence[dict[str, str]]) -> str:
    """Horizontal stacked bars: findings per rule, open and resolved."""
    chart = _chart(pygal.HorizontalStackedBar, "Policy findings by rule")
    rules = sorted({f["rule"] for f in findings})
    chart.x_labels = rules
    for label, resolved in (("open", "false"), ("resolved", "true")):
        chart.add(
            label, [sum(f["rule"] == r and f["resolved"] == resolved for f in findings) for r in rules]
        )
    return _render(chart, "findings-by-rule")


def coverage_of(deployment: dict[str, str]) -> str:
    """Which of `COVERAGE` a deployment falls in: did an approved change request cover it?"""
    if not deployment["change_id"]:
        return "no change request"
    if not deployment["change_state_now"]:
        return "unknown change request"
    if deployment["change_state_at_start"] in APPROVED_STATES:
        return "approved at start"
    return "not approved at start"


def change_coverage(deployments: Sequence[dict[str, str]], mondays: Sequence[date]) -> str:
    """Stacked bars per week: deployments by change coverage (`coverage_of`)."""
    chart = _chart(pygal.StackedBar, "Change coverage of production deployments")
    chart.x_labels = _labels(mondays)
    counts = Counter((week_of(d["started_at"]), coverage_of(d)) for d in deployments)
    for kind in COVERAGE:
        chart.add(kind, [counts[(m, kind)] for m in mondays])
    return _render(chart, "change-coverage")

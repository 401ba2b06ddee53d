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
GOOD, BAD, WARN, NONE, BUSY = "#2e8b57", "#c0392b", "#e69b23", "#9aa5b1", "#2f6fb0"
#: Deployment statuses in the order stacked, each in its colour.
STATUS_COLOURS = {
    "succeeded": GOOD,
    "failed": BAD,
    "rolled_back": WARN,
    "cancelled": NONE,
    "in_progress": BUSY,
}
_UUID = re.compile(r'id="chart-([0-9a-f-]{36})"')
_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL)


def _render(chart: pygal.graph.graph.Graph, name: str) -> str:
    # pygal names each chart by a random uuid: a fixed name keeps the report reproducible.
    # Its inline script only feeds its optional tooltips: dropped, the page runs no script.
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    found = _UUID.search(svg)
    return svg.replace(found[1], name) if found else svg


def _chart(
    kind: type[pygal.graph.graph.Graph], title: str, colours: Sequence[str]
) -> pygal.graph.graph.Graph:
    style = Style(
        background="white",
        plot_background="white",
        font_family="system-ui, sans-serif",
        colors=tuple(colours),
    )
    return kind(
        title=title,
        style=style,
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
    seen = {d["status"] for d in deployments}
    statuses = [s for s in STATUS_COLOURS if s in seen] + sorted(seen - set(STATUS_COLOURS))
    colours = [STATUS_COLOURS.get(s, BUSY) for s in statuses]
    chart = _chart(pygal.StackedBar, "Production deployments per week", colours)
    chart.x_labels = _labels(mondays)
    counts = Counter((week_of(d["started_at"]), d["status"]) for d in deployments)
    for status in statuses:
        chart.add(status, [counts[(m, status)] for m in mondays])
    return _render(chart, "deployments-per-week")


def findings_by_rule(findings: Sequence[dict[str, str]]) -> str:
    """Horizontal stacked bars: findings per rule, open and resolved."""
    chart = _chart(pygal.HorizontalStackedBar, "Policy findings by rule", (BAD, GOOD))
    rules = sorted({f["rule"] for f in findings})
    chart.x_labels = rules
    for label, resolved in (("open", "false"), ("resolved", "true")):
        chart.add(
            label,
            [sum(f["rule"] == r and f["resolved"] == resolved for f in findings) for r in rules],
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
    chart = _chart(
        pygal.StackedBar, "Change coverage of production deployments", (GOOD, BAD, WARN, NONE)
    )
    chart.x_labels = _labels(mondays)
    counts = Counter((week_of(d["started_at"]), coverage_of(d)) for d in deployments)
    for kind in COVERAGE:
        chart.add(kind, [counts[(m, kind)] for m in mondays])
    return _render(chart, "change-coverage")

"""The pack's HTML report: one self-contained page (inline CSS and SVG charts, no script, no
link out) that a reviewer reads before opening the CSV files. Pure: data in, HTML out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from shipledger.report.charts import COVERAGE, coverage_of

#: Rows of each table shown on the page; the CSV files hold them all.
SHOWN_ROWS = 500

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1d2733}
h1{margin-bottom:.2rem}.sub{color:#5b6675;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1.5rem 0}
.card{border:1px solid #d8dee6;border-radius:8px;padding:.8rem 1.2rem;min-width:10rem}
.card b{display:block;font-size:1.8rem}.card span{color:#5b6675}
.bad b{color:#b3261e}.good b{color:#1e7b34}
figure{margin:1.5rem 0}table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{border-bottom:1px solid #e3e7ec;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f8}td.num{text-align:right}.note{color:#5b6675;font-size:.85rem}
"""


@dataclass(frozen=True)
class PageData:
    """What the page shows."""

    title: str
    scope: str
    deployments: Sequence[dict[str, str]]
    findings: Sequence[dict[str, str]]
    charts: Sequence[str]
    change_sets: bool
    signer: str


def _card(value: object, label: str, tone: str = "") -> str:
    return f'<div class="card {tone}"><b>{escape(str(value))}</b><span>{escape(label)}</span></div>'


def _table(columns: Sequence[str], rows: Sequence[dict[str, str]], file: str) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(r.get(c, ''))}</td>" for c in columns) + "</tr>"
        for r in rows[:SHOWN_ROWS]
    )
    more = (
        f'<p class="note">First {SHOWN_ROWS} of {len(rows)} rows; all of them are in {file}.</p>'
        if len(rows) > SHOWN_ROWS
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def render_page(data: PageData) -> str:
    """The report as one HTML document."""
    deployments, findings = data.deployments, data.findings
    covered = sum(coverage_of(d) == COVERAGE[0] for d in deployments)
    open_findings = sum(f["resolved"] == "false" for f in findings)
    coverage = f"{covered / len(deployments):.0%}" if deployments else "-"
    cards = "".join(
        [
            _card(len(deployments), "production deployments"),
            _card(coverage, "covered by a change approved at start", "good"),
            _card(len(findings), "policy findings"),
            _card(open_findings, "findings still open", "bad" if open_findings else "good"),
        ]
    )
    changes_note = (
        ""
        if data.change_sets
        else '<p class="note">What changed (commits, pull requests) is not in this ledger yet: '
        "the commits and pull_requests_changed columns are empty.</p>"
    )
    figures = "".join(f"<figure>{svg}</figure>" for svg in data.charts)
    deployment_columns = [
        "started_at",
        "tenant",
        "service",
        "status",
        "actor",
        "approved_by",
        "change_id",
        "change_state_at_start",
        "findings",
        "open_findings",
    ]
    finding_columns = ["occurred_at", "service", "deployment_id", "rule", "severity", "resolved"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(data.title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{escape(data.title)}</h1><p class="sub">{escape(data.scope)}</p>'
        f'<div class="cards">{cards}</div>{figures}{changes_note}'
        f"<h2>Findings</h2>{_table(finding_columns, findings, 'findings.csv')}"
        f"<h2>Deployments</h2>{_table(deployment_columns, deployments, 'deployments.csv')}"
        f'<p class="note">Signed by key '
        f"{escape(data.signer)}. Check the pack with <code>shipledger report verify</code>: "
        "every file's sha256 is in manifest.json, whose signature is manifest.json.sig.</p>"
        "</body></html>\n"
    )

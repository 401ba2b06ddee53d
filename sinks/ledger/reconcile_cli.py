"""`shipledger reconcile`: independent evidence of deployments (Kubernetes audit logs, AWS
CloudTrail, access logs of deploy endpoints) against the ledger (`shipledger.reconcile`),
findings stored (`sinks.ledger.reconciliations`) and printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from shipledger.cli_types import FiniteFloatRange
from shipledger.output_format import format_option
from shipledger.reconcile.compare import Comparison, Scope, Tolerances, compare, group_changes
from shipledger.reconcile.evidence import Progress as BytesRead
from shipledger.reconcile.mapping import SOURCES, Mapping, MappingError, load_mapping
from shipledger.reconcile.period import PeriodError, period
from shipledger.reconcile.run import Evidence, read_evidence, run_id
from shipledger.sinks.cli_options import ledger_options, ledger_settings, written_ledger
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.reconciliations import store_findings
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.tables import render_rows

COLUMNS = [
    "kind",
    "service",
    "environment",
    "team",
    "observed_at",
    "deployment_id",
    "evidence",
    "detail",
]
#: Malformed or unmapped entries listed in the table; json has them all.
SHOWN = 20


@dataclass(frozen=True)
class Run:
    """One reconciliation: what was read, what it found, and whether it was stored now."""

    scope: Scope
    run_id: str
    evidence: Evidence
    comparison: Comparison
    stored_now: bool


@click.command("reconcile", context_settings={"max_content_width": 100})
@click.option("--source", required=True, type=click.Choice(SOURCES), help="What FILES are.")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Evidence -> tenant, service, environment (default SHIPLEDGER_RECONCILE_MAPPING_FILE).",
)
@click.option("--quarter", help="The period: a quarter, e.g. 2026Q4.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="The period's first UTC day.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Its last UTC day, included.")
@click.option("--tenant", help="Tenant (default: the mapping's, else SHIPLEDGER_TENANT).")
@click.option(
    "--tolerance",
    type=FiniteFloatRange(min=0, min_open=True),
    help="Minutes a change and its deployment may be apart (SHIPLEDGER_RECONCILE_TOLERANCE_S).",
)
@format_option(
    ["table", "json", "csv"],
    "table: a summary, completeness per team and the findings; json: all of it; csv: findings.",
)
@ledger_options
def reconcile_command(
    source: str,
    files: tuple[Path, ...],
    mapping: Path | None,
    quarter: str | None,
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
    tolerance: float | None,
    fmt: str,
    clickhouse_url: str | None,
    data_dir: Path | None,
) -> None:
    """Compare deployment evidence that does not come from the pipelines with the ledger,
    store the findings and print them (docs/reconcile.md).

    \b
    Findings: unreported (a change the evidence shows, no deployment of that service and
    environment near it in the ledger), unobserved (a succeeded deployment in the period, of
    a service and environment the evidence covers, that it never shows), timing (matched,
    but further apart than the tolerance). Completeness per team: matched changes over
    observed ones. Malformed entries are counted and listed with file:line and why. The same
    run again (same files, mapping, period, ledger) stores nothing new.

    \b
    Examples:
      shipledger reconcile --source k8s-audit --mapping reconcile.yaml --quarter 2026Q4 audit*.log
      shipledger reconcile --source cloudtrail --since 2026-11-01 --until 2026-11-30 *.json.gz
      shipledger reconcile --source access-log --mapping m.yaml --format json access.log
    """
    settings = ledger_settings("`shipledger reconcile`", clickhouse_url, data_dir)
    mapping_path = mapping or settings.reconcile_mapping_file
    if mapping_path is None:
        raise click.UsageError(
            "no mapping: pass --mapping or set SHIPLEDGER_RECONCILE_MAPPING_FILE"
        )
    try:
        rules = load_mapping(mapping_path)
    except MappingError as exc:
        raise click.BadParameter(str(exc), param_hint="--mapping") from exc
    who = tenant or rules.tenant or settings.tenant
    with _progress() as told:
        evidence = read_evidence(source, files, rules, who, told)
    try:
        start, end = period(
            quarter,
            since.date() if since else None,
            until.date() if until else None,
            (o.at for o, target in evidence.mapped if target.tenant == who),
        )
    except PeriodError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from exc
    close = timedelta(minutes=tolerance or settings.reconcile_tolerance_s / 60)
    # A match window narrower than the tolerance would leave a match unpaired.
    window = max(close, timedelta(seconds=settings.reconcile_match_window_s))
    tolerances = Tolerances(close, window)
    scope = Scope(source, who, start, end)
    with written_ledger(settings, "use a ClickHouse server, or ") as store:
        run = _reconcile(store, scope, rules, evidence, tolerances)
    click.echo(report(run, fmt))


def _reconcile(
    store: LedgerStore, scope: Scope, rules: Mapping, evidence: Evidence, tolerances: Tolerances
) -> Run:
    reader = LedgerReader(store)
    wide = tolerances.match_window
    deployments = reader.deployments_between(scope.tenant, scope.start - wide, scope.end + wide)
    changes = group_changes(evidence.mapped, tolerances.tolerance)

    def covered(service: str, environment: str) -> bool:
        return any(c.covers(service, environment) for c in rules.covers)

    comparison = compare(
        scope, changes, deployments, covered, reader.service_teams(scope.tenant), tolerances
    )
    run = run_id(scope, tolerances, rules, evidence.digests, deployments)
    stored = store_findings(store, scope, run, comparison.findings)
    return Run(scope, run, evidence, comparison, stored)


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress bar per evidence file on stderr (shown on a terminal only), as a factory
    of the callbacks `read_evidence` tells the bytes read."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        DownloadColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bars:

        def told(path: Path) -> BytesRead:
            task = bars.add_task(path.name[:40], total=path.stat().st_size)
            return lambda done: bars.update(task, completed=done)

        yield told


def report(run: Run, fmt: str) -> str:
    """The run as `fmt`."""
    rows = [_row(f) for f in run.comparison.findings]
    if fmt == "csv":
        return render_rows(rows, ["source", "tenant", *COLUMNS], "csv")
    evidence, comparison = run.evidence, run.comparison
    teams = [
        {"team": c.team, "observed": c.observed, "matched": c.matched, "completeness": c.ratio}
        for c in comparison.completeness
    ]
    if fmt == "json":
        return json.dumps(
            {
                "run_id": run.run_id,
                "source": run.scope.source,
                "tenant": run.scope.tenant,
                "period": [run.scope.start.isoformat(), run.scope.end.isoformat()],
                "entries": evidence.entries,
                "changes": comparison.changes,
                "matched": comparison.matched,
                "stored_now": run.stored_now,
                "completeness": teams,
                "findings": rows,
                "malformed": [asdict(m) for m in evidence.malformed],
                "unmapped": [
                    {"location": o.location, "action": o.action, "workload": o.workload}
                    for o in evidence.unmapped
                ],
            },
            indent=2,
        )
    stored = "stored" if run.stored_now else "already stored (the same run)"
    period_text = f"{run.scope.start:%Y-%m-%d} to {run.scope.end - timedelta(days=1):%Y-%m-%d}"
    parts = [
        f"{run.scope.source} {run.scope.tenant} {period_text}: {evidence.entries} entries, "
        f"{comparison.changes} changes, {comparison.matched} matched; "
        f"{len(rows)} findings {stored}; run {run.run_id[:16]}",
    ]
    if teams:
        parts.append(
            render_rows(
                teams, ["team", "observed", "matched", "completeness"], "table", text=("team",)
            )
        )
    if rows:
        parts.append(render_rows(rows, COLUMNS, "table", text=COLUMNS))
    for label, items in (
        ("malformed", [f"{m.location}: {m.reason}" for m in evidence.malformed]),
        (
            "unmapped (no rule)",
            [f"{o.location}: {o.action} {o.workload}" for o in evidence.unmapped],
        ),
    ):
        if items:
            more = (
                f"\n  ... {len(items) - SHOWN} more (--format json lists all)"
                if len(items) > SHOWN
                else ""
            )
            parts.append(
                f"{len(items)} {label}:\n" + "\n".join(f"  {i}" for i in items[:SHOWN]) + more
            )
    return "\n\n".join(parts)


def _row(finding: Any) -> dict[str, Any]:
    row = asdict(finding)
    at = row["observed_at"]
    row["observed_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else None
    return row

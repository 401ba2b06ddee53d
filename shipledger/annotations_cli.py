"""`shipledger annotations export`: recent deployments as Grafana annotations or Datadog
events (`shipledger.annotations`), a JSON array of request bodies on stdout."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import click

from shipledger.annotations import COLUMNS, Deployment, Format, export
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.query_cli import QueryUnavailable, run_query
from shipledger.schemas.durations import parse_duration
from shipledger.sinks.ledger.reader import QueryError, chdb_path, quote_str


def deployments_sql(since: datetime, service: str | None, environment: str | None) -> str:
    """The `deployments` rows that started at or after `since`, oldest first."""
    millis = int(since.timestamp() * 1000)
    where = [f"started_at >= fromUnixTimestamp64Milli(toInt64({millis}))"]
    if service:
        where.append(f"service = {quote_str(service)}")
    if environment:
        where.append(f"environment = {quote_str(environment)}")
    # Values are quoted literals, and the query runs read-only through the ledger's guard.
    return (
        f"SELECT {', '.join(COLUMNS)} FROM deployments WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY started_at, deployment_id"
    )


@click.group(name="annotations")
def annotations_group() -> None:
    """Deployments as annotations for Grafana and Datadog."""


@annotations_group.command(name="export")
@format_option(
    ["grafana", "datadog"],
    "grafana: bodies of POST /api/annotations; datadog: bodies of POST /api/v1/events.",
)
@click.option(
    "--since",
    default="1d",
    show_default=True,
    help="Deployments that started this long ago or later (30m, 12h, 7d, 2w).",
)
@click.option("--tenant", help="Only this tenant's deployments.")
@click.option("--service", help="Only this service's deployments.")
@click.option("--environment", help="Only this environment's (canonical name: prod, stage...).")
@click.option("--dashboard-uid", help="grafana: annotate this dashboard (default: organization).")
@click.option(
    "--max-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
    help="Most deployments to export.",
)  # fmt: skip
@data_dir_option
def export_command(
    fmt: str,
    since: str,
    tenant: str | None,
    service: str | None,
    environment: str | None,
    dashboard_uid: str | None,
    max_rows: int,
    data_dir: Path | None,
) -> None:
    """Print recent deployments as a JSON array of request bodies, one per deployment, for
    Grafana's annotations API or Datadog's Events API (README, "Correlate anomalies").

    \b
    Example:
      shipledger annotations export --format grafana --since 1d | jq -c '.[]' |
        while read -r body; do
          curl -sS -X POST "$GRAFANA_URL/api/annotations" \\
            -H "Authorization: Bearer $GRAFANA_TOKEN" -H 'Content-Type: application/json' \\
            -d "$body"
        done
    """
    try:
        window = parse_duration(since, units="mhdw", what="--since")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is not None:
        settings = locate(settings).require("`shipledger annotations export`").settings
    sql = deployments_sql(datetime.now(UTC) - window, service, environment)
    try:
        result = run_query(settings, sql, tenant=tenant, max_rows=max_rows)
    except (QueryError, QueryUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [Deployment.of_row(dict(zip(result.columns, row, strict=True))) for row in result.rows]
    click.echo(json.dumps(export(rows, cast(Format, fmt), dashboard_uid), indent=2))
    if result.truncated:
        click.echo(f"shipledger: only the first {len(rows)} deployments", err=True)

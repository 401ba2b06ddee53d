"""`shipledger suspects`: the deployments most likely behind an incident (docs/triage.md), by
the path that can serve them, as `shipledger metrics dora` does: with embedded chDB and a
running `shipledger up`, its API (`GET /v1/suspects`); otherwise the ledger opened here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from shipledger.cli_types import FiniteFloatRange
from shipledger.dora_cli import located, render, served
from shipledger.locate import cli_settings, data_dir_option
from shipledger.output_format import format_option
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import SuspectsError, SuspectsQuery
from shipledger.stackfile import Params, StackInfo, api_get
from shipledger.suspects import WEIGHTS
from shipledger.tables import render_table

#: The columns of the table and csv forms: the deployment, its score, each part's points.
COLUMNS = [
    "rank",
    "score",
    "deployment_id",
    "service",
    "environment",
    "started_at",
    "status",
    *WEIGHTS,
    "why",
]


def suspect_rows(settings: Settings, query: SuspectsQuery) -> list[dict[str, Any]]:
    """The ranking (`Suspect.to_json`, best first) by the path that can serve it (as `shipledger
    metrics dora` does); what the demo and `shipledger suspects` print. Raises
    MetricsUnavailable."""
    params: Params = [
        ("tenant", query.tenant),
        ("service", query.service),
        ("at", query.at.isoformat()),
        ("lookback_h", query.lookback.total_seconds() / 3600),
        ("limit", query.limit),
        ("depth", query.max_depth),
    ]
    if query.environment is not None:
        params.append(("environment", query.environment))

    def from_api(info: StackInfo) -> list[dict[str, Any]]:
        suspects: list[dict[str, Any]] = api_get(info, "/v1/suspects", params)["suspects"]
        return suspects

    return served(settings, from_api, lambda ledger: [s.to_json() for s in ledger.suspects(query)])


def flat(suspects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each suspect as one row of COLUMNS: its rank and every part's points by name."""
    return [
        {
            **s,
            "rank": rank,
            **{p["name"]: p["points"] for p in s["parts"]},
        }
        for rank, s in enumerate(suspects, start=1)
    ]


def show(suspects: list[dict[str, Any]], fmt: str) -> str:
    """The ranking as `fmt`: table and csv one row per suspect (COLUMNS), json as the API."""
    if fmt == "table":
        rows = flat(suspects)
        cells = [["" if r.get(n) is None else str(r[n]) for n in COLUMNS] for r in rows]
        numeric = [n in ("rank", "score", *WEIGHTS) for n in COLUMNS]
        return render_table(COLUMNS, cells, right=numeric) if rows else "no suspects"
    return render(suspects if fmt == "json" else flat(suspects), COLUMNS, fmt)


@click.command("suspects", context_settings={"max_content_width": 100})
@click.option("--service", required=True, help="Service of the incident.")
@click.option(
    "--at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S"]),
    help="When the incident began (ISO-8601; no offset means UTC; default: now).",
)
@click.option("--tenant", help="Tenant (default SHIPLEDGER_TENANT).")
@click.option("--environment", help="Only deployments to this environment (e.g. prod).")
@click.option(
    "--lookback",
    type=FiniteFloatRange(min=0, min_open=True, max=24 * 30),
    default=24.0,
    show_default=True,
    help="Hours before --at to look at.",
)
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option(
    "--depth",
    type=click.IntRange(0, 10),
    default=3,
    show_default=True,
    help="Dependency hops followed (0: only the service itself).",
)
@format_option(
    ["table", "json", "csv"],
    "table: aligned, a column per part; json: as GET /v1/suspects; csv: as the table.",
)
@data_dir_option
def suspects(
    service: str,
    at: datetime | None,
    tenant: str | None,
    environment: str | None,
    lookback: float,
    limit: int,
    depth: int,
    fmt: str,
    data_dir: Path | None,
) -> None:
    """Rank the recent deployments most likely behind an incident of --service at --at.

    \b
    Candidates: deployments of the service and of the services it depends on (catalog
    dependencies, up to --depth hops) started in the --lookback hours before --at. Each gets
    points (of 100) from six named parts, shown as columns: time_proximity (half the points
    an hour before), dependency_distance (the service itself in full, each hop less),
    change_size (commits shipped), verification (failed or suspect verification, or a
    failed deploy), config_drift (a config_drift alert), rollback (rolled back since);
    `why` says what earned them. docs/triage.md explains the weights.

    \b
    Examples:
      shipledger suspects --service checkout --at 2026-12-01T10:00:00Z
      shipledger suspects --service checkout --environment prod --lookback 4 --format json
    """
    settings = cli_settings(data_dir=data_dir)
    if at is None:
        when = datetime.now(UTC)
    else:
        when = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    try:
        query = SuspectsQuery(
            tenant=tenant or settings.tenant,
            service=service,
            at=when,
            lookback=timedelta(hours=lookback),
            environment=environment,
            limit=limit,
            max_depth=depth,
        )
    except SuspectsError as exc:
        raise click.UsageError(str(exc)) from exc
    rows = located(settings, "`shipledger suspects`", lambda found: suspect_rows(found, query))
    click.echo(show(rows, fmt))

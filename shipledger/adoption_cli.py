"""`shipledger report adoption`: which known services report their deployments, per team and
environment, and the laggards (docs/reports.md, Adoption); by the path that can serve it, as
`shipledger metrics dora` does (a running `up`'s API, else the ledger opened here).

It serves reads the way `dora_cli` does, which the `report` group's own floor may not import:
this module adds the command to that group, and `shipledger report` is loaded from here."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from shipledger.dora_cli import located, render, served_report
from shipledger.locate import cli_settings, data_dir_option
from shipledger.output_format import format_option
from shipledger.report.cli import report
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import (
    AdoptionError,
    AdoptionQuery,
    LedgerReader,
    adoption_report,
)
from shipledger.stackfile import Params

__all__ = ["adoption", "report"]

#: The report's sections: one table each (`--section` picks one for csv).
SECTIONS = ("teams", "services")
_TEXT = ("tenant", "team", "environment", "service", "status", "last_seen", "environments")


def adoption_json(settings: Settings, query: AdoptionQuery) -> dict[str, Any]:
    """The report (`adoption_report`) by the path that can serve it."""
    params: Params = [("days", query.days)]
    if query.tenant is not None:
        params.append(("tenant", query.tenant))

    def here(ledger: LedgerReader) -> dict[str, Any]:
        return adoption_report(ledger.adoption(query, datetime.now(UTC)))

    return served_report(settings, "/v1/reports/adoption", params, here)


@report.command("adoption", context_settings={"max_content_width": 100})
@click.option("--tenant", help="Only this tenant (default: every tenant this ledger holds).")
@click.option(
    "--days",
    type=int,
    default=30,
    show_default=True,
    help="A service with no deployment for this many days is silent (a laggard).",
)
@click.option(
    "--section",
    type=click.Choice(SECTIONS),
    help="Only this table (csv prints one: default teams).",
)
@format_option(
    ["table", "json", "csv"],
    "table: the teams, then the services; json: both; csv: one section (--section).",
)
@data_dir_option
def adoption(
    tenant: str | None, days: int, section: str | None, fmt: str, data_dir: Path | None
) -> None:
    """Coverage per team and environment: the services known (catalog, deployments, and the
    latest CMDB export reconciled) that emit deployments and those that do not, with the
    recent deployments' gaps; then every service with its last deployment, laggards first.

    \b
    Team columns (environment * = all of the team's): services, emitting (a deployment in
    the last --days), silent (deployed before, none since), never, coverage (emitting /
    services), deployments (last --days), no_emitter_metadata (without the pipeline
    provider, run URL or commit the emitter sets), missing_digest_rate, missing_ticket_rate.

    \b
    Examples:
      shipledger report adoption --days 14
      shipledger report adoption --tenant retail --section services --format csv
    """
    try:
        query = AdoptionQuery(days=days, tenant=tenant)
    except AdoptionError as exc:
        raise click.BadParameter(str(exc), param_hint="--days") from exc
    settings = cli_settings(data_dir=data_dir)
    report = located(
        settings, "`shipledger report adoption`", lambda found: adoption_json(found, query)
    )
    if fmt == "json":
        wanted = [section] if section else list(SECTIONS)
        click.echo(json.dumps({name: report[name] for name in wanted}, indent=2))
        return
    shown = [section] if section else (["teams"] if fmt == "csv" else list(SECTIONS))
    click.echo(
        "\n\n".join(
            render(report[name], report[f"{name[:-1]}_columns"], fmt, _TEXT) for name in shown
        )
    )

"""`shipledger audit`: verify the ledger's hash chains; print server grants."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shipledger.settings import Settings
from shipledger.sinks.cli_options import ledger_options, ledger_settings
from shipledger.sinks.ledger import tiers
from shipledger.sinks.ledger.audit import verify as verify_ledger
from shipledger.sinks.ledger.grants import grants_sql
from shipledger.sinks.ledger.query import QueryLimits
from shipledger.sinks.ledger.store import LedgerStore, StoreError


@click.group("audit")
def audit() -> None:
    """Tamper evidence and access control of the ClickHouse ledger."""


@audit.command("verify")
@click.option("--tenant", help="Only this tenant's chains.")
@click.option("--table", help="Only this table (deployment_events, alerts, ...).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one finding a line and a summary; json: the whole report.",
)
@ledger_options
def verify(
    tenant: str | None,
    table: str | None,
    fmt: str,
    clickhouse_url: str | None,
    data_dir: Path | None,
) -> None:
    """Recompute every hash chain and report rows changed, removed or inserted around the sink.

    Exit 0: clean. Exit 1: tampering found (each finding names the table, tenant, retention
    class, chain_seq and the row's id). Rows deleted by their retention TTL are not tampering.
    A chDB data dir can be open in one process only: stop `shipledger up` first, or point
    --clickhouse-url at a server.

    \b
    Examples:
      shipledger audit verify
      shipledger audit verify --tenant bank --table alerts --format json
    """
    settings = ledger_settings(clickhouse_url, data_dir)
    try:
        with LedgerStore.open(settings) as store:
            if not store.database_exists():
                raise click.ClickException(
                    f"no ledger in {store.url} yet: nothing to verify (run `shipledger up` first)"
                )
            # The hot+cold views over the cold files present now (reading never migrates).
            tiers.ensure_tiers(store)
            report = verify_ledger(store, tenant=tenant, table=table)
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.text())
    raise SystemExit(0 if report.clean else 1)


@audit.command("grants")
@click.option(
    "--database", default=None, help="Database (default: SHIPLEDGER_CLICKHOUSE_DATABASE)."
)
@click.option("--tenant", "tenants", multiple=True, help="Add a row-policy role per tenant.")
def grants(database: str | None, tenants: tuple[str, ...]) -> None:
    """Print the SQL for a ClickHouse server: a sink role (INSERT + SELECT on the ledger, no
    ALTER/DELETE), an analyst role (SELECT only), per-tenant row policies, and a settings
    profile that keeps analysts read-only within the query limits (SHIPLEDGER_QUERY_*).

    Runs nothing: review the output and apply it as an administrator (chDB has no users).

    \b
    Example:
      shipledger audit grants --tenant bank --tenant shop > grants.sql
    """
    settings = Settings()
    profile = {**QueryLimits.of(settings).engine_settings(), "readonly": 1}
    sql = grants_sql(database or settings.clickhouse_database, tenants, profile)
    click.echo(sql, nl=False)

"""`shipledger audit`: verify the ledger's hash chains; print server grants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import click
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from shipledger.output_format import format_option
from shipledger.settings import Settings, chdb_path
from shipledger.sinks.cli_options import ledger_options, ledger_settings
from shipledger.sinks.ledger import tiers
from shipledger.sinks.ledger.audit import verify as verify_ledger
from shipledger.sinks.ledger.grants import grants_sql
from shipledger.sinks.ledger.query import QueryLimits
from shipledger.sinks.ledger.query_errors import first_line
from shipledger.sinks.ledger.store import LedgerStore, StoreError
from shipledger.stackfile import read_stack


@click.group("audit")
def audit() -> None:
    """Tamper evidence and access control of the ClickHouse ledger."""


@audit.command("verify")
@click.option("--tenant", help="Only this tenant's chains.")
@click.option("--table", help="Only this table (deployment_events, alerts, ...).")
@format_option(["text", "json"], "text: one finding a line and a summary; json: the whole report.")
@ledger_options
def verify(
    tenant: str | None,
    table: str | None,
    fmt: str,
    clickhouse_url: str | None,
    data_dir: Path | None,
) -> None:
    """Recompute every hash chain and report rows changed, removed or inserted around the sink.

    \b
    Exit codes (for cron jobs and CI):
      0  clean: every chain verifies
      1  tampering found: each finding names the table, tenant, retention class, chain_seq
         and the row's id (rows deleted by their retention TTL are not tampering)
      2  usage error (a bad option)
      3  could not verify: the ledger is busy (a running `shipledger up` owns the embedded
         chDB data dir, which one process only can open), absent, or unreachable; nothing
         was checked. Stop `up` first, or point --clickhouse-url at a ClickHouse server.

    \b
    Examples:
      shipledger audit verify
      shipledger audit verify --tenant bank --table alerts --format json
    """
    try:
        settings = ledger_settings("`shipledger audit verify`", clickhouse_url, data_dir)
    except click.ClickException as exc:  # no data dir found, several stacks running
        _cannot_verify(exc.message)
    running = read_stack(settings) if chdb_path(settings.resolved_clickhouse_url) else None
    if running is not None:
        _cannot_verify(
            f"`shipledger up` (pid {running.pid}) is running on {settings.data_dir} and owns "
            "its embedded ledger, which one process only can open: stop it (Ctrl-C) and run "
            "`shipledger audit verify` again, or run the ledger on a ClickHouse server"
        )
    try:
        with LedgerStore.open(settings, existing=True) as store:
            if not store.database_exists():
                _cannot_verify(f"no ledger in {store.url} yet: run `shipledger up` first")
            # The hot+cold views over the cold files present now (reading never migrates).
            tiers.ensure_tiers(store)
            report = verify_ledger(store, tenant=tenant, table=table)
    except ValueError as exc:  # a --table that is not a ledger table
        raise click.BadParameter(str(exc), param_hint="--table") from exc
    except StoreError as exc:  # busy (another process owns the chDB dir), absent, unreachable
        _cannot_verify(str(exc))
    except ClickHouseError as exc:  # a server that fails mid-way
        _cannot_verify(f"the ledger could not be read: {first_line(exc)}")
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.text())
    raise SystemExit(0 if report.clean else 1)


#: `audit verify`'s exit code when nothing could be checked (not tampering: that is 1).
CANNOT_VERIFY = 3


def _cannot_verify(message: str) -> NoReturn:
    click.echo(f"shipledger: cannot verify: {message}", err=True)
    raise SystemExit(CANNOT_VERIFY)


@audit.command("grants")
@click.option(
    "--database",
    default=None,
    help="Database (default: SHIPLEDGER_CLICKHOUSE_DATABASE, or SHIPLEDGER_REGION's ledger).",
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
    sql = grants_sql(database or settings.ledger_database, tenants, profile)
    click.echo(sql, nl=False)

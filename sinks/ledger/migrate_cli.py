"""`shipledger migrate`: apply, show or write the ledger's schema migrations."""

from __future__ import annotations

from pathlib import Path

import click

from shipledger.sinks.cli_options import ledger_options, ledger_settings
from shipledger.sinks.ledger.dora import rebuild_dora
from shipledger.sinks.ledger.migrate import (
    MigrationError,
    applied_migrations,
    baseline_migration,
    check_history,
    compare,
    load_migrations,
    new_migration_file,
    next_migration,
    scratch_schemas,
    status_lines,
)
from shipledger.sinks.ledger.store import LedgerStore, StoreError

_SOURCE_DIR = Path("sinks/ledger/migrations")


@click.command("migrate")
@click.option("--status", is_flag=True, help="List migrations: applied (when) or pending.")
@click.option(
    "--new",
    "new_name",
    metavar="NAME",
    help="Write the next migration from the difference between the desired schema (the catalog's "
    "tables, laid out by sinks/ledger/ddl.py) and the existing migrations (run in the "
    "repository; touches no database).",
)
@click.option(
    "--squash",
    is_flag=True,
    help="Replace every migration file by one baseline written from the desired schema, with "
    "the replaced files' checksums in its header (run in the repository; touches no database).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=_SOURCE_DIR,
    show_default=True,
    help="Migrations source directory, for --new and --squash.",
)
@click.option(
    "--rebuild-aggregates",
    is_flag=True,
    help="Then fold every deployment record, hot and archived, into the DORA aggregates "
    "again: once, on a ledger that archived records before dora_deployments existed (safe "
    "to repeat).",
)
@ledger_options
def migrate(
    status: bool,
    new_name: str | None,
    squash: bool,
    directory: Path,
    rebuild_aggregates: bool,
    clickhouse_url: str | None,
    data_dir: Path | None,
) -> None:
    """Migrate the ClickHouse ledger forward by numbered, recorded migrations.

    The DDL never changes by hand: sinks/ledger/ddl.py declares the desired schema (a table per
    stored topic of schemas/catalog.yaml, columns from its Avro schema);
    sinks/ledger/migrations/NNNN_name.sql take a database there, each recorded in
    schema_migrations with its checksum (a changed applied file is an error). The first file
    may be a baseline that replaces the ones before it: a ledger that applied those, with the
    checksums its header lists (or an earlier baseline it lists and the files after it), is at
    the baseline; one that applied only some is refused.

    \b
    Examples:
      shipledger migrate                   # apply pending migrations (the sink does too)
      shipledger migrate --status          # what is applied, what is pending
      shipledger migrate --new add_team    # after changing an Avro schema, the catalog (a new
                                           # family's table) or sinks/ledger/ddl.py: writes
                                           # sinks/ledger/migrations/NNNN_add_team.sql;
                                           # review it, make install, commit it
      shipledger migrate --squash          # every file -> NNNN_baseline.sql (NNNN: the last)
      shipledger migrate --rebuild-aggregates  # and refold the DORA aggregates (docs/metrics.md)

    With SHIPLEDGER_REGIONAL_LEDGERS, every regional ledger too (docs/sovereignty.md).
    """
    if new_name:
        _write_new(new_name, directory)
        return
    if squash:
        _squash(directory)
        return
    settings = ledger_settings("`shipledger migrate`", clickhouse_url, data_dir)
    # Every ledger: the default one and each region's (docs/sovereignty.md).
    regions = (None, *sorted(settings.regional_ledgers))
    try:
        for region in regions:
            with LedgerStore.open(settings.for_region(region)) as store:
                if len(regions) > 1:
                    click.echo(f"ledger {region or '(default)'}: database {store.database}")
                _migrate_one(store, status, rebuild_aggregates)
    except (StoreError, MigrationError) as exc:
        raise click.ClickException(str(exc)) from exc


def _migrate_one(store: LedgerStore, status: bool, rebuild_aggregates: bool) -> None:
    if status:
        _print_status(store)
        return
    done = store.ensure_schema()
    click.echo("applied: " + ", ".join(done) if done else "schema is up to date (nothing to apply)")
    if rebuild_aggregates:
        click.echo("folding every deployment record into the DORA aggregates ...")
        click.echo(f"folded {rebuild_dora(store):,} deployment records")


def _print_status(store: LedgerStore) -> None:
    migrations = load_migrations()
    store.select_database(store.database)
    applied = applied_migrations(store)
    for line in status_lines(migrations, applied):
        click.echo(line)
    check_history(migrations, applied)


def _source_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise click.UsageError(
            f"{directory} is not a directory: run from the repository root or pass --dir"
        )


def _squash(directory: Path) -> None:
    _source_dir(directory)
    try:
        existing = load_migrations(directory)
        desired, migrated = scratch_schemas(existing)
        if compare(desired, migrated):
            raise MigrationError(
                "the migrations do not produce the desired schema: write the missing one "
                "(--new NAME) first, so that ledgers at the baseline have what it declares"
            )
        baseline = baseline_migration(existing, next_migration(desired, {}))
        # What ClickHouse makes of the baseline alone, to the letter, is what the files made.
        if scratch_schemas([baseline])[1] != migrated:
            raise MigrationError("the baseline does not produce what the files produce")
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    for migration in existing:
        (directory / migration.filename).unlink()
    path = directory / baseline.filename
    path.write_text(baseline.sql, encoding="utf-8")
    click.echo(
        f"wrote {path} in place of {len(existing)} files: review it, run `make install`, commit it"
    )


def _write_new(name: str, directory: Path) -> None:
    _source_dir(directory)
    try:
        existing = load_migrations(directory)
        desired, migrated = scratch_schemas(existing)
        sql = next_migration(desired, migrated)
        if not sql:
            click.echo("the migrations already produce the desired schema: nothing to write")
            return
        path = new_migration_file(directory, name, sql, existing)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {path}: review it (lines marked REVIEW), run `make install`, commit it")

"""The options every ledger command shares (`sink`, `migrate`, `audit verify`, `archive`): where
the ClickHouse ledger is, the settings they make, and the ledger the commands that write its
derived tables open."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.settings import Settings, chdb_path
from shipledger.sinks.ledger import tiers
from shipledger.sinks.ledger.store import LedgerStore, StoreError
from shipledger.stackfile import read_stack

F = TypeVar("F", bound=Callable[..., Any])


def ledger_options(command: F) -> F:
    """Add `--clickhouse-url` and `--data-dir` (also read from their SHIPLEDGER_* variables)."""
    command = data_dir_option(command)
    return click.option(
        "--clickhouse-url",
        envvar="SHIPLEDGER_CLICKHOUSE_URL",
        help="chdb:///dir or http(s)://user:pw@host:8123. Default: chDB in <data-dir>/clickhouse.",
    )(command)


def ledger_settings(
    what: str, clickhouse_url: str | None, data_dir: Path | None, **more: Any
) -> Settings:
    """Settings from the environment with the given options on top; for the embedded ledger,
    the data dir `shipledger.locate` finds (NoDataDir naming `what` when there is none)."""
    settings = cli_settings(clickhouse_url=clickhouse_url or None, data_dir=data_dir, **more)
    if chdb_path(settings.resolved_clickhouse_url) is None:
        return settings  # a ClickHouse server: no data dir involved
    return locate(settings).require(what).settings


@contextmanager
def written_ledger(
    settings: Settings, instead: str, *, create: bool = False
) -> Iterator[LedgerStore]:
    """The ledger, migrated and with its tiers built, for a command that writes its derived
    tables (`cmdb reconcile`, `reconcile`) or its history (`import`, which may `create` it). A
    ClickException when `shipledger up` owns the embedded ledger (`instead`: what else to do
    than stopping it, ending in `, or `), when there is no ledger yet (unless `create`), or
    when ClickHouse refuses, also while the block runs."""
    running = read_stack(settings) if chdb_path(settings.resolved_clickhouse_url) else None
    if running is not None:
        raise click.ClickException(
            f"`shipledger up` (pid {running.pid}) owns the embedded ledger on "
            f"{settings.data_dir}: {instead}stop it and run this again"
        )
    try:
        with LedgerStore.open(settings, existing=not create) as store:
            if not create and not store.database_exists():
                raise click.ClickException(f"no ledger in {store.url} yet: run `shipledger up`")
            store.ensure_schema()
            tiers.ensure_tiers(store)
            yield store
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc

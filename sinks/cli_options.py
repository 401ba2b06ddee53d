"""The options every ledger command shares (`sink`, `migrate`, `audit verify`, `archive`): where
the ClickHouse ledger is, and the settings they make."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.settings import Settings
from shipledger.sinks.ledger.store import chdb_path

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

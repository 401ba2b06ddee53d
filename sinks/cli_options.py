"""The options every ledger command shares (`sink`, `migrate`, `audit verify`): where the
ClickHouse ledger is, and the settings they make."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shipledger.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def ledger_options(command: F) -> F:
    """Add `--clickhouse-url` and `--data-dir` (also read from their SHIPLEDGER_* variables)."""
    command = click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="SHIPLEDGER_DATA_DIR",
        help="Data dir of the embedded stack (chDB, stack file).",
    )(command)
    return click.option(
        "--clickhouse-url",
        envvar="SHIPLEDGER_CLICKHOUSE_URL",
        help="chdb:///dir or http(s)://user:pw@host:8123. Default: chDB in <data-dir>/clickhouse.",
    )(command)


def ledger_settings(clickhouse_url: str | None, data_dir: Path | None, **more: Any) -> Settings:
    """Settings from the environment, with the options that were given on top."""
    given = {"clickhouse_url": clickhouse_url, "data_dir": data_dir, **more}
    return Settings(**{name: value for name, value in given.items() if value})

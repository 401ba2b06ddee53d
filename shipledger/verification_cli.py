"""`shipledger verification`: post-deploy verification verdicts (docs/verification.md), read
by the path that can serve them, as `shipledger metrics dora` does: with embedded chDB and a
running `shipledger up`, its API (`GET /v1/verifications`); otherwise the ledger opened here.
`run` decides the windows due now once (`up` does it every SHIPLEDGER_VERIFICATION_INTERVAL_S).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from shipledger.dora_cli import render
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.producers.api.verification_route import verdict_view
from shipledger.schemas.policy import VERDICTS
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import (
    LedgerReader,
    LedgerUnavailable,
    VerdictFilter,
    chdb_path,
)
from shipledger.stackfile import ApiUnavailable, api_get, read_stack
from shipledger.up.verifier import run_once

#: The columns of the table and csv forms (json has the evidence too).
COLUMNS = [
    "deployment_id",
    "tenant",
    "service",
    "environment",
    "verdict",
    "score",
    "check_count",
    "window_end",
    "decided_at",
]
_TEXT = tuple(c for c in COLUMNS if c not in ("score", "check_count"))
_FORMATS = format_option(
    ["table", "json", "csv"], "table: aligned; json: an array with the evidence; csv."
)


def _settings(data_dir: Path | None, what: str) -> Settings:
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is not None:  # not a server: find the stack
        settings = locate(settings).require(what).settings
    return settings


def verdicts(settings: Settings, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The latest verdicts matching `params` (`deployment_id`, `tenant`, `verdict`, `service`,
    `limit`) as the API shows them, by the path that can serve them."""
    running = read_stack(settings) if chdb_path(settings.resolved_clickhouse_url) else None
    if running is not None and running.api_url:
        one = params.get("deployment_id")
        path = f"/v1/deployments/{quote(one, safe='')}/verification" if one else "/v1/verifications"
        query = {k: v for k, v in params.items() if v is not None and k in ("verdict", "service")}
        if not one:
            query["limit"] = params.get("limit") or 100
        try:
            answer = api_get(running, path, list(query.items()), missing_ok=bool(one))
        except ApiUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
        if answer is None:
            return []
        rows: list[dict[str, Any]] = [answer] if one else answer
        tenant = params.get("tenant")
        return [r for r in rows if tenant is None or r["tenant"] == tenant]
    if running is not None:
        raise click.ClickException(f"`shipledger up` (pid {running.pid}) serves no API")
    try:
        with LedgerReader.open(settings) as ledger:
            found = ledger.verifications(VerdictFilter(**params))
    except LedgerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    return [verdict_view(v) for v in found]


def _echo(rows: list[dict[str, Any]], fmt: str) -> None:
    click.echo(render(rows, COLUMNS, fmt, text=_TEXT))


@click.group("verification")
def verification() -> None:
    """Post-deploy verification: did each succeeded deployment pass its checks?

    \b
    A deployment's window opens when it succeeds and lasts its environment's policy
    `verification` window (prod 15m by default); its checks and health signals make a score
    and a verdict: verified, suspect, failed_verification, or unverified (no check at all).
    docs/verification.md says how.
    """


@verification.command("show", context_settings={"max_content_width": 100})
@click.argument("deployment_id")
@click.option("--tenant", help="The deployment's tenant (default: any).")
@_FORMATS
@data_dir_option
def show(deployment_id: str, tenant: str | None, fmt: str, data_dir: Path | None) -> None:
    """The verdict of one deployment; `--format json` adds its evidence (every check, pass or
    fail, when).

    \b
    Examples:
      shipledger verification show gh-1234-prod
      shipledger verification show gh-1234-prod --format json
    """
    settings = _settings(data_dir, "`shipledger verification show`")
    rows = verdicts(settings, {"deployment_id": deployment_id, "tenant": tenant, "limit": 1})
    if not rows:
        raise click.ClickException(
            f"no verdict for {deployment_id!r} yet: unknown, not succeeded, or its window is open"
        )
    _echo(rows, fmt)


@verification.command("list", context_settings={"max_content_width": 100})
@click.option("--tenant", help="Only this tenant.")
@click.option("--verdict", type=click.Choice(VERDICTS), help="Only this verdict.")
@click.option("--service", help="Only this service.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@_FORMATS
@data_dir_option
def list_verdicts(
    tenant: str | None,
    verdict: str | None,
    service: str | None,
    limit: int,
    fmt: str,
    data_dir: Path | None,
) -> None:
    """The latest verdicts, newest window first.

    \b
    Examples:
      shipledger verification list --verdict failed_verification
      shipledger verification list --service checkout --format csv
    """
    settings = _settings(data_dir, "`shipledger verification list`")
    params = {"tenant": tenant, "verdict": verdict, "service": service, "limit": limit}
    _echo(verdicts(settings, params), fmt)


@verification.command("run", context_settings={"max_content_width": 100})
@_FORMATS
@data_dir_option
def run(fmt: str, data_dir: Path | None) -> None:
    """Decide the verdicts of the windows that closed, once, and print those that changed
    (`shipledger up` does it by itself every SHIPLEDGER_VERIFICATION_INTERVAL_S seconds; run
    this against a ledger no `up` owns).

    \b
    Example:
      shipledger verification run --format json
    """
    settings = _settings(data_dir, "`shipledger verification run`")
    if chdb_path(settings.resolved_clickhouse_url) and read_stack(settings) is not None:
        raise click.ClickException("`shipledger up` owns this ledger and decides the verdicts")
    try:
        decided = run_once(settings)
    except LedgerUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    rows = verdicts(settings, {"limit": 1000})
    changed = {(d.deployment.tenant, d.deployment.deployment_id) for d in decided}
    _echo([r for r in rows if (r["tenant"], r["deployment_id"]) in changed], fmt)

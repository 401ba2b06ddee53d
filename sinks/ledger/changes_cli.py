"""`shipledger changes`: the commits and pull requests each deployment shipped (docs/changes.md).

`show` reads by the path that can serve it, as `shipledger metrics dora` does: with embedded
chDB and a running `shipledger up`, its API (`GET /v1/deployments/{id}/changes`); otherwise
the ledger opened here. `recompute` writes, so it needs the ledger itself (a ClickHouse server,
or the embedded data dir while no stack owns it).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.change_sets import COMMIT_FIELDS, SUMMARY_FIELDS, ChangeSets
from shipledger.sinks.ledger.reader import (
    LedgerReader,
    LedgerUnavailable,
    chdb_path,
    serving_stack,
)
from shipledger.sinks.ledger.store import LedgerStore, StoreError
from shipledger.stackfile import ApiUnavailable, StackInfo, api_get, read_stack
from shipledger.tables import render_table


class ChangesUnavailable(RuntimeError):
    """No path can serve the change set (API down, no ledger)."""


def _from_api(info: StackInfo, deployment_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = api_get(
        info, f"/v1/deployments/{quote(deployment_id, safe='')}/changes", missing_ok=True
    )
    return found


def change_set(
    settings: Settings, deployment_id: str, tenant: str | None = None
) -> dict[str, Any] | None:
    """The change set of `deployment_id` as `GET /v1/deployments/{id}/changes` answers it
    (JSON-ready), by the path that can serve it; None when there is none. What `make demo`
    prints for a deployment."""
    try:
        running = serving_stack(settings)
        if running is not None:
            return _from_api(running, deployment_id)
        with LedgerReader.open(settings) as ledger:
            found = ledger.change_set(tenant, deployment_id)
            # This process holds the privacy key (if any): it is shown the names.
            shown = None if found is None else ledger.reveal(found.as_dict())
    except (LedgerUnavailable, ApiUnavailable) as exc:
        raise ChangesUnavailable(str(exc)) from exc
    if shown is None:
        return None
    # As the API encodes it: timestamps in ISO 8601.
    encoded: dict[str, Any] = json.loads(json.dumps(shown, default=_iso))
    return encoded


def _iso(value: datetime) -> str:
    return value.isoformat()


def render(found: dict[str, Any], fmt: str) -> str:
    """A change set as `fmt`: table (summary lines, then one row per commit), json (the API's
    answer), csv (one row per commit, the summary's range columns repeated)."""
    if fmt == "json":
        return json.dumps(found, indent=2)
    cells = [["" if c[n] is None else str(c[n]) for n in COMMIT_FIELDS] for c in found["commits"]]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["deployment_id", "from_sha", "to_sha", "reverse", *COMMIT_FIELDS])
        lead = [found["deployment_id"], found["from_sha"] or "", found["to_sha"], found["reverse"]]
        writer.writerows([*lead, *row] for row in cells)
        return out.getvalue().rstrip("\n")
    summary = "\n".join(
        f"{name}: {'' if found[name] is None else found[name]}" for name in SUMMARY_FIELDS
    )
    if not cells:
        return f"{summary}\n(no commits)"
    table = render_table(
        list(COMMIT_FIELDS), cells, right=[n == "lead_time_s" for n in COMMIT_FIELDS]
    )
    return f"{summary}\n\n{table}"


@click.group("changes")
def changes() -> None:
    """What each deployment shipped: commits, pull requests, authors (docs/changes.md)."""


@changes.command("show", context_settings={"max_content_width": 100})
@click.argument("deployment_id")
@click.option("--tenant", help="The deployment's tenant (default: any tenant).")
@format_option(
    ["table", "json", "csv"],
    "table: the range, then its commits; json: the API's answer; csv: one row per commit.",
)
@data_dir_option
def show(deployment_id: str, tenant: str | None, fmt: str, data_dir: Path | None) -> None:
    """The commits and pull requests DEPLOYMENT_ID shipped: the range since the previous
    succeeded deployment of its service to its environment (reverse: a rollback's range, the
    commits it took out), each commit's pull request, author and lead time in seconds.

    \b
    Examples:
      shipledger changes show dep-42
      shipledger changes show dep-42 --format json
      shipledger changes show dep-42 --format csv > dep-42-commits.csv
    """
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is not None:  # not a server: find the stack
        settings = locate(settings).require("`shipledger changes show`").settings
    try:
        found = change_set(settings, deployment_id, tenant)
    except ChangesUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    if found is None:
        raise click.ClickException(
            f"no change set for deployment {deployment_id!r} (unknown, not finished yet, or "
            "without a commit)"
        )
    click.echo(render(found, fmt))


@changes.command("recompute", context_settings={"max_content_width": 100})
@click.argument("deployment_ids", nargs=-1, required=True)
@click.option("--tenant", help="The deployments' tenant (default: any tenant).")
@data_dir_option
def recompute(deployment_ids: tuple[str, ...], tenant: str | None, data_dir: Path | None) -> None:
    """Compute the change sets of DEPLOYMENT_IDS again from their latest records and the
    source events stored now (a push that reached the ledger after the deployment finished
    and did not name its commit; a changed `monorepos:` policy). Writes to the ledger: a
    ClickHouse server, or the embedded data dir while no `shipledger up` owns it.

    \b
    Examples:
      shipledger changes recompute dep-42 dep-43
      SHIPLEDGER_POLICY_FILE=policy.yaml shipledger changes recompute --tenant acme dep-42
    """
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is not None:
        running = read_stack(settings)
        if running is not None:
            raise click.ClickException(
                f"`shipledger up` (pid {running.pid}) owns the chDB data dir: stop it first "
                "(its sink recomputes a deployment when the push of its commit arrives)"
            )
    try:
        with LedgerStore.open(settings, existing=True) as store:
            stored = ChangeSets.from_settings(
                settings, store, load_policy(settings.policy_file)
            ).recompute(tenant, list(deployment_ids))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"recomputed {stored} change set(s) of {len(deployment_ids)} deployment(s)")

"""What the demo's parts share: posting through the ingest API, waiting for ClickHouse to hold
what was sent, printing a titled table."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import httpx

from shipledger.producers.api.auth import AuthStore
from shipledger.tables import render_table
from shipledger.up.stack import Stack


def ingest_tokens(stack: Stack, tenants: set[str]) -> dict[str, str]:
    """A new API token of scope `ingest` (a pipeline's) for each of `tenants`."""
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        return {
            tenant: auth.create_token(tenant, ("ingest",), name="demo")[0] for tenant in tenants
        }
    finally:
        auth.close()


def post_through_api(stack: Stack, objects: list[dict[str, object]]) -> None:
    """POST `objects` to the stack's ingest API, with one ingest token per tenant."""
    assert stack.api is not None
    tokens = ingest_tokens(stack, {str(o["tenant"]) for o in objects})
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        for tenant, token in tokens.items():
            batch = [o for o in objects if o["tenant"] == tenant]
            answer = client.post(
                "/v1/events", json=batch, headers={"Authorization": f"Bearer {token}"}
            )
            if answer.status_code != 202:
                raise click.ClickException(
                    f"the ingest API answered {answer.status_code}: {answer.text}"
                )


#: What `wait_for` counts beside tables and views: (table, which rows).
RESOLUTIONS, BREAK_GLASS, TICKETS = "resolutions", "break_glass alerts", "tickets"
COUNTS = {
    RESOLUTIONS: ("alerts", "kind = 'resolution'"),
    BREAK_GLASS: ("alerts", "rule = 'break_glass'"),
    # Resolutions close tickets (action 'resolve'): a ticket is an alert's trigger.
    TICKETS: ("escalations", "status = 'delivered' AND action = 'trigger'"),
}


def count(stack: Stack, name: str, where: str | None = None) -> int:
    """Rows of table or view `name` (that meet `where`), or of a count named in `COUNTS`."""
    assert stack.store is not None
    if name in COUNTS:
        name, where = COUNTS[name]
    if where is None:
        return stack.store.count(name)
    db = stack.settings.clickhouse_database
    _, rows = stack.store.query(
        f"SELECT count() FROM {db}.{name} WHERE {where}"  # noqa: S608 (our own names)
    )
    return int(rows[0][0])


def wait_for(
    stack: Stack, want: dict[str, int], timeout_s: float, exact: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Poll ClickHouse until every table or view holds at least `want` rows (those in
    `exact`: exactly); print progress."""
    assert stack.store is not None
    deadline = time.monotonic() + timeout_s
    have: dict[str, int] = {}
    last_line = ""
    while True:
        stack.check()
        have = {table: count(stack, table) for table in want}
        line = "  in ClickHouse: " + ", ".join(f"{t} {have[t]}/{want[t]}" for t in want)
        if line != last_line:
            click.echo(line)
            last_line = line
        if all(have[t] == want[t] if t in exact else have[t] >= want[t] for t in want):
            return have
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"pipeline did not deliver everything within {timeout_s:.0f}s: {have} of {want};"
                f" logs in {stack.settings.data_dir / 'logs'}"
            )
        time.sleep(0.5)


def table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    """Print `rows` under `title` (bold) as an aligned table with `header`."""
    click.secho(f"\n{title}", bold=True)
    click.echo(render_table(header, ([str(c) for c in row] for row in rows), indent=2))


def shipledger_executable() -> str:
    """The `shipledger` command of this install (beside this Python), for the demo's runs of
    the CLI as a user would run it."""
    return str(Path(sys.executable).parent / "shipledger")

"""`shipledger query`: read-only SQL over the ledger, through whichever path can serve it.

A chDB data dir belongs to one process. So: with a ClickHouse server, query it directly;
with embedded chDB and a running `shipledger up`, send the query to the API it advertises in
its stack file (`POST /v1/query`, the contract in `shipledger.sinks.ledger.query`); with no stack
running, open the data dir here. A running stack without an API is reported, not fought.
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import click

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.settings import Settings, chdb_path
from shipledger.sinks.ledger.query_errors import QueryError
from shipledger.sinks.ledger.query_result import FORMATS, QueryLimits, QueryResult
from shipledger.stackfile import read_stack


class QueryUnavailable(RuntimeError):
    """No path can serve the query (data dir owned by a stack without an API, API down)."""


def post_query(
    api_url: str,
    token: str | None,
    sql: str,
    *,
    tenant: str | None,
    max_rows: int,
    timeout_s: float,
) -> QueryResult:
    """Run `sql` through a shipledger API (`POST <api_url>/v1/query`) with `token`: a running
    `up`'s with its local token, or any API with a token whose scopes then bound the rows.

    The request/response shape is in `shipledger.sinks.ledger.query`; the route is
    `shipledger.producers.api.reads.post_query`.
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"sql": sql, "tenant": tenant, "max_rows": max_rows}).encode()
    url = api_url.rstrip("/") + "/v1/query"
    if not url.startswith(("http://", "https://")):  # urllib would open file: URLs too
        raise QueryUnavailable(f"{api_url!r} is not an http(s) URL of a shipledger API")
    # One request: the standard library's client, not httpx (~100 ms of this command's
    # start-up, and only in the [api] extra).
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s + 5) as response:  # noqa: S310
            status, text = response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:  # an answer, with a status other than 2xx
        status, text = exc.code, exc.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSErrors
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise QueryUnavailable(f"the shipledger API at {url} did not answer: {reason}") from exc
    if status == 200:
        return QueryResult.from_json(json.loads(text))
    try:
        detail = json.loads(text).get("error", text)
    except ValueError:
        detail = text
    if status in (400, 422):
        raise QueryError(str(detail))
    raise QueryUnavailable(f"{url} answered {status}: {detail}")


def run_query(settings: Settings, sql: str, *, tenant: str | None, max_rows: int) -> QueryResult:
    """Run a read-only query by the path that can serve it (see the module doc)."""
    url = settings.resolved_clickhouse_url
    if chdb_path(url) is not None:
        running = read_stack(settings)
        if running is not None and running.api_url:
            return post_query(
                running.api_url,
                running.api_token,
                sql,
                tenant=tenant,
                max_rows=max_rows,
                timeout_s=settings.query_timeout_s,
            )
        if running is not None:
            raise QueryUnavailable(
                f"`shipledger up` (pid {running.pid}) owns the chDB data dir {chdb_path(url)} "
                "and serves no query API: stop it to query here, or run the ledger on a "
                "ClickHouse server (SHIPLEDGER_CLICKHOUSE_URL)"
            )
    # Only here, where this process opens the ledger: the reader and the ClickHouse client
    # are most of this command's start-up, which a query answered by a stack's API never needs.
    from shipledger.sinks.ledger.reader import LedgerReader, LedgerUnavailable

    try:
        with LedgerReader.open(settings) as ledger:
            result = ledger.query(
                sql, tenant=tenant, max_rows=max_rows, limits=QueryLimits.of(settings)
            )
            # This process holds the privacy key (if any): it is shown the names.
            return replace(result, rows=ledger.reveal(result.rows, tenant))
    except LedgerUnavailable as exc:
        raise QueryUnavailable(str(exc)) from exc


@click.command("query", context_settings={"max_content_width": 100})
@click.argument("sql")
@format_option(
    list(FORMATS), "table: aligned for reading; csv: header + rows; json: an array of row objects."
)
@click.option("--tenant", help="Only this tenant's rows, in every table (enforced by ClickHouse).")
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    help="Most rows to return (default SHIPLEDGER_QUERY_MAX_ROWS, 10000).",
)
@data_dir_option
def query(
    sql: str, fmt: str, tenant: str | None, max_rows: int | None, data_dir: Path | None
) -> None:
    """Run a read-only SQL query over the ledger (hot and archived rows alike).

    \b
    Tables: deployment_events, deployment_records, alerts, escalations (tickets opened for
    alerts), gate_decisions, change_events, source_events, artifact_events, signal_events,
    catalog_events; views: deployments (latest record per deployment), releases,
    change_requests, deployment_changes, services, environments, commits, pull_requests,
    artifacts, running_at(at = '...'), open_alerts (alerts no resolution names),
    change_window_discrepancies (docs/model.md). Rows moved to cold storage by `shipledger
    archive` are included.
    Only SELECT runs, calling only the functions on the allow-list (no file(), url(),
    dictionaries or settings; docs/security.md); with --tenant only the tables and views
    above, one tenant's rows. Memory, time and result size are capped (SHIPLEDGER_QUERY_*).
    SQL "-" reads the query from stdin.

    \b
    Examples:
      shipledger query "SELECT count() FROM deployment_events"
      shipledger query "DESCRIBE alerts"        # or SHOW COLUMNS FROM alerts: columns and docs
      shipledger query \\
          "SELECT service, environment, status FROM deployments ORDER BY started_at DESC LIMIT 20"
      shipledger query --tenant acme --format csv \\
          "SELECT rule, severity, count() FROM alerts GROUP BY rule, severity"
      shipledger query --format json "SELECT * FROM deployments LIMIT 5" | jq .
      shipledger query \\
          "SELECT service, environment, version FROM running_at(at = '2026-11-25 12:00:00')"

    \b
    Operators (no --tenant; tenant tokens cannot) may also read system tables:
      shipledger query \\
          "SELECT name, type FROM system.columns WHERE database = 'shipledger' AND table = 'alerts'"

    \b
    While `shipledger up` runs, the query goes through its API (the data dir is its own); with
    SHIPLEDGER_CLICKHOUSE_URL naming a server, straight to the server. Which stack: --data-dir
    or SHIPLEDGER_DATA_DIR, else the running `shipledger up` (`shipledger doctor` shows it).
    """
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is not None:  # not a server: find the stack
        settings = locate(settings).require("`shipledger query`").settings
    if sql == "-":
        sql = sys.stdin.read()
    try:
        result = run_query(
            settings, sql, tenant=tenant, max_rows=max_rows or settings.query_max_rows
        )
    except (QueryError, QueryUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(FORMATS[fmt](result), nl=fmt == "table" or fmt == "json")
    if result.truncated and fmt != "table":
        click.echo(f"shipledger: output truncated at {len(result.rows)} rows", err=True)

"""`shipledger alerts`: `tail` the alerts topic (decoded, filtered, live with --follow) and
`list` the ledger's alerts table with the same filters and the same output.

`list` reads through the query path of `shipledger query`; `tail` reads Kafka directly (an
operator's tool: whoever can read the topic sees every tenant; `--tenant/--team/--environment`
are filters, not permissions). With SHIPLEDGER_API_URL and SHIPLEDGER_API_TOKEN both read
through that API instead, where the token's tenant, team and environment scopes bound what
they see: `list` and `tail`'s history by `/v1/query`, `tail --follow`'s live alerts by the
SSE stream `/v1/stream` (`shipledger.alert_stream`). What is shown, and which alerts, is
`shipledger.alert_view`.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx

from shipledger.alert_stream import AlertStream, StreamRefused
from shipledger.alert_view import (
    SEVERITIES,
    AlertFilter,
    alert_fields,
    alert_from_json,
    human_line,
    json_alert,
    json_line,
    parse_since,
)
from shipledger.cli_types import ROW_LIMIT
from shipledger.clients import next_to_end, position, reader_consumer, topic_ends, topic_partitions
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.query_cli import QueryUnavailable, post_query, run_query
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.registry import DecodeError, topic_codec
from shipledger.schemas.scopes import RowScope, scope_names
from shipledger.schemas.topics import ALERTS, Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import QueryError, chdb_path, sql_string
from shipledger.stackfile import resolve_bootstrap

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: How long one poll waits: also how soon Ctrl-C is noticed between messages.
_POLL_S = 0.5


@click.group("alerts", context_settings=_CTX)
def alerts() -> None:
    """Watch and search policy alerts (missing change ticket, out of window, freeze, ...).

    \b
      shipledger alerts tail                          # every alert on the topic, then exit
      shipledger alerts tail --follow                 # new alerts as they are raised; Ctrl-C
      shipledger alerts tail --since 2h --min-severity high --follow
      shipledger alerts tail --team payments --environment prod --format json | jq .rule
      shipledger alerts list --service checkout --limit 20
      shipledger alerts list --rule out_of_window --since 2026-11-30T00:00:00Z --format json

    A resolution (an earlier alert no longer holds) prints as RESOLVED ... resolves <alert id>.
    """


def _filter_options(command: Callable[..., None]) -> Callable[..., None]:
    """The filters `tail` and `list` share, and `--since`: the command is given them as one
    `wanted` filter, with its own options, `fmt` and `data_dir`."""

    @functools.wraps(command)
    def with_filter(
        *,
        tenant: str | None,
        teams: tuple[str, ...],
        services: tuple[str, ...],
        environments: tuple[str, ...],
        rules: tuple[str, ...],
        min_severity: str | None,
        since: str | None,
        **own: Any,
    ) -> None:
        # A bad value is a usage error naming its flag (exit 2).
        names: dict[str, frozenset[str]] = {}
        for flag, values in (
            ("--team", teams),
            ("--service", services),
            ("--environment", environments),
            ("--rule", rules),
        ):
            try:
                names[flag] = scope_names(values, flag[2:])
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=flag) from exc
        if tenant is not None and not tenant.strip():
            raise click.BadParameter("must not be empty", param_hint="--tenant")
        try:
            start = parse_since(since, datetime.now(UTC)) if since is not None else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from exc
        wanted = AlertFilter(
            scope=RowScope(
                tenant.strip() if tenant else None, names["--team"], names["--environment"]
            ),
            services=names["--service"],
            rules=names["--rule"],
            min_severity=min_severity,
            since=start,
        )
        command(wanted=wanted, **own)

    options = [
        click.option("--tenant", help="Only this tenant's alerts."),
        click.option(
            "--team",
            "teams",
            multiple=True,
            help="Only these teams' alerts (repeat or a comma list); alerts without a team "
            "are left out.",
        ),
        click.option(
            "--service", "services", multiple=True, help="Only these services (repeat or commas)."
        ),
        click.option(
            "--environment",
            "environments",
            multiple=True,
            help="Only these canonical environments (repeat or commas), e.g. prod.",
        ),
        click.option("--rule", "rules", multiple=True, help="Only these rules (repeat or commas)."),
        click.option(
            "--min-severity",
            type=click.Choice(SEVERITIES),
            help="Only alerts of this severity or higher.",
        ),
        click.option(
            "--since",
            metavar="DURATION|TIME",
            help="Only alerts detected since: 30m, 2h, 7d back from now, or an ISO-8601 time "
            "(UTC unless it says otherwise).",
        ),
        format_option(
            ["text", "json"],
            "text: one line per alert; json: one JSON object per line (for jq).",
        ),
        data_dir_option,
    ]
    decorated: Callable[..., None] = with_filter
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _printer(fmt: str) -> Callable[[dict[str, Any]], None]:
    line = json_line if fmt == "json" else human_line
    return lambda alert: click.echo(line(alert))


# --- tail ----------------------------------------------------------------------------------
@alerts.command("tail", context_settings=_CTX)
@_filter_options
@click.option("--follow", "-f", is_flag=True, help="Keep reading new alerts until Ctrl-C.")
@click.option(
    "--bootstrap",
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers. Default: SHIPLEDGER_BOOTSTRAP_SERVERS, else the broker of "
    "the running `shipledger up`.",
)
def tail(
    wanted: AlertFilter, fmt: str, data_dir: Path | None, follow: bool, bootstrap: str | None
) -> None:
    """Print the alerts on the alerts topic, decoded and filtered; --follow for new ones.

    Reads the topic from its start (with --since, shows only alerts detected since then);
    without --follow it stops at the end, with --follow it waits for new alerts until Ctrl-C
    (exit 0). An alert and its resolution share a partition, so a resolution always follows
    its alert; alerts of different deployments may interleave out of time order.

    Without SHIPLEDGER_API_URL this is an operator's tool: it reads Kafka directly with the
    broker's credentials (SHIPLEDGER_SASL_*), so every tenant's alerts are readable, and
    --tenant, --team and --environment only filter. With SHIPLEDGER_API_URL and
    SHIPLEDGER_API_TOKEN it reads that API instead, and sees only what the token's tenant,
    teams and environments may: first the alerts in the ledger (as `alerts list`, the latest
    SHIPLEDGER_QUERY_MAX_ROWS), then with --follow the new ones from its live stream
    (/v1/stream). Same filters, same output.

    \b
      shipledger alerts tail --follow
      shipledger alerts tail --since 2h --min-severity high
      shipledger alerts tail --tenant acme --service checkout,cart --environment prod -f
      shipledger alerts tail --rule freeze_violation --format json | jq -r .deployment_id
      SHIPLEDGER_API_URL=https://shipledger.example.org SHIPLEDGER_API_TOKEN=$TOKEN \\
          shipledger alerts tail --follow
    """
    settings = cli_settings(bootstrap_servers=bootstrap, data_dir=data_dir)
    show = _printer(fmt)
    if settings.api_url:
        _tail_api(settings, settings.api_url, wanted, show, follow=follow)
        return
    settings = locate(settings).settings
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    broker = resolve_bootstrap(settings)
    if broker is None:
        raise click.UsageError(
            "no broker to read alerts from: pass --bootstrap HOST:PORT, set "
            "SHIPLEDGER_BOOTSTRAP_SERVERS, or start `shipledger up`"
        )
    stop = _stop_on_signals()
    for alert in read_alerts(settings, broker, follow=follow, stopped=stop):
        if wanted.matches(alert):
            show(alert)


def _tail_api(
    settings: Settings,
    api_url: str,
    wanted: AlertFilter,
    show: Callable[[dict[str, Any]], None],
    *,
    follow: bool,
) -> None:
    """`tail` through the API: the ledger's alerts, then (`follow`) the stream's new ones.

    The stream is opened before the ledger is read, so an alert raised meanwhile is in one
    or the other (or both: shown once)."""
    if not follow:
        for alert in _ledger_alerts(settings, wanted, settings.query_max_rows):
            show(alert)
        return
    token = settings.api_token.get_secret_value() if settings.api_token else None
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGTERM ends like Ctrl-C: exit 0
        signal.signal(signum, _interrupt_for_sure)
    try:
        with AlertStream(api_url, token, _notice) as live:
            shown: set[str] = set()
            for alert in _ledger_alerts(settings, wanted, settings.query_max_rows):
                shown.add(alert["alert_id"])
                show(alert)
            for data in live.alerts():
                alert = alert_from_json(data)
                if alert["alert_id"] not in shown and wanted.matches(alert):
                    show(alert)
    except KeyboardInterrupt:
        return
    except StreamRefused as exc:
        raise click.ClickException(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"the shipledger API did not answer: {exc}") from exc


#: Seconds a stopped `tail --follow` through the API has to leave on its own before it is ended.
_STOP_GRACE_S = 5.0


def _interrupt_for_sure(_signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C (or SIGTERM) of `tail --follow` through the API: KeyboardInterrupt, and an exit 0
    a few seconds later if the process is still there. Python runs a signal's handler in
    whatever the main thread runs next, and an exception raised inside a finalizer (an HTTP
    connection or generator the garbage collector closes, frequent while the stream
    reconnects) is printed as "ignored" and dropped: a `tail --follow` in CI was seen to
    ignore its SIGINT for a minute under load."""

    def leave() -> None:
        sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(_STOP_GRACE_S, leave)
    timer.daemon = True  # a clean exit does not wait for it
    timer.start()
    raise KeyboardInterrupt


def _notice(text: str) -> None:
    click.echo(f"shipledger: {text}", err=True)


def _stop_on_signals() -> Callable[[], bool]:
    """Ctrl-C and SIGTERM end the read cleanly (the consumer is closed, exit 0)."""
    stopping = [False]

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return lambda: stopping[0]


def read_alerts(
    settings: Settings, bootstrap: str, *, follow: bool, stopped: Callable[[], bool]
) -> Iterator[dict[str, Any]]:
    """The alerts topic's records as JSON alerts, from the start of every partition: up to
    the end as it was when reading began, or with `follow` until `stopped()`. A record that
    does not decode is reported on stderr (partition:offset) and skipped."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    topic = Topics.from_settings(settings).alerts
    codec = topic_codec(ALERTS)
    consumer = reader_consumer(settings, bootstrap, "alerts-tail")
    try:
        partitions = topic_partitions(consumer, bootstrap, topic, 30.0)
        if not partitions:
            if follow:
                raise click.ClickException(f"no topic {topic} on {bootstrap}: start the pipeline")
            click.echo(f"shipledger: no topic {topic} on {bootstrap} yet: no alerts", err=True)
            return
        # Where each partition ends now: without --follow, reading stops there.
        marks = topic_ends(settings, bootstrap, topic, partitions, 30.0)
        ends = {p: marks[p].high for p in partitions}
        pending = {p for p in partitions if marks[p].high > marks[p].low}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while not stopped() and (follow or pending):
            msg = next_to_end(consumer, _POLL_S, pending, ends)
            if msg is None:
                continue
            partition, offset = position(msg)
            try:
                record = codec.decode(msg.value())
            except DecodeError as exc:
                click.echo(f"shipledger: skipped {topic} {partition}:{offset}: {exc}", err=True)
                continue
            yield json_alert(record)
    finally:
        consumer.close()


# --- list ----------------------------------------------------------------------------------
@alerts.command("list", context_settings=_CTX)
@_filter_options
@click.option(
    "--limit",
    type=ROW_LIMIT,
    default=100,
    show_default=True,
    help="Show at most this many alerts, the latest detected.",
)
def list_(wanted: AlertFilter, fmt: str, data_dir: Path | None, limit: int) -> None:
    """List alerts stored in the ledger (hot and archived), the latest --limit, oldest first.

    Reads like `shipledger query`: through the API of the running `shipledger up`, or
    ClickHouse (SHIPLEDGER_CLICKHOUSE_URL), or the stopped stack's data dir. With
    SHIPLEDGER_API_URL and SHIPLEDGER_API_TOKEN it asks that API, and the token's tenant,
    teams and environments bound what it can see, whatever the filters say.

    \b
      shipledger alerts list
      shipledger alerts list --tenant acme --team payments --min-severity high --limit 20
      shipledger alerts list --since 7d --rule missing_change_ticket --format json | jq .
      SHIPLEDGER_API_URL=https://shipledger.example.org SHIPLEDGER_API_TOKEN=$TOKEN \\
          shipledger alerts list --environment prod
    """
    settings = cli_settings(data_dir=data_dir)
    if not settings.api_url and chdb_path(settings.resolved_clickhouse_url) is not None:
        settings = locate(settings).require("`shipledger alerts list`").settings
    show = _printer(fmt)
    for alert in _ledger_alerts(settings, wanted, limit):
        show(alert)


def _ledger_alerts(settings: Settings, wanted: AlertFilter, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` alerts in the ledger that `wanted` admits, oldest first: through
    SHIPLEDGER_API_URL with its token when set, else by `shipledger query`'s path."""
    columns = ", ".join(alert_fields())
    # Newest first to apply the limit, then oldest first to read; LIMIT 1 BY drops the copy a
    # redelivery may have stored (at-least-once) before the merge that removes it.
    sql = (
        f"SELECT * FROM (SELECT {columns} FROM alerts WHERE {wanted.where_sql(sql_string)} "  # noqa: S608 (quoted literals)
        f"ORDER BY detected_at DESC, alert_id LIMIT 1 BY tenant, alert_id LIMIT {limit}) "
        "ORDER BY detected_at, alert_id"
    )
    try:
        if settings.api_url:
            token = settings.api_token.get_secret_value() if settings.api_token else None
            result = post_query(
                settings.api_url,
                token,
                sql,
                tenant=wanted.scope.tenant,
                max_rows=limit,
                timeout_s=settings.query_timeout_s,
            )
        else:
            result = run_query(settings, sql, tenant=None, max_rows=limit)
    except (QueryError, QueryUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    return [
        alert_from_json(dict(zip(result.columns, row, strict=True)))
        for row in result.to_json()["rows"]
    ]

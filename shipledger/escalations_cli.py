"""`shipledger escalate`: the escalator (`run`, in `shipledger.receivers.cli`) and the delivery
status of every receiver read back from the ledger (`deliveries`), through the same path as
`shipledger query` (the API of a running `up`, a ClickHouse server, or the data dir)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from shipledger.cli_types import ROW_LIMIT
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.query_cli import QueryUnavailable, run_query
from shipledger.receivers.cli import run
from shipledger.sinks.ledger.reader import FORMATS, QueryError, chdb_path

#: Rows written before migration 0010 have no action: they were all triggers.
_ACTION = "if(action = '', 'trigger', action)"
_ROWS = (
    "SELECT occurred_at, tenant, receiver, receiver_type, {action} AS action, alert_id, "
    "resolved_alert_id, rule, severity, service, environment, status, attempts, http_status, "
    "ticket_key, reason FROM escalations{where} ORDER BY occurred_at DESC LIMIT {limit}"
)
_BY_RECEIVER = (
    "SELECT receiver, any(receiver_type) AS type, countIf(status = 'delivered') AS delivered, "
    "countIf(status = 'dead_lettered') AS dead_lettered, "
    "countIf(status = 'delivered' AND {action} = 'resolve') AS resolved, "
    "max(occurred_at) AS last_at, argMax(status, occurred_at) AS last_status, "
    "argMax(reason, occurred_at) AS last_reason FROM escalations{where} "
    "GROUP BY receiver ORDER BY receiver LIMIT {limit}"
)


#: Receiver names and alert ids: plain names, so a filter is a literal with nothing to escape.
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def _literal(text: str) -> str:
    if not _PLAIN.match(text):
        raise ValueError(f"{text!r} is not a receiver name or an alert id")
    return f"'{text}'"


def deliveries_sql(
    *,
    receiver: str | None = None,
    status: str | None = None,
    action: str | None = None,
    alert: str | None = None,
    by_receiver: bool = False,
    limit: int = 50,
) -> str:
    """The query `deliveries` runs (pure): rows newest first, or one line per receiver.
    ValueError when a filter is not a plain name."""
    conditions = []
    if receiver:
        conditions.append(f"receiver = {_literal(receiver)}")
    if status:
        conditions.append(f"status = {_literal(status)}")
    if action:
        conditions.append(f"{_ACTION} = {_literal(action)}")
    if alert:
        conditions.append(
            f"(alert_id = {_literal(alert)} OR resolved_alert_id = {_literal(alert)})"
        )
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    template = _BY_RECEIVER if by_receiver else _ROWS
    return template.format(action=_ACTION, where=where, limit=limit)


@click.command("deliveries", context_settings={"max_content_width": 100})
@click.option("--receiver", help="Only this receiver (its name in the policy).")
@click.option(
    "--status",
    type=click.Choice(["delivered", "dead_lettered"]),
    help="Only deliveries that ended so.",
)
@click.option(
    "--action",
    type=click.Choice(["trigger", "resolve"]),
    help="trigger: alerts sent; resolve: resolutions sent.",
)
@click.option("--alert", "alert_id", help="Only this alert id (its trigger and its resolve).")
@click.option(
    "--by-receiver", is_flag=True, help="One line per receiver: counts and its last outcome."
)
@click.option("--limit", type=ROW_LIMIT, default=50, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMATS)),
    default="table",
    show_default=True,
    help="table: aligned for reading; csv: header + rows; json: an array of row objects.",
)
@click.option("--tenant", help="Only this tenant's deliveries.")
@data_dir_option
def deliveries(
    receiver: str | None,
    status: str | None,
    action: str | None,
    alert_id: str | None,
    by_receiver: bool,
    limit: int,
    fmt: str,
    tenant: str | None,
    data_dir: Path | None,
) -> None:
    """How each delivery to a receiver ended, newest first (the ledger's `escalations`).

    One row per alert, receiver and action (trigger, or resolve for a resolution):
    delivered with the ticket key (ServiceNow number, Jira key, PagerDuty dedup key,
    Opsgenie request id), or dead_lettered with the reason (the alert is in the DLQ:
    `shipledger dlq list --stage escalation`, `shipledger dlq replay` sends it again).

    \b
    Examples:
      shipledger escalate deliveries --by-receiver
      shipledger escalate deliveries --receiver pagerduty-payments --status dead_lettered
      shipledger escalate deliveries --alert 0c6f2d1e-8a4b-5c3d-9e7f-1a2b3c4d5e6f --format json
    """
    settings = cli_settings(data_dir=data_dir)
    if chdb_path(settings.resolved_clickhouse_url) is not None:
        settings = locate(settings).require("`shipledger escalate deliveries`").settings
    try:
        sql = deliveries_sql(
            receiver=receiver,
            status=status,
            action=action,
            alert=alert_id,
            by_receiver=by_receiver,
            limit=limit,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        result = run_query(settings, sql, tenant=tenant, max_rows=limit)
    except (QueryError, QueryUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(FORMATS[fmt](result), nl=fmt in ("table", "json"))


@click.group(
    name="escalate",
    commands=[run, deliveries],
    context_settings={"help_option_names": ["-h", "--help"]},
)
def escalate() -> None:
    """Alerts to ticketing systems, pagers, chats and webhooks (the policy's `escalation:`).

    `shipledger up` runs the escalator itself when the policy has escalation routes; `run`
    is for a deployment with its own Kafka and ClickHouse (docs/receivers.md);
    `deliveries` says how each delivery ended.
    """

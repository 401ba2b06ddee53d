"""`shipledger escalate run`: the escalator alone, until SIGINT/SIGTERM (the `escalate` group
is `shipledger.escalations_cli`, which also reads the deliveries back)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from shipledger.closing import stop_on_signals
from shipledger.dlq_limit import EXIT_DLQ_LIMIT, DlqLimitExceeded
from shipledger.logging import configure_logging, get_logger
from shipledger.metrics import RecordingMetrics, serve
from shipledger.receivers.escalator import Escalator, EscalatorError, SettledLookup
from shipledger.receivers.record import DeliveryRecord
from shipledger.receivers.registry import ReceiverConfigError, policy_problems, targets
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReader, LedgerUnavailable, chdb_path
from shipledger.stackfile import read_stack, resolve_bootstrap

log = get_logger("escalate")


@contextmanager
def _ledger(settings: Settings) -> Iterator[SettledLookup | None]:
    """The ledger to ask what was delivered, or None (then the local record and the
    receivers' own lookups decide): an embedded ledger is `up`'s while it runs."""
    if chdb_path(settings.resolved_clickhouse_url) is not None and read_stack(settings):
        log.warning("escalation_ledger_unavailable", reason="`shipledger up` owns the chDB ledger")
        yield None
        return
    try:
        with LedgerReader.open(settings) as reader:
            yield reader
    except LedgerUnavailable as exc:
        log.warning("escalation_ledger_unavailable", reason=str(exc))
        yield None


@click.command()
@click.option(
    "--bootstrap",
    envvar="SHIPLEDGER_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers. Default: those of a running `shipledger up`.",
)
def run(bootstrap: str | None) -> None:
    """Deliver every alert an escalation route matches, until Ctrl-C or SIGTERM.

    Reads the alerts topic (consumer group <prefix>escalator), opens a ticket or pages per
    alert and receiver (ServiceNow, Jira, PagerDuty, Opsgenie, Slack, an Alertmanager
    webhook, a signed webhook), sends resolutions to those that can close, retries with
    backoff, dead-letters what fails SHIPLEDGER_ESCALATION_ATTEMPTS times and publishes
    every outcome to the escalations topic (the ledger's `escalations` table; `shipledger
    escalate deliveries` reads it back). Receivers' secrets come from
    SHIPLEDGER_RECEIVER_SECRETS__<NAME>. The ledger (SHIPLEDGER_CLICKHOUSE_URL) is asked what
    was already delivered; an embedded chDB ledger is opened here only when no `up` runs.

    \b
    Exit codes: 0 stopped by a signal; 1 failed (policy, secrets, Kafka); 65 stopped by the
    DLQ limit (a receiver refusing every alert: see `shipledger dlq list --stage escalation`).
    """
    settings = Settings()
    configure_logging(settings)
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    try:
        policy = load_policy(settings.policy_file, checks=[policy_problems])
        configured = targets(policy, settings.receiver_secret)
    except (ValueError, ReceiverConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not policy.escalation.routes:
        click.echo("shipledger: the policy has no escalation routes: nothing to deliver", err=True)
        return
    bootstrap = bootstrap or resolve_bootstrap(settings)
    if bootstrap is None:
        raise click.UsageError(
            "no broker: pass --bootstrap HOST:PORT, set SHIPLEDGER_BOOTSTRAP_SERVERS, or start "
            "`shipledger up` in this data dir"
        )
    stop = stop_on_signals()
    record = DeliveryRecord(settings.resolved_escalation_db)
    metrics = RecordingMetrics()
    endpoint = serve(metrics, settings.metrics_host, settings.escalator_metrics_port, "escalator")
    try:
        with _ledger(settings) as ledger:
            escalator = Escalator(
                settings, bootstrap, policy, configured, record, ledger, metrics=metrics
            )
            escalator.run(stop)
    except DlqLimitExceeded as exc:
        click.echo(f"shipledger escalate: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_DLQ_LIMIT) from exc
    except EscalatorError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        record.close()
        if endpoint is not None:
            endpoint.stop()

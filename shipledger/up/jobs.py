"""`shipledger jobs`: the periodic jobs `up` runs by itself (post-deploy verification,
incident triage, CMDB reconciliation), alone, for a deployment where the worker, the sink and
the API are separate processes (deploy/compose, deploy/k8s: the `jobs` service).

One instance at a time runs them: each takes the jobs' lease in a Kafka consumer group
(`shipledger.up.lease`) first, and a second one waits as a standby until the holder goes.
Two at once would post an incident's note twice."""

from __future__ import annotations

import click
from confluent_kafka import KafkaException

from shipledger.closing import stop_on_signals
from shipledger.logging import configure_logging, get_logger
from shipledger.metrics import RecordingMetrics, serve
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.cli_options import written_ledger
from shipledger.sinks.ledger.store import redact_url
from shipledger.topics import ensure_topics
from shipledger.up.lease import JobsLease
from shipledger.up.periodic import periodic_jobs

log = get_logger("jobs")


@click.command(context_settings={"max_content_width": 100})
def jobs() -> None:
    """Run post-deploy verification, incident triage and CMDB reconciliation on their
    intervals against the ledger (SHIPLEDGER_CLICKHOUSE_URL), until Ctrl-C or SIGTERM.

    \b
    Which jobs run, and how often:
      verification  SHIPLEDGER_VERIFICATION_INTERVAL_S (default 30; 0: off)
      triage        SHIPLEDGER_TRIAGE_INTERVAL_S (default 5; 0: off)
      cmdb          SHIPLEDGER_CMDB_EXPORT_FILE set (every SHIPLEDGER_CMDB_INTERVAL_S)

    `shipledger up` runs these by itself (under the same lease, below): this command is for a
    production deployment whose worker, sink and API run apart (docs/deploy.md). The policy
    (SHIPLEDGER_POLICY_FILE) is read at start: restart it after publishing a new one.

    \b
    One instance runs the jobs, however many are started: each joins the consumer group
    <SHIPLEDGER_TOPIC_PREFIX>jobs-lease on SHIPLEDGER_BOOTSTRAP_SERVERS, and the one holding
    the lease topic's partition runs them; the others wait (logged: jobs_standby). When the
    holder stops (SIGTERM) a standby takes over within a rebalance; when it dies (kill -9),
    after SHIPLEDGER_SESSION_TIMEOUT_S. /metrics (SHIPLEDGER_JOBS_METRICS_PORT) says which:
    shipledger_jobs_lease_held 1 or 0.

    \b
    Exit codes: 0 stopped by a signal; 1 no job turned on, no ledger to run them on, no
    broker, or the lease's consumer failed.
    """
    settings = Settings()
    configure_logging(settings)
    try:
        policy = load_policy(settings.policy_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    stopping = stop_on_signals()
    metrics = RecordingMetrics()
    with written_ledger(settings, "") as store:
        periodic = periodic_jobs(settings, store, policy, metrics)
        if not periodic:
            raise click.ClickException(
                "no job is turned on: set SHIPLEDGER_VERIFICATION_INTERVAL_S or "
                "SHIPLEDGER_TRIAGE_INTERVAL_S above 0, or SHIPLEDGER_CMDB_EXPORT_FILE"
            )
        bootstrap = settings.bootstrap_servers
        if not bootstrap:
            raise click.ClickException(
                "SHIPLEDGER_BOOTSTRAP_SERVERS is not set: the jobs run under a lease held in "
                "a Kafka consumer group, so that a second instance waits instead of running"
            )
        try:
            ensure_topics(settings, bootstrap)  # the lease topic, as the sink does at start
        except (RuntimeError, KafkaException) as exc:
            raise click.ClickException(f"the lease topic on {bootstrap}: {exc}") from exc
        names = [job.name for job in periodic]
        endpoint = serve(metrics, settings.metrics_host, settings.jobs_metrics_port, "jobs")
        where = redact_url(store.url)
        try:
            with JobsLease(settings, bootstrap, periodic, metrics) as lease:
                log.info("jobs_started", jobs=names, clickhouse=where, lease=lease.group_id)
                click.echo(
                    f"shipledger jobs: {', '.join(names)} on {where}, run while this instance "
                    f"holds the lease ({lease.group_id}); Ctrl-C stops."
                )
                while not stopping.wait(1.0):
                    if lease.error is not None:
                        raise click.ClickException(f"the jobs' lease failed: {lease.error}")
        finally:
            if endpoint is not None:
                endpoint.stop()
    log.info("jobs_stopped", jobs=names)

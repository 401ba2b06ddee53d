"""`shipledger jobs`: the periodic jobs `up` runs by itself (post-deploy verification,
incident triage, CMDB reconciliation), alone, for a deployment where the worker, the sink and
the API are separate processes (deploy/compose, deploy/k8s: the `jobs` service).

Run exactly one: a verdict or a suspects note is written by whichever process gets there first,
and two would post an incident's note twice."""

from __future__ import annotations

import click

from shipledger.closing import stop_on_signals
from shipledger.logging import configure_logging, get_logger
from shipledger.metrics import RecordingMetrics, serve
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.cli_options import written_ledger
from shipledger.sinks.ledger.store import redact_url
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

    `shipledger up` runs these by itself: this command is for a production deployment whose
    worker, sink and API run apart (docs/deploy.md). Run one replica. The policy
    (SHIPLEDGER_POLICY_FILE) is read at start: restart it after publishing a new one.

    \b
    Exit codes: 0 stopped by a signal; 1 no job turned on, or no ledger to run them on.
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
        running = periodic_jobs(settings, store, policy, metrics)
        if not running:
            raise click.ClickException(
                "no job is turned on: set SHIPLEDGER_VERIFICATION_INTERVAL_S or "
                "SHIPLEDGER_TRIAGE_INTERVAL_S above 0, or SHIPLEDGER_CMDB_EXPORT_FILE"
            )
        names = [job.name for job in running]
        endpoint = serve(metrics, settings.metrics_host, settings.jobs_metrics_port, "jobs")
        where = redact_url(store.url)
        log.info("jobs_started", jobs=names, clickhouse=where)
        click.echo(f"shipledger jobs: running {', '.join(names)} on {where}; Ctrl-C stops.")
        try:
            stopping.wait()
        finally:
            for job in running:
                job.stop()
            if endpoint is not None:
                endpoint.stop()
    log.info("jobs_stopped", jobs=names)

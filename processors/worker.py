"""`shipledger worker`: run the Faust processors in this process (used by `up` as a child)."""

from __future__ import annotations

from pathlib import Path

import click
import faust

from shipledger.gc_tuning import tune_gc
from shipledger.lag import group_lag
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.logging import configure_logging, get_logger
from shipledger.metrics import LagCollector, RecordingMetrics, serve
from shipledger.processors.app import create_app
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.policy import load_policy
from shipledger.schemas.topics import SIGNALS, Topics
from shipledger.stackfile import resolve_bootstrap


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers (default: settings / running stack).")
@data_dir_option
def worker(bootstrap: str | None, data_dir: Path | None) -> None:
    """Run the Faust processors (normalize → correlate → judge) until SIGTERM.

    Reads raw deployment events and writes deployment records, alerts and dead letters.
    `shipledger up` starts this for you; run it alone to scale out (one per partition at most).
    """
    settings = locate(cli_settings(data_dir=data_dir)).settings
    configure_logging(settings)
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    target = bootstrap or resolve_bootstrap(settings)
    if not target:
        raise click.UsageError(
            "no broker: pass --bootstrap, set SHIPLEDGER_BOOTSTRAP_SERVERS or run `shipledger up`"
        )
    try:
        policy = load_policy(settings.policy_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.policy_version not in (None, policy.full_version):
        raise click.ClickException(
            f"policy file {settings.policy_file or '(built-in)'} is version "
            f"{policy.full_version}, but SHIPLEDGER_POLICY_VERSION wants "
            f"{settings.policy_version} (the policy the sink stamps with): restart `up` to "
            "load the new policy everywhere"
        )
    get_logger("worker").info(
        "worker_starting", bootstrap=target, policy_version=policy.full_version
    )
    metrics = RecordingMetrics()
    conf, group = settings.kafka_common(target), f"{settings.topic_prefix}processors"
    sources = [Topics.from_settings(settings).raw, Topics.from_settings(settings).of(SIGNALS)]
    metrics.add_collector(LagCollector(group, lambda: group_lag(conf, group, sources)))
    serve(metrics, settings.metrics_host, settings.worker_metrics_port, "worker")
    app = create_app(settings, target, policy, metrics)
    tune_gc()
    # mode's Worker owns the event loop and handles SIGINT/SIGTERM: commit, flush, exit.
    runner = faust.Worker(app, loglevel="warning", quiet=True)
    runner.spinner = None  # a terminal spinner only garbles JSON logs
    runner.execute_from_commandline()

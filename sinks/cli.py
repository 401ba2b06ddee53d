"""`shipledger sink`: run the ClickHouse sink alone until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from shipledger.dlq_limit import EXIT_DLQ_LIMIT, DlqLimitExceeded
from shipledger.fields import picked
from shipledger.gc_tuning import tune_gc
from shipledger.logging import configure_logging, get_logger
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.policy import load_policy
from shipledger.sinks.cli_options import ledger_options, ledger_settings
from shipledger.sinks.ledger.store import StoreError
from shipledger.sinks.regions import open_ledgers, without_default
from shipledger.sinks.sink import ClickHouseSink
from shipledger.stackfile import resolve_bootstrap
from shipledger.topics import ensure_topics


@click.command("sink")
@click.option(
    "--bootstrap",
    envvar="SHIPLEDGER_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers. Default: those of a running `shipledger up`.",
)
@ledger_options
@click.option(
    "--ensure-schema/--no-ensure-schema",
    default=True,
    show_default=True,
    help="Create missing tables/columns first. Off where the sink only has INSERT+SELECT grants.",
)
@click.option(
    "--progress-s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between progress log lines.",
)
def sink(
    bootstrap: str | None,
    clickhouse_url: str | None,
    data_dir: Path | None,
    ensure_schema: bool,
    progress_s: float,
) -> None:
    """Consume deployment events, records and alerts into the ClickHouse ledger.

    At-least-once with dedup by id: rows appear exactly once. Stops cleanly (flush, commit) on
    Ctrl-C or SIGTERM. Note: a chDB data dir can be open in one process only; while
    `shipledger up` runs, point this at a ClickHouse server instead. On a server, run as many
    as a ledger topic has partitions to scale out: they share the partitions (one consumer
    group), and each partition's rows chain in a lane of their own (docs/operations.md).

    \b
    Exit codes: 0 stopped by a signal; 1 failed (ClickHouse or the DLQ unreachable, a hung
    write); 65 stopped by the DLQ limit (too many poison messages, nothing committed past
    them: see `shipledger dlq list`, SHIPLEDGER_DLQ_*).
    """
    settings = ledger_settings(
        "`shipledger sink`", clickhouse_url, data_dir, bootstrap_servers=bootstrap
    )
    configure_logging(settings)
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    log = get_logger("sink.cli")
    tune_gc()
    resolved = resolve_bootstrap(settings)
    if resolved is None:
        raise click.UsageError("no broker: pass --bootstrap, or start `shipledger up` first")
    try:
        policy = load_policy(settings.policy_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        ledgers = open_ledgers(settings, ensure_schema=ensure_schema)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    code = 0
    with contextlib.ExitStack() as opened:
        for store in ledgers.values():
            opened.enter_context(store)
        ensure_topics(settings, resolved)
        runner = ClickHouseSink(
            settings, resolved, ledgers[None], policy=policy, regional=without_default(ledgers)
        )
        server = runner.serve_metrics()
        try:
            code = run_until_signalled(runner, progress_s, log)
        finally:
            if server is not None:
                server.stop()
    raise SystemExit(code)


def run_until_signalled(runner: ClickHouseSink, progress_s: float, log: Any) -> int:
    """Run the sink in a thread, log progress, stop it on SIGINT/SIGTERM; the exit code."""
    stop = threading.Event()
    failure: list[BaseException] = []
    received: list[int] = []

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # No logging here: the handler runs on the main thread between two bytecodes, possibly
        # inside the progress log's write, and structlog's per-file lock is not reentrant: a
        # log call here would wait forever for the lock its own thread holds. The loop logs it.
        received.append(signum)
        stop.set()

    def _run() -> None:
        try:
            runner.run(stop)
        except BaseException as exc:
            failure.append(exc)
            stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=_run, name="clickhouse-sink", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(progress_s)
            while received:
                log.info("stopping", signal=signal.Signals(received.pop(0)).name)
            s = runner.stats()
            log.info(
                "progress",
                **picked(s, "messages", "rows_inserted", "duplicates_skipped", "dead_lettered"),
                last_flush_ms=None if s.last_flush_ms is None else round(s.last_flush_ms, 1),
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        log.error("sink failed", error=str(failure[0]), exc_info=failure[0])
        return EXIT_DLQ_LIMIT if isinstance(failure[0], DlqLimitExceeded) else 1
    return 0

"""The Faust app: one agent runs the pure step chain over batches of raw events.

Traps avoided (see STYLE.md): Faust acks an event even when the agent raises, so every event
is handled in its own try and rejected ones are dead-lettered here; Faust's per-event overhead
is high, so events are taken in batches (`take_events`); Faust hard-codes a 1.5 s fetch wait,
which on Tansu (no early fetch answer) sets the latency floor, so the consumer is built with
`settings.fetch_wait_ms` instead; Faust recovers its tables up to the high watermarks that
ListOffsets reports, which Tansu answers with the base offset of the last record batch + 1, so
they are read from fetches instead (`_highwaters`); Faust can skip a fetched event and commit
past it, so every event's offset is checked before its batch is acknowledged (`OffsetGuard`).

Beside the raw events, every worker reads the change, catalog and artifact topics whole into
its enrichment view (`processors.feed`, `processors.refresh`): before each batch, and whenever
the feed has news while no raw event comes, the view is brought up to date and the
deployments of the worker's partitions naming a changed change request are judged again.
Both paths hold one lock, so a batch's outputs and state entries are never interleaved with
another's.

A second agent reads the `signals` topic (the same consumer group: each signal is read by one
worker) in batches the same way, and joins its anomalies with the recent deployments the feed
folds from the records topic (`processors.anomalies`; a worker folds its own records as it
sends them): `suspect_deployment` alerts, made durable before the batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NoReturn

import faust
import mode
from faust.transport.drivers import aiokafka as faust_aiokafka

from shipledger import metrics as m
from shipledger.dlq_limit import EXIT_DLQ_LIMIT, DlqLimit, DlqLimitExceeded, DlqLimitState
from shipledger.identities import KnownIdentities, actor_known
from shipledger.lag import end_offsets, first_unprocessed
from shipledger.logging import get_logger
from shipledger.processors.anomalies import AnomalyHandler
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.feed import EnrichmentFeed
from shipledger.processors.handler import EventHandler
from shipledger.processors.offsets import OffsetGuard
from shipledger.processors.outputs import Outputs
from shipledger.processors.progress import ProgressReport
from shipledger.processors.recent import RecentDeployments
from shipledger.processors.refresh import ViewRefresh
from shipledger.processors.state import DeploymentState
from shipledger.schemas.models import DeploymentRecord
from shipledger.schemas.policy import Policy
from shipledger.schemas.topics import ARTIFACTS, SIGNALS, Topics
from shipledger.settings import Settings

log = get_logger("processors")
#: Exit code of a worker that abandoned a batch: outputs Kafka did not acknowledge, or
#: events Faust skipped (EX_SOFTWARE). Past the DLQ limit it exits with `EXIT_DLQ_LIMIT` (65).
EXIT_OUTPUTS_LOST = 70
_HIGHWATER_TIMEOUT_S = 30.0
#: How often the enrichment task looks for a new assignment to sweep when the feed is quiet.
_REFRESH_IDLE_S = 1.0


class _ShortFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when its fetcher starts, after construction.
        consumer._fetch_max_wait_ms = self.app.conf.shipledger_fetch_wait_ms
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[Any],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # Faust hands over its live set of active partitions, which the app thread mutates
        # while aiokafka waits for records, and aiokafka reads an empty set as "every
        # partition". When table recovery ends, the changelog partitions are paused before
        # the source partitions are resumed: for that moment the set is empty, the waiting
        # fetch returns the source records buffered during recovery, Faust drops them (their
        # partition is paused) and aiokafka's position has moved past them: the restarted
        # worker never sees the events emitted while it recovered. A snapshot taken now keeps
        # paused partitions' records buffered until Faust seeks them to the committed offset.
        partitions = set(active_partitions)
        if not partitions:
            return {}
        return await super()._fetch_records(
            consumer, partitions, timeout=timeout, max_records=max_records
        )

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await self.call_thread(self._seek_to_committed)
        return committed

    async def _seek_to_committed(self) -> Mapping[Any, int]:
        # Faust's safety net after a flow stop or a rebalance: it drops the records it had
        # fetched and seeks every partition back to its committed offset. aiokafka seeks only
        # to a committed offset > 0, so a partition committed at 0 (what the restore commits
        # on a fresh broker) or never committed stayed where the fetcher was, past what was
        # dropped: a fresh worker was handed offsets 50 and up first (OffsetGuard caught it).
        # Such a source partition goes back to its start, as auto_offset_reset=earliest means.
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int] = await consumer.seek_to_committed()
        sources = self.app.conf.shipledger_sources
        for tp, offset in committed.items():
            if not offset and tp.topic in sources:
                await consumer.seek_to_beginning(tp)
        return committed

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        # Faust reads a table's changelog up to these offsets when a worker starts, then
        # stops. Tansu's ListOffsets(latest), which aiokafka's end_offsets asks, answers the
        # base offset of the last record batch + 1 (see shipledger.lag): a restarted worker
        # recovered only the first entry of each changelog partition's last batch (1 of 100
        # measured) and applied later events to older state (finding 6: wrong seq and
        # status, alerts judged twice). The ends fetches report are right.
        conf = self.app.conf.shipledger_kafka
        parts = [(tp.topic, tp.partition) for tp in partitions]
        # A generous timeout: a worker that gives up here crashes (and is restarted).
        probe = functools.partial(end_offsets, conf, parts, timeout_s=_HIGHWATER_TIMEOUT_S)
        ends = await asyncio.get_running_loop().run_in_executor(None, probe)
        return {tp: ends[(tp.topic, tp.partition)].high for tp in partitions}


class _ShortFetchConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ShortFetchTransport(faust_aiokafka.Transport):
    Consumer = _ShortFetchConsumer


def abandon_batch(exc: BaseException) -> NoReturn:
    """A batch's outputs did not all reach Kafka, events before it were skipped
    (`OffsetGap`), or too many of its events were poison (`DlqLimitExceeded`): exit at once,
    before Faust can ack it.

    Faust acks a `take_events` batch in a `finally`, even when the agent raises, and a
    graceful shutdown would then commit it: the inputs would be committed with their outputs
    lost. A hard exit commits nothing more; the restarted worker reads the batch again (the
    supervisor, `up` or your orchestrator, restarts it)."""
    flood = isinstance(exc, DlqLimitExceeded)
    log.critical(
        "dlq_limit_exceeded_exiting" if flood else "batch_abandoned_exiting", error=str(exc)
    )
    sys.stderr.flush()
    os._exit(EXIT_DLQ_LIMIT if flood else EXIT_OUTPUTS_LOST)


async def run_batches(
    batches: AsyncIterator[Sequence[Any]],
    handle: Callable[[Any], None],
    finish: Callable[[], Awaitable[None]],
    abandon: Callable[[BaseException], NoReturn] = abandon_batch,
    check: Callable[[int, int], None] | None = None,
    before: Callable[[], object] | None = None,
    lock: asyncio.Lock | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Handle each batch of Faust events, then `finish` it (outputs durable); a failure
    anywhere in a batch abandons it before the batch generator can ack it. `check(partition,
    offset)` may refuse an event first (`OffsetGuard.check`), which abandons the batch too.
    Each batch first awaits `ready` (the enrichment view caught up), then holds `lock`
    throughout, `before` running first (the view's refresh)."""
    async for batch in batches:
        try:
            if ready is not None:
                # Waited for here, with the batch in hand: a worker that did not iterate its
                # stream until the view was ready was seen never to get a partition's events.
                await ready()
            async with lock or contextlib.nullcontext():
                if before is not None:
                    before()
                for event in batch:
                    if check is not None:
                        check(event.message.partition, event.message.offset)
                    handle(event.message)
                await finish()
        except Exception as exc:  # OutputError, OffsetGap, DlqLimitExceeded, Kafka refusing
            abandon(exc)


async def finish_batch(outputs: Outputs, state: DeploymentState) -> None:
    """Make a batch durable: its outputs first, then the state entries saying its events were
    applied. A changelog entry durable without its record would make a restarted worker skip
    the event as already applied; the other way round, the batch is only redone (same ids).

    Cancelled (worker shutdown), Faust acks the batch right after: the outputs are flushed
    anyway (`Outputs.flush`), and so is the state, or the next worker would apply later
    events to older state."""
    try:
        await outputs.flush()
    except asyncio.CancelledError:
        if state.flush_changelog(outputs):
            outputs.flush_blocking()
        raise
    if state.flush_changelog(outputs):
        await outputs.flush()


class ShipledgerApp(faust.App):
    """faust.App whose Kafka consumer uses our fetch wait."""

    def _new_transport(self) -> Any:
        return _ShortFetchTransport(self.conf.broker_consumer, self)


def _credentials(settings: Settings) -> faust.SASLCredentials | None:
    """The same SASL_SSL/PLAIN login the confluent-kafka clients get (Settings.kafka_common)."""
    if not (settings.sasl_username and settings.sasl_password):
        return None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        mechanism="PLAIN",
        ssl_context=ssl.create_default_context(),
    )


def counted(handle: Callable[[Any], None], metrics: m.RecordingMetrics) -> Callable[[Any], None]:
    """`handle`, counting each message it is given by topic (`processors.events_in`)."""

    def handle_counted(message: Any) -> None:
        metrics.increment(m.PROCESSOR_EVENTS_IN, tags={"topic": message.topic})
        handle(message)

    return handle_counted


def create_app(
    settings: Settings, bootstrap: str, policy: Policy, metrics: m.RecordingMetrics
) -> faust.App:
    """Build the processors app: raw events → records, alerts, dead letters; signals →
    `suspect_deployment` alerts. Counts go to `metrics`."""
    topics = Topics.from_settings(settings)
    app = ShipledgerApp(
        f"{settings.topic_prefix}processors",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        # Faust's own data dir (default `<app name>-data` in the current directory) goes with
        # the rest of the stack's files.
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.session_timeout_s / 3),
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_acks=-1,
        stream_buffer_maxsize=max(4096, settings.processor_batch_size * 2),
        broker_max_poll_records=max(500, settings.processor_batch_size),
        table_cleanup_interval=60.0,
        # Errors inside a batch already exit hard (abandon_batch). Any other agent crash stops
        # the worker too, rather than restarting the agent past unacknowledged events: the
        # supervisor (`up`, or your orchestrator) restarts the process from the last commit.
        agent_supervisor=mode.CrashingSupervisor,
        broker_credentials=_credentials(settings),
    )
    app.conf.shipledger_fetch_wait_ms = settings.fetch_wait_ms
    app.conf.shipledger_kafka = settings.kafka_common(bootstrap)
    signals_topic = topics.of(SIGNALS)
    app.conf.shipledger_sources = {topics.raw, signals_topic}

    def raw_topic(name: str) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    source = raw_topic(topics.raw)
    # Faust recovers this table from its changelog; DeploymentState writes that changelog.
    deployments = DeploymentState(
        app.Table(
            "deployments",
            default=None,
            partitions=settings.topic_partitions,
            key_type=str,  # app defaults: JSON keys and values on the changelog
        )
    )

    view = Enrichment()
    # Names this worker's records: its feed skips them, `fold` applied them as they were sent.
    origin = uuid.uuid4().hex
    feed = EnrichmentFeed(settings, bootstrap, origin)
    outputs = Outputs(settings, bootstrap, metrics, origin=origin)
    limit = DlqLimitState(DlqLimit.from_settings(settings), "processors")
    identities = KnownIdentities.from_settings(settings)

    def catch_up() -> None:
        """Read the artifacts topic to its end and fold it in (`EventHandler`'s ordering)."""
        if feed.read_to_end(ARTIFACTS, settings.artifact_catch_up_s):
            refresh.refresh(assigned())

    def fold(record: DeploymentRecord) -> None:
        """Fold a record this worker sends into the recent deployments (see `origin`)."""
        deployed = feed.recent_of(vars(record))  # the fields, not a copy (dict() is 7 µs)
        if deployed is not None:
            recent.apply(deployed)

    handler = EventHandler(
        policy,
        deployments,
        outputs,
        limit,
        view,
        functools.partial(actor_known, identities),
        catch_up if settings.artifact_catch_up_s > 0 else None,
        sent=fold,
    )
    recent = RecentDeployments()
    horizon = timedelta(seconds=settings.anomaly_horizon_s)
    refresh = ViewRefresh(feed.drain, view, handler, deployments, recent, horizon)
    anomalies = AnomalyHandler(lambda: handler.policy, recent, view, outputs)
    lock = asyncio.Lock()
    wake = asyncio.Event()
    progress = ProgressReport(settings.worker_progress_file)

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.raw}

    def start_feed() -> None:
        """Start the feed (once), as early as the event loop runs: the agent starts before
        the table is recovered, the enrichment task after."""
        loop = asyncio.get_running_loop()
        feed.start(lambda: loop.call_soon_threadsafe(wake.set))

    async def enrichment() -> None:
        """Start the feed; refresh the view whenever it has news (or the assignment
        changed) while no rebalance or table recovery is under way. Faust starts this once
        the table's first recovery is complete."""
        start_feed()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=_REFRESH_IDLE_S)
                wake.clear()
                if feed.failure is not None:
                    abandon_batch(RuntimeError(f"enrichment feed failed: {feed.failure!r}"))
                if not feed.caught_up or app.rebalancing or app.in_recovery:
                    continue
                async with lock:
                    # Read before the refresh drains them; under the lock, so a raw batch's
                    # refresh of the events read before is durable too (it finished).
                    read = feed.positions()
                    try:
                        if refresh.refresh(assigned()):
                            await finish_batch(outputs, deployments)
                    except Exception as exc:  # as in a batch: redo it after a restart
                        abandon_batch(exc)
                    progress.report(read)
        finally:
            feed.stop()

    app.task(enrichment)

    conf, group = settings.kafka_common(bootstrap), f"{settings.topic_prefix}processors"

    def guard(topic: str) -> OffsetGuard:
        def resume_at(partition: int) -> int:
            tp = (topic, partition)
            return first_unprocessed(conf, group, [tp])[tp]

        return OffsetGuard(resume_at)

    async def batches(stream: Any, handle: Callable[[Any], None], topic: str) -> None:
        """Handle the agent's stream of `topic` in batches (see `run_batches`)."""
        start_feed()
        await run_batches(
            stream.take_events(
                settings.processor_batch_size, within=settings.processor_batch_within_s
            ),
            counted(handle, metrics),
            # Also after a signals batch: the refresh before it may have re-judged deployments.
            lambda: finish_batch(outputs, deployments),
            check=guard(topic).check,
            before=lambda: refresh.refresh(assigned()),
            lock=lock,
            ready=lambda: caught_up(feed),
        )

    @app.agent(source, name="pipeline")
    async def pipeline(stream: Any) -> None:
        await batches(stream, handler.handle, topics.raw)

    @app.agent(raw_topic(signals_topic), name="anomalies")
    async def anomaly_join(stream: Any) -> None:
        await batches(stream, anomalies.handle, signals_topic)

    return app


async def caught_up(feed: EnrichmentFeed, poll_s: float = 0.05, log_every_s: float = 10.0) -> None:
    """Wait until the feed has read the enrichment topics to their end once: a deployment
    judged before that would be flagged for a change request the view has not read yet."""
    if feed.caught_up:
        return
    started = time.monotonic()
    next_log = started + log_every_s
    while not feed.caught_up:
        if feed.failure is not None:
            raise RuntimeError(f"enrichment feed failed: {feed.failure!r}")
        await asyncio.sleep(poll_s)
        if time.monotonic() >= next_log:
            next_log += log_every_s
            log.warning("enrichment_catching_up", waited_s=round(time.monotonic() - started))
    log.info("enrichment_ready", waited_s=round(time.monotonic() - started, 2))

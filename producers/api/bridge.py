"""The API's one Kafka producer: produce a batch from the event loop, await every ack.

Idempotent producer with acks=all (Settings.kafka_producer), keyed by the caller. A thread
polls the producer, so delivery callbacks run there and resolve the waiting request's future
on its loop. A batch succeeds only when Kafka acknowledged each of its messages.

With a journal (the embedded broker of `shipledger up`, which keeps messages in memory), a
batch is first appended to it (`shipledger.producers.journal`, group-committed across concurrent
requests), so every event answered 202 survives a crash of `up`; a journal that refuses the
batch fails the request (503) before anything is produced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from shipledger.kafka import KafkaProducer
from shipledger.logging import get_logger
from shipledger.producers.api.events import Prepared
from shipledger.producers.emitter.publisher import RdkafkaLog
from shipledger.producers.journal import Entry, GroupCommit, Journal, JournalError
from shipledger.schemas.families import FAMILIES
from shipledger.settings import Settings

log = get_logger("api.bridge")


#: Broker answers that fence this producer instance for good (Tansu, after a stall past the
#: ack timeout, reports them per message without librdkafka's fatal flag).
_FENCED = (KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


class PublishFailed(RuntimeError):
    """Kafka did not acknowledge every message of a batch (HTTP 503; retrying is safe)."""

    def __init__(self, reason: str, acked: int, total: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.acked = acked
        self.total = total


class _Batch:
    """Counts one batch's acknowledgements; resolves its future when all are in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, total: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.total = total
        self.acked = 0
        self.done = 0
        self.error: str | None = None
        #: A fatal error (the idempotent producer fenced, say after the broker stalled past the
        #: ack timeout): this producer instance fails every later message too.
        self.fatal = False

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        # Runs on the poll thread.
        self.done += 1
        if err is None:
            self.acked += 1
        else:
            self.fatal = self.fatal or err.fatal() or err.code() in _FENCED
            if self.error is None:
                self.error = err.str()
        if self.done == self.total:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaBridge:
    """Produces prepared events and awaits their acknowledgements."""

    def __init__(self, settings: Settings, bootstrap: str, journal: Journal | None = None) -> None:
        self.bootstrap = bootstrap
        self._journal = GroupCommit(journal) if journal is not None else None
        self._families = {settings.topic(f.topic): f.name for f in FAMILIES.values()}
        self._timeout_s = settings.api_ack_timeout_s
        conf: dict[str, Any] = dict(settings.kafka_producer(bootstrap))
        timeout_ms = int(settings.api_ack_timeout_s * 1000)
        conf.update(
            {
                "client.id": "shipledger-api",
                # A message not acknowledged in time fails its request instead of hanging it.
                "message.timeout.ms": timeout_ms,
                "request.timeout.ms": min(timeout_ms, 30_000),
                "logger": RdkafkaLog(),
            }
        )
        self._conf = conf
        self._producer: KafkaProducer | None = KafkaProducer(conf)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="api-kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        # The producer of the moment: `_renew` may replace it.
        while not self._stop.is_set() and (producer := self._producer) is not None:
            producer.poll(0.05)

    def _renew(self, failed: KafkaProducer) -> None:
        """Replace `failed`, which had a fatal error, by a new producer: without this every
        later request would answer 503 until `up` restarts (seen after a SIGSTOP of Tansu
        longer than the ack timeout: "a newer producer ... fences the current one")."""
        if self._producer is not failed:
            return  # a concurrent request renewed it already
        self._producer = KafkaProducer(self._conf)
        failed.purge()
        failed.poll(0)  # fails the other requests' messages now, not at their timeout
        log.warning("producer_renewed", reason="fatal error")

    def _live(self) -> KafkaProducer:
        if self._producer is None:
            raise PublishFailed("the API is shutting down", 0, 0)
        return self._producer

    async def publish(self, events: Sequence[Prepared]) -> None:
        """Produce `events` and return once Kafka acknowledged all; PublishFailed otherwise."""
        if not events:
            return
        producer = self._live()
        await self._journaled(events)
        batch = _Batch(asyncio.get_running_loop(), len(events))
        for event in events:
            try:
                # A full local queue: let the poll thread drain it, off the event loop.
                while not producer.produce(
                    event.topic, event.value, event.key, on_delivery=batch.on_delivery, wait=False
                ):
                    await asyncio.sleep(0.01)
            except KafkaException as exc:
                batch.error = str(exc)
                raise PublishFailed(str(exc), 0, len(events)) from exc
        try:
            await asyncio.wait_for(asyncio.shield(batch.future), self._timeout_s + 5.0)
        except TimeoutError:
            batch.error = batch.error or "no acknowledgement in time"
        if batch.acked < batch.total:
            if batch.fatal:
                self._renew(producer)
            log.warning("publish_failed", acked=batch.acked, total=batch.total, error=batch.error)
            raise PublishFailed(
                f"Kafka acknowledged {batch.acked} of {batch.total} events: {batch.error}",
                batch.acked,
                batch.total,
            )

    async def _journaled(self, events: Sequence[Prepared]) -> None:
        """Append `events` to the journal (if any) and wait until they are durable."""
        if self._journal is None:
            return
        entries = [
            Entry(e.topic, e.key, e.value, e.tenant, e.event_id, self._families.get(e.topic, ""))
            for e in events
        ]
        try:
            await asyncio.wrap_future(self._journal.submit(entries))
        except JournalError as exc:
            log.error("journal_failed", error=str(exc), events=len(events))
            raise PublishFailed(str(exc), 0, len(events)) from exc

    def ready(self, timeout_s: float = 2.0) -> str | None:
        """None if the broker answers a metadata request, else why not (blocking)."""
        try:
            return self._live().ready(timeout_s)
        except PublishFailed as exc:
            return str(exc)

    def close(self) -> None:
        """Deliver what is queued (at most the ack timeout), stop polling, drop the producer
        (its connections close now, not whenever the app is garbage-collected)."""
        self._stop.set()
        self._poller.join(timeout=5)
        if self._journal is not None:
            self._journal.close()
        if self._producer is not None:
            self._producer.flush(self._timeout_s)
            self._producer = None

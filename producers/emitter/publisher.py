"""Publish deployment events to the raw topic: one confluent-kafka producer, Avro with Confluent
framing, keyed by deployment id.

Two paths:

- `publish` (CI emitter, spool flush): waits for the broker's acknowledgement of every event, at
  most about `emit_timeout_s`, and hands the unacknowledged ones to the local spool. It never
  raises because Kafka is down; it reports what happened.
- `publish_many` (demo, benchmark): produces without waiting per message, then flushes once;
  anything not delivered raises `PublishError`.

Guarantee: at-least-once. An event whose acknowledgement did not arrive in time is spooled and
sent again later, so it may reach Kafka twice; consumers deduplicate by `event_id`.

Sending to the embedded broker of a running `shipledger up` (which keeps messages in memory),
both paths first append the events to that stack's write-ahead journal
(`shipledger.producers.journal`), so what the broker acknowledged survives a crash of `up`; an
event the journal refused is not sent (and spooled, on the acknowledged path).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message

from shipledger.closing import Closing
from shipledger.kafka import DeliveryCallback, DeliveryError, KafkaProducer
from shipledger.logging import get_logger
from shipledger.producers.emitter.spool import Spool, SpoolError
from shipledger.schemas.families import DEPLOYMENT
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.topics import Topics
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.settings import Settings
from shipledger.stackfile import journal_dir, resolve_bootstrap

if TYPE_CHECKING:
    from shipledger.producers.journal import Journal

NO_BOOTSTRAP = (
    "no Kafka broker configured: set SHIPLEDGER_BOOTSTRAP_SERVERS=host:port "
    "(or start the embedded stack with `shipledger up`; `shipledger doctor` checks the set-up)"
)

#: Broker reports (all brokers down) younger than this are taken as the current state; older
#: ones are dropped. About librdkafka's reconnect.backoff.max.ms, which we set to 1 s, so a
#: down cluster reports again within it.
_FRESH_S = 1.0

#: Events journaled (one write and one fsync) together on the fast path.
_JOURNAL_CHUNK = 1000


def _chunks(events: Iterable[DeploymentEvent], size: int) -> Iterable[list[DeploymentEvent]]:
    chunk: list[DeploymentEvent] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class PublishError(RuntimeError):
    """Events that `publish_many` could not deliver."""


@dataclass(frozen=True)
class PublishResult:
    """What `publish` did with a batch: acknowledged by Kafka, spooled, or neither.

    `unsent` are the events Kafka did not acknowledge (spooled too when `spooled` says so);
    `errors` are the distinct reasons, for humans.
    """

    sent: int
    spooled: int
    errors: list[str] = field(default_factory=list)
    unsent: list[DeploymentEvent] = field(default_factory=list)
    spool_path: Path | None = None

    @property
    def lost(self) -> int:
        """Events neither acknowledged nor spooled (the spool itself failed, or was not asked)."""
        return len(self.unsent) - self.spooled


class RdkafkaLog:
    """librdkafka's log lines, routed to structlog at debug level instead of raw stderr.

    Connection failures reach us through `error_cb` and are reported once, by `publish`.
    """

    def __init__(self) -> None:
        self._log = get_logger("librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._log.debug(fmt % args if args else fmt, syslog_level=level)


class _Pending:
    """Delivery outcome of one `publish` batch: None = acknowledged, str = error reason."""

    def __init__(self, count: int) -> None:
        self.outcomes: list[str | None] = ["no acknowledgement"] * count
        self.waiting = count

    def callback(self, index: int) -> DeliveryCallback:
        def done(err: KafkaError | None, _msg: Message) -> None:
            self.outcomes[index] = None if err is None else err.str()
            self.waiting -= 1

        return done


class Publisher(Closing):
    """One idempotent producer to the raw topic; a context manager that flushes on close."""

    def __init__(self, settings: Settings, bootstrap: str | None = None) -> None:
        self._settings = settings
        self.bootstrap = bootstrap or resolve_bootstrap(settings)
        self.topic = Topics.from_settings(settings).raw
        self.spool = Spool(settings)
        self._codec = AvroCodec(EVENT_SCHEMA)
        self._log = get_logger("publisher", topic=self.topic)
        self._all_down = False
        self._broker_errors: list[str] = []
        self._served_at = time.monotonic()
        self._producer: KafkaProducer | None = None
        self._journal: Journal | None = None
        if self.bootstrap:
            self._producer = KafkaProducer(self._config(self.bootstrap))
            directory = journal_dir(settings, self.bootstrap)
            if directory is not None:
                # Imported here: a CI job sending to a real Kafka never pays for it.
                from shipledger.producers.journal import Journal

                self._journal = Journal(directory, fsync=settings.journal_fsync)

    def _config(self, bootstrap: str) -> dict[str, Any]:
        timeout_ms = max(int(self._settings.emit_timeout_s * 1000), 1)
        # acks=all, linger and the partitioner Faust uses (murmur2_random).
        conf = self._settings.kafka_producer(bootstrap)
        conf.update(
            {
                "client.id": "shipledger-emitter",
                # An emit process sends one or two events: the idempotent producer's id
                # handshake (measured: +500 ms on every call) buys nothing here. One request in
                # flight keeps order across retries; a retried duplicate carries the same
                # event_id and is dropped downstream (sink dedup by id).
                "enable.idempotence": False,
                "max.in.flight.requests.per.connection": 1,
                # A message not acknowledged within the emit timeout fails (and is spooled).
                "message.timeout.ms": max(timeout_ms, int(self._settings.producer_linger_ms) + 1),
                "request.timeout.ms": timeout_ms,
                "socket.timeout.ms": max(timeout_ms, 10),
                # A black-holed broker (no RST) is noticed well within the emit timeout.
                "socket.connection.setup.timeout.ms": min(max(timeout_ms // 2, 1000), 30_000),
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 1000,
                "error_cb": self._on_error,
                "logger": RdkafkaLog(),
            }
        )
        return conf

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._all_down = True
        else:
            self._broker_errors.append(err.str())
        if err.fatal():
            self._all_down = True
            self._broker_errors.append(f"fatal: {err.str()}")

    def _encode(self, event: DeploymentEvent) -> tuple[bytes, bytes]:
        return DEPLOYMENT.key(event), self._codec.encode(event.to_avro())

    def _journal_append(
        self, events: Sequence[DeploymentEvent], encoded: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Journal the events before they are produced (embedded stack only)."""
        if self._journal is None:
            return
        from shipledger.producers.journal import Entry

        self._journal.append(
            [
                Entry(self.topic, key, value, event.tenant, event.event_id, DEPLOYMENT.name)
                for event, (key, value) in zip(events, encoded, strict=True)
            ]
        )

    # --- the acknowledged path -----------------------------------------------------------------

    def publish(
        self, events: Sequence[DeploymentEvent], *, spool_on_failure: bool = True
    ) -> PublishResult:
        """Send `events` and wait (at most ~emit_timeout_s) until Kafka acknowledges each one.

        Unacknowledged events go to the spool unless `spool_on_failure` is False; they are
        listed in `unsent` either way. If every broker is down, gives up early instead of
        waiting for the timeout.
        """
        if not events:
            return PublishResult(sent=0, spooled=0)
        if self._producer is None:
            self._log.warning(NO_BOOTSTRAP)
            return self._give_up(list(events), [NO_BOOTSTRAP], spool_on_failure)

        producer = self._producer
        if time.monotonic() - self._served_at > _FRESH_S:
            # Broker reports queued while nobody polled are old news: serve and forget them.
            producer.poll(0)
            self._all_down = False
            self._broker_errors.clear()
        pending = _Pending(len(events))
        encoded = [self._encode(event) for event in events]  # a bug, not an outage, if it fails
        try:
            self._journal_append(events, encoded)
        except OSError as exc:  # JournalError, or the journal's lock
            self._log.warning("journal refused the events", error=str(exc))
            return self._give_up(list(events), [str(exc)], spool_on_failure)
        for index, (key, value) in enumerate(encoded):
            producer.produce(self.topic, value, key, on_delivery=pending.callback(index))
        deadline = time.monotonic() + self._settings.emit_timeout_s + 0.5
        while pending.waiting > 0 and not self._all_down:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            producer.flush(min(remaining, 0.05))
            self._served_at = time.monotonic()
        if pending.waiting > 0:
            # Gave up: withdraw what is still queued, so it cannot also arrive after we spool it.
            producer.purge()
            producer.poll(0)
        producer.forget_failures()  # every outcome is in `pending`

        self._served_at = time.monotonic()
        unsent = [event for event, why in zip(events, pending.outcomes, strict=True) if why]
        if len(unsent) < len(events):
            self._all_down = False  # a broker answered
        if not unsent:
            return PublishResult(sent=len(events), spooled=0)
        reasons = sorted({why for why in pending.outcomes if why})
        if self._all_down:
            last = self._broker_errors[-1] if self._broker_errors else "no connection"
            reasons = [f"Kafka at {self.bootstrap} unreachable: {last}"]
        self._log.debug("delivery failed", failed=len(unsent), reasons=reasons)
        result = self._give_up(unsent, reasons, spool_on_failure)
        return PublishResult(
            sent=len(events) - len(unsent),
            spooled=result.spooled,
            errors=result.errors,
            unsent=result.unsent,
            spool_path=result.spool_path,
        )

    def _give_up(
        self, unsent: list[DeploymentEvent], errors: list[str], spool: bool
    ) -> PublishResult:
        if not spool:
            return PublishResult(sent=0, spooled=0, errors=errors, unsent=unsent)
        try:
            self.spool.append(unsent)
        except SpoolError as exc:
            self._log.error("could not spool events", error=str(exc), count=len(unsent))
            return PublishResult(sent=0, spooled=0, errors=[*errors, str(exc)], unsent=unsent)
        return PublishResult(
            sent=0,
            spooled=len(unsent),
            errors=errors,
            unsent=unsent,
            spool_path=self.spool.directory,
        )

    # --- the fast path -------------------------------------------------------------------------

    def publish_many(
        self, events: Iterable[DeploymentEvent], on_delivery: DeliveryCallback | None = None
    ) -> int:
        """Produce many events without waiting for each, then flush; returns how many.

        Raises PublishError if any event was not delivered (nothing is spooled on this path).
        `on_delivery(err, msg)` is called for every event, from `poll`/`flush`.
        """
        if self._producer is None:
            raise PublishError(NO_BOOTSTRAP)
        producer = self._producer
        count = 0
        for chunk in _chunks(events, _JOURNAL_CHUNK):
            encoded = [self._encode(event) for event in chunk]
            try:
                self._journal_append(chunk, encoded)
            except OSError as exc:  # JournalError, or the journal's lock
                raise PublishError(str(exc)) from exc
            for key, value in encoded:
                producer.produce(self.topic, value, key, on_delivery=on_delivery)
                producer.poll(0)
            count += len(chunk)
        # Every queued message succeeds or times out within message.timeout.ms of the last one.
        try:
            producer.flush_or_raise(self._settings.emit_timeout_s + 1.0)
        except DeliveryError as exc:
            first = exc.first_error or "flush timed out"
            raise PublishError(
                f"{exc.failed + exc.pending} of {count} events not delivered to {self.topic}: "
                f"{first}"
            ) from exc
        return count

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Wait (at most emit_timeout_s) for anything still queued, then drop the producer."""
        if self._producer is not None:
            self._producer.flush(self._settings.emit_timeout_s)
            self._producer = None

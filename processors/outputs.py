"""The processors' output side: records, alerts and dead letters through one confluent-kafka
producer.

Faust's own `topic.send` costs hundreds of microseconds per message in Python; librdkafka
queues a message in microseconds and batches in C. The agent flushes this producer at the end
of every batch, twice: first the records, alerts and dead letters, then the table changelog
entries that say the batch's events were applied, and only then does Faust ack (and later
commit) the batch's source offsets. So a crash at any point leaves either the inputs
uncommitted (the batch is redone from the older state, with the same deterministic ids) or
every output durable: delivery stays at-least-once and no event is marked applied whose
outputs were lost.

Every message queued is counted by topic (`processors.events_out`), every dead letter by its
source topic and every alert by rule, severity and kind as it is encoded for sending
(`shipledger.metrics`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shipledger import metrics as m
from shipledger.kafka import DeliveryError, KafkaProducer
from shipledger.schemas.families import scoped_key
from shipledger.schemas.letters import DeadLetter, Headers
from shipledger.schemas.models import Alert, DeploymentRecord
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import ALERTS, RECORDS, Topics
from shipledger.settings import Settings

#: (topic, key, value) of one encoded output message.
Payload = tuple[str, bytes, bytes]

#: How long a queued output may wait for more before librdkafka sends it. Every batch ends in
#: `flush`, which sends at once whatever the linger (librdkafka >= 1.8): so a batch's outputs
#: go out together, in one produce request per flush, instead of one every
#: `producer_linger_ms` while the batch is handled. Those small idempotent acks=all requests
#: cost the producer's broker thread ~65-85 µs of CPU per event (/proc, bench traffic); with
#: this linger, ~4 µs. The bound only matters if a batch is handled for longer than that.
_LINGER_MS = 1000


#: The header a worker sets on the records it sends: its feed skips its own records, which it
#: folded into the anomaly join's recent deployments as it sent them (`processors.feed`).
ORIGIN = "shipledger-origin"


def origin_header(origin: str) -> list[tuple[str, bytes]]:
    """The headers of a record sent by the worker named `origin` (as the consumer reads them)."""
    return [(ORIGIN, origin.encode())]


class OutputError(RuntimeError):
    """Kafka did not take the batch's outputs: the batch must not be acknowledged."""


class Outputs:
    """Produces the agent's results; `flush()` makes them durable or raises."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        metrics: m.RecordingMetrics,
        flush_timeout_s: float = 30.0,
        origin: str | None = None,
    ) -> None:
        self.topics = Topics.from_settings(settings)
        #: The header naming this worker on each record it sends (`origin_header`).
        self._origin = None if origin is None else origin_header(origin)
        self.metrics = metrics
        self._producer = KafkaProducer(
            {
                **settings.kafka_producer(bootstrap),
                "client.id": "shipledger-processors",
                # Only failures are counted (`flush` raises on them): a delivery report per
                # message acknowledged was a Python callback each, contending for the GIL.
                "delivery.report.only.error": True,
                "linger.ms": _LINGER_MS,
            }
        )
        self._records = topic_codec(RECORDS)
        self._alerts = topic_codec(ALERTS)
        self._flush_timeout_s = flush_timeout_s

    def encode(self, record: DeploymentRecord | None, alerts: list[Alert]) -> list[Payload]:
        """Serialize one event's results (raises EncodeError) before any of them is queued,
        so an event's outputs go out all together or not at all. Without a record: only
        the alerts (a replayed first event's)."""
        records = [] if record is None else [record]
        encoded = [
            *(
                (
                    self.topics.records,
                    scoped_key(r.tenant, r.deployment_id),
                    self._records.encode(r.to_avro()),
                )
                for r in records
            ),
            *(
                (
                    self.topics.alerts,
                    scoped_key(a.tenant, a.deployment_id),
                    self._alerts.encode(a.to_avro()),
                )
                for a in alerts
            ),
        ]
        for alert in alerts:
            tags = {"rule": alert.rule, "severity": alert.severity, "kind": alert.kind}
            self.metrics.increment(m.ALERTS_RAISED, tags=tags)
        return encoded

    def send(self, payloads: Sequence[Payload]) -> None:
        """Queue encoded outputs."""
        for topic, key, value in payloads:
            headers = self._origin if topic == self.topics.records else None
            self._producer.produce(topic, value, key, headers=headers)
            self.metrics.increment(m.PROCESSOR_EVENTS_OUT, tags={"topic": topic})

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue the original bytes of a rejected message with its reason headers."""
        self._producer.produce(self.topics.dlq, value, key, headers=headers)
        self.metrics.increment(m.PROCESSOR_EVENTS_OUT, tags={"topic": self.topics.dlq})
        source = DeadLetter.read(headers).source_topic or ""
        self.metrics.increment(m.PROCESSOR_DEAD_LETTERED, tags={"topic": source})

    def changelog(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Queue a table changelog entry to an explicit partition."""
        self._producer.produce(topic, value, key, partition=partition)

    async def flush(self) -> None:
        """Wait (off the event loop) until Kafka acknowledged everything queued, or raise.

        When the agent is cancelled meanwhile (worker shutdown), Faust acks the batch right
        after: so the flush is finished here, blocking, before the cancellation goes on."""
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.flush_blocking)
        except asyncio.CancelledError:
            self.flush_blocking()
            raise

    def flush_blocking(self) -> None:
        """`flush`, in the calling thread."""
        try:
            self._producer.flush_or_raise(
                self._flush_timeout_s, f"outputs after {self._flush_timeout_s:g}s"
            )
        except DeliveryError as exc:
            raise OutputError(str(exc)) from exc

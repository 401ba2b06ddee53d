"""`KafkaProducer`: the one way shipledger produces to Kafka (a thin confluent-kafka wrapper).

Every produce site (the emitter's publisher, the API bridge, the processors' outputs, the
sink's dead letters, `dlq replay`, `up`'s restore, the benchmarks) goes through it, so the
three things each used to hand-write are written once:

- **A bounded local queue.** librdkafka queues at most `queue.buffering.max.messages`
  (`Settings.producer_queue_messages`, part of `Settings.kafka_producer`); a produce into a
  full queue serves delivery callbacks until there is room, or reports it
  (`produce(..., wait=False)`, for callers that must not block, such as an event loop).
- **The first delivery error.** Failed deliveries are counted and the first one's reason is
  kept; a caller's own `on_delivery` still sees every outcome.
- **Flush or raise.** `flush_or_raise(timeout_s)` returns only when every queued message was
  acknowledged, else raises `DeliveryError` (how many are pending, how many failed, the first
  reason) and forgets the failures it reported.

Ground floor: imports only confluent-kafka. Delivery callbacks run in whichever thread calls
`poll`/`flush`; the counters they update are read after that call returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

#: How long a produce into a full queue serves callbacks before trying again.
_FULL_QUEUE_POLL_S = 0.05

DeliveryCallback = Callable[[KafkaError | None, Message], None]
Headers = Sequence[tuple[str, str | bytes | None]]


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge everything produced: `pending` still queued at the deadline,
    `failed` refused (the first reason in `first_error`)."""

    def __init__(self, what: str, pending: int, failed: int, first_error: str | None) -> None:
        detail = f"; first error: {first_error}" if first_error else ""
        super().__init__(f"{what}: {pending} unacknowledged, {failed} failed{detail}")
        self.pending = pending
        self.failed = failed
        self.first_error = first_error


class KafkaProducer:
    """One confluent-kafka producer with a bounded queue and delivery bookkeeping (see the
    module docstring). `conf` is librdkafka's configuration (`Settings.kafka_producer`)."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        if "queue.buffering.max.messages" not in conf:
            raise ValueError("a producer needs a bounded queue: build conf with kafka_producer")
        self._producer = Producer(dict(conf))
        self.failed = 0
        self.first_error: str | None = None

    def _count(self, err: KafkaError | None, _msg: Message | None = None) -> None:
        if err is None:
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err.str()

    def _callback(self, on_delivery: DeliveryCallback | None) -> DeliveryCallback:
        if on_delivery is None:
            return self._count

        def both(err: KafkaError | None, msg: Message) -> None:
            self._count(err)
            on_delivery(err, msg)

        return both

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: Headers | None = None,
        partition: int = -1,
        on_delivery: DeliveryCallback | None = None,
        wait: bool = True,
    ) -> bool:
        """Queue one message. While the local queue is full it serves delivery callbacks until
        there is room, or with `wait=False` queues nothing and returns False at once. Raises
        KafkaException when librdkafka refuses the message itself (e.g. too large)."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    # confluent-kafka takes a list (or dict), not any sequence
                    headers=None if headers is None else list(headers),
                    partition=partition,
                    on_delivery=self._callback(on_delivery),
                )
            except BufferError:
                if not wait:
                    return False
                self._producer.poll(_FULL_QUEUE_POLL_S)
            else:
                return True

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery callbacks (at most `timeout_s`); how many were served."""
        return self._producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Wait at most `timeout_s` for every queued message; how many are still queued."""
        return self._producer.flush(timeout_s)

    def flush_or_raise(self, timeout_s: float, what: str = "messages") -> None:
        """Return once everything queued is acknowledged; else raise DeliveryError (`what`
        names the messages) and forget the failures it reports."""
        pending = self.flush(timeout_s)
        if pending or self.failed:
            failed, first = self.failed, self.first_error
            self.forget_failures()
            raise DeliveryError(what, pending, failed, first)

    def forget_failures(self) -> None:
        """Drop the failures counted so far (a caller that took every outcome from its own
        callbacks, so a later `flush_or_raise` reports only what came after)."""
        self.failed = 0
        self.first_error = None

    def purge(self) -> None:
        """Withdraw every queued and in-flight message (they fail with `_PURGE_*`)."""
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)

    def ready(self, timeout_s: float) -> str | None:
        """None if a broker answers a metadata request within `timeout_s`, else why not."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            return str(exc)
        return None


def ready_messages(consumer: Consumer, wait_s: float, most: int) -> list[Message]:
    """The next messages as soon as one arrives: wait at most `wait_s` for one, then take
    whatever else is already fetched (at most `most` in all) without waiting.

    `consume(n, timeout)` returns only once it holds n messages or the timeout expired, so a
    trickle of messages waits the whole timeout each time (an alert on its way to a pager, a
    record on its way to a dashboard)."""
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, timeout=0)]

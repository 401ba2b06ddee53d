"""`shipledger.kafka.KafkaProducer` against a broker that is not there: the bounded queue, the
first delivery error, flush-or-raise. librdkafka fails each message after message.timeout.ms."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from shipledger.kafka import DeliveryError, KafkaProducer
from shipledger.settings import Settings

NOWHERE = "127.0.0.1:1"


def producer(**conf: Any) -> KafkaProducer:
    base = Settings(producer_queue_messages=2).kafka_producer(NOWHERE)
    return KafkaProducer(
        {**base, "message.timeout.ms": 200, "enable.idempotence": False, "log_level": 0, **conf}
    )


def test_a_producer_needs_a_bounded_queue() -> None:
    with pytest.raises(ValueError, match="bounded queue"):
        KafkaProducer({"bootstrap.servers": NOWHERE})
    assert Settings().kafka_producer(NOWHERE)["queue.buffering.max.messages"] == 100_000


def test_a_full_queue_is_reported_without_waiting_or_waited_out() -> None:
    p = producer()
    assert p.produce("t", b"1", wait=False) and p.produce("t", b"2", wait=False)
    assert not p.produce("t", b"3", wait=False)  # two queued: the bound
    seen: list[KafkaError | None] = []

    def mine(err: KafkaError | None, _msg: Message) -> None:
        seen.append(err)

    p.produce("t", b"3", on_delivery=mine)  # waits until the first two time out
    assert p.failed >= 2 and p.first_error is not None
    with pytest.raises(DeliveryError) as caught:
        p.flush_or_raise(5, "test messages")
    assert caught.value.failed == 3 and caught.value.pending == 0
    assert "test messages: 0 unacknowledged, 3 failed; first error:" in str(caught.value)
    assert len(seen) == 1 and seen[0] is not None  # the caller's callback saw its message
    # The failures reported are forgotten: nothing new, nothing raised.
    forgotten: tuple[int, str | None] = (p.failed, p.first_error)
    assert forgotten == (0, None)
    p.flush_or_raise(1)


def test_flush_or_raise_counts_what_is_still_queued() -> None:
    p = producer(**{"message.timeout.ms": 60_000})
    p.produce("t", b"x")
    with pytest.raises(DeliveryError) as caught:
        p.flush_or_raise(0.2)
    assert (caught.value.pending, caught.value.failed) == (1, 0)
    p.purge()
    p.poll(0.5)
    assert p.failed == 1  # a purged message is a failed delivery


def test_ready_says_why_not() -> None:
    reason = producer().ready(0.2)
    assert reason is not None

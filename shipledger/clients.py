"""The Kafka clients of a consume-then-produce loop (the sink, the escalator): one place says how
each builds its consumer and its producer, and where a test swaps them for hand-built fakes.
Also the consumer of the commands that only read a topic (`dlq`, `alerts tail`), and their
read up to where the partitions ended when reading began."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from shipledger.kafka import KafkaProducer
from shipledger.lag import Watermarks, end_offsets
from shipledger.settings import Settings

#: The sink's role: its consumer group's committed offsets say what the ledger holds (the live
#: stream replays from there: `producers.api.stream_hub`).
SINK_ROLE = "sink"


def consumer_group(settings: Settings, role: str) -> str:
    """The consumer group of a loop's `role` (unless one is given): `<topic_prefix><role>`."""
    return f"{settings.topic_prefix}{role}"


class KafkaClients:
    """Builds the consumer and the producer of a loop, both named for its `role` (the group
    `<topic_prefix><role>` unless one is given, the client `shipledger-<role>`).
    Override `make_consumer`/`make_producer` in tests to drive the loop with fakes."""

    role: ClassVar[str]

    def __init__(self, settings: Settings, bootstrap: str, group_id: str | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.group_id = group_id or consumer_group(settings, self.role)

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer settings: manual commits, short fetch wait and session."""
        return self.settings.kafka_consumer(
            self.bootstrap, self.group_id, f"shipledger-{self.role}"
        )

    def make_consumer(self) -> Consumer:
        """A new consumer in the loop's group."""
        return Consumer(self.consumer_config())

    def make_producer(self) -> KafkaProducer:
        """The producer of the loop's outputs and dead letters."""
        return KafkaProducer(self.settings.kafka_producer(self.bootstrap))


def reader_consumer(settings: Settings, bootstrap: str, role: str) -> Consumer:
    """A consumer for a command that reads a topic and stops (`dlq`, `alerts tail`): it is
    assigned partitions, never subscribed, so it joins no group and commits nothing
    (librdkafka still wants a group id: a fresh one per reader). It reports the end of each
    partition, and starts at the earliest offset where none is given."""
    return Consumer(
        {
            **settings.kafka_common(bootstrap),
            "group.id": f"shipledger-{role}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": settings.fetch_wait_ms,
        }
    )


def position(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message without an error, where both are always set
    (the client types them optional for error events)."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None, "an error event has no position"
    return partition, offset


def topic_partitions(consumer: Consumer, bootstrap: str, topic: str, timeout_s: float) -> list[int]:
    """The partitions of `topic`, none if the broker has no such topic (yet); for the commands
    that read a topic: click.ClickException naming the broker if it does not answer."""
    import click  # the commands' error; the loops that import this module never get here

    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise click.ClickException(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    if meta is None or meta.error is not None or not meta.partitions:
        return []
    return sorted(meta.partitions)


def topic_ends(
    settings: Settings, bootstrap: str, topic: str, partitions: Collection[int], timeout_s: float
) -> dict[int, Watermarks]:
    """Where `partitions` of `topic` start and end now, for a reader that stops at the end: the
    ends read from fetches (`lag.end_offsets`), as Tansu's ListOffsets answers the base offset
    of a partition's last record batch + 1 (a reader bounded by it stopped after the first
    message of that batch). click.ClickException naming the topic if the broker cannot say."""
    import click  # the commands' error; the loops that import this module never get here

    try:
        marks = end_offsets(
            settings.kafka_common(bootstrap), [(topic, p) for p in partitions], timeout_s
        )
    except KafkaException as exc:
        raise click.ClickException(f"cannot read where {topic} ends: {exc}") from exc
    return {p: marks[(topic, p)] for p in partitions}


def next_to_end(
    consumer: Consumer,
    timeout_s: float,
    pending: set[int],
    ends: Mapping[int, int],
    *,
    also_ending: Collection[int] = (),
) -> Message | None:
    """One poll of a reader that reads each partition in `pending` up to `ends` (its high
    watermark when reading began): the message read, or None when there was none. A partition
    leaves `pending` at its last message before that end, or at an end-of-partition event (or
    an error of a code in `also_ending`); any other error raises KafkaException."""
    msg = consumer.poll(timeout_s)
    if msg is None:
        return None
    err = msg.error()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF or err.code() in also_ending:
            pending.discard(msg.partition())
            return None
        raise KafkaException(err)
    partition, offset = position(msg)
    if offset >= ends[partition] - 1:
        pending.discard(partition)
    return msg

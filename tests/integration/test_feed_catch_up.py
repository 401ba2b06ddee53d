"""A worker's catch-up with the artifacts topic (`EnrichmentFeed.read_to_end`) and the live
stream's start read a partition to its true end on Tansu, whose ListOffsets(latest) answers
the base offset of the partition's last record batch + 1 (`shipledger.lag`): builds published
in one batch followed at once by a deployment of the last one must not flag it unknown.

The feed's catch-up is tested at its own level, on a real Tansu broker: end to end (the API,
the worker) the catch-up is wrong only when the feed has handed over the first builds of the
last batch and not yet the others, a window of microseconds the test cannot hold open from
outside. Here a hook on the feed's decoding holds it open: the feed stops in the middle of
that batch until `read_to_end` returned, or for `HOLD_S` when it (rightly) does not return.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from shipledger.processors.feed import EnrichmentFeed, FeedEvent
from shipledger.producers.api.stream_hub import StreamHub
from shipledger.schemas.family_models import ArtifactEvent
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import ARTIFACTS, RECORDS, Topics
from shipledger.settings import Settings
from shipledger.topics import ensure_topics
from tests.kit import build_event, deployment_record, own_settings, wait_for

pytestmark = pytest.mark.integration

#: How long the feed holds the rest of the batch when `read_to_end` does not return first.
HOLD_S = 2.0
BUILT_AT = datetime(2026, 12, 1, 8, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, broker: str) -> Settings:
    """Settings of a private topic prefix, its topics created on the session's broker with
    one partition each (every build below lands in one partition)."""
    settings = own_settings(tmp_path, topic_partitions=1)
    ensure_topics(settings, broker)
    return settings


def publish_one_batch(settings: Settings, broker: str, topic: str, values: list[bytes]) -> None:
    """`values` produced to `topic` in one record batch: queued, then sent by one flush."""
    producer = Producer({**settings.kafka_common(broker), "linger.ms": 60_000})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def build(n: int) -> ArtifactEvent:
    return build_event(f"svc-{n}", "acme", BUILT_AT)


@pytest.fixture
def feed(settings: Settings, broker: str) -> Iterator[EnrichmentFeed]:
    running = EnrichmentFeed(settings, broker)
    running.start(lambda: None)
    wait_for(lambda: running.caught_up, "the feed to catch up")
    yield running
    running.stop()


def hold_at(feed: EnrichmentFeed, digest: str, until: threading.Event) -> threading.Event:
    """Make `feed` stop before decoding the artifact event of `digest` until `until` is set
    (or `HOLD_S` passed); the event returned is set once it stopped there."""
    held = threading.Event()
    decode = feed._decode

    def holding(
        topic: str | None, value: bytes | None, partition: int | None, offset: int | None
    ) -> FeedEvent | None:
        event = decode(topic, value, partition, offset)
        if isinstance(event, ArtifactEvent) and event.digest == digest:
            held.set()
            until.wait(HOLD_S)
        return event

    feed._decode = holding  # type: ignore[method-assign]
    return held


def test_a_catch_up_reads_the_whole_last_batch(
    settings: Settings, broker: str, feed: EnrichmentFeed
) -> None:
    """Builds 0 to 3 in one batch, then the catch-up a deployment of build 3 triggers: the
    feed must hand over build 3 before `read_to_end` returns. Build 0 goes first, alone: the
    feed is held there while the batch is published and the catch-up asked, so the feed asks
    where the topic ends (ListOffsets: build 1's offset on Tansu) before reading the batch;
    then it is held again after build 1, until `read_to_end` returned."""
    topic = Topics.from_settings(settings).of(ARTIFACTS)
    codec = topic_codec(ARTIFACTS)
    builds = [build(n) for n in range(4)]
    first_released, returned = threading.Event(), threading.Event()
    first_held = hold_at(feed, builds[0].digest or "", first_released)
    publish_one_batch(settings, broker, topic, [codec.encode(builds[0].to_avro())])
    wait_for(first_held.is_set, "the feed to read build 0")
    hold_at(feed, builds[2].digest or "", returned)
    publish_one_batch(settings, broker, topic, [codec.encode(b.to_avro()) for b in builds[1:]])
    with ThreadPoolExecutor(1) as pool:
        catch_up = pool.submit(feed.read_to_end, ARTIFACTS, 30)
        wait_for(lambda: bool(feed._requests), "the catch-up's request")
        first_released.set()
        reached = catch_up.result()
        # Drained before the feed goes on: what `read_to_end` promised, not what came after.
        digests = {e.digest for e in feed.drain() if isinstance(e, ArtifactEvent)}
        returned.set()
    assert reached
    assert builds[3].digest in digests


def test_the_live_stream_starts_at_the_true_end(settings: Settings, broker: str) -> None:
    """Records published in one batch before the stream started are not new: the hub starts
    after the last of them, not in the middle of the batch (its clients got the rest as
    news)."""
    topics = Topics.from_settings(settings)
    codec = topic_codec(RECORDS)
    records = [deployment_record(deployment_id=f"d-{n}").to_avro() for n in range(4)]
    publish_one_batch(settings, broker, topics.records, [codec.encode(r) for r in records])
    hub = StreamHub(settings, broker)
    consumer = hub._consumer()
    try:
        assert hub._next[(topics.records, 0)] == len(records)
    finally:
        consumer.close()

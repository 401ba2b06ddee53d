"""The sink's chain driven with hand-built Kafka messages, a fake consumer/producer and an
in-memory store: commit only after the write, dedup, DLQ, the DLQ limit, retries, the write
timeout, stats from the metrics recorder. No broker, no ClickHouse."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message, TopicPartition
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shipledger import metrics as m
from shipledger.dlq_limit import DlqLimitExceeded
from shipledger.metrics import RecordingMetrics
from shipledger.schemas.models import Alert, DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import LANE, ChainKey, Head
from shipledger.sinks.ledger.store import TimeWindow
from shipledger.sinks.route import kafka_meta, route_message
from shipledger.sinks.rows import RowKey, row_key
from shipledger.sinks.sink import ClickHouseSink, SinkError
from tests.kit import FakeProducer, sample_alert

SHA = "0123456789abcdef0123456789abcdef01234567"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


class MemoryStore:
    """Rows per table in memory; can fail the next N writes."""

    def __init__(self, log: list[str]) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.log = log
        self.fail_next = 0
        self.hang: threading.Event | None = None
        #: The time window of each existence check, by table.
        self.windows: dict[str, TimeWindow | None] = {}

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("ClickHouse unavailable")

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        self._maybe_fail()
        if self.hang is not None:
            self.hang.wait()
        self.tables.setdefault(table, []).extend(rows)
        self.log.append(f"insert {table} {len(rows)}")
        return len(rows)

    def existing_ids(
        self, table: str, keys: Iterable[RowKey], *, window: TimeWindow | None = None
    ) -> set[RowKey]:
        self._maybe_fail()
        self.windows[table] = window
        id_column = ddl.tables()[table].id_column
        stored = {row_key(row, id_column) for row in self.tables.get(table, [])}
        return stored & set(keys)

    def load_heads(self, table: str, lanes: Collection[str] | None = None) -> dict[ChainKey, Head]:
        heads: dict[ChainKey, Head] = {}
        for row in self.tables.get(table, []):
            key = (table, row["tenant"], row["retention_class"], row[LANE])
            if (lanes is None or key[3] in lanes) and (
                key not in heads or heads[key].seq < row["chain_seq"]
            ):
                heads[key] = Head(
                    row["chain_seq"], row["row_hash"], row["retain_until"], row["ledger_at"]
                )
        return heads

    def recorded_heads(
        self, table: str, lanes: Collection[str] | None = None
    ) -> dict[ChainKey, Head]:
        return {}

    def append_heads(self, heads: Mapping[ChainKey, Head]) -> None:
        self.log.append(f"heads {len(heads)}")


#: What a fake consumer's `consume` does next: return messages, or run a rebalance callback
#: (librdkafka calls them from inside `consume`).
Step = list[Message] | Callable[["FakeConsumer"], None]


class FakeConsumer:
    def __init__(self, log: list[str], batches: list[Step]) -> None:
        self.log = log
        self.batches = batches
        self.commits: list[list[tuple[str, int, int]]] = []
        self.closed = False

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None
    ) -> None:
        self.topics = topics
        self.on_assign, self.on_revoke, self.on_lost = on_assign, on_revoke, on_lost

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        step = self.batches.pop(0) if self.batches else []
        if callable(step):
            step(self)
            return []
        return step

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        self.log.append("commit")

    def close(self) -> None:
        # librdkafka revokes the assignment on close, which calls on_revoke
        if self.on_revoke is not None:
            self.on_revoke(self, [])
        self.closed = True


class Harness(ClickHouseSink):
    """The real sink with its Kafka clients replaced."""

    consumer: FakeConsumer
    producer: FakeProducer

    def make_consumer(self) -> Any:
        return self.consumer

    def make_producer(self) -> Any:
        return self.producer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, topic_prefix="p.", sink_batch_size=100, sink_batch_ms=50)


def _event(i: int) -> DeploymentEvent:
    return DeploymentEvent(
        event_id=f"evt-{i}",
        deployment_id=f"dep-{i % 3}",
        event_type="started",
        service="checkout",
        environment="prod",
        commit_sha=SHA,
        actor="alice",
        occurred_at=T0 + timedelta(seconds=i),
    )


def _alert(i: int) -> Alert:
    return sample_alert(
        alert_id=f"evt-{i}:freeze",
        rule="freeze_violation",
        severity="critical",
        message="deployed during a freeze",
        deployment_id=f"dep-{i % 3}",
        event_id=f"evt-{i}",
        occurred_at=T0,
    )


def messages(topics: Topics, n: int, start_offset: int = 0) -> list[Message]:
    ev = AvroCodec("io.shipledger.v1.DeploymentEvent")
    al = AvroCodec("io.shipledger.v1.Alert")
    out = []
    for i in range(n):
        ts = (TIMESTAMP_CREATE_TIME, int(T0.timestamp() * 1000))
        out.append(
            Message(
                topic=topics.raw,
                partition=i % 2,
                offset=start_offset + i,
                key=f"dep-{i % 3}".encode(),
                value=ev.encode(_event(i).to_avro()),
                timestamp=ts,
            )
        )
        out.append(
            Message(
                topic=topics.alerts,
                partition=0,
                offset=start_offset + i,
                key=b"k",
                value=al.encode(_alert(i).to_avro()),
                timestamp=ts,
            )
        )
    return out


def harness(settings: Settings, batches: list[Step]) -> tuple[Harness, list[str]]:
    log: list[str] = []
    sink = Harness(
        settings, "unused:9092", MemoryStore(log), RecordingMetrics(), policy=load_policy(None)
    )
    sink.writer.retry_backoff_s = 0.001
    sink.consumer = FakeConsumer(log, batches)
    sink.producer = FakeProducer()
    return sink, log


def run_until_drained(sink: Harness) -> None:
    stop = threading.Event()

    def _stopper() -> None:
        while sink.consumer.batches:
            threading.Event().wait(0.005)
        stop.set()

    t = threading.Thread(target=_stopper)
    t.start()
    sink.run(stop)
    t.join()


def store_of(sink: Harness) -> MemoryStore:
    assert isinstance(sink.store, MemoryStore)
    return sink.store


def test_rows_are_written_then_offsets_committed(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    sink, log = harness(settings, [messages(topics, 10)])
    run_until_drained(sink)
    store = store_of(sink)
    assert len(store.tables["deployment_events"]) == 10
    assert len(store.tables["alerts"]) == 10
    assert log.index("commit") > max(i for i, e in enumerate(log) if e.startswith("insert"))
    committed = {(t, p): o for t, p, o in sink.consumer.commits[-1]}
    assert committed == {(topics.raw, 0): 9, (topics.raw, 1): 10, (topics.alerts, 0): 10}
    assert sink.consumer.closed
    stats = sink.stats()
    assert stats.rows_inserted["deployment_events"] == 10
    assert stats.messages == 20
    assert stats.last_flush_at is not None
    # An alert's existence check is narrowed to the batch's time window; an event's is not
    # (a resend may carry another time: ddl's `dedup_in_time_window`).
    window = store.windows["alerts"]
    assert window is not None and window.column == "occurred_at"
    assert store.windows["deployment_events"] is None


def _events_on(topics: Topics, partition: int, ids: range) -> list[Message]:
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    return [
        Message(
            topic=topics.raw,
            partition=partition,
            offset=i,
            key=b"k",
            value=codec.encode(_event(i).to_avro()),
            timestamp=(TIMESTAMP_CREATE_TIME, int(T0.timestamp() * 1000)),
        )
        for i in ids
    ]


def test_rows_chain_in_their_partitions_lane_read_again_at_each_assignment(
    settings: Settings,
) -> None:
    """Each row is chained in the lane of the partition it was read from; a partition given
    back to the sink after another sink extended its lane continues from the ledger's head,
    not from what the sink remembered (which would fork the chain)."""
    topics = Topics.from_settings(settings)
    p0 = TopicPartition(topics.raw, 0)

    def another_sink_extends_p0(consumer: FakeConsumer) -> None:
        consumer.on_revoke(consumer, [p0])
        other = Harness(settings, "unused:9092", sink.store, policy=load_policy(None))
        other.writer.write_rows(
            {ddl.EVENTS: [row_of(e) for e in _events_on(topics, 0, range(3, 5))]}
        )
        consumer.on_assign(consumer, [p0])

    def row_of(msg: Message) -> dict[str, Any]:
        route = sink.routes[topics.raw]
        row = route_message(route, msg, kafka_meta(msg))
        assert isinstance(row, dict)
        return {**row, LANE: "p0"}

    sink, _ = harness(
        settings,
        [
            _events_on(topics, 0, range(3)) + _events_on(topics, 1, range(10, 12)),
            another_sink_extends_p0,
            _events_on(topics, 0, range(5, 7)),
        ],
    )
    run_until_drained(sink)
    rows = store_of(sink).tables[ddl.EVENTS]
    lanes: dict[str, list[dict[str, Any]]] = {row[LANE]: [] for row in rows}
    for row in rows:
        lanes[row[LANE]].append(row)
    assert sorted(lanes) == ["p0", "p1"]
    assert [r["event_id"] for r in lanes["p1"]] == ["evt-10", "evt-11"]
    chain = lanes["p0"]
    assert [r["chain_seq"] for r in chain] == [1, 2, 3, 4, 5, 6, 7]
    assert all(b["prev_hash"] == a["row_hash"] for a, b in itertools.pairwise(chain))


def test_lost_partitions_drop_the_batch_unwritten_and_uncommitted(tmp_path: Path) -> None:
    """Partitions lost (the session expired: another sink reads them already) are not written
    from here: the batch is dropped, nothing is committed; the new owner reads it again."""
    settings = Settings(data_dir=tmp_path, topic_prefix="p.", sink_batch_ms=60_000)
    topics = Topics.from_settings(settings)

    def lose(consumer: FakeConsumer) -> None:
        consumer.on_lost(consumer, [TopicPartition(topics.raw, 0)])

    sink, log = harness(settings, [_events_on(topics, 0, range(3)), lose])
    run_until_drained(sink)
    assert not [e for e in log if e.startswith("insert")]
    assert sink.consumer.commits == []


def test_every_row_names_the_policy_that_shaped_it(settings: Settings) -> None:
    """Events get the version of the policy the sink was given (its retention stamped them);
    alerts keep the version they were judged under."""
    topics = Topics.from_settings(settings)
    sink, _ = harness(settings, [messages(topics, 2)])
    run_until_drained(sink)
    store = store_of(sink)
    version = load_policy(None).full_version
    assert {row["policy_version"] for row in store.tables["deployment_events"]} == {version}
    assert {row["policy_version"] for row in store.tables["alerts"]} == {"p1"}


def test_replayed_and_repeated_messages_are_skipped(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    batch = messages(topics, 5)
    sink, _ = harness(settings, [batch + batch, messages(topics, 5, start_offset=100)])
    run_until_drained(sink)
    assert len(store_of(sink).tables["deployment_events"]) == 5
    stats = sink.stats()
    assert stats.rows_inserted["deployment_records"] == 0
    assert {t: n for t, n in stats.rows_inserted.items() if n} == {
        "deployment_events": 5,
        "alerts": 5,
    }
    assert stats.duplicates_skipped["deployment_events"] == 10
    assert stats.duplicates_skipped["alerts"] == 10


def test_poison_goes_to_the_dlq_with_headers_and_the_sink_goes_on(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    garbage = Message(topic=topics.alerts, partition=1, offset=77, key=b"k", value=b"\x00garbage")
    wrong_schema = Message(
        topic=topics.records,
        partition=0,
        offset=3,
        key=b"k",
        value=AvroCodec("io.shipledger.v1.Alert").encode(_alert(1).to_avro()),
    )
    sink, _ = harness(settings, [[garbage, wrong_schema, *messages(topics, 3)]])
    run_until_drained(sink)
    assert len(store_of(sink).tables["deployment_events"]) == 3
    assert len(sink.producer.sent) == 2
    dead = sink.producer.sent[0]
    assert dead["topic"] == topics.dlq
    assert dead["value"] == b"\x00garbage"
    assert dead["key"] == b"k"
    headers = dict(dead["headers"])
    assert headers["source_topic"] == topics.alerts.encode()
    assert headers["source_partition"] == b"1"
    assert headers["source_offset"] == b"77"
    assert headers["stage"] == b"sink"
    assert headers["reason"]
    assert (
        b"expected io.shipledger.v1.DeploymentRecord"
        in dict(sink.producer.sent[1]["headers"])["reason"]
    )
    committed = {(t, p): o for t, p, o in sink.consumer.commits[-1]}
    assert committed[(topics.alerts, 1)] == 78  # the poison message is past
    assert sink.stats().dead_lettered == 2


def test_invalid_raw_events_are_skipped_not_dead_lettered(settings: Settings) -> None:
    """The processors dead-letter bad raw events; the sink must not letter them a second time,
    nor store an event that never became a record."""
    topics = Topics.from_settings(settings)
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    bad_sha = {**_event(99).to_avro(), "commit_sha": "abc"}
    bad = [
        Message(topic=topics.raw, partition=0, offset=50, key=b"k", value=b"junk"),
        Message(topic=topics.raw, partition=0, offset=51, key=b"k", value=codec.encode(bad_sha)),
    ]
    sink, _ = harness(settings, [[*bad, *messages(topics, 2)]])
    run_until_drained(sink)
    assert len(store_of(sink).tables["deployment_events"]) == 2
    assert sink.producer.sent == []
    assert sink.stats().skipped_invalid == 2
    assert sink.stats().dead_lettered == 0


def test_transient_clickhouse_errors_are_retried(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    sink, _ = harness(settings, [messages(topics, 4)])
    store_of(sink).fail_next = 3
    run_until_drained(sink)
    assert len(store_of(sink).tables["deployment_events"]) == 4
    assert sink.consumer.commits
    metrics = sink.metrics
    assert isinstance(metrics, RecordingMetrics)
    assert sum(v for k, v in metrics.counters.items() if k.startswith("sink.write_retries")) == 3


def test_clickhouse_down_crashes_without_commit_or_dlq(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    sink, _ = harness(settings, [messages(topics, 4)])
    store_of(sink).fail_next = 1000
    with pytest.raises(SinkError, match="failed 5 times"):
        sink.run(threading.Event())
    assert sink.consumer.commits == []
    assert sink.producer.sent == []
    assert sink.consumer.closed


def test_a_flood_of_poison_stops_the_sink_before_commit(settings: Settings) -> None:
    """100 % poison: the sink stops at the DLQ limit (its 100th letter) without committing."""
    topics = Topics.from_settings(settings)
    flood = [
        Message(topic=topics.alerts, partition=0, offset=i, key=b"k", value=b"junk")
        for i in range(150)
    ]
    sink, _ = harness(settings, [flood])
    with pytest.raises(DlqLimitExceeded, match="100 of the last 100 messages were poison"):
        sink.run(threading.Event())
    assert sink.consumer.commits == []
    assert len(sink.producer.sent) == settings.dlq_min_invalid - 1  # none past the limit


def test_the_normal_rate_of_poison_does_not_stop_the_sink(settings: Settings) -> None:
    """One alert in ten is poison, over many windows: dead-lettered, committed, going on."""
    topics = Topics.from_settings(settings)
    good = [m for m in messages(topics, 1800) if m.topic() == topics.alerts]
    mixed = [
        Message(topic=topics.alerts, partition=1, offset=i, key=b"k", value=b"junk")
        if i % 10 == 0
        else good[i]
        for i in range(1800)
    ]
    sink, _ = harness(settings, [mixed[i : i + 300] for i in range(0, 1800, 300)])
    run_until_drained(sink)
    assert sink.stats().dead_lettered == 180
    assert len(store_of(sink).tables["alerts"]) == 1620
    committed = {(t, p): o for t, p, o in sink.consumer.commits[-1]}
    assert committed == {(topics.alerts, 0): 1800, (topics.alerts, 1): 1791}


def test_a_run_of_poison_stops_the_sink(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_prefix="p.", dlq_max_consecutive=20)
    topics = Topics.from_settings(settings)
    good = [m for m in messages(topics, 400) if m.topic() == topics.alerts]
    junk = [
        Message(topic=topics.alerts, partition=1, offset=i, key=b"k", value=b"junk")
        for i in range(30)
    ]
    sink, _ = harness(settings, [good + junk])
    with pytest.raises(DlqLimitExceeded, match="21 poison messages in a row"):
        sink.run(threading.Event())
    assert sink.consumer.commits == []


def test_a_hung_write_stops_the_sink_without_commit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, topic_prefix="p.", sink_insert_timeout_s=0.2)
    topics = Topics.from_settings(settings)
    sink, _ = harness(settings, [messages(topics, 4)])
    hang = store_of(sink).hang = threading.Event()
    try:
        with pytest.raises(SinkError, match=r"did not finish in 0\.2s"):
            sink.run(threading.Event())
    finally:
        hang.set()
    assert sink.consumer.commits == []


def scraped(metrics: RecordingMetrics) -> dict[str, float]:
    """What Prometheus would scrape: every sample summed by name."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def test_stats_and_the_scraped_metrics_are_one_count(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    junk = Message(topic=topics.alerts, partition=1, offset=99, key=b"k", value=b"junk")
    batch = messages(topics, 5)
    log: list[str] = []
    sink = Harness(settings, "unused:9092", MemoryStore(log), policy=load_policy(None))
    sink.consumer = FakeConsumer(log, [[*batch, *batch, junk]])
    sink.producer = FakeProducer()
    run_until_drained(sink)
    stats = sink.stats()
    seen = scraped(sink.metrics)
    assert stats.messages == seen["shipledger_sink_messages_total"] == 21
    assert stats.total_rows == seen["shipledger_sink_rows_inserted_total"] == 10
    assert (
        sum(stats.duplicates_skipped.values()) == seen["shipledger_sink_duplicates_skipped_total"]
    )
    assert stats.dead_lettered == seen["shipledger_sink_dead_lettered_total"] == 1
    assert stats.flushes == seen["shipledger_sink_flush_seconds_count"] >= 1
    assert seen["shipledger_sink_insert_seconds_count"] >= 1
    assert sink.metrics.by_tag(m.MESSAGES, "topic") == {topics.raw: 10, topics.alerts: 11}


def test_consumer_config_is_manual_commit_with_the_sinks_fetch_wait(settings: Settings) -> None:
    sink = ClickHouseSink(settings, "b:9092", MemoryStore([]), policy=load_policy(None))
    conf = sink.consumer_config()
    assert conf["group.id"] == "p.sink"
    assert conf["enable.auto.commit"] is False
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["fetch.wait.max.ms"] == settings.sink_fetch_wait_ms
    assert conf["fetch.min.bytes"] == settings.sink_fetch_min_bytes
    assert conf["session.timeout.ms"] == int(settings.session_timeout_s * 1000)
    policy = load_policy(None)
    assert (
        ClickHouseSink(settings, "b", MemoryStore([]), policy=policy, group_id="g").group_id == "g"
    )

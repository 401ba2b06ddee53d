"""The ClickHouse sink on a real Tansu broker and real ClickHouse (chDB in the test's data dir).

chDB opens one data dir per process at a time: every test closes its store at teardown, so the
next test can open its own.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from shipledger.schemas.policy import Retention, load_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.in_thread import running
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import stamp
from shipledger.sinks.ledger.store import LedgerStore, TimeWindow
from shipledger.sinks.rows import KafkaMeta, event_row
from shipledger.sinks.sink import ClickHouseSink
from shipledger.sinks.writer import LedgerWriter
from shipledger.topics import ensure_topics
from tests.kit import deployment_event, deployment_record, sample_alert

POLICY = load_policy(None)
pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
N_EVENTS = 12


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Short batches and sessions so a test takes seconds."""
    return settings.model_copy(
        update={"sink_batch_ms": 50, "sink_batch_size": 500, "session_timeout_s": 1.5}
    )


@pytest.fixture
def store(fast: Settings) -> Iterator[LedgerStore]:
    with LedgerStore.open(fast) as s:
        s.ensure_schema()
        yield s


def _messages() -> list[tuple[str, bytes, bytes]]:
    """(logical topic, key, value): events, records and alerts of 4 deployments."""
    ev, rec, al = (
        AvroCodec(f"io.shipledger.v1.{n}") for n in ("DeploymentEvent", "DeploymentRecord", "Alert")
    )
    out: list[tuple[str, bytes, bytes]] = []
    for i in range(N_EVENTS):
        dep = f"dep-{i % 4}"
        seq = i // 4 + 1
        event = deployment_event(
            event_id=f"evt-{i}",
            deployment_id=dep,
            event_type="started" if seq == 1 else "succeeded",
            service=f"svc-{i % 4}",
            occurred_at=T0 + timedelta(minutes=i),
            attributes={"i": str(i)},
        )
        out.append(("raw", dep.encode(), ev.encode(event.to_avro())))
        record = deployment_record(
            record_id=event.event_id,
            deployment_id=dep,
            seq=seq,
            status="in_progress" if seq == 1 else "succeeded",
            service=event.service,
            started_at=T0 + timedelta(minutes=i % 4),
            finished_at=None if seq == 1 else event.occurred_at,
            event_count=seq,
            last_event_id=event.event_id,
            last_event_type=event.event_type,
            updated_at=event.occurred_at,
        )
        out.append(("records", dep.encode(), rec.encode(record.to_avro())))
        if i % 3 == 0:
            alert = sample_alert(
                alert_id=f"{event.event_id}:missing_change_ticket",
                message="prod deploy without a change ticket",
                evidence={"environment": "prod"},
                deployment_id=dep,
                event_id=event.event_id,
                service=event.service,
                occurred_at=event.occurred_at,
            )
            out.append(("alerts", dep.encode(), al.encode(alert.to_avro())))
    return out


def _produce(settings: Settings, bootstrap: str, msgs: list[tuple[str, bytes, bytes]]) -> None:
    topics = Topics.from_settings(settings)
    names = {"raw": topics.raw, "records": topics.records, "alerts": topics.alerts}
    producer = Producer(settings.kafka_producer(bootstrap))
    for logical, key, value in msgs:
        producer.produce(names[logical], value=value, key=key)
    assert producer.flush(10) == 0


def _wait(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _run_sink(sink: ClickHouseSink, until: Callable[[ClickHouseSink], bool]) -> None:
    """Run the sink in a thread until `until(sink)`, then stop it (flush, commit, close)."""
    with running(sink, "sink", join_timeout_s=30) as errors:
        _wait(lambda: until(sink) or bool(errors))


def _read_dlq(
    settings: Settings, bootstrap: str, n: int
) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = Consumer(
        {
            **settings.kafka_common(bootstrap),
            "group.id": f"dlq-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    dlq = Topics.from_settings(settings).dlq
    # assign, not subscribe: no group join to wait for
    consumer.assign(
        [TopicPartition(dlq, p, OFFSET_BEGINNING) for p in range(settings.topic_partitions)]
    )
    out: list[tuple[bytes | None, dict[str, bytes]]] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            raw = msg.headers() or []
            pairs = list(raw.items()) if isinstance(raw, dict) else raw
            headers = {k: v for k, v in pairs if isinstance(v, bytes)}
            out.append((msg.value(), headers))
    finally:
        consumer.close()
    return out


def _counts(store: LedgerStore) -> dict[str, int]:
    return {t: store.count(t) for t in (ddl.EVENTS, ddl.RECORDS, ddl.ALERTS)}


def test_each_message_lands_once_replays_add_nothing_poison_goes_to_dlq(
    broker: str, fast: Settings, store: LedgerStore
) -> None:
    ensure_topics(fast, broker)
    msgs = _messages()
    garbage = ("alerts", b"dep-x", b"\x00\x00\x00\x00\x63not avro at all")
    _produce(fast, broker, [*msgs[:10], garbage, *msgs[10:]])
    total = len(msgs) + 1
    expected = {
        ddl.EVENTS: N_EVENTS,
        ddl.RECORDS: N_EVENTS,
        ddl.ALERTS: sum(1 for t, _, _ in msgs if t == "alerts"),
    }

    first = ClickHouseSink(fast, broker, store, policy=POLICY)
    _run_sink(first, lambda s: s.stats().messages >= total and s.stats().pending_rows == 0)
    assert _counts(store) == expected
    stats = first.stats()
    assert {t: n for t, n in stats.rows_inserted.items() if t in expected} == expected
    # ... and the letter, which the sink reads back from the DLQ into the ledger.
    _run_sink(first, lambda s: s.stats().rows_inserted[ddl.DEAD_LETTERS] == 1)
    assert sum(first.stats().rows_inserted.values()) == sum(expected.values()) + 1
    assert stats.dead_lettered == 1
    _, letters = store.query("SELECT stage, source_topic, reason, value_base64 FROM dead_letters")
    ((stage, source_topic, reason, value),) = letters
    assert (stage, source_topic) == ("sink", Topics.from_settings(fast).alerts)
    assert "unknown schema id" in reason and base64.b64decode(value) == garbage[2]

    # Every field arrived as sent; the Kafka position is recorded.
    cols, rows = store.query(
        "SELECT event_id, occurred_at, attributes, kafka_partition, kafka_offset, received_at "
        "FROM deployment_events WHERE event_id = {id:String}",
        {"id": "evt-5"},
    )
    assert cols[0] == "event_id"
    (row,) = rows
    assert row[1] == T0 + timedelta(minutes=5)
    assert row[2] == {"i": "5"}
    assert row[3] >= 0 and row[4] >= 0
    assert abs(row[5] - datetime.now(UTC)) < timedelta(minutes=5)

    # The view keeps the latest record of each deployment.
    _, latest = store.query("SELECT deployment_id, seq, status FROM deployments ORDER BY 1")
    assert latest == [(f"dep-{d}", 3, "succeeded") for d in range(4)]

    # The garbage went to the DLQ, original bytes and reason attached.
    (dead,) = _read_dlq(fast, broker, 1)
    assert dead[0] == garbage[2]
    assert dead[1]["source_topic"] == Topics.from_settings(fast).alerts.encode()
    assert dead[1]["stage"] == b"sink"
    assert b"unknown schema id" in dead[1]["reason"]

    # A replay: the same messages produced again, read by a new group from the start.
    _produce(fast, broker, msgs)
    replay = ClickHouseSink(
        fast, broker, store, policy=POLICY, group_id=f"{fast.topic_prefix}sink-replay"
    )
    _run_sink(replay, lambda s: s.stats().messages >= total + len(msgs) and s.stats().flushes > 0)
    assert _counts(store) == expected
    assert set(replay.stats().rows_inserted.values()) == {0}
    skipped = replay.stats().duplicates_skipped
    assert sum(n for t, n in skipped.items() if t != ddl.DEAD_LETTERS) == 2 * len(msgs)
    assert store.count(ddl.DEAD_LETTERS) == 1  # the garbage, rejected again: the same letter


def test_restart_in_the_same_group_resumes_after_the_last_commit(
    broker: str, fast: Settings, store: LedgerStore
) -> None:
    ensure_topics(fast, broker)
    msgs = _messages()
    _produce(fast, broker, msgs[:20])
    first = ClickHouseSink(fast, broker, store, policy=POLICY)
    _run_sink(first, lambda s: s.stats().messages >= 20 and s.stats().pending_rows == 0)
    _produce(fast, broker, msgs[20:])
    second = ClickHouseSink(fast, broker, store, policy=POLICY)
    rest = len(msgs) - 20
    _run_sink(second, lambda s: s.stats().messages >= rest and s.stats().pending_rows == 0)
    assert second.stats().messages == rest  # committed offsets were honoured
    assert sum(second.stats().duplicates_skipped.values()) == 0
    assert store.count(ddl.EVENTS) == N_EVENTS


def test_schema_matches_the_spec_and_is_idempotent(store: LedgerStore) -> None:
    store.ensure_schema()
    for spec in ddl.tables().values():
        _, rows = store.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} "
            "AND table = {t:String} ORDER BY position",
            {"db": store.database, "t": spec.name},
        )
        assert [(n, t.replace(" ", "")) for n, t in rows] == [
            (c.name, c.type.replace(" ", "")) for c in spec.columns
        ]
    _, engines = store.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": store.database},
    )
    assert dict(engines) == {
        **dict.fromkeys(ddl.tables(), "MergeTree"),
        "chain_heads": "MergeTree",
        "schema_migrations": "MergeTree",
        **dict.fromkeys(ddl.VIEWS, "View"),
        **dict.fromkeys(
            (ddl.DORA_DEPLOYMENTS, ddl.DORA_COMMITS, ddl.DORA_DEPLOYMENT_KEYS),
            "AggregatingMergeTree",
        ),
        **dict.fromkeys(
            (f"{t}_mv" for t in (ddl.DORA_DEPLOYMENTS, ddl.DORA_COMMITS, ddl.DORA_DEPLOYMENT_KEYS)),
            "MaterializedView",
        ),
        **dict.fromkeys((ddl.CHANGE_SETS, ddl.CHANGE_COMMITS), "MergeTree"),
        ddl.COMMIT_LEAD_TIMES: "View",
        ddl.DEPLOYMENT_VERIFICATIONS: "MergeTree",
        # Incident triage and CMDB reconciliation (docs/triage.md).
        **dict.fromkeys(
            (ddl.INCIDENT_SUSPECTS, ddl.CMDB_FINDINGS, ddl.SUSPECT_DEPLOYMENTS, ddl.SUSPECT_INPUTS),
            "MergeTree",
        ),
        **dict.fromkeys(
            (f"{ddl.SUSPECT_DEPLOYMENTS}_mv", ddl.SUSPECT_CHANGE_SETS_MV, ddl.SUSPECT_VERDICTS_MV),
            "MaterializedView",
        ),
        # Reconciliation against independent logs (docs/reconcile.md).
        ddl.RECONCILIATION_FINDINGS: "MergeTree",
        # The pseudonym lookup of personal fields (docs/privacy.md).
        ddl.PERSON_PSEUDONYMS: "MergeTree",
    }
    assert store.ensure_schema() == []  # nothing left to apply


def test_existing_ids_within_a_time_window(store: LedgerStore) -> None:
    codec = AvroCodec("io.shipledger.v1.Alert")
    from shipledger.sinks.rows import alert_row

    rows = []
    for i in range(3):
        alert = sample_alert(
            alert_id=f"a{i}",
            tenant="t",
            occurred_at=T0 + timedelta(days=40 * i),  # three different months
        )
        rows.append(alert_row(codec.decode(codec.encode(alert.to_avro()))))
    stamp(ddl.ALERTS, rows, {}, Retention(), datetime.now(UTC))  # the sink's ledger columns
    assert store.insert(ddl.ALERTS, rows) == 3
    asked = [("t", "a0"), ("t", "a1"), ("t", "a2"), ("t", "zz"), ("other", "a0")]
    # Another tenant's row with the same id is not a duplicate.
    assert store.existing_ids(ddl.ALERTS, asked) == {
        ("t", "a0"),
        ("t", "a1"),
        ("t", "a2"),
    }
    # Nor when its own tenant and id are both asked for, each in another pair.
    assert store.existing_ids(ddl.ALERTS, [("other", "a0"), ("t", "zz")]) == set()
    window = TimeWindow("occurred_at", T0, T0 + timedelta(days=41))
    assert store.existing_ids(ddl.ALERTS, asked[:3], window=window) == {
        ("t", "a0"),
        ("t", "a1"),
    }
    assert store.existing_ids(ddl.ALERTS, []) == set()


def test_an_event_resent_with_another_time_is_stored_once(store: LedgerStore) -> None:
    """An event's time is not part of its identity: a client that leaves `occurred_at` to the
    API (the model fills in "now") and retries after a lost 202 sends the same event_id with
    a later time, possibly in another month. The ledger keeps one row per tenant and
    event_id (README), so the sink's dedup of events cannot stop at the batch's time window."""
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    writer = LedgerWriter(store, POLICY)
    for days in (0, 40):  # the retry lands in the next month's partition
        event = deployment_event(event_id="evt-resent", occurred_at=T0 + timedelta(days=days))
        decoded = codec.decode(codec.encode(event.to_avro()))
        writer.write_rows({ddl.EVENTS: [event_row(decoded, KafkaMeta("raw", 0, days, None))]})
    assert store.count(ddl.EVENTS) == 1

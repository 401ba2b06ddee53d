"""The embedded stack's restore: events acknowledged but still in the broker's memory when it
went away are sent again from the journal, on top of the state rebuilt from the ledger."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from shipledger.processors.step import process
from shipledger.producers.emitter.publisher import Publisher
from shipledger.producers.journal import Journal
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.archive import archive
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.topics import ensure_topics
from shipledger.up.restore import ledger_states, partition_of
from shipledger.up.stack import Stack
from tests.kit import deployment_event, wait_until

pytestmark = pytest.mark.integration

MONDAY_NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


def _event(deployment: str, event_id: str, event_type: str, tenant: str) -> DeploymentEvent:
    return deployment_event(
        event_id=event_id,
        deployment_id=deployment,
        event_type=event_type,
        tenant=tenant,
        occurred_at=MONDAY_NIGHT,
    )


def test_partition_of_is_the_producers_partitioner(broker: str, settings: Settings) -> None:
    ensure_topics(settings, broker)
    producer = Producer(settings.kafka_producer(broker))
    got: dict[bytes | None, int | None] = {}
    keys = [f"tenant-{i % 3}/dep-{i}".encode() for i in range(40)]
    for key in keys:
        producer.produce(
            settings.topic("deployments.raw"),
            b"v",
            key,
            on_delivery=lambda err, msg: got.__setitem__(msg.key(), msg.partition()),
        )
    assert producer.flush(15) == 0
    assert got == {key: partition_of(key, settings.topic_partitions) for key in keys}


def test_what_the_broker_forgot_is_restored(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", topic_partitions=2, sink_batch_ms=100)
    first = _event("dep-x", "x1", "started", "acme")
    later = [
        _event("dep-x", "x2", "succeeded", "acme"),  # continues a record the ledger holds
        _event("dep-y", "y1", "started", "globex"),  # a new deployment: judged, alerts
    ]
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        first_store = stack.store
        assert first_store is not None and stack.restored is not None
        assert stack.restored.journal_entries == 0
        with Publisher(settings, stack.bootstrap) as publisher:
            publisher.publish_many([first])
            wait_until(stack, lambda: first_store.count("alerts") == 2, "the first event's alerts")
            (pid,) = stack.worker_pids
            os.kill(pid, signal.SIGKILL)  # nothing moves through the processors any more
            publisher.publish_many(later)  # journaled, acknowledged, then lost with the broker
        stack.abort_drain()
    assert stack.abandoned  # the clean stop could not deliver them
    journal = Journal(settings.journal_dir)
    assert journal.segments(), "the journal keeps what the ledger lacks"

    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        store = stack.store
        assert store is not None and stack.restored is not None
        assert stack.restored.deployments == 1
        assert stack.restored.journal_entries == 3 and stack.restored.replayed == 2
        wait_until(stack, lambda: store.count("deployment_records") == 3, "records")
        wait_until(stack, lambda: store.count("alerts") == 4, "alerts")
        wait_until(stack, lambda: not any(stack.pending().values()), "drained")
        _, rows = store.query(
            "SELECT tenant, deployment_id, seq, status, event_count, alert_rules "
            "FROM shipledger.deployments ORDER BY tenant"
        )
        counts = {t: store.count(t) for t in ("deployment_events", "deployment_records")}
    policy = load_policy(None)
    x = process(later[0], process(first, None, policy).record, policy).record
    y = process(later[1], None, policy).record
    assert rows == [
        ("acme", "dep-x", x.seq, x.status, x.event_count, x.alert_rules),
        ("globex", "dep-y", y.seq, y.status, y.event_count, y.alert_rules),
    ]
    assert (x.seq, x.status) == (2, "succeeded")
    assert counts == {"deployment_events": 3, "deployment_records": 3}
    # A clean stop with everything in the ledger leaves no segment with entries behind.
    assert all(journal.read(s).entries == [] for s in journal.segments())


def test_state_comes_from_hot_and_cold_records(ledger: LedgerStore) -> None:
    """Deployments whose records moved to cold Parquet files keep their state."""
    archive(ledger, cold_after_days=90)
    _, cold = ledger.query(f"SELECT count() FROM {ledger.source('deployment_records')}")
    assert ledger.count("deployment_records") == 6 and cold[0][0] == 10  # 4 of 10 are cold
    states = {
        (r.tenant, r.deployment_id): (seen, first) for r, seen, first in ledger_states(ledger)
    }
    assert len(states) == 10
    seen, first = states[("acme", "acme-dep-200-0")]
    assert seen == [first] and first is not None

"""The embedded stack's restore: events acknowledged but still in the broker's memory when it
went away are sent again from the journal, on top of the state rebuilt from the ledger."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from shipledger.processors.step import process
from shipledger.producers.emitter.publisher import Publisher
from shipledger.producers.journal import Journal
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.archive import archive
from shipledger.sinks.ledger.latest_records import ledger_states
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.topics import ensure_topics
from shipledger.up.restore import partition_of
from shipledger.up.stack import Stack
from tests.containers import CHDB_COLD_FILES
from tests.kit import (
    api_build,
    api_change,
    api_token,
    built,
    deployment_event,
    ledger_settings,
    post_events,
    wait_drained,
    wait_until,
)

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
    settings = ledger_settings(tmp_path / "data", topic_partitions=2, sink_batch_ms=100)
    first = _event("dep-x", "x1", "started", "acme")
    later = [
        _event("dep-x", "x2", "succeeded", "acme"),  # continues a record the ledger holds
        _event("dep-y", "y1", "started", "globex"),  # a new deployment: judged, alerts
    ]
    # What the processors must make of them: the pure step under the default policy.
    policy = load_policy(None)
    steps = [process(first, None, policy)]
    steps += [process(later[0], steps[0].record, policy), process(later[1], None, policy)]
    x, y = steps[1].record, steps[2].record
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        first_store = stack.store
        assert first_store is not None and stack.restored is not None
        assert stack.restored.journal_entries == 0
        with Publisher(settings, stack.bootstrap) as publisher:
            publisher.publish_many([first])
            wait_until(
                stack,
                lambda: first_store.count("alerts") == len(steps[0].alerts),
                "the first event's alerts",
            )
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
        alerts = sum(len(step.alerts) for step in steps)
        wait_until(stack, lambda: store.count("alerts") == alerts, "alerts")
        wait_drained(stack, 90)
        _, rows = store.query(
            "SELECT tenant, deployment_id, seq, status, event_count, alert_rules "
            "FROM deployments ORDER BY tenant"
        )
        counts = {t: store.count(t) for t in ("deployment_events", "deployment_records")}
    assert rows == [
        ("acme", "dep-x", x.seq, x.status, x.event_count, x.alert_rules),
        ("globex", "dep-y", y.seq, y.status, y.event_count, y.alert_rules),
    ]
    assert (x.seq, x.status) == (2, "succeeded")
    assert counts == {"deployment_events": 3, "deployment_records": 3}
    # A clean stop with everything in the ledger leaves no segment with entries behind.
    assert all(journal.read(s).entries == [] for s in journal.segments())


@pytest.mark.embedded_only(CHDB_COLD_FILES)
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


def _deployment(dep: str, at: str) -> dict[str, Any]:
    return {
        "event_id": f"{dep}-started",
        "deployment_id": dep,
        "event_type": "started",
        "service": "checkout",
        "environment": "prod",
        "commit_sha": "c" * 40,
        "actor": "ci-bot",
        "change_id": "CHG-X",
        "occurred_at": at,
        **built("checkout"),
    }


def test_the_view_and_the_alerts_that_hold_survive_a_restart(tmp_path: Path) -> None:
    """The embedded broker forgets the change, catalog and artifact topics: the restore writes
    the ledger's events back, and rebuilds which alerts hold, so a late approval after the
    restart resolves an alert raised before it, and a new deployment is judged against the
    request and against the build published before the restart (no `artifact_unknown`)."""
    settings = Settings(
        data_dir=tmp_path / "data", topic_partitions=2, sink_batch_ms=100, api_port=0
    )
    token = api_token(settings, "acme", name="restore-test")
    holding = "SELECT deployment_id, rule, team FROM open_alerts ORDER BY deployment_id"
    with Stack(settings, log_dir=tmp_path / "logs", api=True) as stack:
        before = stack.store
        assert before is not None
        post_events(
            stack,
            token,
            "acme",
            {
                "family": "catalog",
                "event_id": "cat-1",
                "entity": "service",
                "action": "created",
                "name": "checkout",
                "owner_team": "payments",
                "occurred_at": "2026-11-01T00:00:00+00:00",
            },
            api_change("x-open", "CHG-X", "opened", "2026-11-25T08:00:00+00:00"),
            api_build("checkout", "2026-11-25T09:00:00+00:00"),
        )
        wait_until(stack, lambda: before.count("change_events") == 1, "the change request")
        wait_until(stack, lambda: before.count("artifact_events") == 1, "the build")
        post_events(stack, token, "acme", _deployment("dep-z", "2026-11-25T10:00:00+00:00"))
        wait_until(
            stack,
            lambda: before.query(holding)[1] == [("dep-z", "change_not_approved", "payments")],
            "dep-z flagged",
        )
    with Stack(settings, log_dir=tmp_path / "logs", api=True) as stack:
        store = stack.store
        assert store is not None and stack.restored is not None
        assert stack.restored.enrichment == 3  # the catalog entry, the change event, the build
        post_events(
            stack,
            token,
            "acme",
            api_change("x-approve", "CHG-X", "approved", "2026-11-25T09:30:00+00:00"),
        )
        post_events(stack, token, "acme", _deployment("dep-w", "2026-11-25T11:00:00+00:00"))
        wait_until(stack, lambda: store.count("deployment_records") >= 3, "dep-w and dep-z again")
        wait_until(stack, lambda: store.query(holding)[1] == [], "the alert resolved")
        _, rows = store.query(
            "SELECT deployment_id, change_state, team FROM deployments ORDER BY deployment_id"
        )
        assert rows == [("dep-w", "approved", "payments"), ("dep-z", "approved", "payments")]
        _, rows = store.query("SELECT kind, count() FROM alerts GROUP BY kind")
        assert sorted(rows) == [("alert", 1), ("resolution", 1)]

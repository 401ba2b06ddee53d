"""Scale-out with no loss (issue 14 point 4): 3 Faust workers and 2 sinks on one set of topics
(4 partitions each), a rebalance of both groups under load, and the ledger ends with every
event, record and alert exactly once and every hash chain intact (`audit verify` clean).

The workers are real processes (`shipledger worker`, started by the stack as `up` starts
them): one is stopped with SIGTERM and one killed with SIGKILL while events flow, then both
are started again (new members join the group). The sinks are two `ClickHouseSink`s in one
consumer group, each with its own Kafka consumer, on threads of this process: an embedded
chDB data dir can be opened by one process only (`sinks.ledger.store`), so sinks in separate
processes need a ClickHouse server; the consumer group, its rebalances and the chain lanes
are the same. One sink is stopped (flush, commit, leave) while events flow and a new one
joins.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.processors.step import process
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.settings import Settings
from shipledger.sinks.ledger.audit import verify
from shipledger.sinks.ledger.chain import partition_lane
from shipledger.sinks.ledger.ddl import ALERTS, EVENTS, RECORDS
from shipledger.sinks.sink import ClickHouseSink
from shipledger.up.stack import Stack
from tests.kit import deployment_event, own_settings, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = 4
#: Deployments per chunk published; each has a started and a succeeded event.
CHUNK = 100
CHUNKS = 12
AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
#: Generous: rebalances of both groups and Faust's table recovery on 2 loaded cores.
DEADLINE_S = 240.0


class SinkThread:
    """A sink of the stack's consumer group on a thread of its own, sharing the stack's
    ledger store (one chDB client, thread-safe)."""

    def __init__(self, stack: Stack) -> None:
        assert stack.store is not None
        self.sink = ClickHouseSink(
            stack.settings, stack.bootstrap, stack.store, policy=stack.policy
        )
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sink-extra", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sink.run(self.stop)
        except BaseException as exc:  # raised on the test's thread by `check`
            self.error = exc

    def check(self) -> None:
        """Raise what the sink raised."""
        if self.error is not None:
            raise RuntimeError(f"sink crashed: {self.error!r}")

    def halt(self) -> None:
        """Stop it as SIGTERM stops `shipledger sink`: flush, commit, leave the group."""
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the sink did not stop"
        self.check()


def _event(deployment: int, event_type: str) -> DeploymentEvent:
    return deployment_event(
        event_id=f"ev-{deployment}-{event_type}",
        deployment_id=f"dep-{deployment}",
        event_type=event_type,
        tenant=f"t{deployment % TENANTS}",
        service=f"svc{deployment % 7}",
        occurred_at=AT,
    )


def _chunk(index: int) -> list[DeploymentEvent]:
    """The started events of chunk `index`'s deployments and the succeeded ones of the
    chunk before (a deployment's events in order, in one partition: keyed by deployment)."""
    started = [_event(d, "started") for d in range(index * CHUNK, (index + 1) * CHUNK)]
    finished = [_event(d, "succeeded") for d in range((index - 1) * CHUNK, index * CHUNK)]
    return started + (finished if index > 0 else [])


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    return own_settings(tmp_path, topic_partitions=PARTITIONS, sink_batch_ms=100)


@pytest.fixture
def scaled(broker: str, tmp_path: Path, stack_settings: Settings) -> Iterator[Stack]:
    with Stack(stack_settings, bootstrap=broker, log_dir=tmp_path / "logs", workers=3) as stack:
        yield stack


def _until(stack: Stack, done: Callable[[], bool], what: str, *checks: Callable[[], None]) -> None:
    """Wait for `done` (`DEADLINE_S`), running `checks` (a component that died raises) before
    each look; on a timeout the tail of every log is printed, for pytest to show."""

    def alive_and_done() -> bool:
        for check in checks:
            check()
        return done()

    try:
        wait_for(alive_and_done, what, DEADLINE_S)
    except AssertionError:
        for log in sorted((stack.settings.data_dir.parent / "logs").glob("*.log")):
            print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-40:]))
        raise


def test_three_workers_two_sinks_a_rebalance_under_load_lose_and_duplicate_nothing(
    scaled: Stack,
) -> None:
    stack = scaled
    store = stack.store
    assert store is not None
    second = SinkThread(stack)
    published: list[DeploymentEvent] = []
    with Publisher(stack.settings, stack.bootstrap) as publisher:

        def publish(chunks: range) -> None:
            for index in chunks:
                events = _chunk(index)
                publisher.publish_many(events)
                published.extend(events)

        publish(range(4))
        _until(
            stack,
            lambda: store.count(RECORDS) >= CHUNK,
            "records flowing",
            stack.check,
            second.check,
        )
        # Under load: a worker stopped, a worker killed, a sink stopped, a sink added.
        first, killed, _ = stack.worker_pids
        os.kill(first, signal.SIGTERM)
        os.kill(killed, signal.SIGKILL)
        second.halt()
        third = SinkThread(stack)
        publish(range(4, 8))
        before = store.count(RECORDS)
        _until(
            stack,
            lambda: store.count(RECORDS) > before + CHUNK,
            "records flowing with one worker",
            third.check,
        )
        stack.supervise()  # both workers started again: two members join the group
        publish(range(8, CHUNKS))
        publish_last = [_event(d, "succeeded") for d in range((CHUNKS - 1) * CHUNK, CHUNKS * CHUNK)]
        publisher.publish_many(publish_last)
        published.extend(publish_last)

    events = {e.event_id for e in published}
    _until(
        stack,
        lambda: store.count(EVENTS) >= len(events) and store.count(RECORDS) >= len(events),
        "every event and record in the ledger",
        stack.supervise,
        third.check,
    )
    _until(stack, lambda: not any(stack.pending().values()), "drained", stack.supervise)
    third.halt()

    want_alerts = _expected_alerts(stack, published)
    for table, column, want in (
        (EVENTS, "event_id", events),
        (RECORDS, "record_id", events),  # a record per event, its id the event's
        (ALERTS, "alert_id", want_alerts),
    ):
        _, rows = store.query(f"SELECT {column}, count() FROM {table} GROUP BY {column}")
        got = {str(key): int(n) for key, n in rows}
        assert sorted(want - got.keys()) == [], f"{table}: lost"
        assert sorted(got.keys() - want) == [], f"{table}: unexpected"
        assert {k: n for k, n in got.items() if n > 1} == {}, f"{table}: duplicated"

    report = verify(store)
    assert report.clean, report.text()
    _, lanes = store.query("SELECT DISTINCT chain_lane FROM deployment_events ORDER BY chain_lane")
    assert [lane for (lane,) in lanes] == [partition_lane(p) for p in range(PARTITIONS)]
    # Both groups really were shared: every sink stored rows.
    assert stack.sink is not None
    for sink in (stack.sink, second.sink, third.sink):
        assert sink.stats().total_rows > 0


def _expected_alerts(stack: Stack, published: list[DeploymentEvent]) -> set[str]:
    """The alert ids the pure step chain raises for each deployment's events, in order."""
    previous: dict[str, DeploymentRecord] = {}
    ids: set[str] = set()
    for event in published:
        step = process(event, previous.get(event.deployment_id), stack.policy)
        previous[event.deployment_id] = step.record
        ids.update(alert.alert_id for alert in step.alerts)
    return ids

"""Scale-out with no loss (issue 14 point 4): 3 Faust workers and 2 sinks on one set of topics
(4 partitions each), a rebalance of both groups under load, and the ledger ends with every
event, record and alert exactly once and every hash chain intact (`audit verify` clean).

The workers are real processes (`shipledger worker`, started by the stack as `up` starts
them): one is stopped with SIGTERM and one killed with SIGKILL while events flow, then both
are started again (new members join the group). The sinks are two `ClickHouseSink`s in one
consumer group, each with its own Kafka consumer, on threads of this process: an embedded
chDB data dir can be opened by one process only (`sinks.ledger.store`), so sinks in separate
processes need a ClickHouse server; the consumer group, its rebalances and the chain lanes
are the same. While events flow, one sink dies between a flush's inserts and its chain_heads
append (what a kill -9 there leaves: rows stored, heads unrecorded, offsets uncommitted) and
a new one joins; later that one is stopped (flush, commit, leave) and another joins.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from shipledger.processors.step import process
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.settings import Settings
from shipledger.sinks.ledger.audit import verify
from shipledger.sinks.ledger.chain import ChainKey, Head, partition_lane
from shipledger.sinks.ledger.ddl import ALERTS, EVENTS, RECORDS
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.sink import ClickHouseSink, SinkError
from shipledger.sinks.writer import RowStore
from shipledger.up.stack import Stack
from tests.kit import deployment_event, own_settings, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
TENANTS = 4
#: Deployments per chunk published; each has a started and a succeeded event.
CHUNK = 100
#: The most chunks the load publishes (it goes on while the test waits for a rebalance).
MAX_CHUNKS = 40
AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
#: Generous: rebalances of both groups and Faust's table recovery on 2 loaded cores.
DEADLINE_S = 240.0


class SinkThread:
    """A sink of the stack's consumer group on a thread of its own, sharing the stack's
    ledger store (one chDB client, thread-safe)."""

    def __init__(self, stack: Stack, started: list[SinkThread]) -> None:
        assert stack.store is not None
        started.append(self)
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

    def kill(self) -> None:
        """Let it die as a kill -9 between a flush's inserts and its chain_heads append would
        leave the ledger: rows stored, their heads unrecorded, their offsets uncommitted."""
        writer = self.sink.writer
        stored = writer.store

        class DiesBeforeRecordingHeads:
            def __getattr__(self, name: str) -> Any:
                return getattr(stored, name)

            def append_heads(self, heads: Mapping[ChainKey, Head]) -> None:
                raise SinkError("killed between the inserts and the chain heads")

        writer.store = cast(RowStore, DiesBeforeRecordingHeads())

    def died(self) -> bool:
        """Whether it died (as `kill` makes it)."""
        if self.thread.is_alive():
            return False
        assert isinstance(self.error, SinkError), self.error
        return True

    def storing(self) -> bool:
        """Whether it has stored rows."""
        return self.sink.stats().total_rows > 0


class Load:
    """Deployments published a chunk at a time, the next as soon as the ledger holds all but
    one chunk of the events published so far: a steady load whatever the pipeline's pace (at
    most `MAX_CHUNKS`)."""

    def __init__(self, publisher: Publisher, store: LedgerStore) -> None:
        self.publisher = publisher
        self.store = store
        self.published: list[DeploymentEvent] = []
        self.chunks = 0

    def publish(self) -> None:
        """The next chunk."""
        self._send(_chunk(self.chunks))
        self.chunks += 1

    def keep_flowing(self) -> None:
        """Publish the next chunk if the ledger has nearly caught up."""
        if self.chunks < MAX_CHUNKS and self.store.count(EVENTS) >= len(self.published) - CHUNK:
            self.publish()

    def finish(self) -> None:
        """The succeeded events of the last chunk's deployments: every deployment ends."""
        last = range((self.chunks - 1) * CHUNK, self.chunks * CHUNK)
        self._send([_event(d, "succeeded") for d in last])

    def _send(self, events: list[DeploymentEvent]) -> None:
        self.publisher.publish_many(events)
        self.published.extend(events)


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


@pytest.fixture
def sinks() -> Iterator[list[SinkThread]]:
    """The sinks a test starts beside the stack's; stopped at teardown, before the stack."""
    started: list[SinkThread] = []
    yield started
    for each in started:
        each.stop.set()
        each.thread.join(timeout=60)


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
    scaled: Stack, sinks: list[SinkThread]
) -> None:
    stack = scaled
    store = stack.store
    assert stack.sink is not None and store is not None
    first_sink, second = stack.sink, SinkThread(stack, sinks)
    with Publisher(stack.settings, stack.bootstrap) as publisher:
        load = Load(publisher, store)
        flowing = load.keep_flowing
        load.publish()
        _until(
            stack,
            lambda: first_sink.stats().total_rows > 0 and second.sink.stats().total_rows > 0,
            "both sinks storing",
            stack.check,
            second.check,
            flowing,
        )
        # Under load: a worker stopped, a worker killed, a sink killed, a sink added.
        first, killed, _ = stack.worker_pids
        os.kill(first, signal.SIGTERM)
        os.kill(killed, signal.SIGKILL)
        second.kill()
        _until(stack, second.died, "the killed sink gone", flowing)
        third = SinkThread(stack, sinks)
        _until(stack, third.storing, "the new sink storing", third.check, flowing)
        _until(stack, lambda: _exited(first) and _exited(killed), "the two workers gone", flowing)
        stack.supervise()  # both workers started again: two members join the group
        third.halt()  # a sink stopped, and one added
        fourth = SinkThread(stack, sinks)
        _until(stack, fourth.storing, "the last sink storing", stack.supervise, flowing)
        load.finish()
    published = load.published

    events = {e.event_id for e in published}
    _until(
        stack,
        lambda: store.count(EVENTS) >= len(events) and store.count(RECORDS) >= len(events),
        "every event and record in the ledger",
        stack.supervise,
        fourth.check,
    )
    _until(stack, lambda: not any(stack.pending().values()), "drained", stack.supervise)
    fourth.halt()

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


def _exited(pid: int) -> bool:
    """Whether child `pid` has exited (a zombie until the stack reaps it). Its main thread
    shows as a zombie while other threads still run: only then may it be reaped."""
    proc = Path(f"/proc/{pid}")
    try:
        zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        return zombie and len(list((proc / "task").iterdir())) <= 1
    except FileNotFoundError:
        return True


def _expected_alerts(stack: Stack, published: list[DeploymentEvent]) -> set[str]:
    """The alert ids the pure step chain raises for each deployment's events, in order."""
    previous: dict[str, DeploymentRecord] = {}
    ids: set[str] = set()
    for event in published:
        step = process(event, previous.get(event.deployment_id), stack.policy)
        previous[event.deployment_id] = step.record
        ids.update(alert.alert_id for alert in step.alerts)
    return ids

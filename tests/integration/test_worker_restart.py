"""A kill -9 of the Faust worker loses no state (issue #5 finding 6).

Root cause found: Faust recovers a table from its changelog up to the high watermark that
ListOffsets reports, and Tansu reports the base offset of the partition's last record batch
+ 1. The worker writes each batch's changelog entries in one produce, so a restarted worker
recovered one entry of the last batch per partition and applied the next events to older (or
no) state: wrong seq and status, first-event alerts judged again under new ids.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.processors.step import process
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.up.stack import Stack

pytestmark = pytest.mark.integration

DEPLOYMENTS = 120
MONDAY_NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


def _event(index: int, stage: int, event_type: str) -> DeploymentEvent:
    return DeploymentEvent(
        event_id=f"e{index}-{stage}",
        deployment_id=f"dep-{index}",
        event_type=event_type,
        service="checkout",
        environment="prod",
        tenant=f"t{index % 2}",
        commit_sha="a" * 40,
        actor="alice",
        occurred_at=MONDAY_NIGHT,
    )


def _wait(stack: Stack, done: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        stack.supervise()
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_killed_worker_recovers_every_deployment_state(broker: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        topic_prefix=f"wr{tmp_path.name[-8:]}.",
        topic_partitions=2,
        sink_batch_ms=100,
    )
    started = [_event(i, 0, "started") for i in range(DEPLOYMENTS)]
    finished = [_event(i, 1, "succeeded") for i in range(DEPLOYMENTS)]
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs") as stack:
        store = stack.store
        assert store is not None
        with Publisher(settings, stack.bootstrap) as publisher:
            publisher.publish_many(started)  # one batch: one changelog batch per partition
            _wait(stack, lambda: store.count("deployment_records") == DEPLOYMENTS, "records")
            _wait(stack, lambda: not stack.pending()[stack.topics.raw], "processors' commit")
            (pid,) = stack.worker_pids
            os.kill(pid, signal.SIGKILL)
            _wait(stack, lambda: stack.worker_pids != [pid], "worker restart")
            publisher.publish_many(finished)
            _wait(stack, lambda: store.count("deployment_records") >= 2 * DEPLOYMENTS, "records")
            _wait(stack, lambda: not any(stack.pending().values()), "drained")
        _, rows = store.query(
            "SELECT tenant, deployment_id, seq, status, event_count FROM shipledger.deployments"
        )
        _, alerts = store.query("SELECT count() FROM shipledger.alerts")
    policy = load_policy(None)
    expected_alerts = 0
    want = {}
    for first, last in zip(started, finished, strict=True):
        one = process(first, None, policy)
        record: DeploymentRecord = process(last, one.record, policy).record
        expected_alerts += len(one.alerts)
        want[(record.tenant, record.deployment_id)] = (2, "succeeded", 2)
    got = {(t, d): (seq, status, count) for t, d, seq, status, count in rows}
    assert got == want
    assert alerts[0][0] == expected_alerts

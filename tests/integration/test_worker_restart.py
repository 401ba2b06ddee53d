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
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from shipledger.processors.step import process
from shipledger.producers.emitter.publisher import Publisher
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy
from shipledger.up.stack import Stack
from tests.kit import deployment_event, wait_until

pytestmark = pytest.mark.integration

DEPLOYMENTS = 120
MONDAY_NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


def _event(index: int, stage: int, event_type: str) -> DeploymentEvent:
    return deployment_event(
        event_id=f"e{index}-{stage}",
        deployment_id=f"dep-{index}",
        event_type=event_type,
        tenant=f"t{index % 2}",
        occurred_at=MONDAY_NIGHT,
    )


def _wait(stack: Stack, done: Callable[[], bool], what: str) -> None:
    # The test kills the worker: it is restarted as `up` restarts it.
    wait_until(stack, done, what, restart_workers=True)


def test_a_killed_worker_recovers_every_deployment_state(stack: Stack) -> None:
    started = [_event(i, 0, "started") for i in range(DEPLOYMENTS)]
    finished = [_event(i, 1, "succeeded") for i in range(DEPLOYMENTS)]
    store = stack.store
    assert store is not None
    with Publisher(stack.settings, stack.bootstrap) as publisher:
        publisher.publish_many(started)  # one batch: one changelog batch per partition
        _wait(stack, lambda: store.count("deployment_records") == DEPLOYMENTS, "records")
        _wait(stack, lambda: not stack.pending()[stack.topics.raw], "processors' commit")
        (pid,) = stack.worker_pids
        os.kill(pid, signal.SIGKILL)
        _wait(stack, lambda: stack.worker_pids != [pid], "worker restart")
        publisher.publish_many(finished)
        _wait(stack, lambda: store.count("deployment_records") >= 2 * DEPLOYMENTS, "records")
        _wait(stack, lambda: not any(stack.pending().values()), "drained")
    _, rows = store.query("SELECT tenant, deployment_id, seq, status, event_count FROM deployments")
    _, alerts = store.query("SELECT count() FROM alerts")
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

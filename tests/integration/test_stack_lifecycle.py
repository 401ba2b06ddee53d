"""The embedded stack's lifecycle: `stop()` drains the in-memory broker into ClickHouse before
anything stops, and a `kill -9` of `shipledger up` takes its children (Tansu, the Faust worker)
down with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from shipledger.lab.traffic import day_of_traffic
from shipledger.lag import Watermarks, lag_by_topic, partition_lag
from shipledger.producers.emitter.publisher import Publisher
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.stackfile import read_stack, stack_path
from shipledger.up.stack import Stack
from tests.kit import ledger_settings, up_env

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent / "shipledger"


def test_lag_arithmetic() -> None:
    marks = Watermarks(low=0, high=10)
    assert partition_lag(marks, None) == 10
    assert partition_lag(marks, -1001) == 10  # OFFSET_INVALID: never committed
    assert partition_lag(marks, 4) == 6
    assert partition_lag(marks, 10) == 0
    assert partition_lag(Watermarks(low=0, high=0), None) == 0  # empty: drained
    assert partition_lag(Watermarks(low=7, high=10), None) == 3
    ends = {("a", 0): marks, ("a", 1): Watermarks(0, 5), ("b", 0): Watermarks(0, 0)}
    assert lag_by_topic(ends, {("a", 0): 10, ("a", 1): 2}) == {"a": 3, "b": 0}


def test_stop_delivers_what_the_embedded_broker_acknowledged(tmp_path: Path) -> None:
    """Events acknowledged right before `stop()` are all in ClickHouse afterwards, as events
    and as records, although the broker they were in kept them only in memory."""
    settings = ledger_settings(tmp_path / "data", topic_partitions=2)
    events = list(day_of_traffic(date(2026, 11, 25), scale=8))[:2000]
    assert len({e.event_id for e in events}) == 2000
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        assert stack.drains
        with Publisher(settings, stack.bootstrap) as publisher:
            # A stack in its steady state first: the worker has joined and judged one event.
            publisher.publish_many(events[:1])
            deadline = time.monotonic() + 60
            assert stack.store is not None
            while stack.store.count("deployment_records") < 1:
                stack.check()
                assert time.monotonic() < deadline, "the first event never became a record"
                time.sleep(0.2)
            assert publisher.publish_many(events[1:]) == 1999
        # Acknowledged, but not through the pipeline yet: stopping now must wait for it.
        assert sum(stack.pending().values()) > 0
    assert stack.abandoned == {}
    with LedgerStore.open(settings) as store:
        assert store.count("deployment_events") == 2000
        assert store.count("deployment_records") == 2000


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc/<pid>/task/*/children (Linux)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie (orphans may be reparented to a PID 1 that never reaps)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_kill_9_of_up_leaves_no_children(tmp_path: Path) -> None:
    env = up_env(tmp_path / "data")
    settings = ledger_settings(tmp_path / "data")
    children: set[int] = set()
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen([BIN, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not stack_path(settings).exists():
                assert up.poll() is None, (tmp_path / "up.log").read_text()
                assert time.monotonic() < deadline, "stack file never appeared"
                time.sleep(0.2)
            children = _descendants(up.pid)
            commands = [_cmdline(pid) for pid in children]
            assert any("tansu" in c for c in commands), commands
            assert any(c.endswith("shipledger.cli worker ") for c in commands), commands
            os.kill(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = {pid: _cmdline(pid) for pid in children if _alive(pid)}
            assert not left, f"outlived `shipledger up`: {left}"
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
            for pid in children:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
    # Its stack file stays behind, but names a dead process: readers ignore it.
    assert stack_path(settings).exists()
    assert read_stack(settings) is None

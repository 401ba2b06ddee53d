"""Chaos inside the sink's flush: kill -9 of `shipledger up` while its sink inserts a batch.

ClickHouse commits an insert one part per partition (tenant, month of the table's time
column), so a process killed in the middle of an insert whose rows span several months keeps
some of those parts. The test watches the ledger tables' directories of the real embedded
ledger (chDB) and kills `up` the moment the first part of an insert appears, while the rest
of that insert is still being written: no fault hook, the real process and the real kill.
The next start sends the journaled events the ledger lacks again; then every event is stored
once and `audit verify` is clean (before the fix, the chains the kill cut had holes, reported
as removed rows).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from shipledger.sinks.ledger import ddl
from tests.integration.test_chaos import audit_clean
from tests.integration.test_chaos_restarts import api_stack, stored_events
from tests.kit import api_deployment

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EVENTS = 240
MONTHS = 12
#: The tables whose inserts are watched: each flush of the batch below writes all three.
WATCHED = (ddl.EVENTS, ddl.RECORDS, ddl.ALERTS)


def _parts(data: Path) -> set[str]:
    """The committed parts of the watched tables of the embedded ledger in `data`."""
    found: set[str] = set()
    for table in WATCHED:
        try:
            entries = os.scandir(data / "clickhouse" / "data" / "shipledger" / table)
        except FileNotFoundError:  # not migrated yet
            continue
        with entries:
            found.update(
                f"{table}/{e.name}"
                for e in entries
                if e.is_dir() and not e.name.startswith(("tmp", "detached"))
            )
    return found


def test_kill_9_in_the_middle_of_an_insert_leaves_no_hole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings, env, headers, up = api_stack(data, tmp_path / "up.log")
    env["SHIPLEDGER_COLD_AFTER_DAYS"] = "3650"  # no archive: the rows stay in the hot tables
    # One tenant's deployments, each of its own, stamped in an order that cycles through 12
    # months: each insert of the batch spans 12 partitions of one chain.
    events = [
        event
        for n in range(EVENTS)
        for event in api_deployment(
            f"m{n}", f"svc-{n % 3}", [("succeeded", f"2025-{n % MONTHS + 1:02d}-15T10:00:00Z")]
        )
    ]
    try:
        up.start()
        url = up.ready()
        before = _parts(data)
        answer = httpx.post(
            f"{url}/v1/events", json={"events": events}, headers=headers, timeout=60
        )
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 120
        # Polled every millisecond: the rest of the insert takes tens of them.
        while _parts(data) == before:
            assert time.monotonic() < deadline, f"nothing stored: {up.tail()}"
            time.sleep(0.001)
        up.kill()
        partial = _parts(data) - before
        up.start()
        up.ready()
        tail = up.stop()
    finally:
        up.kill_if_running()
    assert "shipledger stopped cleanly." in tail, tail
    ids, duplicated = stored_events(settings)
    lost = {event["event_id"] for event in events} - ids
    print(f"parts stored before the kill: {len(partial)}; lost={len(lost)}")
    assert not lost, sorted(lost)[:10]
    assert duplicated == 0
    audit_clean(data, env)

"""Chaos in cold storage: kill -9 of `shipledger up` while its archiver moves old rows.

A real `up` (embedded Tansu and chDB) stores back-dated events, and its archiver (every second
here) moves them to Parquet; the test kills `up` once a move's files are final and its pending
marker is still there (between the renames and the marker's removal; the hot DELETE of 40 rows
takes milliseconds, so it may have run already: the state is then "delete done, marker left").
The next `up` finishes the move (`recover`), answers its first query with every event once,
and `audit verify` is clean after it stops.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.store import LedgerStore
from tests.containers import CHDB_COLD_FILES
from tests.integration.test_chaos import audit_clean, query_rows
from tests.integration.test_chaos_restarts import api_stack
from tests.kit import api_deployment, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
    pytest.mark.embedded_only(CHDB_COLD_FILES),
]

EVENTS = 40
COUNT = "SELECT count(), uniqExact(event_id) FROM deployment_events"


def test_kill_9_between_the_cold_files_and_the_hot_delete_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    settings, env, headers, up = api_stack(data, tmp_path / "up.log")
    env |= {"SHIPLEDGER_COLD_AFTER_DAYS": "30", "SHIPLEDGER_ARCHIVE_INTERVAL_S": "1"}
    events = [
        event
        for n in range(EVENTS)
        for event in api_deployment(f"old{n}", "svc", [("succeeded", "2026-06-15T10:00:00Z")])
    ]
    cold = data / "cold"
    try:
        up.start()
        url = up.ready()
        answer = httpx.post(
            f"{url}/v1/events", json={"events": events}, headers=headers, timeout=60
        )
        assert answer.status_code == 202, answer.text
        wait_for(
            lambda: (
                any((cold / ".pending").glob("deployment_events.*.json"))
                and any((cold / "deployment_events").glob("tenant=*/*.parquet"))
            ),
            "a move of deployment_events between its renames and its DELETE",
            timeout_s=120,
        )
        up.kill()
        up.start()
        up.ready()
        # The first answer of the restarted stack already counts each event once.
        assert query_rows(env, COUNT) == [f"{EVENTS},{EVENTS}"]
        tail = up.stop()
    finally:
        up.kill_if_running()
    assert "shipledger stopped cleanly." in tail, tail
    with LedgerStore.open(settings, existing=True) as store:
        source = tiers.ledger_source(store, ddl.EVENTS)
        _, rows = store.query(f"SELECT count(), uniqExact(event_id) FROM {source}")
    assert rows[0] == (EVENTS, EVENTS)
    assert not any((cold / ".pending").glob("*.json"))
    audit_clean(data, env)

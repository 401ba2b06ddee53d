"""Every read of the ledger sees archived rows: `GET /v1/events/{id}` finds an event whose row
`shipledger archive` moved to cold Parquet (and says which tier it came from), the sink's
dedup skips a re-upload or replay of it instead of inserting a second row, and a change
request's events are read whole. Real chDB, the real
API on loopback, the real sink's write path (no broker: rows are written as a flush writes
them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.schemas.family_models import ChangeEvent
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks import rows
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.archive import archive
from shipledger.sinks.ledger.reader import LedgerReader, QueryLimits
from shipledger.sinks.ledger.store import LedgerStore, TimeWindow
from shipledger.sinks.writer import LedgerWriter
from tests.containers import CHDB_COLD_FILES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.embedded_only(CHDB_COLD_FILES),
]


def _events(store: LedgerStore, older_than_days: int) -> list[dict[str, Any]]:
    """Whole stored rows of the `ledger` fixture's events older (or younger, negative) than
    a number of days, read before anything moves."""
    op = "<" if older_than_days > 0 else ">="
    columns, rows = store.query(
        f"SELECT * FROM deployment_events WHERE occurred_at {op} "
        f"now() - INTERVAL {abs(older_than_days)} DAY ORDER BY event_id"
    )
    return [dict(zip(columns, row, strict=True)) for row in rows]


@pytest.fixture
def api(ledger: LedgerStore, settings: Settings) -> Iterator[tuple[ApiServer, AuthStore]]:
    """The real API over the `ledger` fixture's reader (no broker: reads only)."""
    tuned = settings.model_copy(update={"api_port": 0})
    auth = AuthStore(tuned.resolved_auth_db)
    try:
        with ApiServer(tuned, "127.0.0.1:1", LedgerReader(ledger)) as server:
            yield server, auth
    finally:
        auth.close()


def test_an_archived_event_is_found_by_id_and_says_it_is_cold(
    ledger: LedgerStore, api: tuple[ApiServer, AuthStore]
) -> None:
    old = _events(ledger, 90)
    recent = _events(ledger, -90)
    assert old and recent
    assert archive(ledger, cold_after_days=90).rows_moved
    server, auth = api
    token, _ = auth.create_token("acme", ("read",))
    other, _ = auth.create_token("globex", ("read",))
    archived = next(row for row in old if row["tenant"] == "acme")
    hot = next(row for row in recent if row["tenant"] == "acme")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        mine = client.get(
            f"/v1/events/{archived['event_id']}", headers={"Authorization": f"Bearer {token}"}
        )
        current = client.get(
            f"/v1/events/{hot['event_id']}", headers={"Authorization": f"Bearer {token}"}
        )
        theirs = client.get(
            f"/v1/events/{archived['event_id']}", headers={"Authorization": f"Bearer {other}"}
        )
    assert mine.status_code == 200, mine.text
    assert mine.json()["event_id"] == archived["event_id"]
    assert mine.json()["ledger_tier"] == "cold"
    assert mine.json()["row_hash"] == archived["row_hash"]  # the row as stored, intact
    assert current.status_code == 200 and current.json()["ledger_tier"] == "hot"
    # Tenant scoping holds in the cold tier too.
    assert theirs.status_code == 404


def test_a_replay_after_archive_inserts_no_duplicate(
    ledger: LedgerStore, settings: Settings
) -> None:
    old = _events(ledger, 90)
    archive(ledger, cold_after_days=90)
    reader = LedgerReader(ledger)
    keys = [(str(row["tenant"]), str(row["event_id"])) for row in old]
    assert reader.existing_ids(ddl.EVENTS, keys) == set(keys)
    window = TimeWindow.of("occurred_at", (row["occurred_at"] for row in old))
    assert reader.existing_ids(ddl.EVENTS, keys, window=window) == set(keys)
    before = reader.query(
        "SELECT count() FROM deployment_events",
        tenant=None,
        max_rows=1,
        limits=QueryLimits.of(settings),
    ).rows[0][0]

    # The same events again (a re-upload, or the sink replaying their offsets): each row as
    # the sink builds it from the message, ledger columns stripped as a fresh row has none.
    replayed = [{k: v for k, v in row.items() if k not in ddl.LEDGER_COLUMN_NAMES} for row in old]
    LedgerWriter(ledger, load_policy(settings.policy_file)).write_rows({ddl.EVENTS: replayed})

    after = reader.query(
        "SELECT count(), uniqExact(event_id) FROM deployment_events",
        tenant=None,
        max_rows=1,
        limits=QueryLimits.of(settings),
    ).rows[0]
    assert after == (before, before)
    assert ledger.count(ddl.EVENTS) == len(_events(ledger, -90))  # nothing came back hot


def test_a_change_request_is_read_whole_across_tiers(
    ledger: LedgerStore, settings: Settings
) -> None:
    """What the gate and the approvals fold: every event of the request, its old ones
    archived to cold Parquet included (read only when the tenant has cold files)."""
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        ChangeEvent(
            tenant="acme",
            change_id="CHG7",
            system="servicenow",
            state=state,
            actor="raj",
            occurred_at=now - timedelta(days=days),
        )
        for state, days in (("opened", 200), ("approved", 1))
    ]
    build = rows.row_builder(ddl.CHANGES)
    meta = rows.KafkaMeta("changes", 0, 0, None)
    LedgerWriter(ledger, load_policy(settings.policy_file)).write_rows(
        {ddl.CHANGES: [build(e.to_avro(), meta) for e in events]}
    )
    reader = LedgerReader(ledger)
    assert sorted(reader.change_events("acme", "CHG7"), key=lambda e: e.occurred_at) == events
    assert archive(ledger, cold_after_days=90).rows_moved
    assert ledger.count(ddl.CHANGES) == 1  # the opened event is cold now
    assert sorted(reader.change_events("acme", "CHG7"), key=lambda e: e.occurred_at) == events
    assert reader.change_events("globex", "CHG7") == []

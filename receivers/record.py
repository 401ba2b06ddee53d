"""The escalator's local record of deliveries: one SQLite row per delivery (alert, receiver).

It is written on both sides of the provider's answer, so that a crash anywhere leaves a
state the next run can act on:

- `begin` before the first attempt: state `sending`. A delivery found `sending` later was
  interrupted, maybe after the provider opened the ticket: it is *in doubt*, and the next
  attempt starts by asking the provider for the ticket (the kind's `find`) before opening one;
- `settle` once it ended: `delivered` (with the ticket) or `dead`, and the outcome's ledger
  row, so it can be published again if the crash came before the ledger had it;
- `mark_published` once Kafka acknowledged that row (and any dead letter): from then on a
  replayed alert costs nothing;
- `advance` once a batch is committed: the latest detection time of the alerts escalated,
  from which a start on a broker that forgot its topics looks at the ledger's alerts again
  (`detected_through`); before the first commit, from the time escalation first started
  (`escalating_since`, noted at that start).

`synchronous=FULL` with WAL: a state is on disk before the next step runs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from shipledger.durable import shared_sqlite
from shipledger.schemas.models import Escalation

State = Literal["sending", "delivered", "dead"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    receiver TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sending', 'delivered', 'dead')),
    outcome TEXT,
    published INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_DETECTED_THROUGH = "detected_through"
_ESCALATING_SINCE = "escalating_since"


@dataclass(frozen=True)
class Recorded:
    """What the record says of one delivery: its state, its outcome row once settled (None
    when the settled state was learnt from the ledger) and whether that row was published."""

    state: State
    outcome: Escalation | None
    published: bool


class DeliveryRecord:
    """The record at `path` (created if missing). Thread-safe: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = shared_sqlite(path, _SCHEMA, "synchronous=FULL")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def states(self, delivery_ids: Iterable[str]) -> dict[str, Recorded]:
        """The recorded state of each of `delivery_ids` that has one."""
        ids = list(dict.fromkeys(delivery_ids))
        found: dict[str, Recorded] = {}
        with self._transaction() as cursor:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                cursor.execute(
                    "SELECT delivery_id, state, outcome, published FROM deliveries "  # noqa: S608
                    f"WHERE delivery_id IN ({marks})",
                    chunk,
                )
                for delivery_id, state, outcome, published in cursor.fetchall():
                    row = Escalation.model_validate_json(outcome) if outcome else None
                    found[delivery_id] = Recorded(state, row, bool(published))
        return found

    def begin(self, delivery_id: str, tenant: str, alert_id: str, receiver: str) -> None:
        """A delivery is about to be attempted (`sending`, whatever it was)."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO deliveries (delivery_id, tenant, alert_id, receiver, state, "
                "outcome, published, updated_at) VALUES (?, ?, ?, ?, 'sending', NULL, 0, ?) "
                "ON CONFLICT (delivery_id) DO UPDATE SET state = 'sending', outcome = NULL, "
                "published = 0, updated_at = excluded.updated_at",
                (delivery_id, tenant, alert_id, receiver, _now()),
            )

    def settle(self, delivery_id: str, outcome: Escalation, *, published: bool = False) -> None:
        """A delivery ended as `outcome` (its ledger row); `published`: the ledger has it."""
        state: State = "delivered" if outcome.status == "delivered" else "dead"
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO deliveries (delivery_id, tenant, alert_id, receiver, state, "
                "outcome, published, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (delivery_id) DO UPDATE SET state = excluded.state, "
                "outcome = excluded.outcome, published = excluded.published, "
                "updated_at = excluded.updated_at",
                (
                    delivery_id,
                    outcome.tenant,
                    outcome.alert_id,
                    outcome.receiver,
                    state,
                    outcome.model_dump_json(),
                    int(published),
                    _now(),
                ),
            )

    def known_settled(
        self, delivery_id: str, tenant: str, alert_id: str, receiver: str, state: State
    ) -> None:
        """The ledger says this delivery ended as `state` (published): remember it here, so
        the next replay need not ask the ledger."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO deliveries (delivery_id, tenant, alert_id, receiver, state, "
                "outcome, published, updated_at) VALUES (?, ?, ?, ?, ?, NULL, 1, ?) "
                "ON CONFLICT (delivery_id) DO NOTHING",
                (delivery_id, tenant, alert_id, receiver, state, _now()),
            )

    def mark_published(self, delivery_ids: Iterable[str]) -> None:
        """Kafka acknowledged the outcome rows of `delivery_ids`."""
        with self._transaction() as cursor:
            cursor.executemany(
                "UPDATE deliveries SET published = 1, updated_at = ? WHERE delivery_id = ?",
                [(_now(), delivery_id) for delivery_id in delivery_ids],
            )

    def advance(self, detected_at: datetime) -> None:
        """Alerts detected up to `detected_at` were escalated (it only moves forward)."""
        at = detected_at.astimezone(UTC).isoformat(timespec="microseconds")  # sorts as text
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO progress (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                "SET value = max(value, excluded.value)",
                (_DETECTED_THROUGH, at),
            )

    def escalating_since(self) -> datetime:
        """When escalation first started with this record: noted (now) by the first call."""
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO progress (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (_ESCALATING_SINCE, _now()),
            )
            cursor.execute("SELECT value FROM progress WHERE name = ?", (_ESCALATING_SINCE,))
            (value,) = cursor.fetchone()
        return datetime.fromisoformat(value)

    def detected_through(self) -> datetime | None:
        """The latest detection time of an alert escalated, if any was."""
        with self._transaction() as cursor:
            cursor.execute("SELECT value FROM progress WHERE name = ?", (_DETECTED_THROUGH,))
            found = cursor.fetchone()
        return None if found is None else datetime.fromisoformat(found[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _now() -> str:
    return datetime.now(UTC).isoformat()

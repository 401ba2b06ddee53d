"""The hash chain's canonical bytes (`sinks.ledger.chain.canonical_bytes`) are those every
stored ledger was stamped with: the hashes of seeded random rows of every table (late columns
set and unset, datetimes at the top and nested, missing columns, a `row_hash` column) are pinned
as the form before the faster one (chain.py at 326b58f) computed them. A change that moves one
byte breaks `audit verify` of every existing ledger, and fails here."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from shipledger.sinks.ledger import chain

#: Columns of the rows: some of every kind a ledger table has, its late columns among them.
_COLUMNS = (
    "tenant",
    "event_id",
    "occurred_at",
    "received_at",
    "started_at",
    "finished_at",
    "attributes",
    "approvals",
    "exit_code",
    "policy_version",
    "chain_lane",
    "action",
    "resolved_alert_id",
    "changed_paths",
    "provenance_url",
    "registry",
    "ledger_at",
    "retain_until",
    "prev_retain_until",
    "chain_seq",
    "prev_hash",
    "row_hash",
)
_TABLES = (
    "deployment_events",
    "deployment_records",
    "alerts",
    "change_events",
    "source_events",
    "artifact_events",
    "escalations",
    "dead_letters",
    "",
)
_ZONES = (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7)))
#: sha256 over the rows' hashes, by table, as chain.py at 326b58f computed them.
PINNED = {
    "deployment_events": "92a54824f7d370f4568144b3fbdbd58bb4b42f815712751481acf87075436557",
    "deployment_records": "32e46442678aaa5312ed41d3ea469727a0df94d78d42b0e327877331aabbde1b",
    "alerts": "55fc9a1915512a464c005f4b354c409346d74992e997c1f1800fb6772127c4e5",
    "change_events": "4b1583feb9310ea837f8aa98f6ab6f99fcd9dcdba84df2aaf6149a26da05523b",
    "source_events": "6ebad34d202019c3e6462455eb76e1f0477f8e5044493768ed55e21609f5be10",
    "artifact_events": "3e9aab0f25af64c880f403e212ad6c06a5bc480310cc9da0040ea55c4ea1e3c9",
    "escalations": "f6f84f6c333f574dc1ae654dd207497c8c38ad44699e8e7b3cd68c47cc28a5b6",
    "dead_letters": "8d0425ed4785c32bd45849e9359f1f8ccbf0cbd93b7a49dc8d1b97897fdc8204",
    "": "5af3016b19405b1fa3a356ff4d5e70855b4ff13924fe3e50b75d85fcd342c104",
}


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-(2**63), 2**64)
    if kind == 3:
        return "".join(rng.choice('aé✓"\\\n\u2028b') for _ in range(rng.randrange(6)))
    if kind in (4, 5):
        at = datetime(1900, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**16))
        return at.astimezone(rng.choice(_ZONES))
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 7:
        return (_value(rng, depth + 1), _value(rng, depth + 1))
    return {str(_value(rng, 2)): _value(rng, depth + 1) for _ in range(rng.randrange(3))}


def _rows(table: str) -> list[dict[str, Any]]:
    rng = random.Random(f"canonical/{table}")
    rows = []
    for _ in range(200):
        row: dict[str, Any] = {}
        for name in _COLUMNS:
            if rng.random() < 0.1:
                continue  # a column the row lacks
            unset = name in chain.late_columns(table) and rng.random() < 0.5
            row[name] = rng.choice(chain.UNSET) if unset else _value(rng)
        rows.append(row)
    return rows


def _digest(table: str) -> str:
    hashes = "".join(chain.row_hash(row, table) for row in _rows(table))
    return hashlib.sha256(hashes.encode()).hexdigest()


def test_canonical_bytes_are_those_the_ledgers_were_stamped_with() -> None:
    assert {table: _digest(table) for table in _TABLES} == PINNED

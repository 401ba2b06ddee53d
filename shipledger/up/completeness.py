"""When is a journaled event done? Judged from the ledger alone, which survives every crash.

An entry of the journal (`shipledger.producers.journal`) is *complete* when the ledger holds
everything the pipeline makes of it, or its dead letter:

- a deployment event: its `deployment_events` row and its record (`record_id` = event id)
  and, when that record is the deployment's first (`seq` 1), every alert its `alert_rules`
  name (alert ids are deterministic: `processors.step.alert_id`);
- an event of another family, or a message the API makes itself (a gate decision, a
  break-glass alert, whose entry's `event_id` is the alert id): its row in its table, by
  the table's id column;
- anything (an undecodable replay included): a `dead_letters` row with its letter id
  (`schemas.letters.letter_id`).

Rows are matched by (tenant, id), as the sink deduplicates them; an entry's table is the one
the catalog stores its topic in (`Topics.tables`). What is complete needs nothing more;
anything else is sent again by `up`'s restore and keeps its journal segment.
The pure part (`Held`, `is_complete`) comes first; the ledger queries after.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shipledger.processors.step import alert_id
from shipledger.producers.journal import Entry
from shipledger.schemas.letters import letter_id, replayed_from
from shipledger.schemas.topics import Topics
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import RowKey

#: Ids per ledger query.
_CHUNK = 5000


@dataclass
class Held:
    """What the ledger holds of some entries' ids."""

    #: (tenant, event_id) of deployment_events rows.
    events: set[RowKey] = field(default_factory=set)
    #: (tenant, record_id) -> the record's (seq, alert_rules).
    records: dict[RowKey, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    #: (tenant, alert_id) of alerts rows.
    alerts: set[RowKey] = field(default_factory=set)
    #: (table, tenant, id) of the other tables' rows (families, gate decisions, alerts).
    family_rows: set[tuple[str, str, str]] = field(default_factory=set)
    letters: set[str] = field(default_factory=set)


def entry_letter_id(entry: Entry) -> str:
    """The id the entry's dead letter would have."""
    return letter_id(entry.topic, entry.key, entry.value, replayed_from(entry.headers))


def is_complete(entry: Entry, table: str | None, held: Held) -> bool:
    """Whether the ledger holds everything made of `entry`, whose topic the sink stores in
    `table` (None: a topic it does not read); see the module docstring."""
    if entry_letter_id(entry) in held.letters:
        return True
    key = (entry.tenant, entry.event_id)
    if table == ddl.EVENTS:
        record = held.records.get(key)
        if key not in held.events or record is None:
            return False
        seq, rules = record
        return seq != 1 or all(
            (entry.tenant, alert_id(entry.event_id, r)) in held.alerts for r in rules
        )
    return table is not None and (table, entry.tenant, entry.event_id) in held.family_rows


# --- the ledger --------------------------------------------------------------------------


def _chunks(items: Sequence[RowKey]) -> Iterable[list[RowKey]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


def held_for(
    store: LedgerStore, entries: Sequence[Entry], tables: dict[str, str], letters: bool = True
) -> Held:
    """What the ledger holds of `entries` (a few queries per table, by id); `tables` from
    `Topics.tables`. Without `letters`, their dead letters are not looked for."""
    held = Held()
    by_table: dict[str, set[RowKey]] = {}
    for e in entries:
        by_table.setdefault(tables.get(e.topic, ""), set()).add((e.tenant, e.event_id))
    deployments = sorted(by_table.pop(ddl.EVENTS, set()))
    if deployments:
        held.events = store.existing_ids(ddl.EVENTS, deployments)
        for chunk in _chunks(deployments):
            _, rows = store.query(
                "SELECT tenant, record_id, seq, alert_rules "  # noqa: S608 (checked identifiers)
                f"FROM {store.source(ddl.RECORDS)} "
                "WHERE (tenant, record_id) IN {keys:Array(Tuple(String, String))}",
                {"keys": chunk},
            )
            for tenant, record_id, seq, rules in rows:
                held.records[(str(tenant), str(record_id))] = (int(seq), tuple(rules))
        wanted = [
            (tenant, alert_id(event_id, rule))
            for (tenant, event_id), (seq, rules) in held.records.items()
            if seq == 1
            for rule in rules
        ]
        if wanted:
            held.alerts = store.existing_ids(ddl.ALERTS, wanted)
    for table, keys in by_table.items():
        if table in ddl.tables():
            found = store.existing_ids(table, sorted(keys))
            held.family_rows.update((table, t, i) for t, i in found)
    ids = sorted({entry_letter_id(e) for e in entries}) if letters else []
    for start in range(0, len(ids), _CHUNK):
        _, rows = store.query(
            f"SELECT DISTINCT letter_id FROM {store.source(ddl.DEAD_LETTERS)} "  # noqa: S608
            "WHERE letter_id IN {ids:Array(String)}",
            {"ids": ids[start : start + _CHUNK]},
        )
        held.letters.update(str(row[0]) for row in rows)
    return held


def incomplete(store: LedgerStore, topics: Topics, entries: Sequence[Entry]) -> list[Entry]:
    """The entries the ledger does not hold yet, in their order."""
    tables = topics.tables()
    held = held_for(store, entries, tables)
    return [e for e in entries if not is_complete(e, tables.get(e.topic), held)]


def stored(store: LedgerStore, topics: Topics, entries: Sequence[Entry]) -> list[Entry]:
    """The entries of events whose every product the ledger holds, their own dead letters
    aside: a dead letter of such an event has nothing left to replay."""
    tables = topics.tables()
    held = held_for(store, entries, tables, letters=False)
    return [e for e in entries if e.event_id and is_complete(e, tables.get(e.topic), held)]

"""When the restore counts a journaled event as done, and the state entries it writes (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shipledger.processors.state import Entry as StateEntry
from shipledger.processors.state import state_key
from shipledger.processors.step import alert_id, process
from shipledger.producers.journal import Entry
from shipledger.schemas.families import scoped_key
from shipledger.schemas.policy import load_policy
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.up.completeness import Held, entry_letter_id, is_complete
from shipledger.up.restore import partition_of, state_message
from tests.kit import deployment_event

TOPICS = Topics.from_settings(Settings())
TABLES = TOPICS.tables()
RULES = ("missing_change_ticket", "out_of_window")


def deployment(event_id: str = "e1") -> Entry:
    return Entry(TOPICS.raw, b"acme/d1", b"avro", "acme", event_id, "deployment")


def test_the_sink_tables_of_journaled_topics() -> None:
    assert TABLES[TOPICS.raw] == ddl.EVENTS
    assert TABLES[TOPICS.of("changes")] == ddl.CHANGES
    assert TABLES[TOPICS.dlq] == ddl.DEAD_LETTERS


def test_a_deployment_event_needs_its_row_its_record_and_first_alerts() -> None:
    entry = deployment()
    held = Held(events={("acme", "e1")})
    assert not is_complete(entry, ddl.EVENTS, held)  # no record yet
    held.records[("acme", "e1")] = (1, RULES)
    assert not is_complete(entry, ddl.EVENTS, held)  # its alerts are missing
    held.alerts = {("acme", alert_id("e1", RULES[0]))}
    assert not is_complete(entry, ddl.EVENTS, held)
    held.alerts.add(("acme", alert_id("e1", RULES[1])))
    assert is_complete(entry, ddl.EVENTS, held)
    later = Held(events={("acme", "e1")}, records={("acme", "e1"): (2, RULES)})
    assert is_complete(entry, ddl.EVENTS, later)  # not a first event: no alerts of its own
    assert not is_complete(entry, ddl.EVENTS, Held(records={("acme", "e1"): (2, ())}))


def test_rows_of_another_tenant_do_not_count() -> None:
    held = Held(events={("globex", "e1")}, records={("globex", "e1"): (2, ())})
    assert not is_complete(deployment(), ddl.EVENTS, held)


def test_a_dead_letter_completes_anything() -> None:
    entry = deployment()
    assert is_complete(entry, ddl.EVENTS, Held(letters={entry_letter_id(entry)}))
    unknown = Entry("elsewhere", None, b"junk", "", "", "")
    assert not is_complete(unknown, None, Held())
    assert is_complete(unknown, None, Held(letters={entry_letter_id(unknown)}))


def test_a_family_event_needs_its_row() -> None:
    entry = Entry(TOPICS.of("changes"), b"acme/CHG1", b"avro", "acme", "c1", "change")
    assert not is_complete(entry, ddl.CHANGES, Held())
    assert is_complete(entry, ddl.CHANGES, Held(family_rows={(ddl.CHANGES, "acme", "c1")}))


def test_a_state_message_is_what_the_processors_write() -> None:
    policy = load_policy(None)
    event = deployment_event(
        event_id="e1",
        deployment_id="job:7",
        tenant="acme",
        occurred_at=datetime(2026, 11, 23, 23, tzinfo=UTC),
    )
    record = process(event, None, policy).record
    seen = [f"e{i}" for i in range(100)]
    partition, key, value = state_message(record, seen, "e0", 4)
    assert partition == partition_of(scoped_key("acme", "job:7"), 4)
    assert json.loads(key) == state_key("acme", "job:7")
    entry = StateEntry.from_json(json.loads(value))
    assert entry.record == record and entry.first == "e0"
    assert entry.seen == tuple(seen[-64:])

"""Dead letters survive a restart of the embedded stack: `up`'s restore writes the ledger's
`dead_letters` back to the fresh broker's DLQ topic, so a letter rejected before the restart
is listed once and can be replayed after its cause is fixed, and its event is stored once;
once replayed, or older than the DLQ's retention, it is not written back any more.

The cause: a producer framing events with a schema id the registry does not know yet (a
producer ahead of the stack). The registry is the loopback stand-in of tests/conftest.py
(`schema_registry`), because no real one can run here; the fix is registering that id."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from shipledger.cli import cli
from shipledger.logging import configure_logging
from shipledger.producers.journal import Entry
from shipledger.schemas.families import scoped_key
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, event_row
from shipledger.sinks.writer import LedgerWriter
from shipledger.up.completeness import stored
from shipledger.up.restore import ledger_letters
from shipledger.up.stack import Stack
from tests.conftest import StandInSchemaRegistry
from tests.kit import deployment_event, ledger_env, ledger_settings, wait_drained, wait_until

pytestmark = pytest.mark.integration

#: The id the producer frames with, unknown to the registry until the fix.
NEWER_ID = 1900
EVENT = deployment_event(event_id="e-ahead", deployment_id="dep-ahead", tenant="acme")


def stack_settings(tmp_path: Path, registry: StandInSchemaRegistry) -> Settings:
    """The settings of a test's stack, whose schema registry is `registry`."""
    return ledger_settings(
        tmp_path / "data", topic_partitions=2, sink_batch_ms=100, schema_registry_url=registry.url
    )


def dlq_env(stack: Stack) -> dict[str, str]:
    """What a `shipledger dlq` command run beside `stack` needs to find it."""
    return {
        "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SHIPLEDGER_TOPIC_PREFIX": stack.settings.topic_prefix,
        "SHIPLEDGER_SCHEMA_REGISTRY_URL": str(stack.settings.schema_registry_url),
        **ledger_env(stack.settings.data_dir),
    }


def dlq(stack: Stack, *args: str) -> str:
    result = CliRunner().invoke(cli, ["dlq", *args], env=dlq_env(stack), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def poison(stack: Stack, *events: DeploymentEvent) -> int:
    """Produce `events` (default EVENT) to the raw topic framed with NEWER_ID, which the
    registry does not know; the id they should have had."""
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    producer = Producer(stack.settings.kafka_producer(stack.bootstrap))
    known_id = 0
    for event in events or (EVENT,):
        framed = codec.encode(event.to_avro())
        (known_id,) = struct.unpack_from(">I", framed, 1)
        value = framed[:1] + struct.pack(">I", NEWER_ID) + framed[5:]
        producer.produce(stack.topics.raw, value, scoped_key(event.tenant, event.deployment_id))
    assert producer.flush(15) == 0
    return known_id


def letters(stack: Stack) -> list[dict[str, object]]:
    return [json.loads(line) for line in dlq(stack, "list", "--format", "json").splitlines()]


def _stored(store: LedgerStore) -> int:
    _, rows = store.query(
        "SELECT count() FROM deployment_events WHERE event_id = {id:String}",
        {"id": EVENT.event_id},
    )
    return int(rows[0][0])


def rejected_then_fixed(
    tmp_path: Path, registry: StandInSchemaRegistry, *events: DeploymentEvent
) -> tuple[Settings, list[dict[str, object]]]:
    """A stack (its settings) whose processors dead-lettered `events` (`poison`), stopped;
    then the fix: `registry` learns the producer's schema, as a newer version would be.
    Also the letters `dlq list` showed before the stop."""
    settings = stack_settings(tmp_path, registry)
    configure_logging(settings)  # the stack's logs on stderr, never in a command's stdout
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        store = stack.store
        assert store is not None
        known_id = poison(stack, *events)
        wait_until(stack, lambda: store.count(ddl.DEAD_LETTERS) == len(events), "the letters")
        listed = letters(stack)
    registry.schemas[NEWER_ID] = registry.schemas[known_id]
    return settings, listed


def test_a_letter_from_before_a_restart_is_listed_once_and_replayed_once(
    tmp_path: Path, schema_registry: StandInSchemaRegistry
) -> None:
    settings, (before,) = rejected_then_fixed(tmp_path, schema_registry, EVENT)
    assert f"unknown schema id {NEWER_ID}" in str(before["reason"])

    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        after = stack.store
        assert after is not None and stack.restored is not None
        (letter,) = letters(stack)  # before the fix: none, the fresh topic is empty
        assert stack.restored.dead_letters == 1
        assert {k: v for k, v in letter.items() if k != "id"} == {
            k: v for k, v in before.items() if k != "id"
        }
        # Twice: replay is at-least-once, the ledger keeps the event once.
        assert "Replayed 1 letter(s)." in dlq(stack, "replay", str(letter["id"]))
        assert "Replayed 1 letter(s)." in dlq(stack, "replay", str(letter["id"]))
        wait_until(stack, lambda: _stored(after) == 1, "the replayed event stored")
        wait_until(stack, lambda: after.count(ddl.RECORDS) == 1, "its record")
        wait_drained(stack, 90)
        assert _stored(after) == 1 and after.count(ddl.RECORDS) == 1
        assert after.count(ddl.DEAD_LETTERS) == 1  # accepted: no new letter
        assert [x["id"] for x in letters(stack)] == [letter["id"]]

    # Another restart leaves the replayed letter out of the DLQ (before: it came back at every
    # start), keeps it in the ledger, and stores nothing again.
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        again = stack.store
        assert again is not None and stack.restored is not None
        assert stack.restored.dead_letters == 0
        assert letters(stack) == []
        wait_drained(stack, 90)
        assert _stored(again) == 1 and again.count(ddl.DEAD_LETTERS) == 1


def test_the_restore_writes_back_the_letters_of_the_dlq_retention(
    tmp_path: Path, schema_registry: StandInSchemaRegistry
) -> None:
    """A letter older than SHIPLEDGER_DLQ_RETENTION_DAYS is not written back to the DLQ topic
    (a real broker would have deleted it); the restore's cutoff is moved instead of the
    letter's time, which the sink stamps."""
    settings = stack_settings(tmp_path, schema_registry)
    configure_logging(settings)
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        store = stack.store
        assert store is not None
        poison(stack)
        wait_until(stack, lambda: store.count(ddl.DEAD_LETTERS) == 1, "the letter stored")
        retention = timedelta(days=settings.dlq_retention_days)
        assert len(list(ledger_letters([store], stack.topics, datetime.now(UTC) - retention))) == 1
        assert list(ledger_letters([store], stack.topics, datetime.now(UTC) + retention)) == []


def test_a_letter_is_left_to_replay_until_the_ledger_holds_what_its_event_makes(
    ledger: LedgerStore, settings: Settings
) -> None:
    """`completeness.stored`, which the restore leaves settled letters out by: an event
    with its record is done; an event row without a record (a processor bug's letter) or no
    row at all is not."""
    topics = Topics.from_settings(settings)
    _, rows = ledger.query("SELECT tenant, event_id FROM deployment_events LIMIT 1")
    ((tenant, done_id),) = rows
    orphan = deployment_event(event_id="e-orphan", deployment_id="dep-orphan", tenant=tenant)
    LedgerWriter(ledger, load_policy(settings.policy_file)).write_rows(
        {ddl.EVENTS: [event_row(orphan.to_avro(), KafkaMeta("raw", 0, 99, 0))]}
    )
    done, *rest = (
        Entry(topics.raw, None, b"", str(tenant), str(event_id), "deployment")
        for event_id in (done_id, orphan.event_id, "e-never")
    )
    assert stored(ledger, topics, [done, *rest]) == [done]

"""Dead letters survive a restart of the embedded stack: `up`'s restore writes the ledger's
`dead_letters` back to the fresh broker's DLQ topic, so a letter rejected before the restart
is listed once and can be replayed after its cause is fixed, and its event is stored once.

The cause: a producer framing events with a schema id the registry does not know yet (a
producer ahead of the stack). The registry is the loopback stand-in of tests/conftest.py
(`schema_registry`), because no real one can run here; the fix is registering that id."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from shipledger.cli import cli
from shipledger.logging import configure_logging
from shipledger.schemas.families import scoped_key
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.stack import Stack
from tests.conftest import StandInSchemaRegistry
from tests.kit import deployment_event, ledger_env, ledger_settings, wait_until

pytestmark = pytest.mark.integration

#: The id the producer frames with, unknown to the registry until the fix.
NEWER_ID = 1900
EVENT = deployment_event(event_id="e-ahead", deployment_id="dep-ahead", tenant="acme")


def _dlq(stack: Stack, *args: str) -> str:
    env = {
        "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
        "SHIPLEDGER_TOPIC_PREFIX": stack.settings.topic_prefix,
        "SHIPLEDGER_SCHEMA_REGISTRY_URL": str(stack.settings.schema_registry_url),
        **ledger_env(stack.settings.data_dir),
    }
    result = CliRunner().invoke(cli, ["dlq", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _letters(stack: Stack) -> list[dict[str, object]]:
    return [json.loads(line) for line in _dlq(stack, "list", "--format", "json").splitlines()]


def _stored(store: LedgerStore) -> int:
    _, rows = store.query(
        "SELECT count() FROM deployment_events WHERE event_id = {id:String}",
        {"id": EVENT.event_id},
    )
    return int(rows[0][0])


def test_a_letter_from_before_a_restart_is_listed_once_and_replayed_once(
    tmp_path: Path, schema_registry: StandInSchemaRegistry
) -> None:
    settings: Settings = ledger_settings(
        tmp_path / "data",
        topic_partitions=2,
        sink_batch_ms=100,
        schema_registry_url=schema_registry.url,
    )
    configure_logging(settings)  # the stack's logs on stderr, never in a command's stdout
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        first = stack.store
        assert first is not None
        framed = AvroCodec("io.shipledger.v1.DeploymentEvent").encode(EVENT.to_avro())
        (known_id,) = struct.unpack_from(">I", framed, 1)
        poison = framed[:1] + struct.pack(">I", NEWER_ID) + framed[5:]
        producer = Producer(settings.kafka_producer(stack.bootstrap))
        producer.produce(stack.topics.raw, poison, scoped_key(EVENT.tenant, EVENT.deployment_id))
        assert producer.flush(15) == 0
        wait_until(stack, lambda: first.count(ddl.DEAD_LETTERS) == 1, "the letter stored")
        (before,) = _letters(stack)
        assert f"unknown schema id {NEWER_ID}" in str(before["reason"])

    # The fix: the registry learns the producer's schema (as a newer version would be).
    schema_registry.schemas[NEWER_ID] = schema_registry.schemas[known_id]

    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        after = stack.store
        assert after is not None and stack.restored is not None
        (letter,) = _letters(stack)  # before the fix: none, the fresh topic is empty
        assert stack.restored.dead_letters == 1
        assert {k: v for k, v in letter.items() if k != "id"} == {
            k: v for k, v in before.items() if k != "id"
        }
        # Twice: replay is at-least-once, the ledger keeps the event once.
        assert "Replayed 1 letter(s)." in _dlq(stack, "replay", str(letter["id"]))
        assert "Replayed 1 letter(s)." in _dlq(stack, "replay", str(letter["id"]))
        wait_until(stack, lambda: _stored(after) == 1, "the replayed event stored")
        wait_until(stack, lambda: after.count(ddl.RECORDS) == 1, "its record")
        wait_until(stack, lambda: not any(stack.pending().values()), "drained")
        assert _stored(after) == 1 and after.count(ddl.RECORDS) == 1
        assert after.count(ddl.DEAD_LETTERS) == 1  # accepted: no new letter
        assert [x["id"] for x in _letters(stack)] == [letter["id"]]

    # Another restart brings the letter back once more, not twice, and stores nothing again.
    with Stack(settings, log_dir=tmp_path / "logs") as stack:
        again = stack.store
        assert again is not None and stack.restored is not None
        assert len(_letters(stack)) == 1
        assert stack.restored.dead_letters == 1
        wait_until(stack, lambda: not any(stack.pending().values()), "drained")
        assert _stored(again) == 1 and again.count(ddl.DEAD_LETTERS) == 1

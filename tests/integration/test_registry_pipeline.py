"""End to end with a Schema Registry configured (`SHIPLEDGER_SCHEMA_REGISTRY_URL`): the real
`shipledger emit` → Tansu → Faust worker (its own process) → ClickHouse sink, every message
framed with the registry's ids, so a registry-aware consumer (kcat -r, ksqlDB, Kafka Connect)
decodes our topics. The registry is the loopback stand-in of tests/conftest.py
(`schema_registry`: ids from 1001, unlike the catalog's 1..n); no real one can run here."""

from __future__ import annotations

import os
import struct
import time
import uuid
from pathlib import Path
from typing import Protocol

import pytest
from confluent_kafka import Consumer, TopicPartition

from shipledger.schemas.registry import catalog
from shipledger.up.stack import Stack
from tests.kit import deployment_event, emit_options, own_settings, run_shipledger

pytestmark = pytest.mark.integration


class Registry(Protocol):
    """The `schema_registry` fixture (tests/conftest.py `StandInSchemaRegistry`)."""

    url: str
    subjects: dict[str, list[int]]
    requests: list[tuple[str, str]]

    def latest_id(self, subject: str) -> int: ...


def _first_value(bootstrap: str, topic: str, timeout_s: float = 30.0) -> bytes:
    """The value of the first message of `topic` (2 partitions), read from the start."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"it-{uuid.uuid4()}", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                value = msg.value()
                assert isinstance(value, bytes)
                return value
    finally:
        consumer.close()
    raise AssertionError(f"no message in {topic}")


def _wire_id(data: bytes) -> int:
    magic, schema_id = struct.unpack_from(">bI", data)
    assert magic == 0
    return int(schema_id)


#: The topics one emitted deployment without a ticket reaches, and their schemas.
FRAMED = (
    ("deployments.raw", "io.shipledger.v1.DeploymentEvent"),
    ("deployments.records", "io.shipledger.v1.DeploymentRecord"),
    ("alerts", "io.shipledger.v1.Alert"),
)


def wire_ids_end_to_end(broker: str, tmp_path: Path, registry_url: str) -> dict[str, int]:
    """Emit one prod deployment without a change ticket through a stack whose every part
    uses the registry at `registry_url`; once its event, record and alert are stored, the
    schema id framing the first message of each of `FRAMED`'s topics (under the stack's
    prefix)."""
    settings = own_settings(tmp_path, sink_batch_ms=100, schema_registry_url=registry_url)
    prefix = settings.topic_prefix
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs") as stack:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")},
            **settings.to_env(),
            "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap,
            "SHIPLEDGER_STRICT": "true",
        }
        for ci in ("GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL"):
            env.pop(ci, None)
        # A prod deployment without a change ticket: the default policy alerts on it.
        event = deployment_event(deployment_id="sr-1", tenant="retail")
        done = run_shipledger("emit", "started", *emit_options(event), env=env)
        assert done.returncode == 0, done.stderr
        assert stack.store is not None
        deadline = time.monotonic() + 90
        # The event's row too: the sink stores it from the raw topic, maybe after the record
        # and the alert the worker made of it.
        counts = (0, 0, 0)
        while time.monotonic() < deadline and min(counts) == 0:
            stack.check()
            _, rows = stack.store.query(
                "SELECT (SELECT count() FROM deployment_records "
                "WHERE deployment_id = 'sr-1'), (SELECT count() FROM alerts "
                "WHERE deployment_id = 'sr-1' AND rule = 'missing_change_ticket'), "
                "(SELECT count() FROM deployment_events)"
            )
            counts = (int(rows[0][0]), int(rows[0][1]), int(rows[0][2]))
            time.sleep(0.2)
        assert counts == (1, 1, 1), counts
        return {
            prefix + topic: _wire_id(_first_value(stack.bootstrap, prefix + topic))
            for topic, _ in FRAMED
        }


def test_an_event_flows_end_to_end_framed_with_registry_ids(
    broker: str, tmp_path: Path, schema_registry: Registry
) -> None:
    wire = wire_ids_end_to_end(broker, tmp_path, schema_registry.url)
    for (topic, id_), (_, schema) in zip(wire.items(), FRAMED, strict=True):
        assert id_ == schema_registry.latest_id(f"{topic}-value"), topic
        assert id_ >= 1001 and id_ != catalog().latest(schema).id
    # The worker and the sink (other codecs than the emitter's) looked the raw id up.
    raw_topic = next(iter(wire))
    raw_id = schema_registry.latest_id(f"{raw_topic}-value")
    assert ("GET", f"/schemas/ids/{raw_id}") in schema_registry.requests

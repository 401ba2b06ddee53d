"""The contract end to end on real components (Tansu, Faust worker, sink, chDB): deployment
events framed as v1 (schema id 1) and v2 land in the same tables; one event of each other
family lands in its table; an invalid family event is dead-lettered with its field named."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any, Literal

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from shipledger.schemas.families import FAMILIES, family_of
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec, catalog
from shipledger.up.stack import Stack
from tests.kit import FAMILY_EVENTS, deployment_event, query_until

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
EVENT = "io.shipledger.v1.DeploymentEvent"
#: One valid event of each family beside deployments, and the table it lands in.
OTHER_FAMILIES = {name: payload for name, payload in FAMILY_EVENTS.items() if name != "deployment"}
TABLES = {
    spec.family: spec.table.name
    for spec in catalog().topics.values()
    if spec.family in OTHER_FAMILIES and spec.table is not None
}


def _v1_framed(event: DeploymentEvent) -> bytes:
    """A message from a producer still on v1: schema id 1, v1 body."""
    v1 = catalog().versions(EVENT)[0]
    fields = {f["name"] for f in v1.raw["fields"]}
    buf = io.BytesIO()
    buf.write(b"\x00" + v1.id.to_bytes(4, "big"))
    fastavro.schemaless_writer(
        buf, v1.parsed, {k: v for k, v in event.to_avro().items() if k in fields}
    )
    return buf.getvalue()


def _event(dep: str, stage: Literal["started", "succeeded"], **kw: Any) -> DeploymentEvent:
    return deployment_event(
        event_id=f"{dep}-{stage}",
        deployment_id=dep,
        event_type=stage,
        tenant="retail",
        occurred_at=AT,
        **kw,
    )


def _dead_letters(bootstrap: str, topic: str, timeout: float = 60) -> list[dict[str, bytes]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"it-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    deadline = time.monotonic() + timeout
    out: list[dict[str, bytes]] = []
    while not out and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            raw = msg.headers() or []
            pairs = list(raw.items()) if isinstance(raw, dict) else raw
            out.append({k: v for k, v in pairs if isinstance(v, bytes)})
    consumer.close()
    return out


def test_v1_and_v2_events_and_every_family_land_in_the_ledger(stack: Stack) -> None:
    producer = Producer(stack.settings.kafka_producer(stack.bootstrap))
    codec = AvroCodec(EVENT)
    # v1 producer starts the deployment, a v2 producer finishes it with the new fields.
    producer.produce(stack.topics.raw, key=b"dep-v", value=_v1_framed(_event("dep-v", "started")))
    v2 = _event("dep-v", "succeeded", team="basket", approvers=["bob"], source="api")
    newest = catalog().latest(EVENT).id  # a current producer writes the newest version (v3)
    assert codec.encode(v2.to_avro())[1:5] == newest.to_bytes(4, "big")
    producer.produce(stack.topics.raw, key=b"dep-v", value=codec.encode(v2.to_avro()))
    assert set(OTHER_FAMILIES) == set(FAMILIES) - {"deployment"}, "a family has no sample"
    for name, payload in OTHER_FAMILIES.items():
        family = family_of(name)
        event = family.model.model_validate({"tenant": "retail", "occurred_at": AT, **payload})
        producer.produce(
            stack.settings.topic(family.topic),
            key=family.key(event),
            value=AvroCodec(family.schema).encode(event.to_avro()),
        )
    # What a non-validating producer sends: a short SHA in a source event.
    source = FAMILIES["source"]
    bad = {
        **source.model.model_validate(FAMILY_EVENTS["source"]).to_avro(),
        "commit_sha": "abc123",
    }
    producer.produce(
        stack.topics.of("source"),
        key=b"retail/acme/cart",
        value=AvroCodec(source.schema).encode(bad),
    )
    assert producer.flush(10) == 0

    assert query_until(
        stack,
        "SELECT event_id, team, approvers FROM deployment_events ORDER BY event_id",
        [("dep-v-started", None, []), ("dep-v-succeeded", "basket", ["bob"])],
    ) == [("dep-v-started", None, []), ("dep-v-succeeded", "basket", ["bob"])]
    assert query_until(
        stack,
        "SELECT status, seq, team, source, approvers FROM deployments",
        [("succeeded", 2, "basket", "api", ["bob"])],
    ) == [("succeeded", 2, "basket", "api", ["bob"])]
    for name, table in TABLES.items():
        assert query_until(stack, f"SELECT count() FROM {table}", [(1,)]) == [(1,)], name
    assert query_until(
        stack,
        "SELECT change_id, arrayMap(a -> a.approver, approvals) FROM change_requests",
        [(FAMILY_EVENTS["change"]["change_id"], ["bob"])],
    ) == [(FAMILY_EVENTS["change"]["change_id"], ["bob"])]

    letters = _dead_letters(stack.bootstrap, stack.topics.dlq)
    assert len(letters) == 1
    assert letters[0]["field"] == b"commit_sha"
    assert letters[0]["reason"].decode().startswith("commit_sha: must be a full commit SHA")
    assert letters[0]["source_topic"] == stack.topics.of("source").encode()

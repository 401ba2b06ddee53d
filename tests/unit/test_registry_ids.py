"""Wire ids from a Confluent-compatible Schema Registry (`schemas.confluent_ids`), through
`confluent_kafka.schema_registry.SchemaRegistryClient` against the loopback stand-in registry
of tests/conftest.py (`schema_registry`: a stand-in, no real registry can run here; its ids
start at 1001, unlike the catalog's)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Protocol

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.dlq_limit import DlqLimit, DlqLimitState
from shipledger.processors.handler import EventHandler
from shipledger.schemas.confluent_ids import RegistryIds, use_schema_registry
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import (
    AvroCodec,
    DecodeError,
    RegistryUnavailable,
    catalog,
    schema_ids,
)
from shipledger.settings import Settings
from tests.kit import deployment_event

EVENT = "io.shipledger.v1.DeploymentEvent"
PREFIX = "acme."
RAW_SUBJECT = "acme.deployments.raw-value"


class Registry(Protocol):
    """The `schema_registry` fixture (tests/conftest.py `StandInSchemaRegistry`)."""

    url: str
    subjects: dict[str, list[int]]
    schemas: dict[int, str]
    requests: list[tuple[str, str]]
    fail_with: int | None

    def latest_id(self, subject: str) -> int: ...


def _event() -> DeploymentEvent:
    return deployment_event(tenant="acme")


def _wire_id(data: bytes) -> int:
    magic, schema_id = struct.unpack_from(">bI", data)
    assert magic == 0
    return int(schema_id)


def test_writes_the_registry_id_registered_under_the_topic_subject(
    schema_registry: Registry,
) -> None:
    ids = RegistryIds(schema_registry.url, PREFIX)
    data = AvroCodec(EVENT, ids=ids).encode(_event().to_avro())

    # Every version of the schema, oldest first, under <topic>-value (TopicNameStrategy).
    versions = schema_registry.subjects[RAW_SUBJECT]
    assert len(versions) == len(catalog().versions(EVENT)) == 3
    assert versions == sorted(versions) and min(versions) >= 1001
    assert _wire_id(data) == schema_registry.latest_id(RAW_SUBJECT)
    assert _wire_id(data) != catalog().latest(EVENT).id
    # Registered once: the next message asks nothing.
    asked = len(schema_registry.requests)
    AvroCodec(EVENT, ids=ids).encode(_event().to_avro())
    assert len(schema_registry.requests) == asked


def test_a_consumer_resolves_a_registry_id_it_has_not_seen(schema_registry: Registry) -> None:
    data = AvroCodec(EVENT, ids=RegistryIds(schema_registry.url, PREFIX)).encode(_event().to_avro())
    # Another process: knows nothing yet, asks the registry for the id once.
    reader = RegistryIds(schema_registry.url, PREFIX)
    decoded = AvroCodec(EVENT, ids=reader).decode(data)
    assert DeploymentEvent.model_validate(decoded) == _event().model_copy(
        update={"event_id": decoded["event_id"], "occurred_at": decoded["occurred_at"]}
    )
    assert ("GET", f"/schemas/ids/{_wire_id(data)}") in schema_registry.requests
    # A registry id of another schema is refused by name, as a catalog id is.
    alert_id = RegistryIds(schema_registry.url, PREFIX).writer_id(
        catalog().latest("io.shipledger.v1.Alert")
    )
    with pytest.raises(DecodeError, match=f"schema id {alert_id} is io.shipledger.v1.Alert"):
        AvroCodec(EVENT, ids=reader).decode(struct.pack(">bI", 0, alert_id) + data[5:])


def test_catalog_framed_messages_still_decode_with_a_registry(schema_registry: Registry) -> None:
    """Messages written before the registry was configured carry catalog ids it lacks."""
    old = AvroCodec(EVENT).encode(_event().to_avro())
    assert _wire_id(old) == catalog().latest(EVENT).id
    decoded = AvroCodec(EVENT, ids=RegistryIds(schema_registry.url, PREFIX)).decode(old)
    assert decoded["deployment_id"] == "d-1"


def test_an_unreachable_registry_is_not_a_bad_message(schema_registry: Registry) -> None:
    data = AvroCodec(EVENT, ids=RegistryIds(schema_registry.url, PREFIX)).encode(_event().to_avro())
    schema_registry.fail_with = 500
    cold = RegistryIds(schema_registry.url, PREFIX)
    with pytest.raises(RegistryUnavailable, match="fetching schema id"):
        AvroCodec(EVENT, ids=cold).decode(data)
    with pytest.raises(RegistryUnavailable, match=f"looking up {EVENT} v3 in {RAW_SUBJECT}"):
        AvroCodec(EVENT, ids=cold).encode(_event().to_avro())


def test_the_process_binding_switches_every_codec(schema_registry: Registry) -> None:
    codec = AvroCodec(EVENT)  # built before the binding: reads it at each call
    assert _wire_id(codec.encode(_event().to_avro())) == catalog().latest(EVENT).id
    use_schema_registry(schema_registry.url, PREFIX)
    assert isinstance(schema_ids(), RegistryIds)
    assert _wire_id(codec.encode(_event().to_avro())) == schema_registry.latest_id(RAW_SUBJECT)
    use_schema_registry(None, PREFIX)
    assert _wire_id(codec.encode(_event().to_avro())) == catalog().latest(EVENT).id


def test_emit_says_so_when_the_registry_cannot_give_an_id(
    schema_registry: Registry,
    settings: Settings,
    cli_env: Callable[[Settings, str], dict[str, str]],
    use_env: Callable[[dict[str, str]], None],
) -> None:
    """No id, nothing to frame the event with: a clear error, not a traceback or a spool."""
    env = cli_env(settings, "127.0.0.1:9")
    use_env({**env, "SHIPLEDGER_SCHEMA_REGISTRY_URL": schema_registry.url})
    schema_registry.fail_with = 500
    result = CliRunner().invoke(
        cli,
        ["emit", "started", "--deployment-id", "d-1", "--service", "checkout",
         "--environment", "prod", "--commit-sha", "0f" * 20, "--actor", "al"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"looking up {EVENT} v3 in {settings.topic_prefix}deployments.raw-value" in (
        result.output
    )
    assert not list(settings.resolved_spool_dir.glob("*"))


class _NoState:
    def get(self, key: str) -> None:
        return None

    def put(self, *args: object) -> None:
        raise AssertionError("nothing is applied")


class _Letters:
    def __init__(self) -> None:
        self.letters: list[object] = []

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: object) -> None:
        self.letters.append(value)


def test_the_processors_stop_rather_than_dead_letter_when_the_registry_is_down(
    schema_registry: Registry,
) -> None:
    data = AvroCodec(EVENT, ids=RegistryIds(schema_registry.url, PREFIX)).encode(_event().to_avro())
    use_schema_registry(schema_registry.url, PREFIX)  # a worker that has not seen the id yet
    schema_registry.fail_with = 500
    outputs = _Letters()
    limit = DlqLimitState(DlqLimit.from_settings(Settings()), "processors")
    handler = EventHandler(load_policy(None), _NoState(), outputs, limit)  # type: ignore[arg-type]
    message = SimpleNamespace(value=data, key=b"acme/d-1", topic="raw", partition=0, offset=1)
    with pytest.raises(RegistryUnavailable):
        handler.handle(message)
    assert outputs.letters == []

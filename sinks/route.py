"""The sink's first step: one consumed message → a row of its table, or poison. Pure: codecs
and row builders, no clients.

`routes(topics)` is the route table (which topic becomes which table, decoded with which
schema and validated by which model); `route_message` runs one message through its route:
decode (Avro, Confluent framing) → validate → build the row (`sinks.rows`). A message that
does not decode, validate or fit its table is `Poison`, with the reason and field its dead
letter will carry; it is the sink's to dead-letter unless the processors own the topic's
rejects (`Route.owns_rejects`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message
from pydantic import ValidationError

from shipledger.schemas.families import family_of
from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec, DecodeError
from shipledger.schemas.validation import EVENT_SCHEMA, validation_reason
from shipledger.sinks.ledger.ddl import (
    ALERTS,
    ARTIFACTS,
    CATALOG,
    CHANGES,
    DEAD_LETTERS,
    EVENTS,
    RECORDS,
    SIGNALS,
    SOURCE,
    TableSpec,
    tables,
)
from shipledger.sinks.rows import (
    KafkaMeta,
    Row,
    RowError,
    alert_row,
    event_row,
    family_row,
    letter_row,
    record_row,
)
from shipledger.topics import Topics


@dataclass(frozen=True)
class Route:
    """How messages of one topic become rows of one table.

    `owns_rejects`: whether the sink dead-letters this topic's bad messages. The raw topic's
    are the processors' to dead-letter (they read it too); the sink validates them the same
    way and skips what the processors reject, so the DLQ holds one letter per bad event and
    `deployment_events` only events that became records.
    """

    topic: str
    table: TableSpec
    decode: Callable[[Message], Mapping[str, Any]]
    to_row: Callable[[Mapping[str, Any], KafkaMeta], Row]
    validate: Callable[[Mapping[str, Any]], object] | None = None
    owns_rejects: bool = True


@dataclass(frozen=True)
class Poison:
    """A message that cannot become a row: why (`reason`, `field`), and whether the sink
    dead-letters it (`owned`) or skips it (the processors letter the raw topic's)."""

    reason: str
    field: str | None
    owned: bool


def _value(schema: str) -> Callable[[Message], Mapping[str, Any]]:
    """Decodes a message's value with `schema` (raises DecodeError)."""
    codec = AvroCodec(schema)
    return lambda msg: codec.decode(msg.value())


def _letter(topics: Topics) -> Callable[[Message], Mapping[str, Any]]:
    """Reads a DLQ message: its original key and value, its headers, and the payload decoded
    with its source topic's schema when it can be (never raises: every letter is kept)."""
    codecs = {topic: AvroCodec(schema) for topic, schema in topics.schemas().items()}

    def decode(msg: Message) -> Mapping[str, Any]:
        letter = DeadLetter.read(msg.headers())
        codec = codecs.get(letter.source_topic or "")
        decoded: Mapping[str, Any] | None = None
        if codec is not None:
            try:
                decoded = codec.decode(msg.value())
            except DecodeError:
                decoded = None
        return {"key": msg.key(), "value": msg.value(), "letter": letter, "decoded": decoded}

    return decode


def _family_route(topic: str, name: str, table: str) -> Route:
    """A family topic's route: validated by the family's model; the sink alone reads these
    topics, so it dead-letters their rejects itself."""
    family = family_of(name)
    return Route(
        topic,
        tables()[table],
        _value(family.schema),
        family_row(table),
        validate=family.model.model_validate,
    )


def routes(topics: Topics) -> dict[str, Route]:
    """The sink's topics, each with its codec and table."""
    spec = tables()
    families = [
        _family_route(topics.changes, "change", CHANGES),
        _family_route(topics.source, "source", SOURCE),
        _family_route(topics.artifacts, "artifact", ARTIFACTS),
        _family_route(topics.signals, "signal", SIGNALS),
        _family_route(topics.catalog, "catalog", CATALOG),
    ]
    return {
        **{route.topic: route for route in families},
        topics.raw: Route(
            topics.raw,
            spec[EVENTS],
            _value(EVENT_SCHEMA),
            event_row,
            validate=DeploymentEvent.model_validate,
            owns_rejects=False,
        ),
        topics.records: Route(
            topics.records,
            spec[RECORDS],
            _value("io.shipledger.v1.DeploymentRecord"),
            lambda record, _meta: record_row(record),
        ),
        topics.alerts: Route(
            topics.alerts,
            spec[ALERTS],
            _value("io.shipledger.v1.Alert"),
            lambda alert, _meta: alert_row(alert),
        ),
        # Letters are kept, never rejected: a letter about a letter would loop.
        topics.dlq: Route(topics.dlq, spec[DEAD_LETTERS], _letter(topics), letter_row, None, False),
    }


def kafka_meta(msg: Message) -> KafkaMeta:
    """Where `msg` was read from, and its Kafka timestamp (None when the broker gave none)."""
    ts_type, ts = msg.timestamp()
    return KafkaMeta(
        msg.topic() or "", msg.partition() or 0, msg.offset() or 0, ts if ts_type else None
    )


def route_message(route: Route, msg: Message, meta: KafkaMeta) -> Row | Poison:
    """`msg` decoded, validated and built into its table's row; or why it cannot be."""
    try:
        decoded = route.decode(msg)
        if route.validate is not None:
            route.validate(decoded)
        return route.to_row(decoded, meta)
    except ValidationError as exc:
        reason, field = validation_reason(exc)
    except DecodeError as exc:
        reason, field = exc.reason, exc.field
    except RowError as exc:
        reason, field = str(exc), None
    return Poison(reason, field, route.owns_rejects)

"""The sink's first step: one consumed message → a row of its table, or poison. Pure: codecs
and row builders, no clients.

`routes_from_catalog(topics)` is the route table, derived from the catalog: every topic with a
ledger table, decoded with its schema, validated by its model and built by its table's row
builder. `route_message` runs one message through its route: decode (Avro, Confluent framing)
→ validate → build the row (`sinks.rows`). A message that does not decode, validate or fit its
table is `Poison`, with the reason and field its dead letter will carry; it is the sink's to
dead-letter unless the processors own the topic's rejects (`Route.owns_rejects`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message
from pydantic import ValidationError

from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.registry import AvroCodec, DecodeError
from shipledger.schemas.topic_spec import TopicSpec
from shipledger.schemas.topics import Topics
from shipledger.schemas.validation import validation_reason
from shipledger.sinks.ledger.ddl import TableSpec, tables
from shipledger.sinks.rows import KafkaMeta, Row, RowBuilder, RowError, row_builder


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
    to_row: RowBuilder
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


def _route(topic: str, spec: TopicSpec, topics: Topics) -> Route:
    assert spec.table is not None, f"topic {spec.name} is not stored"
    # Only the families' events come from outside the pipeline (the ingest edges): records
    # and alerts are the processors' own output, built by their models already.
    validate = spec.model_class().model_validate if spec.family is not None else None
    return Route(
        topic,
        tables()[spec.table.name],
        _letter(topics) if spec.value_schema is None else _value(spec.value_schema),
        row_builder(spec.table.name),
        validate=validate,
        # Letters are kept, never rejected (`dlq: null`): a letter about a letter would loop.
        owns_rejects=spec.dlq is not None and spec.dead_letters_by == "sink",
    )


def routes_from_catalog(topics: Topics) -> dict[str, Route]:
    """The sink's topics (full names), each with its codec and table: one route per catalog
    topic that has a ledger table."""
    return {
        topic: _route(topic, spec, topics)
        for topic, spec in topics.specs().items()
        if spec.table is not None
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

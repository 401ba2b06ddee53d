"""The sink's routes, derived from the catalog: every topic with a ledger table, with the codec
that reads it, the model that validates it and the builder of its rows. Pure: no clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from shipledger.schemas.letters import SOURCE_TOPIC, header_text
from shipledger.schemas.registry import AvroCodec, DecodeError
from shipledger.schemas.topic_spec import TopicSpec
from shipledger.schemas.topics import Topics
from shipledger.sinks.ledger.ddl import TableSpec, tables
from shipledger.sinks.rows import RowBuilder, row_builder


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


def _value(schema: str) -> Callable[[Message], Mapping[str, Any]]:
    """Decodes a message's value with `schema` (raises DecodeError)."""
    codec = AvroCodec(schema)
    return lambda msg: codec.decode(msg.value())


def _letter(topics: Topics) -> Callable[[Message], Mapping[str, Any]]:
    """Reads a DLQ message: its original key and value, its headers, and the payload decoded
    with its source topic's schema when it can be (never raises: every letter is kept)."""
    codecs = {topic: AvroCodec(schema) for topic, schema in topics.schemas().items()}

    def decode(msg: Message) -> Mapping[str, Any]:
        headers = header_text(msg.headers())
        codec = codecs.get(headers.get(SOURCE_TOPIC, ""))
        decoded: Mapping[str, Any] | None = None
        if codec is not None:
            try:
                decoded = codec.decode(msg.value())
            except DecodeError:
                decoded = None
        return {"key": msg.key(), "value": msg.value(), "headers": headers, "decoded": decoded}

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

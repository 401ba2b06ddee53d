"""Pure functions: decoded Avro dicts (from `AvroCodec.decode`) to ledger table rows.

No I/O and no clients: the sink wraps them. A message that decodes but does not fit its table
raises `RowError`, which the sink treats like a decode failure (dead letter, not a crash).
"""

from __future__ import annotations

import base64
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any

from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.registry import catalog
from shipledger.sinks.ledger.chain import to_ms_precision
from shipledger.sinks.ledger.ddl import (
    ALERTS,
    DEAD_LETTERS,
    EVENTS,
    INGEST_COLUMNS,
    RECORDS,
    TableSpec,
    tables,
)

Row = dict[str, Any]
_INGEST = frozenset(c.name for c in INGEST_COLUMNS)


class RowError(ValueError):
    """A decoded message that cannot become a row of its table."""


@dataclass(frozen=True)
class KafkaMeta:
    """Where a message was read from: the ingest columns of deployment_events."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def received_at(meta: KafkaMeta, now: datetime | None = None) -> datetime:
    """The message's Kafka timestamp, or `now` when the broker gave none."""
    if meta.timestamp_ms is None or meta.timestamp_ms <= 0:
        return now or datetime.now(UTC)
    return _kafka_time(meta.timestamp_ms)


@lru_cache(maxsize=1)
def _kafka_time(timestamp_ms: int) -> datetime:
    # The messages of a batch often share their timestamp, an import's events all do (its
    # start): made once for them (~1.5 µs an event).
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


def _as_stored(value: Any) -> bool:
    """Whether `value` is a timestamp as DateTime64(3) stores it, UTC and whole milliseconds
    (as the models make them, `schemas.models.aware`): `_utc` returns it as it is."""
    return type(value) is datetime and value.tzinfo is UTC and not value.microsecond % 1000


def _utc(value: Any, column: str) -> datetime:
    if not isinstance(value, datetime):
        raise RowError(f"{column}: expected a timestamp, got {type(value).__name__}")
    # DateTime64(3) keeps milliseconds: the row hashed must be the row stored.
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value  # nothing to change (`_as_stored`)
    if value.tzinfo is None:
        return to_ms_precision(value.replace(tzinfo=UTC))
    return to_ms_precision(value.astimezone(UTC))


@cache
def _field_types(schema: str) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in catalog().latest(schema).raw["fields"]}


def _resolved(avro_type: Any) -> Any:
    """`avro_type` without its nullable union (ValueError for a union of several types)."""
    if isinstance(avro_type, list):
        (avro_type,) = [t for t in avro_type if t != "null"]
    return avro_type


#: A column's value made insertable (never given None: `column_value` keeps None as it is).
Convert = Callable[[Any], Any]


def _unresolvable(avro_type: Any) -> Convert:
    def convert(_value: Any) -> Any:
        return _resolved(avro_type)  # raises ValueError: a union of several types

    return convert


def _is_timestamp(avro_type: Any) -> bool:
    """Whether `avro_type` (maybe nullable) is a timestamp (`_utc` converts its values)."""
    try:
        resolved = _resolved(avro_type)
    except ValueError:
        return False
    return isinstance(resolved, dict) and resolved.get("logicalType") in _TIMESTAMPS


_TIMESTAMPS = ("timestamp-millis", "timestamp-micros")


def _converter(avro_type: Any, column: str) -> Convert | None:
    """How `column_value` converts a value of `avro_type`, worked out once per column (the
    sink's hot path: no type is looked at again per value); None: inserted as decoded."""
    try:
        resolved = _resolved(avro_type)
    except ValueError:
        return _unresolvable(avro_type)
    if not isinstance(resolved, dict):
        return None
    if resolved.get("logicalType") in _TIMESTAMPS:
        return lambda value: _utc(value, column)
    kind = resolved["type"]
    if kind == "array":
        item = _nullable(_converter(resolved["items"], f"{column}[]"))
        if item is None:
            return list
        return lambda value: [item(each) for each in value]
    if kind == "map":
        entry = _nullable(_converter(resolved["values"], f"{column}{{}}"))
        if entry is None:
            return dict
        return lambda value: {k: entry(v) for k, v in value.items()}
    if kind == "record":
        return _record(resolved, column)
    return None


def _nullable(convert: Convert | None) -> Convert | None:
    """`convert` for values that may be None (items of arrays and maps, fields of records)."""
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)


def _record(avro_type: dict[str, Any], column: str) -> Convert:
    """A record (a named Tuple) as a tuple of its fields' values in field order."""
    fields = [
        (f["name"], _nullable(_converter(f["type"], f"{column}.{f['name']}")))
        for f in avro_type["fields"]
    ]

    def convert(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise RowError(f"{column}: expected a record, got {type(value).__name__}")
        try:
            return tuple(
                value[name] if each is None else each(value[name]) for name, each in fields
            )
        except KeyError as exc:
            raise RowError(f"{column}: field {exc} missing from the record") from None

    return convert


def column_value(avro_type: Any, value: Any, column: str) -> Any:
    """A decoded Avro value as clickhouse-connect inserts it into the column `clickhouse_type`
    made of `avro_type`: timestamps UTC-aware, records (named Tuples) as tuples in field
    order, inside arrays, maps and nullable unions too."""
    convert = _converter(avro_type, column)
    return value if value is None or convert is None else convert(value)


#: A table's Avro-derived columns, each with its conversion (`_converter`), or None where the
#: decoded value is inserted as it is: worked out once per table, not per row.
_Plan = tuple[tuple[str, Convert | None], ...]


@dataclass(frozen=True)
class _Layout:
    """A table's plan, and the same as `avro_row` runs it: the columns' values taken at once
    (in C), then the few that are converted (timestamps, records, arrays and maps of them)."""

    plan: _Plan
    names: tuple[str, ...]
    take: Callable[[Mapping[str, Any]], Sequence[Any]]
    converted: tuple[tuple[str, Convert], ...]
    #: The timestamp columns among `converted`: most values need no conversion, which is
    #: seen here without calling `_utc` (~0.2 µs a timestamp).
    times: frozenset[str]
    #: The columns in their order, each None: a row is a copy of it updated with the message
    #: (~1.4 µs a row less than pairing names and values, measured).
    columns: dict[str, None]


_layouts: dict[str, tuple[TableSpec, _Layout]] = {}


def _layout(spec: TableSpec) -> _Layout:
    cached = _layouts.get(spec.name)
    if cached is not None and cached[0] is spec:
        return cached[1]
    assert spec.schema is not None, f"{spec.name} has no Avro schema"
    types = _field_types(spec.schema)
    plan = tuple(
        (c.name, _converter(types[c.name], c.name))
        for c in spec.columns
        if not (c.name in spec.stamped or (c.name in _INGEST and spec.name == EVENTS))
    )
    names = tuple(name for name, _ in plan)
    getter = operator.itemgetter(*names)
    take = getter if len(names) > 1 else lambda decoded: (getter(decoded),)
    converted = tuple((name, convert) for name, convert in plan if convert is not None)
    times = frozenset(name for name, _ in converted if _is_timestamp(types[name]))
    layout = _Layout(plan, names, take, converted, times, dict.fromkeys(names))
    _layouts[spec.name] = (spec, layout)
    return layout


def avro_row(spec: TableSpec, decoded: Mapping[str, Any]) -> Row:
    """The table's Avro-derived columns taken from `decoded`, in their insertable form (the
    sink stamps the ledger columns when it stores the row)."""
    if type(decoded) is not dict:  # a mapping may answer `in` and `[]` differently
        return _checked_row(spec, decoded)
    layout = _layout(spec)
    row: Row = layout.columns.copy()
    row.update(decoded)  # the columns keep their order
    try:
        if len(row) != len(decoded) or len(row) != len(layout.names):
            # `decoded` lacks a column or holds others: its columns taken (every value in C,
            # ~2 µs a row less than column by column, measured).
            row = dict(zip(layout.names, layout.take(decoded), strict=True))
        times = layout.times
        for name, convert in layout.converted:
            value = row[name]
            if value is None or (name in times and _as_stored(value)):
                continue
            row[name] = convert(value)
    except (KeyError, RowError):
        return _checked_row(spec, decoded)  # which column first fails, in column order
    if not row[spec.id_column]:
        raise RowError(f"{spec.name}: empty {spec.id_column}")
    return row


def _checked_row(spec: TableSpec, decoded: Mapping[str, Any]) -> Row:
    """`avro_row` column by column: the first column missing or not convertible raises."""
    row: Row = {}
    for name, convert in _layout(spec).plan:
        if name not in decoded:
            raise RowError(f"{spec.name}: field {name!r} missing from the message")
        value = decoded[name]
        row[name] = value if value is None or convert is None else convert(value)
    if not row[spec.id_column]:
        raise RowError(f"{spec.name}: empty {spec.id_column}")
    return row


def event_row(event: Mapping[str, Any], meta: KafkaMeta) -> Row:
    """A `deployment_events` row: the event as received plus its Kafka position."""
    row = avro_row(tables()[EVENTS], event)
    received = received_at(meta)
    # The same object for a batch's events when whole milliseconds already (an import's
    # are): not a copy per event, and its hash is worked out once where it is hashed.
    row["received_at"] = received if _as_stored(received) else to_ms_precision(received)
    row["kafka_partition"] = meta.partition
    row["kafka_offset"] = meta.offset
    return row


def record_row(record: Mapping[str, Any]) -> Row:
    """A `deployment_records` row."""
    return avro_row(tables()[RECORDS], record)


def alert_row(alert: Mapping[str, Any]) -> Row:
    """An `alerts` row (evidence stays a string map)."""
    return avro_row(tables()[ALERTS], alert)


#: Builds a table's row from a decoded message and where it was read.
RowBuilder = Callable[[Mapping[str, Any], KafkaMeta], Row]


def row_builder(table: str) -> RowBuilder:
    """How a decoded message becomes a row of `table`: dead letters are read from their
    headers, deployment events keep their Kafka position, every other table (records, alerts,
    the families' events) takes the message's fields as they are."""
    if table == DEAD_LETTERS:
        return letter_row
    if table == EVENTS:
        return event_row
    spec = tables()[table]

    def to_row(message: Mapping[str, Any], _meta: KafkaMeta) -> Row:
        return avro_row(spec, message)

    return to_row


def letter_row(message: Mapping[str, Any], meta: KafkaMeta) -> Row:
    """A `dead_letters` row from a DLQ message (`key`, `value`, its headers read as `letter`,
    and the payload decoded with its source topic's schema in `decoded`, or None)."""
    letter: DeadLetter = message["letter"]
    key: bytes | None = message["key"]
    value: bytes | None = message["value"]
    decoded: Mapping[str, Any] | None = message["decoded"]
    tenant = (key or b"").decode("utf-8", errors="replace").partition("/")[0]
    if decoded is not None and isinstance(decoded.get("tenant"), str):
        tenant = decoded["tenant"]
    region = decoded.get("region") if decoded is not None else None
    event_id = decoded.get("event_id") if decoded is not None else None
    return {
        "letter_id": letter.id(key, value),
        "tenant": tenant,
        "region": region if isinstance(region, str) else None,
        "dead_lettered_at": to_ms_precision(received_at(meta)),
        "stage": letter.stage,
        "reason": letter.reason,
        "field": letter.field,
        "source_topic": letter.source_topic or "",
        "source_partition": -1 if letter.source_partition is None else letter.source_partition,
        "source_offset": -1 if letter.source_offset is None else letter.source_offset,
        "replayed_from": letter.replayed_from,
        "event_id": event_id if isinstance(event_id, str) else None,
        "payload": None if decoded is None else json.dumps(decoded, default=str, sort_keys=True),
        "key_base64": None if key is None else base64.b64encode(key).decode(),
        "value_base64": None if value is None else base64.b64encode(value).decode(),
    }


#: The `dead_letters` columns `dead_letter` reads back, in its order.
LETTER_COLUMNS = (
    "key_base64",
    "value_base64",
    "reason",
    "field",
    "source_topic",
    "source_partition",
    "source_offset",
    "stage",
    "replayed_from",
)


def _unbase64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def dead_letter(values: Sequence[Any]) -> tuple[bytes | None, bytes | None, DeadLetter]:
    """The DLQ message a `dead_letters` row stores, from its `LETTER_COLUMNS` (what
    `letter_row` made of it): original key, value and the letter its headers said."""
    key, value, reason, field, topic, partition, offset, stage, origin = values
    letter = DeadLetter(
        reason=str(reason),
        field=field,
        source_topic=str(topic) or None,
        source_partition=None if partition < 0 else int(partition),
        source_offset=None if offset < 0 else int(offset),
        stage=str(stage),
        replayed_from=origin,
    )
    return _unbase64(key), _unbase64(value), letter


#: What makes a row unique: (tenant, id). Ids are the senders' and the processors' own, so two
#: tenants may use the same one; a row is a duplicate only of its own tenant's row.
RowKey = tuple[str, str]


def row_key(row: Row, id_column: str) -> RowKey:
    """The row's (tenant, id)."""
    return (str(row["tenant"]), str(row[id_column]))


def dedupe(rows: list[Row], id_column: str, stored: set[RowKey]) -> tuple[list[Row], int]:
    """Rows whose (tenant, id) is neither in `stored` nor earlier in `rows`; and how many
    were dropped."""
    seen = set(stored)
    kept: list[Row] = []
    for row in rows:
        key = row_key(row, id_column)
        if key in seen:
            continue
        seen.add(key)
        kept.append(row)
    return kept, len(rows) - len(kept)

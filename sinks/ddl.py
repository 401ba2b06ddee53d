"""The ClickHouse ledger: tables generated from the Avro contract, one source of truth.

Every column of the three ledger tables comes from a field of the newest Avro schema version
(`shipledger.schemas.registry.catalog()`), typed by one mapping (`clickhouse_type`) and
commented with the field's Avro `doc`, so `DESCRIBE TABLE` documents itself. Only the ingest
columns of `deployment_events` are added here. A schema evolution that adds a field adds a
column: `LedgerStore.ensure_schema()` runs `ADD COLUMN IF NOT EXISTS` (additive only).

Tables (append-only MergeTree: the sink only INSERTs; nothing UPDATEs or DELETEs):

`deployment_events`
    Every deployment event exactly as a CI/CD system reported it, plus `received_at` (the
    Kafka timestamp of the message), `kafka_partition` and `kafka_offset`. Answers: *what did
    each pipeline report, when, and in which order?* The raw evidence for audits.
    One row per `event_id`.
`deployment_records`
    Every version of the normalized, correlated state of a deployment (one per event the
    processors handled: `seq` 1, 2, ...). Answers: *how did this deployment progress, which
    canonical environment/region/policy did it get?* One row per `record_id`.
`alerts`
    Policy findings: rule, severity, message, evidence (Map(String, String)), and the policy
    version judged under. Answers: *which deployments broke policy, by team and severity?*
    One row per `alert_id` (deterministic per event and rule).
`deployments` (view)
    The latest record of each deployment (highest `seq`): *what is deployed where, and in
    which state is each deployment now?* The table most dashboards start from.

Every table also carries the ledger columns (`LEDGER_COLUMNS`, stamped by the sink, see
`sinks.chain`): `ledger_at`, `retention_class`, `retain_until`, `prev_retain_until`,
`chain_seq`, `prev_hash`, `row_hash`. `chain_heads` records the head of every hash chain
after each flush (tail truncation is then detectable).

Layout: tenants and regions are first class. Every ORDER BY starts with `tenant`, then
`ifNull(region, '')` (region is Nullable in Avro; a sort key cannot be), then the table's own
keys (environment, service, time, id); every table is partitioned by
`(tenant, toYYYYMM(<time column>))`, so a tenant's data can be dropped, moved or exported by
partition. Low-cardinality strings (tenant, environment, service, actor, enum symbols) are
`LowCardinality`. Avro enums map to `LowCardinality(String)` rather than `Enum8`: a new enum
symbol in a later schema version must never make an insert fail.

Retention: every table has `TTL retain_until DELETE`: ClickHouse itself deletes a row once
its compliance class's period (policy `retention:`) has passed (at its next merge).

Schema changes: this module is the DESIRED state. The live schema only changes through the
numbered migrations in `sinks/migrations/` (`sinks.migrations`, `shipledger migrate`); a test
proves that applying them all to an empty ClickHouse yields exactly what this module declares.

Deduplication: each table names its id column (`event_id`, `record_id`, `alert_id`). The sink
drops ids already stored before inserting (see `sinks.sink`). An event or alert duplicate
carries the same time as its original (an id names one immutable message), so for those the
existence check is limited to the batch's time window: partition pruning plus a `minmax`
index on the time column keep it to a few granules, and a `bloom_filter` index on the id
column serves point lookups. Records are checked over the whole table (`dedup_in_time_window`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from shipledger.schemas.registry import catalog

#: Avro field names stored as LowCardinality: at most a few thousand distinct values each.
LOW_CARDINALITY = frozenset(
    {
        "tenant",
        "environment",
        "environment_raw",
        "service",
        "region",
        "kind",
        "event_type",
        "status",
        "trigger",
        "actor",
        "repository",
        "artifact_name",
        "pipeline_provider",
        "pipeline_stage",
        "last_event_type",
        "alert_rules",
        "rule",
        "severity",
        "policy_version",
    }
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATETIME_MS = "DateTime64(3, 'UTC')"


class SchemaMappingError(ValueError):
    """An Avro type with no ClickHouse column type in our mapping."""


@dataclass(frozen=True)
class Column:
    """One table column: name, ClickHouse type, comment."""

    name: str
    type: str
    comment: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One ledger table: its columns (from Avro), keys and the question it answers."""

    name: str
    schema: str
    description: str
    id_column: str
    time_column: str
    order_by: tuple[str, ...]
    columns: tuple[Column, ...]
    #: Whether the id check may be limited to the batch's time window: only when a duplicate
    #: always carries its original's time. A record recomputed after a replay may not (a late
    #: `started` moves `started_at`), so records are checked over the whole table.
    dedup_in_time_window: bool = True

    @property
    def column_names(self) -> list[str]:
        """Column names in table order."""
        return [c.name for c in self.columns]

    @property
    def column_types(self) -> list[str]:
        """ClickHouse type names in table order."""
        return [c.type for c in self.columns]

    @property
    def sort_key(self) -> tuple[str, ...]:
        """ORDER BY expressions: tenant, ifNull(region, ''), then the table's other keys."""
        types = dict(zip(self.column_names, self.column_types, strict=True))
        for lead in ("tenant", "region"):
            if lead not in types:
                raise SchemaMappingError(f"{self.name}: every ledger table needs a {lead} column")
        region = quote_ident("region")
        if "Nullable" in types["region"]:
            region = f"ifNull({region}, '')"
        rest = [quote_ident(c) for c in self.order_by if c not in ("tenant", "region")]
        return (quote_ident("tenant"), region, *rest)

    def create_sql(self, database: str | None = None, name: str | None = None) -> str:
        """`CREATE TABLE` for this table (as `name` if given), in `database` or unqualified."""
        cols = ",\n".join(
            f"    {quote_ident(c.name)} {c.type} COMMENT {quote_str(c.comment)}"
            for c in self.columns
        )
        indexes = (
            f"    INDEX idx_{self.id_column} {quote_ident(self.id_column)}"
            " TYPE bloom_filter(0.01) GRANULARITY 4,\n"
            f"    INDEX idx_{self.time_column} {quote_ident(self.time_column)}"
            " TYPE minmax GRANULARITY 1"
        )
        return (
            f"CREATE TABLE {qualified(database, name or self.name)}\n"
            f"(\n{cols},\n{indexes}\n)\n"
            "ENGINE = MergeTree\n"
            f"PARTITION BY (`tenant`, toYYYYMM({quote_ident(self.time_column)}))\n"
            f"ORDER BY ({', '.join(self.sort_key)})\n"
            f"TTL {RETENTION_TTL}\n"
            f"COMMENT {quote_str(self.description)}"
        )


def quote_ident(name: str) -> str:
    """Backquote a plain identifier; anything else is refused (no SQL built from input)."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f"`{name}`"


def qualified(database: str | None, table: str) -> str:
    """`database`.`table` (or just `table` without a database), checked identifiers."""
    if database is None:
        return quote_ident(table)
    return f"{quote_ident(database)}.{quote_ident(table)}"


def quote_str(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clickhouse_type(avro_type: Any, *, low_cardinality: bool = False) -> str:
    """The ClickHouse column type of an Avro field type (raises SchemaMappingError)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1 or len(avro_type) != 2:
            raise SchemaMappingError(f"only [null, T] unions are supported, got {avro_type}")
        inner = clickhouse_type(branches[0])
        if inner.startswith(("Map(", "Array(")):
            raise SchemaMappingError(f"ClickHouse cannot make {inner} Nullable")
        if low_cardinality and inner == "String":
            return "LowCardinality(Nullable(String))"
        return f"Nullable({inner})"
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return DATETIME_MS
        if logical == "timestamp-micros":
            return "DateTime64(6, 'UTC')"
        if kind == "enum":
            return "LowCardinality(String)"
        if kind == "map":
            return f"Map(String, {clickhouse_type(avro_type['values'])})"
        if kind == "array":
            return f"Array({clickhouse_type(avro_type['items'], low_cardinality=low_cardinality)})"
        return clickhouse_type(kind, low_cardinality=low_cardinality)
    primitive = {
        "string": "String",
        "bytes": "String",
        "int": "Int32",
        "long": "Int64",
        "float": "Float32",
        "double": "Float64",
        "boolean": "Bool",
    }.get(avro_type)
    if primitive is None:
        raise SchemaMappingError(f"no ClickHouse type for Avro type {avro_type!r}")
    if low_cardinality and primitive == "String":
        return "LowCardinality(String)"
    return primitive


def avro_columns(schema_name: str) -> tuple[Column, ...]:
    """Columns for every field of the newest version of an Avro record schema, in order."""
    raw = catalog().latest(schema_name).raw
    columns = []
    for field in raw["fields"]:
        doc = field.get("doc", "")
        if isinstance(field["type"], dict) and field["type"].get("type") == "enum":
            doc = f"{doc} One of: {', '.join(field['type']['symbols'])}.".strip()
        low_card = field["name"] in LOW_CARDINALITY
        column_type = clickhouse_type(field["type"], low_cardinality=low_card)
        columns.append(Column(name=field["name"], type=column_type, comment=doc))
    return tuple(columns)


#: Columns the sink adds to deployment_events: where and when the ledger received the event.
INGEST_COLUMNS = (
    Column("received_at", DATETIME_MS, "Kafka timestamp of the message (when it was produced)."),
    Column("kafka_partition", "Int32", "Partition of deployments.raw the event was read from."),
    Column("kafka_offset", "Int64", "Offset of the event in that partition."),
)

#: Columns the sink stamps on every row of every table (`sinks.chain`): retention and chain.
LEDGER_COLUMNS = (
    Column("ledger_at", DATETIME_MS, "When the sink stored the row (monotonic per chain)."),
    Column(
        "retention_class",
        "LowCardinality(String)",
        "Compliance class of the row (policy retention:); one hash chain per tenant and class.",
    ),
    Column(
        "retain_until",
        DATETIME_MS,
        "ledger_at + the class's period: ClickHouse deletes the row after this (TTL).",
    ),
    Column(
        "prev_retain_until",
        f"Nullable({DATETIME_MS})",
        "retain_until of the previous row of the chain: its absence is legitimate only after it.",
    ),
    Column("chain_seq", "UInt64", "Position in the chain of (table, tenant, retention_class)."),
    Column("prev_hash", "String", "row_hash of the previous row of the chain (64 zeros first)."),
    Column("row_hash", "String", "sha256 of the row's canonical bytes, prev_hash included."),
)
LEDGER_COLUMN_NAMES = frozenset(c.name for c in LEDGER_COLUMNS)
RETENTION_TTL = "`retain_until` DELETE"

EVENTS = "deployment_events"
RECORDS = "deployment_records"
ALERTS = "alerts"
DEPLOYMENTS_VIEW = "deployments"
CHAIN_HEADS = "chain_heads"


@cache
def tables() -> dict[str, TableSpec]:
    """The ledger tables by name (built from the catalog once per process)."""
    specs = [
        TableSpec(
            name=EVENTS,
            schema="io.shipledger.v1.DeploymentEvent",
            description=(
                "Deployment events exactly as CI/CD systems reported them, one row per "
                "event_id, with the Kafka position they were read from."
            ),
            id_column="event_id",
            time_column="occurred_at",
            order_by=("tenant", "environment", "service", "occurred_at", "event_id"),
            columns=avro_columns("io.shipledger.v1.DeploymentEvent") + INGEST_COLUMNS,
        ),
        TableSpec(
            name=RECORDS,
            schema="io.shipledger.v1.DeploymentRecord",
            description=(
                "Every version (seq) of the normalized state of each deployment, one row per "
                "record_id. The deployments view keeps the latest."
            ),
            id_column="record_id",
            time_column="started_at",
            order_by=("tenant", "environment", "service", "started_at", "deployment_id", "seq"),
            columns=avro_columns("io.shipledger.v1.DeploymentRecord"),
            dedup_in_time_window=False,
        ),
        TableSpec(
            name=ALERTS,
            schema="io.shipledger.v1.Alert",
            description=(
                "Policy findings about deployments, one row per alert_id (one per event and "
                "rule), with the evidence and the policy version judged under."
            ),
            id_column="alert_id",
            time_column="occurred_at",
            order_by=("tenant", "environment", "service", "occurred_at", "alert_id"),
            columns=avro_columns("io.shipledger.v1.Alert"),
        ),
    ]
    return {spec.name: replace(spec, columns=spec.columns + LEDGER_COLUMNS) for spec in specs}


def deployments_view_sql(database: str | None = None) -> str:
    """`deployments`: the latest record (highest seq) of each deployment.

    `LIMIT 1 BY` rather than `argMax(col, seq)`: argMax skips NULLs, so a field cleared in a
    later version would show its stale value.
    """
    return (
        f"CREATE VIEW {qualified(database, DEPLOYMENTS_VIEW)} AS\n"
        f"SELECT * FROM {qualified(database, RECORDS)}\n"
        "ORDER BY seq DESC, updated_at DESC\n"
        "LIMIT 1 BY tenant, deployment_id"
    )


def chain_heads_sql(database: str | None = None, name: str = CHAIN_HEADS) -> str:
    """`chain_heads`: the head of each chain after every flush of the sink (append-only)."""
    return (
        f"CREATE TABLE {qualified(database, name)}\n"
        "(\n"
        "    `table` LowCardinality(String) COMMENT 'Ledger table of the chain.',\n"
        "    `tenant` LowCardinality(String) COMMENT 'Tenant of the chain.',\n"
        "    `retention_class` LowCardinality(String) COMMENT 'Retention class of the chain.',\n"
        "    `chain_seq` UInt64 COMMENT 'chain_seq of the head row after the flush.',\n"
        "    `row_hash` String COMMENT 'row_hash of that row.',\n"
        f"    `retain_until` {DATETIME_MS} COMMENT 'retain_until of that row.',\n"
        f"    `at` {DATETIME_MS} COMMENT 'When the flush recorded it.'\n"
        ")\n"
        "ENGINE = MergeTree\n"
        "ORDER BY (`table`, `tenant`, `retention_class`, `chain_seq`)\n"
        f"TTL {RETENTION_TTL}\n"
        "COMMENT 'Chain heads after each sink flush: a truncated chain tail is detectable.'"
    )


#: The ledger's views by name: `(database | None) -> CREATE VIEW`.
VIEWS = {DEPLOYMENTS_VIEW: deployments_view_sql}


def desired_schema(database: str | None = None) -> dict[str, str]:
    """Every object of the ledger by name -> its CREATE statement, in creation order: tables,
    `chain_heads`, then views. The desired state migrations must reproduce exactly."""
    names = [*tables(), CHAIN_HEADS, *VIEWS]
    return {name: create_statement(name, database) for name in names}


def create_statement(name: str, database: str | None = None, as_name: str | None = None) -> str:
    """The desired CREATE statement of ledger table or view `name` (created as `as_name`)."""
    if name in tables():
        return tables()[name].create_sql(database, as_name)
    if name == CHAIN_HEADS:
        return chain_heads_sql(database, as_name or name)
    if name in VIEWS and as_name is None:
        return VIEWS[name](database)
    raise KeyError(f"no ledger table or view {name!r}")


def view_statements(database: str) -> list[str]:
    """The ledger's views over the tables of `database` (also built over the hot+cold union
    in the query database, see `sinks.tiers`)."""
    return [view(database) for view in VIEWS.values()]

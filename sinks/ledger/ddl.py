"""The ClickHouse ledger: tables generated from the Avro contract, one source of truth.

Which tables exist, and the schema of each, is the catalog's (`schemas/catalog.yaml`: every
topic with a `table:`): the pipeline's own tables are laid out below, each family's event
table by its catalog entry (`family_table`). Every column of the ledger tables comes from a
field of the newest Avro schema version (`shipledger.schemas.registry.catalog()`), typed by
one mapping (`clickhouse_type`) and commented with the field's Avro `doc`, so `DESCRIBE
TABLE` documents itself. Only the ingest columns of `deployment_events` and the ledger
columns below are added here. The family tables (change, source, artifact, signal, catalog
events) and the relational views are described in docs/model.md and in each view function's
docstring.

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
    version judged under; and their resolutions (`kind = 'resolution'`, naming the alert in
    `resolves`: a finding that no longer holds is never edited). Answers: *which deployments
    broke policy, by team and severity?* One row per `alert_id` (deterministic per event, rule
    and generation; a resolution's per resolved alert). The `open_alerts` view keeps the
    findings no resolution names.
`deployments` (view)
    The latest record of each deployment (highest `seq`): *what is deployed where, and in
    which state is each deployment now?* The table most dashboards start from.

Every table also carries the ledger columns (`LEDGER_COLUMNS`, stamped by the sink, see
`sinks.chain`): `ledger_at`, `retention_class`, `retain_until`, `prev_retain_until`,
`chain_seq`, `prev_hash`, `row_hash`. `chain_heads` records the head of every hash chain
after each flush (tail truncation is then detectable). Every row names the policy that shaped
it in `policy_version`: alerts and records the policy they were judged under (their own
field); every other table's rows the policy whose `retention:` stamped them (`POLICY_VERSION`,
stamped by the sink; empty on rows stored before migration 0006). `TableSpec.stamped` lists
the columns the sink stamps.

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
numbered migrations in `sinks/ledger/migrations/` (`shipledger migrate`); a test
proves that applying them all to an empty ClickHouse yields exactly what this module declares.

Deduplication: each table names its id column (`event_id`, `record_id`, `alert_id`). The sink
drops ids already stored before inserting (see `sinks.sink`), over the whole table (hot and
cold): a `bloom_filter` index on the id column serves the point lookups. An event's time is
not part of its identity: a client that leaves `occurred_at` to the API (filled in as "now")
and retries after a lost answer sends the same event_id with a later time, in another month's
partition perhaps. Only alerts, whose ids and times the processors derive from the judged
event, limit the check to the batch's time window (`dedup_in_time_window`): partition pruning
plus a `minmax` index on the time column keep it to a few granules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from shipledger.schemas.family_models import APPROVAL_SOURCE
from shipledger.schemas.registry import catalog
from shipledger.schemas.topic_spec import TopicSpec

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
        "team",
        "source",
        "system",
        "state",
        "risk",
        "entity",
        "action",
        "owner_team",
        "tier",
        "application",
        "change_state",
        "builder",
        "outcome",
        "route",
        "receiver",
        "receiver_type",
    }
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATETIME_MS = "DateTime64(3, 'UTC')"
_NULLABLE_MS = f"Nullable({DATETIME_MS})"


class SchemaMappingError(ValueError):
    """An Avro type with no ClickHouse column type in our mapping."""


@dataclass(frozen=True)
class Column:
    """One table column: name, ClickHouse type, comment, and a compression codec if not the
    default (LZ4)."""

    name: str
    type: str
    comment: str = ""
    codec: str = ""

    @property
    def holds_datetime(self) -> bool:
        """Whether the column holds datetimes (`DateTime64`, maybe Nullable): the hash chain
        covers them as epoch milliseconds (`chain.canonical_bytes`, `audit`)."""
        return self.type.startswith(("DateTime64", "Nullable(DateTime64"))

    @property
    def holds_millis(self) -> bool:
        """Whether the column stores epoch milliseconds (`DateTime64(3)`, maybe Nullable)."""
        return self.type in (DATETIME_MS, _NULLABLE_MS)

    def definition(self) -> str:
        """`name Type [CODEC(...)] COMMENT '...'`, as in CREATE TABLE and ADD/MODIFY COLUMN."""
        codec = f" CODEC({self.codec})" if self.codec else ""
        return f"{quote_ident(self.name)} {self.type}{codec} COMMENT {quote_str(self.comment)}"


@dataclass(frozen=True)
class TableSpec:
    """One ledger table: its columns (from Avro, or declared here for the one table that has
    no schema of its own, `dead_letters`), keys and the question it answers."""

    name: str
    #: Avro schema the columns come from; None: declared in this module.
    schema: str | None
    description: str
    id_column: str
    time_column: str
    order_by: tuple[str, ...]
    columns: tuple[Column, ...]
    #: Whether the id check may be limited to the batch's time window: only when a duplicate
    #: always carries its original's time, as an alert does (its id and time are derived from
    #: the judged event). An event resent without `occurred_at` gets the API's "now" again; a
    #: record recomputed after a replay may move (a late `started` moves `started_at`), and a
    #: dead letter made again after a crash carries its new time.
    dedup_in_time_window: bool = False
    #: Columns the sink stamps when it stores a row, not taken from the message (`tables()`).
    stamped: frozenset[str] = frozenset()

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
        rest = [self.order_term(c) for c in self.order_by if c not in ("tenant", "region")]
        return (quote_ident("tenant"), self.order_term("region"), *rest)

    def order_term(self, column: str) -> str:
        """A sorting-key term: the column, or `ifNull(column, '')` for a nullable string (a
        MergeTree key cannot be Nullable, and events without a region still sort together)."""
        types = dict(zip(self.column_names, self.column_types, strict=True))
        if "Nullable(" in types[column]:
            return f"ifNull({quote_ident(column)}, '')"
        return quote_ident(column)

    def create_sql(self, database: str | None = None, name: str | None = None) -> str:
        """`CREATE TABLE` for this table (as `name` if given), in `database` or unqualified."""
        cols = ",\n".join(f"    {c.definition()}" for c in self.columns)
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
        if inner.startswith(("Map(", "Array(", "Tuple(")):
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
        if kind == "record":
            # A named tuple: `approvals.approver` reads like a nested column in queries. Names
            # unquoted, as system.columns reports them (ensure_schema compares types).
            elements = ", ".join(
                f"{quote_ident(f['name']).strip('`')} "
                f"{clickhouse_type(f['type'], low_cardinality=f['name'] in LOW_CARDINALITY)}"
                for f in avro_type["fields"]
            )
            return f"Tuple({elements})"
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
HASH_CODEC = "ZSTD(3)"
LEDGER_COLUMNS = (
    Column("ledger_at", DATETIME_MS, "When the sink stored the row (monotonic per chain)."),
    Column(
        "retention_class",
        "LowCardinality(String)",
        "Compliance class of the row (policy retention:); one hash chain per tenant, class and "
        "lane.",
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
    Column(
        "chain_seq", "UInt64", "Position in the chain of (table, tenant, retention_class, lane)."
    ),
    # Hex hashes are 4 bits of entropy per byte, which LZ4 cannot exploit: ZSTD halves them
    # (measured: 64 -> 33 bytes per row each), a third of a deployment event's bytes on disk.
    Column(
        "prev_hash",
        "String",
        "row_hash of the previous row of the chain (64 zeros first).",
        codec=HASH_CODEC,
    ),
    Column(
        "row_hash",
        "String",
        "sha256 of the row's canonical bytes, prev_hash included.",
        codec=HASH_CODEC,
    ),
    Column(
        "chain_lane",
        "LowCardinality(String)",
        "Lane of the chain: p<N> for partition N of the table's topic (one sink writes it at a "
        "time), import, or empty (the legacy lane: rows stored before migration 0023).",
    ),
)
LEDGER_COLUMN_NAMES = frozenset(c.name for c in LEDGER_COLUMNS)
#: The policy that shaped a row, stamped by the sink on the tables whose messages do not name
#: one (alerts and records carry the version they were judged under).
POLICY_VERSION = Column(
    "policy_version",
    "LowCardinality(String)",
    "The policy (version+digest) whose retention: stamped this row (empty on rows stored "
    "before migration 0006).",
)
RETENTION_TTL = "`retain_until` DELETE"

EVENTS = "deployment_events"
RECORDS = "deployment_records"
ALERTS = "alerts"
DEPLOYMENTS_VIEW = "deployments"
CHAIN_HEADS = "chain_heads"
CHANGES = "change_events"
SOURCE = "source_events"
ARTIFACTS = "artifact_events"
SIGNALS = "signal_events"
CATALOG = "catalog_events"
DEAD_LETTERS = "dead_letters"

#: `dead_letters`: the DLQ topic's letters, kept in the ledger (the embedded broker forgets
#: its topics on a crash; the restore of `up` counts a letter as the end of its event).
DEAD_LETTER_COLUMNS = (
    Column(
        "letter_id",
        "String",
        "Stable id of the letter: what was rejected (source topic, key, value, replay origin).",
    ),
    Column(
        "tenant",
        "LowCardinality(String)",
        "Tenant of the rejected message (its payload's, else its tenant/... key's; may be empty).",
    ),
    Column(
        "region",
        "LowCardinality(Nullable(String))",
        "Region named by the payload, if it could be read.",
    ),
    Column("dead_lettered_at", DATETIME_MS, "When it was dead-lettered (the letter's Kafka time)."),
    Column("stage", "LowCardinality(String)", "Who rejected it: processors or sink."),
    Column("reason", "String", "Why it was rejected."),
    Column("field", "Nullable(String)", "The field at fault, if one was named."),
    Column("source_topic", "LowCardinality(String)", "Topic the message was read from."),
    Column("source_partition", "Int32", "Its partition there."),
    Column("source_offset", "Int64", "Its offset there."),
    Column(
        "replayed_from",
        "Nullable(String)",
        "The letter (PARTITION:OFFSET) a `shipledger dlq replay` sent it again from, if so.",
    ),
    Column("event_id", "Nullable(String)", "event_id of the payload, if it could be read."),
    Column(
        "payload",
        "Nullable(String)",
        "The payload as JSON, when it decodes with its topic's schema.",
    ),
    Column("key_base64", "Nullable(String)", "The original key, base64."),
    Column("value_base64", "Nullable(String)", "The original value, base64."),
)


def _events_table(schema: str) -> TableSpec:
    return TableSpec(
        name=EVENTS,
        schema=schema,
        description=(
            "Deployment events exactly as CI/CD systems reported them, one row per "
            "event_id, with the Kafka position they were read from."
        ),
        id_column="event_id",
        time_column="occurred_at",
        order_by=("tenant", "environment", "service", "occurred_at", "event_id"),
        columns=avro_columns(schema) + INGEST_COLUMNS,
    )


def _records_table(schema: str) -> TableSpec:
    return TableSpec(
        name=RECORDS,
        schema=schema,
        description=(
            "Every version (seq) of the normalized state of each deployment, one row per "
            "record_id. The deployments view keeps the latest."
        ),
        id_column="record_id",
        time_column="started_at",
        order_by=("tenant", "environment", "service", "started_at", "deployment_id", "seq"),
        columns=avro_columns(schema),
    )


def _alerts_table(schema: str) -> TableSpec:
    return TableSpec(
        name=ALERTS,
        schema=schema,
        description=(
            "Policy findings about deployments and their resolutions (kind), one row per "
            "alert_id, with the evidence and the policy version judged under."
        ),
        id_column="alert_id",
        time_column="occurred_at",
        order_by=("tenant", "environment", "service", "occurred_at", "alert_id"),
        columns=avro_columns(schema),
        dedup_in_time_window=True,
    )


#: The pipeline's own tables, laid out here (the catalog names them and their schemas);
#: every other stored topic's table is a family table laid out by the catalog.
_DECLARED: dict[str, Callable[[str], TableSpec]] = {
    EVENTS: _events_table,
    RECORDS: _records_table,
    ALERTS: _alerts_table,
}


def _dead_letters_table() -> TableSpec:
    return TableSpec(
        name=DEAD_LETTERS,
        schema=None,
        description=(
            "Messages the pipeline rejected (dead letters), one row per letter_id, with "
            "why, where they were read and their original bytes."
        ),
        id_column="letter_id",
        time_column="dead_lettered_at",
        order_by=("tenant", "region", "source_topic", "dead_lettered_at", "letter_id"),
        columns=DEAD_LETTER_COLUMNS,
    )


def family_table(topic: TopicSpec) -> TableSpec:
    """A family's event table, laid out by its catalog entry: one row per event_id, sorted by
    tenant, region, the family's natural key and time."""
    assert topic.table is not None, f"topic {topic.name} is not stored"
    if not topic.table.natural_key or not topic.table.description:
        raise SchemaMappingError(
            f"catalog topic {topic.name}: table {topic.table.name} is not laid out in ddl.py, "
            "so its catalog entry needs table.natural_key and table.description"
        )
    return TableSpec(
        name=topic.table.name,
        schema=topic.schema_name,
        description=topic.table.description,
        id_column="event_id",
        time_column="occurred_at",
        order_by=("tenant", "region", *topic.table.natural_key, "occurred_at", "event_id"),
        columns=avro_columns(topic.schema_name),
    )


def _table(topic: TopicSpec) -> TableSpec:
    """The table the sink stores `topic` in, with the catalog's schema for it."""
    assert topic.table is not None, f"topic {topic.name} is not stored"
    if topic.value_schema is None:
        if topic.table.name != DEAD_LETTERS:
            raise SchemaMappingError(f"catalog topic {topic.name} has a table but no schema")
        return _dead_letters_table()
    declared = _DECLARED.get(topic.table.name)
    if declared is None:
        return family_table(topic)
    if topic.table.natural_key or topic.table.description:
        raise SchemaMappingError(
            f"catalog topic {topic.name}: table {topic.table.name} is laid out in ddl.py; "
            "remove table.natural_key and table.description from its catalog entry"
        )
    return declared(topic.value_schema)


@cache
def tables() -> dict[str, TableSpec]:
    """The ledger tables by name, one per stored catalog topic in catalog order (built once
    per process)."""
    specs = [_table(topic) for topic in catalog().topics.values() if topic.table is not None]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise SchemaMappingError(f"catalog topics share a ledger table: {sorted(names)}")
    return {spec.name: _with_stamped_columns(spec) for spec in specs}


def _with_stamped_columns(spec: TableSpec) -> TableSpec:
    """`spec` with the columns the sink stamps: the policy version unless the message carries
    its own, then the ledger columns."""
    own = () if POLICY_VERSION.name in spec.column_names else (POLICY_VERSION,)
    added = own + LEDGER_COLUMNS
    return replace(spec, columns=spec.columns + added, stamped=frozenset(c.name for c in added))


def deployments_view_sql(database: str | None = None) -> str:
    """`deployments`: *what is deployed where, and in which state is each deployment now?*
    The latest record (highest seq) of each deployment.

    `LIMIT 1 BY` rather than `argMax(col, seq)`: argMax skips NULLs, so a field cleared in a
    later version would show its stale value.
    """
    return (
        f"CREATE VIEW {qualified(database, DEPLOYMENTS_VIEW)} AS\n"
        f"SELECT * FROM {qualified(database, RECORDS)}\n"
        "ORDER BY seq DESC, updated_at DESC\n"
        "LIMIT 1 BY tenant, deployment_id"
    )


def _view(database: str | None, name: str, select: str) -> str:
    """`CREATE VIEW` around `select`. The view SELECTs are built only from
    identifiers checked by `qualified` and literals quoted by `quote_str` (hence the S608
    waivers): never from input."""
    return f"CREATE VIEW {qualified(database, name)} AS\n{select}"


def _materialized_view(database: str | None, name: str, target: str, select: str) -> str:
    """`CREATE MATERIALIZED VIEW` `name`: `select` over each insert, written to `target`."""
    return (
        f"CREATE MATERIALIZED VIEW {qualified(database, name)}"
        f" TO {qualified(database, target)} AS\n{select}"
    )


def releases_view_sql(database: str | None = None) -> str:
    """`releases`: *which versions of each service shipped, from which commit and artifact,
    when first and last, and to which environments?* One row per tenant, service and version,
    from succeeded deployments."""
    return _view(
        database,
        "releases",
        "SELECT tenant, service, assumeNotNull(version) AS version,\n"
        "    argMin(commit_sha, started_at) AS commit_sha,\n"
        "    argMin(artifact_digest, started_at) AS artifact_digest,\n"
        "    min(started_at) AS first_deployed_at,\n"
        "    max(started_at) AS last_deployed_at,\n"
        "    arraySort(groupUniqArray(environment)) AS environments,\n"
        "    count() AS deployments\n"
        f"FROM {qualified(database, DEPLOYMENTS_VIEW)}\n"
        "WHERE status = 'succeeded' AND version IS NOT NULL\n"
        "GROUP BY tenant, service, version",
    )


def change_requests_view_sql(database: str | None = None) -> str:
    """`change_requests`: *what is the current state of each change request, with its
    window and approvals?* The latest event per tenant and change_id as its system reported
    it, with every approval decision reported or recorded (`POST /v1/approvals` events,
    source `approval`, add approvals, not revisions), oldest first."""
    changes, recorded = qualified(database, CHANGES), quote_str(APPROVAL_SOURCE)
    return _view(
        database,
        "change_requests",
        "SELECT c.tenant AS tenant, c.change_id AS change_id, c.system AS system,\n"  # noqa: S608
        "    c.state AS state, c.title AS title, c.risk AS risk, c.services AS services,\n"
        "    c.environments AS environments, c.planned_start AS planned_start,\n"
        "    c.planned_end AS planned_end, a.approvals AS approvals, c.url AS url,\n"
        "    c.actor AS actor, c.requested_by AS requested_by, c.occurred_at AS updated_at\n"
        f"FROM (SELECT * FROM {changes} WHERE ifNull(source, '') != {recorded}\n"
        "    ORDER BY occurred_at DESC, event_id DESC LIMIT 1 BY tenant, change_id) AS c\n"
        "LEFT JOIN (SELECT tenant, change_id,\n"
        "    arraySort(x -> x.decided_at, groupUniqArrayArray(approvals)) AS approvals\n"
        f"    FROM {changes} GROUP BY tenant, change_id) AS a\n"
        "    ON c.tenant = a.tenant AND c.change_id = a.change_id",
    )


def deployment_changes_view_sql(database: str | None = None) -> str:
    """`deployment_changes`: *was each deployment covered by an approved change request, and
    who approved it?* Every deployment with the state and approvals of the change request it
    names (joined on tenant and change_id); `change_found` is 0 when no such request was
    reported (then the change columns hold empty values)."""
    return _view(
        database,
        "deployment_changes",
        "SELECT d.tenant AS tenant, d.deployment_id AS deployment_id, d.service AS service,\n"
        "    d.environment AS environment, d.region AS region, d.status AS status,\n"
        "    d.started_at AS started_at, d.finished_at AS finished_at, d.actor AS actor,\n"
        "    d.approvers AS deployment_approvers, d.change_id AS change_id,\n"
        "    c.change_id != '' AS change_found, c.state AS change_state,\n"
        "    c.approvals AS change_approvals, c.planned_start AS planned_start,\n"
        "    c.planned_end AS planned_end, c.system AS change_system\n"
        f"FROM {qualified(database, DEPLOYMENTS_VIEW)} AS d\n"
        f"LEFT JOIN {qualified(database, 'change_requests')} AS c\n"
        "    ON d.tenant = c.tenant AND d.change_id = c.change_id",
    )


def _catalog_latest(database: str | None, entity: str) -> str:
    """The latest catalog event per tenant and name of one entity kind (a subquery)."""
    return (
        "SELECT tenant, name, owner_team, application, tier, repository, dependencies, url,\n"  # noqa: S608
        "        action, occurred_at\n"
        f"    FROM {qualified(database, CATALOG)} WHERE entity = {quote_str(entity)}\n"
        "    ORDER BY occurred_at DESC, event_id DESC LIMIT 1 BY tenant, name"
    )


def services_view_sql(database: str | None = None) -> str:
    """`services`: *which services exist, who owns them, which application are they part of,
    and when were they last deployed?* The latest catalog entry of each service, plus services
    seen only in deployments (`in_catalog` = 0); owner and repository fall back to what the
    latest deployment named."""
    return _view(
        database,
        "services",
        "SELECT tenant, name AS service,\n"  # noqa: S608
        "    if(c.owner_team IS NOT NULL, c.owner_team, d.team) AS owner_team,\n"
        "    c.application AS application, c.tier AS tier,\n"
        "    if(c.repository IS NOT NULL, c.repository, d.repository) AS repository,\n"
        "    c.dependencies AS dependencies, c.url AS url,\n"
        "    c.action != '' AS in_catalog, c.action = 'removed' AS removed,\n"
        "    d.deployments AS deployments, d.last_deployed_at AS last_deployed_at\n"
        f"FROM ({_catalog_latest(database, 'service')}) AS c\n"
        "FULL OUTER JOIN (\n"
        "    SELECT tenant, toString(service) AS name, argMax(team, started_at) AS team,\n"
        "        argMax(repository, started_at) AS repository, count() AS deployments,\n"
        "        max(started_at) AS last_deployed_at\n"
        f"    FROM {qualified(database, DEPLOYMENTS_VIEW)} GROUP BY tenant, name\n"
        ") AS d USING (tenant, name)",
    )


def environments_view_sql(database: str | None = None) -> str:
    """`environments`: *which environments exist, in which regions, and how much is deployed
    to each?* The latest catalog entry of each environment, plus canonical environments seen
    only in deployments (`in_catalog` = 0)."""
    return _view(
        database,
        "environments",
        "SELECT tenant, name AS environment, c.owner_team AS owner_team, c.tier AS tier,\n"  # noqa: S608
        "    c.url AS url, c.action != '' AS in_catalog, c.action = 'removed' AS removed,\n"
        "    d.regions AS regions, d.services AS services, d.deployments AS deployments,\n"
        "    d.last_deployed_at AS last_deployed_at\n"
        f"FROM ({_catalog_latest(database, 'environment')}) AS c\n"
        "FULL OUTER JOIN (\n"
        "    SELECT tenant, toString(environment) AS name,\n"
        "        arraySort(groupUniqArray(region)) AS regions, uniqExact(service) AS services,\n"
        "        count() AS deployments, max(started_at) AS last_deployed_at\n"
        f"    FROM {qualified(database, DEPLOYMENTS_VIEW)} GROUP BY tenant, name\n"
        ") AS d USING (tenant, name)",
    )


def commits_view_sql(database: str | None = None) -> str:
    """`commits`: *when was each commit first seen, in which repository, by whom?* One row
    per tenant, repository and SHA named by a source event (`commit_sha` or `commit_shas`)."""
    return _view(
        database,
        "commits",
        "SELECT tenant, repository, sha, min(occurred_at) AS first_seen_at,\n"  # noqa: S608
        "    argMin(author, occurred_at) AS author,\n"
        "    arraySort(groupUniqArray(ref)) AS refs, count() AS events\n"
        "FROM (\n"
        "    SELECT tenant, repository, occurred_at, author, ref,\n"
        "        arrayJoin(arrayDistinct(arrayConcat(commit_shas,\n"
        "            if(commit_sha IS NULL, [], [assumeNotNull(commit_sha)])))) AS sha\n"
        f"    FROM {qualified(database, SOURCE)}\n"
        ")\n"
        "GROUP BY tenant, repository, sha",
    )


def pull_requests_view_sql(database: str | None = None) -> str:
    """`pull_requests`: *which pull requests were merged, when, by whom, as which commit?*
    The latest `pull_request_merged` event per tenant, repository and number."""
    return _view(
        database,
        "pull_requests",
        "SELECT tenant, repository, assumeNotNull(pull_request_number) AS number,\n"
        "    pull_request_title AS title, pull_request_url AS url, author, merged_by,\n"
        "    commit_sha AS merge_commit_sha, commit_shas, occurred_at AS merged_at\n"
        f"FROM {qualified(database, SOURCE)}\n"
        "WHERE kind = 'pull_request_merged' AND pull_request_number IS NOT NULL\n"
        "ORDER BY occurred_at DESC, event_id DESC\n"
        "LIMIT 1 BY tenant, repository, number",
    )


#: The artifact events that publish a build: action `published`, or none (a row stored
#: before ArtifactEvent v2, whose every event was a publication).
PUBLISHED = "action IN ('published', '')"


def artifacts_view_sql(database: str | None = None) -> str:
    """`artifacts`: *which artifacts were published, with which digest, from which commit,
    by which builder, with which provenance (SLSA)?* The latest publication per tenant,
    artifact name and digest (the version when no digest was reported); registry deletions
    are in `artifact_deletions`. (Rows stored before migration 0013 have no action: all
    of them are publications.)"""
    return _view(
        database,
        "artifacts",
        "SELECT tenant, artifact_name, version, digest, repository, commit_sha, builder, url,\n"
        "    provenance_url, registry, occurred_at AS published_at\n"
        f"FROM {qualified(database, ARTIFACTS)}\n"
        f"WHERE {PUBLISHED}\n"
        "ORDER BY occurred_at DESC, event_id DESC\n"
        "LIMIT 1 BY tenant, artifact_name, ifNull(digest, ifNull(version, ''))",
    )


def artifact_deletions_view_sql(database: str | None = None) -> str:
    """`artifact_deletions`: *which artifacts did a registry delete, when, and why (by
    hand, or its retention policy)?* One row per deletion event."""
    return _view(
        database,
        "artifact_deletions",
        "SELECT tenant, artifact_name, version, digest, registry, action, source,\n"
        "    occurred_at AS deleted_at, event_id\n"
        f"FROM {qualified(database, ARTIFACTS)}\n"
        f"WHERE NOT {PUBLISHED}",
    )


def running_at_view_sql(database: str | None = None) -> str:
    """`running_at(at=...)`: *what ran where at time T?* A parameterized view: per tenant,
    service, environment and region, the last succeeded deployment started before `at`
    (UTC), e.g. `SELECT * FROM running_at(at = '2026-11-25 10:00:00')`."""
    return _view(
        database,
        "running_at",
        "SELECT tenant, service, environment, region, deployment_id, version, commit_sha,\n"
        "    artifact_name, artifact_digest, started_at, finished_at, actor, change_id\n"
        f"FROM {qualified(database, DEPLOYMENTS_VIEW)}\n"
        "WHERE status = 'succeeded' AND started_at < {at:DateTime64(3, 'UTC')}\n"
        "ORDER BY started_at DESC, deployment_id DESC\n"
        "LIMIT 1 BY tenant, service, environment, region",
    )


def open_alerts_view_sql(database: str | None = None) -> str:
    """`open_alerts`: *which findings still hold?* Every alert that no resolution row names in
    `resolves`. Alerts are never edited: a change-rule alert that no longer holds after its
    deployment was judged again gets a resolution row instead. (`kind != 'resolution'`: rows
    stored before migration 0007 have an empty kind.)"""
    alerts = qualified(database, ALERTS)
    return _view(
        database,
        "open_alerts",
        f"SELECT * FROM {alerts}\n"  # noqa: S608
        "WHERE kind != 'resolution' AND (tenant, alert_id) NOT IN (\n"
        f"    SELECT tenant, assumeNotNull(resolves) FROM {alerts} WHERE kind = 'resolution'\n"
        ")",
    )


def change_window_discrepancies_view_sql(database: str | None = None) -> str:
    """`change_window_discrepancies`: *which deployments started outside their change
    request's planned window, by how much?* For process review: every deployment (latest
    record) whose start was off its request's planned window as it stood at the start
    (`outside_window_s`: negative early, positive late), whether or not the tolerance let an
    `outside_change_window` alert fire."""
    return _view(
        database,
        "change_window_discrepancies",
        "SELECT tenant, deployment_id, service, application, team, environment, region,\n"
        "    change_id, change_state, status, started_at, planned_start, planned_end,\n"
        "    outside_window_s, if(outside_window_s < 0, 'early', 'late') AS direction,\n"
        "    has(alert_rules, 'outside_change_window') AS alerted\n"
        f"FROM {qualified(database, DEPLOYMENTS_VIEW)}\n"
        "WHERE outside_window_s IS NOT NULL AND outside_window_s != 0",
    )


#: The relational views by name, each after the views it reads.
VIEWS: dict[str, Callable[[str | None], str]] = {
    DEPLOYMENTS_VIEW: deployments_view_sql,
    "releases": releases_view_sql,
    "change_requests": change_requests_view_sql,
    "deployment_changes": deployment_changes_view_sql,
    "services": services_view_sql,
    "environments": environments_view_sql,
    "commits": commits_view_sql,
    "pull_requests": pull_requests_view_sql,
    "artifacts": artifacts_view_sql,
    "artifact_deletions": artifact_deletions_view_sql,
    "running_at": running_at_view_sql,
    "open_alerts": open_alerts_view_sql,
    "change_window_discrepancies": change_window_discrepancies_view_sql,
}


# --- DORA aggregates (docs/metrics.md): maintained by materialized views at insert ----------

DORA_DEPLOYMENTS = "dora_deployments"
DORA_COMMITS = "dora_commits"
DORA_DEPLOYMENT_KEYS = "dora_deployment_keys"
#: Deployment kinds that remediate a failure rather than ship a change (docs/metrics.md).
REMEDIATION_KINDS = ("rollback", "hotfix", "emergency_patch")

# Every column is a max or a min keyed by deployment id, so a deployment that several records
# describe (every stage, retries, re-judgements) is one row once merged, and a row inserted
# twice (a replay, a restore from cold storage) changes nothing: the aggregates are idempotent.
# Plain columns rather than per-group maps: a report reads a team's quarter as a scan of its
# sort-key range and two GROUP BYs inside ClickHouse, never a merge of maps in Python.
_DORA_DEPLOYMENT_COLUMNS = (
    ("tenant", "LowCardinality(String)", "Tenant."),
    ("team", "LowCardinality(String)", "Owner team of the record's deployment ('' when unknown)."),
    ("environment", "LowCardinality(String)", "Canonical environment."),
    ("application", "LowCardinality(String)", "Application of the service ('' when unknown)."),
    ("service", "LowCardinality(String)", "Service."),
    ("day", "Date", "UTC day the record's deployment started."),
    (
        "deployment_id",
        "String",
        "The deployment the facts are about: the record's own, or the one a remediation names "
        "in rollback_of (a second row, filed under that deployment's team, environment, "
        "service, application and day when known at insert, else under the remediation's).",
    ),
    ("own", "SimpleAggregateFunction(max, UInt8)", "1: the deployment's own record."),
    (
        "change",
        "SimpleAggregateFunction(max, UInt8)",
        "1: a change deployment (not a remediation: kind rollback, hotfix, emergency_patch, "
        "or a rollback_of).",
    ),
    ("remediation", "SimpleAggregateFunction(max, UInt8)", "1: a remediation deployment."),
    (
        "outcome",
        "SimpleAggregateFunction(max, UInt64)",
        "Change deployments: 2 * seq + 1 if that record was failed or rolled_back (the latest "
        "record decides: odd = failed).",
    ),
    (
        "remediated",
        "SimpleAggregateFunction(max, UInt8)",
        "1: a remediation names this deployment in rollback_of.",
    ),
    (
        "failed_at",
        f"SimpleAggregateFunction(min, {_NULLABLE_MS})",
        "When it failed: its failed record's finished_at, or the start of a remediation naming it.",
    ),
    (
        "restored_at",
        f"SimpleAggregateFunction(min, {_NULLABLE_MS})",
        "When service was restored: its rolled_back record's finished_at, or the finish of a "
        "succeeded remediation naming it.",
    ),
    (
        "deployed_at",
        f"SimpleAggregateFunction(min, {_NULLABLE_MS})",
        "Change deployments: finished_at of the first succeeded record (running there).",
    ),
    ("commit_sha", "SimpleAggregateFunction(max, String)", "Change deployments: commit shipped."),
    (
        "seen_at",
        f"SimpleAggregateFunction(min, {_NULLABLE_MS})",
        "Succeeded change deployments: when the commit was first seen (dora_commits), as known "
        "when the record was inserted.",
    ),
)


def _column_list(columns: tuple[tuple[str, str, str], ...]) -> str:
    """The column lines of a CREATE TABLE from (name, type, comment) triples."""
    return ",\n".join(f"    {quote_ident(n)} {t} COMMENT {quote_str(c)}" for n, t, c in columns)


def dora_deployments_sql(database: str | None = None) -> str:
    """`dora_deployments`: *per deployment, was it a change or a remediation, did it fail, when
    was it restored, when did it run and what did it ship?* Filed under the tenant, team,
    environment, service, application and day, so a report reads a sort-key range
    (`sinks.ledger.dora`)."""
    return (
        f"CREATE TABLE {qualified(database, DORA_DEPLOYMENTS)}\n"
        f"(\n{_column_list(_DORA_DEPLOYMENT_COLUMNS)}\n)\n"
        "ENGINE = AggregatingMergeTree\n"
        "PARTITION BY toYYYYMM(`day`)\n"
        "ORDER BY (`tenant`, `team`, `environment`, `service`, `application`, `day`, "
        "`deployment_id`)\n"
        "COMMENT 'DORA facts per deployment (maintained by dora_deployments_mv; "
        "docs/metrics.md).'"
    )


#: Where a deployment's own facts are filed in `dora_deployments`, from a record (or a block).
_DEPLOYMENT_KEY = (
    "SELECT tenant, deployment_id, ifNull(team, '') AS team, environment, service,\n"
    "    ifNull(application, '') AS application, toDate(started_at) AS day"
)


def dora_deployments_select(database: str | None, records: str) -> str:
    """The SELECT folding deployment records (`records`: the table, or the block a view is
    fed) into `dora_deployments` rows: the materialized view's, and a backfill's.

    A remediation's facts about the deployment it names are filed under that deployment's
    key (`dora_deployment_keys`, or its records in the same block), so a report of its team
    reads them beside its own row and the table's merges fold them into one; a deployment
    not yet known (its records arrive later) gets them under the remediation's key, which a
    report still merges by deployment id (`sinks.ledger.dora.facts_sql`)."""
    kinds = ", ".join(quote_str(k) for k in REMEDIATION_KINDS)
    change = "role = 0 AND NOT remedy"
    finished = "ifNull(finished_at, updated_at)"
    named = (
        f"SELECT tenant, assumeNotNull(rollback_of) FROM {records}"  # noqa: S608
        " WHERE rollback_of IS NOT NULL"
    )

    # The remediation's own row, and a row naming a deployment not known: the record's key.
    own = {
        "team": "ifNull(team, '')",
        "environment": "environment",
        "service": "service",
        "application": "ifNull(application, '')",
        "day": "toDate(started_at)",
    }  # in _DEPLOYMENT_KEY's order: the UNION below is by position
    keys = ",\n    ".join(
        f"if(role = 1 AND t_known = 1, t_{c}, {o}) AS {c}" for c, o in own.items()
    )
    # Column names bare: migration SQL backquotes table names only (`sinks.ledger.cluster`).
    found = ", ".join(f"{'min' if c == 'day' else 'any'}({c}) AS t_{c}" for c in own)
    return (
        f"SELECT tenant,\n    {keys},\n"  # noqa: S608
        "    if(role = 0, deployment_id, assumeNotNull(rollback_of)) AS deployment_id,\n"
        "    toUInt8(role = 0) AS own, toUInt8(role = 0 AND NOT remedy) AS change,\n"
        "    toUInt8(role = 0 AND remedy) AS remediation,\n"
        f"    if({change}, toUInt64(seq) * 2 + (status IN ('failed', 'rolled_back')), 0)"
        " AS outcome,\n"
        "    toUInt8(role = 1) AS remediated,\n"
        f"    multiIf(role = 1, started_at, {change} AND status = 'failed', {finished}, NULL)"
        " AS failed_at,\n"
        f"    multiIf(role = 1, if(status = 'succeeded', {finished}, NULL),\n"
        f"        {change} AND status = 'rolled_back', {finished}, NULL) AS restored_at,\n"
        f"    if({change} AND status = 'succeeded', {finished}, NULL) AS deployed_at,\n"
        f"    if({change}, commit_sha, '') AS commit_sha,\n"
        f"    if({change} AND status = 'succeeded' AND commit_seen_at > 0\n"
        f"        AND commit_seen_at <= {finished}, commit_seen_at, NULL) AS seen_at\n"
        # Lead time is computed at insert: in a view the inner reference to the records is
        # the inserted block only, so the join reads the block's commits, never the table.
        f"FROM (SELECT r.*, (r.kind IN ({kinds}) OR r.rollback_of IS NOT NULL) AS remedy,\n"
        f"        c.first_seen_at AS commit_seen_at FROM {records} AS r\n"
        "    LEFT JOIN (SELECT tenant, sha, min(first_seen_at) AS first_seen_at\n"
        f"        FROM {qualified(database, DORA_COMMITS)}\n"
        f"        WHERE (tenant, sha) IN (SELECT tenant, commit_sha FROM {records})\n"
        "        GROUP BY tenant, sha) AS c\n"
        "    ON r.tenant = c.tenant AND r.commit_sha = c.sha)\n"
        # A remediation naming a deployment is also a fact about that deployment: a second row.
        "ARRAY JOIN if(remedy AND rollback_of IS NOT NULL, [0, 1], [0]) AS role\n"
        # The key of each deployment named: filed before, or in this very block.
        "LEFT JOIN (SELECT tenant AS t_tenant, deployment_id AS t_id,\n"
        f"        {found}, 1 AS t_known\n"
        f"    FROM (SELECT tenant, deployment_id, {', '.join(own)}\n"
        f"        FROM {qualified(database, DORA_DEPLOYMENT_KEYS)}\n"
        f"        WHERE (tenant, deployment_id) IN ({named})\n"
        f"        UNION ALL {_DEPLOYMENT_KEY} FROM {records}\n"
        f"        WHERE (tenant, deployment_id) IN ({named}))\n"
        "    GROUP BY tenant, deployment_id) AS t\n"
        "ON tenant = t_tenant AND ifNull(rollback_of, '') = t_id"
    )


def dora_deployments_mv_sql(database: str | None = None) -> str:
    """`dora_deployments_mv`: folds every deployment record into `dora_deployments` as it is
    inserted."""
    return _materialized_view(
        database,
        DORA_DEPLOYMENTS + "_mv",
        DORA_DEPLOYMENTS,
        dora_deployments_select(database, qualified(database, RECORDS)),
    )


def dora_deployment_keys_sql(database: str | None = None) -> str:
    """`dora_deployment_keys`: *where are a deployment's facts filed?* Its tenant, id and the
    rest of its `dora_deployments` key, for a remediation naming it (`rollback_of`)."""
    return (
        f"CREATE TABLE {qualified(database, DORA_DEPLOYMENT_KEYS)}\n(\n"
        "    `tenant` LowCardinality(String) COMMENT 'Tenant.',\n"
        "    `deployment_id` String COMMENT 'Deployment.',\n"
        "    `team` SimpleAggregateFunction(any, LowCardinality(String))"
        " COMMENT 'Owner team (\\'\\' when unknown).',\n"
        "    `environment` SimpleAggregateFunction(any, LowCardinality(String))"
        " COMMENT 'Canonical environment.',\n"
        "    `service` SimpleAggregateFunction(any, LowCardinality(String)) COMMENT 'Service.',\n"
        "    `application` SimpleAggregateFunction(any, LowCardinality(String))"
        " COMMENT 'Application (\\'\\' when unknown).',\n"
        "    `day` SimpleAggregateFunction(min, Date) COMMENT 'UTC day it started.'\n"
        ")\n"
        "ENGINE = AggregatingMergeTree\n"
        "ORDER BY (`tenant`, `deployment_id`)\n"
        # Looked up by a few ids per insert: small granules keep a lookup to a few hundred rows.
        "SETTINGS index_granularity = 256\n"
        "COMMENT 'Each deployment\\'s dora_deployments key (maintained by "
        "dora_deployment_keys_mv; docs/metrics.md).'"
    )


def dora_deployment_keys_select(records: str) -> str:
    """The SELECT folding deployment records (`records`) into `dora_deployment_keys` rows."""
    return f"{_DEPLOYMENT_KEY}\nFROM {records}"


def dora_deployment_keys_mv_sql(database: str | None = None) -> str:
    """`dora_deployment_keys_mv`: files every deployment record's key as it is inserted."""
    return _materialized_view(
        database,
        DORA_DEPLOYMENT_KEYS + "_mv",
        DORA_DEPLOYMENT_KEYS,
        dora_deployment_keys_select(qualified(database, RECORDS)),
    )


def dora_commits_sql(database: str | None = None) -> str:
    """`dora_commits`: *when was each commit first seen?* The earliest source event naming it,
    per tenant and SHA (lead time for changes starts there)."""
    return (
        f"CREATE TABLE {qualified(database, DORA_COMMITS)}\n(\n"
        "    `tenant` LowCardinality(String) COMMENT 'Tenant.',\n"
        "    `sha` String COMMENT 'Commit SHA.',\n"
        f"    `first_seen_at` SimpleAggregateFunction(min, {DATETIME_MS})"
        " COMMENT 'Earliest occurred_at of a source event naming the commit.'\n"
        ")\n"
        "ENGINE = AggregatingMergeTree\n"
        "ORDER BY (`tenant`, `sha`)\n"
        # Looked up by random SHAs: small granules keep a lookup to a few hundred rows.
        "SETTINGS index_granularity = 256\n"
        "COMMENT 'First sight of each commit (maintained by dora_commits_mv; docs/metrics.md).'"
    )


def dora_commits_mv_sql(database: str | None = None) -> str:
    """`dora_commits_mv`: folds every source event's commits into `dora_commits`."""
    return _materialized_view(
        database,
        DORA_COMMITS + "_mv",
        DORA_COMMITS,
        "SELECT tenant, sha, min(occurred_at) AS first_seen_at\n"  # noqa: S608
        "FROM (\n"
        "    SELECT tenant, occurred_at,\n"
        "        arrayJoin(arrayDistinct(arrayConcat(commit_shas,\n"
        "            if(commit_sha IS NULL, [], [assumeNotNull(commit_sha)])))) AS sha\n"
        f"    FROM {qualified(database, SOURCE)}\n"
        ")\n"
        "GROUP BY tenant, sha",
    )


# Where a verdict or change set sits among its deployment's records: what incident triage
# reads it by (`suspect_inputs`, docs/triage.md), and how long it lives there.
_PLACE = (
    (
        "started_at",
        DATETIME_MS,
        "Start of the deployment record it was computed for (1970 on rows stored before 0022).",
    ),
    (
        "retain_until",
        DATETIME_MS,
        "That record's retain_until: its suspect_inputs row goes with it (TTL; 1970 on rows"
        " stored before 0022).",
    ),
)
_PLACE_COLUMNS = _column_list(_PLACE).lstrip()
#: Those columns' names.
PLACE = tuple(name for name, _, _ in _PLACE)

# --- Post-deploy verification (docs/verification.md): written by `shipledger.up.verifier` --

DEPLOYMENT_VERIFICATIONS = "deployment_verifications"


def deployment_verifications_sql(database: str | None = None) -> str:
    """`deployment_verifications`: *did each deployment work once it succeeded?* Every
    verdict decided (a late check revises it: a new row), the latest per deployment wins."""
    return (
        f"CREATE TABLE {qualified(database, DEPLOYMENT_VERIFICATIONS)}\n(\n"
        "    `tenant` LowCardinality(String) COMMENT 'Tenant.',\n"
        "    `deployment_id` String COMMENT 'Deployment verified.',\n"
        "    `service` LowCardinality(String) COMMENT 'Its service.',\n"
        "    `environment` LowCardinality(String) COMMENT 'Its canonical environment.',\n"
        "    `verdict` LowCardinality(String) COMMENT 'verified, suspect, failed_verification or"
        " unverified (no check in the window).',\n"
        "    `score` Float64 COMMENT 'Mean of the checks: pass 1, degraded 0.5, fail 0.',\n"
        "    `evidence` String COMMENT 'JSON: the window, the counts and every check.',\n"
        f"    `window_end` {DATETIME_MS} COMMENT 'When the window closed (event time).',\n"
        f"    `decided_at` {DATETIME_MS} COMMENT 'When this verdict was decided.',\n"
        f"    `window_start` {DATETIME_MS} COMMENT 'When the deployment succeeded.',\n"
        "    `check_count` UInt32 COMMENT 'Checks in the window.',\n"
        "    `policy_version` LowCardinality(String) COMMENT 'Policy that set the window.',\n"
        "    `team` LowCardinality(String) COMMENT 'Owner team of the deployment (\\'\\' when"
        " unknown).',\n"
        f"    {_PLACE_COLUMNS}\n"
        ")\n"
        # Plain MergeTree: a revised verdict is a new row, the history of verdicts stays.
        "ENGINE = MergeTree\n"
        "ORDER BY (`tenant`, `deployment_id`, `decided_at`)\n"
        "COMMENT 'Post-deploy verification verdicts, latest per deployment"
        " (docs/verification.md).'"
    )


# --- Change sets (docs/changes.md): what each deployment shipped, written by the sink ------

CHANGE_SETS = "deployment_change_sets"
# Not `deployment_changes`: that name is the change-request coverage view (docs/model.md).
CHANGE_COMMITS = "deployment_commits"
COMMIT_LEAD_TIMES = "commit_lead_times"

CHANGE_SET_COLUMNS = (
    ("tenant", "LowCardinality(String)", "Tenant."),
    ("deployment_id", "String", "The deployment."),
    ("service", "LowCardinality(String)", "Service deployed."),
    ("environment", "LowCardinality(String)", "Canonical environment."),
    (
        "from_sha",
        "Nullable(String)",
        "Commit of the previous succeeded deployment of the service there (NULL: the first).",
    ),
    ("to_sha", "String", "Commit this deployment shipped."),
    ("commit_count", "UInt32", "Commits in the range (rows of deployment_commits)."),
    ("pr_count", "UInt32", "Distinct merged pull requests among them."),
    ("reverse", "UInt8", "1: a rollback's range (commits taken out, from_sha back to to_sha)."),
    ("computed_at", DATETIME_MS, "When the set was computed (the latest per deployment counts)."),
    ("status", "LowCardinality(String)", "Status of the deployment record it was computed for."),
    ("repository", "Nullable(String)", "Repository of the deployment, if it named one."),
    ("previous_deployment_id", "Nullable(String)", "The deployment from_sha comes from."),
    ("deployed_at", DATETIME_MS, "When the deployment finished (else its last update)."),
    ("team", "Nullable(String)", "Owner team of the deployment (scopes of API reads)."),
    (
        "complete",
        "UInt8",
        "1: the range's ends are both known source events; 0: the history stops before from_sha"
        " (missing pushes), the range holds what is known.",
    ),
    *_PLACE,
)
CHANGE_COMMIT_COLUMNS = (
    ("tenant", "LowCardinality(String)", "Tenant."),
    ("deployment_id", "String", "The deployment."),
    ("service", "LowCardinality(String)", "Service deployed."),
    ("environment", "LowCardinality(String)", "Canonical environment."),
    ("commit_sha", "String", "A commit of the deployment's range."),
    ("pr_number", "Nullable(Int64)", "Merged pull request that carried it, if known."),
    ("pr_title", "Nullable(String)", "That pull request's title."),
    ("author", "Nullable(String)", "Author of the pull request (else of the push)."),
    ("first_seen_at", f"Nullable({DATETIME_MS})", "Earliest source event naming the commit."),
    ("deployed_at", DATETIME_MS, "When the deployment finished (else its last update)."),
    ("computed_at", DATETIME_MS, "computed_at of the change set the row belongs to."),
    ("reverse", "UInt8", "1: taken out by a rollback."),
    ("position", "UInt32", "Order in the range: 0 is the newest commit."),
)


def _derived_table(name: str, columns: tuple[tuple[str, str, str], ...], tail: str) -> str:
    return f"CREATE TABLE {name}\n(\n{_column_list(columns)}\n)\nENGINE = MergeTree\n{tail}"


def _derived_table_sql(
    database: str | None,
    name: str,
    columns: tuple[tuple[str, str, str], ...],
    order_by: str,
    comment: str,
) -> str:
    return _derived_table(
        qualified(database, name),
        columns,
        "PARTITION BY (`tenant`, toYYYYMM(`computed_at`))\n"
        f"ORDER BY ({order_by})\n"
        f"COMMENT {quote_str(comment)}",
    )


def change_sets_sql(database: str | None = None) -> str:
    """`deployment_change_sets`: *which commit range did each deployment ship?* One row per
    computation (the latest `computed_at` per deployment counts; `sinks.ledger.change_sets`)."""
    return _derived_table_sql(
        database,
        CHANGE_SETS,
        CHANGE_SET_COLUMNS,
        "`tenant`, `deployment_id`, `computed_at`",
        "Commit range of each deployment since the previous succeeded one of its service and "
        "environment (latest computed_at counts; docs/changes.md).",
    )


def change_commits_sql(database: str | None = None) -> str:
    """`deployment_commits`: *which commits and pull requests did each deployment ship?* One
    row per commit of each change set computation."""
    return _derived_table_sql(
        database,
        CHANGE_COMMITS,
        CHANGE_COMMIT_COLUMNS,
        "`tenant`, `deployment_id`, `computed_at`, `position`",
        "Commits of each deployment change set, with their pull request and author (rows of "
        "the latest computed_at per deployment count; docs/changes.md).",
    )


def commit_lead_times_sql(database: str | None = None) -> str:
    """`commit_lead_times`: *how long did each commit take from first sight to running in an
    environment?* Per tenant, environment, service and commit: the first succeeded forward
    deployment that shipped it (latest change set of each deployment)."""
    sets, commits = qualified(database, CHANGE_SETS), qualified(database, CHANGE_COMMITS)
    return _view(
        database,
        COMMIT_LEAD_TIMES,
        "SELECT c.tenant AS tenant, c.environment AS environment, c.service AS service,\n"  # noqa: S608
        "    c.commit_sha AS commit_sha, min(c.first_seen_at) AS first_seen_at,\n"
        "    min(c.deployed_at) AS deployed_at,\n"
        "    argMin(c.deployment_id, c.deployed_at) AS deployment_id,\n"
        "    dateDiff('second', min(c.first_seen_at), min(c.deployed_at)) AS lead_time_s\n"
        f"FROM {commits} AS c\n"
        "INNER JOIN (SELECT tenant, deployment_id, max(computed_at) AS latest,\n"
        "    argMax(status, computed_at) AS latest_status\n"
        f"    FROM {sets} GROUP BY tenant, deployment_id) AS s\n"
        "    ON c.tenant = s.tenant AND c.deployment_id = s.deployment_id\n"
        "    AND c.computed_at = s.latest\n"
        "WHERE s.latest_status = 'succeeded' AND c.reverse = 0\n"
        "GROUP BY c.tenant, c.environment, c.service, c.commit_sha",
    )


# --- Incident triage and CMDB reconciliation (docs/triage.md): written by their jobs -------

INCIDENT_SUSPECTS = "incident_suspects"
CMDB_FINDINGS = "cmdb_findings"


def incident_suspects_sql(database: str | None = None) -> str:
    """`incident_suspects`: *which deployments were suspected when an incident opened, and
    was the note posted?* The top suspects attached to each incident signal, once."""
    return _derived_table(
        qualified(database, INCIDENT_SUSPECTS),
        (
            ("tenant", "LowCardinality(String)", "Tenant."),
            ("incident_id", "String", "event_id of the incident signal (signal_events)."),
            ("provider", "LowCardinality(String)", "Where it came from (pagerduty, opsgenie)."),
            ("external_id", "String", "The provider's incident or alert id."),
            ("service", "LowCardinality(String)", "Service of the incident."),
            ("incident_at", DATETIME_MS, "When the incident opened."),
            ("rank", "UInt16", "1 for the likeliest suspect; 0: a row saying none was found."),
            ("deployment_id", "String", "Suspected deployment ('' on a rank-0 row)."),
            ("deployment_service", "LowCardinality(String)", "Its service."),
            ("score", "Float64", "Sum of the parts' points (of 100)."),
            ("why", "String", "The parts that earned points, in words."),
            ("parts", "String", "Every part of the score as JSON (name, points, weight, detail)."),
            ("note_status", "LowCardinality(String)", "posted, failed or skipped (no API key)."),
            ("note_detail", "String", "The provider's answer, or why the note was not posted."),
            ("attached_at", DATETIME_MS, "When the suspects were attached."),
        ),
        "ORDER BY (`tenant`, `incident_id`, `rank`)\n"
        "COMMENT 'Top suspects attached to each incident from PagerDuty or Opsgenie "
        "(docs/triage.md).'",
    )


def cmdb_findings_sql(database: str | None = None) -> str:
    """`cmdb_findings`: *where do the CMDB and the ledger disagree?* One row per finding of
    one reconciled export (by its sha256: the same export is stored once)."""
    return _derived_table(
        qualified(database, CMDB_FINDINGS),
        (
            ("tenant", "LowCardinality(String)", "Tenant."),
            ("export_sha256", "String", "sha256 of the export file reconciled."),
            ("export_name", "String", "File name of the export."),
            (
                "finding",
                "LowCardinality(String)",
                "deployed_not_in_cmdb, ci_never_deployed, owner_mismatch or environment_mismatch.",
            ),
            ("service", "String", "Service (ledger name, or the CI's name)."),
            ("ci_sys_id", "String", "sys_id of the configuration item ('' if none)."),
            ("ci_class", "LowCardinality(String)", "cmdb_ci_service or cmdb_ci_appl."),
            ("cmdb_value", "String", "What the CMDB says (owner, environment)."),
            ("ledger_value", "String", "What the ledger says."),
            ("reconciled_at", DATETIME_MS, "When the export was reconciled."),
        ),
        "ORDER BY (`tenant`, `export_sha256`, `finding`, `service`, `ci_sys_id`)\n"
        "COMMENT 'Differences between a ServiceNow CMDB export and the ledger "
        "(shipledger cmdb reconcile; docs/triage.md).'",
    )


# --- Reconciliation against independent evidence (docs/reconcile.md): written by its command

RECONCILIATION_FINDINGS = "reconciliation_findings"


def reconciliation_findings_sql(database: str | None = None) -> str:
    """`reconciliation_findings`: *where do independent logs and the ledger disagree?* One row
    per finding of one run (its id digests the inputs: the same run is stored once)."""
    return _derived_table(
        qualified(database, RECONCILIATION_FINDINGS),
        (
            ("tenant", "LowCardinality(String)", "Tenant."),
            ("run_id", "String", "sha256 of the run's inputs: evidence, mapping, period, ledger."),
            ("source", "LowCardinality(String)", "k8s-audit, cloudtrail or access-log."),
            ("kind", "LowCardinality(String)", "unreported, unobserved or timing."),
            ("service", "LowCardinality(String)", "Service."),
            ("environment", "LowCardinality(String)", "Environment."),
            ("team", "LowCardinality(String)", "Team ('' if the ledger knows none)."),
            ("observed_at", f"Nullable({DATETIME_MS})", "When the evidence saw the change."),
            ("deployment_id", "String", "The ledger's deployment ('' if none)."),
            ("evidence", "String", "Where the evidence is (file:line), if any."),
            ("detail", "String", "The disagreement in words."),
            ("period_start", DATETIME_MS, "Start of the period reconciled."),
            ("period_end", DATETIME_MS, "End of the period reconciled (excluded)."),
            ("reconciled_at", DATETIME_MS, "When the run stored its findings."),
        ),
        "ORDER BY (`tenant`, `run_id`, `kind`, `service`, `environment`, `deployment_id`, "
        "`evidence`)\n"
        "COMMENT 'Changes seen in Kubernetes audit logs, CloudTrail or access logs that the "
        "ledger lacks or times otherwise, and ledger deployments they never show "
        "(shipledger reconcile; docs/reconcile.md).'",
    )


SUSPECT_DEPLOYMENTS = "suspect_deployments"
#: The layout of the tables an incident's read takes a key range of (tenant, services, window).
_BY_SERVICE_AND_START = (
    "PARTITION BY toYYYYMM(`started_at`)\n"
    "ORDER BY (`tenant`, `service`, `started_at`, `deployment_id`)\n"
    f"TTL {RETENTION_TTL}\n"
    # Small granules: a service's day in a part is a few dozen rows, read 128 at a time (1024
    # read 1.8x the rows and time of an incident's candidates at 10M deployments), in small
    # compressed blocks: reading a granule decompresses its block, and the default 64 KiB-1 MiB
    # blocks made an incident's read decompress 4.6x the bytes (0020).
    "SETTINGS index_granularity = 128, min_compress_block_size = 4096,\n"
    "    max_compress_block_size = 16384\n"
)


def suspect_deployments_sql(database: str | None = None) -> str:
    """`suspect_deployments`: *which deployments of these services started around this
    time?* Every deployment record, narrow and sorted by service and start, so an incident's
    candidates are read from a few granules whatever the ledger's size (docs/triage.md)."""
    return _derived_table(
        qualified(database, SUSPECT_DEPLOYMENTS),
        (
            ("tenant", "LowCardinality(String)", "Tenant."),
            ("service", "LowCardinality(String)", "Service."),
            ("started_at", DATETIME_MS, "When the deployment started."),
            ("deployment_id", "String", "Deployment id."),
            ("seq", "Int32", "Record version (the highest is the latest)."),
            ("environment", "LowCardinality(String)", "Canonical environment."),
            ("status", "LowCardinality(String)", "Lifecycle status after this record."),
            ("commit_sha", "String", "Commit SHA."),
            ("version", "Nullable(String)", "Version or tag."),
            ("team", "LowCardinality(Nullable(String))", "Owner team."),
            ("rollback_of", "Nullable(String)", "Deployment this one rolled back."),
            ("retain_until", DATETIME_MS, "The record's retain_until: deleted with it (TTL)."),
        ),
        _BY_SERVICE_AND_START
        + "COMMENT 'Deployment records by service and start, for incident triage (maintained by "
        "suspect_deployments_mv; docs/triage.md).'",
    )


def suspect_deployments_mv_sql(database: str | None = None) -> str:
    """`suspect_deployments_mv`: copies the columns triage reads of every record inserted."""
    return _materialized_view(
        database,
        SUSPECT_DEPLOYMENTS + "_mv",
        SUSPECT_DEPLOYMENTS,
        "SELECT tenant, service, started_at, deployment_id, seq, environment, status,\n"
        "    commit_sha, version, team, rollback_of, retain_until\n"
        f"FROM {qualified(database, RECORDS)}",
    )


SUSPECT_INPUTS = "suspect_inputs"
#: Its views: one per table whose rows it copies.
SUSPECT_CHANGE_SETS_MV = "suspect_change_sets_mv"
SUSPECT_VERDICTS_MV = "suspect_verdicts_mv"


def suspect_inputs_sql(database: str | None = None) -> str:
    """`suspect_inputs`: *what did the deployments of these services around this time ship,
    and what did their verification say?* Every change set and verdict, laid out as
    `suspect_deployments` is (by service and start), so an incident's candidates and their
    inputs are read from the same few granules (docs/triage.md)."""
    return _derived_table(
        qualified(database, SUSPECT_INPUTS),
        (
            ("tenant", "LowCardinality(String)", "Tenant."),
            ("service", "LowCardinality(String)", "Service."),
            ("started_at", DATETIME_MS, "Start of the record the input was computed for."),
            ("deployment_id", "String", "Deployment id."),
            ("input", "LowCardinality(String)", "change_set or verdict."),
            ("at", DATETIME_MS, "computed_at or decided_at (the latest per deployment counts)."),
            ("commit_count", "UInt32", "Commits in the change set (0 on a verdict)."),
            ("verdict", "LowCardinality(String)", "The verdict ('' on a change set)."),
            ("retain_until", DATETIME_MS, "That record's retain_until: deleted with it (TTL)."),
        ),
        _BY_SERVICE_AND_START
        + "COMMENT 'Change sets and verdicts by service and start, for incident triage (maintained "
        "by suspect_change_sets_mv and suspect_verdicts_mv; docs/triage.md).'",
    )


def suspect_change_sets_mv_sql(database: str | None = None) -> str:
    """`suspect_change_sets_mv`: copies every change set stored into `suspect_inputs`."""
    return _materialized_view(
        database,
        SUSPECT_CHANGE_SETS_MV,
        SUSPECT_INPUTS,
        "SELECT tenant, service, started_at, deployment_id, 'change_set' AS input,\n"
        "    computed_at AS at, commit_count, '' AS verdict, retain_until\n"
        f"FROM {qualified(database, CHANGE_SETS)}",
    )


def suspect_verdicts_mv_sql(database: str | None = None) -> str:
    """`suspect_verdicts_mv`: copies every verdict stored into `suspect_inputs`."""
    return _materialized_view(
        database,
        SUSPECT_VERDICTS_MV,
        SUSPECT_INPUTS,
        "SELECT tenant, service, started_at, deployment_id, 'verdict' AS input,\n"
        "    decided_at AS at, toUInt32(0) AS commit_count, verdict, retain_until\n"
        f"FROM {qualified(database, DEPLOYMENT_VERIFICATIONS)}",
    )


# --- Privacy (docs/privacy.md): the lookup of pseudonyms, written by the sink ----------------

PERSON_PSEUDONYMS = "person_pseudonyms"


def person_pseudonyms_sql(database: str | None = None) -> str:
    """`person_pseudonyms`: *who is this pseudonym?* One entry per (tenant, person), found by
    the keyed HMAC of the name, holding the name sealed with the tenant's key. Not chained and
    never archived: `shipledger privacy erase` deletes an entry (crypto-shredding), and every
    row that names the person keeps only the pseudonym."""
    return _derived_table(
        qualified(database, PERSON_PSEUDONYMS),
        (
            ("tenant", "LowCardinality(String)", "Tenant."),
            ("name_hmac", "String", "Hex HMAC-SHA256 of the name under the tenant's key."),
            ("pseudonym", "String", "person-<16 hex>: what the ledger's rows store."),
            ("sealed_name", "String", "The name, AES-GCM sealed under the tenant's key (base64)."),
            ("created_at", DATETIME_MS, "When the sink first met the person."),
        ),
        "ORDER BY (`tenant`, `name_hmac`)\n"
        "COMMENT 'Pseudonym lookup of personal fields (never archived; docs/privacy.md).'",
    )


#: The aggregate and derived tables (no tenant row policy: read through `sinks.ledger.dora`,
#: `.change_sets`, `.verifications`, `.suspects`, `.cmdb` and `.reconciliations` only).
AGGREGATE_TABLES = (
    DORA_COMMITS,
    DORA_DEPLOYMENT_KEYS,
    DORA_DEPLOYMENTS,
    CHANGE_SETS,
    CHANGE_COMMITS,
    DEPLOYMENT_VERIFICATIONS,
    INCIDENT_SUSPECTS,
    CMDB_FINDINGS,
    SUSPECT_DEPLOYMENTS,
    SUSPECT_INPUTS,
    PERSON_PSEUDONYMS,
    RECONCILIATION_FINDINGS,
)
#: Aggregate tables and the materialized views that feed them, then the derived tables the
#: sink and the periodic jobs write and their views, each after what it reads. Only the hot
#: database has them: a view fires on insert, and archiving to cold storage deletes rows,
#: never inserts, so the aggregates keep every day however old its rows are.
AGGREGATES: dict[str, Callable[[str | None], str]] = {
    DORA_COMMITS: dora_commits_sql,
    DORA_COMMITS + "_mv": dora_commits_mv_sql,
    DORA_DEPLOYMENT_KEYS: dora_deployment_keys_sql,
    DORA_DEPLOYMENT_KEYS + "_mv": dora_deployment_keys_mv_sql,
    DORA_DEPLOYMENTS: dora_deployments_sql,
    DORA_DEPLOYMENTS + "_mv": dora_deployments_mv_sql,
    CHANGE_SETS: change_sets_sql,
    CHANGE_COMMITS: change_commits_sql,
    COMMIT_LEAD_TIMES: commit_lead_times_sql,
    DEPLOYMENT_VERIFICATIONS: deployment_verifications_sql,
    INCIDENT_SUSPECTS: incident_suspects_sql,
    CMDB_FINDINGS: cmdb_findings_sql,
    SUSPECT_DEPLOYMENTS: suspect_deployments_sql,
    SUSPECT_DEPLOYMENTS + "_mv": suspect_deployments_mv_sql,
    SUSPECT_INPUTS: suspect_inputs_sql,
    SUSPECT_CHANGE_SETS_MV: suspect_change_sets_mv_sql,
    SUSPECT_VERDICTS_MV: suspect_verdicts_mv_sql,
    PERSON_PSEUDONYMS: person_pseudonyms_sql,
    RECONCILIATION_FINDINGS: reconciliation_findings_sql,
}


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
        f"    `at` {DATETIME_MS} COMMENT 'When the flush recorded it.',\n"
        "    `chain_lane` LowCardinality(String) COMMENT 'Lane of the chain (empty before 0023).'\n"
        ")\n"
        "ENGINE = MergeTree\n"
        "ORDER BY (`table`, `tenant`, `retention_class`, `chain_seq`)\n"
        f"TTL {RETENTION_TTL}\n"
        "COMMENT 'Chain heads after each sink flush: a truncated chain tail is detectable.'"
    )


def desired_schema(database: str | None = None) -> dict[str, str]:
    """Every object of the ledger by name -> its CREATE statement, in creation order: tables,
    `chain_heads`, the aggregates, then views. The desired state migrations must reproduce
    exactly."""
    names = [*tables(), CHAIN_HEADS, *AGGREGATES, *VIEWS]
    return {name: create_statement(name, database) for name in names}


def create_statement(name: str, database: str | None = None, as_name: str | None = None) -> str:
    """The desired CREATE statement of ledger table or view `name` (created as `as_name`)."""
    if name in tables():
        return tables()[name].create_sql(database, as_name)
    if name == CHAIN_HEADS:
        return chain_heads_sql(database, as_name or name)
    if name in VIEWS and as_name is None:
        return VIEWS[name](database)
    if name in AGGREGATES and as_name is None:
        return AGGREGATES[name](database)
    raise KeyError(f"no ledger table or view {name!r}")


def view_statements(database: str) -> list[str]:
    """The ledger's views over the tables of `database` (also built over the hot+cold union
    in the query database, see `sinks.ledger.tiers`)."""
    return [view(database) for view in VIEWS.values()]

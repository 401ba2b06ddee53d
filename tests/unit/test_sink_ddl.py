"""The ledger DDL is generated from the Avro contract and covers every field."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.schemas.registry import catalog
from shipledger.sinks.ledger import ddl

TABLE_SCHEMAS = {
    ddl.EVENTS: "io.shipledger.v1.DeploymentEvent",
    ddl.RECORDS: "io.shipledger.v1.DeploymentRecord",
    ddl.ALERTS: "io.shipledger.v1.Alert",
    ddl.CHANGES: "io.shipledger.v1.ChangeEvent",
    ddl.SOURCE: "io.shipledger.v1.SourceEvent",
    ddl.ARTIFACTS: "io.shipledger.v1.ArtifactEvent",
    ddl.SIGNALS: "io.shipledger.v1.SignalEvent",
    ddl.CATALOG: "io.shipledger.v1.CatalogEvent",
    "gate_decisions": "io.shipledger.v1.GateDecision",
}
APPROVALS = (
    "Array(Tuple(approver String, decision LowCardinality(String), "
    "decided_at DateTime64(3, 'UTC'), groups Array(String), verified_by Nullable(String), "
    "comment Nullable(String)))"
)
#: The arrays of records, by field name: named tuples.
RECORD_ARRAYS = {
    "approvals": APPROVALS,
    "reasons": (
        "Array(Tuple(rule LowCardinality(String), severity LowCardinality(String), "
        "message String, evidence Map(String, String)))"
    ),
}


def _expected_base_type(name: str, avro_type: Any) -> tuple[str, bool]:
    """(ClickHouse base type, nullable) field `name` of an Avro type must map to, spelled out
    by hand."""
    nullable = isinstance(avro_type, list) and "null" in avro_type
    if isinstance(avro_type, list):
        (avro_type,) = [t for t in avro_type if t != "null"]
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis":
            return "DateTime64(3, 'UTC')", nullable
        if avro_type["type"] == "array" and isinstance(avro_type["items"], dict):
            return RECORD_ARRAYS[name], nullable
        if avro_type["type"] == "map" and isinstance(avro_type["values"], dict):
            return "Map(String, Array(String))", nullable  # source_events.changed_paths
        return {
            "enum": "String",
            "map": "Map(String, String)",
            "array": "Array(String)",
        }[avro_type["type"]], nullable
    return {"string": "String", "int": "Int32", "long": "Int64"}[avro_type], nullable


def _strip(ch_type: str) -> tuple[str, bool]:
    nullable = False
    changed = True
    while changed:
        changed = False
        for wrapper in ("LowCardinality(", "Nullable("):
            if ch_type.startswith(wrapper):
                nullable = nullable or wrapper == "Nullable("
                ch_type = ch_type[len(wrapper) : -1]
                changed = True
    if not ch_type.startswith("Array(Tuple("):
        ch_type = ch_type.replace("LowCardinality(String)", "String")
    return ch_type, nullable


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_table_columns_cover_avro_fields(table: str) -> None:
    spec = ddl.tables()[table]
    assert spec.schema == TABLE_SCHEMAS[table]
    fields = catalog().latest(spec.schema).raw["fields"]
    columns = {c.name: c for c in spec.columns}
    for f in fields:
        assert f["name"] in columns, f"{table} lacks Avro field {f['name']}"
        expected = _expected_base_type(f["name"], f["type"])
        assert _strip(columns[f["name"]].type) == expected, f["name"]
        assert columns[f["name"]].comment.startswith(f["doc"])
    extra = set(columns) - {f["name"] for f in fields}
    ingest = {"received_at", "kafka_partition", "kafka_offset"} if table == ddl.EVENTS else set()
    assert extra == ingest | spec.stamped
    # Every row names its policy: the one it was judged under, or the one that stamped it.
    assert "policy_version" in columns
    judged = {f["name"] for f in fields} & {"policy_version"}
    assert spec.stamped == ddl.LEDGER_COLUMN_NAMES | ({"policy_version"} - judged)


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_keys_are_real_non_nullable_columns(table: str) -> None:
    spec = ddl.tables()[table]
    types = dict(zip(spec.column_names, spec.column_types, strict=True))
    assert spec.order_by[0] == "tenant"
    assert spec.sort_key[:2] == ("`tenant`", "ifNull(`region`, '')")
    for key in (spec.id_column, spec.time_column):
        assert "Nullable" not in types[key], key
    sql = spec.create_sql("ledger")
    for key in spec.order_by:
        assert key in types
        if "Nullable" in types[key]:  # a sorting key cannot be Nullable: ifNull makes it not
            assert f"ifNull(`{key}`, '')" in sql, key
    assert types[spec.time_column] == ddl.DATETIME_MS


@pytest.mark.parametrize(
    "table", [ddl.CHANGES, ddl.SOURCE, ddl.ARTIFACTS, ddl.SIGNALS, ddl.CATALOG, "gate_decisions"]
)
def test_family_tables_sort_by_tenant_region_natural_key_and_time(table: str) -> None:
    spec = ddl.tables()[table]
    assert spec.order_by[:2] == ("tenant", "region")
    assert spec.order_by[-2:] == ("occurred_at", "event_id")
    assert (spec.id_column, spec.time_column) == ("event_id", "occurred_at")
    assert "ORDER BY (`tenant`, ifNull(`region`, ''), " in spec.create_sql("ledger")


def test_approvals_are_an_array_of_named_tuples() -> None:
    spec = ddl.tables()[ddl.CHANGES]
    types = dict(zip(spec.column_names, spec.column_types, strict=True))
    assert types["approvals"] == APPROVALS


def test_every_view_says_what_it_answers() -> None:
    for name, view in ddl.VIEWS.items():
        assert view.__doc__ and "?" in view.__doc__, name
        assert view.__doc__.startswith(f"`{name}"), name
        assert f"CREATE VIEW `ledger`.`{name}` AS" in view("ledger")


def test_create_sql_has_engine_partition_and_indexes() -> None:
    sql = ddl.tables()[ddl.EVENTS].create_sql("ledger")
    assert sql.startswith("CREATE TABLE `ledger`.`deployment_events`")
    assert "ENGINE = MergeTree" in sql
    assert "PARTITION BY (`tenant`, toYYYYMM(`occurred_at`))" in sql
    assert (
        "ORDER BY (`tenant`, ifNull(`region`, ''), `environment`, `service`, `occurred_at`, "
        "`event_id`)" in sql
    )
    assert "TTL `retain_until` DELETE" in sql
    assert "TYPE bloom_filter" in sql
    assert "`attributes` Map(String, String)" in sql
    assert "`region` LowCardinality(Nullable(String))" in sql


def test_desired_schema_is_tables_then_chain_heads_then_aggregates_then_views() -> None:
    objects = ddl.desired_schema()
    assert list(objects) == [*ddl.tables(), ddl.CHAIN_HEADS, *ddl.AGGREGATES, *ddl.VIEWS]
    assert "LIMIT 1 BY tenant, deployment_id" in objects[ddl.DEPLOYMENTS_VIEW]
    assert all("`ledger`" not in sql for sql in objects.values())  # unqualified: migrations


def test_alert_evidence_is_a_string_map() -> None:
    types = dict(
        zip(*(lambda s: (s.column_names, s.column_types))(ddl.tables()[ddl.ALERTS]), strict=True)
    )
    assert types["evidence"] == "Map(String, String)"
    assert types["severity"] == "LowCardinality(String)"


@pytest.mark.parametrize(
    ("avro", "expected"),
    [
        ("string", "String"),
        (["null", "long"], "Nullable(Int64)"),
        (
            ["null", {"type": "long", "logicalType": "timestamp-millis"}],
            "Nullable(DateTime64(3, 'UTC'))",
        ),
        ({"type": "array", "items": "string"}, "Array(String)"),
        ({"type": "map", "values": "long"}, "Map(String, Int64)"),
        ("boolean", "Bool"),
        (
            {"type": "record", "name": "P", "fields": [{"name": "x", "type": ["null", "int"]}]},
            "Tuple(x Nullable(Int32))",
        ),
    ],
)
def test_type_mapping(avro: Any, expected: str) -> None:
    assert ddl.clickhouse_type(avro) == expected


@pytest.mark.parametrize(
    "avro",
    [
        ["null", "string", "long"],
        ["null", {"type": "map", "values": "string"}],
        ["null", {"type": "record", "name": "R", "fields": []}],
        "fixed_thing",
    ],
)
def test_unmappable_types_are_refused(avro: Any) -> None:
    with pytest.raises(ddl.SchemaMappingError):
        ddl.clickhouse_type(avro)


@pytest.mark.parametrize("name", ["a b", "x`y", "1abc", "t;DROP"])
def test_identifiers_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        ddl.quote_ident(name)


def test_string_literals_are_escaped() -> None:
    assert ddl.quote_str("it's a \\ test") == "'it\\'s a \\\\ test'"

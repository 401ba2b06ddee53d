"""The catalog is the one registry of topics: it is consistent (every reference resolves, every
table is the DDL's), and everything derived from it says what it says. How each model field
mirrors its Avro type: test_schemas.py (its MODELS come from the catalog too)."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.schemas.families import FAMILIES
from shipledger.schemas.registry import Catalog, catalog, topic_codec
from shipledger.schemas.topic_checks import topic_problems
from shipledger.schemas.topic_spec import TopicSpec, load_model
from shipledger.schemas.topics import ALERTS, DLQ, RAW, RECORDS, Topics
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.sinks.ledger import ddl
from shipledger.sinks.route import routes_from_catalog

TOPICS = Topics(prefix="test.")
STORED = {name: spec for name, spec in catalog().topics.items() if spec.table is not None}


def _spec(**fields: Any) -> TopicSpec:
    return TopicSpec.model_validate(
        {"name": "t", "description": "", "key": "event_id", "schema": None, "dlq": None, **fields}
    )


# --- consistency ----------------------------------------------------------------------------


def test_the_shipped_catalog_has_no_topic_problem() -> None:
    assert topic_problems(catalog()) == []


def test_every_role_the_code_names_is_a_catalog_topic() -> None:
    for role in (RAW, RECORDS, ALERTS, DLQ):
        assert role in catalog().topics


@pytest.mark.parametrize("name", sorted(STORED))
def test_every_table_is_in_the_ddl_with_its_topics_schema(name: str) -> None:
    spec = STORED[name]
    assert spec.table is not None
    table = ddl.tables()[spec.table.name]
    assert table.schema == spec.value_schema
    assert ddl.tables()[spec.table.name].name in ddl.desired_schema()


def test_every_ddl_table_is_a_catalog_topics() -> None:
    assert {s.table.name for s in STORED.values() if s.table} == set(ddl.tables())
    # The views name the family tables by these constants.
    for table in (ddl.CHANGES, ddl.SOURCE, ddl.ARTIFACTS, ddl.SIGNALS, ddl.CATALOG):
        assert table in ddl.tables()


def test_topic_problems_name_what_is_wrong() -> None:
    good = catalog().topics
    bad = {
        "unmirrored": _spec(
            name="unmirrored",
            schema="io.shipledger.v1.Alert",
            key="alert_id",
            model="shipledger.schemas.models:DeploymentRecord",
        ),
        "ghost_model": _spec(
            name="ghost_model",
            schema="io.shipledger.v1.Alert",
            key="alert_id",
            model="shipledger.schemas.models:Nope",
        ),
        "bare_family": _spec(name="bare_family", family="change"),
        "twin_table": _spec(name="twin_table", table="alerts"),
    }
    problems = topic_problems(Catalog(list(catalog().by_id.values()), {**good, **bad}))

    def reasons(topic: str) -> str:
        return " | ".join(reason for name, reason in problems if name == topic)

    assert "does not mirror io.shipledger.v1.Alert's fields" in reasons("unmirrored")
    assert "model 'shipledger.schemas.models:Nope'" in reasons("ghost_model")
    assert "event family 'change' needs a model and a table" in reasons("bare_family")
    assert "2 topics carry the event family 'change'" in reasons("*")
    assert "2 topics carry the ledger table 'alerts'" in reasons("*")
    assert reasons("twin_table") == ""


def test_a_model_path_must_name_a_contract_model() -> None:
    with pytest.raises(ValueError, match=r"is not a shipledger\.schemas\.models\.Model"):
        load_model("shipledger.schemas.topic_spec:TableRef")
    with pytest.raises(ValueError, match="No module named"):
        load_model("shipledger.schemas.nope:Model")


def test_a_family_table_needs_its_layout_and_a_declared_one_must_not_restate_it() -> None:
    schema = "io.shipledger.v1.ChangeEvent"
    with pytest.raises(ddl.SchemaMappingError, match=r"needs table.natural_key"):
        ddl.family_table(_spec(schema=schema, table="probe_events"))
    layout = {"name": "probe_events", "natural_key": ["change_id"], "description": "Probes."}
    table = ddl.family_table(_spec(schema=schema, table=layout))
    assert table.order_by == ("tenant", "region", "change_id", "occurred_at", "event_id")
    assert table.column_names == [c.name for c in ddl.avro_columns(schema)]


def test_unknown_topic_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown topic 'deployments'.*deployments\.raw"):
        TOPICS.of("deployments")


# --- what is derived ------------------------------------------------------------------------


def test_topic_names_are_the_catalogs_under_the_prefix() -> None:
    assert TOPICS.all() == [f"test.{name}" for name in catalog().topics]
    assert (TOPICS.raw, TOPICS.records, TOPICS.alerts, TOPICS.dlq) == (
        "test.deployments.raw",
        "test.deployments.records",
        "test.alerts",
        "test.dlq",
    )
    assert TOPICS.tables() == {f"test.{n}": s.table.name for n, s in STORED.items() if s.table}
    assert TOPICS.sunk() == list(TOPICS.tables())
    assert TOPICS.schemas() == {
        f"test.{n}": s.value_schema for n, s in catalog().topics.items() if s.value_schema
    }


def test_families_are_the_catalogs_family_topics() -> None:
    expected = {s.family: s for s in catalog().topics.values() if s.family}
    assert list(FAMILIES) == list(expected)
    for name, family in FAMILIES.items():
        spec = expected[name]
        assert (family.topic, family.schema, family.key_field) == (
            spec.name,
            spec.value_schema,
            spec.key,
        )
        assert family.model is spec.model_class()


def test_the_event_schema_is_the_raw_topics() -> None:
    assert EVENT_SCHEMA == catalog().topics[RAW].value_schema == FAMILIES["deployment"].schema


@pytest.mark.parametrize("name", [n for n, s in catalog().topics.items() if s.value_schema])
def test_a_topic_codec_writes_its_topics_newest_schema(name: str) -> None:
    schema = catalog().topics[name].value_schema
    assert schema is not None
    assert topic_codec(name).writer == catalog().latest(schema)


def test_sink_routes_are_the_catalogs_stored_topics() -> None:
    routes = routes_from_catalog(TOPICS)
    assert list(routes) == [f"test.{name}" for name in STORED]
    for name, spec in STORED.items():
        route = routes[f"test.{name}"]
        assert spec.table is not None
        assert route.table == ddl.tables()[spec.table.name]
        assert route.owns_rejects == (name not in (RAW, DLQ))
        if spec.family is None:
            assert route.validate is None
        else:
            assert getattr(route.validate, "__self__", None) is spec.model_class()

"""`shipledger schemas check`: version pairs proven compatible by fastavro schema resolution."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner
from fastavro.validation import validate

import shipledger.schemas.cli as schemas_cli
from shipledger.cli import cli
from shipledger.schemas import compat
from shipledger.schemas.compat import (
    BACKWARD,
    CATALOG,
    FORWARD,
    PARSE,
    check_catalog,
    check_pair,
    run_checks,
    sample_records,
    shipped_entries,
)
from shipledger.schemas.registry import Catalog, SchemaVersion, catalog
from shipledger.schemas.topic_spec import TopicSpec

EVENT = "io.shipledger.v1.DeploymentEvent"
Raw = dict[str, Any]


def _v1() -> Raw:
    """The shipped v1 DeploymentEvent, as a fresh copy to derive test versions from."""
    return copy.deepcopy(catalog().versions(EVENT)[0].raw)


def _field(raw: Raw, name: str) -> Raw:
    found: Raw = next(f for f in raw["fields"] if f["name"] == name)
    return found


def _derive(change: Callable[[Raw], None]) -> Raw:
    raw = _v1()
    change(raw)
    return raw


def _add(field: Raw) -> Callable[[Raw], None]:
    return lambda raw: raw["fields"].append(field)


def _drop(name: str) -> Callable[[Raw], None]:
    def change(raw: Raw) -> None:
        raw["fields"] = [f for f in raw["fields"] if f["name"] != name]

    return change


def _retype(name: str, avro_type: Any) -> Callable[[Raw], None]:
    return lambda raw: _field(raw, name).__setitem__("type", avro_type)


def _symbols(name: str, symbols: list[str]) -> Callable[[Raw], None]:
    return lambda raw: _field(raw, name)["type"].__setitem__("symbols", symbols)


def test_shipped_catalog_passes() -> None:
    cat = catalog()
    assert check_catalog(cat, shipped_entries()) == []
    labels = [c.label for c in run_checks(cat, shipped_entries())]
    assert labels[0] == "catalog"
    for name in ("DeploymentEvent", "DeploymentRecord", "Alert"):
        assert any(f"io.shipledger.v1.{name} v" in label for label in labels), name


@pytest.mark.parametrize(
    ("change", "directions", "mentions"),
    [
        # (a) v2 needs a value old data lacks: new readers break on old data.
        pytest.param(
            _add({"name": "team", "type": "string"}), {BACKWARD}, "team", id="new-required"
        ),
        # (b) v2 stops writing a field v1 readers require.
        pytest.param(_drop("actor"), {FORWARD}, "actor", id="removed-required"),
        # (c) a renamed symbol is unknown to the other side, whichever writes it.
        pytest.param(
            _symbols("event_type", ["started", "succeeded", "failed", "rolledback", "cancelled"]),
            {BACKWARD, FORWARD},
            "rolled",
            id="renamed-enum-symbol",
        ),
        pytest.param(_retype("service", "int"), {BACKWARD, FORWARD}, "service", id="string-to-int"),
        # Only the sample that writes the new symbol can reveal this one.
        pytest.param(
            lambda raw: _field(raw, "kind")["type"]["symbols"].append("canary"),
            {FORWARD},
            "canary",
            id="added-enum-symbol",
        ),
        # Only the non-null samples of the union can reveal this one.
        pytest.param(
            _retype("region", ["null", "int"]), {BACKWARD, FORWARD}, "region", id="nullable-retyped"
        ),
        # int -> long promotes when reading old data, but v1 cannot read a long.
        pytest.param(
            _retype("exit_code", ["null", "long"]), {FORWARD}, "exit_code", id="widened-int"
        ),
    ],
)
def test_incompatible_change_is_caught(
    change: Callable[[Raw], None], directions: set[str], mentions: str
) -> None:
    problems = check_pair(_v1(), _derive(change), old_version=1, new_version=2)
    assert {p.direction for p in problems} == directions, problems
    for p in problems:
        assert (p.schema, p.old_version, p.new_version) == (EVENT, 1, 2)
        assert mentions in p.reason
        assert str(p).startswith(f"{EVENT} v1 -> v2 {p.direction}: ")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            _add({"name": "team", "type": ["null", "string"], "default": None}), id="new-optional"
        ),
        pytest.param(
            _add({"name": "team", "type": "string", "default": "platform"}), id="new-with-default"
        ),
        pytest.param(_drop("region"), id="removed-optional"),
    ],
)
def test_compatible_change_passes_both_ways(change: Callable[[Raw], None]) -> None:
    assert check_pair(_v1(), _derive(change), old_version=1, new_version=2) == []


def test_union_default_must_match_first_branch() -> None:
    # fastavro accepts this; Avro (and a schema registry) take the default from branch one.
    new = _derive(_add({"name": "team", "type": ["string", "null"], "default": None}))
    (problem,) = check_pair(_v1(), new, old_version=1, new_version=2)
    assert problem.direction == PARSE
    assert "team" in problem.reason and 'put "null" first' in problem.reason


def test_invalid_schema_is_a_parse_problem() -> None:
    new = _derive(_retype("service", "varchar"))
    (problem,) = check_pair(_v1(), new)
    assert problem.direction == PARSE and "new is not a valid Avro schema" in problem.reason


def test_samples_cover_every_symbol_and_branch() -> None:
    raw = _v1()
    samples = [s.record for s in sample_records(raw)]
    for name in ("event_type", "kind", "trigger"):
        assert {r[name] for r in samples} == set(_field(raw, name)["type"]["symbols"]), name
    for f in raw["fields"]:
        if isinstance(f["type"], list):
            assert {r[f["name"]][0] for r in samples} == set(f["type"]), f["name"]
    for record in samples:  # each one is valid for the schema it came from
        validate(record, fastavro.parse_schema(raw, named_schemas={}))


def test_nested_choices_are_sampled() -> None:
    """Enums and unions inside a union branch and an array are exercised too."""
    raw = {
        "type": "record",
        "name": "Outer",
        "namespace": "t",
        "fields": [
            {
                "name": "inner",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Inner",
                        "fields": [
                            {
                                "name": "e",
                                "type": {"type": "enum", "name": "E", "symbols": ["a", "b"]},
                            }
                        ],
                    },
                ],
                "default": None,
            },
            {"name": "tags", "type": {"type": "array", "items": ["string", "long"]}},
            {"name": "again", "type": "t.E"},
        ],
    }
    records = [s.record for s in sample_records(raw)]
    assert {r["inner"][1]["e"] for r in records if r["inner"][0] == "t.Inner"} == {"a", "b"}
    assert {r["tags"][0][0] for r in records} == {"string", "long"}
    assert {r["again"] for r in records} == {"a", "b"}


def test_recursive_schemas_are_sampled_finitely() -> None:
    node: Raw = {
        "type": "record",
        "name": "Node",
        "namespace": "t",
        "fields": [
            {"name": "next", "type": ["null", "t.Node"], "default": None},
            {"name": "children", "type": {"type": "array", "items": "t.Node"}},
        ],
    }
    assert check_pair(node, node) == []
    forever: Raw = {"type": "record", "name": "Loop", "fields": [{"name": "me", "type": "Loop"}]}
    (problem,) = check_pair(forever, forever)
    assert problem.direction == PARSE and "nests in itself forever" in problem.reason


# --- the catalog ----------------------------------------------------------------------------


def _version(schema_id: int, version: int, raw: Raw) -> SchemaVersion:
    name = f"{raw['namespace']}.{raw['name']}"
    return SchemaVersion(
        schema_id, name, version, raw, fastavro.parse_schema(raw, named_schemas={})
    )


def _catalog(versions: list[SchemaVersion], topics: list[TopicSpec] | None = None) -> Catalog:
    return Catalog(versions, {t.name: t for t in topics or []})


def _topic(name: str, key: str, schema: str, dlq: str | None) -> TopicSpec:
    return TopicSpec.model_validate(
        {"name": name, "description": "", "key": key, "schema": schema, "dlq": dlq}
    )


def _entries(versions: list[SchemaVersion]) -> list[dict[str, Any]]:
    return [{"id": v.id, "name": v.name, "version": v.version} for v in versions]


def test_catalog_pairs_are_checked_in_both_directions() -> None:
    versions = [
        _version(1, 1, _v1()),
        _version(
            2, 2, _derive(_add({"name": "team", "type": ["null", "string"], "default": None}))
        ),
        _version(3, 3, _derive(_drop("actor"))),
    ]
    checks = run_checks(_catalog(versions), _entries(versions))
    by_label = {c.label: c for c in checks}
    assert set(by_label) == {
        "catalog",
        f"{EVENT} v1 <-> v2",
        f"{EVENT} v1 <-> v3",
        f"{EVENT} v2 <-> v3",
    }
    assert by_label[f"{EVENT} v1 <-> v2"].ok
    assert [p.direction for p in by_label[f"{EVENT} v1 <-> v3"].problems] == [FORWARD]
    assert [p.direction for p in by_label[f"{EVENT} v2 <-> v3"].problems] == [FORWARD]


def test_catalog_sanity() -> None:
    v1 = _version(1, 1, _v1())
    v3 = _version(
        2, 3, _derive(_add({"name": "team", "type": ["null", "string"], "default": None}))
    )
    topics = [
        _topic("raw", "deployment_id", EVENT, "dlq"),
        _topic("ghost", "deployment_id", "io.shipledger.v1.Nope", None),
        _topic("badkey", "colour", EVENT, "missing-dlq"),
    ]
    entries = [*_entries([v1, v3]), {"id": 1, "name": "io.shipledger.v1.Alert", "version": 1}]
    problems = [
        p for p in check_catalog(_catalog([v1, v3], topics), entries) if p.direction == CATALOG
    ]
    reasons = "\n".join(str(p) for p in problems)
    assert "id 1 is already used by io.shipledger.v1.DeploymentEvent v1" in reasons
    assert "versions [1, 3] are not consecutive from 1" in reasons
    assert "topic ghost catalog: schema 'io.shipledger.v1.Nope' is not in the catalog" in reasons
    assert "key 'colour' is not a field" in reasons
    assert "dead-letter topic 'missing-dlq' is not in the catalog" in reasons
    assert "dead-letter topic 'dlq'" in reasons  # the test catalog has no dlq topic either
    assert len(problems) == 6


# --- the command ----------------------------------------------------------------------------


def test_check_command_on_the_shipped_catalog() -> None:
    result = CliRunner().invoke(cli, ["schemas", "check"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "catalog: OK"
    assert all(line.endswith(": OK") for line in lines)
    assert any(line.startswith(f"{EVENT} v1") for line in lines)


def test_check_command_fails_on_an_incompatible_version(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = [_version(1, 1, _v1()), _version(2, 2, _derive(_retype("service", "int")))]
    monkeypatch.setattr(schemas_cli, "catalog", lambda: _catalog(versions))
    monkeypatch.setattr(compat, "shipped_entries", lambda: _entries(versions))
    result = CliRunner().invoke(cli, ["schemas", "check"], catch_exceptions=False)
    assert result.exit_code == 1
    assert f"{EVENT} v1 <-> v2: FAIL backward: v2 cannot read data written by v1" in result.output
    assert f"{EVENT} v1 <-> v2: FAIL forward: v1 cannot read data written by v2" in result.output
    assert "field service" in result.output


def test_schemas_help_lists_both_commands() -> None:
    result = CliRunner().invoke(cli, ["schemas", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "check" in result.output and "docs" in result.output
    top = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert "Check schema compatibility; generate the field dictionary." in top.output

"""The Avro contract and the pydantic models that mirror it."""

from __future__ import annotations

import io
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import BaseModel, ValidationError

from shipledger.schemas.families import FAMILIES
from shipledger.schemas.family_models import Approval
from shipledger.schemas.governance import GateReason
from shipledger.schemas.models import AVRO_INT_RANGE, Alert, DeploymentEvent, DeploymentRecord
from shipledger.schemas.registry import (
    CATALOG_JSON,
    AvroCodec,
    DecodeError,
    EncodeError,
    catalog,
    catalog_json,
)
from tests.kit import CHANGE_T0, change_event, deployment_event, deployment_record, sample_alert

#: The model of every topic's schema, as the catalog names it.
MODELS: dict[str, type[BaseModel]] = {
    topic.schema_name: topic.model_class() for topic in catalog().topics.values() if topic.model
}
#: Models of records nested in the schemas, by Avro record name.
NESTED: dict[str, type[BaseModel]] = {"Approval": Approval, "GateReason": GateReason}
SHA = "0123456789abcdef0123456789abcdef01234567"


def _avro_kind(avro_type: Any) -> tuple[str, bool]:
    """(python kind, nullable) of an Avro field type."""
    nullable = False
    if isinstance(avro_type, list):
        nullable = "null" in avro_type
        (avro_type,) = [t for t in avro_type if t != "null"]
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "timestamp-millis":
            return "datetime", nullable
        return {"enum": "str", "map": "dict", "array": "list"}[avro_type["type"]], nullable
    return {"string": "str", "int": "int", "long": "int", "boolean": "bool"}[avro_type], nullable


def _py_kind(annotation: Any) -> tuple[str, bool]:
    nullable = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        nullable = type(None) in args
        (annotation,) = [a for a in args if a is not type(None)]
    if typing.get_origin(annotation) is typing.Annotated:  # Name, AvroInt...
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "str", nullable
    if origin in (dict, list):
        return origin.__name__, nullable
    if annotation is datetime:
        return "datetime", nullable
    return annotation.__name__, nullable


def _int_bounds(model: type[BaseModel], name: str) -> tuple[int, int]:
    """The loosest (ge, le) a model's int field accepts, from every constraint it carries."""
    probe = {"ge": None, "le": None}
    for meta in _constraints(model.model_fields[name]):
        for bound in ("ge", "le"):
            value = getattr(meta, bound, None)
            if value is not None:
                current = probe[bound]
                probe[bound] = (
                    value
                    if current is None
                    else (max(current, value) if bound == "ge" else min(current, value))
                )
    assert probe["ge"] is not None and probe["le"] is not None, f"{name} has no bounds"
    return probe["ge"], probe["le"]


def _constraints(info: Any) -> list[Any]:
    """A field's constraint objects, including those inside `X | None` of Annotated X."""
    found = list(info.metadata)
    for arg in typing.get_args(info.annotation):
        if typing.get_origin(arg) is typing.Annotated:
            for meta in typing.get_args(arg)[1:]:
                found.extend(getattr(meta, "metadata", [meta]))
    return found


def _assert_int_range(avro_type: Any, model: type[BaseModel], name: str) -> None:
    """An Avro int/long field's model bounds lie inside the Avro type's range: every value
    the model accepts encodes."""
    kinds = avro_type if isinstance(avro_type, list) else [avro_type]
    (kind,) = [k for k in kinds if k != "null"]
    if isinstance(kind, str) and kind in AVRO_INT_RANGE:
        low, high = AVRO_INT_RANGE[kind]
        ge, le = _int_bounds(model, name)
        assert low <= ge and le <= high, (name, kind, ge, le)


def _assert_mirrors(record: dict[str, Any], model: type[BaseModel]) -> None:
    avro_fields = {f["name"]: f for f in record["fields"]}
    assert list(avro_fields) == list(model.model_fields), record["name"]
    for name, field in avro_fields.items():
        info = model.model_fields[name]
        assert _avro_kind(field["type"]) == _py_kind(info.annotation), name
        _assert_int_range(field["type"], model, name)
        avro_t = field["type"]
        if isinstance(avro_t, dict) and avro_t["type"] == "enum":
            assert list(typing.get_args(info.annotation)) == avro_t["symbols"], name
        if isinstance(avro_t, dict) and avro_t["type"] == "array":
            items = avro_t["items"]
            (py_items,) = typing.get_args(info.annotation)
            if isinstance(items, dict) and items["type"] == "record":
                assert py_items is NESTED[items["name"]], name
                _assert_mirrors(items, py_items)
            else:
                assert _py_kind(py_items) == ("str", False), name


@pytest.mark.parametrize("schema_name", sorted(MODELS))
def test_models_mirror_avro(schema_name: str) -> None:
    """Every Avro field exists in the model with the same type, nullability and enum symbols;
    nested records (a change's approvals) mirror their models too."""
    _assert_mirrors(catalog().latest(schema_name).raw, MODELS[schema_name])


def test_every_schema_has_a_model() -> None:
    names = {v.name for v in catalog().by_id.values()}
    assert names == set(MODELS)
    assert MODELS["io.shipledger.v1.DeploymentRecord"] is DeploymentRecord
    assert MODELS["io.shipledger.v1.Alert"] is Alert
    assert {FAMILIES[name].model for name in FAMILIES} < set(MODELS.values())


def test_event_round_trips_through_codec() -> None:
    event = DeploymentEvent.model_validate(
        {
            "deployment_id": "d-1",
            "event_type": "started",
            "service": "checkout",
            "target_env": "production",
            "commit_sha": SHA.upper(),
            "actor": "alice",
            "artifact_digest": "ab" * 32,
        }
    )
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    data = codec.encode(event.to_avro())
    newest = catalog().latest("io.shipledger.v1.DeploymentEvent")
    assert newest.version == 3
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == newest.id
    assert DeploymentEvent.model_validate(codec.decode(data)) == event
    assert event.environment == "production"
    assert event.commit_sha == SHA
    assert event.artifact_digest == "sha256:" + "ab" * 32


def test_encode_checks_records_strictly_however_it_writes_them() -> None:
    """A flat record of exactly the schema's fields is written without fastavro's strict
    check (it cannot fail it): same bytes; and every other record, or one that fails, is
    refused with strict fastavro's own reason."""
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    record = deployment_event(attributes={"k": "v"}, approvers=["ann"]).to_avro()
    strict = io.BytesIO()
    fastavro.schemaless_writer(strict, codec.writer.parsed, record, strict_allow_default=True)
    assert codec.encode(record)[5:] == strict.getvalue()
    with pytest.raises(EncodeError, match="more fields than the schema specifies: colour"):
        codec.encode({**record, "colour": "blue"})
    without = {k: v for k, v in record.items() if k != "service"}
    with pytest.raises(EncodeError, match="Field service is specified in the schema but missing"):
        codec.encode(without)
    for bad in ({**record, "exit_code": 2**40}, {**record, "service": 7}):
        with pytest.raises(EncodeError) as err:
            codec.encode(bad)
        with pytest.raises((ValueError, TypeError)) as direct:
            fastavro.schemaless_writer(
                io.BytesIO(), codec.writer.parsed, bad, strict_allow_default=True
            )
        assert str(err.value) == f"io.shipledger.v1.DeploymentEvent: {direct.value}"


def test_missing_fields_are_named() -> None:
    with pytest.raises(ValidationError) as err:
        DeploymentEvent.model_validate({"deployment_id": "d", "event_type": "started"})
    missing = {e["loc"][0] for e in err.value.errors() if e["type"] == "missing"}
    assert missing == {"service", "environment", "commit_sha", "actor"}


def test_short_sha_and_naive_time_rejected() -> None:
    base = {
        "deployment_id": "d",
        "event_type": "started",
        "service": "s",
        "environment": "prod",
        "actor": "a",
        "commit_sha": SHA,
    }
    with pytest.raises(ValidationError, match="full commit SHA"):
        DeploymentEvent.model_validate({**base, "commit_sha": "abc1234"})
    with pytest.raises(ValidationError, match="time zone"):
        DeploymentEvent.model_validate({**base, "occurred_at": "2026-01-01T10:00:00"})
    with pytest.raises(ValidationError, match="given twice"):
        DeploymentEvent.model_validate({**base, "env": "prod"})
    with pytest.raises(ValidationError, match="unknown field 'colour'"):
        DeploymentEvent.model_validate({**base, "colour": "blue"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x01\x00\x00\x00\x01abc", "magic"),
        (b"\x00\x00\x00\x00\x63abc", "unknown schema id 99"),
        (b"\x00\x00\x00\x00\x03abc", "expected io.shipledger.v1.DeploymentEvent"),
        (b"\x00\x00\x00\x00\x01\xff\xff", "corrupt"),
    ],
)
def test_decode_errors_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        AvroCodec("io.shipledger.v1.DeploymentEvent").decode(data)


def test_to_avro_is_the_python_dump_of_flat_and_nested_models() -> None:
    # Flat models give their field values as they are (no pydantic dump); a model holding
    # models (a change request's approvals) dumps them to dicts, as fastavro wants.
    approval = Approval(approver="ann", decision="approved", decided_at=CHANGE_T0)
    nested = change_event("c1", "approved", 0, approvals=[approval])
    for model in (
        deployment_event(attributes={"k": "v"}, approvers=["ann"]),
        deployment_record(),
        sample_alert(),
        nested,
    ):
        assert model.to_avro() == model.model_dump(mode="python")
    assert nested.to_avro()["approvals"] == [approval.model_dump(mode="python")]
    assert AvroCodec(catalog().topic("changes").schema_name).encode(nested.to_avro())


def test_the_catalog_read_is_catalog_yaml() -> None:
    """catalog.json, what every process reads, is catalog.yaml's document (`schemas check` and
    `schemas catalog --check` say the same in `make lint`)."""
    shipped = (Path(__file__).parents[2] / "schemas" / CATALOG_JSON).read_text(encoding="utf-8")
    assert shipped == catalog_json()

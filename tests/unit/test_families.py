"""The event families: lookup, per-field validation, Kafka keys, and the codec's versions
(producers write the newest; readers resolve any registered writer version to it)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from shipledger.schemas.families import FAMILIES, UnknownFamily, family_of
from shipledger.schemas.family_models import ChangeEvent, SourceEvent
from shipledger.schemas.fields import UnknownFieldError, apply_aliases
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec, catalog
from shipledger.schemas.validation import field_errors
from tests.kit import FAMILY_EVENTS as PAYLOADS
from tests.kit import SHA

EVENT = "io.shipledger.v1.DeploymentEvent"
AT = "2026-11-25T10:00:00Z"


def test_family_of_names_the_known_families() -> None:
    assert family_of("change").topic == "changes"
    with pytest.raises(UnknownFamily) as err:
        family_of("changes")
    assert "unknown event family 'changes'" in str(err.value)
    assert "deployment, change, source, artifact, signal, catalog" in str(err.value)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_round_trips_through_its_topic_schema(name: str) -> None:
    family = FAMILIES[name]
    assert catalog().topics[family.topic].value_schema == family.schema
    event = family.model.model_validate({"occurred_at": AT, **PAYLOADS[name]})
    codec = AvroCodec(family.schema)
    data = codec.encode(event.model_dump(mode="python"))
    assert int.from_bytes(data[1:5], "big") == catalog().latest(family.schema).id
    assert family.model.model_validate(codec.decode(data)) == event


def test_keys_are_tenant_scoped_natural_ids() -> None:
    change = family_of("change")
    event = change.model.model_validate({**PAYLOADS["change"], "tenant": "retail"})
    assert change.key(event) == b"retail/CHG1"
    signal = family_of("signal")
    unattributed = signal.model.model_validate({"kind": "alert_fired", "event_id": "e-9"})
    assert signal.key(unattributed) == b"default/e-9"
    deployment = family_of("deployment")
    assert deployment.key(DeploymentEvent.model_validate(PAYLOADS["deployment"])) == b"default/d-1"


@pytest.mark.parametrize(
    ("name", "change", "field", "reason"),
    [
        ("source", {"commit_sha": "abc1234"}, "commit_sha", "full commit SHA"),
        ("source", {"commit_shas": [SHA, "abc"]}, "commit_shas", "item 1 ('abc')"),
        ("artifact", {"digest": "md5:abc"}, "digest", "sha256 digest"),
        ("artifact", {"commit_sha": "xyz"}, "commit_sha", "full commit SHA"),
        ("change", {"state": "done"}, "state", "'opened', 'approved'"),
        ("change", {"planned_start": "2026-11-25T10:00:00"}, "planned_start", "time zone"),
        (
            "change",
            {"approvals": [{"approver": "b", "decision": "maybe", "decided_at": AT}]},
            "approvals.0.decision",
            "'approved' or 'rejected'",
        ),
        ("signal", {"kind": "page"}, "kind", "'incident_opened'"),
        ("catalog", {"entity": "team"}, "entity", "'service' or 'environment'"),
        ("catalog", {"occurred_at": "2026-11-25 10:00"}, "occurred_at", "time zone"),
    ],
)
def test_bad_fields_are_named_with_the_reason(
    name: str, change: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as err:
        FAMILIES[name].model.model_validate({**PAYLOADS[name], **change})
    errors = dict(field_errors(err.value))
    assert field in errors, errors
    assert reason in errors[field]


def test_a_change_window_must_not_end_before_it_starts() -> None:
    with pytest.raises(ValidationError, match="planned_end is before planned_start"):
        ChangeEvent.model_validate({**PAYLOADS["change"], "planned_end": "2026-11-24T00:00:00Z"})


def test_family_events_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="repo_url"):
        SourceEvent.model_validate({**PAYLOADS["source"], "repo_url": "x"})


# --- aliases: unknown keys are reported, never guessed ------------------------------------


def test_unknown_key_is_named_with_a_near_miss_suggestion() -> None:
    known = DeploymentEvent.model_fields
    with pytest.raises(UnknownFieldError) as err:
        apply_aliases({"enviroment": "prod", "colour": "blue"}, known)
    assert err.value.keys == ["enviroment", "colour"]
    assert "unknown field 'enviroment' (did you mean 'environment'?)" in str(err.value)
    assert "unknown field 'colour'" in str(err.value)
    assert "colour' (did you mean" not in str(err.value)


def test_a_near_miss_of_an_alias_suggests_the_canonical_name() -> None:
    with pytest.raises(UnknownFieldError, match=r"'triggerd_by' \(did you mean 'actor'\?\)"):
        apply_aliases({"triggerd_by": "alice"}, DeploymentEvent.model_fields)


def test_aliases_still_map_and_a_near_miss_is_never_mapped() -> None:
    assert apply_aliases({"env": "prod", "sha": SHA}, DeploymentEvent.model_fields) == {
        "environment": "prod",
        "commit_sha": SHA,
    }
    with pytest.raises(ValidationError) as err:
        DeploymentEvent.model_validate({**PAYLOADS["deployment"], "comit_sha": SHA})
    assert "unknown field 'comit_sha' (did you mean 'commit_sha'?)" in str(err.value)


# --- versions: write the newest, read every registered one ---------------------------------


def _v1_framed(record: dict[str, Any]) -> bytes:
    """What a producer still on v1 sends: schema id 1 in the framing, v1 body."""
    v1 = catalog().versions(EVENT)[0]
    assert (v1.id, v1.version) == (1, 1)
    buf = io.BytesIO()
    buf.write(b"\x00" + v1.id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buf, v1.parsed, record)
    return buf.getvalue()


def test_producers_write_the_newest_version() -> None:
    codec = AvroCodec(EVENT)
    newest = catalog().latest(EVENT)
    assert (newest.id, newest.version) == (11, 3)
    event = DeploymentEvent.model_validate(PAYLOADS["deployment"])
    assert codec.encode(event.to_avro())[1:5] == (11).to_bytes(4, "big")


def test_a_v1_message_decodes_under_the_v2_reader_with_defaults() -> None:
    v1_fields = {f["name"] for f in catalog().versions(EVENT)[0].raw["fields"]}
    event = DeploymentEvent.model_validate({**PAYLOADS["deployment"], "occurred_at": AT})
    v1_record = {k: v for k, v in event.to_avro().items() if k in v1_fields}
    decoded = AvroCodec(EVENT).decode(_v1_framed(v1_record))
    assert decoded["source"] is None and decoded["team"] is None
    assert decoded["approvers"] == [] and decoded["pull_requests"] == []
    assert decoded["missing_metadata"] == []
    parsed = DeploymentEvent.model_validate(decoded)
    assert parsed.occurred_at == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert parsed.commit_sha == SHA


def test_a_v3_event_without_a_commit_is_flagged_and_old_readers_still_read_it() -> None:
    """Declared missing (webhooks of third parties only): stored empty, v2 reads it."""
    event = DeploymentEvent.model_validate(
        {**PAYLOADS["deployment"], "commit_sha": None, "missing_metadata": ["commit_sha"]}
    )
    assert event.commit_sha == "" and event.missing_metadata == ["commit_sha"]
    codec = AvroCodec(EVENT)
    framed = codec.encode(event.to_avro())
    assert DeploymentEvent.model_validate(codec.decode(framed)) == event
    v2 = catalog().versions(EVENT)[1]
    old = fastavro.schemaless_reader(
        io.BytesIO(framed[5:]), catalog().latest(EVENT).parsed, v2.parsed
    )
    assert isinstance(old, dict) and old["commit_sha"] == "" and "missing_metadata" not in old
    with pytest.raises(ValidationError, match="commit_sha"):
        DeploymentEvent.model_validate({**PAYLOADS["deployment"], "commit_sha": ""})
    with pytest.raises(ValidationError, match="given but listed"):
        DeploymentEvent.model_validate(
            {**PAYLOADS["deployment"], "missing_metadata": ["commit_sha"]}
        )


def test_a_v2_message_decodes_with_its_new_fields() -> None:
    event = DeploymentEvent.model_validate(
        {**PAYLOADS["deployment"], "pull_requests": ["#7"], "provenance_url": "https://p"}
    )
    codec = AvroCodec(EVENT)
    assert DeploymentEvent.model_validate(codec.decode(codec.encode(event.to_avro()))) == event

"""The pure processing chain: decode → validate → normalize → judge → correlate."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shipledger.lab.traffic import (
    change_requests,
    day_of_traffic,
    demo_policy,
    prod_builds,
    service_catalog,
)
from shipledger.processors.enrichment import fold
from shipledger.processors.step import alert_id, process, resolution_id
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent, ChangeEvent
from shipledger.schemas.models import DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import load_policy, parse_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.validation import EVENT_SCHEMA, Rejected, decode_event
from tests.kit import change_deployment, change_event

SHA = "f" * 40
ALERT_NS = uuid.UUID("5f1e9c1a-8d0b-4c7e-9a51-6a2b7c3d4e5f")
MONDAY_NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


def event(event_type: str, at: datetime, **kw: object) -> DeploymentEvent:
    data: dict[str, object] = {
        "deployment_id": "dep-1",
        "event_type": event_type,
        "service": "checkout",
        "environment": "production-eu-west-1",
        "commit_sha": SHA,
        "actor": "alice",
        "occurred_at": at,
    }
    data.update(kw)
    return DeploymentEvent.model_validate(data)


def test_lifecycle_and_alerts() -> None:
    policy = load_policy(None)
    started = process(event("started", MONDAY_NIGHT), None, policy)
    # The default policy also requires a built artifact digest in prod; this one carries none.
    judged = {"missing_change_ticket", "out_of_window", "artifact_digest_missing"}
    assert {a.rule for a in started.alerts} == judged
    assert started.record.status == "in_progress"
    assert started.record.environment == "prod" and started.record.region == "eu-west-1"
    assert started.record.environment_raw == "production-eu-west-1"
    assert all(a.policy_version == policy.full_version for a in started.alerts)
    assert started.alerts[0].alert_id == alert_id(started.event.event_id, started.alerts[0].rule)

    done = process(
        event("failed", MONDAY_NIGHT + timedelta(minutes=3), exit_code=2),
        started.record,
        policy,
    )
    assert done.alerts == []  # judged once, on the first event
    assert done.record.status == "failed"
    assert done.record.seq == 2 and done.record.event_count == 2
    assert done.record.duration_ms == 180_000
    assert set(done.record.alert_rules) == judged


def test_late_started_does_not_reopen() -> None:
    policy = load_policy(None)
    first = process(event("succeeded", MONDAY_NIGHT, duration_ms=5000), None, policy)
    late = process(event("started", MONDAY_NIGHT - timedelta(seconds=5)), first.record, policy)
    assert late.record.status == "succeeded"
    assert late.record.started_at == MONDAY_NIGHT - timedelta(seconds=5)
    assert late.record.duration_ms == 5000


def test_record_round_trips_through_json_state() -> None:
    policy = load_policy(None)
    record = process(event("started", MONDAY_NIGHT), None, policy).record
    assert DeploymentRecord.model_validate(record.model_dump(mode="json")) == record


def test_decode_rejects_with_field_named() -> None:
    codec = AvroCodec(EVENT_SCHEMA)
    good = event("started", MONDAY_NIGHT).to_avro()
    with pytest.raises(Rejected) as err:
        decode_event(codec, codec.encode({**good, "commit_sha": "abc"}))
    assert err.value.field == "commit_sha"
    assert "full commit SHA" in err.value.reason
    with pytest.raises(Rejected, match="magic"):
        decode_event(codec, b"not avro at all")


def test_blank_environment_is_rejected() -> None:
    codec = AvroCodec(EVENT_SCHEMA)
    data = codec.encode({**event("started", MONDAY_NIGHT).to_avro(), "environment": "  "})
    with pytest.raises(Rejected) as err:
        decode_event(codec, data)
    assert err.value.field == "environment"


def test_duration_is_start_to_finish_even_when_finish_came_first() -> None:
    policy = load_policy(None)
    done = process(event("succeeded", MONDAY_NIGHT), None, policy)
    assert done.record.duration_ms is None
    late = process(event("started", MONDAY_NIGHT - timedelta(minutes=20)), done.record, policy)
    assert late.record.duration_ms == 1_200_000


def test_v2_fields_reach_the_record_latest_non_empty_wins() -> None:
    policy = load_policy(None)
    v2 = {
        "team": "payments",
        "source": "webhook:github",
        "rollback_of": "dep-0",
        "approvers": ["bob"],
        "pull_requests": ["#7", "#8"],
        "provenance_url": "https://example.test/attestation",
    }
    started = process(event("started", MONDAY_NIGHT, **v2), None, policy)
    assert {k: getattr(started.record, k) for k in v2} == v2
    # A later event without them keeps them; one with new values replaces them.
    done = process(
        event("succeeded", MONDAY_NIGHT + timedelta(minutes=1), approvers=["carol"]),
        started.record,
        policy,
    )
    assert {k: getattr(done.record, k) for k in v2} == {**v2, "approvers": ["carol"]}


def test_a_v1_event_gives_a_record_with_empty_v2_fields() -> None:
    record = process(event("started", MONDAY_NIGHT), None, load_policy(None)).record
    assert (record.team, record.source, record.rollback_of, record.provenance_url) == (None,) * 4
    assert record.approvers == [] and record.pull_requests == []


def test_records_are_what_validating_their_values_makes() -> None:
    """Records and alerts are built from validated values without validating them again
    (`processors.trusted`): a day of the lab's traffic judged against its catalog, builds
    and change requests gives records and alerts that validation keeps exactly as they are,
    every field in its place."""
    day = date(2026, 6, 3)
    events = list(day_of_traffic(day))
    families: dict[str, type[ChangeEvent] | type[ArtifactEvent] | type[CatalogEvent]] = {
        "change": ChangeEvent,
        "artifact": ArtifactEvent,
        "catalog": CatalogEvent,
    }
    view = fold(
        [
            families[str(e["family"])].model_validate({k: v for k, v in e.items() if k != "family"})
            for e in [*service_catalog(day), *prod_builds(events), *change_requests(events)]
        ]
    )
    policy = parse_policy(demo_policy(day))
    state: dict[tuple[str, str], DeploymentRecord] = {}
    alerts = 0
    for each in events:
        key = (each.tenant, each.deployment_id)
        result = process(each, state.get(key), policy, view=view)
        state[key] = result.record
        for made in (result.record, *result.alerts):
            assert list(made.__dict__) == list(type(made).model_fields)
            assert type(made).model_validate(made.__dict__).__dict__ == made.__dict__
        alerts += len(result.alerts)
    assert any(r.change_state for r in state.values()) and any(r.tier for r in state.values())
    assert alerts


def test_a_policy_version_validation_would_change_is_validated_on_the_record() -> None:
    """The record's values made outside the event (here the policy's version, which the policy
    file gives as it is) are validated when they are not plain: stripped, or refused, as the
    alerts' are."""
    padded = parse_policy("version: ' v7 '\n")
    started = process(event("started", MONDAY_NIGHT), None, padded)
    assert started.record.policy_version == padded.full_version.strip()
    assert {a.policy_version for a in started.alerts} == {started.record.policy_version}
    with pytest.raises(ValidationError, match="policy_version"):
        process(event("started", MONDAY_NIGHT), None, parse_policy('version: "v\\a7"\n'))


@given(st.text(), st.sampled_from(["out_of_window", "freeze_violation"]), st.integers(1, 5))
def test_alert_and_resolution_ids_are_uuid5_of_event_rule_and_generation(
    event_id: str, rule: str, generation: int
) -> None:
    name = f"{event_id}/{rule}" if generation == 1 else f"{event_id}/{rule}/{generation}"
    assert alert_id(event_id, rule, generation) == str(uuid.uuid5(ALERT_NS, name))
    assert resolution_id(event_id) == str(uuid.uuid5(ALERT_NS, f"{event_id}/resolved"))


def test_an_alert_whose_message_validation_would_refuse_is_refused() -> None:
    """An alert is validated when a value made for it is not plain: a change request naming
    services enough to make a message longer than any string may be is refused as before."""
    services = [f"service-{i:04}-{'x' * 180}" for i in range(60)]
    view = fold([change_event("c1", "approved", -60, services=services)])
    started = change_deployment(service="checkout")
    with pytest.raises(ValidationError, match="longer than 8192"):
        process(started, None, load_policy(None), view=view)

"""Re-judgement when a change request changes, pure: the outcome (`late_changes`), and the
state the restore rebuilds from the ledger's alerts (the handler and the refresh that emit it:
tests/unit/test_handler.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shipledger.processors.enrichment import Enrichment, fold
from shipledger.processors.late_changes import rejudge_stored
from shipledger.processors.step import alert_id, process, resolution_id
from shipledger.schemas.family_models import ChangeEvent
from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import parse_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.up.restore import StoredAlert, holding_of
from tests.kit import CHANGE_T0, change_deployment, change_event

T0 = CHANGE_T0
NOW = datetime(2026, 11, 26, tzinfo=UTC)
POLICY = parse_policy(
    "version: t\ndefaults:\n  require_change_ticket: [prod]\n  require_artifact_digest: []\n"
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def change(event_id: str, state: str, minutes: float, change_id: str = "CHG1") -> ChangeEvent:
    return change_event(event_id, state, minutes, change_id=change_id)


def raw(event_id: str = "e1", deployment: str = "dep-1", **kw: Any) -> bytes:
    event = change_deployment(event_id=event_id, deployment_id=deployment, **kw)
    return AvroCodec(EVENT_SCHEMA).encode(event.to_avro())


def first_record(view: Enrichment) -> tuple[DeploymentRecord, list[Alert]]:
    event = DeploymentEvent.model_validate(AvroCodec(EVENT_SCHEMA).decode(raw()))
    result = process(event, None, POLICY, view=view)
    return result.record, result.alerts


def resolved_then_not_approved() -> list[StoredAlert]:
    """What the ledger holds of a deployment whose change_ticket_unknown alert a re-judgement
    resolved while raising change_not_approved."""
    first = alert_id("e1", "change_ticket_unknown")
    return [
        StoredAlert("change_ticket_unknown", first, False),
        StoredAlert("change_ticket_unknown", resolution_id(first), True, first),
        StoredAlert("change_not_approved", alert_id("e1", "change_not_approved"), False),
    ]


def test_a_late_approval_from_before_the_start_resolves_the_alert() -> None:
    view = fold([change("c1", "opened", -120)])
    record, (alert,) = first_record(view)
    assert alert.rule == "change_not_approved"
    view.apply(change("c2", "approved", -15))  # delivered late, happened before the start
    judged = rejudge_stored(
        record, "e1", {alert.rule: alert.alert_id}, {alert.rule: 1}, view, POLICY, NOW
    )
    assert judged.alerts == ()
    (done,) = judged.resolutions
    assert (done.kind, done.resolves, done.rule) == ("resolution", alert.alert_id, alert.rule)
    assert done.alert_id == resolution_id(alert.alert_id)
    assert "'approved' when the deployment started" in done.message
    assert judged.record is not None
    assert (judged.record.seq, judged.record.event_count) == (2, 1)
    assert judged.record.alert_rules == []
    assert judged.record.change_state == "approved"
    assert judged.record.last_event_id == "e1" and judged.record.record_id != "e1"


def test_an_approval_after_the_start_changes_nothing() -> None:
    view = fold([change("c1", "opened", -120)])
    record, (alert,) = first_record(view)
    view.apply(change("c2", "approved", 5))
    judged = rejudge_stored(
        record, "e1", {alert.rule: alert.alert_id}, {alert.rule: 1}, view, POLICY, NOW
    )
    assert judged.empty


def test_a_rule_raised_again_after_its_resolution_gets_the_next_generation() -> None:
    view = fold([change("c2", "approved", -15)])
    record, alerts = first_record(view)
    assert alerts == []
    view.apply(change("c3", "rejected", -5))  # a later-delivered rejection, before the start
    judged = rejudge_stored(record, "e1", {}, {"change_not_approved": 1}, view, POLICY, NOW)
    (again,) = judged.alerts
    assert again.alert_id == alert_id("e1", "change_not_approved", 2)
    assert again.alert_id != alert_id("e1", "change_not_approved")
    assert judged.record is not None and judged.record.alert_rules == ["change_not_approved"]


def test_the_restore_rebuilds_what_holds_from_alerts_and_resolutions() -> None:
    record, _ = first_record(Enrichment())  # change_ticket_unknown holds on the record
    stored = resolved_then_not_approved()
    holding, raised = holding_of(record, "e1", stored)
    # The record (seq 1) says change_ticket_unknown holds but its only alert was resolved:
    # its second-generation alert never reached the ledger, so it is not claimed to hold.
    assert holding == {"change_not_approved": alert_id("e1", "change_not_approved")}
    assert raised == {"change_not_approved": 1, "change_ticket_unknown": 1}
    assert holding_of(record, "e1", []) == ({}, {})


def test_an_alert_lost_with_the_broker_is_raised_again_under_its_id_by_the_sweep() -> None:
    """The restore leaves a rule whose alert the ledger never got out of what holds; the
    worker's sweep then raises that alert again, same id, and the record stays as it was."""
    record, _ = first_record(Enrichment())  # change_ticket_unknown holds on the record
    holding, raised = holding_of(record, "e1", [])
    judged = rejudge_stored(record, "e1", holding, raised, Enrichment(), POLICY, NOW)
    assert [a.alert_id for a in judged.alerts] == [alert_id("e1", "change_ticket_unknown")]
    assert judged.record is None and not judged.resolutions


def test_the_sweep_mends_a_record_that_disagrees_with_the_alerts_that_hold() -> None:
    """A kill -9 of the embedded stack can store a re-judgement's alerts and resolution but
    not its record version (the sink inserts table by table; the broker's copy dies with it).
    The restore then rebuilds what holds from the alerts, and the record still names the
    resolved rule and lacks the raised one: the sweep raises and resolves nothing (the alerts
    are right) but must emit the record version that says what holds (the chaos test caught
    7 such records)."""
    record, _ = first_record(Enrichment())  # change_ticket_unknown holds on the record
    stored = resolved_then_not_approved()
    holding, raised = holding_of(record, "e1", stored)
    view = fold([change("c1", "opened", -120)])  # known now, and not approved at the start
    judged = rejudge_stored(record, "e1", holding, raised, view, POLICY, NOW)
    assert judged.alerts == () and judged.resolutions == ()
    assert judged.record is not None
    assert (judged.record.seq, judged.record.alert_rules) == (2, ["change_not_approved"])
    again = rejudge_stored(judged.record, "e1", holding, raised, view, POLICY, NOW)
    assert again.empty  # mended once: the next sweep finds nothing to do

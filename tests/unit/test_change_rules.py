"""Change requests folded by event time, the change rules, and re-judgement: pure, no Kafka."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shipledger.processors.change_rules import (
    CHANGE_RULE_NAMES,
    ChangeContext,
    judge_change,
    schedule_difference,
)
from shipledger.processors.changes import ChangeRequest, fold
from shipledger.processors.rejudge import _REASONS, _REQUEST_REASONS, Rejudgement, rejudge
from shipledger.processors.rules import Finding, Subject
from shipledger.schemas.family_models import ChangeEvent
from shipledger.schemas.policy import Rules, parse_policy
from tests.kit import CHANGE_T0, change_event

T0 = CHANGE_T0  # the deployment starts here


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def change(state: str, minutes: float, event_id: str | None = None, **kw: Any) -> ChangeEvent:
    return change_event(event_id or f"{state}-{minutes}", state, minutes, **kw)


def deployment(**kw: Any) -> Subject:
    base: dict[str, Any] = {
        "environment": "prod",
        "kind": "release",
        "change_id": "CHG1",
        "occurred_at": T0,
        "service": "checkout",
        "tenant": "retail",
        "actor": "alice",
        "trigger": "automated",
    }
    return Subject(**{**base, **kw})


RULES = Rules()


def fired(
    events: list[ChangeEvent], subject: Subject | None = None, rules: Rules = RULES
) -> list[str]:
    context = ChangeContext(fold(events))
    return [f.rule for f in judge_change(subject or deployment(), context, rules)]


WINDOW: dict[str, Any] = {"planned_start": at(-30), "planned_end": at(60)}


# --- the fold -------------------------------------------------------------------------------


def test_state_history_is_ordered_by_event_time_not_arrival() -> None:
    events = [change("scheduled", -5), change("opened", -60), change("approved", -20)]
    request = fold(events)
    assert request is not None
    assert [s for _, s in request.history] == ["opened", "approved", "scheduled"]
    assert request.state == "scheduled"
    assert request.as_of(at(-30)).state == "opened"
    assert request.as_of(at(-61)).state is None


def test_window_and_scope_come_from_the_latest_revision_that_states_them() -> None:
    request = fold(
        [
            change("opened", -60, services=["checkout"], environments=["production"], **WINDOW),
            change("approved", -20),  # a transition notice: no window, no scope
        ]
    )
    assert request is not None
    assert request.environments == ("prod",)
    assert request.services == ("checkout",)
    assert (request.planned_start, request.planned_end) == (at(-30), at(60))


# Events of one change request: a few states at a few times, with approvals, some repeated.
_events = st.lists(
    st.builds(
        lambda state, minute, n, approver, decision: change(
            state,
            minute,
            event_id=f"e{n}",
            approvals=[{"approver": approver, "decision": decision, "decided_at": at(minute)}],
            services=[f"svc{n % 3}"] if n % 2 else [],
            planned_start=at(minute - 10) if n % 3 == 0 else None,
        ),
        st.sampled_from(["opened", "approved", "rejected", "scheduled", "cancelled", "closed"]),
        st.integers(-90, 90),
        st.integers(0, 12),
        st.sampled_from(["bob", "carol"]),
        st.sampled_from(["approved", "rejected"]),
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda e: e.event_id,
)


@settings(max_examples=200, deadline=None)
@given(events=_events, data=st.data())
def test_out_of_order_and_duplicate_events_fold_to_the_same_state(
    events: list[ChangeEvent], data: st.DataObject
) -> None:
    delivered = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    assert fold(delivered) == fold(events)
    # ... and so does folding two halves separately delivered, then the rest again.
    half = len(delivered) // 2
    first = fold(delivered[:half]) or ChangeRequest("retail", "CHG1")
    for event in delivered[half:] + delivered[:half]:
        first = first.add(event)
    assert first == fold(events)


# --- the rules ------------------------------------------------------------------------------


def test_compliant_deployment_has_no_findings() -> None:
    events = [
        change("opened", -60, services=["checkout"], environments=["prod"], **WINDOW),
        change("approved", -20),
    ]
    assert fired(events) == []


def test_change_ticket_unknown() -> None:
    """CHG1 is named, nothing of it was reported: flagged in prod only."""
    assert fired([]) == ["change_ticket_unknown"]
    assert fired([], deployment(environment="dev")) == []
    assert fired([], deployment(change_id=None)) == []  # missing_change_ticket's business


def test_change_not_approved_by_state_at_the_start() -> None:
    # The CAB rejected it before the deployment: flagged, with the state and since when.
    (finding,) = judge_change(
        deployment(), ChangeContext(fold([change("opened", -60), change("rejected", -10)])), RULES
    )
    assert finding.rule == "change_not_approved"
    assert finding.evidence["state_at_start"] == "rejected"
    assert finding.evidence["state_since"] == at(-10).isoformat()
    for state in ("opened", "rejected", "cancelled", "closed"):
        assert fired([change(state, -1)]) == ["change_not_approved"], state
    for state in ("approved", "scheduled"):
        assert fired([change(state, -1)]) == [], state
    # A state reached exactly at the start counts.
    assert fired([change("approved", 0)]) == []


def test_a_later_approval_does_not_excuse() -> None:
    events = [change("opened", -60), change("approved", 5)]
    (finding,) = judge_change(deployment(), ChangeContext(fold(events)), RULES)
    assert finding.rule == "change_not_approved"
    assert finding.evidence["approved_later_at"] == at(5).isoformat()
    assert "approved only at" in finding.message
    # The request did not exist yet when the deployment started.
    (finding,) = judge_change(deployment(), ChangeContext(fold([change("approved", 5)])), RULES)
    assert finding.evidence["state_at_start"] == ""
    assert "did not exist yet" in finding.message


def test_approved_states_are_policy() -> None:
    rules = Rules(approved_states=["approved", "scheduled", "implemented"])
    assert fired([change("implemented", -1)]) == ["change_not_approved"]
    assert fired([change("implemented", -1)], rules=rules) == []


def test_outside_change_window_with_tolerance() -> None:
    late = [change("approved", -60, planned_start=at(-50), planned_end=at(-10))]
    (finding,) = judge_change(deployment(), ChangeContext(fold(late)), RULES)
    assert finding.rule == "outside_change_window"
    assert finding.evidence["outside_by_s"] == "600"  # 10 minutes after the end
    assert finding.evidence["from_planned_start_s"] == "3000"
    assert "0:10:00 after" in finding.message
    assert fired(late, rules=Rules(change_window_tolerance="10m")) == []
    assert fired(late, rules=Rules(change_window_tolerance="9m")) == ["outside_change_window"]
    early = [change("approved", -60, planned_start=at(15))]
    (finding,) = judge_change(deployment(), ChangeContext(fold(early)), RULES)
    assert finding.evidence["outside_by_s"] == "-900" and "before" in finding.message
    # Both ends inclusive; no window, nothing to judge; not approved: another rule's case.
    assert fired([change("approved", -60, planned_start=at(0), planned_end=at(0))]) == []
    assert fired([change("approved", -60)]) == []
    assert fired([change("opened", -60, planned_start=at(15))]) == ["change_not_approved"]


def test_the_window_that_counts_is_the_one_known_at_the_start() -> None:
    """A reschedule after the deployment started does not excuse it."""
    events = [
        change("approved", -60, planned_start=at(30), planned_end=at(90)),
        change("scheduled", 20, planned_start=at(-10), planned_end=at(90)),
    ]
    assert fired(events) == ["outside_change_window"]


def test_schedule_difference_is_recorded_for_every_deployment_with_a_window() -> None:
    request = fold([change("approved", -60, **WINDOW)])
    assert request is not None
    diff = schedule_difference(at(5), request)
    assert diff is not None
    assert diff.outside_by == timedelta(0) and diff.from_planned_start == timedelta(minutes=35)
    assert schedule_difference(T0, fold([change("approved", -60)]) or request) is None


def test_change_scope_mismatch() -> None:
    scoped = [change("approved", -60, services=["payments"], environments=["production"])]
    (finding,) = judge_change(deployment(), ChangeContext(fold(scoped)), RULES)
    assert finding.rule == "change_scope_mismatch"
    assert "service checkout is not in payments" in finding.message
    assert fired([change("approved", -60, services=["checkout"], environments=["stage"])]) == [
        "change_scope_mismatch"
    ]
    assert fired([change("approved", -60, services=["checkout"], environments=["prd"])]) == []
    assert fired([change("approved", -60)]) == []  # names no scope: covers all


def test_unattributed_manual_deploy() -> None:
    approved = [change("approved", -60)]
    manual = deployment(trigger="manual", actor="root")
    assert fired(approved, manual) == ["unattributed_manual_deploy"]
    assert judge_change(manual, ChangeContext(fold(approved), actor_known=True), RULES) == []
    assert fired(approved, manual, Rules(service_accounts=["ROOT"])) == []
    assert fired(approved, deployment(actor="root")) == []  # automated
    assert fired([], deployment(trigger="manual", environment="dev", change_id=None)) == []


def test_per_kind_rules_extend_the_change_rules_to_stage() -> None:
    policy = parse_policy(
        "version: 1\ndefaults:\n  kinds:\n    schema_migration:\n"
        "      require_change_ticket: [prod, staging]\n"
        "      severities: {change_not_approved: critical}\n"
    )
    stage = deployment(environment="stage", kind="schema_migration")
    rejected = [change("rejected", -10)]
    assert fired(rejected, stage, policy.rules_for("retail", "schema_migration")) == [
        "change_not_approved"
    ]
    assert fired(rejected, deployment(environment="stage"), policy.rules_for("retail")) == []
    assert policy.rules_for("retail", "schema_migration").severities["change_not_approved"] == (
        "critical"
    )
    assert policy.rules_for("retail", "release").severities["change_not_approved"] == "high"


# --- re-judgement ---------------------------------------------------------------------------


def test_every_change_rule_has_a_resolution_reason() -> None:
    assert not set(_REASONS) & set(_REQUEST_REASONS)
    assert set(_REASONS) | set(_REQUEST_REASONS) == CHANGE_RULE_NAMES


def test_late_request_resolves_unknown_and_raises_not_approved_once() -> None:
    subject = deployment()
    first = judge_change(subject, ChangeContext(None), RULES)
    assert [f.rule for f in first] == ["change_ticket_unknown"]
    # The request arrives late: it was still open at the start.
    request = fold([change("opened", -60)])
    step = rejudge(subject, first, ChangeContext(request), RULES)
    assert [f.rule for f in step.raised] == ["change_not_approved"]
    assert [r.rule for r in step.resolved] == ["change_ticket_unknown"]
    assert "was reported" in step.resolved[0].reason
    # An approval after the start arrives: nothing new, nothing resolved, nothing raised twice.
    assert request is not None
    later = request.add(change("approved", 5))
    still_open = list(step.raised)
    assert rejudge(subject, still_open, ChangeContext(later), RULES) == rejudge(
        subject, still_open, ChangeContext(request), RULES
    )
    assert rejudge(subject, still_open, ChangeContext(later), RULES).raised == ()


def test_late_approval_that_happened_before_the_start_resolves() -> None:
    subject = deployment()
    request = fold([change("opened", -60)])
    open_findings = judge_change(subject, ChangeContext(request), RULES)
    assert [f.rule for f in open_findings] == ["change_not_approved"]
    assert request is not None
    # Delivered late, but the CAB approved 10 minutes before the start.
    step = rejudge(
        subject, open_findings, ChangeContext(request.add(change("approved", -10))), RULES
    )
    assert step.raised == ()
    (resolution,) = step.resolved
    assert resolution.rule == "change_not_approved"
    assert "'approved' when the deployment started" in resolution.reason


def test_rejudge_leaves_other_rules_findings_alone() -> None:
    other = Finding("missing_change_ticket", "no ticket")
    step = rejudge(deployment(change_id=None), [other], ChangeContext(None), RULES)
    assert step == Rejudgement()


def test_findings_judged_against_a_request_resolve_once_it_is_not_known() -> None:
    open_findings = [Finding("change_not_approved", "open"), Finding("outside_change_window", "")]
    step = rejudge(deployment(change_id="CHG2"), open_findings, ChangeContext(None), RULES)
    assert [f.rule for f in step.raised] == ["change_ticket_unknown"]
    assert [(r.rule, r.reason) for r in step.resolved] == [
        (rule, "change request CHG2 is not known: change_ticket_unknown holds")
        for rule in ("change_not_approved", "outside_change_window")
    ]

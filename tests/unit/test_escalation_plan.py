"""What the escalator decides for each delivery (the table in receivers/plan.py), the ids of
its ledger rows, and the local record of deliveries that the decisions read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.receivers.engine import Outcome
from shipledger.receivers.plan import (
    AlertMessage,
    Planned,
    decide,
    deliveries,
    ledger_ids,
    outcome_id,
    outcome_row,
)
from shipledger.receivers.receiver import Ticket
from shipledger.receivers.record import DeliveryRecord, Recorded, State
from shipledger.schemas.letters import replay_headers
from shipledger.schemas.models import Escalation
from shipledger.schemas.policy import parse_policy
from tests.kit import sample_alert

AT = datetime(2026, 12, 22, 10, tzinfo=UTC)
POLICY = parse_policy(
    """\
version: plan-1
escalation:
  receivers:
    snow: {type: servicenow, url: "https://snow.example", credentials: snow}
    hook: {type: webhook, url: "https://hooks.example", credentials: hook}
  routes:
    - {name: all, receivers: [snow, hook]}
"""
)


def message(alert_id: str = "a-1", replayed: bool = False, offset: int = 0) -> AlertMessage:
    alert = sample_alert(
        alert_id=alert_id, policy_version="p", event_id="e-1", tenant="retail", occurred_at=AT
    )
    headers = replay_headers("0:7") if replayed else ()
    return AlertMessage(alert, b"retail/d-1", b"avro", "alerts", 0, offset, headers)


def row(planned: Planned, delivered: bool) -> Escalation:
    outcome = Outcome(Ticket("INC1") if delivered else None, 1, 201 if delivered else 500, "x")
    return outcome_row(planned, "servicenow", outcome, "p", AT)


def snow(msg: AlertMessage) -> Planned:
    return next(p for p in deliveries([msg], POLICY.escalation) if p.delivery.receiver == "snow")


def test_each_delivery_is_planned_once_per_batch() -> None:
    first, again = message(offset=1), message(offset=2)
    planned = deliveries([first, again, message("a-2", offset=3)], POLICY.escalation)
    assert [(p.message.offset, p.delivery.receiver) for p in planned] == [
        (1, "snow"),
        (1, "hook"),
        (3, "snow"),
        (3, "hook"),
    ]


def test_a_resolution_opens_no_ticket() -> None:
    alert = message().alert.model_copy(update={"kind": "resolution", "resolves": "a-0"})
    resolution = AlertMessage(alert, b"retail/d-1", b"avro", "alerts", 0, 4)
    assert deliveries([resolution], POLICY.escalation) == []


@pytest.mark.parametrize(
    ("recorded", "ledger", "replayed", "decision"),
    [
        (None, None, False, "send"),
        (None, "delivered", False, "skip"),
        (None, "delivered", True, "skip"),
        (None, "dead", False, "skip"),
        (None, "dead", True, "send"),
        ("sending", None, False, "send"),
        ("delivered+published", None, False, "skip"),
        ("delivered+published", None, True, "skip"),
        ("delivered", None, False, "republish"),
        ("dead+published", None, False, "skip"),
        ("dead+published", None, True, "send"),
        ("dead", None, False, "republish"),
        ("dead", None, True, "send"),
    ],
)
def test_decisions(
    recorded: str | None, ledger: State | None, replayed: bool, decision: str
) -> None:
    planned = snow(message(replayed=replayed))
    known: dict[str, Recorded] = {}
    if recorded is not None:
        state, _, published = recorded.partition("+")
        outcome = None if state == "sending" else row(planned, state == "delivered")
        known[planned.delivery.id] = Recorded(state, outcome, bool(published))  # type: ignore[arg-type]
    in_ledger: dict[str, State] = {planned.delivery.id: ledger} if ledger else {}
    plan = decide([planned], known, in_ledger)
    got = (
        "send" if plan.send else "republish" if plan.republish else "skip" if plan.skipped else "?"
    )
    assert got == decision
    assert bool(plan.learnt) == (recorded is None and decision == "skip")


def test_outcome_ids_deduplicate_what_must_and_only_that() -> None:
    planned, replayed = snow(message()), snow(message(replayed=True))
    assert planned.delivery.id == replayed.delivery.id  # one delivery, however it is read
    assert row(planned, True).event_id == row(replayed, True).event_id
    # A replayed letter that fails again is a new fact; a dead row is not a delivered one.
    assert row(planned, False).event_id != row(replayed, False).event_id
    assert row(planned, False).event_id != row(planned, True).event_id
    assert ledger_ids(planned) == {
        outcome_id(planned.delivery.id, "delivered"): "delivered",
        outcome_id(planned.delivery.id, "dead_lettered"): "dead",
    }
    assert list(ledger_ids(replayed).values()) == ["delivered"]


def test_a_receivers_odd_answer_fits_the_ledger() -> None:
    planned = snow(message())
    odd = Outcome(Ticket("INC\x001", "https://x\u2028y", "a" * 5000), 1, 201)
    stored = outcome_row(planned, "servicenow", odd, "p", AT)
    assert stored.ticket_key == "INC?1" and stored.ticket_url == "https://x?y"
    assert stored.reason is not None and len(stored.reason) == 1000


def test_the_record_survives_a_reopen(tmp_path: Path) -> None:
    planned = snow(message())
    delivery_id = planned.delivery.id
    record = DeliveryRecord(tmp_path / "escalations.sqlite3")
    record.begin(delivery_id, "retail", "a-1", "snow")
    assert record.states([delivery_id, "other"])[delivery_id] == Recorded("sending", None, False)
    settled = row(planned, True)
    record.settle(delivery_id, settled)
    record.close()
    record = DeliveryRecord(tmp_path / "escalations.sqlite3")
    assert record.states([delivery_id]) == {delivery_id: Recorded("delivered", settled, False)}
    record.mark_published([delivery_id])
    record.known_settled(delivery_id, "retail", "a-1", "snow", "dead")  # never overwrites
    assert record.states([delivery_id]) == {delivery_id: Recorded("delivered", settled, True)}
    record.close()

"""What the escalator does with each delivery of a batch of alerts, and the ledger row of each
outcome. Pure: the states come in, the decisions go out.

A delivery (alert, receiver) is decided by what is known of it, the local record first, the
ledger when the record does not know it (the record was lost, or another instance did it):

| known                               | a replayed alert (`dlq replay`) | any other alert       |
|-------------------------------------|---------------------------------|-----------------------|
| delivered, row published            | skip                            | skip                  |
| delivered, row not yet acknowledged | publish the row again           | publish the row again |
| dead, row published                 | send (the point of the replay)  | skip                  |
| dead, row not yet acknowledged      | send                            | publish the row again |
| sending (interrupted: in doubt)     | send: the kind's find runs first| same                  |
| unknown here, delivered in ledger   | skip                            | skip                  |
| unknown here, dead in ledger        | send                            | skip                  |
| unknown anywhere                    | send                            | send                  |

So a replayed alert never opens a second ticket, and a dead-lettered one can be sent again
by replaying its letter.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from shipledger.fields import picked
from shipledger.receivers import text
from shipledger.receivers.engine import Outcome
from shipledger.receivers.receiver import Delivery
from shipledger.receivers.record import Recorded, State
from shipledger.schemas.escalation import Escalation as EscalationPolicy
from shipledger.schemas.letters import replayed_from
from shipledger.schemas.models import Alert, Escalation

_OUTCOME_NS = uuid.UUID("5e0c9b1d-7f3a-4c2e-8b6d-2a9f1c4e7d30")


@dataclass(frozen=True)
class AlertMessage:
    """One alert as read from its topic: decoded, with its original bytes and headers (for a
    dead letter) and where it was read."""

    alert: Alert
    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes | str | None], ...] = ()

    @property
    def replayed_from(self) -> str:
        """The dead letter this alert was replayed from (`dlq replay`), "" if none."""
        return replayed_from(self.headers)


@dataclass(frozen=True)
class Planned:
    """One delivery of one alert message."""

    message: AlertMessage
    delivery: Delivery


@dataclass
class Plan:
    """The decisions for a batch: deliveries to `send`, settled ones whose row must be
    published again (`republish`), those the ledger knew of and the record did not
    (`learnt`, to remember), and how many were `skipped` as already done."""

    send: list[Planned] = field(default_factory=list)
    republish: list[tuple[Planned, Escalation]] = field(default_factory=list)
    learnt: list[tuple[Planned, State]] = field(default_factory=list)
    skipped: int = 0


def deliveries(
    messages: Iterable[AlertMessage],
    policy: EscalationPolicy,
    resolvers: Container[str] = frozenset(),
) -> list[Planned]:
    """Every delivery of `messages` the policy's routes ask for, each delivery once (the
    first message carrying it). A resolution goes only to the receivers in `resolvers`
    (those whose kind can close what it opened: PagerDuty, Opsgenie, Alertmanager, Slack,
    the webhook); a ticketing system (ServiceNow, Jira) keeps its ticket for a person to
    close, so it is never sent one. A resolution matches the routes of the alert it
    resolves: it carries the same rule, severity, tenant, team and environment."""
    seen: dict[str, Planned] = {}
    for message in messages:
        resolution = message.alert.kind == "resolution"
        for route, receiver in policy.deliveries(message.alert):
            if resolution and receiver not in resolvers:
                continue
            planned = Planned(message, Delivery(message.alert, route, receiver))
            seen.setdefault(planned.delivery.id, planned)
    return list(seen.values())


def outcome_id(delivery_id: str, status: str, replayed_from: str = "") -> str:
    """The ledger id of an outcome: one delivered row per delivery; one dead row per
    delivery and replay (a replayed letter that fails again is a new fact)."""
    origin = replayed_from if status == "dead_lettered" else ""
    return str(uuid.uuid5(_OUTCOME_NS, f"{delivery_id}/{status}/{origin}"))


def ledger_ids(planned: Planned) -> dict[str, State]:
    """The ledger ids that would say how `planned` ended: its delivered row, and (unless the
    alert is a replay, which sends a dead delivery again anyway) its dead row."""
    delivery_id = planned.delivery.id
    ids: dict[str, State] = {outcome_id(delivery_id, "delivered"): "delivered"}
    if not planned.message.replayed_from:
        ids[outcome_id(delivery_id, "dead_lettered")] = "dead"
    return ids


def decide(
    planned_batch: Iterable[Planned],
    recorded: Mapping[str, Recorded],
    in_ledger: Mapping[str, State],
) -> Plan:
    """The plan for a batch (the table in the module docstring). `recorded`: the local
    record's states by delivery id; `in_ledger`: how the ledger says the others ended."""
    plan = Plan()
    for planned in planned_batch:
        replayed = bool(planned.message.replayed_from)
        known = recorded.get(planned.delivery.id)
        if known is None:
            ledger = in_ledger.get(planned.delivery.id)
            if ledger is None or (ledger == "dead" and replayed):
                plan.send.append(planned)
            else:
                plan.learnt.append((planned, ledger))
                plan.skipped += 1
        elif known.state == "sending" or (known.state == "dead" and replayed):
            plan.send.append(planned)
        elif not known.published and known.outcome is not None:
            plan.republish.append((planned, known.outcome))
        else:
            plan.skipped += 1
    return plan


#: What an escalation restates of its alert.
_RESTATED = (
    "tenant",
    "region",
    "alert_id",
    "deployment_id",
    "rule",
    "severity",
    "service",
    "environment",
)


def outcome_row(
    planned: Planned,
    receiver_type: str,
    outcome: Outcome,
    policy_version: str,
    at: datetime,
) -> Escalation:
    """The ledger row of how `planned` ended."""
    alert = planned.message.alert
    status = "delivered" if outcome.delivered else "dead_lettered"
    ticket = outcome.ticket
    return Escalation(
        event_id=outcome_id(planned.delivery.id, status, planned.message.replayed_from),
        occurred_at=at,
        **picked(alert, *_RESTATED),
        route=planned.delivery.route,
        receiver=planned.delivery.receiver,
        receiver_type=receiver_type,
        status=status,
        attempts=outcome.attempts,
        ticket_key=text.clean(ticket.key if ticket else None, 200),
        ticket_url=text.clean(ticket.url if ticket else None),
        http_status=outcome.status,
        reason=text.clean(ticket.note if ticket else outcome.reason),
        policy_version=policy_version,
        action=planned.delivery.action,
        resolved_alert_id=alert.resolves or "",
    )

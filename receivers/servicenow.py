"""ServiceNow: an incident (or a change task) per alert, through the Table API.

Create: `POST {url}/api/now/table/{table}` with basic authentication (`user:password`), JSON
fields `short_description`, `description`, `urgency` and `impact` (from the alert's severity:
the instance's priority matrix makes critical P1 ... info P5), `correlation_id` (the alert
id) and `correlation_display` (`shipledger`), plus the receiver's own `fields` (e.g.
`assignment_group`, `category`; a change task usually needs `change_request`, the sys_id of
its parent change). `sysparm_fields=sys_id,number` keeps the answer small. ServiceNow
answers 201 with `{"result": {"sys_id", "number", ...}}`: the ticket key is the number, the
link `{url}/{table}.do?sys_id=...`.

Idempotency: the Table API has no idempotency key, but `correlation_id` is the field
ServiceNow keeps for a third party's id, so before creating, the engine asks
`GET {url}/api/now/table/{table}?sysparm_query=correlation_id=<alert id>` and takes the
ticket it finds instead of opening a second one.
"""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from shipledger.receivers import text
from shipledger.receivers.receiver import (
    Delivery,
    ReceiverKind,
    Target,
    Ticket,
    answer_ticket,
    basic_auth,
    found_under,
    json_request,
    not_ours,
    options_of,
)

#: (urgency, impact) per severity: 1 is high. The default priority lookup gives P1..P5.
URGENCY_IMPACT: dict[str, tuple[str, str]] = {
    "critical": ("1", "1"),
    "high": ("1", "2"),
    "medium": ("2", "2"),
    "low": ("2", "3"),
    "info": ("3", "3"),
}
_OURS = frozenset({"correlation_id", "correlation_display"})


class ServiceNowOptions(BaseModel):
    """`table`: incident (default) or change_task; `fields`: more fields of the record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Literal["incident", "change_task"] = "incident"
    fields: Annotated[dict[str, str], not_ours(_OURS, "the alert id")] = Field(default_factory=dict)


def _table_url(target: Target) -> str:
    table = options_of(target, ServiceNowOptions).table
    return f"{target.url}/api/now/table/{table}"


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The incident (or change task) of `delivery`."""
    alert = delivery.alert
    urgency, impact = URGENCY_IMPACT[alert.severity]
    body = {
        "short_description": text.summary(alert),
        "description": text.description(alert),
        "urgency": urgency,
        "impact": impact,
        **options_of(target, ServiceNowOptions).fields,
        "correlation_id": alert.alert_id,
        "correlation_display": "shipledger",
    }
    return json_request(
        "POST", _table_url(target), params={"sysparm_fields": "sys_id,number"}, body=body
    )


def _ticket(record: object, target: Target) -> Ticket:
    if not isinstance(record, dict) or not record.get("sys_id"):
        raise ValueError("no record with a sys_id in the answer")
    table = options_of(target, ServiceNowOptions).table
    number = record.get("number")
    return Ticket(
        key=str(number) if number else None,
        url=f"{target.url}/{table}.do?sys_id={record['sys_id']}",
    )


def find(delivery: Delivery, target: Target) -> httpx.Request:
    """The record whose correlation_id is the alert id, if one was opened already."""
    return json_request(
        "GET",
        _table_url(target),
        params={
            "sysparm_query": f"correlation_id={delivery.alert.alert_id}",
            "sysparm_fields": "sys_id,number",
            "sysparm_limit": "1",
        },
    )


KIND = ReceiverKind(
    name="servicenow",
    options=ServiceNowOptions,
    request=request,
    # The record ServiceNow created (`{"result": {...}}`).
    read=answer_ticket(_ticket, under="result"),
    find=find,
    # The first record of the answer (`{"result": [...]}`).
    found=found_under("result", _ticket, "correlation_id"),
    auth=basic_auth,
)

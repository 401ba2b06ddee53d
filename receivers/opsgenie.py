"""Opsgenie: an alert per alert, through the Alert API v2.

Create: `POST {url}/v2/alerts` (default url `https://api.opsgenie.com`; EU accounts:
`https://api.eu.opsgenie.com`) with `Authorization: GenieKey <key>` (the key of an API
integration: the receiver's secret) and JSON `{"message" (at most 130 characters), "alias":
<alert id>, "description", "tags", "details", "entity", "source": "shipledger",
"priority": P1..P5}` (+ the receiver's `responders`).

Close: a resolution sends `POST {url}/v2/alerts/<the alert it resolves>/close?identifierType=alias`
with `{"source": "shipledger", "note"}`.

Idempotency: Opsgenie keeps one open alert per `alias`; a create repeated after a crash adds
to its count instead of opening another. Opsgenie answers 202 `{"result": "Request will be
processed", "requestId", "took"}` (the request is processed asynchronously): the ticket key
is the request id, the alias names the alert.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from shipledger.receivers import text
from shipledger.receivers.receiver import (
    Delivery,
    ReceiverKind,
    Target,
    answer_key,
    json_request,
    options_of,
    secret_header,
)

#: Our severity → Opsgenie's priority (P1 highest).
PRIORITY: dict[str, str] = {
    "critical": "P1",
    "high": "P2",
    "medium": "P3",
    "low": "P4",
    "info": "P5",
}
MESSAGE_MAX = 130
DESCRIPTION_MAX = 15000
DEFAULT_URL = "https://api.opsgenie.com"


class Responder(BaseModel):
    """A responder as Opsgenie takes it: `type` team, user, escalation or schedule, and
    its `name` (or `username` for a user)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(pattern=r"^(team|user|escalation|schedule)$")
    name: str | None = None
    username: str | None = None


class OpsgenieOptions(BaseModel):
    """`responders`: who is notified (default: the integration's team); more `tags`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    responders: list[Responder] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The Opsgenie alert of `delivery`."""
    alert = delivery.alert
    options = options_of(target, OpsgenieOptions)
    body: dict[str, Any] = {
        "message": text.summary(alert, MESSAGE_MAX),
        "alias": delivery.subject,
        "description": text.clip(text.description(alert), DESCRIPTION_MAX),
        "tags": ["shipledger", alert.rule, alert.environment, *options.tags],
        "details": dict(text.facts(alert)),
        "entity": alert.service,
        "source": "shipledger",
        "priority": PRIORITY[alert.severity],
    }
    if options.responders:
        body["responders"] = [r.model_dump(exclude_none=True) for r in options.responders]
    return json_request("POST", f"{target.url}/v2/alerts", body=body)


def resolve(delivery: Delivery, target: Target) -> httpx.Request:
    """The close, by alias, of the alert a resolution resolves."""
    alias = quote(delivery.subject, safe="")
    return json_request(
        "POST",
        f"{target.url}/v2/alerts/{alias}/close",
        params={"identifierType": "alias"},
        body={"source": "shipledger", "note": delivery.alert.message},
    )


KIND = ReceiverKind(
    name="opsgenie",
    options=OpsgenieOptions,
    request=request,
    # Opsgenie answers `{"result", "requestId"}`.
    read=answer_key("requestId"),
    auth=secret_header("GenieKey"),
    resolve=resolve,
    default_url=DEFAULT_URL,
)

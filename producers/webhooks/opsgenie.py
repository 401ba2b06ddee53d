"""Opsgenie webhook integration: an alert created or closed becomes an incident signal.

Opsgenie's outgoing webhook posts `{"action", "alert": {"alertId", "message", "tags",
"tinyId", "entity", "alias", "createdAt" (epoch ms), "details", "priority", ...}, "source",
"integrationName", "integrationType"}` per alert action. `Create` becomes `incident_opened`,
`Close` `incident_resolved`; other actions (Acknowledge, AddNote, ...) are acknowledged and
not recorded. The service is `details.service`, else a `service:<name>` tag, else the alert's
`entity`; the environment `details.environment` or an `env:`/`environment:` tag. Opsgenie
does not sign: the integration's custom header ``X-Shipledger-Token`` carries the secret.
The alert id (`alertId`) is the external id the suspects note is posted to.
"""

from __future__ import annotations

from typing import Any

from shipledger.producers.webhooks import contract, datadog
from shipledger.producers.webhooks.auth import SHARED_TOKEN_HEADER, verify_token
from shipledger.producers.webhooks.monitoring import environment_tag
from shipledger.producers.webhooks.payload import obj, opt_obj, opt_str, required, timestamp
from shipledger.producers.webhooks.result import Event, Request, WebhookPayloadError
from shipledger.producers.webhooks.route import ByField, Typed

_KINDS: dict[str, contract.SignalKind] = {
    "Create": "incident_opened",
    "Close": "incident_resolved",
}


def verify(request: Request) -> None:
    """Check the token of the integration's custom header."""
    verify_token(request, "opsgenie", SHARED_TOKEN_HEADER)


def tags_of(value: Any) -> dict[str, str]:
    """`alert.tags` (`["service:checkout", "env:prod", "critical"]`) as a dict, read as
    Datadog's `key:value` tags are (`datadog.tags_of`)."""
    if value is None:
        return {}
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise WebhookPayloadError("alert.tags: must be an array of strings")
    return datadog.tags_of(",".join(value))


def _alert(typed: Typed[contract.SignalKind]) -> Event:
    data = typed.data
    alert = obj(data, "alert")
    opt_obj(data, "alert.details")
    tags = tags_of(alert.get("tags"))
    service = (
        opt_str(data, "alert.details.service")
        or tags.get("service")
        or opt_str(data, "alert.entity")
    )
    created = required(alert.get("createdAt"), "alert.createdAt")
    return contract.signal(
        kind=typed.kind,
        occurred_at=timestamp(created, "alert.createdAt"),
        service=required(service, "alert.details.service", "service (details, tag or entity)"),
        environment=opt_str(data, "alert.details.environment") or environment_tag(tags),
        severity=opt_str(data, "alert.priority"),
        title=opt_str(data, "alert.message"),
        external_id=typed.id,
        attributes=typed.attributes(
            alias=opt_str(data, "alert.alias"),
            tiny_id=opt_str(data, "alert.tinyId"),
            integration=opt_str(data, "integrationName"),
        ),
    )


#: How dispatch reads one Opsgenie alert action (`route.ByField`).
ROUTE = ByField("opsgenie", "action", "alert.alertId", "{event}:{id}", _KINDS, _alert)

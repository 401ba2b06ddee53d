"""PagerDuty v3 webhooks: an incident triggered or resolved becomes a signal event.

A v3 webhook subscription posts one outbound event per request, `{"event": {"id",
"event_type", "resource_type", "occurred_at", "agent", "client", "data"}}`, signed in
``X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the body>`` with the subscription's secret
(several comma-separated signatures while a secret rotates; one matching is enough).
`incident.triggered` becomes `incident_opened`, `incident.resolved` `incident_resolved`; other
event types are acknowledged and not recorded. The service is the PagerDuty service's name
(`data.service.summary`): name PagerDuty services as the ledger's. The incident id
(`data.id`) is the external id the suspects note is posted to; event ids derive from the
outbound event's own id, so a redelivery is the same event.
"""

from __future__ import annotations

import hashlib
import hmac

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import secret_bytes
from shipledger.producers.webhooks.payload import obj, opt_str, req_str, timestamp
from shipledger.producers.webhooks.result import Event, Request, WebhookAuthError
from shipledger.producers.webhooks.route import ByField, Typed

SIGNATURE_HEADER = "X-PagerDuty-Signature"
_KINDS: dict[str, contract.SignalKind] = {
    "incident.triggered": "incident_opened",
    "incident.resolved": "incident_resolved",
}


def verify(request: Request) -> None:
    """Check ``X-PagerDuty-Signature`` (any of its `v1=` signatures) against the body."""
    given = request.headers.get(SIGNATURE_HEADER)
    if given is None:
        raise WebhookAuthError(f"missing {SIGNATURE_HEADER} header (the subscription signs)")
    expected = hmac.new(secret_bytes(request), request.body, hashlib.sha256).hexdigest()
    signatures = [s.strip() for s in given.split(",")]
    if not any(s.startswith("v1=") for s in signatures):
        raise WebhookAuthError(f"{SIGNATURE_HEADER} must look like 'v1=<hex digest>'")
    if not any(
        hmac.compare_digest(expected.encode(), s[3:].lower().encode())
        for s in signatures
        if s.startswith("v1=")
    ):
        raise WebhookAuthError(
            f"{SIGNATURE_HEADER} does not match the body signed with the tenant's pagerduty secret"
        )


def _incident(typed: Typed[contract.SignalKind]) -> Event:
    data = typed.data
    obj(data, "event.data")
    incident_id = req_str(data, "event.data.id")
    return contract.signal(
        kind=typed.kind,
        occurred_at=timestamp(req_str(data, "event.occurred_at"), "event.occurred_at"),
        service=req_str(data, "event.data.service.summary"),
        severity=opt_str(data, "event.data.priority.summary")
        or opt_str(data, "event.data.urgency"),
        title=opt_str(data, "event.data.title"),
        external_id=incident_id,
        url=opt_str(data, "event.data.html_url"),
        attributes=typed.attributes(
            incident_number=opt_str(data, "event.data.number"),
            service_id=opt_str(data, "event.data.service.id"),
            urgency=opt_str(data, "event.data.urgency"),
        ),
    )


#: How dispatch reads one v3 outbound event (`route.ByField`).
ROUTE = ByField("pagerduty", "event.event_type", "event.id", "event:{id}", _KINDS, _incident)

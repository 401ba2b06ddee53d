"""PagerDuty: a page per alert, through the Events API v2.

Trigger: `POST {url}/v2/enqueue` (default url `https://events.pagerduty.com`) with JSON
`{"routing_key", "event_action": "trigger", "dedup_key": <alert id>, "payload": {"summary",
"source", "severity", "timestamp", "component", "group", "class", "custom_details"}}`. The
routing key (the integration key of a PagerDuty service) is the receiver's secret; it goes in
the body, as the API wants, and nowhere else (never logged). Severity maps to PagerDuty's
four: critical → critical, high → error, medium → warning, low and info → info.

Resolve: a resolution sends `{"routing_key", "event_action": "resolve", "dedup_key": <the
alert it resolves>}`, which closes the incident the trigger opened.

Idempotency: PagerDuty deduplicates by `dedup_key` (an open incident with the same key takes
the event instead of a new incident), so a trigger repeated after a crash pages no one twice;
a resolve repeated is a no-op. PagerDuty answers 202 `{"status": "success", "message",
"dedup_key"}`: the ticket key is the dedup key; 400 is a refusal, 429 a transient throttle.
"""

from __future__ import annotations

from typing import Any

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
    secret_of,
)

#: Our severity → PagerDuty's (critical, error, warning, info).
SEVERITY: dict[str, str] = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}
#: The API refuses a summary over 1024 characters.
SUMMARY_MAX = 1024
DEFAULT_URL = "https://events.pagerduty.com"


class PagerDutyOptions(BaseModel):
    """`source`: the payload's source (default: the alert's service); `component` and
    `group` override the service and the team."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(default=None, min_length=1)
    component: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1)


def _event(delivery: Delivery, target: Target, action: str) -> dict[str, Any]:
    return {
        "routing_key": secret_of(target),
        "event_action": action,
        "dedup_key": delivery.subject,
    }


def payload(delivery: Delivery, target: Target) -> dict[str, Any]:
    """The trigger event's `payload` (pure: the mapping the tests read)."""
    alert = delivery.alert
    options = options_of(target, PagerDutyOptions)
    return {
        "summary": text.clip(f"{text.summary(alert, SUMMARY_MAX)}: {alert.message}", SUMMARY_MAX),
        "source": options.source or f"{alert.service}.{alert.environment}",
        "severity": SEVERITY[alert.severity],
        "timestamp": alert.occurred_at.isoformat(),
        "component": options.component or alert.service,
        "group": options.group or alert.team or alert.tenant,
        "class": alert.rule,
        "custom_details": dict(text.facts(alert)),
    }


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The trigger of `delivery`."""
    body = {**_event(delivery, target, "trigger"), "payload": payload(delivery, target)}
    return json_request("POST", f"{target.url}/v2/enqueue", body=body)


def resolve(delivery: Delivery, target: Target) -> httpx.Request:
    """The resolve of the incident a resolution's alert opened."""
    return json_request(
        "POST", f"{target.url}/v2/enqueue", body=_event(delivery, target, "resolve")
    )


KIND = ReceiverKind(
    name="pagerduty",
    options=PagerDutyOptions,
    request=request,
    # PagerDuty answers `{"status": "success", "dedup_key"}`.
    read=answer_key("dedup_key"),
    resolve=resolve,
    default_url=DEFAULT_URL,
)

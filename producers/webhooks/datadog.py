"""Datadog monitors: the webhook payload template of docs/webhooks.md, one signal per
notification.

A Datadog webhook sends the JSON template you give it, filled with its variables: ours
carries `$ID`, `$ALERT_ID`, `$EVENT_TITLE`, `$ALERT_TRANSITION`, `$ALERT_PRIORITY`, `$DATE`
(epoch milliseconds), `$TAGS` and `$LINK`. `Triggered` and `Re-Triggered` become
`alert_fired`, `Recovered` `alert_resolved`; other transitions (`Warn`, `No Data`,
`Renotify`, ...) are acknowledged and not recorded. `service` and `environment` come from the
`service:` and `env:` tags (Datadog's unified service tagging). Event ids derive from `$ID`,
the notification's own event id: Datadog's retries are the same event.
"""

from __future__ import annotations

import re

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.monitoring import environment_tag, verify_monitoring
from shipledger.producers.webhooks.payload import opt_str, req_str, timestamp
from shipledger.producers.webhooks.result import Event, Request, WebhookPayloadError
from shipledger.producers.webhooks.route import ByField, Typed

_TRANSITIONS: dict[str, contract.SignalKind] = {
    "Triggered": "alert_fired",
    "Re-Triggered": "alert_fired",
    "Recovered": "alert_resolved",
}


def verify(request: Request) -> None:
    """Check the token (`X-Shipledger-Token` in the webhook's custom headers)."""
    verify_monitoring(request, "datadog")


def tags_of(text: str | None) -> dict[str, str]:
    """`$TAGS` (`service:checkout,env:prod,team:payments`) as a dict; the first value of a
    key wins, tags without a value are left out."""
    tags: dict[str, str] = {}
    for tag in (text or "").split(","):
        key, sep, value = tag.strip().partition(":")
        if sep and key and value:
            tags.setdefault(key, value)
    return tags


def _monitor(typed: Typed[contract.SignalKind]) -> Event:
    data = typed.data
    date = req_str(data, "date")
    # ASCII digits, at most 18 (epoch millis for millions of years): str.isdigit() also
    # takes a superscript two, and int() refuses it, or a number of over 4,300 digits.
    if not re.fullmatch(r"[0-9]{1,18}", date):
        raise WebhookPayloadError(f"date: must be epoch milliseconds ($DATE), got {date!r:.40}")
    tags = tags_of(opt_str(data, "tags"))
    return contract.signal(
        kind=typed.kind,
        occurred_at=timestamp(int(date), "date"),
        service=tags.get("service"),
        environment=environment_tag(tags),
        severity=opt_str(data, "priority"),
        title=req_str(data, "title"),
        external_id=opt_str(data, "alert_id"),
        url=opt_str(data, "link"),
        attributes=typed.attributes(
            alert_type=opt_str(data, "alert_type"),
            scope=opt_str(data, "scope"),
            team=tags.get("team"),
            version=tags.get("version"),
        ),
    )


#: How dispatch reads one Datadog monitor notification (`route.ByField`).
ROUTE = ByField("datadog", "transition", "id", "event:{id}", _TRANSITIONS, _monitor)

"""Slack: a message per alert (and per resolution), through an incoming webhook.

`POST <the incoming webhook URL>` with JSON `{"text", "blocks"}`: `text` is the one-line
summary (what notifications and clients without Block Kit show), `blocks` a Block Kit
message: a header, the message as a `mrkdwn` section, the facts as section fields (at most
10, as Slack allows) and a context line with the alert id. Slack answers 200 with the text
`ok`; 400 `invalid_payload`, 403 `invalid_token`, 404 `no_service` and 410
`channel_is_archived` are refusals.

The webhook URL carries its own credentials, so it is the receiver's secret, never the
policy's: the secret is the whole URL (`https://hooks.slack.com/services/T…/B…/…`) or its
path (`/services/T…/B…/…`); the policy's `url` (default `https://hooks.slack.com`) is the
only host it may point to.

A resolution posts a "RESOLVED" message (Slack has nothing to close). Slack has no
idempotency key: the record of deliveries is what stops a replayed alert posting twice.
"""

from __future__ import annotations

from typing import Any

import httpx

from shipledger.receivers import text
from shipledger.receivers.receiver import (
    Delivery,
    ReceiverKind,
    Target,
    secret_of,
)

DEFAULT_URL = "https://hooks.slack.com"
#: Block Kit limits: header text 150, section text 3000, 10 fields of 2000.
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELDS_MAX = 10
_FIELD_MAX = 2000


def hook_url(target: Target) -> str:
    """The incoming webhook's URL from the secret (a URL under the receiver's url, or a
    path); ValueError when the secret points elsewhere."""
    secret = secret_of(target)
    if secret.startswith("/"):
        return target.url + secret
    if secret.startswith(target.url + "/"):
        return secret
    raise ValueError(
        f"receiver {target.name}: the secret must be a path (/services/...) or a URL under "
        f"{target.url}"
    )


def escape(value: str) -> str:
    """`value` as mrkdwn shows it literally (Slack's three control characters escaped)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(delivery: Delivery) -> dict[str, Any]:
    """The message's JSON (pure: the mapping the tests read)."""
    alert = delivery.alert
    line = text.summary(alert, _SECTION_MAX)
    facts = text.facts(alert)[:_FIELDS_MAX]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": text.clip(line, _HEADER_MAX)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": text.clip(escape(alert.message), _SECTION_MAX)},
        },
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": text.clip(f"*{label}*\n{escape(value)}", _FIELD_MAX),
                }
                for label, value in facts
            ],
        },
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": escape(f"alert {delivery.subject}")}],
        },
    ]
    return {"text": line, "blocks": blocks}


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The message of `delivery` (a resolution's says RESOLVED)."""
    return httpx.Request("POST", hook_url(target), json=message(delivery))


KIND = ReceiverKind(
    name="slack",
    request=request,
    # Slack answers `ok`: nothing to record but the delivery (the default `read`).
    resolve=request,
    default_url=DEFAULT_URL,
    secret_in_url=True,
)

"""A generic signed webhook: the alert as JSON, signed per the Standard Webhooks spec.

`POST {url}` with a JSON body `{"type": "shipledger.alert.escalated", "delivery_id",
"route", "receiver", "alert": {...every field of the alert...}}` and the spec's three
headers: `webhook-id` (the delivery id: the same on every attempt and replay, the
receiver's idempotency key), `webhook-timestamp` (seconds, taken at each attempt) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`), computed with
the `standardwebhooks` library, so any Standard Webhooks verifier checks it. The secret is
the spec's `whsec_<base64>` form, or any other text, used as its UTF-8 bytes.

A resolution (`kind: resolution`, naming the alert it resolves in `alert.resolves`) is the
same message with `"type": "shipledger.alert.resolved"` and its own `webhook-id`.

Any 2xx is a delivery; a JSON answer naming `key` and/or `url` (a bridge that opened a
ticket) is recorded as the ticket.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from shipledger.receivers.receiver import (
    Delivery,
    NoOptions,
    ReceiverKind,
    Target,
    Ticket,
    json_answer,
)

EVENT_TYPE = "shipledger.alert.escalated"
RESOLVED_TYPE = "shipledger.alert.resolved"


def signer(secret: str) -> Webhook:
    """The Standard Webhooks signer of `secret` (`whsec_<base64>`, else its UTF-8 bytes)."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


class StandardWebhookAuth(httpx.Auth):
    """Signs each request as it is sent (a new `webhook-timestamp` per attempt: receivers
    refuse old ones); `webhook-id` is set by the request."""

    requires_request_body = True

    def __init__(self, secret: str) -> None:
        self._webhook = signer(secret)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add `webhook-timestamp` and `webhook-signature` to `request`."""
        now = datetime.now(UTC)
        request.headers["webhook-timestamp"] = str(int(now.timestamp()))
        request.headers["webhook-signature"] = self._webhook.sign(
            request.headers["webhook-id"], now, request.content.decode()
        )
        yield request


def auth(target: Target) -> httpx.Auth | None:
    """The signature of the receiver's secret."""
    return None if target.secret is None else StandardWebhookAuth(target.secret.get_secret_value())


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The alert of `delivery` as a Standard Webhooks message (a resolution's type is
    RESOLVED_TYPE)."""
    body = {
        "type": RESOLVED_TYPE if delivery.action == "resolve" else EVENT_TYPE,
        "delivery_id": delivery.id,
        "route": delivery.route,
        "receiver": delivery.receiver,
        "alert": delivery.alert.model_dump(mode="json"),
    }
    return httpx.Request("POST", target.url, json=body, headers={"webhook-id": delivery.id})


def read(response: httpx.Response, target: Target) -> Ticket:
    """A ticket the receiver names (`key`, `url`), if its answer is a JSON object."""
    try:
        body = json_answer(response)
    except ValueError:
        return Ticket()
    key, url = body.get("key"), body.get("url")
    return Ticket(key=str(key) if key else None, url=str(url) if url else None)


KIND = ReceiverKind(
    name="webhook", options=NoOptions, request=request, read=read, auth=auth, resolve=request
)

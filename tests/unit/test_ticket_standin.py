"""The demo's stand-in ticketing system (`shipledger.lab.ticket_standin`): it takes the
escalator's signed webhooks, refuses a bad signature, and gives a retried delivery the ticket
it already has."""

from __future__ import annotations

import httpx

from shipledger.lab.ticket_standin import TicketStandIn
from shipledger.receivers.webhook import StandardWebhookAuth

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"


def post(url: str, delivery: str, secret: str) -> httpx.Response:
    return httpx.post(
        url,
        json={"type": "shipledger.alert.escalated", "delivery_id": delivery},
        headers={"webhook-id": delivery},
        auth=StandardWebhookAuth(secret),
        timeout=10,
    )


def test_signed_deliveries_get_one_ticket_each() -> None:
    with TicketStandIn(SECRET) as standin:
        first = post(standin.url, "d-1", SECRET)
        second = post(standin.url, "d-2", SECRET)
        again = post(standin.url, "d-1", SECRET)
    assert first.status_code == second.status_code == again.status_code == 201
    assert first.json()["key"] == "DEMO-0001" and second.json()["key"] == "DEMO-0002"
    assert again.json() == first.json()
    assert standin.tickets == {"d-1": "DEMO-0001", "d-2": "DEMO-0002"}


def test_a_bad_signature_is_refused() -> None:
    with TicketStandIn(SECRET) as standin:
        answer = post(standin.url, "d-1", "whsec_" + "b3RoZXItb3RoZXItb3RoZXI=")
    assert answer.status_code == 401 and "signature" in answer.json()["error"]
    assert standin.tickets == {}

"""The note requests posted on an incident (`receivers.notes`): each provider's documented
path, authentication and body."""

from __future__ import annotations

import json

import httpx
from pydantic import SecretStr

from shipledger.receivers.notes import NOTE_MAX, NoteTarget, auth, opsgenie_note, pagerduty_note


def _headers(target: NoteTarget, request_headers: dict[str, str]) -> dict[str, str]:
    flow = auth(target)
    assert flow is not None
    request = httpx.Request("POST", "http://x", headers=request_headers)
    return dict(next(flow.auth_flow(request)).headers)


def test_pagerduty_note() -> None:
    target = NoteTarget("pagerduty", "https://api.pagerduty.com/", SecretStr("k3y"), "a@b.c")
    request = pagerduty_note(target, "PGR0VU2", "x" * (NOTE_MAX + 5))
    assert (request.method, str(request.url)) == (
        "POST", "https://api.pagerduty.com/incidents/PGR0VU2/notes",
    )  # fmt: skip
    assert request.headers["From"] == "a@b.c"
    assert request.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert len(json.loads(request.content)["note"]["content"]) == NOTE_MAX
    assert _headers(target, {})["authorization"] == "Token token=k3y"


def test_opsgenie_note() -> None:
    target = NoteTarget("opsgenie", "https://api.opsgenie.com", SecretStr("g3n"))
    request = opsgenie_note(target, "a/b", "suspects")
    assert str(request.url) == "https://api.opsgenie.com/v2/alerts/a%2Fb/notes?identifierType=id"
    assert json.loads(request.content) == {
        "note": "suspects", "user": "shipledger", "source": "shipledger",
    }  # fmt: skip
    assert _headers(target, {})["authorization"] == "GenieKey g3n"
    assert auth(NoteTarget("opsgenie", "u", None)) is None

"""Notes on an incident at the provider it came from: the suspects of an incident, posted
back where its responders look. Pure request builders; `Deliverer.post` sends them with the
escalation engine's retries.

PagerDuty: `POST {api}/incidents/{id}/notes` with `{"note": {"content"}}`, authenticated by
``Authorization: Token token=<REST API key>`` and ``From: <email of a PagerDuty user>`` (the
REST API's create-a-note operation). Opsgenie: `POST {api}/v2/alerts/{id}/notes
?identifierType=id` with `{"note", "user", "source"}`, authenticated by ``Authorization:
GenieKey <key>`` (the Alert API's add-note operation; answered 202 with a request id).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from shipledger.receivers.receiver import HeaderAuth, json_request

#: Both providers cap a note: PagerDuty at 65535 characters, Opsgenie at 25000.
NOTE_MAX = 25_000
#: Who the Opsgenie note says wrote it.
AUTHOR = "shipledger"


@dataclass(frozen=True)
class NoteTarget:
    """Where notes of one provider go: its API base URL, key, and (PagerDuty) the user."""

    provider: str
    url: str
    key: SecretStr | None
    user: str | None = None


def pagerduty_note(target: NoteTarget, incident_id: str, text: str) -> httpx.Request:
    """The note on PagerDuty incident `incident_id`."""
    request = json_request(
        "POST",
        f"{target.url.rstrip('/')}/incidents/{quote(incident_id, safe='')}/notes",
        body={"note": {"content": text[:NOTE_MAX]}},
    )
    request.headers["Accept"] = "application/vnd.pagerduty+json;version=2"
    if target.user:
        request.headers["From"] = target.user
    return request


def opsgenie_note(target: NoteTarget, alert_id: str, text: str) -> httpx.Request:
    """The note on Opsgenie alert `alert_id`."""
    return json_request(
        "POST",
        f"{target.url.rstrip('/')}/v2/alerts/{quote(alert_id, safe='')}/notes",
        params={"identifierType": "id"},
        body={"note": text[:NOTE_MAX], "user": AUTHOR, "source": AUTHOR},
    )


def auth(target: NoteTarget) -> httpx.Auth | None:
    """The provider's API authentication (None without a key)."""
    if target.key is None:
        return None
    scheme = "Token token=" if target.provider == "pagerduty" else "GenieKey "
    return HeaderAuth(scheme + target.key.get_secret_value())


BUILDERS = {"pagerduty": pagerduty_note, "opsgenie": opsgenie_note}

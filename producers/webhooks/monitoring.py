"""What the monitoring providers' mappers share (Prometheus Alertmanager, Datadog monitors):
their authentication, and how a firing or resolved alert becomes a signal event.

Neither sender signs its body. Both can send a header: Alertmanager's `http_config`
`authorization` (``Authorization: Bearer <secret>``), Datadog's custom headers
(``X-Shipledger-Token``); either header carries the tenant's webhook secret.
"""

from __future__ import annotations

from shipledger.producers.webhooks.auth import SHARED_TOKEN_HEADER, verify_token
from shipledger.producers.webhooks.result import Request, WebhookAuthError

_BEARER = "bearer "


def verify_monitoring(request: Request, provider: str) -> None:
    """Check ``X-Shipledger-Token``, or else ``Authorization: Bearer <secret>``."""
    if request.headers.get(SHARED_TOKEN_HEADER) is not None:
        verify_token(request, provider, SHARED_TOKEN_HEADER)
        return
    given = request.headers.get("Authorization")
    if given is None or not given.lower().startswith(_BEARER):
        raise WebhookAuthError(
            f"missing {SHARED_TOKEN_HEADER} header (or Authorization: Bearer <secret>)"
        )
    token = given[len(_BEARER) :].strip()
    bearer = Request(
        headers=type(request.headers)({SHARED_TOKEN_HEADER: token}),
        body=request.body,
        secret=request.secret,
        received_at=request.received_at,
    )
    verify_token(bearer, provider, SHARED_TOKEN_HEADER)


def environment_tag(tags: dict[str, str]) -> str | None:
    """The environment a monitoring alert's labels or tags name, if any."""
    return tags.get("environment") or tags.get("env")

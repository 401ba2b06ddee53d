"""Provider webhooks verified and mapped onto the event contract (pure: no I/O).

`dispatch(provider, headers, body, secret=..., tenant=...)` authenticates one delivery from
GitHub, GitLab, Argo CD, CDEvents (CloudEvents) or Jenkins and returns the contract events it
means. docs/webhooks.md describes each provider's setup and mapping.
"""

from __future__ import annotations

from shipledger.producers.webhooks.dispatch import (
    PROVIDERS,
    authenticate,
    dispatch,
    event_id,
    map_delivery,
)
from shipledger.producers.webhooks.result import (
    Mapped,
    ShaResolver,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookResult,
)

__all__ = [
    "PROVIDERS",
    "Mapped",
    "ShaResolver",
    "WebhookAuthError",
    "WebhookPayloadError",
    "WebhookResult",
    "authenticate",
    "dispatch",
    "event_id",
    "map_delivery",
]

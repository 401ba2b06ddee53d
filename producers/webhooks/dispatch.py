"""`dispatch`: authenticate one provider delivery, map it onto the contract, fill the envelope."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shipledger.producers.webhooks import (
    alertmanager,
    argocd,
    artifactory,
    cdevents,
    checkly,
    datadog,
    github,
    gitlab,
    harbor,
    jenkins,
    opsgenie,
    pagerduty,
    terraform,
)
from shipledger.producers.webhooks.result import (
    Headers,
    Mapped,
    Parsed,
    Request,
    ShaResolver,
    WebhookPayloadError,
    WebhookResult,
)

# Event ids are UUIDv5 in this namespace, so they look like the emitter's UUID4 ids.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://shipledger.io/webhooks")


@dataclass(frozen=True)
class Provider:
    """How one provider's deliveries are authenticated and read."""

    verify: Callable[[Request], None]
    parse: Callable[[Request], Parsed]


PROVIDERS: dict[str, Provider] = {
    "github": Provider(github.verify, github.ROUTE.parse),
    "gitlab": Provider(gitlab.verify, gitlab.ROUTE.parse),
    "argocd": Provider(argocd.verify, argocd.parse),
    "cdevents": Provider(cdevents.verify, cdevents.parse),
    "jenkins": Provider(jenkins.verify, jenkins.parse),
    "alertmanager": Provider(alertmanager.verify, alertmanager.parse),
    "datadog": Provider(datadog.verify, datadog.ROUTE.parse),
    "checkly": Provider(checkly.verify, checkly.ROUTE.parse),
    "terraform": Provider(terraform.verify, terraform.parse),
    "harbor": Provider(harbor.verify, harbor.parse),
    "artifactory": Provider(artifactory.verify, artifactory.parse),
    "pagerduty": Provider(pagerduty.verify, pagerduty.ROUTE.parse),
    "opsgenie": Provider(opsgenie.verify, opsgenie.ROUTE.parse),
}


def _handler(provider: str) -> Provider:
    handler = PROVIDERS.get(provider)
    if handler is None:
        known = ", ".join(sorted(PROVIDERS))
        raise WebhookPayloadError(f"unknown webhook provider {provider!r} (known: {known})")
    return handler


def authenticate(
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    resolve_sha: ShaResolver | None = None,
    received_at: datetime | None = None,
) -> Request:
    """The delivery as a Request, once its signature or token checks out with `secret`.

    Fails closed: with no `secret` (none configured) every request is refused with the same
    WebhookAuthError as a wrong signature, so the answer does not reveal the set-up.
    `resolve_sha(repository, short_sha)` completes abbreviated SHAs (GitLab deployments);
    `received_at` (default: now) stands in for payloads that carry no timestamp.
    """
    handler = _handler(provider)
    request = Request(
        headers=Headers(headers),
        body=body,
        secret=secret,
        received_at=(received_at or datetime.now(UTC)).astimezone(UTC),
        resolve_sha=resolve_sha,
    )
    handler.verify(request)
    return request


def dispatch(
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    tenant: str,
    resolve_sha: ShaResolver | None = None,
    received_at: datetime | None = None,
) -> WebhookResult:
    """Verify (`authenticate`) and map (`map_delivery`) one delivery from `provider`."""
    request = authenticate(
        provider, headers, body, secret=secret, resolve_sha=resolve_sha, received_at=received_at
    )
    return map_delivery(provider, request, tenant)


def map_delivery(provider: str, request: Request, tenant: str) -> WebhookResult:
    """Map an authenticated delivery onto contract events for `tenant`.

    Raises WebhookPayloadError (answer 400); an event type, action or state that shipledger
    does not record comes back with `ignored` set. Event ids derive from tenant, provider, the
    provider's own id of the object in the body and position: a redelivery, or the same body
    replayed under a new delivery header, yields the same ids and is deduplicated downstream.
    """
    parsed = _handler(provider).parse(request)
    events = [
        Mapped(
            family,
            {
                "event_id": event_id(tenant, provider, group.object_id, index),
                "tenant": tenant,
                "source": f"webhook:{provider}",
                **fields,
            },
        )
        for group in parsed.groups
        for index, (family, fields) in enumerate(group.events)
    ]
    return WebhookResult(
        provider=provider,
        event_type=parsed.event_type,
        delivery_id=parsed.delivery_id,
        events=events,
        ignored=parsed.ignored,
    )


def event_id(tenant: str, provider: str, delivery: str, index: int) -> str:
    """The deterministic id of the `index`-th event mapped from one delivery."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{tenant}\n{provider}\n{delivery}\n{index}"))

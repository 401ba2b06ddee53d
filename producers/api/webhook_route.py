"""`POST /v1/webhooks/{provider}/{tenant}`: a CI/CD system's webhook, mapped to events.

Authenticated by the provider's signature or token with the tenant's secret (`shipledger
webhooks secret set`), not by a bearer token: GitHub and the others cannot send one. The
mapping is `shipledger.producers.webhooks.dispatch`; its events are published like `POST /v1/events`
(all or nothing, 202 after Kafka's acks).

Authentication before throttling: an authenticated delivery takes a token from its tenant
and provider's bucket; a refused one (bad or missing signature, no secret set: all 401, the
same answer) from a separate bucket per client address and provider, which answers 429 once
spent. So a flood of unsigned requests is throttled on its own and cannot use up the rate of
the signed deliveries. A delivery of an unsupported type is answered 202
with no events and the reason, and counted (`GET /v1/webhooks/stats`): a provider must never
see an error, and retry, for an event we choose not to record. The full SHAs of the pushes
and merges received are remembered (`RecentCommits`) to resolve a later delivery's short SHA.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from shipledger.logging import get_logger
from shipledger.producers.api.auth import Principal
from shipledger.producers.api.bodies import TOKEN_ERRORS, Accepted, Invalid, Problem, problems
from shipledger.producers.api.context import ApiError, ContextDep, ReadPrincipal
from shipledger.producers.api.ingest import prepare_all, publish
from shipledger.producers.api.limits import check_declared_length, read_capped
from shipledger.producers.webhooks import (
    PROVIDERS,
    WebhookAuthError,
    WebhookPayloadError,
    authenticate,
    map_delivery,
)

router = APIRouter(prefix="/v1")
_log = get_logger("api.webhooks")


class WebhookCount(BaseModel):
    """Deliveries of one provider's event type for one tenant, by outcome."""

    tenant: str
    provider: str
    event_type: str
    outcome: str
    count: int


@router.post(
    # `:path`: a tenant may hold "/" (it is any name), and it is the route's last segment.
    "/webhooks/{provider}/{tenant:path}",
    status_code=202,
    response_model=Accepted,
    responses={
        **problems(
            {
                400: "Malformed payload (the field is named).",
                401: "Signature or token missing or wrong.",
                404: "Unknown provider.",
                429: "Rate limit; see Retry-After.",
                503: "Kafka did not acknowledge every event: retry.",
            }
        ),
        413: {"model": Problem},
        422: {"model": Invalid, "description": "The mapped events are invalid."},
    },
    summary="Receive a CI/CD webhook (signed with the tenant's secret)",
)
async def post_webhook(
    provider: str,
    tenant: str,
    request: Request,
    ctx: ContextDep,
) -> Accepted:
    """Map a provider's webhook (github, gitlab, argocd, cdevents, jenkins, alertmanager,
    datadog, checkly, terraform, harbor, artifactory) to events and publish them: 202 after
    Kafka's acks; an
    ignored delivery answers 202 with no events and `ignored` saying why. 401 for a bad
    signature/token (or no secret set for the tenant: the same answer), 400 for a malformed
    payload, 422 for mapped events the contract refuses."""
    if provider not in PROVIDERS:
        raise ApiError(404, f"unknown webhook provider {provider!r}; known: {sorted(PROVIDERS)}")
    limit = ctx.settings.api_max_body_bytes
    check_declared_length(request.headers.get("content-length"), limit, "webhook body")
    body = await read_capped(request.stream(), limit, "webhook body")
    log = _log.bind(tenant=tenant, provider=provider)
    secret = ctx.auth.webhook_secret(tenant, provider)
    try:
        verified = authenticate(
            provider,
            dict(request.headers),
            body,
            secret=secret,
            resolve_sha=lambda repo, short: ctx.recent_commits.resolve(tenant, repo, short),
        )
    except WebhookAuthError as exc:
        # A tenant without a secret is counted as "?": tenant names from unauthenticated URLs
        # must not grow the counters without bound.
        counted = tenant if secret is not None else "?"
        ctx.webhook_deliveries[(counted, provider, "?", "unauthorized")] += 1
        log.warning("webhook refused", reason=str(exc), secret_set=secret is not None)
        client = request.client.host if request.client else "?"
        ctx.throttle(f"webhook-refused:{client}:{provider}", ctx.refused_limiter)
        raise ApiError(401, f"{provider} webhook refused: {exc}") from exc
    ctx.throttle(f"webhook:{tenant}:{provider}")
    try:
        result = map_delivery(provider, verified, tenant)
    except WebhookPayloadError as exc:
        ctx.webhook_deliveries[(tenant, provider, "?", "malformed")] += 1
        log.warning("webhook malformed", reason=str(exc))
        raise ApiError(400, f"{provider} webhook malformed: {exc}") from exc
    event_type = result.event_type or "?"
    if result.ignored is not None:
        ctx.webhook_deliveries[(tenant, provider, event_type, "ignored")] += 1
        log.info("webhook ignored", event_type=event_type, reason=result.ignored)
        return Accepted(count=0, event_ids=[], ignored=result.ignored)
    items: list[object] = [{"family": m.family, **m.event} for m in result.events]
    principal = Principal(f"webhook:{provider}", tenant, frozenset({"ingest"}))
    prepared = prepare_all(ctx, items, principal, f"webhook:{provider}")
    await publish(ctx, prepared)
    ctx.recent_commits.remember(tenant, (m.event for m in result.events if m.family == "source"))
    ctx.webhook_deliveries[(tenant, provider, event_type, "accepted")] += 1
    log.info("webhook accepted", event_type=event_type, events=len(prepared))
    return Accepted(count=len(prepared), event_ids=[p.event_id for p in prepared])


@router.get(
    "/webhooks/stats",
    response_model=list[WebhookCount],
    responses=TOKEN_ERRORS,
    summary="Webhook deliveries counted by tenant, provider, event type and outcome",
)
async def webhook_stats(
    principal: ReadPrincipal,
    ctx: ContextDep,
) -> list[WebhookCount]:
    """Deliveries since the API started: accepted, ignored (unsupported types), unauthorized
    and malformed, for the token's tenant (all tenants for a `*` token; none for a token
    limited to teams or environments: counts belong to no team)."""
    return [
        WebhookCount(tenant=t, provider=p, event_type=e, outcome=o, count=n)
        for (t, p, e, o), n in sorted(ctx.webhook_deliveries.items())
        if principal.sees(t, None, None)
    ]

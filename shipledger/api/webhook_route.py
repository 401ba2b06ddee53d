"""`POST /v1/webhooks/{provider}/{tenant}`: a CI/CD system's webhook, mapped to events.

Authenticated by the provider's signature with the tenant's secret (`shipledger webhooks
secret set`), not by a bearer token: GitHub and the others cannot send one. The mapping is
`shipledger.webhooks.dispatch`; the route is registered only where that package is installed
(`dispatcher()`), and its events are then published like `POST /v1/events` (all or nothing,
202 after Kafka's acks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from shipledger.api.auth import Principal
from shipledger.api.bodies import Accepted, Problem
from shipledger.api.context import ApiContext, ApiError, context
from shipledger.api.ingest import prepare_all, publish
from shipledger.api.limits import check_declared_length, read_capped

Dispatch = Callable[[str, Mapping[str, str], bytes, str | None, str], Any]


def dispatcher() -> Dispatch | None:
    """`shipledger.webhooks.dispatch`, or None where the webhooks package is not installed."""
    try:
        module = importlib.import_module("shipledger.webhooks")
    except ModuleNotFoundError:
        return None
    dispatch: Dispatch = module.dispatch
    return dispatch


def router(dispatch: Dispatch) -> APIRouter:
    """The webhook route, calling `dispatch(provider, headers, body, secret, tenant)`, which
    returns a result with `events` (a list of (family, fields)) and, when it ignored the
    delivery, `ignored` (why); it raises ValueError for a bad signature or payload."""
    routes = APIRouter(prefix="/v1")

    @routes.post(
        "/webhooks/{provider}/{tenant}",
        status_code=202,
        response_model=Accepted,
        responses={400: {"model": Problem}, 404: {"model": Problem}, 413: {"model": Problem}},
        summary="Receive a CI/CD webhook (signed with the tenant's secret)",
    )
    async def post_webhook(
        provider: str,
        tenant: str,
        request: Request,
        ctx: Annotated[ApiContext, Depends(context)],
    ) -> Accepted:
        """Map a provider's webhook to events and publish them (202 after Kafka's acks;
        an ignored delivery answers 202 with no events)."""
        ctx.throttle(f"webhook:{tenant}:{provider}")
        secret = ctx.auth.webhook_secret(tenant, provider)
        if secret is None:
            raise ApiError(
                404,
                f"no {provider} webhook secret for tenant {tenant!r}: "
                f"shipledger webhooks secret set --tenant {tenant} --provider {provider}",
            )
        limit = ctx.settings.api_max_body_bytes
        check_declared_length(request.headers.get("content-length"), limit, "webhook body")
        body = await read_capped(request.stream(), limit, "webhook body")
        try:
            result = dispatch(provider, dict(request.headers), body, secret, tenant)
        except ValueError as exc:
            raise ApiError(400, f"{provider} webhook refused: {exc}") from exc
        items: list[object] = [{"family": family, **fields} for family, fields in result.events]
        principal = Principal(f"webhook:{provider}", tenant, frozenset({"ingest"}))
        prepared = prepare_all(ctx, items, principal, f"webhook:{provider}")
        await publish(ctx, prepared)
        return Accepted(count=len(prepared), event_ids=[p.event_id for p in prepared])

    return routes

"""`GET /v1/suspects`: the deployments most likely behind an incident (docs/triage.md), each
with the named parts of its score, read from the ledger (`shipledger.sinks.ledger.suspects`),
only deployments the token sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from shipledger.producers.api.bodies import ledger_read_errors
from shipledger.producers.api.context import ApiError, ContextDep, ReadPrincipal, readable_tenant
from shipledger.sinks.ledger.reader import SUSPECTS_MAX_LOOKBACK, SuspectsError, SuspectsQuery

router = APIRouter(prefix="/v1")


@router.get(
    "/suspects",
    responses=ledger_read_errors(
        {
            400: "A parameter out of range, or no tenant for an operator token (named).",
            403: "Another tenant than the token's.",
        }
    ),
    summary="Recent deployments ranked as suspects of an incident, each score explained",
)
async def get_suspects(
    ctx: ContextDep,
    principal: ReadPrincipal,
    service: Annotated[str, Query(min_length=1, description="Service of the incident.")],
    at: Annotated[datetime | None, Query(description="When it began (default: now).")] = None,
    tenant: str | None = None,
    environment: str | None = None,
    lookback_h: Annotated[
        float,
        Query(
            gt=0, le=SUSPECTS_MAX_LOOKBACK.total_seconds() / 3600, description="Hours to look back."
        ),
    ] = 24.0,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    depth: Annotated[int, Query(ge=0, le=10, description="Dependency hops followed.")] = 3,
) -> dict[str, Any]:
    """`{"service", "at", "suspects"}`: deployments of `service` and of the services it
    depends on (the catalog's dependencies, up to `depth` hops) started in the `lookback_h`
    hours before `at`, best first; each with its `score` (of 100), `why` and every `part`
    (time_proximity, dependency_distance, change_size, verification, config_drift, rollback).
    The same ranking as `shipledger suspects --format json`."""
    ledger = ctx.require_ledger()
    tenant = readable_tenant(principal, tenant)
    if tenant is None:
        raise ApiError(400, "tenant: required with an operator token")
    when = at or datetime.now(UTC)
    try:
        query = SuspectsQuery(
            tenant=tenant,
            service=service,
            at=when,
            lookback=timedelta(hours=lookback_h),
            environment=environment,
            limit=limit,
            max_depth=depth,
        )
    except SuspectsError as exc:
        raise ApiError(400, str(exc)) from exc
    suspects = await run_in_threadpool(ledger.suspects, query, principal.row_scope())
    return {
        "tenant": tenant,
        "service": service,
        "at": when.isoformat(),
        "suspects": [s.to_json() for s in suspects],
    }

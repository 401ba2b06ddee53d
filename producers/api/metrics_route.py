"""`GET /v1/metrics/dora`: the DORA metrics of the token's tenant (docs/metrics.md), read
from the ledger's aggregates (`shipledger.sinks.ledger.dora`), only rows the token sees."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from shipledger.producers.api.auth import ANY_TENANT
from shipledger.producers.api.bodies import TOKEN_ERRORS, problems
from shipledger.producers.api.context import ApiError, ContextDep, ReadPrincipal
from shipledger.sinks.ledger.reader import (
    DORA_DIMENSIONS as DIMENSIONS,
)
from shipledger.sinks.ledger.reader import (
    DORA_PERIODS as PERIODS,
)
from shipledger.sinks.ledger.reader import (
    DoraError,
    DoraQuery,
    dora_columns,
    dora_window,
)

router = APIRouter(prefix="/v1")

Names = Annotated[list[str] | None, Query()]


@router.get(
    "/metrics/dora",
    responses={
        **TOKEN_ERRORS,
        **problems(
            {
                400: "A parameter out of range (named).",
                403: "Another tenant than the token's.",
                503: "This API has no ledger store.",
            }
        ),
    },
    summary="DORA metrics per period (deployment frequency, lead time, failure rate, recovery)",
)
async def get_dora(
    ctx: ContextDep,
    principal: ReadPrincipal,
    tenant: str | None = None,
    team: Names = None,
    application: Names = None,
    service: Names = None,
    environment: Names = None,
    by: Annotated[list[str] | None, Query(description=f"Of {', '.join(DIMENSIONS)}.")] = None,
    period: Annotated[str, Query(description=f"One of {', '.join(PERIODS)}.")] = "week",
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """`{"columns", "rows"}`: one row per period and breakdown (`by`, default environment),
    of the token's tenant (an operator token: every tenant unless one is named). The window
    is `since`..`until` (UTC days, both included; default the 90 days to today). The same
    report as `shipledger metrics dora --format json`."""
    ledger = ctx.require_ledger()
    if principal.tenant != ANY_TENANT:
        if tenant not in (None, principal.tenant):
            raise ApiError(403, f"tenant: this token reads tenant {principal.tenant!r} only")
        tenant = principal.tenant
    start, end = dora_window(since, until, datetime.now(UTC).date())
    try:
        query = DoraQuery(
            since=start,
            until=end,
            period=period,
            tenant=tenant,
            teams=tuple(team or ()),
            applications=tuple(application or ()),
            services=tuple(service or ()),
            environments=tuple(environment or ()),
            by=tuple(by or ("environment",)),
        )
    except DoraError as exc:
        raise ApiError(400, str(exc)) from exc
    rows = await run_in_threadpool(ledger.dora, query, principal.row_scope(tenant))
    return {"columns": dora_columns(query.by), "rows": [r.as_dict() for r in rows]}

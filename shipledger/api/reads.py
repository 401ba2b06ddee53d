"""Reads of the ledger, only within the token's tenant: `GET /v1/events/{event_id}` (one
stored deployment event) and `POST /v1/query` (read-only SQL, hot and cold rows).

Needs the ledger store, which only the process that owns it has: the API inside `shipledger
up` (or any API given a ClickHouse server). Another tenant's rows read as absent.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from shipledger.api.auth import ANY_TENANT, Principal
from shipledger.api.bodies import TOKEN_ERRORS, Problem
from shipledger.api.context import ApiContext, ApiError, Authorized, context
from shipledger.sinks.ddl import EVENTS, qualified
from shipledger.sinks.query import QueryError, run_read_query

router = APIRouter(prefix="/v1")


@router.get(
    "/events/{event_id}",
    responses={
        **TOKEN_ERRORS,
        404: {"model": Problem, "description": "No such event for this token's tenant."},
        503: {"model": Problem, "description": "This API has no ledger store."},
    },
    summary="Read one stored deployment event",
)
async def get_event(
    event_id: str,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(Authorized("read"))],
) -> dict[str, Any]:
    """The stored row of a deployment event (as the ledger keeps it), if it is the token's
    tenant's. Events reach the ledger a moment after their 202."""
    store = ctx.require_store()
    table = qualified(store.database, EVENTS)  # checked identifiers
    sql = f"SELECT * FROM {table} WHERE event_id = %(id)s"  # noqa: S608
    params: dict[str, Any] = {"id": event_id}
    if principal.tenant != ANY_TENANT:
        sql += " AND tenant = %(tenant)s"
        params["tenant"] = principal.tenant
    columns, rows = await run_in_threadpool(store.query, sql + " LIMIT 1", params)
    if not rows:
        raise ApiError(404, f"no event {event_id!r} for tenant {principal.tenant!r}")
    row: dict[str, Any] = jsonable_encoder(dict(zip(columns, rows[0], strict=True)))
    return row


class QueryRequest(BaseModel):
    """A read-only query of the ledger."""

    sql: str = Field(examples=["SELECT environment, count() FROM deployments GROUP BY 1"])
    tenant: str | None = Field(
        default=None,
        description="Tenant to scope to. A tenant's token is always scoped to its own tenant; "
        "an operator (`*`) token reads every tenant unless one is named.",
    )
    max_rows: int | None = Field(default=None, ge=1, description="At most this many rows.")


@router.post(
    "/query",
    responses={
        **TOKEN_ERRORS,
        400: {"model": Problem, "description": "Not a read-only query, or it failed."},
        403: {"model": Problem, "description": "Another tenant than the token's, or no scope."},
        503: {"model": Problem, "description": "This API has no ledger store."},
    },
    summary="Run read-only SQL over the ledger (hot and cold rows, tenant-scoped)",
)
async def post_query(
    request: QueryRequest,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(Authorized("read"))],
) -> dict[str, Any]:
    """`{"columns", "types", "rows", "truncated"}`. ClickHouse itself enforces read-only and
    the tenant filter (see `shipledger.sinks.query`); this is what `shipledger query` uses
    while `shipledger up` owns the embedded ledger."""
    store = ctx.require_store()
    tenant = request.tenant
    if principal.tenant != ANY_TENANT:
        if tenant not in (None, principal.tenant):
            raise ApiError(403, f"tenant: this token reads tenant {principal.tenant!r} only")
        tenant = principal.tenant
    limit = ctx.settings.query_max_rows
    max_rows = min(request.max_rows or limit, limit)
    try:
        result = await run_in_threadpool(
            run_read_query,
            store,
            request.sql,
            tenant=tenant,
            max_rows=max_rows,
            timeout_s=ctx.settings.query_timeout_s,
        )
    except QueryError as exc:
        raise ApiError(400, str(exc)) from exc
    return result.to_json()

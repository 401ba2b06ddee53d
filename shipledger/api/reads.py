"""`GET /v1/events/{event_id}`: one stored deployment event, only within the token's tenant.

Needs the ledger store, which only the process that owns it has: the API inside `shipledger
up` (or any API given a ClickHouse server). Another tenant's event reads as not found.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder

from shipledger.api.auth import ANY_TENANT, Principal
from shipledger.api.bodies import Problem
from shipledger.api.context import ApiContext, ApiError, Authorized, context
from shipledger.sinks.ddl import EVENTS, qualified

router = APIRouter(prefix="/v1")


@router.get(
    "/events/{event_id}",
    responses={
        401: {"model": Problem},
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
    store = ctx.store
    if store is None:
        raise ApiError(503, "reads need the ledger: use the API of `shipledger up`")
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

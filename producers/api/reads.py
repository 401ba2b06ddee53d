"""Reads of the ledger, only within the token's tenant (and its teams and environments, if
it is limited to some): `GET /v1/events/{event_id}` (one stored deployment event) and
`POST /v1/query` (read-only SQL), hot and cold rows alike.

Needs the ledger's reads (`LedgerReads`, given to the app by the process that owns the
ledger: the API inside `shipledger up`). Rows outside the token's scope read as absent.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field, ValidationError

from shipledger.producers.api.bodies import TOKEN_ERRORS, ledger_read_errors, problems
from shipledger.producers.api.context import ApiError, ContextDep, ReadPrincipal, readable_tenant
from shipledger.producers.api.limits import check_declared_length, read_capped
from shipledger.producers.api.query_slots import SlotsFull
from shipledger.sinks.ledger.reader import QueryError, QueryLimits

router = APIRouter(prefix="/v1")


@router.get(
    "/events/{event_id:path}",
    responses=ledger_read_errors(
        {404: "No such event for this token's tenant (and teams and environments)."}
    ),
    summary="Read one stored deployment event",
)
async def get_event(
    event_id: str,
    ctx: ContextDep,
    principal: ReadPrincipal,
) -> dict[str, Any]:
    """The stored row of a deployment event (as the ledger keeps it), if it is the token's
    tenant's (and teams' and environments', for a token limited to some), plus
    `ledger_tier`: `hot`, or `cold` once `shipledger archive` moved it (null on a
    ClickHouse server, which tiers inside the table). Events reach the ledger a moment after
    their 202."""
    ledger = ctx.require_ledger()
    tenant = principal.own_tenant
    found = await run_in_threadpool(ledger.event, event_id, tenant)
    if found is None or not principal.sees(
        str(found.row["tenant"]), found.row.get("team"), found.row.get("environment")
    ):
        raise ApiError(404, f"no event {event_id!r} for tenant {principal.tenant!r}")
    shown = (
        await run_in_threadpool(ledger.reveal, found.row, str(found.row["tenant"]))
        if principal.sees_names
        else found.row
    )
    row: dict[str, Any] = jsonable_encoder(shown)
    row["ledger_tier"] = found.tier
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


def _query_body() -> dict[str, Any]:
    schema = QueryRequest.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(
    "/query",
    response_model=dict[str, Any],
    openapi_extra=_query_body(),
    responses={
        **TOKEN_ERRORS,
        **problems(
            {
                400: "Refused (not a read-only query, or something it names is not on the "
                "allow-list), over a limit, or failed.",
                403: "Another tenant than the token's, a tenant of another region, or no scope.",
                413: "A body far longer than the longest SQL.",
                429: "Over the token's request rate or concurrent queries (Retry-After).",
                503: "This API has no ledger store, or runs its most queries at once "
                "(Retry-After).",
            }
        ),
    },
    summary="Run read-only SQL over the ledger (hot and cold rows, tenant-scoped)",
)
async def post_query(
    http: Request,
    ctx: ContextDep,
    principal: ReadPrincipal,
) -> Response:
    """`{"columns", "types", "rows", "truncated"}`. A tenant's query may read only its
    tenant's rows of the ledger's tables and views (a token limited to teams or environments:
    only theirs; docs/security.md, RBAC), with allowed functions, under memory,
    time and size limits (docs/security.md, `shipledger.sinks.ledger.query`); this is what
    `shipledger query` uses while `shipledger up` owns the embedded ledger."""
    ledger = ctx.require_ledger()
    request = await _read_request(http, ctx.settings.query_max_sql_bytes)
    tenant = readable_tenant(principal, request.tenant)
    ctx.require_resident(tenant)
    settings = ctx.settings
    max_rows = min(request.max_rows or settings.query_max_rows, settings.query_max_rows)
    try:
        with ctx.query_slots.slot(principal.token_id):
            result = await run_in_threadpool(
                ledger.query,
                request.sql,
                tenant=tenant,
                max_rows=max_rows,
                limits=QueryLimits.of(settings),
                teams=principal.teams,
                environments=principal.environments,
            )
    except SlotsFull as exc:
        raise ApiError(exc.status, exc.message, headers={"Retry-After": "1"}) from exc
    except QueryError as exc:
        raise ApiError(400, str(exc)) from exc
    if principal.sees_names:
        # Only the queried tenant's people: the rows can hold text the caller wrote.
        shown = await run_in_threadpool(ledger.reveal, result.rows, tenant)
        result = replace(result, rows=shown)
    # Serialized here to cap the answer's size (as Starlette's JSONResponse would write it).
    body = json.dumps(
        result.to_json(), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")
    if len(body) > settings.query_max_response_bytes:
        raise ApiError(
            400,
            f"the answer is {len(body)} bytes of JSON, over the limit of "
            f"{settings.query_max_response_bytes} bytes (SHIPLEDGER_QUERY_MAX_RESPONSE_BYTES): "
            "select fewer rows (max_rows, LIMIT) or columns",
        )
    return Response(body, media_type="application/json")


async def _read_request(http: Request, max_sql_bytes: int) -> QueryRequest:
    """The request body, read up to a bound (the SQL JSON-escaped, plus the other fields),
    so a huge body is refused (413) before it is held in memory."""
    limit = 2 * max_sql_bytes + 4096
    check_declared_length(http.headers.get("content-length"), limit, "query body")
    body = await read_capped(http.stream(), limit, "query body")
    try:
        return QueryRequest.model_validate_json(body)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ApiError(400, reasons) from exc

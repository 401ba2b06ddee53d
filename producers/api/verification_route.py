"""`GET /v1/deployments/{deployment_id}/verification` and `GET /v1/verifications`: the
post-deploy verification verdicts (docs/verification.md), only rows the token sees."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from shipledger.producers.api.bodies import TOKEN_ERRORS, ledger_read_errors, problems
from shipledger.producers.api.context import ApiError, ContextDep, ReadPrincipal
from shipledger.schemas.policy import VERDICTS
from shipledger.sinks.ledger.reader import StoredVerdict, VerdictFilter

router = APIRouter(prefix="/v1")


def verdict_view(v: StoredVerdict) -> dict[str, Any]:
    """One verdict as the API and `shipledger verification --format json` show it."""
    return {
        "tenant": v.tenant,
        "deployment_id": v.deployment_id,
        "service": v.service,
        "environment": v.environment,
        "team": v.team or None,
        "verdict": v.verdict,
        "score": v.score,
        "window_start": v.window_start.isoformat(),
        "window_end": v.window_end.isoformat(),
        "decided_at": v.decided_at.isoformat(),
        "check_count": v.check_count,
        "policy_version": v.policy_version,
        "evidence": json.loads(v.evidence),
    }


@router.get(
    "/deployments/{deployment_id:path}/verification",
    responses=ledger_read_errors(
        {404: "No verdict yet: unknown deployment, not succeeded, or its window is open."}
    ),
    summary="The post-deploy verification verdict of one deployment, with its evidence",
)
async def get_verification(
    deployment_id: str, ctx: ContextDep, principal: ReadPrincipal
) -> dict[str, Any]:
    """The latest verdict (`verified`, `suspect`, `failed_verification`, `unverified`) of a
    deployment of the token's tenant, its score and evidence (which checks, pass or fail,
    when). 404 until its window closed and a verdict was decided."""
    ledger = ctx.require_ledger()
    wanted = VerdictFilter(principal.own_tenant, deployment_id=deployment_id, limit=1)
    found = await run_in_threadpool(ledger.verifications, wanted)
    visible = [v for v in found if principal.sees(v.tenant, v.team or None, v.environment)]
    if not visible:
        raise ApiError(404, f"deployment_id: no verification verdict for {deployment_id!r}")
    return verdict_view(visible[0])


@router.get(
    "/verifications",
    responses={
        **TOKEN_ERRORS,
        **problems({400: "A parameter out of range (named).", 503: "No ledger store."}),
    },
    summary="The latest post-deploy verification verdicts, newest window first",
)
async def list_verifications(
    ctx: ContextDep,
    principal: ReadPrincipal,
    verdict: Annotated[str | None, Query(description=f"One of {', '.join(VERDICTS)}.")] = None,
    service: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The token's tenant's verdicts (an operator token: every tenant), optionally of one
    verdict or service."""
    if verdict is not None and verdict not in VERDICTS:
        raise ApiError(400, f"verdict: must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    ledger = ctx.require_ledger()
    wanted = VerdictFilter(principal.own_tenant, verdict=verdict, service=service, limit=limit)
    found = await run_in_threadpool(ledger.verifications, wanted)
    return [
        verdict_view(v) for v in found if principal.sees(v.tenant, v.team or None, v.environment)
    ]

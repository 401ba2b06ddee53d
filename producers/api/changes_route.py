"""`GET /v1/deployments/{deployment_id}/changes`: the commits and pull requests a deployment
shipped (its change set, docs/changes.md), if the token sees the deployment."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder

from shipledger.producers.api.bodies import ledger_read_errors
from shipledger.producers.api.context import ApiError, ContextDep, ReadPrincipal

router = APIRouter(prefix="/v1")


@router.get(
    "/deployments/{deployment_id:path}/changes",
    responses=ledger_read_errors(
        {
            404: "No change set for this deployment in the token's tenant (and teams and "
            "environments): unknown, not finished yet, or without a commit.",
        }
    ),
    summary="The commits and pull requests a deployment shipped",
)
async def get_changes(
    deployment_id: str, ctx: ContextDep, principal: ReadPrincipal
) -> dict[str, Any]:
    """The deployment's change set: the commit range since the previous succeeded deployment
    of its service to its environment (`from_sha`..`to_sha`; `reverse`: a rollback's range,
    the commits taken out), each commit with its pull request, author and lead time, and
    the pull requests. Computed when the deployment finished (a push that reached the ledger
    later counts after `shipledger changes recompute`). The same answer as `shipledger
    changes show ID --format json`."""
    ledger = ctx.require_ledger()
    tenant = principal.own_tenant
    found = await run_in_threadpool(ledger.change_set, tenant, deployment_id)
    if found is None or not principal.sees(
        found.summary["tenant"], found.summary.get("team"), found.summary["environment"]
    ):
        raise ApiError(404, f"no change set for deployment {deployment_id!r}")
    shown = found.as_dict()
    if principal.sees_names:
        shown = await run_in_threadpool(ledger.reveal, shown, found.summary["tenant"])
    answer: dict[str, Any] = jsonable_encoder(shown)
    return answer

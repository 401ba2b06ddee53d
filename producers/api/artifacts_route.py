"""`GET /v1/artifacts/protected` (docs/artifacts.md): the digests a registry's garbage
collection must keep. From the latest succeeded deployments per service and environment in
the ledger (`LedgerReads.artifacts_in_use`): the running one (position 1) and the rollback
targets behind it, as many as the tenant's policy says (`artifact_rollback_reach`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from shipledger.producers.api.bodies import TOKEN_ERRORS, problems
from shipledger.producers.api.context import ContextDep, ReadPrincipal, readable_tenant
from shipledger.schemas.governance import ArtifactInUse

router = APIRouter(prefix="/v1")
#: The most deployments per service and environment a protected list reaches back (the
#: policy's `artifact_rollback_reach` is at most this).
MAX_REACH = 100


class ProtectedList(BaseModel):
    """`GET /v1/artifacts/protected`: the protected digests, and every deployment behind them."""

    digests: list[str]
    #: Every deployment within reach that ships one (position 1: the one running).
    artifacts: list[ArtifactInUse]


@router.get(
    "/artifacts/protected",
    response_model=ProtectedList,
    responses={
        **TOKEN_ERRORS,
        **problems({403: "Another tenant than the token's.", 503: "No ledger here."}),
    },
    summary="Digests running or within rollback reach: what a registry's GC must keep",
)
async def get_protected(
    ctx: ContextDep, principal: ReadPrincipal, tenant: str | None = None
) -> ProtectedList:
    """The artifact digests that the latest succeeded deployment of some service and
    environment runs (`position` 1), or that one of the `artifact_rollback_reach` deployments
    before it shipped (a rollback would pull it again), of the token's tenant (an operator
    token: every tenant unless one is named), only rows the token sees. `digests` is the
    distinct sorted list a GC job excludes; deployments without a digest protect nothing.
    The same list as `shipledger artifacts protected --format json`."""
    governance, ledger = ctx.require_governance()
    tenant = readable_tenant(principal, tenant)
    in_use = await run_in_threadpool(ledger.artifacts_in_use, tenant, MAX_REACH)
    rows = [
        used
        for used in in_use
        if used.digest is not None
        and used.position <= governance.rollback_reach(used.tenant)
        and principal.sees(used.tenant, used.team, used.environment)
    ]
    return ProtectedList(digests=sorted({r.digest for r in rows if r.digest}), artifacts=rows)

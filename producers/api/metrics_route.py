"""`GET /v1/metrics/dora` and `GET /v1/metrics/success`: the DORA metrics and the success
criteria of the token's tenant (docs/metrics.md), read from the ledger's aggregates
(`shipledger.sinks.ledger.dora`, `.success`); `GET /v1/reports/adoption`: which services
report their deployments (docs/reports.md). Only rows the token sees."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from shipledger.producers.api.bodies import ledger_read_errors
from shipledger.producers.api.context import (
    ApiContext,
    ApiError,
    ContextDep,
    ReadPrincipal,
    readable_tenant,
)
from shipledger.schemas.policy import Policy, load_policy
from shipledger.sinks.ledger.reader import (
    DORA_DIMENSIONS as DIMENSIONS,
)
from shipledger.sinks.ledger.reader import (
    DORA_PERIODS as PERIODS,
)
from shipledger.sinks.ledger.reader import (
    AdoptionError,
    AdoptionQuery,
    DoraError,
    DoraQuery,
    adoption_report,
    dora_columns,
    dora_window,
    success_report,
)

router = APIRouter(prefix="/v1")

Names = Annotated[list[str] | None, Query()]
#: What a report's GET may answer besides 200.
_READ_ERRORS = ledger_read_errors(
    {400: "A parameter out of range (named).", 403: "Another tenant than the token's."}
)


@router.get(
    "/metrics/dora",
    responses=_READ_ERRORS,
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
    tenant = readable_tenant(principal, tenant)
    query = _query(
        since,
        until,
        period=period,
        tenant=tenant,
        teams=tuple(team or ()),
        applications=tuple(application or ()),
        services=tuple(service or ()),
        environments=tuple(environment or ()),
        by=tuple(by or ("environment",)),
    )
    rows = await run_in_threadpool(ledger.dora, query, principal.row_scope(tenant))
    return {"columns": dora_columns(query.by), "rows": [r.as_dict() for r in rows]}


def _query(since: date | None, until: date | None, **asked: Any) -> DoraQuery:
    """The report's query over `since`..`until` (default the 90 days to today); 400 naming
    the parameter at fault."""
    start, end = dora_window(since, until, datetime.now(UTC).date())
    try:
        return DoraQuery(since=start, until=end, **asked)
    except DoraError as exc:
        raise ApiError(400, str(exc)) from exc


@router.get(
    "/metrics/success",
    responses=_READ_ERRORS,
    summary="Success criteria per period and team: time to detect failures, rollback duration",
)
async def get_success(
    ctx: ContextDep,
    principal: ReadPrincipal,
    tenant: str | None = None,
    team: Names = None,
    environment: Names = None,
    period: Annotated[str, Query(description="One of week, month.")] = "week",
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """`{"columns", "rows", "totals", "missing"}`: per period and team the mean time to
    detect a failed deployment and the mean rollback duration against the policy's targets
    (`success_criteria:`), each team over the window (`totals`) and the teams missing a
    target there, of the token's tenant and the rows it sees. Window as `/metrics/dora`. The
    same report as `shipledger metrics success --format json`."""
    ledger = ctx.require_ledger()
    tenant = readable_tenant(principal, tenant)
    if period not in ("week", "month"):
        raise ApiError(400, f"period: one of week, month, not {period!r}")
    query = _query(
        since,
        until,
        period=period,
        tenant=tenant,
        teams=tuple(team or ()),
        environments=tuple(environment or ()),
        by=("team",),
    )
    criteria = _policy(ctx).success_criteria
    failures = await run_in_threadpool(
        ledger.failures, query, tuple(criteria.detection_rules), principal.row_scope(tenant)
    )
    return success_report(failures, criteria).as_dict()


def _policy(ctx: ApiContext) -> Policy:
    """The policy whose targets apply: the running one (`up` validated it at start)."""
    return load_policy(ctx.settings.policy_file)


@router.get(
    "/reports/adoption",
    responses=_READ_ERRORS,
    summary="Adoption: which known services report their deployments, per team and environment",
)
async def get_adoption(
    ctx: ContextDep,
    principal: ReadPrincipal,
    tenant: str | None = None,
    days: Annotated[int, Query(description="Silent this many days: a laggard.")] = 30,
) -> dict[str, Any]:
    """`{"team_columns", "teams", "service_columns", "services"}`: per team and environment
    the services known (catalog, deployments, CMDB) that emit deployments and those that do
    not, the recent deployments' missing metadata, digests and tickets; every service with
    its last deployment, laggards first. The same report as `shipledger report adoption
    --format json`."""
    ledger = ctx.require_ledger()
    tenant = readable_tenant(principal, tenant)
    try:
        query = AdoptionQuery(days=days, tenant=tenant)
    except AdoptionError as exc:
        raise ApiError(400, str(exc)) from exc
    now = datetime.now(UTC)
    services = await run_in_threadpool(ledger.adoption, query, now, principal.row_scope(tenant))
    return adoption_report(services)

"""`GET /v1/metrics/dora` and `GET /v1/metrics/success`: the DORA metrics and the success
criteria of the token's tenant (docs/metrics.md), read from the ledger's aggregates
(`shipledger.sinks.ledger.dora`, `.success`); `GET /v1/reports/adoption`: which services
report their deployments (docs/reports.md). Only rows the token sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
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
from shipledger.schemas.scopes import RowScope
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
    LedgerReads,
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


@dataclass(frozen=True)
class _Report:
    """What both metrics reports take: the ledger, the rows the token sees, and the filters
    and window they share."""

    ledger: LedgerReads
    rows: RowScope
    tenant: str | None
    teams: tuple[str, ...]
    environments: tuple[str, ...]
    since: date | None
    until: date | None

    def query(self, **asked: Any) -> DoraQuery:
        """The report's query over `since`..`until` (default the 90 days to today); 400
        naming the parameter at fault."""
        start, end = dora_window(self.since, self.until, datetime.now(UTC).date())
        try:
            return DoraQuery(
                since=start,
                until=end,
                tenant=self.tenant,
                teams=self.teams,
                environments=self.environments,
                **asked,
            )
        except DoraError as exc:
            raise ApiError(400, str(exc)) from exc


async def _report(
    ctx: ContextDep,
    principal: ReadPrincipal,
    tenant: str | None = None,
    team: Names = None,
    environment: Names = None,
    since: date | None = None,
    until: date | None = None,
) -> _Report:
    """The parameters both reports share, checked: a ledger (else 503), the token's tenant
    (403 for another's; an operator token: every tenant unless one is named)."""
    ledger = ctx.require_ledger()
    tenant = readable_tenant(principal, tenant)
    return _Report(
        ledger,
        principal.row_scope(tenant),
        tenant,
        tuple(team or ()),
        tuple(environment or ()),
        since,
        until,
    )


Report = Annotated[_Report, Depends(_report)]


@router.get(
    "/metrics/dora",
    responses=_READ_ERRORS,
    summary="DORA metrics per period (deployment frequency, lead time, failure rate, recovery)",
)
async def get_dora(
    report: Report,
    application: Names = None,
    service: Names = None,
    by: Annotated[list[str] | None, Query(description=f"Of {', '.join(DIMENSIONS)}.")] = None,
    period: Annotated[str, Query(description=f"One of {', '.join(PERIODS)}.")] = "week",
) -> dict[str, Any]:
    """`{"columns", "rows"}`: one row per period and breakdown (`by`, default environment),
    of the token's tenant (an operator token: every tenant unless one is named). The window
    is `since`..`until` (UTC days, both included; default the 90 days to today). The same
    report as `shipledger metrics dora --format json`."""
    query = report.query(
        period=period,
        applications=tuple(application or ()),
        services=tuple(service or ()),
        by=tuple(by or ("environment",)),
    )
    rows = await run_in_threadpool(report.ledger.dora, query, report.rows)
    return {"columns": dora_columns(query.by), "rows": [r.as_dict() for r in rows]}


@router.get(
    "/metrics/success",
    responses=_READ_ERRORS,
    summary="Success criteria per period and team: time to detect failures, rollback duration",
)
async def get_success(
    ctx: ContextDep,
    report: Report,
    period: Annotated[str, Query(description="One of week, month.")] = "week",
) -> dict[str, Any]:
    """`{"columns", "rows", "totals", "missing"}`: per period and team the mean time to
    detect a failed deployment and the mean rollback duration against the policy's targets
    (`success_criteria:`), each team over the window (`totals`) and the teams missing a
    target there, of the token's tenant and the rows it sees. Filters and window as
    `/metrics/dora`. The same report as `shipledger metrics success --format json`."""
    if period not in ("week", "month"):
        raise ApiError(400, f"period: one of week, month, not {period!r}")
    query = report.query(period=period, by=("team",))
    criteria = _policy(ctx).success_criteria
    failures = await run_in_threadpool(
        report.ledger.failures, query, tuple(criteria.detection_rules), report.rows
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

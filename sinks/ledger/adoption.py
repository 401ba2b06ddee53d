"""Adoption (docs/reports.md, Adoption): which known services report their deployments, and
how well, per team and environment.

The services known are those of the catalog and those deployments named (the `services`
view), and, once a CMDB export was reconciled (`shipledger cmdb reconcile`), the services of
the tenant's latest export that no deployment names (its `ci_never_deployed` findings). Per
service and environment one query of the `deployments` view (the latest record of each
deployment, hot and cold) says when it was last seen and, over the last N days, how many
deployments arrived, how many lacked the emitter's metadata, a digest or a change ticket.
Python only sorts the services into emitting, silent and never, and adds up per team.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger.ddl import DEPLOYMENTS_VIEW, qualified
from shipledger.sinks.ledger.dora import Runner, as_utc

#: A deployment the emitter reported carries these (`shipledger emit`/`run` in CI always sets
#: pipeline_provider, detects the run's URL, requires the commit): one missing, it came from
#: elsewhere (a hand-written call, a webhook of a tool outside the pipeline).
EMITTER_FIELDS = ("pipeline_provider", "pipeline_run_url", "commit_sha")
#: Every team's row over all its environments (`AdoptionRow.environment`).
ALL_ENVIRONMENTS = "*"


class AdoptionError(ValueError):
    """An adoption request that cannot be answered (names the field at fault)."""


@dataclass(frozen=True)
class AdoptionQuery:
    """Services of `tenant` (None: every tenant) silent for `days` days count as laggards."""

    days: int = 30
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 3660:
            raise AdoptionError(f"days: between 1 and 3660, not {self.days}")


_NO_EMITTER = " OR ".join(f"ifNull(toString({f}), '') = ''" for f in EMITTER_FIELDS)
#: Per tenant, service and environment: last seen, and the recent deployments' gaps.
_USAGE_SQL = (
    "SELECT tenant, toString(service), toString(environment), max(started_at),\n"
    "    countIf(recent), countIf(recent AND ({no_emitter})),\n"
    "    countIf(recent AND ifNull(artifact_digest, '') = ''),\n"
    "    countIf(recent AND ifNull(change_id, '') = '')\n"
    "FROM (SELECT *, started_at >= {{since:DateTime64(3, 'UTC')}} AS recent FROM {deployments}"
    "{where})\n"
    "GROUP BY tenant, service, environment"
)
#: Every service known: the catalog's latest entry, else the deployments (`services` view).
_SERVICES_SQL = (
    "SELECT tenant, service, ifNull(owner_team, ''), in_catalog, removed FROM {services}{where}"
)
#: The findings of each tenant's latest reconciled CMDB export (`sinks.ledger.cmdb`).
_CMDB_SQL = (
    "SELECT tenant, finding, service FROM {findings}\n"
    "WHERE (tenant, export_sha256) IN (SELECT tenant, argMax(export_sha256, reconciled_at)\n"
    "    FROM {findings}{where} GROUP BY tenant)"
)
#: The findings that name a configuration item of the export.
_CI_FINDINGS = frozenset({"ci_never_deployed", "owner_mismatch", "environment_mismatch"})


@dataclass
class _Cmdb:
    """What a tenant's latest export says of service names (casefolded, as it compares)."""

    named: set[str]
    missing: set[str]
    never: dict[str, str]

    def has(self, service: str) -> bool | None:
        """Whether the export lists `service`: yes if a finding names its CI, no if it was
        deployed and reported missing; None when the findings do not say (the CMDB agreed
        with the ledger, or the service was first deployed after the export)."""
        name = service.casefold()
        if name in self.missing:
            return False
        return True if name in self.named else None


def _cmdb(rows: Sequence[Sequence[Any]]) -> dict[str, _Cmdb]:
    exports: dict[str, _Cmdb] = {}
    for tenant, finding, service in rows:
        found = exports.setdefault(str(tenant), _Cmdb(set(), set(), {}))
        name = str(service).casefold()
        if finding == "deployed_not_in_cmdb":
            found.missing.add(name)
        elif finding in _CI_FINDINGS:
            found.named.add(name)
        if finding == "ci_never_deployed":
            found.never[name] = str(service)
    return exports


@dataclass(frozen=True)
class ServiceUsage:
    """What the deployments of one service to one environment say."""

    last_seen: datetime
    recent: int
    no_emitter: int
    no_digest: int
    no_ticket: int


@dataclass(frozen=True)
class ServiceAdoption:
    """One known service: where it is known from, where it deploys, and its status."""

    tenant: str
    service: str
    team: str
    in_catalog: bool
    #: None: no CMDB export of the tenant was reconciled, or its findings do not say.
    in_cmdb: bool | None
    usage: dict[str, ServiceUsage]
    now: datetime
    days: int

    @property
    def last_seen(self) -> datetime | None:
        """Its latest deployment's start, any environment."""
        return max((u.last_seen for u in self.usage.values()), default=None)

    @property
    def status(self) -> str:
        """emitting (a deployment in the last N days), silent (none since), never."""
        last = self.last_seen
        if last is None:
            return "never"
        return "emitting" if last >= self.now - timedelta(days=self.days) else "silent"

    def as_dict(self) -> dict[str, Any]:
        """The service as report columns."""
        last = self.last_seen
        return {
            "tenant": self.tenant,
            "service": self.service,
            "team": self.team,
            "status": self.status,
            "last_seen": None if last is None else last.isoformat(timespec="seconds"),
            "days_silent": None if last is None else (self.now - last).days,
            "environments": " ".join(sorted(self.usage)),
            "in_catalog": self.in_catalog,
            "in_cmdb": self.in_cmdb,
        }


SERVICE_COLUMNS = [
    "tenant",
    "service",
    "team",
    "status",
    "last_seen",
    "days_silent",
    "environments",
    "in_catalog",
    "in_cmdb",
]
TEAM_COLUMNS = [
    "tenant",
    "team",
    "environment",
    "services",
    "emitting",
    "silent",
    "never",
    "coverage",
    "deployments",
    "no_emitter_metadata",
    "missing_digest_rate",
    "missing_ticket_rate",
]


def read_adoption(
    store: Runner,
    query: AdoptionQuery,
    now: datetime,
    query_database: str,
    findings: str,
    scope: RowScope | None = None,
) -> list[ServiceAdoption]:
    """Every known service of `query` that `scope` admits (None: all), with its usage per
    environment as of `now`: three reads (the `services` and `deployments` views of
    `query_database`, the CMDB `findings` table)."""
    where = "" if query.tenant is None else " WHERE tenant = {tenant:String}"
    params: dict[str, Any] = {} if query.tenant is None else {"tenant": query.tenant}
    usage_sql = _USAGE_SQL.format(
        no_emitter=_NO_EMITTER,
        deployments=qualified(query_database, DEPLOYMENTS_VIEW),
        where=where,
    )
    since = now - timedelta(days=query.days)
    _, usage_rows = store.query(usage_sql, {**params, "since": since})
    usage: dict[tuple[str, str], dict[str, ServiceUsage]] = {}
    for tenant, service, env, last, *counts in usage_rows:
        usage.setdefault((str(tenant), str(service)), {})[str(env)] = ServiceUsage(
            as_utc(last), *(int(c) for c in counts)
        )
    _, cmdb_rows = store.query(_CMDB_SQL.format(findings=findings, where=where), params)
    exports = _cmdb(cmdb_rows)
    services_sql = _SERVICES_SQL.format(services=qualified(query_database, "services"), where=where)
    _, service_rows = store.query(services_sql, params)
    known: dict[tuple[str, str], tuple[str, bool]] = {}
    for tenant, service, team, in_catalog, removed in service_rows:
        key = (str(tenant), str(service))
        if removed and key not in usage:
            continue  # retired from the catalog and never deployed: nothing to adopt
        known[key] = (str(team), bool(in_catalog))
    names = {(t, s.casefold()) for t, s in known}
    for tenant, cmdb in exports.items():
        for name, service in cmdb.never.items():
            if (tenant, name) not in names:  # the CMDB's own: no catalog entry, no deployment
                known[(tenant, service)] = ("", False)
    found = []
    for (tenant, service), (team, in_catalog) in sorted(known.items()):
        export = exports.get(tenant)
        found.append(
            ServiceAdoption(
                tenant=tenant,
                service=service,
                team=team,
                in_catalog=in_catalog,
                in_cmdb=None if export is None else export.has(service),
                usage=usage.get((tenant, service), {}),
                now=now,
                days=query.days,
            )
        )
    return [s for s in found if _admitted(s, scope)]


def _admitted(service: ServiceAdoption, scope: RowScope | None) -> bool:
    """Whether `scope` sees `service`: its tenant and team, and, under an environment scope,
    one of the environments it deployed to (a service never deployed is in none)."""
    if scope is None:
        return True
    return any(scope.admits(service.tenant, service.team, env) for env in service.usage) or (
        not scope.environments and scope.admits(service.tenant, service.team, None)
    )


def team_rows(services: Sequence[ServiceAdoption]) -> list[dict[str, Any]]:
    """Per tenant and team: every environment together (`ALL_ENVIRONMENTS`), then each
    environment its services deployed to (pure)."""
    groups: dict[tuple[str, str], list[ServiceAdoption]] = {}
    for s in services:
        groups.setdefault((s.tenant, s.team), []).append(s)
    rows = []
    for (tenant, team), members in sorted(groups.items()):
        envs = sorted({env for s in members for env in s.usage})
        rows.append(_team_row(tenant, team, ALL_ENVIRONMENTS, members, None))
        rows += [
            _team_row(tenant, team, env, [s for s in members if env in s.usage], env)
            for env in envs
        ]
    return rows


def _team_row(
    tenant: str, team: str, label: str, members: Sequence[ServiceAdoption], env: str | None
) -> dict[str, Any]:
    if env is None:
        statuses = [s.status for s in members]
        usages = [u for s in members for u in s.usage.values()]
    else:
        # In one environment a service deployed there once is emitting or silent, never never.
        statuses = ["emitting" if s.usage[env].recent else "silent" for s in members]
        usages = [s.usage[env] for s in members]
    deployments = sum(u.recent for u in usages)
    return {
        "tenant": tenant,
        "team": team,
        "environment": label,
        "services": len(members),
        "emitting": statuses.count("emitting"),
        "silent": statuses.count("silent"),
        "never": statuses.count("never") if env is None else None,
        "coverage": round(statuses.count("emitting") / len(members), 4),
        "deployments": deployments,
        "no_emitter_metadata": sum(u.no_emitter for u in usages),
        "missing_digest_rate": _rate(sum(u.no_digest for u in usages), deployments),
        "missing_ticket_rate": _rate(sum(u.no_ticket for u in usages), deployments),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def adoption_report(services: Sequence[ServiceAdoption]) -> dict[str, Any]:
    """The report as JSON: the team rows (`team_rows`), and every service, the laggards
    (never, then silent) first."""
    order = {"never": 0, "silent": 1, "emitting": 2}
    ranked = sorted(services, key=lambda s: (s.tenant, order[s.status], s.service))
    return {
        "team_columns": TEAM_COLUMNS,
        "teams": team_rows(services),
        "service_columns": SERVICE_COLUMNS,
        "services": [s.as_dict() for s in ranked],
    }

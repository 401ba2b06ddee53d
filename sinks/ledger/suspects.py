"""The ledger's side of incident triage (docs/triage.md): the candidates of an incident and
every input of their scores, read in a few small queries; `shipledger.suspects` scores them.

Each input is its own query: the dependency map (latest catalog entry per service); the
deployments of those services (`suspect_deployments`: every record, sorted by service and
start, in the hot database, archived or not) from the start of the lookback window until as
long after the incident (the latest record of each; those after it count only as the
rollbacks they name); the `config_drift` alerts about them; the change sizes
(`deployment_change_sets.commit_count`) and the verdicts (`deployment_verifications`); a
deployment neither of the last two has a row for reads as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.suspects import DEFAULT_MAX_DEPTH, Candidate, Suspect, dependency_distances, rank

#: The alert rule of configuration drift (the verification part of the ledger raises it).
DRIFT_RULE = "config_drift"
DEFAULT_LOOKBACK = timedelta(hours=24)
MAX_LOOKBACK = timedelta(days=30)
MAX_LIMIT = 100
#: What a ClickHouse DateTime64 holds: the window around an incident must fit inside.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, tzinfo=UTC)


class SuspectsError(ValueError):
    """A query out of range (the message names the parameter)."""


@dataclass(frozen=True)
class SuspectsQuery:
    """An incident: its tenant, service and time, how far back to look, optionally one
    environment, how many suspects to return and how far along the dependencies."""

    tenant: str
    service: str
    at: datetime
    lookback: timedelta = DEFAULT_LOOKBACK
    environment: str | None = None
    limit: int = 10
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if not self.service:
            raise SuspectsError("service: required")
        if self.at.tzinfo is None:
            raise SuspectsError("at: needs a time zone (e.g. 2026-12-01T10:00:00Z)")
        if not timedelta(0) < self.lookback <= MAX_LOOKBACK:
            raise SuspectsError(f"lookback: must be > 0 and at most {MAX_LOOKBACK.days} days")
        if not EARLIEST + MAX_LOOKBACK <= self.at <= LATEST - MAX_LOOKBACK:
            raise SuspectsError(f"at: must be between {EARLIEST.year} and {LATEST.year}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise SuspectsError(f"limit: must be 1..{MAX_LIMIT}")
        if not 0 <= self.max_depth <= 10:
            raise SuspectsError("depth: must be 0..10")


_DEPENDENCIES_SQL = (
    "SELECT name, dependencies FROM (\n"
    "    SELECT name, dependencies, action FROM {catalog}\n"
    "    WHERE tenant = {{tenant:String}} AND entity = 'service'\n"
    "    ORDER BY occurred_at DESC, event_id DESC LIMIT 1 BY name\n"
    ") WHERE action != 'removed'"
)
# The latest record of each deployment (its highest seq) started from the window's start until
# the incident, and after it as far again: those name (rollback_of) what they rolled back.
_DEPLOYMENTS_SQL = (
    "SELECT deployment_id, any(service), argMax(environment, seq), min(started_at),\n"
    "    argMax(status, seq), argMax(commit_sha, seq), argMax(version, seq), argMax(team, seq),\n"
    "    argMax(rollback_of, seq)\n"
    "FROM {records}\n"
    "WHERE tenant = {{tenant:String}} AND service IN {{services:Array(String)}}\n"
    "    AND started_at >= {{lo:DateTime64(3, 'UTC')}}\n"
    "    AND started_at <= {{hi:DateTime64(3, 'UTC')}}{environment}\n"
    "GROUP BY deployment_id"
)
_DRIFT_SQL = (
    "SELECT deployment_id,\n"
    "    groupUniqArray(if(evidence['resources'] != '', evidence['resources'], message))\n"
    "FROM {alerts}\n"
    "WHERE tenant = {{tenant:String}} AND service IN {{services:Array(String)}}\n"
    "    AND occurred_at >= {{lo:DateTime64(3, 'UTC')}}\n"
    "    AND occurred_at <= {{hi:DateTime64(3, 'UTC')}} AND rule = {rule}\n"
    "    AND deployment_id IN {{ids:Array(String)}}\n"
    "GROUP BY deployment_id"
)
# One value per deployment: the latest the owning part of the ledger computed.
_LATEST_SQL = (
    "SELECT deployment_id, argMax({column}, {at}) FROM {table}\n"
    "WHERE tenant = {{tenant:String}} AND deployment_id IN {{ids:Array(String)}}\n"
    "GROUP BY deployment_id"
)


def _source(store: LedgerStore, table: str, tenant: str) -> str:
    """The table hot and cold, or hot only while the tenant has no cold files of it: the
    union's cold side costs a scan of its file list on every query (see
    `LedgerReader.change_events`), too much for a read an incident responder waits on."""
    cold_root = store.cold_root
    if cold_root is not None and not tiers.cold_files(cold_root, table, [tenant]):
        return ddl.qualified(store.database, table)
    return store.source(table)


def read_suspects(
    store: LedgerStore,
    query: SuspectsQuery,
    scope: RowScope | None = None,
) -> list[Suspect]:
    """The ranked suspects of `query`, only deployments `scope` admits (None: all)."""
    base = {"tenant": query.tenant}
    catalog = _source(store, ddl.CATALOG, query.tenant)
    _, rows = store.query(_DEPENDENCIES_SQL.format(catalog=catalog), base)
    graph = {str(name): [str(d) for d in deps] for name, deps in rows}
    distances = dependency_distances(graph, query.service, query.max_depth)
    window = {
        **base,
        "services": sorted(distances),
        "lo": query.at - query.lookback,
        "hi": query.at + query.lookback,
    }
    environment = ""
    if query.environment is not None:
        environment = " AND environment = {environment:String}"
        window["environment"] = query.environment
    records = ddl.qualified(store.database, ddl.SUSPECT_DEPLOYMENTS)
    _, rows = store.query(_DEPLOYMENTS_SQL.format(records=records, environment=environment), window)
    rolled_back_by: dict[str, str] = {}
    candidates: list[Candidate] = []
    for d, s, e, started, status, sha, version, team, rollback_of in sorted(rows, key=_started):
        if rollback_of is not None:  # the first remediation naming a deployment
            rolled_back_by.setdefault(str(rollback_of), str(d))
        if started <= query.at and (scope is None or scope.admits(query.tenant, team, str(e))):
            candidates.append(
                Candidate(
                    deployment_id=str(d),
                    service=str(s),
                    environment=str(e),
                    started_at=started,
                    status=str(status),
                    commit_sha=str(sha),
                    version=version,
                    distance=distances[str(s)],
                )
            )
    if not candidates:
        return []
    keyed = {**window, "ids": [c.deployment_id for c in candidates]}
    inputs = _inputs(store, keyed)
    inputs["rolled_back_by"] = rolled_back_by
    return rank([_with_inputs(c, inputs) for c in candidates], query.at, query.service, query.limit)


def _started(row: tuple[Any, ...]) -> datetime:
    return row[3]  # type: ignore[no-any-return]


#: Per deployment id, what one input query found.
Found = Mapping[str, Any]


def _by_id(store: LedgerStore, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    _, rows = store.query(sql, params)
    return {str(key): value for key, value in rows}


def _latest(store: LedgerStore, table: str, column: str, at: str) -> str:
    return _LATEST_SQL.format(
        column=ddl.quote_ident(column),
        at=ddl.quote_ident(at),
        table=ddl.qualified(store.database, table),
    )


def _inputs(store: LedgerStore, params: dict[str, Any]) -> dict[str, Found]:
    """The inputs read by a query of their own, by name -> deployment id -> its value."""
    alerts = _source(store, ddl.ALERTS, params["tenant"])
    inputs: dict[str, Found] = {
        "drift": _by_id(
            store, _DRIFT_SQL.format(alerts=alerts, rule=ddl.quote_str(DRIFT_RULE)), params
        ),
        "commit_count": _by_id(
            store, _latest(store, ddl.CHANGE_SETS, "commit_count", "computed_at"), params
        ),
        "verdict": _by_id(
            store, _latest(store, ddl.DEPLOYMENT_VERIFICATIONS, "verdict", "decided_at"), params
        ),
    }
    return inputs


def _with_inputs(candidate: Candidate, inputs: Mapping[str, Found]) -> Candidate:
    key = candidate.deployment_id
    rolled_back_by = inputs["rolled_back_by"].get(key)
    if rolled_back_by is None and candidate.status == "rolled_back":
        rolled_back_by = ""
    count = inputs["commit_count"].get(key)
    verdict = inputs["verdict"].get(key)
    return replace(
        candidate,
        commit_count=None if count is None else int(count),
        verdict=None if verdict is None else str(verdict),
        drift=tuple(sorted(str(r) for r in inputs["drift"].get(key, ()))),
        rolled_back_by=None if rolled_back_by is None else str(rolled_back_by),
    )

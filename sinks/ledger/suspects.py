"""The ledger's side of incident triage (docs/triage.md): the candidates of an incident and
every input of their scores, read in three queries; `shipledger.suspects` scores them.

Each query has a fixed cost (a round trip, a plan, its parameters parsed) as large as most
of the reading, so they are as few as the inputs' dependencies allow: the dependency map
(latest catalog entry per service) names the services; their deployments
(`suspect_deployments`: every record, sorted by service and start, in the hot database,
archived or not) from the start of the lookback window until as long after the incident (the
latest record of each; those after it are read only when they name a rollback) name the
candidates; one query reads the inputs keyed by the candidates' ids: the `config_drift`
alerts about them, the change sizes (`deployment_change_sets.commit_count`) and the verdicts
(`deployment_verifications`); a deployment neither of the last two has a row for reads as
unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger import ddl, tiers
from shipledger.sinks.ledger.chain import epoch_ms
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
# the incident, and after it as far again: those name (rollback_of) what they rolled back, and
# only the ones that do are returned.
_DEPLOYMENTS_SQL = (
    "SELECT deployment_id, any(service), argMax(environment, seq), min(started_at) AS started,\n"
    "    argMax(status, seq), argMax(commit_sha, seq), argMax(version, seq), argMax(team, seq),\n"
    "    argMax(rollback_of, seq) AS rolled_back\n"
    "FROM {records}\n"
    "WHERE tenant = {{tenant:String}} AND service IN {{services:Array(String)}}\n"
    "    AND started_at >= {{lo:DateTime64(3, 'UTC')}}\n"
    "    AND started_at <= {{hi:DateTime64(3, 'UTC')}}{environment}\n"
    "GROUP BY deployment_id\n"
    "HAVING started <= fromUnixTimestamp64Milli({{at:Int64}}, 'UTC') OR rolled_back IS NOT NULL"
)
# Every input in one query (a row per deployment and table that has it), each table read by
# its own key: the drift alerts by service and time, the others by deployment id; one value per
# deployment and table, the latest the owning part of the ledger computed. The ids come as one
# JSON string: a thousand-element array parameter costs more to bind and parse than the reading.
_INPUTS_SQL = (
    "SELECT deployment_id, argMax(commit_count, computed_at), NULL, []\n"
    "FROM {change_sets}\n"
    "WHERE tenant = {{tenant:String}}\n"
    "    AND deployment_id IN JSONExtract({{ids:String}}, 'Array(String)')\n"
    "GROUP BY deployment_id\n"
    "UNION ALL\n"
    "SELECT deployment_id, NULL, argMax(verdict, decided_at), []\n"
    "FROM {verifications}\n"
    "WHERE tenant = {{tenant:String}}\n"
    "    AND deployment_id IN JSONExtract({{ids:String}}, 'Array(String)')\n"
    "GROUP BY deployment_id\n"
    "UNION ALL\n"
    "SELECT deployment_id, NULL, NULL,\n"
    "    groupUniqArray(if(evidence['resources'] != '', evidence['resources'], message))\n"
    "FROM {alerts}\n"
    "WHERE tenant = {{tenant:String}} AND service IN {{services:Array(String)}}\n"
    "    AND occurred_at >= {{lo:DateTime64(3, 'UTC')}}\n"
    "    AND occurred_at <= {{hi:DateTime64(3, 'UTC')}} AND rule = {rule}\n"
    "    AND deployment_id IN JSONExtract({{ids:String}}, 'Array(String)')\n"
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
    sql = _DEPLOYMENTS_SQL.format(records=records, environment=environment)
    _, rows = store.query(sql, {**window, "at": epoch_ms(query.at)})
    rolled_back_by: dict[str, str] = {}
    admitted: list[tuple[Any, ...]] = []
    for row in sorted(rows, key=_started):
        d, _, e, started, _, _, _, team, rollback_of = row
        if rollback_of is not None:  # the first remediation naming a deployment
            rolled_back_by.setdefault(str(rollback_of), str(d))
        if started <= query.at and (scope is None or scope.admits(query.tenant, team, str(e))):
            admitted.append(row)
    if not admitted:
        return []
    inputs = _inputs(store, {**window, "ids": json.dumps([str(row[0]) for row in admitted])})
    candidates = [
        _candidate(row, distances, inputs, rolled_back_by.get(str(row[0]))) for row in admitted
    ]
    return rank(candidates, query.at, query.service, query.limit)


def _started(row: tuple[Any, ...]) -> datetime:
    return row[3]  # type: ignore[no-any-return]


@dataclass
class _Inputs:
    """What the inputs query found of one deployment (None / empty: no row)."""

    commit_count: int | None = None
    verdict: str | None = None
    drift: tuple[str, ...] = ()


def _inputs(store: LedgerStore, params: dict[str, Any]) -> dict[str, _Inputs]:
    """The inputs of the deployments `params["ids"]`, by deployment id (only those found)."""
    sql = _INPUTS_SQL.format(
        change_sets=ddl.qualified(store.database, ddl.CHANGE_SETS),
        verifications=ddl.qualified(store.database, ddl.DEPLOYMENT_VERIFICATIONS),
        alerts=_source(store, ddl.ALERTS, params["tenant"]),
        rule=ddl.quote_str(DRIFT_RULE),
    )
    _, rows = store.query(sql, params)
    found: dict[str, _Inputs] = {}
    for deployment_id, count, verdict, drift in rows:
        inputs = found.setdefault(str(deployment_id), _Inputs())
        if count is not None:
            inputs.commit_count = int(count)
        if verdict is not None:
            inputs.verdict = str(verdict)
        if drift:
            inputs.drift = tuple(sorted(str(r) for r in drift))
    return found


_NONE_FOUND = _Inputs()


def _candidate(
    row: tuple[Any, ...],
    distances: Mapping[str, int],
    inputs: Mapping[str, _Inputs],
    rolled_back_by: str | None,
) -> Candidate:
    d, s, e, started, status, sha, version, _, _ = row
    if rolled_back_by is None and status == "rolled_back":
        rolled_back_by = ""
    found = inputs.get(str(d), _NONE_FOUND)
    return Candidate(
        deployment_id=str(d),
        service=str(s),
        environment=str(e),
        started_at=started,
        status=str(status),
        commit_sha=str(sha),
        version=version,
        distance=distances[str(s)],
        commit_count=found.commit_count,
        verdict=found.verdict,
        drift=found.drift,
        rolled_back_by=rolled_back_by,
    )

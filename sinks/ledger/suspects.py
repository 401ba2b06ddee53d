"""The ledger's side of incident triage (docs/triage.md): the candidates of an incident and
every input of their scores, read in two queries; `shipledger.suspects` scores them.

The dependency map (latest catalog entry per service) names the services; one query then
reads, by the same key range (tenant, those services, the lookback window around the
incident), their deployments (`suspect_deployments`: every record, sorted by service and
start, in the hot database, archived or not; the latest record of each; those after the
incident only when they name a rollback), the change sizes and verdicts filed beside them
(`suspect_inputs`: every `deployment_change_sets` and `deployment_verifications` row, by the
service and start of the record it was computed for) and their `config_drift` alerts. A
deployment with no change set or verdict reads as unknown.
"""

from __future__ import annotations

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
# One query (its fixed cost, a round trip, a plan, its parameters parsed, is as large as most
# of the reading): the candidates joined with their inputs, each side read by the same key
# range (tenant, services, started or occurred between the window's ends). The candidates: the
# latest record of each deployment (its highest seq) started from the window's start until the
# incident, and after it as far again: those name (rollback_of) what they rolled back, and only
# the ones that do are returned. Their inputs: the latest change set and verdict of each
# (`suspect_inputs`, filed beside the record they were computed for), and the resources of
# their `config_drift` alerts. A deployment without a change set or verdict joins 0 in
# `has_set` / `has_verdict`.
_SUSPECTS_SQL = (
    "SELECT d.deployment_id, d.svc, d.env, d.started, d.st, d.sha, d.ver, d.tm, d.rolled_back,\n"
    "    i.has_set, i.commit_count, i.has_verdict, i.verdict, a.drift\n"
    "FROM (\n"
    "    SELECT deployment_id, any(service) AS svc, argMax(environment, seq) AS env,\n"
    "        min(started_at) AS started, argMax(status, seq) AS st,\n"
    "        argMax(commit_sha, seq) AS sha, argMax(version, seq) AS ver,\n"
    "        argMax(team, seq) AS tm, argMax(rollback_of, seq) AS rolled_back\n"
    "    FROM {records}\n"
    "    WHERE {window}{environment}\n"
    "    GROUP BY deployment_id\n"
    "    HAVING started <= fromUnixTimestamp64Milli({{at:Int64}}, 'UTC')\n"
    "        OR rolled_back IS NOT NULL\n"
    ") AS d\n"
    "LEFT JOIN (\n"
    "    SELECT deployment_id, countIf(input = 'change_set') > 0 AS has_set,\n"
    "        argMaxIf(commit_count, at, input = 'change_set') AS commit_count,\n"
    "        countIf(input = 'verdict') > 0 AS has_verdict,\n"
    "        argMaxIf(verdict, at, input = 'verdict') AS verdict\n"
    "    FROM {inputs}\n"
    "    WHERE {window}\n"
    "    GROUP BY deployment_id\n"
    ") AS i ON i.deployment_id = d.deployment_id\n"
    "LEFT JOIN (\n"
    "    SELECT deployment_id,\n"
    "        groupUniqArray(if(evidence['resources'] != '', evidence['resources'], message))\n"
    "        AS drift\n"
    "    FROM {alerts}\n"
    "    WHERE {occurred} AND rule = {rule}\n"
    "    GROUP BY deployment_id\n"
    ") AS a ON a.deployment_id = d.deployment_id"
)
#: The key range every side reads (`started_at` of records and inputs, `occurred_at` of alerts).
_WINDOW = (
    "tenant = {{tenant:String}} AND service IN {{services:Array(String)}}\n"
    "        AND {time} >= {{lo:DateTime64(3, 'UTC')}} AND {time} <= {{hi:DateTime64(3, 'UTC')}}"
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
    params = {
        **base,
        "services": sorted(distances),
        "lo": query.at - query.lookback,
        "hi": query.at + query.lookback,
        "at": epoch_ms(query.at),
    }
    environment = ""
    if query.environment is not None:
        environment = " AND environment = {environment:String}"
        params["environment"] = query.environment
    sql = _SUSPECTS_SQL.format(
        records=ddl.qualified(store.database, ddl.SUSPECT_DEPLOYMENTS),
        inputs=ddl.qualified(store.database, ddl.SUSPECT_INPUTS),
        alerts=_source(store, ddl.ALERTS, query.tenant),
        window=_WINDOW.format(time="started_at"),
        occurred=_WINDOW.format(time="occurred_at"),
        environment=environment,
        rule=ddl.quote_str(DRIFT_RULE),
    )
    _, rows = store.query(sql, params)
    rolled_back_by: dict[str, str] = {}
    admitted: list[tuple[Any, ...]] = []
    for row in sorted(rows, key=_started):
        d, _, e, started, _, _, _, team, rollback_of, *_ = row
        if rollback_of is not None:  # the first remediation naming a deployment
            rolled_back_by.setdefault(str(rollback_of), str(d))
        if started <= query.at and (scope is None or scope.admits(query.tenant, team, str(e))):
            admitted.append(row)
    candidates = [_candidate(row, distances, rolled_back_by.get(str(row[0]))) for row in admitted]
    return rank(candidates, query.at, query.service, query.limit)


def _started(row: tuple[Any, ...]) -> datetime:
    return row[3]  # type: ignore[no-any-return]


def _candidate(
    row: tuple[Any, ...], distances: Mapping[str, int], rolled_back_by: str | None
) -> Candidate:
    d, s, e, started, status, sha, version, _, _, has_set, count, has_verdict, verdict, drift = row
    if rolled_back_by is None and status == "rolled_back":
        rolled_back_by = ""
    return Candidate(
        deployment_id=str(d),
        service=str(s),
        environment=str(e),
        started_at=started,
        status=str(status),
        commit_sha=str(sha),
        version=version,
        distance=distances[str(s)],
        commit_count=int(count) if has_set else None,
        verdict=str(verdict) if has_verdict else None,
        drift=tuple(sorted(str(r) for r in drift)),
        rolled_back_by=rolled_back_by,
    )

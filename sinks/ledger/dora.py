"""DORA metrics from the `dora_deployments` and `dora_commits` aggregates (docs/metrics.md).
The materialized views of `sinks.ledger.ddl` keep one row of facts per deployment, filed under
its tenant, team, environment, service, application and day: whether it was a change or a
remediation, its latest outcome, when it failed, was restored, ran, and which commit it
shipped. A report is one query (`dora_sql`): ClickHouse merges each deployment's facts over the
window plus the remediation lookahead, then counts per period and breakdown key; Python only
takes medians, and looks up the commits whose first sighting was unknown at insert.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger.ddl import (
    DORA_COMMITS,
    DORA_DEPLOYMENT_KEYS,
    DORA_DEPLOYMENTS,
    RECORDS,
    dora_deployment_keys_select,
    dora_deployments_select,
    qualified,
)
from shipledger.sinks.ledger.query import scope_condition
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.ledger.tiers import ledger_source

#: Period name -> the ClickHouse expression of its first day.
DORA_PERIODS = {"day": "`day`", "week": "toMonday(`day`)", "month": "toStartOfMonth(`day`)"}
#: Dimensions rows can be broken down by (besides the period and tenant).
DORA_DIMENSIONS = ("team", "application", "service", "environment")
#: How long after the window a remediation still counts for a deployment inside it.
REMEDIATION_LOOKAHEAD = timedelta(days=30)
_FILTERS = {"teams": "team", "applications": "application", "services": "service"}


class DoraError(ValueError):
    """A DORA request that cannot be answered (names the field at fault)."""


#: The window when none is given: the last 90 days (a quarter), today included.
DEFAULT_DAYS = 90


#: The days a window may hold: what a ClickHouse `Date` holds, less the remediation lookahead
#: read past a window's end.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2149, 6, 6) - REMEDIATION_LOOKAHEAD


def dora_window(since: date | None, until: date | None, today: date) -> tuple[date, date]:
    """The window of days asked for, each end defaulting (until: today; since: 90 days
    before until, both included) and held within FIRST_DAY..LAST_DAY: a day before the
    first means from the beginning, one past the last as far as the ledger reaches."""

    def held(day: date) -> date:
        return min(max(day, FIRST_DAY), LAST_DAY)

    end = held(until or today)
    if since is not None:
        return held(since), end
    default = timedelta(days=DEFAULT_DAYS - 1)
    return (end - default if end >= FIRST_DAY + default else FIRST_DAY), end


@dataclass(frozen=True)
class DoraQuery:
    """What to measure: a window of UTC days (both included), a period, filters, breakdown."""

    since: date
    until: date
    period: str = "week"
    tenant: str | None = None
    teams: tuple[str, ...] = ()
    applications: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    by: tuple[str, ...] = ("environment",)

    def __post_init__(self) -> None:
        if self.period not in DORA_PERIODS:
            raise DoraError(f"period: one of {', '.join(DORA_PERIODS)}, not {self.period!r}")
        for name, day in (("since", self.since), ("until", self.until)):
            if not FIRST_DAY <= day <= LAST_DAY:
                raise DoraError(f"{name}: {day} is outside {FIRST_DAY}..{LAST_DAY}")
        if self.until < self.since:
            raise DoraError(f"until: {self.until} is before since {self.since}")
        unknown = [b for b in self.by if b not in DORA_DIMENSIONS]
        if unknown:
            raise DoraError(f"by: one of {', '.join(DORA_DIMENSIONS)}, not {unknown[0]!r}")


@dataclass(frozen=True)
class DoraRow:
    """The four metrics of one period and breakdown key."""

    period: date
    tenant: str
    key: dict[str, str]
    days: int
    deployments: int
    remediations: int
    failures: int
    lead_times_s: tuple[float, ...]
    recovery_times_s: tuple[float, ...]

    @property
    def deploys_per_day(self) -> float:
        """Deployment frequency: change deployments per day of the period (within the window)."""
        return self.deployments / self.days

    @property
    def change_failure_rate(self) -> float | None:
        """Failed change deployments / change deployments (None: no deployments)."""
        return self.failures / self.deployments if self.deployments else None

    def as_dict(self) -> dict[str, Any]:
        """The row as report columns (times in hours, medians; None when nothing measured)."""
        return {
            "period": self.period.isoformat(),
            "tenant": self.tenant,
            **self.key,
            "deployments": self.deployments,
            "deploys_per_day": round(self.deploys_per_day, 3),
            "lead_time_h": _median_h(self.lead_times_s),
            "lead_times": len(self.lead_times_s),
            "failures": self.failures,
            "change_failure_rate": _round(self.change_failure_rate),
            "recovery_h": _median_h(self.recovery_times_s),
            "recovered": len(self.recovery_times_s),
            "remediations": self.remediations,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _median_h(seconds: Sequence[float]) -> float | None:
    return round(statistics.median(seconds) / 3600, 3) if seconds else None


#: The breakdown keys as the inner query names them (its aliases must not shadow columns).
_KEYS = {d: f"d_{d}" for d in DORA_DIMENSIONS}


#: A deployment of the merged facts (`facts_sql`) that failed: a change whose latest record
#: failed or was rolled back, or that a remediation names (docs/metrics.md).
FAILED = "d_change = 1 AND (modulo(d_outcome, 2) = 1 OR d_remediated = 1)"


def facts_sql(
    query: DoraQuery, database: str, scope: RowScope | None = None
) -> tuple[str, dict[str, Any]]:
    """One row per deployment of `query` over the rows `scope` may read (and its parameters):
    its facts merged over the window plus the remediation lookahead (a remediation after the
    window still marks a deployment inside it as failed and restored), kept if its own
    record's day is inside the window. Columns: tenant, deployment_id, `d_<dimension>` for
    each of DORA_DIMENSIONS, d_day and the facts (`d_change`, `d_failed_at`, ...)."""
    params: dict[str, Any] = {
        "since": query.since,
        "until": query.until,
        "lookahead": query.until + REMEDIATION_LOOKAHEAD,
    }
    # Past `until` only remediations' rows count (a deployment's own day decides whether it
    # is inside): its own rows there would be merged, then dropped by the HAVING below.
    where = ["`day` >= %(since)s", "`day` <= %(lookahead)s", "(`day` <= %(until)s OR own = 0)"]
    if query.tenant is not None:
        where.append("tenant = %(tenant)s")
        params["tenant"] = query.tenant
    for name, column in (*_FILTERS.items(), ("environments", "environment")):
        values = getattr(query, name)
        if values:
            where.append(f"{column} IN %({name})s")
            params[name] = list(values)
    if scope is not None:
        where.extend(filter(None, [scope_condition(scope, _SCOPED_COLUMNS)]))
    sql = (
        "    SELECT tenant, deployment_id,\n"  # noqa: S608
        + "".join(f"        anyIf({d}, own = 1) AS {_KEYS[d]},\n" for d in DORA_DIMENSIONS)
        + "        anyIf(`day`, own = 1) AS d_day, max(own) AS d_own,\n"
        "        max(change) AS d_change, max(remediation) AS d_remediation,\n"
        "        max(outcome) AS d_outcome, max(remediated) AS d_remediated,\n"
        "        min(failed_at) AS d_failed_at, min(restored_at) AS d_restored_at,\n"
        "        min(deployed_at) AS d_deployed_at, max(commit_sha) AS d_commit_sha,\n"
        "        min(seen_at) AS d_seen_at\n"
        f"    FROM {qualified(database, DORA_DEPLOYMENTS)}\n"
        f"    WHERE {' AND '.join(where)}\n"
        "    GROUP BY tenant, deployment_id\n"
        "    HAVING d_own = 1 AND d_day <= %(until)s"
    )
    return sql, params


def period_of(period: str) -> str:
    """The first day of the period (`DORA_PERIODS`) of a merged deployment (`facts_sql`)."""
    return DORA_PERIODS[period].replace("`day`", "d_day")


def dora_sql(
    query: DoraQuery, database: str, scope: RowScope | None = None
) -> tuple[str, dict[str, Any]]:
    """The report's query for `query` over the rows `scope` may read (and its parameters): one
    row per period and breakdown key with the counts, the lead and recovery times (seconds),
    and the (commit, running since) of succeeded changes whose commit was unseen at insert.
    Each deployment counts once (`facts_sql`), in the period of its own day."""
    facts, params = facts_sql(query, database, scope)
    keys = "".join(f", {_KEYS[b]} AS {b}" for b in query.by)
    grouped = "".join(f", {b}" for b in query.by)
    running = "d_change = 1 AND d_deployed_at IS NOT NULL"
    sql = (
        f"SELECT {period_of(query.period)} AS period, tenant{keys},\n"
        f"    countIf(d_change = 1), countIf(d_remediation = 1), countIf({FAILED}),\n"
        "    groupArrayIf(dateDiff('millisecond', d_seen_at, d_deployed_at) / 1000,\n"
        f"        {running} AND d_seen_at <= d_deployed_at),\n"
        "    groupArrayIf(dateDiff('millisecond', d_failed_at, d_restored_at) / 1000,\n"
        f"        {FAILED} AND d_restored_at >= d_failed_at),\n"
        f"    groupArrayIf((d_commit_sha, d_deployed_at), {running} AND d_seen_at IS NULL)\n"
        f"FROM (\n{facts}\n)\n"
        f"GROUP BY period, tenant{grouped}\n"
        f"ORDER BY period, tenant{grouped}"
    )
    return sql, params


#: The columns a reader's scope is checked against (`scope_condition`).
_SCOPED_COLUMNS = frozenset({"tenant", "team", "environment"})


def as_utc(value: Any) -> datetime:
    """A ClickHouse DateTime64 value as an aware UTC datetime (chDB returns naive ones)."""
    at: datetime = value
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def commits_sql(database: str) -> str:
    """When each SHA of `%(shas)s` was first seen in tenant `%(tenant)s`, from `dora_commits`
    (one tenant per read: an equality on the sort key's first column, then a set, measured
    4x faster than a set of (tenant, sha) pairs)."""
    return (
        f"SELECT sha, min(first_seen_at) FROM {qualified(database, DORA_COMMITS)}\n"  # noqa: S608
        "WHERE tenant = %(tenant)s AND sha IN %(shas)s GROUP BY sha"
    )


def dora_rows(
    query: DoraQuery,
    rows: Iterable[Sequence[Any]],
    first_seen: dict[tuple[str, str], datetime],
) -> list[DoraRow]:
    """The rows of `dora_sql` as metrics, lead times completed from `first_seen` ((tenant,
    sha) -> first sighting) for the commits unseen at insert."""
    result = []
    width = len(query.by)
    for r in rows:
        period, tenant = _as_date(r[0]), str(r[1])
        deployments, remediations, failures, lead, recovery, unseen = r[2 + width :]
        late = []
        for sha, running in unseen:
            seen_at = first_seen.get((tenant, str(sha)))
            if seen_at is not None and seen_at <= as_utc(running):
                late.append((as_utc(running) - seen_at).total_seconds())
        result.append(
            DoraRow(
                period=period,
                tenant=tenant,
                key={b: str(v) for b, v in zip(query.by, r[2 : 2 + width], strict=True)},
                days=_days(query, period),
                deployments=int(deployments),
                remediations=int(remediations),
                failures=int(failures),
                lead_times_s=tuple(sorted([*map(float, lead), *late])),
                recovery_times_s=tuple(sorted(map(float, recovery))),
            )
        )
    return result


def _as_date(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def _days(query: DoraQuery, start: date) -> int:
    """Days of the period starting `start` that fall inside the window."""
    if query.period == "day":
        end = start
    elif query.period == "week":
        end = start + timedelta(days=6)
    else:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return (min(end, query.until) - max(start, query.since)).days + 1


class Runner(Protocol):
    """What `read_dora` needs of a store (`LedgerStore`)."""

    database: str

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a query: (column names, rows)."""
        ...


def read_dora(store: Runner, query: DoraQuery, scope: RowScope | None = None) -> list[DoraRow]:
    """The DORA rows of `query` over the rows `scope` may read (None: all), from the
    aggregates of `store`: one query, then, only for commits whose first sighting was unknown
    at insert, one read per tenant."""
    sql, params = dora_sql(query, store.database, scope)
    _, rows = store.query(sql, params)
    shas: dict[str, set[str]] = {}
    for r in rows:
        shas.setdefault(str(r[1]), set()).update(str(sha) for sha, _ in r[-1])
    first_seen: dict[tuple[str, str], datetime] = {}
    for tenant, named in sorted(shas.items()):
        if named:
            params = {"tenant": tenant, "shas": sorted(named)}
            _, seen = store.query(commits_sql(store.database), params)
            first_seen |= {(tenant, str(sha)): as_utc(at) for sha, at in seen}
    return dora_rows(query, rows, first_seen)


def rebuild_dora(store: LedgerStore) -> int:
    """Fold every deployment record of the ledger, hot and archived, into
    `dora_deployment_keys`, then `dora_deployments`, again (the facts are maxima and minima:
    what is there already is unchanged); the number of records read. For a ledger that
    archived records before the tables existed."""
    source = ledger_source(store, RECORDS)
    _, counted = store.query(f"SELECT count() FROM {source}")  # noqa: S608
    store.command(
        f"INSERT INTO {qualified(store.database, DORA_DEPLOYMENT_KEYS)}\n"
        + dora_deployment_keys_select(source)
    )
    store.command(
        f"INSERT INTO {qualified(store.database, DORA_DEPLOYMENTS)}\n"
        + dora_deployments_select(store.database, source)
    )
    return int(counted[0][0])


#: Report columns in order (`DoraRow.as_dict`), by the breakdown asked for.
def dora_columns(by: Sequence[str]) -> list[str]:
    """The report's column names for breakdown `by`."""
    return [
        "period",
        "tenant",
        *by,
        "deployments",
        "deploys_per_day",
        "lead_time_h",
        "lead_times",
        "failures",
        "change_failure_rate",
        "recovery_h",
        "recovered",
        "remediations",
    ]

"""DORA metrics from the `dora_daily` and `dora_commits` aggregates (docs/metrics.md).

The materialized views of `sinks.ledger.ddl` keep, per tenant, team, environment, application,
service and day, one state per deployment: whether it was a change or a remediation, its
latest outcome, when it failed, was restored, ran, and which commit it shipped. A read merges
those states per period (`dora_groups_sql`, one grouped query over the aggregate table, never
over the raw rows), then `compute` rolls the groups up to the rows asked for and derives the
four metrics. Pure functions apart from `read_dora`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from shipledger.sinks.ledger.ddl import DORA_COMMITS, DORA_DAILY, qualified

#: Period name -> the ClickHouse expression of its first day.
DORA_PERIODS = {"day": "`day`", "week": "toMonday(`day`)", "month": "toStartOfMonth(`day`)"}
#: Dimensions rows can be broken down by (besides the period and tenant).
DORA_DIMENSIONS = ("team", "application", "service", "environment")
#: How long after the window a remediation still counts for a deployment inside it.
REMEDIATION_LOOKAHEAD = timedelta(days=30)
#: The period the lookahead's days are grouped under: remediation facts only.
LOOKAHEAD_PERIOD = date(1970, 1, 1)
_FILTERS = {"teams": "team", "applications": "application", "services": "service"}


class DoraError(ValueError):
    """A DORA request that cannot be answered (names the field at fault)."""


class Visible(Protocol):
    """Whether a row of (tenant, team, environment) may be read (`Principal.sees`)."""

    def __call__(self, tenant: str, team: str | None, environment: str | None) -> bool: ...


#: The window when none is given: the last 90 days (a quarter), today included.
DEFAULT_DAYS = 90


def dora_window(since: date | None, until: date | None, today: date) -> tuple[date, date]:
    """The window of days asked for, each end defaulting (until: today; since: 90 days
    before until, both included)."""
    end = until or today
    return since or end - timedelta(days=DEFAULT_DAYS - 1), end


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
        if self.until < self.since:
            raise DoraError(f"until: {self.until} is before since {self.since}")
        unknown = [b for b in self.by if b not in DORA_DIMENSIONS]
        if unknown:
            raise DoraError(f"by: one of {', '.join(DORA_DIMENSIONS)}, not {unknown[0]!r}")


@dataclass
class Group:
    """The merged states of one (period, tenant, team, environment, application, service)."""

    period: date
    tenant: str
    team: str
    environment: str
    application: str
    service: str
    changes: dict[str, int] = field(default_factory=dict)
    remediations: int = 0
    remediated: set[str] = field(default_factory=set)
    failed_at: dict[str, datetime] = field(default_factory=dict)
    restored_at: dict[str, datetime] = field(default_factory=dict)
    deployed_at: dict[str, datetime] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    seen_at: dict[str, datetime] = field(default_factory=dict)

    def unseen_commits(self) -> set[str]:
        """Commits of succeeded deployments whose first sighting was not known at insert
        (their push reached the ledger after them, or never)."""
        return {self.commits[d] for d in self.deployed_at if d not in self.seen_at}


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


def dora_groups_sql(query: DoraQuery, database: str) -> tuple[str, dict[str, Any]]:
    """The one grouped read of `dora_daily` for `query` (and its parameters): every group of
    the window plus the remediation lookahead, states merged per period (the lookahead's
    days under `LOOKAHEAD_PERIOD`)."""
    params: dict[str, Any] = {
        "since": query.since,
        "until": query.until,
        "lookahead": query.until + REMEDIATION_LOOKAHEAD,
    }
    where = ["`day` >= %(since)s", "`day` <= %(lookahead)s"]
    if query.tenant is not None:
        where.append("tenant = %(tenant)s")
        params["tenant"] = query.tenant
    for name, column in (*_FILTERS.items(), ("environments", "environment")):
        values = getattr(query, name)
        if values:
            where.append(f"{column} IN %({name})s")
            params[name] = list(values)
    period = f"if(`day` > %(until)s, toDate(0), {DORA_PERIODS[query.period]})"
    sql = (
        f"SELECT {period} AS period, tenant, team, environment, application, service,\n"
        "    maxMapMerge(changes), uniqExactMerge(remediations),\n"
        "    maxMapMerge(remediated), minMapMerge(failed_at), minMapMerge(restored_at),\n"
        "    minMapMerge(deployed_at), maxMapMerge(commits), minMapMerge(seen_at)\n"
        f"FROM {qualified(database, DORA_DAILY)}\n"
        f"WHERE {' AND '.join(where)}\n"
        "GROUP BY period, tenant, team, environment, application, service"
    )
    return sql, params


def groups_of(rows: Iterable[Sequence[Any]]) -> list[Group]:
    """The rows of `dora_groups_sql` as groups."""
    return [
        Group(
            period=_as_date(r[0]),
            tenant=str(r[1]),
            team=str(r[2]),
            environment=str(r[3]),
            application=str(r[4]),
            service=str(r[5]),
            changes={str(k): int(v) for k, v in dict(r[6]).items()},
            remediations=int(r[7]),
            remediated={str(k) for k in dict(r[8])},
            failed_at={str(k): as_utc(v) for k, v in dict(r[9]).items()},
            restored_at={str(k): as_utc(v) for k, v in dict(r[10]).items()},
            deployed_at={str(k): as_utc(v) for k, v in dict(r[11]).items()},
            commits={str(k): str(v) for k, v in dict(r[12]).items()},
            seen_at={str(k): as_utc(v) for k, v in dict(r[13]).items()},
        )
        for r in rows
    ]


def _as_date(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


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


def compute(
    query: DoraQuery,
    groups: Sequence[Group],
    first_seen: dict[tuple[str, str], datetime],
    visible: Visible | None = None,
) -> list[DoraRow]:
    """The metrics per period and breakdown key of `query`, from the merged groups (those
    `visible` may read only), ordered by period then key. Remediation facts (which deployments
    were remediated, when each failed and was restored) come from any visible group of the
    tenant in the window plus the lookahead; deployments from the window's groups."""
    # A row without a team is asked about as such (None), as every read path asks.
    seen = [
        g for g in groups if visible is None or visible(g.tenant, g.team or None, g.environment)
    ]
    remediated: dict[str, set[str]] = {}
    failed_at: dict[str, dict[str, datetime]] = {}
    restored_at: dict[str, dict[str, datetime]] = {}
    for g in seen:
        remediated.setdefault(g.tenant, set()).update(g.remediated)
        _merge_min(failed_at.setdefault(g.tenant, {}), g.failed_at)
        _merge_min(restored_at.setdefault(g.tenant, {}), g.restored_at)
    merged: dict[tuple[date, str, tuple[str, ...]], Group] = {}
    for g in seen:
        if g.period == LOOKAHEAD_PERIOD:
            continue
        key = (g.period, g.tenant, tuple(getattr(g, b) for b in query.by))
        into = merged.setdefault(key, Group(g.period, g.tenant, "", "", "", ""))
        for deployment, value in g.changes.items():
            into.changes[deployment] = max(value, into.changes.get(deployment, 0))
        into.remediations += g.remediations
        _merge_min(into.deployed_at, g.deployed_at)
        _merge_min(into.seen_at, g.seen_at)
        into.commits.update(g.commits)
    rows = [
        _row(query, period, tenant, values, group, first_seen, remediated, failed_at, restored_at)
        for (period, tenant, values), group in merged.items()
    ]
    return sorted(rows, key=lambda r: (r.period, r.tenant, tuple(r.key.values())))


def _merge_min(into: dict[str, datetime], other: dict[str, datetime]) -> None:
    for k, v in other.items():
        if k not in into or v < into[k]:
            into[k] = v


def _row(
    query: DoraQuery,
    period: date,
    tenant: str,
    values: tuple[str, ...],
    group: Group,
    first_seen: dict[tuple[str, str], datetime],
    remediated: dict[str, set[str]],
    failed_at: dict[str, dict[str, datetime]],
    restored_at: dict[str, dict[str, datetime]],
) -> DoraRow:
    # A change failed when its latest record was failed/rolled_back (odd value) or a
    # remediation named it: once, however many records or remediations say so.
    failed = [
        d for d, v in group.changes.items() if v % 2 == 1 or d in remediated.get(tenant, set())
    ]
    lead = []
    for deployment, running in group.deployed_at.items():
        seen_at = group.seen_at.get(deployment) or first_seen.get(
            (tenant, group.commits.get(deployment, ""))
        )
        if seen_at is not None and seen_at <= running:
            lead.append((running - seen_at).total_seconds())
    recovery = []
    for deployment in failed:
        start = failed_at.get(tenant, {}).get(deployment)
        end = restored_at.get(tenant, {}).get(deployment)
        if start is not None and end is not None and end >= start:
            recovery.append((end - start).total_seconds())
    return DoraRow(
        period=period,
        tenant=tenant,
        key=dict(zip(query.by, values, strict=True)),
        days=_days(query, period),
        deployments=len(group.changes),
        remediations=group.remediations,
        failures=len(failed),
        lead_times_s=tuple(sorted(lead)),
        recovery_times_s=tuple(sorted(recovery)),
    )


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


def read_dora(store: Runner, query: DoraQuery, visible: Visible | None = None) -> list[DoraRow]:
    """The DORA rows of `query` from the aggregates of `store`: a grouped read, then, only
    for commits whose first sighting was unknown at insert, one read per tenant."""
    sql, params = dora_groups_sql(query, store.database)
    _, rows = store.query(sql, params)
    groups = groups_of(rows)
    shas: dict[str, set[str]] = {}
    for g in groups:
        shas.setdefault(g.tenant, set()).update(g.unseen_commits())
    first_seen: dict[tuple[str, str], datetime] = {}
    for tenant, named in sorted(shas.items()):
        if named:
            params = {"tenant": tenant, "shas": sorted(named)}
            _, seen = store.query(commits_sql(store.database), params)
            first_seen |= {(tenant, str(sha)): as_utc(at) for sha, at in seen}
    return compute(query, groups, first_seen, visible)


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

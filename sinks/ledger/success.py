"""Success criteria (docs/metrics.md): the mean time to detect a failed deployment and the
mean rollback duration, per period and team, measured from the ledger.

The failures are DORA's (`sinks.ledger.dora.facts_sql`, `FAILED`): the same deployments, the
same failed and restored times, so the two reports never disagree on what failed. Three
keyed reads complete them, one tenant at a time: when each failed deployment started and
when the remediations naming it started and ended (`deployment_records`, hot and cold), and
the first alert of a detection rule about it (`alerts`). Python only assembles the facts
per failure and takes means; targets come from the policy (`success_criteria:`) and are
applied by `success_report`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from shipledger.schemas.policy import SuccessCriteria
from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger.dora import (
    FAILED,
    DoraQuery,
    Runner,
    as_utc,
    facts_sql,
    period_of,
)


@dataclass(frozen=True)
class Failure:
    """One failed deployment and the times the success criteria are measured between."""

    tenant: str
    team: str
    period: date
    deployment_id: str
    started_at: datetime | None
    #: DORA's failed_at: its first failed report, else the start of a remediation naming it.
    failed_at: datetime | None
    #: The first alert of a detection rule about it (`success_criteria.detection_rules`).
    alerted_at: datetime | None
    #: The start of the first remediation naming it (rollback_of).
    rollback_started_at: datetime | None
    #: DORA's restored_at: its rolled_back report, else the first succeeded remediation's end.
    restored_at: datetime | None
    #: Remediations naming it whose latest status is failed or rolled_back.
    failed_rollbacks: int = 0

    @property
    def detected_at(self) -> datetime | None:
        """The earliest sign of the failure: the failed report (or remediation start), or a
        detection alert, whichever came first; None when the ledger has neither."""
        signs = [at for at in (self.failed_at, self.alerted_at) if at is not None]
        return min(signs) if signs else None

    @property
    def detect_s(self) -> float | None:
        """Seconds from the start of the deployment to its detection (None: not measurable)."""
        return _between(self.started_at, self.detected_at)

    @property
    def rollback_s(self) -> float | None:
        """Seconds from the start of the first rollback to the restoring of service (None: no
        rollback named it, or service was never restored)."""
        return _between(self.rollback_started_at, self.restored_at)


def _between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start).total_seconds()


def failures_sql(
    query: DoraQuery, database: str, scope: RowScope | None = None
) -> tuple[str, dict[str, Any]]:
    """The failed deployments of `query` (each once, DORA's definition), with their period,
    team, failed and restored times."""
    facts, params = facts_sql(query, database, scope)
    sql = (
        f"SELECT tenant, d_team, {period_of(query.period)} AS period, deployment_id,\n"
        "    d_failed_at, d_restored_at\n"
        f"FROM (\n{facts}\n)\n"
        f"WHERE {FAILED}\n"
        "ORDER BY tenant, d_team, period, deployment_id"
    )
    return sql, params


#: Per deployment of `ids` or remediation naming one: its start and its latest status.
_RECORDS_SQL = (
    "SELECT deployment_id, ifNull(any(rollback_of), ''), min(started_at),\n"
    "    argMax(status, (seq, updated_at))\n"
    "FROM {records} WHERE tenant = {{tenant:String}} AND started_at >= {{since:Date}}\n"
    "    AND (deployment_id IN {{ids:Array(String)}} OR rollback_of IN {{ids:Array(String)}})\n"
    "GROUP BY deployment_id"
)
#: Per deployment of `ids`: its first alert of a detection rule.
_ALERTS_SQL = (
    "SELECT deployment_id, min(occurred_at) FROM {alerts}\n"
    "WHERE tenant = {{tenant:String}} AND occurred_at >= {{since:Date}}\n"
    "    AND deployment_id IN {{ids:Array(String)}}\n"
    "    AND kind != 'resolution' AND rule IN {{rules:Array(String)}}\n"
    "GROUP BY deployment_id"
)
_FAILED_STATUSES = ("failed", "rolled_back")


@dataclass
class _Lookups:
    """What the keyed reads found, per (tenant, deployment id)."""

    started: dict[tuple[str, str], datetime] = field(default_factory=dict)
    alerted: dict[tuple[str, str], datetime] = field(default_factory=dict)
    rollback_started: dict[tuple[str, str], datetime] = field(default_factory=dict)
    failed_rollbacks: dict[tuple[str, str], int] = field(default_factory=dict)

    def add_record(self, tenant: str, row: Sequence[Any], ids: set[str]) -> None:
        dep, named, started, status = str(row[0]), str(row[1]), as_utc(row[2]), str(row[3])
        if dep in ids:
            self.started[(tenant, dep)] = started
        if named in ids and named != dep:
            key = (tenant, named)
            earlier = self.rollback_started.get(key)
            self.rollback_started[key] = started if earlier is None else min(earlier, started)
            if status in _FAILED_STATUSES:
                self.failed_rollbacks[key] = self.failed_rollbacks.get(key, 0) + 1


def read_failures(
    store: Runner,
    query: DoraQuery,
    detection_rules: Sequence[str],
    scope: RowScope | None,
    records: str,
    alerts: str,
) -> list[Failure]:
    """The failed deployments of `query` over the rows `scope` may read, each with the times
    of `Failure`: one query of the aggregates, then two keyed reads per tenant of `records`
    and `alerts` (the tables' sources: `LedgerStore.source`, hot and cold)."""
    sql, params = failures_sql(query, store.database, scope)
    _, rows = store.query(sql, params)
    ids: dict[str, set[str]] = {}
    for r in rows:
        ids.setdefault(str(r[0]), set()).add(str(r[3]))
    found = _Lookups()
    for tenant, named in sorted(ids.items()):
        # Remediations and alerts come after the failed deployment's start: a lower bound
        # for the sort keys.
        wanted = {"tenant": tenant, "ids": sorted(named), "since": query.since}
        _, recs = store.query(_RECORDS_SQL.format(records=records), wanted)
        for rec in recs:
            found.add_record(tenant, rec, named)
        if detection_rules:
            _, alerted = store.query(
                _ALERTS_SQL.format(alerts=alerts),
                {**wanted, "rules": list(detection_rules)},
            )
            found.alerted |= {(tenant, str(d)): as_utc(at) for d, at in alerted}
    return [
        Failure(
            tenant=str(tenant),
            team=str(team),
            period=period.date() if isinstance(period, datetime) else period,
            deployment_id=str(dep),
            started_at=found.started.get((str(tenant), str(dep))),
            failed_at=None if failed is None else as_utc(failed),
            alerted_at=found.alerted.get((str(tenant), str(dep))),
            rollback_started_at=found.rollback_started.get((str(tenant), str(dep))),
            restored_at=None if restored is None else as_utc(restored),
            failed_rollbacks=found.failed_rollbacks.get((str(tenant), str(dep)), 0),
        )
        for tenant, team, period, dep, failed, restored in rows
    ]


#: Report columns in order (`SuccessRow.as_dict`).
SUCCESS_COLUMNS = [
    "period",
    "tenant",
    "team",
    "failures",
    "detected",
    "detect_min",
    "detect_target_min",
    "rollbacks",
    "rollback_min",
    "rollback_change",
    "rollback_target_min",
    "failed_rollbacks",
    "on_target",
]
#: The `period` of a team's row over the whole window.
TOTAL = "total"


@dataclass(frozen=True)
class SuccessRow:
    """The success criteria of one team over one period (or the whole window: `TOTAL`)."""

    period: str
    tenant: str
    team: str
    failures: int
    detect_s: tuple[float, ...]
    rollback_s: tuple[float, ...]
    failed_rollbacks: int
    detect_target_s: float | None
    rollback_target_s: float | None
    #: Relative change of the mean rollback duration (-0.25: a quarter shorter) from the
    #: team's previous period with rollbacks (TOTAL: from its first to its last such period).
    rollback_change: float | None = None

    @property
    def detect_mean_s(self) -> float | None:
        """Mean time to detect over the failures detected."""
        return statistics.fmean(self.detect_s) if self.detect_s else None

    @property
    def rollback_mean_s(self) -> float | None:
        """Mean rollback duration over the failures rolled back and restored."""
        return statistics.fmean(self.rollback_s) if self.rollback_s else None

    @property
    def missed(self) -> list[str]:
        """The targets this row misses (`detect`, `rollback`); a metric nothing measured
        misses none."""
        checks = [
            ("detect", self.detect_mean_s, self.detect_target_s),
            ("rollback", self.rollback_mean_s, self.rollback_target_s),
        ]
        return [n for n, v, t in checks if v is not None and t is not None and v > t]

    def as_dict(self) -> dict[str, Any]:
        """The row as report columns (minutes, 0.1; None when nothing was measured)."""
        measured = self.detect_s or self.rollback_s
        targets = self.detect_target_s is not None or self.rollback_target_s is not None
        return {
            "period": self.period,
            "tenant": self.tenant,
            "team": self.team,
            "failures": self.failures,
            "detected": len(self.detect_s),
            "detect_min": _minutes(self.detect_mean_s),
            "detect_target_min": _minutes(self.detect_target_s),
            "rollbacks": len(self.rollback_s),
            "rollback_min": _minutes(self.rollback_mean_s),
            "rollback_change": _round(self.rollback_change),
            "rollback_target_min": _minutes(self.rollback_target_s),
            "failed_rollbacks": self.failed_rollbacks,
            "on_target": (not self.missed) if measured and targets else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _change(before: float | None, after: float | None) -> float | None:
    """`after` relative to `before` (None when either is unknown or `before` is zero)."""
    return after / before - 1 if before and after is not None else None


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


@dataclass(frozen=True)
class SuccessReport:
    """The trend (a row per period and team), each team's row over the window, and the teams
    that miss a target over the window."""

    rows: list[SuccessRow]
    totals: list[SuccessRow]

    @property
    def missing(self) -> list[dict[str, Any]]:
        """Each team missing a target over the window, with which (`detect`, `rollback`)."""
        return [
            {"tenant": t.tenant, "team": t.team, "missed": t.missed}
            for t in self.totals
            if t.missed
        ]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON: columns, the trend rows, the window's rows, the teams missing."""
        return {
            "columns": SUCCESS_COLUMNS,
            "rows": [r.as_dict() for r in self.rows],
            "totals": [r.as_dict() for r in self.totals],
            "missing": self.missing,
        }


def success_report(failures: Iterable[Failure], criteria: SuccessCriteria) -> SuccessReport:
    """The success criteria of `failures` per period and team, and per team over the window,
    against the targets of `criteria` (pure)."""
    groups: dict[tuple[str, str], dict[date, list[Failure]]] = {}
    for f in failures:
        groups.setdefault((f.tenant, f.team), {}).setdefault(f.period, []).append(f)
    rows: list[SuccessRow] = []
    totals: list[SuccessRow] = []
    for (tenant, team), periods in sorted(groups.items()):
        targets = criteria.targets_for(team)
        detect_t, rollback_t = targets.seconds("detect_within"), targets.seconds("rollback_within")
        means: list[float] = []  # the mean rollback duration of each period that has one
        for period, members in sorted(periods.items()):
            row = _row(period.isoformat(), tenant, team, members, detect_t, rollback_t)
            mean = row.rollback_mean_s
            change = _change(means[-1] if means else None, mean)
            rows.append(replace(row, rollback_change=change))
            means += [] if mean is None else [mean]
        everyone = [f for members in periods.values() for f in members]
        total = _row(TOTAL, tenant, team, everyone, detect_t, rollback_t)
        window = _change(means[0], means[-1]) if len(means) > 1 else None
        totals.append(replace(total, rollback_change=window))
    rows.sort(key=lambda r: (r.period, r.tenant, r.team))
    return SuccessReport(rows, totals)


def _row(
    period: str,
    tenant: str,
    team: str,
    failures: Sequence[Failure],
    detect_t: float | None,
    rollback_t: float | None,
) -> SuccessRow:
    return SuccessRow(
        period=period,
        tenant=tenant,
        team=team,
        failures=len(failures),
        detect_s=tuple(s for f in failures if (s := f.detect_s) is not None),
        rollback_s=tuple(s for f in failures if (s := f.rollback_s) is not None),
        failed_rollbacks=sum(f.failed_rollbacks for f in failures),
        detect_target_s=detect_t,
        rollback_target_s=rollback_t,
    )

"""The ledger side of post-deploy verification (docs/verification.md): the succeeded
deployments and the signals a verdict is decided from, the verdicts stored, and new ones
written. What the verdicts are is decided elsewhere (`shipledger.processors.verification`,
composed by `shipledger.up.verifier`); this module only reads and writes rows.

Deployments and signals are read from the hot tables: a window closes minutes after a
deployment and is decided again for at most the policy's `late_for`, long before
`shipledger archive` moves anything. Verdict rows are appended, never edited: the latest
`decided_at` per deployment is its verdict.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore

#: The columns of a verdict row, in table order.
COLUMNS = (
    "tenant",
    "deployment_id",
    "service",
    "environment",
    "verdict",
    "score",
    "evidence",
    "window_end",
    "decided_at",
    "window_start",
    "check_count",
    "policy_version",
    "team",
    *ddl.PLACE,
)
#: The signal columns a verdict reads.
_SIGNAL_COLUMNS = (
    "event_id, tenant, kind, service, environment, region, deployment_id, outcome, title, url,"
    " source, attributes, occurred_at"
)


@dataclass(frozen=True)
class StoredVerdict:
    """A deployment's latest verdict, as stored."""

    tenant: str
    deployment_id: str
    service: str
    environment: str
    verdict: str
    score: float
    evidence: str
    window_end: datetime
    decided_at: datetime
    window_start: datetime
    check_count: int
    policy_version: str
    team: str
    started_at: datetime
    retain_until: datetime

    @property
    def compared(self) -> tuple[str, float, str]:
        """What tells two decisions apart (`Decision.changed`)."""
        return (self.verdict, self.score, self.evidence)


def succeeded_since(store: LedgerStore, since: datetime) -> list[dict[str, Any]]:
    """The deployments whose latest record is `succeeded` with a `finished_at` at or after
    `since`: tenant, deployment_id, service, environment, finished_at, team ('' unknown), and
    that record's `ddl.PLACE` (started_at, retain_until: where its verdict is filed)."""
    records = ddl.qualified(store.database, ddl.RECORDS)
    columns, rows = store.query(
        "SELECT tenant, deployment_id, service, environment, finished_at, team,"  # noqa: S608
        " started_at, retain_until FROM ("
        "SELECT tenant, deployment_id, service, environment, finished_at, status,"
        " ifNull(team, '') AS team, started_at, retain_until "
        f"FROM {records} WHERE finished_at >= %(since)s "
        "ORDER BY seq DESC, updated_at DESC LIMIT 1 BY tenant, deployment_id) "
        "WHERE status = 'succeeded' ORDER BY finished_at, deployment_id",
        {"since": since},
    )
    return [dict(zip(columns, row, strict=True)) for row in rows]


def signals_between(
    store: LedgerStore, tenants: Collection[str], start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The signals of `tenants` whose event time is within [start, end]."""
    if not tenants:
        return []
    signals = ddl.qualified(store.database, ddl.SIGNALS)
    columns, rows = store.query(
        f"SELECT {_SIGNAL_COLUMNS} FROM {signals} "  # noqa: S608 (checked identifiers)
        "WHERE tenant IN %(tenants)s AND occurred_at BETWEEN %(start)s AND %(end)s",
        {"tenants": sorted(tenants), "start": start, "end": end},
    )
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _latest(store: LedgerStore, where: str, params: dict[str, Any]) -> list[StoredVerdict]:
    table = ddl.qualified(store.database, ddl.DEPLOYMENT_VERIFICATIONS)
    names = ", ".join(COLUMNS)
    _, rows = store.query(
        f"SELECT {names} FROM {table} WHERE {where} "  # noqa: S608 (checked identifiers)
        "ORDER BY decided_at DESC LIMIT 1 BY tenant, deployment_id",
        params,
    )
    verdicts = [StoredVerdict(*row) for row in rows]
    return sorted(verdicts, key=lambda v: (v.window_end, v.deployment_id), reverse=True)


def stored(
    store: LedgerStore, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], StoredVerdict]:
    """The latest stored verdict of each (tenant, deployment_id) of `keys` that has one."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    found = _latest(store, "(tenant, deployment_id) IN %(keys)s", {"keys": wanted})
    return {(v.tenant, v.deployment_id): v for v in found}


@dataclass(frozen=True)
class VerdictFilter:
    """Which latest verdicts to read: of `tenant` (None: every tenant), optionally of one
    deployment, verdict or service; at most `limit`."""

    tenant: str | None = None
    deployment_id: str | None = None
    verdict: str | None = None
    service: str | None = None
    limit: int = 100


def latest(store: LedgerStore, wanted: VerdictFilter) -> list[StoredVerdict]:
    """The latest verdicts `wanted`, newest window first."""
    clauses = ["1"]
    params: dict[str, Any] = {}
    for column in ("tenant", "deployment_id", "service"):
        value = getattr(wanted, column)
        if value is not None:
            clauses.append(f"{column} = %({column})s")
            params[column] = value
    found = _latest(store, " AND ".join(clauses), params)
    return [v for v in found if wanted.verdict in (None, v.verdict)][: wanted.limit]


def write(store: LedgerStore, rows: Sequence[Sequence[Any]]) -> int:
    """Append verdict rows (values in `COLUMNS` order)."""
    return store.insert_derived(
        ddl.DEPLOYMENT_VERIFICATIONS, [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    )

"""Reconciliation against independent evidence (docs/reconcile.md): what the comparison reads
of the ledger (the deployments of a period, the team of each service) and where its findings
are stored (`reconciliation_findings`).

A run is identified by the digest of everything it compared: the evidence files' content, the
mapping, the period, the tolerances and the ledger's deployments read. The same run again
stores nothing (its findings are there); a run after the ledger changed is another run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shipledger.reconcile.compare import Finding, LedgerDeployment, Scope
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.dora import as_utc
from shipledger.sinks.ledger.store import LedgerStore

#: The latest record of every deployment of a tenant that started in a window.
_DEPLOYMENTS_SQL = (
    "SELECT deployment_id, toString(service), toString(environment), ifNull(team, ''), status,\n"
    "    started_at, finished_at FROM (\n"
    "  SELECT deployment_id, service, environment, team, status, started_at, finished_at\n"
    "  FROM {records} WHERE tenant = {{tenant:String}}\n"
    "    AND started_at >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')\n"
    "    AND started_at < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')\n"
    "  ORDER BY seq DESC, updated_at DESC LIMIT 1 BY deployment_id\n"
    ") ORDER BY started_at, deployment_id"
)
#: The team the latest deployment of each service of a tenant named.
_TEAMS_SQL = (
    "SELECT toString(service), argMax(team, started_at) FROM {records}\n"
    "WHERE tenant = {{tenant:String}} AND team IS NOT NULL AND team != '' GROUP BY service"
)
_STORED_SQL = (
    "SELECT count() FROM {findings} WHERE tenant = {{tenant:String}} AND run_id = {{run:String}}"
)


def _epoch_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def read_deployments(
    store: LedgerStore, tenant: str, start: datetime, end: datetime
) -> list[LedgerDeployment]:
    """Every deployment of `tenant` that started in [`start`, `end`), as its latest record
    says, hot and cold, oldest first."""
    sql = _DEPLOYMENTS_SQL.format(records=store.source(ddl.RECORDS))
    params = {"tenant": tenant, "lo": _epoch_ms(start), "hi": _epoch_ms(end)}
    _, rows = store.query(sql, params)
    return [
        LedgerDeployment(
            str(d), str(s), str(e), str(team), str(status), as_utc(started), _maybe_utc(finished)
        )
        for d, s, e, team, status, started, finished in rows
    ]


def _maybe_utc(at: datetime | None) -> datetime | None:
    return as_utc(at) if at is not None else None


def service_teams(store: LedgerStore, tenant: str) -> dict[str, str]:
    """The team of each service of `tenant`: the one its latest deployment named."""
    _, rows = store.query(_TEAMS_SQL.format(records=store.source(ddl.RECORDS)), {"tenant": tenant})
    return {str(service): str(team) for service, team in rows}


def store_findings(
    store: LedgerStore, scope: Scope, run_id: str, findings: Sequence[Finding]
) -> bool:
    """Store the findings of run `run_id` unless that run was stored before; whether they
    were stored now. A run with no finding stores nothing, so it is never 'stored before'."""
    table = ddl.qualified(store.database, ddl.RECONCILIATION_FINDINGS)
    _, stored = store.query(
        _STORED_SQL.format(findings=table), {"tenant": scope.tenant, "run": run_id}
    )
    if stored and stored[0][0]:
        return False
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "tenant": scope.tenant,
            "run_id": run_id,
            "source": f.source,
            "kind": f.kind,
            "service": f.service,
            "environment": f.environment,
            "team": f.team,
            "observed_at": f.observed_at,
            "deployment_id": f.deployment_id,
            "evidence": f.evidence,
            "detail": f.detail,
            "period_start": scope.start,
            "period_end": scope.end,
            "reconciled_at": now,
        }
        for f in findings
    ]
    store.insert_derived(ddl.RECONCILIATION_FINDINGS, rows)
    return True

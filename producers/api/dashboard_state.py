"""The dashboard's first state and service map, read from the ledger through its door
(`LedgerReads.query`: the same guarded, tenant-scoped read-only SQL as `POST /v1/query`).

Every row is checked with the principal's `sees` before it is served (`StreamFilter.admits`),
as the stream checks every event: the SQL is scoped to the token's tenant, the rest (team and
environment scopes, the page's filters) is checked here, on bounded reads of the newest rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipledger.producers.api.stream_events import (
    ALERT_FIELDS,
    RECORD_FIELDS,
    StreamFilter,
    Viewer,
    pick,
)
from shipledger.producers.api.topology import build_graph
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReads, QueryLimits

#: Most rows of each kind the page is sent (the newest first).
TIMELINE_ROWS = 200
OPEN_ALERT_ROWS = 500
#: Rows read before the per-row checks thin them out.
_READ_ROWS = 5000

_CURRENT_SQL = (
    "SELECT {fields} FROM deployments ORDER BY started_at DESC, updated_at DESC "
    "LIMIT 1 BY tenant, service, environment"
)
_TIMELINE_SQL = "SELECT {fields} FROM deployment_records ORDER BY updated_at DESC LIMIT {n}"
_ALERTS_SQL = "SELECT {fields} FROM open_alerts ORDER BY detected_at DESC LIMIT {n}"
_SERVICES_SQL = (
    "SELECT tenant, service, owner_team, application, tier, dependencies, in_catalog, removed "
    "FROM services"
)


@dataclass(frozen=True)
class Reads:
    """One principal's reads of one ledger: tenant scope for the SQL, `viewer` for the rows."""

    ledger: LedgerReads
    settings: Settings
    tenant: str | None
    viewer: Viewer
    #: The token's team and environment scopes, applied in the SQL too, so a scoped reader's
    #: rows are not crowded out of the row cap by rows `viewer` would then drop.
    teams: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        result = self.ledger.query(
            sql,
            tenant=self.tenant,
            max_rows=_READ_ROWS,
            limits=QueryLimits.of(self.settings),
            teams=self.teams,
            environments=self.environments,
        )
        return [dict(zip(result.columns, row, strict=True)) for row in result.rows]

    def _admitted(
        self, sql: str, fields: tuple[str, ...], wanted: StreamFilter, most: int
    ) -> list[dict[str, Any]]:
        rows = self._rows(sql.format(fields=", ".join(fields), n=_READ_ROWS))
        admitted = [pick(r, fields) for r in rows if wanted.admits(self.viewer, r["tenant"], r)]
        return admitted[:most]

    def state(self, wanted: StreamFilter) -> dict[str, Any]:
        """`current` (latest deployment per tenant, service and environment), `timeline`
        (newest deployment records) and `alerts` (open ones, newest first)."""
        return {
            "current": self._admitted(_CURRENT_SQL, RECORD_FIELDS, wanted, _READ_ROWS),
            "timeline": self._admitted(_TIMELINE_SQL, RECORD_FIELDS, wanted, TIMELINE_ROWS),
            "alerts": self._admitted(_ALERTS_SQL, ALERT_FIELDS, wanted, OPEN_ALERT_ROWS),
        }

    def topology(self, wanted: StreamFilter) -> list[dict[str, Any]]:
        """The service map's nodes this principal sees (owner team as the node's team; the
        page's environment filter as its environment), dependencies and blast radius."""
        nodes = build_graph(self._rows(_SERVICES_SQL))
        # Not the service filter: a map of one service would hide its blast radius.
        wanted = StreamFilter(team=wanted.team, environment=wanted.environment)
        return [
            node.to_json()
            for node in nodes
            if wanted.admits(
                self.viewer,
                node.tenant,
                {
                    "team": node.owner_team,
                    "environment": wanted.environment,
                    "service": node.service,
                },
            )
        ]

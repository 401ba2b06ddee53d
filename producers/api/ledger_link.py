"""`LedgerLink`: the ledger's reads for an API that runs apart from the ledger (`shipledger
api` with SHIPLEDGER_CLICKHOUSE_URL naming a ClickHouse server), which may be down when the
API starts or later.

The reader is opened on first use and, while that fails, again at most every `retry_s`
(meanwhile each read raises `LedgerUnavailable` at once, answered 503). Once open, it stays
open: the server's HTTP client reconnects by itself after an outage.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

from shipledger.logging import get_logger
from shipledger.schemas.family_models import ChangeEvent
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import (
    DoraQuery,
    DoraRow,
    LedgerReader,
    LedgerUnavailable,
    QueryLimits,
    QueryResult,
    StoredEvent,
    Suspect,
    SuspectsQuery,
    Visible,
)

log = get_logger("api.ledger")


class LedgerLink:
    """`LedgerReads` over a ClickHouse server, opened (again) when needed; `close` at the end."""

    def __init__(self, settings: Settings, retry_s: float = 5.0) -> None:
        self._settings = settings
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._open = ExitStack()
        self._reader: LedgerReader | None = None
        self._next_try = 0.0
        self._why = ""

    def _get(self) -> LedgerReader:
        with self._lock:
            if self._reader is not None:
                return self._reader
            if time.monotonic() < self._next_try:
                raise LedgerUnavailable(self._why)
            try:
                self._reader = self._open.enter_context(LedgerReader.open(self._settings))
            except LedgerUnavailable as exc:
                self._next_try = time.monotonic() + self._retry_s
                self._why = str(exc)
                log.warning("ledger_unavailable", error=self._why[:300])
                raise
            log.info("ledger_opened")
            return self._reader

    def event(self, event_id: str, tenant: str | None) -> StoredEvent | None:
        """The stored deployment event `event_id` (of `tenant`; None: any tenant), if any."""
        return self._get().event(event_id, tenant)

    def query(
        self,
        sql: str,
        *,
        tenant: str | None,
        max_rows: int,
        limits: QueryLimits,
        teams: frozenset[str] = frozenset(),
        environments: frozenset[str] = frozenset(),
    ) -> QueryResult:
        """Run one read-only SELECT within the reader's scopes (raises QueryError)."""
        return self._get().query(
            sql,
            tenant=tenant,
            max_rows=max_rows,
            limits=limits,
            teams=teams,
            environments=environments,
        )

    def change_events(self, tenant: str, change_id: str) -> list[ChangeEvent]:
        """Every stored event of one change request of `tenant`."""
        return self._get().change_events(tenant, change_id)

    def dora(self, query: DoraQuery, visible: Visible | None = None) -> list[DoraRow]:
        """The DORA metrics of `query`, from rows `visible` may read."""
        return self._get().dora(query, visible)

    def suspects(self, query: SuspectsQuery, visible: Visible | None = None) -> list[Suspect]:
        """The ranked suspects of an incident, from rows `visible` may read."""
        return self._get().suspects(query, visible)

    def close(self) -> None:
        """Close the reader, if open."""
        with self._lock:
            self._open.close()
            self._reader = None

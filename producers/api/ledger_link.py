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
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import ForwardedReads, LedgerReader, LedgerUnavailable

log = get_logger("api.ledger")


class LedgerLink(ForwardedReads):
    """`LedgerReads` over a ClickHouse server, opened (again) when needed; `close` at the end."""

    def __init__(self, settings: Settings, retry_s: float = 5.0) -> None:
        self._settings = settings
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._open = ExitStack()
        self._reader: LedgerReader | None = None
        self._next_try = 0.0
        self._why = ""

    def _reads(self) -> LedgerReader:
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

    def close(self) -> None:
        """Close the reader, if open."""
        with self._lock:
            self._open.close()
            self._reader = None

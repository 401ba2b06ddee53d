"""How many read queries run at once: at most `per_token` for one API token and `total` in
all, so one token (or a crowd of them) cannot hold every ClickHouse thread and the memory the
pipeline needs. Over either, the request is refused at once, never queued."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class SlotsFull(Exception):
    """No slot for this query now: `status` is 429 (this token's) or 503 (everyone's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class QuerySlots:
    """Counts the queries running per token and in all; `slot(token)` holds one."""

    def __init__(self, per_token: int, total: int) -> None:
        self.per_token = per_token
        self.total = total
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, token_id: str) -> Iterator[None]:
        """Hold a slot while the query runs; SlotsFull when none is free."""
        with self._lock:
            if self._running[token_id] >= self.per_token:
                raise SlotsFull(
                    429,
                    f"token {token_id} already runs {self.per_token} queries, the most one "
                    "token may run at once (SHIPLEDGER_QUERY_MAX_CONCURRENT_PER_TOKEN): retry "
                    "when one has finished",
                )
            if sum(self._running.values()) >= self.total:
                raise SlotsFull(
                    503,
                    f"{self.total} queries are running, the most this API runs at once "
                    "(SHIPLEDGER_QUERY_MAX_CONCURRENT): retry shortly",
                )
            self._running[token_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[token_id] -= 1
                if not self._running[token_id]:
                    del self._running[token_id]

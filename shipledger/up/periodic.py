"""A job `up` runs at start and then every interval, on a daemon thread (incident triage,
CMDB reconciliation, cold storage, journal compaction). A failed run is logged and tried
again at the next interval: an optional job must never stop the stack."""

from __future__ import annotations

import threading
from collections.abc import Callable

from shipledger.logging import get_logger

log = get_logger("stack")


class Periodic:
    """Runs `job(stop)` now (`at_start`, else after one interval) and every `interval_s`
    seconds until `stop()`; `interval_s` <= 0: only that first run. The job gets the stop
    event so a long run (retries) can end early."""

    def __init__(
        self,
        name: str,
        job: Callable[[threading.Event], object],
        interval_s: float,
        *,
        at_start: bool = True,
    ) -> None:
        self.name = name
        self._job = job
        self._interval_s = interval_s
        self._at_start = at_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Periodic:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        if not self._at_start and self._stop.wait(self._interval_s):
            return
        while not self._stop.is_set():
            try:
                self._job(self._stop)
            except Exception:
                log.exception("periodic_job_failed", job=self.name)
            if self._interval_s <= 0 or self._stop.wait(self._interval_s):
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the thread to stop after its current run; wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

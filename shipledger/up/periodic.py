"""The periodic jobs, each run at start (or after one interval) and then every interval on a
daemon thread: post-deploy verification, incident triage, CMDB reconciliation (by `up` in the
embedded stack and by `shipledger jobs` in a production deployment), and `up`'s cold storage
and journal compaction. A failed run is logged and tried again at the next interval: an
optional job must never stop the stack."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shipledger import metrics as m
from shipledger.logging import get_logger
from shipledger.schemas.policy import Policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.cmdb import reconcile
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.triage import Triage
from shipledger.up.verifier import verify_pass

log = get_logger("stack")


class Periodic:
    """Runs `job(stop)` now (`at_start`, else after one interval) and every `interval_s`
    seconds until `stop()`; `interval_s` <= 0: only that first run. The job gets the stop
    event so a long run (retries) can end early. Each run is counted in `metrics` if given
    (its outcome and duration: a job whose last run is old, or that keeps failing, shows
    there). It can be started again after `stop()` (the jobs' lease comes and goes:
    `shipledger.up.lease`)."""

    def __init__(
        self,
        name: str,
        job: Callable[[threading.Event], object],
        interval_s: float,
        *,
        at_start: bool = True,
        metrics: m.Metrics | None = None,
    ) -> None:
        self.name = name
        self._job = job
        self._interval_s = interval_s
        self._at_start = at_start
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Periodic:
        """Start the thread."""
        # A stop event per start: a thread a timed-out stop() left running keeps its own.
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def _run(self, stop: threading.Event) -> None:
        if not self._at_start and stop.wait(self._interval_s):
            return
        while not stop.is_set():
            began = time.perf_counter()
            outcome = "ok"
            try:
                self._job(stop)
            except Exception:
                outcome = "failed"
                log.exception("periodic_job_failed", job=self.name)
            if self._metrics is not None:
                tags = {"job": self.name}
                self._metrics.timing(m.JOB_RUN_MS, (time.perf_counter() - began) * 1000, tags)
                self._metrics.increment(m.JOB_RUNS, tags={**tags, "outcome": outcome})
            if self._interval_s <= 0 or stop.wait(self._interval_s):
                return

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Ask the thread to stop after its current run; wait for it, at most `timeout_s`.
        False if a run was still going then."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout=timeout_s)
        return not thread.is_alive()


def periodic_jobs(
    settings: Settings, store: LedgerStore, policy: Policy, metrics: m.Metrics | None = None
) -> list[Periodic]:
    """The optional jobs the settings turn on, not started: post-deploy verification
    (SHIPLEDGER_VERIFICATION_INTERVAL_S > 0), incident triage (SHIPLEDGER_TRIAGE_INTERVAL_S >
    0) and CMDB reconciliation (SHIPLEDGER_CMDB_EXPORT_FILE), their runs counted in `metrics`
    if given. A failed run is logged and made again at the next interval: none of them may
    stop the stack."""
    jobs: list[Periodic] = []
    if settings.verification_interval_s > 0:

        def verify(_stop: object) -> None:
            verify_pass(store, policy)

        jobs.append(Periodic("verifier", verify, settings.verification_interval_s, metrics=metrics))
    if settings.triage_interval_s > 0:
        triage = Triage(settings, store)
        jobs.append(Periodic("triage", triage.run, settings.triage_interval_s, metrics=metrics))
    if settings.cmdb_export_file is not None:
        export = settings.cmdb_export_file

        def reconcile_export(_stop: object) -> None:
            result = reconcile(store, export.name, export.read_bytes(), settings.tenant)
            log.info("cmdb_reconciled", findings=len(result.findings), new=result.stored_now)

        jobs.append(Periodic("cmdb", reconcile_export, settings.cmdb_interval_s, metrics=metrics))
    return jobs

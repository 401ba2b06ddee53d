"""The `up` supervisor: broker, topics, Faust worker(s), the ClickHouse sink and, when the policy
escalates alerts, the escalator, as one stack.

The sink runs in this process because it owns the chDB data dir (only one process may open it);
so does the escalator, which asks that ledger what was already delivered. The Faust worker
runs as a child process because Faust wants its own event loop and signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click
from confluent_kafka import KafkaException

from shipledger.closing import Running
from shipledger.gc_tuning import tune_gc
from shipledger.lag import (
    Partition,
    committed_offsets,
    end_offsets,
    lag_by_topic,
    partitions_of,
)
from shipledger.logging import configure_logging, get_logger
from shipledger.metrics import Endpoint
from shipledger.processors.gate import Gatekeeper
from shipledger.processors.progress import read_progress
from shipledger.producers.journal import Journal
from shipledger.receivers.escalator import Escalator
from shipledger.receivers.record import DeliveryRecord
from shipledger.receivers.registry import ReceiverConfigError, policy_problems, targets
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.policy import Policy, load_policy
from shipledger.schemas.residency import Region, Residency
from shipledger.schemas.topics import ENRICHMENT, Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger.archive import archive, recover
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.regions import open_ledgers, without_default
from shipledger.sinks.sink import ClickHouseSink
from shipledger.stackfile import StackInfo, remove_stack, write_stack
from shipledger.topics import ensure_topics
from shipledger.up.backlog import LedgerAlerts
from shipledger.up.broker import EmbeddedBroker, die_with_parent, stop_process
from shipledger.up.keeper import JournalKeeper
from shipledger.up.lease import JobsLease
from shipledger.up.periodic import Periodic, periodic_jobs
from shipledger.up.restore import RestoreReport, restore

if TYPE_CHECKING:
    from shipledger.producers.api.server import ApiServer

log = get_logger("stack")


class Stack(Running):
    """Everything `shipledger up` runs; a context manager that stops it all in reverse order.

    `log_dir` sends the children's logs to files (the demo keeps its terminal readable);
    None leaves them on this process's stderr. `api` also serves the ingest API (on
    `settings.api_host:api_port`) on a thread of this process, sharing the ledger store.

    The embedded broker keeps everything in memory. What makes an acknowledgement durable
    anyway: every writer journals an event before producing it (`shipledger.producers.journal`,
    under `<data_dir>/journal`, advertised in the stack file); `start()` rebuilds what a previous
    broker took with it (`shipledger.up.restore`: the processors' state from the ledger, the
    journaled events the ledger lacks) before anything consumes or serves, and `restored`
    says what it did; a `JournalKeeper` deletes segments the ledger holds entirely. `stop()`
    also drains the broker (see `drain`) for at most `drain_timeout_s`; what is still pending
    then is listed in `abandoned`, and the next start sends it again from the journal.
    With an external broker (`bootstrap`), Kafka keeps the data: no journal, no drain.

    The policy is loaded once, here (or given as `policy` by the caller that loaded it): the
    sink stamps rows with it, and every worker is started with its version
    (`SHIPLEDGER_POLICY_VERSION`) and refuses a policy file that no longer matches it. When it
    has escalation routes, the escalator (`shipledger.receivers.escalator`) runs on a thread
    like the sink, with the receivers' secrets of the settings; a receiver without its secret
    is a `ReceiverConfigError` from the constructor, before anything starts. The periodic jobs
    (verification, triage, CMDB) run while the stack holds their lease (`shipledger.up.lease`):
    a `shipledger jobs` or another `up` on the same Kafka and topic prefix waits meanwhile.

    Children (broker, workers) run in their own sessions, so a Ctrl-C in the terminal reaches
    only this process, which stops them in order; on Linux they also get SIGTERM if this
    process dies without stopping them (`die_with_parent`). Start and supervise the stack
    from the main thread: that signal follows the thread that spawned a child.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str | None = None,
        log_dir: Path | None = None,
        workers: int = 1,
        drain_timeout_s: float = 30.0,
        api: bool = False,
        policy: Policy | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.policy_file, checks=[policy_problems])
        # Before anything starts: a receiver without its secret is a configuration error.
        self._targets = targets(self.policy, settings.receiver_secret)
        self._bootstrap = bootstrap or settings.bootstrap_servers
        self._log_dir = log_dir
        self._workers = workers
        self.drain_timeout_s = drain_timeout_s
        self.abandoned: dict[str, int] = {}
        self._drain_abort = threading.Event()
        self._broker: EmbeddedBroker | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[BinaryIO] = []
        self._restarts: list[float] = []
        self._sink_stop = threading.Event()
        self._sink_thread: threading.Thread | None = None
        #: The sink's `/metrics` (SHIPLEDGER_SINK_METRICS_PORT), while it runs.
        self.sink_metrics: Endpoint | None = None
        self._sink_error: BaseException | None = None
        #: This process's ledger (its region's, `Settings.region`): what the API, the
        #: escalator and the periodic jobs read.
        self.store: LedgerStore | None = None
        #: Every ledger the sink writes (`sinks.regions`): the default one and each region's.
        self.ledgers: dict[Region, LedgerStore] = {}
        self.sink: ClickHouseSink | None = None
        self._archivers: list[Periodic] = []
        #: Optional periodic jobs (verification, incident triage, CMDB reconciliation), run
        #: while this stack holds their lease: a `shipledger jobs` on the same topics may.
        self._lease: JobsLease | None = None
        self.topics = Topics.from_settings(settings)
        self._serve_api = api
        self.api: ApiServer | None = None
        self.journal: Journal | None = None
        self._keeper: JournalKeeper | None = None
        self.restored: RestoreReport | None = None
        self.escalator: Escalator | None = None
        self._escalator_thread: threading.Thread | None = None
        self._escalator_error: BaseException | None = None
        self._escalation_record: DeliveryRecord | None = None
        #: Whether this stack wrote the data dir's stack file (only then does it remove it).
        self._published = False

    @property
    def bootstrap(self) -> str:
        """The broker address clients should use."""
        if not self._bootstrap:
            raise RuntimeError("stack not started")
        return self._bootstrap

    def start(self) -> Stack:
        """Start broker (unless given), topics, store, sink thread and Faust worker(s)."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        use_schema_registry(self.settings.schema_registry_url, self.settings.topic_prefix)
        if not self._bootstrap:
            log_path = self._log_dir / "tansu.log" if self._log_dir else None
            self._broker = EmbeddedBroker(log_path=log_path)
            self._bootstrap = self._broker.start()
            log.info("broker_started", bootstrap=self._bootstrap, kind="tansu-embedded")
        ensure_topics(self.settings, self.bootstrap)
        self.ledgers = open_ledgers(self.settings)
        self.store = self.ledgers[self.settings.region]
        for ledger in self.ledgers.values():
            if ledger.cold_root is not None:
                # A move a crash cut short between its cold files and its hot DELETE holds
                # its rows twice: finish it before the restore or anyone else reads.
                recover(ledger)
        if self._broker is not None:  # a fresh, empty broker: rebuild before anyone reads
            self.journal = Journal(self.settings.journal_dir, fsync=self.settings.journal_fsync)
            self.restored = restore(
                self.settings,
                self.bootstrap,
                self.store,
                self.journal,
                list(self.ledgers.values()),
            )
            self._keeper = JournalKeeper(
                self.journal,
                self.store,
                self.topics,
                self.settings.journal_compact_interval_s,
            )
            self._keeper.start()
        # A server tiers by TTL instead.
        self._archivers = [
            archiver(s, self.settings).start() for s in self.ledgers.values() if s.cold_root
        ]
        for index in range(self._workers):
            self._procs.append(self._spawn_worker(index))
        default, regional = self.ledgers[None], without_default(self.ledgers)
        self.sink = ClickHouseSink(
            self.settings, self.bootstrap, default, policy=self.policy, regional=regional
        )
        self.sink_metrics = self.sink.serve_metrics()
        self._sink_thread = threading.Thread(target=self._run_sink, name="sink", daemon=True)
        self._sink_thread.start()
        if self.policy.escalation.routes:
            self._start_escalator(self.store)
        jobs = periodic_jobs(self.settings, self.store, self.policy)
        if jobs:
            self._lease = JobsLease(self.settings, self.bootstrap, jobs).start()
        if self._serve_api:
            from shipledger.producers.api.server import ApiServer

            self.api = ApiServer(
                self.settings,
                self.bootstrap,
                LedgerReader(self.store),
                self.journal,
                governance=Gatekeeper(self.policy),
                residency=Residency(self.policy),
            )
            self.api.start()
        write_stack(
            self.settings,
            StackInfo(
                bootstrap=self.bootstrap,
                pid=os.getpid(),
                clickhouse_url=self.settings.resolved_clickhouse_url,
                api_url=self.api.url if self.api else None,
                api_token=self.api.operator_token() if self.api else None,
                journal=str(self.journal.directory.resolve()) if self.journal else None,
                data_dir=str(self.settings.data_dir.resolve()),
                auth_db=str(self.settings.resolved_auth_db.resolve()) if self.api else None,
                policy_file=str(policy.resolve())
                if (policy := self.settings.policy_file)
                else None,
            ),
        )
        self._published = True
        log.info(
            "stack_started",
            bootstrap=self.bootstrap,
            workers=self._workers,
            clickhouse=self.settings.resolved_clickhouse_url,
            api=self.api.url if self.api else None,
        )
        return self

    def _spawn_worker(self, index: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.settings.to_env(),
            "SHIPLEDGER_BOOTSTRAP_SERVERS": self.bootstrap,
            "SHIPLEDGER_POLICY_VERSION": self.policy.full_version,
        }
        progress = self._progress_file(index)
        progress.unlink(missing_ok=True)  # a previous process's: this one reports afresh
        env["SHIPLEDGER_WORKER_PROGRESS_FILE"] = str(progress)
        port = self.settings.worker_metrics_port
        if port:  # one port each: worker i serves /metrics on the configured port + i
            env["SHIPLEDGER_WORKER_METRICS_PORT"] = str(port + index)
        out: BinaryIO | None = None
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            out = (self._log_dir / f"worker-{index}.log").open("ab")
            self._logs.append(out)
        # New session: Ctrl-C in the terminal reaches us only; we stop the worker in order.
        return subprocess.Popen(
            # -P: never let a checkout in the cwd shadow the installed package.
            [sys.executable, "-P", "-m", "shipledger.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    def _progress_file(self, index: int) -> Path:
        """Where worker `index` reports how far it acted on the enrichment topics."""
        return self.settings.data_dir.resolve() / "workers" / f"worker-{index}.progress.json"

    def _acted_on(self, partitions: list[Partition]) -> dict[Partition, int | None]:
        """Per enrichment partition, the least offset every live worker acted on (None: a
        live worker has not reported it yet; no worker alive: nothing acted on)."""
        reports = [
            read_progress(self._progress_file(i))
            for i, proc in enumerate(self._procs)
            if proc.poll() is None
        ]
        acted: dict[Partition, int | None] = {}
        for tp in partitions:
            known = [r[tp] for r in reports if r is not None and tp in r]
            acted[tp] = min(known) if reports and len(known) == len(reports) else None
        return acted

    @property
    def jobs_lease_held(self) -> bool:
        """Whether this stack holds the periodic jobs' lease (runs them) now."""
        return self._lease is not None and self._lease.held

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the Faust workers (for operators' tools and the chaos test)."""
        return [proc.pid for proc in self._procs]

    def restart_workers(self) -> None:
        """Stop every Faust worker (SIGTERM: commit and leave) and start fresh ones, which
        recover the deployments table from its changelog."""
        for proc in self._procs:
            stop_process(proc, timeout_s=30)
        self._procs = [self._spawn_worker(index) for index in range(self._workers)]

    def _start_escalator(self, store: LedgerStore) -> None:
        self._escalation_record = DeliveryRecord(self.settings.resolved_escalation_db)
        self.escalator = Escalator(
            self.settings,
            self.bootstrap,
            self.policy,
            self._targets,
            self._escalation_record,
            LedgerReader(store),
            # The embedded broker forgets unread alerts in a crash; the ledger has them.
            backlog=LedgerAlerts(store) if self._broker is not None else None,
        )
        self._escalator_thread = threading.Thread(
            target=self._run_escalator, name="escalator", daemon=True
        )
        self._escalator_thread.start()

    def _run_escalator(self) -> None:
        assert self.escalator is not None
        self._escalator_error = self._crash_of("escalator", self.escalator.run)

    def _run_sink(self) -> None:
        assert self.sink is not None
        self._sink_error = self._crash_of("sink", self.sink.run)

    def _crash_of(
        self, component: str, run: Callable[[threading.Event], object]
    ) -> BaseException | None:
        """Run a component's loop on this thread until `_sink_stop`; what it raised is
        logged and returned, for check() to raise on the main thread."""
        try:
            run(self._sink_stop)
        except BaseException as exc:
            log.exception(f"{component}_crashed")
            return exc
        return None

    def check(self) -> None:
        """Raise if a component died: a crashed sink or worker must stop the stack, loudly."""
        self._check_components()
        for proc in self._procs:
            if proc.poll() is not None:
                where = f"; its log: {self._log_dir}/worker-*.log" if self._log_dir else ""
                raise RuntimeError(f"Faust worker exited with code {proc.returncode}{where}")

    def _check_components(self) -> None:
        """`check()` of everything but the workers."""
        if self._sink_error is not None:
            raise RuntimeError(f"ClickHouse sink crashed: {self._sink_error!r}")
        if self._escalator_error is not None:
            raise RuntimeError(f"escalator crashed: {self._escalator_error!r}")
        if self._broker is not None and not self._broker.running:
            raise RuntimeError("embedded broker exited")
        if self.api is not None and not self.api.running:
            raise RuntimeError("the ingest API server stopped")
        if self._lease is not None and self._lease.error is not None:
            raise RuntimeError(f"the periodic jobs' lease failed: {self._lease.error!r}")

    def supervise(self, max_restarts: int = 5, window_s: float = 600.0) -> None:
        """`check()`, but a Faust worker that exited is restarted instead; more than
        `max_restarts` exits within `window_s` is a crash loop and raises. A worker that exits
        after the restart pass is restarted by the next call: polling the workers a second time
        would report an exit that the pass had just missed (a process whose main thread has
        ended while its other threads still run is not yet reaped)."""
        self._restart_exited_workers(max_restarts, window_s)
        self._check_components()

    def _restart_exited_workers(self, max_restarts: int = 5, window_s: float = 600.0) -> None:
        """Restart every worker that exited (RuntimeError on a crash loop, see `supervise`).
        A worker exits by design when a batch must be redone (`processors.app`)."""
        now = time.monotonic()
        for index, proc in enumerate(self._procs):
            if proc.poll() is None:
                continue
            self._restarts = [t for t in self._restarts if now - t < window_s]
            if len(self._restarts) >= max_restarts:
                raise RuntimeError(
                    f"Faust worker keeps exiting ({len(self._restarts)} restarts in "
                    f"{window_s:.0f}s, last code {proc.returncode}): giving up"
                )
            self._restarts.append(now)
            log.error("worker_exited", code=proc.returncode, worker=index, restarting=True)
            self._procs[index] = self._spawn_worker(index)

    # --- drain: nothing acknowledged may die with the embedded broker's memory ---------
    def pending(self) -> dict[str, int]:
        """Messages per topic not yet through the pipeline (0 where done).

        Raw events count until the processors *and* the sink have committed them, alerts
        until the sink and the escalator (when it runs) have, change, catalog and artifact
        events until the sink has and every live worker acted on them (`processors.progress`:
        the re-judgements they owe stored deployments are sent), records and the other
        families' events until the sink has. The reads are ordered so that a zero means
        drained: the processors' and the escalator's commits and the workers' progress are
        read first, then the end offsets (from
        fetches answered after that, so they include every output of the committed messages,
        which both flush before they commit), then the sink's commits.
        """
        if self.sink is None:
            raise RuntimeError("stack not started")
        conf = self.settings.kafka_common(self.bootstrap)
        stored = partitions_of(conf, self.topics.sunk())
        raw = [tp for tp in stored if tp[0] == self.topics.raw]
        processed = committed_offsets(conf, f"{self.settings.topic_prefix}processors", raw)
        enrichment_topics = {self.topics.of(name) for name in ENRICHMENT}
        enrichment = [tp for tp in stored if tp[0] in enrichment_topics]
        acted_on = self._acted_on(enrichment)  # before the ends (see above)
        alerts = [tp for tp in stored if tp[0] == self.topics.alerts]
        escalated = (
            committed_offsets(conf, self.escalator.group_id, alerts) if self.escalator else None
        )
        ends = end_offsets(conf, stored)
        sunk = committed_offsets(conf, self.sink.group_id, stored)
        behind = lag_by_topic({tp: ends[tp] for tp in raw}, processed)
        behind.update(lag_by_topic({tp: ends[tp] for tp in enrichment}, acted_on))
        if escalated is not None:
            behind.update(lag_by_topic({tp: ends[tp] for tp in alerts}, escalated))
        for topic, lag in lag_by_topic(ends, sunk).items():
            behind[topic] = max(lag, behind.get(topic, 0))
        return behind

    def _can_drain(self) -> bool:
        """Whether the pending messages can still move: broker, sink and a worker alive."""
        return (
            self._broker is not None
            and self._broker.running
            and self._sink_thread is not None
            and self._sink_thread.is_alive()
            and self._sink_error is None
            and self._escalator_error is None
            and any(proc.poll() is None for proc in self._procs)
        )

    def drain(
        self, timeout_s: float | None = None, progress_every_s: float = 3.0
    ) -> dict[str, int]:
        """Wait until `pending()` is zero everywhere, at most `timeout_s` (default
        `drain_timeout_s`); returns what is still pending per topic ({} when drained).

        Restarts a worker that exited (as `supervise` does: a worker exits by design to redo
        a batch); gives up early if a component it needs is dead, or on `abort_drain()`. A
        count of -1 means unknown: the broker never answered the lag queries.
        """
        timeout_s = self.drain_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        next_progress = started + progress_every_s
        behind: dict[str, int] = {}
        error: str | None = None
        while True:
            try:
                behind = self.pending()
                error = None
            except KafkaException as exc:
                error = str(exc)
            waited = time.monotonic() - started
            if error is None and not any(behind.values()):
                log.info("stack_drained", waited_s=round(waited, 2))
                return {}
            if self._drain_abort.is_set() or waited >= timeout_s:
                break
            if self._sink_thread is not None:  # a worker that exited meanwhile: restart it
                with contextlib.suppress(RuntimeError):  # a crash loop: _can_drain says no
                    self._restart_exited_workers()
            if not self._can_drain():
                break
            if time.monotonic() >= next_progress:
                next_progress += progress_every_s
                log.info(
                    "stack_draining",
                    pending={t: n for t, n in behind.items() if n},
                    waited_s=round(waited, 1),
                    timeout_s=timeout_s,
                    error=error,
                )
            self._drain_abort.wait(0.1)
        abandoned = {t: n for t, n in behind.items() if n}
        if error is not None and not abandoned:
            abandoned = dict.fromkeys(self.topics.sunk(), -1)
        log.warning(
            "stack_drain_incomplete",
            abandoned=abandoned,
            waited_s=round(time.monotonic() - started, 1),
            reason=(
                "aborted"
                if self._drain_abort.is_set()
                else "timeout"
                if self._can_drain()
                else "a component is down"
            ),
            error=error,
        )
        return abandoned

    @property
    def drains(self) -> bool:
        """Whether `stop()` will drain: the stack owns an in-memory broker and runs a sink."""
        return self._broker is not None and self._sink_thread is not None

    def abort_drain(self) -> None:
        """Make a running (or the next) `drain()` give up now (thread- and signal-safe)."""
        self._drain_abort.set()

    def stop(self) -> None:
        """Stop the API, drain the embedded broker, then stop workers (they commit), then the
        sink (flush + commit), then the broker. A Ctrl-C (KeyboardInterrupt) during the drain
        cuts it short and is raised again once everything is stopped."""
        interrupted: KeyboardInterrupt | None = None
        if self.api is not None:  # first: no new events while the rest drains
            self.api.stop()
            self.api = None
        if self.drains:
            try:
                self.abandoned = self.drain()
            except KeyboardInterrupt as exc:
                interrupted = exc
                log.warning("stack_drain_interrupted")
        for proc in self._procs:
            stop_process(proc, timeout_s=30)
        self._procs.clear()
        for log_file in self._logs:
            log_file.close()
        self._logs.clear()
        self._sink_stop.set()
        # The escalator first: its last outcomes are produced before the sink's last flush.
        if self._escalator_thread is not None:
            self._escalator_thread.join(timeout=30)
            self._escalator_thread = None
        if self._escalation_record is not None:
            self._escalation_record.close()
            self._escalation_record = None
        if self._sink_thread is not None:
            self._sink_thread.join(timeout=30)
            self._sink_thread = None
        if self.sink_metrics is not None:
            self.sink_metrics.stop()
            self.sink_metrics = None
        if self._lease is not None:
            self._lease.stop()
            self._lease = None
        for job in self._archivers:
            job.stop(timeout_s=60)
        self._archivers = []
        if self._keeper is not None:
            self._keeper.stop()
            if self.store is not None and not self.abandoned and interrupted is None:
                self._compact_after_drain(self._keeper)
            self._keeper = None
        for store in self.ledgers.values():
            store.close()
        self.ledgers = {}
        self.store = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        if self._published:  # a start that failed (the data dir is another up's) wrote none
            remove_stack(self.settings)
            self._published = False
        log.info("stack_stopped")
        if interrupted is not None:
            raise interrupted

    def _compact_after_drain(self, keeper: JournalKeeper) -> None:
        """Everything is in the ledger: the journal can go (what cannot stays, and is sent
        again at the next start)."""
        try:
            keeper.compact()
        except Exception:
            log.exception("journal_compaction_failed")


def archiver(store: LedgerStore, settings: Settings) -> Periodic:
    """Moves `store`'s old rows to cold storage (`archive`) at start and every
    SHIPLEDGER_ARCHIVE_INTERVAL_S (0: only at start); not started. Embedded only: a server
    tiers by TTL instead."""
    return Periodic(
        "archiver",
        lambda _stop: archive(store, settings.cold_after_days),
        settings.archive_interval_s,
    )


@click.command()
@click.option("--bootstrap", help="Use this Kafka instead of starting the embedded Tansu broker.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data dir (default .shipledger).")
@click.option("--workers", type=click.IntRange(1), default=1, help="Faust workers (default 1).")
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    help="Port of the ingest API (default SHIPLEDGER_API_PORT, 8470; 0: any free port).",
)
def up(bootstrap: str | None, data_dir: Path | None, workers: int, api_port: int | None) -> None:
    """Run the embedded stack until Ctrl-C.

    \b
    Starts: a Tansu broker on a free loopback port (unless --bootstrap), the topics, the Faust
    processors, the ClickHouse sink (chDB in <data-dir>/clickhouse unless
    SHIPLEDGER_CLICKHOUSE_URL names a server), and the ingest API (127.0.0.1:8470 unless
    SHIPLEDGER_API_HOST/--api-port say otherwise). shipledger logs JSON lines on stderr
    (Faust's own warnings are plain text).

    \b
    While it runs, in another terminal (the broker address is found through the data dir):
      shipledger emit started --service checkout --environment prod \\
          --commit-sha $(git rev-parse HEAD) --actor $USER
    or through the ingest API (see `shipledger api --help` for tokens and curl).
    """
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if api_port is not None:
        overrides["api_port"] = api_port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings)
    try:
        policy = load_policy(settings.policy_file, checks=[policy_problems])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        stack = Stack(settings, bootstrap=bootstrap, workers=workers, api=True, policy=policy)
    except ReceiverConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    tune_gc()
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():  # a second Ctrl-C: stop now, without waiting for the drain
            stack.abort_drain()
        stopping.set()

    # SIGHUP: the terminal was closed. The children have their own sessions: only we get these.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    try:
        with stack:
            if stack.restored is not None:
                _say(f"shipledger: {stack.restored.summary()}.")
            api_url = stack.api.url if stack.api else "-"
            _say(
                f"shipledger is up: broker {stack.bootstrap}, ClickHouse "
                f"{settings.resolved_clickhouse_url}, ingest API {api_url} "
                f"(docs {api_url}/docs), live dashboard {api_url}/. Ctrl-C stops it."
            )
            while not stopping.wait(0.5):
                try:
                    stack.supervise()
                except RuntimeError as exc:
                    raise click.ClickException(str(exc)) from exc
            if stack.drains:
                _say(
                    f"shipledger stopping: delivering pending messages to ClickHouse (at most "
                    f"{stack.drain_timeout_s:.0f}s; Ctrl-C again to skip)."
                )
    except RuntimeError as exc:  # a part that could not start, e.g. the API's port is taken
        raise click.ClickException(str(exc)) from exc
    finally:
        if stack.abandoned:
            lost = ", ".join(
                f"{topic}: {'unknown' if n < 0 else n}" for topic, n in stack.abandoned.items()
            )
            _say(
                f"shipledger: messages not through the pipeline yet ({lost}): the next "
                "`shipledger up` sends the journaled ones again."
            )
    _say("shipledger stopped." if stack.abandoned else "shipledger stopped cleanly.")


def _say(text: str) -> None:
    """A line for the user on stderr; a closed terminal (SIGHUP) must not fail the stop."""
    with contextlib.suppress(OSError):
        click.echo(text, err=True)

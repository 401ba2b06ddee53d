"""The import's loop: the file a chunk at a time → judged rows → the sink's writer.

Guarantee: **every event of the file in the ledger exactly once, whatever crashed.** Rows are
written through the sink's own write path (`sinks.regions.Ledger.write`: pseudonyms, then
`LedgerWriter`: dedup by (tenant, id) against the ledger, retention stamps, hash chain, chain
heads), and every id is deterministic (the event's, derived from the provider's own ids or its
content; the record's is its event's, the alerts' come from event and rule). Its rows chain in
the import's own lane (`sinks.ledger.chain.IMPORT_LANE`), which no sink writes: an import may
run beside the sinks (on a ClickHouse server), one import at a time per ledger (`one_import`:
two at once would both extend the lane from one head, a fork `audit verify` reports as
tampering, and each would store the events the other had not yet stored).

The ledger is the truth: before a chunk is judged, the ledger is asked which of its events it
holds (one id check per table) and those are skipped, not judged again; a deployment whose
record is in no recent chunk continues from the ledger's latest record of it (`Judge`). So an
import killed at any point (kill -9 included) is resumed by running it again: it reads the
file from its start, skips what the killed run stored, and judges the rest as the killed run
would have. Chain heads that a killed run stored rows for but did not record are adopted first
(`LedgerWriter.record_adopted_heads`), as the sink does at its start.

After each chunk is stored, the change sets of its finished deployments are computed as the
sink computes them (`Ledger.compute_change_sets`). One chunk is written (in a thread: chDB and
the ClickHouse client wait without the GIL) while the next is judged, never more, so chunks
reach the ledger in the file's order and memory holds two at most (`--batch` events each).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from shipledger.gc_tuning import fewer_collections
from shipledger.history.judging import NOTHING_STORED, Judge, Problem, Stored
from shipledger.history.mapping import Defaults
from shipledger.history.reading import Format, event_objects
from shipledger.logging import get_logger
from shipledger.producers.api.uploads import Record
from shipledger.schemas.families import FAMILIES
from shipledger.schemas.models import DeploymentRecord
from shipledger.schemas.policy import Policy
from shipledger.schemas.registry import catalog
from shipledger.settings import Settings, chdb_path
from shipledger.sinks.ledger.chain import IMPORT_LANE
from shipledger.sinks.ledger.ddl import ALERTS, EVENTS, RECORDS, SOURCE, tables
from shipledger.sinks.ledger.latest_records import DeploymentKey, ledger_states
from shipledger.sinks.ledger.store import LedgerStore, TimeWindow, redact_url
from shipledger.sinks.regions import Ledger, sink_ledgers
from shipledger.sinks.rows import Row, RowKey
from shipledger.sinks.writer import LedgerWriter

log = get_logger("import")
PROGRESS_RECORDS = 2_000
#: Events per write: large batches amortise ClickHouse's per-insert cost (~13 ms on chDB).
BATCH_EVENTS = 20_000


@dataclass
class Outcome:
    """What an import did: events judged (and stored, unless a dry run), by table the rows
    written, the alerts raised, the events repeated in the file, and every refused record."""

    events: int = 0
    alerts: int = 0
    #: Events the ledger held already (a resumed or repeated import): skipped, not judged.
    stored: int = 0
    duplicates: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    #: CPU seconds of the Python threads per stage (load-independent; chDB's own threads are
    #: not in them): `read` (the file, parsed and mapped), then `validate`, `judge` and `rows`
    #: (the judge's), `write` (the sink's write path) and `change_sets` (beside the next
    #: batch's judging); and `wait`, wall seconds the judging waited for the writes.
    stages: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def rate(self) -> float:
        """Events per second through the file (stored ones included) over the whole import."""
        return (self.events + self.stored) / self.seconds if self.seconds else 0.0


#: Told every `PROGRESS_RECORDS` records and after each batch: (records read, events judged).
Progress = Callable[[int, int], None]


class ImportBusy(Exception):
    """Another import holds the ledger's import lock (`one_import`); the message names it."""


def import_lock_path(settings: Settings) -> Path:
    """The lock file of the settings' ledger: beside an embedded chDB data dir, else in
    `data_dir`, named for the server's URL (without its password) and database."""
    url = settings.resolved_clickhouse_url
    embedded = chdb_path(url)
    if embedded is not None:
        return embedded.with_name(embedded.name + ".import.lock")
    ledger = f"{redact_url(url)} {settings.ledger_database}".encode()
    return settings.data_dir / f"import-{hashlib.sha256(ledger).hexdigest()[:16]}.lock"


@contextmanager
def one_import(settings: Settings, file: Path) -> Iterator[None]:
    """Hold the ledger's import lock while an import of `file` writes it, or raise
    `ImportBusy` naming the import that holds it (pid, host, file, since when). The lock is
    `flock`'s (`filelock`), so a killed import leaves none behind: it guards the imports run
    on one machine (several machines importing into one ClickHouse server must take turns).
    Who holds it is written beside it, since the lock file itself is opened by every
    contender."""
    from filelock import FileLock, Timeout

    path = import_lock_path(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    holder = path.with_name(path.name + ".holder")
    lock = FileLock(path, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        try:
            who = json.loads(holder.read_text(encoding="utf-8"))
            named = (
                f"pid {who['pid']} on {who['host']}, importing {who['file']} since {who['since']}"
            )
        except (OSError, ValueError, KeyError):
            named = "its holder is still starting"
        raise ImportBusy(
            f"another `shipledger import` is writing this ledger ({named}): one import at a "
            f"time per ledger, run this one when it has finished (lock {path})"
        ) from None
    try:
        holder.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "file": str(file.resolve()),
                    "since": datetime.now().astimezone().isoformat(timespec="seconds"),
                }
            ),
            encoding="utf-8",
        )
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def import_ledger(settings: Settings, policy: Policy, store: LedgerStore) -> Ledger:
    """The ledger an import writes, as the sink writes it (`sinks.regions.sink_ledgers`: its
    writer, change sets and pseudonyms), with the chain heads a killed run left unrecorded
    adopted first."""
    ledger = sink_ledgers(
        settings,
        policy,
        store,
        {},
        lambda each: LedgerWriter(
            each, policy, insert_timeout_s=settings.sink_insert_timeout_s, lane=IMPORT_LANE
        ),
    )[None]
    ledger.writer.record_adopted_heads(import_tables(), {IMPORT_LANE})
    return ledger


def import_tables() -> list[str]:
    """Every table an import may write."""
    families = [catalog().topic(f.topic).table for f in FAMILIES.values()]
    return [EVENTS, RECORDS, ALERTS, *(t.name for t in families if t is not None)]


def store_batch(ledger: Ledger, rows: dict[str, list[Row]], outcome: Outcome) -> None:
    """Write one chunk's rows through the sink's path: the records, alerts and other
    families' events, their change sets, then the deployment events last, so that a
    deployment event the ledger holds has everything it made stored (what a resume skips)."""
    started = time.thread_time()
    ledger.write({table: each for table, each in rows.items() if table != EVENTS})
    written = time.thread_time()
    ledger.compute_change_sets(rows.get(RECORDS, []), rows.get(SOURCE, []))
    computed = time.thread_time()
    ledger.write({EVENTS: rows.get(EVENTS, [])})
    outcome.stages["write"] += written - started + time.thread_time() - computed
    outcome.stages["change_sets"] += computed - written
    for table, table_rows in rows.items():
        outcome.rows[table] += len(table_rows)


def import_file(
    path: Path,
    fmt: Format,
    defaults: Defaults,
    judge: Judge,
    ledger: Ledger | None,
    progress: Progress | None = None,
    batch_events: int = BATCH_EVENTS,
) -> Outcome:
    """Import `path` (see the module docstring); `ledger` None: a dry run (parse and judge,
    write nothing). Python's collector runs as in the worker (`gc_tuning`): at CPython's
    default thresholds it took half of the reading's CPU (27 -> 12 µs an event)."""
    with fewer_collections():
        return asyncio.run(_import(path, fmt, defaults, judge, ledger, progress, batch_events))


@contextmanager
def _no_automatic_collection() -> Iterator[None]:
    """Judging a chunk makes no reference cycles, but its many live objects make Python's
    automatic collections scan them again and again: about 40% of the judging CPU
    (measured, 20,000-event chunks). They run again once the chunk is judged (the writer's
    cycles, made meanwhile, are collected then)."""
    automatic = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if automatic:
            gc.enable()


class LedgerLookups:
    """`Stored` of the ledger an import writes: its id check, and its deployments' latest
    records (`sinks.ledger.latest_records`)."""

    durable = True

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        _, held = store.query(f"SELECT 1 FROM {store.source(RECORDS)} LIMIT 1")  # noqa: S608
        self.fresh = not held

    def stored(self, keys: list[RowKey], times: list[datetime]) -> set[RowKey]:
        """Which deployment events of `keys` are stored (within the window of their
        `times`, as the writer checks them)."""
        spec = tables()[EVENTS]
        window = TimeWindow.of(spec.time_column, times) if spec.dedup_in_time_window else None
        return self._store.existing_ids(EVENTS, keys, window=window)

    def records(self, keys: Collection[DeploymentKey]) -> dict[DeploymentKey, DeploymentRecord]:
        """The latest record of each deployment of `keys` made by an event that is stored."""
        return {(r.tenant, r.deployment_id): r for r, _, _ in ledger_states(self._store, keys)}


async def _import(
    path: Path,
    fmt: Format,
    defaults: Defaults,
    judge: Judge,
    ledger: Ledger | None,
    progress: Progress | None,
    batch_events: int,
) -> Outcome:
    outcome = Outcome()
    started = time.perf_counter()
    lookups: Stored = NOTHING_STORED
    if ledger is not None:
        assert isinstance(ledger.store, LedgerStore), "an import writes a LedgerStore"
        lookups = LedgerLookups(ledger.store)
    chunk: list[Record] = []
    objects = line = 0
    # One chunk is written (ClickHouse works without the GIL) while the next is judged; never
    # more: memory stays bounded, chunks reach the ledger in the file's order, and every
    # chunk but the last one judged is stored when a chunk is judged (`Judge`'s state).
    writing: Future[None] | None = None

    def stored(rows: dict[str, list[Row]], reached: int, events: int) -> None:
        assert ledger is not None
        store_batch(ledger, rows, outcome)
        # What an operator (and the crash test) reads: how far the ledger holds the file.
        log.info("import_batch_stored", line=reached, events=events)

    def written() -> None:
        nonlocal writing
        if writing is not None:
            waited = time.perf_counter()
            writing.result()  # a failed write stops the import here
            writing = None
            outcome.stages["wait"] += time.perf_counter() - waited

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-write") as writer:

        def flush() -> None:
            nonlocal chunk, objects, writing
            with _no_automatic_collection():
                batch = judge.chunk(chunk, lookups)
            chunk, objects = [], 0
            outcome.events += batch.events
            outcome.alerts += batch.alerts
            outcome.stored += batch.stored
            outcome.duplicates += batch.duplicates
            outcome.problems.extend(batch.problems)
            written()
            if ledger is not None and batch.events:
                writing = writer.submit(stored, batch.rows, line, outcome.events)
            if progress is not None:
                progress(line, outcome.events + outcome.stored)

        # Reading a chunk makes no cycles either, and keeps what it reads: collections wait
        # for its end (~1 µs of the ~8 an event read took, measured on 50,000 events).
        automatic = gc.isenabled()
        gc.disable()
        try:
            mark = time.thread_time()
            async for record in event_objects(path, fmt, defaults):
                line = record.line
                chunk.append(record)
                objects += record.obj is not None
                if objects >= batch_events:
                    outcome.stages["read"] += time.thread_time() - mark
                    if automatic:
                        gc.enable()
                    flush()
                    gc.disable()
                    mark = time.thread_time()
                if progress is not None and line % PROGRESS_RECORDS == 0:
                    progress(line, outcome.events + outcome.stored)
            outcome.stages["read"] += time.thread_time() - mark
        finally:
            if automatic:
                gc.enable()
        flush()
        written()
    for stage, seconds in judge.seconds.items():
        outcome.stages[stage] += seconds
    outcome.seconds = time.perf_counter() - started
    return outcome

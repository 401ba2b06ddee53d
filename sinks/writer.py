"""`LedgerWriter`: the sink's write step. Per table: drop ids already stored or repeated →
stamp (retention and hash chain, `sinks.ledger.chain`) → insert; then record the new chain
heads. Retried on ClickHouse errors, bounded in time.

Idempotent by id: the existence check runs inside each write attempt, so a retried or a
partially applied insert is also safe. A crash mid-insert stores a prefix of every chain,
never a chain with a hole: ClickHouse commits one part per partition (tenant, month of the
table's time column) and a kill -9 between two parts of one block keeps some of them, so the
rows are stamped in month order and inserted one month per block, oldest first (a chain whose
rows span two months in one batch is otherwise cut anywhere, and `audit verify` reports the
missing `chain_seq`s as removed rows). Stamps are assigned once per batch (the first attempt),
so a retried insert keeps them and a partially applied one leaves no gap. The writer keeps the
head of each chain it writes in memory, loaded from the store when it first writes the chain's
lane (`sinks.ledger.chain`: rows name their lane, or get the writer's); `forget_heads` drops
them when another writer may have extended those lanes (a sink's partitions moved): one writer
per lane at a time.

Failures: a ClickHouse error is retried `write_attempts` times with doubling backoff, then
`SinkError`. A write that has not returned after `insert_timeout_s` is not retried (it may
still land; the replay that follows a restart is deduplicated): `SinkError` at once.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from shipledger import metrics as m
from shipledger.logging import get_logger
from shipledger.schemas.policy import Policy
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import LANE, LEGACY_LANE, ChainKey, Head, stamp
from shipledger.sinks.ledger.ddl import TableSpec, tables
from shipledger.sinks.ledger.store import StoredIds, TimeWindow
from shipledger.sinks.rows import Row, RowKey, dedupe, row_key

_T = TypeVar("_T")


class SinkError(RuntimeError):
    """The sink cannot go on (ClickHouse down after retries or hung, DLQ unreachable)."""


class RowStore(StoredIds, Protocol):
    """What the writer needs from a store (`LedgerStore` is the real one)."""

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows in one block."""
        ...

    def load_heads(self, table: str, lanes: Collection[str] | None = None) -> dict[ChainKey, Head]:
        """The head of every chain of `table` (of `lanes`)."""
        ...

    def recorded_heads(
        self, table: str, lanes: Collection[str] | None = None
    ) -> dict[ChainKey, Head]:
        """The last head `chain_heads` records for every chain of `table` (of `lanes`)."""
        ...

    def append_heads(self, heads: Mapping[ChainKey, Head]) -> None:
        """Record chain heads in `chain_heads`."""
        ...


class LedgerWriter:
    """Writes rows into the ledger as the sink does (see the module docstring); also how
    benchmarks and tests store rows. `policy` gives the rows' retention, and its version is
    stamped on the rows of tables whose messages do not name a policy (`TableSpec.stamped`).
    `lane`: the chain lane of rows that do not name their own (the sink's rows name their
    partition's)."""

    write_attempts = 5
    retry_backoff_s = 0.2

    def __init__(
        self,
        store: RowStore,
        policy: Policy,
        metrics: m.Metrics | None = None,
        *,
        insert_timeout_s: float | None = None,
        lane: str = LEGACY_LANE,
    ) -> None:
        self.store = store
        self.lane = lane
        self.retention = policy.retention
        self.policy_version = policy.full_version
        self.metrics: m.Metrics = metrics or m.RecordingMetrics()
        self.insert_timeout_s = insert_timeout_s
        #: By table: the heads of the lanes loaded (`_loaded`: (table, lane) pairs).
        self._heads: dict[str, dict[ChainKey, Head]] = {}
        self._loaded: set[tuple[str, str]] = set()
        self._moved: dict[ChainKey, Head] = {}
        self._log = get_logger("sink.writer")

    def now(self) -> datetime:
        """The time stamped as `ledger_at` (tests back-date it)."""
        return datetime.now(UTC)

    def write_rows(self, rows_by_table: Mapping[str, list[Row]]) -> None:
        """Dedup, stamp and insert each table's rows, then record the new chain heads."""
        for table, rows in rows_by_table.items():
            self._write(tables()[table], rows)
        if self._moved:
            moved = self._moved
            self._with_retries(ddl.CHAIN_HEADS, lambda: self.store.append_heads(moved))
            self._moved = {}

    def forget_heads(self) -> None:
        """Forget every chain head held: the next write of a lane loads its head from the
        store again (another writer may have extended it meanwhile)."""
        self._heads.clear()
        self._loaded.clear()

    def record_adopted_heads(
        self, names: Iterable[str], lanes: Collection[str] | None = None
    ) -> None:
        """Take the chains of tables `names` in `lanes` (default all): their heads are read
        from the ledger and held for the next writes, and those of rows a previous writer
        stored and died (kill -9) before recording in `chain_heads` are recorded: `load_heads`
        continues the chains from them anyway, and a chain that gets no new row would
        otherwise end beyond its recorded head (`audit verify` reports that as an out-of-band
        insert). Logged, so the adoption is visible."""
        for table in sorted(set(names)):
            adopted = self._with_retries(
                table, functools.partial(self._unrecorded_heads, table, lanes)
            )
            if adopted:
                self._with_retries(
                    ddl.CHAIN_HEADS, functools.partial(self.store.append_heads, adopted)
                )
                self._log.warning(
                    "chain heads adopted",
                    table=table,
                    chains=[f"{k[1]}/{k[2]}/{k[3]}@{h.seq}" for k, h in sorted(adopted.items())],
                    reason="rows stored by a flush that died before recording its chain heads",
                )

    def _unrecorded_heads(self, table: str, lanes: Collection[str] | None) -> dict[ChainKey, Head]:
        recorded = self.store.recorded_heads(table, lanes)
        heads = self.store.load_heads(table, lanes)
        if lanes is not None:  # held: the first write of these lanes need not read them again
            self._heads.setdefault(table, {}).update(heads)
            self._loaded.update((table, lane) for lane in lanes)
        return {
            key: head
            for key, head in heads.items()
            if key not in recorded or recorded[key].seq < head.seq
        }

    def _write(self, spec: TableSpec, rows: list[Row]) -> None:
        # The first row of each (tenant, id): the keys are made once, for the id check too.
        first: dict[RowKey, Row] = {}
        for row in rows:
            first.setdefault(row_key(row, spec.id_column), row)
        repeated = len(rows) - len(first)
        unique = _month_order(first.values(), spec.time_column)
        keys = list(first)
        stamped: list[dict[ChainKey, Head]] = []
        started = time.monotonic()
        inserted, already = self._with_retries(
            spec.name, lambda: self._write_once(spec, unique, keys, stamped)
        )
        self.metrics.timing(
            m.INSERT_MS, (time.monotonic() - started) * 1000, tags={"table": spec.name}
        )
        if stamped:
            self._heads[spec.name].update(stamped[0])
            self._moved.update(stamped[0])
        skipped = repeated + already
        self.metrics.increment(m.ROWS_INSERTED, inserted, tags={"table": spec.name})
        if skipped:
            self.metrics.increment(m.DUPLICATES_SKIPPED, skipped, tags={"table": spec.name})

    def _write_once(
        self,
        spec: TableSpec,
        unique: list[Row],
        keys: list[RowKey],
        stamped: list[dict[ChainKey, Head]],
    ) -> tuple[int, int]:
        """Drop ids already stored, stamp (first time only), insert the rest:
        (inserted, skipped); `keys` are those of `unique`. Safe to repeat: a retry keeps the
        first attempt's stamps."""
        window = (
            TimeWindow.of(spec.time_column, (row[spec.time_column] for row in unique))
            if spec.dedup_in_time_window
            else None
        )
        stored = self.store.existing_ids(spec.name, keys, window=window)
        # `unique` repeats no id already: with none stored (the usual case), all are fresh.
        fresh, already = dedupe(unique, spec.id_column, stored) if stored else (unique, 0)
        if not stamped:
            heads = self._heads_of(spec.name, fresh)
            version = self.policy_version if ddl.POLICY_VERSION.name in spec.stamped else None
            stamped.append(stamp(spec.name, fresh, heads, self.retention, self.now(), version))
        for block in _month_blocks(fresh, spec.time_column):
            self.store.insert(spec.name, block)
        return len(fresh), already

    def _heads_of(self, table: str, rows: Sequence[Row]) -> dict[ChainKey, Head]:
        """The held heads of `table`, those of the lanes of `rows` loaded first if not held
        (each row without a lane gets the writer's)."""
        lanes = {str(row.setdefault(LANE, self.lane)) for row in rows}
        missing = {lane for lane in lanes if (table, lane) not in self._loaded}
        heads = self._heads.setdefault(table, {})
        if missing:
            heads.update(self.store.load_heads(table, missing))
            self._loaded.update((table, lane) for lane in missing)
        return heads

    def _with_retries(self, table: str, write: Callable[[], _T]) -> _T:
        """`write()`, retried with doubling backoff; SinkError after `write_attempts`, or at
        once when an attempt outlasts `insert_timeout_s`."""
        delay = self.retry_backoff_s
        attempt = 1
        while True:
            try:
                return self._bounded(table, write)
            except SinkError:
                raise
            except Exception as exc:
                if attempt >= self.write_attempts:
                    raise SinkError(
                        f"ClickHouse write to {table} failed {attempt} times: {exc}"
                    ) from exc
                self._log.warning(
                    "ClickHouse write failed, retrying",
                    table=table,
                    attempt=attempt,
                    retry_in_s=delay,
                    error=str(exc),
                )
                self.metrics.increment(m.WRITE_RETRIES, tags={"table": table})
                time.sleep(delay)
                delay *= 2
                attempt += 1

    def _bounded(self, table: str, write: Callable[[], _T]) -> _T:
        """`write()` in a daemon thread, waited for at most `insert_timeout_s` (a hung
        ClickHouse call cannot be cancelled: it is left behind, and the sink stops)."""
        if self.insert_timeout_s is None:
            return write()
        outcome: list[_T] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                outcome.append(write())
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=run, name=f"ledger-write-{table}", daemon=True).start()
        if not done.wait(self.insert_timeout_s):
            raise SinkError(
                f"ClickHouse write to {table} did not finish in {self.insert_timeout_s:g}s: "
                "stopping without committing (the batch is read again after a restart)"
            )
        if failure:
            raise failure[0]
        return outcome[0]


def _months(rows: Iterable[Row], column: str) -> dict[tuple[int, int], list[Row]]:
    """`rows` by the month of their `column` in UTC (with the tenant, their partition:
    `ddl.TableSpec.create_sql`), each month's in their order, in one pass."""
    months: dict[tuple[int, int], list[Row]] = {}
    for row in rows:
        at: datetime = row[column]
        if at.tzinfo is not UTC:
            at = at.astimezone(UTC)
        months.setdefault((at.year, at.month), []).append(row)
    return months


def _month_order(rows: Iterable[Row], column: str) -> list[Row]:
    """`rows` sorted by the month of their `column` (stable: in their order within a month)."""
    months = _months(rows, column)
    return [row for month in sorted(months) for row in months[month]]


def _month_blocks(rows: Iterable[Row], column: str) -> list[list[Row]]:
    """The insert blocks of `rows`: one per month, oldest first."""
    months = _months(rows, column)
    return [months[month] for month in sorted(months)]

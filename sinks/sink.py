"""`ClickHouseSink`: deployment events, records, alerts, the other families' events and the dead
letters from Kafka into the ClickHouse ledger.

The chain, top to bottom (`run`): consume a batch of messages → decode (Avro, Confluent
framing) → build the table row (`sinks.rows`, pure) → accumulate per table → when the batch
holds `sink_batch_size` rows or is `sink_batch_ms` old: drop ids already stored or repeated,
insert each table's rows in one block → commit the next offset of every message in the batch.

Guarantee: **at-least-once delivery, idempotent by id = exactly-once rows for analysts.**
Offsets are committed only after every row of the batch is in ClickHouse (and every poison
message of it is acknowledged by the DLQ topic), so a crash or a failed commit replays
messages, never loses them. Replays cost nothing visible: a row whose id (`event_id`,
`record_id`, `alert_id`) is already stored, or repeated within the batch, is skipped.
The check runs inside each write attempt, so a retried or partially applied insert is
also safe. Caveat: two sink instances writing the same id at the same instant (possible only
during a rebalance, when a partition briefly has two readers) can both insert it; the
processors' deterministic ids let analysts `LIMIT 1 BY` the id if that ever matters.

Tamper evidence and retention (`sinks.chain`): each row is stamped, just before its insert,
with its retention class (policy `retention:`, `Settings.policy_file`), `retain_until` (the
ClickHouse TTL deletes it after that) and its place in the hash chain of (table, tenant,
class); after the flush's inserts the new chain heads are appended to `chain_heads`, then
offsets are committed. The sink is the ledger's only writer: run ONE sink per ledger (its
chain heads live in its memory). Stamps are assigned once per batch, so a retried insert
keeps them and a partially applied one leaves no gap.

Grants: the sink needs INSERT and SELECT (the id check, chain heads) on the ledger tables and
`chain_heads`, nothing else (`shipledger audit grants`); `shipledger sink --no-ensure-schema`
skips the migrations where schema changes are someone else's job.

Failures:
- A message that does not decode, or does not fit its table, is *poison*: its original bytes
  and key go to the DLQ topic with headers `reason`, `source_topic`, `source_partition`,
  `source_offset`, `stage=sink`, and the sink goes on. If more than `dlq_max_ratio` of a
  batch (and at least `dlq_min_count` messages) is poison, the sink stops with `SinkError`:
  a bad producer deploy must page someone, not drain a topic into the DLQ.
- A ClickHouse error is *infrastructure*: retried `write_attempts` times with doubling
  backoff, then `SinkError`. Nothing is committed and nothing goes to the DLQ.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from shipledger import metrics as m
from shipledger.logging import get_logger
from shipledger.schemas.letters import REPLAYED_FROM, header_text, letter_headers
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import DecodeError
from shipledger.schemas.topics import Topics
from shipledger.schemas.validation import validation_reason
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import ChainKey, Head, stamp
from shipledger.sinks.ledger.ddl import TableSpec, tables
from shipledger.sinks.ledger.store import TimeWindow
from shipledger.sinks.routes import routes_from_catalog
from shipledger.sinks.rows import KafkaMeta, Row, RowError, RowKey, dedupe, row_key

_DLQ_FLUSH_TIMEOUT_S = 10.0
_POLL_TIMEOUT_S = 0.1
_T = TypeVar("_T")


class SinkError(RuntimeError):
    """The sink cannot go on (ClickHouse down after retries, DLQ unreachable, poison flood)."""


class RowStore(Protocol):
    """What the sink needs from a store (`LedgerStore` is the real one)."""

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows in one block."""
        ...

    def existing_ids(
        self,
        table: str,
        id_column: str,
        keys: Iterable[RowKey],
        *,
        window: TimeWindow | None = None,
    ) -> set[RowKey]:
        """Which (tenant, id) pairs are already stored."""
        ...

    def load_heads(self, table: str) -> dict[ChainKey, Head]:
        """The head of every chain of `table`."""
        ...

    def recorded_heads(self, table: str) -> dict[ChainKey, Head]:
        """The last head `chain_heads` records for every chain of `table`."""
        ...

    def append_heads(self, heads: Mapping[ChainKey, Head]) -> None:
        """Record chain heads in `chain_heads`."""
        ...


def _reject_reason(exc: DecodeError | RowError | ValidationError) -> tuple[str, str | None]:
    """`field: reason` (and the field) for a rejected message's dead-letter headers."""
    if isinstance(exc, ValidationError):
        return validation_reason(exc)
    if isinstance(exc, DecodeError):
        return exc.reason, exc.field
    return str(exc), None


@dataclass(frozen=True)
class SinkStats:
    """Counters since the sink started (a snapshot)."""

    messages: int
    rows_inserted: dict[str, int]
    duplicates_skipped: dict[str, int]
    dead_lettered: int
    skipped_invalid: int
    flushes: int
    pending_rows: int
    last_flush_at: float | None
    last_flush_ms: float | None

    @property
    def total_rows(self) -> int:
        """Rows inserted into all tables."""
        return sum(self.rows_inserted.values())


@dataclass
class _Batch:
    """Rows waiting for the next flush and the offsets they will let us commit."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    dead: int = 0
    row_count: int = 0
    opened_at: float | None = None

    def seen(self, topic: str, partition: int, offset: int) -> None:
        if self.opened_at is None:
            self.opened_at = time.monotonic()
        self.messages += 1
        key = (topic, partition)
        self.offsets[key] = max(self.offsets.get(key, -1), offset + 1)

    def add(self, table: str, row: Row) -> None:
        self.rows.setdefault(table, []).append(row)
        self.row_count += 1

    def age_s(self) -> float:
        return 0.0 if self.opened_at is None else time.monotonic() - self.opened_at


class ClickHouseSink:
    """Consumes the raw, records and alerts topics into the ledger. See the module docstring."""

    write_attempts = 5
    retry_backoff_s = 0.2
    dlq_max_ratio = 0.5
    dlq_min_count = 100

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        store: RowStore,
        metrics: m.Metrics | None = None,
        *,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store = store
        self.metrics: m.Metrics = metrics or m.NoopMetrics()
        self.group_id = group_id or f"{settings.topic_prefix}sink"
        self.topics = Topics.from_settings(settings)
        self.routes = routes_from_catalog(self.topics)
        self.retention = load_policy(settings.policy_file).retention
        self._heads: dict[str, dict[ChainKey, Head]] = {}
        self._moved: dict[ChainKey, Head] = {}
        self._log = get_logger("sink", group=self.group_id)
        self._batch = _Batch()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._dlq_failures: list[str] = []
        self._stats_lock = threading.Lock()
        self._messages = 0
        self._inserted = {route.table.name: 0 for route in self.routes.values()}
        self._skipped = {route.table.name: 0 for route in self.routes.values()}
        self._dead = 0
        self._invalid = 0
        self._flushes = 0
        self._last_flush_at: float | None = None
        self._last_flush_ms: float | None = None

    # --- clients (override in tests to drive the chain with hand-built messages) --------
    def consumer_config(self) -> dict[str, Any]:
        """librdkafka consumer settings: manual commits, short fetch wait and session."""
        session_ms = int(self.settings.session_timeout_s * 1000)
        return {
            **self.settings.kafka_common(self.bootstrap),
            "group.id": self.group_id,
            "client.id": "shipledger-sink",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": self.settings.fetch_wait_ms,
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 3),
        }

    def make_consumer(self) -> Consumer:
        """A new consumer in the sink's group."""
        return Consumer(self.consumer_config())

    def make_producer(self) -> Producer:
        """The DLQ producer."""
        return Producer(self.settings.kafka_producer(self.bootstrap))

    def now(self) -> datetime:
        """The time stamped as `ledger_at` (tests back-date it)."""
        return datetime.now(UTC)

    # --- the loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; then flush, commit and close. Raises SinkError."""
        consumer = self._consumer = self.make_consumer()
        producer = self._producer = self.make_producer()
        self._log.info("sink starting", topics=sorted(self.routes), bootstrap=self.bootstrap)
        self._record_adopted_heads()
        try:
            consumer.subscribe(list(self.routes), on_revoke=self._on_revoke)
            while not stop.is_set():
                room = max(1, self.settings.sink_batch_size - self._batch.row_count)
                messages = consumer.consume(num_messages=room, timeout=self._poll_timeout())
                self._process(messages)
                producer.poll(0)
                if self._due():
                    self.flush()
            self.flush()
            self._log.info("sink stopped", **self._stats_fields())
        except BaseException:
            # Nothing of a failed batch may be committed, not even by the revoke in close().
            self._batch = _Batch()
            raise
        finally:
            consumer.close()
            producer.flush(_DLQ_FLUSH_TIMEOUT_S)
            self._consumer = self._producer = None

    def _record_adopted_heads(self) -> None:
        """Record the heads of rows a previous sink stored and died (kill -9) before recording
        in `chain_heads`: `load_heads` continues the chains from them anyway, and a chain that
        gets no new row would otherwise end beyond its recorded head (`audit verify` reports
        that as an out-of-band insert). Logged, so the adoption is visible."""
        for table in sorted({route.table.name for route in self.routes.values()}):
            adopted = self._with_retries(table, functools.partial(self._unrecorded_heads, table))
            if adopted:
                self._with_retries(
                    ddl.CHAIN_HEADS, functools.partial(self.store.append_heads, adopted)
                )
                self._log.warning(
                    "chain heads adopted",
                    table=table,
                    chains=[f"{k[1]}/{k[2]}@{h.seq}" for k, h in sorted(adopted.items())],
                    reason="rows stored by a flush that died before recording its chain heads",
                )

    def _unrecorded_heads(self, table: str) -> dict[ChainKey, Head]:
        recorded = self.store.recorded_heads(table)
        return {
            key: head
            for key, head in self.store.load_heads(table).items()
            if key not in recorded or recorded[key].seq < head.seq
        }

    def _poll_timeout(self) -> float:
        if self._batch.opened_at is None:
            return _POLL_TIMEOUT_S
        left = self.settings.sink_batch_ms / 1000 - self._batch.age_s()
        return min(_POLL_TIMEOUT_S, max(0.0, left))

    def _due(self) -> bool:
        batch = self._batch
        if batch.messages == 0:
            return False
        return (
            batch.row_count >= self.settings.sink_batch_size
            or batch.age_s() * 1000 >= self.settings.sink_batch_ms
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we hold while the partitions are still ours.
        self._log.info("partitions revoked", partitions=len(partitions))
        self.flush()

    # --- decode and route ---------------------------------------------------------------
    def _process(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise SinkError(f"fatal consumer error: {err}")
                self._log.warning("consumer error", error=str(err))
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            route = self.routes.get(topic)
            if route is None:  # not subscribed: cannot happen, never crash on it
                continue
            self._batch.seen(topic, partition, offset)
            ts_type, ts = msg.timestamp()
            meta = KafkaMeta(topic, partition, offset, ts if ts_type else None)
            try:
                decoded = route.decode(msg)
                if route.validate is not None:
                    route.validate(decoded)
                row = route.to_row(decoded, meta)
            except (DecodeError, RowError, ValidationError) as exc:
                if route.owns_rejects:
                    self._dead_letter(msg, meta, *_reject_reason(exc))
                else:
                    self._invalid += 1
                continue
            self._batch.add(route.table.name, row)
        with self._stats_lock:
            self._messages += len(messages)
        if messages:
            self.metrics.increment(m.MESSAGES, len(messages))

    def _dead_letter(
        self, msg: Message, meta: KafkaMeta, reason: str, field: str | None = None
    ) -> None:
        self._log.warning(
            "dead-lettering message",
            reason=reason,
            field=field,
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
        )
        assert self._producer is not None
        headers = letter_headers(
            reason=reason,
            field=field,
            source_topic=meta.topic,
            source_partition=meta.partition,
            source_offset=meta.offset,
            stage="sink",
            replayed_from=header_text(msg.headers()).get(REPLAYED_FROM, ""),
        )
        while True:
            try:
                self._producer.produce(
                    self.topics.dlq,
                    value=msg.value(),
                    key=msg.key(),
                    headers=headers,
                    on_delivery=self._on_dlq_delivery,
                )
                break
            except BufferError:  # local queue full: let it drain
                self._producer.poll(0.1)
        self._batch.dead += 1
        with self._stats_lock:
            self._dead += 1
        self.metrics.increment(m.DEAD_LETTERED, tags={"topic": meta.topic})

    def _on_dlq_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._dlq_failures.append(str(err))

    # --- flush: dedup, insert, then commit ----------------------------------------------
    def flush(self) -> None:
        """Write the pending batch, then commit its offsets. No-op when nothing is pending."""
        batch = self._batch
        if batch.messages == 0:
            return
        started = time.perf_counter()
        if batch.dead >= self.dlq_min_count and batch.dead > self.dlq_max_ratio * batch.messages:
            raise SinkError(
                f"{batch.dead} of {batch.messages} messages in one batch were poison: stopping "
                "instead of draining the topics into the DLQ (see the DLQ topic's reasons)"
            )
        self.write_rows(batch.rows)
        if batch.dead:
            self._await_dlq()
        self._commit(batch.offsets)
        self._batch = _Batch()
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._stats_lock:
            self._flushes += 1
            self._last_flush_at = time.time()
            self._last_flush_ms = elapsed_ms
        self.metrics.timing(m.FLUSH_MS, elapsed_ms)
        self._log.debug(
            "flushed", rows=batch.row_count, messages=batch.messages, ms=round(elapsed_ms, 1)
        )

    def write_rows(self, rows_by_table: Mapping[str, list[Row]]) -> None:
        """Dedup, stamp and insert each table's rows, then record the new chain heads. The
        flush's write step; also how benchmarks and tests store rows as the sink does."""
        for table, rows in rows_by_table.items():
            self._write(tables()[table], rows)
        if self._moved:
            moved = self._moved
            self._with_retries(ddl.CHAIN_HEADS, lambda: self.store.append_heads(moved))
            self._moved = {}

    def _write(self, spec: TableSpec, rows: list[Row]) -> None:
        unique, repeated = dedupe(rows, spec.id_column, set())
        stamped: list[dict[ChainKey, Head]] = []
        inserted, already = self._with_retries(
            spec.name, lambda: self._write_once(spec, unique, stamped)
        )
        if stamped:
            self._heads[spec.name].update(stamped[0])
            self._moved.update(stamped[0])
        skipped = repeated + already
        with self._stats_lock:
            self._inserted[spec.name] += inserted
            self._skipped[spec.name] += skipped
        self.metrics.increment(m.ROWS_INSERTED, inserted, tags={"table": spec.name})
        if skipped:
            self.metrics.increment(m.DUPLICATES_SKIPPED, skipped, tags={"table": spec.name})

    def _with_retries(self, table: str, write: Callable[[], _T]) -> _T:
        """`write()`, retried with doubling backoff; SinkError after `write_attempts`."""
        delay = self.retry_backoff_s
        attempt = 1
        while True:
            try:
                return write()
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

    def _write_once(
        self, spec: TableSpec, unique: list[Row], stamped: list[dict[ChainKey, Head]]
    ) -> tuple[int, int]:
        """Drop ids already stored, stamp (first time only), insert the rest:
        (inserted, skipped). Safe to repeat: a retry keeps the first attempt's stamps."""
        keys = [row_key(row, spec.id_column) for row in unique]
        window = (
            TimeWindow.of(spec.time_column, (row[spec.time_column] for row in unique))
            if spec.dedup_in_time_window
            else None
        )
        stored = self.store.existing_ids(spec.name, spec.id_column, keys, window=window)
        fresh, already = dedupe(unique, spec.id_column, stored)
        if not stamped:
            if spec.name not in self._heads:
                self._heads[spec.name] = self.store.load_heads(spec.name)
            heads = self._heads[spec.name]
            stamped.append(stamp(spec.name, fresh, heads, self.retention, self.now()))
        self.store.insert(spec.name, fresh)
        return len(fresh), already

    def _await_dlq(self) -> None:
        assert self._producer is not None
        left = self._producer.flush(_DLQ_FLUSH_TIMEOUT_S)
        if left or self._dlq_failures:
            failures, self._dlq_failures = self._dlq_failures, []
            raise SinkError(
                f"DLQ topic {self.topics.dlq} did not acknowledge poison messages "
                f"({left} pending, errors: {failures[:3]}): not committing"
            )

    def _commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        assert self._consumer is not None
        positions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            self._consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            # Rows are stored: a lost commit only means a replay, which dedup absorbs.
            self._log.warning("offset commit failed; batch will be replayed", error=str(exc))

    # --- progress -----------------------------------------------------------------------
    def stats(self) -> SinkStats:
        """Counters since start (thread-safe snapshot)."""
        with self._stats_lock:
            return SinkStats(
                messages=self._messages,
                rows_inserted=dict(self._inserted),
                duplicates_skipped=dict(self._skipped),
                dead_lettered=self._dead,
                skipped_invalid=self._invalid,
                flushes=self._flushes,
                pending_rows=self._batch.row_count,
                last_flush_at=self._last_flush_at,
                last_flush_ms=self._last_flush_ms,
            )

    def _stats_fields(self) -> dict[str, Any]:
        s = self.stats()
        return {
            "messages": s.messages,
            "rows_inserted": s.rows_inserted,
            "duplicates_skipped": s.duplicates_skipped,
            "dead_lettered": s.dead_lettered,
            "skipped_invalid": s.skipped_invalid,
            "flushes": s.flushes,
        }

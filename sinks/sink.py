"""`ClickHouseSink`: deployment events, records, alerts, the other families' events and the dead
letters from Kafka into the ClickHouse ledger.

A chain of small steps, commit last (`run`): consume a batch of messages → route each
(`sinks.route`: decode, validate, build the row; or poison) → accumulate per table; poison
goes to the DLQ topic (`schemas.letters.DeadLetter`, counted against the DLQ limit) → when
the batch holds `sink_batch_size` rows or is `sink_batch_ms` old: write (`sinks.writer`:
dedup → stamp → insert → chain heads) → wait for the DLQ's acknowledgements → commit the next
offset of every message in the batch.

Guarantee: **at-least-once delivery, idempotent by id = exactly-once rows for analysts.**
Offsets are committed only after every row of the batch is in ClickHouse (and every poison
message of it is acknowledged by the DLQ topic), so a crash or a failed commit replays
messages, never loses them. Replays cost nothing visible: a row whose id (`event_id`,
`record_id`, `alert_id`) is already stored, or repeated within the batch, is skipped (see
`sinks.writer`).

Scale-out: run as many sinks as partitions, in one consumer group. A row is chained in the
lane of the partition it was read from (`sinks.ledger.chain`), and a partition has one sink
at a time: on revocation the sink flushes and commits before giving it up; on assignment it
reads its new lanes' heads from the ledger (never from memory of an earlier assignment) and
adopts the heads of rows a killed sink stored without recording them; on loss (its session
expired, another sink reads them already) it drops its batch unwritten and uncommitted. A
replayed message lands in the lane it was first stored in, where the id check skips it.
Caveat: a sink stalled inside a flush past `max.poll.interval.ms` may finish writing after
its partitions moved: the lanes fork (`audit verify` says so), nothing is lost.

Tamper evidence and retention (`sinks.ledger.chain`): each row is stamped, just before its
insert, with its retention class (the `retention:` of the policy the entry point loaded and
passed in), `retain_until` (the ClickHouse TTL deletes it after that) and its place in the
hash chain of (table, tenant, class, lane); after the flush's inserts the new chain heads are
appended to `chain_heads`, then offsets are committed.

Regions (`sinks.regions`, docs/sovereignty.md): with regional ledgers, each row goes to the
ledgers of its tenant's regions (the default ledger when it names none), each with its own
writer and chains; a tenant whose region has no ledger is poison (`field=tenant`).

Grants: the sink needs INSERT and SELECT (the id check, chain heads) on the ledger tables and
`chain_heads`, nothing else (`shipledger audit grants`); `shipledger sink --no-ensure-schema`
skips the migrations where schema changes are someone else's job.

Failures:
- A message that does not decode, or does not fit its table, is *poison*: its original bytes
  and key go to the DLQ topic with the headers of its `DeadLetter` (`stage=sink`), and the
  sink goes on. Past the DLQ limit (`shipledger.dlq_limit`, `SHIPLEDGER_DLQ_*`) the sink
  stops with `DlqLimitExceeded` instead, committing nothing more: a bad producer deploy must
  page someone, not drain a topic into the DLQ (`shipledger sink` exits with code 65).
- A ClickHouse error is *infrastructure*: retried, then `SinkError`; a write that hangs past
  `sink_insert_timeout_s` is `SinkError` at once (`sinks.writer`). Nothing is committed and
  nothing goes to the DLQ.

Progress (`stats()`) is read from the sink's metrics recorder, the same Prometheus registry
its `/metrics` serves (`shipledger.metrics`): one count per thing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from shipledger import metrics as m
from shipledger.clients import SINK_ROLE, KafkaClients
from shipledger.dlq_limit import DlqLimit, DlqLimitState
from shipledger.fields import picked
from shipledger.kafka import DeliveryError, KafkaProducer
from shipledger.lag import group_lag
from shipledger.logging import get_logger
from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.policy import Policy
from shipledger.schemas.residency import Region
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import LANE, LEGACY_LANE, partition_lane
from shipledger.sinks.regions import Ledger, Placement, Unplaced, sink_ledgers
from shipledger.sinks.route import Poison, Route, kafka_meta, route_message, routes_from_catalog
from shipledger.sinks.rows import KafkaMeta, Row
from shipledger.sinks.writer import LedgerWriter, RowStore, SinkError

__all__ = ["ClickHouseSink", "SinkError", "SinkStats"]

_DLQ_FLUSH_TIMEOUT_S = 10.0
_POLL_TIMEOUT_S = 0.1


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

    #: By ledger (`sinks.regions`: None is the default one), then by table.
    rows: dict[Region, dict[str, list[Row]]] = field(default_factory=dict)
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

    def add(self, regions: tuple[Region, ...], table: str, row: Row) -> None:
        for region in regions:
            self.rows.setdefault(region, {}).setdefault(table, []).append(row)
        self.row_count += 1

    def age_s(self) -> float:
        return 0.0 if self.opened_at is None else time.monotonic() - self.opened_at


class ClickHouseSink(KafkaClients):
    """Consumes the ledger's topics into ClickHouse. See the module docstring.

    `policy` is the one the entry point loaded (its retention stamps the rows); `metrics` is
    the recorder it counts into (default: one of its own)."""

    role = SINK_ROLE

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        store: RowStore,
        metrics: m.RecordingMetrics | None = None,
        *,
        policy: Policy,
        group_id: str | None = None,
        regional: Mapping[str, RowStore] | None = None,
    ) -> None:
        super().__init__(settings, bootstrap, group_id)
        self.store = store
        self.metrics = metrics or m.RecordingMetrics()
        self.topics = Topics.from_settings(settings)
        self.routes = routes_from_catalog(self.topics)
        #: Every ledger written: `store` (the default one) and the `regional` ones, each
        #: with its writer and its change sets of terminal deployments, computed after each
        #: flush (a store that cannot query, as the unit tests' in-memory one, has none).
        self.ledgers = sink_ledgers(
            settings,
            policy,
            store,
            regional or {},
            lambda each: LedgerWriter(
                each, policy, self.metrics, insert_timeout_s=settings.sink_insert_timeout_s
            ),
        )
        self.placement = Placement(policy, regional or {})
        self.writer = self.ledgers[None].writer
        self.limit = DlqLimitState(DlqLimit.from_settings(settings), "sink")
        self._log = get_logger("sink", group=self.group_id)
        self._batch = _Batch()
        self._consumer: Consumer | None = None
        self._producer: KafkaProducer | None = None

    def consumer_config(self) -> dict[str, Any]:
        """The loop's consumer settings, fetching less often: the sink holds rows for
        `sink_batch_ms` anyway (`Settings.sink_fetch_wait_ms`, `sink_fetch_min_bytes`)."""
        return {
            **super().consumer_config(),
            "fetch.wait.max.ms": self.settings.sink_fetch_wait_ms,
            "fetch.min.bytes": self.settings.sink_fetch_min_bytes,
        }

    # --- the loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; then flush, commit and close. Raises SinkError, or
        DlqLimitExceeded past the DLQ limit."""
        consumer = self._consumer = self.make_consumer()
        producer = self._producer = self.make_producer()
        self._log.info(
            "sink starting",
            topics=sorted(self.routes),
            bootstrap=self.bootstrap,
            policy_version=self.writer.policy_version,
        )
        for ledger in self.ledgers.values():
            ledger.writer.record_adopted_heads(
                (route.table.name for route in self.routes.values()), {LEGACY_LANE}
            )
        try:
            consumer.subscribe(
                list(self.routes),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The lanes of these partitions may have been extended by another sink since we last
        # held them: their heads are read from the ledger again, never remembered, and those
        # of a sink killed between its insert and its chain_heads append are adopted.
        self._log.info("partitions assigned", partitions=len(partitions))
        lanes: dict[str, set[str]] = {}
        for each in partitions:
            route = self.routes.get(each.topic)
            if route is not None:
                lanes.setdefault(route.table.name, set()).add(partition_lane(each.partition))
        self._forget_heads()
        for ledger in self.ledgers.values():
            for table, table_lanes in sorted(lanes.items()):
                ledger.writer.record_adopted_heads([table], table_lanes)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we hold while the partitions are still ours.
        self._log.info("partitions revoked", partitions=len(partitions))
        self.flush()
        self._forget_heads()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another sink reads them already (our session expired): writing what we hold would
        # fork its lanes. It reads the same messages again from the last commit.
        self._log.warning("partitions lost", partitions=len(partitions))
        self._batch = _Batch()
        self._forget_heads()

    def _forget_heads(self) -> None:
        for ledger in self.ledgers.values():
            ledger.writer.forget_heads()

    # --- route: rows into the batch, poison to the DLQ ----------------------------------
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
            route = self.routes.get(msg.topic() or "")
            if route is None:  # not subscribed: cannot happen, never crash on it
                continue
            meta = kafka_meta(msg)
            self._batch.seen(meta.topic, meta.partition, meta.offset)
            placed = self._placed(route, route_message(route, msg, meta))
            if not isinstance(placed, Poison):
                self.limit.valid()
                placed[1][LANE] = partition_lane(meta.partition)
                self._batch.add(placed[0], route.table.name, placed[1])
            elif placed.owned:
                self.limit.invalid()  # past the limit: stop before this letter
                self._dead_letter(msg, meta, placed)
            else:
                self.metrics.increment(m.SKIPPED_INVALID)
        for topic, count in Counter(msg.topic() or "" for msg in messages).items():
            self.metrics.increment(m.MESSAGES, count, tags={"topic": topic})

    def _placed(
        self, route: Route, routed: Row | Poison
    ) -> tuple[tuple[Region, ...], Row] | Poison:
        """The row and the ledgers that store it (`sinks.regions`), or why it cannot be
        stored: a tenant whose region has no ledger is the sink's poison whatever its topic,
        except on the DLQ topic itself (a letter about a letter would loop: skipped)."""
        if isinstance(routed, Poison):
            return routed
        where = self.placement.ledgers_of(str(routed["tenant"]))
        if isinstance(where, Unplaced):
            return Poison(where.reason, "tenant", owned=route.topic != self.topics.dlq)
        return where, routed

    def _dead_letter(self, msg: Message, meta: KafkaMeta, poison: Poison) -> None:
        self._log.warning(
            "dead-lettering message",
            **picked(poison, "reason", "field"),
            **picked(meta, "topic", "partition", "offset"),
        )
        assert self._producer is not None
        letter = DeadLetter.rejecting(
            "sink",
            poison.reason,
            poison.field,
            topic=meta.topic,
            partition=meta.partition,
            offset=meta.offset,
            headers=msg.headers(),
        )
        self._producer.produce(self.topics.dlq, msg.value(), msg.key(), headers=letter.headers())
        self._batch.dead += 1
        self.metrics.increment(m.DEAD_LETTERED, tags={"topic": meta.topic})

    # --- flush: write, then the DLQ's acks, then commit ---------------------------------
    def flush(self) -> None:
        """Write the pending batch, then commit its offsets. No-op when nothing is pending."""
        batch = self._batch
        if batch.messages == 0:
            return
        started = time.perf_counter()
        for region, rows in batch.rows.items():
            ledger = self.ledgers[region]
            ledger.write(rows)
            self._change_sets(ledger, rows.get(ddl.RECORDS, []), rows.get(ddl.SOURCE, []))
        if batch.dead:
            self._await_dlq()
        self._commit(batch.offsets)
        self._batch = _Batch()
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.metrics.timing(m.FLUSH_MS, elapsed_ms)
        self._log.debug(
            "flushed", rows=batch.row_count, messages=batch.messages, ms=round(elapsed_ms, 1)
        )

    def _change_sets(self, ledger: Ledger, records: Sequence[Row], sources: Sequence[Row]) -> None:
        # After the records are stored (the previous deployment may be in this very batch),
        # before the commit: a crash replays the batch, and the sets are computed again.
        started = time.perf_counter()
        count = ledger.compute_change_sets(records, sources)
        if count is None:
            return
        self.metrics.timing(m.CHANGE_SETS_MS, (time.perf_counter() - started) * 1000)
        self._log.debug("change sets computed", deployments=count)

    def _await_dlq(self) -> None:
        assert self._producer is not None
        try:
            self._producer.flush_or_raise(
                _DLQ_FLUSH_TIMEOUT_S, f"DLQ topic {self.topics.dlq}, poison messages"
            )
        except DeliveryError as exc:
            raise SinkError(f"{exc}: not committing") from exc

    def _commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        assert self._consumer is not None
        positions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            self._consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            # Rows are stored: a lost commit only means a replay, which dedup absorbs.
            self._log.warning("offset commit failed; batch will be replayed", error=str(exc))

    # --- progress -----------------------------------------------------------------------
    def serve_metrics(self) -> m.Endpoint | None:
        """Serve the sink's metrics, and its group's lag read at each scrape, as `/metrics`
        on `sink_metrics_port` (None: not configured)."""
        conf, topics = self.settings.kafka_common(self.bootstrap), self.topics.sunk()
        self.metrics.add_collector(
            m.LagCollector(self.group_id, lambda: group_lag(conf, self.group_id, topics))
        )
        return m.serve(
            self.metrics, self.settings.metrics_host, self.settings.sink_metrics_port, "sink"
        )

    def stats(self) -> SinkStats:
        """Counters since start, read from the metrics recorder (thread-safe snapshot)."""
        recorder = self.metrics
        tables = dict.fromkeys((route.table.name for route in self.routes.values()), 0)
        flush = recorder.last_timing(m.FLUSH_MS)
        return SinkStats(
            messages=recorder.total(m.MESSAGES),
            rows_inserted={**tables, **recorder.by_tag(m.ROWS_INSERTED, "table")},
            duplicates_skipped={**tables, **recorder.by_tag(m.DUPLICATES_SKIPPED, "table")},
            dead_lettered=recorder.total(m.DEAD_LETTERED),
            skipped_invalid=recorder.total(m.SKIPPED_INVALID),
            flushes=0 if flush is None else flush.count,
            pending_rows=self._batch.row_count,
            last_flush_at=None if flush is None else flush.last_at,
            last_flush_ms=None if flush is None else flush.last_ms,
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

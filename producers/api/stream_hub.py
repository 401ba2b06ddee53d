"""`StreamHub`: the one Kafka consumer of an API process that feeds every live-stream client.

A thread reads the records and alerts topics from their ends (assigned, no consumer group
offsets: the stream shows what happens from now on; the page's first state comes from the
ledger), decodes each message once into a `StreamEvent` (its SSE frame encoded once) and
hands each batch to every subscribed client on the client's event loop. Each client has a
bounded queue: one that falls `stream_client_queue` events behind is dropped with a
`dropped` event (it reconnects and reloads), never slowing the others or the consumer.

The thread also probes the broker every `stream_health_interval_s`: while it does not answer,
`status()` says since when (the page's "stale since" banner), and every client gets a `status`
event when that changes. It reconnects by itself; nothing here needs ClickHouse.

The last `stream_replay_events` events are kept, so a client that reconnects with
`Last-Event-ID` (`<boot>-<seq>`) gets what it missed, or a `reset` when that is gone.

The ledger is a moment behind the stream (the sink batches), so a page that loads the ledger's
state and then streams only what comes next would miss what the stream carried and the sink
had not stored yet. `position()`, taken before the state is read from the ledger, is the id a
client subscribes from so that every event the ledger may lack is replayed: the first kept
event at or past the sink's committed offset of its partition (the sink commits after it
wrote; a thread of its own reads the offsets every `stream_health_interval_s`, so they can
only be older, which replays more, never less). When some event the ledger may lack is not
kept (evicted, read before any client, or produced before this API started reading), it says
the position is incomplete.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from shipledger.clients import SINK_ROLE, consumer_group
from shipledger.kafka import ready_messages
from shipledger.lag import Partition, end_offsets
from shipledger.logging import get_logger
from shipledger.producers.api.stream_events import (
    Kind,
    StreamEvent,
    StreamFilter,
    Viewer,
    frame,
)
from shipledger.schemas.registry import DecodeError, topic_codec
from shipledger.schemas.residency import Residency
from shipledger.schemas.topics import ALERTS, RECORDS, Topics
from shipledger.settings import Settings

log = get_logger("api.stream")

#: What a client's queue yields besides frames: the hub closed (the API stops).
CLOSED = b""


@dataclass(eq=False)
class Subscription:
    """One client: what it may see and asked for, and its queue on its own event loop."""

    viewer: Viewer
    filter: StreamFilter
    loop: asyncio.AbstractEventLoop
    limit: int
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    dropped: bool = False

    def offer(self, events: Iterable[StreamEvent]) -> None:
        """Queue the events this client is for (runs on its loop); past `limit` queued, drop
        the client: one `dropped` frame, then the end of its stream."""
        for event in events:
            if self.dropped:
                return
            if not self.filter.admits_event(self.viewer, event):
                continue
            if self.queue.qsize() >= self.limit:
                self.dropped = True
                while not self.queue.empty():
                    self.queue.get_nowait()
                message = f"this client fell {self.limit} events behind and was dropped"
                self.queue.put_nowait(frame("dropped", {"error": message}))
                self.queue.put_nowait(CLOSED)
                return
            self.queue.put_nowait(event.frame)

    def send(self, data: bytes) -> None:
        """Queue a frame every client gets (status changes, the end), unless dropped."""
        if not self.dropped:
            self.queue.put_nowait(data)


class StreamHub:
    """The API's live stream source (see the module docstring); `start`, then `stop`."""

    def __init__(
        self, settings: Settings, bootstrap: str, residency: Residency | None = None
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        #: Kafka is shared by every region (docs/sovereignty.md): only the events of tenants
        #: whose rows live in this API's region are streamed (None: every tenant's).
        self._residency = residency
        topics = Topics.from_settings(settings)
        self._kinds: dict[str, Kind] = {topics.records: "deployment", topics.alerts: "alert"}
        self._codecs = {topics.records: topic_codec(RECORDS), topics.alerts: topic_codec(ALERTS)}
        #: Distinguishes this process's event ids from an earlier one's (a restart).
        self.boot = secrets.token_hex(4)
        self._seq = 0
        self._recent: deque[StreamEvent] = deque()
        #: Per partition, the highest offset whose event is not kept (evicted from `_recent`,
        #: read before any client, or before the first offset read): the replay's gaps.
        self._unkept: dict[Partition, int] = {}
        #: Per partition, the next offset the consumer reads (the consumer thread's own).
        self._next: dict[Partition, int] = {}
        #: The sink's committed offsets as last read (None: not yet): the ledger holds every
        #: message before them.
        self._stored: dict[Partition, int] | None = None
        self._subs: set[Subscription] = set()
        #: Whether a client ever subscribed: until one does, nobody can hold an id of this
        #: boot to replay from, so messages are not decoded (the API's ingest shares the GIL).
        self._watched = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stored_thread: threading.Thread | None = None
        #: Since when (epoch seconds) the broker does not answer; None while it does.
        self._down_since: float | None = time.time()
        self._down_reason: str | None = "not connected yet"
        self.delivered = 0

    # --- clients (called on the API's event loop) --------------------------------------
    def subscribe(
        self, viewer: Viewer, wanted: StreamFilter, last_event_id: str | None
    ) -> Subscription:
        """A new client's subscription, its queue holding its first frames: the stream's
        status, then what it missed since `last_event_id` (or `reset` when that is gone or
        more than its queue holds)."""
        sub = Subscription(
            viewer, wanted, asyncio.get_running_loop(), self.settings.stream_client_queue
        )
        with self._lock:
            sub.send(self._status_frame())
            missed = self._missed(last_event_id)
            if missed is None or len(missed) > sub.limit:
                # More than its queue holds would drop it at once, and again at each retry.
                sub.send(
                    frame("reset", {"reason": "reload: too much happened since Last-Event-ID"})
                )
            else:
                sub.offer(missed)
            self._subs.add(sub)
            self._watched = True
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a client (its stream ended)."""
        with self._lock:
            self._subs.discard(sub)

    @property
    def clients(self) -> int:
        """Clients subscribed now."""
        with self._lock:
            return len(self._subs)

    def position(self) -> dict[str, Any]:
        """Where a client that reads the ledger's state next starts the stream: its
        `last_event_id` (send it as `Last-Event-ID`) replays every kept event the ledger may
        not hold yet, and more (the client drops what it has); `complete` is false when some
        such event is no longer kept, or the replay would be more than a client's queue holds.
        Take it *before* reading the ledger. Marks the hub watched: from now on it keeps
        what it reads, so nothing read between this and the subscription is skipped."""
        with self._lock:
            self._watched = True
            stored = self._stored

            def unstored(partition: Partition, offset: int) -> bool:
                return stored is None or offset >= stored.get(partition, 0)

            complete = not any(unstored(part, off) for part, off in self._unkept.items())
            first = next(
                (
                    event.seq
                    for event in self._recent
                    if event.source is None or unstored(event.source[:2], event.source[2])
                ),
                self._seq + 1,
            )
            floor = self._seq + 1 - self.settings.stream_client_queue
            if first < floor:
                first, complete = floor, False
            return {"last_event_id": f"{self.boot}-{first - 1}", "complete": complete}

    def _missed(self, last_event_id: str | None) -> list[StreamEvent] | None:
        """The kept events after `last_event_id` (none asked: none); None when some of them
        are no longer kept (another process's id, or too old)."""
        if not last_event_id:
            return []
        boot, _, seq_text = last_event_id.partition("-")
        # ASCII digits only: the header is read as Latin-1, and str.isdigit() takes a
        # superscript two, which int() refuses.
        if boot != self.boot or not (seq_text.isascii() and seq_text.isdigit()):
            return None
        seq = int(seq_text)
        if seq >= self._seq:
            return []
        if not self._recent or self._recent[0].seq > seq + 1:
            return None
        return [event for event in self._recent if event.seq > seq]

    def status(self) -> dict[str, Any]:
        """`{"kafka": "live"}`, or `{"kafka": "down", "since": <epoch s>, "error": why}`."""
        if self._down_since is None:
            return {"kafka": "live"}
        return {"kafka": "down", "since": self._down_since, "error": self._down_reason}

    def _status_frame(self) -> bytes:
        return frame("status", self.status())

    # --- the consumer thread ------------------------------------------------------------
    def start(self) -> None:
        """Start the consumer thread (it connects, and reconnects, by itself)."""
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self._thread.start()
        # Apart: a slow offsets request must not hold the events back.
        self._stored_thread = threading.Thread(
            target=self._run_stored, name="stream-sink-offsets", daemon=True
        )
        self._stored_thread.start()

    def stop(self) -> None:
        """End every client's stream and stop the consumer thread. Idempotent."""
        self._stop.set()
        with self._lock:
            subs = list(self._subs)
            self._subs.clear()
        for sub in subs:
            sub.loop.call_soon_threadsafe(sub.send, CLOSED)
        for thread in (self._thread, self._stored_thread):
            if thread is not None:
                thread.join(timeout=10)
        self._thread = self._stored_thread = None

    def _consumer(self) -> Consumer:
        """A consumer assigned to the end of every partition of the records and alerts
        topics (KafkaException while the broker or a topic is not there)."""
        conf = self.settings.kafka_consumer(
            self.bootstrap, f"{self.settings.topic_prefix}dashboard", "shipledger-dashboard"
        )
        conf["auto.offset.reset"] = "latest"
        consumer = Consumer(conf)
        try:
            assignment = self._partitions(consumer)
            # The end as an offset, not OFFSET_END: what is before it was not read here. Read
            # from a fetch (`lag.end_offsets`, a probe consumer, once a connection): Tansu's
            # ListOffsets, which OFFSET_END asks, answers the start of the last record batch +
            # 1, and the clients got the rest of that batch as news.
            ends = end_offsets(
                self.settings.kafka_common(self.bootstrap),
                [(tp.topic, tp.partition) for tp in assignment],
                self.settings.stream_health_interval_s,
            )
            for tp in assignment:
                tp.offset = ends[(tp.topic, tp.partition)].high
        except BaseException:
            consumer.close()
            raise
        with self._lock:
            for tp in assignment:
                part = (tp.topic, tp.partition)
                if tp.offset > self._next.get(part, 0):
                    self._not_kept(part, tp.offset - 1)
                self._next[part] = tp.offset
        consumer.assign(assignment)
        return consumer

    def _run_stored(self) -> None:
        """Read the sink's committed offsets of the partitions read here every
        `stream_health_interval_s` while the broker answers (kept as they were otherwise:
        older offsets replay more, never less), with a consumer of the sink's group that
        never subscribes, so it never joins the group."""
        group = consumer_group(self.settings, SINK_ROLE)
        reader = Consumer(
            self.settings.kafka_consumer(self.bootstrap, group, "shipledger-dashboard")
        )
        interval = self.settings.stream_health_interval_s
        try:
            while not self._stop.wait(interval):
                with self._lock:
                    wanted = [TopicPartition(topic, p) for topic, p in self._next]
                if not wanted or self._down_since is not None:
                    continue
                try:
                    answer = reader.committed(wanted, timeout=interval)
                except KafkaException as exc:
                    log.info("stream_sink_offsets_unread", error=str(exc)[:300])
                    continue
                stored = {
                    (tp.topic, tp.partition): max(tp.offset, 0) for tp in answer if tp.error is None
                }
                with self._lock:
                    self._stored = stored
        finally:
            reader.close()

    def _partitions(self, consumer: Consumer) -> list[TopicPartition]:
        timeout = self.settings.stream_health_interval_s
        assignment: list[TopicPartition] = []
        for topic in self._kinds:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaException(f"topic {topic} is not there: {meta and meta.error}")
            assignment += [TopicPartition(topic, p, OFFSET_END) for p in meta.partitions]
        return assignment

    def _run(self) -> None:
        consumer: Consumer | None = None
        interval = self.settings.stream_health_interval_s
        next_probe = 0.0
        try:
            while not self._stop.is_set():
                if consumer is None:
                    try:
                        consumer = self._consumer()
                    except KafkaException as exc:
                        self._mark(str(exc))
                        self._stop.wait(interval)
                        continue
                    next_probe = time.monotonic() + interval
                    self._mark(None)
                messages = self._poll(consumer)
                if messages:
                    self._publish(messages)
                if time.monotonic() >= next_probe:
                    self._mark(self._probe(consumer))
                    next_probe = time.monotonic() + interval
        finally:
            if consumer is not None:
                consumer.close()

    def _poll(self, consumer: Consumer) -> list[Message]:
        """The next messages: wait for one (at most 0.1 s), then take what else is there."""
        return ready_messages(consumer, 0.1, 500)

    def _probe(self, consumer: Consumer) -> str | None:
        """None if the broker answers a metadata request in time, else why not."""
        try:
            self._partitions(consumer)
        except KafkaException as exc:
            return str(exc)
        return None

    def _mark(self, problem: str | None) -> None:
        """Record whether the broker answers; tell every client when that changes."""
        was_down = self._down_since is not None
        if (problem is not None) == was_down:
            return
        if problem is None:
            self._down_since, self._down_reason = None, None
            log.info("stream_kafka_live")
        else:
            self._down_since, self._down_reason = time.time(), problem[:300]
            log.warning("stream_kafka_down", error=problem[:300])
        with self._lock:
            data = self._status_frame()
            subs = list(self._subs)
        for sub in subs:
            sub.loop.call_soon_threadsafe(sub.send, data)

    def _not_kept(self, partition: Partition, offset: int) -> None:
        """Note that the events of `partition` up to `offset` are not all kept (under the
        lock)."""
        self._unkept[partition] = max(self._unkept.get(partition, -1), offset)

    def _publish(self, messages: list[Message]) -> None:
        read: list[tuple[Message, str, int, int]] = []
        for msg in messages:
            error = msg.error()
            if error is None:
                read.append((msg, msg.topic() or "", msg.partition() or 0, msg.offset() or 0))
            elif error.fatal():
                self._mark(error.str())
        with self._lock:
            for _, topic, partition, offset in read:
                self._next[(topic, partition)] = offset + 1
            # Decided and noted under the lock: a `position()` taken meanwhile either makes
            # this batch kept or sees that it is not.
            if not self._watched:
                for _, topic, partition, offset in read:
                    self._not_kept((topic, partition), offset)
                return
        events: list[StreamEvent] = []
        seq = self._seq
        for msg, topic, partition, offset in read:
            try:
                decoded = self._codecs[topic].decode(msg.value())
            except (KeyError, DecodeError) as exc:
                log.warning("stream_message_skipped", topic=topic, error=str(exc)[:300])
                continue
            if self._residency is not None and self._residency.refusal(
                str(decoded.get("tenant")), self.settings.region
            ):
                continue
            seq += 1
            event_id, kind = f"{self.boot}-{seq}", self._kinds[topic]
            events.append(StreamEvent.of(seq, event_id, kind, decoded, (topic, partition, offset)))
        with self._lock:
            # `_seq` moves with `_recent`, under the lock: `position()` never names an event
            # that is neither kept nor offered yet.
            self._seq = seq
            self._recent.extend(events)
            while len(self._recent) > self.settings.stream_replay_events:
                source = self._recent.popleft().source
                if source is not None:
                    self._not_kept(source[:2], source[2])
            subs = list(self._subs)
        if not events:
            return
        for sub in subs:
            sub.loop.call_soon_threadsafe(sub.offer, events)
        self.delivered += len(events)

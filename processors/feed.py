"""The enrichment feed: every worker reads the change, catalog and artifact topics
(`processors.enrichment.ENRICHMENT_TOPICS`) from their beginning, all partitions, on a thread
of its own, and hands the decoded events to the event loop, which folds them into its view.
It reads the `policy` topic the same way: the policies `shipledger policy push` published,
the latest of which the worker judges by (`processors.refresh`), and the deployment records
(`deployments.records`, every partition) into the recent deployments the anomaly join reads
(`processors.recent`): a record of a deployment that started more than
`anomaly_horizon_s` ago is dropped as it is read, and only its few joined fields are kept.
A worker's own records (`Outputs`' origin header names it) are skipped undecoded: it folded
them as it sent them. Messages are taken as many a call as are fetched.

A global view rather than a repartition: these families are small (hundreds to a few thousand
change requests and services, one artifact per build), and a worker must judge a deployment
against any change request whatever partition either is on. No consumer group, nothing
committed: the topics themselves are the view's changelog, so they must keep their messages
(`ensure_topics` creates them with `retention.ms = -1`; `up`'s restore writes the ledger's
events back to the embedded broker's, which forgets them). The feed says when it has read
every partition to its end once (`caught_up`): a worker judges nothing before that, or a
restart would flag every deployment whose request it had not read yet.

Events that do not decode or validate are skipped with a warning: the sink dead-letters them.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from shipledger.kafka import ready_messages
from shipledger.lag import fetched_high
from shipledger.logging import get_logger
from shipledger.processors.enrichment import ENRICHMENT_TOPICS, EnrichmentEvent
from shipledger.processors.outputs import origin_header
from shipledger.processors.recent import Deployed
from shipledger.schemas.models import Model, utcnow
from shipledger.schemas.policy import PolicyDocument
from shipledger.schemas.registry import catalog, topic_codec
from shipledger.schemas.topics import POLICY, RECORDS, Topics
from shipledger.settings import Settings

log = get_logger("processors")
_POLL_S = 0.1
#: Messages taken from the consumer a call, at most.
_BATCH = 500
_METADATA_TIMEOUT_S = 15.0
#: What the feed hands over: events for the view, published policies and recent deployments.
FeedEvent = EnrichmentEvent | PolicyDocument | Deployed


@dataclass
class _EndsRequest:
    """A `read_to_end` waiting for the feed's thread to read `topic` to its end."""

    topic: str
    #: Per partition, the end ListOffsets answered when asked (on Tansu, short of the end).
    reported: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Per partition read past `reported`, its true end (`EnrichmentFeed._reached`).
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Whether every partition was read to its true end; then, or if the feed failed, `done`.
    reached: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class EnrichmentFeed:
    """Reads the enrichment topics on a daemon thread (see the module docstring)."""

    def __init__(self, settings: Settings, bootstrap: str, origin: str | None = None) -> None:
        self._conf = {
            **settings.kafka_common(bootstrap),
            # A group id librdkafka wants; never joined (partitions are assigned), never
            # committed: each worker reads everything.
            "group.id": f"{settings.topic_prefix}processors-enrichment-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": settings.fetch_wait_ms,
        }
        topics = Topics.from_settings(settings)
        names = (*ENRICHMENT_TOPICS, POLICY)
        self._topic_names = {name: topics.of(name) for name in ENRICHMENT_TOPICS}
        self._partitions: dict[str, tuple[int, ...]] = {}
        self._models: dict[str, type[Model]] = {
            topics.of(name): catalog().topic(name).model_class() for name in names
        }
        self._codecs = {topics.of(name): topic_codec(name) for name in (*names, RECORDS)}
        self._records = topics.of(RECORDS)
        #: The headers of the records this worker sent (`Outputs`, the same `origin`): folded
        #: as they were sent, so not decoded again here.
        self._own = None if origin is None else origin_header(origin)
        self._horizon = timedelta(seconds=settings.anomaly_horizon_s)
        self._notify: Callable[[], object] = lambda: None
        self._ready: deque[FeedEvent] = deque()
        #: Whether `notify` was called for events not drained yet: one wake-up per drain, not
        #: one per event (every record the workers produce comes back through the feed, and a
        #: wake-up per record cost the worker more than judging it).
        self._notified = threading.Event()
        #: (topic, partition) -> the offset after the last message read (the feed thread's).
        self._read: dict[tuple[str, int], int] = {}
        self._requests: deque[_EndsRequest] = deque()
        #: The requests whose ends were asked, not reached yet (the feed thread's own).
        self._reading: list[_EndsRequest] = []
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        #: Why the feed stopped reading, if it failed (the worker must then stop too).
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="enrichment-feed", daemon=True)

    @property
    def caught_up(self) -> bool:
        """Whether every partition was read to its end once."""
        return self._caught_up.is_set()

    def start(self, notify: Callable[[], object]) -> None:
        """Start reading (once: later calls do nothing); `notify` is called (from the feed's
        thread) whenever events are ready to `drain`, and once caught up."""
        if self._thread.is_alive() or self._stop.is_set():
            return
        self._notify = notify
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (the thread closes its consumer)."""
        self._stop.set()

    def read_to_end(self, name: str, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until the feed has read every partition of logical
        topic `name` up to the end it has now, so `drain` then holds every event the broker
        acknowledged before this call; whether it got there. Blocks the caller: a worker
        calls it only when a deployment is about to be flagged (`processors.handler`). The
        feed's own thread asks the ends and follows its reading (its consumer is not
        shared)."""
        topic = self._topic_names.get(name)
        if topic is None or not self._thread.is_alive():
            return False
        request = _EndsRequest(topic)
        self._requests.append(request)
        if not request.done.wait(timeout_s) or not request.reached:
            log.warning("enrichment_catch_up_timeout", topic=topic, waited_s=timeout_s)
            return False
        return True

    def _answer_requests(self, consumer: Consumer) -> None:
        """Ask the ends of the topics `read_to_end` waits for, and answer the requests whose
        ends were read (on the feed's thread, between reads)."""
        while self._requests:
            request = self._requests.popleft()
            try:
                for p in self._partitions.get(request.topic, ()):
                    tp = TopicPartition(request.topic, p)
                    request.reported[(request.topic, p)] = consumer.get_watermark_offsets(
                        tp, timeout=_METADATA_TIMEOUT_S
                    )[1]
            except KafkaException as exc:
                log.warning("enrichment_end_unknown", topic=request.topic, error=str(exc))
                continue
            self._reading.append(request)
        self._reading = [r for r in self._reading if not self._reached(consumer, r)]

    def _reached(self, consumer: Consumer, request: _EndsRequest) -> bool:
        """Whether every partition of `request` was read to its true end (then `done`)."""
        for tp, reported in request.reported.items():
            if self._read.get(tp, 0) < reported:
                return False
            if tp not in request.ends:
                # On Tansu `reported` is the offset after the first record of the partition's
                # last batch: a build published in that batch, but not first, is past it. The
                # feed read that first record, so it had the fetch answer carrying the whole
                # batch (librdkafka queues an answer's batches whole, and drops a truncated
                # one undelivered), and the high watermark that answer brought, which the
                # consumer keeps, is at or past the batch's end. Taken as it is now: a later
                # answer's is no lower, and all it costs is to read what was fetched anyway
                # (no request, where a probe consumer costs a connection per catch-up).
                request.ends[tp] = max(reported, fetched_high(consumer, *tp))
            if self._read.get(tp, 0) < request.ends[tp]:
                return False
        request.reached = True
        request.done.set()
        return True

    def positions(self) -> dict[tuple[str, int], int]:
        """Per partition of the enrichment topics, the offset before which every message was
        read and its event handed over: all of them are in the next `drain`, or an earlier."""
        enrichment = set(self._topic_names.values())
        # A copy: the feed's thread goes on updating `_read` (one C-level copy under the GIL).
        return {tp: end for tp, end in self._read.copy().items() if tp[0] in enrichment}

    def drain(self) -> list[FeedEvent]:
        """The events read since the last call, in the order read."""
        self._notified.clear()  # before popping: an event appended from now on notifies again
        out = []
        while self._ready:
            out.append(self._ready.popleft())
        return out

    def _hand_over(self, event: FeedEvent) -> None:
        """Queue `event` for `drain`; notify only the first event since the last drain."""
        self._ready.append(event)
        if not self._notified.is_set():
            self._notified.set()
            self._notify()

    def _run(self) -> None:
        consumer = Consumer(self._conf)
        try:
            waiting = self._assign(consumer)
            if not waiting:
                self._set_caught_up()
            while not self._stop.is_set():
                self._answer_requests(consumer)
                # Whatever is fetched in one call: every record the workers produce comes
                # back here, and a call per message (the GIL given up and taken back each
                # time) cost the worker more than decoding them.
                for msg in ready_messages(consumer, _POLL_S, _BATCH):
                    self._read_one(msg, waiting)
        except Exception as exc:  # the view would go stale: the worker stops (processors.app)
            log.exception("enrichment_feed_failed")
            self.failure = exc
            self._notify()
        finally:
            # Not reached: their `read_to_end` return at once.
            for request in self._reading:
                request.done.set()
            while self._requests:  # popped, not iterated: a caller may be appending
                self._requests.popleft().done.set()
            consumer.close()

    def _read_one(self, msg: Message, waiting: set[tuple[str, int]]) -> None:
        """Hand over the event of `msg`, or note the end of its partition."""
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._mark_read(msg.topic(), msg.partition(), msg.offset())
                waiting.discard((msg.topic(), msg.partition()))
                if not waiting and not self.caught_up:
                    self._set_caught_up()
            else:
                log.warning("enrichment_feed_error", error=str(error))
            return
        topic = msg.topic()
        if not (self._own is not None and topic == self._records and msg.headers() == self._own):
            event = self._decode(topic, msg.value(), msg.partition(), msg.offset())
            if event is not None:
                self._hand_over(event)
        # Counted read once handed over: `read_to_end` then finds it in `drain`.
        offset = msg.offset()
        self._mark_read(msg.topic(), msg.partition(), None if offset is None else offset + 1)

    def _mark_read(self, topic: str | None, partition: int | None, end: int | None) -> None:
        """Everything of `topic`'s `partition` before offset `end` was read."""
        if topic is not None and partition is not None and end is not None:
            self._read[(topic, partition)] = end

    def _assign(self, consumer: Consumer) -> set[tuple[str, int]]:
        metadata = consumer.list_topics(timeout=_METADATA_TIMEOUT_S)
        assigned = []
        for topic in self._codecs:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                log.warning("enrichment_topic_missing", topic=topic)
                continue
            parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
            self._partitions[topic] = tuple(sorted(meta.partitions))
            assigned += self._since_horizon(consumer, parts) if topic == self._records else parts
        consumer.assign(assigned)
        return {(tp.topic, tp.partition) for tp in assigned}

    def _since_horizon(
        self, consumer: Consumer, parts: list[TopicPartition]
    ) -> list[TopicPartition]:
        """The records partitions from the first record produced within the horizon (the
        broker's timestamp index): a worker does not read weeks of records to keep hours. A
        partition with none starts at its end; a broker that cannot answer, at the beginning
        (older records are dropped as they are read)."""
        since_ms = int((utcnow() - self._horizon).timestamp() * 1000)
        query = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in parts]
        try:
            found = consumer.offsets_for_times(query, timeout=_METADATA_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("records_offsets_for_times_failed", error=str(exc))
            return parts
        out = []
        for tp in found:
            if tp.error is not None:
                out.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
            else:
                out.append(
                    TopicPartition(
                        tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END
                    )
                )
        return out

    def _set_caught_up(self) -> None:
        self._caught_up.set()
        log.info("enrichment_caught_up")
        self._notify()

    def _decode(
        self, topic: str | None, value: bytes | None, partition: int | None, offset: int | None
    ) -> FeedEvent | None:
        assert topic is not None
        try:
            if topic == self._records:
                return self.recent_of(self._codecs[topic].decode(value))
            event = self._models[topic].model_validate(self._codecs[topic].decode(value))
        except Exception as exc:  # DecodeError, ValidationError: the sink dead-letters it
            log.warning(
                "enrichment_event_skipped",
                topic=topic,
                partition=partition,
                offset=offset,
                error=str(exc)[:300],
            )
            return None
        assert isinstance(event, FeedEvent)
        return event

    def recent_of(self, record: Mapping[str, Any]) -> Deployed | None:
        """What the anomaly join keeps of `record` (decoded Avro, or a record model's
        fields), None past the horizon: every worker reads every record, few fields matter."""
        deployed = Deployed.of(record)
        return None if deployed.started_at < utcnow() - self._horizon else deployed

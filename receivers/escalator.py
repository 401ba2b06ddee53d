"""`Escalator`: the consumer of the alerts topic that opens a ticket (or calls a webhook) for
every alert an escalation route of the policy matches.

A chain of small steps, commit last (`_handle`): read a batch of alerts (decode; an alert
that does not decode is the sink's to dead-letter, skipped here) → the deliveries the
routes ask for (`plan.deliveries`) → what is known of each: the local record
(`record.DeliveryRecord`), then the ledger's `escalations` table for the rest → decide
(`plan.decide`) → send the new ones, several at once (`engine.Deliverer`: retries with
backoff; the partitions are paused meanwhile and the consumer keeps polling, so a slow
receiver never costs the group membership) → publish each outcome to the `escalations`
topic (the sink stores it beside the alert) and, for an alert some receiver gave up on, one
dead letter (`DeadLetter`, stage `escalation`, counted against the DLQ limit) → wait for
Kafka's acknowledgements → mark the outcomes published in the record → commit the batch.

Guarantee: **at-least-once attempts, at most one ticket per alert and receiver**, as far as
each receiver allows:

- a resolution is a delivery of its own (its own alert id): the receivers that can close
  what the alert opened are sent the close (PagerDuty resolve, Opsgenie close, Alertmanager
  `resolved`, the webhook's `shipledger.alert.resolved`, a Slack message) exactly as an
  alert is sent, with the same guarantees;
- a replayed alert (Kafka redelivery after a crash, `dlq replay`, a duplicate) is skipped by
  the local record, or by the ledger when the record does not know it;
- a crash between the provider's answer and our record leaves the delivery `sending` (in
  doubt); the next attempt asks the provider first (`find`: ServiceNow by `correlation_id`,
  Jira by the alert's label) and records the ticket it finds instead of opening one. The
  generic webhook cannot be asked: it carries the delivery id in `webhook-id`, on which its
  receiver deduplicates, as the Standard Webhooks spec says it should;
- residual risk: Jira's search is eventually consistent, so an issue opened within seconds
  of a crash may not be found and be opened twice; likewise a create the provider is still
  processing when the restarted escalator asks (a slow provider, a fast restart).
- a broker that forgets its topics in a crash (the embedded one) took the alerts not read
  yet with it; with a `backlog` (the ledger's alerts), the start runs those detected shortly
  before the last one escalated (before any was, since escalation first started) through the
  same steps (`catch_up`).

Nothing is committed before its outcomes are acknowledged by Kafka, so a crash replays the
batch, never loses it. Transient receiver failures are retried (`engine`); a delivery that
fails `SHIPLEDGER_ESCALATION_ATTEMPTS` times, or is refused, is dead-lettered and its row
says why. Past the DLQ limit (a receiver down for every alert) the escalator stops with
`DlqLimitExceeded` instead, committing nothing more.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from shipledger import metrics as m
from shipledger.clients import KafkaClients
from shipledger.dlq_limit import DlqLimit, DlqLimitState
from shipledger.kafka import DeliveryError, KafkaProducer, ready_messages
from shipledger.logging import get_logger
from shipledger.receivers.engine import Deliverer, Interrupted, RetryPolicy, sleeper
from shipledger.receivers.plan import (
    AlertMessage,
    Planned,
    decide,
    deliveries,
    ledger_ids,
    outcome_row,
)
from shipledger.receivers.receiver import ReceiverKind, Target
from shipledger.receivers.record import DeliveryRecord, State
from shipledger.receivers.registry import KINDS
from shipledger.schemas.families import scoped_key
from shipledger.schemas.letters import DeadLetter, RawHeaders
from shipledger.schemas.models import Alert, Escalation, utcnow
from shipledger.schemas.policy import Policy
from shipledger.schemas.registry import DecodeError, catalog, topic_codec
from shipledger.schemas.topics import ALERTS, ESCALATIONS, Topics
from shipledger.settings import Settings

_POLL_TIMEOUT_S = 0.1
_FLUSH_TIMEOUT_S = 10.0
_BATCH_MESSAGES = 100


class SettledLookup(Protocol):
    """What the escalator asks the ledger (`shipledger.sinks.ledger.reader.LedgerReader`)."""

    def existing_ids(self, table: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (tenant, id) of `keys` are stored in `table` (ids in its id column)."""
        ...


class AlertBacklog(Protocol):
    """Where the alerts of the ledger can be read again: after a crash of `up`, the embedded
    broker has forgotten the alerts it held, while the ledger has them."""

    def alerts_detected_since(self, at: datetime) -> list[Alert]:
        """The ledger's alerts detected at or after `at`."""
        ...


class EscalatorError(RuntimeError):
    """Kafka did not take the outcomes of a batch: nothing was committed."""


@dataclass
class _Batch:
    alerts: list[AlertMessage] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def seen(self, msg: Message) -> None:
        key = (msg.topic() or "", msg.partition() or 0)
        self.offsets[key] = max(self.offsets.get(key, -1), (msg.offset() or 0) + 1)


class Escalator(KafkaClients):
    """Delivers matching alerts to the policy's receivers (see the module docstring).

    `targets`: the configured receivers (`registry.targets`); `record`: the local record of
    deliveries; `ledger`: where the `escalations` table can be read (None: the record and
    the receivers' own lookups only); `backlog`: the ledger's alerts, looked at again at the
    start (`catch_up`), for a broker that forgets its topics in a crash (the embedded one)."""

    role = "escalator"

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        policy: Policy,
        targets: Mapping[str, Target],
        record: DeliveryRecord,
        ledger: SettledLookup | None = None,
        *,
        backlog: AlertBacklog | None = None,
        kinds: Mapping[str, ReceiverKind] = KINDS,
        metrics: m.RecordingMetrics | None = None,
        group_id: str | None = None,
    ) -> None:
        super().__init__(settings, bootstrap, group_id)
        self.escalation = policy.escalation
        self.policy_version = policy.full_version
        self.targets = targets
        self.record = record
        self.ledger = ledger
        self.backlog = backlog
        self.kinds = kinds
        self.resolvers = frozenset(
            name for name, target in targets.items() if kinds[target.kind].resolve is not None
        )
        self.metrics = metrics or m.RecordingMetrics()
        self.topics = Topics.from_settings(settings)
        self.limit = DlqLimitState(DlqLimit.from_settings(settings), "escalator")
        self.retry = RetryPolicy(
            attempts=settings.escalation_attempts,
            backoff_s=settings.escalation_backoff_s,
            backoff_max_s=settings.escalation_backoff_max_s,
            timeout_s=settings.escalation_timeout_s,
        )
        table = catalog().topic(ESCALATIONS).table
        assert table is not None, "the escalations topic is stored"
        self._table = table.name
        self._alerts = topic_codec(ALERTS)
        self._outcomes = topic_codec(ESCALATIONS)
        self._log = get_logger("escalator", group=self.group_id)
        self._held: list[Message] = []

    def consumer_config(self) -> dict[str, Any]:
        """The loop's consumer settings, fetching less often than the pipeline's consumers
        (`Settings.escalation_fetch_wait_ms`): a person paged is not paged faster by 10 ms."""
        return {
            **super().consumer_config(),
            "fetch.wait.max.ms": self.settings.escalation_fetch_wait_ms,
        }

    def make_client(self) -> httpx.Client:
        """The HTTP client of every delivery (no redirects: a login page is not a ticket)."""
        return httpx.Client(follow_redirects=False, headers={"User-Agent": "shipledger"})

    # --- the loop ---------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume and deliver until `stop` is set. Raises EscalatorError, or
        DlqLimitExceeded past the DLQ limit."""
        consumer = self.make_consumer()
        producer = self.make_producer()
        client = self.make_client()
        deliverer = Deliverer(client, self.retry, self.kinds, sleep=sleeper(stop))
        pool = ThreadPoolExecutor(
            max_workers=self.settings.escalation_concurrency, thread_name_prefix="escalate"
        )
        self._log.info(
            "escalator starting",
            receivers=sorted(self.targets),
            routes=[route.name for route in self.escalation.routes],
            policy_version=self.policy_version,
        )
        try:
            self.catch_up(consumer, producer, pool, deliverer)
            consumer.subscribe([self.topics.alerts])
            while not stop.is_set():
                messages, self._held = self._held, []
                if not messages:
                    messages = ready_messages(consumer, _POLL_TIMEOUT_S, _BATCH_MESSAGES)
                if messages:
                    self._handle(consumer, producer, pool, deliverer, self._read(messages))
                producer.poll(0)
            self._log.info("escalator stopped", **self.metrics.counters)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            consumer.close()
            producer.flush(_FLUSH_TIMEOUT_S)
            client.close()

    def catch_up(
        self,
        consumer: Consumer,
        producer: KafkaProducer,
        pool: ThreadPoolExecutor,
        deliverer: Deliverer,
    ) -> None:
        """Run the ledger's alerts detected since `SHIPLEDGER_ESCALATION_CATCH_UP_S` before the
        last one escalated through the same steps as consumed ones: what was done is skipped
        by the record, what a crashed broker took with it is delivered. Before any batch was
        escalated, those detected since escalation first started (a crash before the first
        commit lost them too; enabling escalation does not ticket the past). Nothing without
        a backlog."""
        started = self.record.escalating_since()
        through = self.record.detected_through()
        if self.backlog is None:
            return
        since = (
            started
            if through is None
            else through - timedelta(seconds=self.settings.escalation_catch_up_s)
        )
        alerts = self.backlog.alerts_detected_since(since)
        self._log.info("escalator catching up", since=since.isoformat(), alerts=len(alerts))
        for start in range(0, len(alerts), _BATCH_MESSAGES):
            batch = _Batch()
            for alert in alerts[start : start + _BATCH_MESSAGES]:
                batch.alerts.append(
                    AlertMessage(
                        alert=alert,
                        key=scoped_key(alert.tenant, alert.deployment_id),
                        value=self._alerts.encode(alert.to_avro()),
                        topic=self.topics.alerts,
                        partition=-1,
                        offset=-1,
                    )
                )
            self._handle(consumer, producer, pool, deliverer, batch)

    def _handle(
        self,
        consumer: Consumer,
        producer: KafkaProducer,
        pool: ThreadPoolExecutor,
        deliverer: Deliverer,
        batch: _Batch,
    ) -> None:
        planned = deliveries(batch.alerts, self.escalation, self.resolvers)
        recorded = self.record.states(p.delivery.id for p in planned)
        in_ledger = self._ledger_states([p for p in planned if p.delivery.id not in recorded])
        plan = decide(planned, recorded, in_ledger)
        for known, state in plan.learnt:
            self._remember(known, state)
        if plan.skipped:
            self.metrics.increment(m.ESCALATION_SKIPPED, plan.skipped)
        with self._paused(consumer, bool(plan.send)):
            futures = {pool.submit(self._deliver, deliverer, p): p for p in plan.send}
            self._await(consumer, futures)
        outcomes = list(plan.republish)
        interrupted = 0
        for future, sent in futures.items():
            try:
                outcomes.append((sent, future.result()))
            except Interrupted:
                interrupted += 1
        self._publish(producer, batch, outcomes)
        if interrupted:  # stopping: the rest of the batch is redone at the next start
            self._log.info("escalator interrupted", abandoned=interrupted)
            return
        self._commit(consumer, batch.offsets)
        if batch.alerts:
            self.record.advance(max(message.alert.detected_at for message in batch.alerts))

    # --- read --------------------------------------------------------------------------
    def _read(self, messages: Sequence[Message]) -> _Batch:
        batch = _Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                    raise EscalatorError(f"fatal consumer error: {err}")
                continue
            batch.seen(msg)
            value = msg.value()
            try:
                alert = Alert.model_validate(self._alerts.decode(value))
            except (DecodeError, ValueError):
                continue  # the sink dead-letters an alert that does not fit its table
            assert value is not None
            batch.alerts.append(
                AlertMessage(
                    alert=alert,
                    key=msg.key(),
                    value=value,
                    topic=msg.topic() or "",
                    partition=msg.partition() or 0,
                    offset=msg.offset() or 0,
                    headers=_header_pairs(msg.headers()),
                )
            )
        self.metrics.increment(m.ESCALATION_ALERTS, len(batch.alerts))
        return batch

    def _ledger_states(self, unknown: list[Planned]) -> dict[str, State]:
        """How the ledger says each of `unknown` ended (those it holds a row of)."""
        if self.ledger is None or not unknown:
            return {}
        wanted: dict[tuple[str, str], tuple[str, State]] = {}
        for planned in unknown:
            for row_id, state in ledger_ids(planned).items():
                wanted[(planned.message.alert.tenant, row_id)] = (planned.delivery.id, state)
        try:
            stored = self.ledger.existing_ids(self._table, wanted)
        except Exception:  # the ledger is a second opinion: the record and the receivers remain
            self._log.exception("escalations_ledger_unreadable")
            return {}
        found: dict[str, State] = {}
        for key in stored:
            delivery_id, state = wanted[key]
            if found.get(delivery_id) != "delivered":
                found[delivery_id] = state
        return found

    def _remember(self, planned: Planned, state: State) -> None:
        alert = planned.message.alert
        self.record.known_settled(
            planned.delivery.id, alert.tenant, alert.alert_id, planned.delivery.receiver, state
        )

    # --- deliver -----------------------------------------------------------------------
    def _deliver(self, deliverer: Deliverer, planned: Planned) -> Escalation:
        alert, delivery = planned.message.alert, planned.delivery
        target = self.targets[delivery.receiver]
        self.record.begin(delivery.id, alert.tenant, alert.alert_id, delivery.receiver)
        outcome = deliverer.deliver(delivery, target)
        row = outcome_row(planned, target.kind, outcome, self.policy_version, utcnow())
        self.record.settle(delivery.id, row)
        tags = {"receiver": delivery.receiver}
        self.metrics.increment(m.ESCALATION_ATTEMPTS, outcome.attempts, tags=tags)
        if outcome.delivered:
            self.metrics.increment(m.ESCALATION_DELIVERED, tags=tags)
        else:
            self.metrics.increment(m.ESCALATION_DEAD, tags=tags)
        self._log.info(
            "escalation_delivered" if outcome.delivered else "escalation_dead_lettered",
            receiver=delivery.receiver,
            alert_id=alert.alert_id,
            tenant=alert.tenant,
            attempts=outcome.attempts,
            ticket=row.ticket_key,
            reason=row.reason,
        )
        return row

    @contextlib.contextmanager
    def _paused(self, consumer: Consumer, sending: bool) -> Iterator[None]:
        """The partitions paused (when `sending`) before the first delivery starts and
        until the last one ended, so the consumer can keep polling meanwhile."""
        if not sending:
            yield
            return
        paused = consumer.assignment()
        consumer.pause(paused)
        try:
            yield
        finally:
            # Revoked meanwhile: nothing of ours to resume.
            with contextlib.suppress(KafkaException):
                consumer.resume(paused)

    def _await(self, consumer: Consumer, futures: Mapping[Future[Escalation], Planned]) -> None:
        """Wait for the deliveries (partitions paused), polling so the group keeps us; a
        message a rebalance hands over meanwhile waits for the next batch."""
        pending: set[Future[Escalation]] = set(futures)
        while pending:
            _, pending = wait(pending, timeout=_POLL_TIMEOUT_S)
            msg = consumer.poll(0)
            if msg is not None:
                self._held.append(msg)

    # --- publish, then commit ------------------------------------------------------------
    def _publish(
        self,
        producer: KafkaProducer,
        batch: _Batch,
        outcomes: list[tuple[Planned, Escalation]],
    ) -> None:
        """Each outcome to the escalations topic, one dead letter per alert message some
        receiver gave up on; then wait for Kafka and mark them published."""
        dead: dict[tuple[str, int, int], list[Escalation]] = {}
        for planned, row in outcomes:
            producer.produce(
                self.topics.escalations,
                self._outcomes.encode(row.to_avro()),
                scoped_key(row.tenant, row.alert_id),
            )
            if row.status == "dead_lettered":
                message = planned.message
                dead.setdefault((message.topic, message.partition, message.offset), []).append(row)
        for message in batch.alerts:
            rows = dead.get((message.topic, message.partition, message.offset))
            if rows is None:
                self.limit.valid()
                continue
            self.limit.invalid()  # past the limit: stop before this letter
            self._dead_letter(producer, message, rows)
        if not outcomes:
            return
        try:
            producer.flush_or_raise(_FLUSH_TIMEOUT_S, "escalation outcomes and dead letters")
        except DeliveryError as exc:
            raise EscalatorError(f"{exc}: not committing") from exc
        self.record.mark_published(planned.delivery.id for planned, _ in outcomes)

    def _dead_letter(
        self, producer: KafkaProducer, message: AlertMessage, rows: list[Escalation]
    ) -> None:
        reason = "; ".join(f"{row.receiver}: {row.reason}" for row in rows)
        letter = DeadLetter.rejecting(
            "escalation",
            f"escalation failed: {reason}",
            None,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            headers=message.headers,
        )
        producer.produce(self.topics.dlq, message.value, message.key, headers=letter.headers())

    def _commit(self, consumer: Consumer, offsets: Mapping[tuple[str, int], int]) -> None:
        if not offsets:
            return
        positions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            # Outcomes are published and recorded: a replay of the batch is skipped.
            self._log.warning("offset commit failed; batch will be replayed", error=str(exc))


def _header_pairs(raw: RawHeaders) -> tuple[tuple[str, str | bytes | None], ...]:
    """A message's headers as pairs, whichever form the client gave them in."""
    if not raw:
        return ()
    return tuple(raw.items() if isinstance(raw, Mapping) else raw)

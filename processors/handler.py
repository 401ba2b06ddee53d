"""One raw event through the pure chain, with its state and outputs: the processors' per-event
logic, without Faust (the agent in `processors.app` feeds it; unit tests feed it directly).

What an event becomes:
- a new deployment record (and, for a deployment's first event, its alerts), queued on the
  outputs, and the deployment's state entry updated;
- a dead letter with its reason, when it does not decode, validate or process (Faust acks an
  event even when the agent raises, so nothing but `DlqLimitExceeded` may escape this
  function: past the DLQ limit the handler stops before the letter, and the agent abandons
  the batch unacknowledged, `processors.app.abandon_batch`);
- nothing new, when its id is among the ids already applied to its deployment (a resend, a
  replay after a crash). If it is the deployment's first event, its alerts are emitted again:
  the batch that applied it may have died after its record reached the ledger and before its
  alerts did (or the state was rebuilt from the ledger, `shipledger.up.restore`), and alert ids
  are deterministic, so the sink drops those it already stored. Of the change rules' alerts,
  only those that still hold are (a resolved one stays resolved).

Judgement reads the enrichment view (`processors.enrichment`) and, for a manual deployment,
asks the directory whether it knows the deployer (`known_actor`: cached, and a directory that
cannot answer judges nobody, `shipledger.identities`). When a change request changes,
`rejudge` judges again the deployments of this worker's partitions that name it
(`processors.late_changes`): new alerts, resolutions and record versions go out the same way,
and the state remembers them. `sweep` does that for every deployment naming a change request
(after a start or a rebalance: a re-judgement lost with a crash is made again).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from shipledger.dlq_limit import DlqLimitState
from shipledger.fields import picked
from shipledger.logging import get_logger
from shipledger.processors.artifact_rules import BUILD_RULES
from shipledger.processors.change_rules import CHANGE_RULE_NAMES
from shipledger.processors.enrichment import ChangeKey, Enrichment, Lookups
from shipledger.processors.late_changes import rejudge_stored
from shipledger.processors.outputs import Payload
from shipledger.processors.state import DeploymentState, Entry, state_key
from shipledger.processors.step import StepResult, nobody_known, process
from shipledger.schemas.letters import DeadLetter, Headers
from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord, utcnow
from shipledger.schemas.policy import Policy, PolicyDocument, PolicyError
from shipledger.schemas.registry import AvroCodec, RegistryUnavailable
from shipledger.schemas.validation import EVENT_SCHEMA, Rejected, decode_event

log = get_logger("processors")


class Message(Protocol):
    """What the handler reads of a consumed message (a Faust `Message` has these)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


class OutputPort(Protocol):
    """Where results go (`processors.outputs.Outputs`)."""

    def encode(self, record: DeploymentRecord | None, alerts: list[Alert]) -> list[Payload]:
        """Serialize one event's results (alerts only without a record); raises before
        anything is queued."""
        ...

    def send(self, payloads: Sequence[Payload]) -> None:
        """Queue encoded outputs."""
        ...

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Queue a rejected message's original bytes with its reason headers."""
        ...


class EventHandler:
    """Applies raw deployment events one by one, and re-judges stored deployments when their
    change request changes (see the module docstring); `limit` counts its dead letters
    against the DLQ limit, `view` is what judgement reads besides the deployment, and
    `known_actor` whether the directory knows a manual deployer (`shipledger.identities`).

    Ordering of builds and deployments: a deployment is judged against the builds its
    worker's view holds. Before flagging one with `artifact_digest_mismatch` or
    `artifact_unknown`, the handler calls `catch_up` (the worker's feed reads the artifacts
    topic to the end it has now, and the view folds it in: `processors.app`) and judges
    again: a build the broker acknowledged before that moment is seen, however close to the
    deployment it was published. A build published later does not clear the alert.

    `sent` is told of every deployment record queued (the worker folds its own records into
    the anomaly join's recent deployments at once, rather than read them back from Kafka)."""

    def __init__(
        self,
        policy: Policy,
        state: DeploymentState,
        outputs: OutputPort,
        limit: DlqLimitState,
        view: Lookups | None = None,
        known_actor: Callable[[str], bool] = nobody_known,
        catch_up: Callable[[], object] | None = None,
        sent: Callable[[DeploymentRecord], object] | None = None,
    ) -> None:
        self._policy = policy
        self._catch_up = catch_up
        self._sent = sent
        self._state = state
        self._outputs = outputs
        self._limit = limit
        self._view = view or Enrichment()
        self._known_actor = known_actor
        self._codec = AvroCodec(EVENT_SCHEMA)

    @property
    def policy(self) -> Policy:
        """The policy judged by now (the latest adopted)."""
        return self._policy

    def adopt(self, document: PolicyDocument) -> None:
        """Judge by the published policy `document` from now on (called between batches); one
        that does not parse or match its SHA-256 is refused, logged, and the current policy
        stays (`shipledger policy push` validates before publishing)."""
        try:
            policy = document.policy()
        except PolicyError as exc:
            log.error("policy_refused", version=document.version, error=str(exc)[:500])
            return
        if policy.full_version != self._policy.full_version:
            log.info(
                "policy_adopted",
                policy_version=policy.full_version,
                replaces=self._policy.full_version,
                sha256=document.sha256,
                published_at=document.published_at.isoformat(),
            )
        self._policy = policy

    def handle(self, message: Message) -> None:
        """One event through the chain; every failure is dead-lettered with its reason.
        Raises DlqLimitExceeded (and dead-letters nothing) past the DLQ limit."""
        try:
            decoded = decode_event(self._codec, message.value)
            key = state_key(decoded.tenant, decoded.deployment_id)
            entry = self._state.get(key)
            if entry is not None and decoded.event_id in entry.seen:
                self._repeat(message, entry, decoded.event_id)
                if decoded.event_id == entry.first:
                    alerts = [
                        a
                        for a in self._process(decoded, None).alerts
                        if a.rule not in CHANGE_RULE_NAMES or a.alert_id in entry.holding.values()
                    ]
                    self._outputs.send(self._outputs.encode(None, alerts))
                self._limit.valid()
                return
            result = self._process(decoded, entry.record if entry else None)
            if entry is None and self._unbuilt(result):
                assert self._catch_up is not None
                self._catch_up()
                result = self._process(decoded, None)
            payloads = self._outputs.encode(result.record, result.alerts)
        except Rejected as exc:
            self._dead_letter(message, exc.reason, exc.field)
            return
        except RegistryUnavailable:  # not the event's fault: stop, and read it again later
            raise
        except Exception as exc:  # a bug must not lose the event: park it with why
            log.exception(
                "processing_failed",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            self._dead_letter(message, f"internal error: {exc!r}", None)
            return
        self._send(payloads, result.record)
        self._state.put(key, message.partition, result.record, decoded.event_id, result.alerts)
        self._limit.valid()
        _log_alerts(result.alerts)

    def _unbuilt(self, result: StepResult) -> bool:
        """Whether `result` flags a deployment's artifact as not built, and the view may be
        behind the artifacts topic (see the class docstring)."""
        return self._catch_up is not None and any(a.rule in BUILD_RULES for a in result.alerts)

    def _process(self, event: DeploymentEvent, previous: DeploymentRecord | None) -> StepResult:
        return process(
            event, previous, self._policy, view=self._view, known_actor=self._known_actor
        )

    def rejudge(
        self, changes: Iterable[ChangeKey], partitions: Collection[int], now: datetime | None = None
    ) -> int:
        """Judge again the deployments of `partitions` that name one of `changes` (change
        requests that changed); how many emitted something."""
        return self._rejudge_all(
            (item for change in changes for item in self._state.naming(change, partitions)), now
        )

    def sweep(self, partitions: Collection[int], now: datetime | None = None) -> int:
        """Judge again every deployment of `partitions` that names a change request; how many
        emitted something (nothing, unless a re-judgement was lost or the view moved on)."""
        return self._rejudge_all(self._state.with_changes(partitions), now)

    def _rejudge_all(self, entries: Iterable[tuple[str, Entry]], now: datetime | None) -> int:
        now = now or utcnow()
        emitted = 0
        for key, entry in entries:
            judged = rejudge_stored(
                entry.record,
                entry.first or entry.record.last_event_id,
                entry.holding,
                entry.raised,
                self._view,
                self._policy,
                now,
                self._known_actor,
            )
            if judged.empty:
                continue
            # Encoding raises before anything is queued; a failure here is a bug, and the
            # batch is abandoned (`processors.app`): nothing is lost, it is redone.
            payloads = self._outputs.encode(judged.record, [*judged.alerts, *judged.resolutions])
            self._send(payloads, judged.record)
            self._state.rejudged(key, judged.record, judged.alerts, judged.resolutions)
            emitted += 1
            _log_alerts(judged.alerts)
            for done in judged.resolutions:
                log.info(
                    "alert_resolved",
                    **picked(done, "rule", "resolves", "deployment_id", "tenant"),
                    reason=done.evidence.get("reason"),
                )
        return emitted

    def _send(self, payloads: Sequence[Payload], record: DeploymentRecord | None) -> None:
        """Queue `payloads`, then tell `sent` of the record among them."""
        self._outputs.send(payloads)
        if record is not None and self._sent is not None:
            self._sent(record)

    def _repeat(self, message: Message, entry: Entry, event_id: str) -> None:
        log.info(
            "duplicate_skipped",
            event_id=event_id,
            deployment_id=entry.record.deployment_id,
            tenant=entry.record.tenant,
            first_event=event_id == entry.first,
            **picked(message, "topic", "partition", "offset"),
        )

    def _dead_letter(self, message: Message, reason: str, field: str | None) -> None:
        self._limit.invalid()  # past the limit: stop before this letter
        letter = DeadLetter.rejecting(
            "processors",
            reason,
            field,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            headers=message.headers,
        )
        self._outputs.dead_letter(message.key, message.value, letter.headers())
        log.warning(
            "dead_lettered",
            reason=reason,
            field=field,
            **picked(message, "topic", "partition", "offset"),
        )


#: What the log says of each alert raised (the ledger keeps the rest).
_ALERT_LOGGED = ("rule", "severity", "deployment_id", "tenant", "service", "environment", "team")


def _log_alerts(alerts: Iterable[Alert]) -> None:
    for alert in alerts:
        log.info(
            "alert",
            **picked(alert, *_ALERT_LOGGED),
        )

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
  are deterministic, so the sink drops those it already stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from shipledger.dlq_limit import DlqLimitState
from shipledger.logging import get_logger
from shipledger.processors.outputs import Payload
from shipledger.processors.state import Entry, state_key
from shipledger.processors.step import process
from shipledger.schemas.letters import DeadLetter, Headers
from shipledger.schemas.models import Alert, DeploymentRecord
from shipledger.schemas.policy import Policy
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


class StatePort(Protocol):
    """The deployments' state (`processors.state.DeploymentState`)."""

    def get(self, key: str) -> Entry | None:
        """The deployment's entry, if any event of it was applied."""
        ...

    def put(self, key: str, partition: int, record: DeploymentRecord, event_id: str) -> None:
        """Store the record applied from `event_id`."""
        ...


class EventHandler:
    """Applies raw deployment events one by one (see the module docstring); `limit` counts
    its dead letters against the DLQ limit."""

    def __init__(
        self, policy: Policy, state: StatePort, outputs: OutputPort, limit: DlqLimitState
    ) -> None:
        self._policy = policy
        self._state = state
        self._outputs = outputs
        self._limit = limit
        self._codec = AvroCodec(EVENT_SCHEMA)

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
                    alerts = process(decoded, None, self._policy).alerts
                    self._outputs.send(self._outputs.encode(None, alerts))
                self._limit.valid()
                return
            result = process(decoded, entry.record if entry else None, self._policy)
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
        self._outputs.send(payloads)
        self._state.put(key, message.partition, result.record, decoded.event_id)
        self._limit.valid()
        for alert in result.alerts:
            log.info(
                "alert",
                rule=alert.rule,
                severity=alert.severity,
                deployment_id=alert.deployment_id,
                tenant=alert.tenant,
                service=alert.service,
                environment=alert.environment,
            )

    def _repeat(self, message: Message, entry: Entry, event_id: str) -> None:
        log.info(
            "duplicate_skipped",
            event_id=event_id,
            deployment_id=entry.record.deployment_id,
            tenant=entry.record.tenant,
            first_event=event_id == entry.first,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
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
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )

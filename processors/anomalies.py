"""Signal events through the anomaly join, without Faust: the processors' second agent (on
the `signals` topic, `processors.app`) feeds each message here; unit tests feed it directly.

A drift report (`processors.drift`) is linked to its deployment the same way, and raises
`config_drift`; it is not an anomaly. A signal that is an anomaly
(`processors.anomaly_join.is_anomaly`) is joined with the worker's recent deployments
(`processors.recent`, folded from every partition of the records topic) and the service
catalog of the enrichment view; its `suspect_deployment` alerts are queued on the outputs
and made durable with the batch. Nothing else is kept: alert ids are deterministic, so a
batch redone after a crash raises the same alerts and the sink drops the
copies.

A signal that does not decode or validate is skipped with a warning: the sink dead-letters it
(the signals topic is the sink's to dead-letter). The join only sees deployments whose record
the feed read before the anomaly was handled: an anomaly reported before the deployment that
caused it is not linked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from shipledger.logging import get_logger
from shipledger.processors.anomaly_join import (
    Catalog,
    Deployments,
    is_anomaly,
    suspect_alerts,
    suspects,
)
from shipledger.processors.drift import drift_alert, drifted, is_drift_report
from shipledger.processors.handler import Message, OutputPort
from shipledger.schemas.family_models import SignalEvent
from shipledger.schemas.models import utcnow
from shipledger.schemas.policy import Policy
from shipledger.schemas.registry import RegistryUnavailable, topic_codec
from shipledger.schemas.topics import SIGNALS

log = get_logger("processors")


class AnomalyHandler:
    """Joins anomalies with recent deployments (see the module docstring); `policy()` is the
    policy judged by now (it follows `shipledger policy push`)."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        deployments: Deployments,
        catalog: Catalog,
        outputs: OutputPort,
    ) -> None:
        self._policy = policy
        self._deployments = deployments
        self._catalog = catalog
        self._outputs = outputs
        self._codec = topic_codec(SIGNALS)

    def handle(self, message: Message, now: datetime | None = None) -> None:
        """Join one signal; its alerts are queued, not yet flushed."""
        try:
            signal = SignalEvent.model_validate(self._codec.decode(message.value))
        except RegistryUnavailable:  # not the event's fault: stop, and read it again later
            raise
        except Exception as exc:  # DecodeError, ValidationError: the sink dead-letters it
            log.warning(
                "signal_skipped",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                error=str(exc)[:300],
            )
            return
        if is_drift_report(signal.attributes):
            self._drift(signal, now or utcnow())
            return
        if not is_anomaly(signal):
            return
        policy = self._policy()
        rules = policy.rules_for(signal.tenant)
        try:
            found = suspects(signal, self._deployments, self._catalog, rules)
        except ValueError as exc:  # an environment name the taxonomy refuses
            log.warning("anomaly_skipped", event_id=signal.event_id, error=str(exc)[:300])
            return
        alerts = suspect_alerts(signal, found, rules, policy.full_version, now or utcnow())
        if alerts:
            self._outputs.send(self._outputs.encode(None, alerts))
        log.info(
            "anomaly_joined",
            event_id=signal.event_id,
            tenant=signal.tenant,
            service=signal.service,
            suspects=[a.deployment_id for a in alerts],
        )

    def _drift(self, signal: SignalEvent, now: datetime) -> None:
        """Link drift report `signal` to its deployment and raise `config_drift`."""
        policy = self._policy()
        try:
            candidates = self._deployments.of_service(signal.tenant, signal.service or "")
            deployed = drifted(signal, candidates)
        except ValueError as exc:  # an environment name the taxonomy refuses
            log.warning("drift_skipped", event_id=signal.event_id, error=str(exc)[:300])
            return
        if deployed is not None:
            alert = drift_alert(
                signal, deployed, policy.rules_for(signal.tenant), policy.full_version, now
            )
            self._outputs.send(self._outputs.encode(None, [alert]))
        log.info(
            "drift_linked",
            event_id=signal.event_id,
            tenant=signal.tenant,
            service=signal.service,
            deployment_id=deployed.deployment_id if deployed else None,
        )

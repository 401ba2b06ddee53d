"""Prometheus Alertmanager: the webhook receiver's JSON (`version` "4"), one signal per alert.

Alertmanager posts a group of alerts; each becomes an `alert_fired` or `alert_resolved`
signal. `service` is the alert's `service` label, else its `job` label; `environment` its
`environment` or `env` label; `title` the `alertname`; `occurred_at` the alert's `startsAt`
when firing and `endsAt` once resolved. The processors join firing alerts with recent
deployments (`suspect_deployment`). Event ids derive from the alert's fingerprint, its start
and status: Alertmanager repeats a firing group every `repeat_interval`, and each repeat is
the same event.
"""

from __future__ import annotations

from typing import Any

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.monitoring import environment_tag, verify_monitoring
from shipledger.producers.webhooks.payload import (
    JSONObject,
    opt_str,
    parse_object,
    req_str,
    req_timestamp,
)
from shipledger.producers.webhooks.result import Identified, Parsed, Request, WebhookPayloadError

#: The webhook payload version this mapper reads (Alertmanager 0.x up to now).
VERSION = "4"
_KINDS: dict[str, contract.SignalKind] = {"firing": "alert_fired", "resolved": "alert_resolved"}


def verify(request: Request) -> None:
    """Check the token (`Authorization: Bearer` from `http_config`, or our header)."""
    verify_monitoring(request, "alertmanager")


def parse(request: Request) -> Parsed:
    """Map one Alertmanager notification: one group of events per alert."""
    data = parse_object(request.body)
    version = req_str(data, "version")
    if version != VERSION:
        raise WebhookPayloadError(f"version: {version!r} is not supported (expected {VERSION!r})")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise WebhookPayloadError("alerts: must be a non-empty list")
    status = req_str(data, "status")
    receiver = opt_str(data, "receiver")
    groups = [_alert(item, f"alerts.{i}", receiver) for i, item in enumerate(alerts)]
    return Parsed(event_type=status, delivery_id=opt_str(data, "groupKey"), groups=groups)


def _labels(alert: JSONObject, path: str, key: str) -> dict[str, str]:
    value = alert.get(key) or {}
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{path}.{key}: must be an object")
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def _alert(item: Any, path: str, receiver: str | None) -> Identified:
    if not isinstance(item, dict):
        raise WebhookPayloadError(f"{path}: must be an object")
    status = req_str(item, "status")
    kind = _KINDS.get(status)
    if kind is None:
        raise WebhookPayloadError(f"{path}.status: {status!r} is not firing or resolved")
    labels = _labels(item, path, "labels")
    annotations = _labels(item, path, "annotations")
    alertname = labels.get("alertname")
    if not alertname:
        raise WebhookPayloadError(f"{path}.labels.alertname: required field is missing")
    starts_at = req_timestamp(item, "startsAt")
    occurred_at = starts_at if kind == "alert_fired" else req_timestamp(item, "endsAt")
    fingerprint = opt_str(item, "fingerprint") or alertname
    event = contract.signal(
        kind=kind,
        occurred_at=occurred_at,
        service=labels.get("service") or labels.get("job"),
        environment=environment_tag(labels),
        severity=labels.get("severity"),
        title=alertname,
        external_id=fingerprint,
        url=opt_str(item, "generatorURL"),
        attributes={
            "alertmanager.receiver": receiver,
            "alertmanager.summary": annotations.get("summary"),
            "alertmanager.description": annotations.get("description"),
            "alertmanager.instance": labels.get("instance"),
            "alertmanager.job": labels.get("job"),
            "alertmanager.starts_at": starts_at,
        },
    )
    return Identified(f"alert:{fingerprint}:{starts_at}:{status}", [event])

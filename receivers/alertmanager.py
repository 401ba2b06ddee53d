"""An Alertmanager-compatible webhook: the JSON Alertmanager itself sends to a
`webhook_config` receiver, so anything built for Alertmanager (Karma, a bridge to a chat,
an on-call tool's Prometheus integration) takes shipledger's alerts as they are.

`POST {url}` with `{"version": "4", "groupKey", "truncatedAlerts": 0, "status": "firing" |
"resolved", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
"alerts": [{"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
"fingerprint"}]}`, one alert per message. Labels: `alertname` (the rule), `severity`,
`tenant`, `service`, `environment`, `deployment_id`, `alert_id` (the alert's id; a
resolution's carries the id of the alert it resolves), `team` and `region` when known, plus
the receiver's `labels`; annotations: `summary`, `description` (the message). The
fingerprint is Alertmanager's own (FNV-1a 64 over the sorted labels), so a resolution has
the fingerprint of the alert it resolves; `endsAt` is the zero time while firing.

With `credentials`, the secret is sent as `Authorization: Bearer <secret>` (Alertmanager's
`http_config.authorization`); without, no authentication.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from shipledger.receivers import text
from shipledger.receivers.receiver import (
    Delivery,
    ReceiverKind,
    Target,
    options_of,
    secret_header,
)

#: What Alertmanager puts in endsAt while an alert fires (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = b"\xff"


class AlertmanagerOptions(BaseModel):
    """`receiver`: the name in the payload (default: the receiver's); `external_url`: the
    payload's externalURL (e.g. shipledger's dashboard); more `labels`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    receiver: str | None = Field(default=None, min_length=1)
    external_url: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over name, 0xff, value, 0xff
    of each label in name order, as 16 hex digits (prometheus/common model.LabelSet)."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), _SEPARATOR, labels[name].encode(), _SEPARATOR):
            for byte in part:
                digest = ((digest ^ byte) * _FNV_PRIME) % 2**64
    return f"{digest:016x}"


def labels(delivery: Delivery, target: Target) -> dict[str, str]:
    """The alert's labels (the same for an alert and its resolution)."""
    alert = delivery.alert
    found = {
        **options_of(target, AlertmanagerOptions).labels,
        "alertname": alert.rule,
        "severity": alert.severity,
        "tenant": alert.tenant,
        "service": alert.service,
        "environment": alert.environment,
        "deployment_id": alert.deployment_id,
        "alert_id": delivery.subject,
    }
    if alert.team:
        found["team"] = alert.team
    if alert.region:
        found["region"] = alert.region
    return found


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def message(delivery: Delivery, target: Target) -> dict[str, Any]:
    """The webhook's JSON (pure: the mapping the tests read)."""
    alert = delivery.alert
    options = options_of(target, AlertmanagerOptions)
    status = "resolved" if delivery.action == "resolve" else "firing"
    found = labels(delivery, target)
    annotations = {"summary": text.summary(alert), "description": alert.message}
    group = {"alert_id": delivery.subject}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alert_id="{delivery.subject}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": options.receiver or target.name,
        "groupLabels": group,
        "commonLabels": found,
        "commonAnnotations": annotations,
        "externalURL": options.external_url,
        "alerts": [
            {
                "status": status,
                "labels": found,
                "annotations": annotations,
                "startsAt": _rfc3339(alert.occurred_at),
                "endsAt": _rfc3339(alert.detected_at) if status == "resolved" else ZERO_TIME,
                "generatorURL": options.external_url,
                "fingerprint": fingerprint(found),
            }
        ],
    }


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The webhook call of `delivery` (firing, or resolved for a resolution)."""
    return httpx.Request("POST", target.url, json=message(delivery, target))


KIND = ReceiverKind(
    name="alertmanager",
    options=AlertmanagerOptions,
    request=request,
    # Alertmanager receivers answer nothing to record (the default `read`).
    auth=secret_header("Bearer"),
    needs_secret=False,
    resolve=request,
)

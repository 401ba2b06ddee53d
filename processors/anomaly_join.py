"""The anomaly join, pure: which recent deployments may have caused a monitoring anomaly, and
the `suspect_deployment` alerts that say why.

An anomaly is a signal event of kind `alert_fired` or `incident_opened` that names a service
(Prometheus Alertmanager, Datadog monitors, `POST /v1/events`). Its suspects are the
deployments that started within the tenant's `suspect_window` before the anomaly (never
after it), of the anomalous service itself (direct) or of a service it depends on, following
the catalog's `dependencies` up to `suspect_dependency_depth` hops (the shortest path is the
one explained). An anomaly that names an environment only matches deployments to the same
(canonical) environment; one that names none matches every environment. The closest in the
catalog come first, then the latest; at most `suspect_limit`.

Each suspect becomes one alert about the suspect deployment, with a deterministic id from
the anomaly's event id and the deployment: a replayed anomaly raises the same alerts, which
the sink drops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from shipledger.fields import picked
from shipledger.processors.enrichment import ServiceInfo
from shipledger.processors.recent import Deployed
from shipledger.processors.step import RESTATED, alert_id
from shipledger.schemas.family_models import SignalEvent
from shipledger.schemas.models import Alert
from shipledger.schemas.policy import Rules
from shipledger.schemas.taxonomy import normalize_environment

#: The rule name of the alerts this join raises.
SUSPECT_RULE = "suspect_deployment"
#: Signal kinds that open an anomaly (their resolutions and pipeline outcomes are not joined).
ANOMALY_KINDS = frozenset({"alert_fired", "incident_opened"})
#: How a dependency path is written: `checkout → payments` (checkout depends on payments).
ARROW = " → "


class Deployments(Protocol):
    """What the join reads of recent deployments (`processors.recent.RecentDeployments`)."""

    def of_service(self, tenant: str, service: str) -> Iterable[Deployed]:
        """The tenant's recent deployments of `service`."""
        ...


class Catalog(Protocol):
    """What the join reads of the service catalog (`processors.enrichment.Enrichment`)."""

    def service(self, tenant: str, name: str) -> ServiceInfo | None:
        """The catalog entry of the tenant's service `name`."""
        ...


@dataclass(frozen=True)
class Suspect:
    """A deployment that started `before` the anomaly, reached from the anomalous service by
    `path` (the anomalous service first, the deployed service last; one name: direct)."""

    deployment: Deployed
    path: tuple[str, ...]
    before: timedelta

    @property
    def direct(self) -> bool:
        """Whether the deployment is of the anomalous service itself."""
        return len(self.path) == 1


def is_anomaly(signal: SignalEvent) -> bool:
    """Whether `signal` opens an anomaly the join looks at (a kind that opens, a service)."""
    return signal.kind in ANOMALY_KINDS and bool(signal.service)


def dependency_paths(
    tenant: str, service: str, catalog: Catalog, depth: int
) -> dict[str, tuple[str, ...]]:
    """Every service reachable from `service` through the catalog's dependencies within
    `depth` hops, with its shortest path (breadth first; ties go to the first listed
    dependency). `service` itself maps to `(service,)`."""
    paths: dict[str, tuple[str, ...]] = {service: (service,)}
    queue = deque([service])
    while queue:
        current = queue.popleft()
        path = paths[current]
        if len(path) > depth:
            continue
        info = catalog.service(tenant, current)
        for dependency in info.dependencies if info else ():
            if dependency not in paths:
                paths[dependency] = (*path, dependency)
                queue.append(dependency)
    return paths


def suspects(
    signal: SignalEvent, deployments: Deployments, catalog: Catalog, rules: Rules
) -> list[Suspect]:
    """The suspect deployments of anomaly `signal` (see the module docstring); empty for a
    signal that is not an anomaly."""
    if not is_anomaly(signal) or signal.service is None:
        return []
    environment = (
        normalize_environment(signal.environment, signal.region).name
        if signal.environment
        else None
    )
    window = rules.suspect_lookback
    found = []
    paths = dependency_paths(signal.tenant, signal.service, catalog, rules.suspect_dependency_depth)
    for service, path in paths.items():
        for deployed in deployments.of_service(signal.tenant, service):
            before = signal.occurred_at - deployed.started_at
            if not timedelta(0) <= before <= window:
                continue
            if environment is not None and deployed.environment != environment:
                continue
            found.append(Suspect(deployed, path, before))
    found.sort(key=lambda s: (len(s.path), s.before, s.deployment.deployment_id))
    return found[: rules.suspect_limit]


def ago(span: timedelta) -> str:
    """`span` the way a person says it: `45 s`, `12 min`, `2 h 5 min`."""
    seconds = int(span.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def explain(signal: SignalEvent, suspect: Suspect) -> tuple[str, dict[str, str]]:
    """The alert message and evidence linking anomaly `signal` to `suspect`."""
    d = suspect.deployment
    what = f"{signal.title or signal.kind} on {signal.service}"
    deployed = f"deployment {d.deployment_id} of {d.service}"
    if d.version:
        deployed += f" {d.version}"
    deployed += f" to {d.environment}"
    if suspect.direct:
        link = "the same service"
    else:
        link = f"a dependency of {signal.service} ({ARROW.join(suspect.path)})"
    message = f"{deployed} ({link}) started {ago(suspect.before)} before {what}"
    evidence = {
        "anomaly_event_id": signal.event_id,
        "anomaly_kind": signal.kind,
        "anomaly_service": signal.service or "",
        "anomaly_at": signal.occurred_at.isoformat(),
        "deployment_started_at": d.started_at.isoformat(),
        "deployment_status": d.status,
        "seconds_before": str(int(suspect.before.total_seconds())),
        "link": "direct" if suspect.direct else "dependency",
        "path": ARROW.join(suspect.path),
        "hops": str(len(suspect.path) - 1),
        "commit_sha": d.commit_sha,
    }
    optional = {
        "anomaly_title": signal.title,
        "anomaly_source": signal.source,
        "anomaly_external_id": signal.external_id,
        "anomaly_url": signal.url,
        "anomaly_severity": signal.severity,
        "anomaly_environment": signal.environment,
        "deployment_finished_at": d.finished_at.isoformat() if d.finished_at else None,
        "version": d.version,
    }
    evidence.update({k: v for k, v in optional.items() if v})
    return message, evidence


def suspect_alerts(
    signal: SignalEvent,
    found: Iterable[Suspect],
    rules: Rules,
    policy_version: str,
    now: datetime,
) -> list[Alert]:
    """One `suspect_deployment` alert per suspect, about the suspect deployment, at the time
    of the anomaly (`occurred_at`), judged on the anomaly's event (`event_id`)."""
    alerts = []
    for suspect in found:
        message, evidence = explain(signal, suspect)
        alerts.append(
            signal_alert(
                signal,
                suspect.deployment,
                SUSPECT_RULE,
                (message, evidence),
                rules,
                policy_version,
                now,
            )
        )
    return alerts


def signal_alert(
    signal: SignalEvent,
    deployed: Deployed,
    rule: str,
    said: tuple[str, dict[str, str]],
    rules: Rules,
    policy_version: str,
    now: datetime,
) -> Alert:
    """The alert of `rule` (with its message and evidence, `said`) that `signal` raises
    about `deployed`, at the signal's time, with a deterministic id from the signal's event
    and the deployment: a replayed signal raises the same alert, which the sink drops."""
    message, evidence = said
    return Alert(
        alert_id=alert_id(signal.event_id, f"{rule}/{deployed.deployment_id}"),
        rule=rule,
        severity=rules.severities.get(rule, "high"),
        message=message,
        evidence=evidence,
        policy_version=policy_version,
        event_id=signal.event_id,
        occurred_at=signal.occurred_at,
        detected_at=now,
        **picked(deployed, *RESTATED),
    )

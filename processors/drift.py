"""Configuration drift, pure: a drift report (a Terraform plan with resource changes, an Argo
CD application out of sync) linked to the deployment that left infrastructure differing from
code, and the `config_drift` alert naming the drifting resources.

A drift report is a signal carrying the `drift.tool` attribute (`producers.webhooks.terraform`,
`producers.webhooks.argocd`). Its deployment is the latest one of the same tenant, service and
(canonical) environment that started at or before the report's `occurred_at`, among the
worker's recent deployments (`processors.recent`, the anomaly join's view): a report naming
no environment, or about a service not deployed within the horizon, is linked to nothing.
One alert per report and deployment, its id from both: a replayed report raises the same
alert, which the sink drops.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from shipledger.processors.anomaly_join import signal_alert
from shipledger.processors.recent import Deployed
from shipledger.schemas.family_models import DRIFT_RESOURCES, DRIFT_TOOL, SignalEvent
from shipledger.schemas.models import Alert
from shipledger.schemas.policy import Rules
from shipledger.schemas.taxonomy import normalize_environment

#: The rule name of the alerts drift reports raise.
DRIFT_RULE = "config_drift"
#: How many resources the message names (the evidence lists them all).
_NAMED = 5


def is_drift_report(attributes: Mapping[str, str]) -> bool:
    """Whether a signal with these attributes is a drift report."""
    return DRIFT_TOOL in attributes


def drifted(signal: SignalEvent, candidates: Iterable[Deployed]) -> Deployed | None:
    """The deployment report `signal` is about: the latest of `candidates` (the service's
    recent deployments) to its environment that started at or before it."""
    if not signal.environment:
        return None
    environment = normalize_environment(signal.environment, signal.region).name
    before = [
        d for d in candidates if d.environment == environment and d.started_at <= signal.occurred_at
    ]
    return max(before, key=lambda d: (d.started_at, d.deployment_id), default=None)


def resources_of(signal: SignalEvent) -> list[dict[str, str]]:
    """The drifting resources a report lists (`drift.resources`)."""
    listed = json.loads(signal.attributes.get(DRIFT_RESOURCES) or "[]")
    return [{k: str(v) for k, v in item.items()} for item in listed if isinstance(item, dict)]


def drift_alert(
    signal: SignalEvent, deployed: Deployed, rules: Rules, policy_version: str, now: datetime
) -> Alert:
    """The `config_drift` alert of report `signal` about `deployed`."""
    resources = resources_of(signal)
    tool = signal.attributes[DRIFT_TOOL]
    named = ", ".join(f"{r.get('address')} ({r.get('actions')})" for r in resources[:_NAMED])
    more = f" and {len(resources) - _NAMED} more" if len(resources) > _NAMED else ""
    message = (
        f"{tool} reports {len(resources)} resource(s) of {deployed.service} in "
        f"{deployed.environment} differing from code after deployment "
        f"{deployed.deployment_id}: {named}{more}"
    )
    evidence = {
        "drift_tool": tool,
        "report_event_id": signal.event_id,
        "reported_at": signal.occurred_at.isoformat(),
        "deployment_started_at": deployed.started_at.isoformat(),
        "resource_count": str(len(resources)),
        "resources": json.dumps(resources, sort_keys=True),
        "addresses": ",".join(r.get("address", "") for r in resources),
    }
    if signal.url:
        evidence["report_url"] = signal.url
    return signal_alert(
        signal, deployed, DRIFT_RULE, (message, evidence), rules, policy_version, now
    )

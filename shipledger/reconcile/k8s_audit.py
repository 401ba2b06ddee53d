"""Kubernetes audit log (`audit.k8s.io/v1` `Event`, one JSON object per line, as the API
server's log backend writes it): the completed, successful writes of a Deployment,
StatefulSet or DaemonSet.

Kept: `stage` ResponseComplete, `verb` create/update/patch, `objectRef` of API group `apps`
and resource deployments/statefulsets/daemonsets without a subresource (`status` and `scale`
are controllers and autoscalers, not deployments), `responseStatus.code` 2xx. The change
runs from `requestReceivedTimestamp` to `stageTimestamp`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from shipledger.reconcile.evidence import Entry, Observation, numbered, read_each, utc

SOURCE = "k8s-audit"
VERBS = frozenset({"create", "update", "patch"})
RESOURCES = frozenset({"deployments", "statefulsets", "daemonsets"})


def parse(name: str, lines: Iterable[tuple[int, str]]) -> Iterator[Entry]:
    """Each numbered line of audit log file `name` as an Observation, a Malformed or None."""
    return read_each(numbered(name, lines), partial(_observation, file=Path(name).name))


def _observation(line: str, location: str, file: str) -> Observation | None:
    try:
        event: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    if event.get("kind") != "Event" or not str(event.get("apiVersion")).startswith("audit.k8s.io/"):
        raise ValueError("kind/apiVersion: not an audit.k8s.io Event")
    ref = event.get("objectRef")
    if event.get("stage") != "ResponseComplete" or event.get("verb") not in VERBS:
        return None
    if not isinstance(ref, dict):
        raise ValueError("objectRef: required on a create/update/patch")
    if ref.get("apiGroup") != "apps" or ref.get("resource") not in RESOURCES:
        return None
    if ref.get("subresource"):
        return None
    status = event.get("responseStatus")
    code = status.get("code") if isinstance(status, dict) else None
    if not isinstance(code, int):
        raise ValueError("responseStatus.code: required, an integer")
    if not 200 <= code < 300:
        return None
    # A create names its object in the body, not the URL: the response object has the name.
    created = event.get("responseObject")
    named = created.get("metadata", {}).get("name") if isinstance(created, dict) else None
    namespace, workload = ref.get("namespace"), ref.get("name") or named
    if not isinstance(namespace, str) or not namespace:
        raise ValueError("objectRef.namespace: required")
    if not isinstance(workload, str) or not workload:
        raise ValueError("objectRef.name: required")
    at = utc(event.get("requestReceivedTimestamp"), "requestReceivedTimestamp")
    until = utc(event.get("stageTimestamp"), "stageTimestamp")
    return Observation(
        source=SOURCE,
        location=location,
        at=at,
        until=max(at, until),
        action=f"{event['verb']} {ref['resource']}",
        workload=workload,
        fields=(
            ("file", file),
            ("namespace", namespace),
            ("name", workload),
            ("resource", str(ref["resource"])),
        ),
    )

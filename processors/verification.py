"""The post-deploy verification window, pure: which checks and health signals fall in a
succeeded deployment's window, the score they make and the verdict (docs/verification.md).

A deployment's window opens when it succeeds (`finished_at` of its succeeded record) and
lasts its environment's `verification` window of the policy. Every signal of the tenant
about the deployment's service counts when its **event time** (`occurred_at`) is inside the
window, and it names the deployment, or no environment, or the deployment's (canonical)
environment:

- a check result (`pipeline_finished`: a synthetic check, smoke test or Checkly run) passes,
  fails or is degraded by its `outcome`;
- an alert fired or an incident opened about the service is a failed health check, its
  resolution a passed one;
- a drift report (`processors.drift`) is no check.

The score is the mean of the checks (pass 1, degraded 0.5, fail 0): at least the policy's
`verified_score` is `verified`, at least `suspect_score` is `suspect`, below it is
`failed_verification`; a window without a check is `unverified`, score 0: never silently
fine. A verdict is decided once the window closed in wall time and decided again while it
closed less than `late_for` ago, so a late check (arriving after the close, its
`occurred_at` inside the window) revises it; `changed` tells whether a verdict differs from
the one stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shipledger.processors.drift import is_drift_report
from shipledger.schemas.policy import Verdict, Verification
from shipledger.schemas.taxonomy import normalize_environment

Result = Literal["pass", "fail", "degraded"]
#: What each result weighs in the score.
_WEIGHTS: dict[Result, float] = {"pass": 1.0, "degraded": 0.5, "fail": 0.0}
_OUTCOMES: dict[str, Result] = {
    **dict.fromkeys(("success", "succeeded", "passed", "pass", "ok", "recovered"), "pass"),
    **dict.fromkeys(("failure", "failed", "fail", "error", "errored", "timed_out"), "fail"),
    "degraded": "degraded",
}
_HEALTH: dict[str, Result] = {
    "alert_fired": "fail",
    "incident_opened": "fail",
    "alert_resolved": "pass",
    "incident_resolved": "pass",
}


@dataclass(frozen=True)
class Succeeded:
    """What verification needs of a succeeded deployment (its latest record)."""

    tenant: str
    deployment_id: str
    service: str
    environment: str
    finished_at: datetime
    team: str = ""


@dataclass(frozen=True)
class Check:
    """One piece of evidence in a window: a signal and what it says."""

    event_id: str
    kind: str
    name: str
    result: Result
    occurred_at: datetime
    source: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Decision:
    """A deployment's verdict with its evidence."""

    deployment: Succeeded
    verdict: Verdict
    score: float
    checks: tuple[Check, ...]
    window_start: datetime
    window_end: datetime

    def evidence(self) -> str:
        """The evidence as stored (JSON): the window, the counts and every check, in order."""
        counts = dict.fromkeys(_WEIGHTS, 0)
        for check in self.checks:
            counts[check.result] += 1
        return json.dumps(
            {
                "window_start": self.window_start.isoformat(),
                "window_end": self.window_end.isoformat(),
                "passed": counts["pass"],
                "failed": counts["fail"],
                "degraded": counts["degraded"],
                "checks": [
                    {**asdict(c), "occurred_at": c.occurred_at.isoformat()} for c in self.checks
                ],
            },
            sort_keys=True,
        )

    def changed(self, stored: tuple[str, float, str] | None) -> bool:
        """Whether this decision differs from `stored` (verdict, score, evidence)."""
        return stored != (self.verdict, self.score, self.evidence())


def check_of(signal: Mapping[str, Any]) -> Check | None:
    """The check a signal (a SignalEvent as a dict: decoded, or a ledger row) is, if any."""
    if is_drift_report(signal.get("attributes") or {}):
        return None
    kind = str(signal["kind"])
    if kind == "pipeline_finished":
        result = _OUTCOMES.get(str(signal.get("outcome") or "").lower())
    else:
        result = _HEALTH.get(kind)
    if result is None:
        return None
    attributes = signal.get("attributes") or {}
    name = attributes.get("check.name") or signal.get("title") or kind
    return Check(
        event_id=str(signal["event_id"]),
        kind=kind,
        name=str(name),
        result=result,
        occurred_at=signal["occurred_at"],
        source=signal.get("source"),
        url=signal.get("url"),
    )


def window_of(deployment: Succeeded, rules: Verification) -> tuple[datetime, datetime]:
    """The deployment's window: from its success, its environment's length."""
    start = deployment.finished_at
    return start, start + rules.window_for(deployment.environment)


def concerns(signal: Mapping[str, Any], deployment: Succeeded) -> bool:
    """Whether `signal` is about `deployment`: it names it, or the same tenant and service and
    no environment or the same canonical one."""
    if signal.get("tenant") != deployment.tenant:
        return False
    if signal.get("deployment_id") == deployment.deployment_id:
        return True
    if signal.get("service") != deployment.service:
        return False
    environment = signal.get("environment")
    if not environment:
        return True
    try:
        return normalize_environment(environment, signal.get("region")).name == (
            deployment.environment
        )
    except ValueError:  # a name the taxonomy refuses names no deployment's environment
        return False


def score_of(checks: Iterable[Check]) -> float | None:
    """The mean weight of `checks`; None without any."""
    weights = [_WEIGHTS[c.result] for c in checks]
    return round(sum(weights) / len(weights), 4) if weights else None


def verdict_of(score: float | None, rules: Verification) -> Verdict:
    """The verdict a score makes (None: no check)."""
    if score is None:
        return "unverified"
    if score >= rules.verified_score:
        return "verified"
    if score >= rules.suspect_score:
        return "suspect"
    return "failed_verification"


def decide(
    deployment: Succeeded, signals: Iterable[Mapping[str, Any]], rules: Verification
) -> Decision:
    """The verdict of `deployment` from the `signals` in its window (others are ignored)."""
    start, end = window_of(deployment, rules)
    found = {}
    for signal in signals:
        if not start <= signal["occurred_at"] <= end or not concerns(signal, deployment):
            continue
        check = check_of(signal)
        if check is not None:
            found[check.event_id] = check  # a signal stored twice is one check
    checks = tuple(sorted(found.values(), key=lambda c: (c.occurred_at, c.event_id)))
    score = score_of(checks)
    return Decision(
        deployment,
        verdict_of(score, rules),
        score or 0.0,
        checks,
        window_start=start,
        window_end=end,
    )


def due(deployment: Succeeded, rules: Verification, now: datetime) -> bool:
    """Whether the deployment's verdict is decided (again) at `now`: its window closed, less
    than `late_for` ago."""
    _, end = window_of(deployment, rules)
    return end <= now < end + rules.late


def lookback(rules: Iterable[Verification]) -> timedelta:
    """How far back a deployment may have succeeded and still be `due`: the longest window
    plus `late_for` of `rules`."""
    return max(
        (max([r.window_for(e) for e in r.windows] + [r.window_for("")]) + r.late for r in rules),
        default=timedelta(0),
    )

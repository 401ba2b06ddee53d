"""Policy rules: pure functions `(deployment, rules) -> list[Finding]`, no I/O.

A deployment is judged once, on the first event seen of it (normally `started`), because
windows and freezes concern the moment a change began to go out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from shipledger.schemas.policy import WEEKDAYS, Rules
from shipledger.schemas.taxonomy import ENVIRONMENT_TAXONOMY


@dataclass(frozen=True)
class Subject:
    """What rules look at: a normalized deployment event."""

    environment: str
    kind: str
    change_id: str | None
    occurred_at: datetime
    service: str
    tenant: str
    environment_known: bool = True
    #: Mandatory fields the reporting system could not give (webhooks of third parties).
    missing_metadata: tuple[str, ...] = ()
    #: Who deployed, and whether a person started it by hand (`manual`) or a pipeline did.
    actor: str = ""
    trigger: str = "automated"
    #: What it ships (`processors.artifact_rules`).
    artifact_name: str | None = None
    version: str | None = None
    artifact_digest: str | None = None


@dataclass(frozen=True)
class Finding:
    """A rule's verdict: which rule, why, and the facts it used."""

    rule: str
    message: str
    evidence: dict[str, str] = field(default_factory=dict)


def missing_change_ticket(subject: Subject, rules: Rules) -> list[Finding]:
    """Environments listed in `require_change_ticket` need a change id."""
    if subject.environment not in rules.require_change_ticket or subject.change_id:
        return []
    return [
        Finding(
            "missing_change_ticket",
            f"{subject.service} deployed to {subject.environment} without a change ticket",
            {
                "environment": subject.environment,
                "required_for": ",".join(rules.require_change_ticket),
            },
        )
    ]


def out_of_window(subject: Subject, rules: Rules) -> list[Finding]:
    """Deployments outside the environment's weekly change windows (tenant time zone)."""
    windows = rules.change_windows.get(subject.environment)
    if not windows or subject.kind in rules.window_exempt_kinds:
        return []
    local = subject.occurred_at.astimezone(rules.zone)
    day = WEEKDAYS[local.weekday()]
    now = local.time()
    if any(day in w.days and w.start <= now < w.end for w in windows):
        return []
    allowed = "; ".join(f"{','.join(w.days)} {w.start:%H:%M}-{w.end:%H:%M}" for w in windows)
    return [
        Finding(
            "out_of_window",
            f"{subject.service} deployed to {subject.environment} on {day} {now:%H:%M} "
            f"{rules.timezone}, outside its change windows",
            {
                "local_time": local.isoformat(),
                "timezone": rules.timezone,
                "windows": allowed,
                "kind": subject.kind,
            },
        )
    ]


def freeze_violation(subject: Subject, rules: Rules) -> list[Finding]:
    """Deployments to a frozen environment during a freeze period."""
    return [
        Finding(
            "freeze_violation",
            f"{subject.service} deployed to {subject.environment} during freeze {f.name!r}",
            {
                "freeze": f.name,
                "freeze_start": f.start.isoformat(),
                "freeze_end": f.end.isoformat(),
                "kind": subject.kind,
            },
        )
        for f in rules.freezes
        if subject.environment in f.environments
        and f.start <= subject.occurred_at < f.end
        and subject.kind not in f.exempt_kinds
    ]


def unknown_environment(subject: Subject, rules: Rules) -> list[Finding]:
    """Environments outside the taxonomy that the policy does not name: no other rule could
    judge them, so the deployment is flagged instead of passing silently."""
    env = subject.environment
    if subject.environment_known or env in rules.known_environments:
        return []
    if env in rules.change_windows or env in rules.require_change_ticket:
        return []
    return [
        Finding(
            "unknown_environment",
            f"{subject.service} deployed to unknown environment {env!r}: no policy covers it",
            {
                "environment": env,
                "taxonomy": ",".join(ENVIRONMENT_TAXONOMY),
                "known_environments": ",".join(rules.known_environments),
            },
        )
    ]


def missing_metadata(subject: Subject, rules: Rules) -> list[Finding]:
    """Deployments reported without a mandatory field (a stock CDEvents producer sends no
    commit): recorded, and flagged here, since such a deployment cannot be traced to what it
    shipped."""
    if not subject.missing_metadata:
        return []
    missing = ",".join(subject.missing_metadata)
    return [
        Finding(
            "missing_metadata",
            f"{subject.service} deployed to {subject.environment} was reported without "
            f"{missing}: it cannot be traced to the code it shipped",
            {"missing": missing, "environment": subject.environment},
        )
    ]


Rule = Callable[[Subject, Rules], list[Finding]]
#: Every rule the judge runs, in report order. Adding a rule = a function + a line here.
RULES: tuple[Rule, ...] = (
    missing_change_ticket,
    out_of_window,
    freeze_violation,
    unknown_environment,
    missing_metadata,
)


def judge(subject: Subject, rules: Rules) -> list[Finding]:
    """All findings of all rules for one deployment."""
    return [finding for rule in RULES for finding in rule(subject, rules)]

"""Rules that judge a deployment against the change request it names: pure functions
`(subject, context, rules) -> list[Finding]`, no I/O, like `processors.rules`.

Everything is read by event time: the request as it stood when the deployment started
(`ChangeRequest.as_of(subject.occurred_at)`), whatever arrived since. An approval given after
the start does not excuse a deployment; a late-*delivered* event that happened before the
start counts (re-judgement, `processors.rejudge`, brings it in).

The rules judge deployments to environments where the policy requires a change ticket for the
deployment's kind (`Policy.rules_for(tenant, kind)`); elsewhere a change id is informational,
since dev and test deployments routinely go out under a request still being reviewed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shipledger.processors.changes import ChangeRequest
from shipledger.processors.rules import Finding, Subject
from shipledger.schemas.policy import Rules, identity_key


@dataclass(frozen=True)
class ChangeContext:
    """What the change rules need beyond the deployment: the tenant's change request that the
    deployment names (None: none reported, or no change id), and whether the deployer is a
    known directory user (looked up by the caller)."""

    request: ChangeRequest | None = None
    actor_known: bool = False


@dataclass(frozen=True)
class ScheduleDifference:
    """A deployment's actual start against its change request's planned window (the window
    as it stood at the start; both ends inclusive, either may be open)."""

    started_at: datetime
    planned_start: datetime | None
    planned_end: datetime | None

    @property
    def outside_by(self) -> timedelta:
        """Negative: started this much before the window; positive: after it; zero: inside."""
        if self.planned_start and self.started_at < self.planned_start:
            return self.started_at - self.planned_start
        if self.planned_end and self.started_at > self.planned_end:
            return self.started_at - self.planned_end
        return timedelta(0)

    @property
    def from_planned_start(self) -> timedelta | None:
        """Actual minus scheduled start (None without a planned start)."""
        return self.started_at - self.planned_start if self.planned_start else None

    def evidence(self) -> dict[str, str]:
        """The difference as alert evidence (seconds are signed, like `outside_by`)."""
        out = {
            "started_at": self.started_at.isoformat(),
            "planned_start": self.planned_start.isoformat() if self.planned_start else "",
            "planned_end": self.planned_end.isoformat() if self.planned_end else "",
            "outside_by_s": str(int(self.outside_by.total_seconds())),
        }
        if (offset := self.from_planned_start) is not None:
            out["from_planned_start_s"] = str(int(offset.total_seconds()))
        return out


def schedule_difference(started_at: datetime, request: ChangeRequest) -> ScheduleDifference | None:
    """Actual versus scheduled for a deployment started at `started_at` under `request`
    (None when the request had no planned window at that time). Every deployment with a
    change request records it, whether or not a rule fires."""
    known = request.as_of(started_at)
    if known.planned_start is None and known.planned_end is None:
        return None
    return ScheduleDifference(started_at, known.planned_start, known.planned_end)


def _governed(subject: Subject, rules: Rules) -> bool:
    return subject.environment in rules.require_change_ticket


def _judged(
    subject: Subject, context: ChangeContext, rules: Rules
) -> tuple[ChangeRequest, ChangeRequest] | None:
    """(the named request, the same as of the deployment's start) when the change rules judge
    this deployment against a reported request; None otherwise."""
    if not subject.change_id or not _governed(subject, rules):
        return None
    if context.request is None or not context.request.reported:
        return None
    return context.request, context.request.as_of(subject.occurred_at)


def change_ticket_unknown(subject: Subject, context: ChangeContext, rules: Rules) -> list[Finding]:
    """A change id is given, but no change request of that id was reported for the tenant."""
    if not subject.change_id or not _governed(subject, rules):
        return []
    if context.request is not None and context.request.reported:
        return []
    return [
        Finding(
            "change_ticket_unknown",
            f"{subject.service} deployed to {subject.environment} under change "
            f"{subject.change_id}, which matches no change request of tenant {subject.tenant}",
            {"change_id": subject.change_id, "environment": subject.environment},
        )
    ]


def change_not_approved(subject: Subject, context: ChangeContext, rules: Rules) -> list[Finding]:
    """The request was not in an approved state (`approved_states`) when the deployment
    started, by event time."""
    judged = _judged(subject, context, rules)
    if judged is None or judged[1].state in rules.approved_states:
        return []
    request, at_start = judged
    started = subject.occurred_at.isoformat()
    evidence = {
        "change_id": subject.change_id or "",
        "started_at": started,
        "state_at_start": at_start.state or "",
        "current_state": request.state or "",
        "approved_states": ",".join(rules.approved_states),
    }
    if at_start.state is None:
        first = request.first_reported_at
        evidence["first_reported_at"] = first.isoformat() if first else ""
        detail = f"did not exist yet (first reported at {evidence['first_reported_at']})"
    else:
        since = at_start.revisions[-1].occurred_at.isoformat()
        evidence["state_since"] = since
        detail = f"was {at_start.state!r} (since {since})"
    later = next(
        (
            r.occurred_at
            for r in request.revisions
            if r.occurred_at > subject.occurred_at and r.state in rules.approved_states
        ),
        None,
    )
    if later is not None:
        evidence["approved_later_at"] = later.isoformat()
        detail += f"; approved only at {later.isoformat()}, after the start"
    return [
        Finding(
            "change_not_approved",
            f"{subject.service} deployed to {subject.environment} at {started} while change "
            f"{subject.change_id} {detail}",
            evidence,
        )
    ]


def outside_change_window(subject: Subject, context: ChangeContext, rules: Rules) -> list[Finding]:
    """Approved, but started outside the request's planned window by more than
    `change_window_tolerance`."""
    judged = _judged(subject, context, rules)
    if judged is None or judged[1].state not in rules.approved_states:
        return []
    diff = schedule_difference(subject.occurred_at, judged[0])
    if diff is None or abs(diff.outside_by) <= rules.tolerance:
        return []
    direction = "before" if diff.outside_by < timedelta(0) else "after"
    evidence = diff.evidence()
    return [
        Finding(
            "outside_change_window",
            f"{subject.service} deployed to {subject.environment} {abs(diff.outside_by)} "
            f"{direction} change {subject.change_id}'s planned window "
            f"({evidence['planned_start'] or 'open'} to {evidence['planned_end'] or 'open'})",
            {
                "change_id": subject.change_id or "",
                "tolerance": rules.change_window_tolerance,
                **evidence,
            },
        )
    ]


def change_scope_mismatch(subject: Subject, context: ChangeContext, rules: Rules) -> list[Finding]:
    """The request names services or environments, and this deployment is not among them."""
    judged = _judged(subject, context, rules)
    if judged is None:
        return []
    at_start = judged[1]
    outside = []
    if at_start.services and subject.service not in at_start.services:
        outside.append(f"service {subject.service} is not in {', '.join(at_start.services)}")
    if at_start.environments and subject.environment not in at_start.environments:
        outside.append(
            f"environment {subject.environment} is not in {', '.join(at_start.environments)}"
        )
    if not outside:
        return []
    return [
        Finding(
            "change_scope_mismatch",
            f"{subject.service} deployed to {subject.environment} outside the scope of change "
            f"{subject.change_id}: {'; '.join(outside)}",
            {
                "change_id": subject.change_id or "",
                "services": ",".join(at_start.services),
                "environments": ",".join(at_start.environments),
            },
        )
    ]


def unattributed_manual_deploy(
    subject: Subject, context: ChangeContext, rules: Rules
) -> list[Finding]:
    """A manual deployment to a ticket-required environment by an actor who is neither a
    directory user nor one of the policy's `service_accounts`."""
    if subject.trigger != "manual" or not _governed(subject, rules) or context.actor_known:
        return []
    if identity_key(subject.actor) in {identity_key(a) for a in rules.service_accounts}:
        return []
    return [
        Finding(
            "unattributed_manual_deploy",
            f"{subject.service} was deployed to {subject.environment} by hand by "
            f"{subject.actor or 'an unnamed actor'}, who is not a known identity",
            {"actor": subject.actor, "trigger": subject.trigger},
        )
    ]


ChangeRule = Callable[[Subject, ChangeContext, Rules], list[Finding]]
#: Every change rule, in report order. Adding one = a function + a line here (and a
#: resolution reason in `processors.rejudge`).
CHANGE_RULES: tuple[ChangeRule, ...] = (
    change_ticket_unknown,
    change_not_approved,
    outside_change_window,
    change_scope_mismatch,
    unattributed_manual_deploy,
)
CHANGE_RULE_NAMES: frozenset[str] = frozenset(rule.__name__ for rule in CHANGE_RULES)


def judge_change(subject: Subject, context: ChangeContext, rules: Rules) -> list[Finding]:
    """All findings of the change rules for one deployment; `rules` as returned by
    `Policy.rules_for(tenant, kind)`."""
    return [finding for rule in CHANGE_RULES for finding in rule(subject, context, rules)]

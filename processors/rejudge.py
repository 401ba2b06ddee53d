"""Re-judgement of a deployment when its change request changes, pure.

A change request or approval often arrives after the deployment it covers (webhooks are late
and out of order). The deployment is then judged again by the change rules; the difference
with what is open is the output: findings to raise (new) and open findings to resolve (with
the reason). An open finding that still holds is neither raised again nor edited: alerts are
immutable, a resolution is a new row naming the alert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shipledger.processors.change_rules import (
    CHANGE_RULE_NAMES,
    ChangeContext,
    judge_change,
    schedule_difference,
)
from shipledger.processors.changes import ChangeRequest
from shipledger.processors.rules import Finding, Subject
from shipledger.schemas.policy import Rules


@dataclass(frozen=True)
class Resolution:
    """An open finding that no longer holds, and why."""

    rule: str
    reason: str


@dataclass(frozen=True)
class Rejudgement:
    """What to emit after judging a deployment again: new findings and resolutions."""

    raised: tuple[Finding, ...] = ()
    resolved: tuple[Resolution, ...] = ()


def rejudge(
    subject: Subject, open_findings: Iterable[Finding], context: ChangeContext, rules: Rules
) -> Rejudgement:
    """Judge `subject` again by the change rules against `context` and compare with its
    `open_findings` (raised and not yet resolved; other rules' findings are left alone).

    One finding per rule and deployment: a rule that is open and still fires is not raised
    again, even if its evidence changed (a request rescheduled, still missed)."""
    open_rules = {f.rule for f in open_findings if f.rule in CHANGE_RULE_NAMES}
    now = judge_change(subject, context, rules)
    firing = {f.rule for f in now}
    raised = tuple(f for f in now if f.rule not in open_rules)
    resolved = tuple(
        Resolution(rule, _reason(rule, subject, context, rules))
        for rule in sorted(open_rules - firing)
    )
    return Rejudgement(raised, resolved)


def _reason(rule: str, subject: Subject, context: ChangeContext, rules: Rules) -> str:
    if subject.environment not in rules.require_change_ticket:
        return (
            f"{subject.environment} no longer requires a change ticket for "
            f"{subject.kind} deployments"
        )
    if rule in _REASONS:
        return _REASONS[rule](subject, context, rules)
    # The other rules judge the named request, as it stood when the deployment started.
    if context.request is None:
        return f"change request {subject.change_id} is not known: change_ticket_unknown holds"
    request = context.request
    return _REQUEST_REASONS[rule](subject, request, request.as_of(subject.occurred_at), rules)


def _unknown(subject: Subject, context: ChangeContext, rules: Rules) -> str:
    first = context.request.first_reported_at if context.request else None
    return (
        f"change request {subject.change_id} was reported "
        f"(first event at {first.isoformat() if first else 'unknown'})"
    )


def _approved(
    subject: Subject, request: ChangeRequest, at_start: ChangeRequest, rules: Rules
) -> str:
    return (
        f"change request {subject.change_id} was {at_start.state!r} when the deployment "
        f"started at {subject.occurred_at.isoformat()}, by event time (reported late)"
    )


def _window(subject: Subject, request: ChangeRequest, at_start: ChangeRequest, rules: Rules) -> str:
    if at_start.state not in rules.approved_states:
        return (
            f"change request {subject.change_id} was not approved at the start "
            f"({at_start.state or 'not yet reported'}): change_not_approved applies instead"
        )
    diff = schedule_difference(subject.occurred_at, request)
    if diff is None:
        return f"change request {subject.change_id} had no planned window at the start"
    return (
        f"the start {subject.occurred_at.isoformat()} is within change request "
        f"{subject.change_id}'s planned window (off by {abs(diff.outside_by)}, tolerance "
        f"{rules.change_window_tolerance})"
    )


def _scope(subject: Subject, context: ChangeContext, rules: Rules) -> str:
    return (
        f"change request {subject.change_id}, as of the start, covers {subject.service} in "
        f"{subject.environment} (or names no scope)"
    )


def _attributed(subject: Subject, context: ChangeContext, rules: Rules) -> str:
    return f"{subject.actor} is a known identity (directory user or service account)"


#: Why a rule's open finding no longer holds, by rule; every change rule has one, here or in
#: `_REQUEST_REASONS`.
_REASONS: dict[str, Callable[[Subject, ChangeContext, Rules], str]] = {
    "change_ticket_unknown": _unknown,
    "change_scope_mismatch": _scope,
    "unattributed_manual_deploy": _attributed,
}
#: The same for the rules judged against the request (given, and as of the start), when known.
_REQUEST_REASONS: dict[str, Callable[[Subject, ChangeRequest, ChangeRequest, Rules], str]] = {
    "change_not_approved": _approved,
    "outside_change_window": _window,
}

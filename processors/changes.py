"""The state of a change request, folded from its ChangeEvents by event time, pure.

Change-management systems deliver late, out of order and more than once (webhooks retry). The
state is therefore the *set* of what was reported, ordered by `occurred_at` when read: folding
the same events in any order, any number of times, gives an equal `ChangeRequest`. Judgement
reads it as of a moment (`as_of`): what the request was when a deployment started, whatever
arrived since.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from shipledger.fields import copied
from shipledger.schemas.family_models import (
    APPROVAL_SOURCE,
    ApprovalDecision,
    ChangeEvent,
    ChangeState,
)
from shipledger.schemas.taxonomy import normalize_environment


@dataclass(frozen=True)
class Revision:
    """What one ChangeEvent said about the request (environments canonical)."""

    event_id: str
    occurred_at: datetime
    state: ChangeState
    system: str
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    services: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    actor: str | None = None
    requested_by: str | None = None


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval decision. `groups` are the directory groups the approver was verified in
    when shipledger recorded it, `verified_by` the identity provider (both empty for decisions
    the change system reported itself)."""

    approver: str
    decision: ApprovalDecision
    decided_at: datetime
    groups: tuple[str, ...] = ()
    verified_by: str | None = None


def _revision_order(r: Revision) -> tuple[datetime, str]:
    return (r.occurred_at, r.event_id)


def _approval_order(a: ApprovalRecord) -> tuple[datetime, str, str, tuple[str, ...], str]:
    return (a.decided_at, a.approver, a.decision, a.groups, a.verified_by or "")


@dataclass(frozen=True)
class ChangeRequest:
    """Everything reported about one change request of one tenant: its revisions (one per
    event, by event time) and every approval decision (by decision time)."""

    tenant: str
    change_id: str
    revisions: tuple[Revision, ...] = ()
    approvals: tuple[ApprovalRecord, ...] = ()

    def add(self, event: ChangeEvent) -> ChangeRequest:
        """This state with `event` folded in (a no-op for an event already folded)."""
        if (event.tenant, event.change_id) != (self.tenant, self.change_id):
            raise ValueError(
                f"event {event.event_id} is about {event.tenant}/{event.change_id}, "
                f"not {self.tenant}/{self.change_id}"
            )
        approvals = [
            ApprovalRecord(a.approver, a.decision, a.decided_at, tuple(a.groups), a.verified_by)
            for a in event.approvals
        ]
        # A recorded approval restates the state the approver saw: not a revision, or it would
        # mask a state change that happened before it but is reported later.
        revisions = [] if event.source == APPROVAL_SOURCE else [revision_of(event)]
        return self._merged(revisions, approvals)

    def add_approvals(self, approvals: Iterable[ApprovalRecord]) -> ChangeRequest:
        """This state with verified approvals (recorded by shipledger itself) folded in."""
        return self._merged([], approvals)

    def _merged(
        self, revisions: Iterable[Revision], approvals: Iterable[ApprovalRecord]
    ) -> ChangeRequest:
        by_id = {r.event_id: r for r in self.revisions}
        for r in revisions:
            # One event id is one event: a redelivery is equal. Should two differ, keep the
            # greater, so the result still does not depend on arrival order.
            kept = by_id.get(r.event_id)
            if kept is None or repr(r) > repr(kept):
                by_id[r.event_id] = r
        return replace(
            self,
            revisions=tuple(sorted(by_id.values(), key=_revision_order)),
            approvals=tuple(sorted({*self.approvals, *approvals}, key=_approval_order)),
        )

    def as_of(self, when: datetime) -> ChangeRequest:
        """The request as it stood at `when`: revisions and decisions up to and including it."""
        return replace(
            self,
            revisions=tuple(r for r in self.revisions if r.occurred_at <= when),
            approvals=tuple(a for a in self.approvals if a.decided_at <= when),
        )

    @property
    def reported(self) -> bool:
        """Whether any event of the request is known (in this view)."""
        return bool(self.revisions)

    @property
    def state(self) -> ChangeState | None:
        """The state after the latest event by event time (None before the first)."""
        return self.revisions[-1].state if self.revisions else None

    @property
    def history(self) -> tuple[tuple[datetime, ChangeState], ...]:
        """(event time, state) of every revision, oldest first."""
        return tuple((r.occurred_at, r.state) for r in self.revisions)

    @property
    def first_reported_at(self) -> datetime | None:
        """Event time of the earliest revision."""
        return self.revisions[0].occurred_at if self.revisions else None

    # A state-only notification (a transition webhook) carries no window or scope: each of
    # these is taken from the latest revision that states it, not blanked by later ones.
    @property
    def planned_start(self) -> datetime | None:
        """Start of the planned window, per the latest revision that gives one."""
        return next((r.planned_start for r in reversed(self.revisions) if r.planned_start), None)

    @property
    def planned_end(self) -> datetime | None:
        """End of the planned window, per the latest revision that gives one."""
        return next((r.planned_end for r in reversed(self.revisions) if r.planned_end), None)

    @property
    def services(self) -> tuple[str, ...]:
        """Services the request covers (empty: it names none)."""
        return next((r.services for r in reversed(self.revisions) if r.services), ())

    @property
    def environments(self) -> tuple[str, ...]:
        """Canonical environments the request covers (empty: it names none)."""
        return next((r.environments for r in reversed(self.revisions) if r.environments), ())

    @property
    def requested_by(self) -> str | None:
        """Who raised the request: as the latest revision naming it says (`requested_by`),
        else the actor of its earliest `opened` revision, if reported."""
        named = next((r.requested_by for r in reversed(self.revisions) if r.requested_by), None)
        if named:
            return named
        return next((r.actor for r in self.revisions if r.state == "opened" and r.actor), None)

    def decisions(self) -> dict[str, ApprovalRecord]:
        """Each approver's latest decision (approvers compared as written)."""
        latest: dict[str, ApprovalRecord] = {}
        for a in self.approvals:  # ordered by decision time: later ones win
            latest[a.approver] = a
        return latest


def revision_of(event: ChangeEvent) -> Revision:
    """The revision one ChangeEvent reports."""
    return copied(
        Revision,
        event,
        services=tuple(sorted(set(event.services))),
        environments=tuple(sorted({normalize_environment(e).name for e in event.environments})),
    )


def fold(events: Iterable[ChangeEvent]) -> ChangeRequest | None:
    """The state of the one change request `events` are about (None for no events)."""
    state: ChangeRequest | None = None
    for event in events:
        state = (state or ChangeRequest(event.tenant, event.change_id)).add(event)
    return state

"""Whether the approvals of a change request satisfy the policy for one deployment, pure.

Used by judgement (at the deployment's start, by event time) and by the pre-deploy gate (now).
Who an approver is and which groups they belong to was verified when the approval was
recorded (`shipledger.producers.approvals`); this module only counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from shipledger.processors.changes import ApprovalRecord
from shipledger.schemas.policy import ApprovalRequirement, same_person


@dataclass(frozen=True)
class Shortfall:
    """One approval requirement not met: who counted, and whose approval did not."""

    requirement: str
    group: str
    needed: int
    approvers: tuple[str, ...]
    #: Approvers of the group whose approval does not count, with why (four eyes).
    not_counted: tuple[tuple[str, str], ...] = ()

    @property
    def message(self) -> str:
        """One line for an alert or a gate refusal."""
        found = ", ".join(self.approvers) or "none"
        text = (
            f"{self.requirement}: needs {self.needed} approval(s) from group "
            f"{self.group!r}, has {len(self.approvers)} ({found})"
        )
        for who, why in self.not_counted:
            text += f"; {who} does not count: {why}"
        return text


def standing_approvals(approvals: Iterable[ApprovalRecord], at: datetime) -> list[ApprovalRecord]:
    """The approvals that stand at `at`: each approver's latest decision up to `at`, where
    that decision is `approved` (a later rejection withdraws an approval)."""
    latest: dict[str, ApprovalRecord] = {}
    for a in sorted(approvals, key=lambda a: (a.decided_at, a.decision)):
        if a.decided_at <= at:
            latest[a.approver.strip().casefold()] = a
    return [a for a in latest.values() if a.decision == "approved"]


def missing_approvals(
    requirements: Sequence[ApprovalRequirement],
    approvals: Iterable[ApprovalRecord],
    deployer: str,
    at: datetime,
) -> list[Shortfall]:
    """The requirements that the approvals standing at `at` do not meet (empty: satisfied).

    An approval counts for a requirement when its approver was verified in the requirement's
    group; with `four_eyes`, never the deployer's own (`same_person`)."""
    standing = standing_approvals(approvals, at)
    shortfalls = []
    for req in requirements:
        in_group = [a for a in standing if req.group in a.groups]
        excluded = [a for a in in_group if req.four_eyes and same_person(a.approver, deployer)]
        counted = _distinct_people(a.approver for a in in_group if a not in excluded)
        if len(counted) < req.count:
            why = f"they deploy this change themselves ({deployer}; four eyes)"
            shortfalls.append(
                Shortfall(
                    req.name,
                    req.group,
                    req.count,
                    counted,
                    tuple(sorted((a.approver, why) for a in excluded)),
                )
            )
    return shortfalls


def _distinct_people(approvers: Iterable[str]) -> tuple[str, ...]:
    # `alice` and `alice@corp.example` are one approver, not two of the `count` needed.
    people: list[str] = []
    for name in sorted(approvers):
        if not any(same_person(name, other) for other in people):
            people.append(name)
    return tuple(people)

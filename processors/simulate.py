"""A policy simulation, pure: the first events of past deployments judged again under a
candidate policy, by the stream's own chain (`processors.step.process`, against the
enrichment view folded from every change, catalog and artifact event), compared with the
alerts that hold in the ledger (alerts no resolution names). `shipledger policy simulate`
reads both from the ledger and prints the result.

Judged against the view as it stands now, as a re-judgement would (`processors.late_changes`):
the change rules read a change request as it stood when the deployment started, so a request
that arrived late counts as it did in the stream once re-judged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from shipledger.processors.enrichment import Lookups
from shipledger.processors.step import nobody_known, process
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import Policy
from shipledger.schemas.validation import Rejected

#: (tenant, first event id) of a deployment: what its alerts name.
Judged = tuple[str, str]


class HeldAlert(Protocol):
    """What the comparison reads of a stored alert or resolution (the ledger reader's
    `StoredAlert` has these)."""

    @property
    def alert_id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def team(self) -> str | None: ...
    @property
    def resolution(self) -> bool: ...
    @property
    def resolves(self) -> str | None: ...


@dataclass(frozen=True)
class RuleChange:
    """One rule that would fire (`added`) or no longer fire (`removed`) on one deployment."""

    change: Literal["added", "removed"]
    rule: str
    team: str | None
    tenant: str
    deployment_id: str
    event_id: str


@dataclass(frozen=True)
class Simulation:
    """What a candidate policy would change over the deployments judged."""

    policy_version: str
    deployments: int
    #: Alerts that hold now, and that would under the candidate.
    held: int
    would_hold: int
    changes: list[RuleChange] = field(default_factory=list)
    #: First events the chain rejects (never judged in the stream either), by event id.
    rejected: list[str] = field(default_factory=list)

    def by_rule_and_team(self) -> list[tuple[str, str | None, int, int]]:
        """(rule, team, added, removed) per rule and team with a change, sorted."""
        added = Counter((c.rule, c.team) for c in self.changes if c.change == "added")
        removed = Counter((c.rule, c.team) for c in self.changes if c.change == "removed")
        keys = sorted(set(added) | set(removed), key=lambda k: (k[0], k[1] or ""))
        return [(rule, team, added[(rule, team)], removed[(rule, team)]) for rule, team in keys]


def holding(alerts: Iterable[HeldAlert]) -> dict[Judged, dict[str, str | None]]:
    """The rules that hold per judged deployment (with the team their alert names): alerts
    no resolution names."""
    stored = list(alerts)
    resolved = {a.resolves for a in stored if a.resolution}
    held: dict[Judged, dict[str, str | None]] = {}
    for alert in stored:
        if not alert.resolution and alert.alert_id not in resolved:
            held.setdefault((alert.tenant, alert.event_id), {})[alert.rule] = alert.team
    return held


def simulate(
    first_events: Iterable[DeploymentEvent],
    held: Mapping[Judged, Mapping[str, str | None]],
    candidate: Policy,
    view: Lookups,
    now: datetime,
    known_actor: Callable[[str], bool] = nobody_known,
) -> Simulation:
    """Judge each deployment's first event under `candidate` against `view` and the
    directory `known_actor` asks (as the processors do), and compare with the rules `held`
    for it (`holding`)."""
    changes: list[RuleChange] = []
    rejected: list[str] = []
    deployments = held_count = would_hold = 0
    for event in first_events:
        try:
            alerts = process(
                event, None, candidate, now=now, view=view, known_actor=known_actor
            ).alerts
        except Rejected:
            rejected.append(event.event_id)
            continue
        deployments += 1
        before = held.get((event.tenant, event.event_id), {})
        after = {a.rule: a.team for a in alerts}
        held_count += len(before)
        would_hold += len(after)
        ids = (event.tenant, event.deployment_id, event.event_id)
        changes += [RuleChange("added", r, after[r], *ids) for r in sorted(after.keys() - before)]
        changes += [
            RuleChange("removed", r, before[r], *ids) for r in sorted(before.keys() - after)
        ]
    return Simulation(
        candidate.full_version, deployments, held_count, would_hold, changes, rejected
    )

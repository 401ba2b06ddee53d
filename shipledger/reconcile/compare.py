"""The comparison of observed changes with the ledger's deployments (pure; docs/reconcile.md).

Observations of one target (tenant, service, environment) less than the tolerance apart are
one change (a rollout writes its workload a few times). Each change is paired with at most one
deployment of its service and environment and each deployment with at most one change, the
closest pairs first; the distance is the gap between the change's span and the deployment's
(started_at to finished_at), 0 when they overlap. A pair within the tolerance is a match; a
pair farther apart but within the match window is a **timing** disagreement (matched, but the
times differ); a change with no deployment within the match window is **unreported**; a
succeeded deployment in the period, of a service and environment the evidence covers, that no
change pairs with is **unobserved**. The completeness of a team is its matched changes (timing
disagreements included) over all its observed changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shipledger.reconcile.evidence import Observation
from shipledger.reconcile.mapping import Target

KINDS = ("unreported", "unobserved", "timing")


@dataclass(frozen=True)
class LedgerDeployment:
    """A deployment as the ledger last recorded it (its latest record)."""

    deployment_id: str
    service: str
    environment: str
    team: str
    status: str
    started_at: datetime
    finished_at: datetime | None

    @property
    def ended_at(self) -> datetime:
        """When it finished, or started when it has not (yet)."""
        return self.finished_at or self.started_at


@dataclass(frozen=True)
class Change:
    """Observations of one target close together: one change, from `at` to `until`."""

    source: str
    target: Target
    at: datetime
    until: datetime
    locations: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """One disagreement between the evidence and the ledger."""

    kind: str
    source: str
    tenant: str
    service: str
    environment: str
    team: str
    observed_at: datetime | None
    deployment_id: str
    evidence: str
    detail: str


@dataclass(frozen=True)
class Completeness:
    """Of a team's observed changes, how many the ledger has (`team` '' when unknown)."""

    team: str
    observed: int
    matched: int

    @property
    def ratio(self) -> float:
        """matched / observed (1.0 when nothing was observed)."""
        return round(self.matched / self.observed, 4) if self.observed else 1.0


@dataclass(frozen=True)
class Comparison:
    """The findings (in KINDS order, then by service, environment and time) and the
    completeness per team of the changes observed in the period."""

    changes: int
    matched: int
    findings: list[Finding]
    completeness: list[Completeness]


@dataclass(frozen=True)
class Scope:
    """One run: evidence of `source` about `tenant`, changes in [`start`, `end`)."""

    source: str
    tenant: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Tolerances:
    """How far apart a change and its deployment may be: `tolerance` for a match,
    `match_window` for a timing disagreement (beyond: unreported, unobserved)."""

    tolerance: timedelta
    match_window: timedelta


def group_changes(
    observed: Iterable[tuple[Observation, Target]], tolerance: timedelta
) -> list[Change]:
    """The observations as changes: those of one target less than `tolerance` after the
    previous one join its change. Sorted by time."""
    by_target: dict[Target, list[Observation]] = defaultdict(list)
    for observation, target in observed:
        by_target[target].append(observation)
    changes: list[Change] = []
    for target, observations in by_target.items():
        observations.sort(key=lambda o: o.at)  # stable: ties stay in file order
        current: list[Observation] = []
        until = observations[0].until  # the latest end of the current change's observations
        for observation in observations:
            if current and observation.at - until >= tolerance:
                changes.append(_change(target, current, until))
                current = []
            until = max(until, observation.until) if current else observation.until
            current.append(observation)
        changes.append(_change(target, current, until))
    return sorted(changes, key=lambda c: (c.at, c.target.service, c.target.environment))


def _change(target: Target, observations: Sequence[Observation], until: datetime) -> Change:
    return Change(
        source=observations[0].source,
        target=target,
        at=observations[0].at,
        until=until,
        locations=tuple(o.location for o in observations),
    )


def _gap(change: Change, deployment: LedgerDeployment) -> timedelta:
    """The time between the change's span and the deployment's (0 when they overlap)."""
    zero = timedelta(0)
    return max(zero, deployment.started_at - change.until, change.at - deployment.ended_at)


def compare(
    scope: Scope,
    changes: Sequence[Change],
    deployments: Sequence[LedgerDeployment],
    covered: Callable[[str, str], bool],
    teams: Mapping[str, str],
    tolerances: Tolerances,
) -> Comparison:
    """Compare the `changes` of the scope's tenant in its period with `deployments` (of that
    tenant, read for the period widened by the match window); `covered(service, environment)`
    says whether the evidence sees that service there even if it shows no change of it,
    `teams` the team of a service the ledger knows (for changes it has no deployment of)."""
    start, end = scope.start, scope.end
    inside = [c for c in changes if start <= c.at < end and c.target.tenant == scope.tenant]
    by_key: dict[tuple[str, str], list[LedgerDeployment]] = defaultdict(list)
    for deployment in deployments:
        by_key[(deployment.service, deployment.environment)].append(deployment)
    pairs = sorted(
        (_gap(c, d), c.at, d.deployment_id, i, d)
        for i, c in enumerate(inside)
        for d in by_key.get((c.target.service, c.target.environment), ())
        if _gap(c, d) <= tolerances.match_window
    )
    paired: dict[int, tuple[LedgerDeployment, timedelta]] = {}
    taken: set[str] = set()
    for gap, _, deployment_id, index, deployment in pairs:
        if index in paired or deployment_id in taken:
            continue
        paired[index] = (deployment, gap)
        taken.add(deployment_id)
    findings: list[Finding] = []
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for index, change in enumerate(inside):
        match = paired.get(index)
        team = match[0].team if match else teams.get(change.target.service, "")
        counts[team][0] += 1
        if match is None:
            findings.append(
                _finding(
                    "unreported",
                    change,
                    None,
                    team,
                    f"no deployment within {_minutes(tolerances.match_window)} of it in the ledger",
                )
            )
            continue
        counts[team][1] += 1
        deployment, gap = match
        if gap > tolerances.tolerance:
            findings.append(
                _finding(
                    "timing",
                    change,
                    deployment,
                    team,
                    f"{_minutes(gap)} outside the ledger's "
                    f"{_span(deployment.started_at, deployment.ended_at)}",
                )
            )
    seen = {(c.target.service, c.target.environment) for c in inside}
    for deployment in deployments:
        key = (deployment.service, deployment.environment)
        if (
            deployment.status == "succeeded"
            and start <= deployment.started_at < end
            and deployment.deployment_id not in taken
            and (key in seen or covered(*key))
        ):
            findings.append(
                Finding(
                    "unobserved",
                    scope.source,
                    scope.tenant,
                    deployment.service,
                    deployment.environment,
                    deployment.team,
                    None,
                    deployment.deployment_id,
                    "",
                    f"succeeded {_span(deployment.started_at, deployment.ended_at)}, "
                    "never seen in the evidence",
                )
            )
    findings.sort(
        key=lambda f: (
            KINDS.index(f.kind),
            f.service,
            f.environment,
            f.observed_at or start,
            f.deployment_id,
        )
    )
    completeness = [Completeness(team, n, m) for team, (n, m) in sorted(counts.items())]
    return Comparison(len(inside), len(paired), findings, completeness)


def _finding(
    kind: str, change: Change, deployment: LedgerDeployment | None, team: str, detail: str
) -> Finding:
    more = f" (+{len(change.locations) - 1} more)" if len(change.locations) > 1 else ""
    return Finding(
        kind=kind,
        source=change.source,
        tenant=change.target.tenant,
        service=change.target.service,
        environment=change.target.environment,
        team=team,
        observed_at=change.at,
        deployment_id=deployment.deployment_id if deployment else "",
        evidence=change.locations[0] + more,
        detail=f"observed {_span(change.at, change.until)}, {detail}",
    )


def _span(at: datetime, until: datetime) -> str:
    text = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return text if until == at else f"{text}..{until.strftime('%H:%M:%SZ')}"


def _minutes(gap: timedelta) -> str:
    return f"{gap.total_seconds() / 60:.1f} min"

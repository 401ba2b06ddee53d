"""Incident triage: which recent deployments most likely caused an incident, and why. Pure.

A suspect is a deployment of the incident's service or of a service it depends on (directly
or through others), started within the lookback window before the incident. Its score is the
sum of six named parts, each a share of its weight (`WEIGHTS`, 100 points in all), so every
ranking explains itself: how close in time (a half-life of `HALF_LIFE_MIN` minutes), how far
along the dependencies (the service itself counts fully, a direct dependency half), how big
the change (commits shipped, log scale), what post-deploy verification said (or the deploy's
own failure), whether configuration drift followed, and whether it was rolled back since.
An input the ledger does not have (no change set, no verdict) scores 0 and says "unknown".
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

#: Points per part; a suspect's score is at most their sum (100).
WEIGHTS: Mapping[str, float] = {
    "time_proximity": 35.0,
    "dependency_distance": 20.0,
    "change_size": 10.0,
    "verification": 15.0,
    "config_drift": 10.0,
    "rollback": 10.0,
}
#: A deployment this many minutes before the incident gets half the time points.
HALF_LIFE_MIN = 60.0
#: A change of this many commits (or more) gets the full change-size points.
LARGE_CHANGE_COMMITS = 32
#: Share of the verification points per verdict (`deployment_verifications.verdict`).
VERDICT_SHARE: Mapping[str, float] = {
    "failed_verification": 1.0,
    "suspect": 0.6,
    "unverified": 0.25,
    "verified": 0.0,
}
#: Share when no verdict exists but the deployment itself failed.
FAILED_STATUS_SHARE = 0.8
#: How far along the dependencies suspects are looked for.
DEFAULT_MAX_DEPTH = 3


def dependency_distances(
    dependencies: Mapping[str, Iterable[str]], service: str, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, int]:
    """Each service `service` depends on within `max_depth` hops (cycles allowed) -> its
    distance in hops, `service` itself at 0; `dependencies` maps a service to those it
    names as its dependencies (the catalog's)."""
    distances = {service: 0}
    todo = deque([service])
    while todo:
        current = todo.popleft()
        if distances[current] >= max_depth:
            continue
        for dependency in dependencies.get(current, ()):
            if dependency not in distances:
                distances[dependency] = distances[current] + 1
                todo.append(dependency)
    return distances


@dataclass(frozen=True)
class Candidate:
    """A deployment that may have caused the incident, with every input of its score.

    `commit_count`, `verdict`: None when the ledger has no change set / verification for it;
    `drift`: the drifting resources of its `config_drift` alerts; `rolled_back_by`: the
    deployment that rolled it back ('' when its own status says so), None when none did."""

    deployment_id: str
    service: str
    environment: str
    started_at: datetime
    status: str
    commit_sha: str
    version: str | None
    distance: int
    commit_count: int | None = None
    verdict: str | None = None
    drift: tuple[str, ...] = ()
    rolled_back_by: str | None = None


@dataclass(frozen=True)
class Part:
    """One named part of a score: its points (of `weight`) and the fact behind them."""

    name: str
    points: float
    weight: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The part as the API and `--format json` show it: its fields."""
        return asdict(self)


@dataclass(frozen=True)
class Suspect:
    """A scored candidate; `score` is the sum of `parts`' points."""

    candidate: Candidate
    parts: tuple[Part, ...] = field(default_factory=tuple)

    @property
    def score(self) -> float:
        """The sum of the parts' points, rounded to a tenth."""
        return round(sum(p.points for p in self.parts), 1)

    @property
    def why(self) -> str:
        """The facts that earned points, biggest first (`; `-separated)."""
        earning = sorted((p for p in self.parts if p.points > 0), key=lambda p: -p.points)
        return "; ".join(f"{p.detail} (+{p.points:g})" for p in earning)

    def to_json(self) -> dict[str, Any]:
        """The suspect as the API and `--format json` show it."""
        c = self.candidate
        return {
            "deployment_id": c.deployment_id,
            "service": c.service,
            "environment": c.environment,
            "started_at": c.started_at.isoformat(),
            "status": c.status,
            "commit_sha": c.commit_sha,
            "version": c.version,
            "distance": c.distance,
            "score": self.score,
            "why": self.why,
            "parts": [p.to_json() for p in self.parts],
        }


def _points(name: str, share: float) -> float:
    return round(WEIGHTS[name] * max(0.0, min(1.0, share)), 1)


def _part(name: str, share: float, detail: str) -> Part:
    return Part(name, _points(name, share), WEIGHTS[name], detail)


def _minutes(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def _minutes_before(c: Candidate, at: datetime) -> float:
    return max(0.0, (at - c.started_at).total_seconds() / 60)


# Each part's share of its weight apart from the words saying why: ranking weighs every
# candidate (a thousand in a busy day), only the few it returns are explained.
def _time_share(c: Candidate, at: datetime) -> float:
    share: float = 0.5 ** (_minutes_before(c, at) / HALF_LIFE_MIN)
    return share


def _distance_share(c: Candidate, at: datetime) -> float:
    return 1 / (1 + c.distance)


def _change_share(c: Candidate, at: datetime) -> float:
    if c.commit_count is None:
        return 0.0
    return math.log2(1 + c.commit_count) / math.log2(1 + LARGE_CHANGE_COMMITS)


def _verification_share(c: Candidate, at: datetime) -> float:
    if c.verdict is not None:
        return VERDICT_SHARE.get(c.verdict, 0.0)
    if c.status in ("failed", "rolled_back"):
        return FAILED_STATUS_SHARE
    return 0.0


def _drift_share(c: Candidate, at: datetime) -> float:
    return 1.0 if c.drift else 0.0


def _rollback_share(c: Candidate, at: datetime) -> float:
    return 0.0 if c.rolled_back_by is None else 1.0


# Each part's words: only the few suspects returned are explained.
def _time_detail(c: Candidate, at: datetime, service: str) -> str:
    return f"deployed {_minutes(_minutes_before(c, at))} before the incident"


def _distance_detail(c: Candidate, at: datetime, service: str) -> str:
    if c.distance == 0:
        return f"{service} itself"
    if c.distance == 1:
        return f"a direct dependency of {service}"
    return f"a dependency of {service}, {c.distance} hops away"


def _change_detail(c: Candidate, at: datetime, service: str) -> str:
    if c.commit_count is None:
        return "change size unknown"
    return f"{c.commit_count} commit{'' if c.commit_count == 1 else 's'} shipped"


def _verification_detail(c: Candidate, at: datetime, service: str) -> str:
    if c.verdict is not None:
        return f"verification: {c.verdict}"
    if c.status in ("failed", "rolled_back"):
        return f"deployment {c.status}"
    return "no verification verdict"


def _drift_detail(c: Candidate, at: datetime, service: str) -> str:
    return f"configuration drift: {', '.join(c.drift)}" if c.drift else "no configuration drift"


def _rollback_detail(c: Candidate, at: datetime, service: str) -> str:
    if c.rolled_back_by is None:
        return "not rolled back"
    return f"rolled back afterwards{f' by {c.rolled_back_by}' if c.rolled_back_by else ''}"


#: The parts in the order a suspect lists them: name, share, words.
_Share = Callable[[Candidate, datetime], float]
_Detail = Callable[[Candidate, datetime, str], str]
_PARTS: tuple[tuple[str, _Share, _Detail], ...] = (
    ("time_proximity", _time_share, _time_detail),
    ("dependency_distance", _distance_share, _distance_detail),
    ("change_size", _change_share, _change_detail),
    ("verification", _verification_share, _verification_detail),
    ("config_drift", _drift_share, _drift_detail),
    ("rollback", _rollback_share, _rollback_detail),
)


def score(candidate: Candidate, at: datetime, service: str) -> Suspect:
    """`candidate` scored for an incident of `service` at `at` (see the module docstring)."""
    return Suspect(
        candidate,
        tuple(
            _part(name, share(candidate, at), detail(candidate, at, service))
            for name, share, detail in _PARTS
        ),
    )


def _score(c: Candidate, at: datetime) -> float:
    """`score(c, at, ...).score` without the words: the same points summed in the same order."""
    return round(sum(_points(name, share(c, at)) for name, share, _ in _PARTS), 1)


def rank(candidates: Sequence[Candidate], at: datetime, service: str, limit: int) -> list[Suspect]:
    """The `limit` best-scored suspects, highest first (ties: the latest deployment first,
    then by deployment id, so the same ledger always ranks the same, whatever order the
    candidates were read in). Only those returned are scored with their parts' words."""

    def order(c: Candidate) -> tuple[float, float, str]:
        return (-_score(c, at), -c.started_at.timestamp(), c.deployment_id)

    return [score(c, at, service) for c in heapq.nsmallest(limit, candidates, key=order)]


def note_text(service: str, at: datetime, suspects: Sequence[Suspect]) -> str:
    """The note posted on an incident: its likeliest causes, one line each with the score's
    parts in words (plain text: both providers show notes as text)."""
    head = f"shipledger: recent changes suspected for {service} at {at.isoformat()}"
    if not suspects:
        return f"{head}: none (no deployment of it or its dependencies in the window)."
    lines = [f"{head} (score of 100, from named parts):"]
    for index, s in enumerate(suspects, start=1):
        c = s.candidate
        lines.append(
            f"{index}. {c.deployment_id} ({c.service} to {c.environment}, {c.status}, "
            f"commit {c.commit_sha[:12]}): {s.score:g}: {s.why}"
        )
    return "\n".join(lines)

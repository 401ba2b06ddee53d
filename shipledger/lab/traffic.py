"""Realistic synthetic CI traffic: a day of deployments from several teams. Pure and seeded,
used by the demo and the benchmarks."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shipledger.schemas.models import DeploymentEvent, DeploymentKind
from shipledger.schemas.taxonomy import normalize_environment

DEMO_POLICY_TEMPLATE = """\
# Demo policy written by `shipledger demo` (a copy of deploy/policy.example.yaml's shape).
version: demo-1
defaults:
  timezone: Europe/Berlin
  require_change_ticket: [prod]
  change_windows:
    prod:
      - {{days: [mon, tue, wed, thu], start: "09:00", end: "17:00"}}
      - {{days: [fri], start: "09:00", end: "12:00"}}
  window_exempt_kinds: [emergency_patch, rollback]
  freezes:
    - name: payments-migration
      start: {freeze_start}
      end: {freeze_end}
      environments: [prod]
      exempt_kinds: [emergency_patch]
tenants:
  bank:
    timezone: America/New_York
    require_change_ticket: [prod, stage]
    freezes: []
    change_windows:
      prod:
        - {{days: [mon, tue, wed, thu], start: "08:00", end: "16:00"}}
"""


@dataclass(frozen=True)
class Team:
    """A team: its tenant, services, CI system and how its people name environments."""

    name: str
    tenant: str
    services: tuple[str, ...]
    provider: str
    env_names: dict[str, tuple[str, ...]]
    people: tuple[str, ...]
    office_utc: tuple[int, int] = (8, 15)  # hours (UTC) when this team ships to prod


TEAMS: tuple[Team, ...] = (
    Team(
        "checkout",
        "retail",
        ("checkout-api", "cart", "payments-gateway"),
        "github_actions",
        {"prod": ("production", "prod-eu-west-1"), "stage": ("staging",), "dev": ("dev",)},
        ("alice", "bruno", "chen"),
    ),
    Team(
        "discovery",
        "retail",
        ("search", "catalog", "recommendations"),
        "gitlab_ci",
        {"prod": ("prd", "prd-eu-central-1"), "stage": ("stg", "preprod"), "dev": ("development",)},
        ("dana", "emeka"),
    ),
    Team(
        "platform",
        "retail",
        ("edge-proxy", "auth"),
        "jenkins",
        {"prod": ("live",), "stage": ("uat",), "dev": ("sandbox",)},
        ("farah", "gus"),
    ),
    Team(
        "core-banking",
        "bank",
        ("ledger-api", "cards", "fraud-scoring", "statements"),
        "jenkins",
        {"prod": ("production-us-east-1", "prod"), "stage": ("staging",), "dev": ("dev",)},
        ("hana", "ivan", "jo"),
        office_utc=(13, 20),
    ),
)


def demo_day(today: date) -> date:
    """The most recent Wednesday before `today`: a normal working day for the demo."""
    back = (today.weekday() - 2) % 7 or 7
    return today - timedelta(days=back)


def demo_policy(day: date) -> str:
    """The demo policy text, with a two-hour prod freeze in the afternoon of `day` (Berlin)."""
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime.combine(day, time(14, 0), berlin)
    return DEMO_POLICY_TEMPLATE.format(
        freeze_start=start.isoformat(), freeze_end=(start + timedelta(hours=2)).isoformat()
    )


def _sha(rng: random.Random) -> str:
    return hashlib.sha1(rng.randbytes(16), usedforsecurity=False).hexdigest()


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(bytes=rng.randbytes(16), version=4))


def day_of_traffic(day: date, seed: int = 7, scale: int = 1) -> Iterator[DeploymentEvent]:
    """Events of one day, in time order: builds on dev/stage all day, prod in office hours,
    with the usual sins (no ticket, late-night hotfixes, a deploy in the freeze) and failures.
    `scale` multiplies the number of deployments."""
    rng = random.Random(seed)
    events: list[DeploymentEvent] = []
    start_of_day = datetime.combine(day, time(0, 0), UTC)
    per_env = {"dev": 6 * scale, "stage": 3 * scale, "prod": 2 * scale}
    for team in TEAMS:
        for service in team.services:
            repo = f"{team.tenant}/{service}"
            for env, count in per_env.items():
                for _ in range(count):
                    events.extend(_deployment(rng, team, service, repo, env, start_of_day))
    events.sort(key=lambda e: e.occurred_at)
    return iter(events)


def _deployment(
    rng: random.Random, team: Team, service: str, repo: str, env: str, day_start: datetime
) -> list[DeploymentEvent]:
    kind: DeploymentKind = "release"
    if env == "prod":
        roll = rng.random()
        first, last = team.office_utc
        minute = rng.randint(first * 60, last * 60)
        night = (last + 6) * 60
        # The usual sins: late-night releases and hotfixes (out of window), emergency patches
        # (exempt), and releases in the retail freeze (14:00-16:00 Berlin = 13:00-15:00 UTC).
        if roll < 0.12:
            minute = rng.randint(night, night + 120)
        elif roll < 0.18:
            minute, kind = rng.randint(night, night + 120), "hotfix"
        elif roll < 0.22:
            minute, kind = rng.randint(night, night + 120), "emergency_patch"
        elif roll < 0.30 and team.tenant == "retail":
            minute = rng.randint(13 * 60, 14 * 60 + 59)
        change_id = None if rng.random() < 0.15 else f"CHG{rng.randint(10_000, 99_999)}"
    else:
        minute = rng.randint(5 * 60, 22 * 60)
        change_id = f"CHG{rng.randint(10_000, 99_999)}" if rng.random() < 0.5 else None
        kind = rng.choice(["release", "release", "release", "config_change", "schema_migration"])
    started = day_start + timedelta(minutes=minute, seconds=rng.randint(0, 59))
    duration = timedelta(seconds=rng.randint(30, 900))
    sha = _sha(rng)
    common = {
        "deployment_id": _uid(rng),
        "kind": kind,
        "service": service,
        "environment": rng.choice(team.env_names[env]),
        "tenant": team.tenant,
        "repository": repo,
        "commit_sha": sha,
        "version": f"v{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}",
        "artifact_name": f"registry.example.com/{repo}",
        "artifact_digest": "sha256:" + hashlib.sha256(sha.encode()).hexdigest(),
        "actor": rng.choice(team.people),
        "trigger": "manual" if kind in ("hotfix", "emergency_patch") else "automated",
        "pipeline_provider": team.provider,
        "pipeline_run_id": str(rng.randint(1000, 99999)),
        "change_id": change_id,
        "attributes": {"team": team.name},
    }
    outcome = rng.random()
    final = "succeeded" if outcome < 0.88 else "failed" if outcome < 0.97 else "rolled_back"
    return [
        DeploymentEvent.model_validate(
            {**common, "event_id": _uid(rng), "event_type": "started", "occurred_at": started}
        ),
        DeploymentEvent.model_validate(
            {
                **common,
                "event_id": _uid(rng),
                "event_type": final,
                "occurred_at": started + duration,
                "duration_ms": int(duration.total_seconds() * 1000),
                "exit_code": 0 if final == "succeeded" else 1,
            }
        ),
    ]


#: The application each team's services make up, and its criticality tier.
_APPLICATIONS = {
    "checkout": ("webshop", "tier-1"),
    "discovery": ("storefront", "tier-2"),
    "platform": ("edge", "tier-1"),
    "core-banking": ("core-banking", "tier-1"),
}


#: What each demo service depends on (same tenant): the service map's edges, and so the
#: blast radius of a deployment (`GET /v1/topology`).
_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "edge-proxy": ("checkout-api", "search", "auth"),
    "checkout-api": ("cart", "payments-gateway", "auth"),
    "cart": ("catalog", "auth"),
    "payments-gateway": ("auth",),
    "recommendations": ("search", "catalog"),
    "search": ("catalog",),
    "ledger-api": ("fraud-scoring",),
    "cards": ("ledger-api", "fraud-scoring"),
    "statements": ("ledger-api",),
}


def service_catalog(day: date) -> list[dict[str, object]]:
    """The service catalog (family `catalog`) of the demo's teams, entered a month before
    `day`: owner team, application, tier and repository of every service, as `POST
    /v1/events` objects (JSON-ready), with the services each depends on."""
    entered = datetime.combine(day, time(9, 0), UTC) - timedelta(days=30)
    return [
        {
            "family": "catalog",
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"catalog:{team.tenant}/{service}")),
            "tenant": team.tenant,
            "entity": "service",
            "action": "created",
            "name": service,
            "owner_team": team.name,
            "application": _APPLICATIONS[team.name][0],
            "tier": _APPLICATIONS[team.name][1],
            "repository": f"{team.tenant}/{service}",
            "dependencies": list(_DEPENDENCIES.get(service, ())),
            "occurred_at": entered.isoformat(),
        }
        for team in TEAMS
        for service in team.services
    ]


def prod_builds(events: list[DeploymentEvent]) -> list[dict[str, object]]:
    """The builds (family `artifact`, action `published`) of what `events` deploy to prod, so
    that the policy's default `require_artifact_digest: [prod]` finds each deployed digest
    built: one per tenant, artifact, version and digest, published by the team's CI an hour
    before the first deployment of it, as `POST /v1/events` objects (JSON-ready)."""
    first: dict[tuple[str, str, str | None, str], DeploymentEvent] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        if normalize_environment(event.environment).name != "prod":
            continue
        if event.artifact_name and event.artifact_digest:
            key = (event.tenant, event.artifact_name, event.version, event.artifact_digest)
            first.setdefault(key, event)
    return [
        {
            "family": "artifact",
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"build:{tenant}/{digest}/{version}")),
            "tenant": tenant,
            "artifact_name": name,
            "version": version,
            "digest": digest,
            "repository": event.repository,
            "commit_sha": event.commit_sha,
            "builder": event.pipeline_provider,
            "occurred_at": (event.occurred_at - timedelta(hours=1)).isoformat(),
        }
        for (tenant, name, version, digest), event in first.items()
    ]


#: Change-advisory-board members who approve the demo's change requests.
_APPROVERS = ("cab-alice", "cab-bob", "cab-chen")


def change_requests(events: list[DeploymentEvent], seed: int = 11) -> list[dict[str, object]]:
    """The change requests (family `change`) behind the change tickets `events` name: one per
    tenant and ticket, mostly approved by one or two CAB members before the first deployment
    that names it, one in ten rejected (a deployment shipped anyway), as `POST /v1/events`
    objects (JSON-ready)."""
    rng = random.Random(seed)
    first: dict[tuple[str, str], DeploymentEvent] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        if event.change_id:
            first.setdefault((event.tenant, event.change_id), event)
    out: list[dict[str, object]] = []
    for (tenant, change_id), event in sorted(first.items()):
        rejected = rng.random() < 0.1
        decided = event.occurred_at - timedelta(hours=rng.randint(2, 30))
        approvers = rng.sample(_APPROVERS, k=rng.randint(1, 2))
        out.append(
            {
                "family": "change",
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "tenant": tenant,
                "change_id": change_id,
                "system": "servicenow",
                "state": "rejected" if rejected else "approved",
                "title": f"Deploy {event.service} to {event.environment}",
                "risk": rng.choice(("low", "moderate", "high")),
                "services": [event.service],
                "environments": [event.environment],
                "planned_start": (event.occurred_at - timedelta(hours=1)).isoformat(),
                "planned_end": (event.occurred_at + timedelta(hours=3)).isoformat(),
                "approvals": [
                    {
                        "approver": who,
                        "decision": "rejected" if rejected else "approved",
                        "decided_at": decided.isoformat(),
                    }
                    for who in approvers
                ],
                "actor": event.actor,
                "occurred_at": decided.isoformat(),
            }
        )
    return out


def late_approvals(
    changes: list[dict[str, object]], count: int = 2
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """`changes` as a change system delivers them, some late: (early, late). The first
    `count` approved prod requests (by tenant and change id) are reported `opened` an hour
    before their approval, and the approval itself (which happened before the deployment
    started) is delivered only after the deployments: the stream flags them
    `change_not_approved`, then judges them again and resolves the alert."""
    chosen = sorted(
        (str(c["tenant"]), str(c["change_id"]))
        for c in changes
        if c["state"] == "approved" and _for_prod(c)
    )[:count]
    early: list[dict[str, object]] = []
    late: list[dict[str, object]] = []
    for change in changes:
        if (str(change["tenant"]), str(change["change_id"])) not in chosen:
            early.append(change)
            continue
        decided = datetime.fromisoformat(str(change["occurred_at"]))
        early.append(
            {
                **change,
                "event_id": str(uuid.uuid5(uuid.UUID(str(change["event_id"])), "opened")),
                "state": "opened",
                "approvals": [],
                "occurred_at": (decided - timedelta(hours=1)).isoformat(),
            }
        )
        late.append(change)
    return early, late


def rejected_prod_change(changes: list[dict[str, object]]) -> dict[str, object]:
    """The first (by tenant and change id) prod change request of `changes` the CAB rejected:
    the one the demo asks the pre-deploy gate about."""
    return min(
        (c for c in changes if c["state"] == "rejected" and _for_prod(c)),
        key=lambda c: (str(c["tenant"]), str(c["change_id"])),
    )


def _for_prod(change: dict[str, object]) -> bool:
    environments = change["environments"]
    assert isinstance(environments, list)
    return any(normalize_environment(str(e)).name == "prod" for e in environments)

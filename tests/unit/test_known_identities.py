"""Known identities (`shipledger.identities`): the cache and failure logic against a fake
directory (`FakeDirectory`: a dict of people and a switch that makes it fail, standing in for
the LDAP search), the LDAP search itself against the real slapd (tests/conftest.py), and the
stream's first judgement and re-judgement asking it."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from shipledger.identities import KnownIdentities, LookupFailed, actor_known, ldap_lookup
from shipledger.processors.change_rules import CHANGE_RULE_NAMES
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.late_changes import rejudge_stored
from shipledger.processors.step import process
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import parse_policy
from shipledger.settings import Settings
from tests.identity_kit import Slapd
from tests.kit import deployment_event

WEDNESDAY_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    "version: ids-1\ndefaults:\n  require_change_ticket: [prod]\n  service_accounts: [deploy-bot]\n"
)


class FakeDirectory:
    """Stands in for the LDAP search: knows `people`, counts the lookups, and fails (as an
    unreachable server does) while `down`."""

    def __init__(self, *people: str) -> None:
        self.people = set(people)
        self.down = False
        self.asked: list[str] = []

    def __call__(self, actor: str) -> bool:
        self.asked.append(actor)
        if self.down:
            raise LookupFailed("connection refused")
        return actor in self.people


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manual_deployment(actor: str, **fields: Any) -> DeploymentEvent:
    """A deployment to prod started by hand by `actor`, without a change ticket; each of
    `fields` given instead."""
    return deployment_event(
        **{"environment": "prod", "change_id": None, "actor": actor, "trigger": "manual", **fields}
    )


def identities(directory: FakeDirectory, clock: Clock, size: int = 100) -> KnownIdentities:
    return KnownIdentities(directory, ttl_s=300, negative_ttl_s=60, max_entries=size, clock=clock)


def test_answers_are_cached_for_their_own_lifetimes() -> None:
    directory, clock = FakeDirectory("alice"), Clock()
    known = identities(directory, clock)
    assert (known.is_known("alice"), known.is_known("root")) == (True, False)
    assert (known.is_known(" alice "), known.is_known("root")) == (True, False)
    assert directory.asked == ["alice", "root"]
    # The unknown one is asked again after a minute (they may have joined); the known one not.
    directory.people.add("root")
    clock.now += 61
    assert (known.is_known("alice"), known.is_known("root")) == (True, True)
    assert directory.asked == ["alice", "root", "root"]
    clock.now += 300
    assert known.is_known("alice") is True
    assert directory.asked[-1] == "alice"
    assert known.is_known("") is False and directory.asked[-1] == "alice"


def test_the_cache_is_bounded_oldest_first() -> None:
    directory, clock = FakeDirectory("a", "b", "c"), Clock()
    known = identities(directory, clock, size=2)
    for actor in ("a", "b", "c"):
        known.is_known(actor)
    known.is_known("c")
    known.is_known("a")  # dropped for c: asked again
    assert directory.asked == ["a", "b", "c", "a"]


def test_a_failing_directory_judges_nobody_and_is_not_hammered() -> None:
    directory, clock = FakeDirectory("alice"), Clock()
    known = identities(directory, clock)
    directory.down = True
    assert known.is_known("root") is None
    assert actor_known(known, "root") is True  # not judged: no false alert
    assert directory.asked == ["root"]  # the failure is remembered
    directory.down = False
    clock.now += 61
    assert actor_known(known, "root") is False
    # No directory configured: only the policy's service accounts are known.
    assert actor_known(None, "alice") is False
    assert KnownIdentities.from_settings(Settings(ldap_url="ldap://127.0.0.1:1")) is None


def test_the_stream_asks_for_manual_deployers_only() -> None:
    directory = FakeDirectory("alice")
    known = functools.partial(actor_known, identities(directory, Clock()))

    def rules(actor: str, trigger: str = "manual") -> list[str]:
        event = manual_deployment(actor, trigger=trigger, occurred_at=WEDNESDAY_NOON)
        alerts = process(event, None, POLICY, known_actor=known).alerts
        return sorted(a.rule for a in alerts if a.rule == "unattributed_manual_deploy")

    assert rules("alice") == []
    assert rules("root") == ["unattributed_manual_deploy"]
    assert rules("deploy-bot") == []
    assert rules("someone", trigger="automated") == []
    assert directory.asked == ["alice", "root", "deploy-bot"]


@pytest.fixture
def ldap_settings(slapd: Slapd) -> Settings:
    return Settings(**slapd.settings(), identity_timeout_s=2)


def test_ldap_search_finds_directory_people_only(ldap_settings: Settings) -> None:
    lookup = ldap_lookup(ldap_settings)
    assert lookup("alice") is True
    assert lookup("pat(ops)*") is True  # escaped into the filter
    assert lookup("*") is False  # not a wildcard
    assert lookup("root") is False
    assert lookup("shipledger-reader") is False  # the service entry is not a person


def test_ldap_failures_are_lookup_failures(ldap_settings: Settings, unused_port: int) -> None:
    wrong = ldap_settings.model_copy(update={"ldap_bind_password": SecretStr("wrong")})
    with pytest.raises(LookupFailed, match="bind failed"):
        ldap_lookup(wrong)("alice")
    # This directory hides its people from anonymous binds: not "nobody there", a failure.
    anonymous = ldap_settings.model_copy(update={"ldap_bind_dn": None, "ldap_bind_password": None})
    with pytest.raises(LookupFailed, match="noSuchObject"):
        ldap_lookup(anonymous)("alice")
    down = ldap_settings.model_copy(update={"ldap_url": f"ldap://127.0.0.1:{unused_port}"})
    with pytest.raises(LookupFailed):
        ldap_lookup(down)("alice")
    assert actor_known(KnownIdentities.from_settings(down), "root") is True


def test_a_rejudgement_asks_again_and_resolves_a_deployer_known_since() -> None:
    """Flagged while the directory did not know mallory; known at the re-judgement (a late
    change event): the alert is resolved, never edited."""
    directory = FakeDirectory()
    known = functools.partial(actor_known, identities(directory, Clock()))
    event = manual_deployment("mallory", change_id="CHG1")
    first = process(event, None, POLICY, known_actor=known)
    holding = {a.rule: a.alert_id for a in first.alerts if a.rule in CHANGE_RULE_NAMES}
    alert = holding["unattributed_manual_deploy"]
    directory.people.add("mallory")
    judged = rejudge_stored(
        first.record,
        event.event_id,
        holding,
        dict.fromkeys(holding, 1),
        Enrichment(),
        POLICY,
        WEDNESDAY_NOON,
        functools.partial(actor_known, identities(directory, Clock())),
    )
    (resolution,) = judged.resolutions
    assert (resolution.resolves, judged.alerts) == (alert, ())
    assert "mallory is a known identity" in resolution.message

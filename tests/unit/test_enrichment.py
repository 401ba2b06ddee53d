"""The enrichment view and what the pure step makes of it: folding change, catalog and
artifact events in any order, judging a first event against the change request, and the
team, application, tier and change facts on records and alerts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shipledger.processors.enrichment import Enrichment, EnrichmentEvent, fold
from shipledger.processors.step import alert_id, process
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent
from shipledger.schemas.policy import parse_policy
from tests.kit import CHANGE_T0, change_deployment, change_event

T0 = CHANGE_T0
POLICY = parse_policy(
    "version: t\ndefaults:\n  require_change_ticket: [prod]\n  require_artifact_digest: []\n"
)
DIGEST = "sha256:" + "ab" * 32


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def catalog(event_id: str, minutes: float, action: str = "created", **kw: Any) -> CatalogEvent:
    return CatalogEvent(
        event_id=event_id,
        tenant="retail",
        entity="service",
        action=action,
        name="checkout",
        occurred_at=at(minutes),
        **kw,
    )


EVENTS: list[EnrichmentEvent] = [
    change_event("c1", "opened", -120, planned_start=at(-30), planned_end=at(60)),
    change_event("c2", "approved", -60),
    change_event("c3", "rejected", 30),
    catalog("k1", -1000, owner_team="old-team", tier="tier-3"),
    catalog("k2", -900, owner_team="payments", application="webshop", tier="tier-1"),
    ArtifactEvent(
        event_id="a1",
        tenant="retail",
        artifact_name="registry.example.com/checkout",
        version="v1.2.3",
        digest=DIGEST,
        repository="retail/checkout",
        occurred_at=at(-200),
    ),
]


@given(st.permutations(EVENTS), st.lists(st.sampled_from(EVENTS), max_size=6))
def test_any_order_with_duplicates_folds_to_the_same_view(
    order: list[EnrichmentEvent], repeats: list[EnrichmentEvent]
) -> None:
    reference, view = fold(EVENTS), fold([*order, *repeats])
    assert view.change("retail", "CHG1") == reference.change("retail", "CHG1")
    assert view.service("retail", "checkout") == reference.service("retail", "checkout")
    assert view.artifact("retail", DIGEST) == reference.artifact("retail", DIGEST)
    assert view.sizes == {"changes": 1, "services": 1, "artifacts": 1}


def test_apply_names_the_change_request_only_when_it_changed() -> None:
    view = Enrichment()
    assert view.apply(EVENTS[0]) == ("retail", "CHG1")
    assert view.apply(EVENTS[0]) is None  # a duplicate changes nothing: no re-judgement
    assert view.apply(EVENTS[3]) is None  # catalog and artifact events are never re-judged


def test_the_latest_catalog_entry_by_event_time_wins_and_removal_forgets() -> None:
    view = fold([EVENTS[4], EVENTS[3]])  # the older arrives last
    info = view.service("retail", "checkout")
    assert info is not None and (info.owner_team, info.application) == ("payments", "webshop")
    view.apply(catalog("k3", -10, action="removed"))
    assert view.service("retail", "checkout") is None
    assert view.service("bank", "checkout") is None  # tenants apart


def test_a_first_event_is_judged_against_the_request_as_of_its_start() -> None:
    view = fold(EVENTS)  # approved at -60, rejected at +30: approved when it started
    result = process(change_deployment(), None, POLICY, view=view)
    assert result.alerts == []
    record = result.record
    assert (record.change_state, record.outside_window_s) == ("approved", 0)
    assert (record.planned_start, record.planned_end) == (at(-30), at(60))
    early = process(change_deployment(occurred_at=at(-90)), None, POLICY, view=view).record
    assert (early.change_state, early.outside_window_s) == ("opened", -3600)
    late = process(change_deployment(occurred_at=at(45)), None, POLICY, view=view)
    assert [a.rule for a in late.alerts] == ["change_not_approved"]
    assert late.alerts[0].alert_id == alert_id("e1", "change_not_approved")
    assert late.record.alert_rules == ["change_not_approved"]


def test_without_a_view_a_named_ticket_is_unknown() -> None:
    result = process(change_deployment(), None, POLICY)
    assert [a.rule for a in result.alerts] == ["change_ticket_unknown"]
    assert result.record.change_state is None and result.record.outside_window_s is None


def test_records_and_alerts_carry_the_catalogs_team_application_and_tier() -> None:
    view = fold(EVENTS)
    result = process(
        change_deployment(change_id="CHG404", artifact_digest=DIGEST), None, POLICY, view=view
    )
    record, (alert,) = result.record, result.alerts
    assert (record.team, record.application, record.tier) == ("payments", "webshop", "tier-1")
    assert (alert.team, alert.application, alert.tier) == ("payments", "webshop", "tier-1")
    # What the artifact's digest says fills what the deployment did not report.
    assert (record.artifact_name, record.version, record.repository) == (
        "registry.example.com/checkout",
        "v1.2.3",
        "retail/checkout",
    )
    own = process(change_deployment(team="search", version="v9"), None, POLICY, view=view).record
    assert (own.team, own.application, own.version) == ("search", "webshop", "v9")


def test_a_later_event_keeps_the_application_the_catalog_no_longer_gives() -> None:
    view = fold(EVENTS)
    first = process(change_deployment(), None, POLICY, view=view).record
    view.apply(catalog("k3", 10, action="removed"))
    later = process(
        change_deployment(event_id="e2", event_type="succeeded"), first, POLICY, view=view
    )
    assert (later.record.team, later.record.application) == ("payments", "webshop")
    assert later.alerts == []  # only a first event is judged
    # The request's facts come with the deployment: a change to the request re-judges it
    # (a new record version), a later event does not judge it again.
    view.apply(change_event("c4", "cancelled", -5))
    again = process(
        change_deployment(event_id="e3", event_type="succeeded"), first, POLICY, view=view
    )
    assert (again.record.change_state, again.record.outside_window_s) == ("approved", 0)

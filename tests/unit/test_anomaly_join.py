"""The anomaly join: suspects by time, service and catalog dependency, and their explanation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shipledger.processors.anomaly_join import (
    SUSPECT_RULE,
    ago,
    dependency_paths,
    suspect_alerts,
    suspects,
)
from shipledger.processors.enrichment import fold
from shipledger.processors.recent import Deployed, RecentDeployments
from shipledger.schemas.family_models import CatalogEvent, SignalEvent
from shipledger.schemas.policy import Rules

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def deployed(dep: str, service: str, minutes_before: float, **kw: Any) -> Deployed:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "deployment_id": dep,
        "seq": 1,
        "service": service,
        "environment": "prod",
        "region": None,
        "status": "succeeded",
        "started_at": T0 - timedelta(minutes=minutes_before),
        "finished_at": None,
        "version": "1.4.2",
        "commit_sha": "a" * 40,
        "actor": "jsmith",
        "last_event_id": f"{dep}-e1",
        **kw,
    }
    return Deployed(**fields)


def anomaly(**kw: Any) -> SignalEvent:
    fields: dict[str, Any] = {
        "event_id": "sig-1",
        "tenant": "acme",
        "kind": "alert_fired",
        "service": "checkout",
        "environment": "production",
        "title": "HighErrorRate",
        "occurred_at": T0,
        "source": "webhook:alertmanager",
        **kw,
    }
    return SignalEvent.model_validate(fields)


def catalog(*edges: tuple[str, list[str]]) -> Any:
    return fold(
        [
            CatalogEvent(
                tenant="acme",
                entity="service",
                action="created",
                name=name,
                dependencies=deps,
                occurred_at=T0 - timedelta(days=1),
            )
            for name, deps in edges
        ]
    )


def recent(*items: Deployed) -> RecentDeployments:
    view = RecentDeployments()
    for item in items:
        view.apply(item)
    return view


VIEW = catalog(("checkout", ["payments", "cart"]), ("payments", ["ledger-db"]))


def test_direct_and_dependency_suspects_closest_first() -> None:
    view = recent(
        deployed("d-pay", "payments", 5),
        deployed("d-chk", "checkout", 30),
        deployed("d-db", "ledger-db", 2),
        deployed("d-old", "checkout", 61),  # outside the 60 min window
        deployed("d-other", "search", 1),  # not a dependency
    )
    found = suspects(anomaly(), view, VIEW, Rules())
    assert [(s.deployment.deployment_id, s.path) for s in found] == [
        ("d-chk", ("checkout",)),
        ("d-pay", ("checkout", "payments")),
        ("d-db", ("checkout", "payments", "ledger-db")),
    ]
    assert found[0].before == timedelta(minutes=30)


def test_window_depth_and_limit_come_from_the_policy() -> None:
    view = recent(deployed("d-pay", "payments", 5), deployed("d-db", "ledger-db", 90))
    assert [s.deployment.deployment_id for s in suspects(anomaly(), view, VIEW, Rules())] == [
        "d-pay"
    ]
    wide = Rules(suspect_window="2h", suspect_dependency_depth=1)
    assert [s.deployment.deployment_id for s in suspects(anomaly(), view, VIEW, wide)] == [
        "d-pay"
    ]  # ledger-db is two hops away
    deep = Rules(suspect_window="2h")
    assert len(suspects(anomaly(), view, VIEW, deep)) == 2
    assert len(suspects(anomaly(), view, VIEW, Rules(suspect_window="2h", suspect_limit=1))) == 1


def test_never_after_the_anomaly_other_environment_or_tenant() -> None:
    view = recent(
        deployed("d-after", "checkout", -1),
        deployed("d-stage", "checkout", 3, environment="stage"),
        deployed("d-b", "checkout", 3, tenant="beta"),
    )
    assert suspects(anomaly(), view, VIEW, Rules()) == []
    # An anomaly naming no environment matches every environment.
    [found] = suspects(anomaly(environment=None), view, VIEW, Rules())
    assert found.deployment.deployment_id == "d-stage"


@pytest.mark.parametrize("kind", ["alert_resolved", "incident_resolved", "pipeline_finished"])
def test_only_anomalies_are_joined(kind: str) -> None:
    view = recent(deployed("d-chk", "checkout", 3))
    assert suspects(anomaly(kind=kind), view, VIEW, Rules()) == []
    assert suspects(anomaly(service=None), view, VIEW, Rules()) == []


def test_dependency_cycles_end() -> None:
    cyclic = catalog(("a", ["b"]), ("b", ["a", "c"]), ("c", ["a"]))
    assert dependency_paths("acme", "a", cyclic, 5) == {
        "a": ("a",),
        "b": ("a", "b"),
        "c": ("a", "b", "c"),
    }
    assert dependency_paths("acme", "a", cyclic, 0) == {"a": ("a",)}


def test_latest_record_of_a_deployment_wins_and_old_ones_are_pruned() -> None:
    view = recent(
        deployed("d-1", "checkout", 10, seq=2, status="succeeded"),
        deployed("d-1", "checkout", 10, seq=1, status="in_progress"),
        deployed("d-2", "checkout", 300),
    )
    assert [d.status for d in view.of_service("acme", "checkout")] == ["succeeded", "succeeded"]
    assert view.prune(T0 - timedelta(hours=1)) == 1
    assert [d.deployment_id for d in view.of_service("acme", "checkout")] == ["d-1"]


def test_alert_explains_the_link() -> None:
    view = recent(
        deployed("d-pay", "payments", 12, finished_at=T0 - timedelta(minutes=10), team="pay")
    )
    [found] = suspects(anomaly(), view, VIEW, Rules())
    [alert] = suspect_alerts(anomaly(), [found], Rules(), "p-1", T0)
    assert alert.rule == SUSPECT_RULE and alert.severity == "high"
    assert (alert.deployment_id, alert.service, alert.team) == ("d-pay", "payments", "pay")
    assert alert.occurred_at == T0 and alert.event_id == "sig-1"
    assert alert.message == (
        "deployment d-pay of payments 1.4.2 to prod (a dependency of checkout "
        "(checkout → payments)) started 12 min before HighErrorRate on checkout"
    )
    assert alert.evidence["link"] == "dependency"
    assert alert.evidence["path"] == "checkout → payments"
    assert alert.evidence["seconds_before"] == "720"
    assert alert.evidence["anomaly_source"] == "webhook:alertmanager"
    assert alert.evidence["deployment_finished_at"] == "2026-11-30T11:50:00+00:00"
    # Deterministic: a replayed anomaly raises the same alert.
    assert suspect_alerts(anomaly(), [found], Rules(), "p-1", T0)[0].alert_id == alert.alert_id


def test_direct_message() -> None:
    [found] = suspects(anomaly(), recent(deployed("d-chk", "checkout", 0.5)), VIEW, Rules())
    message = suspect_alerts(anomaly(), [found], Rules(), "p", T0)[0].message
    assert message.endswith("(the same service) started 30 s before HighErrorRate on checkout")


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=59), "59 s"),
        (timedelta(minutes=12, seconds=30), "12 min"),
        (timedelta(hours=2), "2 h"),
        (timedelta(hours=2, minutes=5), "2 h 5 min"),
    ],
)
def test_ago(span: timedelta, text: str) -> None:
    assert ago(span) == text


def test_suspect_window_is_checked() -> None:
    with pytest.raises(ValueError, match="suspect_window must be a positive number"):
        Rules(suspect_window="soon")

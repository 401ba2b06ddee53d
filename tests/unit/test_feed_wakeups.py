"""The enrichment feed wakes the event loop once per drain, not once per event read: every
record the workers produce comes back through the feed (the anomaly join's recent
deployments), and a wake-up per record cost the worker more than judging the event."""

from __future__ import annotations

from datetime import UTC, datetime

from shipledger.processors.feed import EnrichmentFeed
from shipledger.processors.recent import Deployed
from shipledger.settings import Settings


def deployed(n: int) -> Deployed:
    return Deployed(
        tenant="t",
        deployment_id=f"d{n}",
        seq=1,
        service="svc",
        environment="prod",
        region=None,
        status="succeeded",
        started_at=datetime(2026, 12, 1, tzinfo=UTC),
        finished_at=None,
        version=None,
        commit_sha="a" * 40,
        actor="ci",
        last_event_id=f"e{n}",
    )


def test_one_wake_up_per_drain_and_nothing_lost() -> None:
    feed = EnrichmentFeed(Settings(), "127.0.0.1:1")
    wakes: list[int] = []
    feed._notify = lambda: wakes.append(1)
    for n in range(3):
        feed._hand_over(deployed(n))
    assert len(wakes) == 1
    assert [e.deployment_id for e in feed.drain() if isinstance(e, Deployed)] == ["d0", "d1", "d2"]
    # Read after the drain: notified again, and drained the next time.
    feed._hand_over(deployed(3))
    feed._hand_over(deployed(4))
    assert len(wakes) == 2
    assert [e.deployment_id for e in feed.drain() if isinstance(e, Deployed)] == ["d3", "d4"]
    assert feed.drain() == []

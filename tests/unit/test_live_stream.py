"""The live dashboard's pure parts: stream events and who receives them, a client's bounded
queue, Last-Event-ID replay, and the service map's blast radius."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Message

from shipledger.producers.api.auth import Principal
from shipledger.producers.api.stream_events import StreamEvent, StreamFilter, frame, json_value
from shipledger.producers.api.stream_hub import CLOSED, StreamHub, Subscription
from shipledger.producers.api.topology import build_graph, dependents
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import RECORDS, Topics
from tests.kit import deployment_record, own_settings


def _record(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "deployment_id": "d-1",
        "tenant": "acme",
        "service": "checkout",
        "environment": "prod",
        "team": "payments",
        "status": "succeeded",
        "seq": 1,
        "started_at": datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
        "alert_rules": ["missing_ticket"],
    }
    return {**base, **fields}


def _event(seq: int = 1, **fields: object) -> StreamEvent:
    return StreamEvent.of(seq, f"b-{seq}", "deployment", _record(**fields))


@dataclass(frozen=True)
class TeamViewer:
    """A viewer scoped to one team of one tenant: what RBAC's team scopes will make of
    `Principal.sees`; the stream must ask it for every event."""

    tenant: str
    team: str

    def sees(self, tenant: str, team: str | None, environment: str | None) -> bool:
        return tenant == self.tenant and team == self.team


def test_frame_is_one_sse_event_whatever_the_strings_hold() -> None:
    data = frame("deployment", {"message": "two\nlines\r\n\nand é"}, "b-7")
    text = data.decode("ascii")
    assert text.startswith("id: b-7\nevent: deployment\ndata: ")
    assert text.endswith("\n\n") and text.count("\n\n") == 1
    body = text.split("data: ", 1)[1]
    assert json.loads(body)["message"] == "two\nlines\r\n\nand é"


def test_times_are_iso_utc_with_milliseconds() -> None:
    at = datetime(2026, 11, 30, 10, 0, 0, 123000, tzinfo=UTC)
    assert json_value(at) == "2026-11-30T10:00:00.123Z"
    assert json_value({"a": [at]}) == {"a": ["2026-11-30T10:00:00.123Z"]}


def test_event_carries_the_fields_a_viewer_is_checked_on() -> None:
    event = _event()
    assert (event.tenant, event.team, event.environment, event.service) == (
        "acme",
        "payments",
        "prod",
        "checkout",
    )
    data = json.loads(event.frame.decode().split("data: ", 1)[1])
    assert data["alert_rules"] == ["missing_ticket"]
    assert data["region"] is None  # absent fields are null, never missing


def test_filter_asks_the_principal_first_then_the_clients_filters() -> None:
    tenant_token = Principal("t1", "acme", frozenset({"read"}))
    other_tenant = Principal("t2", "globex", frozenset({"read"}))
    operator = Principal("t3", "*", frozenset({"read"}))
    event = _event()
    assert StreamFilter().admits_event(tenant_token, event)
    assert StreamFilter().admits_event(operator, event)
    assert not StreamFilter().admits_event(other_tenant, event)
    assert StreamFilter(team="payments", environment="prod").admits_event(tenant_token, event)
    assert not StreamFilter(team="search").admits_event(tenant_token, event)
    assert not StreamFilter(environment="dev").admits_event(tenant_token, event)
    assert not StreamFilter(service="cart").admits_event(tenant_token, event)
    # A team scope (RBAC) is the principal's: no client filter widens it.
    scoped = TeamViewer("acme", "search")
    assert not StreamFilter().admits_event(scoped, event)
    assert StreamFilter().admits_event(scoped, _event(team="search"))


def _subscription(limit: int, viewer: object | None = None) -> Subscription:
    loop = asyncio.new_event_loop()
    try:
        # asyncio.Queue binds to a loop on first use only: build it with one set.
        asyncio.set_event_loop(loop)
        return Subscription(
            viewer or Principal("t1", "acme", frozenset({"read"})),  # type: ignore[arg-type]
            StreamFilter(),
            loop,
            limit,
        )
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _drain(sub: Subscription) -> list[bytes]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


def test_a_slow_client_is_dropped_with_a_message_not_blocked() -> None:
    sub = _subscription(limit=3)
    sub.offer([_event(seq) for seq in range(1, 4)])
    assert not sub.dropped
    sub.offer([_event(4), _event(5)])
    assert sub.dropped
    frames = _drain(sub)
    assert b"event: dropped" in frames[0] and frames[-1] == CLOSED
    sub.offer([_event(6)])
    sub.send(b"status")
    assert _drain(sub) == []  # nothing more for a dropped client


def test_a_client_gets_only_what_its_principal_sees() -> None:
    sub = _subscription(limit=100, viewer=TeamViewer("acme", "search"))
    sub.offer([_event(1), _event(2, team="search"), _event(3, tenant="globex", team="search")])
    frames = _drain(sub)
    assert len(frames) == 1 and b"id: b-2\n" in frames[0]


def test_last_event_id_replays_what_was_missed_or_asks_for_a_reset(tmp_path: object) -> None:
    hub = StreamHub(own_settings(tmp_path, stream_replay_events=3), "127.0.0.1:1")  # type: ignore[arg-type]
    hub._seq = 5
    hub._recent.extend(_event(seq) for seq in range(3, 6))  # kept: 3, 4, 5
    assert hub._missed(None) == []
    assert [e.seq for e in hub._missed(f"{hub.boot}-3") or []] == [4, 5]
    assert [e.seq for e in hub._missed(f"{hub.boot}-2") or []] == [3, 4, 5]
    assert hub._missed(f"{hub.boot}-5") == []
    assert hub._missed(f"{hub.boot}-1") is None  # 2 is gone
    assert hub._missed("otherboot-4") is None  # another process's id
    assert hub._missed(f"{hub.boot}-x") is None


@pytest.mark.parametrize("seq", ["\u00b2", "\u0663", "\uff13", " 3", "+3", "-3", "3_0"])
def test_a_last_event_id_of_other_than_ascii_digits_asks_for_a_reset(
    tmp_path: object, seq: str
) -> None:
    """A client's header, read as Latin-1 (superscript two was a 500: str.isdigit() takes it,
    int() does not), or digits int() takes but the hub never writes."""
    hub = StreamHub(own_settings(tmp_path), "127.0.0.1:1")  # type: ignore[arg-type]
    for n in range(1, 6):
        hub._seq = n
        hub._recent.append(_event(n))
    assert hub._missed(f"{hub.boot}-{seq}") is None


@pytest.mark.parametrize(
    ("service", "radius"),
    [
        ("db", ["api", "checkout", "web"]),
        ("api", ["checkout", "web"]),
        ("web", []),
        ("cache", ["api", "checkout", "web"]),
    ],
)
def test_blast_radius_is_every_transitive_dependent(service: str, radius: list[str]) -> None:
    edges = [("web", "checkout"), ("checkout", "api"), ("api", "db"), ("api", "cache")]
    assert dependents(edges, service) == radius


def test_blast_radius_survives_a_cycle() -> None:
    assert dependents([("a", "b"), ("b", "a"), ("c", "a")], "a") == ["b", "c"]


def test_graph_from_service_rows_per_tenant() -> None:
    rows: list[dict[str, Any]] = [
        {"tenant": "acme", "service": "web", "owner_team": "front", "dependencies": ["api"]},
        {"tenant": "acme", "service": "api", "dependencies": ["db"], "in_catalog": 1},
        {"tenant": "acme", "service": "old", "dependencies": ["api"], "removed": 1},
        # Same name in another tenant: a different node, not in acme's blast radius.
        {"tenant": "globex", "service": "web", "dependencies": ["api"]},
    ]
    nodes = {(n.tenant, n.service): n.to_json() for n in build_graph(rows)}
    assert set(nodes) == {("acme", "web"), ("acme", "api"), ("acme", "db"), ("globex", "web"),
                          ("globex", "api")}  # fmt: skip
    assert nodes[("acme", "db")]["in_catalog"] is False  # named only as a dependency
    assert nodes[("acme", "db")]["blast_radius"] == ["api", "web"]
    assert nodes[("globex", "api")]["blast_radius"] == ["web"]
    assert nodes[("acme", "web")]["id"] == "acme/web"


def test_a_reconnect_that_missed_more_than_its_queue_is_told_to_reload(tmp_path: object) -> None:
    """Replaying more than the queue holds would drop the client at once, at every retry."""
    settings = own_settings(tmp_path, stream_replay_events=50, stream_client_queue=10)  # type: ignore[arg-type]
    hub = StreamHub(settings, "127.0.0.1:1")
    for seq in range(1, 31):
        hub._seq = seq
        hub._recent.append(_event(seq))

    async def first_frames(last_event_id: str) -> list[bytes]:
        return _drain(
            hub.subscribe(
                Principal("t", "acme", frozenset({"read"})), StreamFilter(), last_event_id
            )
        )

    few = asyncio.run(first_frames(f"{hub.boot}-25"))
    assert [f.split(b"\n")[0] for f in few[1:]] == [f"id: b-{n}".encode() for n in range(26, 31)]
    many = asyncio.run(first_frames(f"{hub.boot}-5"))
    assert b"event: status" in many[0] and b"event: reset" in many[1] and len(many) == 2


def test_messages_are_kept_for_replay_once_a_client_ever_subscribed(tmp_path: object) -> None:
    """Before any client, no id of this boot exists to replay from: the hub decodes nothing
    (the API's ingest shares its GIL); from the first client on, even between clients, it
    keeps what a reconnect may ask for."""
    settings = own_settings(tmp_path)  # type: ignore[arg-type]
    hub = StreamHub(settings, "127.0.0.1:1")
    value = topic_codec(RECORDS).encode(deployment_record().to_avro())
    record = Message(topic=Topics.from_settings(settings).records, value=value)
    hub._publish([record])
    assert hub._seq == 0 and not hub._recent

    async def visit() -> None:
        viewer = Principal("t", "acme", frozenset({"read"}))
        hub.unsubscribe(hub.subscribe(viewer, StreamFilter(), None))

    asyncio.run(visit())
    hub._publish([record, record])
    assert [event.seq for event in hub._recent] == [1, 2]


def _records_hub(tmp_path: object, **overrides: object) -> tuple[StreamHub, list[Message]]:
    """A hub, and six records of one tenant at offsets 10 to 15 of its records topic's
    partition 0 (the last of tenant globex)."""
    settings = own_settings(tmp_path, **overrides)  # type: ignore[arg-type]
    hub = StreamHub(settings, "127.0.0.1:1")
    codec, topic = topic_codec(RECORDS), Topics.from_settings(settings).records
    messages = [
        Message(
            topic=topic,
            partition=0,
            offset=10 + n,
            value=codec.encode(
                deployment_record(
                    tenant="globex" if n == 5 else "acme", deployment_id=f"d-{n}"
                ).to_avro()
            ),
        )
        for n in range(6)
    ]
    return hub, messages


def test_the_states_position_replays_what_the_sink_has_not_stored(tmp_path: object) -> None:
    """The ledger holds what the sink committed past; the position given with the state
    replays every kept event from there, through the same checks as the live stream."""
    hub, messages = _records_hub(tmp_path)
    topic = messages[0].topic() or ""
    assert hub.position() == {"last_event_id": f"{hub.boot}-0", "complete": True}
    hub._publish(messages)  # read once a position was given: kept
    assert hub.position()["last_event_id"] == f"{hub.boot}-0"  # sink offsets not read yet
    hub._stored = {(topic, 0): 13}  # the sink wrote offsets 10 to 12
    assert hub.position() == {"last_event_id": f"{hub.boot}-3", "complete": True}
    hub._stored = {(topic, 0): 16}
    assert hub.position() == {"last_event_id": f"{hub.boot}-6", "complete": True}
    hub._stored = {(topic, 0): 13}

    async def replayed(tenant: str) -> list[bytes]:
        viewer = Principal("t", tenant, frozenset({"read"}))
        sub = hub.subscribe(viewer, StreamFilter(), hub.position()["last_event_id"])
        return [f.split(b"\n")[0] for f in _drain(sub)[1:]]

    assert asyncio.run(replayed("acme")) == [f"id: {hub.boot}-{n}".encode() for n in (4, 5)]
    assert asyncio.run(replayed("globex")) == [f"id: {hub.boot}-6".encode()]


def test_the_position_says_when_the_replay_no_longer_reaches_the_ledger(tmp_path: object) -> None:
    """Evicted, read before any client, or more than a client's queue: `complete` false
    while the ledger may lack one of them; true again once the sink stored them."""
    hub, messages = _records_hub(tmp_path, stream_replay_events=3, stream_client_queue=10)
    topic = messages[0].topic() or ""
    hub._publish(messages[:2])  # no client yet: not decoded, not kept
    hub._stored = {(topic, 0): 11}
    assert hub.position()["complete"] is False  # offset 11 is in neither
    hub._publish(messages[2:])  # offsets 12 to 15; 12 is evicted
    hub._stored = {(topic, 0): 12}
    assert hub.position() == {"last_event_id": f"{hub.boot}-1", "complete": False}
    hub._stored = {(topic, 0): 13}
    assert hub.position() == {"last_event_id": f"{hub.boot}-1", "complete": True}
    # More unstored than a client's queue holds: the newest that fit, said incomplete.
    many, _ = _records_hub(tmp_path, stream_replay_events=50, stream_client_queue=10)
    many.position()
    for seq in range(1, 31):
        many._seq = seq
        many._recent.append(_event(seq))  # no source: not known to be stored
    many._stored = {}
    assert many.position() == {"last_event_id": f"{many.boot}-20", "complete": False}

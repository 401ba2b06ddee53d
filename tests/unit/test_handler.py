"""The processors' per-event handler and batch finish, without Faust: fakes stand in for the
table, the producer and Faust's message; the chain they drive is the real one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipledger.dlq_limit import DlqLimit, DlqLimitExceeded, DlqLimitState
from shipledger.processors.app import finish_batch
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.feed import FeedEvent
from shipledger.processors.handler import EventHandler
from shipledger.processors.outputs import OutputError, Payload
from shipledger.processors.recent import RecentDeployments
from shipledger.processors.refresh import ViewRefresh
from shipledger.processors.state import DeploymentState, Entry, state_key
from shipledger.processors.step import alert_id, resolution_id
from shipledger.schemas.letters import REPLAYED_FROM, header_text, letter_id
from shipledger.schemas.models import Alert, DeploymentRecord
from shipledger.schemas.policy import PolicyDocument, load_policy, parse_policy, text_sha256
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.settings import Settings
from tests.kit import change_deployment, change_event, deployment_event, without_digest_rules

MONDAY_NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # prod out of window: two alerts


@dataclass
class FakeMessage:
    value: bytes | None
    key: bytes | None = b"acme/dep-1"
    topic: str = "raw"
    partition: int = 1
    offset: int = 7
    headers: Any = None


@dataclass
class FakeOutputs:
    """Records what the handler queues and the order of flushes and changelog entries."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    letters: list[tuple[bytes | None, dict[str, str]]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    fail_flush: bool = False
    #: The policy_version of every alert encoded.
    versions: list[str] = field(default_factory=list)

    def encode(self, record: DeploymentRecord | None, alerts: list[Alert]) -> list[Payload]:
        self.versions += [a.policy_version for a in alerts]
        out = [] if record is None else [("records", record.record_id.encode(), b"")]
        return out + [("alerts", a.alert_id.encode(), b"") for a in alerts]

    def send(self, payloads: Sequence[Payload]) -> None:
        self.sent.extend((topic, key.decode()) for topic, key, _ in payloads)

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        self.letters.append((key, header_text(headers)))

    def changelog(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.log.append(f"changelog {partition}")

    cancel_flush: bool = False

    async def flush(self) -> None:
        if self.cancel_flush:  # what Outputs.flush does when cancelled: finish, then re-raise
            self.cancel_flush = False
            self.flush_blocking()
            raise asyncio.CancelledError
        self.log.append("flush")
        if self.fail_flush:
            raise OutputError("1 outputs unacknowledged")

    def flush_blocking(self) -> None:
        self.log.append("flush (blocking)")


class FakeTable:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog_topic = type("T", (), {"get_topic_name": lambda self: "changelog"})()


def event(
    event_id: str, event_type: str = "started", deployment: str = "dep-1", **fields: Any
) -> bytes:
    model = deployment_event(
        event_id=event_id,
        deployment_id=deployment,
        event_type=event_type,
        tenant="acme",
        occurred_at=MONDAY_NIGHT,
    )
    return AvroCodec(EVENT_SCHEMA).encode({**model.to_avro(), **fields})


def handler() -> tuple[EventHandler, DeploymentState, FakeOutputs]:
    state = DeploymentState(FakeTable())
    outputs = FakeOutputs()
    limit = DlqLimitState(DlqLimit.from_settings(Settings()), "processors")
    return (
        EventHandler(without_digest_rules(load_policy(None)), state, outputs, limit),
        state,
        outputs,
    )


def test_events_become_records_and_first_event_alerts() -> None:
    handle, state, outputs = handler()
    handle.handle(FakeMessage(event("e1")))
    handle.handle(FakeMessage(event("e2", "succeeded")))
    rules = ["missing_change_ticket", "out_of_window"]
    assert outputs.sent == [
        ("records", "e1"),
        *(("alerts", alert_id("e1", rule)) for rule in rules),
        ("records", "e2"),
    ]
    entry = state.get(state_key("acme", "dep-1"))
    assert entry is not None
    assert (entry.record.seq, entry.record.status, entry.seen, entry.first) == (
        2,
        "succeeded",
        ("e1", "e2"),
        "e1",
    )


def test_a_repeated_first_event_emits_its_alerts_again_and_nothing_else() -> None:
    """The batch that applied it may have died after its record reached the ledger and before
    its alerts did: the same alert ids come again, the sink keeps one of each."""
    handle, state, outputs = handler()
    handle.handle(FakeMessage(event("e1")))
    handle.handle(FakeMessage(event("e2", "succeeded")))
    first_outputs = list(outputs.sent)
    outputs.sent.clear()
    handle.handle(FakeMessage(event("e1")))
    assert outputs.sent == [item for item in first_outputs if item[0] == "alerts"]
    outputs.sent.clear()
    handle.handle(FakeMessage(event("e2", "succeeded")))  # not the first: nothing
    assert outputs.sent == []
    entry = state.get(state_key("acme", "dep-1"))
    assert entry is not None and entry.record.seq == 2


def test_a_rejected_event_is_dead_lettered_with_its_replay_origin() -> None:
    handle, state, outputs = handler()
    handle.handle(FakeMessage(b"not avro", headers=[(REPLAYED_FROM, b"1:4")]))
    assert outputs.sent == [] and state.get(state_key("acme", "dep-1")) is None
    ((key, headers),) = outputs.letters
    assert key == b"acme/dep-1"
    assert headers["stage"] == "processors" and headers["source_offset"] == "7"
    assert headers[REPLAYED_FROM] == "1:4"


def test_the_environment_is_normalized_before_judgement() -> None:
    handle, state, outputs = handler()
    handle.handle(FakeMessage(event("e1", environment="Production")))
    entry = state.get(state_key("acme", "dep-1"))
    assert entry is not None
    assert (entry.record.environment, entry.record.environment_raw) == ("prod", "Production")
    assert [topic for topic, _ in outputs.sent] == ["records", "alerts", "alerts"]


def test_an_invalid_event_is_dead_lettered_naming_its_field() -> None:
    handle, state, outputs = handler()
    handle.handle(FakeMessage(event("e1", commit_sha="abc123")))
    ((_, headers),) = outputs.letters
    assert headers["field"] == "commit_sha" and headers["reason"].startswith("commit_sha:")
    assert outputs.sent == [] and state.get(state_key("acme", "dep-1")) is None


def test_a_bug_is_dead_lettered_as_an_internal_error() -> None:
    class BrokenState(DeploymentState):
        def get(self, key: str) -> Entry | None:
            raise RuntimeError("table gone")

    outputs = FakeOutputs()
    limit = DlqLimitState(DlqLimit.from_settings(Settings()), "processors")
    handle = EventHandler(
        without_digest_rules(load_policy(None)), BrokenState(FakeTable()), outputs, limit
    )
    handle.handle(FakeMessage(event("e1")))
    ((_, headers),) = outputs.letters
    assert headers["reason"] == "internal error: RuntimeError('table gone')"


def test_a_flood_of_poison_stops_the_handler_before_its_letter() -> None:
    """100 % poison (a bad deploy): the handler raises at the DLQ limit, without queuing the
    letter, and the agent abandons the batch unacknowledged."""
    handle, _, outputs = handler()
    with pytest.raises(DlqLimitExceeded, match="processors: 100 of the last 100 messages"):
        for offset in range(150):
            handle.handle(FakeMessage(b"not avro", offset=offset))
    assert len(outputs.letters) == 99


def test_the_normal_rate_of_poison_does_not_stop_the_handler() -> None:
    """One event in ten is poison, over many windows: each is dead-lettered, the rest apply."""
    handle, _, outputs = handler()
    for i in range(3000):
        bad = i % 10 == 0
        value = b"not avro" if bad else event(f"e{i}", deployment=f"dep-{i}")
        handle.handle(FakeMessage(value, offset=i))
    assert len(outputs.letters) == 300
    assert sum(topic == "records" for topic, _ in outputs.sent) == 2700


def test_state_recovered_as_json_keeps_its_first_event() -> None:
    handle, state, _ = handler()
    handle.handle(FakeMessage(event("e1")))
    key = state_key("acme", "dep-1")
    entry = state.get(key)
    assert entry is not None
    table = FakeTable()
    table.data[key] = json.loads(entry.to_json())  # what Faust recovers
    assert DeploymentState(table).get(key) == entry


def test_letter_ids_name_the_message_not_its_place() -> None:
    one = letter_id("raw", b"k", b"v", "")
    assert one == letter_id("raw", b"k", b"v", "")
    assert len({one, letter_id("raw", None, b"v", ""), letter_id("raw", b"", b"v", "")}) == 3
    assert one != letter_id("raw", b"k", b"v", "0:1")
    assert one != letter_id("other", b"k", b"v", "")


def test_finish_flushes_outputs_before_the_changelog() -> None:
    _, state, outputs = handler()
    state.put(state_key("acme", "dep-1"), 1, _record(), "e1")
    asyncio.run(finish_batch(outputs, state))  # type: ignore[arg-type]
    assert outputs.log == ["flush", "changelog 1", "flush"]


def test_a_failed_output_flush_queues_no_changelog_entry() -> None:
    """The batch is abandoned (the worker exits) before any entry says it was applied."""
    _, state, outputs = handler()
    outputs.fail_flush = True
    state.put(state_key("acme", "dep-1"), 1, _record(), "e1")
    with pytest.raises(OutputError):
        asyncio.run(finish_batch(outputs, state))  # type: ignore[arg-type]
    assert outputs.log == ["flush"]


def test_a_cancelled_finish_still_flushes_the_changelog_after_the_outputs() -> None:
    """Faust acks a batch right after its agent is cancelled (shutdown): its state goes too."""
    _, state, outputs = handler()
    outputs.cancel_flush = True
    state.put(state_key("acme", "dep-1"), 1, _record(), "e1")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(finish_batch(outputs, state))  # type: ignore[arg-type]
    assert outputs.log == ["flush (blocking)", "changelog 1", "flush (blocking)"]


def test_entries_written_before_first_was_kept_still_read() -> None:
    entry = Entry.from_json({"record": _record().model_dump(mode="json"), "seen": ["e1"]})
    assert entry.first is None and entry.seen == ("e1",)


def _record() -> DeploymentRecord:
    handle, state, _ = handler()
    handle.handle(FakeMessage(event("e1")))
    entry = state.get(state_key("acme", "dep-1"))
    assert entry is not None
    return entry.record


# --- re-judgement when a change request changes --------------------------------------------
GOVERNED = parse_policy(
    "version: t\ndefaults:\n  require_change_ticket: [prod]\n  require_artifact_digest: []\n"
)
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def governed(event_id: str = "e1", deployment: str = "dep-1") -> bytes:
    """A prod deployment of retail naming change CHG1, started at T0."""
    model = change_deployment(event_id=event_id, deployment_id=deployment)
    return AvroCodec(EVENT_SCHEMA).encode(model.to_avro())


def judging_handler(view: Enrichment) -> tuple[EventHandler, DeploymentState, FakeOutputs]:
    state = DeploymentState(FakeTable())
    outputs = FakeOutputs()
    limit = DlqLimitState(DlqLimit.from_settings(Settings()), "processors")
    return EventHandler(GOVERNED, state, outputs, limit, view), state, outputs


def test_the_handler_resolves_once_and_remembers_what_holds() -> None:
    view = Enrichment()
    handle, state, outputs = judging_handler(view)
    handle.handle(FakeMessage(governed()))
    unknown = alert_id("e1", "change_ticket_unknown")
    assert outputs.sent == [("records", "e1"), ("alerts", unknown)]
    outputs.sent.clear()
    for event in (change_event("c2", "approved", -15), change_event("c1", "opened", -120)):
        view.apply(event)
    assert handle.rejudge([("retail", "CHG1")], {1}) == 1
    (record_out, resolution_out) = outputs.sent
    assert record_out[0] == "records" and resolution_out == ("alerts", resolution_id(unknown))
    entry = state.get(state_key("retail", "dep-1"))
    assert entry is not None and dict(entry.holding) == {} and entry.record.seq == 2
    outputs.sent.clear()
    # Again, a sweep, another worker's partition: nothing more.
    assert handle.rejudge([("retail", "CHG1")], {1}) == 0
    assert handle.sweep({0, 1}) == 0
    assert outputs.sent == []


def test_only_the_workers_own_partitions_are_rejudged() -> None:
    view = Enrichment()
    handle, _, outputs = judging_handler(view)
    handle.handle(FakeMessage(governed(), partition=1))
    outputs.sent.clear()
    view.apply(change_event("c1", "opened", -120))
    assert handle.rejudge([("retail", "CHG1")], {0}) == 0  # partition 1 is not ours
    assert outputs.sent == []
    assert handle.rejudge([("retail", "CHG1")], {0, 1}) == 1


def test_a_replayed_first_event_emits_only_the_change_alerts_that_hold() -> None:
    view = Enrichment()
    handle, _, outputs = judging_handler(view)
    handle.handle(FakeMessage(governed()))
    view.apply(change_event("c1", "opened", -120))
    handle.rejudge([("retail", "CHG1")], {1})
    outputs.sent.clear()
    handle.handle(FakeMessage(governed()))  # a replay: the unknown alert was resolved since
    assert outputs.sent == [("alerts", alert_id("e1", "change_not_approved"))]


class FakeFeed:
    def __init__(self) -> None:
        self.ready: list[FeedEvent] = []

    def drain(self) -> list[FeedEvent]:
        out, self.ready = self.ready, []
        return out


def test_refresh_sweeps_new_partitions_and_rejudges_changed_requests() -> None:
    view = Enrichment()
    handle, state, outputs = judging_handler(view)
    for i in range(3):
        handle.handle(FakeMessage(governed(f"e{i}", f"dep-{i}"), partition=i % 2))
    feed = FakeFeed()
    refresh = ViewRefresh(feed.drain, view, handle, state, RecentDeployments(), timedelta(hours=1))
    assert refresh.refresh({0}) == 0  # first refresh: a sweep, nothing owed
    outputs.sent.clear()
    feed.ready = [change_event("c1", "approved", -30), change_event("c1", "approved", -30)]
    assert refresh.refresh({0}) == 2  # dep-0 and dep-2; dep-1 is on partition 1
    assert sorted(topic for topic, _ in outputs.sent) == ["alerts", "alerts", "records", "records"]
    outputs.sent.clear()
    feed.ready = [change_event("c1", "approved", -30)]  # a duplicate: no re-judgement
    assert refresh.refresh({0}) == 0
    assert refresh.refresh({0, 1}) == 1  # partition 1 assigned: swept, dep-1 resolved
    assert outputs.sent and all(topic in ("records", "alerts") for topic, _ in outputs.sent)


def test_refresh_adopts_a_published_policy_and_refuses_a_tampered_one() -> None:
    """A policy pushed (`shipledger policy push`) judges from the next batch on; a document
    whose text is not its SHA-256's is refused and the current policy stays."""
    view = Enrichment()
    handle, state, outputs = judging_handler(view)
    feed = FakeFeed()
    refresh = ViewRefresh(feed.drain, view, handle, state, RecentDeployments(), timedelta(hours=1))
    handle.handle(FakeMessage(governed("e1", "dep-1")))
    text = (
        "version: pushed-2\ndefaults:\n  require_change_ticket: [prod]\n"
        "  require_artifact_digest: []\n"
    )
    pushed = PolicyDocument.of(text, parse_policy(text), T0)
    tampered = pushed.model_copy(update={"text": text.replace("pushed-2", "pushed-3")})
    feed.ready = [pushed]
    refresh.refresh({1})
    handle.handle(FakeMessage(governed("e2", "dep-2")))
    feed.ready = [tampered]
    refresh.refresh({1})
    handle.handle(FakeMessage(governed("e3", "dep-3")))
    assert outputs.versions == [
        GOVERNED.full_version,
        f"pushed-2+{text_sha256(text)[:8]}",
        f"pushed-2+{text_sha256(text)[:8]}",
    ]


@given(st.text(), st.text())
def test_a_state_key_is_the_json_pair_of_tenant_and_deployment(
    tenant: str, deployment: str
) -> None:
    """What the changelog and `shipledger.up.restore` hold: the pair as json.dumps writes it."""
    assert state_key(tenant, deployment) == json.dumps([tenant, deployment], ensure_ascii=False)

"""The spool and the publisher's failure paths, with no broker: a closed loopback port."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipledger.broker import free_port
from shipledger.producers.publisher import NO_BOOTSTRAP, Publisher, PublishError
from shipledger.producers.spool import Spool
from shipledger.schemas.models import DeploymentEvent
from shipledger.settings import Settings

SHA = "0123456789abcdef0123456789abcdef01234567"


def _event(n: int = 0, deployment_id: str = "d-1") -> DeploymentEvent:
    return DeploymentEvent(
        deployment_id=deployment_id,
        event_type="started",
        service=f"svc-{n}",
        environment="prod",
        commit_sha=SHA,
        actor="alice",
    )


@pytest.fixture
def closed_port() -> str:
    """A loopback address nothing listens on: connections are refused at once."""
    return f"127.0.0.1:{free_port()}"


def test_append_then_read_back(settings: Settings) -> None:
    spool = Spool(settings)
    events = [_event(i) for i in range(3)]
    assert spool.append(events) == settings.resolved_spool_dir / "events.jsonl"
    spool.append([_event(9)])
    lines = spool.path.read_text().splitlines()
    assert [DeploymentEvent.model_validate_json(x) for x in lines][:3] == events
    assert DeploymentEvent.model_validate_json(lines[3]).service == "svc-9"
    assert spool.pending() == 4


def test_events_round_trip_through_the_spool(settings: Settings) -> None:
    spool = Spool(settings)
    event = _event().model_copy(update={"attributes": {"k": "v"}, "exit_code": 3})
    spool.append([event])
    assert DeploymentEvent.model_validate_json(spool.path.read_text()) == event


def test_publish_to_a_closed_port_spools_quickly(settings: Settings, closed_port: str) -> None:
    events = [_event(i) for i in range(3)]
    began = time.monotonic()
    with Publisher(settings, closed_port) as publisher:
        result = publisher.publish(events)
    assert time.monotonic() - began < settings.emit_timeout_s + 1
    assert (result.sent, result.spooled, result.lost) == (0, 3, 0)
    assert result.unsent == events
    assert result.spool_path == Spool(settings).path
    assert "unreachable" in result.errors[0] and closed_port in result.errors[0]
    assert Spool(settings).pending() == 3


def test_publish_without_any_broker_configured_says_how(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        result = publisher.publish([_event()])
    assert result.spooled == 1
    assert result.errors == [NO_BOOTSTRAP]
    assert "SHIPLEDGER_BOOTSTRAP_SERVERS" in NO_BOOTSTRAP


def test_publish_without_spooling_reports_unsent(settings: Settings, closed_port: str) -> None:
    with Publisher(settings, closed_port) as publisher:
        result = publisher.publish([_event()], spool_on_failure=False)
    assert (result.sent, result.spooled, result.lost) == (0, 0, 1)
    assert not Spool(settings).path.exists()


def test_publish_many_raises_when_undelivered(settings: Settings, closed_port: str) -> None:
    fast = settings.model_copy(update={"emit_timeout_s": 0.5})
    with Publisher(fast, closed_port) as publisher, pytest.raises(PublishError, match="2 of 2"):
        publisher.publish_many([_event(1), _event(2)])
    with Publisher(settings) as publisher, pytest.raises(PublishError, match="SHIPLEDGER_"):
        publisher.publish_many([_event()])


def test_flush_with_broker_down_keeps_everything(settings: Settings, closed_port: str) -> None:
    spool = Spool(settings)
    events = [_event(i) for i in range(5)]
    spool.append(events)
    before = spool.path.read_bytes()
    with Publisher(settings, closed_port) as publisher:
        result = spool.flush(publisher)
    assert (result.sent, result.remaining, result.rejected) == (0, 5, 0)
    assert result.errors
    assert spool.path.read_bytes() == before


def test_flush_of_an_empty_spool_needs_no_broker(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        result = Spool(settings).flush(publisher)
    assert (result.sent, result.remaining) == (0, 0)


def test_duplicates_are_kept_once_and_torn_lines_quarantined(
    settings: Settings, closed_port: str
) -> None:
    spool = Spool(settings)
    event = _event()
    spool.append([event, event])
    with spool.path.open("a") as f:  # a crash in the middle of a write
        f.write('{"event_id": "torn", "deploy')
    later = _event(7)
    spool.append([later])  # must start on its own line, not glue onto the torn one
    with Publisher(settings, closed_port) as publisher:
        result = spool.flush(publisher)
    assert (result.remaining, result.rejected) == (2, 1)
    kept = [DeploymentEvent.model_validate_json(x) for x in spool.path.read_text().splitlines()]
    assert kept == [event, later]
    assert spool.rejected_path.read_text() == '{"event_id": "torn", "deploy\n'


_APPENDER = """
import sys
from pathlib import Path
from shipledger.producers.spool import Spool
from shipledger.schemas.models import DeploymentEvent
from shipledger.settings import Settings

spool = Spool(Settings(data_dir=Path(sys.argv[1])))
for i in range(int(sys.argv[3])):
    spool.append([DeploymentEvent(
        deployment_id=sys.argv[2], event_type="started", service=f"svc-{i}",
        environment="prod", commit_sha=sys.argv[4], actor="alice",
    )])
"""


def test_concurrent_appends_never_interleave(settings: Settings, tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(settings.data_dir), f"w{w}", "50", SHA],
            cwd=tmp_path,
        )
        for w in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    lines = Spool(settings).path.read_text().splitlines()
    assert len(lines) == 200
    events = [DeploymentEvent.model_validate_json(x) for x in lines]
    assert len({e.event_id for e in events}) == 200
    for w in range(4):
        mine = [e.service for e in events if e.deployment_id == f"w{w}"]
        assert mine == [f"svc-{i}" for i in range(50)]  # each writer's order is kept


def test_spool_dir_setting_is_honoured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", spool_dir=tmp_path / "elsewhere")
    assert Spool(settings).append([_event()]).parent == tmp_path / "elsewhere"

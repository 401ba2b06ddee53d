"""The spool and the publisher's failure paths, with no broker: a closed loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import ReadWriteLock

from shipledger.producers.emitter.publisher import (
    NO_BOOTSTRAP,
    Publisher,
    PublishError,
)
from shipledger.producers.emitter.spool import WRITE_LOCK, Spool, SpoolError
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.settings import Settings
from shipledger.up.broker import free_port
from tests.kit import SHA, deployment_event


def _event(n: int = 0, deployment_id: str = "d-1") -> DeploymentEvent:
    return deployment_event(deployment_id=deployment_id, service=f"svc-{n}")


@pytest.fixture
def closed_port() -> str:
    """A loopback address nothing listens on: connections are refused at once."""
    return f"127.0.0.1:{free_port()}"


def _read(spool: Spool) -> list[DeploymentEvent]:
    return [DeploymentEvent.model_validate_json(p.read_bytes()) for p in spool.files()]


def test_append_writes_one_file_per_event_in_order(settings: Settings) -> None:
    spool = Spool(settings)
    events = [_event(i) for i in range(4)]
    paths = spool.append(events[:3])
    spool.append(events[3:])
    assert paths == spool.files()[:3]
    assert all(p.parent == settings.resolved_spool_dir and p.suffix == ".json" for p in paths)
    assert _read(spool) == events
    assert spool.pending() == 4
    assert not [p for p in spool.directory.iterdir() if p.name.startswith(".tmp-")]


def test_the_spool_keeps_the_exact_event_and_its_wire_bytes(settings: Settings) -> None:
    """What flush sends after a crash is byte-for-byte what emit would have sent: same
    event_id, same Avro value, so downstream dedup by event_id recognises the resend."""
    codec = AvroCodec(EVENT_SCHEMA)
    fields = {"attributes": {"k": "v", "ü": "é\nx"}, "exit_code": 3, "version": "v1.2"}
    event = DeploymentEvent.model_validate({**_event().model_dump(), **fields})
    (path,) = Spool(settings).append([event])
    back = DeploymentEvent.model_validate_json(path.read_bytes())
    assert back == event
    assert codec.encode(back.to_avro()) == codec.encode(event.to_avro())


def test_publish_to_a_closed_port_spools_quickly(settings: Settings, closed_port: str) -> None:
    events = [_event(i) for i in range(3)]
    began = time.monotonic()
    with Publisher(settings, closed_port) as publisher:
        result = publisher.publish(events)
    assert time.monotonic() - began < settings.emit_timeout_s + 1
    assert (result.sent, result.spooled, result.lost) == (0, 3, 0)
    assert result.unsent == events
    assert result.spool_path == Spool(settings).directory
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
    assert Spool(settings).pending() == 0


def test_publish_many_raises_when_undelivered(settings: Settings, closed_port: str) -> None:
    fast = settings.model_copy(update={"emit_timeout_s": 0.5})
    with Publisher(fast, closed_port) as publisher, pytest.raises(PublishError, match="2 of 2"):
        publisher.publish_many([_event(1), _event(2)])
    with Publisher(settings) as publisher, pytest.raises(PublishError, match="SHIPLEDGER_"):
        publisher.publish_many([_event()])


def test_flush_with_broker_down_keeps_everything(settings: Settings, closed_port: str) -> None:
    spool = Spool(settings)
    spool.append([_event(i) for i in range(5)])
    before = {p: p.read_bytes() for p in spool.files()}
    with Publisher(settings, closed_port) as publisher:
        result = spool.flush(publisher)
    assert (result.sent, result.remaining, result.quarantined) == (0, 5, [])
    assert result.errors
    assert {p: p.read_bytes() for p in spool.files()} == before


def test_flush_of_an_empty_spool_needs_no_broker(settings: Settings) -> None:
    with Publisher(settings) as publisher:
        result = Spool(settings).flush(publisher)
    assert (result.sent, result.remaining) == (0, 0)


def test_an_event_spooled_twice_is_one_event(settings: Settings, closed_port: str) -> None:
    spool = Spool(settings)
    event = _event()
    spool.append([event, event])
    with Publisher(settings, closed_port) as publisher:
        result = spool.flush(publisher)
    assert (result.remaining, spool.pending()) == (1, 2)  # one event, both files kept


def test_a_corrupt_file_is_quarantined_not_sent_nor_deleted(
    settings: Settings, closed_port: str
) -> None:
    spool = Spool(settings)
    (good,) = spool.append([_event()])
    bad = good.with_name("00000000000000000001-0000-corrupt.json")
    bad.write_bytes(b'{"event_id": "e-1", "deploy\xff')
    with Publisher(settings, closed_port) as publisher:
        result = spool.flush(publisher)
    assert result.quarantined == [spool.quarantine_dir / bad.name]
    assert result.quarantined[0].read_bytes() == b'{"event_id": "e-1", "deploy\xff'
    assert (result.remaining, spool.files()) == (1, [good])


def test_temp_files_of_dead_writers_are_removed_live_ones_kept(
    settings: Settings, closed_port: str
) -> None:
    """A writer killed mid-write leaves `.tmp-<name>` holding part of an event (written here
    as it would have left it). flush never sends it and deletes it once no writer holds the
    write lock; while one does (the test holds it, as a live writer would), it is kept."""
    spool = Spool(settings)
    spool.append([_event()])
    torn = spool.directory / ".tmp-00000000000000000002-0000-abcdef012345.json"
    torn.write_text(_event(5).model_dump_json()[:40])
    live_writer = ReadWriteLock(spool.directory / WRITE_LOCK, is_singleton=False)
    with live_writer.read_lock():
        with Publisher(settings, closed_port) as publisher:
            assert spool.flush(publisher).remaining == 1
        assert torn.exists()
    live_writer.close()
    with Publisher(settings, closed_port) as publisher:
        result = spool.flush(publisher)
    assert (result.remaining, result.quarantined) == (1, [])
    assert not torn.exists()


def test_a_failed_write_leaves_nothing_and_names_the_directory(settings: Settings) -> None:
    """A file (not a directory) where the spool should be: the write fails like a full disk
    would (the real ENOSPC case is tests/integration/test_spool_guarantees.py)."""
    settings.data_dir.mkdir(parents=True)
    blocker = settings.resolved_spool_dir
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=f"cannot write the spool {blocker}: .*EEXIST|ENOTDIR"):
        Spool(settings).append([_event()])


_APPENDER = """
import sys
from pathlib import Path
from shipledger.producers.emitter.spool import Spool
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec
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
            [sys.executable, "-P", "-c", _APPENDER, str(settings.data_dir), f"w{w}", "50", SHA],
            cwd=tmp_path,
        )
        for w in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    events = _read(Spool(settings))
    assert len(events) == 200
    assert len({e.event_id for e in events}) == 200
    for w in range(4):
        mine = [e.service for e in events if e.deployment_id == f"w{w}"]
        assert mine == [f"svc-{i}" for i in range(50)]  # each writer's order is kept


def test_spool_dir_setting_is_honoured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", spool_dir=tmp_path / "elsewhere")
    assert Spool(settings).append([_event()])[0].parent == tmp_path / "elsewhere"


def test_emit_spools_without_fcntl(settings: Settings, closed_port: str, tmp_path: Path) -> None:
    """Windows runners have no `fcntl`: `shipledger emit` imports, finds Kafka down and spools
    without it (run in a child where importing fcntl fails, as on Windows)."""
    script = tmp_path / "no_fcntl.py"
    script.write_text(
        "import sys\n"
        "sys.modules['fcntl'] = None  # `import fcntl` now raises ImportError\n"
        "from shipledger.cli import main\n"
        "sys.argv = ['shipledger', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {
        **os.environ,
        "SHIPLEDGER_DATA_DIR": str(settings.data_dir),
        "SHIPLEDGER_EMIT_TIMEOUT_S": "1",
    }
    args = ["emit", "started", "--deployment-id", "d-win", "--service", "s",
            "--environment", "dev", "--commit-sha", "ab" * 20, "--actor", "a",
            "--bootstrap", closed_port]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-P", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Spool(settings).pending() == 1

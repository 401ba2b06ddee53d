"""The spool's promise, on real processes and the real broker: every event a CI job could not
send reaches the topic exactly once after Kafka returns, whatever else happened meanwhile:
several jobs emitting and flushing at once, a full disk, a writer killed mid-write, a corrupt
file. (A flusher killed after Kafka's acknowledgement is in test_pipeline.py, which checks the
ledger: the resend is a duplicate on the wire that the processors and the sink drop.)

"Broker down" is a loopback port nothing listens on; "broker back" is the session's Tansu.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shipledger.producers.emitter.spool import Spool
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.up.broker import free_port
from tests.kit import META, SHIPLEDGER, CliEnv, Consume, run_shipledger

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings: Settings, broker: str, topics: Topics, cli_env: CliEnv) -> dict[str, str]:
    """A CI job's environment: SHIPLEDGER_BOOTSTRAP_SERVERS is the (up) test broker."""
    return cli_env(settings, broker)


@pytest.fixture
def down() -> str:
    """A bootstrap address with nothing listening: Kafka is down."""
    return f"127.0.0.1:{free_port()}"


def start_emit(env: dict[str, str], dep: str, bootstrap: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            SHIPLEDGER,
            "emit",
            "started",
            *META,
            "--deployment-id",
            dep,
            "--bootstrap",
            bootstrap,
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


#: The `sent_once` fixture: asserts that the raw topic holds each of `ids` exactly once.
SentOnce = Callable[[set[str]], None]


@pytest.fixture
def sent_once(consume: Consume, broker: str, topics: Topics) -> SentOnce:
    """Asserts that the raw topic holds each of `ids` exactly once (and nothing else)."""

    def check(ids: set[str]) -> None:
        got = Counter(e.event_id for _, e, _ in consume(broker, topics.raw, len(ids), settle_s=1.0))
        assert set(got) == ids
        assert set(got.values()) == {1}, {i: n for i, n in got.items() if n > 1}

    return check


def test_concurrent_jobs_emitting_and_flushing_send_each_event_once(
    env: dict[str, str], down: str, sent_once: SentOnce, settings: Settings
) -> None:
    """Eight jobs spool at once; then four flushes race each other and four more spooling
    jobs. One flush holds the lock at a time, so no file is sent twice or lost."""
    first = [start_emit(env, f"dep-{i}", down) for i in range(8)]
    ids = set()
    for code, out, _ in map(finish, first):
        assert code == 0
        ids.add(out.strip())
    assert Spool(settings).pending() == 8

    racing = [subprocess.Popen(
        [SHIPLEDGER, "flush"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) for _ in range(4)]  # fmt: skip
    late = [start_emit(env, f"dep-late-{i}", down) for i in range(4)]
    sent = 0
    for code, out, err in map(finish, racing):
        assert code in (0, 1), err  # 1: a late event was spooled after this flush ended
        sent += int(out.split()[1].rstrip(","))
    for code, out, _ in map(finish, late):
        assert code == 0
        ids.add(out.strip())
    last = run_shipledger("flush", env=env)
    assert last.returncode == 0, last.stderr
    sent += int(last.stdout.split()[1].rstrip(","))
    assert sent == len(ids) == 12
    assert Spool(settings).pending() == 0
    sent_once(ids)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs holding the spool dir, filled up; yields the filler file."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        (mount / "spool").mkdir()
        filler = mount / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass  # ENOSPC: the disk is full
        finally:
            os.close(fd)
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_loudly_leaves_nothing_and_spools_again_once_freed(
    env: dict[str, str], down: str, full_disk: Path, sent_once: SentOnce
) -> None:
    spool_dir = full_disk.parent / "spool"
    env = {**env, "SHIPLEDGER_SPOOL_DIR": str(spool_dir)}
    code, out, err = finish(start_emit(env, "dep-full", down, "--no-strict"))
    assert code == 0, err
    assert out == ""  # no event id: the event was not recorded
    assert f"cannot write the spool {spool_dir}: No space left on device (ENOSPC)" in err
    assert "lost_event" in err  # the whole event, to emit again by hand
    # --strict never spools: it fails the step, whose retry sends the event.
    code, out, err = finish(start_emit(env, "dep-full", down, "--strict"))
    assert code == 1 and out == "" and "not spooled" in err, err
    assert not [p.name for p in spool_dir.iterdir() if not p.name.endswith(".lock")]

    full_disk.unlink()
    code, out, _ = finish(start_emit(env, "dep-full", down))
    assert code == 0
    flushed = run_shipledger("flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.startswith("sent 1, 0 remaining")
    sent_once({out.strip()})


def test_writers_killed_mid_write_leave_only_whole_events(
    env: dict[str, str], down: str, sent_once: SentOnce, settings: Settings
) -> None:
    """`emit` processes are SIGKILLed at increasing delays, so some die before spooling, some
    while writing, some after. Whichever: the spool then holds only whole events, and a
    flush sends exactly those, quarantines nothing and removes the dead writers' temp files.
    A torn temp file, as a writer killed after writing part of an event leaves it, is added
    so that case is covered whatever the timing."""
    spool = Spool(settings)
    for n in range(10):
        proc = start_emit(env, f"dep-kill-{n}", down)
        time.sleep(0.04 * (n + 1))  # an emit takes ~0.3 s here
        proc.send_signal(signal.SIGKILL)
        finish(proc)
    spool.directory.mkdir(parents=True, exist_ok=True)
    torn = spool.directory / ".tmp-00000000000000000001-0000-0123456789ab.json"
    torn.write_bytes(b'{"event_id":"torn","deployment_id":"dep-kill-x","eve')
    spooled = {DeploymentEvent.model_validate_json(p.read_bytes()).event_id for p in spool.files()}

    flushed = run_shipledger("flush", env=env)
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.startswith(f"sent {len(spooled)}, 0 remaining")
    assert not torn.exists()
    assert not spool.quarantine_dir.exists()
    if spooled:
        sent_once(spooled)


def test_a_corrupt_spool_file_is_quarantined_and_named(
    env: dict[str, str], down: str, sent_once: SentOnce, settings: Settings
) -> None:
    code, out, _ = finish(start_emit(env, "dep-ok", down))
    assert code == 0
    spool = Spool(settings)
    corrupt = spool.directory / "00000000000000000001-0000-0123456789ab.json"
    corrupt.write_bytes(b'{"event_id": "bitrot", "deployment_id": "dep-x", \x00\x00')

    flushed = run_shipledger("flush", env=env)
    assert flushed.returncode == 1  # something needs a human
    assert flushed.stdout.startswith("sent 1, 0 remaining")
    moved = spool.quarantine_dir / corrupt.name
    assert f"quarantined {moved}: not a valid event" in flushed.stderr
    assert moved.read_bytes().endswith(b"\x00\x00")
    again = run_shipledger("flush", env=env)
    assert (again.returncode, again.stdout.startswith("sent 0, 0 remaining")) == (0, True)
    assert moved.exists()
    sent_once({out.strip()})
    assert os.listdir(spool.quarantine_dir) == [corrupt.name]

"""The write-ahead journal: frames, torn and damaged bytes, writers in several processes, the
lock after a kill -9, sealing and group commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipledger.producers.journal import (
    MAGIC,
    Entry,
    GroupCommit,
    Journal,
    JournalError,
    decode,
    encode,
)


def entry(i: int, **kw: object) -> Entry:
    data: dict[str, object] = {
        "topic": "shipledger.deployments.raw",
        "key": f"acme/dep-{i}".encode(),
        "value": f"value-{i}".encode() * 3,
        "tenant": "acme",
        "event_id": f"e{i}",
        "family": "deployment",
    }
    data.update(kw)
    return Entry(**data)  # type: ignore[arg-type]


texts = st.text(max_size=20)
blobs = st.binary(max_size=64)


@given(
    st.builds(
        Entry,
        topic=texts,
        key=st.none() | blobs,
        value=blobs,
        tenant=texts,
        event_id=texts,
        family=texts,
        headers=st.lists(st.tuples(texts, blobs), max_size=3).map(tuple),
    )
)
def test_frames_round_trip(item: Entry) -> None:
    assert decode(encode(item) * 2).entries == [item, item]


def test_a_torn_tail_is_skipped_and_counted() -> None:
    frames = encode(entry(1)) + encode(entry(2))
    torn = frames + encode(entry(3))[:-5]
    decoded = decode(torn)
    assert [e.event_id for e in decoded.entries] == ["e1", "e2"]
    assert decoded.skipped_bytes == len(torn) - len(frames)


def test_entries_after_a_damaged_frame_are_found_again() -> None:
    """A frame torn by a power loss, then appends after it: nothing after it is lost."""
    damaged = bytearray(encode(entry(2)))
    damaged[-1] ^= 0xFF  # CRC mismatch
    data = encode(entry(1)) + bytes(damaged[:30]) + encode(entry(3)) + b"junk" + encode(entry(4))
    decoded = decode(data)
    assert [e.event_id for e in decoded.entries] == ["e1", "e3", "e4"]
    assert decoded.skipped_bytes == 30 + 4
    assert decode(MAGIC * 3).entries == []


def test_append_read_seal_remove(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", fsync=False)
    assert journal.segments() == []
    journal.append([entry(1), entry(2)])
    journal.append([entry(3)])
    (first,) = journal.segments()
    assert [e.event_id for e in journal.read(first).entries] == ["e1", "e2", "e3"]
    assert journal.seal() == [first]
    assert journal.seal() == [first]  # the new one is still empty: no third segment
    journal.append([entry(4)])
    old, new = journal.segments()
    assert old == first and [e.event_id for e in journal.read(new).entries] == ["e4"]
    journal.remove([old])
    assert journal.segments() == [new]
    assert oct(new.stat().st_mode & 0o777) == oct(0o600)


def test_a_full_segment_rolls_over(tmp_path: Path) -> None:
    journal = Journal(tmp_path, fsync=False, segment_bytes=100)
    for i in range(5):
        journal.append([entry(i)])
    segments = journal.segments()
    assert len(segments) == 5
    assert [e.event_id for s in segments for e in journal.read(s).entries] == [
        f"e{i}" for i in range(5)
    ]


def test_an_unwritable_journal_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError):
        Journal(blocker / "journal", fsync=False).append([entry(1)])


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shipledger.producers.journal import Entry, Journal
    journal = Journal(Path(sys.argv[1]), fsync=True, segment_bytes=4096)
    name = sys.argv[2]
    for i in range(150):
        journal.append([Entry("t", None, b"x" * (i % 50), "acme", f"{name}-{i}", "deployment")])
    """
)


def test_writers_in_several_processes_interleave_whole_entries(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    procs = [
        subprocess.Popen([sys.executable, "-P", "-c", _WRITER, str(directory), f"w{n}"])
        for n in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    journal = Journal(directory)
    read = [journal.read(s) for s in journal.segments()]
    assert all(r.skipped_bytes == 0 for r in read)
    ids = [e.event_id for r in read for e in r.entries]
    assert sorted(ids) == sorted(f"w{n}-{i}" for n in range(4) for i in range(150))
    for n in range(4):  # each writer's entries in its own order
        mine = [i for i in ids if i.startswith(f"w{n}-")]
        assert mine == [f"w{n}-{i}" for i in range(150)]


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shipledger.producers.journal import Journal
    with Journal(Path(sys.argv[1])).locked():
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_writer_killed_holding_the_lock_leaves_no_stale_lock(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-P", "-c", _HOLDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    journal = Journal(directory, fsync=False)
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(journal.append, [entry(1)])
        time.sleep(0.3)
        assert not blocked.done()  # the live holder does hold it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
        blocked.result(timeout=10)
    assert [e.event_id for e in journal.read(journal.segments()[-1]).entries] == ["e1"]


def test_group_commit_writes_concurrent_submissions(tmp_path: Path) -> None:
    journal = Journal(tmp_path, fsync=False)
    commit = GroupCommit(journal)
    futures = [commit.submit([entry(i), entry(i + 1000)]) for i in range(200)]
    for future in futures:
        future.result(timeout=10)
    commit.close()
    ids = [e.event_id for s in journal.segments() for e in journal.read(s).entries]
    assert sorted(ids) == sorted(
        [f"e{i}" for i in range(200)] + [f"e{i + 1000}" for i in range(200)]
    )


def test_group_commit_fails_every_future_of_a_failed_group(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    commit = GroupCommit(Journal(blocker / "journal", fsync=False))
    with pytest.raises(JournalError):
        commit.submit([entry(1)]).result(timeout=10)
    commit.close()


def test_the_journal_command_lists_segments(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shipledger.journal_cli import journal as journal_command

    runner = CliRunner()
    empty = runner.invoke(journal_command, ["--data-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "is empty" in empty.output
    store = Journal(tmp_path / "journal", fsync=False)
    store.append([entry(1), entry(2, topic="shipledger.changes")])
    shown = runner.invoke(journal_command, ["--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "shipledger.changes 1, shipledger.deployments.raw 1" in shown.output
    assert "1 segments, 2 events" in shown.output

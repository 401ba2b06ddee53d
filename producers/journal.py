"""The embedded stack's write-ahead journal: every event is on local disk before the embedded
broker (which keeps everything in memory) is asked to take it.

Who writes: the ingest API's Kafka bridge (`/v1/events`, `/v1/uploads`, webhooks), the
emitter's publisher (`shipledger emit`, `run`, `flush`) and `shipledger dlq replay`, only when
they send to the broker of a running `shipledger up` that advertises this journal in its stack
file. With any other broker nothing is journaled: Kafka itself is the durable log.
Who reads: `up`, when it starts an embedded broker (`shipledger.up.restore`): every entry the
ledger does not hold yet is sent again. `up` deletes a segment once the ledger holds every
entry of it (`JournalKeeper`), so the journal stays small.

Layout: `<data-dir>/journal/<16-digit number>.seg`, appended to in order, the highest number
being the one written; `journal.lock` serializes writers of every process (an exclusive
`flock`, released by the kernel when a writer dies, so a kill -9 leaves no stale lock). The
lock is taken with `fcntl` itself: importing the `filelock` package cost each `shipledger emit`
to an embedded stack 5-10 ms, and the journal (`os.fdatasync`) is POSIX-only anyway.
A frame is `SLJ1` | payload length (u32) | CRC-32 of the payload (u32) | payload (version 1:
topic, key, value, tenant, event_id, family and headers, each length-prefixed).

Guarantees and failure modes:
- `append` returns after the frames are written with one `write` (a kill -9 of the writer
  cannot leave half of it: the kernel finishes the call) and, with `fsync` (the default,
  `SHIPLEDGER_JOURNAL_FSYNC`), `fdatasync`ed: then they survive a power loss too. Without it
  they survive the death of any process, not of the machine.
- A frame torn by a power loss, or damaged on disk, fails its CRC: the reader skips to the
  next `SLJ1` whose frame checks out, counting the bytes skipped; a write after a damaged tail
  is never lost behind it.
- An error (disk full, permissions) raises `JournalError`: the caller must not acknowledge.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shipledger.durable import fsync_dir

MAGIC = b"SLJ1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, CRC-32 of the payload
_LENGTH = struct.Struct(">I")
_NONE = 0xFFFFFFFF
_VERSION = 1
SUFFIX = ".seg"
LOCK_NAME = "journal.lock"
#: A segment is closed for writing past this size (or when `up` seals it to compact).
SEGMENT_BYTES = 64 * 1024 * 1024


class JournalError(OSError):
    """The journal could not take (or give back) entries (an OSError: a disk problem)."""


@dataclass(frozen=True)
class Entry:
    """One journaled message: what to produce again, and what names it in the ledger."""

    topic: str
    key: bytes | None
    value: bytes
    tenant: str
    event_id: str
    #: The event family (`deployment`, `change`, ...); "" when the bytes could not be read.
    family: str
    headers: tuple[tuple[str, bytes], ...] = ()


def resent_entry(
    prefix: str,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Entry:
    """The entry of a stored message sent to `topic` (under topic prefix `prefix`) again, a
    dead letter's: family, tenant and event id read from `value` when it decodes as the
    topic's family, else the tenant of its `tenant/...` key and no event id; family "" for a
    topic of derived messages (records, alerts), which are not events."""
    from shipledger.schemas.families import family_of_topic
    from shipledger.schemas.registry import AvroCodec, DecodeError

    family = family_of_topic(prefix, topic)
    tenant = (key or b"").decode("utf-8", errors="replace").partition("/")[0]
    event_id = ""
    if family is not None:
        try:
            decoded = AvroCodec(family.schema).decode(value)
            tenant, event_id = str(decoded["tenant"]), str(decoded["event_id"])
        except (DecodeError, KeyError):
            pass
    name = family.name if family is not None else ""
    return Entry(topic, key, value or b"", tenant, event_id, name, headers)


# --- frames (pure) -----------------------------------------------------------------------


def _field(data: bytes | None) -> bytes:
    if data is None:
        return _LENGTH.pack(_NONE)
    return _LENGTH.pack(len(data)) + data


def encode(entry: Entry) -> bytes:
    """The frame of one entry."""
    parts = [
        bytes([_VERSION]),
        _field(entry.topic.encode()),
        _field(entry.key),
        _field(entry.value),
        _field(entry.tenant.encode()),
        _field(entry.event_id.encode()),
        _field(entry.family.encode()),
        _LENGTH.pack(len(entry.headers)),
        *(_field(k.encode()) + _field(v) for k, v in entry.headers),
    ]
    payload = b"".join(parts)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1

    def field(self) -> bytes | None:
        (length,) = _LENGTH.unpack_from(self.data, self.pos)
        self.pos += _LENGTH.size
        if length == _NONE:
            return None
        if self.pos + length > len(self.data):
            raise ValueError("field past the end of the frame")
        out = self.data[self.pos : self.pos + length]
        self.pos += length
        return out

    def text(self) -> str:
        raw = self.field()
        if raw is None:
            raise ValueError("missing text field")
        return raw.decode()


def _decode_payload(payload: bytes) -> Entry:
    if not payload or payload[0] != _VERSION:
        raise ValueError("unknown frame version")
    read = _Reader(payload)
    topic = read.text()
    key = read.field()
    value = read.field()
    if value is None:
        raise ValueError("missing value")
    tenant, event_id, family = read.text(), read.text(), read.text()
    (count,) = _LENGTH.unpack_from(payload, read.pos)
    read.pos += _LENGTH.size
    headers = []
    for _ in range(count):
        name = read.text()
        headers.append((name, read.field() or b""))
    if read.pos != len(payload):
        raise ValueError("trailing bytes in the frame")
    return Entry(topic, key, value, tenant, event_id, family, tuple(headers))


@dataclass
class Decoded:
    """What a segment holds: its entries in order, and how many bytes were unreadable."""

    entries: list[Entry] = field(default_factory=list)
    skipped_bytes: int = 0


def decode(data: bytes) -> Decoded:
    """Every intact frame of `data`, in order; damaged bytes (a torn tail, a bad CRC) are
    skipped up to the next frame that checks out."""
    out = Decoded()
    pos = 0
    while pos < len(data):
        frame = _frame_at(data, pos)
        if frame is None:
            found = data.find(MAGIC, pos + 1)
            end = len(data) if found < 0 else found
            out.skipped_bytes += end - pos
            pos = end
            continue
        entry, pos = frame
        out.entries.append(entry)
    return out


def _frame_at(data: bytes, pos: int) -> tuple[Entry, int] | None:
    if pos + _HEADER.size > len(data):
        return None
    magic, length, crc = _HEADER.unpack_from(data, pos)
    start = pos + _HEADER.size
    payload = data[start : start + length]
    if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
        return None
    try:
        return _decode_payload(payload), start + length
    except (ValueError, struct.error, UnicodeDecodeError):
        return None


# --- segments on disk ----------------------------------------------------------------------


def _number(path: Path) -> int:
    return int(path.stem)


def _segment_name(number: int) -> str:
    return f"{number:016d}{SUFFIX}"


class Journal:
    """The segments under `directory`; safe to use from several processes and threads."""

    def __init__(
        self, directory: Path, *, fsync: bool = True, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        # One writer thread at a time in this process; the file lock serializes processes.
        self._local = threading.Lock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal's lock (no process appends, seals or deletes meanwhile), creating
        the directory if need be."""
        import fcntl  # here: modules that import this one still load where fcntl is missing

        with self._local:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # drops the lock

    def segments(self) -> list[Path]:
        """The segment files, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(
            (p for p in self.directory.iterdir() if p.suffix == SUFFIX and p.stem.isdigit()),
            key=_number,
        )

    def _create(self, number: int) -> Path:
        path = self.directory / _segment_name(number)
        path.touch(mode=0o600)
        if self.fsync:
            fsync_dir(self.directory)
        return path

    def append(self, entries: Sequence[Entry]) -> None:
        """Write `entries` (one write, one fdatasync with `fsync`); raises JournalError."""
        if not entries:
            return
        data = b"".join(encode(entry) for entry in entries)
        try:
            with self.locked():
                segments = self.segments()
                if not segments or segments[-1].stat().st_size >= self.segment_bytes:
                    target = self._create(_number(segments[-1]) + 1 if segments else 1)
                else:
                    target = segments[-1]
                fd = os.open(target, os.O_WRONLY | os.O_APPEND)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if self.fsync:
                        os.fdatasync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise JournalError(f"cannot write the journal in {self.directory}: {exc}") from exc

    def seal(self) -> list[Path]:
        """Start a new segment for later appends; the segments before it, which nobody will
        write again (oldest first)."""
        with self.locked():
            segments = self.segments()
            if segments and segments[-1].stat().st_size == 0:
                return segments[:-1]  # the newest is empty: already a fresh start
            self._create(_number(segments[-1]) + 1 if segments else 1)
            return segments

    def read(self, segment: Path) -> Decoded:
        """A segment's entries (see `decode`)."""
        try:
            return decode(segment.read_bytes())
        except FileNotFoundError:
            return Decoded()

    def remove(self, segments: Iterable[Path]) -> None:
        """Delete sealed segments whose every entry is in the ledger."""
        with self.locked():
            for segment in segments:
                segment.unlink(missing_ok=True)

    def size_bytes(self) -> int:
        """Bytes in every segment."""
        return sum(p.stat().st_size for p in self.segments())


class GroupCommit:
    """Appends for many concurrent callers with one write and one fsync per group: while one
    group is being written, the next one gathers (the API's requests, under load).

    `submit(entries)` returns a future that completes once the entries are durable (or fails
    with JournalError). `close()` writes what was submitted, then stops."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._queue: queue.SimpleQueue[
            tuple[Sequence[Entry], concurrent.futures.Future[None]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="journal-commit", daemon=True)
        self._thread.start()

    def submit(self, entries: Sequence[Entry]) -> concurrent.futures.Future[None]:
        """Queue `entries`; the future is done once they are durable."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put((entries, future))
        return future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            group = [] if first is None else [first]
            stopping = first is None
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    group.append(item)
            if not group:
                continue
            try:
                self.journal.append([e for entries, _ in group for e in entries])
            except JournalError as exc:
                for _, future in group:
                    future.set_exception(exc)
            else:
                for _, future in group:
                    future.set_result(None)

    def close(self) -> None:
        """Write what was submitted, then stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)

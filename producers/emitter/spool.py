"""The emitter's local spool: events Kafka did not acknowledge wait here for `shipledger flush`.

One file per event, `<spool_dir>/<time_ns>-<n>-<random>.json`, holding the event's JSON
(`DeploymentEvent.model_dump_json()`, so its `event_id` and every field survive unchanged);
names sort in the order the events were spooled.

Guarantees (tested in tests/unit/test_emitter_spool.py and tests/integration/test_spool_*.py):

- Atomic, durable writes: an event is written to `.tmp-<name>`, fsynced, renamed into place,
  and the directory is fsynced before `append` returns. A writer killed mid-write leaves only a
  temp file, which `flush` ignores and removes once no writer is active; a failed write (a full
  disk) removes its temp file and raises `SpoolError` naming the directory and the reason.
- One flusher at a time: `flush` holds an exclusive lock on `.flush.lock` while it reads,
  sends and deletes, so concurrent flushes never send a file twice; writers never wait for it
  (they share the reader side of the `.write.lock` reader/writer lock, whose writer side a
  flusher takes without waiting, to know that a temp file is an orphan).
- A file is deleted only after Kafka acknowledged its event. A file that does not parse as an
  event (corrupted on disk, edited by hand) is moved to `quarantine/`, never sent or deleted.
- Across a crash it is at-least-once on the wire: a flusher killed between the acknowledgement
  and the delete sends that event again next time, with the same `event_id`, which the
  processors and the sink deduplicate (docs/operations.md).

The locks are `filelock`'s, portable to Windows runners (no `fcntl` needed): they work between
processes of one machine (CI jobs sharing a runner), not reliably on network file systems, so
the spool must be on a local disk. `filelock` is imported where a lock is taken: it loads
sqlite3, and an `emit` that reaches Kafka never touches the spool.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shipledger.durable import fsync_dir
from shipledger.schemas.models import DeploymentEvent
from shipledger.settings import Settings

if TYPE_CHECKING:
    from shipledger.producers.emitter.publisher import Publisher

SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
QUARANTINE_DIR = "quarantine"
WRITE_LOCK = ".write.lock"
FLUSH_LOCK = ".flush.lock"


class SpoolError(RuntimeError):
    """The spool could not be written; the message names the directory and the reason."""


@dataclass(frozen=True)
class FlushResult:
    """Outcome of one `Spool.flush`; `quarantined` are the files moved aside this time."""

    sent: int
    remaining: int
    quarantined: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _reason(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "")
    return f"{exc.strerror or exc} ({code})" if code else str(exc)


class Spool:
    """The spool directory of one machine (see the module docstring for its guarantees)."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.resolved_spool_dir
        self.quarantine_dir = self.directory / QUARANTINE_DIR

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Held by every writer while its temp files exist (shared with other writers)."""
        from filelock import ReadWriteLock

        lock = ReadWriteLock(self.directory / WRITE_LOCK, is_singleton=False)
        try:
            with lock.read_lock():
                yield
        finally:
            lock.close()

    def _mkdir(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.directory.parent)

    # --- writing -------------------------------------------------------------------------------

    def append(self, events: Sequence[DeploymentEvent]) -> list[Path]:
        """Spool `events`, one file each, atomically and durably; returns their paths.

        Raises SpoolError (nothing of the failed write left behind) if the disk refuses.
        """
        if not events:
            return []
        stamp = time.time_ns()
        names = [
            f"{stamp:020d}-{n:04d}-{uuid.uuid4().hex[:12]}{SUFFIX}" for n in range(len(events))
        ]
        temps: list[Path] = []
        try:
            self._mkdir()
            with self._writing():
                for name, event in zip(names, events, strict=True):
                    temps.append(self.directory / f"{TEMP_PREFIX}{name}")
                    fd = os.open(temps[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    try:
                        _write_all(fd, event.model_dump_json().encode("utf-8"))
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                # Renamed only once all are written: a full disk spools none of the batch.
                for temp, name in zip(temps, names, strict=True):
                    temp.rename(self.directory / name)
                fsync_dir(self.directory)
        except OSError as exc:
            for temp in temps:
                with suppress(OSError):
                    temp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write the spool {self.directory}: {_reason(exc)}") from exc
        return [self.directory / name for name in names]

    # --- reading -------------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The spooled event files, oldest first (temp files and quarantine excluded)."""
        try:
            paths = sorted(self.directory.iterdir())
        except FileNotFoundError:
            return []
        return [p for p in paths if p.suffix == SUFFIX and not p.name.startswith(".")]

    def pending(self) -> int:
        """How many events wait in the spool."""
        return len(self.files())

    def remove_orphan_temps(self) -> None:
        """Delete temp files of writers that died; skipped while any writer is writing."""
        if not self.directory.is_dir():
            return  # nothing was ever spooled here
        from filelock import ReadWriteLock, Timeout

        lock = ReadWriteLock(self.directory / WRITE_LOCK, blocking=False, is_singleton=False)
        try:
            with lock.write_lock():
                for path in self.directory.iterdir():
                    if path.name.startswith(TEMP_PREFIX):
                        path.unlink(missing_ok=True)
        except Timeout:
            return  # a writer holds the lock: its temp file is not an orphan
        finally:
            lock.close()

    def _quarantine(self, path: Path) -> Path:
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / path.name
        path.rename(target)
        fsync_dir(self.quarantine_dir)
        return target

    # --- flushing ------------------------------------------------------------------------------

    def flush(self, publisher: Publisher) -> FlushResult:
        """Send the spooled events through `publisher`; delete exactly those acknowledged.

        An event spooled twice (same `event_id`) is sent once and both files are deleted.
        """
        if not self.directory.is_dir():
            return FlushResult(sent=0, remaining=0)
        from filelock import FileLock

        with FileLock(self.directory / FLUSH_LOCK):
            self.remove_orphan_temps()
            paths: dict[str, list[Path]] = {}  # event_id -> its files, oldest first
            events: list[DeploymentEvent] = []
            quarantined: list[Path] = []
            for path in self.files():
                try:
                    event = DeploymentEvent.model_validate_json(path.read_bytes())
                except ValidationError:
                    quarantined.append(self._quarantine(path))
                    continue
                if event.event_id not in paths:
                    events.append(event)
                paths.setdefault(event.event_id, []).append(path)
            result = publisher.publish(events, spool_on_failure=False)
            unsent = {event.event_id for event in result.unsent}
            for event_id, files in paths.items():
                if event_id not in unsent:
                    for path in files:
                        path.unlink(missing_ok=True)
            if len(unsent) < len(paths):
                fsync_dir(self.directory)
        return FlushResult(
            sent=result.sent, remaining=len(unsent), quarantined=quarantined, errors=result.errors
        )


def spools_to_flush(located: Settings, here: Settings) -> list[Spool]:
    """The spool of the data dir `shipledger.locate` found (`located`), and that of the data
    dir as given or defaulted here (`here`, ./.shipledger) when it differs and holds events:
    an `emit` run before `shipledger up` started found no stack and spooled there."""
    spools = [Spool(located)]
    local = Spool(here)
    if local.directory.resolve() != spools[0].directory.resolve() and local.pending():
        spools.append(local)
    return spools

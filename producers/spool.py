"""The emitter's local spool: events Kafka did not acknowledge wait here for `shipledger flush`.

One JSON line per event (`DeploymentEvent.model_dump_json()`) in `<spool_dir>/events.jsonl`.
Every reader and writer holds an exclusive `fcntl` lock on a separate lock file, so concurrent
CI steps on one machine never interleave or lose lines.

Guarantees:

- `append` returns only after the lines are fsynced.
- `flush` sends each spooled event at most once per call (duplicates by `event_id` are sent
  once) and then atomically replaces the file with exactly the lines Kafka did not acknowledge:
  nothing is lost if the broker is down, the process dies mid-way (the old file stays), or
  events are appended meanwhile (they wait for the lock).
- A line that cannot be parsed (torn by a crash) is moved to `rejected.jsonl`, never dropped.
- Across calls it is at-least-once: a crash between the broker's acknowledgement and the
  rewrite sends those events again on the next flush; consumers deduplicate by `event_id`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shipledger.schemas.models import DeploymentEvent
from shipledger.settings import Settings

if TYPE_CHECKING:
    from shipledger.producers.publisher import Publisher

SPOOL_FILE = "events.jsonl"
REJECTED_FILE = "rejected.jsonl"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class FlushResult:
    """Outcome of one `Spool.flush`."""

    sent: int
    remaining: int
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool file of one data dir (see the module docstring for its guarantees)."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.resolved_spool_dir
        self.path = self.directory / SPOOL_FILE
        self.rejected_path = self.directory / REJECTED_FILE
        self._lock_path = self.directory / LOCK_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _append_lines(self, path: Path, lines: Sequence[str]) -> None:
        """Append whole lines durably; the caller holds the lock."""
        data = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = "\n" + data  # a torn last line must not swallow the next event
            _write_all(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if not existed:
            _fsync_dir(self.directory)

    def append(self, events: Sequence[DeploymentEvent]) -> Path:
        """Add events to the spool (durably, under the lock); returns the spool file's path."""
        if events:
            with self._locked():
                self._append_lines(self.path, [event.model_dump_json() for event in events])
        return self.path

    def _read_lines(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def pending(self) -> int:
        """How many lines wait in the spool."""
        with self._locked():
            return len(self._read_lines())

    def _rewrite(self, lines: Sequence[str]) -> None:
        """Atomically replace the spool with `lines` (removing it when empty)."""
        if not lines:
            self.path.unlink(missing_ok=True)
        else:
            tmp = self.directory / f".{SPOOL_FILE}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, "".join(f"{line}\n" for line in lines).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
        _fsync_dir(self.directory)

    def flush(self, publisher: Publisher) -> FlushResult:
        """Send the spooled events through `publisher`; keep exactly those not acknowledged."""
        with self._locked():
            lines = self._read_lines()
            if not lines:
                return FlushResult(sent=0, remaining=0)
            first_line: dict[str, str] = {}  # event_id -> its line, first occurrence wins
            events: list[DeploymentEvent] = []
            rejected: list[str] = []
            for line in lines:
                try:
                    event = DeploymentEvent.model_validate_json(line)
                except ValidationError:
                    rejected.append(line)
                    continue
                if event.event_id not in first_line:
                    first_line[event.event_id] = line
                    events.append(event)
            if rejected:
                self._append_lines(self.rejected_path, rejected)
            result = publisher.publish(events, spool_on_failure=False)
            unsent = {event.event_id for event in result.unsent}
            keep = [line for event_id, line in first_line.items() if event_id in unsent]
            self._rewrite(keep)
        return FlushResult(
            sent=result.sent, remaining=len(keep), rejected=len(rejected), errors=result.errors
        )

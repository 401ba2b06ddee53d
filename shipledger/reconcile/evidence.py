"""What every evidence parser yields: an observed change (`Observation`), an entry it could not
read (`Malformed`, with where and why), or None for an entry that is no deployment change (a
`get`, a 404, another AWS call). The parsers never raise on bad input."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar


@dataclass(frozen=True)
class Observation:
    """One change to a workload seen in the evidence.

    `workload` is the name the evidence gives the changed thing (a Kubernetes workload, an ECS
    service, a Lambda function; empty for an access log line), `fields` what a mapping rule
    matches on (`namespace`, `cluster`, `function`, `path`, `file`, ...). Who made the change
    is not kept: the ledger stores actors as pseudonyms, so names never match, and findings
    must not reintroduce them."""

    source: str
    location: str
    at: datetime
    until: datetime
    action: str
    workload: str
    fields: tuple[tuple[str, str], ...]

    def field(self, name: str) -> str:
        """The value of field `name` ('' when the evidence has none)."""
        return dict(self.fields).get(name, "")


@dataclass(frozen=True)
class Malformed:
    """An entry of the evidence that could not be read: where (file:line) and why."""

    location: str
    reason: str


Entry = Observation | Malformed | None
T = TypeVar("T")
#: Called with the number of bytes read so far of the file being parsed.
Progress = Callable[[int], None]


def read_lines(path: Path, progress: Progress | None = None) -> Iterator[tuple[int, str]]:
    """The lines of `path` (gzip-compressed when it ends in .gz, as CloudTrail delivers its
    files) numbered from 1, decoded as UTF-8 (bad bytes replaced, so that the parser says
    what is wrong with the line), `progress` told the bytes of the file read after each."""
    with path.open("rb") as raw:
        stream: Iterable[bytes] = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        for number, line in enumerate(stream, start=1):
            if progress is not None:
                progress(raw.tell())
            yield number, line.decode("utf-8", errors="replace")


def read_each(
    items: Iterable[tuple[str, T]], read: Callable[[T, str], Observation | None]
) -> Iterator[Entry]:
    """`read(item, location)` of each (location, item): an Observation or None, or, when it
    raises ValueError, a Malformed at that location saying why."""
    for location, item in items:
        try:
            yield read(item, location)
        except ValueError as exc:
            yield Malformed(location, str(exc))
        except RecursionError:  # JSON nested deeper than Python parses
            yield Malformed(location, "nested too deeply to read")


def numbered(name: str, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[str, str]]:
    """The lines of file `name` that are not blank, each with its location (`file:line`)."""
    file = Path(name).name
    return ((f"{file}:{number}", line) for number, line in lines if line.strip())


def utc(text: object, name: str) -> datetime:
    """ISO 8601 timestamp `text` (field `name`) as an aware UTC datetime; ValueError naming
    the field when it is missing or not one."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{name}: required, a timestamp")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: not an ISO 8601 timestamp: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: no time zone: {text[:40]!r}")
    return parsed.astimezone(UTC)


def last_segment(name: str) -> str:
    """The resource name at the end of an ARN or path (`arn:...:service/prod/checkout` ->
    `checkout`); a plain name as it is."""
    return name.rsplit("/", 1)[-1]

"""An import file as records: (line or item number, object) or why the line is unreadable.

NDJSON and CSV are read by the ingest API's upload parser (`producers.api.uploads`: one line
in memory, CSV's rules for cells and `attributes.<key>` columns); a JSON array (GitHub's saved
API answers) is read whole. A provider's format (`four-keys`, `devlake`, `github`) is one of
those containers whose rows its module (`history.four_keys`, ...) turns into events; each
event keeps the number of the row it came from. Without `--format`, the file's first record
says which (`detect`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

from shipledger.history import devlake, four_keys, github
from shipledger.history.mapping import Defaults, Refused
from shipledger.producers.api.uploads import Record, records
from shipledger.schemas.untrusted import BadJSON, loads

Format = Literal["ndjson", "csv", "four-keys", "devlake", "github"]
FORMATS: tuple[str, ...] = get_args(Format)
#: The providers' mappings, in the order detection tries them.
PROVIDERS: dict[str, ModuleType] = {
    github.NAME: github,
    devlake.NAME: devlake,
    four_keys.NAME: four_keys,
}
_CHUNK = 1 << 20
Container = Literal["ndjson", "csv", "json"]


class UnknownFormat(ValueError):
    """The file's format cannot be told from its content: `--format` must say."""


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def container_of(path: Path) -> Container:
    """How the file is laid out: a JSON array, CSV (a `.csv` name, or a first line that is no
    JSON) or NDJSON."""
    with path.open("rb") as file:
        head = file.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "json"
    if path.suffix.lower() == ".csv" or not head.startswith(b"{"):
        return "csv"
    return "ndjson"


def container_records(path: Path, container: Container) -> AsyncIterator[Record]:
    """The file's records: NDJSON and CSV streamed, a JSON array's items numbered from 1."""
    if container == "json":
        return _array_records(path)
    return records(container, _chunks(path))


async def _array_records(path: Path) -> AsyncIterator[Record]:
    try:
        items = loads(path.read_bytes(), "file")
    except BadJSON as exc:
        yield Record(0, None, exc.reason, exc.path)
        return
    if not isinstance(items, list):
        yield Record(0, None, "a JSON file must hold an array of objects", "file")
        return
    for number, item in enumerate(items, 1):
        yield Record(number, item)


async def detect(path: Path) -> Format:
    """The file's format from its first readable record (UnknownFormat if there is none)."""
    container = container_of(path)
    async for record in container_records(path, container):
        if not isinstance(record.obj, Mapping):
            continue
        for name, provider in PROVIDERS.items():
            if provider.matches(record.obj):
                return name  # type: ignore[return-value]
        if container == "json":
            raise UnknownFormat("a JSON array of objects no provider knows: give --format")
        return container
    raise UnknownFormat(f"no readable record in {path}: give --format")


async def event_objects(path: Path, fmt: Format, defaults: Defaults) -> AsyncIterator[Record]:
    """The file's event objects, each with the number of the record it came from, or the
    record's reason to be refused. A record of shipledger's own events (NDJSON, CSV) is its
    one event, passed on as read (the judge copies each object it validates)."""
    container: Container = fmt if fmt in ("ndjson", "csv") else container_of(path)
    provider = PROVIDERS.get(fmt)
    async for record in container_records(path, container):
        if record.error is not None:
            yield record
            continue
        # Most records are a dict: one type check, before the slower check of the ABC.
        if type(record.obj) is not dict and not isinstance(record.obj, Mapping):
            yield Record(record.line, None, "must be a JSON object", "line")
            continue
        if provider is None:
            yield record
            continue
        try:
            objects: list[dict[str, Any]] = provider.events(record.obj, defaults)
        except Refused as exc:
            yield Record(record.line, None, exc.reason, exc.field)
            continue
        for obj in objects:
            yield Record(record.line, obj)

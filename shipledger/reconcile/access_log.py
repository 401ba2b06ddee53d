"""Web access logs of deploy endpoints, in the Combined Log Format (Apache `combined`, nginx's
default `combined`; the Common Log Format without referer and agent too): the successful
POST and PUT requests. Which paths are deploy endpoints, and which service and environment
they name, the mapping's `path` patterns say (`shipledger.reconcile.mapping`): a request no
pattern matches is no deployment. The change is at the request's time (`%t`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from shipledger.reconcile.evidence import Entry, Observation, numbered, read_each

SOURCE = "access-log"
METHODS = frozenset({"POST", "PUT"})
_LINE = re.compile(r'^\S+ \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) \S+')


def parse(name: str, lines: Iterable[tuple[int, str]]) -> Iterator[Entry]:
    """Each numbered line of access log `name` as an Observation, a Malformed or None."""
    return read_each(numbered(name, lines), partial(_observation, file=Path(name).name))


def _observation(line: str, location: str, file: str) -> Observation | None:
    found = _LINE.match(line)
    if found is None:
        raise ValueError("not a Common/Combined Log Format line")
    parts = found["request"].split()
    if len(parts) != 3:
        raise ValueError(f"request: not METHOD PATH PROTOCOL: {found['request'][:60]!r}")
    method, target, _ = parts
    if method not in METHODS or not found["status"].startswith("2"):
        return None
    try:
        at = datetime.strptime(found["time"], "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)
    except ValueError:
        raise ValueError(f"time: not dd/Mon/yyyy:HH:MM:SS +zzzz: {found['time'][:40]!r}") from None
    path = target.split("?", 1)[0]
    fields = (("file", file), ("path", path), ("method", method))
    return Observation(SOURCE, location, at, at, f"{method} {path}", "", fields)

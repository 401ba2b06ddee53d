"""The sink's metrics: a narrow protocol (no-op default, a recording backend for tests) and the
catalogue of metric names it emits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Protocol

Tags = Mapping[str, str]

#: rows written, tagged by table
ROWS_INSERTED = "sink.rows_inserted"
#: rows dropped because their id was already stored or repeated in the batch, tagged by table
DUPLICATES_SKIPPED = "sink.duplicates_skipped"
#: messages forwarded to the dead-letter topic, tagged by source topic
DEAD_LETTERED = "sink.dead_lettered"
#: messages consumed
MESSAGES = "sink.messages"
#: duration of one flush (dedup + inserts + commit), in milliseconds
FLUSH_MS = "sink.flush_ms"
#: ClickHouse write attempts that failed and were retried
WRITE_RETRIES = "sink.write_retries"


class Metrics(Protocol):
    """Where counters and timings go (statsd, Prometheus, ... behind this)."""

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        """Add `value` to a counter."""

    def timing(self, name: str, value_ms: float, tags: Tags | None = None) -> None:
        """Record one duration in milliseconds."""


class NoopMetrics:
    """Metrics that go nowhere (the default)."""

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        """Ignore."""

    def timing(self, name: str, value_ms: float, tags: Tags | None = None) -> None:
        """Ignore."""


def _key(name: str, tags: Tags | None) -> str:
    if not tags:
        return name
    return name + "|" + ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


class RecordingMetrics:
    """Keeps every counter and timing in memory: for tests and progress output."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = defaultdict(int)
        self.timings: dict[str, list[float]] = defaultdict(list)

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        """Add to `counters["name|k=v"]`."""
        self.counters[_key(name, tags)] += value

    def timing(self, name: str, value_ms: float, tags: Tags | None = None) -> None:
        """Append to `timings["name|k=v"]`."""
        self.timings[_key(name, tags)].append(value_ms)

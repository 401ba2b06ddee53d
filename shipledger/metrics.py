"""The sink's and the escalator's metrics: a narrow protocol (no-op default), a recording
backend that progress output and tests read, and the catalogue of metric names they emit.

The sink counts each thing once, into a `RecordingMetrics` that forwards to the configured
backend (statsd, Prometheus, ... behind `Metrics`): its `stats()` are read from that recorder,
so the progress lines and the backend can never disagree.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

Tags = Mapping[str, str]

#: rows written, tagged by table
ROWS_INSERTED = "sink.rows_inserted"
#: rows dropped because their id was already stored or repeated in the batch, tagged by table
DUPLICATES_SKIPPED = "sink.duplicates_skipped"
#: messages forwarded to the dead-letter topic, tagged by source topic
DEAD_LETTERED = "sink.dead_lettered"
#: raw events the sink skipped because the processors dead-letter them
SKIPPED_INVALID = "sink.skipped_invalid"
#: messages consumed
MESSAGES = "sink.messages"
#: duration of one flush (dedup + inserts + commit), in milliseconds
FLUSH_MS = "sink.flush_ms"
#: ClickHouse write attempts that failed and were retried
WRITE_RETRIES = "sink.write_retries"
#: alerts the escalator consumed
ESCALATION_ALERTS = "escalation.alerts"
#: deliveries a receiver took (a ticket opened or found), tagged by receiver
ESCALATION_DELIVERED = "escalation.delivered"
#: deliveries given up (the alert dead-lettered), tagged by receiver
ESCALATION_DEAD = "escalation.dead_lettered"
#: attempts made (first tries and retries), tagged by receiver
ESCALATION_ATTEMPTS = "escalation.attempts"
#: deliveries skipped because the record or the ledger says they were done (replays)
ESCALATION_SKIPPED = "escalation.skipped"


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


@dataclass(frozen=True)
class TimingSummary:
    """What a recorder keeps of one timing: how many, the last one and when (epoch seconds)."""

    count: int
    last_ms: float
    last_at: float


class RecordingMetrics:
    """Keeps every counter, and a summary of every timing, in memory (thread-safe), and
    forwards each to `forward`: the one source of a component's progress figures."""

    def __init__(self, forward: Metrics | None = None) -> None:
        self._forward: Metrics = forward or NoopMetrics()
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._by_name: dict[str, dict[tuple[tuple[str, str], ...], int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._timings: dict[str, TimingSummary] = {}

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        """Add to the counter `name|k=v` (and forward)."""
        with self._lock:
            self._counters[_key(name, tags)] += value
            self._by_name[name][tuple(sorted((tags or {}).items()))] += value
        self._forward.increment(name, value, tags)

    def timing(self, name: str, value_ms: float, tags: Tags | None = None) -> None:
        """Count the timing `name|k=v`, keep it as the last one (and forward)."""
        key = _key(name, tags)
        with self._lock:
            before = self._timings.get(key)
            count = 1 if before is None else before.count + 1
            self._timings[key] = TimingSummary(count, value_ms, time.time())
        self._forward.timing(name, value_ms, tags)

    @property
    def counters(self) -> dict[str, int]:
        """Every counter by `name|k=v` (a snapshot)."""
        with self._lock:
            return dict(self._counters)

    def total(self, name: str) -> int:
        """Counter `name` summed over all its tags."""
        with self._lock:
            return sum(self._by_name[name].values()) if name in self._by_name else 0

    def by_tag(self, name: str, tag: str) -> dict[str, int]:
        """Counter `name` summed per value of `tag` (counts without the tag are left out)."""
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for tags, value in self._by_name.get(name, {}).items():
                found = dict(tags).get(tag)
                if found is not None:
                    out[found] += value
        return dict(out)

    def last_timing(self, name: str, tags: Tags | None = None) -> TimingSummary | None:
        """The summary of timing `name|k=v`, if it was ever recorded."""
        with self._lock:
            return self._timings.get(_key(name, tags))

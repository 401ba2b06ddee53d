"""The pipeline's metrics: one recorder per component, backed by prometheus-client, and the
catalogue of metric names the components emit.

Each component (API, processors worker, sink, escalator) counts each thing once, into its
`RecordingMetrics`: a Prometheus registry of its own, which `/metrics` serves (the API's
route, `serve` for the worker and the sink) and from which the progress lines, `stats()` and
the tests read their figures back. So what Prometheus scrapes and what the logs say can never
disagree: there is no second count.

Names are dotted here (`sink.rows_inserted`) and exposed as `shipledger_<name with _>`:
counters with Prometheus's `_total`, timings (given in milliseconds, named `…_ms`) as
histograms in seconds (`shipledger_sink_flush_seconds`) with a gauge of the last one and of
when it was (`…_last_seconds`, `…_last_timestamp_seconds`), gauges as they are. Each name
declares its labels (`CATALOGUE`); a tag not declared is an error, a declared one not given
is "".
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shipledger.logging import get_logger

Tags = Mapping[str, str]
log = get_logger("metrics")

#: rows written, tagged by table
ROWS_INSERTED = "sink.rows_inserted"
#: rows dropped because their id was already stored or repeated in the batch, tagged by table
DUPLICATES_SKIPPED = "sink.duplicates_skipped"
#: messages forwarded to the dead-letter topic, tagged by source topic
DEAD_LETTERED = "sink.dead_lettered"
#: raw events the sink skipped because the processors dead-letter them
SKIPPED_INVALID = "sink.skipped_invalid"
#: messages consumed, tagged by topic
MESSAGES = "sink.messages"
#: duration of one flush (dedup + inserts + commit), in milliseconds
FLUSH_MS = "sink.flush_ms"
#: duration of one table's insert (retries included), in milliseconds, tagged by table
INSERT_MS = "sink.insert_ms"
#: duration of the change sets of one flush's terminal deployments, in milliseconds
CHANGE_SETS_MS = "sink.change_sets_ms"
#: ClickHouse write attempts that failed and were retried
WRITE_RETRIES = "sink.write_retries"
#: messages the processors read, tagged by topic (raw deployment events, signals)
PROCESSOR_EVENTS_IN = "processors.events_in"
#: messages the processors produced, tagged by topic (records, alerts, dead letters)
PROCESSOR_EVENTS_OUT = "processors.events_out"
#: messages the processors dead-lettered, tagged by source topic
PROCESSOR_DEAD_LETTERED = "processors.dead_lettered"
#: alerts the processors raised (resolutions included), tagged by rule, severity and kind
ALERTS_RAISED = "processors.alerts"
#: events the API published (Kafka acknowledged), tagged by topic
API_EVENTS_PUBLISHED = "api.events_published"
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
#: runs of a periodic job (verification, triage, CMDB), tagged by job and outcome (ok, failed)
JOB_RUNS = "jobs.runs"
#: duration of one run of a periodic job, in milliseconds, tagged by job
JOB_RUN_MS = "jobs.run_ms"
#: 1 while this `shipledger jobs` (or `up`) holds the jobs' lease and runs them, 0 on standby
JOBS_LEASE_HELD = "jobs.lease_held"
#: messages a consumer group has not committed yet, per group and topic (read at scrape time)
CONSUMER_LAG = "consumer_lag"

Kind = Literal["counter", "timing", "gauge"]


@dataclass(frozen=True)
class Spec:
    """One metric of the catalogue: counter, timing or gauge, what it means, its labels."""

    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


CATALOGUE: dict[str, Spec] = {
    ROWS_INSERTED: Spec("counter", "Rows written to the ledger.", ("table",)),
    DUPLICATES_SKIPPED: Spec("counter", "Rows dropped as already stored.", ("table",)),
    DEAD_LETTERED: Spec("counter", "Messages the sink dead-lettered.", ("topic",)),
    SKIPPED_INVALID: Spec("counter", "Raw events the processors dead-letter."),
    MESSAGES: Spec("counter", "Messages the sink consumed.", ("topic",)),
    FLUSH_MS: Spec("timing", "One sink flush: dedup, inserts, commit."),
    INSERT_MS: Spec("timing", "One table's insert into ClickHouse.", ("table",)),
    CHANGE_SETS_MS: Spec("timing", "Change sets of one flush's terminal deployments."),
    WRITE_RETRIES: Spec("counter", "ClickHouse writes retried.", ("table",)),
    PROCESSOR_EVENTS_IN: Spec("counter", "Messages the processors read.", ("topic",)),
    PROCESSOR_EVENTS_OUT: Spec("counter", "Messages the processors produced.", ("topic",)),
    PROCESSOR_DEAD_LETTERED: Spec("counter", "Messages the processors dead-lettered.", ("topic",)),
    ALERTS_RAISED: Spec("counter", "Alerts and resolutions raised.", ("rule", "severity", "kind")),
    API_EVENTS_PUBLISHED: Spec("counter", "Events the API published.", ("topic",)),
    ESCALATION_ALERTS: Spec("counter", "Alerts the escalator consumed."),
    ESCALATION_DELIVERED: Spec("counter", "Deliveries a receiver took.", ("receiver",)),
    ESCALATION_DEAD: Spec("counter", "Deliveries given up.", ("receiver",)),
    ESCALATION_ATTEMPTS: Spec("counter", "Delivery attempts.", ("receiver",)),
    ESCALATION_SKIPPED: Spec("counter", "Deliveries skipped as already done."),
    JOB_RUNS: Spec("counter", "Runs of a periodic job.", ("job", "outcome")),
    JOB_RUN_MS: Spec("timing", "One run of a periodic job.", ("job",)),
    JOBS_LEASE_HELD: Spec("gauge", "1: this instance holds the jobs' lease and runs them."),
}


def exposed_name(name: str) -> str:
    """The Prometheus name of catalogue metric `name` (without `_total` or `_bucket`)."""
    base = "shipledger_" + name.replace(".", "_")
    return base.removesuffix("_ms") + "_seconds" if name.endswith("_ms") else base


class Metrics(Protocol):
    """Where counters and timings go (`RecordingMetrics`)."""

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        """Add `value` to a counter."""

    def timing(self, name: str, value_ms: float, tags: Tags | None = None) -> None:
        """Record one duration in milliseconds."""


@dataclass(frozen=True)
class TimingSummary:
    """What a recorder keeps of one timing: how many, the last one and when (epoch seconds)."""

    count: int
    last_ms: float
    last_at: float


@dataclass(frozen=True)
class _Timing:
    histogram: Histogram
    last: Gauge
    last_at: Gauge


#: A collector of a metric: a counter, or a timing's three.
_M = TypeVar("_M", Counter, Gauge, _Timing)


def _labels(name: str, spec: Spec, tags: Tags | None) -> dict[str, str]:
    given = dict(tags or {})
    unknown = set(given) - set(spec.labels)
    if unknown:
        raise ValueError(f"metric {name}: undeclared tags {sorted(unknown)}")
    return {label: str(given.get(label, "")) for label in spec.labels}


class RecordingMetrics:
    """A component's metrics in a prometheus-client registry of its own (thread-safe), read
    back for progress lines and tests (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._timings: dict[str, _Timing] = {}
        self._gauges: dict[str, Gauge] = {}
        # The labelled child of each counter and tags seen: the worker counts several times
        # per event, and `labels()` checks and locks on every call.
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Counter] = {}

    def _spec(self, name: str, kind: Kind) -> Spec:
        spec = CATALOGUE.get(name)
        if spec is None or spec.kind != kind:
            raise KeyError(f"{name!r} is not a {kind} of shipledger.metrics.CATALOGUE")
        return spec

    def _made(
        self, made: dict[str, _M], name: str, kind: Kind, make: Callable[[str, Spec], _M]
    ) -> _M:
        """The collector of `name` in `made`, made on first use by `make(exposed name, spec)`."""
        with self._lock:
            found = made.get(name)
            if found is None:
                found = made[name] = make(exposed_name(name), self._spec(name, kind))
            return found

    def _counter(self, name: str) -> Counter:
        return self._made(self._counters, name, "counter", self._new_counter)

    def _timing(self, name: str) -> _Timing:
        return self._made(self._timings, name, "timing", self._new_timing)

    def _gauge(self, name: str) -> Gauge:
        return self._made(self._gauges, name, "gauge", self._new_gauge)

    def _new_gauge(self, base: str, spec: Spec) -> Gauge:
        return Gauge(base, spec.help, spec.labels, registry=self.registry)

    def _new_counter(self, base: str, spec: Spec) -> Counter:
        return Counter(base, spec.help, spec.labels, registry=self.registry)

    def _new_timing(self, base: str, spec: Spec) -> _Timing:
        return _Timing(
            Histogram(base, spec.help, spec.labels, registry=self.registry),
            Gauge(f"{base.removesuffix('_seconds')}_last_seconds", spec.help,
                  spec.labels, registry=self.registry),
            Gauge(f"{base.removesuffix('_seconds')}_last_timestamp_seconds",
                  f"When: {spec.help}", spec.labels, registry=self.registry),
        )  # fmt: skip

    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        """Add `value` to counter `name` with `tags`."""
        key = (name, tuple(tags.items()) if tags else ())
        child = self._children.get(key)
        if child is None:
            counter = self._counter(name)
            labels = _labels(name, self._spec(name, "counter"), tags)
            child = self._children[key] = counter.labels(**labels) if labels else counter
        child.inc(value)

    def timing(self, name: str, value_ms: float, tags: Tags | None = None) -> None:
        """Observe one duration of timing `name`, and keep it as the last one."""
        timing = self._timing(name)
        labels = _labels(name, self._spec(name, "timing"), tags)
        histogram, last, last_at = timing.histogram, timing.last, timing.last_at
        if labels:
            histogram, last = histogram.labels(**labels), last.labels(**labels)
            last_at = last_at.labels(**labels)
        histogram.observe(value_ms / 1000)
        last.set(value_ms / 1000)
        last_at.set_to_current_time()

    def set(self, name: str, value: float, tags: Tags | None = None) -> None:
        """Set gauge `name` with `tags` to `value`."""
        gauge = self._gauge(name)
        labels = _labels(name, self._spec(name, "gauge"), tags)
        (gauge.labels(**labels) if labels else gauge).set(value)

    def add_collector(self, collector: Collector) -> None:
        """Serve `collector`'s metrics too (figures read at scrape time, e.g. consumer lag)."""
        self.registry.register(collector)

    def _counts(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        counter = self._counters.get(name)
        if counter is None:
            return
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    yield sample.labels, sample.value

    @property
    def counters(self) -> dict[str, int]:
        """Every counter by `name|k=v` (declared labels given a value), a snapshot."""
        out = {}
        for name in sorted(self._counters):
            for labels, value in self._counts(name):
                tags = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if v)
                out[f"{name}|{tags}" if tags else name] = int(value)
        return out

    def total(self, name: str) -> int:
        """Counter `name` summed over all its tags."""
        return int(sum(value for _, value in self._counts(name)))

    def by_tag(self, name: str, tag: str) -> dict[str, int]:
        """Counter `name` summed per value of `tag` (counts without the tag are left out)."""
        out: dict[str, int] = defaultdict(int)
        for labels, value in self._counts(name):
            if labels.get(tag):
                out[labels[tag]] += int(value)
        return dict(out)

    def last_timing(self, name: str, tags: Tags | None = None) -> TimingSummary | None:
        """The summary of timing `name` with `tags`, if it was ever recorded."""
        timing = self._timings.get(name)
        if timing is None:
            return None
        labels = _labels(name, self._spec(name, "timing"), tags)
        base = exposed_name(name)
        count = self.registry.get_sample_value(f"{base}_count", labels)
        if not count:
            return None
        stem = base.removesuffix("_seconds")
        last = self.registry.get_sample_value(f"{stem}_last_seconds", labels) or 0.0
        last_at = self.registry.get_sample_value(f"{stem}_last_timestamp_seconds", labels)
        return TimingSummary(int(count), last * 1000, last_at or 0.0)


class LagCollector:
    """`shipledger_consumer_lag{group, topic}`, read when scraped by `read()` (a mapping of
    topic -> lag, e.g. `shipledger.lag.lag_by_topic` over the group's partitions); nothing
    when the broker does not answer (the scrape still succeeds, the series goes stale)."""

    def __init__(self, group: str, read: Callable[[], Mapping[str, int]]) -> None:
        self._group = group
        self._read = read

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            exposed_name(CONSUMER_LAG),
            "Messages the consumer group has not committed yet.",
            labels=["group", "topic"],
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """What `collect` yields, without reading (the registry asks when registering)."""
        return [self._family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The lag of each topic of the group (Prometheus collector protocol)."""
        family = self._family()
        try:
            lags = self._read()
        except Exception:  # KafkaException, timeouts: no figure rather than a failed scrape
            lags = {}
        for topic, lag in sorted(lags.items()):
            family.add_metric([self._group, topic], lag)
        return [family]


@dataclass(frozen=True)
class Endpoint:
    """A running `/metrics` server (on a daemon thread) and its port."""

    server: WSGIServer
    port: int

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


def serve(
    metrics: RecordingMetrics, host: str, port: int | None, component: str
) -> Endpoint | None:
    """Serve `metrics` as `/metrics` on `host:port` (0: any free port) if a port is
    configured (None: no endpoint), logging where. A port that cannot be bound is logged, not
    fatal: metrics never stop the pipeline."""
    if port is None:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        log.error("metrics_endpoint_failed", component=component, port=port, error=str(exc))
        return None
    bound = int(server.server_port)
    log.info("metrics_endpoint", component=component, url=f"http://{host}:{bound}/metrics")
    return Endpoint(server, bound)

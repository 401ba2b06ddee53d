"""`shipledger bench`: throughput and latency of the embedded stack, beside a plain Faust
passthrough agent measured in the same run on the same broker.

Figures go to `<out>/results.json` and `<out>/results.md`; nothing here asserts a target.
"""

from __future__ import annotations

import compileall
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Consumer, TopicPartition

import shipledger
from shipledger.gc_tuning import tune_gc
from shipledger.kafka import KafkaProducer
from shipledger.lab.bench_changes import bench_changes
from shipledger.lab.bench_dora import bench_dora
from shipledger.lab.bench_gate import GATE_TENANT, TARGET_P99_MS, gate_markdown, seed
from shipledger.lab.bench_import import bench_import, import_markdown
from shipledger.lab.bench_ledger import synthetic_ledger
from shipledger.lab.bench_query import bench_query
from shipledger.lab.bench_report import bench_report
from shipledger.lab.bench_sink import bench_audit
from shipledger.lab.bench_suspects import bench_suspects
from shipledger.lab.demo import expected_outcome
from shipledger.lab.traffic import day_of_traffic, demo_day, demo_policy, prod_builds
from shipledger.logging import configure_logging
from shipledger.schemas.families import DEPLOYMENT, family_of
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.validation import EVENT_SCHEMA
from shipledger.settings import Settings
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.broker import stop_process
from shipledger.up.stack import Stack

EVENT = AvroCodec(EVENT_SCHEMA)
#: Sections measured on a running embedded stack (audit builds its own ledger), in the order
#: they run (the passthrough's own Faust worker goes last).
_STACK_SECTIONS = (
    "pipeline",
    "emit",
    "query_wall",
    "api",
    "durable",
    "gate",
    "stream",
    "passthrough",
)
#: The measures, in the order they run.
SECTIONS = (
    *_STACK_SECTIONS,
    "audit",
    "query",
    "dora",
    "report",
    "changes",
    "suspects",
    "import",
)
#: The sections measured on the one large synthetic ledger (`bench_ledger`).
_LEDGER_SECTIONS = {"dora": bench_dora, "report": bench_report, "suspects": bench_suspects}
#: Sections that need the stack to serve its API.
_API_SECTIONS = ("query_wall", "api", "gate", "stream")


@dataclass(frozen=True)
class Latency:
    """Latency distribution in milliseconds."""

    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Latency:
        """Summarize samples (nearest-rank percentiles)."""
        if not values_ms:
            return cls(0, float("nan"), float("nan"), float("nan"))
        ordered = sorted(values_ms)

        def rank(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return cls(len(ordered), rank(0.50), rank(0.99), round(ordered[-1], 1))


def _consumer(bootstrap: str, topic: str, partitions: int, fetch_wait_ms: int) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{topic}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return consumer


class _Counter(threading.Thread):
    """Counts a topic's messages in the background (throughput phases)."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__(daemon=True)
        self._consumer = consumer
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.count += sum(
                1 for msg in self._consumer.consume(1000, timeout=0.05) if msg.error() is None
            )
        self._consumer.close()


@dataclass(frozen=True)
class Stages:
    """Publish → seen on the output topic, and its two parts, split at the output message's
    create time (when the processor queued it): the fetch and the batching before it, then
    the rest of its batch, the flush and the subscriber's fetch."""

    total: Latency
    to_output: Latency
    output_to_seen: Latency


def measure_latency(
    stack: Stack,
    producer: KafkaProducer,
    source: str,
    output: str,
    items: Iterable[tuple[bytes, bytes, str]],
    count: int,
    rate: float,
    mode: str,
) -> Stages:
    """Publish `items` at `rate` and time each id's arrival on `output`, as seen by a probe
    in its own process (see `shipledger.lab.bench_reader`)."""
    out = stack.settings.data_dir / f"probe-{mode}.json"
    probe = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "shipledger.lab.bench_reader",
            stack.bootstrap,
            output,
            str(stack.settings.topic_partitions),
            str(count),
            str(out),
            mode,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None
    if probe.stdout.readline().strip() != "ready":
        raise click.ClickException("latency probe did not start")
    sent_at: dict[str, float] = {}
    _publish_at_rate(producer, source, items, rate, sent_at)
    probe.wait(timeout=180)
    received: dict[str, tuple[float, float | None]] = json.loads(out.read_text(encoding="utf-8"))
    if len(received) < count:
        raise click.ClickException(f"only {len(received)} of {count} arrived on {output}")
    timed = [(sent_at[k], *received[k]) for k in received if k in sent_at]
    stamped = [(sent, seen, created) for sent, seen, created in timed if created is not None]
    return Stages(
        Latency.of([(seen - sent) * 1000 for sent, seen, _ in timed]),
        Latency.of([(created - sent) * 1000 for sent, _, created in stamped]),
        Latency.of([(seen - created) * 1000 for _, seen, created in stamped]),
    )


def _publish_at_rate(
    producer: KafkaProducer,
    topic: str,
    items: Iterable[tuple[bytes, bytes, str]],
    rate: float,
    sent_at: dict[str, float],
) -> None:
    """Produce (key, value, id) at `rate` per second, recording each id's send time."""
    start = time.perf_counter()
    for index, (key, value, ident) in enumerate(items):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent_at[ident] = time.time()
        producer.produce(topic, value, key)
        producer.poll(0)
    producer.flush_or_raise(30, "latency probe events")


def _wait(
    predicate: Callable[[], bool], timeout_s: float, what: str, state: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise click.ClickException(f"benchmark timed out waiting for {what}: {state()}")
        time.sleep(0.05)


def _violating_event(index: int, run: str) -> DeploymentEvent:
    """A prod deployment without a change ticket: exactly one alert each (missing ticket), as
    long as its build (`_publish_builds` of `prod_builds` of it) was published first: the
    digest rules of the default policy find it built."""
    return DeploymentEvent(
        event_id=f"{run}-lat-{index}",
        deployment_id=f"{run}-lat-{index}",
        event_type="started",
        kind="emergency_patch",  # exempt from windows: one finding per event, any time
        service=f"svc-{index % 50}",
        environment="production",
        tenant="bench",
        commit_sha=f"{index:040x}",
        actor="bench",
        artifact_name="registry.example.com/bench/svc",
        version="1.0.0",
        artifact_digest="sha256:" + "be" * 32,
    )


def _publish_builds(stack: Stack, producer: KafkaProducer, builds: list[dict[str, Any]]) -> None:
    """Publish `builds` (`prod_builds`) on the artifacts topic, as a CI does before it deploys,
    and wait until the ledger has them: the deployments measured then raise the same alerts
    as without the digest rules, and none waits for the artifacts topic's catch-up."""
    assert stack.store is not None
    store = stack.store
    family = family_of("artifact")
    codec = AvroCodec(family.schema)
    # By id, not by count: a build one section published before is stored once (its id is
    # derived from the digest; only its time differs).
    want = {(str(build["tenant"]), str(build["event_id"])) for build in builds}
    for build in builds:
        event = family.model.model_validate({k: v for k, v in build.items() if k != "family"})
        producer.produce(
            stack.settings.topic(family.topic), codec.encode(event.to_avro()), family.key(event)
        )
    producer.flush_or_raise(30, "builds")
    _wait(lambda: store.existing_ids("artifact_events", want) == want, 120, "the builds")


def _await_worker(stack: Stack, producer: KafkaProducer, run: str) -> None:
    """Warm-up: one event, then wait until a record is queryable: the Faust worker has joined
    and consumes. A section measured before that would run beside an idle pipeline (a worker
    starts in seconds), not the one it shares the machine with."""
    assert stack.store is not None
    store = stack.store
    warm = _violating_event(0, run + "w")
    producer.produce(stack.topics.raw, EVENT.encode(warm.to_avro()), DEPLOYMENT.key(warm))
    producer.flush_or_raise(10, "warm-up event")
    _wait(lambda: store.count("deployment_records") >= 1, 120, "the worker to join")


def bench_pipeline(stack: Stack, events: int, rate: float, seconds: float) -> dict[str, Any]:
    """Sustained throughput (publish → rows in ClickHouse) and publish → alert latency."""
    assert stack.store is not None
    store = stack.store
    settings = stack.settings
    producer = KafkaProducer(settings.kafka_producer(stack.bootstrap))
    run = f"{int(time.time())}"
    day = demo_day(datetime.now(UTC).date())
    scale = max(1, events // 264)
    traffic = list(day_of_traffic(day, seed=11, scale=scale))
    builds = prod_builds([*traffic, _violating_event(0, run)])
    _publish_builds(stack, producer, builds)

    _await_worker(stack, producer, run)
    base = {t: store.count(t) for t in ("deployment_events", "deployment_records", "alerts")}

    # Latency at a steady rate, first, on a quiet stack (not in the wake of the burst's
    # ClickHouse merges): publish → alert on the alert topic, seen by a subscriber.
    count = int(rate * seconds)
    click.echo(f"  latency: {count} events at {rate:.0f}/s ...")
    items = (
        (DEPLOYMENT.key(e), EVENT.encode(e.to_avro()), e.event_id)
        for e in (_violating_event(i, run) for i in range(1, count + 1))
    )
    latency = measure_latency(
        stack, producer, stack.topics.raw, stack.topics.alerts, items, count, rate, "alert"
    )

    # Every latency event also becomes one raw row, one record and one alert.
    base = {table: rows + count for table, rows in base.items()}

    # Throughput: a burst of realistic traffic, as fast as the producer goes.
    want_alerts = sum(expected_outcome(traffic, demo_policy(day), builds).values())
    encoded = [(DEPLOYMENT.key(e), EVENT.encode(e.to_avro())) for e in traffic]
    click.echo(f"  throughput: {len(encoded)} events ...")
    start = time.perf_counter()
    for key, value in encoded:
        producer.produce(stack.topics.raw, value, key)
        producer.poll(0)
    producer.flush_or_raise(60, "burst events")
    published = time.perf_counter() - start
    target = {
        "deployment_events": base["deployment_events"] + len(encoded),
        "deployment_records": base["deployment_records"] + len(encoded),
        "alerts": base["alerts"] + want_alerts,
    }
    _wait(
        lambda: all(store.count(t) >= n for t, n in target.items()),
        600,
        "the burst",
        lambda: {t: f"{store.count(t)}/{n}" for t, n in target.items()},
    )
    elapsed = time.perf_counter() - start

    return {
        "throughput_events": len(encoded),
        "throughput_alerts": want_alerts,
        "publish_seconds": round(published, 2),
        "end_to_end_seconds": round(elapsed, 2),
        "events_per_second": round(len(encoded) / elapsed),
        "latency_rate_per_second": rate,
        "publish_to_alert": asdict(latency.total),
        "publish_to_alert_created": asdict(latency.to_output),
        "alert_created_to_seen": asdict(latency.output_to_seen),
    }


def bench_passthrough(stack: Stack, events: int, rate: float, seconds: float) -> dict[str, Any]:
    """The same measurements for a plain Faust passthrough agent (Faust's default settings)."""
    settings = stack.settings
    source, sink = settings.topic("bench.passthrough.in"), settings.topic("bench.passthrough.out")
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    for future in admin.create_topics(
        [
            NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1)
            for t in (source, sink)
        ]
    ).values():
        future.result(15)
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "passthrough.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "shipledger.lab.bench_passthrough",
                stack.bootstrap,
                source,
                sink,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return _drive_passthrough(stack, source, sink, events, rate, seconds)
        finally:
            stop_process(proc, timeout_s=20)


def _drive_passthrough(
    stack: Stack, source: str, sink: str, events: int, rate: float, seconds: float
) -> dict[str, Any]:
    settings = stack.settings
    producer = KafkaProducer(settings.kafka_producer(stack.bootstrap))
    reader = _Counter(_consumer(stack.bootstrap, sink, settings.topic_partitions, 10))
    reader.start()
    payload = EVENT.encode(_violating_event(0, "pt").to_avro())
    producer.produce(source, payload + b"w" * 16, b"warm")
    producer.flush_or_raise(10, "warm-up event")
    _wait(lambda: reader.count >= 1, 120, "the passthrough worker to join")

    click.echo(f"  passthrough throughput: {events} events ...")
    start = time.perf_counter()
    for i in range(events):
        producer.produce(source, payload + f"{i:016d}".encode(), str(i).encode())
        producer.poll(0)
    producer.flush_or_raise(60, "passthrough events")
    _wait(lambda: reader.count >= events + 1, 900, "the passthrough burst")
    elapsed = time.perf_counter() - start

    reader.stop.set()
    reader.join()
    count = int(rate * seconds)
    click.echo(f"  passthrough latency: {count} events at {rate:.0f}/s ...")
    items = ((str(i).encode(), payload + f"L{i:015d}".encode(), f"L{i:015d}") for i in range(count))
    latency = measure_latency(stack, producer, source, sink, items, count, rate, "suffix")
    return {
        "throughput_events": events,
        "end_to_end_seconds": round(elapsed, 2),
        "events_per_second": round(events / elapsed),
        "latency_rate_per_second": rate,
        "publish_to_output": asdict(latency.total),
    }


def _stored(store: LedgerStore, deployment_id: str) -> bool:
    sql = "SELECT count() FROM shipledger.deployment_events WHERE deployment_id = %(d)s"
    return bool(store.query(sql, {"d": deployment_id})[1][0][0])


@functools.cache
def _byte_compile() -> None:
    """Byte-compile shipledger's modules, as pip does when it installs the package: a CI job
    runs an installed `shipledger`, not an editable one whose modules, under
    PYTHONDONTWRITEBYTECODE, every process compiles again (~12 ms of an emit)."""
    for path in shipledger.__path__:
        compileall.compile_dir(path, quiet=1)


def _run_cli(stack: Stack, *args: str) -> float:
    """Run `shipledger *args` as a user would beside `stack` (its settings and broker in the
    environment); its wall time in ms, from the process's start to its exit."""
    _byte_compile()
    exe = str(Path(sys.executable).parent / "shipledger")
    env = {**os.environ, **stack.settings.to_env(), "SHIPLEDGER_BOOTSTRAP_SERVERS": stack.bootstrap}
    start = time.perf_counter()
    subprocess.run([exe, *args], env=env, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def bench_emit(stack: Stack, runs: int) -> dict[str, Any]:
    """Wall time of one `shipledger emit` process, and emit → row queryable in ClickHouse."""
    assert stack.store is not None
    store = stack.store
    walls: list[float] = []
    to_row: list[float] = []
    for i in range(runs):
        dep = f"emit-bench-{time.time_ns()}-{i}"
        start = time.perf_counter()
        walls.append(
            _run_cli(
                stack,
                "emit",
                "started",
                "--deployment-id",
                dep,
                "--service",
                "bench",
                "--environment",
                "dev",
                "--commit-sha",
                "ab" * 20,
                "--actor",
                "bench",
            )
        )
        _wait(functools.partial(_stored, store, dep), 60, "the emitted row")
        to_row.append((time.perf_counter() - start) * 1000)
    return {
        "runs": runs,
        "emit_wall_ms_median": round(statistics.median(walls), 1),
        "emit_to_row_ms_median": round(statistics.median(to_row), 1),
        "emit_to_row_ms_max": round(max(to_row), 1),
    }


#: The simple query `query_wall` times (a count over the hot table).
WALL_QUERY = "SELECT count() FROM deployment_events"


def bench_query_wall(stack: Stack, runs: int) -> dict[str, Any]:
    """Wall time of one `shipledger query` process while the stack runs: it finds the stack's
    file in the data dir and sends the query to the stack's API (chDB is the stack's)."""
    walls = [_run_cli(stack, "query", "--format", "json", WALL_QUERY) for _ in range(runs)]
    return {
        "runs": runs,
        "query": WALL_QUERY,
        "query_wall_ms_median": round(statistics.median(walls), 1),
        "query_wall_ms_max": round(max(walls), 1),
    }


def _ingest_token(stack: Stack, tenant: str, name: str) -> str:
    """A new token with the ingest scope for `tenant`, from the stack's token store."""
    from shipledger.producers.api.auth import AuthStore

    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        return auth.create_token(tenant, ("ingest",), name=name)[0]
    finally:
        auth.close()


def _run_client(stack: Stack, module: str, what: str, *args: object) -> dict[str, Any]:
    """Run the client process `module` (args, then the file it writes its JSON result to)
    and read its result; a ClickException when any of its `what` failed."""
    out = stack.settings.data_dir / f"{module.rsplit('.', 1)[-1]}.json"
    subprocess.run(
        [sys.executable, "-P", "-m", module, *(str(a) for a in args), str(out)], check=True
    )
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    if result["failures"]:
        raise click.ClickException(f"{result['failures']} {what} failed: {result['first_failure']}")
    return result


def _api_load(
    stack: Stack, url: str, batches: int, batch_size: int, threads: int
) -> dict[str, Any]:
    """Drive `POST /v1/events` at `url` from a client process (after a warm-up): events/s and
    request → 202 latency."""
    token = _ingest_token(stack, "bench", "bench")

    def load(count: int) -> dict[str, Any]:
        return _run_client(
            stack,
            "shipledger.lab.bench_api_client",
            "API requests",
            url,
            token,
            count,
            batch_size,
            threads,
        )

    producer = KafkaProducer(stack.settings.kafka_producer(stack.bootstrap))
    _await_worker(stack, producer, f"{int(time.time())}a")
    load(max(1, threads))  # warm-up: connections, producer, codecs
    result = load(batches)
    events = batches * batch_size
    return {
        "requests": batches,
        "batch_size": batch_size,
        "connections": threads,
        "events": events,
        "seconds": round(result["seconds"], 2),
        "events_per_second": round(events / result["seconds"]),
        "request_to_ack": asdict(Latency.of(result["latencies_ms"])),
        "latencies_ms": result["latencies_ms"],
    }


def bench_api(stack: Stack, batches: int, batch_size: int, threads: int) -> dict[str, Any]:
    """Sustained events/s through `POST /v1/events` (batches over keep-alive connections from
    a client process) and request → 202 latency, the 202 coming after the journal's fsync and
    Kafka's acks (the API `up` serves)."""
    assert stack.api is not None
    click.echo(f"  api: {batches} requests of {batch_size} events, {threads} connections ...")
    result = _api_load(stack, stack.api.url, batches, batch_size, threads)
    del result["latencies_ms"]
    return result


def bench_gate(stack: Stack, requests: int) -> dict[str, Any]:
    """p50/p99 of `POST /v1/gate` (request → decision recorded and answered), beside the
    target p99 < 100 ms."""
    assert stack.api is not None
    url = stack.api.url
    token = _ingest_token(stack, GATE_TENANT, "bench gate")
    seed(stack, token)

    def ask(count: int) -> dict[str, Any]:
        return _run_client(stack, "shipledger.lab.bench_gate", "gate requests", url, token, count)

    click.echo(f"  gate: {requests} questions, one at a time ...")
    ask(20)  # warm-up: connection, producer, codecs, the ledger's first reads
    found = ask(requests)
    latency = Latency.of(found["latencies_ms"])
    return {
        "requests": requests,
        "seconds": round(found["seconds"], 2),
        "decisions": found["decisions"],
        "request_to_decision": asdict(latency),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": latency.p99_ms < TARGET_P99_MS,
    }


def bench_stream(stack: Stack, rate: float, seconds: float, clients: int) -> dict[str, Any]:
    """Event → dashboard latency: deployment events published at `rate` while `clients` live
    streams (`GET /v1/stream`, as the page reads it) are open in a client process; for each
    event, the time until each client received its deployment record (the processors, the
    records topic, the API's one consumer and its fan-out)."""
    assert stack.api is not None and stack.store is not None
    from shipledger.producers.api.auth import AuthStore

    producer = KafkaProducer(stack.settings.kafka_producer(stack.bootstrap))
    run = f"{int(time.time())}s"
    _publish_builds(stack, producer, prod_builds([_violating_event(0, run)]))
    _await_worker(stack, producer, run)
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        token = auth.create_token("bench", ("read",), name="bench stream")[0]
    finally:
        auth.close()
    count = int(rate * seconds)
    out = stack.settings.data_dir / "bench-stream.json"
    click.echo(f"  stream: {count} events at {rate:.0f}/s to {clients} dashboard clients ...")
    readers = subprocess.Popen(
        [
            sys.executable,
            "-P",
            "-m",
            "shipledger.lab.bench_stream",
            stack.api.url,
            token,
            str(clients),
            str(count),
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert readers.stdout is not None
    if readers.stdout.readline().strip() != "ready":
        raise click.ClickException("the dashboard clients did not connect")
    items = (
        (DEPLOYMENT.key(e), EVENT.encode(e.to_avro()), e.event_id)
        for e in (_violating_event(i, run) for i in range(1, count + 1))
    )
    sent_at: dict[str, float] = {}
    _publish_at_rate(producer, stack.topics.raw, items, rate, sent_at)
    readers.wait(timeout=180)
    found = json.loads(out.read_text(encoding="utf-8"))
    received: dict[str, list[float]] = found["received"]
    every = [(t - sent_at[k]) * 1000 for k, times in received.items() for t in times]
    first = [(min(times) - sent_at[k]) * 1000 for k, times in received.items()]
    deliveries = sum(len(times) for times in received.values())
    return {
        "rate_per_second": rate,
        "events": count,
        "clients": clients,
        "deliveries": deliveries,
        "deliveries_expected": count * clients,
        "clients_dropped": found["dropped"],
        # The machine's load while measuring: the latency tail follows it closely.
        "load_average_1m": round(os.getloadavg()[0], 1),
        "event_to_first_client": asdict(Latency.of(first)),
        "event_to_every_client": asdict(Latency.of(every)),
    }


#: The journal modes the durable-acknowledgement section compares, in the order run.
DURABLE_MODES = (("journal_off", None), ("journal_no_fsync", False), ("journal_fsync", True))


def bench_durable(
    stack: Stack, batches: int, batch_size: int, threads: int, single_batches: int
) -> dict[str, Any]:
    """The cost of durable acknowledgement: the ingest API's events/s and latency with no
    journal (a 202 after Kafka's acks only: what a crash of the embedded broker could lose),
    with the journal written but not fsynced (survives a crash of any process), and with it
    fsynced (survives a power loss too: the default). Each mode is a fresh API server on
    the same stack, measured with batches of `batch_size` events and with one event per
    request (where the per-request fsync weighs most).

    The stack slows down as its ledger grows (the sink's id checks), which favoured whichever
    mode ran first (measured: up to 40 %). So every run starts on an idle pipeline and the
    modes run twice, in an order and its reverse (ABCCBA); each figure is over both runs."""
    from shipledger.producers.api.server import ApiServer
    from shipledger.producers.journal import Journal

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for mode, fsync in [*DURABLE_MODES, *reversed(DURABLE_MODES)]:
        journal = (
            None
            if fsync is None
            else Journal(stack.settings.data_dir / f"bench-{mode}", fsync=fsync)
        )
        stack.drain(timeout_s=300)  # the previous run's events must not compete for the CPU
        click.echo(f"  durable: {mode} ...")
        with ApiServer(stack.settings, stack.bootstrap, journal=journal) as api:
            mine = runs.setdefault(mode, {"batched": [], "single": []})
            mine["batched"].append(_api_load(stack, api.url, batches, batch_size, threads))
            mine["single"].append(_api_load(stack, api.url, single_batches, 1, threads))
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    for mode, shapes in runs.items():
        results[mode] = {shape: _combined(measured) for shape, measured in shapes.items()}
    return results


def _combined(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Several `_api_load` runs as one: events over seconds, latency over every request."""
    events = sum(m["events"] for m in measured)
    seconds = sum(m["seconds"] for m in measured)
    latencies = [ms for m in measured for ms in m["latencies_ms"]]
    return {
        "runs": len(measured),
        "batch_size": measured[0]["batch_size"],
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_second": round(events / seconds),
        "request_to_ack": asdict(Latency.of(latencies)),
    }


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# shipledger bench — {results['when']}",
        "",
        f"Machine: {results['machine']}. Embedded stack: Tansu (memory), 1 Faust worker, "
        f"chDB sink, {results['partitions']} partitions.",
        "",
    ]
    if "pipeline" in results and "passthrough" in results:
        lines += _pipeline_markdown(results)
    if "emit" in results:
        e = results["emit"]
        lines += [
            "`shipledger emit` (one process, real broker): median wall "
            f"{e['emit_wall_ms_median']} ms;"
            f" emit → row queryable in ClickHouse: median {e['emit_to_row_ms_median']} ms "
            f"(max {e['emit_to_row_ms_max']} ms, {e['runs']} runs). Target: wall < 250 ms "
            f"({_met(e['emit_wall_ms_median'] < 250)}).",
            "",
        ]
    if "query_wall" in results:
        q = results["query_wall"]
        lines += [
            "`shipledger query` (one process, a simple query while the stack runs, answered "
            f"through the stack's API: `{q['query']}`): median wall {q['query_wall_ms_median']} "
            f"ms (max {q['query_wall_ms_max']} ms, {q['runs']} runs). Target: < 300 ms "
            f"({_met(q['query_wall_ms_median'] < 300)}).",
            "",
        ]
    if "api" in results:
        a = results["api"]
        lines += [
            f"Ingest API (`POST /v1/events`, {a['batch_size']} events per request, "
            f"{a['connections']} keep-alive connections from a client process, 202 after "
            f"Kafka's acks): {a['events_per_second']} events/s sustained ({a['events']} "
            f"events in {a['seconds']} s); request → ack latency p50 "
            f"{a['request_to_ack']['p50_ms']} ms, p99 {a['request_to_ack']['p99_ms']} ms. "
            "Target: ≥ 10,000 events/s with p99 < 200 ms ("
            f"{_met(a['events_per_second'] >= 10_000 and a['request_to_ack']['p99_ms'] < 200)}).",
            "",
        ]
    if "durable" in results:
        lines += _durable_markdown(results["durable"])
    if "gate" in results:
        lines += gate_markdown(results["gate"])
    if "stream" in results:
        lines += _stream_markdown(results["stream"])
    if "audit" in results:
        lines += _audit_markdown(results["audit"])
    if "query" in results:
        lines += _query_markdown(results["query"])
    if "dora" in results:
        lines += _dora_markdown(results["dora"])
    if "report" in results:
        lines += _report_markdown(results["report"])
    if "changes" in results:
        lines += _changes_markdown(results["changes"])
    if "suspects" in results:
        lines += _suspects_markdown(results["suspects"])
    if "import" in results:
        lines += import_markdown(results["import"])
    return "\n".join(lines)


def _durable_markdown(durable: dict[str, Any]) -> list[str]:
    names = {
        "journal_off": "no journal (202 after Kafka's acks only)",
        "journal_no_fsync": "journal, no fsync (survives a crash)",
        "journal_fsync": "journal + fdatasync (survives a power loss; default)",
    }
    lines = [
        f"Durable acknowledgement (ingest API of the embedded stack, one run on one stack, "
        f"{durable.get('when', '?')}; each mode measured twice, in the order below and its "
        "reverse, every run from an idle pipeline):",
        "",
        "| mode | events/s, batches | p50 / p99 ms | events/s, 1 per request | p50 / p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, _ in DURABLE_MODES:
        if mode not in durable:
            continue
        b, one = durable[mode]["batched"], durable[mode]["single"]
        lines.append(
            f"| {names[mode]} | {b['events_per_second']} ({b['batch_size']} per request) | "
            f"{b['request_to_ack']['p50_ms']} / {b['request_to_ack']['p99_ms']} | "
            f"{one['events_per_second']} | {one['request_to_ack']['p50_ms']} / "
            f"{one['request_to_ack']['p99_ms']} |"
        )
    return [*lines, ""]


def _stream_markdown(stream: dict[str, Any]) -> list[str]:
    first, every = stream["event_to_first_client"], stream["event_to_every_client"]
    return [
        f"Live dashboard stream (`GET /v1/stream`, {stream['clients']} concurrent clients in "
        f"a client process, {stream['events']} deployment events at "
        f"{stream['rate_per_second']:.0f} ev/s through the pipeline): event → first client "
        f"p50 {first['p50_ms']} ms, p99 {first['p99_ms']} ms; event → every client p50 "
        f"{every['p50_ms']} ms, p99 {every['p99_ms']} ms; {stream['deliveries']} of "
        f"{stream['deliveries_expected']} deliveries, {stream['clients_dropped']} clients "
        f"dropped (load average {stream.get('load_average_1m', '?')} on "
        f"{os.cpu_count()} cores while measuring).",
        "",
    ]


def _audit_markdown(audit: dict[str, Any]) -> list[str]:
    return [
        f"`shipledger audit verify` over {audit['records']:,} deployment events "
        f"({audit['chains']} chains, stored through the sink's write path in "
        f"{audit['build_and_write_s']} s): {audit['verify_s']} s "
        f"({audit['verify_rows_per_s']:,} rows/s). On disk: "
        f"{audit['bytes_on_disk_per_event']} bytes per deployment event (merged, chain and "
        f"retention columns included; system.parts bytes_on_disk / rows).",
        "",
    ]


def _query_markdown(query: dict[str, Any]) -> list[str]:
    tenant, operator = query["tenant_run_read_query_ms"], query["operator_run_read_query_ms"]
    direct, check = query["direct_on_store_client_ms"], query["allow_list_check_only_ms"]
    return [
        f"Read-query guard (`run_read_query`, a typical dashboard query over "
        f"{query['events']:,} events, {query['samples']} runs each): as a tenant p50 "
        f"{tenant['p50']} ms / p99 {tenant['p99']} ms, as an operator p50 {operator['p50']} ms "
        f"/ p99 {operator['p99']} ms, the same SQL straight on the store's client p50 "
        f"{direct['p50']} ms / p99 {direct['p99']} ms; the allow-list check alone p50 "
        f"{check['p50']} ms / p99 {check['p99']} ms (the rest is the engine's normalization, "
        "two `EXPLAIN AST` and a fresh read-only session).",
        "",
    ]


def _dora_markdown(dora: dict[str, Any]) -> list[str]:
    ms = dora["team_quarter_ms"]
    return [
        f"DORA report (`shipledger metrics dora`, one team's quarter by week, "
        f"{dora['team_quarter_deployments']:,} of its deployments) over a ledger of "
        f"{dora['deployments']:,} deployments: p50 {ms['p50']} ms / p99 {ms['p99']} ms "
        f"({dora['samples']} runs; target p99 < 100 ms). Loading them through the "
        f"materialized views took {dora['load_s']} s, then "
        f"{dora.get('merges_settled_s', 0)} s until ClickHouse's background merges were done "
        "(timed after them: the steady state of a ledger that grew over months).",
        "",
    ]


def _report_markdown(report: dict[str, Any]) -> list[str]:
    return [
        f"Monthly compliance pack (`shipledger report monthly`, {report['month']}, "
        f"{report['month_prod_deployments']:,} production deployments of one tenant) over a "
        f"ledger of {report['deployments']:,} deployments: {report['pack_s']} s for every "
        f"file, the HTML report and the signed manifest ({report['pack_bytes']:,} bytes).",
        "",
    ]


def _changes_markdown(changes: dict[str, Any]) -> list[str]:
    one, batched = changes["per_deployment_ms"], changes["per_deployment_in_batches_of_50_ms"]
    return [
        f"Change sets (docs/changes.md; the sink's cost per finished deployment) over a ledger "
        f"of {changes['deployments']:,} deployments of {changes['services']} services and "
        f"{changes['source_events']:,} pushes, {changes['commits_per_set']} commits per set: "
        f"p50 {one['p50']} ms / p99 {one['p99']} ms for a flush with one deployment; "
        f"p50 {batched['p50']} ms / p99 {batched['p99']} ms per deployment in batches of 50 "
        f"({changes['samples']} deployments).",
        "",
    ]


def _suspects_markdown(suspects: dict[str, Any]) -> list[str]:
    ms = suspects["suspects_ms"]
    return [
        f"Incident suspects (`GET /v1/suspects`: an incident's service and its dependencies up "
        f"to 3 hops, the last 24 h, {suspects['suspects_per_incident']} suspects on average) "
        f"over a ledger of {suspects['deployments']:,} deployments: p50 {ms['p50']} ms / p99 "
        f"{ms['p99']} ms ({suspects['samples']} incidents; target p99 < 100 ms), timed after "
        "the ledger's background merges were done (see DORA above).",
        "",
    ]


def _pipeline_markdown(results: dict[str, Any]) -> list[str]:
    p, b = results["pipeline"], results["passthrough"]
    ratio = p["events_per_second"] / max(b["events_per_second"], 1)
    return [
        "| measure | shipledger pipeline | plain Faust passthrough |",
        "|---|---|---|",
        f"| sustained events/s | {p['events_per_second']} ({p['throughput_events']} events "
        f"→ rows in ClickHouse + {p['throughput_alerts']} alerts) | {b['events_per_second']} "
        f"({b['throughput_events']} messages) |",
        f"| p50 latency at {p['latency_rate_per_second']:.0f} ev/s | "
        f"{p['publish_to_alert']['p50_ms']} ms (publish → alert) | "
        f"{b['publish_to_output']['p50_ms']} ms (publish → output) |",
        f"| p99 latency at {p['latency_rate_per_second']:.0f} ev/s | "
        f"{p['publish_to_alert']['p99_ms']} ms | {b['publish_to_output']['p99_ms']} ms |",
        "",
        *_alert_stages(p),
        f"Pipeline / passthrough throughput: {ratio:.1f}x. Targets: ≥ 10,000 events/s and ≥ 3x "
        f"the passthrough ({_met(p['events_per_second'] >= 10_000 and ratio >= 3)}); p99 "
        f"publish → alert < 250 ms ({_met(p['publish_to_alert']['p99_ms'] < 250)}).",
        "",
    ]


def _alert_stages(pipeline: dict[str, Any]) -> list[str]:
    """Where publish → alert went: up to the alert's create time (the worker queueing it as it
    judged the event), then to the probe (results of a bench before the split have neither)."""
    if "publish_to_alert_created" not in pipeline:
        return []
    to, seen = pipeline["publish_to_alert_created"], pipeline["alert_created_to_seen"]
    return [
        f"Publish → alert created by the worker: p50 {to['p50_ms']} / p99 {to['p99_ms']} ms; "
        f"alert created → seen by the probe (the rest of its batch, the flush, the probe's "
        f"fetch): p50 {seen['p50_ms']} / p99 {seen['p99_ms']} ms.",
        "",
    ]


def _met(met: bool) -> str:
    return "met" if met else "not met"


def _on_large_ledger(sections: list[str], deployments: int) -> dict[str, Any]:
    """Build the synthetic ledger of `deployments` once, then run each of `sections` on it."""
    click.echo(f"  a ledger of {deployments:,} deployments for {', '.join(sections)} ...")
    with synthetic_ledger(deployments, "shipledger-bench-ledger-") as (store, load_s, settle_s):
        results: dict[str, Any] = {}
        for section in sections:
            results[section] = {
                "deployments": deployments,
                "load_s": round(load_s, 1),
                "merges_settled_s": round(settle_s, 1),
                **_LEDGER_SECTIONS[section](store),
            }
            click.echo(f"  {section}: {results[section]}")
        return results


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench"),
    show_default=True,
    help="Directory for results.json and results.md.",
)
@click.option("--events", default=50_000, show_default=True, help="Events in the burst.")
@click.option("--rate", default=1000.0, show_default=True, help="Events/s of the latency phase.")
@click.option("--seconds", default=15.0, show_default=True, help="Length of the latency phase.")
@click.option("--emit-runs", default=10, show_default=True, help="`shipledger emit` calls timed.")
@click.option("--api-requests", default=300, show_default=True, help="Ingest API requests.")
@click.option("--api-batch", default=100, show_default=True, help="Events per API request.")
@click.option("--api-connections", default=4, show_default=True, help="API client connections.")
@click.option("--gate-requests", default=300, show_default=True, help="Gate questions timed.")
@click.option(
    "--stream-clients", default=50, show_default=True, help="Concurrent dashboard streams."
)
@click.option(
    "--stream-rate", default=100.0, show_default=True, help="Events/s of the stream's phase."
)
@click.option(
    "--only",
    type=click.Choice(SECTIONS),
    multiple=True,
    help="Run only these measures (repeatable); the other sections of results.json are kept.",
)
@click.option(
    "--audit-records",
    default=1_000_000,
    show_default=True,
    help="Deployment events in the audit benchmark's ledger.",
)
@click.option(
    "--ledger-deployments",
    default=10_000_000,
    show_default=True,
    help="Deployments in the large ledger the DORA, compliance pack and suspects "
    "benchmarks share (built once).",
)
@click.option(
    "--changes-deployments",
    default=20_000,
    show_default=True,
    help="Deployments in the change-set benchmark's ledger.",
)
@click.option(
    "--import-events",
    default=100_000,
    show_default=True,
    help="Deployment events in the history import benchmark's file.",
)
def bench(
    out: Path,
    events: int,
    rate: float,
    seconds: float,
    emit_runs: int,
    api_requests: int,
    api_batch: int,
    api_connections: int,
    gate_requests: int,
    stream_clients: int,
    stream_rate: float,
    only: tuple[str, ...],
    audit_records: int,
    ledger_deployments: int,
    changes_deployments: int,
    import_events: int,
) -> None:
    """Measure the embedded stack: sustained events/s and p50/p99 latency, beside a plain
    Faust passthrough agent on the same broker, the cost of one `shipledger emit` and of one
    `shipledger query` while the stack runs, the
    ingest API's events/s and request → Kafka ack latency (with and without the durable
    journal), the pre-deploy gate's latency, event → live dashboard latency with its fan-out
    to many clients, `audit verify` over a large ledger with its bytes on disk per event, the
    read-query guard's latency, a team's quarter of DORA metrics, a month's compliance pack,
    the change sets' cost per finished deployment, an incident's suspects and the history
    import's events/s.

    \b
      shipledger bench --out bench              # everything (make bench)
      shipledger bench --out bench --only api   # just the ingest API (make bench-api)
      shipledger bench --out bench --only durable  # the journal's cost (make bench-durable)
      shipledger bench --out bench --only gate  # POST /v1/gate latency (make bench-gate)
      shipledger bench --out bench --only stream  # event → live dashboard (make bench-stream)
      shipledger bench --out bench --only audit # audit verify over 1M events
      shipledger bench --out bench --only query # the read-query guard's cost
      shipledger bench --out bench --only emit --only query_wall  # one CLI process's wall
      shipledger bench --out bench --only dora  # a team's quarter of DORA metrics
      shipledger bench --out bench --only report  # a month's compliance pack
      shipledger bench --out bench --only changes  # change-set cost per deployment
      shipledger bench --out bench --only suspects  # an incident's suspects at 10M
      shipledger bench --out bench --only import  # shipledger import's events/s (make bench-import)
      shipledger bench --out bench --only dora --only report --only suspects  # one 10M ledger
    """
    data_dir = out / "data.tmp"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    # The burst is a day of demo traffic, judged under the demo policy (its alerts are counted).
    policy = data_dir / "policy.yaml"
    policy.write_text(demo_policy(demo_day(datetime.now(UTC).date())), encoding="utf-8")
    settings = Settings(
        data_dir=data_dir,
        log_level="warning",
        policy_file=policy,
        api_port=0,
        api_rate_per_s=1e9,  # measure the API, not its rate limit
        api_rate_burst=10**9,
    )
    configure_logging(settings)
    sections = only or SECTIONS
    previous = out / "results.json"
    results: dict[str, Any] = {}
    if only and previous.is_file():
        results = json.loads(previous.read_text(encoding="utf-8"))
    on_stack = [s for s in sections if s in _STACK_SECTIONS]
    if on_stack:
        click.echo("shipledger bench: starting the embedded stack ...")
        serve_api = any(s in _API_SECTIONS for s in on_stack)
        tune_gc()  # as `shipledger up` does: this process runs the stack's sink
        with Stack(settings, log_dir=data_dir / "logs", api=serve_api) as stack:
            measures: dict[str, Callable[[], dict[str, Any]]] = {
                "pipeline": lambda: bench_pipeline(stack, events, rate, seconds),
                "emit": lambda: bench_emit(stack, emit_runs),
                "query_wall": lambda: bench_query_wall(stack, emit_runs),
                "api": lambda: bench_api(stack, api_requests, api_batch, api_connections),
                "durable": lambda: bench_durable(
                    stack, api_requests, api_batch, api_connections, api_requests * 2
                ),
                "gate": lambda: bench_gate(stack, gate_requests),
                "stream": lambda: bench_stream(stack, stream_rate, seconds, stream_clients),
                "passthrough": lambda: bench_passthrough(stack, min(events, 30_000), rate, seconds),
            }
            for section in on_stack:
                results[section] = measures[section]()
                click.echo(f"  {section}: {results[section]}")
    if "audit" in sections:
        click.echo(f"  audit verify: {audit_records} events ...")
        results["audit"] = bench_audit(audit_records)
        click.echo(f"  audit: {results['audit']}")
    if "query" in sections:
        click.echo("  query guard ...")
        results["query"] = bench_query()
        click.echo(f"  query: {results['query']}")
    on_ledger = [s for s in sections if s in _LEDGER_SECTIONS]
    if on_ledger:
        results |= _on_large_ledger(on_ledger, ledger_deployments)
    if "changes" in sections:
        click.echo(f"  changes: {changes_deployments} deployments ...")
        results["changes"] = bench_changes(changes_deployments)
        click.echo(f"  changes: {results['changes']}")
    if "import" in sections:
        click.echo(f"  import: {import_events} events ...")
        results["import"] = bench_import(import_events)
        click.echo(f"  import: {results['import']}")
    results |= {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "partitions": settings.topic_partitions,
        "settings": {
            k: v
            for k, v in settings.model_dump(mode="json").items()
            if k.startswith(("fetch", "processor", "sink", "session", "producer"))
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(_markdown(results), encoding="utf-8")
    shutil.rmtree(data_dir, ignore_errors=True)
    click.echo((out / "results.md").read_text(encoding="utf-8"))

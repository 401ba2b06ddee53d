"""Sink throughput: N deployment events pre-produced to Kafka, drained into ClickHouse.

`bench_sink()` returns the numbers (the stack benchmark can call it); `python -m
shipledger.lab.bench_sink --events 50000` prints them as JSON. Without `bootstrap` it starts an
embedded Tansu broker; ClickHouse is chDB in a temporary data dir unless `settings` says
otherwise. Run it from a directory that is not the repo root (the repo's `shipledger/`
folder would shadow the installed package).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shipledger.kafka import KafkaProducer
from shipledger.logging import configure_logging
from shipledger.schemas.families import DEPLOYMENT
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks.in_thread import running
from shipledger.sinks.ledger.audit import verify
from shipledger.sinks.ledger.ddl import EVENTS
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, event_row
from shipledger.sinks.sink import ClickHouseSink
from shipledger.sinks.writer import LedgerWriter
from shipledger.topics import ensure_topics
from shipledger.up.broker import EmbeddedBroker

_SERVICES = [f"svc-{i:03d}" for i in range(120)]
_ENVS = ["prod", "stage", "qa", "dev"]
_TENANTS = ["acme", "globex", "initech"]


def sample_events(n: int, start: datetime | None = None) -> list[DeploymentEvent]:
    """`n` realistic events: 4 stages per deployment, 120 services, 3 tenants, a day apart."""
    start = start or datetime.now(UTC) - timedelta(days=1)
    step = timedelta(days=1) / max(n, 1)
    events = []
    for i in range(n):
        dep = i // 4
        events.append(
            DeploymentEvent(
                deployment_id=f"dep-{dep:08d}",
                event_type="started" if i % 4 == 0 else "succeeded",
                service=_SERVICES[dep % len(_SERVICES)],
                environment=_ENVS[dep % len(_ENVS)],
                region="eu-west-1" if dep % 2 else None,
                tenant=_TENANTS[dep % len(_TENANTS)],
                repository=f"acme/{_SERVICES[dep % len(_SERVICES)]}",
                commit_sha=uuid.uuid5(uuid.NAMESPACE_OID, str(dep)).hex + "01234567",
                version=f"1.{dep % 50}.{i % 7}",
                actor=f"user{dep % 40}@acme.example",
                pipeline_provider="github_actions",
                pipeline_run_id=str(10_000 + dep),
                pipeline_run_url=f"https://ci.example/runs/{10_000 + dep}",
                pipeline_stage="deploy",
                exit_code=0 if i % 4 else None,
                duration_ms=1000 + i % 5000 if i % 4 else None,
                occurred_at=start + step * i,
                attributes={"team": f"team-{dep % 12}"},
            )
        )
    return events


def _produce(settings: Settings, bootstrap: str, events: list[DeploymentEvent]) -> float:
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    producer = KafkaProducer({**settings.kafka_producer(bootstrap), "linger.ms": 20})
    topic = settings.topic("deployments.raw")
    started = time.perf_counter()
    for event in events:
        producer.produce(topic, codec.encode(event.to_avro()), DEPLOYMENT.key(event))
    producer.flush_or_raise(60, "benchmark events")
    return time.perf_counter() - started


def _drain(
    sink: ClickHouseSink, target: int, count: Any, timeout_s: float
) -> dict[str, float | None]:
    """Run the sink until `count(stats)` reaches `target`; timings from start/first flush."""
    first: float | None = None
    first_count = 0
    started = time.perf_counter()
    deadline = started + timeout_s
    with running(sink, "bench-sink") as errors:
        while not errors:
            done = count(sink.stats())
            now = time.perf_counter()
            if first is None and done > 0:
                first, first_count = now, done
            if done >= target:
                break
            if now > deadline:
                raise TimeoutError(f"sink reached {done}/{target} in {timeout_s}s")
            time.sleep(0.005)
        finished = time.perf_counter()
    steady = None
    if first is not None and finished > first:
        steady = (target - first_count) / (finished - first)
    return {
        "wall_s": finished - started,
        "first_rows_after_s": None if first is None else first - started,
        "steady_rows_per_s": steady,
    }


def bench_sink(
    events: int = 50_000,
    bootstrap: str | None = None,
    settings: Settings | None = None,
    replay: bool = True,
) -> dict[str, Any]:
    """Pre-produce `events` raw events, then measure the sink draining them into ClickHouse.

    Returns rows/s (wall, including the consumer-group join, and steady, from the first
    flush), on-disk bytes per event (after a final merge), and, with `replay`, the rate at
    which a second consumer group re-reads everything and skips it all as duplicates.
    """
    tmp = Path(tempfile.mkdtemp(prefix="shipledger-sink-bench-"))
    base = settings or Settings()
    settings = base.model_copy(
        update={"data_dir": tmp, "topic_prefix": f"bench{uuid.uuid4().hex[:8]}."}
        | ({} if settings and settings.clickhouse_url else {"clickhouse_url": None})
    )
    broker = None if bootstrap else EmbeddedBroker(log_path=tmp / "tansu.log")
    try:
        if broker is not None:
            bootstrap = broker.start()
        assert bootstrap is not None
        ensure_topics(settings, bootstrap)
        produce_s = _produce(settings, bootstrap, sample_events(events))
        policy = load_policy(settings.policy_file)
        with LedgerStore.open(settings) as store:
            store.ensure_schema()
            sink = ClickHouseSink(settings, bootstrap, store, policy=policy)
            first = _drain(sink, events, lambda s: s.rows_inserted[EVENTS], 600)
            stats = sink.stats()
            assert store.count(EVENTS) == events
            raw_bytes = store.disk_bytes(EVENTS)
            store.query(f"OPTIMIZE TABLE {store.database}.{EVENTS} FINAL")
            merged_bytes = store.disk_bytes(EVENTS)
            result: dict[str, Any] = {
                "events": events,
                "partitions": settings.topic_partitions,
                "sink_batch_size": settings.sink_batch_size,
                "sink_batch_ms": settings.sink_batch_ms,
                "produce_s": round(produce_s, 3),
                "wall_s": round(first["wall_s"] or 0, 3),
                "wall_rows_per_s": round(events / (first["wall_s"] or 1)),
                "first_rows_after_s": _round(first["first_rows_after_s"], 2),
                "steady_rows_per_s": _round(first["steady_rows_per_s"], 0),
                "flushes": stats.flushes,
                "rows_per_flush": round(events / max(stats.flushes, 1)),
                "bytes_on_disk_per_event": round(raw_bytes / events, 1),
                "bytes_on_disk_per_event_merged": round(merged_bytes / events, 1),
            }
            if replay:
                again = ClickHouseSink(
                    settings,
                    bootstrap,
                    store,
                    policy=policy,
                    group_id=f"{settings.topic_prefix}replay",
                )
                rerun = _drain(again, events, lambda s: s.duplicates_skipped[EVENTS], 600)
                assert store.count(EVENTS) == events
                result["replay_wall_s"] = round(rerun["wall_s"] or 0, 3)
                result["replay_steady_rows_per_s"] = _round(rerun["steady_rows_per_s"], 0)
        return result
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_audit(records: int = 1_000_000, chunk: int = 50_000) -> dict[str, Any]:
    """`audit verify` over `records` deployment events stored as the sink stores them (row
    built by `event_row`, stamped and inserted by the sink's `LedgerWriter`, chunk by
    chunk), and the ledger's on-disk bytes per event (chain columns included, merged)."""
    tmp = Path(tempfile.mkdtemp(prefix="shipledger-audit-bench-"))
    settings = Settings(data_dir=tmp, log_level="warning")
    try:
        with LedgerStore.open(settings) as store:
            store.ensure_schema()
            writer = LedgerWriter(store, load_policy(settings.policy_file))
            started = time.perf_counter()
            for first in range(0, records, chunk):
                size = min(chunk, records - first)
                rows = [
                    event_row(e.to_avro(), KafkaMeta("raw", 0, first + i, None))
                    for i, e in enumerate(sample_events(size))
                ]
                writer.write_rows({EVENTS: rows})
            write_s = time.perf_counter() - started
            store.query(f"OPTIMIZE TABLE {store.database}.{EVENTS} FINAL")
            disk = store.disk_bytes(EVENTS)
            stored = store.count(EVENTS)
            report = verify(store)
            if not report.clean or report.rows != records:
                raise RuntimeError(f"benchmark ledger did not verify clean: {report.text()}")
        return {
            "records": records,
            "chains": report.chains,
            "build_and_write_s": round(write_s, 1),
            "verify_s": round(report.seconds, 2),
            "verify_rows_per_s": round(records / report.seconds),
            "bytes_on_disk_per_event": round(disk / stored, 1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def main(argv: list[str] | None = None) -> None:
    """`python -m shipledger.lab.bench_sink [--events N] [--bootstrap host:port]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--no-replay", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(Settings(log_level="warning"))
    result = bench_sink(args.events, args.bootstrap, replay=not args.no_replay)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

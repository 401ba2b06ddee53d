"""`shipledger sink` as a process: consumes into its chDB data dir, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks.ledger.ddl import EVENTS
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.topics import ensure_topics
from tests.kit import SHIPLEDGER, deployment_event

pytestmark = pytest.mark.integration


def test_sink_command_drains_and_stops_on_sigterm(
    broker: str, settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings, broker)
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    producer = Producer(settings.kafka_producer(broker))
    for i in range(25):
        event = deployment_event(deployment_id=f"dep-{i}")
        producer.produce(settings.topic("deployments.raw"), value=codec.encode(event.to_avro()))
    assert producer.flush(10) == 0

    env = {
        **os.environ,
        "SHIPLEDGER_TOPIC_PREFIX": settings.topic_prefix,
        "SHIPLEDGER_SESSION_TIMEOUT_S": "1.5",
        "SHIPLEDGER_SINK_BATCH_MS": "50",
    }
    cmd = [
        SHIPLEDGER,
        "sink",
        "--bootstrap",
        broker,
        "--data-dir",
        str(settings.data_dir),
        "--progress-s",
        "0.2",
    ]
    # cwd away from the repo root, whose shipledger/ folder would shadow the package
    with subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        lines: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        try:
            for line in proc.stderr:
                if line.startswith("{"):
                    lines.append(json.loads(line))
                    rows = lines[-1].get("rows_inserted")
                    if isinstance(rows, dict) and rows.get(EVENTS) == 25:
                        break
                assert time.monotonic() < deadline, "sink did not report 25 rows in time"
            proc.send_signal(signal.SIGTERM)
            tail = proc.stderr.read()
            assert proc.wait(30) == 0, tail
        finally:
            if proc.poll() is None:
                proc.kill()
    assert '"sink stopped"' in tail
    assert any(entry.get("event") == "progress" for entry in lines)
    with LedgerStore.open(settings) as store:  # the process is gone: its data dir is free
        assert store.count(EVENTS) == 25

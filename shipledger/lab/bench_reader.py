"""The latency probe of `shipledger bench`: reads a topic in its own process, like a real
subscriber, so that measuring never competes for a GIL with what is measured.

`python -P -m shipledger.lab.bench_reader <bootstrap> <topic> <partitions> <count> <out.json>
<mode>`
reads from the end of the topic, prints `ready`, and writes `{id: [receive time, create time]}`
for `count` messages (or after 120 s), both in epoch seconds: the create time is the message's
Kafka timestamp, which the producer that wrote it set as it queued it (the worker, as it judged
the event), so the bench can tell the time up to the output from the time to deliver it. `mode`
says where the id is: `alert` (Avro alert's event_id) or `suffix` (the last 16 bytes of the
value).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from confluent_kafka import OFFSET_END, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from shipledger.kafka import ready_messages
from shipledger.schemas.registry import topic_codec
from shipledger.schemas.topics import ALERTS


def main(bootstrap: str, topic: str, partitions: int, count: int, out: Path, mode: str) -> None:
    """Record when each id arrives; see the module docstring."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-probe-{topic}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    consumer.poll(0.5)  # resolves the end offsets before anything is published
    print("ready", flush=True)
    codec = topic_codec(ALERTS)
    received: dict[str, tuple[float, float | None]] = {}
    deadline = time.monotonic() + 120
    while len(received) < count and time.monotonic() < deadline:
        # Not `consume(n, timeout)`: it held each alert up to 50 ms (25 on average) in the
        # probe, not the pipeline.
        for msg in ready_messages(consumer, 0.05, 1000):
            value = msg.value()
            if msg.error() is not None or value is None:
                continue
            now = time.time()
            key = codec.decode(value)["event_id"] if mode == "alert" else value[-16:].decode()
            kind, stamp_ms = msg.timestamp()
            received[key] = (now, None if kind == TIMESTAMP_NOT_AVAILABLE else stamp_ms / 1000)
    consumer.close()
    out.write_text(json.dumps(received), encoding="utf-8")


if __name__ == "__main__":
    main(
        sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]), sys.argv[6]
    )

"""The ingest API's load client for `shipledger bench`: its own process, so the client never
competes for a GIL with the server it measures.

`python -P -m shipledger.lab.bench_api_client <url> <token> <batches> <batch_size> <threads> <out>`
sends `batches` requests of `batch_size` events each, from `threads` keep-alive connections,
and writes `{"seconds": wall time, "latencies_ms": [...], "failures": n}` to `out`. Each
latency is request sent → 202 received, which the API answers after Kafka's acks.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx


def _batch(run: str, index: int, size: int) -> bytes:
    events = [
        {
            "event_id": f"{run}-{index}-{i}",
            "deployment_id": f"{run}-{index}-{i}",
            "event_type": "started",
            "service": f"svc-{i % 50}",
            "environment": "staging",
            "commit_sha": f"{index * size + i:040x}",
            "actor": "bench",
            "occurred_at": "2026-11-26T10:00:00Z",
        }
        for i in range(size)
    ]
    return json.dumps({"events": events}).encode()


def main(url: str, token: str, batches: int, size: int, threads: int, out: Path) -> None:
    """Send the load; see the module docstring."""
    run = uuid.uuid4().hex[:8]
    bodies = [_batch(run, i, size) for i in range(batches)]  # built before the clock starts
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(batches))

    def worker() -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                start = time.perf_counter()
                answer = client.post("/v1/events", content=bodies[index])
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if answer.status_code == 202:
                        latencies.append(elapsed)
                    else:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result: dict[str, Any] = {
        "seconds": time.perf_counter() - start,
        "latencies_ms": latencies,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
    }
    out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
        int(sys.argv[5]),
        Path(sys.argv[6]),
    )

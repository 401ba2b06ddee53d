"""The dashboard clients of `shipledger bench --only stream`: many live-stream (SSE) readers in
their own process, like browsers, so reading never competes for a GIL with the API.

`python -P -m shipledger.lab.bench_stream <url> <token> <clients> <count> <out.json>`
opens `clients` streams of `GET /v1/stream`, prints `ready` once every one is open, and
writes `{"received": {deployment_id: [receive time per client]}, "dropped": n}` once every
client saw `count` first records (seq 1) of deployments, or after 120 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

_DEADLINE_S = 120.0
#: A deployment's first record, and where its id starts (the frame's compact JSON).
_FIRST = b'"seq":1,'
_ID = b'"deployment_id":"'


async def _client(
    http: httpx.AsyncClient,
    token: str,
    count: int,
    received: dict[str, list[float]],
    opened: asyncio.Event,
    open_count: list[int],
    clients: int,
) -> bool:
    """Read one stream until `count` first records arrived; False if the client was dropped.
    Frames are looked at as bytes, not parsed: 50 clients in one process must keep up."""
    seen = 0
    buffered = b""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", "/v1/stream", headers=headers) as answer:
        answer.raise_for_status()
        async for chunk in answer.aiter_bytes():
            now = time.time()
            *frames, buffered = (buffered + chunk).split(b"\n\n")
            for frame in frames:
                if b"event: status" in frame and not opened.is_set():
                    open_count[0] += 1
                    if open_count[0] == clients:
                        opened.set()
                elif b"event: dropped" in frame:
                    return False
                elif b"event: deployment" in frame and _FIRST in frame:
                    start = frame.index(_ID) + len(_ID)
                    deployment = frame[start : frame.index(b'"', start)].decode()
                    received.setdefault(deployment, []).append(now)
                    seen += 1
                    if seen >= count:
                        return True
    return True


async def _main(url: str, token: str, clients: int, count: int, out: Path) -> None:
    received: dict[str, list[float]] = {}
    opened = asyncio.Event()
    open_count = [0]
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    # No read timeout: a stream is idle between events (the deadline below bounds the run).
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        tasks = [
            asyncio.create_task(_client(http, token, count, received, opened, open_count, clients))
            for _ in range(clients)
        ]
        await asyncio.wait_for(opened.wait(), 60)
        print("ready", flush=True)
        done, pending = await asyncio.wait(tasks, timeout=_DEADLINE_S)
        for task in pending:
            task.cancel()
    dropped = sum(1 for task in done if task.exception() is None and not task.result())
    out.write_text(json.dumps({"received": received, "dropped": dropped}), encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(
        _main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
    )

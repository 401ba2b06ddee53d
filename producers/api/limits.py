"""Request limits: body size (read incrementally, so a missing Content-Length cannot bypass it),
a body that stops arriving (`BodyDeadline`), and a token bucket per API token."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TooLarge(Exception):
    """A body (or batch) over its limit (HTTP 413)."""


class Stalled(Exception):
    """A body that stopped arriving before its end (HTTP 408)."""


class BodyDeadline:
    """ASGI middleware: a request body that sends nothing for `idle_s` seconds before its end
    raises Stalled in the route reading it. Without it a client that declares a body and
    sends it slowly, or never, holds its connection (and a file descriptor) for ever, before
    any signature or token is checked on a webhook. After the body, `receive` waits as long
    as it likes (the live stream waits for the client to leave). The answer to a stalled
    body closes the connection: the rest of that body would otherwise be read as the next
    request, and the connection would stay held for the keep-alive time."""

    def __init__(self, app: ASGIApp, idle_s: float) -> None:
        self.app = app
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = stalled = False

        async def receive_in_time() -> Message:
            nonlocal body_done, stalled
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.idle_s):
                    message = await receive()
            except TimeoutError:
                stalled = True
                raise Stalled(
                    f"the request body stopped arriving: nothing for {self.idle_s:g} s "
                    "(SHIPLEDGER_API_BODY_IDLE_TIMEOUT_S)"
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def send_closing(message: Message) -> None:
            if stalled and message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive_in_time, send_closing)


def check_declared_length(content_length: str | None, limit: int, what: str) -> None:
    """Refuse up front a body whose Content-Length is over `limit`."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        return  # the server rejects a malformed header before we see it
    if declared > limit:
        raise TooLarge(f"{what} is {declared} bytes, over the limit of {limit} bytes")


async def capped(chunks: AsyncIterator[bytes], limit: int, what: str) -> AsyncIterator[bytes]:
    """Pass `chunks` through up to `limit` bytes, then raise TooLarge if there is more.

    The bytes up to the limit are passed on however the stream was chunked, so a reader
    processes the same prefix of an oversize stream whether it arrived in pieces or at once.
    """
    total = 0
    async for chunk in chunks:
        if total + len(chunk) > limit:
            if limit > total:
                yield chunk[: limit - total]
            raise TooLarge(f"{what} exceeds the limit of {limit} bytes")
        total += len(chunk)
        yield chunk


async def read_capped(chunks: AsyncIterator[bytes], limit: int, what: str) -> bytes:
    """The whole body, at most `limit` bytes (TooLarge beyond)."""
    parts = [chunk async for chunk in capped(chunks, limit, what)]
    return b"".join(parts)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: `rate` requests per second sustained, `burst` at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one request's token for `key`: 0.0 if allowed, else seconds until one is free."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """A Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait_s)))

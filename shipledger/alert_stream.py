"""Live alerts from a shipledger API's stream (`GET /v1/stream`, Server-Sent Events), for
`shipledger alerts tail --follow` with SHIPLEDGER_API_URL: the API sends only what the
token's tenant, team and environment scopes see (`Principal.sees`).

The stream also carries deployment records (skipped here) and `status` (is the API's broker
answering), `reset` (events since Last-Event-ID are gone) and `dropped` (this client fell
behind; the API ends the stream) events. `StreamCursor` decides what each event means (pure);
`AlertStream` holds the connection and reconnects with `Last-Event-ID` after `dropped`, a
stream that ends or a broken connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError, connect_sse

from shipledger.closing import Running

#: Wait before reconnecting unless the stream says otherwise (`retry:`).
RETRY_S = 2.0
#: The API sends a keep-alive after `stream_heartbeat_s` (15 s by default) of silence: this
#: long without a byte means the connection is gone.
_READ_TIMEOUT_S = 60.0


class StreamRefused(Exception):
    """The API will not stream to this client (bad token, no broker): retrying cannot help."""


@dataclass
class Step:
    """What one stream event means: an alert to show, a notice for stderr, and whether to
    reconnect (with `Last-Event-ID`) now."""

    alert: dict[str, Any] | None = None
    notice: str | None = None
    reconnect: bool = False


@dataclass
class StreamCursor:
    """Where the client is in the stream (the last event id) and what it last heard of the
    API's broker; `step` reads one event."""

    last_id: str | None = None
    kafka_down: bool = False

    def step(self, event: str, event_id: str, data: str) -> Step:
        """The meaning of one event (`event:`, `id:`, `data:`); unknown kinds are skipped."""
        if event_id:
            self.last_id = event_id
        if event == "alert":
            return Step(alert=json.loads(data))
        if event == "dropped":
            return Step(notice=f"{_field(data, 'error')}; reconnecting", reconnect=True)
        if event == "reset":
            return Step(
                notice="alerts raised while reconnecting may be missing here "
                "(see `shipledger alerts list --since ...`)"
            )
        if event == "status":
            return Step(notice=self._status(json.loads(data)))
        return Step()

    def _status(self, status: Mapping[str, Any]) -> str | None:
        down = status.get("kafka") == "down"
        was_down, self.kafka_down = self.kafka_down, down
        if down and not was_down:
            since = datetime.fromtimestamp(float(status.get("since") or 0), UTC)
            return (
                f"the API's broker does not answer since {since:%Y-%m-%d %H:%M:%SZ} "
                f"({status.get('error')}): no new alerts until it does"
            )
        if was_down and not down:
            return "the API's broker answers again"
        return None


def _field(data: str, name: str) -> str:
    try:
        return str(json.loads(data).get(name))
    except (ValueError, AttributeError):
        return data


class AlertStream(Running):
    """A connection to `<api_url>/v1/stream` with `token`, opened on `with` (StreamRefused
    if the API refuses it, httpx.HTTPError if it does not answer); `alerts()` yields the
    alert events, reconnecting as needed, and `notice` gets what stderr should say. `transport`:
    httpx's (the default, or a test's)."""

    def __init__(
        self,
        api_url: str,
        token: str | None,
        notice: Callable[[str], None],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = api_url.rstrip("/") + "/v1/stream"
        self.token = token
        self.notice = notice
        self.cursor = StreamCursor()
        self.retry_s = RETRY_S
        self._client = httpx.Client(
            timeout=httpx.Timeout(30.0, read=_READ_TIMEOUT_S), transport=transport
        )
        self._connection = ExitStack()
        self._source: EventSource | None = None

    def start(self) -> None:
        """Connect (what entering `with` does)."""
        self._source = self._open()

    def stop(self) -> None:
        """Disconnect and close the HTTP client (what leaving `with` does)."""
        self._connection.close()
        self._client.close()

    def _open(self) -> EventSource:
        self._connection.close()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.cursor.last_id:
            headers["Last-Event-ID"] = self.cursor.last_id
        source = self._connection.enter_context(
            connect_sse(self._client, "GET", self.url, headers=headers)
        )
        response = source.response
        if response.status_code in (401, 403, 404, 503):
            response.read()
            raise StreamRefused(
                f"{self.url} answered {response.status_code}: {_field(response.text, 'error')}"
            )
        response.raise_for_status()
        return source

    def alerts(self) -> Iterator[dict[str, Any]]:
        """The alerts (JSON, as the stream sends them) until the caller stops reading."""
        while True:
            try:
                if self._source is None:
                    self._source = self._open()
                for sse in self._source.iter_sse():
                    if sse.retry is not None:
                        self.retry_s = sse.retry / 1000
                    step = self.cursor.step(sse.event, sse.id, sse.data)
                    if step.notice:
                        self.notice(step.notice)
                    if step.alert is not None:
                        yield step.alert
                    if step.reconnect:
                        break
                else:
                    self.notice("the stream ended; reconnecting")
            except (httpx.HTTPError, SSEError) as exc:
                self.notice(f"the stream broke ({exc or type(exc).__name__}); reconnecting")
            self._source = None
            time.sleep(self.retry_s)

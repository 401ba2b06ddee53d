"""`shipledger.alert_stream`: what each event of the API's live stream means, and the reading
of it (reconnecting with Last-Event-ID after `dropped`) against a scripted server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from shipledger.alert_stream import AlertStream, Step, StreamCursor, StreamRefused
from shipledger.producers.api.stream_events import frame

Event = tuple[str, str, str]
ALERT = {"alert_id": "a1", "kind": "alert", "tenant": "acme", "team": "payments"}


def _event(kind: str, data: Mapping[str, object], event_id: str | None = None) -> Event:
    """An event as the stream's own encoder writes it, as (event, id, data)."""
    lines = frame(kind, data, event_id).decode().splitlines()
    fields = dict(line.split(": ", 1) for line in lines if line)
    return fields["event"], fields.get("id", ""), fields["data"]


def test_alerts_are_shown_and_their_ids_kept() -> None:
    cursor = StreamCursor()
    assert cursor.step(*_event("alert", ALERT, "b0-7")) == Step(alert=ALERT)
    assert cursor.last_id == "b0-7"
    assert cursor.step(*_event("deployment", {"deployment_id": "d"}, "b0-8")) == Step()
    assert cursor.last_id == "b0-8"  # a skipped event still moves the cursor


def test_dropped_reconnects_and_reset_says_alerts_may_be_missing() -> None:
    cursor = StreamCursor(last_id="b0-3")
    dropped = cursor.step(*_event("dropped", {"error": "this client fell 10 events behind"}))
    assert dropped.reconnect and dropped.notice == "this client fell 10 events behind; reconnecting"
    assert cursor.last_id == "b0-3"
    reset = cursor.step(*_event("reset", {"reason": "reload"}))
    assert not reset.reconnect and reset.notice and "alerts list --since" in reset.notice


def test_status_is_told_when_the_broker_stops_and_starts_answering() -> None:
    cursor = StreamCursor()
    assert cursor.step(*_event("status", {"kafka": "live"})).notice is None
    down = {"kafka": "down", "since": 1796036102.5, "error": "timed out"}
    notice = cursor.step(*_event("status", down)).notice
    assert notice is not None and "since 2026-11-30 10:55:02Z (timed out)" in notice
    assert cursor.step(*_event("status", down)).notice is None  # no change, nothing to say
    assert cursor.step(*_event("status", {"kafka": "live"})).notice == (
        "the API's broker answers again"
    )


def _sse(*frames: bytes) -> httpx.Response:
    body = b"retry: 1\n\n" + b"".join(frames)
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def test_reads_alerts_and_reconnects_with_last_event_id_after_dropped() -> None:
    seen: list[str | None] = []
    second = {**ALERT, "alert_id": "a2"}

    def server(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t0k"
        seen.append(request.headers.get("last-event-id"))
        if len(seen) == 1:
            return _sse(
                frame("status", {"kafka": "live"}),
                frame("alert", ALERT, "b0-1"),
                frame("deployment", {"deployment_id": "d"}, "b0-2"),
                frame("dropped", {"error": "fell behind"}),
            )
        return _sse(frame("alert", second, "b0-3"))

    notices: list[str] = []
    with AlertStream("http://api/", "t0k", notices.append, httpx.MockTransport(server)) as live:
        alerts = live.alerts()
        assert [next(alerts), next(alerts)] == [ALERT, second]
    assert seen == [None, "b0-2"]
    assert notices == ["fell behind; reconnecting"]


def test_a_refused_token_is_an_error_not_a_retry() -> None:
    def server(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "unknown or revoked token"})

    refused = AlertStream("http://api", "bad", print, httpx.MockTransport(server))
    with pytest.raises(StreamRefused, match="401: unknown or revoked token"), refused:
        pass


def test_a_follow_whose_interrupt_is_swallowed_still_ends_with_0(tmp_path: Path) -> None:
    """Ctrl-C of `alerts tail --follow` through the API ends the process even when the
    KeyboardInterrupt lands where it is dropped (here: caught and ignored in a loop, as
    Python does to one raised inside a finalizer)."""
    script = (
        "import os, signal, time\n"
        "from shipledger.alerts_cli import _interrupt_for_sure\n"
        "signal.signal(signal.SIGINT, _interrupt_for_sure)\n"
        "while True:\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.1)\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
    )
    # Run elsewhere than the repo root, whose shipledger/ folder would shadow the package.
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0

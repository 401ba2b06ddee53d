"""The baseline of `shipledger bench`: a plain Faust passthrough agent with Faust's defaults.

Run as `python -P -m shipledger.lab.bench_passthrough <bootstrap> <in-topic> <out-topic>`. Only the
session timeout is shortened (so the group join does not dominate a short benchmark); every
other setting, including the built-in 1.5 s fetch wait, is Faust's own.
"""

from __future__ import annotations

import sys
from typing import Any

import faust


def main(bootstrap: str, source_name: str, sink_name: str) -> None:
    """Forward every message of `source_name` to `sink_name`, one at a time."""
    app = faust.App(
        f"{source_name}-passthrough",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_replication_factor=1,
        broker_session_timeout=6.0,
        broker_rebalance_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(
        source_name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    sink = app.topic(
        sink_name, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
    )

    @app.agent(source)
    async def passthrough(stream: Any) -> None:
        async for event in stream.events():
            await sink.send(key=event.key, value=event.value)

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""A consumer loop (`run(stop)`: the sink's) on a thread for as long as a block lasts: what a
benchmark or a test drives while it watches the loop's progress."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Loop(Protocol):
    """Runs until `stop` is set (`ClickHouseSink.run`)."""

    def run(self, stop: threading.Event) -> None: ...


@contextmanager
def running(loop: Loop, name: str, join_timeout_s: float = 60.0) -> Iterator[list[BaseException]]:
    """Run `loop.run(stop)` on a thread named `name` while the block runs. Yields the list
    the loop's failure lands in (empty while it runs), so the block can stop waiting for
    progress that will not come. After the block: stop, join, then the loop's failure raised
    again, or TimeoutError if it did not stop within `join_timeout_s`."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(join_timeout_s)
    if errors:
        raise errors[0]
    if thread.is_alive():
        raise TimeoutError(f"{name} did not stop within {join_timeout_s} s")

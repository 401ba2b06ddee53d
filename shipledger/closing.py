"""The `with` block of the stack's resources: one place says what entering and leaving do.

A resource that is open once built (a store, a publisher) derives from `Closing`; a service that
must be started (the broker, the API server, the stack) derives from `Running`, which also stops
what a failed start left half running, so a `with` never leaks a process or a port.
"""

from __future__ import annotations

import signal
import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """Open once built; `with` closes it on the way out."""

    @abstractmethod
    def close(self) -> None:
        """Release what the resource holds; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Running(Closing):
    """Started on entering `with`, stopped on leaving it, and stopped too if the start fails."""

    @abstractmethod
    def start(self) -> object:
        """Bring the service up; ready when it returns."""

    @abstractmethod
    def stop(self) -> None:
        """Bring the service down; safe to call twice and after a failed start."""

    def close(self) -> None:
        """Stop the service (what leaving `with` does)."""
        self.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (Ctrl-C, `docker stop`, a pod's termination): the
    long-running commands poll it and stop cleanly, ending with exit code 0."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _s, _f: stopping.set())
    return stopping

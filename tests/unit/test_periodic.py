"""`Periodic`: the daemon-thread runner of `up`'s jobs (triage, CMDB, cold storage, journal)."""

from __future__ import annotations

import threading

from shipledger.up.periodic import Periodic


class Counted:
    """A job counting its runs, `ran` set at each."""

    def __init__(self) -> None:
        self.runs = 0
        self.ran = threading.Event()

    def __call__(self, _stop: threading.Event) -> None:
        self.runs += 1
        self.ran.set()


def test_interval_zero_runs_the_job_once_at_start() -> None:
    once = Counted()
    job = Periodic("once", once, 0).start()
    assert once.ran.wait(timeout=30)
    job.stop()  # joins: no second run came after the first
    assert once.runs == 1


def test_not_at_start_waits_an_interval_first() -> None:
    ran = threading.Event()
    job = Periodic("later", lambda _stop: ran.set(), 3600, at_start=False).start()
    job.stop()
    assert not ran.is_set()


def test_a_failed_run_is_tried_again_at_the_next_interval() -> None:
    runs: list[int] = []
    again = threading.Event()

    def flaky(_stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        again.set()

    job = Periodic("flaky", flaky, 0.01).start()
    assert again.wait(timeout=30)
    job.stop()


def test_a_stopped_job_starts_again() -> None:
    count = Counted()
    job = Periodic("again", count, 3600).start()
    assert count.ran.wait(timeout=30)
    assert job.stop()
    count.ran.clear()
    job.start()  # the lease came back: a fresh stop event, a fresh thread
    assert count.ran.wait(timeout=30)
    assert job.stop()
    assert count.runs == 2


def test_stop_says_when_a_run_outlived_its_wait() -> None:
    release = threading.Event()
    running = threading.Event()

    def slow(_stop: threading.Event) -> None:
        running.set()
        release.wait(timeout=30)

    job = Periodic("slow", slow, 3600).start()
    assert running.wait(timeout=30)
    assert not job.stop(timeout_s=0.05)
    release.set()

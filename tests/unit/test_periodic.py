"""`Periodic`: the daemon-thread runner of `up`'s jobs (triage, CMDB, cold storage, journal)."""

from __future__ import annotations

import threading

from shipledger.up.periodic import Periodic


def test_interval_zero_runs_the_job_once_at_start() -> None:
    runs: list[int] = []
    ran = threading.Event()

    def once(_stop: threading.Event) -> None:
        runs.append(1)
        ran.set()

    job = Periodic("once", once, 0).start()
    assert ran.wait(timeout=30)
    job.stop()  # joins: no second run came after the first
    assert runs == [1]


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
    runs: list[int] = []
    ran = threading.Event()

    def count(_stop: threading.Event) -> None:
        runs.append(1)
        ran.set()

    job = Periodic("again", count, 3600).start()
    assert ran.wait(timeout=30)
    assert job.stop()
    ran.clear()
    job.start()  # the lease came back: a fresh stop event, a fresh thread
    assert ran.wait(timeout=30)
    assert job.stop()
    assert runs == [1, 1]


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

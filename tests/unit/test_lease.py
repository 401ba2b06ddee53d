"""`LeaseState`: which member of the jobs' lease group runs the jobs, from the partitions the
group gives and takes (`shipledger.up.lease`), without Kafka: the callbacks are called as
librdkafka calls them, eagerly (everything revoked, then everything assigned) or
cooperatively (only what moves)."""

from __future__ import annotations

import pytest

from shipledger.up.lease import LEASE_PARTITION, LeaseState


class Jobs:
    """What the lease starts and stops, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def take(self) -> None:
        self.calls.append("start")

    def give_up(self) -> None:
        self.calls.append("stop")


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


@pytest.fixture
def state(jobs: Jobs) -> LeaseState:
    return LeaseState(jobs.take, jobs.give_up)


def test_the_member_given_the_lease_partition_runs_the_jobs_once(
    state: LeaseState, jobs: Jobs
) -> None:
    state.assigned([LEASE_PARTITION])
    state.assigned([])  # cooperative: a standby joined, nothing moved here
    state.assigned([LEASE_PARTITION])  # told again: still one start
    assert state.held and jobs.calls == ["start"]


def test_a_standby_runs_nothing_until_the_partition_comes(state: LeaseState, jobs: Jobs) -> None:
    state.assigned([])
    state.revoked([])
    assert not state.held and jobs.calls == []
    state.assigned([LEASE_PARTITION])
    assert state.held and jobs.calls == ["start"]


def test_revoked_stops_the_jobs_before_returning_and_they_start_again_later(
    state: LeaseState, jobs: Jobs
) -> None:
    state.assigned([LEASE_PARTITION])
    state.revoked([LEASE_PARTITION])  # eager rebalance, or our clean leave
    assert not state.held and jobs.calls == ["start", "stop"]
    state.revoked([LEASE_PARTITION])  # close() after the leave's revoke: nothing more
    state.assigned([LEASE_PARTITION])
    assert state.held and jobs.calls == ["start", "stop", "start"]


def test_lost_stops_the_jobs_too(state: LeaseState, jobs: Jobs) -> None:
    state.assigned([LEASE_PARTITION])
    state.revoked([LEASE_PARTITION], lost=True)
    assert not state.held and jobs.calls == ["start", "stop"]


def test_other_partitions_do_not_move_the_lease(state: LeaseState, jobs: Jobs) -> None:
    state.assigned([1, 2])  # a lease topic someone made with more partitions
    assert not state.held
    state.assigned([LEASE_PARTITION])
    state.revoked([1, 2])
    assert state.held and jobs.calls == ["start"]


def test_a_failed_stop_still_leaves_the_lease_given_up(jobs: Jobs) -> None:
    def failing() -> None:
        raise RuntimeError("a job would not stop")

    state = LeaseState(jobs.take, failing)
    state.assigned([LEASE_PARTITION])
    with pytest.raises(RuntimeError):
        state.revoked([LEASE_PARTITION])
    assert not state.held

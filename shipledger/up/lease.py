"""The periodic jobs' lease: of every `shipledger jobs` (and `up`) on one set of topics, one at
a time runs the jobs (post-deploy verification, incident triage, CMDB reconciliation); the
others wait as standbys and one of them takes over when the holder goes.

Kafka's group membership is the lease. Each process joins the consumer group
`<topic_prefix>jobs-lease`, subscribed to the one-partition lease topic
(`shipledger.topics.JOBS_LEASE`, nothing is ever written to it), and runs the jobs while the
group assigns it that partition (`LeaseState`):

- a standby joining leaves the holder alone: the assignment is cooperative-sticky, the
  partition stays where it is;
- the holder leaving cleanly (SIGTERM: its consumer closes) has its partition revoked, and the
  revoke callback stops the jobs and waits for a run in progress to end before it returns, so
  the group gives the partition to a standby only after: the handover takes one rebalance;
- a holder killed (kill -9, a lost node) is dropped from the group after its session timeout
  (SHIPLEDGER_SESSION_TIMEOUT_S), then a standby takes over;
- a holder cut off from the broker past that timeout gets its partition "lost" and stops its
  jobs (the group may have given the lease to another already).

Known limit: a holder frozen (SIGSTOP, a paused VM) past the session timeout loses the lease
without knowing it: when it thaws, its jobs go on (a run in progress, a run an interval
starts) until the next poll reports the loss, beside the new holder's. Such a run may repeat
the new holder's work (a verdict stored twice, an incident's suspects note posted twice).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from shipledger import metrics as m
from shipledger.clients import consumer_group
from shipledger.closing import Running
from shipledger.logging import get_logger
from shipledger.settings import Settings
from shipledger.topics import lease_topic
from shipledger.up.periodic import Periodic

log = get_logger("jobs")

#: The lease topic's one partition: its holder runs the jobs.
LEASE_PARTITION = 0
#: The lease's consumer group is `<topic_prefix>` + this.
LEASE_ROLE = "jobs-lease"
#: How long a holder losing the lease waits for the jobs' runs in progress to end (in all).
_RUN_END_TIMEOUT_S = 60.0
#: How long one poll of the lease's consumer waits (the rebalance callbacks run in it).
_POLL_S = 0.5
#: The longest a fetch of the (always empty) lease topic waits at the broker.
_FETCH_WAIT_MS = 500


class LeaseState:
    """Whether this member holds the lease, from the partitions the group gives and takes;
    `take` runs when it gets the lease partition, `give_up` when it loses it (and must return
    only once the jobs have stopped). No Kafka here: `JobsLease` feeds it the callbacks."""

    def __init__(self, take: Callable[[], None], give_up: Callable[[], None]) -> None:
        self._take = take
        self._give_up = give_up
        self.held = False

    def assigned(self, partitions: Iterable[int]) -> None:
        """The group gave these partitions (all of them, or only the new ones)."""
        if LEASE_PARTITION not in partitions:
            if not self.held:
                log.info("jobs_standby", reason="another instance holds the lease: waiting")
            return
        if not self.held:
            log.info("jobs_lease_taken")
            self.held = True
            self._take()

    def revoked(self, partitions: Iterable[int], *, lost: bool = False) -> None:
        """The group took these partitions back (`lost`: without asking, the session
        expired: another member may hold them already)."""
        if LEASE_PARTITION not in partitions or not self.held:
            return
        if lost:
            log.warning("jobs_lease_lost", reason="session expired: stopping the jobs")
        else:
            log.info("jobs_lease_released")
        try:
            self._give_up()
        finally:
            self.held = False


class JobsLease(Running):
    """Runs `jobs` (not started) while this process holds the lease (see the module
    docstring): the lease's consumer polls on a thread of its own; `stop()` leaves the group,
    stopping the jobs first if they run. `metrics` gets the `jobs.lease_held` gauge."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        jobs: Sequence[Periodic],
        metrics: m.RecordingMetrics | None = None,
    ) -> None:
        self.group_id = consumer_group(settings, LEASE_ROLE)
        self.topic = lease_topic(settings)
        self._config: dict[str, Any] = {
            **settings.kafka_consumer(bootstrap, self.group_id, "shipledger-jobs"),
            # A standby joining must not move the lease (an eager rebalance would stop and
            # restart the holder's jobs at every join).
            "partition.assignment.strategy": "cooperative-sticky",
            # Nothing is ever written to the lease's topic: its fetches only cost the broker
            # (Tansu: ~0.5 ms of CPU each, answered when the wait is over; at the 10 ms of
            # `fetch_wait_ms`, ~4 % of a core for nothing). Membership is kept by heartbeats,
            # which do not wait for a fetch.
            "fetch.wait.max.ms": _FETCH_WAIT_MS,
        }
        self._jobs = jobs
        self._metrics = metrics
        self._state = LeaseState(self._run_jobs, self._stop_jobs)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: What ended the lease's loop early (a fatal consumer error), if anything.
        self.error: BaseException | None = None
        self._held(False)

    @property
    def held(self) -> bool:
        """Whether this process holds the lease (runs the jobs) now."""
        return self._state.held

    def start(self) -> JobsLease:
        """Join the lease's group on a thread; the jobs start if and when the lease comes."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="jobs-lease", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the jobs (a run in progress ends first) and leave the group, so that a
        standby takes over at once."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info("jobs_lease_joining", group=self.group_id, topic=self.topic)
            while not self._stopping.is_set():
                msg = consumer.poll(_POLL_S)
                err = msg.error() if msg is not None else None
                if err is not None and err.fatal():
                    raise KafkaException(err)
                if err is not None:
                    log.warning("jobs_lease_consumer_error", error=str(err))
        except BaseException as exc:
            log.exception("jobs_lease_failed")
            self.error = exc
        finally:
            try:
                consumer.close()  # the revoke callback stops the jobs; the group hears we left
            finally:
                # A close that failed before its revoke: the jobs stop all the same.
                self._state.revoked([LEASE_PARTITION])

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._state.assigned(_partitions_of(self.topic, partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._state.revoked(_partitions_of(self.topic, partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._state.revoked(_partitions_of(self.topic, partitions), lost=True)

    def _run_jobs(self) -> None:
        for job in self._jobs:
            job.start()
        self._held(True)
        log.info("jobs_running", jobs=[job.name for job in self._jobs])

    def _stop_jobs(self) -> None:
        deadline = time.monotonic() + _RUN_END_TIMEOUT_S
        for job in self._jobs:
            if not job.stop(timeout_s=max(0.0, deadline - time.monotonic())):
                log.error("jobs_run_outlived_lease", job=job.name, waited_s=_RUN_END_TIMEOUT_S)
        self._held(False)

    def _held(self, held: bool) -> None:
        if self._metrics is not None:
            self._metrics.set(m.JOBS_LEASE_HELD, 1 if held else 0)


def _partitions_of(topic: str, partitions: list[TopicPartition]) -> list[int]:
    return [tp.partition for tp in partitions if tp.topic == topic]

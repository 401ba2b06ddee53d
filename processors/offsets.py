"""`OffsetGuard`: no batch is acknowledged past a raw event Faust never handed to the agent.

Faust can drop a fetched message before it reaches the agent (its stream skips a message of
an older consumer generation, or one that arrives while flow control is paused during a
rebalance) and still commit past it: its commit tolerates a hole of one offset above the last
commit, and checks none while the group has never committed. Measured in the chaos test
(`tests/integration/test_chaos.py`): after a kill -9 of the worker, the restarted one got
offsets 813 and 815-956 of a partition in one batch, then committed 1505; the event at 814
(stored by the sink, which reads the topic itself) never became a record, with no dead
letter and no log line.

The raw topic is never compacted and carries no transactions, so its offsets are contiguous:
an event at an offset above the next one expected means events were skipped. Before a batch
is handled, each event's offset is checked against the partition's next expected offset;
past it, the guard asks where the group must resume (`start(partition)`: its committed
offset, or the partition's first offset if it never committed). An offset at or below that
is legitimate (another worker processed and committed the events in between, then the
partition came back); above it, `OffsetGap` is raised, the batch is abandoned before it is
acknowledged (`processors.app.abandon_batch`), and the restarted worker reads the skipped
events again from the committed offset. Pure logic; `start` does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable


class OffsetGap(RuntimeError):
    """Events of a partition were skipped before the agent: the batch must not be acked."""

    def __init__(self, partition: int, resume_at: int, offset: int) -> None:
        super().__init__(
            f"partition {partition}: got offset {offset}, but the group resumes at "
            f"{resume_at}: {offset - resume_at} events were never handed to the processors"
        )
        self.partition = partition
        self.resume_at = resume_at
        self.offset = offset


class OffsetGuard:
    """Checks that the raw events of each partition reach the agent without holes."""

    def __init__(self, start: Callable[[int], int]) -> None:
        self._start = start
        self._next: dict[int, int] = {}

    def check(self, partition: int, offset: int) -> None:
        """Accept the event at `offset`, or raise OffsetGap (see the module docstring)."""
        expected = self._next.get(partition)
        if expected is None or offset > expected:
            resume_at = self._start(partition)
            if offset > resume_at:
                raise OffsetGap(partition, resume_at, offset)
        self._next[partition] = offset + 1

"""`OffsetGuard`: events Faust skipped are never acknowledged past; legitimate jumps pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from shipledger.processors.app import run_batches
from shipledger.processors.offsets import OffsetGap, OffsetGuard


class Resume:
    """Where the group resumes each partition (committed offsets), and how often it is asked."""

    def __init__(self, **offsets: int) -> None:
        self.offsets = {int(k.removeprefix("p")): v for k, v in offsets.items()}
        self.asked = 0

    def __call__(self, partition: int) -> int:
        self.asked += 1
        return self.offsets[partition]


def test_contiguous_offsets_pass_and_ask_once_per_partition() -> None:
    resume = Resume(p0=10, p1=0)
    guard = OffsetGuard(resume)
    for offset in range(10, 20):
        guard.check(0, offset)
    guard.check(1, 0)
    guard.check(1, 1)
    assert resume.asked == 2


def test_a_skipped_event_is_a_gap() -> None:
    """The chaos test's case: 813 handled, 814 never delivered, 815 next, committed 813."""
    guard = OffsetGuard(Resume(p1=803))
    for offset in range(803, 814):
        guard.check(1, offset)
    with pytest.raises(OffsetGap, match="got offset 815, but the group resumes at 803"):
        guard.check(1, 815)


def test_a_skipped_head_is_a_gap_also_without_commits() -> None:
    with pytest.raises(OffsetGap):
        OffsetGuard(Resume(p0=0)).check(0, 1)  # never committed: resume at the low watermark
    with pytest.raises(OffsetGap):
        OffsetGuard(Resume(p0=40)).check(0, 41)


def test_a_jump_over_events_another_worker_committed_passes() -> None:
    resume = Resume(p0=0)
    guard = OffsetGuard(resume)
    guard.check(0, 0)
    resume.offsets[0] = 900  # the partition went to another worker, which committed 900
    guard.check(0, 900)


def test_a_seek_back_passes() -> None:
    guard = OffsetGuard(Resume(p0=5))
    for offset in (5, 6, 7, 5, 6, 7, 8):
        guard.check(0, offset)


def test_a_gap_abandons_the_batch_before_it_is_acked() -> None:
    acked: list[list[int]] = []

    async def batches() -> AsyncIterator[Sequence[Any]]:
        for batch in ([0, 1, 2], [4, 5]):
            yield [SimpleNamespace(message=SimpleNamespace(partition=0, offset=o)) for o in batch]
            acked.append(batch)

    async def finish() -> None:
        return None

    def abandon(exc: BaseException) -> NoReturn:
        raise RuntimeError(f"abandoned: {exc}")

    handled: list[int] = []
    guard = OffsetGuard(Resume(p0=0))
    with pytest.raises(RuntimeError, match="abandoned: partition 0: got offset 4"):
        asyncio.run(
            run_batches(batches(), lambda m: handled.append(m.offset), finish, abandon, guard.check)
        )
    assert handled == [0, 1, 2] and acked == [[0, 1, 2]]

"""The processors' batch loop: a batch whose outputs fail is abandoned before it is acked.

Fakes stand in for Faust's batch generator and the output flush (a broker that refuses a
batch cannot be staged on Tansu, which creates any topic asked for); what the loop does with
them is the real code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from shipledger.processors.app import run_batches
from shipledger.processors.outputs import OutputError


class Abandoned(Exception):
    pass


def test_a_failed_flush_abandons_the_batch_before_it_is_acked() -> None:
    acked: list[list[str]] = []
    handled: list[str] = []

    async def batches() -> AsyncIterator[Sequence[Any]]:
        for batch in (["a", "b"], ["c"]):
            events = [SimpleNamespace(message=m) for m in batch]
            yield events
            acked.append(batch)  # Faust acks after the loop body returns for this batch

    flushes = iter([None, OutputError("2 outputs unacknowledged")])

    async def finish() -> None:
        failure = next(flushes)
        if failure is not None:
            raise failure

    def abandon(exc: BaseException) -> NoReturn:
        raise Abandoned(str(exc))

    with pytest.raises(Abandoned, match="unacknowledged"):
        asyncio.run(run_batches(batches(), handled.append, finish, abandon))
    assert handled == ["a", "b", "c"]
    assert acked == [["a", "b"]]  # the failed batch ["c"] was never acked


def test_a_failed_enrichment_feed_abandons_the_batch_in_hand() -> None:
    """The batch waits for the view with its events in hand: a feed that failed must not let
    Faust ack them unhandled."""
    acked: list[list[str]] = []
    handled: list[str] = []
    order: list[str] = []

    async def batches() -> AsyncIterator[Sequence[Any]]:
        yield [SimpleNamespace(message="a")]
        acked.append(["a"])

    async def feed_failed() -> None:
        raise RuntimeError("enrichment feed failed")

    async def finish() -> None:
        order.append("finish")

    def abandon(exc: BaseException) -> NoReturn:
        raise Abandoned(str(exc))

    with pytest.raises(Abandoned, match="feed failed"):
        asyncio.run(
            run_batches(
                batches(),
                handled.append,
                finish,
                abandon,
                before=lambda: order.append("refresh"),
                lock=asyncio.Lock(),
                ready=feed_failed,
            )
        )
    assert (handled, acked, order) == ([], [], [])

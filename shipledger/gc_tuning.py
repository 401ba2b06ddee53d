"""Garbage-collector settings of the long-running stream processes (the Faust worker, and the
process that runs the sink: `shipledger up`, `shipledger sink`), and of every `shipledger`
process at its start-up (`pause_while_loading`) and its exit (`freeze_at_exit`).

CPython's default thresholds suit short scripts: a young collection every 700 container
allocations. The worker allocates dozens of pydantic objects per event (the event, its record,
its alerts, their dicts), so it ran a young collection every few events and a full one, over
every deployment's state, every few seconds: measured at 8-14 % of the handler's CPU
(`tune_gc` off against on, the same 21,120 bench events), and each full collection stalls the
event loop at once, which is where the publish → alert p99 goes. Cycles are still collected,
less often; what was allocated before `tune_gc` (modules, schemas, the policy) is frozen out of
every collection.

The stream processes' young collections come every 10,000 allocations, not 50,000: CPython
counts allocations less deallocations, so what a young collection walks is mostly objects that
stay alive (the deployments' state, outputs waiting for their batch's flush), and its stall
grows with the threshold. At 1,000 events/s the worker ran one every ~5 s that held its event
loop for 16-19 ms of CPU (every event in flight waits that long: the publish → alert p99's
tail); at 10,000, one every ~1.4 s of 2.4-6.4 ms, the same CPU in all. A middle collection
still comes every million allocations (100 young ones), a full one every 100 middle ones.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Container allocations between young collections; then young collections per middle one,
#: middle ones per full one (CPython's defaults: 700, 10, 10). A long batch of work
#: (`fewer_collections`).
THRESHOLDS = (50_000, 20, 100)
#: The same for the stream processes (`tune_gc`): shorter young collections, as many middle and
#: full ones (see the module docstring).
STREAM_THRESHOLDS = (10_000, 100, 100)

#: Whether `pause_while_loading` stopped collections that `loaded` has not resumed yet.
_loading = False


def tune_gc() -> None:
    """Freeze what is allocated so far and collect less often (see the module docstring)."""
    gc.freeze()
    gc.set_threshold(*STREAM_THRESHOLDS)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """`THRESHOLDS` while a long piece of work runs (`shipledger import`: its reading, rows
    and writes allocate as the worker does), CPython's previous ones after it."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def freeze_at_exit() -> None:
    """Freeze every object when the process exits, before the interpreter's last collections:
    they walked all that start-up allocated (modules, pydantic schemas, settings) to free it a
    moment before the process ends, 40-70 ms of each `shipledger emit` (its exit: ~50 -> ~9 ms).
    Objects are still freed as their counts drop; only cycles left at exit are not collected,
    and no command leaves one with work to do (each closes what it opened)."""
    atexit.register(gc.freeze)


def pause_while_loading() -> None:
    """Collect nothing until `loaded()`: while a command's modules load (pydantic, its models
    and settings, click, structlog, confluent-kafka...), CPython ran ~100 young and ~10 middle
    collections over objects that all live as long as the process, 6-10 % of a
    `shipledger emit` (`cli.main`, the console script, only: a process that imports the CLI,
    such as the tests, keeps collecting)."""
    global _loading
    _loading = True
    gc.disable()


def loaded() -> None:
    """End `pause_while_loading` (a no-op without it): freeze what start-up allocated out of
    every later collection, as `tune_gc` does, and collect again."""
    global _loading
    if _loading:
        _loading = False
        gc.freeze()
        gc.enable()

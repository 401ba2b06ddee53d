"""How far a worker has *acted on* the enrichment topics: the offset, per partition, before
which every change, catalog and artifact event its feed read was folded into its view and every
re-judgement it caused is acknowledged by Kafka (`processors.app`'s enrichment task writes it
after the batch that sent them is durable).

`up` runs its workers with a file each (`Settings.worker_progress_file`) and its drain waits
until every live worker's file reaches the topics' ends (`shipledger.up.stack`): the sink
storing a late change request is not enough, the re-judgement it owes a stored deployment must
be in the ledger too before the embedded broker's memory goes. One small JSON file, replaced
atomically, written only when it changes (the enrichment topics are small and quiet).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

#: (topic, partition) -> the offset after the last message acted on.
Positions = dict[tuple[str, int], int]


def write_progress(path: Path, positions: Mapping[tuple[str, int], int]) -> None:
    """Replace `path` with `positions` (a temp file renamed over it: a reader never sees half)."""
    doc = [[topic, partition, offset] for (topic, partition), offset in sorted(positions.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(doc), encoding="utf-8")
    temp.replace(path)


def read_progress(path: Path) -> Positions | None:
    """What `write_progress` last wrote to `path`; None when the worker wrote nothing yet."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in doc}


class ProgressReport:
    """A worker's `write_progress` to `path` (None: nothing written), skipped while unchanged."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._last: Positions | None = None

    def report(self, positions: Mapping[tuple[str, int], int]) -> None:
        """Record that the worker acted on everything before `positions` (durably)."""
        if self._path is None or positions == self._last:
            return
        write_progress(self._path, positions)
        self._last = dict(positions)

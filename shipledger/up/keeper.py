"""`JournalKeeper`: deletes the embedded stack's journal segments once the ledger holds every
event in them, so the journal holds only what may still need a restore.

Each pass seals the segment being written (new appends go to a new one), then deletes every
sealed segment whose entries are all complete (`shipledger.up.completeness`); a segment with one
incomplete entry is kept whole and judged again next pass. `up` runs a pass every
`journal_compact_interval_s` on a thread, and one after a clean drain (then every segment
goes). A failed pass (the ledger busy or down) is logged and tried again next time: keeping a
segment too long costs disk, never data.
"""

from __future__ import annotations

from shipledger.logging import get_logger
from shipledger.producers.journal import Journal
from shipledger.schemas.topics import Topics
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.up.completeness import incomplete
from shipledger.up.periodic import Periodic

log = get_logger("journal")


class JournalKeeper:
    """Compacts `journal` against `store` every `interval_s` (see the module docstring)."""

    def __init__(
        self, journal: Journal, store: LedgerStore, topics: Topics, interval_s: float
    ) -> None:
        self.journal = journal
        self._store = store
        self._topics = topics
        # The first pass waits an interval: at start the restore has just replayed the journal.
        self._periodic = Periodic(
            "journal-keeper", lambda _stop: self.compact(), interval_s, at_start=False
        )

    def compact(self) -> int:
        """One pass: seal, then delete the sealed segments the ledger holds entirely; returns
        how many were deleted."""
        done = []
        for segment in self.journal.seal():
            entries = self.journal.read(segment).entries
            if not incomplete(self._store, self._topics, entries):
                done.append(segment)
        self.journal.remove(done)
        if done:
            log.info("journal_compacted", deleted=len(done), left=len(self.journal.segments()))
        return len(done)

    def start(self) -> None:
        """Compact every interval on a daemon thread."""
        self._periodic.start()

    def stop(self) -> None:
        """Stop the thread (a pass in progress finishes first)."""
        self._periodic.stop(timeout_s=60)

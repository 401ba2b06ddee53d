"""Keeping judgement current with the enrichment view, without Faust: what a worker does with
the change, catalog and artifact events its feed read (`processors.feed`), before each batch of
raw events and whenever the feed has news while no raw event comes.

0. Adopt the latest policy the feed read (`shipledger policy push`): the handler judges by it
   from here on, between two batches, never within one. Fold the deployment records it read
   into the recent deployments (`processors.recent`), and forget, at most once a minute,
   those that started before the horizon.
1. Fold the events into the view (`processors.enrichment`); note the change requests that
   changed (an event already folded, a duplicate, changes nothing).
2. When the worker's partitions changed (its first refresh, a rebalance), index the state by
   change request again (the table was recovered behind its back) and **sweep** the new
   partitions: every deployment naming a change request is judged again, so a re-judgement
   lost with a crash, or owed for change events read while the worker was down, is made.
3. Re-judge the deployments of the worker's partitions that name a changed request.

Outputs are only queued here; the caller makes them durable with the batch
(`processors.app.finish_batch`) and holds the one lock the raw batches hold too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta

from shipledger.logging import get_logger
from shipledger.processors.enrichment import Enrichment
from shipledger.processors.feed import FeedEvent
from shipledger.processors.handler import EventHandler
from shipledger.processors.recent import Deployed, RecentDeployments
from shipledger.processors.state import DeploymentState
from shipledger.schemas.models import utcnow
from shipledger.schemas.policy import PolicyDocument

log = get_logger("processors")
_PRUNE_EVERY_S = 60.0


@dataclass(eq=False)
class ViewRefresh:
    """Steps 0-3 of the module docstring; `drain` hands over the feed's new events."""

    drain: Callable[[], list[FeedEvent]]
    view: Enrichment
    handler: EventHandler
    state: DeploymentState
    recent: RecentDeployments
    horizon: timedelta
    _pruned_at: float = field(default_factory=time.monotonic, init=False)
    _partitions: frozenset[int] | None = field(default=None, init=False)

    def refresh(self, partitions: Collection[int]) -> int:
        """Apply the feed's new events and judge again what they changed; how many
        deployments emitted something (their outputs are queued, not yet flushed)."""
        events = []
        for event in self.drain():
            if isinstance(event, PolicyDocument):
                self.handler.adopt(event)
            elif isinstance(event, Deployed):
                self.recent.apply(event)
            else:
                events.append(event)
        if time.monotonic() - self._pruned_at >= _PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            self.recent.prune(utcnow() - self.horizon)
        changed = {key for key in map(self.view.apply, events) if key is not None}
        emitted = 0
        assigned = frozenset(partitions)
        if assigned != self._partitions:
            known = self._partitions or frozenset()
            indexed = self.state.reindex()
            new = assigned - known
            emitted += self.handler.sweep(new)
            log.info(
                "rejudge_sweep",
                partitions=sorted(assigned),
                swept=sorted(new),
                naming_a_change=indexed,
                emitted=emitted,
                view=self.view.sizes,
            )
            self._partitions = assigned
        if changed:
            emitted += self.handler.rejudge(sorted(changed), assigned)
        if events:
            log.info("enrichment_applied", events=len(events), changes=len(changed))
        return emitted

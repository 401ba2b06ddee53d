"""The processors' enrichment view, pure: the current state of change requests, the service
catalog and the artifacts, folded from their events (topics `changes`, `catalog`,
`artifacts`).

Every worker holds the whole view (these families are small: a global view, not a
repartition), fed by `processors.feed` from the beginning of the three topics, so any worker
can judge any deployment of its own partitions against any change request. Folding is by
event time and idempotent: change requests through `ChangeRequest.add` (a set of revisions),
catalog entries and artifacts keep the event latest by (`occurred_at`, `event_id`), and the
builds (published artifact events, for `processors.artifact_rules`) are a set. So the same
events in any order, delivered any number of times, give the same view. A registry's
deletion of an artifact changes nothing here: the build happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from shipledger.fields import copied
from shipledger.processors.artifact_rules import Built
from shipledger.processors.changes import ChangeRequest
from shipledger.schemas.family_models import ArtifactEvent, CatalogEvent, ChangeEvent
from shipledger.schemas.topics import ENRICHMENT

#: Logical names of the topics the view is folded from.
ENRICHMENT_TOPICS = ENRICHMENT
#: What the view is folded from (the models of `ENRICHMENT_TOPICS`).
EnrichmentEvent = ChangeEvent | CatalogEvent | ArtifactEvent
#: (tenant, change_id) of a change request.
ChangeKey = tuple[str, str]
_Order = tuple[datetime, str]
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True)
class ServiceInfo:
    """What the catalog says about a service: who owns it, what it belongs to."""

    owner_team: str | None = None
    application: str | None = None
    tier: str | None = None
    repository: str | None = None
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArtifactInfo:
    """A published artifact, found by its digest."""

    name: str
    version: str | None = None
    repository: str | None = None


class Lookups(Protocol):
    """What judgement and enrichment read of the view (`Enrichment` is the real one)."""

    def change(self, tenant: str, change_id: str) -> ChangeRequest | None:
        """The tenant's change request `change_id`, if any event of it was reported."""
        ...

    def service(self, tenant: str, name: str) -> ServiceInfo | None:
        """The catalog entry of the tenant's service `name` (None: unknown or removed)."""
        ...

    def artifact(self, tenant: str, digest: str) -> ArtifactInfo | None:
        """The tenant's artifact published with `digest`, if reported."""
        ...

    def builds(
        self, tenant: str, artifact_name: str | None, version: str | None, digest: str | None
    ) -> set[Built]:
        """The tenant's builds of `artifact_name` at `version` and those of `digest`."""
        ...


class Enrichment:
    """The view (see the module docstring). Mutated only by `apply`, on one thread."""

    def __init__(self) -> None:
        self._changes: dict[ChangeKey, ChangeRequest] = {}
        self._services: dict[tuple[str, str], tuple[_Order, ServiceInfo | None]] = {}
        self._artifacts: dict[tuple[str, str], tuple[_Order, ArtifactInfo]] = {}
        #: Builds by (tenant, artifact name, version) and by (tenant, digest): not by name
        #: alone, whose builds grow with every release and were copied and scanned for each
        #: deployment judged.
        self._builds_of: dict[tuple[str, str, str | None], set[Built]] = {}
        self._builds_with: dict[tuple[str, str], set[Built]] = {}

    def apply(self, event: EnrichmentEvent) -> ChangeKey | None:
        """Fold `event` in; the change request it changed (for re-judgement), or None (a
        catalog or artifact event, or a change event already folded)."""
        order = (event.occurred_at, event.event_id)
        if isinstance(event, ChangeEvent):
            key = (event.tenant, event.change_id)
            before = self._changes.get(key)
            after = (before or ChangeRequest(*key)).add(event)
            if after == before:
                return None
            self._changes[key] = after
            return key
        if isinstance(event, CatalogEvent):
            if event.entity == "service":
                info = None if event.action == "removed" else _service_info(event)
                _keep_latest(self._services, (event.tenant, event.name), order, info)
            return None
        if event.action != "published":
            return None
        built = Built.of(event)
        self._builds_of.setdefault((event.tenant, event.artifact_name, event.version), set()).add(
            built
        )
        if event.digest:
            self._builds_with.setdefault((event.tenant, event.digest), set()).add(built)
            info_a = ArtifactInfo(event.artifact_name, event.version, event.repository)
            _keep_latest(self._artifacts, (event.tenant, event.digest), order, info_a)
        return None

    def change(self, tenant: str, change_id: str) -> ChangeRequest | None:
        """The tenant's change request `change_id`, if any event of it was reported."""
        return self._changes.get((tenant, change_id))

    def service(self, tenant: str, name: str) -> ServiceInfo | None:
        """The catalog entry of the tenant's service `name` (None: unknown or removed)."""
        kept = self._services.get((tenant, name))
        return kept[1] if kept else None

    def artifact(self, tenant: str, digest: str) -> ArtifactInfo | None:
        """The tenant's artifact published with `digest`, if reported."""
        kept = self._artifacts.get((tenant, digest))
        return kept[1] if kept else None

    def builds(
        self, tenant: str, artifact_name: str | None, version: str | None, digest: str | None
    ) -> set[Built]:
        """The tenant's builds of `artifact_name` at `version` and those of `digest`."""
        found: set[Built] = set()
        if artifact_name:
            found |= self._builds_of.get((tenant, artifact_name, version), set())
        if digest:
            found |= self._builds_with.get((tenant, digest), set())
        return found

    @property
    def sizes(self) -> dict[str, int]:
        """How many change requests, services and artifacts the view holds (for the log)."""
        return {
            "changes": len(self._changes),
            "services": len(self._services),
            "artifacts": len(self._artifacts),
        }


def _service_info(event: CatalogEvent) -> ServiceInfo:
    return copied(ServiceInfo, event, dependencies=tuple(event.dependencies))


def _keep_latest(table: dict[_K, tuple[_Order, _V]], key: _K, order: _Order, value: _V) -> None:
    # Ties (one event delivered twice) keep the first: equal ids carry equal content.
    kept = table.get(key)
    if kept is None or order > kept[0]:
        table[key] = (order, value)


def fold(events: list[EnrichmentEvent]) -> Enrichment:
    """A view of `events` (the expected outcome in tests, the demo and the chaos check)."""
    view = Enrichment()
    for event in events:
        view.apply(event)
    return view

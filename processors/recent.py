"""Recent deployments, pure: the latest state of every deployment that started within the
horizon, indexed by tenant and service, for the anomaly join (`processors.anomaly_join`).

Every worker folds the whole `deployments.records` topic into it (`processors.feed`): a
deployment's records are on its own partition, an anomaly's service may be deployed from any.
Folding keeps the record with the highest `seq` per deployment, so the same records in any
order, delivered any number of times, give the same view. Entries are compact (`Deployed`, a
few fields read straight from the decoded Avro): thousands of deployments a day stay small.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: (tenant, deployment_id) of a deployment.
DeploymentKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Deployed:
    """What the join and its explanation need of a deployment record."""

    tenant: str
    deployment_id: str
    seq: int
    service: str
    environment: str
    region: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    version: str | None
    commit_sha: str
    actor: str
    last_event_id: str
    team: str | None = None
    application: str | None = None
    tier: str | None = None

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Deployed:
        """From a DeploymentRecord as a dict (decoded Avro, or `model_dump()`)."""
        fields: dict[str, Any] = {name: record.get(name) for name in _FIELDS}
        return cls(**fields)


_FIELDS = tuple(Deployed.__dataclass_fields__)


class RecentDeployments:
    """The view (see the module docstring). Mutated only by `apply` and `prune`, on one
    thread."""

    def __init__(self) -> None:
        self._latest: dict[DeploymentKey, Deployed] = {}
        self._by_service: dict[tuple[str, str], set[str]] = {}

    def apply(self, deployed: Deployed) -> None:
        """Fold one record in (an older `seq` than the one kept changes nothing)."""
        key = (deployed.tenant, deployed.deployment_id)
        kept = self._latest.get(key)
        if kept is not None and kept.seq >= deployed.seq:
            return
        if kept is not None and kept.service != deployed.service:
            self._by_service.get((kept.tenant, kept.service), set()).discard(kept.deployment_id)
        self._latest[key] = deployed
        self._by_service.setdefault((deployed.tenant, deployed.service), set()).add(
            deployed.deployment_id
        )

    def of_service(self, tenant: str, service: str) -> Iterator[Deployed]:
        """The tenant's deployments of `service` in the view."""
        for deployment_id in sorted(self._by_service.get((tenant, service), ())):
            yield self._latest[(tenant, deployment_id)]

    def prune(self, before: datetime) -> int:
        """Forget deployments that started before `before`; how many."""
        old = [key for key, d in self._latest.items() if d.started_at < before]
        for key in old:
            gone = self._latest.pop(key)
            ids = self._by_service.get((gone.tenant, gone.service))
            if ids is not None:
                ids.discard(gone.deployment_id)
                if not ids:
                    del self._by_service[(gone.tenant, gone.service)]
        return len(old)

    def __len__(self) -> int:
        return len(self._latest)

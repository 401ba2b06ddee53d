"""`running_artifact_deleted` (docs/artifacts.md): a registry deleted an artifact that a
running deployment ships, so the next restart or scale-out of that service cannot pull it.

Judged by the API when it publishes a registry's deletion (`POST /v1/webhooks/harbor|
artifactory/...`, or an artifact event of action `deleted`/`retention_deleted` through `POST
/v1/events`), against the latest succeeded deployment per service and environment in the
ledger (`LedgerReads.artifacts_in_use`). Only the deployments the sink stored before the
deletion arrived are seen; the alert ids derive from the deletion event and the deployment,
so a redelivered deletion raises nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.concurrency import run_in_threadpool

from shipledger.fields import picked
from shipledger.logging import get_logger
from shipledger.producers.api.context import ApiContext
from shipledger.producers.api.events import Prepared, alert_messages
from shipledger.schemas.family_models import ArtifactEvent
from shipledger.schemas.models import Alert, utcnow

log = get_logger("api.artifacts")


async def deletion_alerts(ctx: ApiContext, published: Iterable[Prepared]) -> list[Prepared]:
    """The `running_artifact_deleted` alerts (as messages) of the registry deletions among
    `published`; none from an API without the policy or the ledger (logged)."""
    deleted = [
        p.event
        for p in published
        if isinstance(p.event, ArtifactEvent) and p.event.action != "published"
    ]
    if not deleted:
        return []
    if ctx.governance is None or ctx.ledger is None:
        log.warning("deletions_not_judged", count=len(deleted), reason="no policy or ledger")
        return []
    alerts: list[Alert] = []
    for tenant in sorted({event.tenant for event in deleted}):
        in_use = await run_in_threadpool(ctx.ledger.artifacts_in_use, tenant, 1)
        for event in deleted:
            if event.tenant == tenant:
                alerts += ctx.governance.deletion_alerts(event, in_use, utcnow())
    for alert in alerts:
        log.info("alert", **picked(alert, "rule", "deployment_id", "tenant", "service"))
    return alert_messages(ctx.settings, alerts)

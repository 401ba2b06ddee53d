"""Post-deploy verification, run: the periodic step that decides the verdicts of the windows
that closed (docs/verification.md).

Why a periodic step over the ledger, not the processors: a window closes on wall time, with
no event to wake a processor, and a late check revises a verdict for hours after; the
ledger holds every signal and deployment record durably, every worker's in-memory view
(`processors.recent`) only its horizon. Each pass (`verify_pass`) reads the succeeded
deployments whose window closed less than `late_for` ago, the signals of their windows, and
decides each verdict (`processors.verification.decide`); a verdict that differs from the one
stored is appended. So a verdict appears at most `SHIPLEDGER_VERIFICATION_INTERVAL_S` after
its window closed, and a late check moves it at the next pass; a pass with nothing new
writes nothing. `up` runs a pass every interval on a thread; `shipledger verification run`
runs one.
"""

from __future__ import annotations

from datetime import datetime

from shipledger.logging import get_logger
from shipledger.processors.verification import (
    Decision,
    Succeeded,
    decide,
    due,
    lookback,
    window_of,
)
from shipledger.schemas.models import utcnow
from shipledger.schemas.policy import Policy, load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl, verifications
from shipledger.sinks.ledger.reader import LedgerUnavailable
from shipledger.sinks.ledger.store import LedgerStore, StoreError

log = get_logger("verification")


def verify_pass(store: LedgerStore, policy: Policy, now: datetime | None = None) -> list[Decision]:
    """Decide every window due at `now` (default: now); the decisions that changed, which
    were written."""
    now = now or utcnow()
    rules = [policy.defaults.verification]
    rules += [policy.rules_for(tenant).verification for tenant in policy.tenants]
    found = verifications.succeeded_since(store, now - lookback(rules))
    # Where each verdict is filed (its latest record's start): not an input of the decision.
    places = {(r["tenant"], r["deployment_id"]): tuple(r[k] for k in ddl.PLACE) for r in found}
    candidates = [Succeeded(**{k: v for k, v in r.items() if k not in ddl.PLACE}) for r in found]
    pending = [d for d in candidates if due(d, policy.rules_for(d.tenant).verification, now)]
    if not pending:
        return []
    start = min(d.finished_at for d in pending)
    end = max(window_of(d, policy.rules_for(d.tenant).verification)[1] for d in pending)
    signals = verifications.signals_between(store, {d.tenant for d in pending}, start, end)
    stored = verifications.stored(store, ((d.tenant, d.deployment_id) for d in pending))
    changed = []
    for deployment in pending:
        decision = decide(deployment, signals, policy.rules_for(deployment.tenant).verification)
        key = (deployment.tenant, deployment.deployment_id)
        before = stored.get(key)
        # A record that moved the deployment's start (an older event arrived late) files the
        # same verdict again beside it, where triage reads verdicts (docs/triage.md).
        moved = before is not None and before.started_at != places[key][0]
        if decision.changed(before.compared if before else None) or moved:
            changed.append(decision)
    verifications.write(store, [_row(d, now, policy.full_version, places) for d in changed])
    for decision in changed:
        log.info(
            "deployment_verified",
            tenant=decision.deployment.tenant,
            deployment_id=decision.deployment.deployment_id,
            verdict=decision.verdict,
            score=decision.score,
            checks=len(decision.checks),
        )
    return changed


def _row(
    decision: Decision,
    now: datetime,
    policy_version: str,
    places: dict[tuple[str, str], tuple[object, ...]],
) -> tuple[object, ...]:
    d = decision.deployment
    return (
        d.tenant,
        d.deployment_id,
        d.service,
        d.environment,
        decision.verdict,
        decision.score,
        decision.evidence(),
        decision.window_end,
        now,
        decision.window_start,
        len(decision.checks),
        policy_version,
        d.team,
        *places[(d.tenant, d.deployment_id)],
    )


def run_once(settings: Settings, now: datetime | None = None) -> list[Decision]:
    """One `verify_pass` over the ledger of `settings`, opened here (`shipledger
    verification run`: nothing else may own an embedded ledger meanwhile)."""
    policy = load_policy(settings.policy_file)
    try:
        with LedgerStore.open(settings, existing=True) as store:
            if not store.database_exists():
                raise LedgerUnavailable(f"no ledger in {settings.resolved_clickhouse_url} yet")
            return verify_pass(store, policy, now)
    except StoreError as exc:
        raise LedgerUnavailable(str(exc)) from exc

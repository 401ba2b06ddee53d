"""Incident triage in `up` (docs/triage.md): every incident a PagerDuty or Opsgenie webhook
opened gets its top suspects attached, once: ranked from the ledger
(`sinks.ledger.suspects`), posted back to the incident as a note (`receivers.notes`, with the
escalation engine's retries), and stored in `incident_suspects` with how the note went.

An incident is attached when its rows are stored, after the note: a crash in between posts
the note again on the next run (a repeated note, never a missing one). An incident without
suspects gets one row of rank 0 (and a note saying so), so it is not looked at again.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shipledger.logging import get_logger
from shipledger.receivers.engine import Deliverer, Outcome, RetryPolicy, sleeper
from shipledger.receivers.notes import BUILDERS, NoteTarget, auth
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.ledger.suspects import SuspectsQuery, read_suspects
from shipledger.suspects import Suspect, note_text

log = get_logger("triage")

#: The webhook providers whose incidents get suspects and a note.
PROVIDERS = tuple(BUILDERS)
#: Incidents stored longer ago than this are not attached any more (by when the ledger stored
#: them, not event time: a webhook can report an incident opened days ago).
HORIZON = timedelta(days=7)
_BATCH = 100
_NEW_INCIDENTS_SQL = (
    "SELECT event_id, tenant, source, external_id, service, environment, occurred_at\n"
    "FROM {signals}\n"
    "WHERE kind = 'incident_opened' AND source IN {{sources:Array(String)}}\n"
    "    AND service IS NOT NULL AND external_id IS NOT NULL\n"
    "    AND ledger_at >= {{since:DateTime64(3, 'UTC')}}\n"
    "    AND (tenant, event_id) NOT IN (SELECT tenant, incident_id FROM {attached})\n"
    "ORDER BY occurred_at LIMIT 1 BY tenant, event_id LIMIT {batch}"
)


@dataclass(frozen=True)
class Incident:
    """One incident signal to attach suspects to."""

    incident_id: str
    tenant: str
    provider: str
    external_id: str
    service: str
    environment: str | None
    at: datetime


class Triage:
    """Attaches suspects to new incidents of one ledger store (`run` is the periodic job)."""

    def __init__(self, settings: Settings, store: LedgerStore) -> None:
        self._settings = settings
        self._store = store
        self._targets = {
            "pagerduty": NoteTarget(
                "pagerduty",
                settings.pagerduty_api_url,
                settings.pagerduty_api_token,
                settings.pagerduty_from,
            ),
            "opsgenie": NoteTarget(
                "opsgenie", settings.opsgenie_api_url, settings.opsgenie_api_key
            ),
        }
        self._retry = RetryPolicy(
            attempts=settings.escalation_attempts,
            backoff_s=settings.escalation_backoff_s,
            backoff_max_s=settings.escalation_backoff_max_s,
            timeout_s=settings.escalation_timeout_s,
        )

    def pending(self) -> list[Incident]:
        """Incidents from the providers not attached yet, oldest first (a batch)."""
        sql = _NEW_INCIDENTS_SQL.format(
            signals=ddl.qualified(self._store.database, ddl.SIGNALS),
            attached=ddl.qualified(self._store.database, ddl.INCIDENT_SUSPECTS),
            batch=_BATCH,
        )
        _, rows = self._store.query(
            sql,
            {
                "sources": [f"webhook:{p}" for p in PROVIDERS],
                "since": datetime.now(UTC) - HORIZON,
            },
        )
        return [
            Incident(str(i), str(t), str(src).removeprefix("webhook:"), str(x), str(s), e, at)
            for i, t, src, x, s, e, at in rows
        ]

    def run(self, stop: threading.Event) -> None:
        """Attach every pending incident (the periodic job)."""
        incidents = self.pending()
        if not incidents:
            # No HTTP client made for nothing: one costs ~37 ms of CPU (its TLS context), every
            # `triage_interval_s` in the process that runs the sink.
            return
        with httpx.Client() as client:
            deliverer = Deliverer(client, self._retry, {}, sleeper(stop))
            for incident in incidents:
                if stop.is_set():
                    return
                self.attach(incident, deliverer)

    def attach(self, incident: Incident, deliverer: Deliverer) -> list[Suspect]:
        """Rank, post and store the suspects of `incident`. Raises Interrupted."""
        query = SuspectsQuery(
            tenant=incident.tenant,
            service=incident.service,
            at=incident.at,
            lookback=timedelta(hours=self._settings.triage_lookback_h),
            environment=incident.environment,
            limit=self._settings.triage_top,
        )
        suspects = read_suspects(self._store, query)
        status, detail = self._post(
            incident, note_text(incident.service, incident.at, suspects), deliverer
        )
        now = datetime.now(UTC)
        base = {
            "tenant": incident.tenant,
            "incident_id": incident.incident_id,
            "provider": incident.provider,
            "external_id": incident.external_id,
            "service": incident.service,
            "incident_at": incident.at,
            "note_status": status,
            "note_detail": detail,
            "attached_at": now,
        }
        rows: list[dict[str, Any]] = [
            {
                **base,
                "rank": rank,
                "deployment_id": s.candidate.deployment_id,
                "deployment_service": s.candidate.service,
                "score": s.score,
                "why": s.why,
                "parts": json.dumps([p.to_json() for p in s.parts]),
            }
            for rank, s in enumerate(suspects, start=1)
        ] or [
            {
                **base,
                "rank": 0,
                "deployment_id": "",
                "deployment_service": "",
                "score": 0.0,
                "why": "no deployment of the service or its dependencies in the window",
                "parts": "[]",
            }
        ]
        self._store.insert_derived(ddl.INCIDENT_SUSPECTS, rows)
        log.info(
            "incident_triaged",
            tenant=incident.tenant,
            provider=incident.provider,
            incident=incident.external_id,
            suspects=len(suspects),
            note=status,
        )
        return suspects

    def _post(self, incident: Incident, text: str, deliverer: Deliverer) -> tuple[str, str]:
        target = self._targets[incident.provider]
        if target.key is None:
            return "skipped", f"no {incident.provider} API key configured"
        request = BUILDERS[incident.provider](target, incident.external_id, text)
        outcome: Outcome = deliverer.post(
            request, auth(target), provider=incident.provider, incident=incident.external_id
        )
        if outcome.delivered:
            answer = outcome.ticket.note if outcome.ticket else None
            return "posted", f"HTTP {outcome.status}" + (f": {answer}" if answer else "")
        return "failed", outcome.reason or f"HTTP {outcome.status}"

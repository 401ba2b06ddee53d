"""The ledger's alerts, read again by the escalator when `up` starts (the `AlertBacklog` of
`shipledger.receivers.escalator`): the embedded broker forgets its topics in a crash, so an
alert the escalator had not read yet is gone from Kafka, but not from the ledger."""

from __future__ import annotations

from datetime import datetime

from shipledger.schemas.models import Alert
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore


class LedgerAlerts:
    """The alerts of `store` (the hot table: a catch-up looks at the last hours only)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    def alerts_detected_since(self, at: datetime) -> list[Alert]:
        """The stored alerts detected at or after `at`, oldest first."""
        columns = list(Alert.model_fields)
        select = ", ".join(ddl.quote_ident(column) for column in columns)
        source = ddl.qualified(self._store.database, ddl.ALERTS)
        names, rows = self._store.query(
            f"SELECT {select} FROM {source} WHERE detected_at >= %(at)s "  # noqa: S608 (checked identifiers)
            "ORDER BY detected_at, alert_id LIMIT 1 BY tenant, alert_id",
            {"at": at},
        )
        return [Alert.model_validate(dict(zip(names, row, strict=True))) for row in rows]

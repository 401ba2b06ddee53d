"""Per-deployment state: a Faust table (recovered from its changelog on rebalance) whose
changelog we write ourselves, once per key per batch, through the processors' producer.

Faust's own `table[key] = value` sends one changelog message per update through its Python
producer, which cost more than all our processing together (measured with py-spy). Here the
table's local store holds an `Entry` object, and `flush_changelog` queues the latest value of
each key changed in the batch. The changelog partition is the source partition of the event,
which is what Faust's recovery and standbys expect. Values are JSON (the table's serializer),
so Faust recovers them as dicts: `get` accepts both forms. Keys are `state_key(tenant,
deployment_id)`, JSON-encoded on the changelog like every key Faust's table codec reads back:
two tenants' deployments with the same id (a Jenkins `job:build`) are two entries.

Each entry remembers the ids of the last events applied to it, so an event delivered twice
(a spool resend, a replay after a crash) is recognized and not applied a second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shipledger.processors.outputs import Outputs
from shipledger.schemas.models import DeploymentRecord

#: How many applied event ids an entry remembers: far more than the stages of a deployment.
SEEN_IDS = 64


@dataclass(frozen=True)
class Entry:
    """A deployment's record and the ids of the events already applied to it."""

    record: DeploymentRecord
    seen: tuple[str, ...]

    def to_json(self) -> bytes:
        """The changelog value."""
        return json.dumps(
            {"record": self.record.model_dump(mode="json"), "seen": list(self.seen)}
        ).encode()


def state_key(tenant: str, deployment_id: str) -> str:
    """The table key of a tenant's deployment: a JSON pair, unambiguous whatever characters
    the tenant or the id contain (`a/b` + `c` and `a` + `b/c` stay apart)."""
    return json.dumps([tenant, deployment_id], ensure_ascii=False)


class DeploymentState:
    """Read and update deployment entries in a Faust table."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[int, Entry]] = {}

    def get(self, key: str) -> Entry | None:
        """The deployment's entry, if any event of it was applied."""
        value = self._table.data.get(key)
        if value is None or isinstance(value, Entry):
            return value
        # Recovered from the changelog as plain JSON.
        return Entry(DeploymentRecord.model_validate(value["record"]), tuple(value["seen"]))

    def put(self, key: str, partition: int, record: DeploymentRecord, event_id: str) -> None:
        """Store the record applied from `event_id`; its changelog entry goes with the batch."""
        previous = self.get(key)
        seen = (*previous.seen, event_id)[-SEEN_IDS:] if previous else (event_id,)
        entry = Entry(record, seen)
        self._table.data[key] = entry
        self._pending[key] = (partition, entry)

    def flush_changelog(self, outputs: Outputs) -> None:
        """Queue the latest value of every key changed since the last call."""
        topic = self._table.changelog_topic.get_topic_name()
        for key, (partition, entry) in self._pending.items():
            outputs.changelog(topic, partition, json.dumps(key).encode(), entry.to_json())
        self._pending.clear()

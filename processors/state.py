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
(a spool resend, a replay after a crash) is recognized and not applied a second time, and the
id of the deployment's first event, whose alerts a replay of it must emit again (they may not
have reached the ledger: see `processors.handler`).

`up` rebuilds this table from the ledger when the embedded broker starts empty
(`shipledger.up.restore`): it writes `Entry.to_json()` values to the changelog itself, so the
format here is also what the restore writes.
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
    """A deployment's record, the ids of the events already applied to it (oldest first) and
    the id of its first event (None if unknown: an entry written before it was kept)."""

    record: DeploymentRecord
    seen: tuple[str, ...]
    first: str | None = None

    def to_json(self) -> bytes:
        """The changelog value."""
        return json.dumps(
            {
                "record": self.record.model_dump(mode="json"),
                "seen": list(self.seen),
                "first": self.first,
            }
        ).encode()

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Entry:
        """An entry from its changelog value (as Faust recovers it: parsed JSON)."""
        return cls(
            DeploymentRecord.model_validate(value["record"]),
            tuple(value["seen"]),
            value.get("first"),
        )

    def applied(self, event_id: str, record: DeploymentRecord) -> Entry:
        """This entry after `event_id` produced `record`."""
        return Entry(record, (*self.seen, event_id)[-SEEN_IDS:], self.first)

    @staticmethod
    def new(event_id: str, record: DeploymentRecord) -> Entry:
        """The entry of a deployment whose first event is `event_id`."""
        return Entry(record, (event_id,), event_id)


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
        return Entry.from_json(value)  # recovered from the changelog as plain JSON

    def put(self, key: str, partition: int, record: DeploymentRecord, event_id: str) -> None:
        """Store the record applied from `event_id`; its changelog entry goes with the batch."""
        previous = self.get(key)
        entry = previous.applied(event_id, record) if previous else Entry.new(event_id, record)
        self._table.data[key] = entry
        self._pending[key] = (partition, entry)

    def flush_changelog(self, outputs: Outputs) -> int:
        """Queue the latest value of every key changed since the last call; how many.

        Call it only once the outputs of those changes are acknowledged (`processors.app`):
        an entry says its events were applied, and a restarted worker skips them."""
        topic = self._table.changelog_topic.get_topic_name()
        for key, (partition, entry) in self._pending.items():
            outputs.changelog(topic, partition, json.dumps(key).encode(), entry.to_json())
        count = len(self._pending)
        self._pending.clear()
        return count

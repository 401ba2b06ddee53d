"""Per-deployment state: a Faust table (recovered from its changelog on rebalance) whose
changelog we write ourselves, once per key per batch, through the processors' producer.

Faust's own `table[key] = value` sends one changelog message per update through its Python
producer, which cost more than all our processing together (measured with py-spy). Here the
table's local store holds the record model itself, and `flush_changelog` queues the latest
value of each key changed in the batch. The changelog partition is the source partition of the
event, which is what Faust's recovery and standbys expect. Values are JSON (the table's
serializer), so Faust recovers them as dicts: `get` accepts both forms. Keys are deployment
ids, JSON-encoded on the changelog like every key Faust's table codec reads back.
"""

from __future__ import annotations

import json
from typing import Any

from shipledger.processors.outputs import Outputs
from shipledger.schemas.models import DeploymentRecord


class DeploymentState:
    """Read and update deployment records in a Faust table."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[int, DeploymentRecord]] = {}

    def get(self, key: str) -> DeploymentRecord | None:
        """The deployment's record, if any event of it was seen."""
        value = self._table.data.get(key)
        if value is None or isinstance(value, DeploymentRecord):
            return value
        return DeploymentRecord.model_validate(value)  # recovered from the changelog

    def put(self, key: str, partition: int, record: DeploymentRecord) -> None:
        """Store the record locally; its changelog entry goes out with the batch."""
        self._table.data[key] = record
        self._pending[key] = (partition, record)

    def flush_changelog(self, outputs: Outputs) -> None:
        """Queue the latest value of every key changed since the last call."""
        topic = self._table.changelog_topic.get_topic_name()
        for key, (partition, record) in self._pending.items():
            outputs.changelog(
                topic, partition, json.dumps(key).encode(), record.model_dump_json().encode()
            )
        self._pending.clear()

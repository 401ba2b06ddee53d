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
have reached the ledger: see `processors.handler`). For re-judgement when a change request
changes (`processors.late_changes`) it also remembers which change-rule alerts hold (by id)
and how many of each rule were raised, and the partition of the deployment's raw events: a
worker re-judges only the deployments of the partitions it is assigned (a table also holds
standby and stale entries). The state indexes its entries by the change request they name.

`up` rebuilds this table from the ledger when the embedded broker starts empty
(`shipledger.up.restore`): it writes `Entry.to_json()` values to the changelog itself, so the
format here is also what the restore writes.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

import orjson

from shipledger.processors.change_rules import CHANGE_RULE_NAMES
from shipledger.processors.enrichment import ChangeKey
from shipledger.processors.outputs import Outputs
from shipledger.schemas.models import Alert, DeploymentRecord

#: How many applied event ids an entry remembers: far more than the stages of a deployment.
SEEN_IDS = 64


@dataclass(frozen=True)
class Entry:
    """A deployment's record, the ids of the events already applied to it (oldest first), the
    id of its first event (None if unknown: an entry written before it was kept), the
    change-rule alerts that hold (rule -> alert id), how many alerts of each change rule were
    raised, and the partition of its raw events (None: an entry written before it was kept)."""

    record: DeploymentRecord
    seen: tuple[str, ...]
    first: str | None = None
    holding: Mapping[str, str] = field(default_factory=dict)
    raised: Mapping[str, int] = field(default_factory=dict)
    partition: int | None = None

    def to_json(self) -> bytes:
        """The changelog value."""
        # The record goes to JSON in pydantic's serializer at once: a dict of it first, then
        # json.dumps, cost 2.5 times as much, once per deployment changed in every batch.
        return orjson.dumps(
            {
                "record": orjson.Fragment(self.record.model_dump_json()),
                "seen": list(self.seen),
                "first": self.first,
                "holding": dict(self.holding),
                "raised": dict(self.raised),
                "partition": self.partition,
            }
        )

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Entry:
        """An entry from its changelog value (as Faust recovers it: parsed JSON)."""
        return cls(
            DeploymentRecord.model_validate(value["record"]),
            tuple(value["seen"]),
            value.get("first"),
            dict(value.get("holding") or {}),
            dict(value.get("raised") or {}),
            value.get("partition"),
        )

    def applied(
        self, event_id: str, record: DeploymentRecord, alerts: Sequence[Alert], partition: int
    ) -> Entry:
        """This entry after `event_id`, read from `partition`, produced `record` and `alerts`."""
        seen = (*self.seen, event_id)[-SEEN_IDS:]
        entry = Entry(record, seen, self.first, self.holding, self.raised, partition)
        return entry.judged(None, alerts, ()) if _changes_any(alerts) else entry

    def judged(
        self, record: DeploymentRecord | None, alerts: Iterable[Alert], resolutions: Iterable[Alert]
    ) -> Entry:
        """This entry after a judgement emitted `alerts` and `resolutions` (and `record`, a
        new version, if not None)."""
        holding, raised = dict(self.holding), dict(self.raised)
        for alert in alerts:
            if alert.rule in CHANGE_RULE_NAMES:
                holding[alert.rule] = alert.alert_id
                raised[alert.rule] = raised.get(alert.rule, 0) + 1
        for done in resolutions:
            if holding.get(done.rule) == done.resolves:
                del holding[done.rule]
        return Entry(record or self.record, self.seen, self.first, holding, raised, self.partition)

    @staticmethod
    def new(
        event_id: str, record: DeploymentRecord, alerts: Sequence[Alert], partition: int
    ) -> Entry:
        """The entry of a deployment whose first event is `event_id`, read from `partition`."""
        entry = Entry(record, (event_id,), event_id, partition=partition)
        return entry.judged(None, alerts, ()) if _changes_any(alerts) else entry


def _changes_any(alerts: Sequence[Alert]) -> bool:
    """Whether `Entry.judged` would change anything for `alerts` (no resolutions): only
    change-rule alerts do. Most events raise none: their entry is not built twice."""
    return any(alert.rule in CHANGE_RULE_NAMES for alert in alerts)


def state_key(tenant: str, deployment_id: str) -> str:
    """The table key of a tenant's deployment: a JSON pair, unambiguous whatever characters
    the tenant or the id contain (`a/b` + `c` and `a` + `b/c` stay apart)."""
    # `json.dumps([tenant, deployment_id], ensure_ascii=False)`, written with the string
    # encoder it uses: the encoder's machinery around it cost ~2 µs per event, this ~0.2.
    return f"[{encode_basestring(tenant)}, {encode_basestring(deployment_id)}]"


class DeploymentState:
    """Read and update deployment entries in a Faust table, indexed by change request."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._pending: dict[str, tuple[int, Entry]] = {}
        self._by_change: dict[ChangeKey, set[str]] = {}

    def get(self, key: str) -> Entry | None:
        """The deployment's entry, if any event of it was applied."""
        value = self._table.data.get(key)
        if value is None or isinstance(value, Entry):
            return value
        return Entry.from_json(value)  # recovered from the changelog as plain JSON

    def put(
        self,
        key: str,
        partition: int,
        record: DeploymentRecord,
        event_id: str,
        alerts: Sequence[Alert] = (),
    ) -> None:
        """Store the record (and alerts) applied from `event_id`; its changelog entry goes
        with the batch."""
        previous = self.get(key)
        entry = (
            previous.applied(event_id, record, alerts, partition)
            if previous
            else Entry.new(event_id, record, alerts, partition)
        )
        self._store(key, partition, entry)

    def rejudged(
        self,
        key: str,
        record: DeploymentRecord | None,
        alerts: Iterable[Alert],
        resolutions: Iterable[Alert],
    ) -> None:
        """Store what a re-judgement of the (stored) deployment emitted."""
        previous = self.get(key)
        if previous is None or previous.partition is None:
            raise KeyError(f"no entry with a partition for {key}: only those are re-judged")
        self._store(key, previous.partition, previous.judged(record, alerts, resolutions))

    def _store(self, key: str, partition: int, entry: Entry) -> None:
        self._table.data[key] = entry
        self._pending[key] = (partition, entry)
        if entry.record.change_id:
            change = (entry.record.tenant, entry.record.change_id)
            self._by_change.setdefault(change, set()).add(key)

    def naming(self, change: ChangeKey, partitions: Collection[int]) -> list[tuple[str, Entry]]:
        """The entries of `partitions` whose deployment names change request `change` (an
        entry written before its partition was kept is left out until its next event)."""
        found = []
        for key in sorted(self._by_change.get(change, ())):
            entry = self.get(key)
            if (
                entry is not None
                and entry.partition in partitions
                and (entry.record.tenant, entry.record.change_id) == change
            ):
                found.append((key, entry))
        return found

    def with_changes(self, partitions: Collection[int]) -> Iterator[tuple[str, Entry]]:
        """Every entry of `partitions` whose deployment names a change request."""
        for change in sorted(self._by_change):
            yield from self.naming(change, partitions)

    def reindex(self) -> int:
        """Index every entry of the table by the change request it names (after a recovery,
        which fills the table behind our back); how many entries name one."""
        self._by_change.clear()
        for key, value in list(self._table.data.items()):
            if isinstance(value, Entry):
                change = (value.record.tenant, value.record.change_id)
            else:  # recovered JSON: no need to validate the whole record for two fields
                change = (value["record"]["tenant"], value["record"].get("change_id"))
            if change[1]:
                self._by_change.setdefault((change[0], str(change[1])), set()).add(key)
        return sum(len(keys) for keys in self._by_change.values())

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

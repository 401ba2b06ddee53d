"""What `up` rebuilds when it starts an embedded broker, whose memory starts empty (after a
clean stop, a crash or a kill -9 alike), before the processors, the sink and the API start:

1. **Correlation state**: the processors' `deployments` table, from the ledger. Each
   deployment's latest record (highest `seq`), the ids of its last events and of its first
   event, and its change-rule alerts that hold (alerts no resolution names) with how many of
   each rule were raised, become one `processors.state.Entry` written to the table's
   changelog topic at the partition of the deployment's raw events (the producers' murmur2
   partitioner), which Faust recovers when the worker starts. A late stage of a deployment
   that began before the crash then continues its record (seq, status, alerts) instead of
   starting a new one, and a late change request resolves the right alert.
2. **Enrichment topics**: every change, catalog and artifact event the ledger holds is
   produced again to its topic, oldest first: those topics are the workers' view's changelog
   (`processors.feed`). The sink drops them as duplicates.
3. **Acknowledged events**: every journal entry (`shipledger.producers.journal`) the ledger does not
   hold yet (`shipledger.up.completeness`) is produced again, in journal order, to its topic;
   the sink and the processors drop what they already applied (deterministic ids, the state's
   seen ids), and a repeated first event brings back its alerts.
4. **Dead letters**: the letters of the ledger's `dead_letters` tables (each ledger's, once
   per `letter_id`) left to replay are produced again to the fresh DLQ topic, oldest first,
   with their original key and value bytes and the headers `schemas.letters.DeadLetter`
   writes (reason, field, source position, stage, `replayed_from`): `shipledger dlq
   list/show/replay` read the topic, and a letter not yet replayed must stay replayable after
   a restart. Left to replay: dead-lettered within `SHIPLEDGER_DLQ_RETENTION_DAYS` (the DLQ
   topic's retention on any broker), and not a letter of an event whose every product a
   ledger holding the letter holds (the completeness rule of the journal, its letters aside:
   a letter replayed since, or whose event was sent again fixed; a processor bug's letter
   has its event row and no record, so it stays). Every other letter would come back at every
   start, each slower than the last. The sink drops them as the letters it holds (same
   `letter_id`).
5. **Start offsets**: the processors' group gets offset 0 committed on every raw partition,
   so Faust's seek back to committed offsets after a rebalance re-reads what it dropped
   (`commit_start_offsets`).

Guarantee: with the ledger and the journal intact, every event acknowledged before the crash
reaches the ledger once, with the record and alerts it would have had, or is a letter of the
DLQ topic again, replayable. Not covered: a record
of the deployment stored out of order across two ClickHouse partitions by a crash in the
middle of an insert (a deployment whose started_at month changes by a late event).
The pure parts (partition, state entries) come first; the I/O after.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from shipledger.kafka import DeliveryError, KafkaProducer
from shipledger.logging import get_logger
from shipledger.processors.change_rules import CHANGE_RULE_NAMES
from shipledger.processors.state import SEEN_IDS, state_key
from shipledger.processors.state import Entry as StateEntry
from shipledger.producers.journal import Entry, Journal, resent_entry
from shipledger.schemas.families import Family, scoped_key
from shipledger.schemas.letters import Headers
from shipledger.schemas.models import DeploymentRecord
from shipledger.schemas.registry import AvroCodec, catalog
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.latest_records import ledger_states
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import LETTER_COLUMNS, dead_letter
from shipledger.up.completeness import incomplete, stored

log = get_logger("restore")
_FLUSH_TIMEOUT_S = 60.0


class RestoreError(RuntimeError):
    """The broker did not take the restored state or the replayed events: `up` must not
    start serving without them."""


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did, for the log and the console."""

    deployments: int
    journal_segments: int
    journal_entries: int
    replayed: int
    skipped_bytes: int
    #: Change, catalog and artifact events written back to their topics.
    enrichment: int = 0
    #: Dead letters written back to the DLQ topic.
    dead_letters: int = 0

    def summary(self) -> str:
        """One line for the console."""
        damaged = f", {self.skipped_bytes} damaged bytes skipped" if self.skipped_bytes else ""
        return (
            f"restored {self.deployments} deployment states and {self.enrichment} change, "
            f"catalog and artifact events and {self.dead_letters} dead letters from the "
            f"ledger; journal: "
            f"{self.journal_entries} events in {self.journal_segments} segments, "
            f"{self.replayed} not yet in the ledger sent again{damaged}"
        )


# --- pure --------------------------------------------------------------------------------


def partition_of(key: bytes, partitions: int) -> int:
    """The partition librdkafka's `murmur2_random` (and Java's default) gives a keyed message."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def changelog_topic(settings: Settings) -> str:
    """The Faust changelog of the processors' `deployments` table (`<app id>-<table>-changelog`)."""
    return f"{settings.topic_prefix}processors-deployments-changelog"


@dataclass(frozen=True)
class StoredAlert:
    """What the restore reads of a change-rule alert or resolution row."""

    rule: str
    alert_id: str
    resolution: bool
    resolves: str | None = None


def holding_of(
    record: DeploymentRecord, first: str | None, alerts: Iterable[StoredAlert]
) -> tuple[dict[str, str], dict[str, int]]:
    """The deployment's change-rule alerts that hold (rule -> alert id) and how many of each
    rule were raised, from its stored alerts and resolutions.

    A rule its latest record says holds without a stored alert (the alert was lost with the
    broker before the sink stored it) is left out of both: the worker's sweep of the
    partitions it is assigned (`processors.refresh`) judges the deployment again and raises
    that alert anew under the id it had (`processors.step.alert_id`: first event, rule, next
    generation), which the sink drops if the original reaches it after all. Claiming it held
    would have lost it for good (the chaos test caught one such alert)."""
    alerts = list(alerts)
    resolved = {a.resolves for a in alerts if a.resolution}
    raised: dict[str, int] = {}
    holding: dict[str, str] = {}
    for a in sorted(alerts, key=lambda a: (a.rule, a.alert_id)):
        if not a.resolution:
            raised[a.rule] = raised.get(a.rule, 0) + 1
            if a.alert_id not in resolved:
                holding[a.rule] = a.alert_id
    return holding, raised


def state_message(
    record: DeploymentRecord,
    seen: Sequence[str],
    first: str | None,
    partitions: int,
    alerts: Iterable[StoredAlert] = (),
) -> tuple[int, bytes, bytes]:
    """(partition, key, value) of a deployment's state entry on the changelog: the partition
    of its raw events, the key and value the processors write (`processors.state`)."""
    partition = partition_of(scoped_key(record.tenant, record.deployment_id), partitions)
    holding, raised = holding_of(record, first, alerts)
    entry = StateEntry(record, tuple(seen[-SEEN_IDS:]), first, holding, raised, partition)
    key = json.dumps(state_key(record.tenant, record.deployment_id)).encode()
    return partition, key, entry.to_json()


# --- I/O ---------------------------------------------------------------------------------

_ALERTS_SQL = (
    "SELECT tenant, deployment_id, rule, alert_id, kind = 'resolution', resolves\n"
    "FROM {alerts} WHERE rule IN {{rules:Array(String)}}"
)


def ledger_alerts(store: LedgerStore) -> dict[tuple[str, str], list[StoredAlert]]:
    """Every change-rule alert and resolution in the ledger, by (tenant, deployment id)."""
    _, rows = store.query(
        _ALERTS_SQL.format(alerts=store.source(ddl.ALERTS)), {"rules": sorted(CHANGE_RULE_NAMES)}
    )
    found: dict[tuple[str, str], list[StoredAlert]] = {}
    for tenant, deployment, rule, identifier, resolution, resolves in rows:
        found.setdefault((str(tenant), str(deployment)), []).append(
            StoredAlert(str(rule), str(identifier), bool(resolution), resolves)
        )
    return found


def ledger_enrichment(store: LedgerStore, topics: Topics) -> Iterator[_Outgoing]:
    """Every change, catalog and artifact event the ledger holds, as the message its topic
    carried (oldest first per topic). A row that no longer validates is left out (logged)."""
    for name, event in LedgerReader(store).enrichment_events():
        spec = catalog().topic(name)
        family, codec = Family.of_topic(spec), AvroCodec(spec.schema_name)
        yield topics.of(name), -1, family.key(event), codec.encode(event.to_avro()), []


_LETTERS_SQL = (
    f"SELECT letter_id, dead_lettered_at, {', '.join(LETTER_COLUMNS)}\n"
    "FROM {letters} WHERE dead_lettered_at >= {{since:DateTime64(3, 'UTC')}}\n"
    "LIMIT 1 BY letter_id"
)


def ledger_letters(
    stores: Iterable[LedgerStore], topics: Topics, since: datetime
) -> Iterator[_Outgoing]:
    """The dead letters of `stores` left to replay, as the message the DLQ topic carried
    (original key and value, `DeadLetter` headers), oldest first; once per `letter_id` (the
    sink stores a tenant's letter in each of its regions' ledgers). Left out: letters from
    before `since` (the DLQ topic's retention) and letters of an event whose every product a
    ledger holding the letter holds (`completeness.stored`: replayed since, or sent again
    fixed)."""
    found: dict[str, tuple[Any, _Outgoing]] = {}
    settled: set[str] = set()
    for store in stores:
        _, rows = store.query(
            _LETTERS_SQL.format(letters=store.source(ddl.DEAD_LETTERS)), {"since": since}
        )
        entries: dict[str, Entry] = {}
        for identifier, at, *stored_row in rows:
            key, value, letter = dead_letter(stored_row)
            outgoing = (topics.dlq, -1, key, value, letter.headers())
            found.setdefault(str(identifier), ((at, str(identifier)), outgoing))
            source = letter.source_topic or ""
            entries[str(identifier)] = resent_entry(topics.prefix, source, key, value)
        done = set(stored(store, topics, list(entries.values())))
        settled.update(identifier for identifier, e in entries.items() if e in done)
    for (_, identifier), outgoing in sorted(found.values(), key=lambda item: item[0]):
        if identifier not in settled:
            yield outgoing


#: (topic, partition or -1, key, value, headers) of a message to produce.
_Outgoing = tuple[str, int, bytes | None, bytes | None, Headers]


def _produce_all(
    settings: Settings,
    bootstrap: str,
    messages: Iterable[_Outgoing],
    conf: dict[str, Any] | None = None,
) -> int:
    """Produce (topic, partition or -1, key, value, headers) messages; raise unless all are
    acknowledged. Returns how many."""
    producer = KafkaProducer({**settings.kafka_producer(bootstrap), **(conf or {})})
    count = 0
    for topic, partition, key, value, headers in messages:
        producer.produce(topic, value, key, partition=partition, headers=headers)
        producer.poll(0)
        count += 1
    try:
        producer.flush_or_raise(_FLUSH_TIMEOUT_S, f"restore: {count} messages produced")
    except DeliveryError as exc:
        raise RestoreError(str(exc)) from exc
    return count


def _ensure_changelog(settings: Settings, bootstrap: str) -> str:
    """Create the table's changelog as Faust would (compacted, the raw topic's partitions)."""
    topic = changelog_topic(settings)
    admin = AdminClient(settings.kafka_common(bootstrap))
    if topic not in admin.list_topics(timeout=15).topics:
        new = NewTopic(
            topic,
            num_partitions=settings.topic_partitions,
            replication_factor=1,
            config={"cleanup.policy": "compact"},
        )
        for future in admin.create_topics([new], request_timeout=15).values():
            try:
                future.result(timeout=15)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise RestoreError(f"cannot create {topic}: {exc}") from exc
    return topic


def rebuild_state(settings: Settings, bootstrap: str, store: LedgerStore) -> int:
    """Write every deployment's state from the ledger to the table's changelog; how many."""
    topic = _ensure_changelog(settings, bootstrap)
    alerts: Mapping[tuple[str, str], list[StoredAlert]] = ledger_alerts(store)
    messages: Iterator[_Outgoing] = (
        (
            topic,
            *state_message(
                record,
                seen,
                first,
                settings.topic_partitions,
                alerts.get((record.tenant, record.deployment_id), []),
            ),
            [],
        )
        for record, seen, first in ledger_states(store)
    )
    # One message per produce batch: Tansu's ListOffsets counts a batch as one offset, and the
    # worker's recovery must see every entry (the worker also reads true ends, see app.py).
    return _produce_all(settings, bootstrap, messages, {"batch.num.messages": 1})


def commit_start_offsets(settings: Settings, bootstrap: str) -> None:
    """Commit offset 0 of every raw partition for the processors' group of a fresh broker.

    After a rebalance Faust seeks its partitions back to their committed offsets, which re-reads
    any event it fetched and then dropped; with nothing committed it leaves them where the
    fetcher stopped, past those events (seen: a fresh worker handed offsets 33 and up of a
    partition first, after a restore). A committed 0 makes that seek real."""
    topics = Topics.from_settings(settings)
    consumer = Consumer(
        {
            **settings.kafka_common(bootstrap),
            "group.id": f"{settings.topic_prefix}processors",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(topics.raw, p, 0) for p in range(settings.topic_partitions)],
            asynchronous=False,
        )
    except KafkaException as exc:
        raise RestoreError(f"cannot commit the processors' start offsets: {exc}") from exc
    finally:
        consumer.close()


def restore(
    settings: Settings,
    bootstrap: str,
    store: LedgerStore,
    journal: Journal,
    ledgers: Sequence[LedgerStore] = (),
) -> RestoreReport:
    """Rebuild the state and send again what the journal holds and the ledger does not (see
    the module docstring); the dead letters come from `ledgers` (every ledger: the sink
    stores a letter in its tenant's regions'), default `store`. Call it before the
    processors, the sink and the API start."""
    topics = Topics.from_settings(settings)
    deployments = rebuild_state(settings, bootstrap, store)
    enrichment = _produce_all(settings, bootstrap, ledger_enrichment(store, topics))
    since = datetime.now(UTC) - timedelta(days=settings.dlq_retention_days)
    letters = _produce_all(settings, bootstrap, ledger_letters(ledgers or (store,), topics, since))
    segments = journal.seal()
    entries: list[Entry] = []
    skipped = 0
    for segment in segments:
        decoded = journal.read(segment)
        entries.extend(decoded.entries)
        skipped += decoded.skipped_bytes
        if decoded.skipped_bytes:
            log.warning(
                "journal_damaged", segment=str(segment), skipped_bytes=decoded.skipped_bytes
            )
    todo = incomplete(store, topics, entries)
    _produce_all(
        settings,
        bootstrap,
        ((e.topic, -1, e.key, e.value, [(k, v) for k, v in e.headers]) for e in todo),
    )
    commit_start_offsets(settings, bootstrap)
    report = RestoreReport(
        deployments, len(segments), len(entries), len(todo), skipped, enrichment, letters
    )
    log.info("restored", **asdict(report))
    return report

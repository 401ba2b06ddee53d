"""`shipledger dlq`: inspect and replay dead-lettered messages.

The dead-letter topic (`<prefix>dlq`) holds each rejected message's original key and value,
with headers saying why (`reason`, `field`), where it was read (`source_topic`,
`source_partition`, `source_offset`) and by whom (`stage`: `processors`, `sink` or
`escalation`). A letter is named by its own place in the DLQ, `<dlq partition>:<dlq
offset>`, e.g. `2:15`.

The pure helpers (id and header parsing, selection, formatting) come first; Kafka I/O after.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import click

from shipledger.cli_types import ROW_LIMIT, FiniteFloatRange
from shipledger.clients import next_to_end, reader_consumer, topic_ends, topic_partitions
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.producers.journal import Entry, Journal, JournalError, resent_entry
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.letters import (
    REPLAYED_FROM,
    STAGES,
    DeadLetter,
    header_text,
    replay_headers,
)
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.stackfile import journal_dir, resolve_bootstrap
from shipledger.tables import render_table

REASON_WIDTH = 60
RAW_PREVIEW_BYTES = 300


# --- pure helpers ------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class LetterId:
    """A letter's place in the DLQ topic."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


def parse_letter_id(text: str) -> LetterId:
    """Parse `PARTITION:OFFSET` (e.g. `2:15`); raises ValueError with a readable message."""
    parts = text.strip().split(":")
    # ASCII digits: str.isdigit() also takes a superscript two, which int() refuses.
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise ValueError(
            f"{text!r} is not a letter id: expected PARTITION:OFFSET as printed by "
            "`shipledger dlq list`, e.g. 2:15"
        )
    return LetterId(int(parts[0]), int(parts[1]))


class LetterIdParam(click.ParamType):
    """Click parameter type for `PARTITION:OFFSET`."""

    name = "PARTITION:OFFSET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, LetterId):
            return value
        try:
            return parse_letter_id(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@dataclass(frozen=True)
class Letter:
    """One dead letter: its DLQ position, the original key/value and every header as text
    (what `show` prints); `letter` is what those headers say."""

    id: LetterId
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @cached_property
    def letter(self) -> DeadLetter:
        """The headers, read (`schemas.letters`)."""
        return DeadLetter.read(self.headers)

    @property
    def stage(self) -> str:
        return self.letter.stage

    @property
    def source_topic(self) -> str | None:
        return self.letter.source_topic

    def summary(self) -> dict[str, Any]:
        """The fields `dlq list --format json` prints."""
        letter = self.letter
        return {
            "id": str(self.id),
            "stage": letter.stage,
            "source_topic": letter.source_topic,
            "source_partition": letter.source_partition,
            "source_offset": letter.source_offset,
            "field": letter.field,
            "reason": letter.reason,
            REPLAYED_FROM: letter.replayed_from,
        }


def select_letters(
    letters: Iterable[Letter], ids: Sequence[LetterId] = (), stage: str | None = None
) -> list[Letter]:
    """Letters matching `stage` (if given) and, if `ids` is non-empty, one of `ids`."""
    wanted = set(ids)
    return [
        letter
        for letter in letters
        if (not wanted or letter.id in wanted) and (stage is None or letter.stage == stage)
    ]


def truncate(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def format_table(letters: Sequence[Letter], reason_width: int = REASON_WIDTH) -> str:
    """One aligned line per letter, reasons truncated."""
    return render_table(
        ("ID", "STAGE", "SOURCE", "FIELD", "REASON"),
        (
            (
                str(x.id),
                x.stage or "?",
                x.letter.source,
                x.letter.field or "-",
                truncate(x.letter.reason, reason_width),
            )
            for x in letters
        ),
    )


def describe_payload(value: bytes | None) -> tuple[dict[str, Any] | None, str]:
    """The payload as a DeploymentEvent (decoded dict, JSON text), else (None, a bytes preview)."""
    from shipledger.schemas.registry import AvroCodec, DecodeError
    from shipledger.schemas.validation import EVENT_SCHEMA

    try:
        decoded = AvroCodec(EVENT_SCHEMA).decode(value)
    except DecodeError as exc:
        if value is None:
            return None, f"no payload (null value): not valid Avro ({exc})"
        preview = repr(value[:RAW_PREVIEW_BYTES])
        more = f" … ({len(value)} bytes in all)" if len(value) > RAW_PREVIEW_BYTES else ""
        return None, f"{preview}{more}\nnot a valid Avro DeploymentEvent: {exc}"
    return decoded, json.dumps(decoded, indent=2, sort_keys=True, default=str)


# --- Kafka I/O ---------------------------------------------------------------------------


def _letter(msg: Any) -> Letter:
    return Letter(
        id=LetterId(msg.partition(), msg.offset()),
        key=msg.key(),
        value=msg.value(),
        headers=header_text(msg.headers()),
    )


def read_letters(
    settings: Settings,
    bootstrap: str,
    topic: str,
    start: dict[int, int] | None = None,
    timeout_s: float = 30.0,
) -> list[Letter]:
    """Every letter of `topic` from the beginning (or from `start[partition]`) to the end.

    Stops when every partition reported end-of-partition. A missing topic reads as empty.
    """
    from confluent_kafka import KafkaError, TopicPartition

    consumer = reader_consumer(settings, bootstrap, "dlq")
    try:
        partitions = topic_partitions(consumer, bootstrap, topic, timeout_s)
        # The high watermarks bound the read (end-of-partition events end it too): a
        # partition with nothing at or after its start offset is not read at all.
        wanted = [p for p in partitions if start is None or p in start]
        marks = topic_ends(settings, bootstrap, topic, wanted, timeout_s)
        ends: dict[int, int] = {}
        begins: dict[int, int] = {}
        for p in wanted:
            low, high = marks[p].low, marks[p].high
            begin = start[p] if start is not None else low
            if begin < low or begin >= high:
                continue
            ends[p], begins[p] = high, begin
        partitions = sorted(ends)
        if not partitions:
            return []
        consumer.assign([TopicPartition(topic, p, begins[p]) for p in partitions])
        pending = set(partitions)
        letters: list[Letter] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"timed out after {timeout_s:g}s reading {topic} "
                    f"(partitions {sorted(pending)} never reached their end)"
                )
            msg = next_to_end(
                consumer, 0.2, pending, ends, also_ending=(KafkaError.OFFSET_OUT_OF_RANGE,)
            )
            if msg is None:
                continue
            letters.append(_letter(msg))
            if start is not None:
                # `show` wants one message per partition: stop after it.
                pending.discard(msg.partition())
        return sorted(letters, key=lambda x: x.id)
    finally:
        consumer.close()


def read_letter(
    settings: Settings, bootstrap: str, topic: str, letter_id: LetterId, timeout_s: float = 30.0
) -> Letter | None:
    """The letter at `letter_id`, or None if there is none."""
    found = read_letters(
        settings,
        bootstrap,
        topic,
        start={letter_id.partition: letter_id.offset},
        timeout_s=timeout_s,
    )
    return next((x for x in found if x.id == letter_id), None)


def journal_entry(settings: Settings, letter: Letter) -> Entry:
    """The journal entry of a replayed letter (`producers.journal.resent_entry`), naming the
    letter in its `replayed_from` header."""
    assert letter.source_topic is not None
    return resent_entry(
        settings.topic_prefix,
        letter.source_topic,
        letter.key,
        letter.value,
        replay_headers(str(letter.id)),
    )


def paced(letters: Sequence[Letter], rate: float | None) -> list[tuple[float, list[Letter]]]:
    """`letters` in sending batches, each with when to send it (seconds after the first):
    one batch now without `rate`, else batches of `rate` letters (at least one) a second."""
    if rate is None or not letters:
        return [(0.0, list(letters))]
    size = max(1, int(rate))
    return [
        (start / rate, list(letters[start : start + size]))
        for start in range(0, len(letters), size)
    ]


def replay(
    settings: Settings,
    bootstrap: str,
    letters: Sequence[Letter],
    timeout_s: float = 30.0,
    rate: float | None = None,
) -> int:
    """Produce each letter's original key and value to its source topic, at most `rate`
    letters a second if given; returns how many the broker acknowledged. Letters without a
    source topic must be filtered out first. Each batch is journaled (for an embedded stack)
    and acknowledged before the next is sent: a replay stopped midway sent a prefix."""
    from shipledger.kafka import DeliveryError, KafkaProducer

    directory = journal_dir(settings, bootstrap)
    journal = None if directory is None else Journal(directory, fsync=settings.journal_fsync)
    producer = KafkaProducer(settings.kafka_producer(bootstrap))
    began = time.monotonic()
    for due, batch in paced(letters, rate):
        time.sleep(max(0.0, began + due - time.monotonic()))
        # The embedded broker keeps messages in memory only: journal the events first. Letters
        # of the derived topics (records, alerts) are not events: their raw events make them.
        entries = [e for e in (journal_entry(settings, x) for x in batch) if e.family]
        if journal is not None and entries:
            try:
                journal.append(entries)
            except JournalError as exc:
                raise click.ClickException(f"replay not sent: {exc}") from exc
        for letter in batch:
            assert letter.source_topic is not None
            producer.produce(
                letter.source_topic,
                letter.value,
                letter.key,
                headers=replay_headers(str(letter.id)),
            )
            producer.poll(0)
        try:
            producer.flush_or_raise(timeout_s, f"replay incomplete after {timeout_s:g}s")
        except DeliveryError as exc:
            raise click.ClickException(str(exc)) from exc
    return len(letters)


# --- the command -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    settings: Settings
    bootstrap: str
    topic: str


def _target(ctx: click.Context) -> _Target:
    """Settings, broker and DLQ topic, resolved when a subcommand runs (not for --help)."""
    given = ctx.obj or {}
    settings = cli_settings(
        bootstrap_servers=given.get("bootstrap"), data_dir=given.get("data_dir")
    )
    location = locate(settings)
    settings = location.settings
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    bootstrap = resolve_bootstrap(settings)
    if bootstrap is None:
        raise click.UsageError(
            "no broker to read the DLQ from: pass --bootstrap HOST:PORT, set "
            f"SHIPLEDGER_BOOTSTRAP_SERVERS, or start `shipledger up`: {location.no_stack()}",
            ctx,
        )
    return _Target(settings, bootstrap, Topics.from_settings(settings).dlq)


_stage_option = click.option(
    "--stage",
    type=click.Choice(STAGES),
    help="Only letters dead-lettered by this stage (processors: raw events that do not decode "
    "or validate; sink: records/alerts that do not fit their table; escalation: alerts a "
    "receiver refused, sent again to those receivers by a replay).",
)


@click.group("dlq", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--bootstrap",
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers. Default: SHIPLEDGER_BOOTSTRAP_SERVERS, else the broker of a "
    "running `shipledger up`.",
)
@data_dir_option
@click.pass_context
def dlq(ctx: click.Context, bootstrap: str | None, data_dir: Path | None) -> None:
    """Inspect and replay dead-lettered messages.

    The DLQ topic is `<SHIPLEDGER_TOPIC_PREFIX>dlq`. Each letter is the original message
    (key and value) with headers saying why it was rejected; it is named by its place in the
    DLQ, PARTITION:OFFSET (e.g. 2:15). Reading never joins a consumer group or commits.

    \b
    Operator workflow:
      shipledger dlq list                      # what was rejected, and why
      shipledger dlq list --stage processors --format json
      shipledger dlq show 2:15                 # headers + the payload (decoded if Avro)
      # fix the cause: the policy file, a mapping, a processor bug (then redeploy)
      shipledger dlq replay 2:15 3:4           # send those originals back to their topic
      shipledger dlq replay --all --stage processors --dry-run
    """
    ctx.ensure_object(dict)
    ctx.obj["bootstrap"] = bootstrap
    ctx.obj["data_dir"] = data_dir


@dlq.command("list")
@click.option("--limit", type=ROW_LIMIT, help="Show at most the last N letters (in id order).")
@_stage_option
@format_option(
    ["table", "json"],
    "table: one line per letter, reasons truncated; json: one full JSON object per line.",
)
@click.pass_context
def list_(ctx: click.Context, limit: int | None, stage: str | None, fmt: str) -> None:
    """List dead letters: id, stage, source topic/partition/offset, field, reason.

    \b
    Examples:
      shipledger dlq list
      shipledger dlq list --stage sink --limit 20
      shipledger dlq list --format json | jq -r 'select(.field == "commit_sha") | .id'
    """
    target = _target(ctx)
    letters = select_letters(
        read_letters(target.settings, target.bootstrap, target.topic), (), stage
    )
    if limit is not None:
        letters = letters[-limit:]
    if fmt == "json":
        for letter in letters:
            click.echo(json.dumps(letter.summary(), sort_keys=True))
        return
    if not letters:
        what = f" from stage {stage}" if stage else ""
        click.echo(f"No dead letters{what} in {target.topic}.")
        return
    click.echo(format_table(letters))


@dlq.command("show")
@click.argument("letter_id", metavar="ID", type=LetterIdParam())
@click.pass_context
def show(ctx: click.Context, letter_id: LetterId) -> None:
    """Show one letter: every header and the original payload.

    A payload that decodes as a DeploymentEvent is printed as JSON; anything else as a
    (truncated) bytes repr, with why it is not valid Avro.

    \b
    Example:
      shipledger dlq show 2:15
    """
    target = _target(ctx)
    letter = read_letter(target.settings, target.bootstrap, target.topic, letter_id)
    if letter is None:
        raise click.ClickException(f"no letter {letter_id} in {target.topic}")
    click.echo(f"letter {letter.id} in {target.topic}")
    click.echo("headers:")
    width = max((len(k) for k in letter.headers), default=0)
    for key, value in letter.headers.items():
        click.echo(f"  {key.ljust(width)}  {value}")
    key_text = letter.key.decode("utf-8", errors="replace") if letter.key is not None else None
    click.echo(f"key: {key_text!r}")
    decoded, text = describe_payload(letter.value)
    click.echo("payload (DeploymentEvent):" if decoded is not None else "payload (raw bytes):")
    click.echo(text)


@dlq.command("replay")
@click.argument("ids", metavar="[ID]...", nargs=-1, type=LetterIdParam())
@click.option("--all", "all_", is_flag=True, help="Replay every letter (with --stage: of it).")
@_stage_option
@click.option(
    "--rate",
    type=FiniteFloatRange(min=0, min_open=True),
    metavar="N",
    help="Send at most N letters a second (default: all at once), so that a large replay does "
    "not flood the pipeline or, for escalation letters, the receivers.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; send nothing.")
@click.pass_context
def replay_cmd(
    ctx: click.Context,
    ids: tuple[LetterId, ...],
    all_: bool,
    stage: str | None,
    rate: float | None,
    dry_run: bool,
) -> None:
    """Send letters' original key and value back to their source topic.

    Each replayed message carries a `replayed_from=PARTITION:OFFSET` header naming its letter.
    Fix the cause first (policy, mapping, processor bug): a replayed message that is still bad
    simply comes back to the DLQ as a new letter with a fresh reason. Letters without a
    source_topic header are skipped with a warning.

    Replay is at-least-once: replaying a letter twice sends it twice. That is safe, because
    downstream deduplicates by event id, but the DLQ keeps the letter (for the topic's
    retention, SHIPLEDGER_DLQ_RETENTION_DAYS; an embedded stack's restart brings back only
    the letters whose event the ledger lacks). A replay stopped midway (Ctrl-C, kill -9) sent
    some letters, in order: run the same replay again.

    \b
    Examples:
      shipledger dlq replay 2:15 0:7
      shipledger dlq replay --all --stage processors --dry-run
      shipledger dlq replay --all --rate 50
    """
    if not ids and not all_:
        raise click.UsageError("name letters to replay (e.g. `replay 2:15`) or pass --all", ctx)
    if ids and all_:
        raise click.UsageError("pass letter ids or --all, not both", ctx)
    target = _target(ctx)
    letters = read_letters(target.settings, target.bootstrap, target.topic)
    selected = select_letters(letters, ids, stage)
    missing = sorted(set(ids) - {x.id for x in selected})
    if missing:
        raise click.ClickException(
            "no such letter(s)"
            + (f" from stage {stage}" if stage else "")
            + f" in {target.topic}: "
            + ", ".join(map(str, missing))
        )
    sendable: list[Letter] = []
    for letter in selected:
        if letter.source_topic is None:
            click.echo(f"warning: skipping {letter.id}: no source_topic header", err=True)
        else:
            sendable.append(letter)
    if not sendable:
        click.echo("Nothing to replay.")
        return
    if dry_run:
        for letter in sendable:
            click.echo(f"would replay {letter.id} -> {letter.source_topic}")
        click.echo(f"{len(sendable)} letter(s) would be replayed (dry run: nothing sent).")
        return
    count = replay(target.settings, target.bootstrap, sendable, rate=rate)
    click.echo(f"Replayed {count} letter(s).")

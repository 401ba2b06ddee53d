"""`shipledger journal`: what the embedded stack's write-ahead journal holds (read-only)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.producers.journal import Journal


@click.command("journal")
@data_dir_option
def journal(data_dir: Path | None) -> None:
    """Show the journal's segments: events per topic, bytes, damaged bytes.

    \b
    `shipledger up` (embedded broker) journals every event before acknowledging it, sends the
    ones the ledger lacks again when it starts, and deletes a segment once the ledger holds
    all of it: what is listed here is what a restart would still check (the newest segment
    is the one being written). Safe to run while `up` runs; it changes nothing.

    \b
    Example:
      shipledger journal --data-dir .shipledger
    """
    settings = locate(cli_settings(data_dir=data_dir)).require("`shipledger journal`").settings
    store = Journal(settings.journal_dir)
    segments = store.segments()
    if not segments:
        click.echo(f"The journal in {settings.journal_dir} is empty.")
        return
    total: Counter[str] = Counter()
    for segment in segments:
        read = store.read(segment)
        topics = Counter(entry.topic for entry in read.entries)
        total.update(topics)
        damaged = f", {read.skipped_bytes} damaged bytes skipped" if read.skipped_bytes else ""
        detail = ", ".join(f"{topic} {n}" for topic, n in sorted(topics.items())) or "no events"
        click.echo(f"{segment.name}  {segment.stat().st_size} bytes  {detail}{damaged}")
    click.echo(
        f"{len(segments)} segments, {sum(total.values())} events, "
        f"{store.size_bytes()} bytes in {settings.journal_dir}"
    )

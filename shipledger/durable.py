"""Durable writes on disk, shared by the emitter's spool, the journal, the ledger archive and
the SQLite stores (API tokens, the escalator's delivery record)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3


def fsync_file(path: Path) -> None:
    """Sync the file at `path`, so what was written to it survives a crash."""
    _sync(path, 0)


def fsync_dir(directory: Path) -> None:
    """Sync `directory`, so a file created or renamed in it survives a crash. Windows has no
    directory handles to sync (NTFS journals the rename itself): a no-op there."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    _sync(directory, os.O_DIRECTORY)


def _sync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shared_sqlite(path: Path | str, schema: str, *pragmas: str) -> sqlite3.Connection:
    """One SQLite connection for all threads of a store (the store serializes them with its own
    lock): autocommit, so the store opens its transactions itself, a write-ahead log, so
    readers do not block the writer, `pragmas` (e.g. `synchronous=FULL`) and `schema` applied."""
    # Imported here: `shipledger emit` syncs the journal through this module, and sends to
    # Kafka without opening any database (only spooling does, for the spool's lock).
    import sqlite3

    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    for pragma in ("journal_mode=WAL", *pragmas):
        db.execute(f"PRAGMA {pragma}")
    db.executescript(schema)
    return db

"""Durable writes on disk, shared by the emitter's spool, the journal and the ledger archive."""

from __future__ import annotations

import os
from pathlib import Path


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

"""Durable renames and creations on disk, shared by the emitter's spool and the journal."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Sync `directory`, so a file created or renamed in it survives a crash. Windows has no
    directory handles to sync (NTFS journals the rename itself): a no-op there."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

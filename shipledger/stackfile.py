"""The stack file: how a running `shipledger up` tells other commands where it is.

It names the broker, the ClickHouse URL and, when `up` serves the HTTP API, its URL and a local
admin token: the chDB data dir belongs to the `up` process, so `shipledger query` sends its SQL
there. The file is written owner-only (0600, the data dir 0700 when created here) because of
that token, and the query path cannot read it (docs/security.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

from shipledger.settings import Settings


class StackInfo(BaseModel):
    """What a running stack publishes about itself in `<data_dir>/stack.json`."""

    bootstrap: str
    pid: int
    clickhouse_url: str
    #: Base URL of the HTTP API `up` serves (e.g. `http://127.0.0.1:8080`), if any.
    api_url: str | None = None
    #: Admin token for that API, for commands run by the same user on this machine.
    api_token: str | None = None
    #: The write-ahead journal of an embedded broker (`shipledger.producers.journal`): whoever
    #: sends to `bootstrap` journals first. None with an external broker (Kafka keeps the data).
    journal: str | None = None


def stack_path(settings: Settings) -> Path:
    """Where the stack file lives."""
    return settings.data_dir / "stack.json"


def write_stack(settings: Settings, info: StackInfo) -> None:
    """Publish the running stack's addresses (atomically)."""
    path = stack_path(settings)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 before the token is written: no window where another user can read it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(info.model_dump_json(indent=2))
    tmp.replace(path)


def remove_stack(settings: Settings) -> None:
    """Withdraw the stack file on shutdown."""
    stack_path(settings).unlink(missing_ok=True)


def read_stack(settings: Settings) -> StackInfo | None:
    """The running stack's info, or None if no live stack is recorded."""
    path = stack_path(settings)
    try:
        info = StackInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None  # a stack that crashed left its file behind
    except PermissionError:
        pass
    return info


def journal_dir(settings: Settings, bootstrap: str | None) -> Path | None:
    """The journal to write before sending to `bootstrap`: that of the running `up` whose
    embedded broker `bootstrap` is, else None (another broker keeps what it acknowledges)."""
    info = read_stack(settings)
    if info is None or info.journal is None or bootstrap != info.bootstrap:
        return None
    return Path(info.journal)


def resolve_bootstrap(settings: Settings) -> str | None:
    """Configured bootstrap servers, else those of a running `shipledger up`, else None."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    info = read_stack(settings)
    return info.bootstrap if info else None

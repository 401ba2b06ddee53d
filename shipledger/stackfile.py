"""The stack file: how a running `shipledger up` tells other commands where its broker is."""

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
    api_url: str | None = None


def stack_path(settings: Settings) -> Path:
    """Where the stack file lives."""
    return settings.data_dir / "stack.json"


def write_stack(settings: Settings, info: StackInfo) -> None:
    """Publish the running stack's addresses (atomically)."""
    path = stack_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.model_dump_json(indent=2), encoding="utf-8")
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


def resolve_bootstrap(settings: Settings) -> str | None:
    """Configured bootstrap servers, else those of a running `shipledger up`, else None."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    info = read_stack(settings)
    return info.bootstrap if info else None

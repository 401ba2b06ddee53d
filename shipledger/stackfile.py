"""The stack file: how a running `shipledger up` tells other commands where it is.

It names the broker, the ClickHouse URL, the data dir and token store and, when `up` serves
the HTTP API, its URL and a local admin token: the chDB data dir belongs to the `up` process,
so `shipledger query` sends its SQL there. The file is written owner-only (0600, the data dir
0700 when created here) because of that token, and the query path cannot read it
(docs/security.md).

Beside it, `up` leaves a pointer to its data dir in the per-user registry of stacks
(`Settings.resolved_stacks_dir`, one small file per data dir, rewritten at every start): how
a command run from another directory finds the stack (`shipledger.locate`). A stack counts as
running only while its data dir's own stack file names a live process with the pointer's
pid; a stopped one stays registered (the newest is where offline commands look) until its
data dir is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipledger.settings import Settings

#: Query parameters of a GET to the running stack's API.
Params = list[tuple[str, str | int | float | bool | None]]


class ApiUnavailable(RuntimeError):
    """The running stack's API did not answer, or answered other than 200."""


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
    #: The data dir (absolute) and the token store the API reads (`tokens create` writes there).
    data_dir: str | None = None
    auth_db: str | None = None
    #: The policy file its processors judge by (None: the built-in default policy).
    policy_file: str | None = None


def stack_path(settings: Settings) -> Path:
    """Where the stack file lives."""
    return settings.data_dir / "stack.json"


def _registry_entry(settings: Settings) -> Path:
    """This data dir's pointer in the registry of running stacks."""
    key = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:16]
    return settings.resolved_stacks_dir / f"{key}.json"


def _write_private(path: Path, text: str) -> None:
    """Write `path` atomically, owner-only (0600) from the start; its directory 0700 if new."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 before anything is written: no window where another user can read it.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)


def write_stack(settings: Settings, info: StackInfo) -> None:
    """Publish the running stack's addresses (atomically) and register its data dir."""
    _write_private(stack_path(settings), info.model_dump_json(indent=2))
    pointer = {"data_dir": str(settings.data_dir.resolve()), "pid": info.pid}
    _write_private(_registry_entry(settings), json.dumps(pointer))


def remove_stack(settings: Settings) -> None:
    """Withdraw the stack file on shutdown (the registry entry stays: a stopped stack)."""
    stack_path(settings).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts)."""
    if sys.platform == "win32":  # os.kill would end it; the stack itself never runs there
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:  # ProcessLookupError; on Windows any failure to reach it
        return False
    return True


def _live(path: Path) -> StackInfo | None:
    """The stack recorded in the stack file `path`, if its process is alive (a stack that
    crashed leaves its file behind)."""
    try:
        info = StackInfo.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return info if pid_alive(info.pid) else None


def read_stack(settings: Settings) -> StackInfo | None:
    """The running stack's info, or None if no live stack is recorded."""
    return _live(stack_path(settings))


@dataclass(frozen=True)
class Registered:
    """A data dir of this user's registry, and its stack if that runs now."""

    data_dir: Path
    running: StackInfo | None
    #: When `up` last started on it (the entry's modification time).
    started_at: float


def registered_stacks(settings: Settings) -> list[Registered]:
    """Every data dir of this user's registry, newest start first; entries whose data dir is
    gone (or that cannot be read) are removed on the way."""
    found: list[Registered] = []
    directory = settings.resolved_stacks_dir
    for entry in directory.glob("*.json") if directory.is_dir() else []:
        try:
            pointer = json.loads(entry.read_text(encoding="utf-8"))
            data_dir, pid = Path(pointer["data_dir"]), int(pointer["pid"])
            started_at = entry.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            entry.unlink(missing_ok=True)
            continue
        if not data_dir.is_dir():
            entry.unlink(missing_ok=True)
            continue
        info = _live(data_dir / "stack.json")
        running = info if info is not None and info.pid == pid else None
        found.append(Registered(data_dir, running, started_at))
    return sorted(found, key=lambda r: r.started_at, reverse=True)


def running_stacks(settings: Settings) -> list[tuple[Path, StackInfo]]:
    """Every stack of this user's registry that runs now, as (data dir, info)."""
    return [(r.data_dir, r.running) for r in registered_stacks(settings) if r.running]


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


def api_get(
    info: StackInfo, path: str, params: Params | None = None, *, missing_ok: bool = False
) -> Any:
    """The JSON answer of `GET <api of the running up><path>` with its local token (what a
    read command prints when `up` holds the embedded ledger); None for a 404 if `missing_ok`;
    ApiUnavailable when it does not answer, or not 200. A path longer than a URL may be (an
    id of 100,000 characters) is ApiUnavailable too, naming the API, not that path."""
    import httpx  # here: most commands read the stack file and never ask its API

    assert info.api_url is not None
    headers = {"Authorization": f"Bearer {info.api_token}"} if info.api_token else {}
    url = info.api_url.rstrip("/") + path
    try:
        response = httpx.get(url, params=params, headers=headers, timeout=60)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ApiUnavailable(
            f"the API of `shipledger up` at {info.api_url} did not answer: {exc}"
        ) from exc
    if missing_ok and response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ApiUnavailable(f"{url} answered {response.status_code}: {response.text}")
    return response.json()

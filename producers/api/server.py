"""`ApiServer`: the ingest API served by uvicorn on a thread of this process.

One thread, so `shipledger up` can run it beside the sink and share the ledger store (chDB
allows one process per data dir); `shipledger api` and the tests run the same thing.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from shipledger.closing import Running
from shipledger.logging import get_logger
from shipledger.producers.api.app import create_app
from shipledger.producers.api.auth import ANY_TENANT, LOCAL_TOKEN_NAME, PII_READ, AuthStore
from shipledger.producers.api.bridge import KafkaBridge
from shipledger.producers.api.context import ApiContext
from shipledger.producers.api.stream_hub import StreamHub
from shipledger.producers.journal import Journal
from shipledger.settings import Settings
from shipledger.stackfile import pid_alive

if TYPE_CHECKING:
    from shipledger.schemas.governance import Governance
    from shipledger.schemas.residency import Residency
    from shipledger.sinks.ledger.reader import LedgerReads

log = get_logger("api.server")


def _local_token_pid(name: str) -> int | None:
    """The process id in a local read token's name; None for any other token."""
    rest = name.removeprefix(LOCAL_TOKEN_NAME)
    if rest == name or not rest.endswith(")") or not rest[:-1].isdigit():
        return None
    return int(rest[:-1])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"the ingest API cannot listen on {host}:{port}: {exc.strerror} "
            "(pick another port: SHIPLEDGER_API_PORT, or 0 for any free one)"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class ApiServer(Running):
    """The API on `settings.api_host:api_port`, producing to `bootstrap`; a context manager.
    With `ledger`, it serves reads; with `governance` too, the gate and approvals; with
    `journal`, events are journaled before they are produced (`api.bridge`)."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        ledger: LedgerReads | None = None,
        journal: Journal | None = None,
        governance: Governance | None = None,
        residency: Residency | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self._ledger = ledger
        self._journal = journal
        self._governance = governance
        self._residency = residency
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ctx: ApiContext | None = None
        self._sock: socket.socket | None = None
        self._operator_token_id: str | None = None
        self.url = ""

    def start(self, timeout_s: float = 15.0) -> str:
        """Listen, start serving, and return the base URL (http://host:port)."""
        self._sock = _listen(self.settings.api_host, self.settings.api_port)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        hub = StreamHub(self.settings, self.bootstrap, self._residency)
        self._ctx = ApiContext(
            settings=self.settings,
            auth=AuthStore(self.settings.resolved_auth_db),
            bridge=KafkaBridge(self.settings, self.bootstrap, self._journal),
            ledger=self._ledger,
            governance=self._governance,
            stream=hub,
            residency=self._residency,
        )
        hub.start()
        config = uvicorn.Config(
            create_app(self._ctx),
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="auto",  # uvloop (the api extra) where installed, else asyncio
            http="httptools",
            timeout_keep_alive=30,
        )
        server = self._server = uvicorn.Server(config)
        sock = self._sock
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the ingest API did not start")
            time.sleep(0.02)
        log.info("api_started", url=self.url, auth_db=str(self.settings.resolved_auth_db))
        return self.url

    def operator_token(self) -> str:
        """A read token for every tenant (names shown: `pii:read`), valid while this server
        runs (deleted by `stop`): `up` hands it to local commands (`shipledger query`) through
        the 0600 stack file. Those of earlier servers whose process is gone (a kill -9 skips
        `stop`), or that an older version revoked, are deleted first: they are never used
        again."""
        assert self._ctx is not None, "start() first"
        auth = self._ctx.auth
        for old in auth.list_tokens():
            pid = _local_token_pid(old.name)
            if pid is not None and (old.revoked_at is not None or not pid_alive(pid)):
                auth.delete(old.id)
        # This machine's commands hold the privacy key anyway: they see names.
        token, info = auth.create_token(
            ANY_TENANT, ("read", PII_READ), name=f"{LOCAL_TOKEN_NAME}{os.getpid()})"
        )
        self._operator_token_id = info.id
        return token

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """End the live streams, finish the requests in flight, stop serving, flush the
        producer. Idempotent."""
        if self._ctx is not None and self._ctx.stream is not None:
            self._ctx.stream.stop()  # else its streams, never done, hold the server open
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._server = None
        if self._ctx is not None:
            if self._operator_token_id is not None:
                self._ctx.auth.delete(self._operator_token_id)
                self._operator_token_id = None
            if self._ctx.bridge is not None:
                self._ctx.bridge.close()
            self._ctx.auth.close()
            self._ctx = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
